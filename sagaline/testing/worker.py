"""A Celery worker in a thread of this process, on its own queue, and the route to it.

``sagaline.testing`` runs sagas on it. It is Celery's own ``WorkController`` (the consumer,
the pool, acks, retries, chains and errbacks as a ``celery worker`` runs them), started in a
daemon thread. We do not use ``celery.contrib.testing.worker.start_worker``: it resets the
root logger to Celery's (removing pytest's handlers and setting the level to ``error``)
and waits for the consumer without a time limit. Like any worker, it makes its app the
process's default app: Celery's pool looks tasks up in the default app.

The worker consumes its own queue, ``sagaline-harness-<hex>``, so that other workers of the
same app (a session's worker processes) never take its messages; the harness routes the
messages of the sagas it runs there. While it runs, the app's queue selection is its
queues (``app.control.purge()`` in this process purges those). Celery stops an in-thread
worker through the global ``celery.worker.state.should_stop`` flag (the loop checks it),
so one process runs at most one such worker at a time.
"""

from __future__ import annotations

import logging
import socket
import threading
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from celery import Celery
from celery.worker import WorkController
from celery.worker import state as worker_state

from sagaline.engine import Sagaline
from sagaline.transport import SagaCeleryTask

log = logging.getLogger("sagaline.testing")

_ACTIVE_LOCK = threading.Lock()
_active: InProcessWorker | None = None


class _Controller(WorkController):  # type: ignore[misc]
    """A WorkController that says when its consumer is ready."""

    __test__ = False

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.ready = threading.Event()
        super().__init__(*args, **kwargs)

    def on_consumer_ready(self, consumer: Any) -> None:
        """Called by Celery once the consumer takes messages."""
        self.ready.set()


class InProcessWorker:
    """A Celery worker running in a daemon thread of this process, on a queue of its own.

    Args:
        app: The Celery app whose registered tasks it runs.
        queues: Further queues to consume besides its own (queues that steps name).
        concurrency: Tasks it runs at once.
        pool: ``threads`` (default) or ``solo`` (one task at a time, in the consumer's thread).
        start_timeout: Seconds to wait for the consumer to be ready.
        shutdown_timeout: Seconds to wait, when stopping, for running tasks to finish.
    """

    def __init__(self, app: Celery, *, queues: Sequence[str] = (), concurrency: int = 2,
                 pool: str = "threads", start_timeout: float = 30.0,
                 shutdown_timeout: float = 30.0) -> None:
        """Prepare the worker; :meth:`start` starts it."""
        if pool not in ("threads", "solo"):
            raise ValueError(f"pool must be 'threads' or 'solo', not {pool!r}: the worker runs "
                             "in a thread of this process")
        if concurrency < 1:
            raise ValueError(f"concurrency must be at least 1, not {concurrency}")
        self.app = app
        suffix = uuid.uuid4().hex[:12]
        self.queue = f"sagaline-harness-{suffix}"
        """The queue of its own that it consumes."""
        self.queues = [self.queue, *(q for q in queues if q != self.queue)]
        """Every queue it consumes, its own first."""
        self.hostname = f"sagaline-harness-{suffix}@{socket.gethostname()}"
        """Its node name, as ``app.control.ping()`` shows it."""
        self.concurrency = concurrency
        self.pool = pool
        self.start_timeout = start_timeout
        self.shutdown_timeout = shutdown_timeout
        self._controller: _Controller | None = None
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self._consume_from: dict[str, Any] | None = None
        self._selected = False

    @property
    def running(self) -> bool:
        """Whether the worker's thread is alive."""
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        """Start the worker and wait until it takes messages.

        Raises:
            RuntimeError: Another in-process worker runs in this process, or this one did
                not start within ``start_timeout`` (the broker is unreachable, say).
        """
        global _active
        with _ACTIVE_LOCK:
            if _active is not None:
                raise RuntimeError(
                    f"an in-process worker ({_active.hostname}) already runs in this process; "
                    "Celery can stop only one at a time: share it, or stop it first"
                )
            _active = self
        try:
            self._start()
        except BaseException:
            self._forget()
            raise

    def _start(self) -> None:
        self.app.finalize()
        self.app.set_default()
        # The worker selects its queues in the app's own queue table, which decides what
        # this process's app.control.purge() purges too; put the selection back on stop.
        chosen = self.app.amqp.queues._consume_from
        self._consume_from = None if chosen is None else dict(chosen)
        self._selected = True
        worker_state.should_stop = None
        controller = _Controller(
            app=self.app, hostname=self.hostname, concurrency=self.concurrency, pool=self.pool,
            queues=list(self.queues), ready_callback=None, without_heartbeat=True,
            without_mingle=True, without_gossip=True,
        )
        thread = threading.Thread(target=self._run, args=(controller,), daemon=True,
                                  name=f"celery-{self.hostname}")
        self._controller, self._thread = controller, thread
        thread.start()
        if not controller.ready.wait(self.start_timeout) or self._error is not None:
            self._stop_thread()
            raise RuntimeError(
                f"the in-process worker did not start within {self.start_timeout:g} s"
                + (f": {self._error!r}" if self._error else "; is the broker reachable?")
            ) from self._error
        log.info("in-process worker %s consumes %s", self.hostname, ", ".join(self.queues))

    def _run(self, controller: _Controller) -> None:
        try:
            controller.start()
        except BaseException as error:  # the thread's end must not go unnoticed
            self._error = error
            log.exception("in-process worker %s stopped with an error", self.hostname)
        finally:
            controller.ready.set()

    def stop(self) -> None:
        """Stop warmly (running tasks finish), then delete its own queue.

        Messages it held but had not run (a retry waiting for its time) go back to its
        queue when its connection closes and are deleted with it: sagas still running then
        stay running until the recovery sweep drives them on.

        Raises:
            RuntimeError: Its tasks did not finish within ``shutdown_timeout``.
        """
        if self._thread is None:
            return
        try:
            self._stop_thread()
            if self._thread.is_alive():
                raise RuntimeError(
                    f"the in-process worker {self.hostname} did not stop within "
                    f"{self.shutdown_timeout:g} s; a task runs longer (raise shutdown_timeout)"
                )
            self._delete_queue()
        finally:
            self._forget()

    def _stop_thread(self) -> None:
        assert self._thread is not None
        worker_state.should_stop = 0
        try:
            self._thread.join(self.shutdown_timeout)
        finally:
            if not self._thread.is_alive():
                worker_state.should_stop = None

    def _delete_queue(self) -> None:
        try:
            with self.app.connection_for_write() as connection:
                connection.default_channel.queue_delete(self.queue)
        except Exception as error:  # a leftover empty queue harms nothing
            log.warning("could not delete the queue %s: %s", self.queue, error)

    def _forget(self) -> None:
        global _active
        if self._selected and not self.running:
            self._selected = False
            queues = self.app.amqp.queues
            queues._consume_from = self._consume_from
            queues.pop(self.queue, None)
        with _ACTIVE_LOCK:
            if _active is self:
                _active = None

    def __enter__(self) -> InProcessWorker:
        """Start the worker."""
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        """Stop the worker."""
        self.stop()


