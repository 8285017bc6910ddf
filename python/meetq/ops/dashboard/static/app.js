// meetq dashboard: one full state at connect, then pushed deltas over Server-Sent Events.
"use strict";

const PRIORITIES = ["critical", "high", "normal", "low"];
const FIELDS = ["ready_total", "inflight", "delayed", "dead_letters", "oldest_ready_age"];
const HISTORY = 120; // points kept per queue for the sparkline (one per push)
const state = { queues: {}, components: {}, actions: false };
const depthHistory = {};
let dlqSeen = null; // the DLQ size the shown page was read at
const dlq = { queue: null, offset: 0, stack: [], next: null };

const $ = (sel) => document.querySelector(sel);
const fmt = (n) => (typeof n === "number" ? n.toLocaleString("en-US") : String(n ?? ""));
const el = (tag, attrs = {}, text = "") => {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  if (text !== "") e.textContent = text;
  return e;
};

// ---------------------------------------------------------------- token (kept per tab)
const fromHash = new URLSearchParams(location.hash.slice(1)).get("token");
if (fromHash) { sessionStorage.setItem("meetq-token", fromHash); window.history.replaceState(null, "", location.pathname); }
$("#token").value = sessionStorage.getItem("meetq-token") || "";
$("#token").addEventListener("change", (e) => sessionStorage.setItem("meetq-token", e.target.value));

// ---------------------------------------------------------------- push stream
function connect() {
  const es = new EventSource("/api/events");
  es.addEventListener("open", () => setBadge("#conn", true, "live"));
  es.addEventListener("error", () => setBadge("#conn", false, "reconnecting…"));
  es.addEventListener("state", (ev) => { const s = JSON.parse(ev.data); state.queues = {}; apply(s, true); });
  es.addEventListener("delta", (ev) => apply(JSON.parse(ev.data), false));
}

function setBadge(sel, on, text) {
  const b = $(sel); b.textContent = text; b.className = "badge " + (on ? "on" : "off");
}

function apply(d, full) {
  if (d.title) { $("#title").textContent = d.title; document.title = d.title + " — meetq"; }
  if ("redis_up" in d) setBadge("#redis", d.redis_up, d.redis_up ? "redis up" : "redis down");
  if ("actions" in d) state.actions = d.actions;
  if (d.queues) Object.assign(state.queues, d.queues);
  for (const name of d.removed_queues || []) delete state.queues[name];
  if (d.components) state.components = d.components;
  if (d.time) $("#updated").textContent = "updated " + new Date(d.time * 1000).toLocaleTimeString();
  for (const [name, q] of Object.entries(d.queues || {})) {
    const h = (depthHistory[name] ||= []);
    h.push(q.ready_total);
    if (h.length > HISTORY) h.shift();
  }
  renderQueues(full ? Object.keys(state.queues) : Object.keys(d.queues || {}));
  if (d.components || full) renderComponents();
  renderQueueSelect();
  $("#requeue").disabled = $("#purge").disabled = !state.actions;
  const shown = dlq.queue && state.queues[dlq.queue];
  if (shown && dlqSeen !== null && shown.dead_letters !== dlqSeen) loadDlq(false);
}

// ---------------------------------------------------------------- queues table
function renderQueues(names) {
  const body = $("#queues tbody");
  for (const row of [...body.rows]) if (!(row.dataset.queue in state.queues)) row.remove();
  for (const name of names) {
    const q = state.queues[name];
    if (!q) continue;
    let row = body.querySelector(`tr[data-queue="${CSS.escape(name)}"]`);
    if (!row) {
      row = el("tr", { "data-queue": name });
      row.append(el("td", { "data-field": "name" }, name));
      for (const p of PRIORITIES) row.append(el("td", { "data-field": "ready-" + p }));
      for (const f of FIELDS) row.append(el("td", { "data-field": f }));
      for (const r of ["published", "processed", "failed"]) row.append(el("td", { "data-field": "rate-" + r }));
      const spark = el("td"); spark.append(el("canvas", { class: "spark", width: "120", height: "22" }));
      row.append(spark);
      const rows = [...body.rows];
      const before = rows.find((r) => r.dataset.queue > name);
      body.insertBefore(row, before || null);
    }
    const set = (field, text, title) => {
      const td = row.querySelector(`td[data-field="${field}"]`);
      if (td.textContent !== text) { td.textContent = text; td.classList.remove("num-changed"); void td.offsetWidth; td.classList.add("num-changed"); }
      if (title !== undefined) td.title = title;
    };
    for (const p of PRIORITIES) {
      const trend = q.rates.ready && q.rates.ready[p];
      set("ready-" + p, fmt(q.ready[p]), trend ? `${trend > 0 ? "+" : ""}${trend}/s` : "");
    }
    set("ready_total", fmt(q.ready_total));
    set("inflight", fmt(q.inflight));
    set("delayed", fmt(q.delayed));
    set("dead_letters", fmt(q.dead_letters));
    set("oldest_ready_age", q.oldest_ready_age ? q.oldest_ready_age.toFixed(1) + " s" : "–");
    set("rate-published", fmt(q.rates.published));
    set("rate-processed", fmt(q.rates.processed));
    set("rate-failed", fmt(q.rates.failed));
    drawSpark(row.querySelector("canvas"), depthHistory[name] || []);
  }
  $("#no-queues").hidden = Object.keys(state.queues).length > 0;
}

