// The API Keys page of keyledger: a plain ES module, no dependencies, no build step.
//
// Every text that comes from the API or the user reaches the page through textContent, value or
// setAttribute, never as HTML. The JWT arrives in the URL fragment (#token=…), which no server sees,
// and is kept in sessionStorage for this tab only. docs/dashboard.md describes the page.

const API = "/api/v1/accounts/user/api-keys/";
const TOKEN_STORAGE = "keyledger.token";
const MAX_ACTIVE_KEYS = 5;
const REFRESH_MS = 10_000;
const SVG_NS = "http://www.w3.org/2000/svg";

// The chart: one bar per UTC day, 30 of them, oldest first: requests rise above the axis, and CHF
// hangs below it, each scaled to the key's own busiest day.
const BAR = 4;
const STEP = 5;
const WIDTH = STEP * 30 - (STEP - BAR);
const AXIS = 29; // requests use 0..AXIS, CHF AXIS..HEIGHT
const HEIGHT = 42;
const REQUESTS_ROOM = AXIS - 2;
const COST_ROOM = HEIGHT - AXIS - 2;

const $ = (id) => document.getElementById(id);
const dateOnly = new Intl.DateTimeFormat(undefined, { dateStyle: "medium" });
const timeOnly = new Intl.DateTimeFormat(undefined, { timeStyle: "short" });
const count = new Intl.NumberFormat(undefined);

const state = {
  token: null,
  keys: [], // key objects as the API answers them; a created key's `key` is never kept here
  change: 0, // bumped by every load and every change the page makes: only the newest load renders
  timer: null,
  revoking: null, // { id, opener, done }
  creating: false, // a create request is in flight
};

// Rows: each <tr data-key-id> keeps its cells, so a refresh updates text in place and never moves
// focus or removes the element a keyboard user is on.
const rows = new WeakMap();

class ApiError extends Error {
  constructor(status, type, message) {
    super(message);
    this.status = status;
    this.type = type;
  }
}

// ---------------------------------------------------------------- the token and the API

function tokenFromFragment() {
  if (!location.hash.includes("token=")) return null;
  const token = new URLSearchParams(location.hash.slice(1)).get("token");
  history.replaceState(null, "", location.pathname + location.search); // out of the address bar and history
  return token ? token.trim() : null;
}

function storedToken() {
  try {
    return sessionStorage.getItem(TOKEN_STORAGE);
  } catch {
    return null; // storage disabled: the token lives in memory only
  }
}

function remember(token) {
  state.token = token;
  try {
    sessionStorage.setItem(TOKEN_STORAGE, token);
  } catch {
    // storage disabled: keep it in memory
  }
}

function forget() {
  state.token = null;
  try {
    sessionStorage.removeItem(TOKEN_STORAGE);
  } catch {
    // nothing stored
  }
}

/** The account a JWT names, for display only (the API checks the token, not this page). */
function accountOf(token) {
  try {
    const part = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    const claims = JSON.parse(atob(part.padEnd(Math.ceil(part.length / 4) * 4, "=")));
    const account = claims.account_id ?? claims.sub;
    return typeof account === "string" ? account : "";
  } catch {
    return "";
  }
}

/** A JSON call with the JWT; answers the parsed body, or throws ApiError with the envelope's message. */
async function api(method, path, body) {
  const headers = { Authorization: `Bearer ${state.token}`, Accept: "application/json" };
  const init = { method, headers, cache: "no-store", credentials: "omit", referrerPolicy: "no-referrer" };
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(path, init);
  } catch {
    throw new ApiError(0, "network", "keyledger cannot be reached. Check your connection and try again.");
  }
  let payload = null;
  try {
    payload = await response.json();
  } catch {
    payload = null;
  }
  if (response.ok && payload !== null) return payload;
  const error = payload && typeof payload.error === "object" ? payload.error : null;
  const message =
    error && typeof error.message === "string" && error.message
      ? error.message
      : `keyledger answered with HTTP ${response.status}; try again in a moment.`;
  if (response.status === 401) {
    forget();
    showSignIn(message);
  }
  throw new ApiError(response.status, error?.type ?? "unknown", message);
}

const keyPath = (id, action = "") => `${API}${encodeURIComponent(id)}/${action}`;

// ---------------------------------------------------------------- small helpers

function element(tag, attributes = {}, text) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, value);
  if (text !== undefined) node.textContent = text;
  return node;
}

