"""What is kept: the Zarr results store (store.py and its parts), the journal of files done,
thumbnails and corrections. May import config, frames and engines; never a stage after it."""
