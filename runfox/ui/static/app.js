// The runfox dashboard: a read-only single page over the JSON endpoints under /api/.
//
// Safety rule: data from the backend (step ids, outputs, errors, names) only ever
// reaches the page through textContent, createTextNode and setAttribute; this file
// never assigns HTML strings (tests/test_ui.py checks that, and the browser test runs
// a step output holding <script> and <img onerror> through every view).
//
// When a view has rendered, <body> gets data-view (its name) and data-ready (ms since
// navigation start, after the next frame painted); benchmarks/bench_ui.py reads it.
"use strict";

const PAGE_SIZE = 50;     // step table rows per page
const ROW_WIDTH = 24;     // DAG nodes per row before a layer wraps
const NODE_W = 150, NODE_H = 38, GAP_X = 18, GAP_Y = 34, PAD = 16;
const SVG_NS = "http://www.w3.org/2000/svg";

let config = null;        // /api/config
let timer = null;         // the pending poll of the current view
let generation = 0;       // bumps on every navigation; stale renders stop

// -- DOM helpers (text only) ---------------------------------------------------------

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  setAttrs(node, attrs);
  for (const child of children) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function svg(tag, attrs) {
  const node = document.createElementNS(SVG_NS, tag);
  setAttrs(node, attrs);
  return node;
}

function setAttrs(node, attrs) {
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (name.startsWith("on")) {
      node.addEventListener(name.slice(2), value);
    } else {
      node.setAttribute(name, String(value));
    }
  }
}

function clear(node) {
  while (node.firstChild) node.removeChild(node.firstChild);
  return node;
}

function when(ts) {
  if (ts === null || ts === undefined) return "";
  return new Date(ts * 1000).toISOString().replace("T", " ").slice(0, 23);
}

function json(value) {
  return value === null || value === undefined ? "" : JSON.stringify(value, null, 2);
}

function badge(status, prefix) {
  return el("span", { class: `badge ${prefix}-${status}` }, status);
}

function markReady(view) {
  const mine = generation;
  requestAnimationFrame(() => requestAnimationFrame(() => {
    if (mine !== generation) return;
    document.body.dataset.view = view;
    if (!document.body.dataset.ready) {
      document.body.dataset.ready = performance.now().toFixed(1);
    }
    document.body.dataset.renders = String(Number(document.body.dataset.renders || 0) + 1);
  }));
}

async function api(path) {
  const response = await fetch(path, { headers: { Accept: "application/json" } });
  let body = null;
  try {
    body = await response.json();
  } catch (exc) {
    throw new Error(`${path}: HTTP ${response.status}, not JSON`);
  }
  if (!response.ok) {
    const error = new Error(body && body.error ? body.error : `HTTP ${response.status}`);
    error.body = body;
    throw error;
  }
  return body;
}

function showError(view, exc) {
  const box = el("div", { class: "error", id: "error" }, exc.message);
  if (exc.body && exc.body.candidates) {
    box.append(el("ul", null, ...exc.body.candidates.map(
      (c) => el("li", null, el("a", { href: "#/execution/" + encodeURIComponent(c) }, c)))));
  }
  view.append(box);
}

function schedulePoll(fn, live) {
  if (timer !== null) clearTimeout(timer);
  timer = null;
  document.getElementById("live").textContent = live ? `live: every ${config.refresh_seconds}s` : "";
  if (live) timer = setTimeout(fn, config.refresh_seconds * 1000);
}

// -- routing ---------------------------------------------------------------------------

