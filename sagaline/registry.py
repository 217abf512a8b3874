"""The saga registry: every declared saga, discoverable by name, with its steps and policies.

:meth:`SagaRegistry.describe` gives a saga's definition as data (what ``sagaline sagas
NAME`` prints): the domains it declares, each step's action and compensation task (and its
fallback's), where their arguments come from, the retry policies and time limit that apply,
the queue, and the parallel groups its steps run in.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping
from datetime import timedelta
from typing import Any

from pydantic import BaseModel, Field

from sagaline.errors import DefinitionError, UnknownSagaError
from sagaline.parallel import Parallel
from sagaline.policy import RetryPolicy
from sagaline.refs import Const, FromInput, FromStep
from sagaline.saga import Saga
from sagaline.step import Fallback
from sagaline.task import SagaTask


class PolicyDescription(BaseModel):
    """A retry policy as data."""

    attempts: int
    """Attempts in all, the first included."""
    initial_s: float
    """Seconds before the second attempt."""
    multiplier: float
    """Factor by which each later delay grows."""
    maximum_s: float
    """Upper bound of any delay, in seconds."""
    jitter: float
    """Fraction by which each delay is spread at random."""
    non_retryable: list[str] = Field(default_factory=list)
    """Error types that fail at once, by qualified name."""
    source: str = "step"
    """``step`` when the step sets it, ``saga`` when it is the saga's default."""


class FallbackDescription(BaseModel):
    """A step's fallback as data: what it runs when the action gives up, and its undo."""

    action: str
    """The fallback's Celery task name."""
    args: dict[str, str] = Field(default_factory=dict)
    """Its arguments and where each comes from."""
    compensation: str | None = None
    """The task that undoes the fallback; ``None`` when nothing undoes it."""
    compensation_args: dict[str, str] = Field(default_factory=dict)
    """The compensation's arguments and where each comes from."""
    retry: PolicyDescription
    """The fallback's retry policy, as it applies (its own or the saga's default)."""
    compensation_retry: PolicyDescription | None = None
    """The compensation's retry policy, as it applies (the step's or the saga's default)."""


class GroupDescription(BaseModel):
    """A parallel group as data: branches that run at once."""

    name: str
    """The group's name."""
    branches: list[str] = Field(default_factory=list)
    """The branches' step names, in the order they are started."""
    max_concurrency: int | None = None
    """How many branches may run at once; ``None``: all of them."""


class StepDescription(BaseModel):
    """One step of a saga as data: its operations, arguments and policies."""

    name: str
    """The step's name."""
    kind: str = "step"
    """``step``, or the class name of another kind of step."""
    action: str | None = None
    """The action's Celery task name."""
    compensation: str | None = None
    """The compensation's Celery task name; ``None`` when nothing undoes the step."""
    args: dict[str, str] = Field(default_factory=dict)
    """The action's arguments and where each comes from (``FromInput('items')``...)."""
    compensation_args: dict[str, str] = Field(default_factory=dict)
    """The compensation's arguments and where each comes from."""
    retry: PolicyDescription | None = None
    """The action's retry policy, as it applies."""
    compensation_retry: PolicyDescription | None = None
    """The compensation's retry policy, as it applies."""
    time_limit_s: float | None = None
    """Seconds one attempt may run, as it applies."""
    queue: str | None = None
    """The queue its action's messages go to; ``None``: the app's default queue."""
    compensation_queue: str | None = None
    """The queue its compensation's messages go to; ``None``: the app's default queue."""
    extra: dict[str, Any] = Field(default_factory=dict)
    """Further attributes of the step, as text (kinds of step this view does not know)."""
    fallback: FallbackDescription | None = None
    """What it tries when the action gives up; ``None``: the step fails."""
    group: str | None = None
    """The parallel group it is a branch of (it runs at once with the other branches)."""
    steps: list[StepDescription] = Field(default_factory=list)
    """The steps inside it, for a step made of steps."""


