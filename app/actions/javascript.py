"""javascript: run a script in V8 (mini-racer) with ``$`` bound to the run's data document.

The action's output holds every top-level key of ``$`` that the script added or changed,
plus ``result``, the script's completion value (which wins over a ``$.result`` the script
sets). Each run gets a fresh V8 isolate (about 3 ms of a 4-5 ms run), so scripts cannot see
each other's globals, and a script stopped for time or memory leaves nothing behind.

mini-racer quirks handled here:

- V8 must be initialised on the main thread: when the first isolate is created on another
  thread, later isolates crash the process (segfault or a failed V8 check). Importing this
  module initialises it when the import happens on the main thread, as it does in the
  server, the CLI and pytest.
- ``eval`` with a timeout refuses to run on a thread with a running asyncio loop, so such
  callers are served from a helper thread.
- An isolate must be closed, or the interpreter hangs at exit. Closing right after a
  timeout lets V8 call back into a closed asyncio loop (a noisy "Exception ignored"), so a
  stopped isolate first evaluates a no-op, which returns once the stop has completed.
"""

from __future__ import annotations

import asyncio
import json
import re
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import suppress
from dataclasses import dataclass
from typing import Any, TypeVar

from py_mini_racer import (
    JSEvalException,
    JSOOMException,
    JSTimeoutException,
    MiniRacer,
    init_mini_racer,
)

from app.actions.base import Done, Fail, Outcome, SystemAction
from app.definition import ActionDef, DefinitionError
from app.jsontypes import JSON, JSONObject
from app.settings import get_settings

_T = TypeVar("_T")

RESULT_KEY = "result"

# Runs the script as global code, so its completion value comes back, and reports either
# the document and the result or the error, as one JSON text so that types stay exact.
_RUNNER = """
var $ = JSON.parse(%(document)s);
(function (script) {
  function describe(error) {
    try {
      return error instanceof Error ? String(error) : "uncaught " + JSON.stringify(error);
    } catch (ignored) {
      return "uncaught exception";
    }
  }
  try {
    var result = (0, eval)(script);
    return JSON.stringify({document: $, result: result});
  } catch (error) {
    return JSON.stringify({error: describe(error)});
  }
})(%(script)s)
"""

# Parses the script exactly as the runner would, and stops at the prepended throw before
# any of it runs.
_COMPILED_MARK = "orchy:compiled"
_SYNTAX_CHECK = """
var $ = {};
(function (source) {
  try {
    (0, eval)(source);
  } catch (error) {
    return error === %(mark)s ? "" : String(error);
  }
  return "";
})(%(source)s)
"""

_MIB = 1024 * 1024
_V8_LOCATION = re.compile(r"^<anonymous>:\d+: ")

if threading.current_thread() is threading.main_thread():
    init_mini_racer(ignore_duplicate_init=True)


class ScriptError(Exception):
    """A script failed, timed out or ran out of memory; the message says which."""


@dataclass(frozen=True)
class Limits:
    timeout_seconds: float
    max_memory_bytes: int


@dataclass(frozen=True)
class Evaluation:
    document: JSON
    result: JSON


