"""OpenTelemetry (``ORCHY_OTEL=true``): a run is one trace, whose id comes from its flow id;
the server emits the run's span, a span per task attempt and per system action; each task
carries its attempt's span to the worker (``traceparent``), and the worker library runs the
user function in a span that is its child.

The server runs in this process under a real uvicorn (its spans and the worker's go to one
in-memory exporter), on a Redis of its own: every server on a Redis hears of a run's end,
and only the first to claim it emits the run's span."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from app.settings import Settings
from app.telemetry import trace_ids
from orchy import Worker
from orchy.testing import running_worker
from tests.helpers.definitions import system, user, workflow
from tests.helpers.http import Api, serving
from tests.helpers.processes import Processes, RedisProcess
from tests.helpers.waiting import unique, wait_until
from tests.helpers.worker_wire import fast_worker


@pytest.fixture(scope="module")
def exporter() -> Iterator[InMemorySpanExporter]:
    """Every span of this process, the server's and the worker's, kept in memory."""
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        provider = TracerProvider()
        trace.set_tracer_provider(provider)
    kept = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(kept))
    yield kept
    kept.shutdown()


def _of_flow(spans: tuple[ReadableSpan, ...], flow_id: str) -> list[ReadableSpan]:
    return [span for span in spans if (span.attributes or {}).get("orchy.flow_id") == flow_id]


def _scope(span: ReadableSpan) -> str:
    return span.instrumentation_scope.name if span.instrumentation_scope else ""


async def test_a_run_is_one_trace_joined_by_the_workers_spans(
    exporter: InMemorySpanExporter, processes: Processes, tmp_path: Path, settings: Settings
) -> None:
    redis = RedisProcess(tmp_path / "redis")
    processes.redises.append(redis)
    await redis.start()
    traced = settings.model_copy(update={"redis_url": redis.url, "otel": True})
    name, first, second = unique("traced"), unique("traced-first"), unique("traced-second")
    with serving(traced) as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
            api = Api(http)
            await api.register(
                workflow(
                    name,
                    user(1, first, {"default": [2]}),
                    system(2, "switch", {"default": [3]}, expression="{$.input.way}"),
                    user(3, second),
                )
            )
            flow_id = await api.start(name, {"way": "on"})
            worker = Worker(server.url, settings=fast_worker(traced), worker_id=unique("w"))

            @worker.action(first)
            def one(data: dict[str, Any]) -> dict[str, Any]:
                return {"one": 1}

            @worker.action(second)
            async def two(data: dict[str, Any]) -> dict[str, Any]:
                return {"two": 2}

            with running_worker(worker):
                await api.wait_status(flow_id, "COMPLETED")

            async def run_span_emitted() -> bool:
                return any(
                    span.name == f"run {name}"
                    for span in _of_flow(exporter.get_finished_spans(), flow_id)
                )

            await wait_until(run_span_emitted, what="the run's span")

    spans = _of_flow(exporter.get_finished_spans(), flow_id)
    trace_id = trace_ids.trace_id(flow_id)
    assert {span.context.trace_id for span in spans if span.context} == {trace_id}
    [run] = [span for span in spans if span.name == f"run {name}"]
    assert run.parent is None
    assert run.context is not None and run.context.span_id == trace_ids.run_span_id(flow_id)
    assert (run.attributes or {})["orchy.status"] == "COMPLETED"

    server_spans = [span for span in spans if _scope(span) == "orchy.server"]
    attempts = {
        (span.attributes or {})["orchy.action"]: span
        for span in server_spans
        if "orchy.action" in (span.attributes or {})
    }
    assert set(attempts) == {first, second}
    for span in attempts.values():
        assert span.parent is not None and span.parent.span_id == trace_ids.run_span_id(flow_id)
        assert span.start_time is not None and span.end_time is not None
        assert run.start_time is not None and span.start_time >= run.start_time
        assert span.end_time >= span.start_time
    [switch] = [
        span for span in server_spans if (span.attributes or {}).get("orchy.action_id") == 2
    ]
    assert switch.parent is not None and switch.parent.span_id == trace_ids.run_span_id(flow_id)

    worker_spans = {span.name: span for span in spans if _scope(span) == "orchy.worker"}
    assert set(worker_spans) == {first, second}
    for action, span in worker_spans.items():
        execution = attempts[action]
        assert span.parent is not None and execution.context is not None
        assert span.parent.span_id == execution.context.span_id
        assert span.parent.trace_id == trace_id
        # The worker's span lies within its attempt's.
        assert span.start_time is not None and execution.start_time is not None
        assert span.end_time is not None and execution.end_time is not None
        assert execution.start_time <= span.start_time <= span.end_time <= execution.end_time


async def test_without_tracing_tasks_carry_no_trace_context(api: Api) -> None:
    name = unique("untraced")
    await api.register(workflow(name, user(1, name)))
    await api.start(name)
    task = await api.poll_one(name)
    assert "traceparent" not in task
