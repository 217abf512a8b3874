"""The taxonomy: every event name a project may publish, its domain, meaning and payload.

One TOML file lists them (``events.toml`` at the project's root)::

    [events."orders.order.created"]
    domain = "orders"
    description = "An order was recorded as pending."
    payload = { type = "object", required = ["order_id"],
                properties = { order_id = { type = "integer" } } }

``payload`` is a JSON Schema (draft 2020-12). Loading checks every entry: the name follows
the convention, the domain is a domain's name, the description is there and the schema is
itself valid. The domain is the one that owns the event, usually the name's first part; an
event named for what it is about rather than for its owner (``user.onboarding.completed``,
owned by ``gate``) says so with its ``domain``.
"""

from __future__ import annotations

import tomllib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError

from sagaline.domains import DOMAIN_NAME
from sagaline.errors import InvalidEventError, TaxonomyError
from sagaline.naming import name_problems


@dataclass(frozen=True)
class EventType:
    """One registered event name."""

    name: str
    """The event's name."""
    domain: str
    """The domain that owns it (usually the name's first part)."""
    description: str
    """What it means, in a sentence."""
    payload: Mapping[str, Any] = field(default_factory=dict)
    """The JSON Schema its payload follows."""
    line: int = 0
    """Where it is declared in the taxonomy file (1-based; 0 when unknown)."""

    def payload_problems(self, payload: Any) -> list[str]:
        """What is wrong with ``payload`` against the schema; empty when it conforms."""
        validator = Draft202012Validator(dict(self.payload))
        return [
            f"{'/'.join(str(p) for p in error.absolute_path) or '(payload)'}: {error.message}"
            for error in sorted(validator.iter_errors(payload), key=lambda e: list(e.path))
        ]


class Taxonomy:
    """The registered event names of a project, read from its taxonomy file."""

    def __init__(self, types: Mapping[str, EventType], path: Path | None = None) -> None:
        """Hold ``types`` (by name), read from ``path``."""
        self.types = dict(types)
        self.path = path

    @classmethod
    def load(cls, path: str | Path) -> Taxonomy:
        """Read and check a taxonomy file.

        Raises:
            TaxonomyError: The file is missing, not TOML, or declares an event wrongly
                (naming the event and the problem).
        """
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
            data = tomllib.loads(text)
        except (OSError, tomllib.TOMLDecodeError) as error:
            raise TaxonomyError(f"cannot read the event taxonomy {path}: {error}") from error
        entries = data.get("events")
        if not isinstance(entries, dict):
            raise TaxonomyError(f"{path}: no [events.\"name\"] tables found")
        lines = _declaration_lines(text)
        types = {}
        for name, entry in entries.items():
            types[name] = _event_type(path, name, entry, lines.get(name, 0))
        return cls(types, path)

    def __contains__(self, name: object) -> bool:
        """Whether ``name`` is registered."""
        return name in self.types

    def __iter__(self) -> Iterator[EventType]:
        """The registered types, by name."""
        return iter(sorted(self.types.values(), key=lambda t: t.name))

    def __len__(self) -> int:
        """How many names are registered."""
        return len(self.types)

    def get(self, name: str) -> EventType:
        """The registered type of ``name``.

        Raises:
            InvalidEventError: ``name`` is not registered (the message names the file).
        """
        try:
            return self.types[name]
        except KeyError:
            where = f" in {self.path}" if self.path else ""
            raise InvalidEventError(
                f"event {name!r} is not registered{where}; add it with its domain, "
                "description and payload schema"
            ) from None

    def check(self, name: str, payload: Any = None) -> list[str]:
        """Problems of an event about to be published: its name, and its payload if given."""
        problems = name_problems(name)
        if problems:
            return problems
        if name not in self.types:
            return [f"{name!r} is not registered in {self.path or 'the taxonomy'}"]
        if payload is None:
            return []
        return [f"{name}: {p}" for p in self.types[name].payload_problems(payload)]


def _event_type(path: Path, name: str, entry: Any, line: int) -> EventType:
    where = f"{path}:{line}" if line else str(path)
    if not isinstance(entry, dict):
        raise TaxonomyError(f"{where}: event {name!r} must be a table")
    problems = name_problems(name)
    if problems:
        raise TaxonomyError(f"{where}: {problems[0]}")
    domain = entry.get("domain", name.split(".", 1)[0])
    if not isinstance(domain, str) or not DOMAIN_NAME.match(domain):
        raise TaxonomyError(
            f"{where}: event {name!r} has domain {domain!r}; a domain is lowercase letters, "
            "digits and underscores (usually the name's first part)"
        )
    description = entry.get("description")
    if not isinstance(description, str) or not description.strip():
        raise TaxonomyError(f"{where}: event {name!r} needs a description")
    payload = entry.get("payload", {"type": "object"})
    try:
        Draft202012Validator.check_schema(payload)
    except SchemaError as error:
        raise TaxonomyError(
            f"{where}: event {name!r} has an invalid payload schema: {error.message}"
        ) from None
    return EventType(name, domain, description.strip(), payload, line)


def _declaration_lines(text: str) -> dict[str, int]:
    """The line of each ``[events."name"]`` header."""
    lines = {}
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if stripped.startswith('[events."') and stripped.endswith('"]'):
            lines[stripped[len('[events."'):-2]] = number
    return lines
