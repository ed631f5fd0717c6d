"""Workflow variables: how each ``setVars`` op changes a value, how an action's mutations
apply in order, and the rules a definition's ``vars`` and ``setVars`` follow. Pure: no Redis,
no server."""

from __future__ import annotations

from typing import Any

import pytest

from app.definition import ActionDef, ActionType, DefinitionError
from app.engine.validate_vars import check_set_vars, parse_set_vars, parse_vars
from app.engine.variables import (
    MAX_EXACT_INTEGER,
    OWN_OUTPUT,
    VARS,
    MutationError,
    VarMutation,
    VarOp,
    apply_set_vars,
    mutated,
)
from app.jsontypes import JSON
from app.store import PlannedOp

LARGE = 1 << 20


def refusal(op: VarOp, current: JSON, value: JSON) -> str:
    with pytest.raises(MutationError) as refused:
        mutated(op, current, value)
    return str(refused.value)


def test_the_names() -> None:
    assert (VARS, OWN_OUTPUT, MAX_EXACT_INTEGER) == ("vars", "output", 2**53)
    assert [op.value for op in VarOp] == ["assign", "add", "append", "removeKey"]


def test_assign_replaces_whatever_the_variable_held() -> None:
    assert mutated(VarOp.ASSIGN, [1], {"a": None}) == {"a": None}
    assert mutated(VarOp.ASSIGN, None, 3) == 3


def test_add_adds_integers_and_floats() -> None:
    assert mutated(VarOp.ADD, 2, 3) == 5
    assert mutated(VarOp.ADD, 1.5, -2) == -0.5
    assert mutated(VarOp.ADD, MAX_EXACT_INTEGER - 1, 1) == MAX_EXACT_INTEGER
    assert mutated(VarOp.ADD, -MAX_EXACT_INTEGER + 1, -1) == -MAX_EXACT_INTEGER


def test_add_refuses_what_is_not_a_number() -> None:
    assert refusal(VarOp.ADD, "1", 1) == 'add needs a number variable, it holds "1"'
    assert refusal(VarOp.ADD, True, 1) == "add needs a number variable, it holds true"
    assert refusal(VarOp.ADD, None, 1) == "add needs a number variable, it holds null"
    assert refusal(VarOp.ADD, 1, [2]) == "add needs a number value, not [2]"
    assert refusal(VarOp.ADD, 1, False) == "add needs a number value, not false"


def test_add_refuses_integers_beyond_the_exact_ones() -> None:
    assert refusal(VarOp.ADD, MAX_EXACT_INTEGER, 1) == (
        f"add gives {MAX_EXACT_INTEGER + 1}, beyond the exact integers (2^53)"
    )
    assert refusal(VarOp.ADD, -MAX_EXACT_INTEGER, -1) == (
        f"add gives {-MAX_EXACT_INTEGER - 1}, beyond the exact integers (2^53)"
    )
    assert mutated(VarOp.ADD, float(MAX_EXACT_INTEGER), 1.0) == 2.0**53  # floats are not exact


def test_add_refuses_floats_beyond_json_numbers() -> None:
    reason = "add gives a number beyond the range of JSON numbers"
    assert refusal(VarOp.ADD, 1e308, 1e308) == reason
    assert refusal(VarOp.ADD, -1e308, -1e308) == reason
    assert mutated(VarOp.ADD, 1e308, 1) == 1e308


def test_append_gives_a_new_list() -> None:
    current: list[JSON] = [1, "a"]

    assert mutated(VarOp.APPEND, current, [2]) == [1, "a", [2]]
    assert current == [1, "a"]
    assert refusal(VarOp.APPEND, {"a": 1}, 2) == ('append needs a list variable, it holds {"a":1}')


def test_remove_key_gives_the_object_without_the_key() -> None:
    current: dict[str, JSON] = {"a": 1, "b": 2}

    assert mutated(VarOp.REMOVE_KEY, current, "a") == {"b": 2}
    assert mutated(VarOp.REMOVE_KEY, current, "c") == {"a": 1, "b": 2}
    assert current == {"a": 1, "b": 2}
    assert refusal(VarOp.REMOVE_KEY, [1], "a") == (
        "removeKey needs an object variable, it holds [1]"
    )
    assert refusal(VarOp.REMOVE_KEY, {}, 1) == "removeKey needs a string key, not 1"


