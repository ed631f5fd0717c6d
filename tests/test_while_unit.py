"""The while system action on its own: the pass it counts, the branch it takes, what the
condition sees. Pure: no Redis, no server."""

from __future__ import annotations

from app.actions.base import Done, Fail
from app.actions.while_ import WhileAction, passes_done
from app.definition import ActionDef, ActionType
from app.jsontypes import JSON, JSONObject

ACTION = WhileAction()


def while_(condition: str, check: str | None = None) -> ActionDef:
    return ActionDef(
        2, ActionType.SYSTEM, "while", next={"body": [3]}, condition=condition, check=check
    )


def with_output(output: JSON) -> JSONObject:
    return {"input": {"n": 2}, "2": {"output": output}}


def test_passes_done_read_the_previous_output_of_a_loop_still_running() -> None:
    action = while_("true")
    assert passes_done(action, {}) == 0
    assert passes_done(action, with_output({"iteration": 4, "exited": False})) == 4
    assert passes_done(action, with_output({"iteration": 4, "exited": True})) == 0
    assert passes_done(action, with_output({"error": "boom"})) == 0
    assert passes_done(action, with_output({"iteration": True, "exited": False})) == 0


def test_before_each_pass_the_condition_sees_the_passes_done() -> None:
    action = while_("{$.2.output.iteration} < {$.input.n}")

    first = ACTION.run(action, {"input": {"n": 2}})
    second = ACTION.run(action, with_output({"iteration": 1, "exited": False}))
    out = ACTION.run(action, with_output({"iteration": 2, "exited": False}))

    assert first == Done({"iteration": 1, "exited": False}, "body")
    assert second == Done({"iteration": 2, "exited": False}, "body")
    assert out == Done({"iteration": 2, "exited": True}, "default")
    assert out.input == {"condition": action.condition, "iteration": 2}


def test_a_left_loop_met_again_starts_from_the_first_pass() -> None:
    action = while_("{$.2.output.iteration} < 1")

    again = ACTION.run(action, with_output({"iteration": 1, "exited": True}))

    assert again == Done({"iteration": 1, "exited": False}, "body")


def test_check_after_runs_the_first_pass_without_asking() -> None:
    action = while_("false", check="after")

    assert ACTION.run(action, {}) == Done({"iteration": 1, "exited": False}, "body")
    out = ACTION.run(action, with_output({"iteration": 1, "exited": False}))
    assert out == Done({"iteration": 1, "exited": True}, "default")


def test_a_condition_that_cannot_be_evaluated_fails_the_step() -> None:
    outcome = ACTION.run(while_("{$.input.n} < 'x'"), {"input": {"n": 1}})

    assert isinstance(outcome, Fail)
    assert outcome.error.startswith("while action 2 (while): condition")
