"""The ``orchy`` command line as a user runs it: ``python -m app.cli ... --server URL``
subprocesses against a real server."""

from __future__ import annotations

import asyncio
import json
import os
import re
import sys
from pathlib import Path
from typing import Any

from tests.helpers.cli import COMMAND_SECONDS, ROOT, orchy, orchy_in
from tests.helpers.definitions import system, user, workflow
from tests.helpers.http import Api, ServerThread, free_port
from tests.helpers.waiting import unique, wait_until


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


async def test_workflow_register_takes_a_builder_or_a_dict_at_module_attr(
    api: Api, server: ServerThread, tmp_path: Path
) -> None:
    name = unique("cli-built")
    module = f"built_{name.replace('-', '_')}"
    (tmp_path / f"{module}.py").write_text(
        "from orchy import Workflow\n"
        f"wf = Workflow({name!r})\n"
        "wf.delay(0.01) >> wf.delay(0.02)\n"
        f"as_dict = {{'name': {name!r}, 'rootAction': 1, 'actions': "
        "[{'id': 1, 'type': 'system', 'name': 'delay', 'delaySeconds': 1}]}\n"
        "broken = Workflow('broken')\n"
        "broken.switch()\n"
    )
    built, as_dict, broken, missing = await asyncio.gather(
        orchy_in(tmp_path, "workflow", "register", f"{module}:wf", server=server),
        orchy_in(tmp_path, "workflow", "register", f"{module}:as_dict", server=server),
        orchy_in(tmp_path, "workflow", "register", f"{module}:broken", server=server),
        orchy_in(tmp_path, "workflow", "register", f"{module}:nothing", server=server),
    )
    assert built.code == 0, built.stderr
    assert as_dict.code == 0, as_dict.stderr
    assert sorted([built.json()["version"], as_dict.json()["version"]]) == [1, 2]
    stored = [
        (await api.http.get(f"/metadata/workflow/{name}?version={version}")).json()
        for version in (1, 2)
    ]
    assert sorted(len(definition["actions"]) for definition in stored) == [1, 2]
    assert broken.code == 1 and "either an expression or cases" in broken.message
    assert missing.code != 0 and "has no attribute nothing" in missing.message


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
    assert f"timed out after 0.3 s: flow {flow_id} is still RUNNING" in waited.stderr
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


# -- run: progress, input files, input shapes -----------------------------------------------


