// A saga's definition drawn as inline SVG from the API's diagram JSON (GET
// /definitions/{name} -> graph): nodes on the grid the server laid out, edges between
// them, a box around each parallel group. No library, nothing fetched.

import { el, svg } from "./dom.js";

const CELL_W = 214;
const CELL_H = 84;
const NODE_W = 164;
const NODE_H = 56;
const PAD = 24;
const MAX_CHARS = 27;
const GROUP_GAP = 18;

const EDGE_KINDS = ["next", "fallback", "compensation", "undo", "attention"];

/** Where each row starts: rows holding a group get room above for the group's title. */
function rowTops(graph) {
  const grouped = new Set(graph.groups.flatMap((g) => g.nodes));
  const titled = new Set(graph.nodes.filter((n) => grouped.has(n.id)).map((n) => n.row));
  const tops = [];
  let y = PAD;
  for (let row = 0; row < graph.rows; row += 1) {
    y += titled.has(row) ? GROUP_GAP : 0;
    tops.push(y);
    y += CELL_H;
  }
  return tops;
}

function box(node, tops) {
  const x = PAD + node.col * CELL_W + (CELL_W - NODE_W) / 2;
  const y = tops[node.row] + (CELL_H - NODE_H) / 2;
  return { x, y, cx: x + NODE_W / 2, cy: y + NODE_H / 2, row: node.row, col: node.col };
}

function clip(text) {
  return text.length > MAX_CHARS ? `${text.slice(0, MAX_CHARS - 1)}…` : text;
}

function markers() {
  return svg("defs", {}, EDGE_KINDS.map((kind) => svg("marker", {
    id: `arrow-${kind}`, class: `arrow arrow-${kind}`, viewBox: "0 0 10 10", refX: 9,
    refY: 5, markerUnits: "userSpaceOnUse", markerWidth: 9, markerHeight: 9,
    orient: "auto-start-reverse",
  }, svg("path", { d: "M 0 0 L 10 5 L 0 10 z" }))));
}

/** The path of an edge: down, up, or sideways. */
function route(a, b) {
  const down = b.y > a.y + 1;
  const up = b.y + 1 < a.y;
  if (down || up) {
    const y1 = down ? a.y + NODE_H : a.y;
    const y2 = down ? b.y : b.y + NODE_H;
    const bend = (y2 - y1) / 2;
    return { d: `M ${a.cx} ${y1} C ${a.cx} ${y1 + bend} ${b.cx} ${y2 - bend} ${b.cx} ${y2}`,
             mid: [(a.cx + b.cx) / 2, (y1 + y2) / 2] };
  }
  const right = b.cx > a.cx;
  const x1 = right ? a.x + NODE_W : a.x;
  const x2 = right ? b.x : b.x + NODE_W;
  return { d: `M ${x1} ${a.cy} L ${x2} ${b.cy}`, mid: [(x1 + x2) / 2, a.cy - 6] };
}

/** Whether a node stands between two nodes of one row (a line would cross it). */
function blocked(a, b, boxes) {
  if (a.row !== b.row) return false;
  const [low, high] = a.col < b.col ? [a.col, b.col] : [b.col, a.col];
  return [...boxes.values()].some((p) => p.row === a.row && p.col > low && p.col < high);
}

function edge(item, boxes) {
  const a = boxes.get(item.source);
  const b = boxes.get(item.target);
  if (!a || !b) return null;
  // A compensation stands level with its step; a line through other nodes would only hide
  // them, so it is drawn when nothing stands between.
  if (item.kind === "compensation" && blocked(a, b, boxes)) return null;
  const path = route(a, b);
  return svg("g", { class: `edge edge-${item.kind}`, dataset: { source: item.source,
                                                              target: item.target } },
    svg("path", { d: path.d, "marker-end": `url(#arrow-${item.kind})` }),
    item.label && item.kind !== "compensation"
      ? svg("text", { x: path.mid[0], y: path.mid[1], "text-anchor": "middle",
                      class: "edge-label", text: item.label }) : null);
}

