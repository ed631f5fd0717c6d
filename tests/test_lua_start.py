"""start.lua: creating a run and applying the planned ops (user, done, failed, note,
sleep, wait, join), settling and retention.

Each test runs on a private key prefix; see tests/helpers/lua.py for the harness.
"""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import pytest
from redis.exceptions import ResponseError

from app.store.store import Outcome, RunStart
from tests.helpers.lua import (
    RETENTION,
    Lua,
    assert_no_run,
    done,
    entry_of,
    events_of,
    failed,
    join,
    member,
    messages,
    note,
    queue_entry,
    sleep,
    user,
    user_with_poll_timeout,
    wait,
)


async def test_start_creates_run_indexes_history_and_queued_task(lua: Lua) -> None:
    queue = lua.new_name()
    name = lua.new_name("wf")
    flow = lua.new_flow()
    before = await lua.now()
    created = await lua.store.start_run(
        flow, name, 7, '{"x":[1,2]}', "idem-1", "", [user(4, queue, '{"arg":5}')], by="alice"
    )
    after = await lua.now()
    assert created is True

    run = await lua.run(flow)
    created_at = int(run["createdAt"])
    assert before <= created_at <= after
    assert run == {
        "rev": "1",
        "id": flow,
        "name": name,
        "version": "7",
        "status": "RUNNING",
        "reason": "",
        "input": '{"x":[1,2]}',
        "idempotencyKey": "idem-1",
        "createdAt": str(created_at),
        "updatedAt": str(created_at),
        "seq": "1",
        "active": "1",
        "joins": "",
        "x:1:a": "4",
        "x:1:s": "QUEUED",
        "x:1:n": "1",
        "x:1:in": '{"arg":5}',
        "x:1:q": queue,
        "x:1:t0": str(created_at),
        "a:4:s": "QUEUED",
        "a:4:n": "1",
        "a:4:x": "1",
        "a:4:c": "1",
    }
    partition = lua.partition(flow)
    assert await lua.client.zscore(lua.keys.runs_index(partition), flow) == created_at
    assert await lua.client.zscore(lua.keys.runs_by_name(partition, name), flow) == created_at
    assert await lua.store.newest_runs(name, 5) == [(flow, created_at)]

    assert await lua.queue(flow, queue) == [queue_entry(flow, 1, 1)]
    history = await lua.history(flow)
    assert history == [
        {"event": "RUN_STARTED", "name": name, "version": 7, "by": "alice", "at": created_at},
        {"event": "QUEUED", "action": 4, "seq": 1, "name": queue, "at": created_at},
    ]
    # A running run keeps its keys.
    assert await lua.ttl(lua.run_keys(flow).run) == -1
    assert await lua.ttl(lua.run_keys(flow).history) == -1


async def test_starts_in_one_round_trip_each_name_their_principal(lua: Lua) -> None:
    """start_runs (``/flow/execute/many``): every run's RUN_STARTED names who started it."""
    queue, name = lua.new_name(), lua.new_name("wf")
    first, second = lua.new_flow(), lua.new_flow()
    starts = [
        RunStart(first, name, 1, "{}", "", "", [user(1, queue)], by="svc-a"),
        RunStart(second, name, 1, "{}", "", "", [user(1, queue)], by="svc-b"),
    ]
    assert await lua.store.start_runs(starts) == [True, True]
    for flow, by in ((first, "svc-a"), (second, "svc-b")):
        started = (await lua.history(flow))[0]
        assert (started["event"], started["by"]) == ("RUN_STARTED", by)
        assert (await lua.run(flow))["x:1:q"] == queue  # the ops still follow ARGV[10]


async def test_start_queues_a_task_with_a_poll_timeout_under_its_timer(lua: Lua) -> None:
    queue = lua.new_name()
    before = await lua.now()
    flow = await lua.start([user_with_poll_timeout(1, queue, 2500), user(2, queue)])
    after = await lua.now()

    assert await lua.queue(flow, queue) == [queue_entry(flow, 1, 1), queue_entry(flow, 2, 1)]
    due = await lua.score(flow, member("pto", flow, 1, 1))
    assert due is not None and before + 2500 <= due <= after + 2500
    assert await lua.score(flow, member("pto", flow, 2, 1)) is None
    run = await lua.run(flow)
    assert (run["x:1:s"], run["x:2:s"], run["active"]) == ("QUEUED", "QUEUED", "2")


