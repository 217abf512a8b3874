"""Choreographed sagas: participants react to each other's events, no orchestrator.

- ``saga.py``: :class:`ChoreographySaga`, the declaration, bound to an engine.
- ``reaction.py``: :class:`Reaction`, one participant as declared.
- ``runner.py``: running one reaction (a subscriber task) and its compensation.
- ``flows.py``: the record of one choreographed flow in Redis.
"""

from sagaline.choreography.reaction import Reaction
from sagaline.choreography.saga import ChoreographySaga

__all__ = ["ChoreographySaga", "Reaction"]
