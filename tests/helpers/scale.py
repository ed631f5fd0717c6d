"""The scale-and-faults scenario of ``tests/test_scale.py``: real ``orchy serve`` processes
over one Redis, HTTP workers spread over all of them, a driver that starts runs and sends
events, and optionally a ``kill -9`` of one server and its restart. It records what happened
(each task delivered, each result answered, each run's end and history); the test judges.

The workflow, one per delay (names unique per scenario)::

    A (user) -> [ B (user), C (delay), D (wait "go", timeout) ] -> join [B, C, D] -> E (user)

Every second run gets the event, up to a second after it started (buffered or delivered);
the others end their wait by its timeout. Every CONTROL_EVERY-th run is of the control
workflow instead::

    A (user) -> while (LOOP_PASSES passes of PASS, a user action given its pass number)
      -> forEach {$.input.items} (ITEMS items, CONCURRENCY at a time, a user body given
         {$.index}) -> subWorkflow (a child run of one user action, CHILD)
      -> wait "order" with correlationKey {$.input.orderKey} (WAIT) -> E (user)

Its event is published by key (``POST /events/order``), for a third of the control runs at
once, before the run can reach its wait (the event is kept, and the wait takes it); for a
third once the run's view shows its wait WAITING (delivered); for the others at a random
moment up to ORDER_EVENT_PAUSE_MAX_SECONDS after the child's result was accepted, racing
the run to its wait.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from tests.helpers.definitions import sub_workflow, system, user, workflow
from tests.helpers.processes import Processes, ServerProcess, clean_env
from tests.helpers.waiting import unique, wait_until

A, B, C, D, JOIN, E = 1, 2, 3, 4, 5, 6
USER_ACTIONS = (A, B, E)
ALL_ACTIONS = (A, B, C, D, JOIN, E)
# The control workflow: its A and E are the actions (queues) A and E of the other one.
CONTROL_EVERY = 10
LOOP, PASS, EACH, SUB, WAIT, CONTROL_E = 2, 3, 4, 5, 6, 7
CHILD = 1
"""The child workflow's only action."""
LOOP_PASSES = 3
ITEMS = 20
CONCURRENCY = 5
ORDER_EVENT = "order"
ORDER_WAIT_SECONDS = 60.0
"""Long enough for any fault: a wait that times out lost its event, and the test says so."""
ORDER_EVENT_TTL_SECONDS = 600
ORDER_EVENT_PAUSE_MAX_SECONDS = 0.5
DELAYS_SECONDS = (0.2, 0.5, 1.0)
WAIT_TIMEOUT_SECONDS = 2.0
EVENT = "go"
EVENT_PAUSE_MAX_SECONDS = 1.0
# A fault must cost time, never a run: leases lost with a killed server come back after
# the lease, and are retried many times.
LEASE_SECONDS = 10.0
RETRY_COUNT = 20
RETRY_AFTER_SECONDS = 0.2
SERVER_SETTINGS = {"ORCHY_PARTITIONS": "16", "ORCHY_TIMER_CLAIM_SECONDS": "2"}

WORKERS_PER_SERVER = 2
TASKS_PER_POLL = 8
POLL_WAIT_SECONDS = 1.0
HTTP_TIMEOUT_SECONDS = 15.0
CLIENT_CONCURRENCY = 16
FAILOVER_PAUSE_SECONDS = 0.05
GIVE_UP_SECONDS = 30.0
RESTART_AFTER_SECONDS = 5.0
SWEEP_EVERY_SECONDS = 5.0
TERMINAL = frozenset({"COMPLETED", "FAILED", "TERMINATED"})
LOG_PROBLEMS = ("Traceback", "CROSSSLOT")


@dataclass(frozen=True)
class Fault:
    """``kill -9`` of server ``index`` once a third of the runs finished; started again at
    two thirds, or RESTART_AFTER_SECONDS after the kill, whichever comes first."""

    index: int = 1


Execution = tuple[str, int, int | None]
"""What identifies the execution of a user action: flow id, action id, and the loop pass
or the item index the task's input names (None for the other actions)."""


