"""`artifactd reprocess`: analyse an archive of screens again on a Dask cluster, into one store.

- plan.py: the one scan of the archive on the driver, the tasks (whole wells, or K fields)
  and the task list written before any task runs.
- worker.py: what runs on the workers: the model loaded once per worker (a worker plugin) and
  the task that decodes and analyses its frames (daemon.decode.tiff, daemon.pipeline.analysis).
- committer.py: the driver alone writes the store and the journal (daemon.results.store,
  daemon.results.journal), one append per batch of finished tasks, as the service's writer does.
- driver.py: the cluster (a LocalCluster, or a running scheduler), tasks in flight, retries,
  progress and the summary.
- command.py: the command line.

Only command.py is imported by `artifactd`; Dask is imported when the command runs, so the
service never imports it.
"""
