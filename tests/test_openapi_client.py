"""The OpenAPI schema is the contract for clients in any language: a client generated from
``/openapi.json`` (openapi-python-client) drives the notification example with typed models,
every route is described with examples and its errors, and ``/docs`` needs no CDN."""

from __future__ import annotations

import importlib
import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest
from pydantic import BaseModel, TypeAdapter, ValidationError

from app.actions import REGISTRY
from app.api import models as api_models
from app.api import workflow_schema
from app.api.workflow_schema import (
    NOTIFICATION_EXAMPLE,
    SYSTEM_STEPS,
    StoredWorkflow,
    WorkflowDefinition,
)
from app.definition import DefinitionError
from app.engine.status import ActionStatus, RunStatus
from app.engine.validate import parse_workflow
from app.settings import Settings
from orchy.worker.loader import load_worker
from tests.helpers.http import ServerThread
from tests.helpers.notification import INPUT, WORKER_FILE, WORKFLOW
from tests.helpers.waiting import unique, wait_until

ROOT = Path(__file__).resolve().parent.parent
CLIENT_PACKAGE = "orchy_client"
GENERATE_SECONDS = 180
RUN_SECONDS = 40.0
FEMALE_USER = 42  # e-mail, then a wait for the `open` event: no 10 s delay on the way
UNAVAILABLE = "503"


def openapi_of(server: ServerThread) -> dict[str, Any]:
    response = httpx.get(f"{server.url}/openapi.json", timeout=30)
    assert response.status_code == 200, response.text
    schema: dict[str, Any] = response.json()
    return schema