def mark(task_input: Any) -> int | None:
    """The loop pass or item index a task's input names."""
    if isinstance(task_input, dict):
        found = task_input.get("pass", task_input.get("index"))
        return found if isinstance(found, int) else None
    return None


@dataclass
class Record:
    """What the scenario saw; ``tests/test_scale.py`` asserts on it."""

    runs: int
    flow_ids: list[str] = field(default_factory=list)
    statuses: dict[str, str] = field(default_factory=dict)
    deliveries: Counter[str] = field(default_factory=Counter)
    """Deliveries to the workers, by task id (every attempt has its own)."""
    executions: Counter[Execution] = field(default_factory=Counter)
    """Times a worker ran a user action of a run (a child run's by the child's flow id)."""
    accepted: Counter[Execution] = field(default_factory=Counter)
    """Results answered 200, by execution."""
    conflicts: Counter[Execution] = field(default_factory=Counter)
    """Results answered 409, by execution: sent again after an answer lost with a server."""
    completed_events: dict[str, Counter[int]] = field(default_factory=dict)
    """COMPLETED entries of each run's history (items apart), by action id."""
    control: dict[str, str] = field(default_factory=dict)
    """The control runs: flow id -> the correlation key of their event."""
    published: Counter[str] = field(default_factory=Counter)
    """The control runs' events by what their publication answered: delivered, kept."""
    items_running: Counter[str] = field(default_factory=Counter)
    items_running_max: Counter[str] = field(default_factory=Counter)
    """Per control run, the items a worker held at once (a lower bound of the real number)."""
    views: dict[str, dict[str, Any]] = field(default_factory=dict)
    """``GET /flow/{id}`` of each control run and of each child, once ended."""
    histories: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    """The history of each control run and of each child."""
    finished: set[str] = field(default_factory=set)
    unexpected: Counter[str] = field(default_factory=Counter)
    """Answers no part of the scenario expects (5xx, 4xx other than 409), by kind."""
    log_problems: list[str] = field(default_factory=list)
    kills: int = 0
    restarts: int = 0

    def by_flow(self, counts: Counter[Execution]) -> dict[str, Counter[tuple[int, int | None]]]:
        """``executions`` or ``accepted`` per flow id, by (action id, pass or index)."""
        found: dict[str, Counter[tuple[int, int | None]]] = {}
        for (flow_id, action, number), count in counts.items():
            found.setdefault(flow_id, Counter())[(action, number)] += count
        return found

    def summary(self) -> str:
        statuses = Counter(self.statuses.values())
        return (
            f"{self.runs} runs, {len(self.flow_ids)} started, statuses {dict(statuses)}; "
            f"{sum(self.deliveries.values())} deliveries; {len(self.control)} control runs, "
            f"their events {dict(self.published)}; {self.kills} kill(s), "
            f"{self.restarts} restart(s); unexpected answers {dict(self.unexpected)}; "
            f"log problems {self.log_problems[:5]}"
        )


class GaveUp(Exception):
    """No server answered within GIVE_UP_SECONDS."""


