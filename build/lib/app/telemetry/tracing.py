"""The server's OpenTelemetry spans of runs (opt-in: ``ORCHY_OTEL=true``; the ``otel``
extra installs what it needs). Spans are emitted when what they time has ended, with its
real start and end, and the ids of ``trace_ids``: nothing is kept between the start and the
end of a run, whichever server process handles each part of it.

The spans go to the global tracer provider: the one the application set up (as a test does,
or ``opentelemetry-instrument``), else one made here that exports over OTLP/HTTP as the
standard ``OTEL_EXPORTER_OTLP_*`` variables say (``ORCHY_OTEL_EXPORTER=console`` prints them
instead)."""

from __future__ import annotations

import contextvars
from dataclasses import dataclass
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import Tracer, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SpanExporter,
)
from opentelemetry.sdk.trace.id_generator import IdGenerator, RandomIdGenerator
from opentelemetry.trace import (
    NonRecordingSpan,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
)

from app.telemetry import trace_ids

SERVICE = "orchy-server"
CONSOLE = "console"
_random = RandomIdGenerator()
# The ids of the span being started now (spans are started one at a time, in one thread).
_chosen: contextvars.ContextVar[tuple[int, int] | None] = contextvars.ContextVar(
    "orchy_chosen_ids", default=None
)


class _ChosenIds(IdGenerator):
    """Gives the ids chosen for the span being started, random ones otherwise."""

    def generate_span_id(self) -> int:
        chosen = _chosen.get()
        return _random.generate_span_id() if chosen is None else chosen[1]

    def generate_trace_id(self) -> int:
        chosen = _chosen.get()
        return _random.generate_trace_id() if chosen is None else chosen[0]


def _provider(exporter: str) -> TracerProvider:
    current = trace.get_tracer_provider()
    if isinstance(current, TracerProvider):
        return current
    provider = TracerProvider(resource=Resource.create({SERVICE_NAME: SERVICE}))
    chosen: SpanExporter
    if exporter == CONSOLE:
        chosen = ConsoleSpanExporter()
    else:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        chosen = OTLPSpanExporter()
    provider.add_span_processor(BatchSpanProcessor(chosen))
    trace.set_tracer_provider(provider)
    return provider


@dataclass(frozen=True)
class SpanTimes:
    """Nanoseconds since the epoch, as OpenTelemetry takes them."""

    start_ns: int
    end_ns: int


class RunTracing:
    def __init__(self, exporter: str) -> None:
        tracer = _provider(exporter).get_tracer("orchy.server")
        if not isinstance(tracer, Tracer):  # pragma: no cover - the SDK's provider gives one
            raise TypeError("OpenTelemetry's SDK tracer is needed")
        # Only this tracer: spans of other instrumentation keep their random ids.
        tracer.id_generator = _ChosenIds()
        self.tracer = tracer

    def _emit(
        self,
        name: str,
        ids: tuple[int, int],
        parent: int | None,
        times: SpanTimes,
        attributes: dict[str, Any],
        error: str = "",
        kind: SpanKind = SpanKind.INTERNAL,
    ) -> None:
        context = None
        if parent is not None:
            parent_context = SpanContext(
                ids[0], parent, is_remote=True, trace_flags=TraceFlags(TraceFlags.SAMPLED)
            )
            context = trace.set_span_in_context(NonRecordingSpan(parent_context))
        token = _chosen.set(ids)
        try:
            span = self.tracer.start_span(
                name,
                context=context,
                kind=kind,
                attributes=attributes,
                start_time=times.start_ns,
            )
        finally:
            _chosen.reset(token)
        if error:
            span.set_status(Status(StatusCode.ERROR, error))
        span.end(end_time=max(times.end_ns, times.start_ns))

    def run_ended(self, flow_id: str, workflow: str, status: str, times: SpanTimes) -> None:
        self._emit(
            f"run {workflow}",
            (trace_ids.trace_id(flow_id), trace_ids.run_span_id(flow_id)),
            None,
            times,
            {"orchy.flow_id": flow_id, "orchy.workflow": workflow, "orchy.status": status},
            error="" if status == "COMPLETED" else status,
        )

    def attempt_ended(
        self, flow_id: str, seq: int, attempt: int, action: str, times: SpanTimes, error: str
    ) -> None:
        """A user task's attempt: from its lease (or its execution's creation) to its end."""
        self._emit(
            action,
            (trace_ids.trace_id(flow_id), trace_ids.attempt_span_id(flow_id, seq, attempt)),
            trace_ids.run_span_id(flow_id),
            times,
            {
                "orchy.flow_id": flow_id,
                "orchy.action": action,
                "orchy.seq": seq,
                "orchy.attempt": attempt,
            },
            error=error,
            kind=SpanKind.PRODUCER,
        )

    def system_action(
        self, flow_id: str, action_id: int, kind: str, at_ns: int, error: str
    ) -> None:
        """A system action that ran within a transition (a script, a switch, a set)."""
        trace_id = trace_ids.trace_id(flow_id)
        self._emit(
            f"action {action_id}",
            (trace_id, _random.generate_span_id()),
            trace_ids.run_span_id(flow_id),
            SpanTimes(at_ns, at_ns),
            {"orchy.flow_id": flow_id, "orchy.action_id": action_id, "orchy.op": kind},
            error=error,
        )
