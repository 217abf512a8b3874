"""The saga registry: every declared saga, discoverable by name."""

from __future__ import annotations

from collections.abc import Iterator

from .errors import DefinitionError, UnknownSagaError
from .saga import Saga


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
            known = ", ".join(sorted(self._sagas)) or "none"
            raise UnknownSagaError(f"no saga named {name!r} (registered: {known})") from None

    def __contains__(self, name: object) -> bool:
        """Whether a saga of that name is registered."""
        return name in self._sagas

    def __iter__(self) -> Iterator[Saga]:
        """The sagas, by name."""
        return iter(sorted(self._sagas.values(), key=lambda s: s.name))

    def __len__(self) -> int:
        """How many sagas are registered."""
        return len(self._sagas)
