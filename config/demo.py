"""What ``sagaline demo`` runs for this app: each example saga succeeding, then failing.

Each saga runs once as it succeeds and once as it fails part-way and is undone; the order
saga also once paid by the customer's backup card (its payment's fallback). The scenarios
use the example rows the participants seed (CUST-123 with 500.00 and a backup card of
200.00, PROD-1, the FL-100 flight, the HTL-1 hotel, compact cars and the sold-out CAR-NONE
class). Each scenario tops those rows up first when earlier demos used them up, so the demo
can run again and again against the same data folder.
"""

from __future__ import annotations

from sqlalchemy import update

from sagaline import SagaStatus
from sagaline.cli.demo import DemoScenario
from tasks.db import database
from tasks.inventory import Product
from tasks.payments import BACKUP_LIMIT_CENTS, Account, BackupCard
from tasks.travel import SEED, Resource

CUSTOMER = "CUST-123"
PRODUCT = "PROD-1"
ONE_ITEM = [{"product_id": PRODUCT, "quantity": 1}]
TRIP = {"traveler": "Ada", "flight_id": "FL-100", "hotel_id": "HTL-1"}


def restock_shop() -> None:
    """Give PROD-1 stock and CUST-123 money again if earlier demos used them up."""
    with database.session() as session:
        session.execute(
            update(Product).where(Product.id == PRODUCT, Product.stock < 1).values(stock=10)
        )
        session.execute(
            update(Account)
            .where(Account.customer_id == CUSTOMER, Account.balance_cents < 2_000)
            .values(balance_cents=50_000)
        )


def low_balance() -> None:
    """Stock PROD-1; leave CUST-123 50.00 on the account and 200.00 on the backup card.

    A payment of 150.00 can then only go through the backup card.
    """
    restock_shop()
    with database.session() as session:
        session.execute(
            update(Account).where(Account.customer_id == CUSTOMER).values(balance_cents=5_000)
        )
        session.execute(
            update(BackupCard)
            .where(BackupCard.customer_id == CUSTOMER)
            .values(available_cents=BACKUP_LIMIT_CENTS)
        )


def restock_travel() -> None:
    """Give the demo's flight, hotel and car class room again if earlier demos filled them."""
    with database.session() as session:
        for resource_id in ("FL-100", "HTL-1", "CAR-COMPACT"):
            session.execute(
                update(Resource)
                .where(Resource.id == resource_id, Resource.available < 1)
                .values(available=SEED[resource_id][1])
            )


SCENARIOS = [
    DemoScenario(
        title="An order that goes through: every step completes",
        saga="order_processing",
        inputs={"customer_id": CUSTOMER, "items": ONE_ITEM, "total_amount": "20.00"},
        expect=SagaStatus.COMPLETED,
        compensations=(),
        prepare=restock_shop,
    ),
    DemoScenario(
        title="An order over the balance but within the backup card: the fallback pays",
        saga="order_processing",
        inputs={"customer_id": CUSTOMER, "items": ONE_ITEM, "total_amount": "150.00"},
        expect=SagaStatus.COMPLETED,
        compensations=(),
        prepare=low_balance,
    ),
    DemoScenario(
        title="An order over the balance and the backup card: the order is undone",
        saga="order_processing",
        inputs={"customer_id": CUSTOMER, "items": ONE_ITEM, "total_amount": "999.99"},
        expect=SagaStatus.COMPENSATED,
        compensations=("release_inventory", "cancel_order"),
        prepare=restock_shop,
    ),
    DemoScenario(
        title="A trip that can be booked: the flight, then the hotel and car at once",
        saga="travel_booking",
        inputs={**TRIP, "car_id": "CAR-COMPACT"},
        expect=SagaStatus.COMPLETED,
        compensations=(),
        prepare=restock_travel,
    ),
    DemoScenario(
        title="A trip with no car left: the hotel (if booked by then) and flight are cancelled",
        saga="travel_booking",
        inputs={**TRIP, "car_id": "CAR-NONE"},
        expect=SagaStatus.COMPENSATED,
        # The hotel is booked at the same time as the car: whether it was booked when the
        # car failed depends on timing, so the demo does not pin the compensations.
        compensations=None,
        prepare=restock_travel,
    ),
]
