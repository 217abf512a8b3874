"""The test workers' app: the project's app and engine, plus the test-only sagas.

Test workers run ``celery -A tests.support.app worker``.
"""

from config import app, engine

from .escapes import ESCAPE_SAGAS
from .sagas import TEST_SAGAS

for saga in [*TEST_SAGAS, *ESCAPE_SAGAS]:
    engine.register(saga)

__all__ = ["app", "engine"]
