"""The script process: evaluates JavaScript programs in V8 (mini-racer) for the server.

The server (:mod:`app.actions.js_pool`) starts it as ``python -P js_sandbox.py HEADROOM
DRIFT`` and speaks frames over its stdin and stdout: a header line (a JSON object whose ``size``
says how many bytes follow) and then that many bytes of UTF-8 payload.

- Once started, the process sends ``{"status": "ready"}``.
- A request's header holds ``timeout`` (seconds) and ``memory`` (bytes, mini-racer's heap
  limit); its payload is the program. The process acknowledges it at once with
  ``{"status": "received"}``, so a process that dies before acknowledging never ran the
  program, and another process can run it.
- The answer's ``status`` is ``ok`` (the payload is the program's value, which must be
  text), ``error`` (the payload is the message), ``timeout`` or ``oom``. After the last two
  the process exits: V8 may not have stopped yet, as some builtins cannot be interrupted.
  ``retire: true`` asks the server to replace the process once it has read the answer: it
  is sent once the process, idle, uses more than DRIFT bytes over its baseline.

Running this file by path, with ``-P``, imports neither ``app`` nor the server's settings:
the process starts in about 0.15 s and holds little besides V8. The server imports this
module too, for the framing, but only :func:`main` loads and initialises V8.

Memory: after start-up the process caps its data segment (``RLIMIT_DATA``) at what it uses
then (about 560 MiB, mostly V8's 512 MiB code range, which counts although it is only
reserved) plus HEADROOM. A single allocation V8 cannot stop at its heap limit (a
``new Array(1e9).fill(1)``, a huge ``ArrayBuffer``) then fails or aborts this process, never
the server. ``RLIMIT_AS`` is of no use: V8 reserves about 1.4 TiB of address space up front.
"""

from __future__ import annotations

import json
import os
import resource
import select
import signal
import sys
import threading
from typing import IO, Any

from py_mini_racer import (
    JSEvalException,
    JSOOMException,
    JSTimeoutException,
    MiniRacer,
    init_mini_racer,
)

STATUS = "status"
SIZE = "size"
TIMEOUT = "timeout"
MEMORY = "memory"
RETIRE = "retire"
READY = "ready"
RECEIVED = "received"
OK = "ok"
ERROR = "error"
TIMED_OUT = "timeout"
OUT_OF_MEMORY = "oom"
# V8 was told to stop the program, but some builtins run on (and may yet abort the process
# for memory), so a process that answered so serves no more.
ENDING_STATUSES = frozenset({TIMED_OUT, OUT_OF_MEMORY})

# Longer header lines are not ours: the stream is broken.
MAX_HEADER_BYTES = 4096
# Created and closed before the baseline is measured, so that memory every isolate's life
# leaves behind (the allocator's arenas, cached thread stacks) counts as baseline.
WARM_UP_ISOLATES = 2
_STATUS_FILE = "/proc/self/status"
_VM_DATA = "VmData:"
_KIB = 1024
_EXIT_PARENT_GONE = 0


class FrameError(Exception):
    """The peer sent something that is not a frame."""


def encode_frame(header: dict[str, Any], payload: bytes = b"") -> bytes:
    return json.dumps({**header, SIZE: len(payload)}).encode() + b"\n" + payload


def decode_header(line: bytes) -> dict[str, Any]:
    try:
        header = json.loads(line)
    except ValueError:
        header = None
    if not isinstance(header, dict) or not isinstance(header.get(SIZE), int):
        raise FrameError(f"not a frame header: {line[:80]!r}")
    return header


def _read_frame(stream: IO[bytes]) -> tuple[dict[str, Any], bytes] | None:
    line = stream.readline(MAX_HEADER_BYTES)
    if not line:
        return None
    header = decode_header(line)
    payload = stream.read(header[SIZE])
    if len(payload) < header[SIZE]:
        return None
    return header, payload


def _data_segment_bytes() -> int | None:
    try:
        with open(_STATUS_FILE, encoding="ascii") as status:
            for line in status:
                if line.startswith(_VM_DATA):
                    return int(line.split()[1]) * _KIB
    except OSError:
        pass
    return None