function svg(tag, attributes = {}) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, String(value));
  return node;
}

function setText(node, text) {
  if (node.textContent !== text) node.textContent = text;
}

/** Show (or clear, with "") an error next to the control that caused it. */
function setError(node, message, control) {
  node.textContent = message;
  node.hidden = !message;
  if (control) {
    if (message) control.setAttribute("aria-invalid", "true");
    else control.removeAttribute("aria-invalid");
  }
}

/** CHF for display: the API's exact decimal string, trailing zeros cut down to 2 decimals, no float. */
function chf(value) {
  const match = /^(\d+)\.(\d+)$/.exec(value);
  if (!match) return `CHF ${value}`;
  const decimals = match[2].replace(/0+$/, "").padEnd(2, "0");
  return `CHF ${match[1]}.${decimals}`;
}

function keyById(id) {
  return state.keys.find((key) => key.id === id);
}

function rowOf(id) {
  return [...$("keys-body").rows].find((row) => row.dataset.keyId === id);
}

// ---------------------------------------------------------------- views

function showSignIn(message) {
  stopRefresh();
  for (const dialog of document.querySelectorAll("dialog[open]")) dialog.close();
  state.keys = [];
  state.change += 1; // an answer still on its way must not render
  $("keys-body").replaceChildren();
  $("keys").hidden = true;
  $("session").hidden = true;
  $("sign-in").hidden = false;
  setError($("sign-in-error"), message, $("token-input"));
  $("token-input").focus();
}

function showKeys() {
  $("sign-in").hidden = true;
  setError($("sign-in-error"), "", $("token-input"));
  $("keys").hidden = false;
  $("session").hidden = false;
  const account = accountOf(state.token);
  $("account").textContent = account ? `Account ${account}` : "";
}

async function signIn(token) {
  remember(token);
  showKeys();
  $("loading").hidden = false;
  $("empty").hidden = true;
  setError($("list-error"), "");
  await load();
  if (state.token) startRefresh();
}

function startRefresh() {
  stopRefresh();
  state.timer = setInterval(() => {
    if (document.visibilityState === "visible") load();
  }, REFRESH_MS);
}

function stopRefresh() {
  if (state.timer !== null) clearInterval(state.timer);
  state.timer = null;
}

async function load() {
  if (!state.token) return;
  const mine = ++state.change;
  try {
    const answer = await api("GET", API);
    if (mine !== state.change) return; // a newer load or a change of the page came meanwhile
    setError($("list-error"), "");
    render(answer.data);
  } catch (error) {
    if (mine !== state.change || error.status === 401) return;
    setError($("list-error"), `Your keys could not be loaded: ${error.message}`);
  } finally {
    if (mine === state.change) $("loading").hidden = true;
  }
}

/** A key the page just changed: shown at once, and any list answer already on its way is dropped. */
function changed(key) {
  state.change += 1;
  const others = state.keys.filter((known) => known.id !== key.id);
  const at = state.keys.findIndex((known) => known.id === key.id);
  state.keys = at === -1 ? [key, ...others] : state.keys.map((known) => (known.id === key.id ? key : known));
  render(state.keys);
  load();
}

// ---------------------------------------------------------------- the table

function render(keys) {
  state.keys = keys;
  const body = $("keys-body");
  const ids = new Set(keys.map((key) => key.id));
  for (const row of [...body.rows]) if (!ids.has(row.dataset.keyId)) row.remove();
  keys.forEach((key, index) => {
    const row = rowOf(key.id) ?? newRow(key.id);
    updateRow(row, key);
    if (body.rows[index] !== row) body.insertBefore(row, body.rows[index] ?? null);
  });
  $("empty").hidden = keys.length > 0;
  updateLimit();
}

function newRow(id) {
  const row = element("tr");
  row.dataset.keyId = id;
  const cell = (className) => row.appendChild(element("td", className ? { class: className } : {}));
  const parts = {
    name: cell("cell-name"),
    nameText: element("span", { class: "key-name" }),
    key: cell("cell-key").appendChild(element("code", { class: "masked" })),
    status: cell("cell-status").appendChild(element("span", { class: "badge" })),
    created: cell("cell-time"),
    lastUsed: cell("cell-time"),
    requests: cell("num"),
    totalChf: cell("num"),
    recentChf: cell("num"),
    chart: cell("cell-chart"),
    actions: cell("cell-actions"),
    chartData: null,
    mode: null,
    rename: null, // the rename form while it is open
  };
  parts.name.append(parts.nameText);
  rows.set(row, parts);
  return row;
}

