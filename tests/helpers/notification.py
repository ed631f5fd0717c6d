"""The notification example of ``workflows/``: its files, and its worker as a user runs it
(``orchy worker workflows/notification_worker.py``)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent.parent
WORKFLOW = ROOT / "workflows" / "notificationWorkflow.json"
WORKER_FILE = ROOT / "workflows" / "notification_worker.py"
INPUT: dict[str, Any] = json.loads(
    (ROOT / "workflows" / "notificationWorkflow.input.json").read_text()
)
EXIT_SECONDS = 15


@contextlib.contextmanager
def notification_worker_process(server_url: str) -> Iterator[subprocess.Popen[bytes]]:
    """The example's worker against ``server_url``; it must exit 0 on SIGTERM."""
    process = subprocess.Popen(
        [sys.executable, "-m", "app.cli", "worker", str(WORKER_FILE), "--server", server_url],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        yield process
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            assert process.wait(EXIT_SECONDS) == 0
        finally:
            if process.poll() is None:
                process.kill()