async def test_start_existing_id_is_refused_and_changes_nothing(lua: Lua) -> None:
    queue = lua.new_name()
    flow = await lua.start([user(1, queue)], input_json='{"first":true}')
    run_before = await lua.run(flow)
    history_before = await lua.history(flow)

    again = await lua.store.start_run(
        flow,
        lua.new_name("wf"),
        3,
        '{"second":true}',
        "",
        "",
        [user(1, queue), sleep(2, 1000)],
        by="tester",
    )

    assert again is False
    assert await lua.run(flow) == run_before
    assert await lua.history(flow) == history_before
    assert await lua.queue(flow, queue) == [queue_entry(flow, 1, 1)]
    assert await lua.score(flow, member("fire", flow, 2, 1)) is None


async def test_start_publishes_queue_and_earliest_timer_notifications(
    lua: Lua, pubsub: Any
) -> None:
    queue = lua.new_name()
    flow = await lua.start([sleep(1, 5000), sleep(2, 9000), user(3, queue)])
    partition = lua.partition(flow)
    first_due = await lua.score(flow, member("fire", flow, 1, 1))
    assert first_due is not None

    # Only the timer that became the partition's earliest wakes the sweepers; the later
    # one does not, so the queue message comes right after the first timer message.
    assert await messages(pubsub, 2) == [
        f"t|{partition}|{int(first_due)}",
        f"q|{partition}|{queue}",
    ]


async def test_start_done_failed_and_note_ops(lua: Lua) -> None:
    queue = lua.new_name()
    flow = await lua.start(
        [
            done(1, '{"v":1}', branch="yes"),
            failed(2, "boom"),
            note(5, "watch out"),
            user(3, queue),
        ]
    )
    run = await lua.run(flow)
    assert run["status"] == "RUNNING"
    assert run["seq"] == "3"
    assert run["active"] == "1"
    assert (run["x:1:a"], run["x:1:s"], run["x:1:n"]) == ("1", "COMPLETED", "1")
    assert (run["a:1:s"], run["x:1:o"], run["a:1:x"]) == ("COMPLETED", '{"v":1}', "1")
    assert "a:1:e" not in run
    assert (run["x:2:a"], run["x:2:s"]) == ("2", "FAILED")
    assert run["a:2:s"] == "FAILED"
    assert run["a:2:e"] == "boom"
    assert json.loads(run["x:2:o"]) == {"error": "boom"}
    assert run["x:3:s"] == "QUEUED"

    history = await lua.history(flow)
    assert events_of(history) == ["RUN_STARTED", "COMPLETED", "FAILED", "WARNING", "QUEUED"]
    assert history[1]["branch"] == "yes"
    assert (history[1]["action"], history[1]["seq"]) == (1, 1)
    assert (history[2]["error"], history[2]["seq"]) == ("boom", 2)
    assert (history[3]["action"], history[3]["detail"]) == (5, "watch out")


async def test_system_ops_record_what_their_execution_received(lua: Lua) -> None:
    inputs = {
        1: '{"expression":"yes"}',
        2: '{"expression":"no"}',
        3: '{"delaySeconds":5}',
        4: '{"event":"go","timeoutSeconds":null}',
        5: '{"joinOn":[1]}',
    }
    ops = [done(1), failed(2, "no branch"), sleep(3, 5000), wait(4, "go"), join(5, "1")]
    received = [replace(op, input=inputs[op.action_id]) for op in ops]

    flow = await lua.start([*received, done(6)])

    run = await lua.run(flow)
    assert {seq: run[f"x:{seq}:in"] for seq in inputs} == inputs
    assert (run["x:6:a"], run.get("x:6:in")) == ("6", None)


