// The autotrain dashboard: reads the JSON API with the user's bearer
// token (kept for this tab only, in sessionStorage), draws the price chart
// with uPlot, and refreshes what changed when /dashboard/events says the
// views moved. Buttons appear only for scopes the token holds; the server
// checks them again.
"use strict";

const state = { token: sessionStorage.getItem("autotrain-token") || "", scopes: [], tab: "market", plot: null, counts: {} };
const $ = (sel) => document.querySelector(sel);
const REGIME_COLOURS = ["rgba(47,111,237,0.12)", "rgba(196,50,10,0.12)", "rgba(6,118,71,0.12)", "rgba(181,71,8,0.12)", "rgba(105,56,239,0.12)"];

function headers(extra) {
  const h = Object.assign({}, extra || {});
  if (state.token) h["Authorization"] = "Bearer " + state.token;
  return h;
}

async function api(path, options) {
  const opts = Object.assign({}, options || {});
  opts.headers = headers(opts.headers);
  const res = await fetch(path, opts);
  const body = await res.json().catch(() => ({}));
  if (!res.ok) {
    const message = (body.error && body.error.message) || res.statusText;
    const err = new Error(res.status + " " + message);
    err.status = res.status;
    throw err;
  }
  return body;
}

function showError(e) {
  const box = $("#error");
  if (!e) { box.hidden = true; box.textContent = ""; return; }
  box.hidden = false;
  box.textContent = String(e.message || e);
}

const can = (scope) => state.scopes.includes(scope);
const time = (ms) => (ms == null ? "" : new Date(ms).toISOString().replace("T", " ").replace(".000Z", "Z"));
const esc = (s) => String(s == null ? "" : s).replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));
const fixed = (x, n) => (typeof x === "number" ? x.toFixed(n) : "");

function rows(tbody, html) { $(tbody).innerHTML = html.join(""); }

// ---- identity -------------------------------------------------------------

async function signIn() {
  try {
    const me = await api("/api/whoami");
    state.scopes = me.scopes;
    $("#identity").textContent = me.name + " (" + me.scopes.join(", ") + "; tenant " + me.tenant + ")";
    document.body.dataset.scopes = me.scopes.join(" ");
    showError(null);
    return true;
  } catch (e) {
    state.scopes = [];
    $("#identity").textContent = "not signed in";
    showError(e.status === 401 ? "give a bearer token with ml:read (autotrain token)" : e);
    // Views still loading, or the broker unreachable: ask again.
    if (e.status === 503) setTimeout(start, 2000);
    return false;
  }
}

// ---- market ---------------------------------------------------------------

async function loadInstruments() {
  const list = await api("/api/instruments");
  const select = $("#instrument");
  const current = select.value;
  select.innerHTML = list.items.map((i) => "<option>" + esc(i.instrument) + "</option>").join("");
  if (current && list.items.some((i) => i.instrument === current)) select.value = current;
}

function regimeBands(regimes, lastTs) {
  // Runs of one regime: [start ts, end ts, regime]; a run lasts until the
  // next one starts (the last until the newest bar).
  const bands = [];
  for (const [ts, regime] of regimes) {
    const last = bands[bands.length - 1];
    if (last && last[2] === regime) continue;
    if (last) last[1] = ts;
    bands.push([ts, lastTs, regime]);
  }
  return bands;
}

