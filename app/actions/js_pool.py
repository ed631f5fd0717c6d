"""Script processes (:mod:`app.actions.js_sandbox`) that the server can kill.

A :class:`SandboxPool` keeps up to ``size`` long-lived processes, each with its own V8, and
lends one to each call of :meth:`SandboxPool.run`, which blocks its thread (never an event
loop: callers run on executor threads) until the answer or the deadline: the script's time
limit plus a grace. A process that misses the deadline is killed (it may be inside a V8
builtin that cannot be interrupted); one that dies (V8 aborts on running out of memory) is
reported. Either way it is replaced by a fresh one on the next call, whose start-up does not
count against that call's time limit.

Processes end with the server: each watches its stdin, which hangs up when the server exits
however it died; :func:`close_all` stops them earlier (the engine's close).
"""

from __future__ import annotations

import atexit
import os
import select
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

from app.actions import js_sandbox
from app.actions.js_sandbox import FrameError, decode_header, encode_frame

SANDBOX_PROGRAM = Path(js_sandbox.__file__).resolve()
# Margin, over the script's own time limit, for the process to answer after V8 stopped it.
GRACE_SECONDS = 0.5
SPAWN_TIMEOUT_SECONDS = 10.0
# Data-segment room for a process over what it uses idle, beyond the V8 heap limit itself:
# mini-racer checks the heap limit only between allocations, and buffers live off the heap.
MEMORY_SLACK_BYTES = 64 * 1024 * 1024
STOP_WAIT_SECONDS = 1.0
_READ_CHUNK_BYTES = 64 * 1024
# How a V8 fatal error (out of memory, above all) ends a process, and how the kernel's OOM
# killer does.
_OUT_OF_MEMORY_SIGNALS = frozenset({signal.SIGTRAP, signal.SIGABRT, signal.SIGKILL})


class Status(Enum):
    OK = js_sandbox.OK
    ERROR = js_sandbox.ERROR
    TIMED_OUT = js_sandbox.TIMED_OUT
    OUT_OF_MEMORY = js_sandbox.OUT_OF_MEMORY
    # The process died for another reason, or could not be started; ``text`` says why.
    BROKEN = "broken"


@dataclass(frozen=True)
class Reply:
    status: Status
    text: str = ""


_SHUTTING_DOWN = "stopped: the server is shutting down"


class _ProcessGone(Exception):
    """The process closed its stdout: it died, or broke the protocol."""


