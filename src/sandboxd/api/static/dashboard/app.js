// The sandboxd dashboard (docs/dashboard.md): a single page over the public API. The API key lives in this
// tab's sessionStorage and goes out as X-API-Key; EventSource cannot set headers, so streams take ?token=.
"use strict";

const KEY_SLOT = "sandboxd.apiKey";
const HISTORY = 300; // chart points kept (5 minutes at one a second)
const main = document.getElementById("main");
let cleanup = []; // closers of the current view's streams and sockets

function key() { return sessionStorage.getItem(KEY_SLOT); }

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else if (k === "dataset") Object.assign(node.dataset, v);
    else node.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) node.append(c instanceof Node ? c : document.createTextNode(c ?? ""));
  return node;
}

function toast(message) {
  const t = document.getElementById("toast");
  t.textContent = message;
  t.hidden = false;
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => { t.hidden = true; }, 6000);
}

async function api(method, path, body) {
  const headers = { "X-API-Key": key() };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const r = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  const text = await r.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch (e) { data = text; }
  if (!r.ok) {
    const msg = (data && (data.message || data.error)) || r.statusText;
    const err = new Error(`${method} ${path}: ${r.status} ${msg}`);
    err.status = r.status;
    throw err;
  }
  return data;
}

function stream(path, onMessage, onEnd) {
  const sep = path.includes("?") ? "&" : "?";
  const es = new EventSource(`${path}${sep}token=${encodeURIComponent(key())}`);
  es.onmessage = (ev) => onMessage(JSON.parse(ev.data));
  if (onEnd) es.addEventListener("end", (ev) => { onEnd(JSON.parse(ev.data)); es.close(); });
  cleanup.push(() => es.close());
  return es;
}

function when(iso) { return iso ? new Date(iso).toLocaleTimeString() : ""; }
function badge(status) { return el("span", { class: `status ${status}` }, status); }
function rows(list) { return Array.isArray(list) ? list : (list && (list.data || list.items)) || []; }

function table(columns, items, empty) {
  if (!items.length) return el("p", { class: "muted" }, empty || "Nothing yet.");
  return el("table", {},
    el("thead", {}, el("tr", {}, columns.map(([title]) => el("th", {}, title)))),
    el("tbody", {}, items.map((it) => el("tr", {}, columns.map(([, cell]) => el("td", {}, cell(it)))))));
}

// ---- login -------------------------------------------------------------------------------------------------

let identity = null; // {team, operator}

async function whoAmI() {
  const team = await api("GET", "/v1/team");
  let operator = false;
  try { await api("GET", "/v1/pools"); operator = true; } catch (e) { if (e.status !== 403) throw e; }
  identity = { team: team.name || team.id, operator };
  document.getElementById("nav").hidden = false;
  document.getElementById("nav-pools").hidden = !operator;
  document.getElementById("logout").hidden = false;
  document.getElementById("who").textContent = `team ${identity.team}${operator ? " (operator)" : ""}`;
}

function loginView(problem) {
  const input = el("input", { type: "password", id: "api-key", placeholder: "API key", autocomplete: "off" });
  const form = el("form", { class: "login", id: "login" },
    el("h1", {}, "Log in"),
    el("p", { class: "muted" }, "Your API key stays in this browser tab (sessionStorage) and is sent only to this server."),
    input, el("button", { class: "primary", type: "submit" }, "Log in"),
    problem ? el("p", { class: "status error" }, problem) : "");
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    sessionStorage.setItem(KEY_SLOT, input.value.trim());
    try {
      await whoAmI();
      if (!location.hash || location.hash === "#/login") location.hash = "#/sandboxes"; else route();
    } catch (e) {
      sessionStorage.removeItem(KEY_SLOT);
      main.replaceChildren(loginView(e.status === 401 ? "That key was refused." : e.message));
    }
  });
  return form;
}