function updateRow(row, key) {
  const parts = rows.get(row);
  setText(parts.nameText, key.name);
  setText(parts.key, key.masked_key);
  const active = key.status === "active";
  setText(parts.status, active ? "Active" : "Revoked");
  parts.status.className = `badge ${active ? "active" : "revoked"}`;
  setTime(parts.created, key.created_at, "");
  setTime(parts.lastUsed, key.last_used_at, "Never");
  setText(parts.requests, count.format(key.usage.total_requests));
  setChf(parts.totalChf, key.usage.total_cost_chf);
  setChf(parts.recentChf, key.usage.last_30_days.cost_chf);
  const chartData = JSON.stringify([key.name, key.usage.last_30_days.daily]);
  if (parts.chartData !== chartData) {
    parts.chart.replaceChildren(chart(key));
    parts.chartData = chartData;
  }
  updateActions(parts, key);
}

function setTime(cell, iso, otherwise) {
  if (!iso) {
    if (cell.firstElementChild || cell.textContent !== otherwise) cell.replaceChildren(otherwise);
    return;
  }
  const current = cell.firstElementChild;
  if (current && current.getAttribute("datetime") === iso) return;
  const moment = new Date(iso);
  const time = element("time", { datetime: iso, title: `${iso} (UTC)` });
  time.append(dateOnly.format(moment), " ", element("span", { class: "clock" }, timeOnly.format(moment)));
  cell.replaceChildren(time);
}

function setChf(cell, value) {
  setText(cell, chf(value));
  cell.title = `exactly CHF ${value}`;
  cell.dataset.chf = value;
}

function updateActions(parts, key) {
  if (key.status !== "active") {
    if (parts.mode !== "revoked") {
      parts.actions.replaceChildren(element("span", { class: "muted", "aria-hidden": "true" }, "—"));
      parts.mode = "revoked";
    }
    return;
  }
  if (parts.mode !== "active") {
    const button = (action, style, text) =>
      element("button", { type: "button", class: `button ${style} small`, "data-action": action }, text);
    parts.renameButton = button("rename", "secondary", "Rename");
    parts.revokeButton = button("revoke", "danger-outline", "Revoke");
    parts.actions.replaceChildren(parts.renameButton, parts.revokeButton);
    parts.mode = "active";
  }
  parts.renameButton.setAttribute("aria-label", `Rename ${key.name}`);
  parts.revokeButton.setAttribute("aria-label", `Revoke ${key.name}`);
}

function chart(key) {
  const days = key.usage.last_30_days.daily;
  const figure = svg("svg", {
    role: "img",
    "aria-label": `Requests and CHF per day over the last 30 days for ${key.name}`,
    viewBox: `0 0 ${WIDTH} ${HEIGHT}`,
    width: WIDTH,
    height: HEIGHT,
    class: "chart",
  });
  const most = Math.max(1, ...days.map((day) => day.requests));
  const costs = days.map((day) => Number(day.cost_chf)); // the drawing's scale only; titles are exact
  const mostCost = Math.max(0, ...costs);
  figure.append(svg("line", { x1: 0, x2: WIDTH, y1: AXIS + 0.5, y2: AXIS + 0.5, class: "axis" }));
  days.forEach((day, index) => {
    const x = index * STEP;
    const height = day.requests === 0 ? 1 : Math.max(2, Math.round((day.requests / most) * REQUESTS_ROOM));
    const bar = svg("rect", {
      x,
      y: AXIS - height,
      width: BAR,
      height,
      class: day.requests === 0 ? "bar empty-day" : "bar",
      "data-date": day.date,
      "data-requests": day.requests,
      "data-cost-chf": day.cost_chf,
    });
    const title = svg("title");
    title.textContent = `${day.date}: ${day.requests} requests, CHF ${day.cost_chf}`;
    bar.append(title);
    figure.append(bar);
    if (costs[index] > 0) {
      const length = Math.max(1.5, (costs[index] / mostCost) * COST_ROOM);
      const y = AXIS + 1;
      figure.append(svg("line", { x1: x + BAR / 2, x2: x + BAR / 2, y1: y, y2: y + length, class: "cost" }));
    }
  });
  return figure;
}

