"""Serve the dashboard's files with headers that make injected markup inert.

Every file is static and committed under static/; the page draws everything from the API's JSON with
DOM text nodes. The Content-Security-Policy allows scripts and styles from this origin only (no
'unsafe-inline', no eval) and network requests to this origin only, so even a bug that let data reach
markup could neither run a script nor send anything elsewhere.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import FileResponse, PlainTextResponse, Response
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

STATIC = Path(__file__).resolve().parent / "static"

CONTENT_SECURITY_POLICY = "; ".join((
    "default-src 'none'",
    "script-src 'self'",
    "style-src 'self'",
    "img-src 'self'",
    "connect-src 'self'",
    "base-uri 'none'",
    "form-action 'none'",
    "frame-ancestors 'none'",
))

HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    # Revalidate every time (StaticFiles answers ETag / If-None-Match), so an upgrade is seen at once.
    "Cache-Control": "no-cache",
}


class DashboardFiles(StaticFiles):
    """StaticFiles with the dashboard's security headers on every answer (404s included)."""

    async def get_response(self, path: str, scope: Scope) -> Response:
        try:
            response = await super().get_response(path, scope)
        except HTTPException as exc:  # a missing file (404) or a POST (405): answered here, with the headers
            response = PlainTextResponse(str(exc.detail), status_code=exc.status_code, headers=exc.headers)
        response.headers.update(HEADERS)
        return response


def mount_dashboard(app: FastAPI) -> None:
    """`/` answers the page; `/dashboard/...` its scripts and styles."""

    async def index(_: Request) -> Response:
        return FileResponse(STATIC / "index.html", media_type="text/html", headers=HEADERS)

    app.add_api_route("/", index, methods=["GET", "HEAD"], include_in_schema=False)
    app.mount("/dashboard", DashboardFiles(directory=STATIC), name="dashboard")
