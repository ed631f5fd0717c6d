"""Every operation fuzzed from the OpenAPI schema a real server serves, with schemathesis:
valid requests and invalid ones. Invalid data must be refused (never a 2xx), nothing may be
answered with a 500, every answer must have a documented status, content type and shape,
and a refusal must name the field at fault."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.parameters import ParameterLocation
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)

from app.api.app import create_app
from app.settings import Settings
from tests.helpers.definitions import system, user, workflow
from tests.helpers.http import ServerThread, serving
from tests.helpers.waiting import unique, wait_until_sync

# jsonpath-ng warns when it parses `&` and `|`, which the fuzzer may write in a definition.
pytestmark = pytest.mark.filterwarnings("ignore:The .* operator is deprecated:DeprecationWarning")

# Long polls (and waits for a run's end) of the fuzzed server end at once, whatever
# waitSeconds the fuzzer picks.
FUZZ_POLL_MAX_WAIT_SECONDS = 0.05
MAX_EXAMPLES = 60
REQUEST_TIMEOUT_SECONDS = 10.0
# Runs made COMPLETED, FAILED, PAUSED and TERMINATED, and some left RUNNING.
KNOWN_RUNS = 8
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    negative_data_rejection,
]
UNPROCESSABLE = 422
OPENAPI = create_app().openapi()
OPENAPI_PATHS = OPENAPI["paths"]


@dataclass(frozen=True)
class KnownIds:
    """Ids that exist, swapped into some generated requests so that the fuzzer reaches past
    "not found": runs in every status, tasks leased and answered, a workflow and its action."""

    workflow: str
    action: str
    flow_ids: list[str]
    task_ids: list[str]


@pytest.fixture(scope="module")
def fuzz_server(settings: Settings, redis_client: Any) -> Iterator[ServerThread]:
    fuzzed = settings.model_copy(
        update={
            "poll_max_wait_seconds": FUZZ_POLL_MAX_WAIT_SECONDS,
            "max_run_wait_seconds": FUZZ_POLL_MAX_WAIT_SECONDS,
        }
    )
    with serving(fuzzed) as thread:
        yield thread


@pytest.fixture(scope="module")
def known_ids(fuzz_server: ServerThread) -> KnownIds:
    """Runs in every status (so that each shape of a run is read back and checked), and
    tasks leased, answered and not."""
    name = unique("fuzz-known")
    action = f"{name}-task"
    definition = workflow(
        name,
        user(1, action, {"default": [2]}, x="{$.input.x}"),
        system(2, "wait", event="go"),
        output={"x": "{$.input.x}", "opened": "{$.2.output.opened}"},
    )
    with httpx.Client(base_url=fuzz_server.url, timeout=30) as client:
        assert client.post("/metadata/workflow", json=definition).status_code == 200
        flow_ids = [
            client.post("/flow/execute", json={"name": name, "input": {"x": index}}).json()[
                "flowId"
            ]
            for index in range(KNOWN_RUNS)
        ]
        body = {"workerId": "fuzz", "actions": [action], "max": KNOWN_RUNS}
        tasks = {
            task["flowId"]: task["taskId"]
            for task in client.post("/tasks/poll", json=body).json()["tasks"]
        }
        assert set(tasks) == set(flow_ids)
        completed, failed, paused, terminated = flow_ids[:4]
        answer = client.post(f"/tasks/{tasks[completed]}/complete", json={"output": {"y": 1}})
        assert answer.status_code == 200, answer.text
        answer = client.post(f"/flow/{completed}/events/go", json={"opened": True})
        assert answer.status_code == 200, answer.text
        answer = client.post(
            f"/tasks/{tasks[failed]}/fail", json={"error": "no", "retryable": False}
        )
        assert answer.status_code == 200, answer.text
        assert client.post(f"/flow/{paused}/pause").status_code == 200
        assert client.post(f"/flow/{terminated}/terminate").status_code == 200

        def has_status(flow_id: str, status: str) -> bool:
            return bool(client.get(f"/flow/{flow_id}").json()["status"] == status)

        wait_until_sync(lambda: has_status(completed, "COMPLETED"), what="the run to complete")
        wait_until_sync(lambda: has_status(failed, "FAILED"), what="the run to fail")
    return KnownIds(name, action, flow_ids, list(tasks.values()))


@pytest.fixture(scope="module")
def api_schema(fuzz_server: ServerThread) -> schemathesis.BaseSchema:
    return schemathesis.openapi.from_url(f"{fuzz_server.url}/openapi.json")


def is_negative(case: schemathesis.Case[Any], location: ParameterLocation) -> bool:
    component = case.meta.components.get(location) if case.meta is not None else None
    return component is not None and component.mode.is_negative


def swap_in_known_ids(case: schemathesis.Case[Any], known: KnownIds) -> None:
    """Replaces about half of the generated path ids by real ones, chosen from the generated
    value so that Hypothesis can replay and shrink the case. (A path made invalid on purpose
    is left as it is.)"""
    if is_negative(case, ParameterLocation.PATH):
        return
    parameters = case.path_parameters or {}
    pools = {
        "flow_id": known.flow_ids,
        "task_id": known.task_ids,
        "name": [known.workflow, known.action],
    }
    for key, pool in pools.items():
        value = parameters.get(key)
        if isinstance(value, str) and len(value) % 2 == 0:
            parameters[key] = pool[len(value) // 2 % len(pool)]


def fields_at_fault(case: schemathesis.Case[Any]) -> set[str]:
    """The names a refusal of ``case`` may give: each field the fuzzer made invalid (its
    innermost name, or its location when the whole body or query is wrong), and every field
    the operation declares (a request made invalid in one place may be refused for another
    field first: a value beyond 64 bits, a string made empty)."""
    operation = OPENAPI["paths"][case.operation.path][case.method.lower()]
    names = declared_fields([operation.get("parameters"), operation.get("requestBody")])
    if case.meta is None:
        return names
    for mutation in getattr(case.meta.phase.data, "mutations", ()):
        named = [part for part in mutation.path if isinstance(part, str)]
        if mutation.parameter:
            names.add(mutation.parameter)
        names.add(named[-1] if named else mutation.parameter_location.name.lower())
    return names


def declared_fields(schema: Any) -> set[str]:
    """Every parameter and property name in ``schema`` and the schemas it refers to, and
    the body's own names: ``body``, or ``definition`` for a workflow definition (whose
    messages, worded by validate.py, call a body that is not an object that)."""
    names = {"body", "definition"}
    pending = [schema]
    seen: set[str] = set()
    while pending:
        item = pending.pop()
        if isinstance(item, dict):
            reference = item.get("$ref")
            if isinstance(reference, str) and reference not in seen:
                seen.add(reference)
                pending.append(OPENAPI["components"]["schemas"][reference.rsplit("/", 1)[-1]])
            if isinstance(item.get("properties"), dict):
                names.update(item["properties"])
            if item.get("in") in ("query", "path") and isinstance(item.get("name"), str):
                names.add(item["name"])
            pending.extend(item.values())
        elif isinstance(item, list):
            pending.extend(item)
    return names


def assert_names_the_field(case: schemathesis.Case[Any], response: Any) -> None:
    """A refused invalid request is answered ``{"error": "<field>: <problem>"}``, naming a
    field of the request."""
    message = response.json()["error"]
    assert isinstance(message, str) and message.strip(), response.text
    names = fields_at_fault(case)
    named = any(re.search(rf"(?<![\w-]){re.escape(name)}(?![\w-])", message) for name in names)
    assert named, f"{message!r} names none of {sorted(names)}"


# One test per operation and generation mode, read from the app's own schema. Invalid
# requests go to the operations with a typed body or a query: a path holds text whatever the
# fuzzer does, and an event's body may be any JSON, so such operations have nothing to refuse.
ANNOTATIONS = {"title", "description"}


def takes_checked_input(operation: dict[str, Any]) -> bool:
    if any(item["in"] != "path" for item in operation.get("parameters", [])):
        return True
    body = operation.get("requestBody", {}).get("content", {}).get("application/json", {})
    return bool(set(body.get("schema", {})) - ANNOTATIONS)


OPERATIONS = [
    pytest.param(f"{method.upper()} {path}", mode, id=f"{method.upper()} {path} {mode.value}")
    for path, operations in OPENAPI_PATHS.items()
    for method, operation in operations.items()
    for mode in GenerationMode
    if mode is GenerationMode.POSITIVE or takes_checked_input(operation)
]


@pytest.mark.parametrize(("route", "mode"), OPERATIONS)
def test_every_operation_answers_as_documented(
    api_schema: schemathesis.BaseSchema, known_ids: KnownIds, route: str, mode: GenerationMode
) -> None:
    """Valid and invalid requests alike: no 500, a documented status code, content type and
    body; invalid data refused with a 4xx whose message names the field at fault."""
    method, path = route.split(" ", 1)
    operation = api_schema[path][method]

    @hypothesis_settings(
        max_examples=MAX_EXAMPLES,
        deadline=None,
        derandomize=True,
        database=None,
        # Each example is an HTTP request to a server sharing two cores with other tests:
        # slow generation and filtered examples say nothing about the API.
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    )
    @given(case=operation.as_strategy(mode))
    def answers_as_documented(case: schemathesis.Case[Any]) -> None:
        call_and_check(case, known_ids)

    answers_as_documented()


ROUTES = [
    f"{method.upper()} {path}"
    for path, operations in OPENAPI_PATHS.items()
    for method in operations
]


@pytest.mark.parametrize("route", ROUTES)
def test_every_operation_answers_its_boundary_cases_as_documented(
    api_schema: schemathesis.BaseSchema, known_ids: KnownIds, route: str
) -> None:
    """Schemathesis's coverage cases, the same every run: each bound of each field, just
    inside and just outside, each required field left out, each field of the wrong type."""
    method, path = route.split(" ", 1)
    operation = api_schema[path][method]
    cases = api_schema.iter_coverage_cases(
        operation,
        generation_modes=list(GenerationMode),
        generation_config=api_schema.config.generation_for(operation=operation),
    )
    for case in cases:
        call_and_check(case, known_ids)


def call_and_check(case: schemathesis.Case[Any], known: KnownIds) -> None:
    swap_in_known_ids(case, known)
    response = case.call_and_validate(checks=CHECKS, timeout=REQUEST_TIMEOUT_SECONDS)
    negative = case.meta is not None and case.meta.generation.mode.is_negative
    if is_negative(case, ParameterLocation.BODY):
        # Bodies are validated before anything is looked up: an invalid one is never "not
        # found" (which negative_data_rejection would take as refused).
        assert response.status_code == UNPROCESSABLE, f"{response.status_code}: {response.text}"
    if negative and response.status_code == UNPROCESSABLE:
        assert_names_the_field(case, response)


# -- what the fuzzer found -------------------------------------------------------------------

# pydantic's lax mode read these as numbers and booleans ("false" as false, 0 as false, "3"
# as 3, false as 0.0) and answered 200; the schema documents numbers and booleans.
LAX_VALUES = [
    ("/metadata/action", {"name": "x", "retryAfterSeconds": False}, "retryAfterSeconds"),
    ("/metadata/action", {"name": "x", "retryCount": "3"}, "retryCount"),
    ("/metadata/action", {"name": "x", "timeoutSeconds": "30"}, "timeoutSeconds"),
    ("/metadata/action", {"name": "x", "pollTimeoutSeconds": True}, "pollTimeoutSeconds"),
    ("/tasks/poll", {"workerId": "w", "actions": ["a"], "max": "2"}, "max"),
    ("/tasks/poll", {"workerId": "w", "actions": ["a"], "waitSeconds": True}, "waitSeconds"),
    ("/flow/execute", {"name": "x", "version": "1"}, "version"),
    ("/flow/execute/many", {"name": "x", "inputs": [{}], "version": True}, "version"),
    ("/tasks/x.1.1/fail", {"error": "e", "retryable": "false"}, "retryable"),
    (
        "/tasks/results",
        {"results": [{"taskId": "x.1.1", "error": "e", "retryable": 0}]},
        "retryable",
    ),
    (
        "/tasks/x.1.1/complete",
        {"output": {}, "next": {"workerId": "w", "actions": ["a"], "max": "1"}},
        "max",
    ),
]


@pytest.mark.parametrize(
    ("path", "body", "field"), LAX_VALUES, ids=[f"{path} {field}" for path, _, field in LAX_VALUES]
)
async def test_string_or_boolean_for_a_number_or_boolean_is_refused_naming_it(
    http: httpx.AsyncClient, path: str, body: dict[str, Any], field: str
) -> None:
    response = await http.post(path, json=body)
    assert response.status_code == UNPROCESSABLE, f"{response.status_code}: {response.text}"
    assert f"{field}:" in response.json()["error"], response.text


async def test_integer_where_a_number_is_documented_is_taken(http: httpx.AsyncClient) -> None:
    name = unique("integer-seconds")
    body = {"name": name, "retryCount": 2, "retryAfterSeconds": 2, "timeoutSeconds": 30}
    response = await http.post("/metadata/action", json=body)
    assert response.status_code == 200, response.text
    assert response.json()["retryAfterSeconds"] == 2.0
    assert response.json()["timeoutSeconds"] == 30.0
