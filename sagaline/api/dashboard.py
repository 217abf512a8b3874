"""The dashboard: one HTML page and its static files, served by the API; no build step.

``GET /dashboard`` answers the page and ``/dashboard/static/...`` its scripts and style
(package data in ``sagaline/api/static``). They hold no data, so they need no token: the
page asks for one (a password field; kept in the tab's ``sessionStorage``, never in a URL)
and calls the API with ``Authorization: Bearer``, following a saga's events with
``fetch`` (``EventSource`` cannot send that header). Its policy lets it load nothing but
its own files and talk to nothing but its own API.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

from sagaline.errors import ConfigurationError

STATIC = Path(__file__).resolve().with_name("static")
"""Where the page, its scripts and its style are (package data)."""
PAGE = STATIC / "dashboard.html"
"""The page itself."""

POLICY = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
          "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
"""The page's Content-Security-Policy: its own files only, no inline script, no framing."""

_PAGE_HEADERS = {"Content-Security-Policy": POLICY, "Referrer-Policy": "no-referrer",
                 "X-Frame-Options": "DENY"}


def install_dashboard(app: FastAPI) -> None:
    """Serve the dashboard on ``app``: ``/dashboard`` and ``/dashboard/static/...``.

    Args:
        app: The API's app.

    Raises:
        ConfigurationError: The dashboard's files are missing (an install without the
            package's data); the message says how to fix it.
    """
    if not PAGE.is_file():
        raise ConfigurationError(
            f"the dashboard's files are missing from {STATIC}: reinstall sagaline from a "
            "wheel or source tree that includes sagaline/api/static (package data), or "
            "build the API with create_app(..., dashboard=False)")

    @app.get("/dashboard", include_in_schema=False)
    async def dashboard() -> FileResponse:
        """The dashboard's page; it asks for the token itself."""
        return FileResponse(PAGE, media_type="text/html; charset=utf-8",
                            headers=_PAGE_HEADERS)

    app.mount("/dashboard/static", StaticFiles(directory=STATIC), name="dashboard-static")
