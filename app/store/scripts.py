"""Loads the Lua scripts of ``lua/``; the run-changing ones get ``common.lua`` in front."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from typing import Any

SCRIPT_NAMES = (
    "start",
    "transition",
    "requeue",
    "poll",
    "heartbeat",
    "event",
    "claim_timers",
    "pause",
    "resume",
    "terminate",
    "register_workflow",
    "timer_failed",
    "child_started",
    "child_ended",
    "retry",
    "note_rerun",
    "search_prune",
    "record_poll",
    "claim_run_end",
)


def script_source(name: str) -> str:
    folder = resources.files("app.store") / "lua"
    common = (folder / "common.lua").read_text()
    return common + "\n" + (folder / f"{name}.lua").read_text()


@dataclass
class Scripts:
    start: Any
    transition: Any
    requeue: Any
    poll: Any
    heartbeat: Any
    event: Any
    claim_timers: Any
    pause: Any
    resume: Any
    terminate: Any
    register_workflow: Any
    timer_failed: Any
    child_started: Any
    child_ended: Any
    retry: Any
    note_rerun: Any
    search_prune: Any
    record_poll: Any
    claim_run_end: Any

    @classmethod
    def register(cls, client: Any, wrap: Callable[[str, Any], Any] | None = None) -> Scripts:
        """Registers every script on ``client`` (EVALSHA, falling back to EVAL once); each
        is ``wrap(name, script)`` when given (the store times them)."""
        scripts = {name: client.register_script(script_source(name)) for name in SCRIPT_NAMES}
        if wrap is not None:
            scripts = {name: wrap(name, script) for name, script in scripts.items()}
        return cls(**scripts)