function updateLimit() {
  const active = state.keys.filter((key) => key.status === "active").length;
  const full = active >= MAX_ACTIVE_KEYS;
  const button = $("create-open");
  $("limit-note").hidden = !full;
  if (full) {
    button.setAttribute("aria-disabled", "true");
    button.setAttribute("aria-describedby", "limit-note");
  } else {
    button.removeAttribute("aria-disabled");
    button.removeAttribute("aria-describedby");
  }
}

// ---------------------------------------------------------------- create

function openCreate() {
  if ($("create-open").getAttribute("aria-disabled") === "true") return; // the note says why
  $("create-form").hidden = false;
  $("created").hidden = true;
  $("create-name").value = "";
  setError($("create-error"), "", $("create-name"));
  $("create-dialog").showModal();
  $("create-name").focus();
}

async function submitCreate(event) {
  event.preventDefault();
  if (state.creating) return;
  const input = $("create-name");
  state.creating = true;
  $("create-submit").disabled = true;
  $("create-cancel").disabled = true;
  try {
    const created = await api("POST", `${API}create/`, { name: input.value });
    showCreatedKey(created.key);
    delete created.key; // the table, and everything that stays, gets the key without its secret
    changed(created);
  } catch (error) {
    if (error.status === 401) return;
    setError($("create-error"), error.message, input);
    input.focus();
    if (error.status === 409) load(); // the limit: another tab or script may have created keys
  } finally {
    state.creating = false;
    $("create-submit").disabled = false;
    $("create-cancel").disabled = false;
  }
}

function showCreatedKey(secret) {
  const dialog = $("create-dialog");
  if (!dialog.open) dialog.showModal(); // closed while the answer was on its way: it must still be seen
  $("create-form").hidden = true;
  $("created").hidden = false;
  $("copy").textContent = "Copy";
  $("copy-status").textContent = "";
  const field = $("created-key");
  field.value = secret;
  field.focus();
  field.select();
}

async function copyKey() {
  const field = $("created-key");
  if (!field.value) return;
  try {
    await navigator.clipboard.writeText(field.value);
    $("copy").textContent = "Copied";
    $("copy-status").textContent = "The key is on your clipboard.";
  } catch {
    field.focus();
    field.select();
    $("copy-status").textContent = "The browser refused to copy: the key is selected, press Ctrl+C (⌘C on a Mac).";
  }
}

/** Every way the dialog closes (Done, Cancel, Escape) ends here: the key leaves the page. */
function closedCreate() {
  $("created-key").value = "";
  $("created").hidden = true;
  $("create-form").hidden = false;
  $("create-name").value = "";
  $("copy").textContent = "Copy";
  $("copy-status").textContent = "";
  setError($("create-error"), "", $("create-name"));
  if (!$("keys").hidden) $("create-open").focus();
}

// ---------------------------------------------------------------- rename in place

function startRename(id) {
  const row = rowOf(id);
  const key = keyById(id);
  if (!row || !key || key.status !== "active") return;
  const parts = rows.get(row);
  if (parts.rename) {
    parts.rename.input.focus();
    return;
  }
  const form = element("form", { class: "rename", novalidate: "" });
  const inputId = `rename-${id}`;
  const errorId = `rename-error-${id}`;
  // A real <label>, not aria-label: the row keeps the key's name as text while it is edited.
  const label = element("label", { for: inputId, class: "visually-hidden" }, `New name for ${key.name}`);
  const input = element("input", { id: inputId, type: "text", autocomplete: "off", "aria-describedby": errorId });
  input.value = key.name;
  const error = element("p", { id: errorId, class: "field-error", role: "alert" });
  error.hidden = true;
  const save = element("button", { type: "submit", class: "button primary small" }, "Save");
  const cancel = element("button", { type: "button", class: "button secondary small" }, "Cancel");
  const buttons = element("div", { class: "rename-buttons" });
  buttons.append(save, cancel);
  form.append(label, input, buttons, error);
  parts.rename = { form, input, error, save };
  parts.name.replaceChildren(form);
  input.addEventListener("keydown", (event) => {
    if (event.key === "Escape") {
      event.preventDefault();
      endRename(id);
    }
  });
  cancel.addEventListener("click", () => endRename(id));
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    saveRename(id);
  });
  input.focus();
  input.select();
}

function endRename(id) {
  const row = rowOf(id);
  if (!row) return;
  const parts = rows.get(row);
  parts.rename = null;
  parts.name.replaceChildren(parts.nameText);
  const key = keyById(id);
  if (key) updateRow(row, key);
  if (parts.mode === "active") parts.renameButton.focus();
  else focusStatus(parts);
}

