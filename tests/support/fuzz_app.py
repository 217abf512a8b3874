"""The input-fuzzing engine as an app module: ``sagaline --app tests.support.fuzz_app``.

It exposes ``app`` and ``engine`` like ``tests.support.app``, but they record and enqueue
where no worker looks (see :mod:`tests.support.fuzzing`).
"""

from tests.support.fuzzing import build_fuzz_app

fuzz = build_fuzz_app()
app = fuzz.app
engine = fuzz.engine

__all__ = ["app", "engine", "fuzz"]
