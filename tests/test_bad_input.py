"""Bad input: property tests of the definition validator and of parameter resolution, values
JSON allows but Redis and orjson do not, and abusive JavaScript. (Every route is fuzzed from
the OpenAPI schema in ``test_fuzz_api.py``.)"""

from __future__ import annotations

import asyncio
import math
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, Phase, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from app.definition import DefinitionError
from app.engine.params import PathError, compile_path, resolve
from app.engine.validate import parse_workflow
from app.settings import Settings, get_settings
from tests.helpers.definitions import system, user, workflow
from tests.helpers.http import Api, ServerThread, api_of
from tests.helpers.processes import Processes, ServerProcess, clean_env
from tests.helpers.waiting import unique, wait_until

# jsonpath-ng warns when it parses `&` and `|`, which the fuzzers write on purpose.
pytestmark = pytest.mark.filterwarnings("ignore:The .* operator is deprecated:DeprecationWarning")

# -- definitions and JSONPath, by property --------------------------------------------------

VALIDATOR_MAX_EXAMPLES = 300
HTTP_MAX_EXAMPLES = 100
# A rejection names what is wrong: the definition, a top-level field, or an action.
NAMES_WHAT = re.compile(
    r"definition|\bbody\b|\bname\b|\bactions\b|rootAction|\boutput\b|action -?\d+"
)
# Whole JSONPath steps (most paths are made of these) and single characters (the rest).
PATH_STEPS = [
    ".input",
    ".flow",
    ".1",
    ".output",
    ".x",
    "[0]",
    "[*]",
    "[-1]",
    "[0:2]",
    "[0,1]",
    "['x']",
    "..x",
    "..*",
    ".*",
    "&$.input",
    "|$.flow",
    ".`parent`",
    ".`this`",
    " where x",
    " wherenot x",
]
PATH_ROOTS = ["$", "$", "$1", "$.1"]
PATH_CHARACTERS = [*"$.[]*:,()@?|&'\"\\ `", "1", "x"]
BRANCHES = ["default", "error", "MALE", "true", "42", ""]
SYSTEM_ACTIONS = ["switch", "delay", "wait", "javascript", "join"]
SCRIPTS = [
    "$.total = $.input.a + 1",
    "$.input.a * 2",
    "while(true){}",
    "if (",
    "return 1",
    "}{",
    "throw new Error('x')",
    "",
    "   ",
]

path_texts = st.lists(
    st.sampled_from(PATH_STEPS) | st.sampled_from(PATH_STEPS) | st.sampled_from(PATH_CHARACTERS),
    max_size=6,
).map("".join)
references = st.builds(
    lambda root, path: "{" + root + path + "}", st.sampled_from(PATH_ROOTS), path_texts
)
templates = st.lists(st.one_of(references, st.text(max_size=4)), max_size=3).map("".join)
scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=6)
    | templates
)
json_values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=10,
)
ids = st.integers(min_value=-1, max_value=5)
loose_ids = ids | ids | json_values
numbers = st.integers(min_value=-1, max_value=3) | st.floats(min_value=-1, max_value=3)
action_names = st.sampled_from([*SYSTEM_ACTIONS, "send", "", " "]) | st.text(max_size=6)
expressions = st.sampled_from(SCRIPTS) | templates | st.text(max_size=10) | json_values

loose_actions = st.fixed_dictionaries(
    {
        "id": loose_ids,
        "type": st.sampled_from(["user", "system"]) | json_values,
        "name": action_names | json_values,
    },
    optional={
        "parameters": st.dictionaries(st.text(max_size=5), json_values, max_size=3) | json_values,
        "next": st.dictionaries(
            st.sampled_from(BRANCHES), st.lists(loose_ids, max_size=3), max_size=3
        )
        | json_values,
        "expression": expressions,
        "delaySeconds": numbers | json_values,
        "event": st.text(max_size=4) | json_values,
        "timeoutSeconds": numbers | json_values,
        "joinOn": st.lists(loose_ids, max_size=3) | json_values,
    },
)

