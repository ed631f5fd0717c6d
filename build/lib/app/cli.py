"""The ``orchy`` command: serve, run workers, and drive the server from the shell."""

from __future__ import annotations

import functools
import importlib
import inspect
import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote, urlencode

import httpx
import typer

from app.auth_cli import auth_cli
from app.settings import get_settings
from orchy.credentials import Credentials, CredentialsError

cli = typer.Typer(
    help="Orchy for Python: workflows over HTTP, state in Redis.", no_args_is_help=True
)
workflow_cli = typer.Typer(help="Workflow definitions.", no_args_is_help=True)
flow_cli = typer.Typer(help="Runs.", no_args_is_help=True)
queue_cli = typer.Typer(help="Task queues.", no_args_is_help=True)
cli.add_typer(workflow_cli, name="workflow")
cli.add_typer(flow_cli, name="flow")
cli.add_typer(queue_cli, name="queue")
cli.add_typer(auth_cli, name="auth")

TERMINAL = {"COMPLETED", "FAILED", "TERMINATED"}
WAIT_STEP_SECONDS = 0.2
FAILURE_EXIT = 1
FILE_PREFIX = "@"

ServerOption = Annotated[
    str | None, typer.Option("--server", help="Server URL (default: ORCHY_WORKER_SERVER_URL).")
]
TokenOption = Annotated[
    str | None, typer.Option("--token", help="Bearer token (default: ORCHY_TOKEN).")
]
CaBundleOption = Annotated[
    str | None,
    typer.Option("--ca-bundle", help="CA of the server's certificate (default: ORCHY_CA_BUNDLE)."),
]
ClientCertOption = Annotated[
    str | None,
    typer.Option("--client-cert", help="Client certificate, PEM (default: ORCHY_CLIENT_CERT)."),
]
ClientKeyOption = Annotated[
    str | None,
    typer.Option("--client-key", help="The client certificate's key (default: ORCHY_CLIENT_KEY)."),
]


def _server(server: str | None) -> str:
    return (server or get_settings().worker_server_url).rstrip("/")


def _credentials(
    token: str | None, ca_bundle: str | None, client_cert: str | None, client_key: str | None
) -> Credentials:
    """The options given, over the ``ORCHY_TOKEN``/``ORCHY_CA_BUNDLE``/... settings."""
    return Credentials(token, ca_bundle, client_cert, client_key).over(get_settings().credentials)


@dataclass
class Remote:
    """The server a command talks to, and how: its URL, the token, the TLS context."""

    url: str
    credentials: Credentials

    def call(self, method: str, path: str, body: Any = None) -> Any:
        """The JSON answer of ``method path``; a failure prints one line and exits."""
        url = self.url + path
        try:
            context = self.credentials.ssl_context()
        except CredentialsError as error:
            typer.echo(str(error), err=True)
            raise typer.Exit(FAILURE_EXIT) from None
        try:
            response = httpx.request(
                method,
                url,
                json=body,
                headers=self.credentials.headers(),
                verify=context if context is not None else True,
                timeout=get_settings().worker_http_timeout_seconds,
            )
        except httpx.HTTPError as error:
            typer.echo(f"cannot reach {url}: {error}", err=True)
            raise typer.Exit(FAILURE_EXIT) from None
        payload = response.json() if response.content else {}
        if response.is_error:
            typer.echo(f"{response.status_code}: {payload.get('error', payload)}", err=True)
            raise typer.Exit(FAILURE_EXIT)
        return payload


_REMOTE_OPTIONS = [
    inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=None, annotation=kind)
    for name, kind in (
        ("server", ServerOption),
        ("token", TokenOption),
        ("ca_bundle", CaBundleOption),
        ("client_cert", ClientCertOption),
        ("client_key", ClientKeyOption),
    )
]


def remote_command(command: Callable[..., None]) -> Callable[..., None]:
    """A command that calls the server: it takes ``--server``, ``--token``, ``--ca-bundle``,
    ``--client-cert`` and ``--client-key``, and gets them as ``remote`` (a ``Remote``)."""

    @functools.wraps(command)
    def with_remote(
        *args: Any,
        server: str | None = None,
        token: str | None = None,
        ca_bundle: str | None = None,
        client_cert: str | None = None,
        client_key: str | None = None,
        **kwargs: Any,
    ) -> None:
        credentials = _credentials(token, ca_bundle, client_cert, client_key)
        command(*args, remote=Remote(_server(server), credentials), **kwargs)

    own = inspect.signature(command, eval_str=True).parameters.values()
    parameters = [parameter for parameter in own if parameter.name != "remote"]
    with_remote.__signature__ = inspect.Signature([*parameters, *_REMOTE_OPTIONS])  # type: ignore[attr-defined]
    return with_remote


