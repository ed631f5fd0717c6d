"""Definition validation at registration: the ORCHY_MAX_* limits, user action settings, and
rules whose messages name every choice. Pure: no Redis, no server."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from app.definition import DefinitionError, SwitchCase
from app.engine.retry import ActionSettings, RetryPolicy
from app.engine.validate import Limits, check_action_settings, parse_workflow
from app.engine.variables import VarMutation, VarOp
from app.settings import Settings

LIMITS = Limits(
    max_actions=3,
    max_next_ids=2,
    max_duration_seconds=100.0,
    max_retry_count=5,
    max_condition_depth=64,
)


def user(action_id: int, name: str = "work", **fields: Any) -> dict[str, Any]:
    return {"id": action_id, "type": "user", "name": name, **fields}


def system(action_id: int, name: str, **fields: Any) -> dict[str, Any]:
    return {"id": action_id, "type": "system", "name": name, **fields}


def workflow(*actions: dict[str, Any]) -> dict[str, Any]:
    return {"name": "wf", "rootAction": 1, "actions": list(actions)}


def chain(length: int) -> dict[str, Any]:
    return workflow(*(user(i, next={"default": [i + 1]}) for i in range(1, length)), user(length))


def rejection(raw: object, limits: Limits | None = LIMITS) -> str:
    with pytest.raises(DefinitionError) as caught:
        parse_workflow(raw, limits)
    return str(caught.value)


def action_settings(
    retry_count: int = 1, retry_after: float = 1.0, timeout: float = 1.0
) -> ActionSettings:
    return ActionSettings("charge", retry_count, retry_after, RetryPolicy.FIXED, timeout)


def test_the_limits_are_read_from_the_settings() -> None:
    settings = Settings(
        max_actions=11,
        max_next_ids=12,
        max_duration_seconds=13.5,
        max_retry_count=14,
        max_json_depth=15,
        max_output_bytes=16,
        max_for_each_concurrency=17,
        search_max_paths=18,
        search_max_path_length=19,
    )

    assert Limits.of(settings) == Limits(
        max_actions=11,
        max_next_ids=12,
        max_duration_seconds=13.5,
        max_retry_count=14,
        max_condition_depth=15,
        max_var_bytes=16,
        max_for_each_concurrency=17,
        max_search_paths=18,
        max_search_path_length=19,
    )


def test_as_many_actions_as_the_limit_are_accepted() -> None:
    assert len(parse_workflow(chain(3), LIMITS).actions) == 3


def test_more_actions_than_the_limit_are_refused() -> None:
    assert rejection(chain(4)) == "actions: at most 3 actions (ORCHY_MAX_ACTIONS), not 4"


def test_without_limits_a_stored_definition_stays_readable() -> None:
    assert len(parse_workflow(chain(4)).actions) == 4


def test_as_many_next_ids_as_the_limit_are_accepted() -> None:
    raw = workflow(user(1, next={"default": [2, 3]}), user(2), user(3))

    assert parse_workflow(raw, LIMITS).actions[1].next == {"default": [2, 3]}


def test_more_next_ids_than_the_limit_are_refused() -> None:
    limits = replace(LIMITS, max_actions=10)
    raw = workflow(user(1, next={"default": [2], "other": [2, 3, 4]}), user(2), user(3), user(4))

    assert rejection(raw, limits) == (
        "action 1 (work): next.other holds 3 ids; at most 2 (ORCHY_MAX_NEXT_IDS)"
    )
    assert len(parse_workflow(raw).actions) == 4


@pytest.mark.parametrize("field", ["delaySeconds", "timeoutSeconds"])
def test_a_duration_at_the_limit_is_accepted(field: str) -> None:
    raw = workflow(system(1, "delay", delaySeconds=1), user(2), user(3))
    raw["actions"][0]["next"] = {"default": [2, 3]}
    raw["actions"][0][field] = 100

    assert parse_workflow(raw, LIMITS).root_action == 1


@pytest.mark.parametrize("field", ["delaySeconds", "timeoutSeconds"])
def test_a_duration_beyond_the_limit_is_refused_naming_the_field(field: str) -> None:
    raw = workflow(system(1, "delay", delaySeconds=1))
    raw["actions"][0][field] = 100.5

    assert rejection(raw) == (
        f"action 1 (delay): {field} must be at most 100 seconds "
        "(ORCHY_MAX_DURATION_SECONDS), not 100.5"
    )
    assert parse_workflow(raw).actions[1].name == "delay"


def test_the_wait_timeout_is_within_the_limit_too() -> None:
    raw = workflow(system(1, "wait", event="paid", timeoutSeconds=1000))

    assert rejection(raw).startswith("action 1 (wait): timeoutSeconds must be at most 100 ")


@pytest.mark.parametrize("event", ["a/b", "..", ".", "x\ny"])
def test_a_wait_event_that_cannot_be_sent_is_refused(event: str) -> None:
    raw = workflow(system(1, "wait", event=event))

    assert rejection(raw) == (
        f"action 1 (wait): event {event!r} cannot be sent as a URL path segment "
        "(POST /flow/{id}/events/{event}): no '/', control characters, '.' or '..'"
    )
    assert parse_workflow(raw).actions[1].event == event


def test_only_a_wait_event_must_be_sendable() -> None:
    # A user action named "wait", and another system action, may hold any event field.
    raw = workflow(
        user(1, "wait", event="a/b", next={"default": [2]}),
        system(2, "delay", delaySeconds=1, event="a/b"),
    )

    assert [action.event for action in parse_workflow(raw, LIMITS).actions.values()] == [
        "a/b",
        "a/b",
    ]


def test_a_sendable_wait_event_is_accepted() -> None:
    raw = workflow(system(1, "wait", event="order-paid"))

    assert parse_workflow(raw, LIMITS).actions[1].event == "order-paid"


def test_an_unknown_system_action_lists_the_known_ones() -> None:
    message = rejection(workflow(system(1, "sleep")), None)

    assert message == (
        "action 1 (sleep): unknown system action 'sleep' "
        "(known: delay, forEach, if, javascript, join, subWorkflow, switch, terminate, wait, while)"
    )


def test_a_cycle_is_found_after_actions_already_checked() -> None:
    # Declared 2 (-> 3), then 3: both are finished before the search reaches the cycle 4 -> 5
    # -> 4, which only the root leads to.
    raw = {
        "name": "wf",
        "rootAction": 1,
        "actions": [
            user(2, next={"default": [3]}),
            user(3),
            user(1, next={"default": [2, 4]}),
            user(4, next={"default": [5]}),
            user(5, next={"default": [4]}),
        ],
    }

    assert rejection(raw, None).startswith("actions 4, 5 form a cycle that no condition can leave")


def test_action_settings_within_the_limits_are_accepted() -> None:
    check_action_settings(action_settings(retry_count=5, retry_after=100, timeout=100), LIMITS)


def test_a_retry_count_beyond_the_limit_is_refused() -> None:
    with pytest.raises(DefinitionError) as caught:
        check_action_settings(action_settings(retry_count=6), LIMITS)

    assert str(caught.value) == (
        "action 'charge': retryCount must be at most 5 (ORCHY_MAX_RETRY_COUNT), not 6"
    )


@pytest.mark.parametrize(
    ("retry_after", "timeout", "field", "value"),
    [
        (100.25, 1.0, "retryAfterSeconds", "100.25"),
        (1.0, 101.0, "timeoutSeconds", "101.0"),
        (1.0, float("nan"), "timeoutSeconds", "nan"),
    ],
)
def test_action_durations_beyond_the_limit_are_refused(
    retry_after: float, timeout: float, field: str, value: str
) -> None:
    with pytest.raises(DefinitionError) as caught:
        check_action_settings(action_settings(retry_after=retry_after, timeout=timeout), LIMITS)

    assert str(caught.value) == (
        f"action 'charge': {field} must be at most 100 seconds "
        f"(ORCHY_MAX_DURATION_SECONDS), not {value}"
    )


def test_a_duration_limit_is_written_without_trailing_zeros() -> None:
    limits = replace(LIMITS, max_duration_seconds=0.1)

    with pytest.raises(DefinitionError) as caught:
        limits.check_duration("somewhere", "waitSeconds", 0.2)

    assert str(caught.value) == (
        "somewhere: waitSeconds must be at most 0.1 seconds (ORCHY_MAX_DURATION_SECONDS), not 0.2"
    )
    limits.check_duration("somewhere", "waitSeconds", None)
    limits.check_duration("somewhere", "waitSeconds", 0.1)


def test_a_cycle_among_branches_to_finished_actions_is_found() -> None:
    # 2 <-> 3, each also leading to two actions that end there: the search from each start
    # finishes a leaf first and must go on to the cycle.
    raw = workflow(
        user(1, next={"default": [2]}),
        user(2, next={"default": [4, 5, 3]}),
        user(3, next={"default": [6, 7, 2]}),
        user(4),
        user(5),
        user(6),
        user(7),
    )

    assert rejection(raw, None).startswith("actions 2, 3 form a cycle that no condition can leave")


def test_many_paths_to_the_same_actions_are_searched_once() -> None:
    # Forty layers of two actions, each leading to both of the next layer: 2**40 paths, which
    # a search that forgot the actions already finished would walk one by one.
    layers = 40
    actions = [user(1, next={"default": [2, 3]})]
    for layer in range(layers):
        first = 2 + 2 * layer
        following = [first + 2, first + 3] if layer < layers - 1 else []
        for action_id in (first, first + 1):
            actions.append(user(action_id, next={"default": following}))

    definition = parse_workflow(workflow(*actions), None)

    assert len(definition.actions) == 1 + 2 * layers


CONDITION = "{$.input.amount} > 100"


def switch_with_cases(cases: Any) -> dict[str, Any]:
    return workflow(
        system(1, "switch", cases=cases, next={"big": [2], "default": [2]}), user(2, "after")
    )


def test_a_switch_reads_its_cases_in_order() -> None:
    cases = [{"when": CONDITION, "branch": "big"}, {"when": "true", "branch": "default"}]

    action = parse_workflow(switch_with_cases(cases), LIMITS).actions[1]

    assert action.cases == (SwitchCase(CONDITION, "big"), SwitchCase("true", "default"))
    assert action.condition is None


def test_only_a_switch_reads_cases_and_only_an_if_reads_a_condition() -> None:
    raw = workflow(
        user(1, "switch", cases="not read", condition=5, next={"default": [2]}),
        system(2, "if", condition=CONDITION, cases=7, next={"true": [3]}),
        user(3, "if", condition=[1]),
    )

    actions = parse_workflow(raw, LIMITS).actions

    assert [(a.cases, a.condition) for a in actions.values()] == [
        (None, None),
        (None, CONDITION),
        (None, None),
    ]


@pytest.mark.parametrize(
    ("cases", "expected"),
    [
        ("big", "action 1 (switch): cases must be a list of {when, branch}, not 'big'"),
        ([3], "action 1 (switch): cases[0] must be an object {when, branch}, not 3"),
        (
            [{"when": CONDITION, "branch": "big"}, {"when": 1, "branch": "x"}],
            "action 1 (switch): cases[1].when must be a string (a condition), not 1",
        ),
        (
            [{"when": CONDITION, "branch": ""}],
            "action 1 (switch): cases[0].branch must be a non-empty string, not ''",
        ),
        (
            [{"when": CONDITION}],
            "action 1 (switch): cases[0].branch must be a non-empty string, not None",
        ),
    ],
)
def test_malformed_cases_are_refused_naming_the_case(cases: Any, expected: str) -> None:
    assert rejection(switch_with_cases(cases), None) == expected


def test_a_condition_nested_deeper_than_the_limit_is_refused() -> None:
    shallow = replace(LIMITS, max_condition_depth=1)
    raw = workflow(system(1, "if", condition=CONDITION, next={"true": [2]}), user(2))

    assert rejection(raw, shallow) == (
        "action 1 (if): condition is nested 2 levels deep; at most 1 (ORCHY_MAX_JSON_DEPTH)"
    )
    assert parse_workflow(raw, replace(LIMITS, max_condition_depth=2)).actions[1].condition


def test_a_case_nested_deeper_than_the_limit_is_refused() -> None:
    raw = switch_with_cases(
        [{"when": "true", "branch": "default"}, {"when": CONDITION, "branch": "big"}]
    )

    message = rejection(raw, replace(LIMITS, max_condition_depth=1))

    assert message == (
        "action 1 (switch): cases[1].when is nested 2 levels deep; at most 1 (ORCHY_MAX_JSON_DEPTH)"
    )


def test_an_if_condition_must_be_a_string() -> None:
    raw = workflow(system(1, "if", condition=5, next={"true": [2]}), user(2))

    assert rejection(raw, None) == "action 1 (if): condition must be a string, not 5"


def with_vars(variables: Any, *actions: dict[str, Any]) -> dict[str, Any]:
    return {**workflow(*actions), "vars": variables}


def test_the_workflow_keeps_its_variables() -> None:
    assert parse_workflow(with_vars({"n": 1, "seen": []}, user(1))).vars == {"n": 1, "seen": []}
    assert parse_workflow(workflow(user(1))).vars == {}


def test_the_initial_values_are_limited_in_size_at_registration_only() -> None:
    raw = with_vars({"big": "abcdef"}, user(1))  # 8 bytes of JSON
    limits = replace(LIMITS, max_var_bytes=7)

    with pytest.raises(DefinitionError) as refused:
        parse_workflow(raw, limits)

    assert str(refused.value) == (
        "vars.big: the initial value is 8 bytes; at most 7 (ORCHY_MAX_OUTPUT_BYTES)"
    )
    assert parse_workflow(raw, replace(LIMITS, max_var_bytes=8)).vars == {"big": "abcdef"}
    assert parse_workflow(raw).vars == {"big": "abcdef"}


def test_the_variable_size_limit_is_the_output_limit() -> None:
    assert Limits.of(Settings(max_output_bytes=1234)).max_var_bytes == 1234


def test_an_action_keeps_its_set_vars() -> None:
    definition = parse_workflow(
        with_vars(
            {"n": 0, "seen": []},
            user(
                1,
                setVars=[
                    {"var": "n", "op": "add", "value": 2},
                    {"var": "seen", "op": "append", "value": "{$.output}"},
                ],
            ),
        )
    )

    assert definition.actions[1].set_vars == (
        VarMutation("n", VarOp.ADD, 2),
        VarMutation("seen", VarOp.APPEND, "{$.output}"),
    )
    assert parse_workflow(workflow(user(1))).actions[1].set_vars == ()


def test_set_vars_errors_name_the_action() -> None:
    with pytest.raises(DefinitionError) as refused:
        parse_workflow(with_vars({"n": 0}, user(1, "charge", setVars={"var": "n"})))

    assert str(refused.value) == (
        "action 1 (charge): setVars must be a list of {var, op, value}, not {'var': 'n'}"
    )


def test_every_action_s_set_vars_name_declared_variables() -> None:
    raw = with_vars(
        {"n": 0, "m": 0},
        user(1, next={"default": [2]}, setVars=[{"var": "n", "op": "add", "value": 1}]),
        user(2, "two", setVars=[{"var": "x", "op": "assign", "value": 1}]),
    )

    with pytest.raises(DefinitionError) as refused:
        parse_workflow(raw)

    assert str(refused.value) == (
        "action 2 (two): setVars[0].var 'x' is not declared in the workflow's vars (declared: m, n)"
    )