SYSTEM_FIELDS: dict[str, st.SearchStrategy[dict[str, Any]]] = {
    "switch": st.fixed_dictionaries({"expression": templates}),
    "delay": st.fixed_dictionaries({"delaySeconds": numbers}),
    "wait": st.fixed_dictionaries({"event": st.text(max_size=4), "timeoutSeconds": numbers}),
    "javascript": st.fixed_dictionaries({"expression": st.sampled_from(SCRIPTS)}),
}


@st.composite
def chained_definitions(draw: st.DrawFn) -> dict[str, Any]:
    """Mostly valid definitions: each action leads to the next, plus random later links."""
    count = draw(st.integers(min_value=1, max_value=5))
    actions = []
    for action_id in range(1, count + 1):
        later = list(range(action_id + 1, count + 1))
        branches: dict[str, list[int]] = {"default": [action_id + 1]} if later else {}
        if later:
            extra = draw(st.lists(st.sampled_from(later), max_size=2))
            branches[draw(st.sampled_from(BRANCHES))] = extra
        kind = draw(st.sampled_from(["user", *SYSTEM_ACTIONS]))
        action: dict[str, Any] = {"id": action_id, "next": branches}
        if kind == "user":
            parameters = draw(st.dictionaries(st.text(max_size=4), json_values, max_size=3))
            action |= {"type": "user", "name": draw(st.text(max_size=6)), "parameters": parameters}
        else:
            joins = st.lists(st.integers(1, count), min_size=1, max_size=3)
            fields = {**SYSTEM_FIELDS, "join": st.fixed_dictionaries({"joinOn": joins})}
            action |= {"type": "system", "name": kind, **draw(fields[kind])}
        actions.append(action)
    return {
        "name": draw(st.text(min_size=1, max_size=8)),
        "rootAction": draw(st.just(1) | ids),
        "actions": actions,
        **draw(st.fixed_dictionaries({}, optional={"output": json_values})),
    }


definitions = st.one_of(
    chained_definitions(),
    st.fixed_dictionaries(
        {
            "name": st.text(max_size=8) | json_values,
            "rootAction": loose_ids,
            "actions": st.lists(loose_actions, max_size=5) | json_values,
        },
        optional={"output": json_values},
    ),
    json_values,
)
documents = st.fixed_dictionaries(
    {"input": json_values, "flow": st.just({"id": "f", "name": "n", "version": 1})},
    optional={"1": st.fixed_dictionaries({"output": json_values})},
)


def assert_names_what_is_wrong(error: Exception) -> None:
    message = str(error)
    assert message.strip(), f"{type(error).__name__} with an empty message"
    assert NAMES_WHAT.search(message), f"rejection names no field or action: {message!r}"


@hypothesis_settings(max_examples=VALIDATOR_MAX_EXAMPLES, deadline=None, derandomize=True)
@given(raw=definitions)
def test_validator_raises_only_definition_errors_naming_the_problem(raw: Any) -> None:
    try:
        parse_workflow(raw)
    except DefinitionError as error:
        assert_names_what_is_wrong(error)


@hypothesis_settings(max_examples=VALIDATOR_MAX_EXAMPLES, deadline=None, derandomize=True)
@given(path=path_texts)
def test_path_compilation_raises_only_path_errors_naming_the_path(path: str) -> None:
    try:
        compile_path("$" + path)
    except PathError as error:
        assert "JSONPath" in str(error), str(error)


@hypothesis_settings(max_examples=VALIDATOR_MAX_EXAMPLES, deadline=None, derandomize=True)
@given(template=templates | json_values, document=documents)
def test_resolution_raises_only_path_errors(template: Any, document: dict[str, Any]) -> None:
    """Any template against any document: a value and warnings, or a PathError naming the
    path. (A path the validator accepted must never blow up when a run resolves it.)"""
    try:
        resolution = resolve(template, document)
    except PathError as error:
        assert "JSONPath" in str(error), str(error)
    else:
        assert all(warning.strip() for warning in resolution.warnings)