def _parse_json(text: str, what: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise typer.BadParameter(f"{what} is not valid JSON: {error}") from error


def _json_argument(value: str, what: str) -> Any:
    """``value`` as JSON, or the JSON in the file it names as ``@path``."""
    if not value.startswith(FILE_PREFIX):
        return _parse_json(value, what)
    path = Path(value[len(FILE_PREFIX) :])
    try:
        text = path.read_text()
    except OSError as error:
        raise typer.BadParameter(f"{what}: cannot read {path}: {error.strerror}") from error
    return _parse_json(text, f"{what} ({path})")


def _print(payload: Any) -> None:
    typer.echo(json.dumps(payload, indent=2))


@cli.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Interface to bind.")] = None,
    port: Annotated[int | None, typer.Option(help="Port to listen on.")] = None,
    workers: Annotated[int, typer.Option(help="Server processes (needs REDIS_URL).")] = 1,
    ssl_certfile: Annotated[
        str | None,
        typer.Option(help="Serve HTTPS with this PEM certificate (ORCHY_SSL_CERTFILE)."),
    ] = None,
    ssl_keyfile: Annotated[
        str | None,
        typer.Option(help="The certificate's key, if not in its file (ORCHY_SSL_KEYFILE)."),
    ] = None,
    ssl_ca_certs: Annotated[
        str | None,
        typer.Option(
            help="Require client certificates signed by this CA: mTLS (ORCHY_SSL_CA_CERTS)."
        ),
    ] = None,
    insecure: Annotated[
        bool,
        typer.Option(
            "--insecure",
            help="Serve without authentication on a non-loopback address (ORCHY_INSECURE).",
        ),
    ] = False,
) -> None:
    """Start the server (the embedded Redis unless REDIS_URL is set)."""
    from app.api.security.settings_errors import AuthSettingsError
    from app.serve import ServeError, run_server

    given = {"ssl_certfile": ssl_certfile, "ssl_keyfile": ssl_keyfile, "ssl_ca_certs": ssl_ca_certs}
    settings = get_settings().model_copy(
        update={name: value for name, value in given.items() if value is not None}
    )
    if insecure:
        settings = settings.model_copy(update={"insecure": True})
    try:
        run_server(settings, host or settings.host, port or settings.port, workers)
    except (ServeError, AuthSettingsError) as error:
        typer.echo(f"orchy serve: {error}", err=True)
        raise typer.Exit(FAILURE_EXIT) from None


@cli.command()
def worker(
    target: Annotated[str, typer.Argument(help="A file (workflows/x.py) or module:attr.")],
    server: ServerOption = None,
    concurrency: Annotated[int | None, typer.Option(help="Tasks in hand at once.")] = None,
    token: TokenOption = None,
    ca_bundle: CaBundleOption = None,
    client_cert: ClientCertOption = None,
    client_key: ClientKeyOption = None,
) -> None:
    """Run the user actions of a Worker until SIGINT/SIGTERM."""
    from orchy.worker.cli import run_worker_command

    credentials = Credentials(token, ca_bundle, client_cert, client_key)
    run_worker_command(target, _server(server) if server else None, concurrency, credentials)


@workflow_cli.command("register")
@remote_command
def register_workflow(
    target: Annotated[
        str,
        typer.Argument(
            help="A JSON file, or module:attr naming a Workflow built in Python (or a dict)."
        ),
    ],
    remote: Remote,
) -> None:
    """Register a definition: from a JSON file, or the workflow at module:attr (a
    ``orchy.Workflow``, checked before it is sent, or a dict of the JSON)."""
    path = Path(target)
    if path.is_file():
        definition = _parse_json(_read(path, "definition"), str(path))
    elif ":" in target:
        definition = _definition_at(target)
    else:
        raise typer.BadParameter(
            f"{target}: no such file (give a JSON file or module:attr)", param_hint="TARGET"
        )
    _print(remote.call("POST", "/metadata/workflow", definition))


def _read(path: Path, what: str) -> str:
    try:
        return path.read_text()
    except OSError as error:
        raise typer.BadParameter(f"{what}: cannot read {path}: {error.strerror}") from error


