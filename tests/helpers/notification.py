"""The notification example of ``workflows/``: its files, and its worker as a user runs it
(``orchy worker workflows/notification_worker.py``)."""

from __future__ import annotations

import contextlib
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tests.helpers.processes import example_worker_process

ROOT = Path(__file__).resolve().parent.parent.parent
WORKFLOW = ROOT / "workflows" / "notificationWorkflow.json"
WORKER_FILE = ROOT / "workflows" / "notification_worker.py"
INPUT: dict[str, Any] = json.loads(
    (ROOT / "workflows" / "notificationWorkflow.input.json").read_text()
)


@contextlib.contextmanager
def notification_worker_process(server_url: str) -> Iterator[subprocess.Popen[bytes]]:
    """The example's worker against ``server_url``; it must exit 0 on SIGTERM."""
    with example_worker_process(WORKER_FILE, server_url) as process:
        yield process
