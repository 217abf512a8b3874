"""A small Flask web shop whose request handlers start order sagas and answer 202.

Run it with ``flask --app examples.shop.app:create_app run`` next to a worker
(``sagaline worker``); ``examples/README.md`` says more.
"""

from examples.shop.app import create_app

__all__ = ["create_app"]
