"""A saga's definition: its inputs, its steps in order, and what it returns."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from pydantic import BaseModel, ValidationError

from sagaline.domains import Domains
from sagaline.errors import DefinitionError, InvalidInputError
from sagaline.parallel import Parallel
from sagaline.policy import DEFAULT_COMPENSATION_RETRY, DEFAULT_RETRY, RetryPolicy
from sagaline.refs import FromInput, FromStep, Ref, resolve_all, steps_referenced
from sagaline.shapes import path_problem, result_type
from sagaline.step import Step

Element = Step | Parallel
"""One element of a saga's steps: a step, or a group of steps that run at once."""

SAGA_NAME = re.compile(r"^[a-z][a-z0-9_]{0,62}$")

#: The time limit of a step that declares none, when the saga sets no default either.
DEFAULT_STEP_TIME_LIMIT = timedelta(minutes=5)

Returns = Ref | Mapping[str, Ref] | None


@dataclass(frozen=True, eq=False)
class Saga:
    """A saga's immutable definition; runs of it are recorded by the engine.

    Declaring checks the whole saga and raises :class:`DefinitionError` with what to fix:
    names unique and well-formed, arguments taken only from declared inputs and from steps
    that come earlier, every argument a task requires given, no argument it does not take.

    ``steps`` holds :class:`Step` and :class:`Parallel` elements, in order. A step marked
    ``pivot=True`` commits the saga: once it completed, the saga is never rolled back past
    it. So every step after a pivot must be retried forward, and its retry policy must say
    so (more than one attempt, no ``non_retryable`` types); when one still gives up, the
    saga turns ``needs_attention`` for an operator instead of compensating.

    Example:
        >>> order_processing = Saga(
        ...     "order_processing", inputs=OrderInput,
        ...     steps=[Step("create_order", create_order, compensation=cancel_order, ...), ...],
        ...     returns={"order_id": FromStep("create_order", "order_id")})
    """

    name: str
    """Unique among the engine's sagas: lowercase letters, digits and underscores."""
    inputs: type[BaseModel]
    """The pydantic model the inputs are validated with before anything is enqueued."""
    steps: tuple[Step, ...]
    """Every step, in order, the branches of a group in place of the group."""
    elements: tuple[Element, ...]
    """The forward path as declared: steps and groups, in order."""
    returns: Returns = None
    """The saga's result: one reference, or a mapping of them; ``None`` for the last step's."""
    retry: RetryPolicy = DEFAULT_RETRY
    """Retry policy of actions whose step sets none."""
    compensation_retry: RetryPolicy = DEFAULT_COMPENSATION_RETRY
    """Retry policy of compensations whose step sets none."""
    step_time_limit: timedelta = DEFAULT_STEP_TIME_LIMIT
    """Time limit of steps that set none."""
    description: str = ""
    """One line on what the saga does, shown by ``sagaline sagas``."""
    deadline: timedelta | None = None
    """How long a run may take in all; past it, the run is stopped and compensated."""
    domains: Domains | None = None
    """The domains it touches and their direction; ``None``: not declared (no check)."""

    def __init__(
        self,
        name: str,
        *,
        inputs: type[BaseModel],
        steps: Sequence[Element],
        returns: Returns = None,
        retry: RetryPolicy = DEFAULT_RETRY,
        compensation_retry: RetryPolicy = DEFAULT_COMPENSATION_RETRY,
        step_time_limit: timedelta = DEFAULT_STEP_TIME_LIMIT,
        description: str = "",
        deadline: timedelta | None = None,
        domains: Domains | None = None,
    ) -> None:
        """Declare and check a saga; see the class docstring."""
        if deadline is not None and deadline <= timedelta(0):
            raise DefinitionError(f"saga {name!r}: deadline must be positive")
        flat = [b for e in steps for b in (e.steps if isinstance(e, Parallel) else [e])]
        for attr, value in (
            ("name", name), ("inputs", inputs), ("steps", tuple(flat)),
            ("elements", tuple(steps)), ("returns", returns),
            ("retry", retry), ("compensation_retry", compensation_retry),
            ("step_time_limit", step_time_limit), ("description", description),
            ("deadline", deadline), ("domains", domains),
        ):
            object.__setattr__(self, attr, value)
        self._check()
        object.__setattr__(self, "_index", {s.name: i for i, s in enumerate(self.steps)})
        where: dict[str, int] = {}
        for i, element in enumerate(self.elements):
            for step in element.steps if isinstance(element, Parallel) else [element]:
                where[step.name] = i
        object.__setattr__(self, "_element_of", where)

    # -- declaration checks -------------------------------------------------------------

    def _check(self) -> None:
        if not SAGA_NAME.match(self.name):
            raise DefinitionError(
                f"saga name {self.name!r} must be lowercase letters, digits and underscores"
            )
        if not (isinstance(self.inputs, type) and issubclass(self.inputs, BaseModel)):
            raise DefinitionError(
                f"saga {self.name!r}: inputs must be a pydantic model class, not {self.inputs!r}"
            )
        if not self.steps:
            raise DefinitionError(f"saga {self.name!r} has no steps; give it at least one")
        fields = set(self.inputs.model_fields)
        seen: list[str] = []
        for element in self.elements:
            if isinstance(element, Parallel):
                if element.name in seen:
                    raise DefinitionError(
                        f"saga {self.name!r} uses the name {element.name!r} twice; names of "
                        "steps and groups must be unique"
                    )
                earlier = list(seen)
                for branch in element.steps:
                    self._check_step(branch, fields, earlier, seen)
                    seen.append(branch.name)
                seen.append(element.name)
            elif isinstance(element, Step):
                self._check_step(element, fields, seen, seen)
                seen.append(element.name)
            else:
                raise DefinitionError(
                    f"saga {self.name!r}: {element!r} is not a Step or a Parallel group"
                )
        self._check_pivots()
        returns = self.returns
        if returns is not None:
            refs = returns if isinstance(returns, Mapping) else {"returns": returns}
            self._check_refs(refs, fields, seen, f"saga {self.name!r}, returns")

    def _check_step(self, step: Step, fields: set[str], earlier: list[str],
                    taken: list[str]) -> None:
        if step.name in taken:
            raise DefinitionError(
                f"saga {self.name!r} declares step {step.name!r} twice; names must be unique"
            )
        where = f"saga {self.name!r}, step {step.name!r}"
        self._check_refs(step.args, fields, earlier, where)
        step.action.check_arguments(set(step.args), where)
        child = getattr(step, "child", None)
        if child is not None:
            if not isinstance(child, Saga):
                raise DefinitionError(f"{where}: runs {child!r}, which is not a Saga")
            wanted = {n for n, f in child.inputs.model_fields.items() if f.is_required()}
            missing = sorted(wanted - set(step.args))
            if missing:
                raise DefinitionError(
                    f"{where}: its child saga {child.name!r} needs the inputs "
                    f"{', '.join(map(repr, missing))}; add them to the step's inputs"
                )
        if step.compensation is not None:
            self._check_refs(step.undo_args, fields, [*earlier, step.name], where)
            step.compensation.check_arguments(set(step.undo_args), f"{where} (compensation)")
        fallback = step.fallback
        if fallback is not None:
            self._check_refs(fallback.args, fields, earlier, f"{where} (fallback)")
            fallback.action.check_arguments(set(fallback.args), f"{where} (fallback)")
            if fallback.compensation is not None:
                undo = fallback.undo_args(step.name)
                self._check_refs(undo, fields, [*earlier, step.name], where)
                fallback.compensation.check_arguments(
                    set(undo), f"{where} (fallback's compensation)")

    def _check_pivots(self) -> None:
        pivot = None
        for step in self.steps:
            if pivot is not None:
                policy = self.retry_for(step)
                if policy.attempts < 2 or policy.non_retryable:
                    raise DefinitionError(
                        f"saga {self.name!r}: step {step.name!r} comes after the pivot "
                        f"{pivot!r}, so the saga cannot be rolled back when it fails: it must "
                        "be retried forward. Give it a retry policy with attempts > 1 and no "
                        "non_retryable types (its policy: "
                        f"attempts={policy.attempts}, non_retryable={policy.non_retryable!r})"
                    )
            if step.pivot:
                pivot = step.name

    def _check_refs(
        self, refs: Mapping[str, Ref], fields: set[str], earlier: list[str], where: str
    ) -> None:
        for arg, ref in refs.items():
            if isinstance(ref, FromInput) and ref.name not in fields:
                raise DefinitionError(
                    f"{where}: argument {arg!r} takes input {ref.name!r}, which "
                    f"{self.inputs.__name__} does not declare (it has: {', '.join(sorted(fields))})"
                )
            if isinstance(ref, FromStep) and ref.step not in earlier:
                known = ", ".join(earlier) or "none"
                raise DefinitionError(
                    f"{where}: argument {arg!r} takes the result of {ref.step!r}, which is not "
                    f"an earlier step (earlier steps: {known})"
                )
            if isinstance(ref, FromStep) and ref.path:
                self._check_path(arg, ref, where)

    def _check_path(self, arg: str, ref: FromStep, where: str) -> None:
        """Refuse a path that the step's declared result type cannot have."""
        step = next(s for s in self.steps if s.name == ref.step)
        if getattr(step, "child", None) is not None:
            return  # its result is its child saga's
        tasks = [step.action] + ([step.fallback.action] if step.fallback is not None else [])
        for task in tasks:
            declared = result_type(task)
            problem = None if declared is None else path_problem(declared, ref.path)
            if problem is not None:
                raise DefinitionError(
                    f"{where}: {arg!r} reads {ref}, which what {task.name} returns cannot "
                    f"have: {problem}; fix the path or the function's return type"
                )

    # -- lookups ------------------------------------------------------------------------

    def step(self, name: str) -> Step:
        """The step named ``name``; ``KeyError`` if there is none."""
        index: dict[str, int] = self._index  # type: ignore[attr-defined]
        return self.steps[index[name]]

    def index_of(self, name: str) -> int:
        """The position of step ``name``, from 0."""
        index: dict[str, int] = self._index  # type: ignore[attr-defined]
        return index[name]

    def element_index(self, name: str) -> int:
        """The position, from 0, of the element holding step ``name``."""
        where: dict[str, int] = self._element_of  # type: ignore[attr-defined]
        return where[name]

    def group_of(self, name: str) -> Parallel | None:
        """The group step ``name`` is a branch of, if any."""
        element = self.elements[self.element_index(name)]
        return element if isinstance(element, Parallel) else None

    def is_last(self, name: str) -> bool:
        """Whether step ``name`` is the saga's last element (not a branch of a group)."""
        last = self.elements[-1]
        return isinstance(last, Step) and last.name == name

    def segment(self, start: int) -> list[Step]:
        """The steps that run one after the other from element ``start``.

        They go up to the next group or the end (none when element ``start`` is a group).
        """
        steps: list[Step] = []
        for element in self.elements[start:]:
            if isinstance(element, Parallel):
                break
            steps.append(element)
        return steps

    def pivot(self) -> Step | None:
        """The first pivot step, if any."""
        return next((s for s in self.steps if s.pivot), None)

    def retry_for(self, step: Step) -> RetryPolicy:
        """The retry policy of the step's action."""
        return step.retry or self.retry

    def compensation_retry_for(self, step: Step) -> RetryPolicy:
        """The retry policy of the step's compensation."""
        return step.compensation_retry or self.compensation_retry

    def time_limit_for(self, step: Step) -> timedelta:
        """The time limit of one attempt of the step's action."""
        return step.time_limit or self.step_time_limit

    # -- running ------------------------------------------------------------------------

    def validate_inputs(self, inputs: BaseModel | Mapping[str, Any]) -> dict[str, Any]:
        """Validate inputs with the saga's model; return them in JSON form.

        Raises:
            InvalidInputError: naming each field and its problem.
        """
        return validate_inputs(self.name, self.inputs, inputs)

    def results_for_return(self) -> list[str]:
        """Steps whose results the saga's return value needs."""
        if self.returns is None:
            last = self.elements[-1]
            if isinstance(last, Parallel):
                return last.branch_names()
            return [last.name]
        return steps_referenced(self.returns)

    def build_result(self, inputs: Mapping[str, Any], results: Mapping[str, Any]) -> Any:
        """The saga's return value, from its inputs and recorded step results."""
        if self.returns is None:
            last = self.elements[-1]
            if isinstance(last, Parallel):
                return {name: results[name] for name in last.branch_names()}
            return results[last.name]
        if isinstance(self.returns, Mapping):
            return resolve_all(self.returns, inputs, results)
        return self.returns.resolve(inputs, results)

    def rollback_table(self) -> list[list[str | bool]]:
        """Per step, in forward order, what planning a rollback needs (``_prelude.lua``).

        Each row is ``[name, has a compensation, group ('' if none), fallback ('' none,
        'undo' with a compensation, 'keep' without), pivot]``.
        """
        rows: list[list[str | bool]] = []
        for step in self.steps:
            group = self.group_of(step.name)
            fallback = ""
            if step.fallback is not None:
                fallback = "undo" if step.fallback.compensation is not None else "keep"
            rows.append([step.name, step.compensation is not None,
                         group.name if group else "", fallback, step.pivot])
        return rows

