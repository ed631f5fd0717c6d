"""Limits on what clients send, checked where the data enters: 413 naming the limit, 422
naming the field, never a 500, and nothing changed. Most tests run against a server whose
limits are small (``limited``), so that every limit can be reached with small requests; the
rest check the defaults on the session's server."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any
from urllib.parse import quote

import httpx
import pytest
import pytest_asyncio

from app.engine.ids import IDEMPOTENCY_NAMESPACE
from app.settings import Settings
from tests.helpers.definitions import fan_out, system, user, user_chain, workflow
from tests.helpers.http import Api, ServerThread, serving
from tests.helpers.waiting import unique

LIMITS: dict[str, Any] = {
    "max_definition_bytes": 4000,
    "max_input_bytes": 2000,
    "max_output_bytes": 2000,
    "max_event_bytes": 2000,
    "max_batch_bytes": 8000,
    "max_body_bytes": 1000,
    "max_json_depth": 8,
    "max_actions": 6,
    "max_next_ids": 3,
    "max_duration_seconds": 3600.0,
    "max_retry_count": 5,
}
DEFAULT_FAN_OUT = 10_000
STREAM_CHUNK_BYTES = 1000


@pytest.fixture(scope="module")
def limited_server(settings: Settings, redis_client: Any) -> Iterator[ServerThread]:
    with serving(settings.model_copy(update=LIMITS)) as thread:
        yield thread


@pytest_asyncio.fixture
async def limited(limited_server: ServerThread) -> AsyncIterator[Api]:
    async with httpx.AsyncClient(base_url=limited_server.url, timeout=30) as client:
        yield Api(client)


def raw(value: Any) -> bytes:
    """JSON as Python writes it: NaN, Infinity, integers of any size and lone surrogates
    (as ``\\ud800`` escapes), all of which httpx's ``json=`` refuses to send."""
    return json.dumps(value).encode()


async def post(api: Api, path: str, value: Any) -> httpx.Response:
    return await api.http.post(path, content=raw(value))


def assert_refused(response: httpx.Response, status: int, *named: str) -> str:
    assert response.status_code == status, f"{response.status_code}: {response.text}"
    error: str = response.json()["error"]
    for name in named:
        assert name in error, f"{name!r} not in {error!r}"
    return error


def nested(depth: int) -> Any:
    value: Any = 0
    for _ in range(depth):
        value = {"a": value}
    return value


async def run_and_history(api: Api, flow_id: str) -> tuple[dict[str, Any], Any]:
    history = (await api.http.get(f"/flow/{flow_id}/history")).json()
    return await api.flow(flow_id), history


# -- numbers in definitions ------------------------------------------------------------------

OUT_OF_RANGE = {
    "Infinity": float("inf"),
    "NaN": float("nan"),
    "1e308": 1e308,
    "beyond the maximum": LIMITS["max_duration_seconds"] + 1,
}
# How each bad value is named: NaN and Infinity by the JSON parser, the rest by the limit.
NAMED_AS = {"Infinity": "Infinity", "NaN": "NaN"}
DURATION_FIELDS = {
    "delay's delaySeconds": (
        "delaySeconds",
        lambda value: system(1, "delay", delaySeconds=value),
    ),
    "wait's timeoutSeconds": (
        "timeoutSeconds",
        lambda value: system(1, "wait", event="go", timeoutSeconds=value),
    ),
}


@pytest.mark.parametrize(("label", "value"), OUT_OF_RANGE.items(), ids=OUT_OF_RANGE.keys())
@pytest.mark.parametrize("field", DURATION_FIELDS.values(), ids=DURATION_FIELDS.keys())
async def test_durations_beyond_the_maximum_are_refused_at_registration(
    limited: Api, field: tuple[str, Any], label: str, value: float
) -> None:
    """Today Infinity, NaN and 1e308 register, and every run of the workflow then fails
    with a 500; they are refused when the definition is registered, naming the field."""
    key, make = field
    name = unique("duration")
    response = await post(limited, "/metadata/workflow", workflow(name, make(value)))
    limit = NAMED_AS.get(label, "ORCHY_MAX_DURATION_SECONDS")
    assert_refused(response, 422, key, limit)
    assert (await limited.http.get(f"/metadata/workflow/{name}")).status_code == 404


