"""From a Frame to a durable FrameResult: threads and queues (stages.py), batching (batcher.py),
analysis, retries and the writer. May import decode, results, ops and engines.runtime."""
