"""Orchy for Python's SDK: run functions as user actions (``Worker``); start, wait for and
manage runs (``Client``, ``AsyncClient``); write workflows as code (``Workflow``). It never
imports the server (``app``), so it works from the light install
(``pip install ./clients/python``).

```python
from orchy import Client, NonRetryableError, Worker

worker = Worker()

@worker.action("query-db", retry_count=3, timeout_seconds=30.0)
def query_db(input: dict) -> dict: ...

@worker.action("charge")
def charge(input: dict, task: Task) -> dict: ...   # task.task_id names the attempt

worker.run_sync()

with Client() as client:                        # ORCHY_URL, or http://127.0.0.1:8080
    run = client.execute("order", {"orderId": "o-1"}, timeout=60)
    print(run.result())
```
"""

from __future__ import annotations

from orchy.builder import (
    Branch,
    ForEach,
    If,
    Join,
    Step,
    Switch,
    While,
    Workflow,
    WorkflowDefinitionError,
)
from orchy.client import (
    AsyncClient,
    Client,
    Published,
    Registered,
    Run,
    RunPage,
    RunStatus,
    RunSummary,
)
from orchy.credentials import Credentials, CredentialsError
from orchy.errors import (
    Conflict,
    Forbidden,
    Invalid,
    NotFound,
    OrchyError,
    RunFailed,
    RunNotEnded,
    TLSError,
    TooLarge,
    Unauthorized,
    Unavailable,
)
from orchy.settings import ClientSettings
from orchy.worker import (
    ActionRegistrationError,
    InvalidInputError,
    InvalidOutputError,
    NonRetryableError,
    RetryPolicy,
    Task,
    Worker,
    WorkerSettings,
    load_worker,
)

__all__ = [
    "ActionRegistrationError",
    "AsyncClient",
    "Branch",
    "Client",
    "ClientSettings",
    "Conflict",
    "Credentials",
    "CredentialsError",
    "ForEach",
    "Forbidden",
    "If",
    "Invalid",
    "InvalidInputError",
    "InvalidOutputError",
    "Join",
    "NonRetryableError",
    "NotFound",
    "OrchyError",
    "Published",
    "Registered",
    "RetryPolicy",
    "Run",
    "RunFailed",
    "RunNotEnded",
    "RunPage",
    "RunStatus",
    "RunSummary",
    "Step",
    "Switch",
    "TLSError",
    "Task",
    "TooLarge",
    "Unauthorized",
    "Unavailable",
    "While",
    "Worker",
    "WorkerSettings",
    "Workflow",
    "WorkflowDefinitionError",
    "load_worker",
]
