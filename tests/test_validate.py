"""Definition validation: every rule of SPEC section 1."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from app.definition import ActionType, DefinitionError
from app.engine.validate import parse_workflow

UNLEAVABLE = (
    " a cycle that no condition can leave (a cycle needs a while, if or switch with a branch "
    "out of it)"
)
SEED = Path(__file__).resolve().parent.parent / "workflows" / "notificationWorkflow.json"


def user(action_id: int, name: str = "work", **fields: Any) -> dict[str, Any]:
    return {"id": action_id, "type": "user", "name": name, **fields}


def system(action_id: int, name: str, **fields: Any) -> dict[str, Any]:
    return {"id": action_id, "type": "system", "name": name, **fields}


def workflow(*actions: dict[str, Any], **top: Any) -> dict[str, Any]:
    return {"name": "wf", "rootAction": 1, "actions": list(actions), **top}


def rejection(raw: object) -> str:
    with pytest.raises(DefinitionError) as caught:
        parse_workflow(raw)
    return str(caught.value)


# --- accepted definitions -------------------------------------------------------------------


def test_the_seed_example_is_accepted() -> None:
    raw = json.loads(SEED.read_text())

    definition = parse_workflow(raw)

    assert definition.name == "notificationWorkflow"
    assert definition.root_action == 1
    assert list(definition.actions) == list(range(1, 11))
    assert definition.version == 0
    assert definition.source is raw
    assert definition.output is None


def test_fields_are_mapped_from_the_json_names() -> None:
    seed = parse_workflow(json.loads(SEED.read_text()))

    query, script, switch = seed.actions[1], seed.actions[2], seed.actions[3]
    delay, wait = seed.actions[6], seed.actions[7]

    assert query.type is ActionType.USER
    assert query.parameters == {"userId": "{$.input.userId}"}
    assert query.next == {"default": [2]}
    assert script.expression is not None and script.expression.startswith("$['user']")
    assert switch.next == {"MALE": [4], "FEMALE": [5]}
    assert delay.delay_seconds == 10
    assert (wait.event, wait.timeout_seconds) == ("open", 20)
    assert seed.actions[8].next == {}


def test_join_on_and_the_output_template_are_mapped() -> None:
    raw = workflow(
        user(1, next={"default": [2, 3]}),
        user(2, next={"default": [4]}),
        user(3, next={"default": [4]}),
        system(4, "join", joinOn=[2, 3]),
        output={"total": "{$.4.output}"},
    )

    definition = parse_workflow(raw)

    assert definition.actions[4].join_on == [2, 3]
    assert definition.output == {"total": "{$.4.output}"}


def test_unknown_keys_and_null_optional_fields_are_allowed() -> None:
    raw = workflow(
        user(1, parameters=None, next=None, description="x"),
        description="extra",
        owner={"team": "a"},
    )

    definition = parse_workflow(raw)

    assert definition.actions[1].parameters == {}
    assert definition.actions[1].next == {}


def test_an_action_reached_from_two_branches_is_not_a_cycle() -> None:
    raw = workflow(
        system(1, "switch", expression="{$.input.x}", next={"a": [2], "b": [3]}),
        user(2, next={"default": [4]}),
        user(3, next={"default": [4]}),
        user(4),
    )

    assert set(parse_workflow(raw).actions) == {1, 2, 3, 4}


# --- the document -----------------------------------------------------------------------------


@pytest.mark.parametrize("raw", [[], "workflow", 3, None])
def test_a_definition_must_be_an_object(raw: object) -> None:
    assert rejection(raw) == "a workflow definition must be a JSON object"


@pytest.mark.parametrize("name", [None, 3, ""])
def test_name_must_be_a_non_empty_string(name: Any) -> None:
    raw = workflow(user(1))
    raw["name"] = name

    assert rejection(raw) == "name must be a non-empty string"


def test_name_is_required() -> None:
    raw = workflow(user(1))
    del raw["name"]

    assert rejection(raw) == "name must be a non-empty string"


@pytest.mark.parametrize("actions", [None, [], {"1": {}}])
def test_actions_must_be_a_non_empty_list(actions: Any) -> None:
    assert rejection({"name": "wf", "rootAction": 1, "actions": actions}) == (
        "actions must be a non-empty list"
    )


@pytest.mark.parametrize("root", [None, "1", True, 1.0])
def test_root_action_must_be_an_id(root: Any) -> None:
    raw = workflow(user(1), rootAction=root)

    assert rejection(raw).startswith("rootAction must be an action id")


def test_root_action_must_exist() -> None:
    assert rejection(workflow(user(1), rootAction=9)) == "rootAction 9 is not the id of an action"


# --- each action ------------------------------------------------------------------------------


def test_an_action_must_be_an_object() -> None:
    raw = workflow(user(1))
    raw["actions"].append("nope")

    assert rejection(raw) == "actions[1] must be an object"


@pytest.mark.parametrize("action_id", [None, "2", True, 2.5])
def test_an_action_id_must_be_an_integer(action_id: Any) -> None:
    message = rejection(workflow(user(1), user(2) | {"id": action_id}))

    assert message.startswith("actions[1]: id must be an integer")


def test_ids_must_be_unique() -> None:
    raw = workflow(user(1, next={"default": [2]}), user(2, "first"), user(2, "second"))

    assert rejection(raw) == "action 2 (second): id 2 is used by more than one action"


@pytest.mark.parametrize("kind", [None, "robot", "USER"])
def test_type_must_be_user_or_system(kind: Any) -> None:
    message = rejection(workflow(user(1) | {"type": kind}))

    assert message.startswith("action 1 (work): type must be one of 'user', 'system'")


@pytest.mark.parametrize("name", [None, "", 7])
def test_an_action_name_must_be_a_non_empty_string(name: Any) -> None:
    assert rejection(workflow(user(1) | {"name": name})) == (
        "action 1: name must be a non-empty string"
    )


@pytest.mark.parametrize("parameters", [[1], "x", 3])
def test_parameters_must_be_an_object(parameters: Any) -> None:
    message = rejection(workflow(user(1, parameters=parameters)))

    assert message.startswith("action 1 (work): parameters must be an object")


@pytest.mark.parametrize("next_", [[2], "2"])
def test_next_must_be_an_object(next_: Any) -> None:
    message = rejection(workflow(user(1, next=next_), user(2)))

    assert message.startswith("action 1 (work): next must be an object")


@pytest.mark.parametrize("targets", [2, ["2"], [True], None])
def test_next_branches_must_be_lists_of_ids(targets: Any) -> None:
    message = rejection(workflow(user(1, next={"default": targets}), user(2)))

    assert message.startswith("action 1 (work): next.default must be a list of action ids")


def test_an_id_in_next_must_exist() -> None:
    raw = workflow(user(1, next={"default": [2], "error": [7]}), user(2))

    assert rejection(raw) == "action 1 (work): next.error names action 7, which does not exist"


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        ("expression", 5, "expression must be a string"),
        ("event", ["open"], "event must be a string"),
        ("delaySeconds", "10", "delaySeconds must be a number"),
        ("timeoutSeconds", True, "timeoutSeconds must be a number"),
        ("joinOn", [1, "2"], "joinOn must be a list of action ids"),
    ],
)
def test_typed_fields_must_have_their_type(field: str, value: Any, expected: str) -> None:
    message = rejection(workflow(system(1, "wait", event="open") | {field: value}))

    assert message.startswith(f"action 1 (wait): {expected}")


# --- system actions ---------------------------------------------------------------------------


def test_an_unknown_system_action_is_rejected() -> None:
    message = rejection(workflow(system(1, "teleport")))

    assert message.startswith("action 1 (teleport): unknown system action 'teleport'")
    assert "switch" in message


def test_a_user_action_may_have_any_name() -> None:
    assert parse_workflow(workflow(user(1, "teleport"))).actions[1].name == "teleport"


@pytest.mark.parametrize(
    ("action", "expected"),
    [
        (system(1, "switch"), "action 1 (switch): switch needs an expression or cases"),
        (system(1, "delay"), "action 1 (delay): delay needs delaySeconds"),
        (system(1, "wait"), "action 1 (wait): wait needs an event name"),
        (system(1, "join"), "action 1 (join): join needs joinOn"),
        (system(1, "javascript"), "action 1 (javascript): javascript needs an expression"),
        (system(1, "delay", delaySeconds=-1), "action 1 (delay): delaySeconds must be a number"),
        (
            system(1, "wait", event="open", timeoutSeconds=0),
            "action 1 (wait): timeoutSeconds must be a number > 0",
        ),
    ],
)
def test_each_system_action_validates_its_fields(action: dict[str, Any], expected: str) -> None:
    assert rejection(workflow(action)).startswith(expected)


def test_a_javascript_expression_must_compile() -> None:
    message = rejection(workflow(system(1, "javascript", expression="$.a = ;")))

    assert message.startswith("action 1 (javascript): script does not compile: SyntaxError")


def test_an_id_in_join_on_must_exist() -> None:
    raw = workflow(user(1, next={"default": [2]}), system(2, "join", joinOn=[1, 8]))

    assert rejection(raw) == "action 2 (join): joinOn names action 8, which does not exist"


# --- JSONPath references ----------------------------------------------------------------------


def test_a_parameter_path_must_parse() -> None:
    raw = workflow(user(1, parameters={"deep": [{"to": "Hi {$.input.user[}"}]}))

    message = rejection(raw)

    assert message.startswith("action 1 (work): parameters: JSONPath $.input.user[ does not parse")


def test_a_switch_expression_path_must_parse() -> None:
    message = rejection(workflow(system(1, "switch", expression="{$.a b}")))

    assert message.startswith("action 1 (switch): expression: JSONPath $.a b does not parse")


def test_an_output_template_path_must_parse() -> None:
    message = rejection(workflow(user(1), output={"x": "{$.1.output.#}"}))

    assert message.startswith("output: JSONPath $.1.output.# does not parse")


def test_system_action_parameters_are_checked_too() -> None:
    raw = workflow(system(1, "delay", delaySeconds=1, parameters={"x": "{$.[}"}))

    assert rejection(raw).startswith("action 1 (delay): parameters: JSONPath $.[ does not parse")


# --- graph ----------------------------------------------------------------------------------


def test_an_unreachable_action_is_rejected() -> None:
    raw = workflow(user(1, next={"default": [2]}), user(2), user(3, "orphan"))

    assert rejection(raw) == "action 3 (orphan) is not reachable from rootAction 1"


def test_every_unreachable_action_is_named() -> None:
    raw = workflow(user(1), user(2, "a"), user(3, "b", next={"default": [2]}))

    assert rejection(raw) == "action 2 (a), action 3 (b) are not reachable from rootAction 1"


def test_a_cycle_no_condition_can_leave_is_rejected_with_its_ids() -> None:
    raw = workflow(
        user(1, next={"default": [2]}),
        user(2, "two", next={"default": [3]}),
        user(3, "three", next={"default": [4], "retry": [2]}),
        user(4),
    )

    assert rejection(raw) == f"actions 2, 3 form{UNLEAVABLE}"


def test_a_self_loop_is_a_cycle() -> None:
    raw = workflow(user(1, next={"default": [2]}), user(2, "again", next={"default": [2]}))

    assert rejection(raw) == f"action 2 forms{UNLEAVABLE}"


def test_a_cycle_back_to_the_root_is_rejected() -> None:
    raw = workflow(user(1, "root", next={"default": [2]}), user(2, next={"default": [1]}))

    assert rejection(raw) == f"actions 1, 2 form{UNLEAVABLE}"


def test_a_long_chain_does_not_exhaust_the_stack() -> None:
    length = 5000
    actions = [user(i, next={"default": [i + 1]}) for i in range(1, length)] + [user(length)]

    assert len(parse_workflow(workflow(*actions)).actions) == length


def test_the_seed_with_a_missing_switch_expression_names_the_switch() -> None:
    raw = json.loads(SEED.read_text())
    broken = copy.deepcopy(raw)
    del broken["actions"][2]["expression"]

    assert rejection(broken) == "action 3 (switch): switch needs an expression or cases"
