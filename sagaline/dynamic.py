"""Dynamic sagas: sagas assembled at runtime, and steps whose result adds steps after them.

Both are recorded with the run, as JSON, so that any worker (a restarted one included) and
the recovery sweep know the steps: a saga built with :class:`SagaBuilder` is recorded whole
when it starts; the steps a step adds are part of that step's recorded result. Steps refer
to saga tasks by name, so a worker must know the tasks: those of its registered sagas,
those a step declares it may add (``Step(..., adds=[...])``), and any given to
:meth:`Sagaline.register_tasks`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import Any

from pydantic import BaseModel, create_model

from sagaline.domains import Domains
from sagaline.errors import DefinitionError
from sagaline.parallel import Parallel
from sagaline.policy import RetryPolicy
from sagaline.refs import Const, FromInput, FromStep, Ref
from sagaline.saga import Element, Saga
from sagaline.step import Step
from sagaline.task import SagaTask

#: The key of a step's result under which it lists the steps it adds.
ADDED_STEPS = "add_steps"


class SagaBuilder:
    """Assemble a saga step by step at runtime, adding steps on conditions.

    Example:
        >>> builder = SagaBuilder("onboarding", inputs=Signup)
        >>> builder.add(Step("create_account", create_account, compensation=delete_account))
        >>> if signup.wants_newsletter:
        ...     builder.add(Step("subscribe", subscribe, compensation=unsubscribe))
        >>> engine.start(builder.build(), signup)
    """

    def __init__(self, name: str, *, inputs: type[BaseModel], description: str = "",
                 retry: RetryPolicy | None = None, domains: Domains | None = None) -> None:
        """Start an empty saga named ``name`` whose inputs ``inputs`` validates.

        ``domains`` declares the domains it touches, as :class:`Saga` takes them.
        """
        self.name = name
        self.inputs = inputs
        self.description = description
        self.retry = retry
        self.domains = domains
        self.elements: list[Element] = []

    def add(self, element: Element) -> SagaBuilder:
        """Append a step or a group; returns the builder, to chain calls."""
        self.elements.append(element)
        return self

    def build(self) -> Saga:
        """The saga, checked as any declared saga; it is recorded with each run it starts.

        Raises:
            DefinitionError: as :class:`Saga` does, or when a step cannot be recorded.
        """
        extra: dict[str, Any] = {} if self.retry is None else {"retry": self.retry}
        saga = Saga(self.name, inputs=self.inputs, steps=self.elements,
                    description=self.description, domains=self.domains, **extra)
        for element in saga.elements:
            element_to_json(element)
        object.__setattr__(saga, "assembled", True)
        return saga


def add_steps(result: Mapping[str, Any], *elements: Element) -> dict[str, Any]:
    """A step's result that adds ``elements`` (steps, or groups) right after the step.

    The step must declare the tasks the added steps may use (``adds=[...]``). Added steps
    take arguments from the inputs, from earlier steps' results, or constants. A
    :class:`Parallel` group fans out at run time: its branches (one per proposal, say) are
    known only now, its ``max_concurrency`` bounds how many run at once, and it is recorded
    with the result, so a restarted worker and the recovery sweep know it; a rollback
    undoes its completed branches as for a declared group.

    Example:
        >>> return add_steps({"parcels": 2}, *[Step(f"ship_{i}", ship, compensation=unship,
        ...                  args={"parcel": Const(i)}) for i in range(2)])
        >>> return add_steps({"trials": 10}, Parallel("train", [
        ...     Step(f"train_{i}", train, compensation=discard, args={"trial": Const(i)})
        ...     for i in range(10)], max_concurrency=4))
    """
    return {**result, ADDED_STEPS: [element_to_json(e) for e in elements]}


def added_steps(step: Step, result: Any, tasks: Mapping[str, SagaTask]) -> list[Element]:
    """The steps and groups an expanding step's recorded result adds (none for others).

    Raises:
        DefinitionError: a spec is malformed, or names a task the step does not declare.
    """
    if not step.adds or not isinstance(result, Mapping) or not result.get(ADDED_STEPS):
        return []
    allowed = {t.name: t for t in step.adds}
    elements = [element_from_json(raw, allowed) for raw in result[ADDED_STEPS]]
    for element in elements:
        for added in element.steps if isinstance(element, Parallel) else [element]:
            if added.adds:
                raise DefinitionError(f"added step {added.name!r} cannot add steps itself")
    return elements


# -- JSON forms -------------------------------------------------------------------------------


def element_to_json(element: Element) -> dict[str, Any]:
    """A step or a group as JSON."""
    if isinstance(element, Parallel):
        return {"group": element.name, "max_concurrency": element.max_concurrency,
                "steps": [step_to_json(s) for s in element.steps]}
    return step_to_json(element)


def element_from_json(raw: Mapping[str, Any], tasks: Mapping[str, SagaTask]) -> Element:
    """A step or a group back from JSON, its tasks looked up by name in ``tasks``."""
    if "group" in raw:
        return Parallel(raw["group"], [step_from_json(s, tasks) for s in raw["steps"]],
                        max_concurrency=raw.get("max_concurrency"))
    return step_from_json(raw, tasks)


def step_to_json(step: Step) -> dict[str, Any]:
    """A step as JSON.

    Raises:
        DefinitionError: it cannot be recorded (a fallback, a child saga, or a retry policy
            naming error types).
    """
    if step.fallback is not None or getattr(step, "child", None) is not None:
        raise DefinitionError(
            f"step {step.name!r}: a step with a fallback or a child saga cannot be added "
            "at runtime yet; declare it in the saga"
        )
    return {
        "name": step.name, "action": step.action.name,
        "compensation": step.compensation.name if step.compensation else None,
        "args": _refs_to_json(step.args),
        "compensation_args": None if step.compensation_args is None
        else _refs_to_json(step.compensation_args),
        "retry": _policy_to_json(step.retry), "compensation_retry":
        _policy_to_json(step.compensation_retry),
        "time_limit_s": step.time_limit.total_seconds() if step.time_limit else None,
        "queue": step.queue, "pivot": step.pivot, "adds": [t.name for t in step.adds],
    }


def step_from_json(raw: Mapping[str, Any], tasks: Mapping[str, SagaTask]) -> Step:
    """A step back from JSON, its tasks looked up by name in ``tasks``."""
    def task(name: str | None) -> SagaTask | None:
        if name is None:
            return None
        if name not in tasks:
            raise DefinitionError(
                f"step {raw.get('name')!r} uses saga task {name!r}, which this engine does "
                "not know; declare it in the step's adds=[...] or engine.register_tasks()"
            )
        return tasks[name]

    action = task(raw["action"])
    assert action is not None
    limit = raw.get("time_limit_s")
    return Step(
        raw["name"], action, compensation=task(raw.get("compensation")),
        args=_refs_from_json(raw.get("args") or {}),
        compensation_args=None if raw.get("compensation_args") is None
        else _refs_from_json(raw["compensation_args"]),
        retry=_policy_from_json(raw.get("retry")),
        compensation_retry=_policy_from_json(raw.get("compensation_retry")),
        time_limit=None if limit is None else timedelta(seconds=limit),
        queue=raw.get("queue"), pivot=bool(raw.get("pivot")),
        adds=tuple(t for t in (task(n) for n in raw.get("adds") or []) if t is not None),
    )


def saga_to_json(saga: Saga) -> dict[str, Any]:
    """An assembled saga as JSON."""
    return {"name": saga.name, "inputs": list(saga.inputs.model_fields),
            "description": saga.description, "retry": _policy_to_json(saga.retry),
            "domains": None if saga.domains is None else saga.domains.describe(),
            "steps": [element_to_json(e) for e in saga.elements]}


def saga_from_json(raw: Mapping[str, Any], tasks: Mapping[str, SagaTask]) -> Saga:
    """An assembled saga back from JSON (its inputs were validated when it started)."""
    fields: dict[str, Any] = {name: (Any, ...) for name in raw["inputs"]}
    inputs = create_model(f"{raw['name']}_inputs", **fields)
    elements = [element_from_json(item, tasks) for item in raw["steps"]]
    retry = _policy_from_json(raw.get("retry"))
    extra: dict[str, Any] = {} if retry is None else {"retry": retry}
    saga = Saga(raw["name"], inputs=inputs, steps=elements,
                description=raw.get("description", ""),
                domains=_domains_from_json(raw.get("domains")), **extra)
    object.__setattr__(saga, "assembled", True)
    return saga


def _domains_from_json(raw: Mapping[str, Any] | None) -> Domains | None:
    """Domains back from :meth:`Domains.describe`'s form; ``None`` when none were recorded."""
    if raw is None:
        return None
    return Domains(*raw["path"], reason=str(raw.get("reason", "")))