def validate_inputs(saga: str, model: type[BaseModel], inputs: BaseModel | Mapping[str, Any]
                    ) -> dict[str, Any]:
    """Validate the inputs of saga ``saga`` with ``model``; return them in JSON form.

    Inputs are a mapping of field names to values (a JSON object) or an instance of the
    model; anything else (a string, a list of pairs) is refused, not guessed at.

    Raises:
        InvalidInputError: naming each field and its problem.
    """
    if not isinstance(inputs, BaseModel | Mapping):
        raise InvalidInputError(saga, [{"field": "(inputs)", "problem": (
            f"must be a JSON object (a mapping of field names to values) or an instance "
            f"of {model.__name__}, not {type(inputs).__name__}")}])
    try:
        data = inputs.model_dump() if isinstance(inputs, BaseModel) else dict(inputs)
        valid = model.model_validate(data)
        dumped: dict[str, Any] = valid.model_dump(mode="json")
        json.dumps(dumped)  # what the store will write: a huge int, say, is refused here
    except ValidationError as error:
        raise InvalidInputError(
            saga,
            [
                {"field": ".".join(str(p) for p in e["loc"]) or "(inputs)", "problem": e["msg"]}
                for e in error.errors()
            ],
        ) from None
    except RecursionError:
        raise InvalidInputError(saga, [{"field": "(inputs)", "problem": (
            "is nested too deeply to validate or record; flatten it")}]) from None
    except (TypeError, ValueError) as error:
        # Keys that are not strings, or values JSON cannot encode (pydantic's
        # serialization error is a ValueError).
        raise InvalidInputError(
            saga, [{"field": "(inputs)", "problem": f"cannot be recorded as JSON: {error}"}]
        ) from None
    return dumped
