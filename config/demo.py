"""What ``sagaline demo`` runs for this app: each example saga succeeding, then failing.

The Thunderline sagas too: a user provisioned (the mail it sent shown) and one whose vault
cannot be provisioned (nothing left behind); a UPM snapshot activated and one Crown denies;
a small architecture search (Cerebros NAS), its training progress shown live.

Each saga runs once as it succeeds and once as it fails part-way and is undone; the order
saga also once paid by the customer's backup card (its payment's fallback). The scenarios
use the example rows the participants seed (CUST-123 with 500.00 and a backup card of
200.00, PROD-1, the FL-100 flight, the HTL-1 hotel, compact cars and the sold-out CAR-NONE
class). Each scenario tops those rows up first when earlier demos used them up, so the demo
can run again and again against the same data folder; when it ends it puts them back as it
found them (:data:`DATA`), so the README's examples (an order of 99.99 for CUST-123) run as
written after it. ``sagaline demo --reset`` puts them back as first seeded.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from email import message_from_bytes
from email.message import Message

from sqlalchemy import delete, func, select, update

from sagaline import SagaRun, SagaStatus
from sagaline.cli.demo import DemoData, DemoScenario
from tasks.block.models import ACTIVE, GIB, SHADOW, Storage, UpmSnapshot, Vault
from tasks.block.steps import DEFAULT_STORAGE
from tasks.bolt.models import UpmAdapter
from tasks.crown.models import ApprovalRule
from tasks.db import SEEDERS, database
from tasks.gate.mail import mailer
from tasks.gate.models import MagicLinkToken, User
from tasks.inventory import Product
from tasks.link.models import Membership
from tasks.nas.models import Trial
from tasks.payments import BACKUP_LIMIT_CENTS, Account, BackupCard
from tasks.travel import SEED, Resource

CUSTOMER = "CUST-123"
PRODUCT = "PROD-1"
ONE_ITEM = [{"product_id": PRODUCT, "quantity": 1}]
TRIP = {"traveler": "Ada", "flight_id": "FL-100", "hotel_id": "HTL-1"}
TRAVEL = ("FL-100", "HTL-1", "CAR-COMPACT")
"""The travel rows the demo books."""
SEEDED_BALANCE_CENTS = 50_000
"""CUST-123's first balance, as ``tasks.payments.seed_accounts`` seeds it."""
SEEDED_STOCK = 10
"""PROD-1's first stock, as ``tasks.inventory.seed_products`` seeds it."""
STORAGE_ROOM_BYTES = 1024 * GIB
"""The default storage pool's first room (1,024 vaults), as ``tasks.block`` seeds it."""


@dataclass(frozen=True)
class ExampleData:
    """The example rows the demo changes, as they are at one moment (``None``: no row)."""

    balance_cents: int | None
    """CUST-123's balance."""
    backup_cents: int | None
    """What CUST-123's backup card may still be charged."""
    stock: int | None
    """PROD-1's stock."""
    available: dict[str, int | None]
    """Per travel row the demo books (:data:`TRAVEL`), what is left."""
    capacity_bytes: int | None
    """The default storage pool's capacity."""
    ranking_approvals: int | None
    """The approvals the ranking family's rule requires (``None``: no rule)."""

    def summary(self) -> str:
        """The data in a few words (money, stock, approvals)."""
        def money(cents: int | None) -> str:
            return "?" if cents is None else f"{cents / 100:.2f}"
        rule = ("no approval rule" if self.ranking_approvals is None
                else f"{self.ranking_approvals} approvals")
        return (f"CUST-123 {money(self.balance_cents)} with a backup card of "
                f"{money(self.backup_cents)}, PROD-1 {self.stock} in stock, "
                f"{', '.join(f'{k} {v} left' for k, v in self.available.items())}, "
                f"ranking snapshots: {rule}")


def read_example_data() -> ExampleData:
    """The example rows the demo changes, as they are now."""
    with database.session() as session:
        account = session.get(Account, CUSTOMER)
        card = session.get(BackupCard, CUSTOMER)
        product = session.get(Product, PRODUCT)
        storage = session.get(Storage, DEFAULT_STORAGE)
        rule = session.get(ApprovalRule, "ranking")
        available = {}
        for resource_id in TRAVEL:
            resource = session.get(Resource, resource_id)
            available[resource_id] = None if resource is None else resource.available
        return ExampleData(
            balance_cents=None if account is None else account.balance_cents,
            backup_cents=None if card is None else card.available_cents,
            stock=None if product is None else product.stock, available=available,
            capacity_bytes=None if storage is None else storage.capacity_bytes,
            ranking_approvals=None if rule is None else rule.required)