async function loadChart() {
  const instrument = $("#instrument").value;
  if (!instrument) return;
  const c = await api("/api/instruments/" + encodeURIComponent(instrument) + "/chart?limit=2000");
  const xs = c.closes.map((p) => p[0] / 1000);
  const ys = c.closes.map((p) => p[1]);
  // A flag marks its bar, or (a bar held back) the close before it.
  const marks = c.closes.map(() => null);
  for (const f of c.flags) {
    let i = c.closes.length - 1;
    while (i > 0 && c.closes[i][0] > f.ts) i--;
    if (i >= 0) marks[i] = c.closes[i][1];
  }
  const lastTs = c.closes.length ? c.closes[c.closes.length - 1][0] : 0;
  const bands = regimeBands(c.regimes, lastTs);
  const legend = [...new Set(c.regimes.map((r) => r[1]))].sort()
    .map((r) => '<span><i class="swatch" style="background:' + REGIME_COLOURS[r % REGIME_COLOURS.length] + '"></i>regime ' + r + "</span>");
  $("#chart-legend").innerHTML = legend.join("") + '<span id="chart-counts">' + c.closes.length + " bars, " + c.regimes.length + " posteriors, " + c.flags.length + " flags</span>";
  const shade = (u) => {
    const ctx = u.ctx;
    ctx.save();
    for (const [from, to, regime] of bands) {
      const x0 = u.valToPos(from / 1000, "x", true);
      const x1 = u.valToPos(to / 1000, "x", true);
      ctx.fillStyle = REGIME_COLOURS[regime % REGIME_COLOURS.length];
      ctx.fillRect(x0, u.bbox.top, Math.max(1, x1 - x0), u.bbox.height);
    }
    ctx.restore();
  };
  const opts = {
    width: Math.max(600, $("#chart").clientWidth || 900),
    height: 380,
    scales: { x: { time: true } },
    series: [
      {},
      { label: "close", stroke: "#1d2330", width: 1 },
      { label: "flag", stroke: "#c4320a", width: 0, points: { show: true, size: 7, fill: "#c4320a" } },
    ],
    hooks: { drawClear: [shade] },
  };
  if (state.plot) state.plot.destroy();
  state.plot = new uPlot(opts, [xs, ys, marks], $("#chart"));
}

// ---- review queue ---------------------------------------------------------

async function loadFlags() {
  const st = $("#flag-state").value;
  const list = await api("/api/flags?state=" + encodeURIComponent(st));
  const pending = st === "pending" ? list.total : (await api("/api/flags?state=pending")).total;
  $("#review-count").textContent = pending || "";
  rows("#flags tbody", list.items.map((f) => {
    const actions = [];
    if (can("ml:write")) {
      if (f.kind === "anomaly" && f.state === "pending") {
        actions.push('<button class="act" data-flag="' + esc(f.flag_id) + '" data-action="approve">Approve</button>');
        actions.push('<button class="act" data-flag="' + esc(f.flag_id) + '" data-action="reject">Reject</button>');
      } else if (f.kind === "gap" && f.state === "open") {
        actions.push('<button class="act" data-flag="' + esc(f.flag_id) + '" data-action="override">Override</button>');
      }
    }
    return '<tr data-flag-row="' + esc(f.flag_id) + '" data-state="' + esc(f.state) + '"><td>' + time(f.ts) + "</td><td>" + esc(f.instrument) + "</td><td>" + esc(f.kind) +
      "</td><td>" + esc(f.severity) + '</td><td class="state">' + esc(f.state) + "</td><td>" + esc(f.detail) + "</td><td>" + esc(f.actor) + "</td><td>" + actions.join("") + "</td></tr>";
  }));
}

async function decide(flagId, action) {
  const reason = "from the dashboard";
  await api("/api/flags/" + encodeURIComponent(flagId) + "/" + action, {
    method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ reason }),
  });
  await loadFlags();
}

// ---- trainings ------------------------------------------------------------

async function loadTrainings() {
  const [stats, list] = await Promise.all([api("/api/trainings/stats"), api("/api/trainings?page_size=100")]);
  $("#training-stats").textContent = "running " + stats.active + " of " + stats.capacity + " · queued " + stats.queued + " · waiting " + stats.waiting + " · " +
    Object.entries(stats.by_state).filter(([, n]) => n).map(([s, n]) => s + " " + n).join(", ");
  rows("#training-list tbody", list.items.map((t) =>
    '<tr class="clickable" data-training="' + esc(t.training_id) + '"><td>' + esc(t.training_id) + "</td><td>" + esc(t.model_key) + "</td><td>" + esc(t.state) +
    '</td><td class="num">' + (t.progress == null ? "" : Math.round(t.progress * 100) + " %") + "</td><td>" + esc(t.model_version) + "</td><td>" + time(t.updated_at || t.created_at) + "</td></tr>"));
}

