"""Workflows as code (``orchy.builder``): the JSON it builds for every construct, the round
trips with the JSON format, its checks (the format's models and links in the light install,
the server's full rules beside it), and a built workflow that the real server registers and
runs."""

from __future__ import annotations

import inspect
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.actions import REGISTRY
from app.engine.validate import parse_workflow
from orchy import Workflow, WorkflowDefinitionError
from orchy.builder import Switch, check
from orchy.definition_models import SYSTEM_STEPS, WorkflowDefinition
from tests.helpers.http import Api, ServerThread
from tests.helpers.waiting import unique

ROOT = Path(__file__).resolve().parent.parent
WORKFLOW_FILES = sorted(
    path for path in (ROOT / "workflows").glob("*.json") if not path.name.endswith(".input.json")
)


def every_construct(name: str = "every-construct") -> Workflow:
    """One workflow using every method of the builder."""
    wf = Workflow(name, output={"report": "{$.12.output}"}, vars={"seen": 0})
    fetch = wf.user("fetch", parameters={"id": "{$.input.id}"}, retry_count=2)
    kind = wf.switch(fetch.output_ref("kind"))
    fetch >> kind
    big = wf.if_(f"{fetch.output_ref('total')} > 100")
    kind.branch("order") >> big
    big.on_true >> wf.delay(0.1) >> (approve := wf.wait("approve", timeout_seconds=5))
    big.on_false >> (small := wf.javascript("$.input.id + 1"))
    kind >> (refuse := wf.terminate("FAILED", "unknown kind"))
    loop = wf.while_(f"{wf.var('n', 0)} < 3", check="after")
    [approve, small] >> loop
    loop.body >> wf.user("count").set_var("n", 1, op="add") >> loop
    each = wf.for_each("{$.input.orders}", "charge", {"order": "{$.item}"}, concurrency=2)
    child = wf.sub_workflow("payment", {"orderId": "{$.input.id}"}, version=1)
    loop >> [each, child]
    report = wf.user("report", id=12)
    wf.join(each, child) >> report
    fetch.on_error(wf.wait("fixed", correlation_key="{$.input.id}"))
    assert refuse.name == "terminate"
    return wf


def test_every_construct_builds_the_format_the_server_accepts() -> None:
    definition = every_construct().to_json()
    parse_workflow(definition)
    actions = {action["id"]: action for action in definition["actions"]}
    assert definition["rootAction"] == 1
    assert definition["vars"] == {"seen": 0, "n": 0}
    assert actions[1] == {
        "id": 1,
        "type": "user",
        "name": "fetch",
        "parameters": {"id": "{$.input.id}"},
        "retryCount": 2,
        "next": {"default": [2], "error": [14]},
    }
    assert actions[2]["expression"] == "{$.1.output.kind}"
    assert actions[2]["next"] == {"order": [3], "default": [7]}
    assert actions[3]["condition"] == "{$.1.output.total} > 100"
    assert actions[3]["next"] == {"true": [4], "false": [6]}
    assert actions[5] == {
        "id": 5,
        "type": "system",
        "name": "wait",
        "event": "approve",
        "timeoutSeconds": 5,
        "next": {"default": [8]},
    }
    assert actions[7]["parameters"] == {"status": "FAILED", "reason": "unknown kind"}
    assert "next" not in actions[7]
    assert actions[8]["check"] == "after"
    assert actions[8]["next"] == {"body": [9], "default": [10, 11]}
    assert actions[9]["setVars"] == [{"var": "n", "op": "add", "value": 1}]
    assert actions[9]["next"] == {"default": [8]}
    assert actions[10]["body"] == {
        "type": "user",
        "name": "charge",
        "parameters": {"order": "{$.item}"},
    }
    assert actions[10]["concurrency"] == 2
    assert actions[11]["version"] == 1 and actions[11]["workflow"] == "payment"
    assert actions[12]["name"] == "report" and actions[13]["joinOn"] == [10, 11]
    assert actions[10]["next"] == actions[11]["next"] == {"default": [13]}
    assert actions[13]["next"] == {"default": [12]}
    assert actions[14]["correlationKey"] == "{$.input.id}"


