"""Where a step's arguments come from: the saga's inputs, an earlier step's result, a value."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class FromInput:
    """The saga input ``name``, or a path inside it (``FromInput("items", 0, "sku")``)."""

    name: str
    path: tuple[str | int, ...] = ()

    def __init__(self, name: str, *path: str | int) -> None:
        """Refer to the input field ``name`` and, optionally, a path inside its value."""
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "path", path)

    def resolve(self, inputs: Mapping[str, Any], results: Mapping[str, Any]) -> Any:
        """Return the referenced value from the recorded inputs."""
        return _walk(inputs[self.name], self.path, f"input {self.name!r}")

    def __str__(self) -> str:
        """Render as it is written in a definition."""
        return _render("FromInput", self.name, self.path)


@dataclass(frozen=True)
class FromStep:
    """The result of the earlier step ``step``, or a path inside it.

    ``FromStep("create_order", "order_id")`` is ``result["order_id"]`` of ``create_order``.
    """

    step: str
    path: tuple[str | int, ...] = ()

    def __init__(self, step: str, *path: str | int) -> None:
        """Refer to the result of ``step`` and, optionally, a path inside it."""
        object.__setattr__(self, "step", step)
        object.__setattr__(self, "path", path)

    def resolve(self, inputs: Mapping[str, Any], results: Mapping[str, Any]) -> Any:
        """Return the referenced value from the recorded results."""
        return _walk(results[self.step], self.path, f"result of step {self.step!r}")

    def __str__(self) -> str:
        """Render as it is written in a definition."""
        return _render("FromStep", self.step, self.path)


@dataclass(frozen=True)
class Const:
    """A fixed value, the same for every run (it must be JSON-serializable)."""

    value: Any

    def resolve(self, inputs: Mapping[str, Any], results: Mapping[str, Any]) -> Any:
        """Return the value."""
        return self.value

    def __str__(self) -> str:
        """Render as it is written in a definition."""
        return f"Const({self.value!r})"


Ref = FromInput | FromStep | Const
"""Any argument reference."""


def resolve_all(
    refs: Mapping[str, Ref], inputs: Mapping[str, Any], results: Mapping[str, Any]
) -> dict[str, Any]:
    """Resolve every reference of a mapping into its value."""
    return {name: ref.resolve(inputs, results) for name, ref in refs.items()}


def steps_referenced(refs: Mapping[str, Ref] | Ref | None) -> list[str]:
    """The names of the steps whose results the references need, in first-use order."""
    if refs is None:
        return []
    values = [refs] if isinstance(refs, FromInput | FromStep | Const) else list(refs.values())
    names: list[str] = []
    for ref in values:
        if isinstance(ref, FromStep) and ref.step not in names:
            names.append(ref.step)
    return names


def _walk(value: Any, path: tuple[str | int, ...], what: str) -> Any:
    for part in path:
        try:
            value = value[part]
        except (KeyError, IndexError, TypeError) as error:
            raise LookupError(f"{what} has no {part!r} along path {path!r}") from error
    return value


def _render(kind: str, head: str, path: tuple[str | int, ...]) -> str:
    parts = ", ".join(repr(p) for p in (head, *path))
    return f"{kind}({parts})"
