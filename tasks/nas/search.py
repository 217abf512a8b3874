"""The architectures a run tries: a search space, and a seeded choice of its points.

An architecture is a stack of equal hidden layers: ``{"layers": 2, "units": 64}`` is two
hidden layers of 64 units each.
"""

from __future__ import annotations

import random
from itertools import product
from typing import Annotated, TypedDict

from pydantic import BaseModel, ConfigDict, Field, field_validator

MAX_VALUES = 16
"""The most values a search space's list may hold."""

MAX_LAYERS = 32
"""The deepest stack of hidden layers a search space may ask for."""

MAX_UNITS = 4096
"""The widest hidden layer a search space may ask for."""


class Architecture(TypedDict):
    """One point of a search space, as stored in a trial's ``architecture`` column."""

    layers: int
    """The number of hidden layers."""
    units: int
    """The number of units in each hidden layer."""


class SearchSpace(BaseModel):
    """The architectures to choose from: every pairing of a depth with a width.

    Example:
        >>> SearchSpace(layers=[2, 4], units=[64, 256]).size
        4
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    layers: list[Annotated[int, Field(strict=True, gt=0, le=MAX_LAYERS)]] = Field(
        min_length=1, max_length=MAX_VALUES)
    """The depths to try: 1 to 16 distinct numbers of hidden layers, each 1 to 32."""
    units: list[Annotated[int, Field(strict=True, gt=0, le=MAX_UNITS)]] = Field(
        min_length=1, max_length=MAX_VALUES)
    """The widths to try: 1 to 16 distinct numbers of units per layer, each 1 to 4096."""

    @field_validator("layers", "units")
    @classmethod
    def _distinct(cls, values: list[int]) -> list[int]:
        repeated = sorted({value for value in values if values.count(value) > 1})
        if repeated:
            raise ValueError(f"{repeated} appear more than once; list each value once")
        return values

    @property
    def size(self) -> int:
        """The number of architectures in the space."""
        return len(self.layers) * len(self.units)

    def architectures(self) -> list[Architecture]:
        """Every architecture of the space, shallowest first, then narrowest."""
        return [Architecture(layers=layers, units=units)
                for layers, units in product(sorted(self.layers), sorted(self.units))]


def proposals(space: SearchSpace, max_trials: int, seed: int) -> list[Architecture]:
    """Up to ``max_trials`` distinct architectures of ``space``, chosen by ``seed``.

    All of them when ``max_trials`` is at least the space's size. The same space, count and
    seed always give the same list, ordered shallowest first, then narrowest (the list's
    positions are the trials' indexes).

    Raises:
        ValueError: when ``max_trials`` is less than 1.
    """
    if max_trials < 1:
        raise ValueError(f"max_trials is {max_trials}; a run needs at least 1 trial")
    every = space.architectures()
    if max_trials >= len(every):
        return every
    chosen = set(random.Random(seed).sample(range(len(every)), max_trials))
    return [architecture for i, architecture in enumerate(every) if i in chosen]
