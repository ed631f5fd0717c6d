"""The correlated events' scripts (correlate_*.lua) and the correlated wait op of
common.lua, driven through CorrelationStore on the harness of tests/helpers/lua.py; then
the hand-offs between them run twice and out of order, as a server that dies between them
leaves them, each run still getting the event once."""

from __future__ import annotations

import json

import pytest

from app.engine.correlation import Correlation
from app.engine.ids import TimerKind, TimerMember
from app.settings import Settings
from app.store.correlation import CorrelationStore, DeliveryRecord
from app.store.keys import CorrelationKeys
from app.store.store import PlannedOp
from tests.helpers.lua import RETENTION, Lua, member, user
from tests.helpers.waiting import wait_until

RETRY_MS = 10_000
GRACE_MS = 600_000


def cwait(aid: int, event: str, key: str, timeout_ms: int = -1) -> PlannedOp:
    """A correlated wait op, as the planner sends it (its payload is the key)."""
    return PlannedOp("wait", aid, event, key, number=timeout_ms)


@pytest.fixture
def corr(lua: Lua) -> CorrelationStore:
    return CorrelationStore(lua.client, lua.keys, RETENTION)


def index_of(corr: CorrelationStore, event: str, key: str) -> CorrelationKeys:
    return corr.index(event, key)


async def kept_events(lua: Lua, index: CorrelationKeys) -> dict[str, dict[str, object]]:
    fields = await lua.client.hgetall(index.events)
    return {field: json.loads(value) for field, value in fields.items() if field.isdigit()}


async def registered_waiters(
    lua: Lua, corr: CorrelationStore, event: str, seqs: list[int]
) -> list[str]:
    """New runs whose waits (of these seqs) are registered for (event, "k"), oldest first."""
    flows = [lua.new_flow() for _ in seqs]
    for flow, seq in zip(flows, seqs, strict=True):
        assert await corr.register(event, "k", flow, seq, 60_000) is None
    return flows


async def creg_due(lua: Lua, flow: str, seq: int) -> float | None:
    return await lua.score(flow, member("creg", flow, seq, 1))


# -- common.lua: the correlated wait op ---------------------------------------------------


async def test_a_correlated_wait_records_its_key_and_a_registration_timer(lua: Lua) -> None:
    event = lua.new_name("ev")
    before = await lua.now()
    flow = await lua.start([cwait(1, event, "o-1", 60_000)])
    after = await lua.now()
    run = await lua.run(flow)
    assert (run["x:1:s"], run["x:1:ev"], run["x:1:ck"]) == ("WAITING", event, "o-1")
    due = await creg_due(lua, flow, 1)
    assert due is not None and before <= due <= after
    assert await lua.score(flow, member("wto", flow, 1, 1)) is not None
    # It also waits as any wait does, for an event sent to its run by id.
    assert await lua.waiters(flow) == [f"1|{event}"]


async def test_a_plain_wait_has_no_key_and_no_registration(lua: Lua) -> None:
    event = lua.new_name("ev")
    flow = await lua.start([cwait(1, event, "")])
    assert "x:1:ck" not in await lua.run(flow)
    assert await creg_due(lua, flow, 1) is None


async def test_a_correlated_wait_takes_an_event_buffered_by_run_id_first(lua: Lua) -> None:
    event = lua.new_name("ev")
    queue = lua.new_name()
    flow = await lua.start([user(1, queue)])
    assert await lua.store.send_event(flow, event, '"by id"', by="tester") == "buffered"
    await lua.poll(flow, queue)
    assert await lua.complete(flow, 1, ops=[cwait(2, event, "k")]) == "ok"
    run = await lua.run(flow)
    assert (run["x:2:evd"], run["x:2:n"]) == ('"by id"', "2")
    assert await creg_due(lua, flow, 2) is None


# -- correlate_register.lua ---------------------------------------------------------------


async def test_register_adds_the_wait_once_in_arrival_order(
    lua: Lua, corr: CorrelationStore
) -> None:
    event = lua.new_name("ev")
    index = index_of(corr, event, "k")
    first, second = lua.new_flow(), lua.new_flow()
    assert await corr.register(event, "k", first, 3, 60_000) is None
    assert await corr.register(event, "k", second, 1, 60_000) is None
    assert await corr.register(event, "k", first, 3, 60_000) is None  # handled again
    assert await lua.client.zrange(index.waiters, 0, -1) == [f"{first}|3", f"{second}|1"]
    assert 0 < await lua.client.pttl(index.waiters) <= 60_000
    assert 0 < await lua.client.pttl(index.events) <= 60_000