document.getElementById("logout").addEventListener("click", () => {
  sessionStorage.clear();
  identity = null;
  location.hash = "#/login";
  location.reload();
});

// ---- sandboxes ---------------------------------------------------------------------------------------------

async function lifecycle(id, action) {
  try {
    if (action === "kill") await api("DELETE", `/v1/sandboxes/${id}`);
    else await api("POST", `/v1/sandboxes/${id}/${action}`);
  } catch (e) { toast(e.message); }
}

function actions(sb) {
  const b = (action, label, cls) => el("button", { class: cls, dataset: { action, id: sb.id },
    onclick: () => lifecycle(sb.id, action) }, label);
  return el("span", {}, sb.status === "paused" ? b("resume", "Resume") : b("pause", "Pause"), " ",
    b("kill", "Kill", "danger"));
}

async function sandboxesView() {
  const list = el("div", { id: "sandbox-list" });
  const feed = el("ul", { class: "timeline", id: "lifecycle-feed" });
  const templates = rows(await api("GET", "/v1/templates"));
  const pick = el("select", { id: "create-template" },
    templates.filter((t) => t.status === undefined || t.status === "active")
      .map((t) => el("option", { value: t.name }, t.name)));
  const create = el("form", { class: "inline", id: "create" }, "Template", pick,
    el("button", { class: "primary", type: "submit" }, "Create sandbox"));
  create.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    try {
      const sb = await api("POST", "/v1/sandboxes", { template_name: pick.value });
      sessionStorage.setItem(`sandboxd.token.${sb.id}`, sb.auth_token);
      location.hash = `#/sandbox/${sb.id}`;
    } catch (e) { toast(e.message); }
  });

  async function refresh() {
    const items = rows(await api("GET", "/v1/sandboxes?limit=200"));
    list.replaceChildren(table([
      ["Sandbox", (s) => el("a", { href: `#/sandbox/${s.id}`, class: "sandbox-link" }, s.id)],
      ["Template", (s) => s.template_name || s.template_id],
      ["Status", (s) => badge(s.status)],
      ["Created", (s) => when(s.created_at)],
      ["", actions],
    ], items, "No sandboxes. Create one above."));
  }
  let pending = null;
  stream("/v1/sandboxes/stream", (e) => {
    feed.prepend(el("li", {}, el("time", {}, when(e.timestamp)), `${e.type} ${e.sandbox_id || ""}`));
    clearTimeout(pending);
    pending = setTimeout(() => refresh().catch((err) => toast(err.message)), 150); // one refresh per burst
  });
  await refresh();
  return el("section", {}, el("h1", {}, "Sandboxes"), create, list, el("h2", {}, "Live lifecycle events"), feed);
}

// ---- one sandbox -------------------------------------------------------------------------------------------

function chart(id, title, unit) {
  const canvas = el("canvas", { width: 360, height: 120 });
  const value = el("span", {}, "–");
  const box = el("div", { class: "chart", id }, el("div", { class: "title" }, el("span", {}, title), value), canvas);
  const points = [];
  function draw() {
    const ctx = canvas.getContext("2d");
    const w = canvas.width, h = canvas.height;
    ctx.clearRect(0, 0, w, h);
    ctx.strokeStyle = "#e5e7eb";
    for (const f of [0.25, 0.5, 0.75]) { ctx.beginPath(); ctx.moveTo(0, h * f); ctx.lineTo(w, h * f); ctx.stroke(); }
    if (points.length < 2) return;
    const top = 100;
    const step = w / (Math.max(points.length, 60) - 1); // a new sandbox's first minute spans the width
    const x0 = w - (points.length - 1) * step;
    ctx.beginPath();
    points.forEach((p, i) => { const y = h - (Math.min(p, top) / top) * (h - 4) - 2; i ? ctx.lineTo(x0 + i * step, y) : ctx.moveTo(x0, y); });
    ctx.strokeStyle = "#2f6fdb";
    ctx.lineWidth = 2;
    ctx.stroke();
  }
  function push(v) {
    if (typeof v !== "number" || Number.isNaN(v)) return;
    points.push(v);
    if (points.length > HISTORY) points.shift();
    value.textContent = `${v.toFixed(1)} ${unit}`;
    box.dataset.last = String(v);
    box.dataset.max = String(Math.max(...points));
    box.dataset.points = String(points.length);
    draw();
  }
  return { box, push };
}

