"""The ``orchy`` command line as a user runs it: ``python -m app.cli ... --server URL``
subprocesses against a real server."""

from __future__ import annotations

import asyncio
import json
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.conftest import Api, ServerThread, free_port, unique, wait_until
from tests.test_engine_http import system, user, workflow

ROOT = Path(__file__).resolve().parent.parent
COMMAND_SECONDS = 30.0
# Rich draws usage errors in a box; the border and the wrapping are not part of the message.
_BOX_AND_SPACE = re.compile(r"[\s│╭╮╰╯─]+")


@dataclass
class Result:
    code: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        return json.loads(self.stdout)

    @property
    def message(self) -> str:
        """stderr as one line, without Rich's box."""
        return _BOX_AND_SPACE.sub(" ", self.stderr).strip()


async def orchy(*args: str, server: ServerThread | str | None = None) -> Result:
    """Runs ``python -m app.cli ARGS [--server URL]`` without blocking the event loop."""
    command = [sys.executable, "-m", "app.cli", *args]
    if server is not None:
        command += ["--server", server if isinstance(server, str) else server.url]
    process = await asyncio.create_subprocess_exec(
        *command,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "200", "NO_COLOR": "1"},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        stdout, stderr = await asyncio.wait_for(process.communicate(), COMMAND_SECONDS)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode is not None
    return Result(process.returncode, stdout.decode(), stderr.decode())


def write_definition(folder: Path, definition: dict[str, Any]) -> Path:
    path = folder / f"{definition['name']}.json"
    path.write_text(json.dumps(definition))
    return path


def delayed(name: str) -> dict[str, Any]:
    """Only system actions: a 0.1 s delay, then a switch on the input that may fail."""
    return workflow(
        name,
        system(1, "delay", {"default": [2]}, delaySeconds=0.1),
        system(2, "switch", {"go": [3]}, expression="{$.input.way}"),
        system(3, "delay", delaySeconds=0.01),
    )


# -- workflow register --------------------------------------------------------------------


async def test_workflow_register_prints_name_and_version(
    api: Api, server: ServerThread, tmp_path: Path
) -> None:
    name = unique("cli-register")
    definition = delayed(name)
    path = write_definition(tmp_path, definition)

    first = await orchy("workflow", "register", str(path), server=server)
    assert first.code == 0, first.stderr
    assert first.json() == {"name": name, "version": 1, "created": True}

    same = await orchy("workflow", "register", str(path), server=server)
    assert same.code == 0, same.stderr
    assert same.json() == {"name": name, "version": 1, "created": False}

    definition["actions"][0]["delaySeconds"] = 0.2
    changed = await orchy(
        "workflow", "register", str(write_definition(tmp_path, definition)), server=server
    )
    assert changed.code == 0, changed.stderr
    assert changed.json() == {"name": name, "version": 2, "created": True}
    stored = await api.http.get(f"/metadata/workflow/{name}")
    assert stored.json()["version"] == 2


async def test_workflow_register_refusals_exit_non_zero_with_the_reason(
    server: ServerThread, tmp_path: Path
) -> None:
    name = unique("cli-invalid")
    invalid = workflow(name, system(1, "switch", {"a": [2]}), user(2, f"{name}-x"))
    broken = tmp_path / "broken.json"
    broken.write_text('{"name": ')
    refused, unparsable, missing = await asyncio.gather(
        orchy("workflow", "register", str(write_definition(tmp_path, invalid)), server=server),
        orchy("workflow", "register", str(broken), server=server),
        orchy("workflow", "register", str(tmp_path / "nope.json"), server=server),
    )
    assert refused.code == 1
    assert refused.stdout == ""
    assert refused.message.startswith("422:")
    assert "action 1" in refused.message and "expression" in refused.message

    assert unparsable.code != 0
    assert "is not valid JSON" in unparsable.message

    assert missing.code != 0
    assert "nope.json" in missing.message


# -- run ------------------------------------------------------------------------------------


async def test_run_wait_prints_the_completed_run_and_exits_zero(
    api: Api, server: ServerThread
) -> None:
    name = unique("cli-run")
    await api.register(delayed(name))
    done = await orchy("run", name, "--input", '{"way": "go", "n": 7}', "--wait", server=server)
    assert done.code == 0, done.stderr
    flow = done.json()
    assert flow["status"] == "COMPLETED"
    assert flow["name"] == name
    assert flow["input"] == {"way": "go", "n": 7}
    assert flow["actions"]["2"]["output"] == {"value": "go"}
    assert set(flow["actions"]) == {"1", "2", "3"}
    assert (await api.flow(flow["id"]))["status"] == "COMPLETED"


