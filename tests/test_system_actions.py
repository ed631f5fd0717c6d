"""System actions: switch, delay, wait, join and javascript (SPEC section 3)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import suppress
from pathlib import Path
from typing import Any

import pytest

from app.actions import REGISTRY, get_action, js_pool
from app.actions import javascript as javascript_module
from app.actions.base import AwaitEvent, AwaitJoin, Done, Fail, Outcome, Sleep, SystemAction
from app.actions.javascript import JavaScriptAction, Limits
from app.actions.js_pool import Reply, SandboxPool, Status
from app.definition import ActionDef, ActionType, DefinitionError, WorkflowDef
from app.engine.document import Document
from app.engine.document_pool import DocumentPool
from app.engine.planner import Planner
from app.settings import get_settings
from tests.helpers.waiting import wait_until_sync

SEED = Path(__file__).resolve().parent.parent / "workflows" / "notificationWorkflow.json"
SUBPROCESS_TIMEOUT_SECONDS = 60


def system_action(name: str, action_id: int = 3, **fields: Any) -> ActionDef:
    return ActionDef(id=action_id, type=ActionType.SYSTEM, name=name, **fields)


def registered(name: str) -> SystemAction:
    action = get_action(name)
    assert action is not None
    return action


def run(name: str, document: dict[str, Any] | None = None, **fields: Any) -> Outcome:
    return registered(name).run(system_action(name, **fields), document or {})


def rejection(name: str, **fields: Any) -> str:
    with pytest.raises(DefinitionError) as caught:
        registered(name).validate(system_action(name, **fields))
    return str(caught.value)


# --- registry -------------------------------------------------------------------------


def test_the_registry_holds_the_system_actions() -> None:
    assert sorted(REGISTRY) == [
        "delay",
        "forEach",
        "if",
        "javascript",
        "join",
        "subWorkflow",
        "switch",
        "terminate",
        "wait",
        "while",
    ]
    assert all(REGISTRY[name].name == name for name in REGISTRY)
    assert get_action("nope") is None
    assert registered("javascript").blocking
    assert not registered("switch").blocking


# --- switch -----------------------------------------------------------------------------

GENDER_BRANCHES = {"MALE": [4], "FEMALE": [5]}


def test_switch_takes_the_branch_matching_the_value() -> None:
    document = {"1": {"output": {"user": {"gender": "FEMALE"}}}}

    outcome = run("switch", document, expression="{$.1.output.user.gender}", next=GENDER_BRANCHES)

    assert outcome == Done(output={"value": "FEMALE"}, branch="FEMALE")


def test_switch_falls_back_to_default() -> None:
    document = {"1": {"output": {"user": {"gender": "OTHER"}}}}

    outcome = run(
        "switch",
        document,
        expression="{$1.output.user.gender}",
        next={**GENDER_BRANCHES, "default": [6]},
    )

    assert outcome == Done(output={"value": "OTHER"}, branch="default")


def test_switch_without_a_match_or_default_fails_naming_the_value() -> None:
    document = {"input": {"kind": "OTHER"}}

    outcome = run("switch", document, expression="{$.input.kind}", next=GENDER_BRANCHES)

    assert isinstance(outcome, Fail)
    assert "action 3 (switch)" in outcome.error
    assert "'OTHER'" in outcome.error


@pytest.mark.parametrize(
    ("value", "branch"),
    [(True, "true"), (False, "false"), (42, "42"), (42.0, "42"), (None, "null"), ("MALE", "MALE")],
)
def test_switch_branches_on_the_string_form_of_the_value(value: Any, branch: str) -> None:
    branches = {"true": [1], "false": [2], "42": [3], "null": [4], "MALE": [5]}

    outcome = run("switch", {"input": {"v": value}}, expression="{$.input.v}", next=branches)

    assert outcome == Done(output={"value": value}, branch=branch)


def test_switch_on_a_missing_path_branches_on_null() -> None:
    outcome = run("switch", {"input": {}}, expression="{$.input.v}", next={"null": [4]})

    assert outcome == Done(output={"value": None}, branch="null")


def test_switch_on_text_with_references_branches_on_the_text() -> None:
    document = {"input": {"a": "x", "b": 1}}

    outcome = run("switch", document, expression="{$.input.a}-{$.input.b}", next={"x-1": [4]})

    assert outcome == Done(output={"value": "x-1"}, branch="x-1")


def test_switch_on_an_expression_without_references_uses_it_literally() -> None:
    outcome = run("switch", {}, expression="MALE", next=GENDER_BRANCHES)

    assert outcome == Done(output={"value": "MALE"}, branch="MALE")


@pytest.mark.parametrize("expression", [None, "", "   "])
def test_switch_needs_an_expression(expression: str | None) -> None:
    assert rejection("switch", expression=expression) == (
        "action 3 (switch): switch needs an expression or cases"
    )


def test_switch_rejects_a_path_that_does_not_parse() -> None:
    message = rejection("switch", expression="{$.input[}")

    assert message.startswith("action 3 (switch):")
    assert "$.input[" in message


def test_switch_accepts_a_valid_expression() -> None:
    registered("switch").validate(system_action("switch", expression="{$1.output.x}"))


# --- delay ------------------------------------------------------------------------------


@pytest.mark.parametrize("seconds", [0, 10, 0.5])
def test_delay_sleeps_for_delay_seconds(seconds: float) -> None:
    registered("delay").validate(system_action("delay", delay_seconds=seconds))

    assert run("delay", delay_seconds=seconds) == Sleep(seconds=float(seconds))


def test_delay_needs_delay_seconds() -> None:
    assert rejection("delay") == "action 3 (delay): delay needs delaySeconds"


@pytest.mark.parametrize("seconds", [-1, True, "10", float("inf")])
def test_delay_rejects_a_delay_that_is_not_a_number_at_least_zero(seconds: Any) -> None:
    message = rejection("delay", delay_seconds=seconds)

    assert message.startswith("action 3 (delay): delaySeconds must be a number >= 0")


# --- wait -------------------------------------------------------------------------------


def test_wait_awaits_its_event_with_the_timeout() -> None:
    registered("wait").validate(system_action("wait", event="open", timeout_seconds=20))

    assert run("wait", event="open", timeout_seconds=20) == AwaitEvent("open", 20.0)


def test_wait_without_a_timeout_waits_forever() -> None:
    registered("wait").validate(system_action("wait", event="open"))

    assert run("wait", event="open") == AwaitEvent("open", None)


@pytest.mark.parametrize("event", [None, "", " "])
def test_wait_needs_an_event(event: str | None) -> None:
    assert rejection("wait", event=event) == "action 3 (wait): wait needs an event name"


@pytest.mark.parametrize("timeout", [0, -5, False, "20"])
def test_wait_rejects_a_timeout_that_is_not_a_positive_number(timeout: Any) -> None:
    message = rejection("wait", event="open", timeout_seconds=timeout)

    assert message.startswith("action 3 (wait): timeoutSeconds must be a number > 0")


# --- join -------------------------------------------------------------------------------


def test_join_awaits_the_actions_it_joins() -> None:
    registered("join").validate(system_action("join", join_on=[4, 5]))

    assert run("join", join_on=[4, 5]) == AwaitJoin([4, 5])


@pytest.mark.parametrize("join_on", [None, []])
def test_join_needs_join_on(join_on: list[int] | None) -> None:
    message = rejection("join", join_on=join_on)

    assert message == "action 3 (join): join needs joinOn, a non-empty list of ids"


@pytest.mark.parametrize("join_on", [[4, "5"], [True], [4, 4]])
def test_join_rejects_a_join_on_that_is_not_a_list_of_distinct_ids(join_on: list[Any]) -> None:
    assert rejection("join", join_on=join_on).startswith("action 3 (join): joinOn")


# --- javascript ---------------------------------------------------------------------------


def javascript(
    script: str, document: dict[str, Any], action: SystemAction | None = None
) -> Outcome:
    action_def = system_action("javascript", action_id=2, expression=script)
    return (action or registered("javascript")).run(action_def, document)


def seed_script() -> str:
    seed = json.loads(SEED.read_text())
    script = next(a["expression"] for a in seed["actions"] if a["name"] == "javascript")
    assert isinstance(script, str)
    return script


@pytest.mark.parametrize(("age", "discount"), [(25, 20), (20, 20), (15, 10)])
def test_the_seed_script_gives_the_discount(age: int, discount: int) -> None:
    user = {"age": age, "gender": "MALE", "phone": "+100"}
    document: dict[str, Any] = {"input": {"userId": 1234}, "1": {"output": {"user": user}}}

    outcome = javascript(seed_script(), document)

    assert isinstance(outcome, Done)
    assert outcome.output["user"] == {**user, "discount": discount}
    assert outcome.output["result"] == discount
    assert "input" not in outcome.output
    assert document["1"]["output"]["user"] == user


def test_javascript_output_holds_added_and_changed_keys_and_the_result() -> None:
    document = {"input": {"a": 1}, "kept": {"x": [1, 2]}, "changed": 1, "flag": 1}

    outcome = javascript(
        "$.added = {n: 1}; $.changed = 2; $.kept = {x: [1, 2]}; $.flag = true; 'done'", document
    )

    assert outcome == Done(output={"added": {"n": 1}, "changed": 2, "flag": True, "result": "done"})


def test_javascript_result_is_null_when_the_script_completes_with_undefined() -> None:
    assert javascript("var unused = 1;", {}) == Done(output={"result": None})


def test_javascript_result_keeps_its_json_type() -> None:
    outcome = javascript("({n: 1.5, list: [1, 'a', null, true]})", {})

    assert outcome == Done(output={"result": {"n": 1.5, "list": [1, "a", None, True]}})


def test_javascript_reads_keys_that_are_not_identifiers() -> None:
    document = {"__proto__": {"x": 1}, "1": {"output": {"v": "é\u2028"}}}

    outcome = javascript("$['1'].output.v + $['__proto__'].x", document)

    assert outcome == Done(output={"result": "é\u20281"})


def test_javascript_runtime_error_fails_with_the_message() -> None:
    outcome = javascript("null.x", {})

    assert isinstance(outcome, Fail)
    assert outcome.error.startswith("javascript action 2 (javascript): TypeError:")
    assert "reading 'x'" in outcome.error


def test_javascript_thrown_value_fails_with_the_value() -> None:
    outcome = javascript("throw {code: 7}", {})

    assert outcome == Fail('javascript action 2 (javascript): uncaught {"code":7}')


def test_javascript_result_that_is_not_json_fails() -> None:
    outcome = javascript("$.big = 10n", {})

    assert isinstance(outcome, Fail)
    assert "BigInt" in outcome.error


# {"result":"<text>"} is 13 bytes around the text.
RESULT_FRAME_BYTES = len('{"result":""}')
SMALL_OUTPUT_BYTES = 100


@pytest.mark.parametrize(
    ("text", "fits"),
    [
        ("x" * (SMALL_OUTPUT_BYTES - RESULT_FRAME_BYTES), True),
        ("x" * (SMALL_OUTPUT_BYTES - RESULT_FRAME_BYTES + 1), False),
        # Fewer characters than the limit, more bytes: two bytes each in UTF-8.
        ("é" * (SMALL_OUTPUT_BYTES - RESULT_FRAME_BYTES), False),
    ],
    ids=["at the limit", "a byte over", "multibyte over"],
)
def test_javascript_output_is_at_most_max_result_bytes(text: str, fits: bool) -> None:
    limited = JavaScriptAction(max_result_bytes=SMALL_OUTPUT_BYTES)

    outcome = javascript(json.dumps(text), {}, limited)

    if fits:
        assert outcome == Done(output={"result": text})
    else:
        assert isinstance(outcome, Fail)
        assert "ORCHY_JS_MAX_RESULT_BYTES (100 bytes)" in outcome.error, outcome.error


@pytest.mark.parametrize(("depth", "fits"), [(4, True), (5, False)])
def test_javascript_result_is_at_most_max_result_depth_deep(depth: int, fits: bool) -> None:
    limited = JavaScriptAction(max_result_depth=4)
    script = f"var o = 1; for (var i = 0; i < {depth}; i++) o = [o]; o"

    outcome = javascript(script, {}, limited)

    if fits:
        assert outcome == Done(output={"result": [[[[1]]]]})
    else:
        assert outcome == Fail(
            "javascript action 2 (javascript): result[0][0][0][0] is nested deeper than "
            "ORCHY_JS_MAX_RESULT_DEPTH (4 levels)"
        )


def test_javascript_result_follows_json_for_dates_boxes_and_undefined() -> None:
    script = (
        "$.gone = undefined;"
        " ({when: new Date(0), n: new Number(5), s: new String('s'), a: undefined, b: [undefined]})"
    )

    outcome = javascript(script, {})

    expected = {"when": "1970-01-01T00:00:00.000Z", "n": 5, "s": "s", "b": [None]}
    assert outcome == Done(output={"result": expected})


def test_javascript_failure_names_where_in_the_document_the_problem_is() -> None:
    document = {"1": {"output": {"list": [0, 1]}}}

    outcome = javascript("$['1'].output.list[1] = {f: function () {}}; 0", document)

    assert outcome == Fail(
        'javascript action 2 (javascript): $["1"].output.list[1].f is a function, '
        "which JSON cannot hold"
    )


def test_javascript_output_leaves_out_keys_changed_back_to_their_value() -> None:
    document = {"input": {"n": [1, {"k": "v"}]}}

    outcome = javascript("$.input = JSON.parse(JSON.stringify($.input)); $.input.n[0]", document)

    assert outcome == Done(output={"result": 1})


def test_javascript_limits_come_from_the_settings() -> None:
    settings = get_settings()

    assert JavaScriptAction().limits() == Limits(
        timeout_seconds=settings.js_timeout_seconds,
        max_memory_bytes=settings.js_max_memory_bytes,
        max_result_bytes=settings.js_max_result_bytes,
        max_result_depth=settings.js_max_result_depth,
    )


def test_javascript_infinite_loop_fails_after_the_time_limit() -> None:
    outcome = javascript("while (true) {}", {}, JavaScriptAction(timeout_seconds=1))

    assert outcome == Fail("javascript action 2 (javascript): timed out after 1s")


def test_javascript_memory_bomb_fails() -> None:
    bomb = "var hoard = []; while (true) { hoard.push(new Array(100000).fill(1)); }"

    limited = JavaScriptAction(timeout_seconds=10, max_memory_bytes=32 * 1024 * 1024)

    outcome = javascript(bomb, {}, limited)

    assert outcome == Fail("javascript action 2 (javascript): ran out of memory (limit 32 MiB)")


def test_javascript_scripts_do_not_share_globals() -> None:
    assert javascript("var leaked = 1; leaked", {}) == Done(output={"result": 1})

    outcome = javascript("typeof leaked", {})

    assert outcome == Done(output={"result": "undefined"})


def test_javascript_runs_from_a_thread_with_a_running_event_loop() -> None:
    async def from_the_loop() -> tuple[Outcome, Outcome]:
        return javascript("1 + 1", {}), javascript("while (true) {}", {})

    finished, stopped = asyncio.run(from_the_loop())

    assert finished == Done(output={"result": 2})
    assert isinstance(stopped, Fail)


CONCURRENT_SCRIPTS = """
from concurrent.futures import ThreadPoolExecutor