def write_example_data(data: ExampleData) -> None:
    """Set the example rows to ``data`` (rows it has no value for are left as they are)."""
    values = [(Account, Account.customer_id == CUSTOMER, "balance_cents", data.balance_cents),
              (BackupCard, BackupCard.customer_id == CUSTOMER, "available_cents",
               data.backup_cents),
              (Product, Product.id == PRODUCT, "stock", data.stock),
              (Storage, Storage.id == DEFAULT_STORAGE, "capacity_bytes", data.capacity_bytes)]
    values += [(Resource, Resource.id == resource_id, "available", available)
               for resource_id, available in data.available.items()]
    with database.session() as session:
        for table, where, column, value in values:
            if value is not None:
                session.execute(update(table).where(where).values({column: value}))
        session.execute(delete(ApprovalRule).where(ApprovalRule.family == "ranking"))
        if data.ranking_approvals is not None:
            session.add(ApprovalRule(family="ranking", required=data.ranking_approvals))


def keep_example_data() -> Callable[[], list[str]]:
    """Note the example rows now; return what puts them back so (the demo's :data:`DATA`)."""
    before = read_example_data()

    def put_back() -> list[str]:
        write_example_data(before)
        return [f"Put the example data back as the demo found it: {before.summary()}."]

    return put_back


def reset_example_data() -> list[str]:
    """Put the example rows back as first seeded (``sagaline demo --reset``).

    Missing rows are seeded again; the default storage pool gets room for 1,024 vaults
    besides those it holds. Orders, bookings and users that sagas made are kept.
    """
    with database.session() as session:
        for seed in SEEDERS:
            seed(session)
        storage = session.get(Storage, DEFAULT_STORAGE)
        allocated = 0 if storage is None else storage.allocated_bytes
    seeded = ExampleData(
        balance_cents=SEEDED_BALANCE_CENTS, backup_cents=BACKUP_LIMIT_CENTS,
        stock=SEEDED_STOCK, available={r: SEED[r][1] for r in TRAVEL},
        capacity_bytes=allocated + STORAGE_ROOM_BYTES, ranking_approvals=None)
    write_example_data(seeded)
    return [f"The example data is back as first seeded: {seeded.summary()}."]


DATA = DemoData(keep=keep_example_data, reset=reset_example_data)
"""How the demo keeps the example data it spends (see :class:`sagaline.cli.demo.DemoData`)."""


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


def new_address() -> dict[str, str]:
    """A provisioning's inputs: an address no earlier demo used."""
    return {"email": f"ada.{uuid.uuid4().hex[:8]}@example.com"}


def storage_with_room() -> None:
    """Make sure the default storage pool has room for a vault."""
    with database.session() as session:
        storage = session.get(Storage, DEFAULT_STORAGE)
        if storage is not None and storage.capacity_bytes - storage.allocated_bytes < 2**30:
            storage.capacity_bytes = storage.allocated_bytes + 1024 * 2**30


def storage_full() -> None:
    """Fill the default storage pool, so the next vault cannot be provisioned."""
    with database.session() as session:
        storage = session.get(Storage, DEFAULT_STORAGE)
        if storage is not None:
            storage.capacity_bytes = storage.allocated_bytes


def the_mail(run: SagaRun) -> list[str]:
    """The magic-link mail the run sent, as the outbox folder holds it."""
    email = str(run.inputs["email"])
    mails = sorted(mailer.outbox.glob("*.eml"), key=lambda p: p.stat().st_mtime)
    for path in reversed(mails):
        mail = message_from_bytes(path.read_bytes())
        if mail["To"] == email:
            return [f"mail to {email} written to {path}",
                    f"  Subject: {mail['Subject']}",
                    f"  X-Correlation-ID: {mail['X-Correlation-ID']}",
                    f"  link: {_link(mail)}"]
    return [f"no mail to {email} in {mailer.outbox}"]


def _link(mail: Message) -> str:
    """The mail's link with its secret masked: the terminal is no place for it."""
    body = mail.get_payload(decode=True)
    text = body.decode() if isinstance(body, bytes) else ""
    link = next((line for line in text.splitlines() if "://" in line), "?")
    return re.sub(r"token=([^&]{4})[^&]*", r"token=\1…(masked)", link)


