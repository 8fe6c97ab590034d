"use strict";
// The status page: asks for the access token once (kept for this browser session), then
// redraws from GET /ui/data every second without reloading the page.
// (KEY, $, el, showLogin and withToken come from common.js.)

const REFRESH_MS = 1000;
let timer = null;
// Set once per page load: a test tells a live redraw from a reload by it.
window.vaneLoadedAt = Date.now();
window.vaneRefreshes = 0;

function svg(tag, attrs, text) {
  const e = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  if (text !== undefined) e.textContent = text;
  return e;
}

function stop() {
  if (timer) {
    clearInterval(timer);
    timer = null;
  }
}

function start() {
  $("login").hidden = true;
  $("main").hidden = false;
  refresh();
  if (!timer) timer = setInterval(refresh, REFRESH_MS);
}

async function refresh() {
  const token = sessionStorage.getItem(KEY);
  if (!token) {
    stop();
    showLogin();
    return;
  }
  let r;
  try {
    r = await fetch("/ui/data", { headers: { Authorization: "Bearer " + token }, cache: "no-store" });
  } catch (e) {
    setState("unreachable", "bad");
    return;
  }
  if (r.status === 401) {
    sessionStorage.removeItem(KEY);
    stop();
    showLogin("That token was refused.");
    return;
  }
  if (!r.ok) {
    setState("error " + r.status, "bad");
    return;
  }
  render(await r.json());
  window.vaneRefreshes += 1;
  setState("live", "ok");
}

function setState(text, kind) {
  $("state").textContent = text;
  $("state").className = "state " + kind;
}

function fill(table, rows) {
  const body = $(table).tBodies[0];
  body.replaceChildren(...rows);
}

function tile(value, label, bar) {
  const t = el("div", { class: "tile" }, el("b", {}, value), el("span", {}, label));
  if (bar !== undefined) {
    const i = el("i");
    i.style.width = Math.min(100, Math.round(bar * 100)) + "%";
    t.append(el("div", { class: "bar" }, i));
  }
  return t;
}

function bytes(n) {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) {
    n /= 1024;
    i += 1;
  }
  return (i === 0 ? n : n.toFixed(1)) + " " + units[i];
}

function render(d) {
  $("meta").textContent = "v" + d.version + " · up " + Math.floor(d.uptime_secs / 60) + " min · config generation " + d.generation;
  const t = d.traffic;
  const ratio = t.requests > 0 ? (100 * t.failed_requests / t.requests).toFixed(2) + " %" : "–";
  const tiles = [
    tile(t.connections, "open connections"),
    tile(t.requests, "HTTP requests"),
    tile(ratio, "failed (5xx, aborted)"),
    tile(t.rejected_connections, "rejected connections"),
    tile(t.connection_errors, "HTTP connection errors"),
  ];
  for (const [listener, n] of Object.entries(t.by_listener)) tiles.push(tile(n, "open on " + listener));
  if (!d.metrics) tiles.push(tile("off", "metrics (METRICS_ADDR)"));
  $("traffic").replaceChildren(...tiles);

  fill("actors", d.actors.map((a) => {
    const ok = a.status === "running";
    return el("tr", { "data-actor": a.name },
      el("td", {}, a.name), el("td", {}, a.parent || ""),
      el("td", { class: "status " + (ok ? "good" : "bad") }, a.status),
      el("td", { class: "restarts" + (a.restarts > 0 ? " warn" : "") }, a.restarts));
  }));

  fill("upstreams", d.upstreams.map((u) => {
    const health = u.healthy === null ? "unknown" : u.healthy ? "healthy" : "down";
    const cls = u.healthy === null ? "" : u.healthy ? "good" : "bad";
    const latency = u.healthy && u.latency_us ? (u.latency_us / 1000).toFixed(2) + " ms" : "–";
    return el("tr", { "data-target": u.addr },
      el("td", {}, u.addr), el("td", { class: "health " + cls }, health),
      el("td", {}, latency), el("td", {}, u.active));
  }));

  const flows = d.flows.map((f) => {
    const box = el("div", { class: "flow", "data-flow": f.kind + ":" + f.name });
    box.append(el("h3", {}, f.kind + " " + f.name + " ", el("small", {}, f.file)));
    box.append(graph(f.tree, d.plugin_runs));
    return box;
  });
  $("flows").replaceChildren(...flows);

  const m = d.memory;
  $("memory").replaceChildren(
    tile(bytes(m.buffered_bytes) + " / " + bytes(m.limit_bytes), "L7 buffer budget", m.limit_bytes ? m.buffered_bytes / m.limit_bytes : 0),
    tile(m.rss_bytes ? bytes(m.rss_bytes) : "–", "resident memory"));

  $("reloads").replaceChildren(...d.reloads.slice().reverse().map((r) => {
    const li = el("li", {},
      el("span", { class: r.ok ? "good" : "bad" }, r.ok ? "✓ " : "✗ "),
      new Date(r.at * 1000).toLocaleString() + " — " + r.summary);
    if (r.problems.length) li.append(el("ul", {}, ...r.problems.map((p) => el("li", {}, p))));
    return li;
  }));

  const now = Date.now() / 1000;
  fill("certs", d.certs.map((c) => {
    const days = c.not_after_unix ? Math.floor((c.not_after_unix - now) / 86400) : null;
    const cls = days === null ? "" : days < 0 ? "bad" : days < 14 ? "warn" : "good";
    return el("tr", { "data-cert": c.id },
      el("td", {}, c.id),
      el("td", {}, c.not_after_unix ? new Date(c.not_after_unix * 1000).toISOString().slice(0, 10) : "–"),
      el("td", { class: cls }, days === null ? "–" : days));
  }));
}