function pct(used, total) { return total ? (used / total) * 100 : 0; }

// The token of a sandbox this tab created is used as it is; for any other the tab asks for one more token
// (POST /token, which revokes none: a refresh would retire the token its other clients hold).
async function sandboxToken(sb) {
  const slot = `sandboxd.token.${sb.id}`;
  if (!sessionStorage.getItem(slot)) {
    sessionStorage.setItem(slot, (await api("POST", `/v1/sandboxes/${sb.id}/token`)).auth_token);
  }
  return sessionStorage.getItem(slot);
}

function gatewayBase(sb) { return sb.public_host.replace(/\/$/, ""); }

function terminalPane(sb) {
  const host = el("div", { id: "terminal" });
  const note = el("span", { class: "muted", id: "terminal-state" }, "connecting…");
  async function connect() {
    if (!window.Terminal) { note.textContent = "xterm.js failed to load"; return; }
    const token = await sandboxToken(sb);
    const term = new window.Terminal({ convertEol: false, fontSize: 13, cursorBlink: true });
    const Fit = window.FitAddon && (window.FitAddon.FitAddon || window.FitAddon);
    const fit = Fit ? new Fit() : null;
    if (fit) term.loadAddon(fit);
    term.open(host);
    if (fit) fit.fit();
    const base = gatewayBase(sb).replace(/^http/, "ws");
    const ws = new WebSocket(`${base}/terminal?token=${encodeURIComponent(token)}&cols=${term.cols}&rows=${term.rows}`);
    ws.onopen = () => { note.textContent = "connected"; host.dataset.state = "open"; term.focus(); };
    ws.onmessage = (ev) => {
      const msg = JSON.parse(ev.data);
      if (msg.type === "output") term.write(msg.data);
      else if (msg.type === "exit") { note.textContent = `shell exited (${msg.code})`; host.dataset.state = "exited"; }
    };
    ws.onclose = () => { if (host.dataset.state !== "exited") note.textContent = "disconnected"; host.dataset.state = "closed"; };
    term.onData((data) => { if (ws.readyState === 1) ws.send(JSON.stringify({ type: "input", data })); });
    term.onResize(({ cols, rows }) => { if (ws.readyState === 1) ws.send(JSON.stringify({ type: "resize", cols, rows })); });
    cleanup.push(() => { ws.close(); term.dispose(); });
  }
  const start = el("button", { id: "terminal-open", onclick: () => {
    start.remove();
    connect().catch((e) => { note.textContent = e.message; });
  } }, "Open terminal");
  note.textContent = "";
  return el("div", {}, el("h2", {}, "Terminal ", start, " ", note), host);
}

// The sandbox's files API through the gateway (docs/api.md, /files/...), with the sandbox's token; the gateway
// answers the browser's CORS preflight itself.
async function files(sb, method, route, params, body) {
  const url = `${gatewayBase(sb)}/files/${route}?${new URLSearchParams(params)}`;
  const headers = { Authorization: `Bearer ${await sandboxToken(sb)}` };
  if (body !== undefined) headers["Content-Type"] = "application/octet-stream";
  const r = await fetch(url, { method, headers, body });
  if (!r.ok) {
    let msg = r.statusText;
    try { msg = (await r.json()).message || msg; } catch (e) { /* not JSON */ }
    throw new Error(`${method} /files/${route}: ${r.status} ${msg}`);
  }
  return r;
}