from app.actions.base import Done, Fail
from app.actions.javascript import JavaScriptAction
from app.definition import ActionDef, ActionType

# The loops end at the limit; the others must end well within it on a loaded machine too.
action = JavaScriptAction(timeout_seconds=1)


def script(number):
    code = "while (true) {}" if number % 4 == 0 else f"$.n = {number}; {number} * 2"
    definition = ActionDef(id=2, type=ActionType.SYSTEM, name="javascript", expression=code)
    return action.run(definition, {})


with ThreadPoolExecutor(8) as pool:
    outcomes = list(pool.map(script, range(16)))
assert sum(isinstance(outcome, Fail) for outcome in outcomes) == 4, outcomes
assert outcomes[1] == Done(output={"n": 1, "result": 2}), outcomes
print("ok")
"""


def test_javascript_runs_concurrently_from_fresh_threads_and_exits_cleanly() -> None:
    # A fresh interpreter: V8 start-up and interpreter exit are what is tested here.
    finished = subprocess.run(
        [sys.executable, "-c", CONCURRENT_SCRIPTS],
        cwd=SEED.parent.parent,
        capture_output=True,
        text=True,
        timeout=SUBPROCESS_TIMEOUT_SECONDS,
        check=False,
    )

    assert (finished.returncode, finished.stdout.strip(), finished.stderr) == (0, "ok", "")


def test_javascript_validation_accepts_the_seed_script() -> None:
    registered("javascript").validate(system_action("javascript", expression=seed_script()))


@pytest.mark.parametrize("script", ["$.a = ;", "if (x {", "return 1"])
def test_javascript_validation_rejects_a_script_that_does_not_compile(script: str) -> None:
    message = rejection("javascript", expression=script)

    assert message.startswith("action 3 (javascript): script does not compile: SyntaxError")


def test_javascript_validation_does_not_run_the_script() -> None:
    registered("javascript").validate(system_action("javascript", expression="while (true) {}"))


@pytest.mark.parametrize("script", [None, "", "  "])
def test_javascript_needs_an_expression(script: str | None) -> None:
    assert rejection("javascript", expression=script).startswith(
        "action 3 (javascript): javascript needs an expression"
    )


# --- javascript: script processes ---------------------------------------------------------

# Past what V8 can stop inside one builtin; each fails, or kills, only its script process.
MEMORY_BOMBS = {
    "fill of a 1e9-element array": "new Array(1e9).fill(1)",
    "Array.from of 1e8 elements": "Array.from({length: 1e8}).length",
    "1 GB ArrayBuffer": "new ArrayBuffer(1e9)",
    "3e7 doubles": "new Array(3e7).fill(1.5).length",
    "hoard of arrays": "var hoard = []; while (true) hoard.push(new Array(1e6))",
}
# Which one depends on who wins: V8's heap limit, the process's data limit, or the deadline.
MEMORY_BOMB_FAILURES = ("ran out of memory", "Array buffer allocation failed", "timed out")
CONCURRENT_LOOPS = 8
PROCESS_TIMEOUT_SECONDS = 0.2
POOL_HEADROOM_BYTES = 128 * 1024 * 1024
POOL_MEMORY_BYTES = 64 * 1024 * 1024
EXIT_WAIT_SECONDS = 5.0
POLL_INTERVAL_SECONDS = 0.05
RUNNING_SCRIPT_SECONDS = 60
# Long enough to be still running once it has spent SCRIPT_RUNNING_TICKS of CPU.
BUSY_SCRIPT_MS = 3000
# 50 ms of CPU at 100 ticks a second: far more than receiving a program takes.
SCRIPT_RUNNING_TICKS = 5
# On a loaded machine a spinning script gets a small share of a core.
SCRIPT_START_SECONDS = 15.0
# Below any baseline (VmData may fall under it once an isolate is freed): always grown.
ALWAYS_GROWN = -(1 << 40)
ZOMBIE_STATES = ("Z", "X")


def running(pid: int) -> bool:
    """Some thread of ``pid`` is not a zombie: the process has not exited, or is not done
    exiting (its main thread turns zombie first). Not reaped is not running: an orphan's
    reaper need not be quick in a container."""
    states = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        with suppress(OSError):
            states.append((task / "stat").read_text().rsplit(")", 1)[1].split()[0])
    return any(state not in ZOMBIE_STATES for state in states)


def wait_for_exit(pids: list[int]) -> list[int]:
    """The pids still running after EXIT_WAIT_SECONDS (none, as soon as none runs)."""
    with suppress(AssertionError):
        wait_until_sync(
            lambda: not any(running(pid) for pid in pids),
            EXIT_WAIT_SECONDS,
            step=POLL_INTERVAL_SECONDS,
            what=f"processes {pids} to exit",
        )
    return [pid for pid in pids if running(pid)]


def cpu_ticks(pid: int) -> int:
    """User and system CPU time of ``pid`` so far, in clock ticks."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime and stime, fields 14 and 15 of stat