async def test_start_sleep_op_adds_fire_timer(lua: Lua) -> None:
    flow = lua.new_flow()
    before = await lua.now()
    await lua.start([sleep(1, 5000)], flow=flow)
    after = await lua.now()

    due = await lua.score(flow, member("fire", flow, 1, 1))
    assert due is not None
    assert before + 5000 <= due <= after + 5000
    run = await lua.run(flow)
    assert (run["status"], run["active"], run["x:1:s"], run["x:1:n"]) == (
        "RUNNING",
        "1",
        "WAITING",
        "1",
    )
    assert (await lua.history(flow))[-1]["delayMs"] == 5000


async def test_start_wait_without_event_registers_waiter_and_timeout(lua: Lua) -> None:
    event = lua.new_name("ev")
    flow = lua.new_flow()
    before = await lua.now()
    await lua.start([wait(1, event, 3000), wait(2, event)], flow=flow)
    after = await lua.now()

    run = await lua.run(flow)
    assert (run["x:1:s"], run["x:1:ev"], run["x:1:n"]) == ("WAITING", event, "1")
    assert (run["x:2:s"], run["x:2:ev"]) == ("WAITING", event)
    assert run["active"] == "2"
    assert await lua.waiters(flow) == [f"1|{event}", f"2|{event}"]
    timeout = await lua.score(flow, member("wto", flow, 1, 1))
    assert timeout is not None
    assert before + 3000 <= timeout <= after + 3000
    # A wait without a timeout (-1) has no timeout timer.
    assert await lua.score(flow, member("wto", flow, 2, 1)) is None
    assert await lua.events(flow) == []


async def test_wait_consumes_a_buffered_event(lua: Lua) -> None:
    queue = lua.new_name()
    event = lua.new_name("ev")
    flow = await lua.start([user(1, queue)])
    assert await lua.store.send_event(flow, event, '{"n":1}', by="tester") == "buffered"
    assert len(await lua.events(flow)) == 1
    assert len(await lua.poll(flow, queue)) == 1

    before = await lua.now()
    assert await lua.complete(flow, 1, ops=[wait(2, event, 4000)]) == "ok"
    after = await lua.now()

    run = await lua.run(flow)
    assert (run["x:2:s"], run["x:2:ev"], run["x:2:evn"], run["x:2:evd"], run["x:2:n"]) == (
        "WAITING",
        event,
        event,
        '{"n":1}',
        "2",
    )
    step = await lua.score(flow, member("step", flow, 2, 2))
    assert step is not None
    assert before <= step <= after
    assert await lua.score(flow, member("wto", flow, 2, 1)) is None
    assert await lua.events(flow) == []
    assert await lua.waiters(flow) == []
    assert events_of(await lua.history(flow))[-1] == "EVENT_CONSUMED"


async def test_join_becomes_ready_when_all_joined_actions_finished(lua: Lua) -> None:
    queue = lua.new_name()
    flow = await lua.start([user(1, queue), user(2, queue), join(3, "1,2")])
    run = await lua.run(flow)
    assert (run["x:3:a"], run["x:3:s"], run["x:3:n"], run["x:3:jon"]) == (
        "3",
        "WAITING",
        "1",
        "1,2",
    )
    assert (run["a:3:jw"], run["joins"], run["active"]) == ("3", "3", "3")
    assert [entry_of(task.task_id) for task in await lua.poll(flow, queue)] == [
        queue_entry(flow, 1, 1),
        queue_entry(flow, 2, 1),
    ]
    step = member("step", flow, 3, 2)

    # A second arrival at a join still waiting adds no execution.
    assert await lua.complete(flow, 1, ops=[join(3, "1,2")]) == "ok"
    run = await lua.run(flow)
    assert (run["seq"], run["joins"], run["active"], run["x:3:n"]) == ("3", "3", "2", "1")
    assert await lua.score(flow, step) is None
    assert events_of(await lua.history(flow))[-1] == "JOIN_ARRIVAL"

    # A FAILED action counts as finished too.
    before = await lua.now()
    assert await lua.fail(flow, 2, "nope") == "ok"
    after = await lua.now()
    run = await lua.run(flow)
    assert (run["status"], run["joins"], run["active"]) == ("RUNNING", "", "1")
    assert (run["x:3:s"], run["x:3:n"], run["a:3:jf"]) == ("WAITING", "2", "1")
    assert "a:3:jw" not in run
    due = await lua.score(flow, step)
    assert due is not None
    assert before <= due <= after
    ready = [entry for entry in await lua.history(flow) if entry["event"] == "JOIN_READY"]
    assert [(entry["action"], entry["seq"]) for entry in ready] == [(3, 3)]

    # The step completes the join; an arrival after it fired is only noted.
    answer = await lua.store.transition(
        flow,
        3,
        "WAITING",
        2,
        Outcome("COMPLETED", '{"1":{},"2":{}}', branch="default"),
        [join(3, "1,2")],
        timer_member=step,
        held_member=step,
    )
    assert answer == "ok"
    run = await lua.run(flow)
    assert (run["status"], run["seq"], run["x:3:s"], run["x:3:o"]) == (
        "COMPLETED",
        "3",
        "COMPLETED",
        '{"1":{},"2":{}}',
    )
    assert await lua.score(flow, step) is None
    assert "JOIN_ALREADY_DONE" in events_of(await lua.history(flow))