def test_a_refusal_shows_at_most_100_characters_of_the_value() -> None:
    fits = "x" * 98  # 100 characters of JSON with its quotes
    longer = "x" * 99

    assert refusal(VarOp.ADD, fits, 1) == f'add needs a number variable, it holds "{fits}"'
    assert refusal(VarOp.ADD, longer, 1) == (
        f'add needs a number variable, it holds "{longer[:99]}...'
    )


def test_mutations_apply_in_order_each_on_the_previous_result() -> None:
    mutations = (
        VarMutation("count", VarOp.ADD, 2),
        VarMutation("seen", VarOp.APPEND, "{$.output.id}"),
        VarMutation("count", VarOp.ADD, 3),
        VarMutation("fresh", VarOp.ASSIGN, {"from": "{$.input.who}"}),
    )
    document: dict[str, JSON] = {"input": {"who": "ann"}, VARS: {"count": 1, "seen": []}}

    changed, ops = apply_set_vars(mutations, 7, {"id": "x"}, document, LARGE)

    assert changed == {"count": 6, "seen": ["x"], "fresh": {"from": "ann"}}
    assert ops == [
        PlannedOp("var", 7, "count", "3", input="add"),
        PlannedOp("var", 7, "seen", '["x"]', input="append"),
        PlannedOp("var", 7, "count", "6", input="add"),
        PlannedOp("var", 7, "fresh", '{"from":"ann"}', input="assign"),
    ]
    assert document[VARS] == {"count": 1, "seen": []}  # the caller sets the changes


def test_a_document_without_variables_reads_them_as_null() -> None:
    changed, _ = apply_set_vars((VarMutation("n", VarOp.ASSIGN, 1),), 1, None, {}, LARGE)

    assert changed == {"n": 1}
    with pytest.raises(MutationError) as refused:
        apply_set_vars((VarMutation("n", VarOp.ADD, 1),), 1, None, {VARS: None}, LARGE)
    assert str(refused.value) == ("setVars[0] (add n): add needs a number variable, it holds null")


def test_a_value_without_references_is_taken_as_it_is() -> None:
    value = {"text": "$.output", "n": [1]}

    changed, ops = apply_set_vars(
        (VarMutation("v", VarOp.ASSIGN, value),), 1, {"a": 1}, {VARS: {}}, LARGE
    )

    assert changed == {"v": value}
    assert ops == [PlannedOp("var", 1, "v", '{"text":"$.output","n":[1]}', input="assign")]


def test_a_refused_mutation_is_named_by_its_place() -> None:
    mutations = (
        VarMutation("n", VarOp.ADD, 1),
        VarMutation("keys", VarOp.REMOVE_KEY, "{$.output}"),
    )

    with pytest.raises(MutationError) as refused:
        apply_set_vars(mutations, 1, 5, {VARS: {"n": 0, "keys": {}}}, LARGE)

    assert str(refused.value) == (
        "setVars[1] (removeKey keys): removeKey needs a string key, not 5"
    )


def test_a_result_larger_than_the_limit_is_refused() -> None:
    mutation = (VarMutation("s", VarOp.ASSIGN, "abcde"),)  # 7 bytes of JSON

    changed, _ = apply_set_vars(mutation, 1, None, {VARS: {}}, 7)
    with pytest.raises(MutationError) as refused:
        apply_set_vars(mutation, 1, None, {VARS: {}}, 6)

    assert changed == {"s": "abcde"}
    assert str(refused.value) == (
        "setVars[0] (assign s): the variable would be 7 bytes; the limit is 6 bytes "
        "(ORCHY_MAX_OUTPUT_BYTES)"
    )


def definition_error(function: Any, *args: Any) -> str:
    with pytest.raises(DefinitionError) as refused:
        function(*args)
    return str(refused.value)


def test_vars_are_an_object_of_initial_values() -> None:
    assert parse_vars(None, 10) == {}
    assert parse_vars({"n": 0, "l": [1]}, None) == {"n": 0, "l": [1]}
    assert definition_error(parse_vars, [1], None) == (
        "vars must be an object of name -> initial value, not [1]"
    )
    assert definition_error(parse_vars, {" ": 1}, None) == (
        "vars: a variable name must be a non-empty string"
    )


def test_an_initial_value_is_limited_in_size() -> None:
    assert parse_vars({"s": "abcde"}, 7) == {"s": "abcde"}
    assert definition_error(parse_vars, {"ok": 1, "s": "abcde"}, 6) == (
        "vars.s: the initial value is 7 bytes; at most 6 (ORCHY_MAX_OUTPUT_BYTES)"
    )


