"""Every Lua script of app/store/lua, driven through the Store and checked by raw reads.

Each test gets a Store whose run keys live under a key prefix of its own (the real key layout
and hash tags, another prefix), so its partition timers, queues and notify channel are
private: the sweeper of a test server running in the same session never claims these timers,
and claim_timers sees only the test's own members. The scripts are synchronous, so nothing
here sleeps; times are checked against Redis's own clock read before and after each call.
"""

from __future__ import annotations

import copy
import json
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from typing import Any

import pytest
import pytest_asyncio
from redis.crc import key_slot

from app.engine.ids import TaskId, TimerKind, TimerMember
from app.store.connection import pubsub_client_for_url
from app.store.keys import Keys, RunKeys
from app.store.store import LeasedTask, Outcome, PlannedOp, Store

RETENTION = 4321
LEASE_MS = 30_000
PUBSUB_SECONDS = 5.0


class IsolatedKeys(Keys):
    """The real key layout under a private prefix (and a private notify channel)."""

    def __init__(self, partitions: int, prefix: str) -> None:
        super().__init__(partitions)
        self.prefix = prefix

    def _base(self, partition: int) -> str:
        return f"{self.prefix}:{{p{partition}}}"

    @property
    def notify_channel(self) -> str:
        return f"{self.prefix}:notify"


class Lua:
    """A private Store plus raw reads of what the scripts wrote."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.client = store.client
        self.keys = store.keys

    # -- names ------------------------------------------------------------------------

    @staticmethod
    def new_flow() -> str:
        return uuid.uuid4().hex

    @staticmethod
    def new_name(what: str = "act") -> str:
        return f"{what}-{uuid.uuid4().hex[:10]}"

    def run_keys(self, flow: str) -> RunKeys:
        return self.keys.run(flow)

    def partition(self, flow: str) -> int:
        return self.keys.partition_of(flow)

    def queue_key(self, flow: str, queue: str) -> str:
        return self.keys.queue(self.partition(flow), queue)

    def timers_key(self, flow: str) -> str:
        return self.keys.timers(self.partition(flow))

    # -- raw reads --------------------------------------------------------------------

    async def now(self) -> int:
        seconds, micros = await self.client.time()
        return int(seconds) * 1000 + int(micros) // 1000

    async def run(self, flow: str) -> dict[str, str]:
        fields: dict[str, str] = await self.client.hgetall(self.run_keys(flow).run)
        return fields

    async def history(self, flow: str) -> list[dict[str, Any]]:
        entries = await self.client.lrange(self.run_keys(flow).history, 0, -1)
        return [json.loads(entry) for entry in entries]

    async def events(self, flow: str) -> list[str]:
        entries: list[str] = await self.client.lrange(self.run_keys(flow).events, 0, -1)
        return entries

    async def waiters(self, flow: str) -> list[str]:
        entries: list[str] = await self.client.lrange(self.run_keys(flow).waiters, 0, -1)
        return entries

    async def held(self, flow: str) -> set[str]:
        members: set[str] = await self.client.smembers(self.run_keys(flow).held)
        return members

    async def queue(self, flow: str, queue: str) -> list[str]:
        entries: list[str] = await self.client.lrange(self.queue_key(flow, queue), 0, -1)
        return entries

    async def score(self, flow: str, member: str) -> float | None:
        value: float | None = await self.client.zscore(self.timers_key(flow), member)
        return value

    async def ttl(self, key: str) -> int:
        return int(await self.client.ttl(key))

    # -- script calls -----------------------------------------------------------------

    async def start(
        self,
        ops: Sequence[PlannedOp],
        flow: str | None = None,
        fail_reason: str = "",
        name: str = "wf",
        input_json: str = '{"in":1}',
    ) -> str:
        flow = flow or self.new_flow()
        created = await self.store.start_run(flow, name, 3, input_json, "", fail_reason, ops)
        assert created is True
        return flow

    async def poll(
        self, flow: str, queue: str, most: int = 10, lease_ms: int = LEASE_MS
    ) -> list[LeasedTask]:
        return await self.store.poll(self.partition(flow), [(queue, lease_ms)], most, "w-1")

    async def complete(
        self,
        flow: str,
        seq: int,
        output: str = '{"ok":true}',
        ops: Sequence[PlannedOp] = (),
        fail_reason: str = "",
        attempt: int = 1,
    ) -> str:
        """A worker's success for a leased task, as the engine sends it."""
        return await self.store.transition(
            flow,
            seq,
            "RUNNING",
            attempt,
            Outcome("COMPLETED", output, branch="default"),
            ops,
            fail_reason,
            timer_member=member("lease", flow, seq, attempt),
            held_member=member("res", flow, seq, attempt),
            held_outcome=json.dumps({"output": json.loads(output)}),
        )

    async def fail(
        self,
        flow: str,
        seq: int,
        error: str,
        ops: Sequence[PlannedOp] = (),
        fail_reason: str = "",
        attempt: int = 1,
    ) -> str:
        return await self.store.transition(
            flow,
            seq,
            "RUNNING",
            attempt,
            Outcome("FAILED", json.dumps({"error": error}), error=error, branch="error"),
            ops,
            fail_reason,
            timer_member=member("lease", flow, seq, attempt),
            held_member=member("res", flow, seq, attempt),
        )

    async def finish_waiting(
        self, flow: str, seq: int, kind: str, generation: int, output: str = "{}"
    ) -> str:
        """A fired timer completing a WAITING execution, as the engine sends it."""
        timer = member(kind, flow, seq, generation)
        return await self.store.transition(
            flow,
            seq,
            "WAITING",
            generation,
            Outcome("COMPLETED", output, branch="default"),
            timer_member=timer,
            held_member=timer,
        )


def member(kind: str, flow: str, seq: int, n: int) -> str:
    return str(TimerMember(TimerKind(kind), flow, seq, n))


def task_id(flow: str, seq: int, attempt: int) -> str:
    return str(TaskId(flow, seq, attempt))


