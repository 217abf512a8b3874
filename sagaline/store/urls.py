"""One Redis URL, spelled for each client: redis-py, kombu's broker, Celery's result backend."""

from __future__ import annotations

from urllib.parse import urlsplit


def broker_url(url: str) -> str:
    """The kombu broker URL for a redis-py URL (``unix://`` becomes ``redis+socket://``)."""
    parts = urlsplit(url)
    if parts.scheme == "unix":
        return f"redis+socket://{parts.path}"
    return url


def backend_url(url: str) -> str:
    """The Celery result backend URL for a redis-py URL.

    ``unix://`` becomes ``redis+socket://``, which Celery reads as its Redis backend on a
    socket.
    """
    return broker_url(url)
