"""This app's wiring: settings, the Celery app, the engine and the sagas on a schedule.

Workers and beat load it: ``celery -A config worker``, ``celery -A config beat``.
"""

from .celery import app, engine, schedules, settings

__all__ = ["app", "engine", "schedules", "settings"]
