"""The events lint: event names in the code, and events the tests emitted, vs the taxonomy.

It reads the code, it does not run it: a call that names an event with a string literal is
found wherever it is. The calls it knows:

- ``event_name("saga.started")`` (how the engine declares its own names),
- ``ctx.emit("orders.order.created", ...)`` and ``Event.new("...", ...)``,
- ``Event(name="...")``, ``on_event("...")``, and the keywords of a choreography
  (``on=``, ``emits=``, ``fails_with=``, ``starts_with=``, ``completes_on=``),
- ``subscriber("orders.order.created", ...)`` patterns without wildcards.

Each name must follow the convention and be registered. With ``emitted`` (a JSON-lines
file of events, as the test session writes it), each emitted event must be registered and
its payload must match the registered schema. Problems name the file and the line.
"""

from __future__ import annotations

import ast
import json
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from sagaline.errors import TaxonomyError
from sagaline.events.taxonomy import Taxonomy
from sagaline.naming import name_problems

#: Calls whose first argument (or ``name=``) is an event name.
NAME_CALLS = frozenset({"event_name", "emit", "new", "on_event", "subscriber", "emit_event"})
#: Keywords whose value is an event name, or a tuple or list of them.
NAME_KEYWORDS = frozenset({"emits", "fails_with", "starts_with", "completes_on", "on"})


@dataclass(frozen=True)
class Problem:
    """One thing the lint found wrong."""

    path: str
    """The file."""
    line: int
    """The line, from 1."""
    message: str
    """What is wrong and how to fix it."""

    def __str__(self) -> str:
        """``path:line: message``, as compilers print; the message alone without a path."""
        if not self.path:
            return self.message
        return f"{self.path}:{self.line}: {self.message}"


@dataclass(frozen=True)
class NameUse:
    """An event name found in the code."""

    name: str
    """The name."""
    path: str
    """The file it is in."""
    line: int
    """Its line."""


def names_in_code(paths: Iterable[Path]) -> Iterator[NameUse]:
    """Every event name a file under ``paths`` uses in a call the lint knows."""
    for file in _python_files(paths):
        try:
            tree = ast.parse(file.read_text(encoding="utf-8"), filename=str(file))
        except SyntaxError:
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Call):
                yield from _names_of_call(node, str(file))


def _python_files(paths: Iterable[Path]) -> Iterator[Path]:
    for path in paths:
        if path.is_file() and path.suffix == ".py":
            yield path
        elif path.is_dir():
            yield from sorted(p for p in path.rglob("*.py") if ".venv" not in p.parts)


def _names_of_call(call: ast.Call, path: str) -> Iterator[NameUse]:
    func = call.func
    callee = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
    if callee in NAME_CALLS and call.args:
        first = call.args[0]
        if isinstance(first, ast.Constant) and isinstance(first.value, str):
            if callee == "subscriber":
                yield from (_use(a, path) for a in call.args if _is_plain_name(a))
            elif callee != "new" or _is_event_class(func):
                yield _use(first, path)
    for keyword in call.keywords:
        value = keyword.value
        if keyword.arg == "name" and callee == "Event" and _is_str(value):
            yield _use(value, path)
        elif keyword.arg in NAME_KEYWORDS:
            items = value.elts if isinstance(value, ast.Tuple | ast.List) else [value]
            yield from (_use(item, path) for item in items if _is_str(item))


def _is_event_class(func: ast.expr) -> bool:
    return isinstance(func, ast.Attribute) and getattr(func.value, "id", "") == "Event"


def _is_str(node: ast.expr) -> bool:
    return isinstance(node, ast.Constant) and isinstance(node.value, str)


def _is_plain_name(node: ast.expr) -> bool:
    return _is_str(node) and not any(c in str(node.value) for c in "*?[")  # type: ignore[attr-defined]


def _use(node: ast.expr, path: str) -> NameUse:
    return NameUse(str(node.value), path, node.lineno)  # type: ignore[attr-defined]


def lint_code(taxonomy: Taxonomy, paths: Sequence[Path]) -> list[Problem]:
    """Problems of the event names used in the code under ``paths``."""
    problems: list[Problem] = []
    for use in names_in_code(paths):
        wrong = name_problems(use.name)
        if wrong:
            problems.extend(Problem(use.path, use.line, w) for w in wrong)
        elif use.name not in taxonomy:
            problems.append(Problem(
                use.path, use.line,
                f"event {use.name!r} is not registered in {taxonomy.path}; add it with its "
                "domain, description and payload schema",
            ))
    return problems


def lint_emitted(taxonomy: Taxonomy, emitted: Path) -> list[Problem]:
    """Problems of the events in a JSON-lines file: unregistered, or payload off schema."""
    problems = []
    try:
        lines = emitted.read_text(encoding="utf-8").splitlines()
    except OSError as error:
        return [Problem(str(emitted), 0, f"cannot read the emitted events: {error}")]
    reported: set[tuple[str, str]] = set()
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            event = json.loads(line)
            name, payload = event["name"], event.get("payload", {})
        except (ValueError, KeyError, TypeError):
            problems.append(Problem(str(emitted), number, "not an event as JSON"))
            continue
        for message in taxonomy.check(str(name), payload):
            if (name, message) not in reported:  # the same problem once, at its first line
                reported.add((name, message))
                problems.append(Problem(str(emitted), number, f"emitted event: {message}"))
    return problems


def lint(taxonomy_path: Path, paths: Sequence[Path], emitted: Path | None = None
         ) -> list[Problem]:
    """Every problem: the taxonomy file's own, the code's, and the emitted events'."""
    try:
        taxonomy = Taxonomy.load(taxonomy_path)
    except TaxonomyError as error:
        return [Problem("", 0, str(error))]
    problems = lint_code(taxonomy, paths)
    if emitted is not None:
        problems += lint_emitted(taxonomy, emitted)
    return problems
