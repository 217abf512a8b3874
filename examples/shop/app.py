"""The shop's Flask app: :func:`create_app` wires the routes and error answers to an engine.

Flask's command line calls the factory with no arguments, so by default it uses this
project's engine (``config``, the one ``sagaline worker`` runs)::

    flask --app examples.shop.app:create_app run
"""

from __future__ import annotations

from flask import Flask

from examples.shop.problems import install
from examples.shop.views import orders_blueprint
from sagaline import Sagaline


def create_app(engine: Sagaline | None = None) -> Flask:
    """Build the shop for ``engine``.

    Args:
        engine: The engine that starts and shows the order sagas; ``None`` imports this
            project's (``from config import engine``), which builds its Celery app and
            connects to its Redis.

    Returns:
        The Flask app: ``POST /orders``, ``GET /orders/<saga_id>`` and a form at ``/``.

    Example:
        >>> client = create_app(engine).test_client()
        >>> client.post("/orders", json=order).status_code
        202
    """
    if engine is None:
        # Imported here, not at the top: importing config connects to Redis, which a
        # caller passing its own engine (a test) does not want twice.
        from config import engine as project_engine

        engine = project_engine
    app = Flask(__name__)
    app.register_blueprint(orders_blueprint(engine))
    install(app)
    return app
