"""javascript: run a script in V8 (mini-racer) with ``$`` bound to the run's data document.

The action's output holds every top-level key of ``$`` that the script added or changed,
plus ``result``, the script's completion value (which wins over a ``$.result`` the script
sets). Each run gets a fresh V8 isolate, so scripts cannot see each other's globals, and a
script stopped for time or memory leaves nothing behind.

Scripts run in separate processes (:mod:`app.actions.js_pool`), never in the server: V8
cannot interrupt some builtins (``Array.from({length: 1e8})`` runs on for many seconds after
its time limit) and aborts the whole process when a single allocation is too big (``new
Array(1e9).fill(1)``). The server kills a process that overruns its script's time limit and
replaces one that died. Compiling a script at registration (which never runs it) uses a
process of its own, so that registering never waits behind running scripts.

:func:`close` stops the processes (the engine's close); :func:`start` starts them ahead of
the first script.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from app.actions import js_pool
from app.actions.base import Done, Fail, Outcome, SystemAction
from app.actions.js_pool import Status
from app.definition import ActionDef, DefinitionError
from app.jsontypes import JSON, JSONObject
from app.settings import get_settings

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
RUN_ROLE = "run"
CHECK_ROLE = "check"
# Registration compiles one script at a time and is rare.
CHECK_PROCESSES = 1


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
        try:
            problem = syntax_error(script, self.limits())
        except ScriptError as error:
            raise DefinitionError(f"{action.label}: script could not be checked: {error}") from None
        if problem:
            raise DefinitionError(f"{action.label}: script does not compile: {problem}")

    def run(self, action: ActionDef, document: JSONObject) -> Outcome:
        script = action.expression or ""
        limits = self.limits()
        try:
            evaluation = evaluate(script, document, limits)
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
    report = json.loads(_run(_run_pool(limits), program, limits))
    if "error" in report:
        raise ScriptError(report["error"])
    return Evaluation(document=report.get("document"), result=report.get(RESULT_KEY))


def syntax_error(script: str, limits: Limits) -> str:
    """The SyntaxError ``script`` raises when parsed, or ``""`` when it compiles."""
    mark = _js_string(_COMPILED_MARK)
    program = _SYNTAX_CHECK % {"mark": mark, "source": _js_string(f"throw {mark};\n{script}")}
    return _run(_check_pool(limits), program, limits)


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


def start() -> None:
    """Start the script processes now rather than on the first script; blocks briefly."""
    limits = JavaScriptAction().limits()
    _run_pool(limits).start()
    _check_pool(limits).start()


def close() -> None:
    """Stop the script processes, busy ones once their script is done (within its time limit
    and a grace); later scripts start new ones."""
    js_pool.close_all()


def _run_pool(limits: Limits) -> js_pool.SandboxPool:
    return js_pool.pool(RUN_ROLE, get_settings().js_processes, limits.max_memory_bytes)


def _check_pool(limits: Limits) -> js_pool.SandboxPool:
    return js_pool.pool(CHECK_ROLE, CHECK_PROCESSES, limits.max_memory_bytes)


def _run(pool: js_pool.SandboxPool, program: str, limits: Limits) -> str:
    """The program's value (text), or ScriptError saying why there is none."""
    reply = pool.run(program, limits.timeout_seconds, limits.max_memory_bytes)
    match reply.status:
        case Status.OK:
            return reply.text
        case Status.TIMED_OUT:
            raise ScriptError(f"timed out after {limits.timeout_seconds:g}s")
        case Status.OUT_OF_MEMORY:
            raise ScriptError(f"ran out of memory (limit {limits.max_memory_bytes / _MIB:g} MiB)")
        case Status.ERROR:
            raise ScriptError(_first_line(reply.text))
        case Status.BROKEN:
            raise ScriptError(reply.text)


def _js_string(text: str) -> str:
    # A JSON string literal is a valid JavaScript string literal.
    return json.dumps(text)


def _first_line(message: str) -> str:
    first = message.strip().splitlines()[0] if message.strip() else "script failed"
    return _V8_LOCATION.sub("", first)
