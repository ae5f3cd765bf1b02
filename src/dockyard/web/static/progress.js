// Dockyard console: long operations (saves, clones, image builds and pulls) as live
// progress bars with their last lines, from the `operation` events of /events
// (services/operations.py), and the buttons that start them (data-operation-url).
(function () {
  "use strict";
  const D = window.DOCKYARD || {strings: {}};
  const S = (k, fallback) => D.strings[k] || fallback || k;
  const csrf = () => document.querySelector('meta[name="csrf-token"]').content;
  const DONE_VISIBLE_MS = 8000;
  const running = new Set();  // seen unfinished here: their end may refresh the page
  const started = new Set();  // started from this page: their end may refresh it too
  const latest = new Map();  // id -> the newest view seen: the POST's answer may come after the events
  let reloading = false;

  function card(panel, op) {
    let el = panel.querySelector(`[data-op="${op.id}"]`);
    if (!el) {
      el = document.createElement("div");
      el.className = "op";
      el.dataset.op = op.id;
      el.innerHTML = '<div class="op-head"><a class="op-title"></a><span class="op-percent"></span>' +
        '<button class="link op-close" aria-label="close">×</button></div>' +
        '<progress max="100"></progress><div class="op-phase small"></div><pre class="op-log" hidden></pre>';
      el.querySelector(".op-close").addEventListener("click", () => { el.remove(); panel.hidden = !panel.children.length; });
      panel.prepend(el);
    }
    return el;
  }

  function show(view) {
    const panel = document.getElementById("operations");
    if (!panel) return;
    const seen = latest.get(view.id);
    const op = seen && seen.version > view.version ? seen : view;
    latest.set(op.id, op);
    const el = card(panel, op);
    panel.hidden = false;
    el.dataset.kind = op.kind;
    el.classList.toggle("done", op.done && !op.error);
    el.classList.toggle("failed", !!op.error);
    const title = el.querySelector(".op-title");
    title.textContent = `${S("op." + op.kind, op.kind)}: ${op.target}`;
    if (op.instance_id) title.href = `/instances/${op.instance_id}`; else title.removeAttribute("href");
    const bar = el.querySelector("progress");
    if (op.percent === null) bar.removeAttribute("value"); else bar.value = op.percent;
    el.querySelector(".op-percent").textContent = op.percent === null ? "" : `${Math.round(op.percent)}%`;
    const phase = S("op.phase." + op.phase.replace(/ /g, "_"), op.phase);
    el.querySelector(".op-phase").textContent = op.error ? `${S("op.failed")}: ${op.error}` : phase;
    const log = el.querySelector(".op-log");
    log.hidden = !op.lines.length;
    log.textContent = op.lines.join("\n");
    log.scrollTop = log.scrollHeight;
    if (!op.done) { running.add(op.id); return; }
    if (!op.error) setTimeout(() => { el.remove(); panel.hidden = !panel.children.length; }, DONE_VISIBLE_MS);
    // What an image operation made shows in the page's tables: read them again.
    const ours = running.delete(op.id) || started.delete(op.id);
    if (ours && !reloading && !op.error && op.kind !== "clone" && /^\/(admin\/)?images$/.test(location.pathname)) {
      reloading = true;
      setTimeout(() => location.assign(location.pathname), 1500);  // a GET, never a form sent again
    }
  }

  async function start(button) {
    button.disabled = true;
    try {
      const response = await fetch(button.dataset.operationUrl, {
        method: "POST", headers: {"X-CSRF-Token": csrf()}, credentials: "same-origin"});
      const data = await response.json();
      if (!response.ok) window.DOCKYARD.toast(data.detail || response.statusText);
      else { started.add(data.id); show(data); }
    } finally { button.disabled = false; }
  }

  document.addEventListener("DOMContentLoaded", () => {
    if (!document.getElementById("operations")) return;
    const source = D.events || (D.events = new EventSource("/events"));
    source.addEventListener("operation", (e) => show(JSON.parse(e.data)));
    document.addEventListener("click", (e) => {
      const button = e.target.closest("button[data-operation-url]");
      if (button) { e.preventDefault(); start(button); }
    });
  });
})();
