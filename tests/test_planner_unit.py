"""The planner: which ops the actions that start now give, and how system actions are
followed within one plan. Real script and document processes; no Redis, no server."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import orjson
import pytest

from app.actions.base import Done, Fail
from app.definition import ActionDef, ActionType, WorkflowDef
from app.engine.document import Document
from app.engine.document_pool import DocumentPool
from app.engine.planner import MS_PER_SECOND, NO_TIMEOUT, Plan, Planner, run_on_document
from app.engine.validate import parse_workflow
from app.store import PlannedOp

T = TypeVar("T")
NEVER_LARGE = 1 << 40
FLOW = {"id": "f1", "name": "wf", "version": 1}


class CountingPool(DocumentPool):
    """A real document pool that counts the calls made to it."""

    def __init__(self) -> None:
        super().__init__(processes=1)
        self.calls = 0

    async def call(self, function: Any, *args: object) -> Any:
        self.calls += 1
        return await super().call(function, *args)


@pytest.fixture(scope="module")
def pool() -> Iterator[CountingPool]:
    pool = CountingPool()
    yield pool
    pool.close()


class CountingExecutor(ThreadPoolExecutor):
    """A real thread pool that counts the functions given to it."""

    def __init__(self) -> None:
        super().__init__(1)
        self.submitted = 0

    def submit(self, fn: Any, /, *args: Any, **kwargs: Any) -> Any:
        self.submitted += 1
        return super().submit(fn, *args, **kwargs)


@pytest.fixture(scope="module")
def executor() -> Iterator[CountingExecutor]:
    with CountingExecutor() as executor:
        yield executor


def user(action_id: int, name: str = "work", **fields: Any) -> dict[str, Any]:
    return {"id": action_id, "type": "user", "name": name, **fields}


def system(action_id: int, name: str, **fields: Any) -> dict[str, Any]:
    return {"id": action_id, "type": "system", "name": name, **fields}


def workflow(*actions: dict[str, Any]) -> WorkflowDef:
    return parse_workflow({"name": "wf", "rootAction": 1, "actions": list(actions)})


def document(input: Any = None) -> Document:
    return Document.of({"input": {} if input is None else input, "flow": dict(FLOW)})


async def plan(
    planner: Planner, definition: WorkflowDef, ids: list[int], doc: Document | None = None
) -> Plan:
    return await planner.start(definition, ids, document() if doc is None else doc)


@pytest.fixture
def planner(executor: ThreadPoolExecutor, pool: CountingPool) -> Planner:
    return Planner(executor, pool, NEVER_LARGE)


def test_the_units() -> None:
    assert (MS_PER_SECOND, NO_TIMEOUT) == (1000, -1)


async def test_a_user_action_without_references_is_queued_with_its_parameters(
    planner: Planner,
) -> None:
    definition = workflow(user(1, "send-email", parameters={"to": "$.input.to", "n": [1, 2.5]}))

    result = await plan(planner, definition, [1])

    assert result.ops == [
        PlannedOp("user", 1, "send-email", '{"to":"$.input.to","n":[1,2.5]}', queue="send-email")
    ]
    assert result.fail_reason == ""


async def test_a_user_action_gets_its_parameters_resolved_with_a_note_per_warning(
    planner: Planner,
) -> None:
    definition = workflow(
        user(1, "charge", parameters={"a": "{$.input.a}", "m": "{$.input.m}", "f": "{$.flow.id}"})
    )

    result = await plan(planner, definition, [1], document({"a": [1, "x"]}))

    assert result.ops == [
        PlannedOp("note", 1, payload="path $.input.m found nothing"),
        PlannedOp("user", 1, "charge", '{"a":[1,"x"],"m":null,"f":"f1"}', queue="charge"),
    ]


async def test_a_large_document_is_read_in_the_document_processes(
    executor: ThreadPoolExecutor, pool: CountingPool
) -> None:
    doc = document({"a": "Zoë"})
    definition = workflow(user(1, "charge", parameters={"a": "{$.input.a}", "m": "{$.input.m}"}))
    at_the_size = Planner(executor, pool, doc.size())
    calls = pool.calls

    result = await plan(at_the_size, definition, [1], doc)

    assert pool.calls == calls + 1
    assert result.ops == [
        PlannedOp("note", 1, payload="path $.input.m found nothing"),
        PlannedOp("user", 1, "charge", '{"a":"Zoë","m":null}', queue="charge"),
    ]


async def test_a_document_below_the_size_is_read_here(
    executor: ThreadPoolExecutor, pool: CountingPool
) -> None:
    doc = document({"a": 1})
    definition = workflow(
        system(1, "switch", expression="{$.input.a}", next={"1": [2]}),
        user(2, "charge", parameters={"a": "{$.input.a}"}),
    )
    calls = pool.calls

    result = await plan(Planner(executor, pool, doc.size() + 100), definition, [1], doc)

    assert pool.calls == calls
    assert [op.kind for op in result.ops] == ["done", "user"]


async def test_a_switch_runs_at_once_and_its_branch_is_planned_with_its_output(
    planner: Planner,
) -> None:
    definition = workflow(
        system(1, "switch", expression="{$.input.gender}", next={"MALE": [2], "default": [3]}),
        user(2, "male", parameters={"seen": "{$.1.output.value}"}),
        user(3, "other"),
    )
    doc = document({"gender": "MALE"})

    result = await plan(planner, definition, [1], doc)

    assert result.ops == [
        PlannedOp("done", 1, "MALE", '{"value":"MALE"}', input='{"expression":"MALE"}'),
        PlannedOp("user", 2, "male", '{"seen":"MALE"}', queue="male"),
    ]
    assert doc.value["1"] == {"output": {"value": "MALE"}}
    assert '"1":{"output":{"value":"MALE"}}' in doc.json()


async def test_a_large_document_is_read_in_the_processes_for_a_switch(
    executor: ThreadPoolExecutor, pool: CountingPool
) -> None:
    definition = workflow(
        system(1, "switch", expression="{$.input.n}", next={"2": [2]}), user(2, "two")
    )
    doc = document({"n": 2})
    calls = pool.calls

    result = await plan(Planner(executor, pool, 0), definition, [1], doc)

    assert pool.calls == calls + 1
    assert result.ops == [
        PlannedOp("done", 1, "2", '{"value":2}', input='{"expression":2}'),
        PlannedOp("user", 2, "two", "{}", queue="two"),
    ]


async def test_actions_that_read_no_document_are_not_sent_to_the_processes(
    executor: ThreadPoolExecutor, pool: CountingPool
) -> None:
    definition = workflow(
        system(1, "delay", delaySeconds=1.5, next={"default": [2, 3]}),
        system(2, "wait", event="paid"),
        system(3, "join", joinOn=[2]),
    )
    calls = pool.calls

    result = await plan(Planner(executor, pool, 0), definition, [1, 2, 3])

    assert pool.calls == calls
    assert [op.kind for op in result.ops] == ["sleep", "wait", "join"]


async def test_a_delay_sleeps_for_its_seconds_in_rounded_ms(planner: Planner) -> None:
    definition = workflow(
        system(1, "delay", delaySeconds=1.5, next={"default": [2, 3]}),
        system(2, "delay", delaySeconds=0.0016),
        system(3, "delay", delaySeconds=0),
    )

    result = await plan(planner, definition, [1, 2, 3])

    assert result.ops == [
        PlannedOp("sleep", 1, number=1500, input='{"delaySeconds":1.5}'),
        PlannedOp("sleep", 2, number=2, input='{"delaySeconds":0.0016}'),
        PlannedOp("sleep", 3, number=0, input='{"delaySeconds":0}'),
    ]


NO_TIMEOUT_INPUT = '{"event":"shipped","timeoutSeconds":null}'


async def test_a_wait_waits_for_its_event_with_or_without_a_timeout(planner: Planner) -> None:
    definition = workflow(
        system(1, "wait", event="paid", timeoutSeconds=2.0006, next={"default": [2]}),
        system(2, "wait", event="shipped"),
    )

    result = await plan(planner, definition, [1, 2])

    assert result.ops == [
        PlannedOp("wait", 1, "paid", number=2001, input='{"event":"paid","timeoutSeconds":2.0006}'),
        PlannedOp("wait", 2, "shipped", number=NO_TIMEOUT, input=NO_TIMEOUT_INPUT),
    ]


async def test_a_join_waits_for_the_actions_it_joins(planner: Planner) -> None:
    definition = workflow(
        user(1, "a", next={"default": [2, 3]}),
        user(2, "b", next={"default": [4]}),
        user(3, "c", next={"default": [4]}),
        system(4, "join", joinOn=[3, 2]),
    )

    result = await plan(planner, definition, [4])

    assert result.ops == [PlannedOp("join", 4, payload="3,2", input='{"joinOn":[3,2]}')]


async def test_system_steps_are_followed_depth_first_in_next_order(planner: Planner) -> None:
    definition = workflow(
        user(1, "root", next={"default": [2, 5]}),
        system(2, "switch", expression="go", next={"go": [3, 4]}),
        user(3, "three"),
        user(4, "four"),
        user(5, "five"),
    )

    result = await plan(planner, definition, [2, 5])

    assert [(op.kind, op.action_id) for op in result.ops] == [
        ("done", 2),
        ("user", 3),
        ("user", 4),
        ("user", 5),
    ]


async def test_a_switch_without_a_matching_branch_fails_the_run_and_stops_the_plan(
    planner: Planner,
) -> None:
    definition = workflow(
        user(1, "root", next={"default": [2, 3]}),
        system(2, "switch", expression="{$.input.x}", next={"yes": [4]}),
        user(3, "three"),
        user(4, "four"),
    )

    result = await plan(planner, definition, [2, 3], document({"x": "no"}))

    error = "switch action 2 (switch): no branch for value 'no' and no default"
    assert result.ops == [PlannedOp("failed", 2, payload=error, input='{"expression":"no"}')]
    assert result.fail_reason == f"action 2 (switch) failed: {error}"


async def test_a_failure_with_an_error_branch_takes_it(planner: Planner) -> None:
    definition = workflow(
        system(1, "switch", expression="{$.input.x}", next={"yes": [2], "error": [3]}),
        user(2, "two"),
        user(3, "three", parameters={"why": "{$.1.output.error}"}),
    )
    doc = document({"x": "no"})

    result = await plan(planner, definition, [1], doc)

    error = "switch action 1 (switch): no branch for value 'no' and no default"
    assert result.ops == [
        PlannedOp("failed", 1, payload=error, input='{"expression":"no"}'),
        PlannedOp("user", 3, "three", f'{{"why":"{error}"}}', queue="three"),
    ]
    assert result.fail_reason == ""
    assert doc.value["1"] == {"output": {"error": error}}
    assert f'"1":{{"output":{{"error":"{error}"}}}}' in doc.json()


def stale(definition: WorkflowDef, action_id: int, name: str) -> WorkflowDef:
    """The definition with one system action renamed to one this server does not know."""
    action = definition.actions[action_id]
    renamed = ActionDef(action.id, ActionType.SYSTEM, name, next=action.next)
    return WorkflowDef(definition.name, 1, {**definition.actions, action_id: renamed})


async def test_an_unknown_system_action_fails(planner: Planner) -> None:
    definition = stale(workflow(system(1, "delay", delaySeconds=1)), 1, "sleep")

    result = await plan(planner, definition, [1])

    assert result.ops == [PlannedOp("failed", 1, payload="unknown system action 'sleep'")]
    assert result.fail_reason == "action 1 (sleep) failed: unknown system action 'sleep'"


async def test_follow_failure_takes_the_error_branch_and_plans_it(planner: Planner) -> None:
    definition = workflow(
        user(1, "charge", next={"error": [2]}),
        system(2, "switch", expression="{$.1.output.error}", next={"declined": [3]}),
        user(3, "notify"),
    )
    doc = document()
    result = Plan()

    await planner.follow_failure(definition, definition.actions[1], "declined", doc, result)

    assert result.ops == [
        PlannedOp("done", 2, "declined", '{"value":"declined"}', input='{"expression":"declined"}'),
        PlannedOp("user", 3, "notify", "{}", queue="notify"),
    ]
    assert doc.value["1"] == {"output": {"error": "declined"}}
    assert result.fail_reason == ""


async def test_follow_failure_without_an_error_branch_fails_the_run(planner: Planner) -> None:
    definition = workflow(user(1, "charge", next={"default": [2]}), user(2, "two"))
    doc = document()
    result = Plan()

    await planner.follow_failure(definition, definition.actions[1], "card declined", doc, result)

    assert result.ops == []
    assert result.fail_reason == "action 1 (charge) failed: card declined"
    assert "1" not in doc.value


async def test_a_script_runs_in_the_script_threads_on_the_document(
    planner: Planner, executor: CountingExecutor
) -> None:
    submitted = executor.submitted
    definition = workflow(
        system(1, "javascript", expression="$.total = $.input.a + 1;", next={"default": [2]}),
        user(2, "next", parameters={"t": "{$.1.output.total}"}),
    )
    doc = document({"a": 41})

    result = await plan(planner, definition, [1], doc)

    done, queued = result.ops
    assert (done.kind, done.action_id, done.name, done.payload) == (
        "done",
        1,
        "default",
        '{"total":42,"result":42}',
    )
    assert '"input":{"a":41}' in done.input
    assert queued == PlannedOp("user", 2, "next", '{"t":42}', queue="next")
    assert executor.submitted == submitted + 1


def test_run_on_document_runs_a_system_action_on_document_text() -> None:
    definition = workflow(system(1, "switch", expression="{$.input.k}", next={"v": [2]}), user(2))

    outcome = run_on_document(definition.actions[1], '{"input":{"k":"v"}}')

    assert outcome == Done(output={"value": "v"}, branch="v")
    assert outcome.input == {"expression": "v"}


def test_run_on_document_fails_an_unknown_system_action() -> None:
    action = ActionDef(1, ActionType.SYSTEM, "sleep")

    assert run_on_document(action, "{}") == Fail("unknown system action 'sleep'")


async def test_plans_do_not_block_each_other(planner: Planner) -> None:
    definition = workflow(user(1, "a", parameters={"x": "{$.input.x}"}))

    plans = await asyncio.gather(
        *(plan(planner, definition, [1], document({"x": n})) for n in range(3))
    )

    assert [p.ops[0].payload for p in plans] == ['{"x":0}', '{"x":1}', '{"x":2}']


async def test_a_terminate_ends_the_run_with_its_status_reason_and_output(
    planner: Planner,
) -> None:
    definition = workflow(
        user(1, "root", next={"default": [2, 3]}),
        system(
            2,
            "terminate",
            parameters={
                "status": "COMPLETED",
                "reason": "{$.input.why}",
                "output": {"total": "{$.input.n}"},
            },
        ),
        user(3, "after"),
    )

    result = await plan(planner, definition, [2, 3], document({"why": "paid", "n": 3}))

    own = '{"status":"COMPLETED","reason":"paid","output":{"total":3}}'
    given = '{"status":"COMPLETED","reason":"paid","output":{"total":3}}'
    assert result.ops == [
        PlannedOp("done", 2, "", own, input=given),
        PlannedOp("end", 2, "COMPLETED", "paid", input='{"total":3}'),
    ]
    assert result.ended
    assert result.fail_reason == ""


async def test_a_terminate_without_reason_or_output_names_itself(planner: Planner) -> None:
    definition = workflow(system(1, "terminate", parameters={"status": "FAILED"}))

    result = await plan(planner, definition, [1])

    assert result.ops == [
        PlannedOp(
            "done",
            1,
            "",
            '{"status":"FAILED","reason":"ended by action 1 (terminate)"}',
            input='{"status":"FAILED"}',
        ),
        PlannedOp("end", 1, "FAILED", "ended by action 1 (terminate)", input=""),
    ]
    assert result.ended


async def test_a_plan_is_not_ended_by_other_actions(planner: Planner) -> None:
    result = await plan(planner, workflow(user(1, "a")), [1])

    assert not result.ended


def workflow_with_vars(variables: dict[str, Any], *actions: dict[str, Any]) -> WorkflowDef:
    return parse_workflow(
        {"name": "wf", "rootAction": 1, "vars": variables, "actions": list(actions)}
    )


def document_with_vars(variables: dict[str, Any], input: Any = None) -> Document:
    return Document.of({"input": input or {}, "flow": dict(FLOW), "vars": variables})


async def test_a_system_action_sets_variables_that_the_next_steps_read(planner: Planner) -> None:
    definition = workflow_with_vars(
        {"count": 0, "seen": [], "last": None},
        system(
            1,
            "switch",
            expression="{$.input.x}",
            next={"default": [2]},
            setVars=[
                {"var": "count", "op": "add", "value": 2},
                {"var": "seen", "op": "append", "value": "{$.output.value}"},
                {"var": "count", "op": "add", "value": 1},
            ],
        ),
        user(2, "next", parameters={"c": "{$.vars.count}", "s": "{$.vars.seen}"}),
    )
    doc = document_with_vars({"count": 0, "seen": [], "last": None}, {"x": "a"})

    result = await plan(planner, definition, [1], doc)

    assert result.ops == [
        PlannedOp("done", 1, "default", '{"value":"a"}', input='{"expression":"a"}'),
        PlannedOp("var", 1, "count", "2", input="add"),
        PlannedOp("var", 1, "seen", '["a"]', input="append"),
        PlannedOp("var", 1, "count", "3", input="add"),
        PlannedOp("user", 2, "next", '{"c":3,"s":["a"]}', queue="next"),
    ]
    assert result.fail_reason == ""
    assert doc.value["vars"] == {"count": 3, "seen": ["a"], "last": None}


def failing_add(**fields: Any) -> dict[str, Any]:
    return system(
        1,
        "switch",
        expression="{$.input.x}",
        setVars=[{"var": "count", "op": "add", "value": 1}],
        **fields,
    )


async def test_a_mutation_that_cannot_apply_takes_the_error_branch(planner: Planner) -> None:
    definition = workflow_with_vars(
        {"count": 0},
        failing_add(next={"default": [2], "error": [3]}),
        user(2, "two"),
        user(3, "three", parameters={"why": "{$.1.output.error}"}),
    )
    doc = document_with_vars({"count": "many"}, {"x": "a"})

    result = await plan(planner, definition, [1], doc)

    error = 'setVars[0] (add count): add needs a number variable, it holds "many"'
    assert result.ops == [
        PlannedOp("failed", 1, payload=error, input='{"expression":"a"}'),
        PlannedOp("user", 3, "three", f'{{"why":{orjson.dumps(error).decode()}}}', queue="three"),
    ]
    assert result.fail_reason == ""
    assert doc.value["vars"] == {"count": "many"}
    assert doc.value["1"] == {"output": {"error": error}}


async def test_a_mutation_that_cannot_apply_without_an_error_branch_fails_the_run(
    planner: Planner,
) -> None:
    definition = workflow_with_vars(
        {"count": 0}, failing_add(next={"default": [2]}), user(2, "two")
    )
    doc = document_with_vars({"count": None}, {"x": "a"})

    result = await plan(planner, definition, [1], doc)

    error = "setVars[0] (add count): add needs a number variable, it holds null"
    assert result.ops == [PlannedOp("failed", 1, payload=error, input='{"expression":"a"}')]
    assert result.fail_reason == f"action 1 (switch) failed: {error}"


async def test_a_variable_larger_than_the_limit_is_refused(
    executor: ThreadPoolExecutor, pool: CountingPool
) -> None:
    definition = workflow_with_vars(
        {"seen": []},
        system(
            1,
            "switch",
            expression="{$.input.x}",
            setVars=[{"var": "seen", "op": "append", "value": "{$.output.value}"}],
            next={"default": [2]},
        ),
        user(2, "two"),
    )
    small = Planner(executor, pool, NEVER_LARGE, max_var_bytes=7)

    fits = await plan(small, definition, [1], document_with_vars({"seen": []}, {"x": "abc"}))
    too_large = await plan(small, definition, [1], document_with_vars({"seen": []}, {"x": "abcd"}))

    assert fits.ops[1] == PlannedOp("var", 1, "seen", '["abc"]', input="append")
    assert too_large.fail_reason == (
        "action 1 (switch) failed: setVars[0] (append seen): the variable would be 8 bytes; "
        "the limit is 7 bytes (ORCHY_MAX_OUTPUT_BYTES)"
    )


def test_set_vars_without_mutations_changes_nothing(planner: Planner) -> None:
    definition = workflow(user(1, "one"))
    doc = document_with_vars({"count": 1})

    assert planner.set_vars(definition.actions[1], {"x": 1}, doc) == []
    assert doc.value["vars"] == {"count": 1}


def test_set_vars_gives_the_ops_and_sets_the_document(planner: Planner) -> None:
    definition = workflow_with_vars(
        {"total": 0, "last": None},
        user(
            1,
            "one",
            setVars=[
                {"var": "total", "op": "add", "value": "{$.output.n}"},
                {"var": "last", "op": "assign", "value": "{$.output}"},
            ],
        ),
    )
    doc = document_with_vars({"total": 5, "last": None})

    ops = planner.set_vars(definition.actions[1], {"n": 2}, doc)

    assert ops == [
        PlannedOp("var", 1, "total", "7", input="add"),
        PlannedOp("var", 1, "last", '{"n":2}', input="assign"),
    ]
    assert doc.value["vars"] == {"total": 7, "last": {"n": 2}}
    assert '"vars":{"total":7,"last":{"n":2}}' in doc.json()


def test_set_vars_that_cannot_apply_says_why_and_leaves_the_document(planner: Planner) -> None:
    definition = workflow_with_vars(
        {"keys": {}},
        user(1, "one", setVars=[{"var": "keys", "op": "removeKey", "value": "{$.output}"}]),
    )
    doc = document_with_vars({"keys": {"a": 1}})

    why = planner.set_vars(definition.actions[1], 3, doc)

    assert why == "setVars[0] (removeKey keys): removeKey needs a string key, not 3"
    assert doc.value["vars"] == {"keys": {"a": 1}}


async def test_a_loop_of_system_actions_is_planned_up_to_the_limit_then_fails(
    executor: ThreadPoolExecutor, pool: CountingPool
) -> None:
    definition = workflow(
        system(1, "while", condition="true", next={"body": [2]}),
        system(2, "if", condition="true", next={"true": [1]}),
    )

    result = await plan(Planner(executor, pool, NEVER_LARGE, max_executions=5), definition, [1])

    assert [(op.kind, op.action_id) for op in result.ops] == [
        ("done", 1),
        ("done", 2),
        ("done", 1),
        ("done", 2),
        ("done", 1),
    ]
    assert result.fail_reason == (
        "run reached its limit of 5 executions (ORCHY_MAX_RUN_EXECUTIONS)"
    )


async def test_a_while_starting_a_pass_lets_the_joins_of_its_loop_fire_again(
    planner: Planner,
) -> None:
    definition = workflow(
        system(1, "while", condition="{$.1.output.iteration} < 1", next={"body": [2]}),
        user(2, next={"default": [3]}),
        system(3, "join", joinOn=[2], next={"default": [1]}),
    )

    result = await plan(planner, definition, [1])

    assert [(op.kind, op.action_id, op.payload) for op in result.ops][1:] == [
        ("loop", 1, "3"),
        ("user", 2, "{}"),
    ]
