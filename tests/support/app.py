"""The test workers' app: the project's app and engine, plus the test-only sagas.

Test workers run ``celery -A tests.support.app worker``. The project's schedules are off
(unless ``SAGALINE_SCHEDULES_ENABLED`` says otherwise): a test's beat running at 02:30 UTC
would start a NAS search amid another test. A beat started with ``TESTS_QUICK_SCHEDULE=TAG``
fires ``t_quick`` (inputs ``{"tag": TAG}``) every 2 s instead, as the schedule
``t-quick-TAG``.
"""

import os
from datetime import timedelta

os.environ.setdefault("SAGALINE_SCHEDULES_ENABLED", "false")

from config import app, engine
from config import schedules as app_schedules
from sagaline.schedules import Schedule, install_schedules

from .escapes import ESCAPE_SAGAS
from .sagas import TEST_SAGAS

for saga in [*TEST_SAGAS, *ESCAPE_SAGAS]:
    engine.register(saga)

QUICK_SCHEDULE = "TESTS_QUICK_SCHEDULE"
"""The variable that adds the quick test schedule (its value is the tag)."""
_tag = os.environ.get(QUICK_SCHEDULE)
schedules = (*app_schedules, *install_schedules(app, engine, [
    Schedule(f"t-quick-{_tag}", saga="t_quick", every=timedelta(seconds=2),
             inputs={"tag": _tag})] if _tag else []))

__all__ = ["app", "engine", "schedules"]