def user(aid: int, queue: str, payload: str = "{}") -> PlannedOp:
    return PlannedOp("user", aid, queue, payload, queue=queue)


def done(aid: int, output: str = "{}", branch: str = "default") -> PlannedOp:
    return PlannedOp("done", aid, branch, output)


def failed(aid: int, error: str) -> PlannedOp:
    return PlannedOp("failed", aid, payload=error)


def sleep(aid: int, ms: int) -> PlannedOp:
    return PlannedOp("sleep", aid, number=ms)


def wait(aid: int, event: str, timeout_ms: int = -1) -> PlannedOp:
    return PlannedOp("wait", aid, event, number=timeout_ms)


def join(aid: int, on: str) -> PlannedOp:
    return PlannedOp("join", aid, payload=on)


def note(aid: int, text: str) -> PlannedOp:
    return PlannedOp("note", aid, payload=text)


def events_of(history: list[dict[str, Any]]) -> list[str]:
    return [entry["event"] for entry in history]


@pytest.fixture
def lua(store: Store) -> Lua:
    private = copy.copy(store)
    private.keys = IsolatedKeys(store.keys.partitions, f"orchy-lua-{uuid.uuid4().hex[:12]}")
    private.retention_seconds = RETENTION
    return Lua(private)


@pytest_asyncio.fixture
async def pubsub(lua: Lua, redis_url: str) -> AsyncIterator[Any]:
    client = pubsub_client_for_url(redis_url)
    channel = client.pubsub()
    await channel.subscribe(lua.keys.notify_channel)
    # The subscription is confirmed before the test publishes anything.
    confirm = await channel.get_message(timeout=PUBSUB_SECONDS)
    assert confirm is not None and confirm["type"] == "subscribe"
    try:
        yield channel
    finally:
        await channel.aclose()
        await client.aclose()


async def messages(channel: Any, count: int) -> list[str]:
    deadline = time.monotonic() + PUBSUB_SECONDS
    got: list[str] = []
    while len(got) < count:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError(f"only {got} of {count} notify messages arrived")
        message = await channel.get_message(
            ignore_subscribe_messages=True, timeout=min(remaining, 0.5)
        )
        if message is not None:
            got.append(message["data"])
    return got


# -- register_workflow ------------------------------------------------------------------


async def test_register_workflow_versions(lua: Lua) -> None:
    store = lua.store
    name = lua.new_name("wf")
    key = store.keys.workflow(name)

    assert await store.register_workflow(name, "digest-a", '{"v":"a"}') == (1, True)
    assert await lua.client.hgetall(key) == {
        "latest": "1",
        "v:1": '{"v":"a"}',
        "d:digest-a": "1",
    }
    assert name in await store.workflow_names()

    # The same digest is the same version, whatever the source text says.
    assert await store.register_workflow(name, "digest-a", '{"v":"other"}') == (1, False)
    assert await lua.client.hget(key, "latest") == "1"
    assert await lua.client.hget(key, "v:1") == '{"v":"a"}'

    assert await store.register_workflow(name, "digest-b", '{"v":"b"}') == (2, True)
    assert await store.workflow_source(name, None) == (2, '{"v":"b"}')
    assert await store.workflow_source(name, 1) == (1, '{"v":"a"}')
    assert await store.workflow_versions(name) == 2
    # An older digest still names its own version and creates nothing.
    assert await store.register_workflow(name, "digest-a", '{"v":"a"}') == (1, False)
    assert await store.workflow_versions(name) == 2
    assert (await store.workflow_names()).count(name) == 1


# -- start --------------------------------------------------------------------------------


async def test_start_creates_run_indexes_history_and_queued_task(lua: Lua) -> None:
    queue = lua.new_name()
    name = lua.new_name("wf")
    flow = lua.new_flow()
    before = await lua.now()
    created = await lua.store.start_run(
        flow, name, 7, '{"x":[1,2]}', "idem-1", "", [user(4, queue, '{"arg":5}')]
    )
    after = await lua.now()
    assert created is True

    run = await lua.run(flow)
    created_at = int(run["createdAt"])
    assert before <= created_at <= after
    assert run == {
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
        "a:4:s": "QUEUED",
        "a:4:n": "1",
        "a:4:x": "1",
    }
    partition = lua.partition(flow)
    assert await lua.client.zscore(lua.keys.runs_index(partition), flow) == created_at
    assert await lua.client.zscore(lua.keys.runs_by_name(partition, name), flow) == created_at
    assert await lua.store.newest_runs(name, 5) == [(flow, created_at)]

    assert await lua.queue(flow, queue) == [task_id(flow, 1, 1)]
    history = await lua.history(flow)
    assert history == [
        {"event": "RUN_STARTED", "name": name, "version": 7, "at": created_at},
        {"event": "QUEUED", "action": 4, "seq": 1, "name": queue, "at": created_at},
    ]
    # A running run keeps its keys.
    assert await lua.ttl(lua.run_keys(flow).run) == -1
    assert await lua.ttl(lua.run_keys(flow).history) == -1


