"""The worker's span of each task, in its run's trace: a server with tracing on
(``ORCHY_OTEL=true``) sends each task with its attempt's span as W3C ``traceparent``, and
the user function runs inside a span that is that span's child. Only when OpenTelemetry is
installed (``pip install 'orchy[otel]'``, or opentelemetry-api beside the light install);
the spans go to the tracer provider the worker's program set up."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

try:
    from opentelemetry import trace
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
except ImportError:  # the light install without OpenTelemetry: no spans
    TRACING = False
else:
    TRACING = True
    _PROPAGATOR = TraceContextTextMapPropagator()

TRACER_NAME = "orchy.worker"


@contextlib.contextmanager
def task_span(
    name: str, traceparent: str | None, attributes: dict[str, str | int]
) -> Iterator[None]:
    """The user function's span, as a child of ``traceparent``'s; nothing without either."""
    if not TRACING or not traceparent:
        yield
        return
    parent = _PROPAGATOR.extract({"traceparent": traceparent})
    tracer = trace.get_tracer(TRACER_NAME)
    with tracer.start_as_current_span(
        name, context=parent, kind=trace.SpanKind.CONSUMER, attributes=attributes
    ):
        yield