async def test_register_again_keeps_the_place_and_renews_the_index(
    lua: Lua, corr: CorrelationStore
) -> None:
    event = lua.new_name("ev")
    index = index_of(corr, event, "k")
    first, second = await registered_waiters(lua, corr, event, [1, 1])
    assert await corr.register(event, "k", first, 1, 1000) is None
    assert 1000 < await lua.client.pttl(index.waiters) <= 60_000
    assert await corr.register(event, "k", first, 1, 120_000) is None
    assert 60_000 < await lua.client.pttl(index.waiters) <= 120_000
    assert 60_000 < await lua.client.pttl(index.events) <= 120_000
    assert await lua.client.zrange(index.waiters, 0, -1) == [f"{first}|1", f"{second}|1"]


async def test_register_takes_a_kept_event_once_per_run(lua: Lua, corr: CorrelationStore) -> None:
    event = lua.new_name("ev")
    index = index_of(corr, event, "k")
    published = await corr.publish(
        "d1", event, "k", '{"a":1}', 60_000, False, RETRY_MS, GRACE_MS, by="svc-a"
    )
    assert (published.done, published.kept) == (True, True)
    [(event_id, kept)] = (await kept_events(lua, index)).items()
    assert (kept["f"], kept["b"]) == (0, "svc-a")
    assert await lua.client.hget(index.events, f"d:{event_id}") == '{"a":1}'

    flow, other = lua.new_flow(), lua.new_flow()
    taken = await corr.register(event, "k", flow, 1, 60_000)
    assert taken is not None
    assert (taken.event_id, taken.data_json, taken.by) == (event_id, '{"a":1}', "svc-a")
    # Handled again: the same event again.
    assert await corr.register(event, "k", flow, 1, 60_000) == taken
    # Another run takes it too; a later wait of the same run does not.
    assert await corr.register(event, "k", other, 1, 60_000) == taken
    assert await corr.register(event, "k", flow, 2, 60_000) is None
    takers = await lua.client.hgetall(index.takers_prefix + event_id)
    assert takers == {flow: "1", other: "1"}
    assert await lua.client.zrange(index.waiters, 0, -1) == [f"{flow}|2"]


async def test_register_leaves_a_first_only_event_to_its_first_taker(
    lua: Lua, corr: CorrelationStore
) -> None:
    event = lua.new_name("ev")
    await corr.publish("d1", event, "k", '"one"', 60_000, True, RETRY_MS, GRACE_MS, by="tester")
    first, second = lua.new_flow(), lua.new_flow()
    taken = await corr.register(event, "k", first, 1, 60_000)
    assert taken is not None and taken.data_json == '"one"'
    assert await corr.register(event, "k", second, 1, 60_000) is None
    assert await corr.register(event, "k", first, 1, 60_000) == taken


async def test_register_does_not_take_an_expired_event(lua: Lua, corr: CorrelationStore) -> None:
    event = lua.new_name("ev")
    index = index_of(corr, event, "k")
    await corr.publish("d1", event, "k", '"old"', 1, False, RETRY_MS, GRACE_MS, by="tester")
    [kept] = (await kept_events(lua, index)).values()

    async def past() -> bool:
        return await lua.now() > int(str(kept["x"]))

    await wait_until(past, what="the event's TTL to pass")
    assert await corr.register(event, "k", lua.new_flow(), 1, 60_000) is None


async def test_register_drops_events_past_their_grace(lua: Lua, corr: CorrelationStore) -> None:
    event = lua.new_name("ev")
    index = index_of(corr, event, "k")
    # A long-lived event keeps the index; the short-lived one is past its grace at once.
    await corr.publish("d0", event, "k", '"young"', 60_000, False, RETRY_MS, GRACE_MS, by="tester")
    await corr.publish("d1", event, "k", '"old"', 1, False, RETRY_MS, 1, by="tester")
    young, (event_id, kept) = (await kept_events(lua, index)).items()

    async def past() -> bool:
        return await lua.now() > int(str(kept["g"]))

    await wait_until(past, what="the event's grace to pass")
    taken = await corr.register(event, "k", lua.new_flow(), 1, 60_000)
    assert taken is not None and taken.event_id == young[0]
    assert event_id not in await kept_events(lua, index)
    assert await lua.client.hexists(index.events, f"d:{event_id}") == 0


