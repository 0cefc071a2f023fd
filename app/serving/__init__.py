"""The query path: the per-process snapshot, one request end to end, batching, filters."""