def wait_until_script_runs(pid: int, idle_ticks: int) -> None:
    """Until the script process ``pid`` has spent SCRIPT_RUNNING_TICKS of CPU since it was
    idle at ``idle_ticks``: only a running script spends that much."""
    wait_until_sync(
        lambda: cpu_ticks(pid) >= idle_ticks + SCRIPT_RUNNING_TICKS,
        SCRIPT_START_SECONDS,
        step=POLL_INTERVAL_SECONDS,
        what=f"the script process {pid} to run the script",
    )


@pytest.fixture
def lone_pool() -> Iterator[SandboxPool]:
    pool = SandboxPool(1, POOL_HEADROOM_BYTES)
    pool.start()
    try:
        yield pool
    finally:
        pool.close()


@pytest.mark.parametrize("script", MEMORY_BOMBS.values(), ids=MEMORY_BOMBS.keys())
def test_javascript_memory_bomb_fails_the_action_and_the_next_script_runs(
    script: str,
) -> None:
    outcome = javascript(script, {}, JavaScriptAction(timeout_seconds=1))

    assert isinstance(outcome, Fail)
    assert outcome.error.startswith("javascript action 2 (javascript): "), outcome.error
    assert any(failure in outcome.error for failure in MEMORY_BOMB_FAILURES), outcome.error
    assert javascript("6 * 7", {}) == Done(output={"result": 42})


