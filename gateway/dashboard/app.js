// meterwatch inspector dashboard: plain JS, no build step, no third-party code.
//
// The API key lives in sessionStorage (this tab only) and is sent in the
// Authorization header. Live alert changes come from the SSE route read with
// fetch() and a stream reader, because EventSource cannot send headers and a
// key in a URL would end up in logs and history. All data is put into the page
// with textContent / DOM nodes, never as HTML.
"use strict";

const API = "/api/v1";
const KEY_SLOT = "meterwatch.key";
const OPEN_STATES = ["open", "acknowledged"];
const CHART_HOURS = 24;

const $ = (id) => document.getElementById(id);
const state = { me: null, alerts: new Map(), stream: null, route: null, pending: null };

function key() { return sessionStorage.getItem(KEY_SLOT); }

class ApiError extends Error {
  constructor(status, detail) { super(detail); this.status = status; }
}

async function api(path, options = {}) {
  const headers = Object.assign({ Authorization: "Bearer " + key() }, options.headers || {});
  if (options.body !== undefined) headers["Content-Type"] = "application/json";
  const res = await fetch(API + path, {
    method: options.method || "GET",
    headers,
    body: options.body === undefined ? undefined : JSON.stringify(options.body),
    cache: "no-store",
  });
  if (res.status === 401) { logout("Your key was not accepted. Log in again."); }
  if (!res.ok) {
    let detail = res.statusText;
    try { detail = (await res.json()).detail || detail; } catch (_) { /* not JSON */ }
    if (typeof detail !== "string") detail = JSON.stringify(detail);
    throw new ApiError(res.status, detail);
  }
  return res.status === 204 ? null : res.json();
}

// ---- formatting -----------------------------------------------------------------

function fmtTime(ns) {
  if (ns === null || ns === undefined) return "—";
  return new Date(Number(ns) / 1e6).toISOString().replace("T", " ").slice(0, 19) + "Z";
}

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") node.className = v;
    else if (k.startsWith("data-")) node.setAttribute(k, v);
    else node[k] = v;
  }
  for (const child of children) {
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function show(view) {
  for (const id of ["login-view", "alerts-view", "device-view"]) $(id).hidden = id !== view;
}

// ---- login ------------------------------------------------------------------------

async function login(candidate) {
  sessionStorage.setItem(KEY_SLOT, candidate);
  try {
    state.me = await api("/me");
  } catch (err) {
    sessionStorage.removeItem(KEY_SLOT);
    throw err;
  }
}

function logout(message) {
  sessionStorage.removeItem(KEY_SLOT);
  state.me = null;
  if (state.stream) state.stream.abort();
  state.stream = null;
  state.alerts.clear();
  $("who").textContent = "";
  $("logout").hidden = true;
  setLive(false);
  show("login-view");
  $("login-error").textContent = message || "";
}

// ---- live stream (fetch + reader; SSE framing parsed here) -------------------------

function setLive(on) {
  $("live").textContent = on ? "live" : "offline";
  $("live").classList.toggle("on", on);
}

async function streamAlerts() {
  let delay = 1000;
  while (key()) {
    const ctrl = new AbortController();
    state.stream = ctrl;
    try {
      const res = await fetch(API + "/alerts/stream", {
        headers: { Authorization: "Bearer " + key(), Accept: "text/event-stream" },
        signal: ctrl.signal,
        cache: "no-store",
      });
      if (res.status === 401) { logout("Your key was not accepted. Log in again."); return; }
      if (!res.ok || !res.body) throw new Error("stream refused: " + res.status);
      setLive(true);
      delay = 1000;
      // Changes made while the stream was down are picked up by a fresh list.
      await loadAlerts();
      const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += value.replace(/\r\n?/g, "\n");
        let cut;
        while ((cut = buffer.indexOf("\n\n")) >= 0) {
          handleFrame(buffer.slice(0, cut));
          buffer = buffer.slice(cut + 2);
        }
      }
    } catch (err) {
      if (ctrl.signal.aborted) return;
    }
    setLive(false);
    await new Promise((r) => setTimeout(r, delay));
    delay = Math.min(delay * 2, 30000);
  }
}

