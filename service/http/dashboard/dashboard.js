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
// The API's rule for a spend limit: a decimal in CHF, at most 9 places, greater than 0.
const LIMIT_RULE = /^[0-9]+(\.[0-9]{1,9})?$/;

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
  editing: null, // { id, opener, done }
  rotating: null, // { id, opener, done }
  creating: false, // a create request is in flight
  shownFor: null, // the id of the key whose secret the create dialog shows: its row gets focus after Done
  leakUrls: new Map(), // key id -> where a leaked key was found (from its history), "" until known
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

/** An amount for display: the API's exact decimal string, trailing zeros cut down to 2 decimals, no float. */
function amount(value) {
  const match = /^(\d+)\.(\d+)$/.exec(value);
  if (!match) return value;
  return `${match[1]}.${match[2].replace(/0+$/, "").padEnd(2, "0")}`;
}

const chf = (value) => `CHF ${amount(value)}`;

/** An API amount (9 places) as an exact integer of billionths, to compare without floats. */
function billionths(value) {
  const [whole, decimals = ""] = value.split(".");
  return BigInt(whole + decimals.padEnd(9, "0").slice(0, 9));
}

/** A moment as text: the date and time of the browser's zone, in a <time> naming the UTC instant. */
function moment(iso) {
  const at = new Date(iso);
  return element("time", { datetime: iso, title: `${iso} (UTC)` }, `${dateOnly.format(at)} ${timeOnly.format(at)}`);
}

/** Keys that take one of the 5 slots: active and not replaced by a rotation. */
const counted = (key) => key.status === "active" && key.rotated_to === null;

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

// Each cell carries its column's name: on a narrow screen the rows become cards that show it.
const COLUMNS = [
  ["name", "cell-name", ""],
  ["status", "cell-status", ""],
  ["month", "cell-month", "This month"],
  ["created", "cell-time", "Created"],
  ["lastUsed", "cell-time", "Last used"],
  ["requests", "num", "Requests"],
  ["totalChf", "num", "Total CHF"],
  ["recentChf", "num", "Last 30 days CHF"],
  ["chart", "cell-chart", "Usage (30 days)"],
  ["actions", "cell-actions", ""],
];

function newRow(id) {
  const row = element("tr", { role: "row", id: `key-${id}` });
  row.dataset.keyId = id;
  const cells = {};
  for (const [part, className, label] of COLUMNS) {
    cells[part] = row.appendChild(element("td", { role: "cell", class: className }));
    if (label) cells[part].dataset.label = label;
  }
  const parts = {
    ...cells,
    nameText: cells.name.appendChild(element("span", { class: "key-name", tabindex: "-1" })),
    key: cells.name.appendChild(element("code", { class: "masked" })), // under the name: one column less
    badge: cells.status.appendChild(element("span", { class: "badge" })),
    notes: cells.status.appendChild(element("div", { class: "status-notes" })),
    monthText: cells.month.appendChild(element("span", { class: "month-text" })),
    bar: element("div", { role: "progressbar", class: "spend", "aria-valuemin": "0" }),
    reached: element("span", { class: "reached" }, "Limit reached: requests are refused"),
    chartData: null,
    notesData: null,
    mode: null,
  };
  parts.bar.append(element("div", { class: "spend-fill" }));
  cells.month.append(parts.bar, parts.reached);
  rows.set(row, parts);
  return row;
}

const STATUS_TEXT = { active: "Active", revoked: "Revoked", expired: "Expired" };