def test_javascript_concurrent_infinite_loops_all_fail() -> None:
    action = JavaScriptAction(timeout_seconds=1)

    def loop(_: int) -> Outcome:
        return javascript("while (true) {}", {}, action)

    with ThreadPoolExecutor(CONCURRENT_LOOPS) as threads:
        outcomes = list(threads.map(loop, range(CONCURRENT_LOOPS)))

    timed_out = Fail("javascript action 2 (javascript): timed out after 1s")
    assert outcomes == [timed_out] * CONCURRENT_LOOPS
    assert javascript("6 * 7", {}) == Done(output={"result": 42})


def test_a_script_process_that_stops_answering_is_killed_at_the_deadline(
    lone_pool: SandboxPool,
) -> None:
    [pid] = lone_pool.pids()
    os.kill(pid, signal.SIGSTOP)

    reply = lone_pool.run("'late'", PROCESS_TIMEOUT_SECONDS, POOL_MEMORY_BYTES)

    assert reply == Reply(Status.TIMED_OUT)
    assert not running(pid)
    assert lone_pool.run("'next'", 1, POOL_MEMORY_BYTES) == Reply(Status.OK, "next")
    assert lone_pool.pids() != [pid]


@pytest.mark.parametrize(
    ("death", "reply"),
    [
        (signal.SIGSEGV, Reply(Status.BROKEN, "the script process died (signal SIGSEGV)")),
        (signal.SIGTRAP, Reply(Status.OUT_OF_MEMORY)),  # how V8 ends a process out of memory
    ],
)
def test_a_script_process_that_dies_fails_its_script_and_is_replaced(
    lone_pool: SandboxPool, death: signal.Signals, reply: Reply
) -> None:
    [pid] = lone_pool.pids()
    idle = cpu_ticks(pid)
    with ThreadPoolExecutor(1) as thread:
        looping = thread.submit(
            lone_pool.run, "while (true) {}", RUNNING_SCRIPT_SECONDS, POOL_MEMORY_BYTES
        )
        wait_until_script_runs(pid, idle)
        os.kill(pid, death)
        assert looping.result(timeout=EXIT_WAIT_SECONDS) == reply

    assert lone_pool.run("'next'", 1, POOL_MEMORY_BYTES) == Reply(Status.OK, "next")