function shape(node) {
  if (node.kind === "pivot") {
    const w = NODE_W;
    const h = NODE_H;
    return svg("polygon", { class: "shape",
      points: `12,0 ${w - 12},0 ${w},${h / 2} ${w - 12},${h} 12,${h} 0,${h / 2}` });
  }
  const round = { start: NODE_H / 2, end: NODE_H / 2, fallback: 14, compensation: 14 };
  return svg("rect", { class: "shape", width: NODE_W, height: NODE_H,
                       rx: round[node.kind] ?? 4 });
}

function nodeGroup(node, place, onNode) {
  const lines = node.lines.slice(0, 2);
  const top = NODE_H / 2 - (lines.length * 13) / 2 - 1;
  const texts = [svg("text", { x: NODE_W / 2, y: top + 4, class: "title",
                               "text-anchor": "middle", text: clip(node.label) })];
  lines.forEach((line, n) => texts.push(svg("text", {
    x: NODE_W / 2, y: top + 18 + n * 13, class: "line", "text-anchor": "middle",
    text: clip(line) })));
  const group = svg("g", {
    class: `node node-${node.kind}`, transform: `translate(${place.x} ${place.y})`,
    dataset: { nodeId: node.id, step: node.step || "", child: node.child || "" },
  }, svg("title", { text: [node.label, ...node.lines].join("\n") }), shape(node), texts);
  if (onNode && node.child) {
    group.classList.add("link");
    group.addEventListener("click", () => onNode(node));
  }
  return group;
}

function groupBox(group, boxes) {
  const places = group.nodes.map((id) => boxes.get(id)).filter(Boolean);
  if (!places.length) return null;
  const x = Math.min(...places.map((p) => p.x)) - 10;
  const y = Math.min(...places.map((p) => p.y)) - 10 - GROUP_GAP;
  const right = Math.max(...places.map((p) => p.x)) + NODE_W + 10;
  const bottom = Math.max(...places.map((p) => p.y)) + NODE_H + 6;
  return svg("g", { class: "group", dataset: { group: group.name } },
    svg("rect", { x, y, width: right - x, height: bottom - y, rx: 8 }),
    svg("text", { x: x + 8, y: y + 13, class: "group-label", text: group.label }));
}

/** The diagram of ``graph`` as an SVG element; ``onNode(node)`` when a child saga is clicked. */
export function drawDiagram(graph, onNode) {
  const tops = rowTops(graph);
  const width = graph.cols * CELL_W + 2 * PAD;
  const height = tops[tops.length - 1] + CELL_H + PAD;
  const boxes = new Map(graph.nodes.map((n) => [n.id, box(n, tops)]));
  return svg("svg", {
    class: "saga-diagram", viewBox: `0 0 ${width} ${height}`, width, height, role: "img",
    "aria-label": `The definition of saga ${graph.saga}`, dataset: { saga: graph.saga },
  }, markers(), graph.groups.map((g) => groupBox(g, boxes)),
  graph.edges.map((e) => edge(e, boxes)),
  graph.nodes.map((n) => nodeGroup(n, boxes.get(n.id), onNode)));
}

/** Colour the diagram's nodes by a run's summary: each step and its undo by its status. */
export function paintRun(diagram, summary) {
  const paint = (id, status) => {
    const node = diagram.querySelector(`g.node[data-node-id="${CSS.escape(id)}"]`);
    if (node && status && status !== "pending") node.dataset.status = status;
  };
  for (const step of summary.steps) {
    paint(`step_${step.name}`, step.status);
    if (step.compensation) paint(`undo_${step.name}`, step.compensation.status);
  }
  paint(`saga_${summary.status}`, summary.status);
}

/** What the diagram's colours and lines mean. */
export function legend() {
  const item = (kind, text) => el("li", {}, el("span", { class: `key key-${kind}` }), text);
  return el("ul", { class: "legend" },
    item("step", "step"), item("pivot", "pivot: never rolled back past"),
    item("subsaga", "runs a child saga"), item("fallback", "fallback, when the step gives up"),
    item("compensation", "compensation, level with its step; thick arrows: the rollback"));
}
