// One saga's timeline, live: its steps with status, attempts, compensation, waits and
// progress bars; its transitions as they happen (the saga's event stream, read with
// fetch); its definition's diagram coloured by the run.

import { follow, getJson } from "./api.js";
import { drawDiagram, legend, paintRun } from "./diagram.js";
import { badge, el, errorText, message, when } from "./dom.js";

const RECONNECT_MS = 2000;
const REFRESH_MS = 250;
const LIVE = ["running", "compensating"];  // statuses that still change

function progressBar(progress) {
  const total = Number(progress.total) || 0;
  const done = Number(progress.done) || 0;
  const share = total > 0 ? Math.max(0, Math.min(1, done / total)) : null;
  const fill = el("div", { class: "fill" });
  fill.style.width = share === null ? "100%" : `${(share * 100).toFixed(1)}%`;
  const metrics = Object.entries(progress.metrics || {}).map(([k, v]) =>
    `${k}=${typeof v === "number" && !Number.isInteger(v) ? v.toPrecision(4) : v}`);
  const words = [total > 0 ? `${done}/${total} (${Math.round(share * 100)}%)` : `${done}`,
                 ...metrics].join(" ");
  return el("div", { class: "progress-cell" },
    el("div", { class: share === null ? "progress unknown" : "progress", role: "progressbar",
                "aria-valuemin": 0, "aria-valuemax": total || null, "aria-valuenow": done,
                "aria-label": "progress" }, fill),
    el("span", { class: "progress-text", text: words }));
}

function waitText(step) {
  if (!step.signal) return null;
  const until = step.wait_until ? ` until ${when(step.wait_until)}` : "";
  return el("span", { class: "wait", text: `waits for signal "${step.signal}"${until}` });
}

function stepRow(step) {
  const undo = step.compensation;
  return el("tr", { dataset: { step: step.name, status: step.status } },
    el("td", { class: "mono", text: step.name }),
    el("td", {}, badge(step.status)),
    el("td", { class: "num", text: String(step.attempts) }),
    el("td", {}, undo ? badge(undo.status) : "—",
      undo && undo.attempts ? ` ${undo.attempts} attempt${undo.attempts > 1 ? "s" : ""}` : ""),
    el("td", { class: "detail" }, waitText(step),
      step.progress ? progressBar(step.progress) : null));
}

function facts(summary) {
  const rows = [["saga", summary.name], ["id", summary.saga_id],
    ["correlation", summary.correlation_id], ["created", when(summary.created_at)],
    ["ended", when(summary.ended_at)], ["waiting on", summary.waiting_on],
    ["failed step", summary.failed_step],
    ["error", summary.error ? `${summary.error.type}: ${summary.error.message}` : null],
    ["compensations", summary.compensations.join(", ")],
    ["left in place", summary.undone.join(", ")]];
  return el("dl", { class: "facts" }, rows.filter(([, v]) => v).map(([k, v]) =>
    [el("dt", { text: k }), el("dd", { class: k === "error" ? "error" : null, text: v })]));
}

function logEntry(entry) {
  const detail = entry.detail || {};
  const error = detail.error && detail.error.message ? detail.error.message : "";
  return el("li", { dataset: { event: entry.event, index: entry.index } },
    el("time", { text: when(entry.at) }), " ",
    el("span", { class: "event", text: entry.event }),
    entry.step ? el("span", { class: "mono", text: ` ${entry.step}` }) : null,
    entry.attempt ? ` (attempt ${entry.attempt})` : "",
    error ? el("span", { class: "error", text: ` ${error}` }) : null);
}

function skeleton(sagaId) {
  const parts = {
    status: el("span", { id: "saga-status" }),
    title: el("h1", { text: `Saga ${sagaId}` }),
    facts: el("div"),
    steps: el("tbody"),
    live: el("span", { class: "live", text: "connecting…" }),
    log: el("ol", { class: "log" }),
    diagram: el("div", { class: "diagram" }),
    note: el("div"),
  };
  const stepsTable = el("table", { class: "steps" }, el("thead", {}, el("tr", {},
    ["step", "status", "attempts", "compensation", "wait / progress"].map(
      (c) => el("th", { scope: "col", text: c })))), parts.steps);
  parts.root = [el("header", { class: "saga-head" }, parts.title, parts.status, parts.live),
    parts.note, parts.facts,
    el("section", { class: "timeline" }, el("h2", { text: "Steps" }), stepsTable),
    el("section", {}, el("h2", { text: "Definition" }), parts.diagram),
    el("section", {}, el("h2", { text: "Transitions" }), parts.log)];
  return parts;
}