ACTION_FIELDS = {
    "retryAfterSeconds": "ORCHY_MAX_DURATION_SECONDS",
    "timeoutSeconds": "ORCHY_MAX_DURATION_SECONDS",
}


@pytest.mark.parametrize(("label", "value"), OUT_OF_RANGE.items(), ids=OUT_OF_RANGE.keys())
@pytest.mark.parametrize("field", ACTION_FIELDS.keys())
async def test_action_settings_beyond_the_maximum_are_refused(
    limited: Api, field: str, label: str, value: float
) -> None:
    """Today these register, and then every poll of the action, ``GET /metadata/action``,
    a start and a ``/fail`` answer 500 (OverflowError)."""
    name = unique("action")
    response = await post(limited, "/metadata/action", {"name": name, field: value})
    assert_refused(response, 422, field, NAMED_AS.get(label, ACTION_FIELDS[field]))
    assert (await limited.http.get("/metadata/action")).status_code == 200
    stored = await limited.http.get(f"/metadata/action/{name}")
    assert stored.status_code == 200 and stored.json()[field] != value  # the defaults


@pytest.mark.parametrize("value", ["NaN", "Infinity"])
async def test_non_finite_numbers_written_as_strings_are_refused(limited: Api, value: str) -> None:
    """pydantic reads the string "NaN" as a float NaN, which compares below any maximum."""
    response = await post(
        limited, "/metadata/action", {"name": unique("s"), "timeoutSeconds": value}
    )
    assert_refused(response, 422, "timeoutSeconds")


RETRY_COUNTS = {
    "one beyond": (LIMITS["max_retry_count"] + 1, "ORCHY_MAX_RETRY_COUNT"),
    "a billion": (10**9, "ORCHY_MAX_RETRY_COUNT"),
    "1e308": (1e308, "integer"),
}


@pytest.mark.parametrize(("count", "named"), RETRY_COUNTS.values(), ids=RETRY_COUNTS.keys())
async def test_retry_count_beyond_the_maximum_is_refused(
    limited: Api, count: float, named: str
) -> None:
    response = await post(limited, "/metadata/action", {"name": unique("r"), "retryCount": count})
    assert_refused(response, 422, "retryCount", named)


async def test_settings_at_the_maxima_work_through_poll_and_fail(limited: Api) -> None:
    """The largest allowed settings: an EXPONENTIAL back-off from them stays a number."""
    name = unique("at-max")
    action = f"{name}-task"
    at_max = {
        "name": action,
        "retryCount": LIMITS["max_retry_count"],
        "retryAfterSeconds": LIMITS["max_duration_seconds"],
        "timeoutSeconds": LIMITS["max_duration_seconds"],
        "retryPolicy": "EXPONENTIAL",
    }
    assert (await post(limited, "/metadata/action", at_max)).status_code == 200
    max_wait = system(2, "wait", event="go", timeoutSeconds=LIMITS["max_duration_seconds"])
    await limited.register(workflow(name, user(1, action, {"error": [2]}), max_wait))
    flow_id = await limited.start(name)
    task = await limited.poll_one(action)
    assert (await limited.fail(task["taskId"], "again")).status_code == 200
    assert (await limited.flow(flow_id))["actions"]["1"]["status"] == "QUEUED"
    assert (await limited.http.get("/metadata/action")).status_code == 200


# -- values JSON allows and the server cannot keep, in any body ------------------------------

DEPTH = LIMITS["max_json_depth"]
TOO_DEEP = "ORCHY_MAX_JSON_DEPTH"
BAD_VALUES = {
    "NaN": (float("nan"), "NaN"),
    "Infinity": (float("inf"), "Infinity"),
    "-Infinity": (float("-inf"), "-Infinity"),
    "2**63": (2**63, str(2**63)),
    "-2**63-1": (-(2**63) - 1, str(-(2**63) - 1)),
    "2**64": (2**64, str(2**64)),
    "lone surrogate": ("\ud800", "surrogate"),
    "too deep": (nested(DEPTH), TOO_DEEP),
}