async def test_run_wait_tells_the_flow_id_at_once_then_each_step(
    api: Api, server: ServerThread
) -> None:
    """The run cannot end before the test completes its task, which it finds through the
    flow id the command printed: so that id was printed while the run was going on."""
    name = unique("cli-progress")
    task_name = f"{name}-task"
    await api.register(workflow(name, user(1, task_name, {"default": [2]}), user(2, task_name)))
    process = await asyncio.create_subprocess_exec(
        *[sys.executable, "-m", "app.cli", "run", name, "--wait", "--server", server.url],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert process.stderr is not None and process.stdout is not None
        first = await asyncio.wait_for(process.stderr.readline(), COMMAND_SECONDS)
        started = re.fullmatch(r"flow (\w+) started\n", first.decode())
        assert started is not None, first
        flow_id = started.group(1)
        assert process.returncode is None
        for _ in range(2):
            task = await api.poll_one(task_name)
            assert task["flowId"] == flow_id
            assert (
                await api.complete(task["taskId"], {"done": task["actionId"]})
            ).status_code == 200
        stdout, rest = await asyncio.wait_for(process.communicate(), COMMAND_SECONDS)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode == 0
    assert json.loads(stdout)["status"] == "COMPLETED"
    progress = rest.decode().splitlines()
    for line in ("  action 1: COMPLETED", "  action 2: COMPLETED", f"flow {flow_id} COMPLETED"):
        assert line in progress, progress
    assert progress[-1] == f"flow {flow_id} COMPLETED"
    assert progress.index("  action 1: COMPLETED") < progress.index("  action 2: COMPLETED")


async def test_run_reads_its_input_from_a_file(
    api: Api, server: ServerThread, tmp_path: Path
) -> None:
    name = unique("cli-input-file")
    await api.register(delayed(name))
    input_file = tmp_path / "input.json"
    input_file.write_text(json.dumps({"way": "go", "from": "a file"}))
    done, missing = await asyncio.gather(
        orchy("run", name, "--input", f"@{input_file}", "--wait", server=server),
        orchy("run", name, "--input", f"@{tmp_path / 'nope.json'}", server=server),
    )
    assert done.code == 0, done.stderr
    assert done.json()["input"] == {"way": "go", "from": "a file"}
    assert missing.code != 0
    assert f"--input: cannot read {tmp_path / 'nope.json'}" in missing.message
    listed = await api.http.get("/flow", params={"name": name})
    assert [run["id"] for run in listed.json()["runs"]] == [done.json()["id"]]


async def test_run_refuses_an_input_that_is_not_an_object_before_starting(
    api: Api, server: ServerThread, tmp_path: Path
) -> None:
    name = unique("cli-input-shape")
    await api.register(delayed(name))
    listed_file = tmp_path / "list.json"
    listed_file.write_text("[1, 2]")
    results = await asyncio.gather(
        orchy("run", name, "--input", "[1, 2]", server=server),
        orchy("run", name, "--input", '"text"', server=server),
        orchy("run", name, "--input", "null", "--wait", server=server),
        orchy("run", name, "--input", f"@{listed_file}", server=server),
    )
    for result, kind in zip(results, ["list", "str", "null", "list"], strict=True):
        assert result.code != 0
        assert result.stdout == ""
        assert f"--input must be a JSON object, not {kind}" in result.message
    listed = await api.http.get("/flow", params={"name": name})
    assert listed.json()["runs"] == [], "no run may start from an input that is not an object"


# -- workflow list, flow list, history and lifecycle ----------------------------------------


async def test_workflow_list_shows_every_workflow_with_its_latest_version(
    api: Api, server: ServerThread
) -> None:
    first, second = unique("cli-list-a"), unique("cli-list-b")
    await api.register(delayed(first))
    await api.register(delayed(second))
    changed = delayed(second)
    changed["actions"][0]["delaySeconds"] = 0.2
    await api.register(changed)
    listed = await orchy("workflow", "list", server=server)
    assert listed.code == 0, listed.stderr
    assert listed.json() == (await api.http.get("/metadata/workflow")).json()
    versions = {entry["name"]: entry["latestVersion"] for entry in listed.json()}
    assert versions[first] == 1
    assert versions[second] == 2


async def test_flow_list_shows_runs_newest_first_by_name_and_status(
    api: Api, server: ServerThread
) -> None:
    name = unique("cli-flow-list")
    await api.register(workflow(name, user(1, f"{name}-never")))
    older = await api.start(name)
    newer = await api.start(name)
    await api.http.post(f"/flow/{older}/terminate")
    everything, terminated, one = await asyncio.gather(
        orchy("flow", "list", "--name", name, server=server),
        orchy("flow", "list", "--name", name, "--status", "terminated", server=server),
        orchy("flow", "list", "--name", name, "--limit", "1", "--offset", "1", server=server),
    )
    assert everything.code == 0, everything.stderr
    assert [run["id"] for run in everything.json()["runs"]] == [newer, older]
    assert [run["status"] for run in everything.json()["runs"]] == ["RUNNING", "TERMINATED"]
    assert [run["id"] for run in terminated.json()["runs"]] == [older]
    assert [run["id"] for run in one.json()["runs"]] == [older]
    await api.http.post(f"/flow/{newer}/terminate")


async def test_flow_history_pause_resume_and_terminate(api: Api, server: ServerThread) -> None:
    name = unique("cli-lifecycle")
    await api.register(workflow(name, user(1, f"{name}-never")))
    flow_id = await api.start(name)

    paused = await orchy("flow", "pause", flow_id, server=server)
    assert paused.code == 0, paused.stderr
    assert paused.json() == {"status": "ok"}
    assert (await api.flow(flow_id))["status"] == "PAUSED"
    resumed = await orchy("flow", "resume", flow_id, server=server)
    assert resumed.code == 0, resumed.stderr
    assert (await api.flow(flow_id))["status"] == "RUNNING"
    terminated = await orchy("flow", "terminate", flow_id, server=server)
    assert terminated.code == 0, terminated.stderr
    assert (await api.flow(flow_id))["status"] == "TERMINATED"

    history, again, unknown = await asyncio.gather(
        orchy("flow", "history", flow_id, server=server),
        orchy("flow", "terminate", flow_id, server=server),
        orchy("flow", "pause", f"{flow_id}x", server=server),
    )
    assert history.code == 0, history.stderr
    assert history.json() == (await api.http.get(f"/flow/{flow_id}/history")).json()
    events = [entry["event"] for entry in history.json()["history"]]
    assert "RUN_TERMINATED" in events
    assert again.code == 1
    assert again.message.startswith("409:")
    assert unknown.code == 1
    assert unknown.message.startswith("404:")


async def test_flow_retry_and_rerun(api: Api, server: ServerThread) -> None:
    name = unique("cli-repair")
    queue = f"{name}-work"
    await api.register(workflow(name, user(1, queue, n="{$.input.n}")))
    flow_id = await api.start(name, {"n": 1})
    task = await api.poll_one(queue)
    assert (await api.fail(task["taskId"], "broken", retryable=False)).status_code == 200
    await api.wait_status(flow_id, "FAILED")

    retried = await orchy("flow", "retry", flow_id, "--input", '{"n": 2}', server=server)
    assert retried.code == 0, retried.stderr
    assert retried.json() == {"status": "ok", "actions": [1]}
    assert (await api.poll_one(queue))["input"] == {"n": 2}
    again = await orchy("flow", "retry", flow_id, server=server)
    assert again.code == 1
    assert again.message.startswith("409:") and "RUNNING" in again.message

    rerun = await orchy("flow", "rerun", flow_id, "--input", '{"n": 3}', server=server)
    assert rerun.code == 0, rerun.stderr
    new_id = rerun.json()["flowId"]
    assert (await api.flow(new_id))["input"] == {"n": 3}
    same = await orchy("flow", "rerun", flow_id, server=server)
    assert (await api.flow(same.json()["flowId"]))["input"] == {"n": 1}
    bad = await orchy("flow", "rerun", flow_id, "--input", "{nope", server=server)
    assert bad.code != 0 and "--input is not valid JSON" in bad.message
