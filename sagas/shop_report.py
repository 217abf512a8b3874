"""The shop report: what the shop sold in the last hour, kept as a report and announced.

Count the orders created in the period and the payments captured for them (reads only),
keep the report, announce it. The hourly schedule (``config/schedules.py``) passes its due
time as ``period_end``, so each firing reports the hour up to it, however late it runs,
and two beats never make two reports of one hour. A failure after the report was kept
deletes it.
"""

from __future__ import annotations

from datetime import timedelta

from pydantic import BaseModel, Field

from sagaline import NO_RETRY, Domains, FromInput, FromStep, RetryPolicy, Saga, Step
from tasks.reports.steps import count_sales, delete_report, publish_report, store_report

#: A time in UTC, to the second, as ``sagaline.schedules`` writes due times (or nothing).
UTC_TIME = (r"^$|^\d{4}-(0[1-9]|1[0-2])-(0[1-9]|[12]\d|3[01])"
            r"T([01]\d|2[0-3]):[0-5]\d:[0-5]\dZ$")


class ReportInput(BaseModel):
    """The period to report on: the ``hours`` up to ``period_end``."""

    period_end: str = Field(default="", pattern=UTC_TIME)
    """Its end (excluded), in UTC as a schedule's due time is: ``2026-12-04T10:00:00Z``;
    empty: the current minute. (Text, so that the recorded inputs show it as given.)"""
    hours: int = Field(default=1, ge=1, le=24 * 31)


SALES = FromStep("count_sales")
QUICK_RETRY = RetryPolicy(attempts=3, initial=timedelta(milliseconds=200))

shop_report = Saga(
    "shop_report",
    description="Report the shop's orders and payments of the last hour.",
    inputs=ReportInput,
    domains=Domains("reports", reason="reads the shop's orders and payments, writes only "
                    "its own reports"),
    steps=[
        Step("count_sales", count_sales,
             args={"period_end": FromInput("period_end"), "hours": FromInput("hours")},
             retry=QUICK_RETRY),
        Step("store_report", store_report, compensation=delete_report,
             args={"sales": SALES}, retry=QUICK_RETRY),
        Step("publish_report", publish_report,
             args={"report_id": FromStep("store_report", "report_id"), "sales": SALES},
             retry=NO_RETRY),
    ],
    returns={"report_id": FromStep("store_report", "report_id"), "sales": SALES},
    step_time_limit=timedelta(seconds=60),
)