def named_queues(engine: Sagaline) -> list[str]:
    """The queues the engine's steps name (their own, or their tasks'), sorted."""
    queues: set[str] = set()
    for saga in engine.registry:
        for step in saga.steps:
            for task in (step.action, step.compensation):
                queue = getattr(step, "queue", None) or getattr(task, "queue", None)
                if task is not None and queue:
                    queues.add(str(queue))
    return sorted(queues)


def is_operation_task(engine: Sagaline, name: str) -> bool:
    """Whether ``name`` is a saga task of the engine's app.

    That is an action, fallback or compensation of any saga, declared or added at runtime.
    """
    return isinstance(engine.app.tasks.get(name), SagaCeleryTask)


_ROUTES_LOCK = threading.Lock()


def install_route(engine: Sagaline, queue: str) -> Callable[..., dict[str, str] | None]:
    """Send the engine's operation messages that name no queue to ``queue``.

    Celery asks its router for every message this process sends (the first step's, and
    those the in-process worker sends: the next step, retries, compensations); a route
    returned here applies unless the message already names a queue.
    """

    def route(name: str, args: Any, kwargs: Any, options: Mapping[str, Any],
              task: Any = None, **_: Any) -> dict[str, str] | None:
        if options.get("queue") or not is_operation_task(engine, name):
            return None
        return {"queue": queue}

    router = engine.app.amqp.router
    with _ROUTES_LOCK:
        router.routes = [route, *router.routes]
    return route


def remove_route(engine: Sagaline, route: Callable[..., Any]) -> None:
    """Take a route that :func:`install_route` put in front of the app's router away."""
    router = engine.app.amqp.router
    with _ROUTES_LOCK:
        router.routes = [r for r in router.routes if r is not route]


def worker_for(engine: Sagaline, *, concurrency: int = 2, pool: str = "threads"
               ) -> InProcessWorker:
    """An in-process worker for the engine's app, consuming the queues its steps name too."""
    return InProcessWorker(engine.app, queues=named_queues(engine), concurrency=concurrency,
                           pool=pool)
