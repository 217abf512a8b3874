"""Retry policies: how often a step is attempted and how long to wait between attempts."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import timedelta

from sagaline.errors import DefinitionError


@dataclass(frozen=True)
class RetryPolicy:
    """How a failing action or compensation is retried.

    The delay before attempt ``n + 1`` is ``initial * multiplier ** (n - 1)``, capped at
    ``maximum``, then spread by ``jitter``: a fraction of the delay drawn at random and
    added or taken away, so that many sagas failing together do not retry in lockstep.

    Example:
        ``RetryPolicy(attempts=5, initial=timedelta(seconds=1), non_retryable=(KeyError,))``
    """

    attempts: int = 3
    """Attempts in all, the first included (1 means: never retry)."""
    initial: timedelta = timedelta(seconds=1)
    """Delay before the second attempt."""
    multiplier: float = 2.0
    """Factor by which each later delay grows."""
    maximum: timedelta = timedelta(minutes=5)
    """Upper bound of any delay, before jitter."""
    jitter: float = 0.1
    """Fraction of each delay, 0 to 1, by which it is spread at random."""
    non_retryable: tuple[type[BaseException], ...] = field(default=())
    """Error types that fail the step at once; so does any error whose class sets
    ``non_retryable = True`` (as :class:`sagaline.NonRetryableError` does)."""

    def __post_init__(self) -> None:
        """Refuse values that make no sense, naming the field."""
        if self.attempts < 1:
            raise DefinitionError(f"RetryPolicy.attempts must be at least 1, not {self.attempts}")
        if self.initial < timedelta(0) or self.maximum < timedelta(0):
            raise DefinitionError("RetryPolicy.initial and .maximum must not be negative")
        if self.multiplier < 1:
            raise DefinitionError(
                f"RetryPolicy.multiplier must be 1 or more, not {self.multiplier}"
            )
        if not 0 <= self.jitter <= 1:
            raise DefinitionError(f"RetryPolicy.jitter must be within 0..1, not {self.jitter}")
        for kind in self.non_retryable:
            if not (isinstance(kind, type) and issubclass(kind, BaseException)):
                raise DefinitionError(
                    f"RetryPolicy.non_retryable holds {kind!r}, which is not an exception type"
                )

    def is_retryable(self, error: BaseException) -> bool:
        """Whether this error may be retried at all (ignoring how many attempts remain)."""
        if getattr(error, "non_retryable", False):
            return False
        return not isinstance(error, self.non_retryable)

    def should_retry(self, error: BaseException, attempt: int) -> bool:
        """Whether attempt number ``attempt`` (1-based), which raised ``error``, is retried."""
        return attempt < self.attempts and self.is_retryable(error)

    def base_delay(self, attempt: int) -> float:
        """Seconds to wait after attempt ``attempt`` failed, before jitter."""
        delay = self.initial.total_seconds() * self.multiplier ** max(0, attempt - 1)
        return min(delay, self.maximum.total_seconds())

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        """Seconds to wait after attempt ``attempt`` failed, jitter applied."""
        base = self.base_delay(attempt)
        spread = base * self.jitter
        draw = (rng or random).uniform(-spread, spread)
        return max(0.0, base + draw)


#: The forward default: three attempts, one second then two.
DEFAULT_RETRY = RetryPolicy()
#: The compensation default: undoing matters more, so it tries harder.
DEFAULT_COMPENSATION_RETRY = RetryPolicy(attempts=5, initial=timedelta(seconds=1))
#: No retry at all.
NO_RETRY = RetryPolicy(attempts=1)