def _refs_to_json(refs: Mapping[str, Ref]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for arg, ref in refs.items():
        if isinstance(ref, FromInput):
            out[arg] = {"input": ref.name, "path": list(ref.path)}
        elif isinstance(ref, FromStep):
            out[arg] = {"step": ref.step, "path": list(ref.path)}
        else:
            out[arg] = {"const": ref.value}
    return out


def _refs_from_json(raw: Mapping[str, Mapping[str, Any]]) -> dict[str, Ref]:
    refs: dict[str, Ref] = {}
    for arg, ref in raw.items():
        if "input" in ref:
            refs[arg] = FromInput(ref["input"], *ref.get("path", []))
        elif "step" in ref:
            refs[arg] = FromStep(ref["step"], *ref.get("path", []))
        else:
            refs[arg] = Const(ref.get("const"))
    return refs


def _policy_to_json(policy: RetryPolicy | None) -> dict[str, Any] | None:
    if policy is None:
        return None
    if policy.non_retryable:
        raise DefinitionError(
            "a retry policy recorded with a dynamic saga cannot name non_retryable types; "
            "raise subclasses of sagaline.NonRetryableError instead"
        )
    return {"attempts": policy.attempts, "initial_s": policy.initial.total_seconds(),
            "multiplier": policy.multiplier, "maximum_s": policy.maximum.total_seconds(),
            "jitter": policy.jitter}


def _policy_from_json(raw: Mapping[str, Any] | None) -> RetryPolicy | None:
    if raw is None:
        return None
    return RetryPolicy(attempts=raw["attempts"], initial=timedelta(seconds=raw["initial_s"]),
                       multiplier=raw["multiplier"],
                       maximum=timedelta(seconds=raw["maximum_s"]), jitter=raw["jitter"])


def extend(saga: Saga, after: str, steps: Sequence[Element]) -> Saga:
    """``saga`` with ``steps`` (steps or groups) right after step ``after``: a run's own."""
    elements: list[Element] = []
    for element in saga.elements:
        elements.append(element)
        if isinstance(element, Step) and element.name == after:
            elements.extend(steps)
    extended = Saga(saga.name, inputs=saga.inputs, steps=elements, returns=saga.returns,
                    retry=saga.retry, compensation_retry=saga.compensation_retry,
                    step_time_limit=saga.step_time_limit, description=saga.description,
                    deadline=saga.deadline, domains=saga.domains)
    if getattr(saga, "assembled", False):
        object.__setattr__(extended, "assembled", True)
    return extended
