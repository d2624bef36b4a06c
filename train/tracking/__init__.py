"""MLflow: the run's records, the model registry, metrics that survive an outage, and the store tools (stale, upload)."""