def test_switch_cases_and_ids_given_or_counted() -> None:
    wf = Workflow("cases")
    switch = wf.switch(id=10)
    assert isinstance(switch, Switch)
    switch.case("{$.input.n} > 9", "big") >> wf.user("big")
    switch.case("{$.input.n} < 0", "negative") >> wf.user("negative")
    switch >> wf.user("other")
    definition = wf.to_json()
    assert definition["rootAction"] == 10
    assert [action["id"] for action in definition["actions"]] == [10, 11, 12, 13]
    assert definition["actions"][0]["cases"] == [
        {"when": "{$.input.n} > 9", "branch": "big"},
        {"when": "{$.input.n} < 0", "branch": "negative"},
    ]
    assert definition["actions"][0]["next"] == {"big": [11], "negative": [12], "default": [13]}
    with pytest.raises(WorkflowDefinitionError, match="id 11 is used by more than one"):
        wf.user("again", id=11)


def test_a_for_each_may_run_a_sub_workflow_per_item() -> None:
    ship = Workflow("ship-order")
    ship.user("ship", parameters={"order": "{$.input.order}"})
    wf = Workflow("ship-all")
    wf.for_each("{$.input.orders}", ship, {"order": "{$.item}"}, concurrency=3)
    wf.for_each([1, 2], {"workflow": "ship-order", "version": 2})
    definition = wf.to_json(validate=False)
    assert definition["actions"][0]["body"] == {
        "workflow": "ship-order",
        "input": {"order": "{$.item}"},
    }
    assert definition["actions"][1]["body"] == {"workflow": "ship-order", "version": 2}
    WorkflowDefinition.model_validate(definition)  # the format's models know both bodies


def test_the_root_is_the_first_action_unless_set() -> None:
    wf = Workflow("rooted")
    later = wf.user("later")
    first = wf.user("first")
    first >> later
    wf.root = first
    assert wf.to_json()["rootAction"] == first.id


@pytest.mark.parametrize("path", WORKFLOW_FILES, ids=lambda path: path.name)
def test_every_example_file_round_trips(path: Path) -> None:
    definition = json.loads(path.read_text())
    assert Workflow.from_json(definition).to_json() == definition


def test_builder_json_builder_json_is_stable() -> None:
    first = every_construct().to_json()
    again = Workflow.from_json(first)
    assert again.to_json() == first
    assert Workflow.from_json(again.to_json()).to_json() == first
    # A read definition can be extended: its steps keep their kinds.
    loop = again.step(8)
    loop >> again.user("after-loop")
    assert again.to_json()["actions"][8 - 1]["next"]["default"] == [10, 11, 15]


def test_unknown_fields_and_absent_or_empty_next_survive_a_round_trip() -> None:
    definition = {
        "name": "kept",
        "description": "extra top-level field",
        "rootAction": 1,
        "actions": [
            {"id": 1, "type": "user", "name": "a", "next": {}, "custom": [1, 2]},
        ],
    }
    assert Workflow.from_json(definition).to_json() == definition


def test_the_format_s_models_refuse_a_malformed_definition_naming_the_field() -> None:
    wf = Workflow("malformed")
    wf.switch()  # neither expression nor cases
    with pytest.raises(WorkflowDefinitionError, match="either an expression or cases"):
        wf.to_json()
    with pytest.raises(WorkflowDefinitionError, match="delaySeconds"):
        Workflow.from_json(
            {
                "name": "x",
                "rootAction": 1,
                "actions": [{"id": 1, "type": "system", "name": "delay"}],
            }
        )


def test_a_link_to_a_missing_id_is_refused() -> None:
    definition = {
        "name": "dangling",
        "rootAction": 1,
        "actions": [{"id": 1, "type": "user", "name": "a", "next": {"default": [5]}}],
    }
    with pytest.raises(WorkflowDefinitionError, match="id 5 is not the id of an action"):
        check(definition)