function size(n) { return n < 1024 ? `${n} B` : n < 1048576 ? `${(n / 1024).toFixed(1)} kB` : `${(n / 1048576).toFixed(1)} MB`; }

function filesPane(sb) {
  const VIEW_LIMIT = 256 * 1024; // larger files are downloaded, not shown
  const where = el("code", { id: "files-path" });
  const list = el("div", { id: "files-list" });
  const viewer = el("div", { id: "files-view" });
  let dir = null;
  const parent = (path) => path.replace(/\/[^/]*$/, "") || "/";
  const fail = (e) => toast(e.message);

  async function open(path) {
    const listing = await (await files(sb, "GET", "list", path ? { path } : {})).json();
    dir = listing.path;
    where.textContent = dir;
    list.dataset.path = dir;
    const dirs = listing.files.filter((f) => f.is_directory), rest = listing.files.filter((f) => !f.is_directory);
    list.replaceChildren(table([
      ["Name", (f) => el("a", { href: "#", class: f.is_directory ? "dir" : "file", dataset: { name: f.name },
        onclick: (ev) => { ev.preventDefault(); (f.is_directory ? open(f.path) : view(f)).catch(fail); } },
        f.is_directory ? `${f.name}/` : f.name)],
      ["Size", (f) => f.is_directory ? "" : size(f.size)],
      ["Modified", (f) => new Date(f.modified_time).toLocaleString()],
      ["", (f) => el("span", {},
        f.is_directory ? "" : el("button", { dataset: { download: f.name }, onclick: () => download(f).catch(fail) }, "Download"),
        " ", el("button", { class: "danger", dataset: { delete: f.name }, onclick: () => remove(f).catch(fail) }, "Delete"))],
    ], [...dirs, ...rest], "This folder is empty."));
  }
  async function view(f) {
    if (f.size > VIEW_LIMIT) { viewer.replaceChildren(el("p", { class: "muted" }, `${f.name} is ${size(f.size)}: download it.`)); return; }
    const answer = await (await files(sb, "GET", "read", { path: f.path })).json();
    viewer.replaceChildren(el("h3", {}, f.path), answer.encoding === "utf-8"
      ? el("pre", {}, answer.content) : el("p", { class: "muted" }, "Not text: download it."));
  }
  async function download(f) {
    const blob = await (await files(sb, "GET", "download", { path: f.path })).blob();
    const link = el("a", { href: URL.createObjectURL(blob), download: f.name });
    link.click();
    setTimeout(() => URL.revokeObjectURL(link.href), 60_000); // the browser has started saving it by then
  }
  async function remove(f) {
    if (!window.confirm(`Delete ${f.path}${f.is_directory ? " and everything in it" : ""}?`)) return;
    await files(sb, "DELETE", "remove", { path: f.path });
    viewer.replaceChildren();
    await open(dir);
  }
  const upload = el("input", { type: "file", id: "files-upload", onchange: async () => {
    try {
      for (const file of upload.files) await files(sb, "POST", "upload", { path: `${dir.replace(/\/$/, "")}/${file.name}` }, file);
      await open(dir);
    } catch (e) { fail(e); }
    upload.value = "";
  } });
  const bar = el("div", { class: "inline", hidden: true },
    el("button", { id: "files-up", onclick: () => open(parent(dir)).catch(fail) }, "Up"), " ", where, " ",
    el("label", { class: "upload" }, "Upload ", upload));
  const browse = () => {
    start.remove();
    bar.hidden = false;
    open(null).catch((e) => { list.replaceChildren(el("p", { class: "status error" }, e.message)); });
  };
  // Only on request, as the terminal: a sandbox's traffic may resume it.
  const start = el("button", { id: "files-open", onclick: browse }, "Browse files");
  return el("div", { id: "files" }, el("h2", {}, "Files ", start), bar, list, viewer);
}

