"""The scripts' answers as Python values: a claim, a rollback planned, an outbox locked."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sagaline import codec
from sagaline.ids import derived_id


@dataclass(frozen=True)
class GroupSpec:
    """A parallel group as the store counts it: its name, branches and bound."""

    name: str
    """The group's name."""
    branches: Sequence[str]
    """Its branches' step names, in declared order."""
    limit: int | None
    """How many branches may run at once (``None``: all)."""

    def json(self) -> str:
        """The group as ``group.lua`` reads it."""
        return codec.dumps({"name": self.name, "branches": list(self.branches),
                            "limit": self.limit})


@dataclass(frozen=True)
class Creation:
    """What ``create.lua`` answered: whether the run was recorded, and if not, why."""

    outcome: str
    """``created``; ``taken`` (the id is in use); ``duplicate`` (the idempotency key
    started a saga of this name with these inputs already); ``conflict`` (it started
    another saga, or this one with other inputs)."""
    saga_id: str
    """The run this start stands for: the new one, or the one its key started."""
    detail: str = ""
    """The existing run's correlation id (``duplicate``), or its saga's name
    (``conflict``)."""

    @property
    def created(self) -> bool:
        """Whether a new run was recorded."""
        return self.outcome == "created"


def creation_from_reply(reply: Any, saga_id: str) -> Creation:
    """Read ``create.lua``'s reply."""
    if isinstance(reply, list):
        return Creation(str(reply[0]), str(reply[1]), str(reply[2] or ""))
    return Creation("created" if reply else "taken", saga_id)


@dataclass(frozen=True)
class Claim:
    """What ``begin.lua`` answered."""

    kind: str
    """``run``, ``completed``, ``busy``, ``inactive``, ``failed``, ``waiting`` (for its
    child saga) or ``missing``."""
    attempt: int = 0
    """The attempt to run (``run``)."""
    inputs: dict[str, Any] | None = None
    """The saga's inputs (``run``)."""
    correlation_id: str = ""
    """The saga's correlation id (``run``)."""
    fault: str = ""
    """An injected fault's message: this attempt must fail with it (``run``)."""
    parent_id: str = ""
    """The parent saga's id, when this saga is a child saga (``run``)."""
    results: dict[str, Any] | None = None
    """Results of the steps asked for (``run``)."""
    started_event: str = ""
    """The id of the event the attempt's ``started`` log entry stands for (``run``)."""
    result: Any = None
    """The recorded result (``completed``)."""
    cursor: int = -1
    """The furthest step index begun (``completed``)."""
    wait_s: float = 0.0
    """Seconds the live lease has left (``busy``)."""
    saga_status: str = ""
    """The saga's status (``inactive``)."""


def claim_from_reply(reply: list[Any], needed: Sequence[str], saga_id: str = "") -> Claim:
    """Read ``begin.lua``'s reply."""
    kind = reply[0]
    if kind == "run":
        results = {name: codec.loads(raw) for name, raw in zip(needed, reply[7:], strict=True)}
        index, entry = str(reply[6]).split(" ", 1)
        started = derived_id(float(codec.loads(entry)["at"]), saga_id, index)
        return Claim(kind, attempt=int(reply[1]), inputs=codec.loads(reply[2]),
                     correlation_id=reply[3], fault=reply[4], parent_id=reply[5],
                     results=results, started_event=started)
    if kind == "completed":
        return Claim(kind, result=codec.loads(reply[1]), cursor=int(reply[2]))
    if kind == "busy":
        return Claim(kind, wait_s=float(reply[1]))
    if kind == "inactive":
        return Claim(kind, saga_status=reply[1])
    if kind == "lost":
        return Claim(kind, attempt=int(reply[1]))
    return Claim(kind)


@dataclass(frozen=True)
class OutboxClaim:
    """A saga's outbox, locked for one relay: what it needs to publish."""

    saga: dict[str, str]
    """The saga's name, correlation id and causation id."""
    entries: list[str]
    """The whole transition log (earlier entries fix later events' causes)."""
    published: int
    """How many entries were published already."""


@dataclass(frozen=True)
class Rollback:
    """A rollback just planned: the compensations to run, in order."""

    plan: list[str]
    """Steps whose compensations run, last step first."""
    awaiting: bool
    """Whether the first waits for its action, still in flight, to end (then its end
    enqueues the rollback)."""
