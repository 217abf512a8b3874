"""The domains a saga touches, in the direction it goes through them.

Sagas cross domain boundaries on purpose; the interaction matrix says which and why. A saga
declares its row: ``Domains("gate", "block", "link", reason=...)`` reads "from gate to block
to link". ``sagaline sagas NAME`` shows it, and the events lint refuses a step whose task
emits an event of a domain the saga does not declare.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from sagaline.errors import DefinitionError

DOMAIN_NAME = re.compile(r"^[a-z][a-z0-9_]{0,62}$")

#: The engine's own domain: lifecycle events belong to every saga.
ENGINE_DOMAIN = "saga"


@dataclass(frozen=True)
class Domains:
    """The domains a saga touches, in order: each hands on to the next."""

    path: tuple[str, ...]
    """The domains, in the direction the saga goes through them."""
    reason: str = ""
    """Why the saga crosses them (the interaction matrix's reason column)."""

    def __init__(self, *path: str, reason: str = "") -> None:
        """Declare the path; raise :class:`DefinitionError` on an empty or odd one."""
        if not path:
            raise DefinitionError("Domains needs at least one domain, e.g. Domains('gate')")
        for name in path:
            if not isinstance(name, str) or not DOMAIN_NAME.match(name):
                raise DefinitionError(
                    f"domain {name!r} must be lowercase letters, digits and underscores"
                )
        if len(set(path)) != len(path):
            raise DefinitionError(f"Domains{path!r} names a domain twice; name each once")
        object.__setattr__(self, "path", tuple(path))
        object.__setattr__(self, "reason", reason)

    def allows(self, domain: str) -> bool:
        """Whether an event of ``domain`` may come from this saga (its own or the engine's)."""
        return domain == ENGINE_DOMAIN or domain in self.path

    def __str__(self) -> str:
        """The path as the interaction matrix writes it: ``gate → block → link``."""
        return " → ".join(self.path)

    def describe(self) -> dict[str, object]:
        """The declaration as JSON: ``{"path": [...], "direction": "a → b", "reason": ...}``."""
        return {"path": list(self.path), "direction": str(self), "reason": self.reason}
