"""The ``sagaline`` command line: run a worker, start and inspect sagas, run the demo.

It finds the project the way ``celery -A`` does: ``--app MODULE`` (or ``SAGALINE_APP``,
else ``config``) names a module with an ``app`` (the Celery app) and an ``engine`` (the
:class:`~sagaline.Sagaline`). The module is imported only by the commands that need it,
so ``sagaline --help`` needs no Redis.

Exit codes: 0 success (a saga completed, or was started); 1 a saga ended otherwise, a
wait timed out, a saga was not found, or Redis failed; 2 bad usage or invalid input.

The Typer app and the helpers its commands share are in :mod:`sagaline.cli.app`; the
commands are in :mod:`~sagaline.cli.runs`, :mod:`~sagaline.cli.definitions`,
:mod:`~sagaline.cli.events`, :mod:`~sagaline.cli.supervise`, :mod:`~sagaline.cli.database`,
:mod:`~sagaline.cli.serve` (``sagaline api``) and :mod:`~sagaline.cli.embedded` (``sagaline
embedded status|stop``), imported here so they register on it.
"""

from __future__ import annotations

import sys

import redis

from sagaline.cli import runs  # noqa: F401 - registers first, so its commands lead --help

# isort: split
from sagaline.cli import (
    database,  # noqa: F401 - registers the db commands
    definitions,  # noqa: F401 - registers the sagas command
    embedded,  # noqa: F401 - registers the embedded Redis commands
    events,  # noqa: F401 - registers the events and trace commands
    graph,  # noqa: F401 - registers the graph command
    schedules,  # noqa: F401 - registers the schedules command
    serve,  # noqa: F401 - registers the api command
    supervise,  # noqa: F401 - registers the supervision commands
)
from sagaline.cli.app import cli
from sagaline.cli.app import error as print_error
from sagaline.errors import (
    IdempotencyConflictError,
    InvalidCorrelationIdError,
    InvalidInputError,
    SagaError,
    UnknownSagaError,
)

__all__ = ["main"]

_USAGE_ERRORS = (InvalidInputError, InvalidCorrelationIdError, UnknownSagaError,
                 IdempotencyConflictError)


def main() -> None:
    """Run the command line; Sagaline's and Redis's errors become messages and exit codes.

    Bad usage or input exits 2; any other :class:`~sagaline.SagaError`, and a failure of
    Redis, exits 1.
    """
    try:
        cli()
    except _USAGE_ERRORS as error:
        print_error(str(error))
        sys.exit(2)
    except SagaError as error:
        print_error(str(error))
        sys.exit(1)
    except redis.RedisError as error:
        print_error(f"Redis failed: {error}")
        sys.exit(1)
