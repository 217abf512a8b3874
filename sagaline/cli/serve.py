"""The ``sagaline api`` command, registered on :data:`sagaline.cli.app.cli`: the HTTP API.

It serves :func:`sagaline.api.create_app` for the app's engine with uvicorn.
"""

from __future__ import annotations

import os
from typing import Annotated

import typer
import uvicorn

from sagaline.api import TokenSet, create_app
from sagaline.cli.app import cli, fail, project
from sagaline.errors import ConfigurationError

GRACE_S = 5
"""How long a stopping server lets open requests (event streams) run before it closes them."""


@cli.command("api")
def api(
    ctx: typer.Context,
    host: Annotated[str, typer.Option(
        "--host", help="The address to listen on (0.0.0.0 serves other machines).",
    )] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=1, max=65535, help="The port.")] = 8000,
    docs: Annotated[bool, typer.Option(
        "--docs/--no-docs", help="Serve /docs and /openapi.json (they need no token).",
    )] = True,
) -> None:
    """Serve the HTTP API for the app's sagas (FastAPI on uvicorn), behind bearer tokens.

    The tokens come from the app's settings (api_tokens, api_token_hashes), else from
    SAGALINE_API_TOKENS (comma-separated) or SAGALINE_API_TOKEN_HASHES (comma-separated
    sha256:<hex>); without one the API is not started (exit 2).
    """
    loaded = project(ctx)
    try:
        tokens = TokenSet.configured(getattr(loaded.module, "settings", None), os.environ)
        app = create_app(loaded.engine, tokens, docs=docs)
    except ConfigurationError as error:
        fail(2, str(error))
    uvicorn.run(app, host=host, port=port, server_header=False,
                timeout_graceful_shutdown=GRACE_S)