/** One saga on the page: rendered from its summary, kept up to date by its stream. */
class Timeline {
  constructor(root, sagaId) {
    this.sagaId = sagaId;
    this.path = `sagas/${encodeURIComponent(sagaId)}`;
    this.parts = skeleton(sagaId);
    this.stop = new AbortController();
    this.summary = null;
    this.diagram = null;
    this.timer = null;
    this.lastId = null;
    root.replaceChildren(...this.parts.root);
  }

  start() {
    getJson(this.path, {}, this.stop.signal).then((data) => {
      this.render(data);
      this.drawDefinition(data.name);
      this.listen();
    }).catch((error) => this.fail(error));
  }

  close() {
    this.stop.abort();
    clearTimeout(this.timer);
  }

  fail(error) {
    if (!this.stop.signal.aborted) {
      this.parts.note.replaceChildren(message(errorText(error), "error"));
    }
  }

  ended() {
    return this.summary !== null && !LIVE.includes(this.summary.status);
  }

  render(data) {
    const { parts } = this;
    this.summary = data;
    parts.title.textContent = `${data.name} ${data.saga_id}`;
    parts.status.replaceChildren(badge(data.status));
    parts.status.dataset.status = data.status;
    parts.facts.replaceChildren(facts(data));
    parts.steps.replaceChildren(...data.steps.map(stepRow));
    if (this.diagram) paintRun(this.diagram, data);
  }

  /** Read the summary again soon: one read for a burst of events. */
  refresh() {
    if (this.timer) return;
    this.timer = setTimeout(async () => {
      this.timer = null;
      try {
        this.render(await getJson(this.path, {}, this.stop.signal));
      } catch (error) {
        this.fail(error);
      }
    }, REFRESH_MS);
  }

  async drawDefinition(name) {
    try {
      const about = await getJson(`definitions/${encodeURIComponent(name)}`, {},
                                  this.stop.signal);
      this.diagram = drawDiagram(about.graph, (node) => {
        location.hash = `#/definitions/${encodeURIComponent(node.child)}`;
      });
      this.parts.diagram.replaceChildren(this.diagram, legend());
      if (this.summary) paintRun(this.diagram, this.summary);
    } catch (error) {
      if (!this.stop.signal.aborted) {
        this.parts.diagram.replaceChildren(message(errorText(error), "error"));
      }
    }
  }

  onEvent(event) {
    if (event.id !== null) this.lastId = event.id;
    if (event.kind === "transition") {
      this.parts.log.append(logEntry(event.data));
      this.refresh();
    } else if (event.kind === "progress") {
      this.refresh();
    } else if (event.kind === "end") {
      this.render(event.data);
    } else if (event.kind === "error") {
      this.parts.note.replaceChildren(message(event.data.detail, "error"));
    }
  }

  /** Follow the stream until the saga ends; reconnect (after the last event) if it drops. */
  async listen() {
    const { live } = this.parts;
    for (;;) {  // at least once: a saga that already ended replays its transitions
      live.textContent = "live";
      live.dataset.state = "live";
      try {
        await follow(`${this.path}/events`, (event) => this.onEvent(event),
                     { signal: this.stop.signal, lastEventId: this.lastId });
      } catch (error) {
        if (this.stop.signal.aborted) return;
        if (error.status) {
          this.fail(error);
          break;
        }
      }
      if (this.ended()) break;
      live.textContent = "reconnecting…";
      await new Promise((resolve) => { setTimeout(resolve, RECONNECT_MS); });
    }
    live.textContent = this.ended() ? "ended" : "";
    live.dataset.state = "ended";
  }
}

/** Show saga ``sagaId`` in ``root``, live until it ends; returns what stops following. */
export function showSaga(root, sagaId) {
  const timeline = new Timeline(root, sagaId);
  timeline.start();
  return () => timeline.close();
}
