// Wedge fleet dashboard: a client of the public HTTP API (/api/v1), no dependencies.
// Everything the API returns is data from the network (node ids, labels, log lines): it is
// only ever put into the page as text, never as HTML.
"use strict";

const POLL_MS = 2000;
const NODE_LIST_POLL_MS = 5000;
const MAX_ROWS = 500;
const TOKEN_KEY = "wedge-token";

const state = {
  filter: "all",
  search: "",
  nodes: null,
  nodesAt: 0,
  stream: null,
  timer: null,
  generation: 0,
  bannerKind: null,
};

// ---- DOM helpers -------------------------------------------------------------------------

function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "class") el.className = v;
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat()) {
    if (c === undefined || c === null || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

const svgNS = "http://www.w3.org/2000/svg";
function s(tag, attrs) {
  const el = document.createElementNS(svgNS, tag);
  for (const [k, v] of Object.entries(attrs || {})) el.setAttribute(k, String(v));
  return el;
}

function badge(status) {
  return h("span", { class: `badge ${status}`, "data-testid": "status" }, status);
}

function ago(iso) {
  if (!iso) return "never";
  const secs = Math.max(0, (Date.now() - Date.parse(iso)) / 1000);
  if (secs < 60) return `${Math.round(secs)} s ago`;
  if (secs < 3600) return `${Math.round(secs / 60)} min ago`;
  if (secs < 86400) return `${Math.round(secs / 3600)} h ago`;
  return `${Math.round(secs / 86400)} d ago`;
}

function when(iso) {
  return h("time", { datetime: iso || "", title: iso || "" }, ago(iso));
}

function bytes(n) {
  if (!n) return "0 B";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return `${n.toFixed(i ? 1 : 0)} ${units[i]}`;
}

function labels(obj) {
  return Object.entries(obj || {}).map(([k, v]) => h("span", { class: "label" }, `${k}=${v}`));
}

function table(headers, rows, attrs) {
  return h("table", attrs || {},
    h("thead", {}, h("tr", {}, headers.map((t) => h("th", {}, t)))),
    h("tbody", {}, rows));
}

function section(title, ...content) {
  return h("section", {}, h("h2", {}, title), ...content);
}

// ---- API -----------------------------------------------------------------------------------

class ApiError extends Error {
  constructor(status, message) { super(message); this.status = status; }
}

async function api(path, options) {
  const headers = { Accept: "application/json" };
  const token = localStorage.getItem(TOKEN_KEY);
  if (token) headers.Authorization = `Bearer ${token}`;
  let resp;
  try {
    resp = await fetch(path, { ...(options || {}), headers });
  } catch (e) {
    throw new ApiError(0, "the control plane does not answer");
  }
  const text = await resp.text();
  let body = null;
  try { body = text ? JSON.parse(text) : null; } catch (e) { body = null; }
  if (!resp.ok) {
    const message = body && body.error ? body.error.message : `HTTP ${resp.status}`;
    if (resp.status === 401) showTokenForm();
    throw new ApiError(resp.status, message);
  }
  return body;
}

// `kind` is "load" (cleared by the next successful refresh) or "action" (stays until the
// next navigation, so a refused pause or abort is not wiped by the poll).
function showBanner(text, kind) {
  const b = document.getElementById("banner");
  b.textContent = text;
  b.hidden = !text;
  state.bannerKind = text ? kind || "load" : null;
}

function showTokenForm() {
  document.getElementById("token-form").hidden = false;
}

// ---- views ---------------------------------------------------------------------------------

function progress(counts) {
  const total = counts.total || 0;
  const bar = h("div", { class: "progress", title: JSON.stringify(counts) });
  for (const k of ["healthy", "baking", "updating", "failed", "rolled_back", "pending"]) {
    const n = counts[k] || 0;
    if (!n || !total) continue;
    const seg = h("span", { class: `seg ${k}`, title: `${k}: ${n}` });
    // CSSOM, not a style attribute: the page's CSP allows no inline styles.
    seg.style.width = `${(100 * n) / total}%`;
    bar.append(seg);
  }
  const done = counts.healthy || 0;
  return h("div", { class: "progress-wrap" }, bar, h("small", {}, `${done}/${total} healthy`));
}

function deploymentRows(deployments) {
  return deployments.map((d) => {
    const r = d.rollout;
    return h("tr", {},
      h("td", {}, h("a", { href: `#/deployments/${encodeURIComponent(d.name)}` }, d.name)),
      h("td", {}, `r${d.revision}`),
      h("td", {}, `${d.module.name}@${d.module.version}`),
      h("td", {}, r ? h("span", { class: `phase ${r.phase}` }, r.paused ? `${r.phase} (paused)` : r.phase) : "–"),
      h("td", {}, r ? progress(r.counts) : "–"));
  });
}

function nodeMatches(n) {
  if (state.filter !== "all" && n.status !== state.filter) return false;
  const q = state.search.trim().toLowerCase();
  if (!q) return true;
  const hay = [n.id, n.arch, n.version, ...Object.entries(n.labels || {}).map(([k, v]) => `${k}=${v}`)]
    .join(" ").toLowerCase();
  return q.split(/\s+/).every((word) => hay.includes(word));
}

function nodesTable() {
  const all = state.nodes || [];
  const matching = all.filter(nodeMatches);
  const rows = matching.slice(0, MAX_ROWS).map((n) => {
    const running = (n.modules || []).filter((m) => m.state === "running").length;
    return h("tr", { "data-node": n.id },
      h("td", {}, h("a", { href: `#/nodes/${encodeURIComponent(n.id)}` }, n.id)),
      h("td", {}, badge(n.status), n.status === "online" ? null : h("small", { class: "reason" }, n.reason || "")),
      h("td", {}, labels(n.labels)),
      h("td", {}, n.arch),
      h("td", {}, `${running}/${(n.modules || []).length}`),
      h("td", {}, String(n.telemetry ? n.telemetry.pending : 0)),
      h("td", {}, when(n.last_seen)));
  });
  const note = matching.length > MAX_ROWS
    ? h("p", { class: "muted" }, `showing ${MAX_ROWS} of ${matching.length} matching nodes; narrow the search`)
    : h("p", { class: "muted", "data-testid": "node-count" }, `${matching.length} of ${all.length} nodes`);
  return h("div", { id: "nodes-table" },
    table(["Node", "Status", "Labels", "Arch", "Modules", "Backlog", "Last seen"], rows, { "data-testid": "nodes" }),
    note);
}

function filters() {
  const select = h("select", {
    id: "status-filter", "aria-label": "status",
    onchange: (e) => { state.filter = e.target.value; rerenderNodes(); },
  }, ["all", "online", "degraded", "offline"].map((v) => h("option", { value: v, selected: v === state.filter }, v)));
  const search = h("input", {
    id: "search", type: "search", placeholder: "search id, label, arch…", value: state.search,
    oninput: (e) => { state.search = e.target.value; rerenderNodes(); },
  });
  return h("div", { class: "filters" }, select, search);
}

function rerenderNodes() {
  const old = document.getElementById("nodes-table");
  if (old) old.replaceWith(nodesTable());
}

async function overview(gen) {
  const now = Date.now();
  const wantNodes = !state.nodes || now - state.nodesAt >= NODE_LIST_POLL_MS;
  const [fleet, deployments, nodes] = await Promise.all([
    api("/api/v1/fleet"),
    api("/api/v1/deployments"),
    wantNodes ? api("/api/v1/nodes") : Promise.resolve(state.nodes),
  ]);
  if (gen !== state.generation) return null;
  if (wantNodes) { state.nodes = nodes; state.nodesAt = now; }

  const cards = h("div", { class: "cards", "data-testid": "summary" },
    ["total", "online", "degraded", "offline"].map((k) => h("button", {
      type: "button", class: `card ${k}`, "data-testid": `count-${k}`,
      onclick: () => { state.filter = k === "total" ? "all" : k; render(); },
    }, h("strong", {}, String(fleet.nodes[k] || 0)), h("span", {}, k))));

  const problems = fleet.problems.length
    ? h("ul", { class: "problems", "data-testid": "problems" }, fleet.problems.map((p) => h("li", {},
      h("a", { href: `#/nodes/${encodeURIComponent(p.node)}` }, p.node), " ", badge(p.status), " ",
      p.reasons.join("; "), " · since ", when(p.since))))
    : h("p", { class: "muted" }, "Nothing needs attention.");

  return [
    cards,
    section("Problems", problems),
    section("Deployments", deployments.length
      ? table(["Deployment", "Revision", "Module", "Rollout", "Progress"], deploymentRows(deployments), { "data-testid": "deployments" })
      : h("p", { class: "muted" }, "No deployments yet.")),
    section("Nodes", filters(), nodesTable()),
  ];
}

// A number to chart from a telemetry payload: the payload itself, or its `value` or `mean`
// field, or its first numeric field.
function numeric(payload) {
  if (typeof payload === "number") return { key: "", value: payload };
  if (payload && typeof payload === "object") {
    for (const k of ["value", "mean"]) if (typeof payload[k] === "number") return { key: k, value: payload[k] };
    for (const [k, v] of Object.entries(payload)) if (typeof v === "number") return { key: k, value: v };
  }
  return null;
}

function round(v) {
  return Math.round(v * 100) / 100;
}

function chart(records) {
  const streams = [...new Set(records.map((r) => r.stream))];
  if (!streams.length) return h("p", { class: "muted" }, "No telemetry stored yet.");
  if (!streams.includes(state.stream)) state.stream = streams[0];
  const points = records.filter((r) => r.stream === state.stream)
    .map((r) => ({ t: Date.parse(r.timestamp), n: numeric(r.payload) }))
    .filter((p) => p.n !== null);
  const picker = h("select", {
    id: "stream", "aria-label": "stream",
    onchange: (e) => { state.stream = e.target.value; render(); },
  }, streams.map((v) => h("option", { value: v, selected: v === state.stream }, v)));
  const head = h("div", { class: "filters" }, picker,
    points.length ? h("span", { "data-testid": "latest-value" },
      `latest ${points[points.length - 1].n.key || "value"}: ${round(points[points.length - 1].n.value)}`) : null);
  if (points.length < 2) {
    return h("div", {}, head, h("p", { class: "muted" }, points.length ? "One numeric record so far." : "No numeric values in this stream."));
  }
  const W = 640, H = 160, P = 24;
  const ts = points.map((p) => p.t), vs = points.map((p) => p.n.value);
  const [t0, t1] = [Math.min(...ts), Math.max(...ts)];
  const [v0, v1] = [Math.min(...vs), Math.max(...vs)];
  const x = (t) => P + ((t - t0) / Math.max(1, t1 - t0)) * (W - 2 * P);
  const y = (v) => H - P - ((v - v0) / (v1 - v0 || 1)) * (H - 2 * P);
  const svg = s("svg", { viewBox: `0 0 ${W} ${H}`, class: "chart", role: "img", "data-testid": "chart" });
  svg.append(s("line", { x1: P, y1: H - P, x2: W - P, y2: H - P, class: "axis" }));
  svg.append(s("polyline", { points: points.map((p) => `${x(p.t).toFixed(1)},${y(p.n.value).toFixed(1)}`).join(" "), class: "line" }));
  for (const [v, yy] of [[v1, P], [v0, H - P]]) {
    const label = s("text", { x: 2, y: yy + 4, class: "tick" });
    label.textContent = String(round(v));
    svg.append(label);
  }
  return h("div", {}, head, svg, h("small", { class: "muted" }, `${points.length} records`));
}

async function nodeDetail(gen, id) {
  const enc = encodeURIComponent(id);
  const [n, events, telemetry, logs] = await Promise.all([
    api(`/api/v1/nodes/${enc}`),
    api(`/api/v1/nodes/${enc}/events`),
    api(`/api/v1/nodes/${enc}/telemetry?newest=true&limit=200`),
    api(`/api/v1/nodes/${enc}/telemetry?newest=true&limit=50&stream=%24log`),
  ]);
  if (gen !== state.generation) return null;
  const r = n.resources || {};
  const t = n.telemetry || {};
  const facts = h("dl", { class: "facts", "data-testid": "facts" },
    h("dt", {}, "Labels"), h("dd", {}, labels(n.labels)),
    h("dt", {}, "Arch"), h("dd", {}, n.arch),
    h("dt", {}, "Version"), h("dd", {}, n.version),
    h("dt", {}, "First seen"), h("dd", {}, when(n.first_seen)),
    h("dt", {}, "Last seen"), h("dd", {}, when(n.last_seen)),
    h("dt", {}, "Desired state"), h("dd", {}, `generation ${n.applied_generation} applied of ${n.desired_generation}`),
    h("dt", {}, "Disk free"), h("dd", {}, r.disk_total_bytes ? `${bytes(r.disk_free_bytes)} of ${bytes(r.disk_total_bytes)}` : "unknown"),
    h("dt", {}, "Memory available"), h("dd", {}, r.memory_total_bytes ? `${bytes(r.memory_available_bytes)} of ${bytes(r.memory_total_bytes)}` : "unknown"));
  const backlog = h("dl", { class: "facts", "data-testid": "backlog" },
    h("dt", {}, "Waiting"), h("dd", {}, `${t.pending || 0} records (${bytes(t.bytes)})`),
    h("dt", {}, "Oldest"), h("dd", {}, t.pending ? `${Math.round((t.oldest_age_ms || 0) / 1000)} s` : "–"),
    h("dt", {}, "Dropped"), h("dd", {}, String(t.dropped || 0)));
  const modules = (n.modules || []).length
    ? table(["Module", "Digest", "State", "Restarts", "Messages", "Dropped", "Errors", "Published", "Emitted", "Last error"],
      n.modules.map((m) => h("tr", { "data-module": m.name },
        h("td", {}, m.name), h("td", { class: "mono", title: m.digest }, m.digest.slice(7, 19)),
        h("td", {}, h("span", { class: `badge ${m.state}` }, m.state)), h("td", {}, String(m.restarts)),
        h("td", {}, String(m.stats.messages)),
        h("td", { title: "dropped at the module's full queue (QoS 0)" }, String(m.stats.dropped || 0)),
        h("td", {}, String(m.stats.errors)),
        h("td", {}, String(m.stats.published)), h("td", {}, String(m.stats.emitted)),
        h("td", { class: "reason" }, m.last_error || ""))), { "data-testid": "modules" })
    : h("p", { class: "muted" }, "No modules.");
  // Module log lines are the reserved `$log` stream; the chart shows the modules' own streams.
  const data = telemetry.filter((r) => !r.stream.startsWith("$"));
  const logRows = logs.slice().reverse().map((r) => h("tr", {},
    h("td", {}, when(r.timestamp)), h("td", {}, r.module),
    h("td", {}, (r.payload && r.payload.level) || ""),
    h("td", { class: "reason" }, (r.payload && r.payload.message) || "")));
  const eventRows = events.slice().reverse().slice(0, 100).map((e) => h("tr", {},
    h("td", {}, when(e.time)), h("td", {}, e.kind), h("td", {}, e.module || ""),
    h("td", { class: "reason" }, [e.level ? `[${e.level}] ` : "", e.message || ""].join(""))));
  return [
    h("p", {}, h("a", { href: "#/" }, "← fleet")),
    h("h1", { "data-testid": "node-id" }, n.id, " ", badge(n.status)),
    n.status !== "online" ? h("p", { class: "reason", "data-testid": "node-reason" }, `${n.reason || ""} · since `, when(n.since)) : h("p", { class: "muted" }, "online since ", when(n.since)),
    h("div", { class: "grid" }, section("Node", facts), section("Telemetry backlog", backlog)),
    section("Modules", modules),
    section("Recent telemetry", chart(data)),
    section("Module logs", logRows.length ? table(["When", "Module", "Level", "Message"], logRows, { "data-testid": "logs" }) : h("p", { class: "muted" }, "No module logs.")),
    section("Events", eventRows.length ? table(["When", "Event", "Module", "Message"], eventRows, { "data-testid": "events" }) : h("p", { class: "muted" }, "No events.")),
  ];
}

async function deploymentDetail(gen, name) {
  const d = await api(`/api/v1/deployments/${encodeURIComponent(name)}`);
  if (gen !== state.generation) return null;
  const r = d.rollout;
  const control = (verb) => h("button", {
    type: "button", class: "secondary", disabled: !r || !["canary", "batches"].includes(r.phase),
    onclick: async () => {
      try { await api(`/api/v1/deployments/${encodeURIComponent(name)}/${verb}`, { method: "POST" }); showBanner(""); }
      catch (e) { showBanner(`${verb}: ${e.message}`, "action"); }
      render();
    },
  }, verb);
  const target = d.selector
    ? (Object.keys(d.selector.labels || {}).length ? labels(d.selector.labels) : "every node")
    : (d.nodes || []).join(", ");
  const nodes = r && r.nodes ? r.nodes.map((n) => h("tr", {},
    h("td", {}, h("a", { href: `#/nodes/${encodeURIComponent(n.node)}` }, n.node)),
    h("td", {}, h("span", { class: `badge ${n.state}` }, n.state)),
    h("td", {}, n.revision ? `r${n.revision}` : "–"),
    h("td", {}, n.online ? "yes" : "no"),
    h("td", {}, when(n.since)),
    h("td", { class: "reason" }, n.error || ""))) : [];
  return [
    h("p", {}, h("a", { href: "#/" }, "← fleet")),
    h("h1", {}, d.name, " ", h("small", {}, `revision ${d.revision}`)),
    h("dl", { class: "facts" },
      h("dt", {}, "Module"), h("dd", {}, `${d.module.name}@${d.module.version}`),
      h("dt", {}, "Targets"), h("dd", {}, target),
      h("dt", {}, "Strategy"), h("dd", {}, `canary ${d.strategy.canary}, batch ${d.strategy.batch}, bake ${d.strategy.bake_seconds} s, max failure ratio ${d.strategy.max_failure_ratio}`),
      h("dt", {}, "Phase"), h("dd", { "data-testid": "phase" }, r ? `${r.phase}${r.paused ? " (paused)" : ""}` : "–"),
      h("dt", {}, "Stable revision"), h("dd", {}, r && r.stable_revision ? `r${r.stable_revision}` : "–"),
      r && r.reason ? [h("dt", {}, "Reason"), h("dd", { class: "reason" }, r.reason)] : null),
    r ? progress(r.counts) : null,
    h("div", { class: "filters" }, control("pause"), control("resume"), control("abort")),
    section("Nodes", table(["Node", "State", "Revision", "Online", "Since", "Error"], nodes)),
    r && r.history.length ? section("Earlier rollouts", table(["Revision", "Outcome", "Reason", "Ended"],
      r.history.slice().reverse().map((o) => h("tr", {}, h("td", {}, `r${o.revision}`), h("td", {}, o.phase),
        h("td", { class: "reason" }, o.reason || ""), h("td", {}, when(o.ended_at)))))) : null,
  ];
}

// ---- routing and polling ---------------------------------------------------------------------

function route() {
  const hash = location.hash.replace(/^#/, "") || "/";
  let m = hash.match(/^\/nodes\/(.+)$/);
  if (m) return (gen) => nodeDetail(gen, decodeURIComponent(m[1]));
  m = hash.match(/^\/deployments\/(.+)$/);
  if (m) return (gen) => deploymentDetail(gen, decodeURIComponent(m[1]));
  return overview;
}

async function render() {
  clearTimeout(state.timer);
  const gen = state.generation;
  const live = document.getElementById("live");
  try {
    const content = await route()(gen);
    if (content === null || gen !== state.generation) return;
    // Keep focus and caret in the search box across refreshes.
    const focused = document.activeElement && document.activeElement.id;
    const caret = focused === "search" ? document.activeElement.selectionStart : null;
    document.getElementById("view").replaceChildren(...content.flat().filter(Boolean));
    if (focused) {
      const el = document.getElementById(focused);
      if (el) { el.focus(); if (caret !== null) el.setSelectionRange(caret, caret); }
    }
    live.textContent = `live · updated ${new Date().toLocaleTimeString()}`;
    live.className = "live ok";
    if (state.bannerKind === "load") showBanner("");
  } catch (e) {
    live.textContent = "not updating";
    live.className = "live stale";
    showBanner(e.status === 404 ? e.message : `Cannot load: ${e.message}`);
    if (e.status === 404) document.getElementById("view").replaceChildren(h("p", {}, h("a", { href: "#/" }, "← fleet")));
  }
  if (gen === state.generation) state.timer = setTimeout(render, POLL_MS);
}

function navigate() {
  state.generation++;
  showBanner("");
  render();
}

window.addEventListener("hashchange", navigate);
document.getElementById("token-button").addEventListener("click", showTokenForm);
document.getElementById("token-form").addEventListener("submit", (e) => {
  e.preventDefault();
  localStorage.setItem(TOKEN_KEY, document.getElementById("token-input").value.trim());
  document.getElementById("token-form").hidden = true;
  navigate();
});
document.getElementById("token-clear").addEventListener("click", () => {
  localStorage.removeItem(TOKEN_KEY);
  document.getElementById("token-input").value = "";
  navigate();
});
navigate();