def operations(schema: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    for path, methods in schema["paths"].items():
        for method, operation in methods.items():
            yield f"{method.upper()} {path}", operation


# -- the generated client -------------------------------------------------------------------


@pytest.fixture(scope="module")
def generated(server: ServerThread, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """The package openapi-python-client generates from the running server's schema,
    imported; generation fails on any warning (a body or answer it could not type)."""
    folder = tmp_path_factory.mktemp("client")
    schema_file = folder / "openapi.json"
    schema_file.write_text(json.dumps(openapi_of(server)))
    config = folder / "config.json"
    config.write_text(json.dumps({"post_hooks": []}))
    generation = subprocess.run(
        [
            sys.executable,
            "-m",
            "openapi_python_client",
            "generate",
            "--path",
            str(schema_file),
            "--meta",
            "none",
            "--output-path",
            str(folder / CLIENT_PACKAGE),
            "--config",
            str(config),
            "--fail-on-warning",
        ],
        capture_output=True,
        text=True,
        timeout=GENERATE_SECONDS,
        check=False,
    )
    assert generation.returncode == 0, generation.stdout + generation.stderr
    sys.path.insert(0, str(folder))
    try:
        yield GeneratedClient(importlib.import_module(CLIENT_PACKAGE))
    finally:
        sys.path.remove(str(folder))
        for name in [name for name in sys.modules if name.split(".")[0] == CLIENT_PACKAGE]:
            del sys.modules[name]


class GeneratedClient:
    """The generated package's models and operations, by the names the schema gives them."""

    def __init__(self, package: ModuleType) -> None:
        self.package = package
        self.models = importlib.import_module(f"{CLIENT_PACKAGE}.models")

    def operation(self, tag: str, name: str) -> Any:
        return importlib.import_module(f"{CLIENT_PACKAGE}.api.{tag}.{name}")


async def test_generated_client_drives_the_notification_example(
    generated: GeneratedClient,
    server: ServerThread,
    notification_worker: subprocess.Popen[bytes],
) -> None:
    models = generated.models
    client = generated.package.Client(base_url=server.url, raise_on_unexpected_status=True)

    def call(tag: str, name: str) -> Any:
        return generated.operation(tag, name).asyncio

    async with client:
        health = await call("health", "health")(client=client)
        assert isinstance(health, models.Health)
        assert health.status is models.HealthStatus.OK

        # The example's actions under a name of its own: other tests register the file too.
        source = {**json.loads(WORKFLOW.read_text()), "name": unique("notificationWorkflow")}
        definition = models.WorkflowDefinition.from_dict(source)
        kinds = [type(action).__name__ for action in definition.actions]
        assert kinds == [
            "UserAction",
            "JavaScriptStep",
            "SwitchStep",
            "UserAction",
            "UserAction",
            "DelayStep",
            "WaitStep",
            "UserAction",
            "UserAction",
            "UserAction",
        ]
        registered = await call("metadata", "register_workflow")(client=client, body=definition)
        assert isinstance(registered, models.WorkflowRegistered), registered
        assert registered.created
        stored = await call("metadata", "get_workflow")(client=client, name=source["name"])
        assert isinstance(stored, models.StoredWorkflow)
        assert stored.version == registered.version
        assert {key: value for key, value in stored.to_dict().items() if key != "version"} == (
            source
        )

        for action in load_worker(str(WORKER_FILE)).registry:
            body = models.ActionDefinition.from_dict(action.definition())
            answer = await call("metadata", "put_action")(client=client, body=body)
            assert isinstance(answer, models.ActionDefinitionOut), answer
            assert answer.name == action.name
        query_db = await call("metadata", "get_action")(client=client, name="query-db")
        assert query_db.retry_policy is models.RetryPolicy.FIXED
        assert query_db.retry_count == 3

        started = await call("flow", "execute")(
            client=client,
            body=models.ExecuteRequest(
                name=source["name"], input_={**INPUT, "userId": FEMALE_USER}
            ),
        )
        assert isinstance(started, models.ExecuteResponse), started
        flow_id = started.flow_id

        async def read() -> Any:
            flow = await call("flow", "get_flow")(client=client, flow_id=flow_id)
            assert isinstance(flow, models.FlowView), flow
            return flow

        async def waiting_for_open() -> bool:
            actions = (await read()).actions
            return "7" in actions and actions["7"].status is models.ActionStatus.WAITING

        await wait_until(waiting_for_open, RUN_SECONDS, what="the run to wait for `open`")
        sent = await call("flow", "send_event")(
            client=client, flow_id=flow_id, event="open", body={"opened": True}
        )
        assert isinstance(sent, models.Accepted)
        assert sent.status is models.AcceptedStatus.DELIVERED

        async def completed() -> bool:
            status = (await read()).status
            assert status in (models.RunStatus.RUNNING, models.RunStatus.COMPLETED), status
            return bool(status is models.RunStatus.COMPLETED)

        await wait_until(completed, RUN_SECONDS, what=f"flow {flow_id} to complete")
        flow = await read()
        assert sorted(flow.actions.additional_keys) == ["1", "2", "3", "5", "7", "9"]
        assert all(
            flow.actions[key].status is models.ActionStatus.COMPLETED
            for key in flow.actions.additional_keys
        )
        assert flow.actions["5"].output == {
            "sent": True,
            "to": f"user{FEMALE_USER}@example.com",
        }
        assert flow.actions["7"].output == {"opened": True}
        assert flow.actions["7"].executions == 1
        page = await call("flow", "list_executions")(
            client=client, flow_id=flow_id, action_id=7, limit=10
        )
        assert isinstance(page, models.ExecutionList), page
        assert (page.total, page.next_offset, len(page.executions)) == (1, None, 1)
        [wait] = page.executions
        assert (wait.status, wait.output) == (models.ActionStatus.COMPLETED, {"opened": True})
        assert flow.actions["9"].output == {
            "sent": True,
            "to": f"+1-555-{FEMALE_USER}",
        }

        history = await call("flow", "get_history")(client=client, flow_id=flow_id)
        assert isinstance(history, models.FlowHistory)
        assert history.history[-1].event == "RUN_COMPLETED"
        runs = await call("flow", "list_flows")(
            client=client, name=source["name"], status=models.RunStatus.COMPLETED
        )
        assert flow_id in [run.id for run in runs.runs]

        missing = await call("flow", "get_flow")(client=client, flow_id=unique("no-such-flow"))
        assert isinstance(missing, models.ErrorResponse)


# -- the schema -----------------------------------------------------------------------------


def test_every_route_is_described_with_examples_and_its_errors(server: ServerThread) -> None:
    schema = openapi_of(server)
    found = dict(operations(schema))
    assert len(found) >= 19
    for route, operation in found.items():
        assert operation.get("description", "").strip(), f"{route} has no description"
        answers = operation["responses"]
        success = [code for code in answers if code.startswith("2")]
        assert len(success) == 1, route
        content = answers[success[0]]["content"]["application/json"]
        assert set(content["schema"]) - {"title"}, f"{route} answers an untyped body"
        assert "example" in content, f"{route} has no example answer"
        body = operation.get("requestBody")
        if body is not None:
            request = body["content"]["application/json"]
            assert "example" in request, f"{route} has no example request"
        assert UNAVAILABLE in answers, f"{route} does not declare 503"
        for code, answer in answers.items():
            if code.startswith("2"):
                continue
            expected = "Health" if route == "GET /health" else "ErrorResponse"
            ref = answer["content"]["application/json"]["schema"]["$ref"]
            assert ref == f"#/components/schemas/{expected}", f"{route} {code}"
    assert "HTTPValidationError" not in schema["components"]["schemas"]


def documented_models() -> dict[str, type[BaseModel]]:
    return {
        name: value
        for module in (api_models, workflow_schema)
        for name, value in vars(module).items()
        if isinstance(value, type) and issubclass(value, BaseModel)
    }


def model_of(schema: dict[str, Any], known: dict[str, type[BaseModel]]) -> Any:
    """The model a schema names, or a list of it."""
    if schema.get("type") == "array":
        return list[model_of(schema["items"], known)]  # type: ignore[misc]
    return known[schema["$ref"].rsplit("/", 1)[1]]


def test_every_example_is_valid_for_its_model(server: ServerThread) -> None:
    known = documented_models()
    examples = []
    for route, operation in operations(openapi_of(server)):
        for code, answer in operation["responses"].items():
            content = answer["content"]["application/json"]
            if "example" in content:
                examples.append((f"{route} {code}", content["schema"], content["example"]))
        body = operation.get("requestBody", {}).get("content", {}).get("application/json")
        if body is not None and "$ref" in body["schema"]:
            examples.append((f"{route} request", body["schema"], body["example"]))
    assert len(examples) >= 30
    for where, schema, example in examples:
        model = model_of(schema, known)
        try:
            TypeAdapter(model).validate_python(example)
        except ValidationError as error:
            raise AssertionError(f"the example of {where} is invalid: {error}") from None
        if model is WorkflowDefinition:
            parse_workflow(example)


def test_statuses_and_health_are_typed(server: ServerThread) -> None:
    schemas = openapi_of(server)["components"]["schemas"]
    assert schemas["RunStatus"]["enum"] == [status.value for status in RunStatus]
    assert schemas["ActionStatus"]["enum"] == [status.value for status in ActionStatus]
    run_status = {"$ref": "#/components/schemas/RunStatus"}
    assert schemas["FlowView"]["properties"]["status"] == run_status
    assert schemas["FlowSummary"]["properties"]["status"] == run_status
    assert schemas["ActionView"]["properties"]["status"] == {
        "$ref": "#/components/schemas/ActionStatus"
    }
    assert schemas["Health"]["properties"]["status"]["enum"] == ["ok", "degraded"]


def test_workflow_definition_is_documented_as_each_action_kind(server: ServerThread) -> None:
    schema = openapi_of(server)
    body = schema["paths"]["/metadata/workflow"]["post"]["requestBody"]
    assert body["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/WorkflowDefinition"
    }
    action = schema["components"]["schemas"]["WorkflowDefinition"]["properties"]["actions"]
    kinds = {item["$ref"].rsplit("/", 1)[1] for item in action["items"]["oneOf"]}
    assert kinds == {"UserAction", *(step.__name__ for step in SYSTEM_STEPS.values())}
    answer = schema["paths"]["/metadata/workflow/{name}"]["get"]["responses"]["200"]
    assert answer["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/StoredWorkflow"
    }


def test_every_system_action_has_a_model() -> None:
    assert set(SYSTEM_STEPS) == set(REGISTRY)


async def test_action_definition_route_is_documented_as_it_behaves(
    server: ServerThread, http: httpx.AsyncClient, settings: Settings
) -> None:
    """An action never defined answers 200 with the defaults, so 404 is not declared."""
    name = unique("never-defined")
    response = await http.get(f"/metadata/action/{name}")
    assert response.status_code == 200
    assert response.json() == {
        "name": name,
        "retryCount": settings.default_retry_count,
        "retryAfterSeconds": settings.default_retry_after_seconds,
        "retryPolicy": settings.default_retry_policy,
        "timeoutSeconds": settings.default_timeout_seconds,
        "pollTimeoutSeconds": None,
    }
    operation = openapi_of(server)["paths"]["/metadata/action/{name}"]["get"]
    assert "404" not in operation["responses"]
    assert "defaults" in operation["description"]


# -- the definition models agree with validate.py --------------------------------------------


def valid_definitions() -> list[dict[str, Any]]:
    files = sorted((ROOT / "workflows").glob("*.json"))
    found = [json.loads(path.read_text()) for path in files if "input" not in path.name]
    return [*found, NOTIFICATION_EXAMPLE]


@pytest.mark.parametrize("definition", valid_definitions())
def test_models_accept_every_valid_definition(definition: dict[str, Any]) -> None:
    parse_workflow(definition)
    WorkflowDefinition.model_validate(definition)
    StoredWorkflow.model_validate({**definition, "version": 1})


def one_action(**action: Any) -> dict[str, Any]:
    return {"name": "w", "rootAction": 1, "actions": [{"id": 1, **action}]}


SHAPE_ERRORS = [
    pytest.param(one_action(type="user", name="a", id="1"), id="string id"),
    pytest.param(one_action(type="user", name="a", id=True), id="bool id"),
    pytest.param(one_action(type="robot", name="a"), id="unknown type"),
    pytest.param(one_action(type="user", name=" "), id="blank name"),
    pytest.param(one_action(type="user", name="a", parameters=[]), id="parameters not object"),
    pytest.param(one_action(type="user", name="a", next={"default": ["2"]}), id="next not ids"),
    pytest.param(one_action(type="system", name="teleport"), id="unknown system action"),
    pytest.param(one_action(type="system", name="switch"), id="switch without expression"),
    pytest.param(one_action(type="system", name="delay"), id="delay without seconds"),
    pytest.param(
        one_action(type="system", name="delay", delaySeconds="5"), id="delay seconds as text"
    ),
    pytest.param(one_action(type="system", name="delay", delaySeconds=-1), id="negative delay"),
    pytest.param(one_action(type="system", name="wait"), id="wait without event"),
    pytest.param(
        one_action(type="system", name="wait", event="e", timeoutSeconds=0), id="zero timeout"
    ),
    pytest.param(one_action(type="system", name="javascript"), id="javascript without script"),
    pytest.param(one_action(type="system", name="join", joinOn=[]), id="empty joinOn"),
    pytest.param({"name": "w", "rootAction": "1", "actions": []}, id="no actions"),
    pytest.param(
        {"rootAction": 1, "actions": [{"id": 1, "type": "user", "name": "a"}]}, id="no name"
    ),
]


@pytest.mark.parametrize("definition", SHAPE_ERRORS)
def test_models_and_validate_refuse_the_same_shapes(definition: dict[str, Any]) -> None:
    with pytest.raises(DefinitionError):
        parse_workflow(definition)
    with pytest.raises(ValidationError):
        WorkflowDefinition.model_validate(definition)


async def test_definition_errors_are_still_worded_by_validate(http: httpx.AsyncClient) -> None:
    response = await http.post(
        "/metadata/workflow", json=one_action(type="system", name="delay", delaySeconds="5")
    )
    assert response.status_code == 422
    assert response.json() == {"error": "action 1 (delay): delaySeconds must be a number, not '5'"}
    response = await http.post("/metadata/workflow", content=b"[1, 2]")
    assert response.json() == {"error": "a workflow definition must be a JSON object"}


# -- /docs -----------------------------------------------------------------------------------

ASSET = re.compile(r"""(?:src|href)\s*=\s*["']([^"']+)["']""")
ABSOLUTE = re.compile(r"^(?:[a-z]+:)?//", re.IGNORECASE)


async def test_docs_page_loads_only_assets_the_server_serves(http: httpx.AsyncClient) -> None:
    page = await http.get("/docs")
    assert page.status_code == 200
    assets = ASSET.findall(page.text)
    assert any(asset.endswith(".js") for asset in assets), page.text
    assert any(asset.endswith(".css") for asset in assets), page.text
    urls = re.findall(r"""url\s*:\s*['"]([^'"]+)['"]""", page.text)
    assert urls == ["/openapi.json"], urls
    for asset in assets:
        assert not ABSOLUTE.match(asset), f"/docs loads {asset} from elsewhere"
        served = await http.get(asset)
        assert served.status_code == 200, asset
        assert len(served.content) > 0, asset
    assert (await http.get("/redoc")).status_code == 404
