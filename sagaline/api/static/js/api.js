// Calling the API with the token: JSON reads, and a saga's server-sent events read with
// fetch (EventSource cannot send an Authorization header). The token lives in this tab's
// sessionStorage only; it never goes into a URL, and nothing here logs it.

const KEY = "sagaline.dashboard.token";

/** The API's root: the dashboard is served at <root>/dashboard. */
export const ROOT = new URL(".", document.baseURI);

/** An answer other than 2xx: its status and the API's detail. */
export class ApiError extends Error {
  constructor(status, detail) {
    super(detail);
    this.status = status;
  }
}

export function token() {
  return sessionStorage.getItem(KEY);
}

export function setToken(value) {
  sessionStorage.setItem(KEY, value);
}

export function forgetToken() {
  sessionStorage.removeItem(KEY);
}

function url(path, params) {
  const target = new URL(path, ROOT);
  for (const [name, value] of Object.entries(params || {})) {
    if (value !== null && value !== undefined && value !== "") {
      target.searchParams.set(name, String(value));
    }
  }
  return target;
}

function headers(accept, extra = {}) {
  return { Accept: accept, Authorization: `Bearer ${token() || ""}`, ...extra };
}

async function failure(response) {
  let detail = `${response.status} ${response.statusText}`;
  try {
    const body = await response.json();
    if (body && body.detail) detail = String(body.detail);
  } catch (ignored) {
    // not JSON: keep the status line
  }
  if (response.status === 401) window.dispatchEvent(new CustomEvent("sagaline:unauthorized"));
  return new ApiError(response.status, detail);
}

/** GET ``path`` (relative to the API's root) with ``params``; its JSON. */
export async function getJson(path, params, signal) {
  const response = await fetch(url(path, params), {
    headers: headers("application/json"), cache: "no-store", credentials: "omit", signal,
  });
  if (!response.ok) throw await failure(response);
  return response.json();
}

function parseLine(line, event) {
  if (line.startsWith(":")) return;  // a comment: the keep-alive
  const colon = line.indexOf(":");
  const field = colon < 0 ? line : line.slice(0, colon);
  let value = colon < 0 ? "" : line.slice(colon + 1);
  if (value.startsWith(" ")) value = value.slice(1);
  if (field === "event") event.kind = value;
  else if (field === "data") event.data.push(value);
  else if (field === "id") event.id = value;
}

/**
 * Follow the server-sent events at ``path``: ``onEvent({kind, data, id})`` for each, data
 * decoded from JSON. Resolves when the server ends the stream; rejects on an error
 * answer, a dropped connection or ``signal``'s abort.
 */
export async function follow(path, onEvent, { signal, lastEventId } = {}) {
  const extra = lastEventId === null || lastEventId === undefined
    ? {} : { "Last-Event-ID": String(lastEventId) };
  const response = await fetch(url(path), {
    headers: headers("text/event-stream", extra), cache: "no-store", credentials: "omit",
    signal,
  });
  if (!response.ok) throw await failure(response);
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  let event = { kind: "message", data: [], id: null };
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value;
    let end;
    while ((end = buffer.indexOf("\n")) >= 0) {
      const line = buffer.slice(0, end).replace(/\r$/, "");
      buffer = buffer.slice(end + 1);
      if (line !== "") {
        parseLine(line, event);
        continue;
      }
      if (event.data.length) {
        onEvent({ kind: event.kind, data: JSON.parse(event.data.join("\n")), id: event.id });
      }
      event = { kind: "message", data: [], id: null };
    }
  }
}