async def test_run_wait_exits_one_when_the_run_fails(api: Api, server: ServerThread) -> None:
    name = unique("cli-run-fail")
    await api.register(delayed(name))
    failed = await orchy("run", name, "--input", '{"way": "elsewhere"}', "--wait", server=server)
    assert failed.code == 1
    flow = failed.json()
    assert flow["status"] == "FAILED"
    assert "elsewhere" in flow["reason"]
    assert flow["actions"]["2"]["status"] == "FAILED"


async def test_run_without_wait_prints_the_flow_id_at_once(api: Api, server: ServerThread) -> None:
    name = unique("cli-run-nowait")
    await api.register(workflow(name, user(1, f"{name}-never")))
    started = await orchy("run", name, "--idempotency-key", "k-1", server=server)
    assert started.code == 0, started.stderr
    flow_id = started.json()["flowId"]
    assert (await api.flow(flow_id))["status"] == "RUNNING"
    again, waited = await asyncio.gather(
        orchy("run", name, "--idempotency-key", "k-1", server=server),
        orchy("run", name, "--idempotency-key", "k-1", "--wait", "--timeout", "0.3", server=server),
    )
    assert again.json() == {"flowId": flow_id, "created": False}
    assert waited.code == 1, "a --wait that times out is not a success"
    assert waited.json()["status"] == "RUNNING"
    await api.http.post(f"/flow/{flow_id}/terminate")


async def test_run_with_bad_input_json_exits_non_zero_with_a_message(
    api: Api, server: ServerThread
) -> None:
    name = unique("cli-bad-input")
    await api.register(delayed(name))
    result = await orchy("run", name, "--input", "{way: go}", "--wait", server=server)
    assert result.code != 0
    assert result.stdout == ""
    assert "--input is not valid JSON" in result.message
    listed = await api.http.get("/flow", params={"name": name})
    assert listed.json()["runs"] == [], "no run may start from a bad --input"


async def test_run_of_an_unknown_workflow_exits_with_the_servers_404(server: ServerThread) -> None:
    name = unique("cli-unknown")
    result = await orchy("run", name, "--wait", server=server)
    assert result.code == 1
    assert result.stdout == ""
    assert result.message == f"404: workflow '{name}' not found"


async def test_an_unreachable_server_exits_one_naming_the_url() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    result = await orchy("flow", "get", "some-id", server=url)
    assert result.code == 1
    assert f"cannot reach {url}/flow/some-id" in result.message


# -- flow get, event ------------------------------------------------------------------------


async def test_flow_get_prints_the_run(api: Api, server: ServerThread) -> None:
    name = unique("cli-get")
    await api.register(workflow(name, user(1, f"{name}-task", x="{$.input.x}")))
    flow_id = await api.start(name, {"x": 3})
    shown = await orchy("flow", "get", flow_id, server=server)
    assert shown.code == 0, shown.stderr
    assert shown.json() == await api.flow(flow_id)
    assert shown.json()["actions"]["1"]["status"] == "QUEUED"

    unknown = await orchy("flow", "get", f"{flow_id}x", server=server)
    assert unknown.code == 1
    assert unknown.message.startswith("404:") and f"{flow_id}x" in unknown.message
    await api.http.post(f"/flow/{flow_id}/terminate")


async def test_event_is_delivered_to_a_waiting_run(api: Api, server: ServerThread) -> None:
    name = unique("cli-event")
    await api.register(
        workflow(
            name,
            system(1, "wait", {"approved": [2], "default": [3]}, event="approved"),
            system(2, "delay", delaySeconds=0.01),
            system(3, "switch", {"never": [2]}, expression="{$.1.output.timedOut}"),
        )
    )
    flow_id = await api.start(name)

    async def waiting() -> bool:
        status: str = (await api.flow(flow_id))["actions"]["1"]["status"]
        return status == "WAITING"

    await wait_until(waiting, what="the run to wait for its event")
    sent = await orchy("event", flow_id, "approved", "--data", '{"by": "ann"}', server=server)
    assert sent.code == 0, sent.stderr
    assert sent.json() == {"status": "delivered"}
    flow = await api.wait_status(flow_id, "COMPLETED")
    assert flow["actions"]["1"]["output"] == {"by": "ann"}
    assert set(flow["actions"]) == {"1", "2"}

    finished, bad = await asyncio.gather(
        orchy("event", flow_id, "approved", server=server),
        orchy("event", flow_id, "approved", "--data", "{by: ann}", server=server),
    )
    assert finished.code == 1
    assert finished.message.startswith("409:")
    assert bad.code != 0
    assert "--data is not valid JSON" in bad.message