class _Process:
    """One script process and the reading end of its frames."""

    def __init__(self, headroom_bytes: int) -> None:
        self.popen = subprocess.Popen(
            [sys.executable, "-P", str(SANDBOX_PROGRAM), str(headroom_bytes)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            bufsize=0,
        )
        assert self.popen.stdin is not None and self.popen.stdout is not None
        self._stdin = self.popen.stdin
        self._stdout = self.popen.stdout.fileno()
        self._buffer = bytearray()
        self.retiring = False

    def ready(self, deadline: float) -> bool:
        try:
            frame = self.receive(deadline)
        except _ProcessGone:
            return False
        return frame is not None and frame[0].get(js_sandbox.STATUS) == js_sandbox.READY

    def send(self, header: dict[str, Any], payload: bytes) -> bool:
        """False when the process is gone, so it cannot have seen the request."""
        if self.popen.poll() is not None:
            return False
        try:
            self._stdin.write(encode_frame(header, payload))
        except (BrokenPipeError, ValueError):
            return False
        return True

    def receive(self, deadline: float) -> tuple[dict[str, Any], bytes] | None:
        """The next frame, or None when ``deadline`` (monotonic) passes first."""
        newline = self._fill_until(lambda: self._buffer.find(b"\n") + 1, deadline)
        if newline is None:
            return None
        try:
            header = decode_header(bytes(self._buffer[:newline]))
        except FrameError as error:
            raise _ProcessGone(str(error)) from None
        end = newline + header[js_sandbox.SIZE]
        if self._fill_until(lambda: end if len(self._buffer) >= end else 0, deadline) is None:
            return None
        payload = bytes(self._buffer[newline:end])
        del self._buffer[:end]
        return header, payload

    def _fill_until(self, complete: Callable[[], int], deadline: float) -> int | None:
        poller = select.poll()
        poller.register(self._stdout, select.POLLIN)
        while not (done := complete()):
            if len(self._buffer) > js_sandbox.MAX_HEADER_BYTES and b"\n" not in self._buffer:
                raise _ProcessGone("header line too long")
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not poller.poll(remaining * 1000):
                return None
            chunk = os.read(self._stdout, _READ_CHUNK_BYTES)
            if not chunk:
                raise _ProcessGone("closed its output")
            self._buffer += chunk
        return int(done)

    def kill(self) -> None:
        with suppress(ProcessLookupError):
            self.popen.kill()
        self.popen.wait()
        self._close_pipes()

    def stop(self) -> None:
        """Ask the process to exit (it does on end of input); kill it if it does not."""
        with suppress(OSError):
            self._stdin.close()
        try:
            self.popen.wait(STOP_WAIT_SECONDS)
        except subprocess.TimeoutExpired:
            self.kill()
        self._close_pipes()

    def exit_reason(self) -> Status:
        """Why a process that stopped answering ended: memory, or something else."""
        try:
            code = self.popen.wait(STOP_WAIT_SECONDS)
        except subprocess.TimeoutExpired:
            self.kill()
            return Status.BROKEN
        finally:
            self._close_pipes()
        if code < 0 and -code in _OUT_OF_MEMORY_SIGNALS:
            return Status.OUT_OF_MEMORY
        return Status.BROKEN

    def _close_pipes(self) -> None:
        for pipe in (self.popen.stdin, self.popen.stdout):
            with suppress(OSError):
                if pipe is not None:
                    pipe.close()


class SandboxPool:
    """Up to ``size`` script processes whose data segment has ``headroom_bytes`` to grow."""

    def __init__(self, size: int, headroom_bytes: int) -> None:
        self._size = size
        self._headroom_bytes = headroom_bytes
        self._slots = threading.BoundedSemaphore(size)
        self._lock = threading.Lock()
        self._idle: list[_Process] = []
        self._busy: set[_Process] = set()
        self._closed = False

    def run(self, program: str, timeout_seconds: float, max_memory_bytes: int) -> Reply:
        """Evaluate ``program`` in a script process; its value must be text."""
        header = {js_sandbox.TIMEOUT: timeout_seconds, js_sandbox.MEMORY: max_memory_bytes}
        payload = program.encode()
        with self._slots:
            process = self._take()
            while process is not None and not process.send(header, payload):
                # Died while idle, so it never saw the request: another one takes it.
                self._drop(process)
                process.kill()
                process = self._take()
            if process is None:
                return Reply(Status.BROKEN, self._why_no_process())
            deadline = time.monotonic() + timeout_seconds + GRACE_SECONDS
            try:
                frame = process.receive(deadline)
            except _ProcessGone:
                self._drop(process)
                return self._gone(process)
            if frame is None:
                self._drop(process)
                process.kill()
                return Reply(Status.TIMED_OUT)
            reply_header, text = frame
            process.retiring = bool(reply_header.get(js_sandbox.RETIRE))
            self._give_back(process)
        try:
            status = Status(reply_header.get(js_sandbox.STATUS))
        except ValueError:
            return Reply(Status.BROKEN, f"the script process answered {reply_header!r}")
        return Reply(status, text.decode())

    def start(self) -> None:
        """Start the processes that are missing now, rather than on first use."""
        with self._lock:
            missing = 0 if self._closed else self._size - len(self._idle) - len(self._busy)
        started = [_Process(self._headroom_bytes) for _ in range(missing)]
        deadline = time.monotonic() + SPAWN_TIMEOUT_SECONDS
        for process in started:
            if not process.ready(deadline):
                process.kill()
                continue
            with self._lock:
                full = self._closed or len(self._idle) + len(self._busy) >= self._size
                if not full:
                    self._idle.append(process)
            if full:
                process.stop()

    def close(self) -> None:
        """Stop every process, killing those that run a script; the pool is done."""
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
            busy = list(self._busy)
        for process in busy:
            process.kill()
        for process in idle:
            process.stop()

    def _take(self) -> _Process | None:
        with self._lock:
            if self._closed:
                return None
            while self._idle:
                process = self._idle.pop()
                if process.popen.poll() is None:
                    self._busy.add(process)
                    return process
                process.kill()
        process = _Process(self._headroom_bytes)
        if not process.ready(time.monotonic() + SPAWN_TIMEOUT_SECONDS):
            process.kill()
            return None
        with self._lock:
            self._busy.add(process)
        return process

    def _give_back(self, process: _Process) -> None:
        with self._lock:
            self._busy.discard(process)
            keep = not process.retiring and not self._closed
            if keep:
                self._idle.append(process)
        if not keep:
            process.stop()

    def _drop(self, process: _Process) -> None:
        with self._lock:
            self._busy.discard(process)

    def _why_no_process(self) -> str:
        if self._closed:
            return _SHUTTING_DOWN
        return "could not start a script process"

    def _gone(self, process: _Process) -> Reply:
        reason = process.exit_reason()
        if self._closed:
            return Reply(Status.BROKEN, _SHUTTING_DOWN)
        if reason is Status.OUT_OF_MEMORY:
            return Reply(Status.OUT_OF_MEMORY)
        return Reply(Status.BROKEN, f"the script process died ({_describe(process)})")


def _describe(process: _Process) -> str:
    code = process.popen.returncode
    if code is None:
        return "no exit status"
    if code < 0:
        with suppress(ValueError):
            return f"signal {signal.Signals(-code).name}"
    return f"exit status {code}"


_pools: dict[tuple[str, int], SandboxPool] = {}
_pools_lock = threading.Lock()


def pool(role: str, size: int, max_memory_bytes: int) -> SandboxPool:
    """The pool for ``role`` whose processes allow a ``max_memory_bytes`` V8 heap."""
    key = (role, max_memory_bytes)
    with _pools_lock:
        found = _pools.get(key)
        if found is None:
            found = _pools[key] = SandboxPool(size, max_memory_bytes + MEMORY_SLACK_BYTES)
        return found


def close_all() -> None:
    """Stop every script process; pools start new ones when used again."""
    with _pools_lock:
        pools = list(_pools.values())
        _pools.clear()
    for each in pools:
        each.close()


atexit.register(close_all)