async def test_start_existing_id_is_refused_and_changes_nothing(lua: Lua) -> None:
    queue = lua.new_name()
    flow = await lua.start([user(1, queue)], input_json='{"first":true}')
    run_before = await lua.run(flow)
    history_before = await lua.history(flow)

    again = await lua.store.start_run(
        flow, "wf", 3, '{"second":true}', "", "", [user(1, queue), sleep(2, 1000)]
    )

    assert again is False
    assert await lua.run(flow) == run_before
    assert await lua.history(flow) == history_before
    assert await lua.queue(flow, queue) == [task_id(flow, 1, 1)]
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
    assert (run["a:1:s"], run["a:1:o"], run["a:1:x"]) == ("COMPLETED", '{"v":1}', "1")
    assert "a:1:e" not in run
    assert (run["x:2:a"], run["x:2:s"]) == ("2", "FAILED")
    assert run["a:2:s"] == "FAILED"
    assert run["a:2:e"] == "boom"
    assert json.loads(run["a:2:o"]) == {"error": "boom"}
    assert run["x:3:s"] == "QUEUED"

    history = await lua.history(flow)
    assert events_of(history) == ["RUN_STARTED", "COMPLETED", "FAILED", "WARNING", "QUEUED"]
    assert history[1]["branch"] == "yes"
    assert (history[1]["action"], history[1]["seq"]) == (1, 1)
    assert (history[2]["error"], history[2]["seq"]) == ("boom", 2)
    assert (history[3]["action"], history[3]["detail"]) == (5, "watch out")


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
    assert await lua.store.send_event(flow, event, '{"n":1}') == "buffered"
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
    assert [task.task_id for task in await lua.poll(flow, queue)] == [
        task_id(flow, 1, 1),
        task_id(flow, 2, 1),
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
    assert (run["status"], run["seq"], run["x:3:s"], run["a:3:o"]) == (
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
    assert history[-1] == {"event": "RUN_FAILED", "reason": "bad input", "at": run["finishedAt"]}
    assert 0 < await lua.ttl(lua.run_keys(flow).run) <= RETENTION
    # The task was queued before the run failed; no worker ever gets it.
    assert await lua.queue(flow, queue) == [task_id(flow, 1, 1)]
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
    assert await lua.store.send_event(flow, other, "1") == "buffered"
    assert await lua.store.terminate(flow, "stop") == "ok"
    keys = lua.run_keys(flow)
    for key in (keys.run, keys.history, keys.events, keys.waiters):
        assert RETENTION - 5 <= await lua.ttl(key) <= RETENTION, key


# -- poll ---------------------------------------------------------------------------------


async def test_poll_leases_queued_tasks_up_to_most(lua: Lua) -> None:
    queue = lua.new_name()
    flow = await lua.start([user(1, queue, '{"i":1}'), user(2, queue, '{"i":2}'), user(5, queue)])

    before = await lua.now()
    first = await lua.store.poll(lua.partition(flow), [(queue, 7000)], 2, "worker-a")
    after = await lua.now()
    assert first == [
        LeasedTask(task_id(flow, 1, 1), flow, 1, 1, '{"i":1}'),
        LeasedTask(task_id(flow, 2, 1), flow, 2, 1, '{"i":2}'),
    ]
    run = await lua.run(flow)
    for seq, aid in ((1, 1), (2, 2)):
        assert (run[f"x:{seq}:s"], run[f"x:{seq}:w"], run[f"a:{aid}:s"]) == (
            "RUNNING",
            "worker-a",
            "RUNNING",
        )
        lease = await lua.score(flow, member("lease", flow, seq, 1))
        assert lease is not None
        assert before + 7000 <= lease <= after + 7000
    assert run["x:3:s"] == "QUEUED"
    assert await lua.score(flow, member("lease", flow, 3, 1)) is None
    assert await lua.queue(flow, queue) == [task_id(flow, 3, 1)]
    running = [entry for entry in await lua.history(flow) if entry["event"] == "RUNNING"]
    assert [(e["action"], e["seq"], e["attempt"], e["worker"]) for e in running] == [
        (1, 1, 1, "worker-a"),
        (2, 2, 1, "worker-a"),
    ]

    second = await lua.poll(flow, queue, most=5)
    assert [task.task_id for task in second] == [task_id(flow, 3, 1)]
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
        lua.partition(flow), [(first_queue, 1000), (second_queue, 50_000)], 3, "w"
    )
    after = await lua.now()

    assert [task.task_id for task in tasks] == [task_id(flow, seq, 1) for seq in (1, 2, 3)]
    for seq, lease_ms in ((1, 1000), (2, 1000), (3, 50_000)):
        due = await lua.score(flow, member("lease", flow, seq, 1))
        assert due is not None
        assert before + lease_ms <= due <= after + lease_ms, seq
    assert await lua.queue(flow, second_queue) == [task_id(flow, 4, 1)]


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
    assert await lua.store.terminate(terminated, "stop") == "ok"

    tasks = await lua.poll(live, queue)

    assert [task.task_id for task in tasks] == [task_id(live, 1, 1)]
    assert await lua.queue(live, queue) == []
    assert (await lua.run(terminated))["x:1:s"] == "FAILED"
    assert await lua.score(terminated, member("lease", terminated, 1, 1)) is None
    assert await lua.score(failing, member("lease", failing, 1, 1)) is None


async def test_poll_drops_stale_entries(lua: Lua) -> None:
    queue, other = lua.new_name(), lua.new_name()
    flow = await lua.start([user(1, other)])
    ghost = lua.new_flow()
    await lua.client.rpush(
        lua.queue_key(flow, queue),
        task_id(flow, 1, 2),  # an attempt that does not exist
        task_id(flow, 9, 1),  # an execution that does not exist
        task_id(ghost, 1, 1),  # a run that does not exist
        task_id(flow, 1, 1),  # the real one
        task_id(flow, 1, 1),  # the same again: RUNNING by now
    )

    tasks = await lua.poll(flow, queue)

    assert [task.task_id for task in tasks] == [task_id(flow, 1, 1)]
    assert await lua.queue(flow, queue) == []
    # Its own queue's entry is now stale too.
    assert await lua.poll(flow, other) == []
    assert await lua.queue(flow, other) == []
    run = await lua.run(flow)
    assert (run["x:1:s"], run["x:1:n"], run["active"]) == ("RUNNING", "1", "1")
    assert "x:9:s" not in run


# -- transition ---------------------------------------------------------------------------


async def test_transition_completes_execution_and_the_run(lua: Lua) -> None:
    queue = lua.new_name()
    flow = await lua.start([user(1, queue)])
    await lua.poll(flow, queue)
    lease = member("lease", flow, 1, 1)
    assert await lua.score(flow, lease) is not None

    assert await lua.complete(flow, 1, output='{"r":42}') == "ok"

    run = await lua.run(flow)
    assert (run["x:1:s"], run["a:1:s"], run["a:1:o"], run["x:1:e"]) == (
        "COMPLETED",
        "COMPLETED",
        '{"r":42}',
        "",
    )
    assert (run["active"], run["status"]) == ("0", "COMPLETED")
    assert "x:1:held" not in run
    assert await lua.score(flow, lease) is None
    history = await lua.history(flow)
    assert events_of(history)[-2:] == ["COMPLETED", "RUN_COMPLETED"]
    assert (history[-2]["seq"], history[-2]["branch"], history[-2]["action"]) == (1, "default", 1)


async def test_transition_applies_ops_to_their_queues(lua: Lua) -> None:
    queue, left, right = lua.new_name(), lua.new_name(), lua.new_name()
    flow = await lua.start([user(1, queue)])
    await lua.poll(flow, queue)

    answer = await lua.complete(flow, 1, ops=[user(2, left, '"L"'), user(3, right, '"R"')])

    assert answer == "ok"
    assert await lua.queue(flow, left) == [task_id(flow, 2, 1)]
    assert await lua.queue(flow, right) == [task_id(flow, 3, 1)]
    run = await lua.run(flow)
    assert (run["status"], run["active"], run["x:2:in"], run["x:3:q"]) == (
        "RUNNING",
        "2",
        '"L"',
        right,
    )


async def test_transition_stale_guard_changes_nothing(lua: Lua) -> None:
    queue = lua.new_name()
    flow = await lua.start([user(1, queue)])
    await lua.poll(flow, queue)
    run_before = await lua.run(flow)
    history_before = await lua.history(flow)
    lease = member("lease", flow, 1, 1)
    lease_due = await lua.score(flow, lease)

    wrong_attempt = await lua.complete(flow, 1, attempt=2)
    wrong_status = await lua.store.transition(
        flow, 1, "WAITING", 1, Outcome("COMPLETED", "{}"), timer_member=""
    )
    no_such_exec = await lua.complete(flow, 8)

    assert (wrong_attempt, wrong_status, no_such_exec) == ("stale", "stale", "stale")
    assert await lua.run(flow) == run_before
    assert await lua.history(flow) == history_before
    assert await lua.score(flow, lease) == lease_due


async def test_transition_duplicate_completion_is_stale(lua: Lua) -> None:
    queue, next_queue = lua.new_name(), lua.new_name()
    flow = await lua.start([user(1, queue), sleep(2, 60_000)])
    await lua.poll(flow, queue)
    assert await lua.complete(flow, 1, output='{"first":1}') == "ok"
    run_before = await lua.run(flow)

    again = await lua.complete(flow, 1, output='{"second":2}', ops=[user(3, next_queue)])

    assert again == "stale"
    assert await lua.run(flow) == run_before
    assert run_before["a:1:o"] == '{"first":1}'
    assert await lua.queue(flow, next_queue) == []


async def test_transition_on_ended_run_is_terminal_and_drops_the_timer(lua: Lua) -> None:
    queue = lua.new_name()
    flow = await lua.start([user(1, queue), sleep(2, 60_000)])
    await lua.poll(flow, queue)
    assert await lua.store.terminate(flow, "stop") == "ok"
    # Terminate leaves the run's timers; whoever handles them removes them.
    lease, fire = member("lease", flow, 1, 1), member("fire", flow, 2, 1)
    assert await lua.score(flow, lease) is not None
    assert await lua.score(flow, fire) is not None
    run_before = await lua.run(flow)

    assert await lua.complete(flow, 1) == "terminal"
    assert await lua.finish_waiting(flow, 2, "fire", 1) == "terminal"

    assert await lua.score(flow, lease) is None
    assert await lua.score(flow, fire) is None
    assert await lua.run(flow) == run_before


async def test_transition_of_missing_run_drops_the_timer(lua: Lua) -> None:
    ghost = lua.new_flow()
    timer = member("fire", ghost, 1, 1)
    await lua.client.zadd(lua.timers_key(ghost), {timer: 1})

    answer = await lua.store.transition(
        ghost, 1, "", 1, Outcome(""), timer_member=timer, held_member=timer
    )

    assert answer == "missing"
    assert await lua.score(ghost, timer) is None
    assert await lua.client.exists(lua.run_keys(ghost).run) == 0
    assert await lua.client.exists(lua.run_keys(ghost).history) == 0


async def test_transition_retry_requeues_after_the_delay(lua: Lua) -> None:
    queue = lua.new_name()
    flow = await lua.start([user(1, queue)])
    await lua.poll(flow, queue)

    before = await lua.now()
    answer = await lua.store.transition(
        flow,
        1,
        "RUNNING",
        1,
        Outcome("QUEUED", error="flaky", retry_delay_ms=2500),
        timer_member=member("lease", flow, 1, 1),
        held_member=member("res", flow, 1, 1),
    )
    after = await lua.now()

    assert answer == "ok"
    run = await lua.run(flow)
    assert (run["x:1:s"], run["x:1:n"], run["x:1:e"]) == ("QUEUED", "2", "flaky")
    assert (run["a:1:s"], run["a:1:n"], run["a:1:e"]) == ("QUEUED", "2", "flaky")
    assert (run["status"], run["active"]) == ("RUNNING", "1")
    enq = member("enq", flow, 1, 2)
    due = await lua.score(flow, enq)
    assert due is not None
    assert before + 2500 <= due <= after + 2500
    assert await lua.score(flow, member("lease", flow, 1, 1)) is None
    assert await lua.queue(flow, queue) == []
    retry = (await lua.history(flow))[-1]
    assert (retry["event"], retry["attempt"], retry["error"], retry["delayMs"]) == (
        "RETRY_SCHEDULED",
        2,
        "flaky",
        2500,
    )
    # The first attempt's result is stale now.
    assert await lua.complete(flow, 1, attempt=1) == "stale"


async def test_transition_fail_reason_fails_run_and_closes_open_executions(lua: Lua) -> None:
    queue = lua.new_name()
    event = lua.new_name("ev")
    flow = await lua.start([user(1, queue), user(2, queue), sleep(3, 60_000), wait(4, event)])
    await lua.poll(flow, queue, most=1)

    answer = await lua.fail(flow, 1, "broken", fail_reason="action 1 failed")

    assert answer == "ok"
    run = await lua.run(flow)
    assert (run["status"], run["reason"], run["active"], run["joins"]) == (
        "FAILED",
        "action 1 failed",
        "0",
        "",
    )
    assert (run["x:1:s"], run["x:1:e"], run["a:1:e"]) == ("FAILED", "broken", "broken")
    for seq in (2, 3, 4):
        assert (run[f"x:{seq}:s"], run[f"x:{seq}:e"]) == ("FAILED", "action 1 failed"), seq
        assert run[f"a:{seq}:s"] == "FAILED"
        assert run[f"a:{seq}:e"] == "action 1 failed"
    assert 0 < await lua.ttl(lua.run_keys(flow).run) <= RETENTION
    assert (await lua.history(flow))[-1]["event"] == "RUN_FAILED"


async def test_transition_on_paused_run_holds_the_result(lua: Lua) -> None:
    queue = lua.new_name()
    flow = await lua.start([user(1, queue)])
    await lua.poll(flow, queue)
    assert await lua.store.pause(flow) == "ok"
    lease, result = member("lease", flow, 1, 1), member("res", flow, 1, 1)

    assert await lua.complete(flow, 1, output='{"r":1}') == "held"

    run = await lua.run(flow)
    assert json.loads(run["x:1:held"]) == {"output": {"r": 1}}
    assert (run["x:1:s"], run["status"], run["active"]) == ("RUNNING", "PAUSED", "1")
    assert "a:1:o" not in run
    assert await lua.held(flow) == {result}
    assert await lua.score(flow, lease) is None
    assert (await lua.history(flow))[-1]["event"] == "HELD"
    # A second result for the same attempt is refused and replaces nothing.
    assert await lua.complete(flow, 1, output='{"r":2}') == "stale"
    assert json.loads((await lua.run(flow))["x:1:held"]) == {"output": {"r": 1}}
    assert await lua.held(flow) == {result}
    # So is a heartbeat.
    assert await lua.store.heartbeat(flow, 1, 1, LEASE_MS, lease) == "stale"

    # Resume makes it due; the replay (held member "") applies it.
    assert await lua.store.resume(flow) == "ok"
    assert await lua.score(flow, result) is not None
    replay = await lua.store.transition(
        flow,
        1,
        "RUNNING",
        1,
        Outcome("COMPLETED", '{"r":1}', branch="default"),
        timer_member=result,
    )
    assert replay == "ok"
    run = await lua.run(flow)
    assert (run["status"], run["x:1:s"], run["a:1:o"]) == ("COMPLETED", "COMPLETED", '{"r":1}')
    assert "x:1:held" not in run
    assert await lua.score(flow, result) is None


async def test_transition_holds_a_fired_timer_of_a_paused_run(lua: Lua) -> None:
    flow = await lua.start([sleep(1, 0)])
    fire = member("fire", flow, 1, 1)
    assert await lua.store.pause(flow) == "ok"

    assert await lua.finish_waiting(flow, 1, "fire", 1) == "held"

    assert await lua.held(flow) == {fire}
    assert await lua.score(flow, fire) is None
    run = await lua.run(flow)
    assert (run["x:1:s"], run["status"]) == ("WAITING", "PAUSED")
    assert "x:1:held" not in run


# -- requeue ------------------------------------------------------------------------------


async def retried(lua: Lua, queue: str) -> str:
    """A run whose action 1 failed once and waits for its second attempt."""
    flow = await lua.start([user(1, queue)])
    await lua.poll(flow, queue)
    answer = await lua.store.transition(
        flow,
        1,
        "RUNNING",
        1,
        Outcome("QUEUED", error="e", retry_delay_ms=0),
        timer_member=member("lease", flow, 1, 1),
    )
    assert answer == "ok"
    return flow


async def test_requeue_puts_the_next_attempt_on_the_queue(lua: Lua, pubsub: Any) -> None:
    queue = lua.new_name()
    flow = await retried(lua, queue)
    partition = lua.partition(flow)
    # start's queue message, then the lease timer and the enq timer (each the earliest).
    earlier = await messages(pubsub, 3)
    assert earlier[0] == f"q|{partition}|{queue}"
    assert [text.split("|")[:2] for text in earlier[1:]] == [["t", str(partition)]] * 2
    enq = member("enq", flow, 1, 2)
    assert await lua.score(flow, enq) is not None

    assert await lua.store.requeue(flow, 1, 2, enq, queue) == "ok"

    assert await lua.queue(flow, queue) == [task_id(flow, 1, 2)]
    assert await lua.score(flow, enq) is None
    assert await messages(pubsub, 1) == [f"q|{partition}|{queue}"]
    assert (await lua.history(flow))[-1]["event"] == "QUEUED"
    assert (await lua.history(flow))[-1]["attempt"] == 2
    tasks = await lua.poll(flow, queue)
    assert [(task.task_id, task.attempt) for task in tasks] == [(task_id(flow, 1, 2), 2)]
    assert await lua.score(flow, member("lease", flow, 1, 2)) is not None
    # Once leased, the same enq timer handled again is stale and queues nothing.
    assert await lua.store.requeue(flow, 1, 2, enq, queue) == "stale"
    assert await lua.queue(flow, queue) == []


async def test_requeue_of_a_stale_attempt_is_refused(lua: Lua) -> None:
    queue = lua.new_name()
    flow = await retried(lua, queue)
    old = member("enq", flow, 1, 1)
    await lua.client.zadd(lua.timers_key(flow), {old: 1})
    run_before = await lua.run(flow)

    assert await lua.store.requeue(flow, 1, 1, old, queue) == "stale"
    assert await lua.store.requeue(flow, 5, 1, member("enq", flow, 5, 1), queue) == "stale"

    assert await lua.queue(flow, queue) == []
    assert await lua.score(flow, old) is None
    assert await lua.run(flow) == run_before
    # The current attempt's timer is untouched.
    assert await lua.score(flow, member("enq", flow, 1, 2)) is not None


async def test_requeue_of_a_paused_run_is_held(lua: Lua) -> None:
    queue = lua.new_name()
    flow = await retried(lua, queue)
    enq = member("enq", flow, 1, 2)
    assert await lua.store.pause(flow) == "ok"

    assert await lua.store.requeue(flow, 1, 2, enq, queue) == "held"

    assert await lua.held(flow) == {enq}
    assert await lua.score(flow, enq) is None
    assert await lua.queue(flow, queue) == []
    assert await lua.store.resume(flow) == "ok"
    assert await lua.score(flow, enq) is not None
    assert await lua.store.requeue(flow, 1, 2, enq, queue) == "ok"
    assert await lua.queue(flow, queue) == [task_id(flow, 1, 2)]


async def test_requeue_of_ended_or_missing_run(lua: Lua) -> None:
    queue = lua.new_name()
    flow = await retried(lua, queue)
    enq = member("enq", flow, 1, 2)
    assert await lua.store.terminate(flow, "stop") == "ok"
    assert await lua.store.requeue(flow, 1, 2, enq, queue) == "terminal"
    assert await lua.score(flow, enq) is None
    assert await lua.queue(flow, queue) == []

    ghost = lua.new_flow()
    ghost_enq = member("enq", ghost, 1, 2)
    await lua.client.zadd(lua.timers_key(ghost), {ghost_enq: 1})
    assert await lua.store.requeue(ghost, 1, 2, ghost_enq, queue) == "missing"
    assert await lua.score(ghost, ghost_enq) is None
    assert await lua.queue(ghost, queue) == []


# -- heartbeat ----------------------------------------------------------------------------


async def test_heartbeat_extends_the_lease(lua: Lua) -> None:
    queue = lua.new_name()
    flow = await lua.start([user(1, queue), user(2, queue)])
    await lua.poll(flow, queue, most=1, lease_ms=1000)
    lease = member("lease", flow, 1, 1)
    first = await lua.score(flow, lease)
    assert first is not None

    before = await lua.now()
    assert await lua.store.heartbeat(flow, 1, 1, 90_000, lease) == "ok"
    after = await lua.now()

    later = await lua.score(flow, lease)
    assert later is not None
    assert before + 90_000 <= later <= after + 90_000
    assert later > first
    # Not this attempt, or not running: nothing moves.
    assert await lua.store.heartbeat(flow, 1, 2, 500_000, member("lease", flow, 1, 2)) == "stale"
    assert await lua.store.heartbeat(flow, 2, 1, 500_000, member("lease", flow, 2, 1)) == "stale"
    assert await lua.store.heartbeat(flow, 9, 1, 500_000, lease) == "stale"
    assert await lua.score(flow, lease) == later
    assert await lua.score(flow, member("lease", flow, 1, 2)) is None
    assert await lua.score(flow, member("lease", flow, 2, 1)) is None


async def test_heartbeat_of_ended_or_missing_run(lua: Lua) -> None:
    queue = lua.new_name()
    flow = await lua.start([user(1, queue)])
    await lua.poll(flow, queue)
    lease = member("lease", flow, 1, 1)
    due = await lua.score(flow, lease)
    assert await lua.store.terminate(flow, "stop") == "ok"

    assert await lua.store.heartbeat(flow, 1, 1, 500_000, lease) == "terminal"
    assert await lua.score(flow, lease) == due
    ghost = lua.new_flow()
    assert await lua.store.heartbeat(ghost, 1, 1, 500_000, member("lease", ghost, 1, 1)) == (
        "missing"
    )
    assert await lua.score(ghost, member("lease", ghost, 1, 1)) is None


# -- event --------------------------------------------------------------------------------


async def test_event_is_delivered_to_the_oldest_waiter(lua: Lua) -> None:
    event = lua.new_name("ev")
    flow = await lua.start([wait(1, event, 60_000), wait(2, event, 60_000)])
    assert await lua.waiters(flow) == [f"1|{event}", f"2|{event}"]

    before = await lua.now()
    assert await lua.store.send_event(flow, event, '{"k":"first"}') == "delivered"
    after = await lua.now()

    run = await lua.run(flow)
    assert (run["x:1:evn"], run["x:1:evd"], run["x:1:n"]) == (event, '{"k":"first"}', "2")
    assert "x:2:evn" not in run
    assert run["x:2:n"] == "1"
    assert before <= int(run["updatedAt"]) <= after
    assert await lua.score(flow, member("wto", flow, 1, 1)) is None
    step = await lua.score(flow, member("step", flow, 1, 2))
    assert step is not None
    assert before <= step <= after
    assert await lua.score(flow, member("wto", flow, 2, 1)) is not None
    assert await lua.waiters(flow) == [f"2|{event}"]
    received = (await lua.history(flow))[-1]
    assert (received["event"], received["name"], received["seq"]) == ("EVENT_RECEIVED", event, 1)

    assert await lua.store.send_event(flow, event, '{"k":"second"}') == "delivered"
    run = await lua.run(flow)
    assert (run["x:2:evd"], run["x:2:n"]) == ('{"k":"second"}', "2")
    assert await lua.score(flow, member("wto", flow, 2, 1)) is None
    assert await lua.score(flow, member("step", flow, 2, 2)) is not None
    assert await lua.waiters(flow) == []
    assert await lua.events(flow) == []

    # The step timer completes the wait; its timeout timer would now be stale.
    assert await lua.finish_waiting(flow, 1, "step", 2, '{"k":"first"}') == "ok"
    assert await lua.finish_waiting(flow, 1, "wto", 1) == "stale"
    assert (await lua.run(flow))["a:1:o"] == '{"k":"first"}'


async def test_events_are_buffered_and_consumed_in_order(lua: Lua) -> None:
    queue = lua.new_name()
    event = lua.new_name("ev")
    flow = await lua.start([user(1, queue)])
    assert await lua.store.send_event(flow, event, '"one"') == "buffered"
    assert await lua.store.send_event(flow, event, '"two"') == "buffered"
    assert await lua.store.send_event(flow, event, '"three"') == "buffered"
    assert [json.loads(entry) for entry in await lua.events(flow)] == [
        {"n": event, "d": '"one"'},
        {"n": event, "d": '"two"'},
        {"n": event, "d": '"three"'},
    ]
    buffered = [e for e in await lua.history(flow) if e["event"] == "EVENT_BUFFERED"]
    assert [e["name"] for e in buffered] == [event] * 3
    await lua.poll(flow, queue)

    assert await lua.complete(flow, 1, ops=[wait(2, event), wait(3, event)]) == "ok"

    run = await lua.run(flow)
    assert (run["x:2:evd"], run["x:3:evd"]) == ('"one"', '"two"')
    assert [json.loads(entry)["d"] for entry in await lua.events(flow)] == ['"three"']
    assert await lua.waiters(flow) == []


async def test_waiters_of_different_events_are_independent(lua: Lua) -> None:
    left, right, nobody = lua.new_name("ev"), lua.new_name("ev"), lua.new_name("ev")
    flow = await lua.start([wait(1, left, 60_000), wait(2, right, 60_000)])

    assert await lua.store.send_event(flow, right, "2") == "delivered"
    assert await lua.store.send_event(flow, nobody, "3") == "buffered"

    run = await lua.run(flow)
    assert (run["x:2:evn"], run["x:2:evd"]) == (right, "2")
    assert "x:1:evn" not in run
    assert await lua.waiters(flow) == [f"1|{left}"]
    assert await lua.score(flow, member("wto", flow, 1, 1)) is not None
    assert await lua.score(flow, member("step", flow, 1, 2)) is None
    assert [json.loads(entry)["n"] for entry in await lua.events(flow)] == [nobody]

    assert await lua.store.send_event(flow, left, "1") == "delivered"
    assert (await lua.run(flow))["x:1:evd"] == "1"
    assert await lua.waiters(flow) == []


async def test_event_of_ended_or_missing_run(lua: Lua) -> None:
    event = lua.new_name("ev")
    flow = await lua.start([wait(1, event)])
    assert await lua.store.terminate(flow, "stop") == "ok"
    run_before = await lua.run(flow)

    assert await lua.store.send_event(flow, event, "1") == "terminal"
    assert await lua.run(flow) == run_before
    assert await lua.events(flow) == []
    ghost = lua.new_flow()
    assert await lua.store.send_event(ghost, event, "1") == "missing"
    assert await lua.client.exists(lua.run_keys(ghost).events) == 0
    assert await lua.client.exists(lua.run_keys(ghost).run) == 0


async def test_event_to_a_paused_run_is_delivered_and_its_step_held(lua: Lua) -> None:
    event = lua.new_name("ev")
    flow = await lua.start([wait(1, event)])
    assert await lua.store.pause(flow) == "ok"

    assert await lua.store.send_event(flow, event, '"x"') == "delivered"
    assert await lua.finish_waiting(flow, 1, "step", 2) == "held"

    assert await lua.held(flow) == {member("step", flow, 1, 2)}
    assert (await lua.run(flow))["x:1:s"] == "WAITING"


# -- claim_timers -------------------------------------------------------------------------


async def test_claim_timers_claims_due_members(lua: Lua) -> None:
    partition = 0
    key = lua.keys.timers(partition)
    now = await lua.now()
    await lua.client.zadd(
        key, {"fire|a|1|1": now - 2000, "fire|b|1|1": now - 1000, "fire|c|1|1": now + 60_000}
    )

    claim = await lua.store.claim_timers(partition, 10, 30_000)

    assert now <= claim.now_ms <= await lua.now()
    assert claim.due == [("fire|a|1|1", now - 2000), ("fire|b|1|1", now - 1000)]
    assert claim.next_due_ms == claim.now_ms + 30_000
    assert await lua.client.zscore(key, "fire|a|1|1") == claim.now_ms + 30_000
    assert await lua.client.zscore(key, "fire|b|1|1") == claim.now_ms + 30_000
    assert await lua.client.zscore(key, "fire|c|1|1") == now + 60_000

    again = await lua.store.claim_timers(partition, 10, 30_000)
    assert again.due == []
    assert again.next_due_ms == claim.now_ms + 30_000


async def test_claim_timers_respects_most_and_reports_next_due(lua: Lua) -> None:
    partition = 1
    key = lua.keys.timers(partition)
    now = await lua.now()
    await lua.client.zadd(key, {"step|a|1|2": now - 30, "step|b|1|2": now - 20})
    await lua.client.zadd(key, {"step|c|1|2": now - 10, "wto|d|1|1": now + 5000})

    claim = await lua.store.claim_timers(partition, 2, 60_000)

    assert [name for name, _ in claim.due] == ["step|a|1|2", "step|b|1|2"]
    # The third due member was left for the next claim, and is the next due.
    assert claim.next_due_ms == now - 10
    assert await lua.client.zscore(key, "step|c|1|2") == now - 10
    rest = await lua.store.claim_timers(partition, 2, 60_000)
    assert rest.due == [("step|c|1|2", now - 10)]
    assert rest.next_due_ms == now + 5000


async def test_claim_timers_of_an_empty_partition(lua: Lua) -> None:
    claim = await lua.store.claim_timers(2, 10, 1000)
    assert claim.due == []
    assert claim.next_due_ms is None
    assert claim.now_ms > 0


# -- pause / resume / terminate -----------------------------------------------------------


async def test_pause_and_its_refusals(lua: Lua) -> None:
    queue = lua.new_name()
    flow = await lua.start([user(1, queue)])

    before = await lua.now()
    assert await lua.store.pause(flow) == "ok"
    run = await lua.run(flow)
    assert run["status"] == "PAUSED"
    assert before <= int(run["updatedAt"])
    assert (await lua.history(flow))[-1]["event"] == "RUN_PAUSED"

    assert await lua.store.pause(flow) == "not_running"
    assert await lua.store.terminate(flow, "stop") == "ok"
    assert await lua.store.pause(flow) == "not_running"
    assert (await lua.run(flow))["status"] == "TERMINATED"
    completed = await lua.start([])
    assert await lua.store.pause(completed) == "not_running"
    assert await lua.store.pause(lua.new_flow()) == "missing"


async def test_resume_releases_everything_held(lua: Lua) -> None:
    queue = lua.new_name()
    flow = await lua.start([user(1, queue), user(2, queue), sleep(3, 0)])
    await lua.poll(flow, queue)
    # Action 2 fails once: its retry waits on an enq timer.
    retry = await lua.store.transition(
        flow,
        2,
        "RUNNING",
        1,
        Outcome("QUEUED", error="e"),
        timer_member=member("lease", flow, 2, 1),
    )
    assert retry == "ok"
    assert await lua.store.resume(flow) == "not_paused"
    assert await lua.store.pause(flow) == "ok"
    assert await lua.complete(flow, 1) == "held"
    assert await lua.store.requeue(flow, 2, 2, member("enq", flow, 2, 2), queue) == "held"
    assert await lua.finish_waiting(flow, 3, "fire", 1) == "held"
    held = {member("res", flow, 1, 1), member("enq", flow, 2, 2), member("fire", flow, 3, 1)}
    assert await lua.held(flow) == held
    for timer in held:
        assert await lua.score(flow, timer) is None

    before = await lua.now()
    assert await lua.store.resume(flow) == "ok"
    after = await lua.now()

    run = await lua.run(flow)
    assert run["status"] == "RUNNING"
    assert before <= int(run["updatedAt"]) <= after
    for timer in held:
        due = await lua.score(flow, timer)
        assert due is not None, timer
        assert before <= due <= after, timer
    assert await lua.client.exists(lua.run_keys(flow).held) == 0
    resumed = (await lua.history(flow))[-1]
    assert (resumed["event"], resumed["released"]) == ("RUN_RESUMED", 3)
    assert await lua.store.resume(flow) == "not_paused"
    assert await lua.store.resume(lua.new_flow()) == "missing"


async def test_terminate_closes_open_executions_and_hides_queued_tasks(lua: Lua) -> None:
    queue = lua.new_name()
    event = lua.new_name("ev")
    flow = await lua.start(
        [done(1), user(2, queue), user(3, queue), sleep(4, 60_000), wait(5, event, 60_000)]
    )
    await lua.poll(flow, queue, most=1)

    before = await lua.now()
    assert await lua.store.terminate(flow, "stopped by test") == "ok"
    after = await lua.now()

    run = await lua.run(flow)
    assert (run["status"], run["reason"], run["active"], run["joins"]) == (
        "TERMINATED",
        "stopped by test",
        "0",
        "",
    )
    assert before <= int(run["finishedAt"]) <= after
    assert run["x:1:s"] == "COMPLETED"
    assert "x:1:e" not in run
    for seq in (2, 3, 4, 5):
        assert (run[f"x:{seq}:s"], run[f"x:{seq}:e"]) == ("FAILED", "stopped by test"), seq
        assert run[f"a:{seq}:e"] == "stopped by test"
    ended = (await lua.history(flow))[-1]
    assert (ended["event"], ended["reason"]) == ("RUN_TERMINATED", "stopped by test")
    assert 0 < await lua.ttl(lua.run_keys(flow).run) <= RETENTION

    assert await lua.queue(flow, queue) == [task_id(flow, 3, 1)]
    assert await lua.poll(flow, queue) == []
    assert await lua.queue(flow, queue) == []
    assert (await lua.run(flow))["x:3:s"] == "FAILED"

    assert await lua.store.terminate(flow, "again") == "terminal"
    assert (await lua.run(flow))["reason"] == "stopped by test"
    assert await lua.store.terminate(lua.new_flow(), "x") == "missing"


async def test_terminate_a_paused_run(lua: Lua) -> None:
    queue = lua.new_name()
    flow = await lua.start([user(1, queue)])
    await lua.poll(flow, queue)
    assert await lua.store.pause(flow) == "ok"
    assert await lua.complete(flow, 1) == "held"

    assert await lua.store.terminate(flow, "stop") == "ok"

    run = await lua.run(flow)
    assert (run["status"], run["x:1:s"]) == ("TERMINATED", "FAILED")
    assert await lua.store.resume(flow) == "not_paused"
    assert 0 < await lua.ttl(lua.run_keys(flow).held) <= RETENTION


# -- keys ---------------------------------------------------------------------------------


@pytest.mark.parametrize("partitions", [1, 4, 16])
def test_every_key_of_a_run_is_on_one_cluster_slot(partitions: int) -> None:
    keys = Keys(partitions)
    for _ in range(20):
        flow = uuid.uuid4().hex
        partition = keys.partition_of(flow)
        run_keys = [
            *keys.run(flow).as_list(),
            keys.queue(partition, "some-action"),
            keys.timers(partition),
            keys.runs_index(partition),
            keys.runs_by_name(partition, "some-workflow"),
            keys.run_prefix(partition) + flow,
            keys.history_prefix(partition) + flow,
        ]
        slots = {key_slot(key.encode()) for key in run_keys}
        assert len(slots) == 1, run_keys
        assert keys.run(flow).run == keys.run_prefix(partition) + flow
        assert keys.run(flow).history == keys.history_prefix(partition) + flow
    meta = [keys.workflow("w"), keys.workflow_names, keys.actions, keys.config]
    assert len({key_slot(key.encode()) for key in meta}) == 1