def _definition_at(target: str) -> Any:
    """The JSON of the workflow at ``module:attr`` (the module imported with the current
    folder on the path, as ``orchy worker`` does): a builder's ``to_json()``, or a dict."""
    from orchy.builder import Workflow, WorkflowDefinitionError

    module_name, _, attr = target.partition(":")
    if not module_name or not attr:
        raise typer.BadParameter(f"{target}: expected module:attr", param_hint="TARGET")
    if "" not in sys.path and str(Path.cwd()) not in sys.path:
        sys.path.insert(0, str(Path.cwd()))
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise typer.BadParameter(f"{target}: cannot import {module_name}: {error}") from error
    found: Any = module
    for part in attr.split("."):
        if not hasattr(found, part):
            raise typer.BadParameter(f"{target}: {module_name} has no attribute {attr}")
        found = getattr(found, part)
    if isinstance(found, Workflow):
        try:
            return found.to_json()
        except WorkflowDefinitionError as error:
            typer.echo(f"{target}: {error}", err=True)
            raise typer.Exit(FAILURE_EXIT) from None
    if isinstance(found, dict):
        return found
    raise typer.BadParameter(
        f"{target}: expected an orchy.Workflow or a dict, not {type(found).__name__}"
    )


@workflow_cli.command("list")
@remote_command
def list_workflows(remote: Remote) -> None:
    """List the registered workflows (name and latest version)."""
    _print(remote.call("GET", "/metadata/workflow"))


@cli.command()
@remote_command
def run(
    name: Annotated[str, typer.Argument(help="Workflow name.")],
    input_json: Annotated[
        str, typer.Option("--input", help="Run input: a JSON object, or @file.json.")
    ] = "{}",
    version: Annotated[int | None, typer.Option(help="Workflow version.")] = None,
    idempotency_key: Annotated[str | None, typer.Option("--idempotency-key")] = None,
    wait: Annotated[bool, typer.Option("--wait", help="Wait for the run to end.")] = False,
    timeout: Annotated[float, typer.Option(help="Seconds --wait waits at most.")] = 300.0,
    *,
    remote: Remote,
) -> None:
    """Start a run; with --wait, show its progress (on stderr), print the finished run and
    exit non-zero unless it COMPLETED."""
    run_input = _json_argument(input_json, "--input")
    if not isinstance(run_input, dict):
        kind = type(run_input).__name__ if run_input is not None else "null"
        raise typer.BadParameter(f"--input must be a JSON object, not {kind}")
    body: dict[str, Any] = {"name": name, "input": run_input}
    if version is not None:
        body["version"] = version
    if idempotency_key is not None:
        body["idempotencyKey"] = idempotency_key
    started = remote.call("POST", "/flow/execute", body)
    if not wait:
        _print(started)
        return
    flow_id = started["flowId"]
    typer.echo(f"flow {flow_id} {'started' if started['created'] else 'already started'}", err=True)
    flow = _wait_for_end(remote, flow_id, timeout)
    _print(flow)
    if flow["status"] != "COMPLETED":
        raise typer.Exit(FAILURE_EXIT)


def _wait_for_end(remote: Remote, flow_id: str, timeout: float) -> Any:
    """The run once it has ended or ``timeout`` has passed, telling each change of its
    actions' states on stderr as it goes."""
    deadline = time.monotonic() + timeout
    shown: dict[str, str] = {}
    while True:
        flow = remote.call("GET", f"/flow/{flow_id}")
        for line in _progress(flow, shown):
            typer.echo(line, err=True)
        if flow["status"] in TERMINAL:
            return flow
        if time.monotonic() > deadline:
            typer.echo(
                f"timed out after {timeout:g} s: flow {flow_id} is still {flow['status']}",
                err=True,
            )
            return flow
        time.sleep(WAIT_STEP_SECONDS)


def _progress(flow: Any, shown: dict[str, str]) -> list[str]:
    """A line per action whose state changed since ``shown`` (updated), and the run's end."""
    lines = []
    for action_id, action in sorted(flow["actions"].items(), key=lambda item: int(item[0])):
        state = action["status"]
        if action["attempts"] > 1:
            state += f" (attempt {action['attempts']})"
        if action.get("error") and action["status"] == "FAILED":
            state += f": {action['error']}"
        if shown.get(action_id) != state:
            shown[action_id] = state
            lines.append(f"  action {action_id}: {state}")
    if flow["status"] in TERMINAL:
        reason = f": {flow['reason']}" if flow.get("reason") else ""
        lines.append(f"flow {flow['id']} {flow['status']}{reason}")
    return lines


