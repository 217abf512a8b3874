"""A saga step: an action, the compensation that undoes it, and their policies."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from types import MappingProxyType

from sagaline.errors import DefinitionError
from sagaline.policy import RetryPolicy
from sagaline.refs import Const, FromInput, FromStep, Ref, steps_referenced
from sagaline.status import Role
from sagaline.task import SagaTask

STEP_NAME = re.compile(r"^[a-z][a-z0-9_]{0,62}$")

#: The argument name under which a compensation receives its action's result.
RESULT_ARGUMENT = "result"


@dataclass(frozen=True)
class Fallback:
    """What a step tries when its action gives up: another way to the same end.

    If the fallback succeeds the saga goes on with its result (later steps read it as the
    step's result), and a rollback later runs the fallback's own compensation.

    Example:
        >>> Step("process_payment", process_payment, compensation=refund_payment, ...,
        ...      fallback=Fallback(charge_backup_card, compensation=refund_backup_card,
        ...                        args={"customer_id": FromInput("customer_id")}))
    """

    action: SagaTask
    """What the fallback does."""
    compensation: SagaTask | None = None
    """What undoes the fallback once it completed; ``None`` when there is nothing to undo."""
    args: Mapping[str, Ref] = field(default_factory=dict)
    """The fallback's keyword arguments and where each comes from."""
    compensation_args: Mapping[str, Ref] | None = None
    """The compensation's arguments; by default those of the fallback's it takes, and
    ``result``, what the fallback returned."""
    retry: RetryPolicy | None = None
    """The fallback's retry policy; the saga's default when ``None``."""

    def __post_init__(self) -> None:
        """Check the fallback on its own; its step checks the rest."""
        for what, task in (("action", self.action), ("compensation", self.compensation)):
            if task is not None and not isinstance(task, SagaTask):
                raise DefinitionError(
                    f"fallback {what} {task!r} is not a saga task; "
                    "declare the function with @saga_task('domain.name')"
                )
        _check_refs("fallback", self.args, self.compensation_args)
        if self.compensation_args is not None and self.compensation is None:
            raise DefinitionError("a fallback has compensation_args but no compensation")
        object.__setattr__(self, "args", MappingProxyType(dict(self.args)))

    def undo_args(self, step: str) -> Mapping[str, Ref]:
        """The compensation's arguments, the default filled in (as :attr:`Step.undo_args`)."""
        return _undo_args(step, self.args, self.compensation, self.compensation_args)


def _check_refs(owner: str, *mappings: Mapping[str, Ref] | None) -> None:
    for mapping in mappings:
        for arg, ref in (mapping or {}).items():
            if not isinstance(ref, FromInput | FromStep | Const):
                raise DefinitionError(
                    f"{owner}: argument {arg!r} is {ref!r}; use FromInput(...), "
                    "FromStep(...) or Const(...)"
                )


def _undo_args(step: str, args: Mapping[str, Ref], compensation: SagaTask | None,
               compensation_args: Mapping[str, Ref] | None) -> Mapping[str, Ref]:
    if compensation_args is not None:
        return compensation_args
    if compensation is None:
        return {}
    offered: dict[str, Ref] = {**args, RESULT_ARGUMENT: FromStep(step)}
    if compensation.accepts_any:
        return offered
    return {k: v for k, v in offered.items() if k in compensation.parameters}


@dataclass(frozen=True)
class Step:
    """One step of a saga, immutable once declared.

    Example:
        >>> Step("reserve_inventory", reserve_inventory, compensation=release_inventory,
        ...      args={"order_id": FromStep("create_order", "order_id"),
        ...            "items": FromInput("items")},
        ...      retry=RetryPolicy(attempts=3, non_retryable=(OutOfStockError,)))
    """

    name: str
    """Unique within the saga: lowercase letters, digits and underscores."""
    action: SagaTask
    """What the step does."""
    compensation: SagaTask | None = None
    """What undoes the action once it completed; ``None`` when there is nothing to undo."""
    args: Mapping[str, Ref] = field(default_factory=dict)
    """The action's keyword arguments and where each comes from."""
    compensation_args: Mapping[str, Ref] | None = None
    """The compensation's arguments; by default those of the action's it takes, and
    ``result``, what the action returned."""
    retry: RetryPolicy | None = None
    """The action's retry policy; the saga's default when ``None``."""
    compensation_retry: RetryPolicy | None = None
    """The compensation's retry policy; the saga's default when ``None``."""
    time_limit: timedelta | None = None
    """How long one attempt of the action may run; the saga's default when ``None``."""
    queue: str | None = None
    """The queue for this step's messages (e.g. a queue of GPU workers)."""
    fallback: Fallback | None = None
    """Tried when the action gives up (after its retries); ``None``: the step fails."""
    adds: tuple[SagaTask, ...] = ()
    """The saga tasks of the steps this step may add after itself at runtime (its result
    lists them, see :func:`sagaline.add_steps`); workers learn the tasks from here."""
    pivot: bool = False
    """Whether completing this step commits the saga: it cannot be undone (it declares no
    compensation), and the steps after it are retried forward, never rolled back (see
    :class:`Saga`)."""

    def __post_init__(self) -> None:
        """Check the step on its own; the saga checks it against its neighbours."""
        if not STEP_NAME.match(self.name):
            raise DefinitionError(
                f"step name {self.name!r} must be lowercase letters, digits and underscores, "
                "starting with a letter"
            )
        for what, task in (("action", self.action), ("compensation", self.compensation)):
            if task is not None and not isinstance(task, SagaTask):
                raise DefinitionError(
                    f"step {self.name!r}: its {what} {task!r} is not a saga task; "
                    "declare the function with @saga_task('domain.name')"
                )
        _check_refs(f"step {self.name!r}", self.args, self.compensation_args)
        object.__setattr__(self, "adds", tuple(self.adds))
        for task in self.adds:
            if not isinstance(task, SagaTask):
                raise DefinitionError(
                    f"step {self.name!r}: adds holds {task!r}, which is not a saga task"
                )
        if self.fallback is not None and not isinstance(self.fallback, Fallback):
            raise DefinitionError(
                f"step {self.name!r}: fallback must be a Fallback(...), not {self.fallback!r}"
            )
        if self.pivot and (self.compensation is not None or (
                self.fallback is not None and self.fallback.compensation is not None)):
            raise DefinitionError(
                f"step {self.name!r} is a pivot, which cannot be undone, yet declares a "
                "compensation; drop the compensation or pivot=True"
            )
        if self.compensation_args is not None and self.compensation is None:
            raise DefinitionError(
                f"step {self.name!r} has compensation_args but no compensation"
            )
        if self.time_limit is not None and self.time_limit <= timedelta(0):
            raise DefinitionError(f"step {self.name!r}: time_limit must be positive")
        object.__setattr__(self, "args", MappingProxyType(dict(self.args)))

    @property
    def undo_args(self) -> Mapping[str, Ref]:
        """The compensation's arguments, the default filled in.

        By default a compensation gets those of the action's arguments it takes, and
        ``result`` (what the action returned) if it takes that.
        """
        return _undo_args(self.name, self.args, self.compensation, self.compensation_args)

    def results_needed(self) -> list[str]:
        """Steps whose results the action needs."""
        return steps_referenced(self.args)

    def undo_results_needed(self) -> list[str]:
        """Steps whose results the compensation needs."""
        return steps_referenced(self.undo_args)

    def task_for(self, role: Role, undoes_fallback: bool = False) -> SagaTask | None:
        """The saga task that runs this step's ``role`` (the fallback's, when it applies)."""
        if (role is Role.FALLBACK or undoes_fallback) and self.fallback is not None:
            return self.fallback.action if role is Role.FALLBACK else self.fallback.compensation
        return self.action if role is not Role.COMPENSATION else self.compensation

    def tasks(self) -> list[SagaTask]:
        """Every saga task the step may run: action, compensation, fallback and its undo."""
        found = [self.action, self.compensation, *self.adds]
        if self.fallback is not None:
            found += [self.fallback.action, self.fallback.compensation]
        return [t for t in found if t is not None]