function handleFrame(frame) {
  let event = "message";
  const data = [];
  for (const line of frame.split("\n")) {
    if (line.startsWith(":")) continue; // comment / keep-alive
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    const value = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
    if (field === "event") event = value;
    else if (field === "data") data.push(value);
  }
  if (event !== "alert" || data.length === 0) return;
  try {
    const change = JSON.parse(data.join("\n"));
    upsertAlert(change.alert, true);
  } catch (_) { /* ignore a malformed frame */ }
}

// ---- alerts -----------------------------------------------------------------------

async function pages(path, params, maxPages) {
  // Follows next_cursor; page size is the gateway's api.max_page_size (from /me).
  const items = [];
  let cursor = null;
  for (let i = 0; i < maxPages; i++) {
    const q = new URLSearchParams(params);
    q.set("limit", String(state.me.max_page_size));
    if (cursor) q.set("cursor", cursor);
    const page = await api(path + "?" + q.toString());
    items.push(...page.items);
    cursor = page.next_cursor;
    if (!cursor) break;
  }
  return items;
}

async function loadAlerts() {
  const params = OPEN_STATES.map((s) => ["status", s]);
  const items = await pages("/alerts", params, 20);
  state.alerts.clear();
  for (const a of items) state.alerts.set(a.id, a);
  renderAlerts();
  if (state.route && state.route.device) refreshDeviceAlerts(state.route.device);
}

function upsertAlert(alert, fresh) {
  if (OPEN_STATES.includes(alert.status)) state.alerts.set(alert.id, { ...alert, fresh });
  else state.alerts.delete(alert.id);
  renderAlerts();
  if (state.route && state.route.device === alert.device) {
    refreshDeviceAlerts(alert.device);
  }
}

function actionButtons(alert) {
  const cell = el("td", { class: "actions" });
  if (!state.me || !["inspector", "admin"].includes(state.me.role)) return cell;
  if (alert.status === "open") {
    cell.append(el("button", { type: "button", class: "ack", onclick: () => askAction(alert, "acknowledge") }, "Acknowledge"));
  }
  if (OPEN_STATES.includes(alert.status)) {
    cell.append(el("button", { type: "button", class: "resolve", onclick: () => askAction(alert, "resolve") }, "Resolve"));
    cell.append(el("button", { type: "button", class: "dismiss", onclick: () => askAction(alert, "dismiss") }, "Dismiss"));
  }
  return cell;
}

function numbers(alert) {
  // The evidence numbers behind the alert, e.g. "estimate 2.1 % (95 % CI 1.6..2.6) · score 4.2 / 1".
  const unit = alert.unit ? " " + alert.unit : "";
  const parts = [];
  if (alert.estimate !== null && alert.estimate !== undefined) {
    let text = "estimate " + Number(alert.estimate).toPrecision(3) + unit;
    if (alert.ci_low !== null && alert.ci_high !== null) {
      text += ` (95 % CI ${Number(alert.ci_low).toPrecision(3)}..${Number(alert.ci_high).toPrecision(3)})`;
    }
    parts.push(text);
  }
  parts.push(`score ${Number(alert.score).toPrecision(3)} / ${Number(alert.threshold).toPrecision(3)}`);
  if (alert.count > 1) parts.push(`seen ${alert.count}×`);
  return parts.join(" · ");
}

function alertRow(alert, withDevice) {
  const row = el("tr", { "data-alert": String(alert.id), "data-status": alert.status });
  if (alert.fresh) row.classList.add("fresh");
  row.append(el("td", { class: "sev sev-" + alert.severity }, alert.severity));
  if (withDevice) {
    row.append(el("td", {}, el("a", { href: "#/devices/" + encodeURIComponent(alert.device) }, alert.device)));
  }
  row.append(
    el("td", {}, alert.detector),
    el("td", { class: "status" }, alert.status),
    el("td", {}, fmtTime(alert.updated_ns)),
    el("td", {}, alert.explanation, el("div", { class: "muted numbers" }, numbers(alert))),
    actionButtons(alert),
  );
  return row;
}

