"""Who acted on a run: the ``by`` of its history entries.

A request's principal (``principal_of(request.scope).name``; "anonymous" on a server that
checks no credentials) is written as ``by`` in the entry of what it asked for: RUN_STARTED,
RUN_PAUSED, RUN_RESUMED, RUN_TERMINATED, EVENT_RECEIVED and EVENT_BUFFERED (an event by run
id), and the EVENT_RECEIVED of each run a correlated event reaches, whenever it reaches it
(a kept event and a delivery resumed by another server carry their publisher along).

What the engine does on its own is by a run, not a principal: a sub-workflow's child is
started, and terminated when its parent ends, by ``run_as(parent id)``, "flow:<parent id>";
the principal behind it is in the parent's history. Entries of the engine's own work
(results, timers, a terminate action) name nobody.
"""

from __future__ import annotations

RUN_PREFIX = "flow:"


def run_as(flow_id: str) -> str:
    """The ``by`` of what run ``flow_id`` does to another run (its sub-workflow's child)."""
    return f"{RUN_PREFIX}{flow_id}"


__all__ = ["RUN_PREFIX", "run_as"]