class SagaDescription(BaseModel):
    """A saga's definition as data: what ``sagaline sagas NAME --json`` prints."""

    name: str
    """The saga's name."""
    description: str = ""
    """One line on what it does."""
    inputs: str
    """The name of its input model."""
    input_fields: list[str] = Field(default_factory=list)
    """The input model's fields."""
    returns: dict[str, str] | str | None = None
    """What it returns: references, by key; ``None``: the last step's result."""
    retry: PolicyDescription
    """The default retry policy of actions."""
    compensation_retry: PolicyDescription
    """The default retry policy of compensations."""
    step_time_limit_s: float
    """The default time limit of a step, in seconds."""
    deadline_s: float | None = None
    """How long a run may take in all, in seconds, if limited."""
    domains: dict[str, Any] | None = None
    """The domains it declares (:meth:`Domains.describe`: ``path``, ``direction``,
    ``reason``); ``None``: not declared."""
    steps: list[StepDescription] = Field(default_factory=list)
    """The steps, in order, a group's branches in place of the group (see ``group``)."""
    groups: list[GroupDescription] = Field(default_factory=list)
    """The parallel groups, in order."""


class SagaRegistry:
    """Sagas by name; an engine has one, filled by :meth:`Sagaline.register`."""

    def __init__(self) -> None:
        """Start empty."""
        self._sagas: dict[str, Saga] = {}

    def add(self, saga: Saga) -> None:
        """Add a saga; a different saga under a taken name is refused."""
        if not isinstance(saga, Saga):
            raise DefinitionError(f"{saga!r} is not a Saga")
        known = self._sagas.get(saga.name)
        if known is not None and known is not saga:
            raise DefinitionError(f"two different sagas are named {saga.name!r}; rename one")
        self._sagas[saga.name] = saga

    def get(self, name: str) -> Saga:
        """The saga named ``name``.

        Raises:
            UnknownSagaError: None is registered under that name; the message lists them.
        """
        try:
            return self._sagas[name]
        except KeyError:
            known = ", ".join(self.names()) or "none"
            raise UnknownSagaError(f"no saga named {name!r} (registered: {known})") from None

    def names(self) -> list[str]:
        """The registered sagas' names, sorted."""
        return sorted(self._sagas)

    def describe(self, name: str) -> SagaDescription:
        """The saga named ``name`` as data: steps, compensations, arguments, policies.

        Raises:
            UnknownSagaError: None is registered under that name; the message lists them.
        """
        return describe_saga(self.get(name))

    def __contains__(self, name: object) -> bool:
        """Whether a saga of that name is registered."""
        return name in self._sagas

    def __iter__(self) -> Iterator[Saga]:
        """The sagas, by name."""
        return iter(sorted(self._sagas.values(), key=lambda s: s.name))

    def __len__(self) -> int:
        """How many sagas are registered."""
        return len(self._sagas)


# -- describing ---------------------------------------------------------------------------

#: Step attributes :func:`describe_step` shows in fields of their own.
_KNOWN_STEP_FIELDS = {"name", "action", "compensation", "args", "compensation_args", "retry",
                      "compensation_retry", "time_limit", "queue", "steps", "fallback"}


def describe_saga(saga: Saga) -> SagaDescription:
    """A saga's definition as data (see :class:`SagaDescription`)."""
    returns: dict[str, str] | str | None = None
    if isinstance(saga.returns, Mapping):
        returns = {key: str(ref) for key, ref in saga.returns.items()}
    elif saga.returns is not None:
        returns = str(saga.returns)
    return SagaDescription(
        name=saga.name,
        description=saga.description,
        inputs=saga.inputs.__name__,
        input_fields=list(saga.inputs.model_fields),
        returns=returns,
        retry=describe_policy(saga.retry, "saga"),
        compensation_retry=describe_policy(saga.compensation_retry, "saga"),
        step_time_limit_s=saga.step_time_limit.total_seconds(),
        deadline_s=None if saga.deadline is None else saga.deadline.total_seconds(),
        domains=None if saga.domains is None else saga.domains.describe(),
        steps=[describe_step(saga, step, group=_group_name(saga, step.name))
               for step in saga.steps],
        groups=[GroupDescription(name=e.name, branches=e.branch_names(),
                                 max_concurrency=e.max_concurrency)
                for e in saga.elements if isinstance(e, Parallel)],
    )


