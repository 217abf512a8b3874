"""This app's wiring: settings, the Celery app (``celery -A config worker``) and the engine."""

from .celery import app, engine, settings

__all__ = ["app", "engine", "settings"]
