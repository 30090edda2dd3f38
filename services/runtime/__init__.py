"""The processes' runtime: supervisor, logging, metrics, worker status."""
