"""The chat page: plain HTML, CSS and JavaScript in serving/page/, served by the gateway at `/`.

No build step and nothing fetched from elsewhere: the page talks only to this gateway's own API
(`/v1/models`, the chat SSE stream, `/v1/indexes/.../chunks|document`, `/v1/feedback`), with the
same keys and quotas as any client. The Content-Security-Policy says so to the browser too: scripts,
styles and requests from this origin only, no inline script, no framing.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse

PAGE_DIR = Path(__file__).with_name("page")
ASSETS = {"app.js": "text/javascript", "app.css": "text/css"}  # everything the page loads besides itself
HEADERS = {
    "content-security-policy": "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "cache-control": "no-cache",  # a redeployed gateway's page is picked up at once
}


def install(app: FastAPI) -> None:
    @app.get("/", include_in_schema=False)
    async def chat_page() -> FileResponse:
        return FileResponse(PAGE_DIR / "index.html", media_type="text/html", headers=HEADERS)

    for name, media_type in ASSETS.items():
        _asset(app, name, media_type)


def _asset(app: FastAPI, name: str, media_type: str) -> None:
    async def asset() -> FileResponse:
        return FileResponse(PAGE_DIR / name, media_type=media_type, headers=HEADERS)

    app.add_api_route(f"/page/{name}", asset, methods=["GET"], include_in_schema=False)
