"""The samples of ``workflows/`` taken from Orchy's README: their files, and each one's worker
as a user runs it (``orchy worker workflows/<name>_worker.py``)."""

from __future__ import annotations

import contextlib
import json
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.helpers.processes import example_worker_process

ROOT = Path(__file__).resolve().parent.parent.parent
WORKFLOWS = ROOT / "workflows"


@dataclass(frozen=True)
class Sample:
    """``workflows/<stem>.json``, its worker ``<stem>_worker.py``, its input if it has one."""

    stem: str

    @property
    def workflow(self) -> Path:
        return WORKFLOWS / f"{self.stem}.json"

    @property
    def worker(self) -> Path:
        return WORKFLOWS / f"{self.stem}_worker.py"

    @property
    def name(self) -> str:
        name: str = json.loads(self.workflow.read_text())["name"]
        return name

    @property
    def input(self) -> dict[str, Any]:
        path = WORKFLOWS / f"{self.stem}.input.json"
        if not path.exists():
            return {}
        data: dict[str, Any] = json.loads(path.read_text())
        return data


SWITCH = Sample("switch_example")
DELAY = Sample("delay_example")
WAIT = Sample("wait_example")
JAVASCRIPT = Sample("javascript_example")
LOG_ACTION = Sample("log_action_example")
ALL = (SWITCH, DELAY, WAIT, JAVASCRIPT, LOG_ACTION)


@contextlib.contextmanager
def worker_process(sample: Sample, server_url: str) -> Iterator[subprocess.Popen[bytes]]:
    """``orchy worker`` with the sample's worker file; it must exit 0 on SIGTERM."""
    with example_worker_process(sample.worker, server_url) as process:
        yield process
