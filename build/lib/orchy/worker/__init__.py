"""The Python worker library: run functions as Orchy user actions.

```python
from orchy import Worker, NonRetryableError

worker = Worker()

@worker.action("query-db", retry_count=3, timeout_seconds=30.0)
def query_db(input: dict) -> dict: ...

@worker.action("charge")
def charge(input: dict, task: Task) -> dict: ...   # task.task_id names the attempt

worker.run_sync()
```
"""

from __future__ import annotations

from orchy.worker.client import Task
from orchy.worker.errors import (
    ActionRegistrationError,
    InvalidInputError,
    InvalidOutputError,
    NonRetryableError,
)
from orchy.worker.loader import load_worker
from orchy.worker.registry import RetryPolicy
from orchy.worker.settings import WorkerSettings
from orchy.worker.worker import Worker

__all__ = [
    "ActionRegistrationError",
    "InvalidInputError",
    "InvalidOutputError",
    "NonRetryableError",
    "RetryPolicy",
    "Task",
    "Worker",
    "WorkerSettings",
    "load_worker",
]