def bad_bodies(value: Any, name: str, flow_id: str, task_id: str) -> dict[str, tuple[str, Any]]:
    """Every route that takes user data, with ``value`` where the data goes: (path, body)."""
    return {
        "body.input.v": ("/flow/execute", {"name": name, "input": {"v": value}}),
        "body.inputs[1].v": ("/flow/execute/many", {"name": name, "inputs": [{}, {"v": value}]}),
        "body.v": (f"/flow/{flow_id}/events/go", {"v": value}),
        "body.output.v": (f"/tasks/{task_id}/complete", {"output": {"v": value}}),
        "body.error": (f"/tasks/{task_id}/fail", {"error": value}),
        "body.results[0].output.v": (
            "/tasks/results",
            {"results": [{"taskId": task_id, "output": {"v": value}}]},
        ),
        "body.actions[1]": (
            "/tasks/poll",
            {"workerId": "w", "actions": [f"{name}-task", value], "max": 1},
        ),
        "body.name": ("/metadata/action", {"name": value}),
        "body.actions[0].parameters.v": (
            "/metadata/workflow",
            workflow(unique("bad"), user(1, "x", v=value)),
        ),
    }


@pytest.mark.parametrize(("value", "named"), BAD_VALUES.values(), ids=BAD_VALUES.keys())
async def test_values_the_server_cannot_keep_are_422_naming_the_field_in_every_body(
    limited: Api, value: Any, named: str
) -> None:
    """Today NaN and Infinity are stored as null, integers beyond 64 bits as floats (or 500),
    and a lone surrogate gets a 500 from the worker routes. Each is refused with 422 naming
    the field, on FastAPI's routes and the workers' fast ones alike, and nothing changes."""
    name = unique("unkept")
    await limited.register(
        workflow(name, user(1, f"{name}-task", {"default": [2]}), system(2, "wait", event="go"))
    )
    flow_id = await limited.start(name)
    task = await limited.poll_one(f"{name}-task")
    before = await run_and_history(limited, flow_id)
    for where, (path, body) in bad_bodies(value, name, flow_id, task["taskId"]).items():
        response = await limited.http.post(path, content=raw(body))
        if named == TOO_DEEP:  # the error names where, deep inside, the limit is passed
            assert_refused(response, 422, named)
            assert where in response.json()["error"], f"{path}: {response.text}"
        else:
            assert_refused(response, 422, where, named)
    assert await run_and_history(limited, flow_id) == before
    runs = (await limited.http.get("/flow", params={"name": name})).json()["runs"]
    assert len(runs) == 1  # no start went through


async def test_number_too_large_for_a_double_is_422(limited: Api) -> None:
    body = b'{"name": "x", "input": {"v": 1e400}}'
    assert_refused(await limited.http.post("/flow/execute", content=body), 422, "body.input.v")


async def test_integer_of_five_thousand_digits_is_422(api: Api) -> None:
    """More digits than Python converts to an int (4300): still a 422, not a 500."""
    body = b'{"name": "x", "input": {"v": ' + b"9" * 5000 + b"}}"
    error = assert_refused(
        await api.http.post("/flow/execute", content=body), 422, "body.input.v", "64-bit"
    )
    assert len(error) < 200, error


async def test_values_at_the_edges_are_kept_exactly(limited: Api) -> None:
    """What is allowed goes through unchanged: the 64-bit extremes, long digit strings
    inside strings, surrogate pairs, and nesting at the limit."""
    name = unique("edges")
    await limited.register(workflow(name, user(1, f"{name}-task")))
    data = {
        "big": 2**63 - 1,
        "small": -(2**63),
        "digits": "[1, 123456789012345678901234567890]",
        "emoji": "\U0001f600",
        "deep": nested(DEPTH - 2),  # the body and "input" hold it
        "brackets": '[[[[[[[[[[{{{{{{{{{{\\"[[[[\\\\',  # in a string: no nesting
    }
    flow_id = await limited.start(name, data)
    assert (await limited.flow(flow_id))["input"] == data


