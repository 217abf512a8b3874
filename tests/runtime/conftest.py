"""Fixtures of the broker-free runtime tests: the runtime in-process on the session's Redis."""

from __future__ import annotations

from collections.abc import Iterator
from uuid import uuid4

import pytest

from sagaline import RedisStore

from .support import InProcess


@pytest.fixture
def rt(store: RedisStore) -> Iterator[InProcess]:
    """The runtime wired to a recording transport, its runs under a key prefix of its own.

    ``store`` is the session's (on the embedded Redis, started when absent); no worker is
    started. The test's keys are deleted after it.
    """
    wiring = InProcess(store.client, prefix=f"rt-{uuid4().hex[:8]}:")
    yield wiring
    wiring.forget()