async function showLogs(id) {
  const logs = await api("/api/trainings/" + encodeURIComponent(id) + "/logs");
  $("#training-logs").textContent = logs.lines.join("\n");
  $("#training-logs").dataset.training = id;
}

// ---- models ---------------------------------------------------------------

async function loadModels() {
  const list = await api("/api/models");
  rows("#model-list tbody", list.items.map((m) =>
    '<tr class="clickable" data-model="' + esc(m.model_key) + '"><td>' + esc(m.model_key) + '</td><td class="num">' + m.versions + "</td><td>" + esc(m.aliases.prod) + "</td><td>" + esc(m.aliases.staging) + "</td></tr>"));
  const open = $("#model-detail").dataset.model;
  if (open) await showModel(open);
}

async function showModel(key) {
  const m = await api("/api/models/" + key.split("/").map(encodeURIComponent).join("/"));
  const versions = m.versions.slice().reverse().map((v) => {
    const metrics = (v.metrics || []).map((x) => esc(x.name) + " " + fixed(x.value, 4)).join(", ");
    const buttons = [];
    if (can("ml:write") && v.version !== m.prod) {
      const action = m.prod != null && v.version < m.prod ? "rollback" : "promote";
      buttons.push('<button class="act" data-model="' + esc(key) + '" data-version="' + v.version + '" data-model-action="' + action + '">' + (action === "rollback" ? "Roll back to" : "Promote") + "</button>");
    }
    const alias = Object.entries(m.aliases).filter(([, n]) => n === v.version).map(([a]) => a).join(", ");
    return "<tr><td>v" + v.version + "</td><td>" + esc(alias) + "</td><td>" + time(v.at) + "</td><td>" + metrics + "</td><td><details><summary>manifest</summary><pre>" +
      esc(JSON.stringify(v.manifest ? JSON.parse(v.manifest) : null, null, 1)) + "</pre></details></td><td>" + buttons.join("") + "</td></tr>";
  });
  $("#model-detail").dataset.model = key;
  $("#model-detail").innerHTML = "<h2>" + esc(key) + "</h2><table><thead><tr><th>version</th><th>aliases</th><th>registered</th><th>metrics</th><th>lineage</th><th></th></tr></thead><tbody>" + versions.join("") + "</tbody></table>";
}

async function moveAlias(key, version, action) {
  const path = "/api/models/" + key.split("/").map(encodeURIComponent).join("/") + "/" + action;
  await api(path, { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ model_version: version, reason: "from the dashboard" }) });
}

// ---- parameters -----------------------------------------------------------

async function loadParams() {
  const p = await api("/api/params");
  rows("#slots tbody", p.slots.map((s) => "<tr><td>" + esc(s.strategy) + "</td><td>" + esc(s.instrument) + "</td><td>" + esc(s.preset_id) + '</td><td class="num">' + fixed(s.realised, 2) + "</td><td>" + (s.killed ? "tripped" : "") + "</td></tr>"));
  rows("#presets tbody", p.presets.map((x) => "<tr><td>" + esc(x.strategy) + "</td><td>" + esc(x.preset_id) + (x.safe ? " (safe)" : "") + '</td><td class="num">' + x.trades + '</td><td class="num">' + fixed(x.reward, 2) + "</td></tr>"));
  rows("#changes tbody", p.changes.slice(0, 100).map((c) => "<tr><td>" + time(c.effective_for) + "</td><td>" + esc(c.strategy) + "</td><td>" + esc(c.instrument) + "</td><td>" + esc(c.preset_id) + "</td><td>" + esc(c.reason) + "</td><td>" + esc(c.actor) + "</td><td>" + esc(c.note) + "</td></tr>"));
}