@flow_cli.command("get")
@remote_command
def get_flow(flow_id: str, *, remote: Remote) -> None:
    """Print a run."""
    _print(remote.call("GET", f"/flow/{flow_id}"))


@flow_cli.command("list")
@remote_command
def list_flows(
    name: Annotated[str | None, typer.Option(help="Only runs of this workflow.")] = None,
    status: Annotated[str | None, typer.Option(help="Only runs in this status.")] = None,
    limit: Annotated[int, typer.Option(help="At most this many runs.")] = 50,
    offset: Annotated[int, typer.Option(help="Skip this many runs.")] = 0,
    *,
    remote: Remote,
) -> None:
    """List runs, newest first."""
    query: dict[str, Any] = {"limit": limit, "offset": offset}
    if name is not None:
        query["name"] = name
    if status is not None:
        query["status"] = status.upper()
    _print(remote.call("GET", f"/flow?{urlencode(query)}"))


@flow_cli.command("history")
@remote_command
def flow_history(flow_id: str, *, remote: Remote) -> None:
    """Print every transition of a run, in order."""
    _print(remote.call("GET", f"/flow/{quote(flow_id, safe='')}/history"))


def _lifecycle(flow_id: str, change: str, remote: Remote) -> None:
    _print(remote.call("POST", f"/flow/{quote(flow_id, safe='')}/{change}"))


@flow_cli.command("pause")
@remote_command
def pause_flow(flow_id: str, *, remote: Remote) -> None:
    """Pause a run: results and timers are held until it is resumed."""
    _lifecycle(flow_id, "pause", remote)


@flow_cli.command("resume")
@remote_command
def resume_flow(flow_id: str, *, remote: Remote) -> None:
    """Resume a paused run."""
    _lifecycle(flow_id, "resume", remote)


@flow_cli.command("terminate")
@remote_command
def terminate_flow(flow_id: str, *, remote: Remote) -> None:
    """End a run now (TERMINATED)."""
    _lifecycle(flow_id, "terminate", remote)


RepairInput = Annotated[
    str | None,
    typer.Option("--input", help="A new input: a JSON object, or @file.json."),
]


def _repair(flow_id: str, change: str, input_json: str | None, remote: Remote) -> None:
    """POSTs a retry or a rerun of the run, with ``{"input": ...}`` when one is given."""
    body = None if input_json is None else {"input": _json_argument(input_json, "--input")}
    _print(remote.call("POST", f"/flow/{quote(flow_id, safe='')}/{change}", body))


@flow_cli.command("retry")
@remote_command
def retry_flow(flow_id: str, input_json: RepairInput = None, *, remote: Remote) -> None:
    """Let a FAILED or TERMINATED run go on from what failed (--input: the new input of the
    one user task started again)."""
    _repair(flow_id, "retry", input_json, remote)


@flow_cli.command("rerun")
@remote_command
def rerun_flow(flow_id: str, input_json: RepairInput = None, *, remote: Remote) -> None:
    """Start a new run of the run's workflow version with its input (or --input)."""
    _repair(flow_id, "rerun", input_json, remote)


@queue_cli.command("list")
@remote_command
def list_queues(remote: Remote) -> None:
    """Print each action's queue depth and when a worker last polled for it."""
    queues = remote.call("GET", "/tasks/queues")["queues"]
    rows = [("ACTION", "DEPTH", "LAST POLL")]
    rows += [(q["action"], str(q["depth"]), q["lastPollAt"] or "never") for q in queues]
    widths = [max(len(row[column]) for row in rows) for column in range(2)]
    for action, depth, last_poll in rows:
        typer.echo(f"{action:<{widths[0]}}  {depth:>{widths[1]}}  {last_poll}")


@cli.command()
@remote_command
def event(
    flow_id: str,
    name: str,
    data: Annotated[str, typer.Option("--data", help="Event data: JSON, or @file.json.")] = "{}",
    *,
    remote: Remote,
) -> None:
    """Send an event to a run."""
    body = _json_argument(data, "--data")
    _print(remote.call("POST", f"/flow/{flow_id}/events/{name}", body))


def main() -> None:
    sys.exit(cli())


if __name__ == "__main__":
    main()