async function sandboxView(id) {
  let sb = await api("GET", `/v1/sandboxes/${id}`);
  const status = el("span", { id: "sandbox-status" }, badge(sb.status));
  const buttons = el("span", {}, actions(sb));
  const cpu = chart("chart-cpu", "CPU", "%"), mem = chart("chart-mem", "Memory", "%"), disk = chart("chart-disk", "Disk", "%");
  const timeline = el("ul", { class: "timeline", id: "timeline" });
  function event(e) {
    timeline.prepend(el("li", { dataset: { type: e.type } }, el("time", {}, when(e.timestamp)), e.type));
  }

  try { // history first, then the live feed carries on from it
    const history = await api("GET", `/sandboxes/${id}/metrics`);
    for (const m of history) {
      cpu.push(m.cpuUsedPct); mem.push(pct(m.memUsed, m.memTotal)); disk.push(pct(m.diskUsed, m.diskTotal));
    }
  } catch (e) { toast(e.message); }
  stream(`/v1/sandboxes/${id}/metrics/stream?interval=1`, (snap) => {
    const s = snap.system;
    if (!s) return;
    cpu.push(s.cpu.usage_percent); mem.push(s.memory.usage_percent); disk.push(s.disk.usage_percent);
  }, () => status.replaceChildren(badge("killed")));

  const past = await api("GET", `/events/sandboxes/${id}?limit=100&orderAsc=false`);
  rows(past).slice().reverse().forEach(event);
  stream("/v1/sandboxes/stream", async (e) => {
    if (e.sandbox_id !== id) return;
    event(e);
    if (e.status) {
      status.replaceChildren(badge(e.status));
      sb = { ...sb, status: e.status };
      buttons.replaceChildren(e.status === "killed" ? "" : actions(sb));
    }
  });

  return el("section", {},
    el("h1", {}, `Sandbox ${sb.id} `, status, " ", buttons),
    el("p", { class: "muted" }, `template ${sb.template_name || sb.template_id} · ${sb.resources.vcpu} vCPU · `
      + `${sb.resources.memory_mb} MB · created ${when(sb.created_at)}`),
    el("div", { class: "charts" }, cpu.box, mem.box, disk.box),
    el("div", { class: "cols" }, terminalPane(sb), el("div", {}, el("h2", {}, "Events"), timeline)),
    sb.status === "killed" ? "" : filesPane(sb));
}

// ---- templates and builds ----------------------------------------------------------------------------------

async function templatesView() {
  const list = el("div", { id: "template-list" });
  const logs = el("div", { id: "build-logs" });
  async function refresh() {
    list.replaceChildren(table([
      ["Name", (t) => t.name],
      ["Status", (t) => badge(t.status || "active")],
      ["Resources", (t) => t.default_resources ? `${t.default_resources.vcpu} vCPU · ${t.default_resources.memory_mb} MB` : ""],
      ["Build", (t) => t.build_id
        ? el("button", { dataset: { template: t.name }, onclick: () => showLogs(t).catch((e) => toast(e.message)) }, "Logs")
        : el("span", { class: "muted" }, "built in")],
    ], rows(await api("GET", "/v1/templates"))));
  }
  let follow = null;
  async function showLogs(t) {
    clearTimeout(follow);
    const pre = el("pre", {});
    logs.replaceChildren(el("h2", {}, `Build log of ${t.name}`), pre);
    let offset = 0;
    async function more() { // the log endpoint pages by byte offset; follow it while the build runs
      const page = await api("GET", `/v1/templates/build/${t.id}/logs?offset=${offset}`);
      pre.append(page.logs || "");
      offset = page.offset;
      pre.scrollTop = pre.scrollHeight;
      if (["building", "queued", "pending", "waiting"].includes(page.status)) follow = setTimeout(() => more().catch((e) => toast(e.message)), 1000);
    }
    cleanup.push(() => clearTimeout(follow));
    await more();
  }
  stream("/v1/templates/stream", () => refresh().catch((e) => toast(e.message)));
  await refresh();
  return el("section", {}, el("h1", {}, "Templates"), list, logs);
}