def test_a_script_process_that_died_idle_does_not_fail_the_next_script(
    lone_pool: SandboxPool,
) -> None:
    [pid] = lone_pool.pids()
    os.kill(pid, signal.SIGKILL)  # sent a program before or after it is gone: both must work

    assert lone_pool.run("'next'", 1, POOL_MEMORY_BYTES) == Reply(Status.OK, "next")
    assert wait_for_exit([pid]) == []


def test_javascript_close_stops_the_script_processes_and_later_scripts_start_new_ones() -> None:
    javascript_module.close()  # the pools other limits made
    javascript_module.start()
    started = js_pool.pids()
    assert len(started) == get_settings().js_threads + javascript_module.CHECK_PROCESSES

    javascript_module.close()

    assert js_pool.pids() == []
    assert wait_for_exit(started) == []
    assert javascript("6 * 7", {}) == Done(output={"result": 42})


def test_a_script_process_that_grew_is_replaced_once_it_said_so() -> None:
    pool = SandboxPool(1, POOL_HEADROOM_BYTES, drift_limit_bytes=ALWAYS_GROWN)
    try:
        pool.start()
        [first] = pool.pids()

        assert pool.run("'a'", 1, POOL_MEMORY_BYTES) == Reply(Status.OK, "a")  # finds it grew
        assert pool.run("'b'", 1, POOL_MEMORY_BYTES) == Reply(Status.OK, "b")  # and says so

        assert wait_for_exit([first]) == []
        assert pool.run("'c'", 1, POOL_MEMORY_BYTES) == Reply(Status.OK, "c")
        assert first not in pool.pids()
    finally:
        pool.close()


