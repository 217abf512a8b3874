"""What a task's declared result type says about the paths a saga reads from its result.

A saga reads an earlier step's result by path (``FromStep("create_order", "order_id")``).
When the step's function declares its return type as a pydantic model, a ``TypedDict`` or a
dataclass, a path that the type cannot have is a mistake found when the saga is declared,
not after the step has done its work. Only what the type says for certain is judged: a
``dict``, ``Any`` or an undeclared result can hold any path.
"""

from __future__ import annotations

import dataclasses
import types
from collections.abc import Mapping, Sequence
from typing import Any, Union, get_args, get_origin, get_type_hints, is_typeddict

from pydantic import BaseModel

from sagaline.task import SagaTask

_SCALARS = (str, int, float, bool, bytes, type(None))


def result_type(task: SagaTask) -> Any:
    """The return type the task's function declares, or ``None`` when it declares none.

    An annotation that cannot be resolved (a name only known at runtime) counts as none.
    """
    try:
        hints = get_type_hints(task.fn)
    except Exception:  # an unresolvable forward reference: nothing can be judged
        return None
    return hints.get("return")


def path_problem(declared: Any, path: Sequence[str | int]) -> str | None:
    """What is wrong with reading ``path`` from a value of type ``declared``; ``None``: nothing.

    Example:
        >>> path_problem(Order, ("order_id",)) is None
        True
    """
    current = declared
    root = _name(_without_none(declared))
    walked: list[str | int] = []
    for part in path:
        current = _without_none(current)
        fields = _fields_of(current)
        where = root + "".join(f"[{p!r}]" for p in walked)
        if isinstance(part, str):
            if fields is not None:
                if part not in fields:
                    return f"{where} has no field {part!r} (it has {', '.join(fields) or 'none'})"
                current = fields[part]
            elif current in _SCALARS or _is_sequence(current):
                return f"{where}, a {_name(current)}, which has no field {part!r}"
            else:
                return None
        else:
            if _is_sequence(current):
                args = get_args(current)
                current = args[0] if args else Any
            elif fields is not None or current in _SCALARS:
                return f"{where} is not a list, so it has no item {part!r}"
            else:
                return None
        walked.append(part)
    return None


def _fields_of(kind: Any) -> dict[str, Any] | None:
    """The fields of a model, a ``TypedDict`` or a dataclass, with their types."""
    if isinstance(kind, type) and issubclass(kind, BaseModel):
        return {name: field.annotation for name, field in kind.model_fields.items()}
    if is_typeddict(kind) or (isinstance(kind, type) and dataclasses.is_dataclass(kind)):
        try:
            return dict(get_type_hints(kind))
        except Exception:  # an unresolvable forward reference: nothing can be judged
            return None
    return None


def _without_none(kind: Any) -> Any:
    """``X`` for ``X | None``; anything else as it is."""
    if get_origin(kind) in (Union, types.UnionType):
        others = [a for a in get_args(kind) if a is not type(None)]
        if len(others) == 1:
            return others[0]
    return kind


def _is_sequence(kind: Any) -> bool:
    origin = get_origin(kind) or kind
    if not isinstance(origin, type) or origin in (str, bytes):
        return False
    return issubclass(origin, Sequence) and not issubclass(origin, Mapping)


def _name(kind: Any) -> str:
    return getattr(kind, "__name__", None) or str(kind).replace("typing.", "")

