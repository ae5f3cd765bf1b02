// Dockyard console: times in the browser's zone, live instance status (SSE), actions.
(function () {
  "use strict";
  // The page's data comes as JSON, not as an inline script: the console's CSP runs none.
  const data = document.getElementById("dockyard-page");
  window.DOCKYARD = data ? JSON.parse(data.textContent) : {strings: {}};
  const D = window.DOCKYARD;
  document.addEventListener("submit", (event) => {
    const question = event.target.dataset && event.target.dataset.confirm;
    if (question && !confirm(question)) event.preventDefault();
  });
  const S = (k) => D.strings[k] || k;
  const csrf = () => document.querySelector('meta[name="csrf-token"]').content;

  function toast(text) {
    const el = document.getElementById("toast");
    if (!el) return;
    el.textContent = text;
    el.classList.add("show");
    clearTimeout(toast.timer);
    toast.timer = setTimeout(() => el.classList.remove("show"), 2500);
  }
  D.toast = toast;  // progress.js shows its refusals the same way

  // ---- times -------------------------------------------------------------------------
  const fmt = new Intl.DateTimeFormat(D.lang === "zh" ? "zh-CN" : undefined, {dateStyle: "medium", timeStyle: "medium"});
  function formatTimes(root) {
    root.querySelectorAll("time[datetime]").forEach((el) => {
      const d = new Date(el.getAttribute("datetime"));
      if (!isNaN(d)) { el.textContent = fmt.format(d); el.title = el.getAttribute("datetime"); }
    });
  }
  function duration(ms) {
    const s = Math.max(0, Math.floor(ms / 1000)), h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60);
    return h ? `${h}h ${m}m` : m ? `${m}m ${s % 60}s` : `${s}s`;
  }
  function tickUptimes() {
    document.querySelectorAll(".instance[data-id]").forEach((row) => {
      const cell = row.querySelector(".uptime");
      if (!cell) return;
      const started = row.dataset.started;
      cell.textContent = row.dataset.status === "running" && started ? duration(Date.now() - new Date(started)) : "—";
    });
  }

  // ---- instance rows -----------------------------------------------------------------------
  function applyButtons(row) {
    const status = row.dataset.status;
    row.querySelectorAll("[data-when]").forEach((el) => {
      const on = el.dataset.when.split(" ").includes(status);
      if (el.tagName === "A") el.setAttribute("aria-disabled", on ? "false" : "true");
      else el.disabled = !on || !!el.dataset.lacks;  // the node cannot: its title says why
    });
  }
  function updateRow(data) {
    document.querySelectorAll(`.instance[data-id="${data.id}"]`).forEach((row) => {
      row.dataset.status = data.status;
      row.dataset.started = data.started_at || "";
      const badge = row.querySelector(".badge.status");
      if (badge) { badge.className = "badge status " + data.status; badge.textContent = S("status." + data.status); badge.title = data.status_reason || ""; }
      const place = row.querySelector(".queue-pos");  // the place in line while queued
      if (place) place.textContent = data.queue_position ? S("inst.queue_position") + data.queue_position : "";
      const reason = row.querySelector(".reason");
      if (reason) reason.textContent = data.status_reason || "";
      const gpus = row.querySelector(".gpus");
      if (gpus && Array.isArray(data.gpus)) gpus.textContent = data.no_gpu || !data.gpu_count ? S("inst.no_gpu")
        : `${data.gpu_share || data.gpu_count} × ${data.gpu_model}` + (data.gpus.length ? ` #${data.gpus.join(",")}` : "");
      const price = row.querySelector(".price"), cost = row.querySelector(".cost");
      if (price && data.price) price.textContent = `${data.price} ${D.currency}`;
      if (cost && data.cost) cost.textContent = `${data.cost} ${D.currency}`;
      const ssh = row.querySelector('[data-action="copy-ssh"]');
      if (ssh && data.ssh !== undefined) ssh.dataset.ssh = data.ssh || "";
      applyButtons(row);
    });
    tickUptimes();
  }

  function live() {
    if (!document.querySelector(".instance[data-id]") && !document.getElementById("instances") && !document.getElementById("live")) return;
    const badge = document.getElementById("live");
    const source = new EventSource("/events");
    source.onopen = () => badge && badge.classList.add("on");
    source.onerror = () => badge && badge.classList.remove("on");
    source.addEventListener("instance", (e) => {
      const data = JSON.parse(e.data);
      if (!document.querySelector(`.instance[data-id="${data.id}"]`) && location.pathname === "/instances") { location.reload(); return; }
      updateRow(data);
    });
    source.addEventListener("notices", (e) => {  // the header's unread notifications
      const count = document.getElementById("unread-count"), unread = JSON.parse(e.data).unread;
      if (count) { count.textContent = unread; count.hidden = !unread; }
    });
    source.addEventListener("gone", (e) => {
      const data = JSON.parse(e.data);
      document.querySelectorAll(`tr.instance[data-id="${data.id}"]`).forEach((row) => row.remove());
      const detail = document.querySelector(`.detail[data-id="${data.id}"]`);
      if (detail) updateRow({...data, status: "released", gpus: [], price: "0.00", cost: ""});
    });
    window.DOCKYARD.events = source;
  }

  async function copy(text) {
    try { await navigator.clipboard.writeText(text); }
    catch (err) {  // no clipboard permission (or not a secure context): select a hidden field
      const area = document.createElement("textarea");
      area.value = text; document.body.appendChild(area); area.select();
      document.execCommand("copy"); area.remove();
    }
    window.DOCKYARD.lastCopied = text;
    toast(`${S("inst.copied")}: ${text}`);
  }

  async function act(button) {
    const row = button.closest(".instance[data-id]");
    const id = row.dataset.id, action = button.dataset.action;
    if (action === "copy-ssh") return copy(button.dataset.ssh);
    let body = {};
    if (action === "release" && !confirm(S("inst.confirm_release"))) return;
    if (action === "save") {
      const name = prompt(S("inst.save_prompt"), "myenv:v1");
      if (!name) return;
      body = {name};
    }
    if (action === "clone") {  // its progress shows in the operations panel (progress.js)
      const name = prompt(S("inst.clone_prompt"), `${button.dataset.name}-copy`);
      if (!name) return;
      body = {name};
    }
    if (action === "migrate") {  // its progress shows in the operations panel too
      const node = prompt(S("inst.migrate_prompt"), "");
      if (node === null) return;
      body = node.trim() ? {node: node.trim()} : {};
    }
    button.disabled = true;
    try {
      const response = await fetch(`/console/instances/${id}/${action}`, {
        method: "POST", headers: {"Content-Type": "application/json", "X-CSRF-Token": csrf()},
        body: JSON.stringify(body), credentials: "same-origin"});
      const data = await response.json();
      if (!response.ok) { toast(data.ways_out ? gpusTaken(data) : data.detail || response.statusText); return; }
      if (action === "save") toast(S("inst.save_started"));
      if (action === "migrate") toast(S("inst.migrate_started"));
      if (action === "clone") {
        toast(S("inst.clone_started"));
        if (data.ssh_password) prompt(S("inst.clone_password"), data.ssh_password);
      }
      if (action === "check") { const pre = document.getElementById("env-check"); if (pre) pre.textContent = JSON.stringify(data.env_check, null, 2); }
      if (data.status) updateRow({id, status: data.status, started_at: row.dataset.started, queue_position: data.queue_position});
    } finally { applyButtons(row); }
  }
  // A start refused for taken GPUs: the free count, and the three ways out, which are
  // the row's "start without GPU", "queue for GPUs" and "move to another node" buttons.
  function gpusTaken(data) {
    const waiting = data.waiting ? S("inst.gpus_waiting").replace("{waiting}", data.waiting) : "";
    return S("inst.gpus_taken").replace("{free}", data.free).replace("{needed}", data.needed)
      .replace("{node}", data.node).replace("{waiting}", waiting);
  }
  // ---- create form -------------------------------------------------------------------------
  function createForm() {
    const dataEl = document.getElementById("create-data");
    if (!dataEl) return;
    const data = JSON.parse(dataEl.textContent);
    const model = document.getElementById("gpu_model"), count = document.getElementById("gpu_count");
    const image = document.getElementById("image"), price = document.getElementById("price");
    const avail = document.getElementById("availability"), submit = document.getElementById("create-submit");
    const queue = document.getElementById("queue");
    const money = (minor) => (minor / 10000).toFixed(2);
    const share = document.getElementById("gpu_share");
    function refresh() {
      const n = parseInt(count.value, 10), wanted = share ? share.value : "";
      const rows = data.market.filter((r) => r.model === model.value && r.online);
      // A share: the rows that offer it free, at the share's price. Whole GPUs queued
      // (shares are not): any node that holds that many will do.
      const offers = (r) => r.shares.filter((x) => x.share === wanted && x.free > 0);
      const fit = wanted ? rows.filter((r) => offers(r).length).map((r) => ({...r, free: offers(r)[0].free,
        price_minor: offers(r)[0].price_minor})) : rows.filter((r) => r.free >= n || (queue.checked && r.total >= n));
      const free = (wanted ? fit : rows).reduce((a, r) => Math.max(a, r.free), 0);
      const full = !wanted && n > free && rows.some((r) => r.total >= n);
      avail.textContent = n ? `${model.value}: ${free} ${S("create.free")}` + (full && !queue.checked ? ` — ${S("create.queue_hint")}` : "") : "";
      const nodes = n ? fit.map((r) => r.node) : null;
      const chosen = image.value || image.dataset.chosen;
      image.innerHTML = "";
      const usable = data.images.filter((im) => n ? im.gpu_nodes.some((x) => nodes.includes(x)) : im.nodes.length);
      usable.forEach((im) => {
        const o = document.createElement("option");
        o.value = im.name; o.textContent = im.label;
        if (im.name === chosen || (!chosen && im.default)) o.selected = true;
        image.appendChild(o);
      });
      if (!usable.length) { const o = document.createElement("option"); o.value = ""; o.textContent = S("create.no_image"); image.appendChild(o); }
      let minor = null;
      if (n) { const prices = fit.filter((r) => usable.length).map((r) => r.price_minor); if (prices.length) minor = Math.min(...prices) * (wanted ? 1 : n); }
      else { const vals = Object.values(data.no_gpu_price); if (vals.length) minor = Math.min(...vals); }
      price.textContent = minor === null ? "—" : `${money(minor)} ${D.currency} ${S("create.per_hour")}`;
      submit.disabled = !usable.length || (n > 0 && !fit.length);
    }
    model.addEventListener("change", refresh); count.addEventListener("change", refresh); queue.addEventListener("change", refresh);
    if (share) share.addEventListener("change", refresh);
    refresh();
  }

  document.addEventListener("DOMContentLoaded", () => {
    formatTimes(document);
    document.querySelectorAll(".instance[data-id]").forEach(applyButtons);
    tickUptimes(); setInterval(tickUptimes, 1000);
    document.addEventListener("click", (e) => {
      const button = e.target.closest("button.act");
      if (button && button.closest(".instance[data-id]")) { e.preventDefault(); act(button); }
    });
    createForm();
    live();
  });
})();