async def test_register_takes_an_event_kept_with_no_publisher(
    lua: Lua, corr: CorrelationStore
) -> None:
    """An event kept before publishers were recorded is taken all the same; it names
    nobody."""
    event = lua.new_name("ev")
    index = index_of(corr, event, "k")
    expiry = await lua.now() + 60_000
    await lua.client.hset(
        index.events,
        mapping={"1": json.dumps({"x": expiry, "f": 0, "g": expiry + GRACE_MS}), "d:1": '"old"'},
    )
    taken = await corr.register(event, "k", lua.new_flow(), 1, 60_000)
    assert taken is not None and (taken.event_id, taken.data_json, taken.by) == ("1", '"old"', "")


# -- correlate_forget.lua -----------------------------------------------------------------


async def test_forget_drops_the_registration_and_gives_back_an_unreceived_take(
    lua: Lua, corr: CorrelationStore
) -> None:
    event = lua.new_name("ev")
    index = index_of(corr, event, "k")
    await corr.publish("d1", event, "k", '"one"', 60_000, True, RETRY_MS, GRACE_MS, by="tester")
    waiter, taker = lua.new_flow(), lua.new_flow()
    taken = await corr.register(event, "k", taker, 1, 60_000)
    assert taken is not None
    assert await corr.register(event, "k", waiter, 1, 60_000) is None

    assert await corr.forget(event, "k", waiter, 1, "") == 1
    assert await lua.client.zrange(index.waiters, 0, -1) == []
    # A take the wait received stays; one it did not is given back, to the next run.
    assert await corr.forget(event, "k", taker, 1, f"k:{taken.event_id}") == 0
    assert await corr.forget(event, "k", taker, 1, "") == 1
    assert await corr.register(event, "k", waiter, 2, 60_000) == taken
    assert await corr.forget(event, "k", lua.new_flow(), 1, "") == 0


# -- correlate_publish.lua ----------------------------------------------------------------


async def test_publish_with_no_waiter_keeps_the_event_for_its_ttl(
    lua: Lua, corr: CorrelationStore
) -> None:
    event = lua.new_name("ev")
    index = index_of(corr, event, "k")
    before = await lua.now()
    settled = await corr.publish(
        "d1", event, "k", '{"a":1}', 30_000, True, RETRY_MS, GRACE_MS, by="svc-a"
    )
    after = await lua.now()
    assert (settled.done, settled.kept, settled.delivered) == (True, True, ())
    [kept] = (await kept_events(lua, index)).values()
    assert kept["b"] == "svc-a"
    assert before + 30_000 <= int(str(kept["x"])) <= after + 30_000
    assert kept["g"] == int(str(kept["x"])) + GRACE_MS
    assert kept["f"] == 1
    assert 0 < await lua.client.pttl(index.events) <= 30_000 + GRACE_MS
    assert await lua.client.exists(lua.keys.delivery(index.partition, "d1")) == 0

    # A TTL of 0 keeps nothing.
    other = lua.new_name("ev")
    settled = await corr.publish("d2", other, "k", "{}", 0, False, RETRY_MS, GRACE_MS, by="tester")
    assert (settled.done, settled.kept) == (True, False)
    assert await lua.client.exists(index_of(corr, other, "k").events) == 0


async def test_publish_records_its_delivery_to_each_run_once_before_delivering(
    lua: Lua, corr: CorrelationStore
) -> None:
    event = lua.new_name("ev")
    index = index_of(corr, event, "k")
    a, b = lua.new_flow(), lua.new_flow()
    for flow, seq in ((a, 1), (b, 4), (a, 2)):
        await corr.register(event, "k", flow, seq, 60_000)
    before = await lua.now()
    settled = await corr.publish(
        "d1", event, "k", '"x"', 60_000, False, RETRY_MS, GRACE_MS, by="svc-a"
    )
    after = await lua.now()
    assert (settled.done, settled.pending) == (False, [(a, 1), (b, 4)])
    # The run's later wait stays registered: a run gets the event once.
    assert await lua.client.zrange(index.waiters, 0, -1) == [f"{a}|2"]
    record = await lua.client.hgetall(lua.keys.delivery(index.partition, "d1"))
    assert (record["ev"], record["key"], record["d"], record["first"]) == (event, "k", '"x"', "0")
    assert record["by"] == "svc-a"
    assert await corr.delivery(index.partition, "d1") == DeliveryRecord(
        event, "k", '"x"', [(a, 1), (b, 4)], "svc-a"
    )
    due = await lua.client.zscore(index.timers, f"cdel|d1|{index.partition}|1")
    assert due is not None and before + RETRY_MS <= due <= after + RETRY_MS