@hypothesis_settings(
    max_examples=HTTP_MAX_EXAMPLES,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
    # Shrinking over HTTP is slow; the validator test above shrinks the same inputs cheaply.
    phases=[Phase.explicit, Phase.reuse, Phase.generate],
)
@given(raw=definitions)
def test_random_definitions_over_http_never_get_a_500(server: ServerThread, raw: Any) -> None:
    if isinstance(raw, dict) and isinstance(raw.get("name"), str):
        raw = {**raw, "name": f"fuzz-{raw['name']}"}
    with httpx.Client(base_url=server.url, timeout=30) as client:
        response = client.post("/metadata/workflow", json=raw)
    assert response.status_code in (200, 422), f"{response.status_code}: {response.text}"
    if response.status_code == 422:
        assert_names_what_is_wrong(ValueError(response.json()["error"]))


# -- values JSON allows that Redis and orjson do not ----------------------------------------

BEYOND_64_BITS = 2**64
TOO_DEEP = 300
BEYOND_INT64_OFFSET = 2**63


def nested(depth: int) -> Any:
    value: Any = 0
    for _ in range(depth):
        value = {"a": value}
    return value


@dataclass(frozen=True)
class Sender:
    """One hostile request, given a registered workflow, a run and a task leased to us."""

    label: str
    send: Callable[[httpx.AsyncClient, str, str, str], Awaitable[httpx.Response]]


HOSTILE_VALUES = [
    Sender(
        "workflow with an integer beyond 64 bits",
        lambda http, name, flow, task: http.post(
            "/metadata/workflow",
            json=workflow(unique("big"), user(1, "x", n=BEYOND_64_BITS)),
        ),
    ),
    Sender(
        "workflow nested deeper than orjson writes",
        lambda http, name, flow, task: http.post(
            "/metadata/workflow", json=workflow(unique("deep"), user(1, "x", n=nested(TOO_DEEP)))
        ),
    ),
    Sender(
        "run input with an integer beyond 64 bits",
        lambda http, name, flow, task: http.post(
            "/flow/execute", json={"name": name, "input": {"n": BEYOND_64_BITS}}
        ),
    ),
    Sender(
        "run input nested deeper than orjson writes",
        lambda http, name, flow, task: http.post(
            "/flow/execute", json={"name": name, "input": nested(TOO_DEEP)}
        ),
    ),
    Sender(
        "event with an integer beyond 64 bits",
        lambda http, name, flow, task: http.post(
            f"/flow/{flow}/events/go", json={"n": BEYOND_64_BITS}
        ),
    ),
    Sender(
        "result with an integer beyond 64 bits",
        lambda http, name, flow, task: http.post(
            f"/tasks/{task}/complete", json={"output": {"n": BEYOND_64_BITS}}
        ),
    ),
    Sender(
        "result nested deeper than orjson writes",
        lambda http, name, flow, task: http.post(
            f"/tasks/{task}/complete", json={"output": nested(TOO_DEEP)}
        ),
    ),
    Sender(
        "batched result with an integer beyond 64 bits",
        lambda http, name, flow, task: http.post(
            "/tasks/results",
            json={"results": [{"taskId": task, "output": {"n": BEYOND_64_BITS}}]},
        ),
    ),
    Sender(
        "list offset beyond a 64-bit integer",
        lambda http, name, flow, task: http.get("/flow", params={"offset": BEYOND_INT64_OFFSET}),
    ),
]


@pytest.mark.parametrize("sender", HOSTILE_VALUES, ids=[sender.label for sender in HOSTILE_VALUES])
async def test_values_json_allows_but_storage_does_not_are_refused_not_500(
    api: Api, http: httpx.AsyncClient, sender: Sender
) -> None:
    """JSON numbers have no size and JSON no depth limit; orjson writes neither integers
    beyond 64 bits nor more than 254 levels, and Redis takes 64-bit offsets. Such input must
    be refused with a 4xx JSON error (and change nothing), never answered with a 500."""
    name = unique("hostile")
    await api.register(
        workflow(name, user(1, f"{name}-task", {"default": [2]}), system(2, "wait", event="go"))
    )
    flow_id = await api.start(name)
    task = await api.poll_one(f"{name}-task")
    before = await api.flow(flow_id)
    response = await sender.send(http, name, flow_id, task["taskId"])
    assert response.status_code < 500, f"{response.status_code}: {response.text}"
    body = response.json()
    if "results" in body:  # a batch refuses each result on its own
        [refused] = body["results"]
        assert refused["status"] == 422 and refused["error"]
    else:
        assert body["error"]
    assert await api.flow(flow_id) == before


