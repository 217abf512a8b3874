"""A parallel group: steps of a saga that run at once, as one element of its steps."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sagaline.errors import DefinitionError
from sagaline.step import STEP_NAME, Step


@dataclass(frozen=True)
class Parallel:
    """Steps that run at once; the saga goes on when every one of them completed.

    Each branch is a :class:`Step` with its own compensation and policies. Later steps can
    use any branch's result (``FromStep("book_hotel")``); a branch cannot use a sibling's.
    When a branch fails for good, the branches that completed (and those still in flight
    that complete after all) are compensated, in parallel, then the steps before the group
    in reverse.

    Example:
        >>> Parallel("book_stay", [Step("book_hotel", book_hotel, compensation=cancel_hotel),
        ...                        Step("rent_car", rent_car, compensation=cancel_car)],
        ...          max_concurrency=2)
    """

    name: str
    """Unique among the saga's steps and groups: lowercase letters, digits, underscores."""
    steps: tuple[Step, ...]
    """The branches, in the order they are started."""
    max_concurrency: int | None = None
    """How many branches may run at once; ``None``: all of them."""

    def __init__(self, name: str, steps: Sequence[Step], *,
                 max_concurrency: int | None = None) -> None:
        """Declare a group and check it on its own; the saga checks it against the rest."""
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "steps", tuple(steps))
        object.__setattr__(self, "max_concurrency", max_concurrency)
        if not STEP_NAME.match(name):
            raise DefinitionError(
                f"group name {name!r} must be lowercase letters, digits and underscores, "
                "starting with a letter"
            )
        if len(self.steps) < 2:
            raise DefinitionError(
                f"group {name!r} needs at least two steps; a single step needs no group"
            )
        for step in self.steps:
            if not isinstance(step, Step):
                raise DefinitionError(f"group {name!r}: {step!r} is not a Step")
            if step.pivot:
                raise DefinitionError(
                    f"group {name!r}: step {step.name!r} is a pivot; a pivot must be a step "
                    "of its own, outside any group"
                )
            if getattr(step, "child", None) is not None:
                raise DefinitionError(
                    f"group {name!r}: step {step.name!r} runs a child saga, which a branch "
                    "of a group cannot do yet; run it as a step before or after the group"
                )
            if step.adds:
                raise DefinitionError(
                    f"group {name!r}: step {step.name!r} adds steps, which a branch of a "
                    "group cannot do; make it a step of its own"
                )
            if step.fallback is not None:
                raise DefinitionError(
                    f"group {name!r}: step {step.name!r} has a fallback, which a branch of a "
                    "group cannot have yet; make the fallback a step after the group"
                )
        if max_concurrency is not None and max_concurrency < 1:
            raise DefinitionError(
                f"group {name!r}: max_concurrency must be at least 1, not {max_concurrency}"
            )

    @property
    def limit(self) -> int:
        """How many branches may run at once (0: no bound)."""
        return self.max_concurrency or 0

    def branch_names(self) -> list[str]:
        """The branches' names, in order."""
        return [s.name for s in self.steps]
