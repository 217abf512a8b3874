"""The events family: the canonical event, its taxonomy, the bus and the outbox.

- ``canonical.py``: :class:`Event`, the one shape every event has.
- ``taxonomy.py`` and ``lint.py``: the registered names with their payload schemas, and
  the lint that checks code and emitted events against them.
- ``bus.py``: one Redis stream for every domain; subscribers are Celery tasks.
- ``lifecycle.py`` and ``outbox.py``: events derived from a saga's transition log, and the
  relay that publishes them off the critical path.
- ``trace.py``: a business flow's events as a tree of causes.

The name convention itself is vocabulary (:mod:`sagaline.naming`), re-exported here.
"""

from sagaline.events.bus import EventBus, Subscription, subscriber
from sagaline.events.canonical import Event
from sagaline.events.outbox import Outbox
from sagaline.events.taxonomy import EventType, Taxonomy
from sagaline.ids import derived_id
from sagaline.naming import event_name, name_problems

__all__ = ["Event", "EventBus", "EventType", "Outbox", "Subscription", "Taxonomy",
           "derived_id", "event_name", "name_problems", "subscriber"]