NOT_UTF8 = b'{"name": "\xff\xfe"}'


@pytest.mark.parametrize(
    "path", ["/metadata/workflow", "/flow/execute", "/tasks/poll", "/tasks/x.1.1/complete"]
)
async def test_body_that_is_not_utf8_is_422(http: httpx.AsyncClient, path: str) -> None:
    """The README promises 422 for an invalid body (and the schema documents no 400)."""
    response = await http.post(path, content=NOT_UTF8)
    assert response.status_code == 422, f"{response.status_code}: {response.text}"
    assert response.json()["error"]


@pytest.mark.parametrize("kind", [[], {}, ["user"]], ids=["empty list", "object", "list"])
async def test_action_type_that_is_not_a_string_is_422(http: httpx.AsyncClient, kind: Any) -> None:
    definition = workflow(unique("bad-type"), {"id": 1, "type": kind, "name": "x"})
    response = await http.post("/metadata/workflow", json=definition)
    assert response.status_code == 422, f"{response.status_code}: {response.text}"
    assert "action 1" in response.json()["error"]


UNEVALUABLE_PATHS = {
    "intersection": "{$.input&$.flow}",
    "parent of the root": "{$.`parent`}",
}
UNEVALUABLE_CASES = [
    pytest.param(path, delayed, id=f"{label}, {'after a delay' if delayed else 'at start'}")
    for label, path in UNEVALUABLE_PATHS.items()
    for delayed in (False, True)
]


@pytest.mark.parametrize(("path", "delayed"), UNEVALUABLE_CASES)
async def test_path_that_parses_but_cannot_be_evaluated_never_500s_nor_hangs(
    api: Api, http: httpx.AsyncClient, path: str, delayed: bool
) -> None:
    """jsonpath-ng parses these but raises NotImplementedError / AssertionError on find().
    The definition must be refused (422 naming the action); or, once accepted, every run
    must go on: the step fails naming the action, or gets null with a warning (as a path
    that finds nothing does). Reached after a delay, the timer must not fail for ever."""
    name = unique("bad-path")
    task = f"{name}-task"
    first = system(1, "delay", {"default": [2]}, delaySeconds=0.05) if delayed else None
    step = user(2 if delayed else 1, task, x=path)
    actions = [first, step] if first is not None else [step]
    response = await http.post("/metadata/workflow", json=workflow(name, *actions))
    if response.status_code == 422:
        assert f"action {step['id']}" in response.json()["error"]
        return
    assert response.status_code == 200, response.text
    response = await http.post("/flow/execute", json={"name": name, "input": {}})
    assert response.status_code == 201, f"{response.status_code}: {response.text}"
    flow_id = response.json()["flowId"]
    step_id = str(step["id"])

    async def went_on() -> bool:
        flow = await api.flow(flow_id)
        return flow["status"] == "FAILED" or step_id in flow["actions"]

    await wait_until(went_on, what=f"run {flow_id} to get past the bad path")
    flow = await api.flow(flow_id)
    if flow["status"] == "FAILED":
        assert f"action {step_id}" in flow["reason"], flow["reason"]
    else:
        queued = await api.poll_one(task)
        assert queued["input"] == {"x": None}


# -- abusive JavaScript ------------------------------------------------------------------

JS_GRACE_SECONDS = 3.0
QUEUE_SLACK_FACTOR = 2
LOOP_RUNS = 20
JS_ABUSE = {
    "infinite loop": ("while(true){}", "timed out"),
    "deep recursion": ("function f(n) { return f(n + 1) + 1 } f(0)", "Maximum call stack size"),
    "memory bomb": ("var a = []; while (true) a.push(new Array(1e6))", "out of memory"),
}


def javascript_workflow(name: str, script: str) -> dict[str, Any]:
    return workflow(name, system(1, "javascript", expression=script))


