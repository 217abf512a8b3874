// The lists of sagas: active (running, compensating), stuck, and recent (any status),
// filtered by status and name, a page at a time through the list's cursor, refreshed
// every few seconds while the first page is shown.

import { getJson } from "./api.js";
import { badge, duration, el, errorText, message, when } from "./dom.js";

const STATUSES = ["running", "compensating", "completed", "compensated",
  "compensation_failed", "failed", "cancelled", "needs_attention"];
const PAGE = 25;
const REFRESH_MS = 3000;

function sagaLink(sagaId, name) {
  return el("a", { href: `#/saga/${encodeURIComponent(sagaId)}`, dataset: { sagaId },
                   text: name });
}

function table(columns, body) {
  const head = el("tr", {}, columns.map((c) => el("th", { scope: "col", text: c })));
  return el("table", { class: "sagas" }, el("thead", {}, head), body);
}

function sagaRow(saga) {
  return el("tr", { dataset: { sagaId: saga.saga_id } },
    el("td", {}, sagaLink(saga.saga_id, saga.name)),
    el("td", {}, badge(saga.status)),
    el("td", { class: "mono", text: saga.saga_id }),
    el("td", { text: saga.waiting_on || saga.failed_step || "" }),
    el("td", { text: when(saga.created_at) }),
    el("td", { text: when(saga.ended_at) }));
}

/** A list of sagas from GET /sagas with ``query``; "More" follows the cursor. */
function pagedList(title, query) {
  const body = el("tbody");
  const note = el("div");
  const more = el("button", { type: "button", class: "more", hidden: true, text: "More" });
  const section = el("section", { class: "list" }, el("h2", { text: title }),
    table(["saga", "status", "id", "at", "created", "ended"], body), note, more);
  let cursor = null;
  let extended = false;

  async function load(append) {
    try {
      const page = await getJson("sagas", { ...query, limit: PAGE,
                                            cursor: append ? cursor : null });
      if (!append) body.replaceChildren();
      body.append(...page.sagas.map(sagaRow));
      cursor = page.next_cursor;
      more.hidden = !cursor;
      note.replaceChildren(body.children.length ? "" : message("No saga here."));
    } catch (error) {
      note.replaceChildren(message(errorText(error), "error"));
    }
  }
  more.addEventListener("click", () => { extended = true; load(true); });
  return { section, refresh: () => (extended ? Promise.resolve() : load(false)) };
}

function stuckRow(stuck) {
  return el("tr", { dataset: { sagaId: stuck.saga_id } },
    el("td", {}, sagaLink(stuck.saga_id, stuck.name)),
    el("td", {}, badge(stuck.status)),
    el("td", { class: "mono", text: stuck.saga_id }),
    el("td", { text: stuck.waiting_on || "" }),
    el("td", { text: duration(stuck.overdue_s) }),
    el("td", { text: when(stuck.deadline_at) }),
    el("td", { text: String(stuck.recoveries) }));
}

/** The sagas GET /stuck lists, the name filter applied here. */
function stuckList(name) {
  const body = el("tbody");
  const note = el("div");
  const section = el("section", { class: "list" }, el("h2", { text: "Stuck" }),
    table(["saga", "status", "id", "waiting on", "overdue", "deadline", "recoveries"], body),
    note);

  async function refresh() {
    try {
      const found = (await getJson("stuck")).filter((s) => !name || s.name === name);
      body.replaceChildren(...found.map(stuckRow));
      note.replaceChildren(found.length ? "" : message("No saga is stuck."));
    } catch (error) {
      note.replaceChildren(message(errorText(error), "error"));
    }
  }
  return { section, refresh };
}

function select(label, name, values, chosen, blank) {
  const options = [el("option", { value: "", text: blank })].concat(values.map(
    (value) => el("option", { value, text: value, selected: value === chosen })));
  return el("label", {}, `${label} `, el("select", { name }, options));
}

/** The filter form; changing a filter changes the address (so it can be shared). */
function filters(tab, params, names) {
  const form = el("form", { class: "filters" },
    select("Saga", "name", names, params.get("name") || "", "any"),
    tab === "recent"
      ? select("Status", "status", STATUSES, params.get("status") || "", "any") : null,
    el("button", { type: "submit", text: "Refresh" }));
  const apply = (event) => {
    event.preventDefault();
    const query = new URLSearchParams();
    for (const field of form.querySelectorAll("select")) {
      if (field.value) query.set(field.name, field.value);
    }
    const text = query.toString();
    location.hash = `#/sagas/${tab}${text ? `?${text}` : ""}`;
  };
  form.addEventListener("change", apply);
  form.addEventListener("submit", apply);
  return form;
}

function listsOf(tab, params) {
  const name = params.get("name") || null;
  if (tab === "stuck") return [stuckList(name)];
  if (tab === "recent") {
    return [pagedList("Recent", { name, status: params.get("status") || null })];
  }
  return [pagedList("Running", { name, status: "running" }),
          pagedList("Compensating", { name, status: "compensating" })];
}

/** Show the lists of ``tab`` in ``root``; returns what stops its refreshing. */
export function showList(root, tab, params, names) {
  const lists = listsOf(tab, params);
  root.replaceChildren(filters(tab, params, names), ...lists.map((l) => l.section));
  const refresh = () => {
    if (!document.hidden) lists.forEach((l) => l.refresh());
  };
  lists.forEach((l) => l.refresh());
  const timer = setInterval(refresh, REFRESH_MS);
  return () => clearInterval(timer);
}
