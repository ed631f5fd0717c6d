"""What the OpenAPI schema says beyond the types: examples, error answers, and ``/docs``
served with the Swagger UI files shipped in this package (no CDN)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.routing import APIRoute
from fastapi.staticfiles import StaticFiles

from app.api.models import ErrorResponse
from app.api.security.permissions import Permission, needs

DOCS_PATH = "/docs"
SWAGGER_UI_PATH = "/docs/static"
SWAGGER_UI_FILES = Path(__file__).resolve().parent / "static" / "swagger-ui"
UNAVAILABLE = 503

ERROR_MEANINGS: dict[int, str] = {
    404: "Not found: the message names what",
    409: "Conflict with the current state: the message says which",
    413: "The body is larger than its limit: the message names the limit",
    422: "Invalid input: the message names the field and the problem",
    UNAVAILABLE: "Redis is unavailable",
}


def responses(example: Any, *errors: int, status: int = 200) -> dict[int | str, dict[str, Any]]:
    """The ``responses`` of a route: its answer's example, each error of ``errors``, and
    503, which every route can answer since every one needs Redis."""
    documented: dict[int | str, dict[str, Any]] = {
        status: {"content": {"application/json": {"example": example}}}
    }
    for code in (*errors, UNAVAILABLE):
        documented[code] = {"model": ErrorResponse, "description": ERROR_MEANINGS[code]}
    return documented


def request_example(example: Any) -> dict[str, Any]:
    """An ``openapi_extra`` giving the request body's example."""
    return {"requestBody": {"content": {"application/json": {"example": example}}}}


def operation_id(route: APIRoute) -> str:
    """Operation ids are the route functions' names: a generated client's function names."""
    return route.name


def install_docs(app: FastAPI) -> None:
    """``/docs``: Swagger UI from the files under ``static/swagger-ui`` (FastAPI's own docs
    route, which loads them from a CDN, is off)."""
    app.mount(SWAGGER_UI_PATH, StaticFiles(directory=SWAGGER_UI_FILES), name="swagger-ui")

    @app.get(DOCS_PATH, include_in_schema=False, openapi_extra=needs(Permission.PUBLIC))
    async def docs() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=app.openapi_url or "/openapi.json",
            title=f"{app.title} - API",
            swagger_js_url=f"{SWAGGER_UI_PATH}/swagger-ui-bundle.js",
            swagger_css_url=f"{SWAGGER_UI_PATH}/swagger-ui.css",
            swagger_favicon_url=f"{SWAGGER_UI_PATH}/favicon-32x32.png",
        )
