"""javascript: run a script in V8 (mini-racer) with ``$`` bound to the run's data document.

The action's output holds every top-level key of ``$`` that the script added or changed,
plus ``result``, the script's completion value (which wins over a ``$.result`` the script
sets). Each run gets a fresh V8 isolate, so scripts cannot see each other's globals, and a
script stopped for time or memory leaves nothing behind.

Whatever the script does, the step ends: with its output, or failed with a message. The
output is written by the runner (see ``_RUNNER``), which no script can tamper with, within
``js_max_result_bytes`` and ``js_max_result_depth``; what JSON cannot hold fails the step.

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
import logging
import re
from dataclasses import dataclass
from typing import TypeVar

import orjson

from app.actions import js_pool
from app.actions.base import Done, Fail, Outcome, SystemAction
from app.actions.js_pool import Status
from app.definition import ActionDef, DefinitionError
from app.jsontypes import JSON, JSONObject
from app.settings import get_settings

log = logging.getLogger("orchy.javascript")

# Runs the script as global code, so its completion value comes back, and answers one JSON
# text: {"output": ...} (the top-level keys of ``$`` the script added or changed, and
# ``result``) or {"error": "..."}. The answer is written by a serialiser of the runner's own,
# from builtins taken before the script runs: the script may replace or break any global
# (``JSON.stringify``, ``Object.keys``, ``Reflect.apply``...) without reaching the answer.
# Unlike ``JSON.stringify``, the serialiser refuses what JSON cannot hold instead of dropping
# it or writing null (a function, a Symbol, NaN), names where the problem is, and stops at
# the output's size and depth limits before building anything larger.
_RUNNER = """
var $;
(function (documentText, script, maxChars, maxDepth, maxMessageChars) {
  var parse = JSON.parse, stringify = JSON.stringify, keysOf = Object.keys,
    hasOwn = Object.hasOwn, isArray = Array.isArray, create = Object.create,
    apply = Reflect.apply, exec = RegExp.prototype.exec, slice = String.prototype.slice,
    isWellFormed = String.prototype.isWellFormed,
    toWellFormed = String.prototype.toWellFormed, toText = String, ErrorClass = Error,
    tagOf = Object.prototype.toString;
  // A boxed primitive (new Number(5)) is written as its value, as JSON.stringify does.
  var UNBOX = create(null);
  UNBOX["[object Number]"] = Number.prototype.valueOf;
  UNBOX["[object String]"] = String.prototype.valueOf;
  UNBOX["[object Boolean]"] = Boolean.prototype.valueOf;
  UNBOX["[object BigInt]"] = BigInt.prototype.valueOf;
  var IDENTIFIER = /^[A-Za-z_$][A-Za-z0-9_$]*$/, PATH_ENDS = 4;
  var PROBLEM = create(null);
  var problem = "";
  $ = parse(documentText);
  var pristine = parse(documentText);
  // By depth: the objects being written and the key or index of each (no prototype, so no
  // setter the script put on Object.prototype runs).
  var ancestors = create(null), names = create(null);
  var used = 0;

  function segment(name) {
    if (typeof name === "number") return "[" + name + "]";
    return apply(exec, IDENTIFIER, [name]) !== null ? "." + name : "[" + stringify(name) + "]";
  }
  // The path of the value at ``depth``; a deep one keeps its first and last few steps.
  function where(depth) {
    var path = names[0];
    for (var level = 1; level <= depth; level++) {
      if (depth > 2 * PATH_ENDS && level > PATH_ENDS && level <= depth - PATH_ENDS) {
        if (level === PATH_ENDS + 1) path += "...";
        continue;
      }
      path += segment(names[level]);
    }
    return path;
  }
  function fail(depth, what) {
    problem = where(depth) + " " + what;
    throw PROBLEM;
  }
  function spend(chars, depth) {
    used += chars;
    if (used > maxChars) {
      fail(depth, "makes the output larger than ORCHY_JS_MAX_RESULT_BYTES (" + maxChars +
        " bytes)");
    }
  }
  function text(value, depth) {
    spend(value.length + 2, depth);  // before the copy that escaping it makes
    if (!apply(isWellFormed, value, [])) {
      fail(depth, "holds a lone surrogate, which is not Unicode text");
    }
    var written = stringify(value);
    spend(written.length - value.length - 2, depth);
    return written;
  }
  function write(value, depth) {
    var kind = typeof value;
    if ((kind === "object" && value !== null) || kind === "bigint") {
      var toJSON = value.toJSON;
      if (typeof toJSON === "function") {
        value = apply(toJSON, value, [depth === 0 ? "" : toText(names[depth])]);
        kind = typeof value;
      }
    }
    if (kind === "object" && value !== null) {
      var unbox = UNBOX[apply(tagOf, value, [])];
      if (unbox !== undefined) {
        try {
          value = apply(unbox, value, []);
          kind = typeof value;
        } catch (notBoxed) {
          // An object that only claims the tag (Symbol.toStringTag): an object.
        }
      }
    }
    if (value === null) {
      spend(4, depth);
      return "null";
    }
    switch (kind) {
      case "undefined":
        return undefined;
      case "boolean":
        spend(5, depth);
        return value ? "true" : "false";
      case "string":
        return text(value, depth);
      case "number":
        if (value !== value || value === Infinity || value === -Infinity) {
          fail(depth, "is " + value + ", which JSON cannot hold");
        }
        var number = stringify(value);
        spend(number.length, depth);
        return number;
      case "bigint":
        return fail(depth, "is a BigInt, which JSON cannot hold");
      case "symbol":
        return fail(depth, "is a Symbol, which JSON cannot hold");
      case "function":
        return fail(depth, "is a function, which JSON cannot hold");
    }
    if (depth >= maxDepth) {
      fail(depth, "is nested deeper than ORCHY_JS_MAX_RESULT_DEPTH (" + maxDepth + " levels)");
    }
    for (var above = 0; above < depth; above++) {
      if (ancestors[above] === value) {
        fail(depth, "refers back to " + where(above) + " (a cycle), which JSON cannot hold");
      }
    }
    ancestors[depth] = value;
    var out, index;
    if (isArray(value)) {
      var length = value.length;
      out = "[";
      spend(2, depth);
      for (index = 0; index < length; index++) {
        names[depth + 1] = index;
        var item = write(value[index], depth + 1);
        if (item === undefined) {
          spend(4, depth + 1);
          item = "null";
        }
        if (index > 0) spend(1, depth);
        out += (index > 0 ? "," : "") + item;
      }
      return out + "]";
    }
    var keys = keysOf(value), written = 0;
    out = "{";
    spend(2, depth);
    for (index = 0; index < keys.length; index++) {
      var key = keys[index];
      names[depth + 1] = key;
      var member = write(value[key], depth + 1);
      if (member === undefined) continue;
      spend(written > 0 ? 2 : 1, depth);
      out += (written > 0 ? "," : "") + text(key, depth + 1) + ":" + member;
      written++;
    }
    return out + "}";
  }
  // Whether ``after`` is the JSON value ``before`` (parsed from the document) still is.
  function same(before, after) {
    if (before === null || typeof before !== "object") return before === after;
    if (after === null || typeof after !== "object" || typeof after.toJSON === "function") {
      return false;
    }
    var list = isArray(before);
    if (isArray(after) !== list || (list && before.length !== after.length)) return false;
    var keys = keysOf(before), now = keysOf(after);
    if (keys.length !== now.length) return false;
    for (var index = 0; index < keys.length; index++) {
      var key = keys[index];
      if (now[index] !== key || !same(before[key], after[key])) return false;
    }
    return true;
  }
  function describe(error) {
    try {
      if (error === PROBLEM) return problem;
      return error instanceof ErrorClass ? toText(error) : "uncaught " + stringify(error);
    } catch (ignored) {
      return "uncaught exception";
    }
  }
  function failure(error) {
    var message = describe(error);
    if (message.length > maxMessageChars) {
      message = apply(slice, message, [0, maxMessageChars]) + "...";
    }
    return '{"error":' + stringify(apply(toWellFormed, message, [])) + "}";
  }

  var result;
  try {
    result = (0, eval)(script);
  } catch (error) {
    return failure(error);
  }
  try {
    var output = "", count = 0, after = $;
    if (after !== null && typeof after === "object" && !isArray(after)) {
      var keys = keysOf(after);
      for (var index = 0; index < keys.length; index++) {
        var key = keys[index];
        // The script's result wins over a $.result it set.
        if (key === "result" || (hasOwn(pristine, key) && same(pristine[key], after[key]))) {
          continue;
        }
        names[0] = "$" + segment(key);
        var value = write(after[key], 0);
        if (value === undefined) continue;
        spend(count > 0 ? 2 : 1, 0);
        output += (count > 0 ? "," : "") + text(key, 0) + ":" + value;
        count++;
      }
    }
    names[0] = "result";
    var written = write(result, 0);
    output += (count > 0 ? "," : "") + '"result":' + (written === undefined ? "null" : written);
    return '{"output":{' + output + "}}";
  } catch (error) {
    return failure(error);
  }
})(%(document)s, %(script)s, %(max_chars)d, %(max_depth)d, %(max_message_chars)d)
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
# An error message longer than this is cut: it is kept in the run and in its history.
MAX_MESSAGE_CHARS = 2000
_OUTPUT_FRAME = '{"output":}'
UNHANDLED = "the script's answer could not be handled"
_Limit = TypeVar("_Limit", int, float)


