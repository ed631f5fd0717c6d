"""The ``orchy`` command: serve, run workers, and drive the server from the shell."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer

from app.settings import get_settings

cli = typer.Typer(
    help="Orchy for Python: workflows over HTTP, state in Redis.", no_args_is_help=True
)
workflow_cli = typer.Typer(help="Workflow definitions.", no_args_is_help=True)
flow_cli = typer.Typer(help="Runs.", no_args_is_help=True)
queue_cli = typer.Typer(help="Task queues.", no_args_is_help=True)
cli.add_typer(workflow_cli, name="workflow")
cli.add_typer(flow_cli, name="flow")
cli.add_typer(queue_cli, name="queue")

TERMINAL = {"COMPLETED", "FAILED", "TERMINATED"}
WAIT_STEP_SECONDS = 0.2
FAILURE_EXIT = 1

ServerOption = Annotated[
    str | None, typer.Option("--server", help="Server URL (default: ORCHY_WORKER_SERVER_URL).")
]


def _server(server: str | None) -> str:
    return (server or get_settings().worker_server_url).rstrip("/")


def _parse_json(text: str, what: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise typer.BadParameter(f"{what} is not valid JSON: {error}") from error


def _call(method: str, url: str, body: Any = None) -> Any:
    try:
        response = httpx.request(
            method, url, json=body, timeout=get_settings().worker_http_timeout_seconds
        )
    except httpx.HTTPError as error:
        typer.echo(f"cannot reach {url}: {error}", err=True)
        raise typer.Exit(FAILURE_EXIT) from error
    payload = response.json() if response.content else {}
    if response.is_error:
        typer.echo(f"{response.status_code}: {payload.get('error', payload)}", err=True)
        raise typer.Exit(FAILURE_EXIT)
    return payload


def _print(payload: Any) -> None:
    typer.echo(json.dumps(payload, indent=2))


@cli.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Interface to bind.")] = None,
    port: Annotated[int | None, typer.Option(help="Port to listen on.")] = None,
    workers: Annotated[int, typer.Option(help="Server processes (needs REDIS_URL).")] = 1,
) -> None:
    """Start the server (the embedded Redis unless REDIS_URL is set)."""
    import uvicorn

    settings = get_settings()
    uvicorn.run(
        "app.main:app",
        host=host or settings.host,
        port=port or settings.port,
        workers=workers,
        log_level="info",
        access_log=settings.access_log,
    )


@cli.command()
def worker(
    target: Annotated[str, typer.Argument(help="A file (workflows/x.py) or module:attr.")],
    server: ServerOption = None,
    concurrency: Annotated[int | None, typer.Option(help="Tasks in hand at once.")] = None,
) -> None:
    """Run the user actions of a Worker until SIGINT/SIGTERM."""
    from app.worker.cli import run_worker_command

    run_worker_command(target, _server(server) if server else None, concurrency)


@workflow_cli.command("register")
def register_workflow(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, readable=True)],
    server: ServerOption = None,
) -> None:
    """Register a definition from a JSON file."""
    definition = _parse_json(file.read_text(), str(file))
    _print(_call("POST", f"{_server(server)}/metadata/workflow", definition))


@cli.command()
def run(
    name: Annotated[str, typer.Argument(help="Workflow name.")],
    input_json: Annotated[str, typer.Option("--input", help="Run input as JSON.")] = "{}",
    version: Annotated[int | None, typer.Option(help="Workflow version.")] = None,
    idempotency_key: Annotated[str | None, typer.Option("--idempotency-key")] = None,
    wait: Annotated[bool, typer.Option("--wait", help="Wait for the run to end.")] = False,
    timeout: Annotated[float, typer.Option(help="Seconds --wait waits at most.")] = 300.0,
    server: ServerOption = None,
) -> None:
    """Start a run; with --wait, print the finished run and exit non-zero unless COMPLETED."""
    body: dict[str, Any] = {"name": name, "input": _parse_json(input_json, "--input")}
    if version is not None:
        body["version"] = version
    if idempotency_key is not None:
        body["idempotencyKey"] = idempotency_key
    base = _server(server)
    started = _call("POST", f"{base}/flow/execute", body)
    if not wait:
        _print(started)
        return
    deadline = time.monotonic() + timeout
    while True:
        flow = _call("GET", f"{base}/flow/{started['flowId']}")
        if flow["status"] in TERMINAL or time.monotonic() > deadline:
            break
        time.sleep(WAIT_STEP_SECONDS)
    _print(flow)
    if flow["status"] != "COMPLETED":
        raise typer.Exit(FAILURE_EXIT)


@flow_cli.command("get")
def get_flow(flow_id: str, server: ServerOption = None) -> None:
    """Print a run."""
    _print(_call("GET", f"{_server(server)}/flow/{flow_id}"))


@queue_cli.command("list")
def list_queues(server: ServerOption = None) -> None:
    """Print each action's queue depth and when a worker last polled for it."""
    queues = _call("GET", f"{_server(server)}/tasks/queues")["queues"]
    rows = [("ACTION", "DEPTH", "LAST POLL")]
    rows += [(q["action"], str(q["depth"]), q["lastPollAt"] or "never") for q in queues]
    widths = [max(len(row[column]) for row in rows) for column in range(2)]
    for action, depth, last_poll in rows:
        typer.echo(f"{action:<{widths[0]}}  {depth:>{widths[1]}}  {last_poll}")


@cli.command()
def event(
    flow_id: str,
    name: str,
    data: Annotated[str, typer.Option("--data", help="Event data as JSON.")] = "{}",
    server: ServerOption = None,
) -> None:
    """Send an event to a run."""
    body = _parse_json(data, "--data")
    _print(_call("POST", f"{_server(server)}/flow/{flow_id}/events/{name}", body))


def main() -> None:
    sys.exit(cli())


if __name__ == "__main__":
    main()