async def test_publish_first_only_takes_the_oldest_waiter(lua: Lua, corr: CorrelationStore) -> None:
    event = lua.new_name("ev")
    index = index_of(corr, event, "k")
    a, b = await registered_waiters(lua, corr, event, [1, 1])
    settled = await corr.publish(
        "d1", event, "k", '"x"', 60_000, True, RETRY_MS, GRACE_MS, by="tester"
    )
    assert settled.pending == [(a, 1)]
    assert await lua.client.zrange(index.waiters, 0, -1) == [f"{b}|1"]


# -- correlate_settle.lua -----------------------------------------------------------------


async def test_settle_ends_the_delivery_once_its_receivers_answered(
    lua: Lua, corr: CorrelationStore
) -> None:
    event = lua.new_name("ev")
    index = index_of(corr, event, "k")
    a, b = await registered_waiters(lua, corr, event, [1, 2])
    await corr.publish("d1", event, "k", '"x"', 60_000, False, RETRY_MS, GRACE_MS, by="tester")

    partly = await corr.settle("d1", event, "k", [(a, 1, 7), (lua.new_flow(), 1, 3)], GRACE_MS)
    assert (partly.done, partly.pending) == (False, [(b, 2)])
    settled = await corr.settle("d1", event, "k", [(b, 2, 5), (a, 1, 7)], GRACE_MS)
    assert (settled.done, settled.kept) == (True, False)
    assert settled.delivered == ((a, 1, 7), (b, 2, 5))
    assert await lua.client.exists(lua.keys.delivery(index.partition, "d1")) == 0
    assert await lua.client.zscore(index.timers, f"cdel|d1|{index.partition}|1") is None
    # Settled again (the timer's handler, late): gone.
    again = await corr.settle("d1", event, "k", [(b, 2, 5)], GRACE_MS)
    assert again.gone


async def test_settle_moves_on_from_ended_waits_and_keeps_the_event_when_none_is_left(
    lua: Lua, corr: CorrelationStore
) -> None:
    event = lua.new_name("ev")
    index = index_of(corr, event, "k")
    a, b = await registered_waiters(lua, corr, event, [1, 1])
    await corr.publish("d1", event, "k", '"x"', 60_000, True, RETRY_MS, GRACE_MS, by="svc-a")
    # The oldest wait had ended: the first-only event goes to the next one.
    moved = await corr.settle("d1", event, "k", [(a, 1, None)], GRACE_MS)
    assert (moved.done, moved.pending) == (False, [(b, 1)])
    settled = await corr.settle("d1", event, "k", [(b, 1, None)], GRACE_MS)
    assert (settled.done, settled.kept, settled.delivered) == (True, True, ())
    [(event_id, kept)] = (await kept_events(lua, index)).items()
    assert (kept["f"], kept["b"]) == (1, "svc-a")  # its publisher, from the record
    assert await lua.client.hget(index.events, f"d:{event_id}") == '"x"'


# -- correlate_deliver.lua ----------------------------------------------------------------


async def test_deliver_consumes_the_event_once(lua: Lua, corr: CorrelationStore) -> None:
    event = lua.new_name("ev")
    flow = await lua.start([cwait(1, event, "k", 60_000)])
    before = await lua.now()
    assert await corr.deliver(flow, 1, event, "k", '{"v":1}', "d:one", by="svc-a") == (
        "delivered",
        1,
    )
    run = await lua.run(flow)
    assert (run["x:1:n"], run["x:1:evn"], run["x:1:evd"], run["x:1:cev"]) == (
        "2",
        event,
        '{"v":1}',
        "d:one",
    )
    step = await lua.score(flow, member("step", flow, 1, 2))
    assert step is not None and step >= before
    assert await lua.score(flow, member("wto", flow, 1, 1)) is None
    assert await creg_due(lua, flow, 1) is None  # nothing left to renew
    assert await lua.waiters(flow) == []
    received = (await lua.history(flow))[-1]
    assert (received["event"], received["key"], received["action"], received["by"]) == (
        "EVENT_RECEIVED",
        "k",
        1,
        "svc-a",
    )

    assert await corr.deliver(flow, 1, event, "k", '{"v":1}', "d:one", by="tester") == (
        "already",
        1,
    )
    assert await corr.deliver(flow, 1, event, "k", '{"v":2}', "d:two", by="tester") == ("stale", 1)
    assert (await lua.run(flow))["x:1:evd"] == '{"v":1}'