class ScriptError(Exception):
    """A script failed, timed out or ran out of memory; the message says which."""


@dataclass(frozen=True)
class Limits:
    timeout_seconds: float
    max_memory_bytes: int
    max_result_bytes: int
    max_result_depth: int


class JavaScriptAction(SystemAction):
    name = "javascript"
    blocking = True

    def __init__(
        self,
        timeout_seconds: float | None = None,
        max_memory_bytes: int | None = None,
        max_result_bytes: int | None = None,
        max_result_depth: int | None = None,
    ) -> None:
        """Limits left out come from ``js_timeout_seconds``, ``js_max_memory_bytes``,
        ``js_max_result_bytes`` and ``js_max_result_depth``."""
        self._timeout_seconds = timeout_seconds
        self._max_memory_bytes = max_memory_bytes
        self._max_result_bytes = max_result_bytes
        self._max_result_depth = max_result_depth

    def limits(self) -> Limits:
        settings = get_settings()
        return Limits(
            timeout_seconds=_either(self._timeout_seconds, settings.js_timeout_seconds),
            max_memory_bytes=_either(self._max_memory_bytes, settings.js_max_memory_bytes),
            max_result_bytes=_either(self._max_result_bytes, settings.js_max_result_bytes),
            max_result_depth=_either(self._max_result_depth, settings.js_max_result_depth),
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
        """Done with the script's output, or Fail saying why there is none: whatever the
        script does, the step ends here (a step that raised would be retried for ever).

        The input recorded is the data document the script ran on (``$``), or a note of its
        size when that is over ``js_max_recorded_input_bytes``."""
        received: JSON = None
        try:
            document_json = orjson.dumps(document)
            received = recorded_input(document_json)
            output = evaluate(action.expression or "", document_json.decode(), self.limits())
        except ScriptError as error:
            return Fail(f"javascript {action.label}: {error}", input=received)
        except Exception as error:
            log.exception("javascript %s: %s", action.label, UNHANDLED)
            return Fail(f"javascript {action.label}: {UNHANDLED}: {error}", input=received)
        return Done(output=output, input=received)


def recorded_input(document_json: bytes) -> JSON:
    """What a step records as its input: the document, unless it is too big to copy."""
    size = len(document_json)
    most = get_settings().js_max_recorded_input_bytes
    if size <= most:
        return orjson.Fragment(document_json)  # already serialised for the script
    return {
        "omitted": f"the data document ({size} bytes) is larger than "
        f"ORCHY_JS_MAX_RECORDED_INPUT_BYTES ({most} bytes)"
    }


def evaluate(script: str, document_json: str, limits: Limits) -> JSONObject:
    """Run ``script`` with ``$`` parsed from ``document_json``; the step's output: the
    top-level keys of ``$`` it added or changed, and ``result``."""
    program = _RUNNER % {
        "document": _js_string(document_json),
        "script": _js_string(script),
        "max_chars": limits.max_result_bytes,
        "max_depth": limits.max_result_depth,
        "max_message_chars": MAX_MESSAGE_CHARS,
    }
    answer = _run(_run_pool(limits), program, limits)
    try:
        report = orjson.loads(answer)
    except orjson.JSONDecodeError as error:
        raise ScriptError(f"the script runner's answer is not JSON: {error}") from None
    match report:
        case {"error": str(message)}:
            raise ScriptError(message)
        case {"output": dict(output)}:
            # The runner counts characters; a character may take up to three bytes.
            size = len(answer.encode()) - len(_OUTPUT_FRAME)
            if size > limits.max_result_bytes:
                raise ScriptError(
                    f"the output ({size} bytes) is larger than ORCHY_JS_MAX_RESULT_BYTES "
                    f"({limits.max_result_bytes} bytes)"
                )
            return output
    raise ScriptError(f"the script runner answered {answer[:80]!r}")


def syntax_error(script: str, limits: Limits) -> str:
    """The SyntaxError ``script`` raises when parsed, or ``""`` when it compiles."""
    mark = _js_string(_COMPILED_MARK)
    program = _SYNTAX_CHECK % {"mark": mark, "source": _js_string(f"throw {mark};\n{script}")}
    return _run(_check_pool(limits), program, limits)


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


def _either(chosen: _Limit | None, default: _Limit) -> _Limit:
    return default if chosen is None else chosen


def _js_string(text: str) -> str:
    # A JSON string literal is a valid JavaScript string literal.
    return json.dumps(text)


def _first_line(message: str) -> str:
    first = message.strip().splitlines()[0] if message.strip() else "script failed"
    return _V8_LOCATION.sub("", first)[:MAX_MESSAGE_CHARS]
