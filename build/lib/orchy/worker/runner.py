"""One run of a worker: register definitions, poll, run tasks, heartbeat, report, drain.

Slots: a task is "in hand" from the poll that leased it until its result is reported, and
there are never more than ``concurrency`` of them, so a poll asks for exactly the free ones.
With ``take_next``, a reported result hands its slot to a task it starts, leased in the
answer to the report (see :mod:`orchy.worker.batcher`).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Coroutine
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any, TypeVar

from orchy.worker.batcher import Handoff, ResultBatcher
from orchy.worker.client import (
    OrchyClient,
    PollError,
    Reply,
    ReplyStatus,
    Task,
    UnencodableBodyError,
    describe_error,
)
from orchy.worker.errors import ActionRegistrationError, NonRetryableError
from orchy.worker.jsontypes import JSONObject
from orchy.worker.registry import ActionRegistry, RegisteredAction, normalize_output
from orchy.worker.threads import DaemonThreadPool
from orchy.worker.tracing import task_span
from orchy.worker.typed_io import dump_output

logger = logging.getLogger("orchy.worker")

HEARTBEATS_PER_LEASE = 3

T = TypeVar("T")

# A completion answered with these is refused for its output: retrying cannot help.
_OUTPUT_REFUSED = frozenset({HTTPStatus.REQUEST_ENTITY_TOO_LARGE, HTTPStatus.UNPROCESSABLE_ENTITY})


@dataclass(frozen=True)
class RunConfig:
    worker_id: str
    concurrency: int
    poll_wait_seconds: float
    poll_max_tasks: int  # the server refuses larger polls
    heartbeat_seconds: float
    backoff_seconds: float
    max_backoff_doublings: int
    shutdown_grace_seconds: float
    take_next: bool


@dataclass(frozen=True)
class Completed:
    output: JSONObject


@dataclass(frozen=True)
class Failed:
    error: str
    retryable: bool


Outcome = Completed | Failed


class WorkerRun:
    def __init__(
        self,
        registry: ActionRegistry,
        client: OrchyClient,
        pool: DaemonThreadPool,
        config: RunConfig,
        *,
        stop: asyncio.Event,
        force: asyncio.Event,
    ) -> None:
        self._registry = registry
        self._client = client
        self._pool = pool
        self._config = config
        self._stop = stop
        self._force = force
        self._in_hand: dict[asyncio.Task[None], Task] = {}
        self._slot_freed = asyncio.Event()
        self._heartbeats: set[asyncio.Task[None]] = set()
        handoff = None
        if config.take_next:
            handoff = Handoff(
                config.worker_id,
                registry.names,
                accepting=lambda: not self._stop.is_set(),
                start=self._start,
            )
        self._results = ResultBatcher(client, config.poll_max_tasks, handoff)

    async def serve(self) -> None:
        """Run until ``stop`` is set, then drain; cancelling this abandons everything."""
        try:
            if await self._register_actions():
                await self._poll_loop()
        except BaseException:
            await self._abandon(set(self._in_hand))
            raise
        await self._drain()

    # -- definitions ------------------------------------------------------------------

    async def _register_actions(self) -> bool:
        """POST the definitions given in decorators; False when stopped meanwhile."""
        for action in self._registry:
            if not action.options.given:
                continue
            definition = action.definition()
            failures = 0
            while True:
                reply = await self._unless_stopped(self._client.register_action(definition))
                if reply is None:
                    return False
                if reply.ok:
                    logger.info(
                        "registered the definition of action %r: %s", action.name, definition
                    )
                    break
                if reply.status is not ReplyStatus.UNREACHABLE:
                    raise ActionRegistrationError(
                        f"the server refused the definition of action {action.name!r} "
                        f"({reply.http_status}): {reply.message}"
                    )
                failures += 1
                delay = self._backoff(failures)
                logger.warning(
                    "cannot register action %r (%s); trying again in %.2f s",
                    action.name,
                    reply.message,
                    delay,
                )
                if not await self._pause(delay):
                    return False
        return True

    # -- polling ----------------------------------------------------------------------

    async def _poll_loop(self) -> None:
        names = self._registry.names
        failures = 0
        while not self._stop.is_set():
            free = self._config.concurrency - len(self._in_hand)
            if free <= 0:
                self._slot_freed.clear()
                if await self._unless_stopped(self._slot_freed.wait()) is None:
                    return
                continue
            poll = self._client.poll(
                self._config.worker_id,
                names,
                min(free, self._config.poll_max_tasks),
                self._config.poll_wait_seconds,
            )
            try:
                tasks = await self._unless_stopped(poll)
            except PollError as exc:
                failures += 1
                delay = self._backoff(failures)
                logger.warning("poll failed (%s); polling again in %.2f s", exc, delay)
                await self._pause(delay)
                continue
            if tasks is None:
                return
            failures = 0
            if len(tasks) > free:
                logger.warning("the server leased %d tasks for %d free slots", len(tasks), free)
            for task in tasks:
                self._start(task)

    def _start(self, task: Task) -> None:
        handler = asyncio.create_task(self._handle(task), name=f"orchy-{task.task_id}")
        self._in_hand[handler] = task
        handler.add_done_callback(self._on_handler_done)

    def _on_handler_done(self, handler: asyncio.Task[None]) -> None:
        task = self._in_hand.pop(handler, None)
        self._slot_freed.set()
        if not handler.cancelled() and (exc := handler.exception()) is not None:
            logger.error(
                "unexpected error while handling %s", task.label if task else "a task", exc_info=exc
            )

    # -- one task ---------------------------------------------------------------------

    async def _handle(self, task: Task) -> None:
        if logger.isEnabledFor(logging.DEBUG):  # a label per task costs when nobody reads it
            logger.debug("running %s", task.label)
        interval = self._heartbeat_interval(task)
        heartbeats: list[asyncio.Task[None]] = []

        def start_heartbeats() -> None:
            # Only tasks that outlive one interval pay for a heartbeat task.
            heartbeat = asyncio.create_task(
                self._heartbeat(task, interval), name=f"orchy-hb-{task.task_id}"
            )
            self._heartbeats.add(heartbeat)
            heartbeat.add_done_callback(self._heartbeats.discard)
            heartbeats.append(heartbeat)

        first_beat = asyncio.get_running_loop().call_later(interval, start_heartbeats)
        try:
            outcome = await self._execute(self._registry.get(task.name), task)
        finally:
            first_beat.cancel()
            for heartbeat in heartbeats:
                heartbeat.cancel()
        await self._report(task, outcome)

    async def _execute(self, action: RegisteredAction | None, task: Task) -> Outcome:
        if action is None:
            return Failed(f"UnknownAction: this worker has no action {task.name!r}", True)
        typed = action.typed
        try:
            given = task.input if typed is None else typed.load(task.input)
            arguments = (given, task) if action.wants_task else (given,)
            with task_span(task.name, task.traceparent, _span_attributes(task)):
                if action.is_async:
                    result = await action.func(*arguments)
                else:
                    result = await self._pool.run(action.func, *arguments)
                if inspect.isawaitable(result):
                    result = await result
            result = dump_output(result) if typed is None else typed.dump(result)
        except NonRetryableError as exc:
            logger.warning("%s failed (not retryable): %s", task.label, describe_error(exc))
            return Failed(describe_error(exc), retryable=False)
        except Exception as exc:
            logger.warning("%s failed: %s", task.label, describe_error(exc), exc_info=exc)
            return Failed(describe_error(exc), retryable=True)
        return Completed(normalize_output(result))

    async def _report(self, task: Task, outcome: Outcome) -> None:
        if isinstance(outcome, Completed):
            try:
                reply = await self._results.complete(task.task_id, outcome.output)
            except UnencodableBodyError as exc:
                logger.error("%s: the output cannot be sent: %s", task.label, exc)
                outcome = Failed(describe_error(exc), retryable=False)
            else:
                refused = reply.status is ReplyStatus.REJECTED and (
                    reply.http_status in _OUTPUT_REFUSED
                )
                if not refused:
                    self._log_reply(task, "complete", reply)
                    return
                logger.error(
                    "%s: the server refused the output (%s): %s",
                    task.label,
                    reply.http_status,
                    reply.message,
                )
                outcome = Failed(
                    f"OutputRejected: the server answered {reply.http_status}: {reply.message}",
                    retryable=False,
                )
        reply = await self._results.fail(task.task_id, outcome.error, retryable=outcome.retryable)
        self._log_reply(task, "fail", reply)

    def _log_reply(self, task: Task, verb: str, reply: Reply) -> None:
        match reply.status:
            case ReplyStatus.OK:
                if logger.isEnabledFor(logging.DEBUG):
                    logger.debug("%s: %s reported", task.label, verb)
            case ReplyStatus.STALE:
                logger.warning(
                    "%s: %s answered 409, the attempt is stale (lease lost or already "
                    "reported); result dropped: %s",
                    task.label,
                    verb,
                    reply.message,
                )
            case ReplyStatus.NOT_FOUND:
                logger.warning(
                    "%s: %s answered 404, the server does not know the task; result dropped: %s",
                    task.label,
                    verb,
                    reply.message,
                )
            case ReplyStatus.REJECTED:
                logger.error(
                    "%s: %s answered %s; result dropped: %s",
                    task.label,
                    verb,
                    reply.http_status,
                    reply.message,
                )
            case ReplyStatus.UNREACHABLE:
                logger.error(
                    "%s: %s could not be delivered (%s); the lease will expire and the server "
                    "will retry the task",
                    task.label,
                    verb,
                    reply.message,
                )

    def _heartbeat_interval(self, task: Task) -> float:
        interval = self._config.heartbeat_seconds
        action = self._registry.get(task.name)
        timeout = None if action is None else action.options.timeout_seconds
        if timeout is not None:
            # Beat well inside the lease the action declared, whatever the default interval.
            interval = min(interval, timeout / HEARTBEATS_PER_LEASE)
        return interval

    async def _heartbeat(self, task: Task, interval: float) -> None:
        """Beats now, then every ``interval``, until cancelled or the lease is lost."""
        while True:
            reply = await self._client.heartbeat(task.task_id)
            if reply.status is ReplyStatus.UNREACHABLE:
                logger.warning("%s: heartbeat not delivered: %s", task.label, reply.message)
            elif not reply.ok:
                if reply.status in (ReplyStatus.STALE, ReplyStatus.NOT_FOUND):
                    logger.warning(
                        "%s: heartbeat answered %s, the lease is lost; its result will be refused",
                        task.label,
                        reply.http_status,
                    )
                else:
                    logger.error(
                        "%s: heartbeat answered %s: %s",
                        task.label,
                        reply.http_status,
                        reply.message,
                    )
                return
            await asyncio.sleep(interval)

    # -- shutdown ---------------------------------------------------------------------

    async def _drain(self) -> None:
        """Give tasks in hand the shutdown grace to finish and report, then abandon them."""
        pending = set(self._in_hand)
        grace = self._config.shutdown_grace_seconds
        if pending:
            logger.info(
                "stopping: waiting up to %.1f s for %d task(s) in hand", grace, len(pending)
            )
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        force = asyncio.create_task(self._force.wait())
        try:
            while pending and not self._force.is_set():
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                await asyncio.wait(
                    pending | {force}, timeout=remaining, return_when=asyncio.FIRST_COMPLETED
                )
                # Answers to results sent before the stop may still hand over tasks.
                pending = {handler for handler in self._in_hand if not handler.done()}
        finally:
            force.cancel()
            await self._abandon(set(self._in_hand))
        await self._abandon(set(self._heartbeats))

    async def _abandon(self, handlers: set[asyncio.Task[None]]) -> None:
        for handler in handlers:
            if handler.done():
                continue
            task = self._in_hand.get(handler)
            if task is not None:
                logger.warning(
                    "abandoning %s; its lease will expire and the server will retry it",
                    task.label,
                )
            handler.cancel()
        await asyncio.gather(*handlers, return_exceptions=True)

    # -- helpers ----------------------------------------------------------------------

    def _backoff(self, failures: int) -> float:
        doublings = min(failures - 1, self._config.max_backoff_doublings)
        return float(self._config.backoff_seconds * 2**doublings)

    async def _pause(self, seconds: float) -> bool:
        """Sleep, but wake when stopped; False when stopped."""
        try:
            await asyncio.wait_for(self._stop.wait(), seconds)
        except TimeoutError:
            return True
        return False

    async def _unless_stopped(self, work: Coroutine[Any, Any, T]) -> T | None:
        """Await ``work``, cancelling it when ``stop`` is set first; None when stopped.

        When both finish together, the result wins: tasks already leased are worth running.
        """
        job = asyncio.create_task(work)
        stopped = asyncio.create_task(self._stop.wait())
        try:
            await asyncio.wait({job, stopped}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopped.cancel()
            if not job.done():
                job.cancel()
                await asyncio.gather(job, return_exceptions=True)
        if job.cancelled():
            return None
        return job.result()


def _span_attributes(task: Task) -> dict[str, str | int]:
    return {
        "orchy.task_id": task.task_id,
        "orchy.flow_id": task.flow_id,
        "orchy.action": task.name,
        "orchy.attempt": task.attempt,
    }