function sortedAlerts(list) {
  const rank = { critical: 0, warning: 1, info: 2 };
  return list.sort((a, b) => (rank[a.severity] - rank[b.severity]) || (b.updated_ns - a.updated_ns));
}

function renderAlerts() {
  const body = $("alerts-body");
  const list = sortedAlerts([...state.alerts.values()]);
  body.replaceChildren(...list.map((a) => alertRow(a, true)));
  for (const a of list) a.fresh = false; // highlight a new change once, not on every render
  $("alert-count").textContent = "(" + list.length + ")";
  $("alerts-empty").hidden = list.length > 0;
}

function askAction(alert, action) {
  state.pending = { alert, action };
  const verb = { acknowledge: "Acknowledge", resolve: "Resolve", dismiss: "Dismiss (false alarm)" };
  $("action-title").textContent = verb[action] + " alert on " + alert.device;
  $("action-note").value = "";
  $("action-error").textContent = "";
  $("action-dialog").showModal();
}

async function doAction(event) {
  event.preventDefault();
  const pending = state.pending;
  if (!pending) return;
  try {
    const updated = await api(
      "/alerts/" + encodeURIComponent(pending.alert.id) + "/" + pending.action,
      { method: "POST", body: { note: $("action-note").value } },
    );
    $("action-dialog").close();
    state.pending = null;
    upsertAlert(updated, false);
  } catch (err) {
    $("action-error").textContent = err.message;
  }
}

// ---- devices ----------------------------------------------------------------------

async function loadDevices() {
  const devices = await api("/devices");
  $("device-list").replaceChildren(...devices.map((d) => el(
    "li", {},
    el("a", { href: "#/devices/" + encodeURIComponent(d.id) }, d.id), " ",
    el("span", { class: "state-" + d.state }, d.state), " ",
    el("span", { class: "muted" }, d.kind),
  )));
}

async function showDevice(id) {
  show("device-view");
  $("device-id").textContent = id;
  $("device-meta").replaceChildren();
  $("chart").replaceChildren();
  $("device-alerts").replaceChildren();
  let dev;
  try {
    dev = await api("/devices/" + encodeURIComponent(id));
  } catch (err) {
    $("device-meta").replaceChildren(el("dd", { class: "error" }, err.message));
    return;
  }
  const meta = [["Kind", dev.kind], ["Site", dev.site], ["Profile", dev.profile],
    ["State", dev.state], ["Last quality", dev.last_quality || "—"],
    ["Last ok", fmtTime(dev.last_ok_ns)], ["Errors", dev.errors], ["Open alerts", dev.open_alerts]];
  $("device-meta").replaceChildren(...meta.flatMap(([k, v]) => [el("dt", {}, k), el("dd", {}, v)]));
  await Promise.all([loadChart(id, dev.kind), refreshDeviceAlerts(id)]);
}

async function refreshDeviceAlerts(id) {
  try {
    renderDeviceAlerts(id, await pages("/alerts", [["device", id]], 4));
  } catch (err) {
    $("device-alerts").replaceChildren(el("tr", {}, el("td", { class: "error" }, err.message)));
  }
}

function renderDeviceAlerts(id, items) {
  $("device-alerts").replaceChildren(...items.map((a) => alertRow(a, false)));
}

// The field a device page's chart opens on, per device kind.
const PRIMARY_FIELD = {
  electricity: "power_total_w",
  water: "flow_m3h",
  gas: "volume_converted_m3",
  dispenser_nozzle: "totalizer_volume_l",
  tank_gauge: "net_volume_l",
};