function updateRow(row, key) {
  const parts = rows.get(row);
  setText(parts.nameText, key.name);
  setText(parts.key, key.masked_key);
  setText(parts.badge, STATUS_TEXT[key.status] ?? key.status);
  parts.badge.className = `badge ${key.status}`;
  row.dataset.status = key.status;
  updateNotes(parts, key);
  updateMonth(parts, key);
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

/** Under the status: expiry, the rotation's links both ways, and why a key was revoked. */
function updateNotes(parts, key) {
  const linked = (id) => keyById(id) ?? { id, name: id, masked_key: "" };
  const notes = [];
  if (key.rotated_to) notes.push(["link", "Rotated →", linked(key.rotated_to)]);
  if (key.rotated_from) notes.push(["link", "Replaces", linked(key.rotated_from)]);
  if (key.status === "revoked" && key.revoked_reason === "leaked") {
    notes.push(["text", "Revoked automatically: found in public", leakUrl(key.id)]);
  } else if (key.status === "revoked" && key.revoked_reason === "rotated") {
    notes.push(["text", "Revoked when it was rotated"]);
  }
  if (key.status === "expired") notes.push(["time", "Expired", key.expires_at]);
  else if (key.status === "active" && key.expires_at) {
    notes.push(["time", key.rotated_to ? "Works until" : "Expires", key.expires_at]);
  }
  const notesData = JSON.stringify(notes);
  if (parts.notesData === notesData) return; // rebuilt only when it changes: a focused link stays
  parts.notesData = notesData;
  parts.notes.replaceChildren(...notes.map(note));
}

function note([kind, text, detail]) {
  const line = element("p", { class: `status-note ${kind}` }, `${text} `);
  if (kind === "time") line.append(moment(detail));
  else if (kind === "link") {
    const label = detail.masked_key ? `${detail.name} (${detail.masked_key})` : detail.name;
    line.append(element("a", { href: `#key-${detail.id}`, "data-goto": detail.id }, label));
  } else if (detail) {
    // The report's URL as text, never a link: the page does not send anyone to a place it did not check.
    line.append("at ", element("code", { class: "leak-url" }, detail));
  }
  return line;
}

/** Where a leaked key was found: in its ApiKeyRevoked event, fetched once per key. */
function leakUrl(id) {
  if (state.leakUrls.has(id)) return state.leakUrls.get(id);
  state.leakUrls.set(id, "");
  api("GET", keyPath(id, "events/"))
    .then((history) => {
      const revoked = history.data.findLast((event) => event.type === "ApiKeyRevoked");
      state.leakUrls.set(id, revoked?.data?.url ?? "");
      const row = rowOf(id);
      const key = keyById(id);
      if (row && key) updateNotes(rows.get(row), key);
    })
    .catch(() => state.leakUrls.delete(id)); // asked again at the next refresh
  return "";
}

/** Month-to-date CHF, and against the limit a bar that screen readers read as a progress bar. */
function updateMonth(parts, key) {
  const cost = key.usage.this_month.cost_chf;
  const limit = key.monthly_spend_limit_chf;
  parts.month.dataset.chf = cost;
  parts.bar.hidden = limit === null;
  if (limit === null) {
    setText(parts.monthText, `${chf(cost)} this month`);
    parts.reached.hidden = true;
    return;
  }
  const text = `${chf(cost)} of ${amount(limit)} this month`;
  const reached = billionths(cost) >= billionths(limit);
  setText(parts.monthText, text);
  parts.reached.hidden = !reached || key.status !== "active";
  parts.bar.classList.toggle("over", reached);
  parts.bar.setAttribute("aria-label", `Spend this month for ${key.name}`);
  parts.bar.setAttribute("aria-valuemax", amount(limit));
  parts.bar.setAttribute("aria-valuenow", reached ? amount(limit) : amount(cost));
  parts.bar.setAttribute("aria-valuetext", text);
  const share = Math.min(1, Number(cost) / Number(limit)); // the drawing only; the text is exact
  parts.bar.firstElementChild.style.width = `${(share * 100).toFixed(2)}%`; // CSSOM: allowed by the CSP
}

function setTime(cell, iso, otherwise) {
  if (!iso) {
    if (cell.firstElementChild || cell.textContent !== otherwise) cell.replaceChildren(otherwise);
    return;
  }
  const current = cell.firstElementChild;
  if (current && current.getAttribute("datetime") === iso) return;
  const at = new Date(iso);
  const time = element("time", { datetime: iso, title: `${iso} (UTC)` });
  time.append(dateOnly.format(at), " ", element("span", { class: "clock" }, timeOnly.format(at)));
  cell.replaceChildren(time);
}

function setChf(cell, value) {
  setText(cell, chf(value));
  cell.title = `exactly CHF ${value}`;
  cell.dataset.chf = value;
}

const ACTIONS = {
  active: [["edit", "secondary", "Edit"], ["rotate", "secondary", "Rotate"], ["revoke", "danger-outline", "Revoke"]],
  grace: [["edit", "secondary", "Edit"], ["revoke", "danger-outline", "Revoke"]], // rotated, still working
  none: [],
};

function updateActions(parts, key) {
  const mode = key.status !== "active" ? "none" : key.rotated_to ? "grace" : "active";
  if (parts.mode !== mode) {
    const buttons = ACTIONS[mode].map(([action, style, text]) =>
      element("button", { type: "button", class: `button ${style} small`, "data-action": action }, text),
    );
    parts.actions.replaceChildren(...buttons);
    if (!buttons.length) parts.actions.append(element("span", { class: "muted", "aria-hidden": "true" }, "—"));
    parts.mode = mode;
  }
  for (const button of parts.actions.querySelectorAll("button")) {
    button.setAttribute("aria-label", `${button.textContent} ${key.name}`);
  }
}

/** A rotation link: the other key's row comes into view and takes focus. */
function goTo(id) {
  const row = rowOf(id);
  if (!row) return;
  const name = rows.get(row).nameText;
  row.scrollIntoView({ block: "center", inline: "start" }); // "start": the frame keeps its columns in order
  row.classList.add("target");
  name.addEventListener("blur", () => row.classList.remove("target"), { once: true });
  name.focus({ preventScroll: true });
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
  const active = state.keys.filter(counted).length;
  setText($("active-count"), `${active} of ${MAX_ACTIVE_KEYS} active keys`);
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

// ---------------------------------------------------------------- the fields of a key (create and edit)

class FieldError extends Error {
  constructor(message, control) {
    super(message);
    this.control = control;
  }
}

const fieldsOf = (form) => ({
  name: $(`${form}-name`),
  expires: $(`${form}-expires`),
  limit: $(`${form}-limit`),
  error: $(`${form}-error`),
});

/** The expiry field as the API's RFC 3339 instant, null when empty; the field is the browser's local time. */
function expiryFrom(field) {
  if (!field.value) return null;
  const at = new Date(field.value);
  if (Number.isNaN(at.getTime())) throw new FieldError("Enter the expiry as a date and a time.", field);
  if (at <= new Date()) throw new FieldError("The expiry must be in the future; leave it empty for none.", field);
  return at.toISOString();
}

function limitFrom(field) {
  const value = field.value.trim();
  if (!value) return null;
  if (!LIMIT_RULE.test(value) || !/[1-9]/.test(value)) {
    throw new FieldError("Enter the monthly spend limit in CHF, greater than 0, with at most 9 decimals (e.g. 25 or 25.50).", field);
  }
  return value;
}

/** An instant as a datetime-local value in the browser's zone (minutes), for the edit form. */
function localInput(iso) {
  if (!iso) return "";
  const at = new Date(iso);
  const pad = (n) => String(n).padStart(2, "0");
  return `${at.getFullYear()}-${pad(at.getMonth() + 1)}-${pad(at.getDate())}T${pad(at.getHours())}:${pad(at.getMinutes())}`;
}

function clearFieldErrors(fields) {
  setError(fields.error, "");
  for (const control of [fields.name, fields.expires, fields.limit]) control.removeAttribute("aria-invalid");
}

/** The form's one alert; the API names the field it refuses, so that field is marked and focused. */
function showFieldError(fields, error) {
  clearFieldErrors(fields);
  let control = error.control;
  if (!control) {
    if (error.message.includes("monthly_spend_limit_chf")) control = fields.limit;
    else if (error.message.includes("expires_at")) control = fields.expires;
    else control = fields.name;
  }
  setError(fields.error, error.message, control);
  control.focus();
}

// ---------------------------------------------------------------- create

function openCreate() {
  if ($("create-open").getAttribute("aria-disabled") === "true") return; // the note says why
  $("create-form").hidden = false;
  $("created").hidden = true;
  const fields = fieldsOf("create");
  for (const control of [fields.name, fields.expires, fields.limit]) control.value = "";
  clearFieldErrors(fields);
  $("create-dialog").showModal();
  fields.name.focus();
}

async function submitCreate(event) {
  event.preventDefault();
  if (state.creating) return;
  const fields = fieldsOf("create");
  state.creating = true;
  $("create-submit").disabled = true;
  $("create-cancel").disabled = true;
  try {
    const body = { name: fields.name.value };
    const expiresAt = expiryFrom(fields.expires);
    const limit = limitFrom(fields.limit);
    if (expiresAt !== null) body.expires_at = expiresAt;
    if (limit !== null) body.monthly_spend_limit_chf = limit;
    const created = await api("POST", `${API}create/`, body);
    showCreatedKey(created.key, {});
    delete created.key; // the table, and everything that stays, gets the key without its secret
    changed(created);
  } catch (error) {
    if (error.status === 401) return;
    showFieldError(fields, error);
    if (error.status === 409) load(); // the limit: another tab or script may have created keys
  } finally {
    state.creating = false;
    $("create-submit").disabled = false;
    $("create-cancel").disabled = false;
  }
}

/** The create dialog's shown-once view, for a created key and for the new key of a rotation. */
function showCreatedKey(secret, { keyId = null, title, note = "" }) {
  const dialog = $("create-dialog");
  if (!dialog.open) dialog.showModal(); // closed while the answer was on its way: it must still be seen
  state.shownFor = keyId;
  if (title) $("create-title").textContent = title;
  $("created-note").textContent = note;
  $("created-note").hidden = !note;
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
  $("create-title").textContent = "Create New Key";
  $("created-note").textContent = "";
  const fields = fieldsOf("create");
  for (const control of [fields.name, fields.expires, fields.limit]) control.value = "";
  clearFieldErrors(fields);
  $("copy").textContent = "Copy";
  $("copy-status").textContent = "";
  const shownFor = state.shownFor;
  state.shownFor = null;
  if ($("keys").hidden) return;
  const row = shownFor && rowOf(shownFor);
  if (row) rows.get(row).nameText.focus(); // after a rotation: the new key's row
  else $("create-open").focus();
}

// ---------------------------------------------------------------- edit: name, expiry, spend limit

function openEdit(id, opener) {
  const key = keyById(id);
  if (!key || key.status !== "active") return;
  state.editing = { id, opener, done: false };
  const fields = fieldsOf("edit");
  $("edit-title").textContent = `Edit ${key.name}`;
  fields.name.value = key.name;
  fields.expires.value = localInput(key.expires_at);
  fields.limit.value = key.monthly_spend_limit_chf === null ? "" : amount(key.monthly_spend_limit_chf);
  fields.expires.dataset.shown = fields.expires.value;
  fields.limit.dataset.shown = fields.limit.value;
  clearFieldErrors(fields);
  $("edit-dialog").showModal();
  fields.name.focus();
  fields.name.select();
}

/** What the form changes: only fields that differ from what it showed (a shown expiry keeps its seconds). */
function editedFields(fields, key) {
  const body = {};
  if (fields.name.value !== key.name) body.name = fields.name.value;
  if (fields.expires.value !== fields.expires.dataset.shown) body.expires_at = expiryFrom(fields.expires);
  if (fields.limit.value.trim() !== fields.limit.dataset.shown) body.monthly_spend_limit_chf = limitFrom(fields.limit);
  return body;
}

async function submitEdit(event) {
  event.preventDefault();
  const editing = state.editing;
  const button = $("edit-submit");
  const key = editing && keyById(editing.id);
  if (!key || button.disabled) return;
  const fields = fieldsOf("edit");
  button.disabled = true;
  try {
    const body = editedFields(fields, key);
    if (Object.keys(body).length) changed(await api("PATCH", keyPath(editing.id, "update/"), body));
    editing.done = true;
    $("edit-dialog").close();
  } catch (error) {
    if (error.status === 401) return;
    showFieldError(fields, error);
    if (error.status === 404 || error.status === 409) load(); // revoked, expired or gone meanwhile
  } finally {
    button.disabled = false;
  }
}

function closedEdit() {
  const editing = state.editing;
  state.editing = null;
  const fields = fieldsOf("edit");
  for (const control of [fields.name, fields.expires, fields.limit]) control.value = "";
  $("edit-title").textContent = "";
  clearFieldErrors(fields);
  if (editing) refocus(editing);
}

/** After a row's dialog: back to the button that opened it, or to the row's status if it is gone. */
function refocus({ id, opener }) {
  if ($("keys").hidden) return;
  if (opener && opener.isConnected) {
    opener.focus();
    return;
  }
  const row = rowOf(id);
  if (row) focusStatus(rows.get(row));
}

/** The row's status, focused when its buttons are gone (a revoked key has none). */
function focusStatus(parts) {
  parts.badge.tabIndex = -1;
  parts.badge.focus();
}

// ---------------------------------------------------------------- rotate

function openRotate(id, opener) {
  const key = keyById(id);
  if (!key || !counted(key)) return;
  state.rotating = { id, opener, done: false };
  $("rotate-title").textContent = `Rotate ${key.name}?`;
  const choices = $("rotate-form").elements.grace;
  choices.value = "86400"; // the API's default: a day to put the new key in place
  setError($("rotate-error"), "");
  $("rotate-dialog").showModal();
  [...choices].find((choice) => choice.checked).focus();
}

async function submitRotate(event) {
  event.preventDefault();
  const rotating = state.rotating;
  const button = $("rotate-submit");
  const key = rotating && keyById(rotating.id);
  if (!key || button.disabled) return;
  const grace = Number($("rotate-form").elements.grace.value);
  button.disabled = true;
  try {
    const rotated = await api("POST", keyPath(rotating.id, "rotate/"), { grace_period_seconds: grace });
    const secret = rotated.key;
    delete rotated.key; // as on create: the secret stays in the dialog only
    rotating.done = true;
    $("rotate-dialog").close();
    showCreatedKey(secret, { keyId: rotated.id, title: `New key for ${key.name}`, note: rotationNote(grace) });
    changed(rotated);
  } catch (error) {
    if (error.status === 401) return;
    setError($("rotate-error"), error.message);
    if (error.status === 409) load(); // rotated, revoked or expired meanwhile
  } finally {
    button.disabled = false;
  }
}

function rotationNote(grace) {
  if (grace === 0) return "The old key is revoked: requests with it are refused from now on.";
  const until = new Date(Date.now() + grace * 1000);
  return `The old key keeps working until ${dateOnly.format(until)} ${timeOnly.format(until)}, then expires. Put the new key in its place before then.`;
}

function closedRotate() {
  const rotating = state.rotating;
  state.rotating = null;
  $("rotate-title").textContent = "";
  setError($("rotate-error"), "");
  if (rotating && !rotating.done) refocus(rotating); // when done, the new key's dialog has the focus
}


// ---------------------------------------------------------------- revoke

function openRevoke(id, opener) {
  const key = keyById(id);
  if (!key || key.status !== "active") return;
  state.revoking = { id, opener, done: false };
  $("revoke-title").textContent = `Revoke ${key.name}?`;
  $("revoke-rotated").hidden = key.rotated_to === null;
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

  $("edit-form").addEventListener("submit", submitEdit);
  $("edit-cancel").addEventListener("click", () => $("edit-dialog").close());
  $("edit-dialog").addEventListener("close", closedEdit);
  $("rotate-form").addEventListener("submit", submitRotate);
  $("rotate-cancel").addEventListener("click", () => $("rotate-dialog").close());
  $("rotate-dialog").addEventListener("cancel", (event) => {
    if ($("rotate-submit").disabled) event.preventDefault(); // the answer may hold a key that must be shown
  });
  $("rotate-dialog").addEventListener("close", closedRotate);

  $("revoke-confirm").addEventListener("click", confirmRevoke);
  $("revoke-cancel").addEventListener("click", () => $("revoke-dialog").close());
  $("revoke-dialog").addEventListener("close", closedRevoke);

  const opens = { edit: openEdit, rotate: openRotate, revoke: openRevoke };
  $("keys-body").addEventListener("click", (event) => {
    const link = event.target.closest("a[data-goto]");
    if (link) {
      event.preventDefault(); // the fragment stays clean: it is where a token arrives
      goTo(link.dataset.goto);
      return;
    }
    const button = event.target.closest("button[data-action]");
    if (button) opens[button.dataset.action](button.closest("tr").dataset.keyId, button);
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
