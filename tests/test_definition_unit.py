"""The in-memory workflow definition: branches, labels, defaults. Pure: no Redis, no server."""

from __future__ import annotations

from app.definition import (
    DEFAULT_BRANCH,
    ERROR_BRANCH,
    ActionDef,
    ActionType,
    DefinitionError,
    WorkflowDef,
)


def switch(next_: dict[str, list[int]]) -> ActionDef:
    return ActionDef(id=4, type=ActionType.SYSTEM, name="switch", next=next_)


def test_a_branch_named_in_next_gives_its_ids() -> None:
    action = switch({"MALE": [5, 6], "default": [7]})

    assert action.branch("MALE") == [5, 6]


def test_a_branch_not_in_next_falls_back_to_default() -> None:
    assert switch({"MALE": [5], "default": [7, 8]}).branch("FEMALE") == [7, 8]


def test_an_empty_branch_does_not_fall_back() -> None:
    assert switch({"MALE": [], "default": [7]}).branch("MALE") == []


def test_no_branch_and_no_default_starts_nothing() -> None:
    assert switch({"MALE": [5]}).branch("FEMALE") == []
    assert switch({}).branch("default") == []


def test_the_branch_names_and_action_types() -> None:
    assert (DEFAULT_BRANCH, ERROR_BRANCH) == ("default", "error")
    assert [kind.value for kind in ActionType] == ["user", "system"]


def test_an_action_is_labelled_by_id_and_name() -> None:
    assert switch({}).label == "action 4 (switch)"


def test_an_action_knows_whether_it_references_data() -> None:
    plain = ActionDef(id=1, type=ActionType.USER, name="a", parameters={"x": ["$.input", 1]})
    reading = ActionDef(id=1, type=ActionType.USER, name="a", parameters={"x": ["{$.input}"]})

    assert not plain.references_data
    assert reading.references_data


def test_optional_fields_default_to_empty_or_none() -> None:
    action = ActionDef(id=1, type=ActionType.USER, name="a")
    workflow = WorkflowDef(name="wf", root_action=1, actions={1: action})

    assert (action.parameters, action.next, action.join_on) == ({}, {}, None)
    assert (action.expression, action.delay_seconds, action.event) == (None, None, None)
    assert action.timeout_seconds is None
    assert (workflow.output, workflow.version, workflow.source) == (None, 0, {})


def test_a_definition_error_is_a_value_error() -> None:
    assert issubclass(DefinitionError, ValueError)