def test_set_vars_is_a_list_of_mutations() -> None:
    raw: JSON = [
        {"var": "a", "op": "assign", "value": None},
        {"var": "b", "op": "add", "value": -1.5},
        {"var": "c", "op": "append", "value": "{$.output}"},
        {"var": "d", "op": "removeKey", "value": "k"},
        {"var": "e", "op": "add", "value": "{$.output.n}"},
    ]

    assert parse_set_vars(raw, "L") == (
        VarMutation("a", VarOp.ASSIGN, None),
        VarMutation("b", VarOp.ADD, -1.5),
        VarMutation("c", VarOp.APPEND, "{$.output}"),
        VarMutation("d", VarOp.REMOVE_KEY, "k"),
        VarMutation("e", VarOp.ADD, "{$.output.n}"),
    )
    assert parse_set_vars(None, "L") == ()
    assert parse_set_vars([], "L") == ()


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"var": "a"}, "L: setVars must be a list of {var, op, value}, not {'var': 'a'}"),
        ([["a"]], "L: setVars[0] must be an object {var, op, value}, not ['a']"),
        ([{"op": "add", "value": 1}], "L: setVars[0].var must be a variable name, not None"),
        ([{"var": 3, "op": "add", "value": 1}], "L: setVars[0].var must be a variable name, not 3"),
        (
            [{"var": " ", "op": "add", "value": 1}],
            "L: setVars[0].var must be a variable name, not ' '",
        ),
        (
            [{"var": "a", "op": "assign", "value": 1}, {"var": "a", "op": "set", "value": 1}],
            "L: setVars[1].op must be one of 'assign', 'add', 'append', 'removeKey', not 'set'",
        ),
        (
            [{"var": "a", "op": "assign"}],
            "L: setVars[0].value is missing (JSON, or a {$...} reference)",
        ),
        (
            [{"var": "a", "op": "assign", "value": {"x": "{$.a[}"}}],
            "L: setVars[0].value: JSONPath $.a[ does not parse: Parse error near the end of "
            "string!",
        ),
        (
            [{"var": "a", "op": "add", "value": "1"}],
            "L: setVars[0].value must be a number for add, not '1'",
        ),
        (
            [{"var": "a", "op": "add", "value": True}],
            "L: setVars[0].value must be a number for add, not True",
        ),
        (
            [{"var": "a", "op": "removeKey", "value": 1}],
            "L: setVars[0].value must be a key (a string) for removeKey",
        ),
    ],
)
def test_set_vars_refusals_say_where_and_why(raw: JSON, message: str) -> None:
    assert definition_error(parse_set_vars, raw, "L") == message


def test_a_null_value_is_a_value() -> None:
    assert parse_set_vars([{"var": "a", "op": "append", "value": None}], "L") == (
        VarMutation("a", VarOp.APPEND, None),
    )


def action(kind: ActionType, name: str, *mutations: VarMutation) -> ActionDef:
    return ActionDef(3, kind, name, set_vars=mutations)


def test_set_vars_name_declared_variables() -> None:
    declared = {"n": 0, "m": 1}
    check_set_vars(action(ActionType.USER, "work", VarMutation("m", VarOp.ADD, 1)), declared)
    check_set_vars(action(ActionType.USER, "work"), {})

    undeclared = action(
        ActionType.USER, "work", VarMutation("n", VarOp.ADD, 1), VarMutation("x", VarOp.ADD, 1)
    )
    assert definition_error(check_set_vars, undeclared, declared) == (
        "action 3 (work): setVars[1].var 'x' is not declared in the workflow's vars "
        "(declared: m, n)"
    )
    assert definition_error(check_set_vars, undeclared, {}) == (
        "action 3 (work): setVars[0].var 'n' is not declared in the workflow's vars "
        "(declared: none)"
    )


def test_terminate_takes_no_set_vars() -> None:
    mutation = VarMutation("n", VarOp.ADD, 1)

    assert definition_error(
        check_set_vars, action(ActionType.SYSTEM, "terminate", mutation), {"n": 0}
    ) == ("action 3 (terminate): terminate ends the run; it takes no setVars")
    check_set_vars(action(ActionType.SYSTEM, "terminate"), {})
    check_set_vars(action(ActionType.SYSTEM, "delay", mutation), {"n": 0})
    check_set_vars(action(ActionType.USER, "terminate", mutation), {"n": 0})
