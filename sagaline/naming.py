"""Event names: ``domain.entity.action``, the action in the past tense.

An event name is ``domain.entity.action`` (or ``domain.action`` when the entity is the
domain itself, as the engine's ``saga.started``, or ``area.domain.entity.action`` when
names are grouped by area, as Thunderline's ``ai.upm.snapshot.activated``): lowercase
words joined by underscores,
the action in the past tense (``ml.run.completed``, never ``ml.run.complete``), because an
event states something that happened. :func:`event_name` declares a name in code; the
lint (``sagaline events lint``) finds every declared or published name and checks it
against the taxonomy file.
"""

from __future__ import annotations

import re

from sagaline.errors import InvalidEventError

#: ``domain.entity.action``, ``domain.action`` or ``area.domain.entity.action``: lowercase
#: words, digits, underscores.
NAME_PATTERN = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*){1,3}$")

#: Past participles that do not end in ``-ed``.
IRREGULAR_PAST = frozenset({
    "begun", "bought", "broken", "built", "chosen", "cut", "done", "drawn", "found",
    "frozen", "given", "held", "hidden", "kept", "known", "left", "lost", "made", "overridden",
    "paid", "put", "quit", "read", "rebuilt", "reset", "run", "sent", "set", "shown", "shut",
    "sold", "spent", "split", "taken", "told", "undone", "withdrawn", "won", "written",
})


def name_problems(name: str) -> list[str]:
    """What is wrong with an event name; empty when it follows the convention."""
    if not isinstance(name, str) or not NAME_PATTERN.match(name):
        return [f"{name!r} is not 'domain.entity.action' (lowercase words joined by '_', "
                "two to four parts separated by '.')"]
    action = name.rsplit(".", 1)[-1]
    word = action.rsplit("_", 1)[-1]
    if not (word.endswith("ed") or word in IRREGULAR_PAST):
        return [f"{name!r}: the action {action!r} is not in the past tense (an event says "
                f"what happened: '{action}d' or '{action}ed', not '{action}')"]
    return []


def event_name(name: str) -> str:
    """Declare an event name in code: checked now, and found by the events lint.

    Raises:
        InvalidEventError: The name breaks the convention.
    """
    problems = name_problems(name)
    if problems:
        raise InvalidEventError("; ".join(problems))
    return name
