// Building the page from data: every value goes in as text (textContent, text nodes or
// attributes), never as HTML, so nothing a saga recorded can run in the page.

const SVG_NS = "http://www.w3.org/2000/svg";

function build(node, attrs, children) {
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "class") node.setAttribute("class", value);
    else if (key === "text") node.textContent = String(value);
    else if (key === "dataset") Object.assign(node.dataset, value);
    else if (key.startsWith("on") && typeof value === "function") {
      node.addEventListener(key.slice(2), value);
    } else node.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

/** An HTML element with attributes and children (strings become text nodes). */
export function el(tag, attrs, ...children) {
  return build(document.createElement(tag), attrs, children);
}

/** An SVG element with attributes and children. */
export function svg(tag, attrs, ...children) {
  return build(document.createElementNS(SVG_NS, tag), attrs, children);
}

/** A moment (ISO text) in local time, or "" for none. */
export function when(iso) {
  if (!iso) return "";
  const moment = new Date(iso);
  return Number.isNaN(moment.getTime()) ? String(iso) : moment.toLocaleString();
}

/** A duration in seconds, in words: "4.2 s", "3 min 5 s", "2 h 10 min". */
export function duration(seconds) {
  if (seconds === null || seconds === undefined) return "";
  const s = Math.max(0, Number(seconds));
  if (s < 60) return `${s.toFixed(1)} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${Math.round(s % 60)} s`;
  return `${Math.floor(s / 3600)} h ${Math.round((s % 3600) / 60)} min`;
}

/** A status as a coloured badge; ``data-status`` holds the status as recorded. */
export function badge(status, attrs = {}) {
  return el("span", { ...attrs, class: `badge status-${status}`, dataset: { status },
                      text: String(status).replace(/_/g, " ") });
}

/** A message in a view: an error (role alert) or a note. */
export function message(text, kind = "note") {
  return el("p", { class: kind, role: kind === "error" ? "alert" : null, text });
}

/** The text of an error for the page: the API's detail when it gave one. */
export function errorText(error) {
  return error && error.message ? error.message : String(error);
}