# -- body sizes ------------------------------------------------------------------------------


def padded(body: dict[str, Any], size: int) -> dict[str, Any]:
    return {**body, "pad": "x" * size}


BODY_ROUTES = {
    "definition": ("/metadata/workflow", "max_definition_bytes"),
    "action definition": ("/metadata/action", "max_body_bytes"),
    "start": ("/flow/execute", "max_input_bytes"),
    "starts": ("/flow/execute/many", "max_batch_bytes"),
    "event": ("/flow/{flow}/events/go", "max_event_bytes"),
    "complete": ("/tasks/{task}/complete", "max_output_bytes"),
    "fail": ("/tasks/{task}/fail", "max_output_bytes"),
    "results": ("/tasks/results", "max_batch_bytes"),
    "poll": ("/tasks/poll", "max_body_bytes"),
}


@pytest.mark.parametrize("streamed", [False, True], ids=["declared", "streamed"])
async def test_every_body_has_a_size_limit_answered_413_naming_it(
    limited: Api, streamed: bool
) -> None:
    """Today a 50 MB start or definition is accepted. Every route's body has a limit; a
    body over it, with its size declared or streamed without one, gets 413 naming the
    limit and its setting, and changes nothing."""
    name = unique("sizes")
    await limited.register(
        workflow(name, user(1, f"{name}-task", {"default": [2]}), system(2, "wait", event="go"))
    )
    flow_id = await limited.start(name)
    task = await limited.poll_one(f"{name}-task")
    before = await run_and_history(limited, flow_id)
    for label, (template, setting) in BODY_ROUTES.items():
        path = template.format(flow=flow_id, task=task["taskId"])
        most = LIMITS[setting]
        body = raw(padded({"name": name}, most))
        content: Any = body
        if streamed:
            chunks = [
                body[i : i + STREAM_CHUNK_BYTES] for i in range(0, len(body), STREAM_CHUNK_BYTES)
            ]

            async def stream(chunks: list[bytes] = chunks) -> AsyncIterator[bytes]:
                for chunk in chunks:
                    yield chunk

            content = stream()
        response = await limited.http.post(path, content=content)
        variable = f"ORCHY_{setting.upper()}"
        assert response.status_code == 413, f"{label}: {response.status_code} {response.text}"
        error = response.json()["error"]
        assert f"the limit is {most} bytes ({variable})" in error, f"{label}: {error}"
    assert await run_and_history(limited, flow_id) == before
    runs = (await limited.http.get("/flow", params={"name": name})).json()["runs"]
    assert len(runs) == 1


async def test_each_input_of_many_starts_has_the_input_limit(limited: Api) -> None:
    name = unique("many")
    await limited.register(workflow(name, user(1, f"{name}-task")))
    inputs = [{}, {"pad": "x" * LIMITS["max_input_bytes"]}]
    response = await post(limited, "/flow/execute/many", {"name": name, "inputs": inputs})
    assert_refused(response, 413, "inputs[1]", "ORCHY_MAX_INPUT_BYTES")
    assert (await limited.http.get("/flow", params={"name": name})).json()["runs"] == []


# -- definition size -------------------------------------------------------------------------


async def test_definitions_have_a_maximum_number_of_actions(limited: Api) -> None:
    most = LIMITS["max_actions"]
    queue = unique("step")
    at_most = user_chain(unique("ok"), queue, most)
    assert (await post(limited, "/metadata/workflow", at_most)).status_code == 200
    response = await post(
        limited, "/metadata/workflow", user_chain(unique("long"), queue, most + 1)
    )
    assert_refused(response, 422, "actions", str(most), "ORCHY_MAX_ACTIONS")


async def test_a_next_list_has_a_maximum_number_of_ids(limited: Api) -> None:
    most = LIMITS["max_next_ids"]

    queue = unique("leaf")

    def wide(width: int) -> dict[str, Any]:
        return fan_out(unique("fan"), user(1, unique("head")), queue, width)

    assert (await post(limited, "/metadata/workflow", wide(most))).status_code == 200
    response = await post(limited, "/metadata/workflow", wide(most + 1))
    assert_refused(response, 422, "action 1", "next.default", "ORCHY_MAX_NEXT_IDS")


