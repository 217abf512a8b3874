"""The HTTP API: start and follow sagas from web apps (``sagaline api`` serves it).

:func:`create_app` builds a FastAPI app for one engine; it needs a :class:`TokenSet`, the
bearer tokens it accepts (kept only as SHA-256 hashes). The routes answer the JSON the CLI
prints with ``--json``; see :mod:`sagaline.api.app` for the list.

Example:
    >>> from sagaline.api import TokenSet, create_app
    >>> app = create_app(engine, TokenSet.configured(settings, os.environ))
"""

from sagaline.api.app import create_app
from sagaline.api.auth import TokenSet

__all__ = ["TokenSet", "create_app"]
