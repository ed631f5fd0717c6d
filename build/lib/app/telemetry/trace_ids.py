"""The trace ids of a run, derived from its flow id so that no trace state is stored: every
server process, and the worker a task goes to, names the same trace and the same spans.

A run is one trace; its root span is the run's, and each attempt of each execution is a
span whose parent is the run's span. A task carries its attempt's span as W3C
``traceparent``: the worker's span of the user function is that span's child."""

from __future__ import annotations

import hashlib

TRACE_ID_BYTES = 16
SPAN_ID_BYTES = 8
TRACEPARENT_VERSION = "00"
SAMPLED = "01"


def _digest(text: str, size: int) -> int:
    value = int.from_bytes(hashlib.sha256(text.encode()).digest()[:size], "big")
    return value or 1  # an id of zeros is invalid


def trace_id(flow_id: str) -> int:
    return _digest(f"run {flow_id}", TRACE_ID_BYTES)


def run_span_id(flow_id: str) -> int:
    return _digest(f"run span {flow_id}", SPAN_ID_BYTES)


def attempt_span_id(flow_id: str, seq: int, attempt: int) -> int:
    return _digest(f"attempt {flow_id}.{seq}.{attempt}", SPAN_ID_BYTES)


def traceparent(flow_id: str, seq: int, attempt: int) -> str:
    """The W3C ``traceparent`` of an attempt's span."""
    trace = f"{trace_id(flow_id):032x}"
    span = f"{attempt_span_id(flow_id, seq, attempt):016x}"
    return f"{TRACEPARENT_VERSION}-{trace}-{span}-{SAMPLED}"
