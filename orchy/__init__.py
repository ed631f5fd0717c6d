"""Orchy's Python SDK: run functions as user actions of Orchy workflows.

```python
from orchy import NonRetryableError, Task, Worker

worker = Worker("http://127.0.0.1:8080")

@worker.action("charge", retry_count=3, timeout_seconds=30.0)
def charge(input: dict, task: Task) -> dict: ...

worker.run_sync()
```

This package never imports the server (``app``): it is also shipped alone by the light
distribution ``orchy-client`` (``pip install ./clients/python``).
"""

from __future__ import annotations

from orchy.worker import (
    ActionRegistrationError,
    NonRetryableError,
    RetryPolicy,
    Task,
    Worker,
    WorkerSettings,
    load_worker,
)

__version__ = "0.1.0"

__all__ = [
    # The worker library (orchy.worker).
    "ActionRegistrationError",
    "NonRetryableError",
    "RetryPolicy",
    "Task",
    "Worker",
    "WorkerSettings",
    "load_worker",
]
