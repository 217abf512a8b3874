"""A saga's definition as a diagram: nodes and edges, printed as Mermaid or drawn as SVG.

:func:`diagram` reads a :class:`~sagaline.Saga` (never a run, never Redis) and lays it out
on a grid, knowing nothing of any domain:

- the forward path top-down, one row per element: a step, or a parallel group whose
  branches stand side by side in one row (a box notes ``max_concurrency``);
- a step's fallback beside it (a dashed edge: taken when the action gives up), and the
  steps after it reached from the step or from its fallback;
- a pivot marked as such (no rollback past it: a later step that gives up ends the saga
  ``needs_attention``), a step that runs a child saga marked with the child's name and
  steps, a step that may add steps at run time with the tasks it may add;
- each compensation in a column of its own, level with the step it undoes, linked to it,
  and the rollback as reverse edges from the last undo to the first, up to the end
  ``compensated``. Steps after a pivot are never rolled back, so their undos are left out.

:func:`to_mermaid` prints it as a ``flowchart TD`` (what ``sagaline graph NAME`` prints);
:meth:`Diagram.as_dict` gives the JSON the dashboard draws as SVG itself.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from sagaline.parallel import Parallel
from sagaline.saga import Saga
from sagaline.step import Step


@dataclass(frozen=True)
class Node:
    """A box of the diagram, at a cell of its grid."""

    id: str
    """Unique in the diagram, safe as a Mermaid id (``step_create_order``)."""
    kind: str
    """``start``, ``end``, ``step``, ``pivot``, ``subsaga``, ``fallback`` or
    ``compensation``."""
    label: str
    """Its title: the step's name, an end's status."""
    lines: tuple[str, ...] = ()
    """Further lines under the title: the task, what it runs or may add."""
    row: int = 0
    """Its row, from the top (0: the start)."""
    col: int = 0
    """Its column, from the left (the forward path stands in the first columns)."""
    step: str | None = None
    """The step it belongs to (its action, fallback or compensation), if any."""
    group: str | None = None
    """The parallel group it is a branch of, if any."""
    child: str | None = None
    """The name of the child saga it runs, for a step that runs one."""


@dataclass(frozen=True)
class Edge:
    """An arrow between two nodes."""

    source: str
    """The node it leaves."""
    target: str
    """The node it reaches."""
    kind: str
    """``next`` (the forward path), ``fallback`` (the action gave up), ``compensation``
    (a step to its undo), ``undo`` (the rollback, last first) or ``attention``."""
    label: str = ""
    """Words on the arrow, if any."""


@dataclass(frozen=True)
class GroupBox:
    """A parallel group: a box around its branches."""

    name: str
    """The group's name."""
    label: str
    """Its title, with its bound: ``book_stay: in parallel, at most 2 at a time``."""
    nodes: tuple[str, ...]
    """Its branches' node ids, in the order they are started."""
    max_concurrency: int | None = None
    """How many branches may run at once; ``None``: all."""


@dataclass(frozen=True)
class Diagram:
    """A saga's definition laid out on a grid: what :func:`to_mermaid` and the dashboard draw.

    Example:
        >>> graph = diagram(order_processing)
        >>> [n.id for n in graph.nodes if n.kind == "fallback"]
        ['fallback_process_payment']
    """

    saga: str
    """The saga's name."""
    nodes: tuple[Node, ...]
    """Every node, the forward path first."""
    edges: tuple[Edge, ...]
    """Every edge."""
    groups: tuple[GroupBox, ...] = ()
    """The parallel groups, in order."""

    @property
    def rows(self) -> int:
        """How many rows the grid has."""
        return 1 + max(n.row for n in self.nodes)

    @property
    def cols(self) -> int:
        """How many columns the grid has."""
        return 1 + max(n.col for n in self.nodes)

    def node(self, node_id: str) -> Node:
        """The node ``node_id``.

        Raises:
            KeyError: The diagram has no such node.
        """
        for node in self.nodes:
            if node.id == node_id:
                return node
        raise KeyError(node_id)

    def as_dict(self) -> dict[str, Any]:
        """The diagram as JSON-ready data (what ``sagaline graph NAME --json`` prints)."""
        return {"saga": self.saga, "rows": self.rows, "cols": self.cols,
                "nodes": [_plain(n) for n in self.nodes],
                "edges": [_plain(e) for e in self.edges],
                "groups": [_plain(g) for g in self.groups]}


def diagram(saga: Saga) -> Diagram:
    """Lay ``saga``'s definition out as a :class:`Diagram` (see the module's docstring)."""
    return _Layout(saga).build()


