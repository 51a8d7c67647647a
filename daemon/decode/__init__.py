"""From a file to a Frame: TIFF reading and checks (tiff.py), metadata from file names (names.py).
May import config and frames only."""