def test_the_server_s_full_rules_run_beside_the_server() -> None:
    wf = Workflow("endless")
    a, b = wf.user("a"), wf.user("b")
    a >> b >> a  # a cycle no condition can leave: only validate.py knows
    with pytest.raises(WorkflowDefinitionError, match="cycle"):
        wf.to_json()
    assert wf.to_json(validate=False)["actions"][1]["next"] == {"default": [1]}
    bad_condition = Workflow("bad-condition")
    bad_condition.if_("{$.input.x} >")
    with pytest.raises(WorkflowDefinitionError, match="position"):
        bad_condition.validate()


def test_the_light_install_checks_the_models_and_links_only(tmp_path: Path) -> None:
    """``orchy`` alone (copied away from ``app``): shape and links are checked, a cycle is
    left to the server."""
    light = tmp_path / "site"
    light.mkdir()
    shutil.copytree(ROOT / "orchy", light / "orchy", ignore=shutil.ignore_patterns("__pycache__"))
    script = textwrap.dedent(
        """
        import sys
        from orchy import Workflow, WorkflowDefinitionError
        wf = Workflow("endless"); a = wf.user("a"); b = wf.user("b"); a >> b >> a
        wf.to_json()
        bad = Workflow("bad"); bad.switch()
        try:
            bad.to_json()
        except WorkflowDefinitionError as error:
            print("refused:", error)
        print("app" in sys.modules)
        """
    )
    env = {**os.environ, "PYTHONPATH": str(light)}
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("refused:") and "either an expression or cases" in lines[0]
    assert lines[1] == "False"


def test_the_models_know_every_system_action_of_the_server() -> None:
    assert set(SYSTEM_STEPS) == set(REGISTRY)


def test_links_across_workflows_are_refused() -> None:
    one, other = Workflow("one"), Workflow("other")
    with pytest.raises(ValueError, match="another workflow"):
        one.user("a") >> other.user("b")


async def test_a_built_workflow_registers_and_runs_on_the_server(
    api: Api, http: httpx.AsyncClient, server: ServerThread
) -> None:
    name = unique("built")
    wf = Workflow(name)
    script = wf.javascript("$.input.n * 2")
    wf.output = {"doubled": script.output_ref("result")}
    gate = wf.if_(f"{script.output_ref('result')} > 5")
    script >> gate
    gate.on_true >> wf.terminate("COMPLETED", output={"big": True})
    await api.register(wf.to_json())
    stored = (await http.get(f"/metadata/workflow/{name}")).json()
    assert Workflow.from_json({k: v for k, v in stored.items() if k != "version"}).to_json() == {
        k: v for k, v in stored.items() if k != "version"
    }
    small = await api.wait_status(await api.start(name, {"n": 2}), "COMPLETED")
    assert small["output"] == {"doubled": 4}
    big = await api.wait_status(await api.start(name, {"n": 3}), "COMPLETED")
    assert big["output"] == {"big": True}


def test_every_public_name_has_a_docstring() -> None:
    import orchy
    import orchy.builder
    import orchy.definition_models
    import orchy.testing

    missing: list[Any] = []
    for module in (orchy.builder, orchy.testing):
        assert module.__doc__
        for public in getattr(module, "__all__", []):
            value = getattr(module, public)
            if callable(value) and not getattr(value, "__doc__", None):
                missing.append(f"{module.__name__}.{public}")
            for attr, member in vars(value).items() if isinstance(value, type) else ():
                if not attr.startswith("_") and callable(member) and not member.__doc__:
                    missing.append(f"{module.__name__}.{public}.{attr}")
    for public in orchy.__all__:  # the package's own names: worker, client, errors
        value = getattr(orchy, public)
        if not inspect.getdoc(value):
            missing.append(f"orchy.{public}")
        for attr, member in vars(value).items() if isinstance(value, type) else ():
            function = member.fget if isinstance(member, property) else member
            if not attr.startswith("_") and inspect.isfunction(function) and not function.__doc__:
                missing.append(f"orchy.{public}.{attr}")
    for name, value in vars(orchy.definition_models).items():
        model = isinstance(value, type) and value.__module__ == orchy.definition_models.__name__
        if model and not value.__dict__.get("__doc__"):
            missing.append(f"orchy.definition_models.{name}")
    assert missing == []
