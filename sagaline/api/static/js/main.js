// The dashboard's entry: asks for the token, then shows the view the address names:
//   #/sagas/active | #/sagas/stuck | #/sagas/recent[?status=..&name=..]
//   #/saga/<id>    | #/definitions  | #/definitions/<name>

import { forgetToken, getJson, setToken, token } from "./api.js";
import { showDefinition, showDefinitions } from "./definitions.js";
import { errorText } from "./dom.js";
import { showList } from "./list.js";
import { showSaga } from "./timeline.js";

const view = document.getElementById("view");
const login = document.getElementById("login");
const nav = document.getElementById("nav");
const forget = document.getElementById("forget");
let stopView = null;
let names = null;

function signedIn(yes, error = "") {
  login.hidden = yes;
  nav.hidden = !yes;
  forget.hidden = !yes;
  document.getElementById("login-error").textContent = error;
  if (!yes) {
    view.replaceChildren();
    document.getElementById("token").focus();
  }
}

function where() {
  const [path, query = ""] = location.hash.replace(/^#\/?/, "").split("?");
  return { parts: path.split("/").filter(Boolean).map(decodeURIComponent),
           params: new URLSearchParams(query) };
}

async function sagaNames() {
  if (names === null) {
    try {
      names = (await getJson("definitions")).map((d) => d.name);
    } catch (error) {
      return [];
    }
  }
  return names;
}

async function show() {
  if (stopView) stopView();
  stopView = null;
  if (!token()) {
    signedIn(false);
    return;
  }
  signedIn(true);
  const { parts, params } = where();
  const [area, item] = parts;
  let tab = area === "definitions" ? "definitions" : null;
  if (area === "saga" && item) {
    stopView = showSaga(view, item);
  } else if (area === "definitions") {
    stopView = item ? showDefinition(view, item) : showDefinitions(view);
  } else {
    tab = ["active", "stuck", "recent"].includes(item) ? item : "active";
    const known = await sagaNames();
    stopView = showList(view, tab, params, known);
  }
  for (const link of nav.querySelectorAll("a")) {
    link.classList.toggle("current", link.dataset.tab === tab);
  }
}

document.getElementById("login-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const field = document.getElementById("token");
  const value = field.value.trim();
  field.value = "";
  if (!value) return;
  setToken(value);
  try {
    await getJson("sagas", { limit: 1 });
  } catch (error) {
    forgetToken();
    signedIn(false, error.status === 401
      ? "The API refused this token: enter one of its tokens." : errorText(error));
    return;
  }
  show();
});

forget.addEventListener("click", () => {
  forgetToken();
  names = null;
  show();
});

window.addEventListener("sagaline:unauthorized", () => {
  forgetToken();
  if (stopView) stopView();
  stopView = null;
  signedIn(false, "The API refused the token: enter a valid one.");
});

window.addEventListener("hashchange", show);
show();
