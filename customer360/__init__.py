"""Customer 360 data platform: the shared core used by the CLI, the DAGs, the API and streaming."""

__version__ = "0.1.0"