// ---- webhooks, pools, usage --------------------------------------------------------------------------------

async function webhooksView() {
  const deliveries = el("div", { id: "deliveries" });
  async function show(w) {
    const items = rows(await api("GET", `/events/webhooks/${w.id}/deliveries`));
    deliveries.replaceChildren(el("h2", {}, `Deliveries to ${w.url}`), table([
      ["When", (d) => when(d.createdAt)],
      ["Event", (d) => `${d.eventType} ${d.sandboxId || ""}`],
      ["Result", (d) => el("span", {}, badge(d.deliveryStatus), ` ${d.responseStatusCode ?? ""} ${d.error || ""}`)],
      ["Attempts", (d) => String(d.attempts)],
    ], items, "No deliveries yet."));
  }
  const hooks = rows(await api("GET", "/events/webhooks"));
  return el("section", {}, el("h1", {}, "Webhooks"), table([
    ["Name", (w) => w.name], ["URL", (w) => w.url], ["Events", (w) => w.events.join(", ")],
    ["Enabled", (w) => String(w.enabled)],
    ["", (w) => el("button", { dataset: { webhook: w.id }, onclick: () => show(w).catch((e) => toast(e.message)) }, "Deliveries")],
  ], hooks, "No webhooks."), deliveries);
}

async function poolsView() {
  const pools = rows(await api("GET", "/v1/pools"));
  return el("section", {}, el("h1", {}, "Warm pools"), table([
    ["Template", (p) => p.template_name], ["Target", (p) => String(p.target)], ["Ready", (p) => String(p.ready)],
    ["Filling", (p) => String(p.filling)], ["Hits / misses", (p) => `${p.hits} / ${p.misses}`],
    ["Last error", (p) => p.last_error || ""],
  ], pools, "No warm pools (PUT /v1/pools/{template} sets one)."));
}

async function usageView() {
  const usage = await api("GET", "/v1/usage");
  const n = (v) => Number(v).toFixed(1);
  return el("section", {}, el("h1", {}, "Usage"),
    el("p", { class: "muted" }, `from ${new Date(usage.from).toLocaleString()} to ${new Date(usage.to).toLocaleString()}`),
    table([
      ["Team", (t) => t.team_name || t.team_id], ["Sandboxes", (t) => String(t.sandboxes.length)],
      ["Sandbox seconds", (t) => n(t.sandbox_seconds)], ["vCPU seconds", (t) => n(t.vcpu_seconds)],
      ["GiB seconds", (t) => n(t.gib_seconds)],
    ], usage.teams, "No usage in this period."));
}

// ---- routing -----------------------------------------------------------------------------------------------

const VIEWS = [
  [/^#\/sandboxes$/, sandboxesView], [/^#\/sandbox\/([\w-]+)$/, sandboxView], [/^#\/templates$/, templatesView],
  [/^#\/webhooks$/, webhooksView], [/^#\/pools$/, poolsView], [/^#\/usage$/, usageView],
];

async function route() {
  cleanup.forEach((close) => close());
  cleanup = [];
  if (!key()) { main.replaceChildren(loginView()); return; }
  try {
    if (!identity) await whoAmI();
    const hash = location.hash || "#/sandboxes";
    const found = VIEWS.find(([re]) => re.test(hash)) || VIEWS[0];
    const view = await found[1](...(hash.match(found[0]) || []).slice(1));
    main.replaceChildren(view);
  } catch (e) {
    if (e.status === 401) { sessionStorage.removeItem(KEY_SLOT); main.replaceChildren(loginView("Your key was refused.")); return; }
    main.replaceChildren(el("p", { class: "status error" }, e.message));
  }
}

window.addEventListener("hashchange", route);
route();
