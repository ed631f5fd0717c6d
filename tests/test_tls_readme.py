"""The README's TLS examples, run as written: its mTLS ``orchy serve`` command, its
``orchy worker``/``orchy-worker``/``orchy run`` commands and its Python block, in a folder
holding certificates under the README's file names. Only the addresses change (the README's
hosts become the test's Redis and a free port on 127.0.0.1) and the server processes are
two rather than four."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from orchy import Client, OrchyError
from tests.helpers.http import free_port
from tests.helpers.processes import (
    PROCESS_EXIT_SECONDS,
    ROOT,
    kill_pid,
    marked_env,
    marked_processes,
)
from tests.helpers.tls import make_certificates
from tests.helpers.waiting import wait_until

README_SERVER = "https://orchy.internal:8443"
README_REDIS = "redis://redis:6379/0"
COMMAND_SECONDS = 60.0

WORKERS_FILE = """
from orchy import Worker

worker = Worker()


@worker.action("order")
def order(input):
    return {"ordered": input["orderId"]}
"""
ORDER = {
    "name": "order",
    "rootAction": 1,
    "actions": [
        {"id": 1, "type": "user", "name": "order", "parameters": {"orderId": "{$.input.orderId}"}}
    ],
}


def tls_section() -> str:
    readme = (ROOT / "README.md").read_text()
    return readme[readme.index("### TLS") : readme.index("## Settings")]


def commands(block: str) -> list[str]:
    """The block's commands, continuation lines joined, comments dropped."""
    joined = block.replace("\\\n", " ")
    lines = (line.split("  #", 1)[0].strip() for line in joined.splitlines())
    return [line for line in lines if line]


def blocks(kind: str) -> list[str]:
    return re.findall(rf"```{kind}\n(.*?)```", tls_section(), re.S)


def registered(url: str, folder: Path) -> bool:
    """Whether the ``order`` workflow could be registered (the server is up), with the
    README's certificate files in ``folder``."""
    tls = {
        "ca_bundle": str(folder / "ca.pem"),
        "client_cert": str(folder / "worker.pem"),
        "client_key": str(folder / "worker.key"),
    }
    try:
        with Client(url, retries=0, **tls) as client:
            client.register_workflow(ORDER)
    except OrchyError:
        return False
    return True


@contextlib.contextmanager
def shell(command: str, folder: Path, env: dict[str, str]) -> Iterator[subprocess.Popen[bytes]]:
    """``command`` in a shell in ``folder``, ended (SIGTERM, then SIGKILL) afterwards."""
    process = subprocess.Popen(
        # ``env`` takes the command's leading VAR=value words; ``exec`` lets SIGTERM reach it.
        ["bash", "-c", f"exec env {command}"],
        cwd=folder,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=(folder / "out.log").open("ab"),
        stderr=subprocess.STDOUT,
    )
    try:
        yield process
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(PROCESS_EXIT_SECONDS)
        finally:
            if process.poll() is None:
                process.kill()


async def test_the_readme_tls_examples_run_as_written(redis_url: str, tmp_path: Path) -> None:
    if shutil.which("bash") is None:
        pytest.fail("the README's commands need bash")
    certificates = make_certificates(tmp_path / "made")
    for made, readme_name in (
        (certificates.server_cert, "server.pem"),
        (certificates.server_key, "server.key"),
        (certificates.client_ca, "client-ca.pem"),
        (certificates.ca, "ca.pem"),
        (certificates.client_cert, "worker.pem"),
        (certificates.client_key, "worker.key"),
    ):
        shutil.copy(made, tmp_path / readme_name)
    (tmp_path / "workers.py").write_text(WORKERS_FILE)
    port = free_port()
    url = f"https://127.0.0.1:{port}"
    env = marked_env(PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}")
    env["PYTHONPATH"] = str(ROOT)

    _, mtls_block, worker_block, _ = blocks("bash")
    [serve] = [command for command in commands(mtls_block) if "orchy serve" in command]
    serve = (
        serve.replace(README_REDIS, redis_url)
        .replace("--host 0.0.0.0", f"--host 127.0.0.1 --port {port}")
        .replace("--workers 4", "--workers 2")
    )
    assert "--ssl-ca-certs client-ca.pem" in serve
    *workers, run = commands(worker_block)
    try:
        with shell(serve, tmp_path, env) as server:

            async def answers() -> bool:
                assert server.poll() is None, (tmp_path / "out.log").read_text()
                return await asyncio.to_thread(registered, url, tmp_path)

            await wait_until(answers, COMMAND_SECONDS, step=0.2, what="the README's server")
            with contextlib.ExitStack() as running:
                for worker in workers:
                    running.enter_context(shell(worker.replace(README_SERVER, url), tmp_path, env))
                finished = await asyncio.to_thread(
                    subprocess.run,
                    ["bash", "-c", run.replace(README_SERVER, url)],
                    cwd=tmp_path,
                    env=env,
                    capture_output=True,
                    timeout=COMMAND_SECONDS,
                )
                assert finished.returncode == 0, finished.stderr.decode()
                assert b'"ordered": "o-1"' in finished.stdout

                [python] = blocks("python")
                here = Path.cwd()
                os.chdir(tmp_path)
                try:
                    scope: dict[str, object] = {}
                    exec(compile(python.replace(README_SERVER, url), "README.md", "exec"), scope)
                finally:
                    os.chdir(here)
                assert scope["run"].status == "COMPLETED"  # type: ignore[attr-defined]
        log = (tmp_path / "out.log").read_text()
        assert f"listening on {url} with 2 server processes, client certificates required" in log
    finally:
        for pid in marked_processes(env["ORCHY_TEST_SERVE_MARK"]):
            kill_pid(pid)