def to_mermaid(saga: Saga | Diagram) -> str:
    """``saga``'s diagram as Mermaid text: a ``flowchart TD``, every label quoted and escaped.

    Example:
        >>> print(to_mermaid(order_processing))  # doctest: +SKIP
        flowchart TD
            saga_start(["order_processing<br/>Create an order, ..."])
            ...
    """
    graph = saga if isinstance(saga, Diagram) else diagram(saga)
    grouped = {node_id: box for box in graph.groups for node_id in box.nodes}
    lines = ["flowchart TD", f"    %% saga {graph.saga}"]
    opened: set[str] = set()
    for node in graph.nodes:
        box = grouped.get(node.id)
        if box is not None and box.name not in opened:
            opened.add(box.name)
            lines.append(f'    subgraph group_{box.name} ["{mermaid_text(box.label)}"]')
            lines.append("        direction LR")
            lines += [f"        {_mermaid_node(graph.node(i))}" for i in box.nodes]
            lines.append("    end")
        elif box is None:
            lines.append(f"    {_mermaid_node(node)}")
    lines += [f"    {_mermaid_edge(edge)}" for edge in graph.edges]
    for kind, (name, style) in _MERMAID_CLASSES.items():
        members = [n.id for n in graph.nodes if n.kind == kind]
        if members:
            lines.append(f"    classDef {name} {style}")
            lines.append(f"    class {','.join(members)} {name}")
    return "\n".join(lines) + "\n"


def mermaid_text(text: str) -> str:
    """``text`` made safe inside a quoted Mermaid label.

    ``" # & < >`` and backticks become Mermaid's entities; lines are joined by ``<br/>``.

    Example:
        >>> mermaid_text('say "hi"')
        'say #quot;hi#quot;'
    """
    lines = []
    for line in text.split("\n"):
        for raw, entity in _MERMAID_ENTITIES:
            line = line.replace(raw, entity)
        lines.append(line)
    return "<br/>".join(lines)


# -- laying out ---------------------------------------------------------------------------

_MERMAID_ENTITIES = (("#", "#35;"), ('"', "#quot;"), ("&", "#amp;"), ("<", "#lt;"),
                     (">", "#gt;"), ("`", "#96;"))
_MERMAID_SHAPES = {"start": ('(["', '"])'), "end": ('(["', '"])'), "pivot": ('{{"', '"}}'),
                   "subsaga": ('[["', '"]]'), "fallback": ('("', '")'),
                   "compensation": ('("', '")')}
_MERMAID_ARROWS = {"next": "-->", "fallback": "-.->", "compensation": "-.->",
                   "undo": "==>", "attention": "-.->"}
#: Per node kind, its Mermaid class (never ``end``, a keyword of Mermaid's) and style.
_MERMAID_CLASSES = {
    "start": ("sagaStart", "fill:#e0f2fe,stroke:#0369a1"),
    "end": ("sagaEnd", "fill:#f1f5f9,stroke:#475569"),
    "pivot": ("pivotStep", "fill:#fef3c7,stroke:#b45309,stroke-width:2px"),
    "subsaga": ("childSaga", "fill:#ede9fe,stroke:#6d28d9"),
    "fallback": ("fallbackStep", "fill:#ffedd5,stroke:#c2410c,stroke-dasharray:4 3"),
    "compensation": ("undoStep", "fill:#fee2e2,stroke:#b91c1c"),
}