function drawSpark(canvas, points) {
  const ctx = canvas.getContext("2d");
  const w = canvas.width, h = canvas.height;
  ctx.clearRect(0, 0, w, h);
  if (points.length < 2) return;
  const max = Math.max(1, ...points);
  ctx.strokeStyle = "#2463eb"; ctx.lineWidth = 1.5; ctx.beginPath();
  points.forEach((v, i) => {
    const x = (i / (HISTORY - 1)) * w, y = h - 1 - (v / max) * (h - 2);
    i ? ctx.lineTo(x, y) : ctx.moveTo(x, y);
  });
  ctx.stroke();
}

// ---------------------------------------------------------------- component cards
const PANELS = { sessions: ["sessions", "gateway", "client_tasks"], streams: ["streams"], ai: ["ai", "ai_nodes"] };
function renderComponents() {
  const used = new Set();
  for (const [panel, kinds] of Object.entries(PANELS)) {
    const cards = [];
    for (const kind of kinds) {
      for (const [name, stats] of Object.entries(state.components[kind] || {})) { cards.push(card(`${kind}: ${name}`, stats)); }
      used.add(kind);
    }
    if (cards.length) $("#" + panel).replaceChildren(...cards);
  }
  const local = [];
  for (const [kind, items] of Object.entries(state.components)) {
    if (used.has(kind)) continue;
    for (const [name, stats] of Object.entries(items)) local.push(card(`${kind}: ${name}`, stats));
  }
  if (local.length) $("#local").replaceChildren(...local);
}

function card(title, stats) {
  const c = el("div", { class: "card" });
  c.append(el("h3", {}, title));
  const dl = el("dl");
  for (const [k, v] of Object.entries(stats)) {
    if (v !== null && typeof v === "object") {
      for (const [k2, v2] of Object.entries(v)) { dl.append(el("dt", {}, `${k}.${k2}`), el("dd", {}, typeof v2 === "object" ? JSON.stringify(v2) : fmt(v2))); }
    } else dl.append(el("dt", {}, k), el("dd", {}, fmt(v)));
  }
  c.append(dl);
  return c;
}

// ---------------------------------------------------------------- dead letters
function renderQueueSelect() {
  const sel = $("#dlq-queue");
  const names = Object.keys(state.queues).sort();
  const have = [...sel.options].map((o) => o.value);
  if (names.join("\n") !== have.join("\n")) {
    const keep = sel.value;
    sel.replaceChildren(...names.map((n) => el("option", { value: n }, n)));
    if (names.includes(keep)) sel.value = keep;
  }
  if (!dlq.queue && names.length) { dlq.queue = sel.value; loadDlq(true); }
}

async function loadDlq(reset) {
  if (reset) { dlq.offset = 0; dlq.stack = []; }
  const params = new URLSearchParams({ queue: dlq.queue, offset: dlq.offset, limit: 25, type: $("#dlq-type").value, reason: $("#dlq-reason").value });
  const res = await fetch("/api/dlq?" + params);
  const page = await res.json();
  if (!res.ok) { $("#dlq-status").textContent = page.error || res.statusText; return; }
  dlq.next = page.next_offset;
  dlqSeen = page.total;
  const body = $("#dlq tbody");
  body.replaceChildren(...page.entries.map((e) => {
    const tr = el("tr", { "data-id": e.id });
    tr.append(el("td", {}, e.id), el("td", {}, e.type ?? "?"), el("td", {}, e.priority ?? "?"),
      el("td", {}, new Date(e.failed_at * 1000).toLocaleString()), el("td", {}, String(e.deliveries)),
      el("td", { class: "reason" }, e.reason), el("td", { class: "payload" }, JSON.stringify(e.payload ?? e.raw)));
    return tr;
  }));
  const filtered = $("#dlq-type").value || $("#dlq-reason").value;
  $("#dlq-status").textContent = `${fmt(page.total)} dead letter(s) in ${page.queue}` + (filtered ? ` (${page.entries.length} matching on this page, ${fmt(page.scanned)} read)` : "");
  $("#dlq-page").textContent = page.entries.length ? `from #${page.offset + 1}` : "";
  $("#dlq-prev").disabled = dlq.stack.length === 0;
  $("#dlq-next").disabled = page.next_offset === null;
}

async function action(path, body) {
  const res = await fetch(path, { method: "POST", headers: { "Content-Type": "application/json", Authorization: "Bearer " + $("#token").value }, body: JSON.stringify(body) });
  const out = await res.json();
  $("#dlq-action").textContent = res.ok ? Object.entries(out).filter(([k]) => k !== "queue").map(([k, v]) => `${k} ${v}`).join(", ") : "refused: " + (out.error || res.statusText);
  if (res.ok) loadDlq(true);
}

$("#dlq-form").addEventListener("submit", (e) => { e.preventDefault(); dlq.queue = $("#dlq-queue").value; loadDlq(true); });
$("#dlq-queue").addEventListener("change", () => { dlq.queue = $("#dlq-queue").value; loadDlq(true); });
$("#dlq-next").addEventListener("click", () => { if (dlq.next !== null) { dlq.stack.push(dlq.offset); dlq.offset = dlq.next; loadDlq(false); } });
$("#dlq-prev").addEventListener("click", () => { if (dlq.stack.length) { dlq.offset = dlq.stack.pop(); loadDlq(false); } });
$("#requeue").addEventListener("click", () => action("/api/dlq/requeue", { queue: dlq.queue, count: Number($("#requeue-count").value) }));
$("#purge").addEventListener("click", () => {
  if (confirm(`Purge every dead letter of ${dlq.queue}? This cannot be undone.`)) action("/api/dlq/purge", { queue: dlq.queue, confirm: dlq.queue });
});

connect();
