// Instance monitoring: the last hour of samples as inline SVG line charts, drawn
// here (no chart library), and the advisor's findings; refreshed every sampler interval.
(function () {
  "use strict";
  const root = document.getElementById("monitoring");
  if (!root) return;
  const S = (k) => (window.DOCKYARD.strings || {})[k] || k;
  const NS = "http://www.w3.org/2000/svg";
  const W = 400, H = 140, LEFT = 54, RIGHT = 6, TOP = 8, BOTTOM = 20;
  const COLORS = ["#2563eb", "#16a34a", "#ea580c", "#9333ea", "#0891b2", "#db2777", "#65a30d", "#b45309"];

  function node(name, attrs, text) {
    const el = document.createElementNS(NS, name);
    Object.entries(attrs || {}).forEach(([k, v]) => el.setAttribute(k, v));
    if (text !== undefined) el.textContent = text;
    return el;
  }
  function html(tag, cls, text) {
    const el = document.createElement(tag);
    if (cls) el.className = cls;
    if (text !== undefined) el.textContent = text;
    return el;
  }
  const percent = (v) => `${Math.round(v)}%`;
  function bytes(v) {
    return v >= 2 ** 30 ? `${(v / 2 ** 30).toFixed(1)} GiB` : `${Math.round(v / 2 ** 20)} MiB`;
  }

  const ago = (s) => s >= 90 ? `−${Math.round(s / 60)} min` : `−${Math.round(s)} s`;

  // One chart: `series` = [{name, points: [[unixTime, value or null], ...]}] on 0..max.
  // A line breaks where a value is missing or samples are further apart than `gap` s
  // (the instance was stopped), so nothing is drawn that was not measured. The time
  // axis ends now and starts at the oldest sample kept (at most the window), so a young
  // instance's few samples fill the chart rather than its right edge.
  function chart(title, latest, series, max, label, view) {
    const card = html("div", "card chart");
    const head = html("div", "chart-head");
    head.append(html("span", "chart-title", title), html("span", "chart-latest", latest));
    card.appendChild(head);
    const span = Math.max(Math.min(view.window_s, view.now - view.samples[0].at), 10 * view.interval_s);
    const start = view.now - span, gap = 2.5 * view.interval_s;
    const x = (t) => LEFT + (t - start) / span * (W - LEFT - RIGHT);
    const y = (v) => H - BOTTOM - Math.min(Math.max(v, 0), max) / max * (H - TOP - BOTTOM);
    const svg = node("svg", {viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": title, class: "plot"});
    [0, 0.5, 1].forEach((f) => {
      svg.appendChild(node("line", {x1: LEFT, x2: W - RIGHT, y1: y(max * f), y2: y(max * f), class: "grid"}));
      svg.appendChild(node("text", {x: LEFT - 4, y: y(max * f) + 3, class: "axis"}, label(max * f)));
    });
    svg.appendChild(node("text", {x: LEFT, y: H - 4, class: "axis start"}, ago(span)));
    svg.appendChild(node("text", {x: W - RIGHT, y: H - 4, class: "axis"}, S("mon.now")));
    series.forEach((s, n) => {
      const color = COLORS[n % COLORS.length];
      let run = [], last = null;
      const flush = () => {
        if (run.length === 1) svg.appendChild(node("circle", {cx: run[0][0], cy: run[0][1], r: 2, fill: color}));
        if (run.length > 1) svg.appendChild(node("polyline", {points: run.map((p) => p.join(",")).join(" "), stroke: color, class: "line"}));
        run = [];
      };
      s.points.forEach(([t, v]) => {
        if (v === null || (last !== null && t - last > gap)) flush();
        if (v !== null) run.push([x(t).toFixed(1), y(v).toFixed(1)]);
        last = t;
      });
      flush();
    });
    card.appendChild(svg);
    if (series.length > 1) {
      const legend = html("div", "legend");
      series.forEach((s, n) => {
        const item = html("span", "", s.name);
        item.style.setProperty("--c", COLORS[n % COLORS.length]);
        legend.appendChild(item);
      });
      card.appendChild(legend);
    }
    return card;
  }

  function gpuSeries(view, field) {
    return view.gpus.map((g) => ({
      gpu: g, name: `GPU ${g.index}`,
      points: view.samples.map((s) => {
        const r = s.gpus.find((x) => x.uuid === g.uuid);
        return [s.at, r && r[field] !== null ? r[field] : null];
      }),
    }));
  }

  function draw(view) {
    document.getElementById("mon-window").textContent = S("mon.window")
      .replace("{minutes}", Math.round(view.window_s / 60)).replace("{seconds}", view.interval_s);
    const charts = document.getElementById("mon-charts"), notes = [];
    charts.replaceChildren();
    const samples = view.samples, last = samples[samples.length - 1];
    if (!samples.length) notes.push(S("mon.no_samples"));
    else {
      const cpu = samples.map((s) => [s.at, s.cpu_percent]);
      const cpuNow = [...samples].reverse().find((s) => s.cpu_percent !== null);
      charts.appendChild(chart(S("mon.cpu"), cpuNow ? percent(cpuNow.cpu_percent) : "—", [{name: "CPU", points: cpu}],
        100, percent, view));
      const limit = Math.max(...samples.map((s) => s.memory_limit));
      charts.appendChild(chart(S("mon.memory"), `${bytes(last.memory_used)} / ${bytes(last.memory_limit)}`,
        [{name: S("mon.memory"), points: samples.map((s) => [s.at, s.memory_used])}], limit, bytes, view));
      // Only GPUs with at least one real reading get a line; the others say why not.
      const util = gpuSeries(view, "util_percent").filter((s) => s.points.some(([, v]) => v !== null));
      const memory = gpuSeries(view, "memory_used").filter((s) => s.points.some(([, v]) => v !== null));
      const latest = (s) => s.points.filter(([, v]) => v !== null).pop()[1];
      if (util.length) {
        charts.appendChild(chart(S("mon.gpu_util"), util.map((s) => percent(latest(s))).join(" · "), util, 100,
          percent, view));
      }
      if (memory.length) {
        const total = Math.max(...last.gpus.map((g) => g.memory_total || 0)) || 1;
        charts.appendChild(chart(S("mon.gpu_memory"), memory.map((s) => bytes(latest(s))).join(" · "), memory, total,
          bytes, view));
      }
    }
    view.gpus.forEach((g) => {
      const read = samples.some((s) => s.gpus.some((r) => r.uuid === g.uuid && r.util_percent !== null));
      if (!read) notes.push(`GPU ${g.index} · ${g.model}: ${S(g.simulated ? "mon.simulated" : "mon.unread")}`);
    });
    if (!view.gpus.length) notes.push(S("mon.no_gpu"));
    const disk = view.disk;
    notes.push(`${S("mon.disk")}: ` + (disk ? `${bytes(disk.used)} / ${bytes(disk.total)} (${percent(100 * disk.used / disk.total)})`
      : S("mon.disk_pending")));
    const system = view.system_disk;
    if (system) notes.push(`${S("mon.system_disk")}: ${bytes(system.used)}` + (system.total ? ` / ${bytes(system.total)}` : ""));
    const box = document.getElementById("mon-notes");
    box.replaceChildren(...notes.map((text) => html("span", "", text)));
    advise(view.findings);
  }

  function advise(findings) {
    const box = document.getElementById("advisor");
    if (!box) return;
    if (!findings.length) { box.replaceChildren(html("p", "muted", S("advisor.none"))); return; }
    const list = html("ul", "findings");
    findings.forEach((f) => {
      const item = html("li", `finding ${f.severity}`);
      item.dataset.rule = f.rule;
      item.append(html("span", `badge ${f.severity}`, S(`advisor.severity.${f.severity}`)), " ",
        html("span", "message", f.message), html("div", "action muted", f.action));
      list.appendChild(item);
    });
    box.replaceChildren(list);
  }

  async function refresh() {
    let wait = 15;
    try {
      const response = await fetch(root.dataset.url, {credentials: "same-origin", headers: {Accept: "application/json"}});
      if (response.ok && (response.headers.get("content-type") || "").includes("json")) {
        const view = await response.json();
        wait = view.interval_s;
        draw(view);
        window.DOCKYARD.metrics = view;
      }
    } catch (err) { /* offline for a moment: try again later */ }
    setTimeout(refresh, Math.max(1, wait) * 1000);
  }
  refresh();
})();
