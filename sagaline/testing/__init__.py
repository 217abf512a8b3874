"""Testing sagas: a harness that runs them on an in-process worker and fails chosen steps.

- ``harness.py``: :class:`SagaTestHarness`.
- ``report.py``: :class:`RunReport`, what ran, in order, with each attempt.
- ``worker.py``: :class:`InProcessWorker` and the routing that sends saga tasks to it.
"""

from sagaline.testing.harness import SagaTestHarness
from sagaline.testing.report import Attempt, RunReport, attempts_in
from sagaline.testing.worker import InProcessWorker, named_queues, worker_for

__all__ = ["Attempt", "InProcessWorker", "RunReport", "SagaTestHarness", "attempts_in",
           "named_queues", "worker_for"]