def describe_step(saga: Saga, step: Any, *, group: str | None = None) -> StepDescription:
    """One step as data, its saga's defaults filled in; ``group``: the group it is in.

    It reads the step's attributes defensively, so that kinds of step other than
    :class:`~sagaline.Step` (made of steps, say) are shown as far as they go.
    """
    action = getattr(step, "action", None)
    compensation = getattr(step, "compensation", None)
    own_retry = getattr(step, "retry", None)
    own_undo_retry = getattr(step, "compensation_retry", None)
    limit = getattr(step, "time_limit", None) or saga.step_time_limit
    members = getattr(step, "steps", None)
    undo_args = getattr(step, "undo_args", None)
    if undo_args is None:
        undo_args = getattr(step, "compensation_args", None) or {}
    return StepDescription(
        name=str(getattr(step, "name", "?")),
        kind="step" if type(step).__name__ == "Step" else type(step).__name__,
        action=_task_name(action),
        compensation=_task_name(compensation),
        args=_refs(getattr(step, "args", None) or {}),
        compensation_args=_refs(undo_args) if compensation is not None else {},
        retry=(describe_policy(own_retry or saga.retry, "step" if own_retry else "saga")
               if action is not None else None),
        compensation_retry=(
            describe_policy(own_undo_retry or saga.compensation_retry,
                            "step" if own_undo_retry else "saga")
            if compensation is not None else None
        ),
        time_limit_s=limit.total_seconds() if isinstance(limit, timedelta) else None,
        queue=getattr(step, "queue", None) or getattr(action, "queue", None),
        compensation_queue=(getattr(step, "queue", None) or getattr(compensation, "queue", None)
                            if compensation is not None else None),
        extra={f.name: render(getattr(step, f.name)) for f in _fields(step)
               if f.name not in _KNOWN_STEP_FIELDS and getattr(step, f.name) is not None},
        fallback=describe_fallback(saga, step),
        group=group,
        steps=([describe_step(saga, m) for m in members]
               if isinstance(members, list | tuple) else []),
    )


def describe_fallback(saga: Saga, step: Any) -> FallbackDescription | None:
    """The step's fallback as data, policies as they apply; ``None`` when it has none."""
    fallback = getattr(step, "fallback", None)
    if not isinstance(fallback, Fallback):
        return None
    undo = fallback.compensation
    undo_retry = getattr(step, "compensation_retry", None)
    return FallbackDescription(
        action=fallback.action.name,
        args=_refs(fallback.args),
        compensation=None if undo is None else undo.name,
        compensation_args=_refs(fallback.undo_args(str(step.name))) if undo else {},
        retry=describe_policy(fallback.retry or saga.retry,
                              "step" if fallback.retry else "saga"),
        compensation_retry=(
            describe_policy(undo_retry or saga.compensation_retry,
                            "step" if undo_retry else "saga")
            if undo is not None else None
        ),
    )


def describe_policy(policy: RetryPolicy, source: str) -> PolicyDescription:
    """A retry policy as data; ``source`` says whose it is (``step`` or ``saga``)."""
    return PolicyDescription(
        attempts=policy.attempts,
        initial_s=policy.initial.total_seconds(),
        multiplier=policy.multiplier,
        maximum_s=policy.maximum.total_seconds(),
        jitter=policy.jitter,
        non_retryable=[f"{k.__module__}.{k.__qualname__}" for k in policy.non_retryable],
        source=source,
    )


def render(value: Any) -> Any:
    """A definition's value as JSON-friendly data: tasks by name, durations in seconds.

    Anything else with a name is shown by its name, a dataclass field by field, and a
    function by its qualified name, so that no repr (with an address) ever shows.
    """
    if isinstance(value, SagaTask):
        return value.name
    if isinstance(value, FromInput | FromStep | Const):
        return str(value)
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, RetryPolicy):
        return describe_policy(value, "step").model_dump()
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    if isinstance(value, Mapping):
        return {str(k): render(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [render(v) for v in value]
    if getattr(value, "name", None):
        return str(value.name)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: render(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if callable(value):  # never a repr, which would show the function's address
        return f"{getattr(value, '__module__', '?')}.{getattr(value, '__qualname__', '?')}"
    return str(value)


def _group_name(saga: Saga, step: str) -> str | None:
    group = saga.group_of(step)
    return None if group is None else group.name


def _task_name(task: Any) -> str | None:
    return None if task is None else str(getattr(task, "name", task))


def _refs(refs: Mapping[str, Any]) -> dict[str, str]:
    return {str(arg): str(ref) for arg, ref in refs.items()}


def _fields(step: Any) -> tuple[dataclasses.Field[Any], ...]:
    return dataclasses.fields(step) if dataclasses.is_dataclass(step) else ()
