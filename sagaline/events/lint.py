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

The domain rule: a saga that declares its domains (``Saga(..., domains=Domains(...))``)
may emit only events of those domains, and of the engine's (``saga``). The lint reads the
body of each of its steps' tasks (action, compensation, fallback and its compensation,
and the tasks of the steps it may add) for ``ctx.emit("name", ...)`` with a literal name,
and, in the emitted events, takes the saga an event came from from its ``meta.saga``.
"""

from __future__ import annotations

import ast
import inspect
import json
import textwrap
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sagaline.domains import Domains
from sagaline.errors import TaxonomyError
from sagaline.events.taxonomy import Taxonomy
from sagaline.naming import name_problems
from sagaline.saga import Saga
from sagaline.step import Step
from sagaline.task import SagaTask

#: Calls whose first argument (or ``name=``) is an event name.
NAME_CALLS = frozenset({"event_name", "emit", "new", "on_event", "subscriber", "emit_event"})
#: Keywords whose value is an event name, or a tuple or list of them.
NAME_KEYWORDS = frozenset({"emits", "fails_with", "starts_with", "completes_on", "on"})
#: Calls by which a step's task emits an event (the domain rule reads only these).
EMIT_CALLS = frozenset({"emit", "emit_event"})


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


def _callee(call: ast.Call) -> str:
    func = call.func
    return func.attr if isinstance(func, ast.Attribute) else str(getattr(func, "id", ""))


def _names_of_call(call: ast.Call, path: str) -> Iterator[NameUse]:
    func = call.func
    callee = _callee(call)
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


def lint_emitted(taxonomy: Taxonomy, emitted: Path, sagas: Iterable[Saga] = ()
                 ) -> list[Problem]:
    """Problems of the events in a JSON-lines file.

    An event is wrong when it is unregistered, its payload is off its schema, or the saga
    it came from (its ``meta.saga``, one of ``sagas``) declares domains that do not allow
    the event's domain.
    """
    problems = []
    try:
        lines = emitted.read_text(encoding="utf-8").splitlines()
    except OSError as error:
        return [Problem(str(emitted), 0, f"cannot read the emitted events: {error}")]
    declared = {saga.name: saga.domains for saga in sagas if saga.domains is not None}
    reported: set[tuple[str, str]] = set()
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            event = json.loads(line)
            name, payload = event["name"], event.get("payload", {})
            meta = event.get("meta") or {}
        except (ValueError, KeyError, TypeError, AttributeError):
            problems.append(Problem(str(emitted), number, "not an event as JSON"))
            continue
        messages = taxonomy.check(str(name), payload)
        if isinstance(meta, Mapping):
            messages += _emitted_domain_problems(taxonomy, str(name), meta, declared)
        for message in messages:
            if (name, message) not in reported:  # the same problem once, at its first line
                reported.add((name, message))
                problems.append(Problem(str(emitted), number, f"emitted event: {message}"))
    return problems


def _emitted_domain_problems(taxonomy: Taxonomy, name: str, meta: Mapping[str, Any],
                             declared: Mapping[str, Domains]) -> list[str]:
    saga = str(meta.get("saga", ""))
    domains = declared.get(saga)
    domain = domain_of(taxonomy, name)
    if domains is None or domains.allows(domain):
        return []
    step = f", step {meta['step']!r}" if meta.get("step") else ""
    return [f"{name} (domain {domain!r}) came from saga {saga!r}{step}, which declares "
            f"only {domains}; {_fix(domain)}"]


# -- the domain rule ---------------------------------------------------------------------


@dataclass(frozen=True)
class TaskUse:
    """A saga task as one of a step's operations."""

    step: str
    """The step's name."""
    role: str
    """What the task does for the step: ``action``, ``compensation``, ``fallback``..."""
    task: SagaTask
    """The task."""


def tasks_of(step: Step) -> Iterator[TaskUse]:
    """Every task ``step`` may run, with its role, the fallback's and added steps' included."""
    fallback = step.fallback
    for role, task in (("action", step.action), ("compensation", step.compensation),
                       ("fallback", fallback.action if fallback else None),
                       ("fallback compensation", fallback.compensation if fallback else None),
                       *(("added step", added) for added in step.adds)):
        if task is not None:
            yield TaskUse(step.name, role, task)


def names_emitted_by(fn: Callable[..., Any]) -> list[NameUse]:
    """The event names ``fn``'s body emits by a literal (``ctx.emit("name", ...)``).

    It reads the function's source; a function without one (a builtin, a callable object)
    emits nothing the lint can see, and neither does a helper it calls.
    """
    fn = inspect.unwrap(fn)
    try:
        lines, start = inspect.getsourcelines(fn)
        path = _shown(Path(inspect.getsourcefile(fn) or inspect.getfile(fn)))
        tree = ast.parse(textwrap.dedent("".join(lines)))
    except (OSError, TypeError, SyntaxError):
        return []
    offset = max(start, 1) - 1
    return [NameUse(use.name, path, use.line + offset)
            for node in ast.walk(tree)
            if isinstance(node, ast.Call) and _callee(node) in EMIT_CALLS
            for use in _names_of_call(node, path)]


def _shown(path: Path) -> str:
    """``path`` relative to the working folder when under it, as the code's paths are."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def domain_of(taxonomy: Taxonomy, name: str) -> str:
    """The domain of event ``name``: the taxonomy's, else the name's first part."""
    registered = taxonomy.types.get(name)
    return registered.domain if registered is not None else name.split(".", 1)[0]


def lint_domains(taxonomy: Taxonomy, sagas: Iterable[Saga]) -> list[Problem]:
    """Steps whose tasks emit an event of a domain their saga does not declare.

    Sagas that declare no domains are not checked; the engine's own domain (``saga``) is
    always allowed.
    """
    problems: list[Problem] = []
    read: dict[SagaTask, list[NameUse]] = {}
    for saga in sagas:
        domains = saga.domains
        if domains is None:
            continue
        for step in saga.steps:
            for use in tasks_of(step):
                if use.task not in read:
                    read[use.task] = names_emitted_by(use.task.fn)
                for emitted in read[use.task]:
                    domain = domain_of(taxonomy, emitted.name)
                    if not domains.allows(domain):
                        problems.append(Problem(emitted.path, emitted.line, (
                            f"saga {saga.name!r}, step {use.step!r} ({use.role} "
                            f"{use.task.name}) emits {emitted.name!r} of domain {domain!r}, "
                            f"which the saga does not declare (domains: {domains}); "
                            + _fix(domain))))
    return problems


def _fix(domain: str) -> str:
    return (f"add {domain!r} to the saga's Domains(...) if it crosses into that domain, "
            "or emit an event of a domain it declares")


def lint(taxonomy_path: Path, paths: Sequence[Path], emitted: Path | None = None,
         sagas: Iterable[Saga] = ()) -> list[Problem]:
    """Every problem: the taxonomy file's, the code's, the emitted events' and the domains'.

    The domain rule applies to ``sagas``: their steps' tasks, and the emitted events that
    came from them.
    """
    try:
        taxonomy = Taxonomy.load(taxonomy_path)
    except TaxonomyError as error:
        return [Problem("", 0, str(error))]
    checked = list(sagas)
    problems = lint_code(taxonomy, paths) + lint_domains(taxonomy, checked)
    if emitted is not None:
        problems += lint_emitted(taxonomy, emitted, checked)
    return problems
