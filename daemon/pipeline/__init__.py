"""From a Frame to a durable FrameResult: the threads and queues (stages.py), batching (batcher.py),
analysis (analysis.py), retries and the writer. May import decode, results, ops and engines.runtime."""