// ---- tabs, refresh, live updates -------------------------------------------

const LOADERS = {
  market: async () => { await loadInstruments(); await loadChart(); },
  review: loadFlags,
  trainings: async () => { await loadTrainings(); const id = $("#training-logs").dataset.training; if (id) await showLogs(id); },
  models: loadModels,
  params: loadParams,
};
// Which topics each tab is drawn from: an event naming one refreshes it.
const SOURCES = {
  market: ["market.bars", "regimes", "market.flags"],
  review: ["market.flags"],
  trainings: ["training.triggers", "training.status"],
  models: ["model.updates"],
  params: ["param.updates", "trade.outcomes"],
};

async function refresh(tab) {
  try { await LOADERS[tab](); document.body.dataset.loaded = tab; } catch (e) { showError(e); }
}

function show(tab) {
  state.tab = tab;
  for (const b of document.querySelectorAll("#tabs button")) b.classList.toggle("active", b.dataset.tab === tab);
  for (const s of document.querySelectorAll("main section")) s.hidden = s.id !== tab;
  refresh(tab);
}

async function live() {
  // EventSource cannot send a bearer token: read the stream with fetch.
  for (;;) {
    try {
      const res = await fetch("/dashboard/events", { headers: headers() });
      if (!res.ok) throw new Error("events " + res.status);
      $("#live").className = "live on";
      const reader = res.body.getReader();
      const decoder = new TextDecoder();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += decoder.decode(value, { stream: true });
        let cut;
        while ((cut = buffer.indexOf("\n\n")) >= 0) {
          const chunk = buffer.slice(0, cut);
          buffer = buffer.slice(cut + 2);
          const data = chunk.split("\n").filter((l) => l.startsWith("data:")).map((l) => l.slice(5)).join("\n");
          if (data) onChanged(JSON.parse(data));
        }
      }
    } catch (e) { /* reconnect below */ }
    $("#live").className = "live off";
    await new Promise((r) => setTimeout(r, 2000));
  }
}

function onChanged(event) {
  const before = state.counts;
  state.counts = event.records || {};
  const moved = (topic) => (state.counts[topic] || 0) !== (before[topic] || 0);
  if (SOURCES[state.tab].some(moved)) refresh(state.tab);
  if (state.tab !== "review" && moved("market.flags")) api("/api/flags?state=pending").then((l) => { $("#review-count").textContent = l.total || ""; }).catch(() => {});
}

document.addEventListener("click", async (e) => {
  const t = e.target;
  try {
    if (t.matches("#tabs button")) show(t.dataset.tab);
    else if (t.dataset.action && t.dataset.flag) { t.disabled = true; await decide(t.dataset.flag, t.dataset.action); }
    else if (t.dataset.modelAction) { t.disabled = true; await moveAlias(t.dataset.model, Number(t.dataset.version), t.dataset.modelAction); }
    else if (t.closest("tr[data-training]")) await showLogs(t.closest("tr[data-training]").dataset.training);
    else if (t.closest("tr[data-model]")) await showModel(t.closest("tr[data-model]").dataset.model);
  } catch (err) { showError(err); t.disabled = false; }
});
$("#instrument").addEventListener("change", () => refresh("market"));
$("#flag-state").addEventListener("change", () => refresh("review"));
$("#login").addEventListener("submit", async (e) => {
  e.preventDefault();
  state.token = $("#token").value.trim();
  sessionStorage.setItem("autotrain-token", state.token);
  $("#token").value = "";
  if (await signIn()) show(state.tab);
});

async function start() {
  if (await signIn()) { show(new URLSearchParams(location.search).get("tab") || "market"); live(); }
}

const fromHash = new URLSearchParams(location.hash.slice(1)).get("token");
if (fromHash) { state.token = fromHash; sessionStorage.setItem("autotrain-token", fromHash); history.replaceState(null, "", location.pathname + location.search); }
start();