async def test_unsatisfiable_join_at_start_fails_the_run(lua: Lua) -> None:
    flow = await lua.start([join(3, "2")])
    run = await lua.run(flow)
    reason = "join action(s) 3 wait for actions that can no longer finish"
    assert (run["status"], run["reason"]) == ("FAILED", reason)
    assert (run["x:1:s"], run["x:1:e"], run["a:3:s"], run["a:3:e"]) == (
        "FAILED",
        reason,
        "FAILED",
        reason,
    )
    assert (run["active"], run["joins"]) == ("0", "")
    assert "a:3:jw" not in run
    assert (await lua.history(flow))[-1]["event"] == "RUN_FAILED"


async def test_join_left_alone_after_a_transition_fails_the_run(lua: Lua) -> None:
    queue = lua.new_name()
    flow = await lua.start([user(1, queue), join(7, "1,2")])
    await lua.poll(flow, queue)
    assert await lua.complete(flow, 1) == "ok"

    run = await lua.run(flow)
    assert run["status"] == "FAILED"
    assert run["reason"] == "join action(s) 7 wait for actions that can no longer finish"
    assert (run["x:1:s"], run["x:2:s"], run["active"]) == ("COMPLETED", "FAILED", "0")


async def test_start_fail_reason_fails_the_run_at_once(lua: Lua) -> None:
    queue = lua.new_name()
    flow = lua.new_flow()
    before = await lua.now()
    await lua.start([user(1, queue), sleep(2, 60_000)], flow=flow, fail_reason="bad input")
    after = await lua.now()

    run = await lua.run(flow)
    assert (run["status"], run["reason"], run["active"]) == ("FAILED", "bad input", "0")
    assert before <= int(run["finishedAt"]) <= after
    assert (run["x:1:s"], run["x:1:e"], run["a:1:s"], run["a:1:e"]) == (
        "FAILED",
        "bad input",
        "FAILED",
        "bad input",
    )
    assert (run["x:2:s"], run["x:2:e"]) == ("FAILED", "bad input")
    history = await lua.history(flow)
    assert history[-1] == {
        "event": "RUN_FAILED",
        "reason": "bad input",
        "at": int(run["finishedAt"]),
    }
    assert 0 < await lua.ttl(lua.run_keys(flow).run) <= RETENTION
    # The task was queued before the run failed; no worker ever gets it.
    assert await lua.queue(flow, queue) == [queue_entry(flow, 1, 1)]
    assert await lua.poll(flow, queue) == []
    assert await lua.queue(flow, queue) == []


async def test_run_without_active_executions_completes_with_retention(lua: Lua) -> None:
    flow = await lua.start([done(1, '{"r":1}')])
    run = await lua.run(flow)
    assert (run["status"], run["reason"], run["active"]) == ("COMPLETED", "", "0")
    assert run["finishedAt"] == run["updatedAt"]
    assert events_of(await lua.history(flow)) == ["RUN_STARTED", "COMPLETED", "RUN_COMPLETED"]
    keys = lua.run_keys(flow)
    for key in (keys.run, keys.history):
        assert RETENTION - 5 <= await lua.ttl(key) <= RETENTION, key
    # The listing indexes keep the run (forget_runs drops it once it expired).
    partition = lua.partition(flow)
    assert await lua.client.zscore(lua.keys.runs_index(partition), flow) is not None

    empty = await lua.start([])
    assert (await lua.run(empty))["status"] == "COMPLETED"