async def test_default_limits_allow_a_fan_out_of_ten_thousand(api: Api) -> None:
    head = user(1, unique("head"))
    await api.register(fan_out(unique("wide"), head, unique("leaf"), DEFAULT_FAN_OUT))


# -- event names -----------------------------------------------------------------------------

UNSENDABLE = {"slash": "a/b", "dot": ".", "dot dot": "..", "newline": "a\nb"}


@pytest.mark.parametrize("event", UNSENDABLE.values(), ids=UNSENDABLE.keys())
async def test_wait_for_an_event_no_url_can_send_is_refused(api: Api, event: str) -> None:
    """Today a wait for "a/b" registers, and its runs wait until the timeout or for ever:
    no ``POST /flow/{id}/events/{event}`` can reach it."""
    definition = workflow(
        unique("unsendable"), user(1, unique("t"), {"default": [2]}), system(2, "wait", event=event)
    )
    response = await api.http.post("/metadata/workflow", json=definition)
    assert_refused(response, 422, "action 2", "event")


async def test_event_names_that_need_escaping_are_sent_and_delivered(api: Api) -> None:
    event = "50% off? #1 & more é"
    name = unique("escaped")
    await api.register(workflow(name, system(1, "wait", event=event)))
    flow_id = await api.start(name)
    response = await api.http.post(f"/flow/{flow_id}/events/{quote(event, safe='')}", json={"k": 1})
    assert response.status_code == 200, response.text
    flow = await api.wait_status(flow_id, "COMPLETED")
    assert flow["actions"]["1"]["output"] == {"k": 1}


# -- idempotency keys ------------------------------------------------------------------------


async def test_idempotency_keys_are_scoped_to_their_workflow_without_collisions(api: Api) -> None:
    """``"x\\ny"`` with key ``"k"`` and ``"x"`` with key ``"y\\nk"`` used to name one run."""
    base = unique("idem")
    await api.register(workflow(f"{base}\ny", user(1, unique("t"))))
    await api.register(workflow(base, user(1, unique("t"))))
    first = await api.http.post("/flow/execute", json={"name": f"{base}\ny", "idempotencyKey": "k"})
    second = await api.http.post("/flow/execute", json={"name": base, "idempotencyKey": "y\nk"})
    assert first.status_code == second.status_code == 201, (first.text, second.text)
    assert first.json()["created"] and second.json()["created"]
    assert first.json()["flowId"] != second.json()["flowId"]
    assert (await api.flow(second.json()["flowId"]))["name"] == base
    again = await api.http.post("/flow/execute", json={"name": base, "idempotencyKey": "y\nk"})
    assert again.json() == {"flowId": second.json()["flowId"], "created": False}


async def test_idempotency_keys_name_the_runs_they_named_before(api: Api) -> None:
    """A name without a newline keeps its key's flow id from before the change, so that a
    retried start after an upgrade still finds its run."""
    name = unique("idem-compatible")
    await api.register(workflow(name, user(1, f"{name}-t")))
    flow_id = await api.start(name, idempotencyKey="order-17")
    assert flow_id == uuid.uuid5(IDEMPOTENCY_NAMESPACE, f"{name}\norder-17").hex


# -- events to a paused run ------------------------------------------------------------------


async def test_event_to_a_paused_run_is_answered_held_and_applied_on_resume(api: Api) -> None:
    name = unique("paused-event")
    await api.register(workflow(name, system(1, "wait", event="go")))
    flow_id = await api.start(name)
    assert (await api.flow(flow_id))["actions"]["1"]["status"] == "WAITING"
    assert (await api.http.post(f"/flow/{flow_id}/pause")).status_code == 200
    response = await api.http.post(f"/flow/{flow_id}/events/go", json={"k": 1})
    assert response.status_code == 200, response.text
    assert response.json() == {"status": "held"}
    assert (await api.http.post(f"/flow/{flow_id}/resume")).status_code == 200
    flow = await api.wait_status(flow_id, "COMPLETED")
    assert flow["actions"]["1"]["output"] == {"k": 1}
