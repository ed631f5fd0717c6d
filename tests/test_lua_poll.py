"""poll.lua: leasing queued tasks.

Each test runs on a private key prefix; see tests/helpers/lua.py for the harness.
"""

from __future__ import annotations

import json

from app.engine.ids import lease_secrets
from app.store.store import LeasedTask
from tests.helpers.lua import (
    LEASE_MS,
    Lua,
    entry_of,
    member,
    queue_entry,
    user,
    user_with_poll_timeout,
)


async def test_poll_leases_queued_tasks_up_to_most(lua: Lua) -> None:
    queue = lua.new_name()
    flow = await lua.start([user(1, queue, '{"i":1}'), user(2, queue, '{"i":2}'), user(5, queue)])

    before = await lua.now()
    secrets = "a" * 32 + "b" * 32
    first = await lua.store.poll(lua.partition(flow), [(queue, 7000)], 2, "worker-a", secrets)
    after = await lua.now()
    assert first == [
        LeasedTask(f"{queue_entry(flow, 1, 1)}.{'a' * 32}", flow, 1, 1, '{"i":1}', queue),
        LeasedTask(f"{queue_entry(flow, 2, 1)}.{'b' * 32}", flow, 2, 1, '{"i":2}', queue),
    ]
    run = await lua.run(flow)
    for seq, aid, secret in ((1, 1, "a" * 32), (2, 2, "b" * 32)):
        assert (run[f"x:{seq}:s"], run[f"x:{seq}:w"], run[f"x:{seq}:k"], run[f"a:{aid}:s"]) == (
            "RUNNING",
            "worker-a",
            secret,
            "RUNNING",
        )
        lease = await lua.score(flow, member("lease", flow, seq, 1))
        assert lease is not None
        assert before + 7000 <= lease <= after + 7000
    assert run["x:3:s"] == "QUEUED"
    assert await lua.score(flow, member("lease", flow, 3, 1)) is None
    assert await lua.queue(flow, queue) == [queue_entry(flow, 3, 1)]
    running = [entry for entry in await lua.history(flow) if entry["event"] == "RUNNING"]
    assert [(e["action"], e["seq"], e["attempt"], e["worker"]) for e in running] == [
        (1, 1, 1, "worker-a"),
        (2, 2, 1, "worker-a"),
    ]

    second = await lua.poll(flow, queue, most=5)
    assert [entry_of(task.task_id) for task in second] == [queue_entry(flow, 3, 1)]
    assert second[0].action_id == 5
    # Nothing is leased twice.
    assert await lua.poll(flow, queue, most=5) == []
    assert (await lua.run(flow))["active"] == "3"


async def test_poll_takes_queues_in_order_with_their_own_lease(lua: Lua) -> None:
    first_queue, second_queue = lua.new_name(), lua.new_name()
    flow = await lua.start(
        [user(1, first_queue), user(2, first_queue), user(3, second_queue), user(4, second_queue)]
    )
    before = await lua.now()
    tasks = await lua.store.poll(
        lua.partition(flow),
        [(first_queue, 1000), (second_queue, 50_000)],
        3,
        "w",
        lease_secrets(3),
    )
    after = await lua.now()

    assert [entry_of(task.task_id) for task in tasks] == [
        queue_entry(flow, seq, 1) for seq in (1, 2, 3)
    ]
    for seq, lease_ms in ((1, 1000), (2, 1000), (3, 50_000)):
        due = await lua.score(flow, member("lease", flow, seq, 1))
        assert due is not None
        assert before + lease_ms <= due <= after + lease_ms, seq
    assert await lua.queue(flow, second_queue) == [queue_entry(flow, 4, 1)]


async def test_poll_drops_entries_of_ended_runs(lua: Lua) -> None:
    queue = lua.new_name()
    terminated = await lua.start([user(1, queue)])
    # Another run in the same partition, so that its entry shares the queue.
    failing = lua.new_flow()
    while lua.partition(failing) != lua.partition(terminated):
        failing = lua.new_flow()
    await lua.start([user(1, queue)], flow=failing, fail_reason="bad")
    live = lua.new_flow()
    while lua.partition(live) != lua.partition(terminated):
        live = lua.new_flow()
    await lua.start([user(1, queue)], flow=live)
    assert await lua.store.terminate(terminated, "stop", by="tester") == "ok"

    tasks = await lua.poll(live, queue)

    assert [entry_of(task.task_id) for task in tasks] == [queue_entry(live, 1, 1)]
    assert await lua.queue(live, queue) == []
    assert (await lua.run(terminated))["x:1:s"] == "FAILED"
    assert await lua.score(terminated, member("lease", terminated, 1, 1)) is None
    assert await lua.score(failing, member("lease", failing, 1, 1)) is None


