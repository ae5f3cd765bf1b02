// Auto-stop policy fields: "custom" shows a text field (45m, 3h: the server
// parses it), and the create form's price area says what the chosen policy will do.
(function () {
  "use strict";
  const S = (k) => (window.DOCKYARD.strings || {})[k] || k;

  function chosen(select) {
    if (select.value === "off") return null;
    if (select.value === "custom") return document.getElementById(select.id + "_custom").value.trim() || "?";
    return select.options[select.selectedIndex].textContent;
  }

  function summarize() {
    const out = document.getElementById("autostop-summary");
    if (!out) return;
    const idle = chosen(document.getElementById("auto_stop_idle"));
    const max = chosen(document.getElementById("auto_stop_max"));
    const parts = [];
    if (idle) parts.push(S("autostop.summary_idle").replace("{d}", idle));
    if (max) parts.push(S("autostop.summary_max").replace("{d}", max));
    out.textContent = `${S("autostop.title")}: ${parts.length ? parts.join(" · ") : S("autostop.summary_off")}`;
  }

  document.addEventListener("DOMContentLoaded", () => {
    document.querySelectorAll("select[data-autostop]").forEach((select) => {
      const custom = document.getElementById(select.id + "_custom");
      const update = () => { custom.hidden = select.value !== "custom"; summarize(); };
      select.addEventListener("change", update);
      custom.addEventListener("input", summarize);
      update();
    });
  });
})();