async def test_deliver_of_an_event_with_no_publisher_names_nobody(
    lua: Lua, corr: CorrelationStore
) -> None:
    event = lua.new_name("ev")
    flow = await lua.start([cwait(1, event, "k")])
    assert await corr.deliver(flow, 1, event, "k", "{}", "k:1", by="") == ("delivered", 1)
    received = (await lua.history(flow))[-1]
    assert received["event"] == "EVENT_RECEIVED"
    assert "by" not in received


async def test_deliver_refuses_another_key_event_or_seq(lua: Lua, corr: CorrelationStore) -> None:
    event = lua.new_name("ev")
    flow = await lua.start([cwait(1, event, "k")])
    assert await corr.deliver(flow, 1, event, "other", "{}", "d:1", by="tester") == ("stale", 1)
    assert await corr.deliver(flow, 1, "other", "k", "{}", "d:1", by="tester") == ("stale", 1)
    assert await corr.deliver(flow, 9, event, "k", "{}", "d:1", by="tester") == ("stale", None)
    assert (await lua.run(flow))["x:1:n"] == "1"


async def test_deliver_to_a_paused_ended_or_missing_run(lua: Lua, corr: CorrelationStore) -> None:
    event = lua.new_name("ev")
    paused = await lua.start([cwait(1, event, "k")])
    assert await lua.store.pause(paused, by="tester") == "ok"
    assert await corr.deliver(paused, 1, event, "k", "{}", "d:1", by="tester") == ("held", 1)
    ended = await lua.start([cwait(1, event, "k")])
    assert await lua.store.terminate(ended, "stop", by="tester") == "ok"
    assert await corr.deliver(ended, 1, event, "k", "{}", "d:1", by="tester") == ("terminal", 1)
    assert await corr.deliver(lua.new_flow(), 1, event, "k", "{}", "d:1", by="tester") == (
        "missing",
        None,
    )


# -- the hand-offs, interrupted and repeated ------------------------------------------------


@pytest.fixture
def correlation(lua: Lua, corr: CorrelationStore) -> Correlation:
    return Correlation(corr, Settings())


async def test_registration_handled_twice_delivers_a_kept_event_once(
    lua: Lua, corr: CorrelationStore, correlation: Correlation
) -> None:
    event = lua.new_name("ev")
    await corr.publish("d1", event, "k", '"kept"', 60_000, True, RETRY_MS, GRACE_MS, by="svc-a")
    flow = await lua.start([cwait(1, event, "k")])
    creg = TimerMember(TimerKind.CORRELATE, flow, 1, 1)
    # A server took the event and died before the run got it: the timer is handled again.
    assert await corr.register(event, "k", flow, 1, 60_000) is not None
    assert await correlation.handle_timer(creg) == "delivered"
    assert await correlation.handle_timer(creg) == "stale"
    run = await lua.run(flow)
    assert (run["x:1:evd"], run["x:1:n"]) == ('"kept"', "2")
    [received] = [e for e in await lua.history(flow) if e["event"] == "EVENT_RECEIVED"]
    assert received["by"] == "svc-a"  # the publisher of the kept event
    assert await creg_due(lua, flow, 1) is None
    # The take stays with the run that received it: no other run gets the event.
    assert await corr.register(event, "k", lua.new_flow(), 1, 60_000) is None


async def test_a_take_whose_wait_ended_is_given_back(
    lua: Lua, corr: CorrelationStore, correlation: Correlation
) -> None:
    event = lua.new_name("ev")
    await corr.publish("d1", event, "k", '"kept"', 60_000, True, RETRY_MS, GRACE_MS, by="tester")
    flow = await lua.start([cwait(1, event, "k", 60_000)])
    assert await corr.register(event, "k", flow, 1, 60_000) is not None
    # The wait timed out before the server came back.
    assert await lua.finish_waiting(flow, 1, "wto", 1, '{"timedOut":true}') == "ok"
    assert await correlation.handle_timer(TimerMember(TimerKind.CORRELATE, flow, 1, 1)) == "stale"
    assert await corr.register(event, "k", lua.new_flow(), 1, 60_000) is not None


