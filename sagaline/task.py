"""Participants' work declared as saga tasks: plain functions the engine runs as Celery tasks."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ParamSpec, TypeVar

from sagaline.errors import DefinitionError

P = ParamSpec("P")
R = TypeVar("R")


@dataclass(frozen=True, eq=False)
class SagaTask:
    """A participant's action or compensation, before it is bound to a Celery app.

    The engine registers it on its Celery app under ``name`` (so it shows in Flower and the
    logs as, say, ``inventory.reserve_inventory``). Calling the object calls the function
    directly, which is how unit tests use it.
    """

    name: str
    """The Celery task name, ``domain.verb_noun``."""
    fn: Callable[..., Any]
    """The function: ``fn(ctx: StepContext, **arguments) -> JSON-serializable result``."""
    queue: str | None = None
    """The queue its messages go to, unless a step says otherwise."""
    parameters: tuple[str, ...] = field(default=(), repr=False)
    """Names of the keyword parameters after the context."""
    required: frozenset[str] = field(default=frozenset(), repr=False)
    """Parameters without a default."""
    accepts_any: bool = field(default=False, repr=False)
    """Whether the function takes ``**kwargs``."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Call the function itself, outside any saga."""
        return self.fn(*args, **kwargs)

    @property
    def short_name(self) -> str:
        """The name without its domain: ``release_inventory``."""
        return self.name.rsplit(".", 1)[-1]

    def check_arguments(self, given: set[str], where: str) -> None:
        """Refuse arguments the function does not take, and required ones not given."""
        unknown = sorted(given - set(self.parameters)) if not self.accepts_any else []
        if unknown:
            raise DefinitionError(
                f"{where}: {self.name} takes no argument {', '.join(map(repr, unknown))}; "
                f"it takes {', '.join(self.parameters) or 'only the context'}"
            )
        missing = sorted(self.required - given)
        if missing:
            raise DefinitionError(
                f"{where}: {self.name} needs {', '.join(map(repr, missing))}; add "
                f"{'them' if len(missing) > 1 else 'it'} to the step's arguments"
            )


def saga_task(name: str, *, queue: str | None = None) -> Callable[[Callable[..., R]], SagaTask]:
    """Declare a function as a saga task named ``name`` (``domain.verb_noun``).

    The function takes a :class:`~sagaline.StepContext` first, then keyword arguments that
    a step maps from the saga's inputs and earlier results, and returns a JSON-serializable
    value (pydantic models, decimals and datetimes are converted). Arguments are checked
    against the function's annotations when it runs.

    Example:
        >>> @saga_task("inventory.reserve_inventory")
        ... def reserve_inventory(ctx, order_id: str, items: list[dict]) -> dict: ...
    """
    if not name or "." not in name or any(not part.isidentifier() for part in name.split(".")):
        raise DefinitionError(
            f"saga task name {name!r} must be dotted identifiers, like 'orders.create_order'"
        )

    def declare(fn: Callable[..., R]) -> SagaTask:
        params = list(inspect.signature(fn).parameters.values())
        if not params or params[0].kind not in (
            inspect.Parameter.POSITIONAL_ONLY,
            inspect.Parameter.POSITIONAL_OR_KEYWORD,
        ):
            raise DefinitionError(
                f"saga task {name}: {fn.__qualname__} must take the step context as its "
                "first positional parameter, as in def fn(ctx, ...)"
            )
        rest = params[1:]
        named = [p for p in rest if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)]
        return SagaTask(
            name=name,
            fn=fn,
            queue=queue,
            parameters=tuple(p.name for p in named),
            required=frozenset(p.name for p in named if p.default is inspect.Parameter.empty),
            accepts_any=any(p.kind is p.VAR_KEYWORD for p in rest),
        )

    return declare
