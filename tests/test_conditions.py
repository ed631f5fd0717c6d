"""The condition language (app/engine/conditions.py), and the switch cases and the if action
that branch on it, without a server."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from app.actions.base import Done, Fail
from app.actions.if_ import IfAction
from app.actions.switch import SwitchAction
from app.api.workflow_schema import WorkflowDefinition
from app.definition import ActionDef, ActionType, DefinitionError, SwitchCase
from app.engine.conditions import (
    ConditionError,
    ConditionSyntaxError,
    compile_condition,
    json_equal,
)
from app.engine.validate import Limits, parse_workflow
from app.jsontypes import JSON
from app.settings import Settings

DOCUMENT: dict[str, Any] = {
    "input": {
        "amount": 150,
        "price": 9.5,
        "status": "PAID",
        "tags": ["vip", "eu"],
        "address": {"city": "Lyon", "zip": "69001"},
        "flag": True,
        "nothing": None,
    },
    "1": {"output": {"count": 3}},
    "flow": {"id": "f", "name": "w", "version": 1},
}


def value(text: str, document: dict[str, Any] | None = None) -> JSON:
    return compile_condition(text).value(DOCUMENT if document is None else document)


def evaluation_error(text: str) -> str:
    with pytest.raises(ConditionError) as caught:
        compile_condition(text).test(DOCUMENT)
    return str(caught.value)


def syntax_error(text: str) -> str:
    with pytest.raises(ConditionSyntaxError) as caught:
        compile_condition(text)
    return str(caught.value)


# --- operands --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("42", 42),
        ("1.5e3", 1500.0),
        ("0", 0),
        ('"PAID"', "PAID"),
        (r'"a\"b\u00e9\n"', 'a"bé\n'),
        ("true", True),
        ("false", False),
        ("null", None),
        ('[1, "a", [true]]', [1, "a", [True]]),
        ("[]", []),
        ("{$.input.amount}", 150),
        ("{$.input.address}", {"city": "Lyon", "zip": "69001"}),
        ("{$1.output.count}", 3),
        ("{$.1.output.count}", 3),
        ("{$.input.tags[1]}", "eu"),
        ("{$.input.missing}", None),
        ("{$.nowhere.at.all}", None),
        ("( 7 )", 7),
    ],
)
def test_operands(text: str, expected: JSON) -> None:
    assert value(text) == expected
    assert type(value(text)) is type(expected)


def test_a_reference_reads_the_document_not_a_copy_of_the_definition() -> None:
    condition = compile_condition("{$.input.amount} > 100")
    assert condition.test({"input": {"amount": 101}}) is True
    assert condition.test({"input": {"amount": 100}}) is False
    assert condition.test({"input": {}}) is False


# --- operators ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # equality: numbers by value, everything else by type and content
        ("1 == 1.0", True),
        ("1 == 2", False),
        ('"a" == "a"', True),
        ('"1" == 1', False),
        ("true == 1", False),
        ("false == 0", False),
        ("null == null", True),
        ("{$.input.missing} == null", True),
        ("{$.input.nothing} == null", True),
        ("[1, [2]] == [1.0, [2]]", True),
        ("[1, 2] == [2, 1]", False),
        ("{$.input.address} == {$.input.address}", True),
        ("1 != 2", True),
        ("1 != 1", False),
        ('"1" != 1', True),
        # ordering: numbers, or strings by code point; anything else is false
        ("1 < 2", True),
        ("2 < 1", False),
        ("2 <= 2", True),
        ("3 <= 2", False),
        ("3 > 2", True),
        ("2 > 2", False),
        ("2 >= 2", True),
        ("1 >= 2", False),
        ('"a" < "b"', True),
        ('"B" < "a"', True),
        ('"10" < "9"', True),
        ('"3" < 4', False),
        ('"3" >= 4', False),
        ("null < 1", False),
        ("null >= 1", False),
        ("{$.input.missing} > 100", False),
        ("true > false", False),
        ("[1] < [2]", False),
        # arithmetic
        ("1 + 2", 3),
        ("0.5 + 0.25", 0.75),
        ("5 - 7", -2),
        ("3 * 4", 12),
        ("7 / 2", 3.5),
        ("8 / 2", 4.0),
        ("7 % 3", 1),
        ("-7 % 3", -1),
        ("7 % -3", 1),
        ("7.5 % 2", 1.5),
        ("-{$.input.amount}", -150),
        ("--3", 3),
        # logic
        ("true && true", True),
        ("true && false", False),
        ("false || true", True),
        ("false || false", False),
        ("!true", False),
        ("!!true", True),
        ("true && true && false", False),
        ("false || false || true", True),
        # membership
        ('"vip" in {$.input.tags}', True),
        ('"us" in {$.input.tags}', False),
        ("2 in [1, 2.0, 3]", True),
        ("[1] in [[1], 2]", True),
        ('"AI" in "PAID"', True),
        ('"ai" in "PAID"', False),
        ('"city" in {$.input.address}', True),
        ('"Lyon" in {$.input.address}', False),
        ('{$.input.status} in ["PAID", "SENT"]', True),
    ],
)
def test_operators(text: str, expected: JSON) -> None:
    got = value(text)
    assert got == expected
    assert type(got) is type(expected)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1 + 2 * 3", 7),
        ("(1 + 2) * 3", 9),
        ("10 - 4 - 3", 3),
        ("24 / 4 / 2", 3.0),
        ("2 * 3 % 4", 2),
        ("-2 * 3", -6),
        ("1 + 2 == 3", True),
        ("2 * 3 > 5", True),
        ("true || false && false", True),
        ("(true || false) && false", False),
        ("!false && false", False),
        ("!(false && false)", True),
        ("1 < 2 == true", None),  # comparisons do not chain: see the errors below
        ('{$.input.status} == "PAID" && {$.input.amount} < 100', False),
        ('{$.input.status} == "PAID" && {$.input.amount} > 100 || false', True),
        ("1 in [1] && 2 in [2]", True),
        ("[1 + 1, 2 * 2] == [2, 4]", True),
    ],
)
def test_precedence(text: str, expected: JSON) -> None:
    if expected is None:
        syntax_error(text)
        return
    assert value(text) == expected


def test_and_and_or_stop_at_the_operand_that_decides() -> None:
    assert value("false && 1 / 0 == 1") is False
    assert value("true || {$.input.amount} / 0 == 1") is True
    assert value("false && 7") is False
    assert "at position 9: && needs true or false, not a number" in evaluation_error("true && 7")


def test_json_equal_does_not_take_booleans_for_numbers() -> None:
    assert json_equal([True], [1]) is False
    assert json_equal({"a": 1}, {"a": 1.0}) is True
    assert json_equal({"a": 1}, {"b": 1}) is False


# --- evaluation errors ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("1 / 0", "at position 3: division by zero"),
        ("1 % 0", "at position 3: division by zero"),
        ("1.5 / 0.0", "at position 5: division by zero"),
        ('1 + "2"', "at position 3: + needs two numbers, not a number and a string"),
        ("{$.input.missing} * 2 > 1", "* needs two numbers, not null and a number"),
        ("true - 1", "- needs two numbers, not a boolean and a number"),
        ('-"a" == 1', "at position 1: - needs a number, not a string"),
        ("!1", "at position 1: ! needs true or false, not a number"),
        ("1 || true", "|| needs true or false, not a number"),
        ("{$.input.missing}", "the condition gave null, not true or false"),
        ("1 + 1", "the condition gave a number, not true or false"),
        ('"a"', "the condition gave a string, not true or false"),
        ("1 in 2", "in needs an array, a string or an object, not a number"),
        ('"a" in null', "in needs an array, a string or an object, not null"),
        ('1 in "123"', "in a string needs a string, not a number"),
        ("1 in {$.input.address}", "in an object needs a string, not a number"),
        ("9223372036854775807 + 1 > 0", "beyond a 64-bit integer"),
        ("1e308 * 10 > 0", "beyond a double"),
    ],
)
def test_evaluation_errors(text: str, message: str) -> None:
    assert message in evaluation_error(text)


# --- syntax errors ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "the condition is empty"),
        ("   ", "the condition is empty"),
        ("1 = 1", "at position 3: unexpected '='; compare with =="),
        ("a & b", "at position 1: unknown word 'a'"),
        ("true & false", "at position 6: unexpected '&'; 'and' is &&"),
        ("true | false", "at position 6: unexpected '|'; 'or' is ||"),
        ("'PAID'", 'at position 1: unexpected "\'"; strings are in double quotes'),
        ('"PAID', "at position 1: unexpected '\"' (an unterminated string"),
        ("(1 + 2", "at position 7: expected ')' to close the '(' at position 1, found the end"),
        ("[1, 2", "expected ']' to close the '[' at position 1"),
        ("1 +", "at position 4: expected a value, found the end"),
        ("1 2", "at position 3: unexpected '2'"),
        (")", "at position 1: expected a value, found ')'"),
        ("1 < 2 < 3", "at position 7: comparisons do not chain"),
        ("1 == 1 != true", "at position 8: comparisons do not chain"),
        ("{$.input", "at position 1: a reference is written {$.path}"),
        ("{$.input.[}", "at position 1: JSONPath $.input.[ does not parse"),
        ("1 > {$.a.[}", "at position 5: JSONPath"),
        ("1 + x", "at position 5: unknown word 'x'"),
        ("input.amount > 1", "at position 1: unknown word 'input'"),
        ("__import__", "unknown word '__import__'"),
        ("1 ; 2", "at position 3: unexpected ';'"),
        ("99999999999999999999 > 1", "at position 1: 99999999999999999999 is beyond 64 bits"),
        ("1e400 > 1", "at position 1: 1e400 is too large"),
        ("01 == 1", "at position 2: unexpected '1'"),
        ("[1,]", "at position 4: expected a value, found ']'"),
    ],
)
def test_syntax_errors_say_where(text: str, message: str) -> None:
    assert message in syntax_error(text)


def test_depth_counts_nested_operators() -> None:
    assert compile_condition("true").depth == 1
    assert compile_condition("1 + 2 > 2").depth == 3
    assert compile_condition("true && true && true").depth == 2
    assert compile_condition("!!!true").depth == 4


def test_a_condition_too_deep_to_parse_is_a_syntax_error() -> None:
    assert "nested too deeply" in syntax_error("(" * 5000 + "true" + ")" * 5000)


def test_compiled_once() -> None:
    assert compile_condition("1 < 2") is compile_condition("1 < 2")


# --- switch cases and if ------------------------------------------------------------------------


def switch(*cases: tuple[str, str], nxt: dict[str, list[int]]) -> ActionDef:
    return ActionDef(
        id=2,
        type=ActionType.SYSTEM,
        name="switch",
        next=nxt,
        cases=tuple(SwitchCase(when=when, branch=branch) for when, branch in cases),
    )


AMOUNT_CASES = (
    ("{$.input.amount} > 100", "big"),
    ("{$.input.amount} > 10", "medium"),
)


def test_the_first_case_that_holds_wins() -> None:
    action = switch(*AMOUNT_CASES, nxt={"big": [3], "medium": [4], "default": [5]})
    outcome = SwitchAction().run(action, {"input": {"amount": 500}})
    assert outcome == Done(output={"case": 0, "branch": "big"}, branch="big")
    assert outcome.input == {"cases": [{"when": "{$.input.amount} > 100", "value": True}]}
    outcome = SwitchAction().run(action, {"input": {"amount": 50}})
    assert outcome == Done(output={"case": 1, "branch": "medium"}, branch="medium")
    assert outcome.input == {
        "cases": [
            {"when": "{$.input.amount} > 100", "value": False},
            {"when": "{$.input.amount} > 10", "value": True},
        ]
    }


def test_no_case_holds_takes_default_else_fails() -> None:
    action = switch(*AMOUNT_CASES, nxt={"big": [3], "medium": [4], "default": [5]})
    outcome = SwitchAction().run(action, {"input": {"amount": 5}})
    assert outcome == Done(output={"case": None, "branch": "default"}, branch="default")
    action = switch(*AMOUNT_CASES, nxt={"big": [3], "medium": [4]})
    outcome = SwitchAction().run(action, {"input": {"amount": 5}})
    assert outcome == Fail("switch action 2 (switch): no case holds and there is no default")


def test_a_case_that_cannot_be_evaluated_fails_the_switch() -> None:
    action = switch(("{$.input.amount} / 0 > 1", "big"), nxt={"big": [3], "default": [4]})
    outcome = SwitchAction().run(action, {"input": {"amount": 5}})
    assert isinstance(outcome, Fail)
    assert outcome.error == (
        "switch action 2 (switch): cases[0].when '{$.input.amount} / 0 > 1': "
        "at position 18: division by zero"
    )


def if_action(condition: str, nxt: dict[str, list[int]]) -> ActionDef:
    return ActionDef(id=2, type=ActionType.SYSTEM, name="if", next=nxt, condition=condition)


def test_if_takes_true_or_false() -> None:
    action = if_action('{$.input.status} == "PAID"', {"true": [3], "false": [4]})
    yes = IfAction().run(action, {"input": {"status": "PAID"}})
    assert yes == Done(output={"value": True}, branch="true")
    assert yes.input == {"condition": '{$.input.status} == "PAID"'}
    assert IfAction().run(action, {"input": {}}) == Done(output={"value": False}, branch="false")
    failed = IfAction().run(if_action("{$.input.status}", {"true": [3]}), {"input": {}})
    assert failed == Fail(
        "if action 2 (if): condition '{$.input.status}': the condition gave null, not true or false"
    )


def definition(*actions: dict[str, Any]) -> dict[str, Any]:
    leaves = [{"id": i, "type": "user", "name": "work"} for i in (3, 4, 5)]
    root = {"id": 1, "type": "user", "name": "start", "next": {"default": [2]}}
    return {"name": "wf", "rootAction": 1, "actions": [root, *actions, *leaves]}


def cases_switch(cases: Any, nxt: Any = None, **extra: Any) -> dict[str, Any]:
    nxt = nxt if nxt is not None else {"big": [3], "small": [4], "default": [5]}
    return {"id": 2, "type": "system", "name": "switch", "cases": cases, "next": nxt, **extra}


def if_step(condition: Any, nxt: Any = None) -> dict[str, Any]:
    nxt = nxt if nxt is not None else {"true": [3], "false": [4], "default": [5]}
    return {"id": 2, "type": "system", "name": "if", "condition": condition, "next": nxt}


BIG = {"when": "{$.input.amount} > 100", "branch": "big"}
SMALL = {"when": "{$.input.amount} <= 100", "branch": "small"}


def test_valid_conditions_are_registered() -> None:
    parsed = parse_workflow(definition(cases_switch([BIG, SMALL])), Limits.of(Settings()))
    assert parsed.actions[2].cases == (
        SwitchCase(when=BIG["when"], branch="big"),
        SwitchCase(when=SMALL["when"], branch="small"),
    )
    parsed = parse_workflow(definition(if_step("{$.input.ok} == true")), Limits.of(Settings()))
    assert parsed.actions[2].condition == "{$.input.ok} == true"


@pytest.mark.parametrize(
    ("action", "message"),
    [
        (
            cases_switch([{"when": "{$.input.amount} >", "branch": "big"}]),
            "action 2 (switch): cases[0].when: at position 19: expected a value, found the end",
        ),
        (
            cases_switch([BIG, {"when": "1 < 2", "branch": "huge"}]),
            "action 2 (switch): cases[1]: branch 'huge' is not a branch of next "
            "('big', 'small', 'default')",
        ),
        (
            cases_switch([BIG], {"big": [3], "smal": [4]}),
            "action 2 (switch): next.smal is not the branch of any case (nor default, nor error)",
        ),
        (cases_switch([]), "action 2 (switch): cases must hold at least one case"),
        (cases_switch({"when": "true"}), "action 2 (switch): cases must be a list"),
        (cases_switch(["true"]), "action 2 (switch): cases[0] must be an object"),
        (
            cases_switch([{"when": 1, "branch": "big"}]),
            "action 2 (switch): cases[0].when must be a string",
        ),
        (
            cases_switch([{"when": "true"}]),
            "action 2 (switch): cases[0].branch must be a non-empty string",
        ),
        (
            cases_switch([{"when": " ", "branch": "big"}]),
            "action 2 (switch): cases[0].when must be a non-blank condition",
        ),
        (
            cases_switch([BIG], expression="{$.input.x}"),
            "action 2 (switch): a switch has an expression or cases, not both",
        ),
        (
            cases_switch([{"when": "{$.input.[} == 1", "branch": "big"}]),
            "action 2 (switch): cases[0].when: at position 1: JSONPath $.input.[ does not parse",
        ),
        (if_step(None), "action 2 (if): if needs a condition"),
        (if_step(7), "action 2 (if): condition must be a string, not 7"),
        (if_step("1 = 1"), "action 2 (if): condition: at position 3: unexpected '='"),
        (
            if_step("true", {"true": [3], "yes": [4]}),
            "action 2 (if): next.yes is not a branch of if (true, false, default, error)",
        ),
    ],
)
def test_bad_conditions_are_refused_naming_the_action(action: dict[str, Any], message: str) -> None:
    with pytest.raises(DefinitionError) as caught:
        parse_workflow(definition(action))
    assert str(caught.value).startswith(message), str(caught.value)


def test_a_condition_deeper_than_the_limit_is_refused_at_registration_only() -> None:
    deep = "!" * 70 + "true"
    raw = definition(if_step(deep))
    parse_workflow(raw)  # a stored definition stays readable
    with pytest.raises(DefinitionError) as caught:
        parse_workflow(raw, Limits.of(Settings(max_json_depth=64)))
    assert str(caught.value) == (
        "action 2 (if): condition is nested 71 levels deep; at most 64 (ORCHY_MAX_JSON_DEPTH)"
    )


def test_other_kinds_of_action_leave_cases_and_condition_unread() -> None:
    raw = definition(
        {
            "id": 2,
            "type": "system",
            "name": "delay",
            "delaySeconds": 1,
            "cases": 5,
            "condition": 5,
            "next": {"default": [3, 4, 5]},
        }
    )
    parsed = parse_workflow(raw)
    assert parsed.actions[2].cases is None
    assert parsed.actions[2].condition is None


def test_the_openapi_models_describe_cases_and_if() -> None:
    accepted = [definition(cases_switch([BIG, SMALL])), definition(if_step("true"))]
    for raw in accepted:
        parse_workflow(raw)
        WorkflowDefinition.model_validate(raw)
    refused = [
        definition(if_step(None)),
        definition(if_step(" ")),
        definition(cases_switch([])),
        definition(cases_switch([{"when": "true"}])),
        definition(cases_switch([BIG], expression="{$.input.x}")),
        definition({"id": 2, "type": "system", "name": "switch", "next": {"default": [3, 4, 5]}}),
    ]
    for raw in refused:
        with pytest.raises(DefinitionError):
            parse_workflow(raw)
        with pytest.raises(ValidationError):
            WorkflowDefinition.model_validate(raw)
