"""pytest fixtures for testing your sagas with :mod:`sagaline.testing`.

Load the plugin and say which engine to test, in your ``conftest.py``:

.. code-block:: python

    pytest_plugins = ["sagaline.pytest_plugin"]

    @pytest.fixture(scope="session")
    def sagaline_engine() -> Sagaline:
        from myproject.config import engine   # the engine your workers load
        return engine

Then a test takes ``saga_harness``:

.. code-block:: python

    def test_payment_failure_undoes_the_order(saga_harness: SagaTestHarness) -> None:
        saga_harness.fail("order_processing", "process_payment", times=None)
        report = saga_harness.run("order_processing", {...})
        report.assert_compensated_in_order(["release_inventory", "cancel_order"])

Fixtures:

- ``sagaline_engine``: yours to define (session scope); without it the harness fails
  with a message that says so.
- ``saga_harness_worker``: one in-process worker for the session (started on first use).
  Override it for another pool or scope:
  ``with sagaline.testing.worker_for(engine, pool="solo") as worker: yield worker``.
- ``saga_harness``: a harness opened for one test on that worker: faults cleared before
  and after, the engine's saga messages routed to the worker while the test runs.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from sagaline.engine import Sagaline
from sagaline.testing import InProcessWorker, SagaTestHarness, worker_for

__all__ = ["saga_harness", "saga_harness_worker", "sagaline_engine"]

_NO_ENGINE = """\
saga_harness needs to know which engine to test: define a 'sagaline_engine' fixture
in your conftest.py that returns your sagaline.Sagaline, for example:

    @pytest.fixture(scope="session")
    def sagaline_engine():
        from myproject.config import engine
        return engine
"""


@pytest.fixture(scope="session")
def sagaline_engine() -> Sagaline:
    """The engine to test; define your own (this one only says so)."""
    pytest.fail(_NO_ENGINE, pytrace=False)


@pytest.fixture(scope="session")
def saga_harness_worker(sagaline_engine: Sagaline) -> Iterator[InProcessWorker]:
    """A real Celery worker in a thread of the test process, for the whole session."""
    if not isinstance(sagaline_engine, Sagaline):
        pytest.fail(f"the sagaline_engine fixture returned {sagaline_engine!r}, not a "
                    "sagaline.Sagaline", pytrace=False)
    worker = worker_for(sagaline_engine)
    worker.start()
    yield worker
    worker.stop()


@pytest.fixture
def saga_harness(sagaline_engine: Sagaline,
                 saga_harness_worker: InProcessWorker) -> Iterator[SagaTestHarness]:
    """A :class:`~sagaline.testing.SagaTestHarness` open for one test."""
    with SagaTestHarness(sagaline_engine, worker=saga_harness_worker) as harness:
        yield harness