def _exit_when_parent_is_gone() -> None:
    # Stdin hangs up once the server is gone, however it died, and a script may be running
    # on the main thread, so a watcher must notice. Polling for no event at all waits for
    # the hang-up alone, not for requests.
    def watch() -> None:
        poller = select.poll()
        poller.register(sys.stdin.fileno(), 0)
        while not poller.poll():
            pass
        os._exit(_EXIT_PARENT_GONE)

    threading.Thread(target=watch, name="orchy-js-parent-watch", daemon=True).start()


class _Evaluator:
    """One fresh isolate per program, created ahead so that a request does not wait for it."""

    def __init__(self) -> None:
        self._racer: MiniRacer | None = None

    def prepare(self) -> None:
        if self._racer is None:
            self._racer = MiniRacer()

    def evaluate(self, program: str, timeout: float, memory: int) -> tuple[str, str]:
        try:
            self.prepare()
        except MemoryError:
            return OUT_OF_MEMORY, ""
        racer = self._racer
        assert racer is not None
        try:
            value = racer.eval(program, timeout_sec=timeout, max_memory=memory)
        except JSTimeoutException:
            return TIMED_OUT, ""
        except JSOOMException:
            return OUT_OF_MEMORY, ""
        except JSEvalException as error:
            return ERROR, str(error)
        except MemoryError:
            return OUT_OF_MEMORY, ""
        if not isinstance(value, str):
            return ERROR, f"script runner returned {type(value).__name__}, not text"
        return OK, value

    def discard(self) -> None:
        """Close the isolate used last; call after answering, off the request's path."""
        racer, self._racer = self._racer, None
        if racer is not None:
            racer.close()


SCRIPT_NICENESS = 10


def main(argv: list[str]) -> None:
    headroom, drift = int(argv[1]), int(argv[2])
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is for the server, which stops us
    # A script spinning at full speed must not take the CPU from the server's event loop.
    os.nice(SCRIPT_NICENESS)
    # A V8 fatal error aborts the process; a core of its 1.4 TiB address space helps no one.
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    # V8 and mini-racer may print (GC traces before a fatal out-of-memory): keep stdout for
    # frames alone by giving it a private descriptor and pointing fd 1 at stderr.
    frames_out = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    requests = sys.stdin.buffer
    init_mini_racer(ignore_duplicate_init=True)  # on the main thread, as V8 requires
    _exit_when_parent_is_gone()

    evaluator = _Evaluator()
    for _ in range(WARM_UP_ISOLATES):
        evaluator.prepare()
        evaluator.discard()
    evaluator.prepare()
    baseline = _data_segment_bytes()
    if baseline is not None:
        limit = baseline + headroom
        resource.setrlimit(resource.RLIMIT_DATA, (limit, limit))
    try:
        _send(frames_out, {STATUS: READY, "baseline": baseline, "headroom": headroom})
        _serve(requests, frames_out, evaluator, None if baseline is None else baseline + drift)
    except (BrokenPipeError, FrameError):
        pass  # the server is gone, or is not one
    # Skips interpreter finalisation, which can hang on a V8 isolate left open.
    os._exit(0)


def _serve(
    requests: IO[bytes], frames_out: IO[bytes], evaluator: _Evaluator, idle_limit: int | None
) -> None:
    retire = False
    while (frame := _read_frame(requests)) is not None:
        header, payload = frame
        _send(frames_out, {STATUS: RECEIVED})
        timeout = float(header[TIMEOUT])
        program = payload.decode(errors="replace")
        status, text = evaluator.evaluate(program, timeout, int(header[MEMORY]))
        _send(frames_out, {STATUS: status, RETIRE: retire}, text.encode(errors="replace"))
        if status in ENDING_STATUSES:
            return
        evaluator.discard()
        try:
            evaluator.prepare()
        except MemoryError:
            retire = True
        used = _data_segment_bytes()
        if idle_limit is not None and used is not None and used > idle_limit:
            retire = True


def _send(frames_out: IO[bytes], header: dict[str, Any], payload: bytes = b"") -> None:
    frames_out.write(encode_frame(header, payload))
    frames_out.flush()


if __name__ == "__main__":
    main(sys.argv)
