// The registered sagas, and one saga's definition: its diagram and its Mermaid text
// (what `sagaline graph NAME` prints).

import { getJson } from "./api.js";
import { drawDiagram, legend } from "./diagram.js";
import { el, errorText, message } from "./dom.js";

/** Show every registered saga in ``root``. */
export function showDefinitions(root) {
  const body = el("tbody");
  const note = el("div");
  root.replaceChildren(el("h1", { text: "Definitions" }), note,
    el("table", { class: "sagas" }, el("thead", {}, el("tr", {},
      ["saga", "steps", "description"].map((c) => el("th", { scope: "col", text: c })))),
    body));
  getJson("definitions").then((listed) => {
    body.replaceChildren(...listed.map((saga) => el("tr", {},
      el("td", {}, el("a", { href: `#/definitions/${encodeURIComponent(saga.name)}`,
                             text: saga.name })),
      el("td", { class: "num", text: String(saga.steps.length) }),
      el("td", { text: saga.description }))));
  }).catch((error) => note.replaceChildren(message(errorText(error), "error")));
  return () => {};
}

function facts(definition) {
  const rows = [["description", definition.description],
    ["inputs", `${definition.inputs} (${definition.input_fields.join(", ")})`],
    ["deadline", definition.deadline_s ? `${definition.deadline_s} s` : null]];
  return el("dl", { class: "facts" }, rows.filter(([, v]) => v).map(([k, v]) =>
    [el("dt", { text: k }), el("dd", { text: v })]));
}

/** Show saga ``name``'s definition in ``root``: facts, diagram, Mermaid. */
export function showDefinition(root, name) {
  const note = el("div");
  const body = el("div");
  root.replaceChildren(el("h1", { text: name }), note, body);
  getJson(`definitions/${encodeURIComponent(name)}`).then((about) => {
    const diagram = drawDiagram(about.graph, (node) => {
      location.hash = `#/definitions/${encodeURIComponent(node.child)}`;
    });
    const list = el("a", { href: `#/sagas/recent?name=${encodeURIComponent(name)}`,
                           text: `Runs of ${name}` });
    body.replaceChildren(facts(about.definition), el("p", {}, list),
      el("div", { class: "diagram" }, diagram), legend(),
      el("details", {}, el("summary", { text: "Mermaid (sagaline graph)" }),
        el("pre", { class: "mermaid-text", text: about.mermaid })));
  }).catch((error) => note.replaceChildren(message(errorText(error), "error")));
  return () => {};
}