async def test_finished_run_expires_its_event_and_waiter_keys(lua: Lua) -> None:
    event, other = lua.new_name("ev"), lua.new_name("ev")
    flow = await lua.start([wait(1, event)])
    assert await lua.store.send_event(flow, other, "1", by="tester") == "buffered"
    assert await lua.store.terminate(flow, "stop", by="tester") == "ok"
    keys = lua.run_keys(flow)
    for key in (keys.run, keys.history, keys.events, keys.waiters):
        assert RETENTION - 5 <= await lua.ttl(key) <= RETENTION, key


# -- wide starts: all of them or nothing ---------------------------------------------------

WIDE = 10_000
"""More values than Lua's ``unpack`` takes at once (about 8,000)."""


async def test_start_applies_ten_thousand_ops_and_notifies_their_queue_once(
    lua: Lua, pubsub: Any
) -> None:
    queue = lua.new_name()
    flow = await lua.start([user(aid, queue) for aid in range(1, WIDE + 1)])

    run = await lua.run(flow)
    assert (run["status"], run["seq"], run["active"]) == ("RUNNING", str(WIDE), str(WIDE))
    assert (run["x:1:s"], run[f"x:{WIDE}:s"], run[f"a:{WIDE}:s"]) == ("QUEUED",) * 3
    assert await lua.client.llen(lua.queue_key(flow, queue)) == WIDE
    history = await lua.history(flow)
    assert events_of(history) == ["RUN_STARTED"] + ["QUEUED"] * WIDE
    assert [entry["seq"] for entry in history[1:]] == list(range(1, WIDE + 1))
    # One message per queue wakes every poll of it; a marker published after the script
    # shows that nothing else came.
    await lua.client.publish(lua.keys.notify_channel, "marker")
    assert await messages(pubsub, 2) == [f"q|{lua.partition(flow)}|{queue}", "marker"]


async def test_start_with_a_queue_key_of_another_type_changes_nothing(lua: Lua) -> None:
    good, broken, name = lua.new_name(), lua.new_name(), lua.new_name("wf")
    flow = lua.new_flow()
    await lua.client.set(lua.queue_key(flow, broken), "not a list")

    with pytest.raises(ResponseError, match="holds a string, not a list"):
        await lua.store.start_run(
            flow,
            name,
            1,
            "{}",
            "",
            "",
            [sleep(1, 60_000), user(2, good), user(3, broken)],
            by="tester",
        )

    await assert_no_run(lua, flow, name)
    assert await lua.queue(flow, good) == []
    assert await lua.score(flow, member("fire", flow, 1, 1)) is None
    assert await lua.client.get(lua.queue_key(flow, broken)) == "not a list"


async def test_start_that_fails_midway_leaves_no_run_behind(lua: Lua) -> None:
    queue, name = lua.new_name(), lua.new_name("wf")
    flow = lua.new_flow()
    start = RunStart(flow, name, 1, "{}", "", "", [user(1, queue), sleep(2, 1000)], by="tester")
    keys, args = lua.store._start_call(start)
    # The sleep's number is not a number: the script fails after the run and its first task
    # were written, as any command failing midway would.
    args[args.index(1000)] = "soon"

    with pytest.raises(ResponseError, match="arithmetic"):
        await lua.store.scripts.start(keys=keys, args=args)

    await assert_no_run(lua, flow, name)
    # What it queued before the error points at a run that does not exist: a poll drops it.
    assert await lua.poll(flow, queue) == []
    assert await lua.queue(flow, queue) == []
    # The same start succeeds without the fault.
    assert (
        await lua.store.start_run(flow, name, 1, "{}", "", "", [user(1, queue)], by="tester")
        is True
    )
    leased = [task.task_id.rsplit(".", 1)[0] for task in await lua.poll(flow, queue)]
    assert leased == [queue_entry(flow, 1, 1)]