async function loadChart(id, kind) {
  const end = Date.now() * 1e6;
  const start = end - CHART_HOURS * 3600 * 1e9;
  let data;
  try {
    data = await api(`/devices/${encodeURIComponent(id)}/readings?start_ns=${start}&end_ns=${end}&every_s=300`);
  } catch (err) {
    $("chart").replaceChildren(el("p", { class: "error" }, err.message));
    return;
  }
  const select = $("chart-field");
  const names = Object.keys(data.fields).sort();
  select.replaceChildren(...names.map((n) => el("option", { value: n }, n)));
  // Open on the field an inspector looks at first for this kind of device.
  const primary = PRIMARY_FIELD[kind];
  if (primary && names.includes(primary)) select.value = primary;
  const draw = () => drawChart($("chart"), data.ts_ns, data.fields[select.value] || []);
  select.onchange = draw;
  $("chart-range").textContent = `last ${CHART_HOURS} h, ${data.ts_ns.length} points`;
  draw();
}

const SVG = "http://www.w3.org/2000/svg";
function svg(tag, attrs) {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  return node;
}

function drawChart(box, ts, values) {
  const W = 1000, H = 260, L = 60, R = 10, T = 10, B = 24;
  const pts = [];
  for (let i = 0; i < ts.length; i++) {
    if (values[i] !== null && Number.isFinite(values[i])) pts.push([Number(ts[i]), values[i]]);
  }
  const root = svg("svg", { viewBox: `0 0 ${W} ${H}`, preserveAspectRatio: "none", role: "img" });
  if (pts.length === 0) {
    const t = svg("text", { x: W / 2, y: H / 2, "text-anchor": "middle" });
    t.textContent = "no readings in this range";
    root.append(t);
    box.replaceChildren(root);
    return;
  }
  const x0 = pts[0][0], x1 = pts[pts.length - 1][0] || x0 + 1;
  let y0 = Math.min(...pts.map((p) => p[1])), y1 = Math.max(...pts.map((p) => p[1]));
  if (y0 === y1) { y0 -= 1; y1 += 1; }
  const sx = (x) => L + ((x - x0) / Math.max(1, x1 - x0)) * (W - L - R);
  const sy = (y) => T + (1 - (y - y0) / (y1 - y0)) * (H - T - B);
  root.append(svg("line", { class: "axis", x1: L, y1: H - B, x2: W - R, y2: H - B }));
  root.append(svg("line", { class: "axis", x1: L, y1: T, x2: L, y2: H - B }));
  for (const [y, label] of [[y1, y1], [y0, y0]]) {
    const t = svg("text", { x: L - 4, y: sy(y) + 4, "text-anchor": "end" });
    t.textContent = Number(label).toPrecision(5);
    root.append(t);
  }
  for (const [x, anchor] of [[x0, "start"], [x1, "end"]]) {
    const t = svg("text", { x: sx(x), y: H - 6, "text-anchor": anchor });
    t.textContent = fmtTime(x).slice(5, 16);
    root.append(t);
  }
  const d = pts.map((p, i) => (i ? "L" : "M") + sx(p[0]).toFixed(1) + " " + sy(p[1]).toFixed(1)).join(" ");
  root.append(svg("path", { class: "line", d }));
  box.replaceChildren(root);
}

// ---- routing ----------------------------------------------------------------------

async function route() {
  if (!key()) { show("login-view"); return; }
  const m = location.hash.match(/^#\/devices\/(.+)$/);
  state.route = m ? { device: decodeURIComponent(m[1]) } : {};
  if (m) await showDevice(state.route.device);
  else show("alerts-view");
}

async function start() {
  $("who").textContent = `${state.me.name} (${state.me.role})`;
  $("logout").hidden = false;
  await Promise.all([loadAlerts(), loadDevices()]);
  await route();
  streamAlerts();
}

document.addEventListener("DOMContentLoaded", async () => {
  $("login-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    $("login-error").textContent = "";
    try {
      await login($("key").value.trim());
      $("key").value = "";
      await start();
    } catch (err) {
      $("login-error").textContent = err.status === 401 ? "That key was not accepted." : err.message;
    }
  });
  $("logout").addEventListener("click", () => logout());
  $("action-form").addEventListener("submit", doAction);
  $("action-cancel").addEventListener("click", () => { $("action-dialog").close(); state.pending = null; });
  window.addEventListener("hashchange", route);
  if (key()) {
    try { state.me = await api("/me"); await start(); return; } catch (_) { logout(); return; }
  }
  show("login-view");
});