def test_closing_a_pool_lets_a_running_script_finish_then_stops_its_process(
    lone_pool: SandboxPool,
) -> None:
    [pid] = lone_pool.pids()
    idle = cpu_ticks(pid)
    busy = f"var end = Date.now() + {BUSY_SCRIPT_MS}; while (Date.now() < end) {{}} 'done'"
    with ThreadPoolExecutor(1) as thread:
        busy_run = thread.submit(lone_pool.run, busy, RUNNING_SCRIPT_SECONDS, POOL_MEMORY_BYTES)
        wait_until_script_runs(pid, idle)

        lone_pool.close()

        assert busy_run.result(timeout=EXIT_WAIT_SECONDS) == Reply(Status.OK, "done")
    assert wait_for_exit([pid]) == []
    # Whoever still holds the pool is served, by a process it does not keep.
    assert lone_pool.run("'late'", 1, POOL_MEMORY_BYTES) == Reply(Status.OK, "late")
    assert lone_pool.pids() == []


ORPHANED_SCRIPTS = """
import threading
import time

from app.actions import javascript, js_pool
from app.actions.javascript import JavaScriptAction
from app.definition import ActionDef, ActionType

javascript.start()
definition = ActionDef(id=2, type=ActionType.SYSTEM, name="javascript", expression="while (1) {}")
looping = JavaScriptAction(timeout_seconds=%(timeout)d)
threading.Thread(target=looping.run, args=(definition, {}), daemon=True).start()
time.sleep(%(settle)f)
print(" ".join(map(str, js_pool.pids())), flush=True)
time.sleep(%(timeout)d)
"""


