"""The samples of ``workflows/`` taken from the seeds' READMEs (Orchy's, LiteFlow's,
LittleHorse's overview): their files, and each one's worker as a user runs it
(``orchy worker workflows/<name>_worker.py``)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from tests.helpers.http import Api, ServerThread
from tests.helpers.processes import example_worker_process

ROOT = Path(__file__).resolve().parent.parent.parent
WORKFLOWS = ROOT / "workflows"


@dataclass(frozen=True)
class Sample:
    """``workflows/<stem>.json``, its worker (``<stem>_worker.py`` unless ``worker_stem``
    names a worker that several samples share), its input if it has one."""

    stem: str
    worker_stem: str = ""

    @property
    def workflow(self) -> Path:
        return WORKFLOWS / f"{self.stem}.json"

    @property
    def worker(self) -> Path:
        return WORKFLOWS / f"{self.worker_stem or self.stem}_worker.py"

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

LITEFLOW_HELLO_WORLD = Sample("liteflow_hello_world", "liteflow")
LITEFLOW_PASSING_DATA = Sample("liteflow_passing_data", "liteflow")
LITEFLOW_IF = Sample("liteflow_if", "liteflow")
LITEFLOW_WHILE = Sample("liteflow_while", "liteflow")
LITEFLOW_EVENTS = Sample("liteflow_events", "liteflow")
LITEFLOW_FOR_EACH = Sample("liteflow_foreach", "liteflow")
LITTLEHORSE_CHECKOUT = Sample("littlehorse_checkout")
OTHER_SEEDS = (
    LITEFLOW_HELLO_WORLD,
    LITEFLOW_PASSING_DATA,
    LITEFLOW_IF,
    LITEFLOW_WHILE,
    LITEFLOW_EVENTS,
    LITEFLOW_FOR_EACH,
    LITTLEHORSE_CHECKOUT,
)


@contextlib.contextmanager
def worker_process(sample: Sample, server_url: str) -> Iterator[subprocess.Popen[bytes]]:
    """``orchy worker`` with the sample's worker file; it must exit 0 on SIGTERM."""
    with example_worker_process(sample.worker, server_url) as process:
        yield process


RUN_SECONDS = 40


async def register_sample(http: httpx.AsyncClient, sample: Sample) -> None:
    response = await http.post("/metadata/workflow", content=sample.workflow.read_bytes())
    assert response.status_code == 200, response.text
    assert response.json()["name"] == sample.name


async def completed_runs(
    api: Api, http: httpx.AsyncClient, server: ServerThread, sample: Sample, inputs: list[Any]
) -> list[tuple[str, dict[str, Any]]]:
    """Registers ``sample`` and runs it once an input with its worker process until every run
    is complete: each run's id and state, in the order of ``inputs``."""
    await register_sample(http, sample)
    with worker_process(sample, server.url):
        flow_ids = [await api.start(sample.name, input_data) for input_data in inputs]
        flows = await asyncio.gather(
            *(api.wait_status(flow_id, "COMPLETED", RUN_SECONDS) for flow_id in flow_ids)
        )
    return list(zip(flow_ids, flows, strict=True))
