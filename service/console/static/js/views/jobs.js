// Jobs list: filters, auto-refresh, progress, cost estimate and stuck-job highlighting.
import { api, url } from "../api.js";
import { badge, duration, errorAlert, fill, h, nowSeconds, PROVIDERS, STATUSES, table, usd } from "../dom.js";
import { fraction, idleSeconds, recentActivity } from "../progress.js";
import { loadSettings } from "../settings.js";
import { currentRole } from "../stats.js";

const PAGE = 20;

function select(id, label, options, value) {
  return h("div", { class: "field" },
    h("label", { for: id }, label),
    h("select", { id, name: id },
      h("option", { value: "" }, "Any"),
      options.map((o) => h("option", { value: o, selected: o === value }, o))));
}

function progressCell(job, activity) {
  const f = fraction(job, activity);
  if (f === null) return h("span", { class: "muted" }, job.stage || "—");
  const label = activity && activity.total && job.status !== "succeeded"
    ? `${activity.step}/${activity.total} steps`
    : `${Math.round(f * 100)}%`;
  return h("div", { class: "progress" },
    h("progress", { max: "100", value: String(Math.round(f * 100)), "aria-label": `Progress of ${job.id}` }),
    h("span", {}, label));
}

function row(job, activity, now, stuckSeconds, showTenant) {
  const idle = idleSeconds(job, activity, now);
  const stuck = idle !== null && idle > stuckSeconds;
  const status = [badge(job.status)];
  if (stuck) status.push(h("span", { class: "badge stuck", title: `No progress for ${duration(idle)}` }, `Stuck · ${duration(idle)}`));
  const cells = [
    h("a", { href: `#/jobs/${encodeURIComponent(job.id)}`, class: "mono" }, job.id),
    status,
    job.stage || "—",
    job.provider || "—",
    h("span", { class: "mono" }, job.model),
    progressCell(job, activity),
    h("span", { title: new Date(job.created_at * 1000).toISOString() }, duration(now - job.created_at)),
    usd(job.estimate?.cost_usd),
  ];
  if (showTenant) cells.push(job.tenant || job.organization_id || "—");
  return { attrs: { class: stuck ? "stuck" : null, "data-job-id": job.id, "data-status": job.status }, cells };
}

export async function render(main, { query, signal }) {
  document.title = "Jobs · Tuneline console";
  const isOps = currentRole() === "ops";
  const filters = { status: query.status || "", provider: query.provider || "", tenant: query.tenant || "" };
  const settings = loadSettings();
  const errors = h("div", { id: "jobs-error" });
  const results = h("div", { id: "jobs-table", "aria-live": "off" });
  const updated = h("span", { class: "muted", role: "status", id: "jobs-updated" });
  const more = h("button", { type: "button", class: "secondary", hidden: true }, "Load more");
  const auto = h("input", { type: "checkbox", id: "auto-refresh", checked: true });
  let shown = PAGE;
  let timer = null;
  let busy = false;

  const form = h("form", { class: "filters", role: "search", "aria-label": "Filter jobs" },
    select("filter-status", "Status", STATUSES, filters.status),
    select("filter-provider", "Provider", PROVIDERS, filters.provider),
    isOps
      ? h("div", { class: "field" }, h("label", { for: "filter-tenant" }, "Tenant"),
        h("input", { id: "filter-tenant", name: "filter-tenant", type: "text", value: filters.tenant, placeholder: "all tenants", autocomplete: "off" }))
      : null,
    h("button", { type: "submit" }, "Apply filters"));

  async function load() {
    if (busy) return;
    busy = true;
    try {
      const page = await api(url("/v1/fine_tuning/jobs", { limit: Math.min(shown, 100), ...filters }), { signal });
      const activities = await Promise.all(
        page.data.map((job) => recentActivity(job, signal).catch(() => null)));
      const now = nowSeconds();
      const stuckSeconds = loadSettings().stuckMinutes * 60;
      const showTenant = isOps || page.data.some((j) => j.tenant) || new Set(page.data.map((j) => j.organization_id)).size > 1;
      const columns = ["Job", "Status", "Stage", "Provider", "Model", "Progress", "Age", "Cost estimate"];
      if (showTenant) columns.push("Tenant");
      fill(results, table(
        `${page.data.length} job${page.data.length === 1 ? "" : "s"}${page.has_more ? " (more available)" : ""}; stuck means no progress for ${loadSettings().stuckMinutes} min`,
        columns,
        page.data.map((job, i) => row(job, activities[i], now, stuckSeconds, showTenant)),
        { empty: "No jobs match these filters.", numeric: [7] }));
      more.hidden = !page.has_more || shown >= 100;
      fill(errors);
      updated.textContent = `Updated ${new Date().toLocaleTimeString()}`;
    } catch (err) {
      if (err.name === "AbortError") return;
      fill(errors, errorAlert(err, "Could not list jobs"));
    } finally {
      busy = false;
    }
  }

  function schedule() {
    clearInterval(timer);
    if (auto.checked) timer = setInterval(() => { if (!document.hidden) load(); }, settings.refreshSeconds * 1000);
  }

  form.addEventListener("submit", (e) => {
    e.preventDefault();
    filters.status = form.querySelector("#filter-status").value;
    filters.provider = form.querySelector("#filter-provider").value;
    const tenant = form.querySelector("#filter-tenant");
    filters.tenant = tenant ? tenant.value.trim() : "";
    const qs = new URLSearchParams(Object.entries(filters).filter(([, v]) => v)).toString();
    history.replaceState(null, "", `#/jobs${qs ? `?${qs}` : ""}`);
    shown = PAGE;
    load();
  });
  more.addEventListener("click", () => { shown += PAGE; load(); });
  auto.addEventListener("change", schedule);

  const goto = h("form", { class: "filters", "aria-label": "Open a job by id" },
    h("div", { class: "field" }, h("label", { for: "goto-job" }, "Open job by id"),
      h("input", { id: "goto-job", type: "text", placeholder: "ftjob-…", autocomplete: "off", spellcheck: "false" })),
    h("button", { type: "submit", class: "secondary" }, "Open"));
  goto.addEventListener("submit", (e) => {
    e.preventDefault();
    const id = goto.querySelector("#goto-job").value.trim();
    if (id) location.hash = `#/jobs/${encodeURIComponent(id)}`;
  });

  fill(main,
    h("h1", {}, "Jobs"),
    form,
    h("div", { class: "toolbar" },
      h("span", { class: "check" }, auto, h("label", { for: "auto-refresh", class: "inline" }, `Auto-refresh every ${settings.refreshSeconds} s`)),
      h("button", { type: "button", class: "secondary", onclick: () => load() }, "Refresh now"),
      updated,
      h("a", { href: "#/settings" }, "Settings")),
    errors,
    results,
    h("p", {}, more),
    goto);
  await load();
  schedule();
  return () => clearInterval(timer);
}
