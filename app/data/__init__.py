"""Data access: the tracking store, the run search, metric histories, synthetic runs for tests and benchmarks."""