function parseHash() {
  const raw = location.hash.replace(/^#/, "") || "/";
  const [path, query] = raw.split("?");
  return { path, params: new URLSearchParams(query || "") };
}

async function route() {
  generation += 1;
  schedulePoll(null, false);
  delete document.body.dataset.view;
  const { path, params } = parseHash();
  const view = clear(document.getElementById("view"));
  let nav = "executions";
  try {
    if (config === null) config = await api("/api/config");
    if (path.startsWith("/execution/")) {
      await executionView(view, decodeURIComponent(path.slice("/execution/".length)));
    } else if (path === "/workers") {
      nav = "workers";
      await listView(view, "Workers", "/api/workers", "workers", workerRow,
                     ["id", "host", "pid", "executor", "concurrency", "started", "heartbeat",
                      "jobs", "alive"]);
    } else if (path === "/schedules") {
      nav = "schedules";
      await listView(view, "Schedules", "/api/schedules", "schedules", scheduleRow,
                     ["name", "workflow", "trigger", "tz", "next fire", "paused", "last fire",
                      "last execution", "last error"]);
    } else {
      await executionsView(view, params);
    }
  } catch (exc) {
    showError(view, exc);
    markReady("error");
  }
  for (const link of document.querySelectorAll("header nav a")) {
    link.classList.toggle("active", link.dataset.nav === nav);
  }
}

// -- executions list --------------------------------------------------------------------

async function executionsView(view, params) {
  const mine = generation;
  const page = await api("/api/executions?" + params.toString());
  if (mine !== generation) return;
  clear(view);
  view.append(el("h1", null, "Executions"));
  const setParam = (name, value) => {
    const next = new URLSearchParams(params);
    if (value) next.set(name, value); else next.delete(name);
    location.hash = "#/?" + next.toString();
  };
  const statusSelect = el("select", { id: "f-status", onchange: (e) => setParam("status", e.target.value) },
    el("option", { value: "" }, "any"),
    ...config.workflow_statuses.map((s) => el("option", { value: s, selected: params.get("status") === s }, s)));
  const workflowSelect = el("select", { id: "f-workflow", onchange: (e) => setParam("workflow", e.target.value) },
    el("option", { value: "" }, "any"),
    ...page.workflows.map((w) => el("option", { value: w.workflow_id, selected: params.get("workflow") === w.workflow_id },
                                    `${w.name || "(unnamed)"} · ${w.workflow_id.slice(0, 8)}`)));
  const since = el("input", { id: "f-since", placeholder: "2026-11-01T00:00", value: params.get("since") || "",
                              onchange: (e) => setParam("since", e.target.value) });
  view.append(el("div", { class: "filters" },
    el("label", null, "status", statusSelect), el("label", null, "workflow", workflowSelect),
    el("label", null, "created since (ISO or epoch)", since)));
  const counts = el("div", { class: "counts", id: "counts" });
  for (const [status, count] of Object.entries(page.counts)) {
    counts.append(el("button", { class: `badge wf-${status}` + (params.get("status") === status ? " active" : ""),
                                 "data-status": status, "data-count": count,
                                 onclick: () => setParam("status", params.get("status") === status ? "" : status) },
                     `${status} ${count}`));
  }
  view.append(counts);
  view.append(el("p", { class: "muted" },
    `${page.executions.length} shown of ${page.total}` + (page.truncated ? " (only the newest were read)" : "")));
  const body = el("tbody");
  for (const ex of page.executions) {
    body.append(el("tr", { "data-id": ex.id },
      el("td", null, el("a", { href: "#/execution/" + encodeURIComponent(ex.id) }, ex.id)),
      el("td", null, ex.name), el("td", null, badge(ex.status, "wf")),
      el("td", null, when(ex.created_at)), el("td", null, when(ex.updated_at))));
  }
  view.append(el("table", { id: "executions" },
    el("thead", null, el("tr", null, ...["execution", "name", "status", "created", "updated"].map((h) => el("th", null, h)))),
    body));
  const running = page.executions.some((ex) => ex.status === "in_progress" || ex.status === "pending");
  schedulePoll(() => executionsView(view, params).catch(() => schedulePoll(null, false)), running);
  markReady("executions");
}

// -- one execution ------------------------------------------------------------------------

async function executionView(view, ident) {
  const mine = generation;
  const detail = await api("/api/executions/" + encodeURIComponent(ident));
  if (mine !== generation) return;
  clear(view);
  if (detail.corrupt) {
    view.append(el("h1", null, detail.id));
    view.append(el("div", { class: "corrupt", id: "corrupt" },
      el("strong", null, "Corrupt record: "), "the stored record ",
      el("code", { id: "corrupt-key" }, detail.corrupt.key), " cannot be decoded: ",
      el("span", { id: "corrupt-reason" }, detail.corrupt.reason)));
    markReady("execution");
    return;
  }
  const state = { detail, filter: "", status: "", page: 0, selected: null };
  const header = el("section", { id: "header" });
  const graphBox = el("section", { id: "graph" });
  const tableBox = el("section", { id: "steps" });
  const historyBox = el("section", { id: "history" });
  view.append(header, graphBox, tableBox, historyBox);
  renderHeader(header, detail);
  const drawing = renderGraph(graphBox, detail, (stepId) => {
    state.filter = stepId; state.page = 0; state.selected = stepId;
    renderSteps(tableBox, state);
    tableBox.scrollIntoView({ behavior: "instant", block: "start" });
  });
  renderSteps(tableBox, state);
  await renderHistory(historyBox, detail.id);
  if (mine !== generation) return;
  markReady("execution");

  const poll = async () => {
    if (mine !== generation) return;
    try {
      const next = await api("/api/executions/" + encodeURIComponent(detail.id));
      if (mine !== generation) return;
      if (next.corrupt) { route(); return; }
      state.detail = next;
      renderHeader(header, next);
      drawing.update(next);
      renderSteps(tableBox, state);
      await renderHistory(historyBox, next.id);
      schedulePoll(poll, !next.terminal);
    } catch (exc) {
      schedulePoll(poll, true);  // the backend may be back at the next poll
    }
  };
  schedulePoll(poll, !detail.terminal);
}

function renderHeader(box, d) {
  clear(box);
  box.append(el("h1", { id: "title" }, d.name || "(unnamed workflow)"));
  const meta = el("dl", { class: "meta" });
  const row = (k, v) => meta.append(el("dt", null, k), el("dd", null, v));
  row("execution", el("code", { id: "exec-id" }, d.id));
  row("status", badge(d.status, "wf"));
  row("created", when(d.created_at));
  row("updated", when(d.updated_at));
  row("version", String(d.version));
  const progress = Object.entries(d.progress).filter(([, n]) => n > 0).map(([s, n]) => `${s} ${n}`).join(", ");
  row("steps", `${d.steps.length}: ${progress}`);
  box.append(meta);
  if (d.defects && d.defects.length) {
    box.append(el("div", { class: "corrupt", id: "defects" }, el("strong", null, "Stored values of the wrong shape: "),
      el("ul", null, ...d.defects.map((x) => el("li", null, `${x.where}: ${x.message}`)))));
  }
  if (d.outcome !== null && d.outcome !== undefined) {
    box.append(el("details", { open: d.status !== "complete" }, el("summary", null, "outcome"),
                  el("pre", { id: "outcome" }, json(d.outcome))));
  }
  if (Object.keys(d.inputs || {}).length) {
    box.append(el("details", null, el("summary", null, "workflow inputs"), el("pre", null, json(d.inputs))));
  }
}

// -- the DAG: layered layout (longest path from the sources), drawn as SVG ------------------

// Layers by longest path over dependency edges, Kahn's order: O(nodes + edges).
// A layer wider than ROW_WIDTH wraps onto several rows. Loop (set) edges are drawn
// but do not place nodes.
function layout(graph) {
  const n = graph.nodes.length;
  const indegree = new Int32Array(n);
  const start = new Int32Array(n + 1);
  for (const [from, to, kind] of graph.edges) {
    if (kind === "dep") { start[from + 1] += 1; indegree[to] += 1; }
  }
  for (let i = 0; i < n; i += 1) start[i + 1] += start[i];
  const targets = new Int32Array(start[n]);
  const fill = start.slice(0, n);
  for (const [from, to, kind] of graph.edges) {
    if (kind === "dep") { targets[fill[from]] = to; fill[from] += 1; }
  }
  const layer = new Int32Array(n);
  const queue = [];
  for (let i = 0; i < n; i += 1) if (indegree[i] === 0) queue.push(i);
  let placed = 0;
  for (let head = 0; head < queue.length; head += 1) {
    const u = queue[head];
    placed += 1;
    for (let k = start[u]; k < start[u + 1]; k += 1) {
      const v = targets[k];
      if (layer[u] + 1 > layer[v]) layer[v] = layer[u] + 1;
      indegree[v] -= 1;
      if (indegree[v] === 0) queue.push(v);
    }
  }
  let depth = 0;
  for (let i = 0; i < n; i += 1) depth = Math.max(depth, layer[i]);
  if (placed < n) {  // a cycle (a spec never has one): put what is left below
    for (let i = 0; i < n; i += 1) if (indegree[i] > 0) layer[i] = depth + 1;
    depth += 1;
  }
  const buckets = Array.from({ length: depth + 1 }, () => []);
  for (let i = 0; i < n; i += 1) buckets[layer[i]].push(i);  // plan order within a layer
  const x = new Float64Array(n), y = new Float64Array(n);
  let row = 0, widest = 1;
  const rows = [];
  for (const bucket of buckets) {
    const per = Math.ceil(bucket.length / Math.max(1, Math.ceil(bucket.length / ROW_WIDTH)));
    for (let offset = 0; offset < bucket.length; offset += per) {
      const members = bucket.slice(offset, offset + per);
      rows.push(members);
      widest = Math.max(widest, members.length);
    }
  }
  const width = PAD * 2 + widest * NODE_W + (widest - 1) * GAP_X;
  for (const members of rows) {
    const rowWidth = members.length * NODE_W + (members.length - 1) * GAP_X;
    let left = (width - rowWidth) / 2;
    for (const i of members) {
      x[i] = left; y[i] = PAD + row * (NODE_H + GAP_Y);
      left += NODE_W + GAP_X;
    }
    row += 1;
  }
  return { x, y, width, height: PAD * 2 + rows.length * NODE_H + Math.max(0, rows.length - 1) * GAP_Y,
           layers: depth + 1 };
}

function shorten(text, most) {
  return text.length <= most ? text : text.slice(0, most - 1) + "…";
}

function renderGraph(box, detail, onSelect) {
  clear(box);
  box.append(el("h2", null, "Graph"));
  const colours = detail.colours;
  const legend = el("div", { class: "legend", id: "legend" });
  box.append(legend);
  const fitButton = el("button", { id: "fit" }, "actual size");
  box.append(el("div", { class: "toolbar" }, fitButton,
    el("span", { class: "muted" }, "click a step to show it in the table; dashed: loop (set) branches")));
  const frame = el("div", { class: "dag-box fit" });
  box.append(frame);
  fitButton.addEventListener("click", () => {
    const fit = frame.classList.toggle("fit");
    fitButton.textContent = fit ? "actual size" : "fit";
  });

  const graph = detail.graph;
  const pos = layout(graph);
  const root = svg("svg", { class: "dag", id: "dag", viewBox: `0 0 ${pos.width} ${pos.height}`,
                            width: pos.width, height: pos.height, role: "img",
                            "aria-label": `step graph, ${graph.nodes.length} steps`,
                            "data-layers": pos.layers });
  let deps = "", loops = "";
  for (const [from, to, kind] of graph.edges) {
    const x1 = pos.x[from] + NODE_W / 2, x2 = pos.x[to] + NODE_W / 2;
    if (kind === "dep") {
      const y1 = pos.y[from] + NODE_H, y2 = pos.y[to], mid = (y1 + y2) / 2;
      deps += `M${x1} ${y1}C${x1} ${mid} ${x2} ${mid} ${x2} ${y2}`;
    } else {
      const y1 = pos.y[from] + NODE_H / 2, y2 = pos.y[to] + NODE_H / 2;
      const side = Math.max(pos.x[from], pos.x[to]) + NODE_W + GAP_X / 2 + 20;
      loops += `M${pos.x[from] + NODE_W} ${y1}C${side} ${y1} ${side} ${y2} ${pos.x[to] + NODE_W} ${y2}`;
    }
  }
  root.append(svg("path", { class: "edges", d: deps || "M0 0" }));
  if (loops) root.append(svg("path", { class: "loops", d: loops }));
  const nodes = svg("g", { class: "nodes" });
  const parts = [];
  graph.nodes.forEach((node, i) => {
    const g = svg("g", { class: "node", transform: `translate(${pos.x[i]},${pos.y[i]})`,
                         "data-step": node.id });
    const rect = svg("rect", { width: NODE_W, height: NODE_H, rx: 6 });
    const name = svg("text", { x: 7, y: 15, class: "sid" });
    name.textContent = shorten(node.id, 20);
    const status = svg("text", { x: 7, y: 30, class: "sst" });
    const title = svg("title");
    g.append(title, rect, name, status);
    g.addEventListener("click", () => onSelect(node.id));
    nodes.append(g);
    parts.push({ g, rect, status, title, node });
  });
  root.append(nodes);
  frame.append(root);

  const update = (d) => {
    const counts = {};
    d.steps.forEach((step, i) => {
      const part = parts[i];
      if (!part || part.node.id !== step.id) return;
      counts[step.status] = (counts[step.status] || 0) + 1;
      if (part.g.dataset.status === step.status && part.attempts === step.attempts) return;
      part.g.dataset.status = step.status;
      part.attempts = step.attempts;
      part.g.setAttribute("class", `node ${step.status}`);
      part.rect.setAttribute("fill", colours[step.status] || "#ffffff");
      part.status.textContent = step.status + (step.attempts > 1 ? ` · ${step.attempts} attempts` : "");
      part.title.textContent = `${step.id} (${part.node.fn}): ${step.status}, attempt ${step.attempts}`;
    });
    clear(legend);
    for (const [status, colour] of Object.entries(colours)) {
      legend.append(el("span", { "data-status": status },
        el("span", { class: "swatch", style: null, "data-colour": colour }), `${status} (${counts[status] || 0})`));
    }
    // Swatch colours through the style object (CSP forbids inline style attributes).
    for (const swatch of legend.querySelectorAll(".swatch")) {
      swatch.style.background = swatch.dataset.colour;
    }
  };
  update(detail);
  return { update };
}

// -- step table (one page at a time) ---------------------------------------------------

function renderSteps(box, state) {
  clear(box);
  const d = state.detail;
  box.append(el("h2", null, "Steps"));
  const text = state.filter.toLowerCase();
  const rows = d.steps.filter((s) => (!state.status || s.status === state.status)
                                     && (!text || s.id.toLowerCase().includes(text)
                                         || s.fn.toLowerCase().includes(text)));
  const pages = Math.max(1, Math.ceil(rows.length / PAGE_SIZE));
  state.page = Math.min(state.page, pages - 1);
  const search = el("input", { id: "step-filter", placeholder: "step id or fn", value: state.filter });
  search.addEventListener("change", () => { state.filter = search.value; state.page = 0; state.selected = null; renderSteps(box, state); });
  const status = el("select", { id: "step-status" }, el("option", { value: "" }, "any"),
    ...Object.keys(d.colours).map((s) => el("option", { value: s, selected: state.status === s }, s)));
  status.addEventListener("change", () => { state.status = status.value; state.page = 0; renderSteps(box, state); });
  box.append(el("div", { class: "filters" }, el("label", null, "filter", search), el("label", null, "status", status)));
  const go = (page) => { state.page = page; renderSteps(box, state); };
  const pager = () => el("div", { class: "pager" },
    el("button", { disabled: state.page === 0, onclick: () => go(state.page - 1) }, "‹ previous"),
    el("span", { class: "page-info" }, `page ${state.page + 1} of ${pages} (${rows.length} steps)`),
    el("button", { disabled: state.page >= pages - 1, onclick: () => go(state.page + 1) }, "next ›"));
  box.append(pager());
  const body = el("tbody");
  for (const s of rows.slice(state.page * PAGE_SIZE, (state.page + 1) * PAGE_SIZE)) {
    const tr = el("tr", { "data-step": s.id, class: state.selected === s.id ? "steprow-selected" : null },
      el("td", null, el("code", null, s.id)),
      el("td", null, s.fn, s.child ? el("div", { class: "child" }, "child ",
        el("a", { href: "#/execution/" + encodeURIComponent(s.child) }, s.child)) : null),
      el("td", null, badge(s.status, "wf"), s.items ? el("div", { class: "items" }, itemsText(s.items)) : null),
      el("td", { class: "num" }, `${s.attempts}/${s.max_attempts}`), el("td", { class: "num" }, String(s.run_id)),
      el("td", null, when(s.started_at)), el("td", null, when(s.finished_at)),
      payloadCell(s.inputs, "inputs"), payloadCell(s.output, "output"), payloadCell(s.error, "error"));
    const colour = d.colours[s.status];
    if (colour) tr.querySelector(".badge").style.background = colour;
    body.append(tr);
  }
  box.append(el("table", { id: "step-table" },
    el("thead", null, el("tr", null, ...["step", "fn", "status", "attempts", "run", "started", "finished",
                                         "inputs", "output", "error"].map((h) => el("th", null, h)))),
    body));
}

// A map step's items, as `runfox status` words them.
function itemsText(items) {
  const failed = items.failed ? `, ${items.failed} failed` : "";
  return `items ${items.settled}/${items.total} done${failed}`;
}

function payloadCell(value, kind) {
  if (value === null || value === undefined) return el("td", { class: "muted" }, "");
  const text = json(value);
  if (text.length <= 80) return el("td", { class: kind }, el("pre", null, text));
  return el("td", { class: kind }, el("details", null, el("summary", null, shorten(JSON.stringify(value), 60)),
                                       el("pre", null, text)));
}

// -- history timeline -------------------------------------------------------------------

async function renderHistory(box, id) {
  let hist;
  try {
    hist = await api("/api/executions/" + encodeURIComponent(id) + "/history");
  } catch (exc) {
    hist = { events: [], note: exc.message };
  }
  clear(box);
  box.append(el("h2", null, "History"));
  if (hist.note) box.append(el("p", { class: "note", id: "history-note" }, hist.note));
  if (hist.corrupt) {
    box.append(el("div", { class: "corrupt" }, `corrupt record ${hist.corrupt.key}: ${hist.corrupt.reason}`));
  }
  const list = el("ol", { class: "timeline", id: "timeline" });
  for (const ev of hist.events) {
    const item = el("li", { class: `ev-${ev.type}`, "data-type": ev.type },
      el("span", { class: "when" }, when(ev.time)), el("span", { class: "type" }, ev.type));
    if (ev.step_id !== undefined) item.append(el("code", null, ev.step_id));
    if (ev.run_id !== undefined) item.append(` run ${ev.run_id}`);
    if (ev.attempt !== undefined) item.append(` attempt ${ev.attempt}`);
    if (ev.type === "corrupt" && ev.details) {
      item.append(" stored at ", el("code", { class: "corrupt-key" }, String(ev.details.key)));
    }
    if (ev.details && Object.keys(ev.details).length) {
      item.append(el("pre", null, JSON.stringify(ev.details)));
    }
    list.append(item);
  }
  if (!hist.events.length && !hist.note) box.append(el("p", { class: "muted" }, "no events"));
  box.append(list);
}

// -- workers and schedules ---------------------------------------------------------------

async function listView(view, title, path, field, toRow, headings) {
  const mine = generation;
  const data = await api(path);
  if (mine !== generation) return;
  clear(view);
  view.append(el("h1", null, title));
  if (data.note) view.append(el("p", { class: "note", id: "note" }, data.note));
  const body = el("tbody");
  for (const item of data[field]) body.append(el("tr", null, ...toRow(item).map((c) => el("td", null, c))));
  view.append(el("table", { id: field }, el("thead", null, el("tr", null, ...headings.map((h) => el("th", null, h)))), body));
  schedulePoll(() => listView(view, title, path, field, toRow, headings).catch(() => schedulePoll(null, false)),
               field === "workers");
  markReady(field);
}

function pick(item, ...names) {
  for (const name of names) if (item[name] !== undefined && item[name] !== null) return item[name];
  return "";
}

function workerRow(w) {
  const stamp = (v) => (typeof v === "number" ? when(v) : String(v));
  const jobs = pick(w, "jobs", "jobs_held", "held");
  return [String(pick(w, "id", "worker_id", "name")), String(pick(w, "host", "hostname")), String(pick(w, "pid")),
          String(pick(w, "executor")), String(pick(w, "concurrency")), stamp(pick(w, "started_at", "started")),
          stamp(pick(w, "heartbeat_at", "last_heartbeat", "heartbeat")),
          Array.isArray(jobs) ? String(jobs.length) : String(jobs),
          String(pick(w, "alive", "status"))];
}

function scheduleRow(s) {
  const last = s.last_execution_id
    ? el("a", { href: "#/execution/" + encodeURIComponent(s.last_execution_id) }, s.last_execution_id) : "";
  return [String(s.name), String(s.workflow || ""), JSON.stringify(s.trigger), String(s.tz || ""),
          when(s.next_fire), s.paused ? "yes" : "no", when(s.last_fire), last, String(s.last_error || "")];
}

window.addEventListener("hashchange", route);
route();
