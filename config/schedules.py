"""The sagas beat starts on a schedule.

``sagaline schedules`` lists them, with when each is next due. Crontabs are read in UTC;
each firing starts its saga once, however many beats run (see ``sagaline.schedules``).
``SAGALINE_SCHEDULES_ENABLED=false`` switches them off.
"""

from __future__ import annotations

from datetime import timedelta

from sagaline import Schedule

from .settings import ExtraSchedule

SCHEDULES = [
    Schedule(
        "nightly-nas-search", saga="cerebros_nas", cron="30 2 * * *",
        inputs={"dataset_id": "digits", "search_space": {"layers": [1, 2], "units": [32, 64]},
                "max_trials": 4, "epochs": 5},
        description="A small architecture search on the digits, every night at 02:30 UTC.",
    ),
    Schedule(
        "hourly-shop-report", saga="shop_report", every=timedelta(hours=1),
        due_input="period_end", inputs={"hours": 1},
        description="The shop's orders and payments of the hour up to each full hour.",
    ),
]
"""Every schedule of this app."""


def extra_schedules(given: list[ExtraSchedule]) -> list[Schedule]:
    """The schedules ``SAGALINE_EXTRA_SCHEDULES`` adds, checked as declared ones are."""
    return [Schedule(e.name, saga=e.saga, inputs=e.inputs, cron=e.cron,
                     every=timedelta(seconds=e.every_s) if e.every_s else None,
                     description="from SAGALINE_EXTRA_SCHEDULES") for e in given]