def test_script_processes_exit_when_the_server_is_killed() -> None:
    # One of them is in the middle of a script, which would run for a minute.
    program = ORPHANED_SCRIPTS % {
        "timeout": RUNNING_SCRIPT_SECONDS,
        "settle": PROCESS_TIMEOUT_SECONDS,
    }
    server = subprocess.Popen(
        [sys.executable, "-c", program], cwd=SEED.parent.parent, stdout=subprocess.PIPE, text=True
    )
    try:
        assert server.stdout is not None
        pids = [int(pid) for pid in server.stdout.readline().split()]
        assert len(pids) == get_settings().js_threads + javascript_module.CHECK_PROCESSES
        assert all(map(running, pids))

        server.kill()
        server.wait(SUBPROCESS_TIMEOUT_SECONDS)

        assert wait_for_exit(pids) == []
    finally:
        server.kill()
        server.wait(SUBPROCESS_TIMEOUT_SECONDS)


def test_the_planner_builds_the_document_only_for_what_reads_it() -> None:
    """A run's document parses every output it kept: reaching a join or a user action
    without references must not build it; a switch must."""
    builds: list[int] = []

    def build() -> dict[str, Any]:
        builds.append(1)
        return {"input": {"kind": "b"}, "flow": {"id": "f", "name": "w", "version": 1}}

    actions = {
        1: ActionDef(1, ActionType.USER, "plain", {"n": 1, "text": "no $ reference"}),
        2: system_action("join", 2, join_on=[1]),
        3: system_action("switch", 3, expression="{$.input.kind}", next={"b": [4]}),
        4: ActionDef(4, ActionType.USER, "uses", {"kind": "{$.input.kind}"}),
    }
    workflow = WorkflowDef("w", 1, actions)
    with ThreadPoolExecutor(1) as executor:
        planner = Planner(executor, DocumentPool(1), large_document_size=1 << 20)
        quiet = asyncio.run(planner.start(workflow, [1, 2], Document(build, dict)))
        assert [op.kind for op in quiet.ops] == ["user", "join"]
        assert builds == []
        plan = asyncio.run(planner.start(workflow, [3], Document(build, dict)))
    assert [(op.kind, op.payload) for op in plan.ops] == [
        ("done", '{"value":"b"}'),
        ("user", '{"kind":"b"}'),
    ]
    assert builds == [1]  # once, shared by the switch and the user action after it