/** The row's status, focused when its buttons are gone (a revoked key has none). */
function focusStatus(parts) {
  parts.status.tabIndex = -1;
  parts.status.focus();
}

async function saveRename(id) {
  const row = rowOf(id);
  const editing = row && rows.get(row).rename;
  if (!editing || editing.save.disabled) return;
  editing.save.disabled = true;
  try {
    const key = await api("PATCH", keyPath(id, "update/"), { name: editing.input.value });
    rows.get(row).rename = null;
    changed(key);
    endRename(id);
  } catch (error) {
    if (error.status === 401) return;
    setError(editing.error, error.message, editing.input);
    editing.input.focus();
    if (error.status === 404 || error.status === 409) load(); // revoked or gone meanwhile: show it
  } finally {
    editing.save.disabled = false;
  }
}

// ---------------------------------------------------------------- revoke

function openRevoke(id, opener) {
  const key = keyById(id);
  if (!key || key.status !== "active") return;
  state.revoking = { id, opener, done: false };
  $("revoke-title").textContent = `Revoke ${key.name}?`;
  setError($("revoke-error"), "");
  $("revoke-dialog").showModal();
  $("revoke-cancel").focus(); // the safe choice is the default one
}

async function confirmRevoke() {
  const revoking = state.revoking;
  const button = $("revoke-confirm");
  if (!revoking || button.disabled) return;
  button.disabled = true;
  try {
    const key = await api("POST", keyPath(revoking.id, "revoke/"));
    revoking.done = true;
    changed(key);
    $("revoke-dialog").close();
  } catch (error) {
    if (error.status === 401) return;
    setError($("revoke-error"), error.message);
  } finally {
    button.disabled = false;
  }
}

function closedRevoke() {
  const revoking = state.revoking;
  state.revoking = null;
  $("revoke-title").textContent = ""; // the key's name leaves the closed dialog
  setError($("revoke-error"), "");
  if (!revoking || $("keys").hidden) return;
  const row = rowOf(revoking.id);
  if (revoking.done && row) {
    focusStatus(rows.get(row)); // its buttons are gone: focus lands on the new status
  } else if (revoking.opener && revoking.opener.isConnected) {
    revoking.opener.focus();
  }
}

// ---------------------------------------------------------------- wiring

function tokenFromInput(text) {
  let token = text.trim();
  const fragment = token.indexOf("#");
  if (fragment !== -1) token = new URLSearchParams(token.slice(fragment + 1)).get("token") ?? "";
  return token.replace(/^Bearer\s+/i, "").trim();
}

function start() {
  $("sign-in-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const token = tokenFromInput($("token-input").value);
    if (!token) {
      setError($("sign-in-error"), "Paste the session token (a JWT) from your account site.", $("token-input"));
      return;
    }
    $("token-input").value = "";
    signIn(token);
  });
  $("sign-out").addEventListener("click", () => {
    forget();
    showSignIn("");
  });

  $("create-open").addEventListener("click", openCreate);
  $("create-form").addEventListener("submit", submitCreate);
  $("create-cancel").addEventListener("click", () => $("create-dialog").close());
  $("created-done").addEventListener("click", () => $("create-dialog").close());
  $("copy").addEventListener("click", copyKey);
  $("create-dialog").addEventListener("cancel", (event) => {
    if (state.creating) event.preventDefault(); // the answer may hold a key that must be shown
  });
  $("create-dialog").addEventListener("close", closedCreate);

  $("revoke-confirm").addEventListener("click", confirmRevoke);
  $("revoke-cancel").addEventListener("click", () => $("revoke-dialog").close());
  $("revoke-dialog").addEventListener("close", closedRevoke);

  $("keys-body").addEventListener("click", (event) => {
    const button = event.target.closest("button[data-action]");
    if (!button) return;
    const id = button.closest("tr").dataset.keyId;
    if (button.dataset.action === "rename") startRename(id);
    else if (button.dataset.action === "revoke") openRevoke(id, button);
  });

  document.addEventListener("visibilitychange", () => {
    if (document.visibilityState === "visible" && state.token) load();
  });
  window.addEventListener("hashchange", () => {
    const token = tokenFromFragment();
    if (token) signIn(token);
  });

  const token = tokenFromFragment() ?? storedToken();
  if (token) signIn(token);
  else showSignIn("");
}

start();
