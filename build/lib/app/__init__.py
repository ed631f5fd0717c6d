"""Orchy for Python: a workflow orchestrator served over HTTP, with all state in Redis."""

__version__ = "0.1.0"