// A flow as a left-to-right tree: each step a box (with how often that plugin ran), each
// branch an edge labelled with its name.
function graph(root, runs) {
  const COL = 250, ROW = 56, W = 200, H = 38, PAD = 10;
  const nodes = [];
  const edges = [];
  let leaves = 0;
  function place(n, depth) {
    const kids = (n.branches || []).map((b) => ({ branch: b.branch, node: place(b.next, depth + 1) }));
    const y = kids.length ? kids.reduce((s, k) => s + k.node.y, 0) / kids.length : (leaves++) * ROW;
    const me = { plugin: n.plugin, x: depth * COL, y, leaf: kids.length === 0 };
    for (const k of kids) edges.push({ from: me, to: k.node, label: k.branch });
    nodes.push(me);
    return me;
  }
  place(root, 0);
  // The counter is per plugin (vane_plugin_duration_seconds counts by plugin, across flows).
  const uses = {};
  for (const n of nodes) uses[n.plugin] = (uses[n.plugin] || 0) + 1;
  const width = Math.max(...nodes.map((n) => n.x)) + W + 2 * PAD;
  const height = Math.max(leaves, 1) * ROW + PAD;
  const s = svg("svg", { width, height, viewBox: `${-PAD} ${-PAD} ${width} ${height}`, role: "img" });
  for (const e of edges) {
    const x1 = e.from.x + W, y1 = e.from.y + H / 2, x2 = e.to.x, y2 = e.to.y + H / 2;
    const mx = (x1 + x2) / 2;
    s.append(svg("path", { d: `M${x1},${y1} C${mx},${y1} ${mx},${y2} ${x2},${y2}` }));
    s.append(svg("text", { class: "branch", x: mx - 20, y: (y1 + y2) / 2 - 4 }, e.label));
  }
  for (const n of nodes) {
    const g = svg("g", { class: "node" + (n.leaf ? " terminator" : ""), "data-plugin": n.plugin, transform: `translate(${n.x},${n.y})` });
    g.append(svg("rect", { width: W, height: H }));
    const name = n.plugin.length > 28 ? n.plugin.slice(0, 27) + "…" : n.plugin;
    g.append(svg("text", { x: 8, y: 16 }, name));
    const count = runs[n.plugin];
    const label = count === undefined ? "" : "plugin ran " + Math.round(count) + "×" + (uses[n.plugin] > 1 ? " (all its steps)" : "");
    g.append(svg("text", { class: "count", x: 8, y: 31 }, label));
    g.append(svg("title", {}, n.plugin));
    s.append(g);
  }
  return s;
}

withToken(start);
