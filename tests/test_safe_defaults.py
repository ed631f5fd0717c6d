"""``orchy serve``'s safe defaults (README: Safe defaults): real ``python -m app.cli serve``
processes. A server every interface can reach refuses to start without authentication
unless told ``--insecure``; on loopback it runs open and says so; the Dockerfile's command
and environment would not start an open server."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from app.store.embedded import PIDFILE_NAME
from tests.helpers.http import free_port
from tests.helpers.processes import (
    MARK,
    PROCESS_EXIT_SECONDS,
    ROOT,
    Processes,
    ServerProcess,
    kill_pid,
    marked_env,
    marked_processes,
)

DOCKERFILE = ROOT / "Dockerfile"
ORCHY_COMMAND = "orchy"
OPEN_ON_LOOPBACK = "running without authentication: anyone on this machine can call this server"
NO_AUTHENTICATION = "refusing to serve on 0.0.0.0 without authentication"
# A file of API keys with no key in it: enough for the server to check tokens (README:
# Security, Authentication, for the entries of a real one).
EMPTY_KEYS_FILE = "[]"


@dataclass
class Serve(ServerProcess):
    """``python -m app.cli <arguments>`` (the ``orchy`` command), on ``port`` by ORCHY_PORT."""

    arguments: list[str] = field(default_factory=lambda: ["serve"])

    def command(self) -> list[str]:
        return [sys.executable, "-m", "app.cli", *self.arguments]

    def launch(self) -> subprocess.Popen[bytes]:
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                self.command(),
                cwd=ROOT,
                env={**self.env, "ORCHY_PORT": str(self.port)},
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        return self.process

    def refused(self) -> str:
        """Runs the command, which must exit 1 having started nothing; the line it printed."""
        process = self.launch()
        try:
            code = process.wait(PROCESS_EXIT_SECONDS)
        except subprocess.TimeoutExpired:
            kill_pid(process.pid)
            process.wait()
            raise AssertionError(
                f"the server did not refuse to start:\n{self.log_tail()}"
            ) from None
        finally:
            self.process = None
            left = marked_processes(self.env[MARK])
            for pid in left:
                kill_pid(pid)
        assert code == 1, self.log_tail()
        assert left == [], "a process the refused server started is still running"
        lines = self.log_tail().splitlines()
        assert len(lines) == 1, lines
        return lines[0]


def serve(processes: Processes, tmp_path: Path, *arguments: str, **env: str) -> Serve:
    data_dir = tmp_path / "data"
    processes.pidfiles.append(data_dir / PIDFILE_NAME)
    server = Serve(
        marked_env(ORCHY_DATA_DIR=str(data_dir), **env),
        tmp_path / "server.log",
        arguments=["serve", *arguments],
    )
    processes.servers.append(server)
    return server


def lines_with(server: ServerProcess, text: str) -> list[str]:
    return [line for line in server.log_tail(None).splitlines() if text in line]


async def status_for_host(server: ServerProcess, host: str) -> int:
    async with httpx.AsyncClient(base_url=server.url) as http:
        return (await http.get("/health", headers={"Host": host})).status_code


# -- every interface -------------------------------------------------------------------------


def test_serve_on_every_interface_without_authentication_refuses_and_starts_nothing(
    tmp_path: Path, processes: Processes
) -> None:
    server = serve(processes, tmp_path, "--host", "0.0.0.0")

    line = server.refused()

    assert line.startswith(f"orchy serve: {NO_AUTHENTICATION}: "), line
    for remedy in ("ORCHY_API_KEYS_FILE", "ORCHY_OIDC_ISSUER", "--host", "--insecure"):
        assert remedy in line
    assert not (tmp_path / "data").exists(), "the embedded Redis was not even prepared"


async def test_insecure_serves_every_interface_open_and_says_so(
    tmp_path: Path, processes: Processes
) -> None:
    """(ORCHY_INSECURE=true does the same: the Dockerfile's test below.)"""
    server = serve(processes, tmp_path, "--host", "0.0.0.0", "--insecure")

    await server.start()

    [line] = lines_with(server, "running without authentication")
    assert f"on 0.0.0.0 (--insecure): anyone who can reach port {server.port}" in line
    # Bound to every interface, the server answers whatever name it is reached by.
    assert await status_for_host(server, f"orchy.example:{server.port}") == 200
    await server.terminate()


# -- loopback --------------------------------------------------------------------------------


async def test_serve_on_loopback_runs_open_says_so_once_and_checks_the_host(
    tmp_path: Path, processes: Processes
) -> None:
    """``--host`` reaches the application (whatever ORCHY_HOST said): on loopback it answers
    only loopback names."""
    server = serve(processes, tmp_path, "--host", "127.0.0.1", ORCHY_HOST="0.0.0.0")

    await server.start()

    assert len(lines_with(server, OPEN_ON_LOOPBACK)) == 1
    assert await status_for_host(server, f"localhost:{server.port}") == 200
    assert await status_for_host(server, f"rebound.example:{server.port}") == 403
    await server.terminate()


def test_an_allowed_origin_that_is_not_an_origin_refuses_to_start(
    tmp_path: Path, processes: Processes
) -> None:
    server = serve(processes, tmp_path, ORCHY_ALLOWED_ORIGINS="https://app.example/dashboard")

    line = server.refused()

    assert "ORCHY_ALLOWED_ORIGINS" in line and "https://app.example/dashboard" in line


# -- the Dockerfile --------------------------------------------------------------------------


@dataclass(frozen=True)
class Container:
    """The Dockerfile's final stage: its environment and its command."""

    env: dict[str, str]
    command: list[str]

    @classmethod
    def of(cls, dockerfile: Path) -> Container:
        final = re.split(r"^FROM .*$", dockerfile.read_text(), flags=re.MULTILINE)[-1]
        env: dict[str, str] = {}
        for pairs in re.findall(r"^ENV (.+)$", final, flags=re.MULTILINE):
            env.update(pair.split("=", 1) for pair in pairs.split())
        [command] = re.findall(r"^CMD (.+)$", final, flags=re.MULTILINE)
        return cls(env, json.loads(command))

    def on(self, root: Path) -> dict[str, str]:
        """The environment with each absolute path moved under ``root`` (the container's /)."""
        return {
            name: str(root / value.lstrip("/")) if value.startswith("/") else value
            for name, value in self.env.items()
        }


def dockerfile_server(processes: Processes, tmp_path: Path, **env: str) -> tuple[Serve, Path]:
    """The Dockerfile's command and environment, its paths under ``tmp_path``; and where its
    keys file is."""
    container = Container.of(DOCKERFILE)
    assert container.command[0] == ORCHY_COMMAND
    assert "--insecure" not in container.command and "ORCHY_INSECURE" not in container.env
    container_env = container.on(tmp_path / "container")
    processes.pidfiles.append(Path(container_env["ORCHY_DATA_DIR"]) / PIDFILE_NAME)
    server = Serve(
        marked_env(**{**container_env, **env}),
        tmp_path / "server.log",
        port=free_port(),
        arguments=container.command[1:],
    )
    processes.servers.append(server)
    return server, Path(container_env["ORCHY_API_KEYS_FILE"])


def test_the_dockerfile_binds_every_interface_and_wants_its_keys(
    tmp_path: Path, processes: Processes
) -> None:
    """Run without its secret, the image refuses to start."""
    server, keys_file = dockerfile_server(processes, tmp_path)
    assert server.arguments[1:3] == ["--host", "0.0.0.0"]

    line = server.refused()

    assert f"{keys_file}: cannot read" in line  # the keys file's own check (Authentication)


async def test_the_dockerfile_starts_with_its_keys_and_does_not_run_open(
    tmp_path: Path, processes: Processes
) -> None:
    server, keys_file = dockerfile_server(processes, tmp_path)
    keys_file.parent.mkdir(parents=True)
    keys_file.write_text(EMPTY_KEYS_FILE)

    await server.start()

    assert lines_with(server, "without authentication") == []
    await server.terminate()


async def test_the_dockerfile_runs_open_only_when_told_as_its_comment_says(
    tmp_path: Path, processes: Processes
) -> None:
    """``docker run ... -e ORCHY_API_KEYS_FILE= -e ORCHY_INSECURE=true orchy``"""
    comment = DOCKERFILE.read_text()
    told = re.search(r"^#\s+docker run .*$", comment.split("To serve without")[1], re.MULTILINE)
    assert told is not None
    overrides = dict(re.findall(r"-e (\w+)=(\S*)", told.group(0)))
    assert overrides == {"ORCHY_API_KEYS_FILE": "", "ORCHY_INSECURE": "true"}
    server, _ = dockerfile_server(processes, tmp_path, **overrides)

    await server.start()

    assert len(lines_with(server, "running without authentication on 0.0.0.0")) == 1
    await server.terminate()
