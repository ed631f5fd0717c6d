"""The web dashboard: ``/ui`` serves a page of plain ES modules shipped in this package
(``static/dashboard``, no CDN, no build step); ``/`` and ``/dashboard`` lead there. The page
and its files are public, as ``/docs`` is: every piece of data it shows comes from the JSON
API with the token the user gives it, so roles apply as for any other client."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles

from app.api.security.permissions import Permission, needs

DASHBOARD_PATH = "/ui"
DASHBOARD_FILES_PATH = "/ui/static"
DASHBOARD_FILES = Path(__file__).resolve().parent / "static" / "dashboard"
LEADING_TO_DASHBOARD = ("/", "/dashboard")


def install_dashboard(app: FastAPI) -> None:
    """``/ui``, its files under ``/ui/static``, and the redirects to it."""
    app.mount(DASHBOARD_FILES_PATH, StaticFiles(directory=DASHBOARD_FILES), name="dashboard")

    @app.get(DASHBOARD_PATH, include_in_schema=False, openapi_extra=needs(Permission.PUBLIC))
    async def dashboard() -> FileResponse:
        # The page names its files by version-free paths: a new release must not be mixed
        # with files a browser kept from the old one.
        return FileResponse(DASHBOARD_FILES / "index.html", headers={"Cache-Control": "no-cache"})

    for path in LEADING_TO_DASHBOARD:
        app.add_api_route(
            path,
            lead_to_dashboard,
            methods=["GET"],
            include_in_schema=False,
            openapi_extra=needs(Permission.PUBLIC),
            name=f"dashboard_redirect_{path.strip('/') or 'root'}",
        )


async def lead_to_dashboard() -> RedirectResponse:
    return RedirectResponse(DASHBOARD_PATH, status_code=307)