class Scenario:
    def __init__(self, servers: list[ServerProcess], runs: int, fault: Fault | None) -> None:
        self.servers = servers
        self.urls = [server.url for server in servers]
        self.fault = fault
        self.record = Record(runs)
        self.prefix = unique("scale")
        self.actions = {action: f"{self.prefix}-{action}" for action in USER_ACTIONS}
        self.control_actions = {kind: f"{self.prefix}-{kind}" for kind in ("pass", "item", "child")}
        self.workflows = {
            delay: f"{self.prefix}-d{round(delay * 1000)}" for delay in DELAYS_SECONDS
        }
        self.control = f"{self.prefix}-control"
        self.child = f"{self.prefix}-child"
        self.random = random.Random(self.prefix)
        self.child_done: dict[int, asyncio.Event] = {}
        """Per control run (by its index), set once its child's result is accepted."""

    # -- requests -------------------------------------------------------------------------

    async def request(
        self, client: httpx.AsyncClient, method: str, path: str, body: Any = None, home: int = 0
    ) -> httpx.Response:
        """To ``urls[home]``, then the next server on a transport error or a 5xx. Only for
        requests safe to repeat: reads, idempotent starts, events and results."""
        deadline = asyncio.get_running_loop().time() + GIVE_UP_SECONDS
        attempt = 0
        while True:
            url = self.urls[(home + attempt) % len(self.urls)]
            attempt += 1
            try:
                response = await client.request(method, url + path, json=body)
            except httpx.TransportError:
                pass
            else:
                if response.status_code < 500:
                    return response
                self.record.unexpected[f"{method} {response.status_code}"] += 1
            if asyncio.get_running_loop().time() > deadline:
                raise GaveUp(f"{method} {path}")
            if attempt % len(self.urls) == 0:
                await asyncio.sleep(FAILOVER_PAUSE_SECONDS)

    def expect(self, what: str, response: httpx.Response, *statuses: int) -> None:
        if response.status_code not in statuses:
            self.record.unexpected[f"{what} {response.status_code}"] += 1

    # -- the parts ------------------------------------------------------------------------

    async def register(self, client: httpx.AsyncClient) -> None:
        for name in [*self.actions.values(), *self.control_actions.values()]:
            settings = {
                "name": name,
                "retryCount": RETRY_COUNT,
                "retryAfterSeconds": RETRY_AFTER_SECONDS,
                "retryPolicy": "FIXED",
                "timeoutSeconds": LEASE_SECONDS,
            }
            response = await self.request(client, "POST", "/metadata/action", settings)
            assert response.status_code == 200, response.text
        for delay, name in self.workflows.items():
            definition = workflow(
                name,
                user(A, self.actions[A], {"default": [B, C, D]}, run="{$.input.run}"),
                user(B, self.actions[B], {"default": [JOIN]}),
                system(C, "delay", {"default": [JOIN]}, delaySeconds=delay),
                system(
                    D, "wait", {"default": [JOIN]}, event=EVENT, timeoutSeconds=WAIT_TIMEOUT_SECONDS
                ),
                system(JOIN, "join", {"default": [E]}, joinOn=[B, C, D]),
                user(E, self.actions[E]),
            )
            response = await self.request(client, "POST", "/metadata/workflow", definition)
            assert response.status_code == 200, response.text
        for definition in self.control_workflows():
            response = await self.request(client, "POST", "/metadata/workflow", definition)
            assert response.status_code == 200, response.text

    def control_workflows(self) -> list[dict[str, Any]]:
        """The child workflow, then the control workflow that runs it."""
        child_action = user(CHILD, self.control_actions["child"], run="{$.input.run}")
        child = workflow(self.child, child_action)
        body = {
            "type": "user",
            "name": self.control_actions["item"],
            "parameters": {"index": "{$.index}", "item": "{$.item}"},
        }
        control = workflow(
            self.control,
            user(A, self.actions[A], {"default": [LOOP]}, run="{$.input.run}"),
            system(
                LOOP,
                "while",
                {"body": [PASS], "default": [EACH]},
                condition=f"{{$.{LOOP}.output.iteration}} < {LOOP_PASSES}",
            ),
            user(
                PASS,
                self.control_actions["pass"],
                {"default": [LOOP]},
                **{"pass": f"{{$.{LOOP}.output.iteration}}"},
            ),
            system(
                EACH,
                "forEach",
                {"default": [SUB]},
                items="{$.input.items}",
                concurrency=CONCURRENCY,
                body=body,
            ),
            sub_workflow(SUB, self.child, {"default": [WAIT]}, run="{$.input.run}"),
            system(
                WAIT,
                "wait",
                {"default": [CONTROL_E]},
                event=ORDER_EVENT,
                correlationKey="{$.input.orderKey}",
                timeoutSeconds=ORDER_WAIT_SECONDS,
            ),
            user(CONTROL_E, self.actions[E]),
        )
        return [child, control]

    async def start_runs(self, client: httpx.AsyncClient) -> None:
        gate = asyncio.Semaphore(CLIENT_CONCURRENCY)
        events: list[asyncio.Task[None]] = []
        delays = list(self.workflows)

        async def start(index: int) -> None:
            control = index % CONTROL_EVERY == 0
            order_key = f"{self.prefix}-order-{index}"
            body = {
                "name": self.workflows[delays[index % len(delays)]],
                "input": {"run": index},
                "idempotencyKey": f"{self.prefix}-{index}",
            }
            if control:
                self.child_done[index] = asyncio.Event()
                items = [f"item-{number}" for number in range(ITEMS)]
                body["name"] = self.control
                body["input"] = {"run": index, "items": items, "orderKey": order_key}
            async with gate:
                response = await self.request(client, "POST", "/flow/execute", body, home=index)
            self.expect("execute", response, 200, 201)
            if response.status_code in (200, 201):
                flow_id: str = response.json()["flowId"]
                self.record.flow_ids.append(flow_id)
                if control:
                    self.record.control[flow_id] = order_key
                    events.append(asyncio.create_task(publish(index, flow_id, order_key)))
                elif index % 2 == 0:
                    pause = self.random.uniform(0, EVENT_PAUSE_MAX_SECONDS)
                    events.append(asyncio.create_task(send_event(index, flow_id, pause)))

        async def send_event(index: int, flow_id: str, pause: float) -> None:
            await asyncio.sleep(pause)
            async with gate:
                path = f"/flow/{flow_id}/events/{EVENT}"
                response = await self.request(client, "POST", path, {}, home=index)
            self.expect("event", response, 200, 409)  # 409: the run ended by the timeout

        async def waiting(flow_id: str) -> bool:
            async with gate:
                response = await self.request(client, "GET", f"/flow/{flow_id}")
            self.expect("flow", response, 200)
            actions = response.json()["actions"] if response.is_success else {}
            return bool(actions.get(str(WAIT), {}).get("status") == "WAITING")

        async def publish(index: int, flow_id: str, key: str) -> None:
            when = (index // CONTROL_EVERY) % 3
            if when > 0:  # 0: at once, before the run can reach its wait
                try:
                    await asyncio.wait_for(self.child_done[index].wait(), GIVE_UP_SECONDS * 4)
                except TimeoutError:
                    self.record.unexpected["child's result never accepted"] += 1
            if when == 1:
                what = f"the wait of {flow_id}"
                await wait_until(lambda: waiting(flow_id), GIVE_UP_SECONDS, step=0.1, what=what)
            elif when == 2:
                await asyncio.sleep(self.random.uniform(0, ORDER_EVENT_PAUSE_MAX_SECONDS))
            event = {"key": key, "data": {"orderKey": key}, "ttlSeconds": ORDER_EVENT_TTL_SECONDS}
            async with gate:
                path = f"/events/{ORDER_EVENT}"
                response = await self.request(client, "POST", path, event, home=index)
            self.expect("publish", response, 200)
            if not response.is_success:
                return
            answer = response.json()
            if answer == {"delivered": [{"flowId": flow_id, "actionId": WAIT}], "kept": False}:
                self.record.published["delivered"] += 1
            elif answer == {"delivered": [], "kept": True}:
                self.record.published["kept"] += 1
            else:
                self.record.unexpected[f"publish answered {answer}"] += 1

        await asyncio.gather(*(start(index) for index in range(self.record.runs)))
        await asyncio.gather(*events)

    async def worker(self, home: int, name: str, stop: asyncio.Event) -> None:
        """Polls its home server (the next ones while the connection is refused); a poll
        that may have reached a server is never repeated, its tasks come back after the
        lease. Runs each task's action once and sends the result with fail-over."""
        body = {
            "workerId": name,
            "actions": [*self.actions.values(), *self.control_actions.values()],
            "max": TASKS_PER_POLL,
            "waitSeconds": POLL_WAIT_SECONDS,
        }
        async with httpx.AsyncClient(timeout=HTTP_TIMEOUT_SECONDS) as client:
            while not stop.is_set():
                tasks = await self.poll(client, home, body)
                self.hold_items(tasks)
                await asyncio.gather(*(self.run_task(client, home, task) for task in tasks))

    def hold_items(self, tasks: list[dict[str, Any]]) -> None:
        """Counts the items each control run has at the workers now."""
        record = self.record
        for task in tasks:
            if task["name"] == self.control_actions["item"]:
                flow_id = task["flowId"]
                record.items_running[flow_id] += 1
                held = record.items_running[flow_id]
                record.items_running_max[flow_id] = max(record.items_running_max[flow_id], held)

    async def poll(
        self, client: httpx.AsyncClient, home: int, body: dict[str, Any]
    ) -> list[dict[str, Any]]:
        for offset in range(len(self.urls)):
            url = self.urls[(home + offset) % len(self.urls)]
            try:
                response = await client.post(f"{url}/tasks/poll", json=body)
            except httpx.ConnectError:
                continue
            except httpx.TransportError:
                break
            self.expect("poll", response, 200)
            tasks: list[dict[str, Any]] = response.json()["tasks"] if response.is_success else []
            return tasks
        await asyncio.sleep(FAILOVER_PAUSE_SECONDS)
        return []

    async def run_task(self, client: httpx.AsyncClient, home: int, task: dict[str, Any]) -> None:
        record = self.record
        flow_id = task["flowId"]
        key = (flow_id, task["actionId"], mark(task.get("input")))
        record.deliveries[task["taskId"]] += 1
        record.executions[key] += 1
        if task["name"] == self.control_actions["item"]:
            # Counted out before the result is sent: its acceptance may start the next item.
            record.items_running[flow_id] -= 1
        path = f"/tasks/{task['taskId']}/complete"
        output = {"ran": True, "input": task.get("input")}
        try:
            response = await self.request(client, "POST", path, {"output": output}, home)
        except GaveUp:
            record.unexpected["complete: no server answered"] += 1
            return
        # 409: a result whose answer was lost with a killed server, sent again.
        self.expect("complete", response, 200, 409)
        if response.status_code == 409:
            record.conflicts[key] += 1
        if response.status_code in (200, 409) and task["name"] == self.control_actions["child"]:
            self.child_done[task["input"]["run"]].set()
        if response.status_code == 200:
            record.accepted[key] += 1
            if task["name"] == self.actions[E]:
                record.finished.add(flow_id)

    async def inject(self, fault: Fault) -> None:
        runs = self.record.runs

        async def finished(share: float) -> bool:
            return len(self.record.finished) >= share * runs

        await wait_until(lambda: finished(1 / 3), GIVE_UP_SECONDS * 4, what="a third of the runs")
        await self.servers[fault.index].kill()
        self.record.kills += 1
        # Started again at two thirds, or after a while, whichever comes first.
        with contextlib.suppress(AssertionError):
            await wait_until(lambda: finished(2 / 3), RESTART_AFTER_SECONDS)
        await self.servers[fault.index].start()
        self.record.restarts += 1

    async def await_ends(self, client: httpx.AsyncClient, deadline_seconds: float) -> None:
        """Until every run is COMPLETED, FAILED or TERMINATED; the runs whose last action
        was accepted are read as they come, every run still open now and then."""
        statuses = self.record.statuses
        gate = asyncio.Semaphore(CLIENT_CONCURRENCY)
        loop = asyncio.get_running_loop()
        last_sweep = loop.time()

        async def read(flow_id: str) -> None:
            async with gate:
                response = await self.request(client, "GET", f"/flow/{flow_id}")
            self.expect("flow", response, 200)
            if response.is_success and response.json()["status"] in TERMINAL:
                statuses[flow_id] = response.json()["status"]

        async def all_ended() -> bool:
            nonlocal last_sweep
            open_runs = [flow_id for flow_id in self.record.flow_ids if flow_id not in statuses]
            if loop.time() - last_sweep > SWEEP_EVERY_SECONDS:
                last_sweep = loop.time()
                candidates = open_runs
            else:
                candidates = [flow_id for flow_id in open_runs if flow_id in self.record.finished]
            await asyncio.gather(*(read(flow_id) for flow_id in candidates))
            return len(statuses) == len(self.record.flow_ids)

        await wait_until(all_ended, deadline_seconds, step=0.25, what="every run to end")

    async def read_histories(self, client: httpx.AsyncClient) -> None:
        """Every run's history; a control run's view, and its child's view and history."""
        gate = asyncio.Semaphore(CLIENT_CONCURRENCY)
        record = self.record

        async def get(what: str, path: str) -> Any:
            async with gate:
                response = await self.request(client, "GET", path)
            self.expect(what, response, 200)
            return response.json() if response.is_success else {}

        async def read(flow_id: str) -> None:
            history: list[dict[str, Any]] = (await get("history", f"/flow/{flow_id}/history"))[
                "history"
            ]
            items = item_seqs(history)
            record.completed_events[flow_id] = Counter(
                entry["action"]
                for entry in history
                if entry["event"] == "COMPLETED"
                and isinstance(entry.get("action"), int)
                and entry.get("seq") not in items
            )
            if flow_id not in record.control:
                return
            record.histories[flow_id] = history
            view = record.views[flow_id] = await get("flow", f"/flow/{flow_id}")
            child = view.get("actions", {}).get(str(SUB), {}).get("child")
            if isinstance(child, str):
                record.views[child] = await get("flow", f"/flow/{child}")
                child_history = await get("history", f"/flow/{child}/history")
                record.histories[child] = child_history["history"]

        await asyncio.gather(*(read(flow_id) for flow_id in record.flow_ids))

    async def run(self, deadline_seconds: float) -> Record:
        stop = asyncio.Event()
        limits = httpx.Limits(max_connections=CLIENT_CONCURRENCY * 2)
        async with httpx.AsyncClient(timeout=HTTP_TIMEOUT_SECONDS, limits=limits) as client:
            await self.register(client)
            workers = [
                asyncio.create_task(self.worker(home, f"{self.prefix}-w{home}-{n}", stop))
                for home in range(len(self.urls))
                for n in range(WORKERS_PER_SERVER)
            ]
            fault = asyncio.create_task(self.inject(self.fault)) if self.fault else None
            try:
                await self.start_runs(client)
                await self.await_ends(client, deadline_seconds)
                if fault is not None:
                    await fault
            finally:
                stop.set()
                if fault is not None and not fault.done():
                    fault.cancel()
                await asyncio.gather(*workers, *([fault] if fault else []), return_exceptions=True)
            await self.read_histories(client)
        self.record.log_problems = await asyncio.to_thread(log_problems, self.servers)
        return self.record


def item_seqs(history: list[dict[str, Any]]) -> dict[int, int]:
    """The for-each items' executions in a run's history: seq -> item index (named when
    the item is queued)."""
    return {
        entry["seq"]: entry["item"]
        for entry in history
        if entry["event"] == "QUEUED" and entry.get("item") is not None
    }


def log_problems(servers: list[ServerProcess]) -> list[str]:
    """The servers' log lines that tell of an error (a traceback, a cross-slot command)."""
    found = []
    for server in servers:
        lines = server.log_path.read_text(errors="replace").splitlines()
        found += [line for line in lines if any(problem in line for problem in LOG_PROBLEMS)]
    return found


async def run_scenario(
    processes: Processes,
    redis_url: str,
    logs: Path,
    servers: int,
    runs: int,
    deadline_seconds: float,
    fault: Fault | None = None,
) -> Record:
    """``servers`` servers on ``redis_url`` (their logs in the folder ``logs``), the scenario over
    them; the servers are stopped by ``processes`` at the end of the test."""
    env = clean_env(REDIS_URL=redis_url, **SERVER_SETTINGS)
    fleet = [processes.server(env, logs / f"server-{index}.log") for index in range(servers)]
    await asyncio.gather(*(server.start() for server in fleet))
    return await Scenario(fleet, runs, fault).run(deadline_seconds)
