// Overview: counts by status, queue depths, oldest active jobs and recent failures (GET /v1/stats),
// or counts made from the job list where the server has no stats route.
import { listAll } from "../api.js";
import { duration, errorAlert, fill, h, nowSeconds, STATUSES, table, timeEl } from "../dom.js";
import { loadSettings } from "../settings.js";
import { currentRole, loadStats, roleFrom } from "../stats.js";

function counts(title, id, obj, order = null) {
  const keys = order ? [...order, ...Object.keys(obj || {}).filter((k) => !order.includes(k))] : Object.keys(obj || {}).sort();
  return h("section", { class: "panel", "aria-labelledby": id },
    h("h2", { id }, title),
    keys.length
      ? h("ul", { class: "stat-list" }, keys.map((k) => h("li", { "data-key": k },
        h("span", {}, k), h("span", { class: "n" }, String((obj || {})[k] ?? 0)))))
      : h("p", { class: "muted" }, "None."));
}

function jobLink(id) {
  return h("a", { href: `#/jobs/${encodeURIComponent(id)}`, class: "mono" }, id);
}

function failures(list) {
  return table(null, ["Job", "Created", "Error"],
    list.map((f) => [jobLink(f.id), timeEl(f.created_at),
      f.error ? `${f.error.code ? `${f.error.code}: ` : ""}${f.error.message || ""}` : "—"]),
    { empty: "No recent failures." });
}

async function fromJobList(signal) {
  const { items, truncated } = await listAll("/v1/fine_tuning/jobs", {}, 500, signal);
  const byStatus = {};
  const byProvider = {};
  for (const j of items) {
    byStatus[j.status] = (byStatus[j.status] || 0) + 1;
    byProvider[j.provider] = (byProvider[j.provider] || 0) + 1;
  }
  const recent = items.filter((j) => j.status === "failed").slice(0, 10)
    .map((j) => ({ id: j.id, created_at: j.created_at, error: j.error }));
  return { total: items.length, truncated, byStatus, byProvider, recent };
}

export async function render(main, { signal, query }) {
  document.title = "Overview · Tuneline console";
  const box = h("div", { id: "overview" });
  const updated = h("span", { class: "muted", role: "status" });
  let filter = null;
  if (currentRole() === "ops") {
    filter = h("form", { class: "filters", role: "search", "aria-label": "Choose a tenant" },
      h("div", { class: "field" }, h("label", { for: "overview-tenant" }, "Tenant"),
        h("input", { id: "overview-tenant", type: "text", value: query.tenant || "", placeholder: "all tenants", autocomplete: "off" })),
      h("button", { type: "submit", class: "secondary" }, "Show"));
    filter.addEventListener("submit", (e) => {
      e.preventDefault();
      const tenant = filter.querySelector("input").value.trim();
      location.hash = tenant ? `#/?tenant=${encodeURIComponent(tenant)}` : "#/";
    });
  }
  fill(main, h("h1", {}, query.tenant ? `Overview: ${query.tenant}` : "Overview"), filter, h("div", { class: "toolbar" }, updated), box);
  let timer = null;

  async function load() {
    try {
      const stats = await loadStats(signal, query.tenant);
      if (stats) {
        const role = roleFrom(stats);
        if (role && !currentRole()) sessionStorage.setItem("tuneline.console.role", role);
        const oldest = Object.entries(stats.oldest_active || {}).map(([stage, j]) => [stage, jobLink(j.id), duration(j.age_s ?? nowSeconds() - j.created_at)]);
        fill(box,
          h("p", {}, `${stats.jobs.total} job${stats.jobs.total === 1 ? "" : "s"} in total.`),
          h("div", { class: "grid" },
            counts("Jobs by status", "h-status", stats.jobs.by_status, STATUSES),
            counts("Jobs by stage", "h-stage", stats.jobs.by_stage),
            counts("Jobs by provider", "h-provider", stats.jobs.by_provider),
            roleFrom(stats) === "ops"
              ? counts("Queue depths", "h-queues", stats.queues)
              : h("section", { class: "panel", "aria-labelledby": "h-queues" }, h("h2", { id: "h-queues" }, "Queue depths"),
                h("p", { class: "muted" }, "Shown to ops keys only."))),
          h("h2", {}, "Oldest active job per stage"),
          table(null, ["Stage", "Job", "Age"], oldest, { empty: "No active jobs." }),
          h("h2", {}, "Recent failures"),
          failures(stats.recent_failures || []));
      } else {
        const c = await fromJobList(signal);
        fill(box,
          h("div", { class: "alert info", role: "status" },
            `This server has no /v1/stats route; counts below come from the job list (${c.total}${c.truncated ? "+, newest 500" : ""} jobs). Queue depths need /v1/stats.`),
          h("div", { class: "grid" },
            counts("Jobs by status", "h-status", c.byStatus, STATUSES),
            counts("Jobs by provider", "h-provider", c.byProvider)),
          h("h2", {}, "Recent failures"),
          failures(c.recent));
      }
      updated.textContent = `Updated ${new Date().toLocaleTimeString()}`;
    } catch (err) {
      if (err.name !== "AbortError") fill(box, errorAlert(err, "Could not load the overview"));
    }
  }
  await load();
  timer = setInterval(() => { if (!document.hidden) load(); }, loadSettings().refreshSeconds * 1000 * 2);
  return () => clearInterval(timer);
}
