"""The script process: evaluates JavaScript programs in V8 (mini-racer) for the server.

The server (:mod:`app.actions.js_pool`) starts it as ``python -P js_sandbox.py HEADROOM``
and speaks frames over its stdin and stdout: a header line (a JSON object whose ``size``
says how many bytes follow) and then that many bytes of UTF-8 payload.

- Once started, the process sends ``{"status": "ready"}``.
- A request's header holds ``timeout`` (seconds) and ``memory`` (bytes, mini-racer's heap
  limit); its payload is the program. The answer's ``status`` is ``ok`` (the payload is the
  program's value, which must be text), ``error`` (the payload is the message), ``timeout``
  or ``oom``. ``retire: true`` asks the server to replace this process once it has read the
  answer.

Running this file by path, with ``-P``, imports neither ``app`` nor the server's settings:
the process starts in about a quarter of a second and holds little besides V8. The module
imports nothing but the standard library at the top, because the server imports it too, for
the framing; V8 is loaded only by :func:`main`.

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
from collections.abc import Callable
from contextlib import suppress
from typing import IO, TYPE_CHECKING, Any

if TYPE_CHECKING:
    from py_mini_racer import MiniRacer

STATUS = "status"
SIZE = "size"
TIMEOUT = "timeout"
MEMORY = "memory"
RETIRE = "retire"
READY = "ready"
OK = "ok"
ERROR = "error"
TIMED_OUT = "timeout"
OUT_OF_MEMORY = "oom"

# Longer header lines are not ours: the stream is broken.
MAX_HEADER_BYTES = 4096
# Freed isolates leave the allocator a little bigger (about 36 MiB after thousands of heavy
# scripts); past this much growth the process asks to be replaced before the growth eats the
# headroom scripts are promised.
DRIFT_LIMIT_BYTES = 32 * 1024 * 1024
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
        from py_mini_racer import MiniRacer

        self._make: Callable[[], MiniRacer] = MiniRacer
        self._racer: MiniRacer | None = None

    def prepare(self) -> None:
        if self._racer is None:
            self._racer = self._make()

    def evaluate(self, program: str, timeout: float, memory: int) -> tuple[str, str]:
        from py_mini_racer import JSEvalException, JSOOMException, JSTimeoutException

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

    def discard(self, timeout: float) -> None:
        """Close the isolate used last; call after answering, off the request's path."""
        from py_mini_racer import JSEvalException

        racer, self._racer = self._racer, None
        if racer is None:
            return
        # After a stop, closing at once lets V8 call back into a closed asyncio loop; a no-op
        # returns once the stop has completed.
        with suppress(JSEvalException):
            racer.eval("0", timeout_sec=timeout)
        racer.close()


def main(argv: list[str]) -> None:
    from py_mini_racer import init_mini_racer

    headroom = int(argv[1])
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is for the server, which stops us
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
        evaluator.discard(timeout=1.0)
    evaluator.prepare()
    baseline = _data_segment_bytes()
    if baseline is not None:
        limit = baseline + headroom
        resource.setrlimit(resource.RLIMIT_DATA, (limit, limit))
    frames_out.write(encode_frame({STATUS: READY, "baseline": baseline, "headroom": headroom}))
    frames_out.flush()

    retire = False
    while (frame := _read_frame(requests)) is not None:
        header, payload = frame
        timeout = float(header[TIMEOUT])
        status, text = evaluator.evaluate(payload.decode(), timeout, int(header[MEMORY]))
        frames_out.write(encode_frame({STATUS: status, RETIRE: retire}, text.encode()))
        frames_out.flush()
        evaluator.discard(timeout)
        try:
            evaluator.prepare()
        except MemoryError:
            retire = True
        used = _data_segment_bytes()
        if baseline is not None and used is not None and used - baseline > DRIFT_LIMIT_BYTES:
            retire = True
    # Skips interpreter finalisation, which can hang on a V8 isolate left open.
    os._exit(0)


if __name__ == "__main__":
    main(sys.argv)
