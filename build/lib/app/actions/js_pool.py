"""Script processes (:mod:`app.actions.js_sandbox`) that the server can kill.

A :class:`SandboxPool` keeps up to ``size`` long-lived processes, each with its own V8, and
lends one to each call of :meth:`SandboxPool.run`, which blocks its thread (callers run on
executor threads, never on an event loop) until the answer or the deadline: the script's
time limit plus a grace. A process that misses the deadline is killed (it may be inside a V8
builtin that cannot be interrupted); one that dies (V8 aborts when it runs out of memory) is
reported. Either way the next call starts a fresh one, and that start-up does not count
against the call's time limit.

Processes end with the server: each watches its stdin, which hangs up when the server exits
however it died. :func:`close_all` stops them earlier (the engine's close).
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
from collections import deque
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
# Freed isolates leave the allocator of a process a little bigger (about 20 MiB after
# thousands of heavy scripts); past this much growth a process asks to be replaced, before
# the growth eats the headroom scripts are promised.
DRIFT_LIMIT_BYTES = 32 * 1024 * 1024
STOP_WAIT_SECONDS = 1.0
# A process found dead before it acknowledged a program did not run it; another may.
SEND_ATTEMPTS = 2
_READ_CHUNK_BYTES = 64 * 1024
_MS_PER_SECOND = 1000
# How V8 ends a process on a fatal error (out of memory above all), how C++ does on a failed
# allocation, and how the kernel's OOM killer does.
_OUT_OF_MEMORY_SIGNALS = frozenset({signal.SIGTRAP, signal.SIGABRT, signal.SIGKILL})
_NOT_STARTED = "could not start a script process"


class Status(Enum):
    OK = js_sandbox.OK
    ERROR = js_sandbox.ERROR
    TIMED_OUT = js_sandbox.TIMED_OUT
    OUT_OF_MEMORY = js_sandbox.OUT_OF_MEMORY
    # No answer, for another reason than time or memory; ``text`` says which.
    BROKEN = "broken"


@dataclass(frozen=True)
class Reply:
    status: Status
    text: str = ""


class _ProcessGone(Exception):
    """The process closed its end of a pipe or broke the protocol: it is dead or dying."""


class _Process:
    """One script process, with deadline-bound framing over its pipes."""

    def __init__(self, headroom_bytes: int, drift_limit_bytes: int) -> None:
        self.popen = subprocess.Popen(
            [
                sys.executable,
                "-P",
                str(SANDBOX_PROGRAM),
                str(headroom_bytes),
                str(drift_limit_bytes),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            bufsize=0,
        )
        assert self.popen.stdin is not None and self.popen.stdout is not None
        self._stdin = self.popen.stdin.fileno()
        self._stdout = self.popen.stdout.fileno()
        # A stuck process must not hold the server's thread past the deadline, in a write
        # any more than in a read.
        os.set_blocking(self._stdin, False)
        self._buffer = bytearray()
        self.retiring = False

    @property
    def pid(self) -> int:
        return self.popen.pid

    def ready(self, deadline: float) -> bool:
        try:
            return self.expect(js_sandbox.READY, deadline)
        except _ProcessGone:
            return False

    def expect(self, status: str, deadline: float) -> bool:
        """Read a frame that must have ``status``; False when ``deadline`` passes first."""
        frame = self.receive(deadline)
        if frame is None:
            return False
        if frame[0].get(js_sandbox.STATUS) != status:
            raise _ProcessGone(f"sent {frame[0]!r} where {status!r} was due")
        return True

    def send(self, frame: bytes, deadline: float) -> bool:
        """Write ``frame``; False when ``deadline`` passes first."""
        if self.popen.poll() is not None:
            raise _ProcessGone("exited")
        poller = select.poll()
        poller.register(self._stdin, select.POLLOUT)
        pending = memoryview(frame)
        while pending:
            if not self._wait(poller, deadline):
                return False
            try:
                pending = pending[os.write(self._stdin, pending) :]
            except BlockingIOError:
                continue
            except OSError as error:
                raise _ProcessGone(str(error)) from None
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
                raise _ProcessGone("sent a header line that is too long")
            if not self._wait(poller, deadline):
                return None
            try:
                chunk = os.read(self._stdout, _READ_CHUNK_BYTES)
            except OSError as error:
                raise _ProcessGone(str(error)) from None
            if not chunk:
                raise _ProcessGone("closed its output")
            self._buffer += chunk
        return done

    @staticmethod
    def _wait(poller: select.poll, deadline: float) -> bool:
        remaining = deadline - time.monotonic()
        return remaining > 0 and bool(poller.poll(remaining * _MS_PER_SECOND))

    def kill(self) -> None:
        with suppress(ProcessLookupError):
            self.popen.kill()
        self.popen.wait()
        self._close_pipes()

    def stop(self) -> None:
        """Ask the process to exit (it does at end of input); kill it if it does not."""
        self._close_pipes()
        try:
            self.popen.wait(STOP_WAIT_SECONDS)
        except subprocess.TimeoutExpired:
            self.kill()

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

    def describe_exit(self) -> str:
        code = self.popen.returncode
        if code is None:
            return "still running"
        if code < 0:
            with suppress(ValueError):
                return f"signal {signal.Signals(-code).name}"
        return f"exit status {code}"

    def _close_pipes(self) -> None:
        for pipe in (self.popen.stdin, self.popen.stdout):
            if pipe is not None:
                with suppress(OSError):
                    pipe.close()


class SandboxPool:
    """Up to ``size`` script processes whose data segment has ``headroom_bytes`` to grow
    while they run a script, and which are replaced once they keep ``drift_limit_bytes`` of
    that when idle."""

    def __init__(
        self, size: int, headroom_bytes: int, drift_limit_bytes: int = DRIFT_LIMIT_BYTES
    ) -> None:
        self._size = size
        self._headroom_bytes = headroom_bytes
        self._drift_limit_bytes = drift_limit_bytes
        self._slots = threading.BoundedSemaphore(size)
        self._lock = threading.Lock()
        # Oldest first: a process prepares its next isolate after answering, so the one idle
        # longest is the likeliest to have it ready.
        self._idle: deque[_Process] = deque()
        self._busy: set[_Process] = set()
        # Starting: all processes on their way; coming: those that will be idle, not taken
        # by the caller that started them.
        self._starting = 0
        self._coming = 0
        self._waiting = 0
        self._changed = threading.Condition(self._lock)
        self._closed = False

    def run(self, program: str, timeout_seconds: float, max_memory_bytes: int) -> Reply:
        """Evaluate ``program`` in a script process; its value must be text."""
        header = {js_sandbox.TIMEOUT: timeout_seconds, js_sandbox.MEMORY: max_memory_bytes}
        frame = encode_frame(header, program.encode())
        with self._slots:
            for _ in range(SEND_ATTEMPTS):
                process = self._take()
                if process is None:
                    return Reply(Status.BROKEN, _NOT_STARTED)
                deadline = time.monotonic() + timeout_seconds + GRACE_SECONDS
                try:
                    delivered = process.send(frame, deadline) and process.expect(
                        js_sandbox.RECEIVED, deadline
                    )
                except _ProcessGone:
                    # Gone before it acknowledged the program, so without running it.
                    self._drop(process)
                    process.kill()
                    continue
                if not delivered:
                    return self._timed_out(process)
                return self._answer(process, deadline)
        return Reply(Status.BROKEN, _NOT_STARTED)

    def pids(self) -> list[int]:
        """The process ids of the pool's processes, idle or busy."""
        with self._lock:
            return [process.pid for process in (*self._idle, *self._busy)]

    def start(self, most: int | None = None) -> None:
        """Start the missing processes (at most ``most``) now, rather than on first use."""
        with self._lock:
            missing = 0 if self._closed else max(0, self._size - self._count())
            if most is not None:
                missing = min(missing, most)
            self._starting += missing
            self._coming += missing
        launched = [self._launch() for _ in range(missing)]
        deadline = time.monotonic() + SPAWN_TIMEOUT_SECONDS
        for process in launched:
            ready = process is not None and process.ready(deadline)
            with self._lock:
                self._starting -= 1
                self._coming -= 1
                keep = ready and not self._closed
                if keep and process is not None:
                    self._idle.append(process)
                self._changed.notify_all()
            if not keep and process is not None:
                process.kill()

    def close(self) -> None:
        """Stop the idle processes now and the others once their script is done.

        Scripts already running finish (within their time limit and the grace) rather than
        fail for the shutdown, and callers already inside the pool are still served, by
        processes it does not keep: the pools are shared by every engine in the process.
        """
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, deque()
            self._changed.notify_all()
        for process in idle:
            process.stop()

    def _answer(self, process: _Process, deadline: float) -> Reply:
        try:
            frame = process.receive(deadline)
        except _ProcessGone:
            self._drop(process)
            reason = process.exit_reason()
            self._replenish()
            if reason is Status.OUT_OF_MEMORY:
                return Reply(Status.OUT_OF_MEMORY)
            return Reply(Status.BROKEN, f"the script process died ({process.describe_exit()})")
        if frame is None:
            return self._timed_out(process)
        header, text = frame
        status_text = header.get(js_sandbox.STATUS)
        if status_text in js_sandbox.ENDING_STATUSES:
            self._end(process)
        else:
            process.retiring = bool(header.get(js_sandbox.RETIRE))
            self._give_back(process)
        try:
            status = Status(status_text)
        except ValueError:
            return Reply(Status.BROKEN, f"the script process answered {header!r}")
        return Reply(status, text.decode())

    def _timed_out(self, process: _Process) -> Reply:
        self._end(process)
        return Reply(Status.TIMED_OUT)

    def _end(self, process: _Process) -> None:
        """Kill a process that may still be running a script, and start its successor."""
        self._drop(process)
        process.kill()
        self._replenish()

    def _replenish(self) -> None:
        # In the background, so that neither this call nor the next waits for the start-up.
        threading.Thread(target=self.start, args=(1,), name="orchy-js-start", daemon=True).start()

    def _take(self) -> _Process | None:
        with self._lock:
            while True:
                while self._idle:
                    idle = self._idle.popleft()
                    if idle.popen.poll() is None:
                        self._busy.add(idle)
                        return idle
                    idle.kill()
                # A process on its way to the idle ones is sooner than one started now (a
                # closed pool sends none there).
                if self._closed or self._coming <= self._waiting:
                    break
                self._waiting += 1
                try:
                    self._changed.wait(SPAWN_TIMEOUT_SECONDS)
                finally:
                    self._waiting -= 1
            self._starting += 1
        process = self._launch()
        ready = process is not None and process.ready(time.monotonic() + SPAWN_TIMEOUT_SECONDS)
        with self._lock:
            self._starting -= 1
            if ready and process is not None:
                self._busy.add(process)
                return process
        if process is not None:
            process.kill()
        return None

    def _launch(self) -> _Process | None:
        try:
            return _Process(self._headroom_bytes, self._drift_limit_bytes)
        except OSError:
            return None

    def _count(self) -> int:
        return len(self._idle) + len(self._busy) + self._starting

    def _give_back(self, process: _Process) -> None:
        with self._lock:
            self._busy.discard(process)
            keep = not process.retiring and not self._closed
            if keep:
                self._idle.append(process)
                self._changed.notify()
        if not keep:
            process.stop()
            self._replenish()

    def _drop(self, process: _Process) -> None:
        with self._lock:
            self._busy.discard(process)


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


def pids() -> list[int]:
    """The process ids of every script process, idle or busy."""
    with _pools_lock:
        pools = list(_pools.values())
    return [pid for each in pools for pid in each.pids()]


def close_all() -> None:
    """Stop every script process, busy ones once their script is done; later calls start
    new ones."""
    with _pools_lock:
        pools = list(_pools.values())
        _pools.clear()
    for each in pools:
        each.close()


atexit.register(close_all)