@pytest.mark.parametrize(("script", "problem"), JS_ABUSE.values(), ids=JS_ABUSE.keys())
async def test_abusive_script_fails_its_run_naming_the_problem(
    api: Api, script: str, problem: str
) -> None:
    name = unique("js-abuse")
    await api.register(javascript_workflow(name, script))
    flow_id = await api.start(name)
    flow = await api.wait_status(flow_id, "FAILED")
    assert problem in flow["reason"], flow["reason"]
    assert "action 1" in flow["reason"], flow["reason"]
    assert flow["actions"]["1"]["status"] == "FAILED"
    assert problem in (flow["actions"]["1"]["error"] or "")


async def test_twenty_infinite_loops_leave_the_server_responsive(
    api: Api, server: ServerThread, settings: Settings
) -> None:
    """20 runs of ``while(true){}`` at once: each fails with a timeout (they queue for the
    ``js_threads`` script threads), a plain run started meanwhile completes, and /health
    keeps answering while the scripts run. How fast it answers meanwhile is measured by
    ``python -m bench.health_under_load --scripts``."""
    limit = get_settings().js_timeout_seconds
    loop_name, plain_name = unique("js-loops"), unique("js-bystander")
    bystander = f"{plain_name}-task"
    await api.register(javascript_workflow(loop_name, "while(true){}"))
    await api.register(workflow(plain_name, user(1, bystander)))
    # The scripts queue for the script threads, a limit each; twice that for a busy machine.
    queued_limits = math.ceil(LOOP_RUNS / settings.js_threads) * limit
    deadline = QUEUE_SLACK_FACTOR * queued_limits + JS_GRACE_SECONDS
    loops = asyncio.gather(*(api.start(loop_name) for _ in range(LOOP_RUNS)))
    health_answers = 0
    try:
        async with httpx.AsyncClient(base_url=server.url, timeout=deadline) as probe:
            plain = await api.start(plain_name)
            task = await api.poll_one(bystander)
            assert (await api.complete(task["taskId"], {"ok": True})).status_code == 200
            await api.wait_status(plain, "COMPLETED")
            assert not loops.done(), "the loops ended before the bystander: it proves nothing"
            while not loops.done():
                response = await probe.get("/health")
                assert response.status_code == 200, response.text
                health_answers += 1
    finally:
        await asyncio.wait([loops], timeout=deadline)  # never leave the starts running
    assert health_answers > 0
    for flow_id in loops.result():
        flow = await api.wait_status(flow_id, "FAILED", timeout=deadline)
        assert "timed out" in flow["reason"], flow["reason"]


# V8 cannot interrupt these inside one builtin call: in-process, the first aborted the whole
# server ("Fatal JavaScript out of memory: invalid table size") and the second held a thread
# for about 18 s. In a script process, each must fail its run in time and the server live on.
V8_UNSTOPPABLE = {
    "fill of a 1e9-element array": "new Array(1e9).fill(1)",
    "Array.from of 1e8 elements": "Array.from({length: 1e8}).length",
}
UNSTOPPABLE_CLIENT_TIMEOUT_SECONDS = 120.0


@pytest.mark.slow
@pytest.mark.parametrize("script", V8_UNSTOPPABLE.values(), ids=V8_UNSTOPPABLE.keys())
async def test_script_v8_cannot_interrupt_fails_in_time_and_server_survives(
    tmp_path: Path, processes: Processes, script: str
) -> None:
    limit = get_settings().js_timeout_seconds
    server: ServerProcess = processes.server(
        clean_env(ORCHY_DATA_DIR=str(tmp_path / "data")), tmp_path / "server.log"
    )
    processes.pidfiles.append(tmp_path / "data" / "redis.pid")
    await server.start()
    name = unique("js-unstoppable")
    async with api_of(server.url) as api:
        await api.register(javascript_workflow(name, script))
        started = time.monotonic()
        response = await api.http.post(
            "/flow/execute", json={"name": name}, timeout=UNSTOPPABLE_CLIENT_TIMEOUT_SECONDS
        )
        assert response.status_code == 201, response.text
        flow = await api.wait_status(response.json()["flowId"], "FAILED")
        elapsed = time.monotonic() - started
        assert elapsed < limit + JS_GRACE_SECONDS, f"the run failed after {elapsed:.1f}s"
        assert (await api.http.get("/health")).status_code == 200
        assert server.process is not None and server.process.poll() is None
        assert flow["actions"]["1"]["status"] == "FAILED"
    await server.terminate()