async def test_poll_leases_tasks_of_a_paused_run(lua: Lua) -> None:
    # poll.lua takes PAUSED runs on purpose: the pause holds the result, not the delivery.
    queue = lua.new_name()
    flow = await lua.start([user(1, queue)])
    assert await lua.store.pause(flow, by="tester") == "ok"

    tasks = await lua.poll(flow, queue)

    assert [entry_of(task.task_id) for task in tasks] == [queue_entry(flow, 1, 1)]
    assert (await lua.run(flow))["x:1:s"] == "RUNNING"
    assert await lua.complete(flow, 1) == "held"


async def test_poll_checks_the_run_status_not_only_the_execution(lua: Lua) -> None:
    # Defence in depth: a run marked ended whose execution still reads QUEUED.
    queue = lua.new_name()
    flow = await lua.start([user(1, queue)])
    await lua.client.hset(lua.run_keys(flow).run, "status", "TERMINATED")

    assert await lua.poll(flow, queue) == []

    assert await lua.queue(flow, queue) == []
    assert (await lua.run(flow))["x:1:s"] == "QUEUED"
    assert await lua.score(flow, member("lease", flow, 1, 1)) is None


async def test_poll_drops_stale_entries(lua: Lua) -> None:
    queue, other = lua.new_name(), lua.new_name()
    flow = await lua.start([user(1, other)])
    ghost = lua.new_flow()
    await lua.client.rpush(
        lua.queue_key(flow, queue),
        queue_entry(flow, 1, 2),  # an attempt that does not exist
        queue_entry(flow, 9, 1),  # an execution that does not exist
        queue_entry(ghost, 1, 1),  # a run that does not exist
        queue_entry(flow, 1, 1),  # the real one
        queue_entry(flow, 1, 1),  # the same again: RUNNING by now
    )

    tasks = await lua.poll(flow, queue)

    assert [entry_of(task.task_id) for task in tasks] == [queue_entry(flow, 1, 1)]
    assert await lua.queue(flow, queue) == []
    # Its own queue's entry is now stale too.
    assert await lua.poll(flow, other) == []
    assert await lua.queue(flow, other) == []
    run = await lua.run(flow)
    assert (run["x:1:s"], run["x:1:n"], run["active"]) == ("RUNNING", "1", "1")
    assert "x:9:s" not in run


async def test_poll_skips_a_malformed_queue_entry(lua: Lua) -> None:
    queue = lua.new_name()
    flow = await lua.start([user(1, queue)])
    await lua.client.rpush(lua.queue_key(flow, queue), "not-a-task-id")

    tasks = await lua.poll(flow, queue)

    assert [entry_of(task.task_id) for task in tasks] == [queue_entry(flow, 1, 1)]
    assert await lua.queue(flow, queue) == []


async def test_each_lease_gets_its_own_secret_kept_out_of_the_history(lua: Lua) -> None:
    """The k-th task leased takes the k-th secret given, whichever queue or run it is in;
    the secret is kept on the execution and written nowhere else."""
    queue, other = lua.new_name(), lua.new_name()
    flow = await lua.start([user(1, queue), user(2, other)])
    second = lua.new_flow()
    while lua.partition(second) != lua.partition(flow):
        second = lua.new_flow()
    await lua.start([user(1, queue)], flow=second)
    secrets = lease_secrets(3)
    tasks = await lua.store.poll(
        lua.partition(flow), [(queue, LEASE_MS), (other, LEASE_MS)], 3, "w", secrets
    )

    given = [secrets[i * 32 : (i + 1) * 32] for i in range(3)]
    assert [task.task_id for task in tasks] == [
        f"{queue_entry(flow, 1, 1)}.{given[0]}",
        f"{queue_entry(second, 1, 1)}.{given[1]}",
        f"{queue_entry(flow, 2, 1)}.{given[2]}",
    ]
    assert await lua.secret(flow, 1) == given[0]
    assert await lua.secret(second, 1) == given[1]
    assert await lua.secret(flow, 2) == given[2]
    for run in (flow, second):
        history = json.dumps(await lua.history(run))
        assert not any(secret in history for secret in given)


async def test_poll_takes_away_the_poll_timeout_of_what_it_leases(lua: Lua) -> None:
    queue = lua.new_name()
    flow = await lua.start([user_with_poll_timeout(1, queue, 60_000), user(2, queue)])
    timeout = member("pto", flow, 1, 1)
    assert await lua.score(flow, timeout) is not None
    assert await lua.score(flow, member("pto", flow, 2, 1)) is None

    assert [entry_of(task.task_id) for task in await lua.poll(flow, queue, most=1)] == [
        queue_entry(flow, 1, 1)
    ]
    assert await lua.score(flow, timeout) is None
