"""The participants: each domain's tables, and its actions and compensations as saga tasks."""

from .audit import record_event

SUBSCRIBERS = [record_event]
"""The event bus's subscribers in this app."""

__all__ = ["SUBSCRIBERS"]
