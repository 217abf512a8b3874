"""The shop's routes: place an order (which starts its saga) and follow it.

- ``POST /orders`` starts the ``order_processing`` saga with the JSON body as its inputs
  and answers 202 at once, with the saga's id and where to follow it (``Location``). The
  saga runs on the workers; the handler never waits for it. An ``Idempotency-Key`` header
  places the order once: sent again, the request is answered with the first saga.
- ``GET /orders/<saga_id>`` answers the order saga's status, result, error and the
  compensations that ran, as recorded now.
- ``GET /`` is a form that does both from a browser.
"""

from __future__ import annotations

from flask import Blueprint, Response, jsonify, render_template, request, url_for

from examples.shop.problems import problem
from sagaline import Sagaline, SagaNotFoundError

SAGA = "order_processing"
"""The saga an order starts (``sagas/order_processing.py``)."""

SHOWN = {"status", "result", "error", "compensations"}
"""What ``GET /orders/<saga_id>`` shows of the run."""

ORDER_SHAPE = ('{"customer_id": "CUST-123", "items": [{"product_id": "PROD-1", "quantity": 1}],'
               ' "total_amount": "20.00"}')
"""An example order, for the answer to a body that is not one."""


def orders_blueprint(engine: Sagaline) -> Blueprint:
    """The shop's routes, starting and showing order sagas on ``engine``.

    Args:
        engine: The engine that records the sagas; its workers run them.

    Returns:
        The blueprint, named ``shop``, to register on the app.
    """
    shop = Blueprint("shop", __name__)

    @shop.get("/")
    def index() -> str:
        """A form that places an order and follows its saga."""
        return render_template("index.html")

    @shop.post("/orders")
    def place_order() -> tuple[Response, int] | tuple[Response, int, dict[str, str]]:
        """Start the order's saga; answer 202 with its id, or the problem with the order."""
        inputs = request.get_json(silent=True)
        if not isinstance(inputs, dict):
            return problem(400, "send the order as a JSON object with the header "
                                f"'Content-Type: application/json', such as {ORDER_SHAPE}")
        handle = engine.start(SAGA, inputs,
                              idempotency_key=request.headers.get("Idempotency-Key"))
        status_url = url_for("shop.order_status", saga_id=handle.saga_id)
        return (jsonify(order_saga=handle.saga_id, status_url=status_url), 202,
                {"Location": status_url})

    @shop.get("/orders/<saga_id>")
    def order_status(saga_id: str) -> Response:
        """The order saga as recorded now: status, result, error and compensations."""
        run = engine.get(saga_id)
        if run.name != SAGA:
            raise SagaNotFoundError(f"no order has saga id {saga_id!r}: use the "
                                    "status_url that POST /orders answered")
        return jsonify(run.model_dump(mode="json", include=SHOWN))

    return shop