async def test_a_delivery_resumed_by_its_timer_reaches_each_run_once(
    lua: Lua, corr: CorrelationStore, correlation: Correlation
) -> None:
    event = lua.new_name("ev")
    index = index_of(corr, event, "k")
    flows = [await lua.start([cwait(1, event, "k")]) for _ in range(3)]
    for flow in flows:
        assert await correlation.handle_timer(TimerMember(TimerKind.CORRELATE, flow, 1, 1)) == (
            "waiting"
        )
    # The publishing server recorded the delivery, reached the first run, then died.
    pending = await corr.publish(
        "d1", event, "k", '"x"', 60_000, False, RETRY_MS, GRACE_MS, by="svc-a"
    )
    assert pending.pending == [(flow, 1) for flow in flows]
    assert await corr.deliver(flows[0], 1, event, "k", '"x"', "d:d1", by="svc-a") == (
        "delivered",
        1,
    )
    # Its timer is handled, twice (two servers, or a retry).
    timer = TimerMember(TimerKind.DELIVER, "d1", index.partition, 1)
    assert await correlation.handle_timer(timer) == "done"
    assert await correlation.handle_timer(timer) == "gone"
    for flow in flows:
        run = await lua.run(flow)
        assert (run["x:1:evd"], run["x:1:n"], run["x:1:cev"]) == ('"x"', "2", "d:d1")
        [received] = [e for e in await lua.history(flow) if e["event"] == "EVENT_RECEIVED"]
        assert received["by"] == "svc-a"  # the publisher, from the delivery's record
    assert await lua.client.exists(lua.keys.delivery(index.partition, "d1")) == 0
    assert await lua.client.zscore(index.timers, str(timer)) is None
    assert await lua.client.exists(index.waiters) == 0


async def test_registration_of_a_wait_that_ended_drops_it_from_the_index(
    lua: Lua, corr: CorrelationStore, correlation: Correlation
) -> None:
    event = lua.new_name("ev")
    index = index_of(corr, event, "k")
    flow = await lua.start([cwait(1, event, "k")])
    creg = TimerMember(TimerKind.CORRELATE, flow, 1, 1)
    before = await lua.now()
    assert await correlation.handle_timer(creg) == "waiting"
    assert await lua.client.zrange(index.waiters, 0, -1) == [f"{flow}|1"]
    # Registered for the retention of runs, and renewed halfway through.
    assert RETENTION * 1000 - 5000 < await lua.client.pttl(index.waiters) <= RETENTION * 1000
    renewal = await creg_due(lua, flow, 1)
    assert renewal is not None
    assert before + RETENTION * 500 <= renewal <= await lua.now() + RETENTION * 500
    assert await correlation.handle_timer(creg) == "waiting"  # renewed: still there, once
    assert await lua.client.zrange(index.waiters, 0, -1) == [f"{flow}|1"]
    # Its run ends; the timer comes again: the wait leaves the index.
    assert await lua.store.terminate(flow, "stop", by="tester") == "ok"
    assert await correlation.handle_timer(creg) == "stale"
    assert await lua.client.exists(index.waiters) == 0
    # A timer of a run that is gone is only dropped.
    gone = TimerMember(TimerKind.CORRELATE, lua.new_flow(), 1, 1)
    await lua.client.zadd(lua.timers_key(gone.flow_id), {str(gone): 1})
    assert await correlation.handle_timer(gone) == "stale"
    assert await lua.score(gone.flow_id, str(gone)) is None


async def test_a_delivery_whose_timer_failed_is_tried_again_later(
    lua: Lua, corr: CorrelationStore, correlation: Correlation
) -> None:
    event = lua.new_name("ev")
    index = index_of(corr, event, "k")
    await corr.register(event, "k", lua.new_flow(), 1, 60_000)
    await corr.publish("d1", event, "k", "{}", 60_000, False, RETRY_MS, GRACE_MS, by="tester")
    timer = TimerMember(TimerKind.DELIVER, "d1", index.partition, 1)
    before = await lua.now()
    assert await correlation.delivery_failed(timer) == "retry"
    retry_ms = round(Settings().timer_retry_seconds * 1000)
    due = await lua.client.zscore(index.timers, str(timer))
    assert due is not None and before + retry_ms <= due <= await lua.now() + retry_ms
    # A timer no longer there is not brought back.
    await lua.client.zrem(index.timers, str(timer))
    assert await correlation.delivery_failed(timer) == "retry"
    assert await lua.client.zscore(index.timers, str(timer)) is None