def nothing_left(run: SagaRun) -> list[str]:
    """What the failed provisioning left behind for its address (nothing, or a bug)."""
    email = str(run.inputs["email"])
    with database.session() as session:
        users = session.scalars(select(User.id).where(User.email == email)).all()
        live = session.scalar(select(func.count()).select_from(MagicLinkToken).where(
            MagicLinkToken.email == email, MagicLinkToken.revoked_at.is_(None))) or 0
        vaults = session.scalar(select(func.count()).select_from(Vault)
                                .where(Vault.user_id.in_(users))) or 0
        members = session.scalar(select(func.count()).select_from(Membership)
                                 .where(Membership.user_id.in_(users))) or 0
    return [f"left for {email}: {len(users)} users, {live} live tokens, {vaults} vaults, "
            f"{members} memberships"]


def new_snapshot(family: str, drift: float) -> dict[str, str]:
    """A fresh shadow snapshot of ``family``: the activation's inputs.

    The family's adapters and its active snapshot are seeded on first use.
    """
    snapshot_id = f"{family}-{uuid.uuid4().hex[:6]}"
    with database.session() as session:
        if session.scalar(select(UpmSnapshot.id).where(UpmSnapshot.family == family,
                                                       UpmSnapshot.status == ACTIVE)) is None:
            session.add(UpmSnapshot(id=f"{family}-v1", family=family, status=ACTIVE,
                                    drift_score=0.02, adapter_config={"dim": 128}))
            for n in (1, 2):
                session.add(UpmAdapter(id=f"{family}-adapter-{n}", family=family,
                                       snapshot_id=f"{family}-v1",
                                       config={"dim": 128, "region": f"eu-{n}"}))
        session.add(UpmSnapshot(id=snapshot_id, family=family, status=SHADOW,
                                drift_score=drift, adapter_config={"dim": 256}))
    return {"snapshot_id": snapshot_id}


def the_search(run: SagaRun) -> list[str]:
    """What the search trained, its frontier, and the version it registered."""
    if not isinstance(run.result, dict):
        return []
    with database.session() as session:
        trials = session.scalars(select(Trial).where(Trial.run_id == run.result["run_id"])
                                 .order_by(Trial.index)).all()
        lines = [f"trial {t.index}: {t.architecture['layers']}x{t.architecture['units']} "
                 f"accuracy {t.metrics.get('val_accuracy', 0):.3f}, "
                 f"{t.metrics.get('params', 0):,} parameters" for t in trials]
    frontier = run.step("analyze_pareto").result or {}
    lines.append(f"Pareto frontier: {len(frontier.get('frontier', []))} trials; registered "
                 f"version {run.result['version']} (accuracy {run.result['val_accuracy']:.3f})")
    return lines


def two_approvals_for_ranking() -> None:
    """The ranking family's snapshots need two distinct approvers."""
    with database.session() as session:
        if session.get(ApprovalRule, "ranking") is None:
            session.add(ApprovalRule(family="ranking", required=2))


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
    DemoScenario(
        title="A new user is provisioned: token, user, vault, community, then the mail",
        saga="user_provisioning",
        inputs=new_address,
        expect=SagaStatus.COMPLETED,
        compensations=(),
        prepare=storage_with_room,
        show=the_mail,
    ),
    DemoScenario(
        title="A provisioning when the vault storage is full: nothing is left behind",
        saga="user_provisioning",
        inputs=new_address,
        expect=SagaStatus.COMPENSATED,
        compensations=("delete_user", "revoke_token"),
        prepare=storage_full,
        show=nothing_left,
    ),
    DemoScenario(
        title="A UPM snapshot is activated: the old one archived, the adapters moved over",
        saga="upm_activation",
        inputs=lambda: new_snapshot("recsys", 0.05),
        expect=SagaStatus.COMPLETED,
        compensations=(),
        prepare=storage_with_room,
    ),
    DemoScenario(
        title="A snapshot without its two approvals: Crown waits for them (2 s here), then "
              "denies the activation",
        saga="upm_activation",
        inputs=lambda: {**new_snapshot("ranking", 0.05), "approval_timeout_s": 2},
        expect=SagaStatus.COMPENSATED,
        compensations=(),
        prepare=two_approvals_for_ranking,
    ),
    DemoScenario(
        title="A small architecture search: 4 models trained 2 at a time, the best registered",
        saga="cerebros_nas",
        inputs={"search_space": {"layers": [1, 2], "units": [64, 128]}, "max_trials": 4,
                "epochs": 10, "concurrency": 2, "passes_per_epoch": 3},
        expect=SagaStatus.COMPLETED,
        compensations=(),
        show=the_search,
    ),
]
