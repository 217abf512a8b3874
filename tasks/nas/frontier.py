"""The Pareto frontier of trained architectures: accuracy against size.

A point dominates another when it is at least as accurate and at most as large, and better
on one of the two. The frontier is the points nothing dominates: for each size on it, no
smaller architecture is as accurate.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Point:
    """A trained architecture, by its trial's id, accuracy (to maximise) and size (to minimise)."""

    id: str
    accuracy: float
    params: int


def dominates(a: Point, b: Point) -> bool:
    """Whether ``a`` is at least as good as ``b`` on both counts and better on one."""
    return (a.accuracy >= b.accuracy and a.params <= b.params
            and (a.accuracy > b.accuracy or a.params < b.params))


def pareto_frontier(points: Sequence[Point]) -> list[Point]:
    """The points no other dominates, smallest first (equal points are all kept).

    Raises:
        ValueError: when an accuracy is not a number (NaN or infinite).
    """
    for point in points:
        if not math.isfinite(point.accuracy):
            raise ValueError(f"point {point.id!r} has accuracy {point.accuracy}; "
                             "give every point a finite accuracy")
    frontier: list[Point] = []
    best: Point | None = None
    # Smallest first, most accurate first among equals: a point is on the frontier when it
    # beats every smaller one, or ties the most accurate one at the same size.
    for point in sorted(points, key=lambda p: (p.params, -p.accuracy, p.id)):
        if best is None or point.accuracy > best.accuracy:
            best = point
            frontier.append(point)
        elif point.accuracy == best.accuracy and point.params == best.params:
            frontier.append(point)
    return frontier


def best(points: Sequence[Point]) -> Point:
    """The most accurate point; of equally accurate ones, the smallest, then the lowest id.

    Raises:
        ValueError: when there are no points.
    """
    if not points:
        raise ValueError("there is no point to choose from: no trial completed")
    return min(points, key=lambda p: (-p.accuracy, p.params, p.id))