@dataclass
class _Layout:
    """Places a saga's nodes on the grid, row by row, and links them."""

    saga: Saga
    nodes: list[Node] = field(default_factory=list)
    edges: list[Edge] = field(default_factory=list)
    groups: list[GroupBox] = field(default_factory=list)

    def build(self) -> Diagram:
        saga = self.saga
        elements = saga.elements
        width = max([len(e.steps) for e in elements if isinstance(e, Parallel)] + [1])
        has_fallback = any(s.fallback is not None for s in saga.steps)
        undo_col = width + (1 if has_fallback else 0)
        last_row = len(elements) + 1
        lines = (saga.description,) if saga.description else ()
        start = self._add(Node("saga_start", "start", saga.name, lines, 0, 0))
        previous = [start.id]
        for row, element in enumerate(elements, start=1):
            previous = self._element(element, row, previous, fallback_col=width)
        done = self._add(Node("saga_completed", "end", "completed", (), last_row, 0))
        self._link(previous, [done.id], "next")
        self._rollback(undo_col)
        pivot = saga.pivot()
        if pivot is not None:
            attention = self._add(Node("saga_needs_attention", "end", "needs_attention", (),
                                       last_row, undo_col))
            self.edges.append(Edge(f"step_{pivot.name}", attention.id, "attention",
                                   "a later step gives up"))
        return Diagram(saga.name, tuple(self.nodes), tuple(self.edges), tuple(self.groups))

    def _element(self, element: Step | Parallel, row: int, previous: list[str], *,
                 fallback_col: int) -> list[str]:
        """Place one element in ``row`` after ``previous``; the nodes the next one follows."""
        group = element.name if isinstance(element, Parallel) else None
        members = element.steps if isinstance(element, Parallel) else (element,)
        ids = [self._add(_step_node(step, row, lane, group)).id
               for lane, step in enumerate(members)]
        self._link(previous, ids, "next")
        if isinstance(element, Parallel):
            bound = (f"at most {element.max_concurrency} at a time"
                     if element.max_concurrency else "all at once")
            self.groups.append(GroupBox(element.name, f"{element.name}: in parallel, {bound}",
                                        tuple(ids), element.max_concurrency))
            return ids
        fallback = element.fallback
        if fallback is None:
            return ids
        node = self._add(Node(f"fallback_{element.name}", "fallback",
                              f"fallback of {element.name}", (fallback.action.name,), row,
                              fallback_col, step=element.name))
        self.edges.append(Edge(ids[0], node.id, "fallback", "gives up"))
        return [*ids, node.id]

    def _rollback(self, undo_col: int) -> None:
        """The compensations, level with their steps, and the rollback's reverse edges."""
        stages: list[list[str]] = []
        for row, element in enumerate(self.saga.elements, start=1):
            members = element.steps if isinstance(element, Parallel) else (element,)
            if any(step.pivot for step in members):
                break  # nothing at or after a pivot is ever rolled back
            stage: list[str] = []
            for step in members:
                stage += self._undos(step, row, undo_col + len(stage))
            if stage:
                stages.append(stage)
        if not stages:
            return
        undone = self._add(Node("saga_compensated", "end", "compensated", (), 0, undo_col))
        for later, earlier in zip(stages[::-1], [*stages[-2::-1], [undone.id]], strict=True):
            self._link(later, earlier, "undo")

    def _undos(self, step: Step, row: int, col: int) -> list[str]:
        """The nodes that undo ``step`` (its compensation, its fallback's), from ``col`` on."""
        found = []
        if step.compensation is not None:
            child = getattr(step, "child", None)
            what = (f"rolls back saga {child.name}" if isinstance(child, Saga)
                    else step.compensation.name)
            node = self._add(Node(f"undo_{step.name}", "compensation", f"undo {step.name}",
                                  (what,), row, col, step=step.name))
            self.edges.append(Edge(f"step_{step.name}", node.id, "compensation", "undo"))
            found.append(node.id)
        fallback = step.fallback
        if fallback is not None and fallback.compensation is not None:
            node = self._add(Node(f"undo_fallback_{step.name}", "compensation",
                                  f"undo fallback of {step.name}",
                                  (fallback.compensation.name,), row, col + len(found),
                                  step=step.name))
            self.edges.append(Edge(f"fallback_{step.name}", node.id, "compensation", "undo"))
            found.append(node.id)
        return found

    def _add(self, node: Node) -> Node:
        self.nodes.append(node)
        return node

    def _link(self, sources: list[str], targets: list[str], kind: str) -> None:
        self.edges += [Edge(s, t, kind) for s in sources for t in targets]


def _step_node(step: Step, row: int, lane: int, group: str | None) -> Node:
    """The node of a step's action: a step, a pivot, or a step that runs a child saga."""
    child = getattr(step, "child", None)
    if isinstance(child, Saga):
        inner = " → ".join(s.name for s in child.steps)
        return Node(f"step_{step.name}", "subsaga", step.name,
                    (f"runs saga {child.name}", inner), row, lane, step.name, group,
                    child.name)
    lines = [step.action.name]
    if step.pivot:
        lines.append("pivot: never rolled back past here")
    if step.adds:
        lines.append("may add steps: " + ", ".join(t.name for t in step.adds))
    return Node(f"step_{step.name}", "pivot" if step.pivot else "step", step.name,
                tuple(lines), row, lane, step.name, group)


def _mermaid_node(node: Node) -> str:
    opening, closing = _MERMAID_SHAPES.get(node.kind, ('["', '"]'))
    text = mermaid_text("\n".join([node.label, *node.lines]))
    return f"{node.id}{opening}{text}{closing}"


def _mermaid_edge(edge: Edge) -> str:
    arrow = _MERMAID_ARROWS.get(edge.kind, "-->")
    label = f'|"{mermaid_text(edge.label)}"|' if edge.label else ""
    return f"{edge.source} {arrow}{label} {edge.target}"


def _plain(value: Node | Edge | GroupBox) -> dict[str, Any]:
    data = dataclasses.asdict(value)
    return {key: list(item) if isinstance(item, tuple) else item for key, item in data.items()}