class JavaScriptAction(SystemAction):
    name = "javascript"
    blocking = True

    def __init__(
        self, timeout_seconds: float | None = None, max_memory_bytes: int | None = None
    ) -> None:
        """Limits default to ``js_timeout_seconds`` and ``js_max_memory_bytes``."""
        self._timeout_seconds = timeout_seconds
        self._max_memory_bytes = max_memory_bytes

    def limits(self) -> Limits:
        settings = get_settings()
        return Limits(
            timeout_seconds=(
                settings.js_timeout_seconds
                if self._timeout_seconds is None
                else self._timeout_seconds
            ),
            max_memory_bytes=(
                settings.js_max_memory_bytes
                if self._max_memory_bytes is None
                else self._max_memory_bytes
            ),
        )

    def validate(self, action: ActionDef) -> None:
        script = action.expression
        if not isinstance(script, str) or not script.strip():
            raise DefinitionError(f"{action.label}: javascript needs an expression (the script)")
        limits = self.limits()
        try:
            problem = _off_event_loop(lambda: syntax_error(script, limits))
        except ScriptError as error:
            raise DefinitionError(f"{action.label}: script could not be checked: {error}") from None
        if problem:
            raise DefinitionError(f"{action.label}: script does not compile: {problem}")

    def run(self, action: ActionDef, document: JSONObject) -> Outcome:
        script = action.expression or ""
        limits = self.limits()
        try:
            evaluation = _off_event_loop(lambda: evaluate(script, document, limits))
        except ScriptError as error:
            return Fail(f"javascript {action.label}: {error}")
        after = evaluation.document
        changed = (
            {
                key: value
                for key, value in after.items()
                if key not in document or not same_json(document[key], value)
            }
            if isinstance(after, dict)
            else {}
        )
        return Done(output={**changed, RESULT_KEY: evaluation.result})


def evaluate(script: str, document: JSONObject, limits: Limits) -> Evaluation:
    """Run ``script`` with ``$`` = ``document``; the document afterwards and the result."""
    program = _RUNNER % {"document": _js_string(json.dumps(document)), "script": _js_string(script)}
    report = json.loads(_eval_isolated(program, limits))
    if "error" in report:
        raise ScriptError(report["error"])
    return Evaluation(document=report.get("document"), result=report.get(RESULT_KEY))


def syntax_error(script: str, limits: Limits) -> str:
    """The SyntaxError ``script`` raises when parsed, or ``""`` when it compiles."""
    mark = _js_string(_COMPILED_MARK)
    program = _SYNTAX_CHECK % {"mark": mark, "source": _js_string(f"throw {mark};\n{script}")}
    return _eval_isolated(program, limits)


def same_json(left: JSON, right: JSON) -> bool:
    """Equal as JSON values: ``1 == 1.0`` but ``true != 1``, unlike Python's ``==``."""
    if isinstance(left, bool) or isinstance(right, bool):
        return left is right
    if isinstance(left, dict) and isinstance(right, dict):
        return left.keys() == right.keys() and all(
            same_json(value, right[key]) for key, value in left.items()
        )
    if isinstance(left, list) and isinstance(right, list):
        return len(left) == len(right) and all(map(same_json, left, right))
    if isinstance(left, dict | list) or isinstance(right, dict | list):
        return False
    return bool(left == right)


def _eval_isolated(program: str, limits: Limits) -> str:
    racer = MiniRacer()
    try:
        try:
            value: Any = racer.eval(
                program, timeout_sec=limits.timeout_seconds, max_memory=limits.max_memory_bytes
            )
        except JSTimeoutException:
            _settle(racer, limits)
            raise ScriptError(f"timed out after {limits.timeout_seconds:g}s") from None
        except JSOOMException:
            _settle(racer, limits)
            raise ScriptError(
                f"ran out of memory (limit {limits.max_memory_bytes / _MIB:g} MiB)"
            ) from None
        except JSEvalException as error:
            raise ScriptError(_first_line(str(error))) from None
    finally:
        racer.close()
    if not isinstance(value, str):
        raise ScriptError(f"script runner returned {type(value).__name__}, not text")
    return value


def _settle(racer: MiniRacer, limits: Limits) -> None:
    # Only waiting for the stop to complete; closing works whatever this answers.
    with suppress(JSEvalException):
        racer.eval("0", timeout_sec=limits.timeout_seconds)


def _off_event_loop(work: Callable[[], _T]) -> _T:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return work()
    with ThreadPoolExecutor(max_workers=1) as helper:
        return helper.submit(work).result()


def _js_string(text: str) -> str:
    # A JSON string literal is a valid JavaScript string literal.
    return json.dumps(text)


def _first_line(message: str) -> str:
    first = message.strip().splitlines()[0] if message.strip() else "script failed"
    return _V8_LOCATION.sub("", first)
