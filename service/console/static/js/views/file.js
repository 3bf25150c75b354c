// File page: the preparation report with findings grouped by kind, token statistics and cost.
import { api, ApiError } from "../api.js";
import { badge, errorAlert, fill, h, num, table, timeEl, usd } from "../dom.js";
import * as notfound from "./notfound.js";

const SEVERITY_ORDER = { error: 0, warning: 1, info: 2 };
const COUNT_ORDER = ["lines", "examples", "valid", "invalid", "duplicates", "empty", "kept", "train", "validation", "test"];

function where(f) {
  if (f.line !== null && f.line !== undefined) return `line ${f.line}`;
  if (f.index !== null && f.index !== undefined) return `index ${f.index}`;
  return "whole file";
}

function findingGroups(report) {
  const groups = new Map();
  for (const f of report.findings || []) {
    if (!groups.has(f.code)) groups.set(f.code, { code: f.code, severity: f.severity, items: [] });
    groups.get(f.code).items.push(f);
  }
  const totals = report.finding_totals || {};
  const sorted = [...groups.values()].sort((a, b) =>
    (SEVERITY_ORDER[a.severity] ?? 3) - (SEVERITY_ORDER[b.severity] ?? 3) || a.code.localeCompare(b.code));
  if (!sorted.length) return h("p", { class: "muted" }, "No findings: every line passed the checks.");
  return sorted.map((g) => {
    const total = totals[g.code] ?? g.items.length;
    const shownNote = total > g.items.length ? ` (first ${g.items.length} of ${total} shown)` : "";
    return h("details", { class: "findings", open: g.severity === "error", "data-code": g.code },
      h("summary", {}, badge(g.severity), " ", h("span", { class: "mono" }, g.code), ` — ${total} finding${total === 1 ? "" : "s"}${shownNote}`),
      table(null, ["Where", "Field", "Message"],
        g.items.map((f) => ({ attrs: { "data-line": f.line ?? "" }, cells: [where(f), f.field || "—", f.message] }))));
  });
}

function tokens(t) {
  if (!t || !Object.keys(t).length) return h("p", { class: "muted" }, "No token statistics (no usable examples).");
  const items = [["Encoding", t.encoding], ["Total", num(t.total)], ["Billed per epoch", num(t.billed_per_epoch)],
    ["Min", num(t.min)], ["Mean", num(t.mean, 1)], ["p95", num(t.p95)], ["Max", num(t.max)]];
  return h("ul", { class: "stat-list", id: "token-stats" },
    items.filter(([, v]) => v !== undefined).map(([k, v]) => h("li", {}, h("span", {}, k), h("span", { class: "n" }, v ?? "—"))));
}

function estimate(e) {
  if (!e || !e.candidates) return h("p", { class: "muted" }, "No cost estimate.");
  return [
    h("p", {}, `${e.n_epochs} epoch${e.n_epochs === 1 ? "" : "s"}${e.n_epochs_auto ? " (chosen automatically)" : ""}` +
      (e.prices_as_of ? `; prices as of ${e.prices_as_of}` : "")),
    table(null, ["Model", "Trainable", "Billed tokens", "Estimated cost", "Examples over limit", "Exact count"],
      e.candidates.map((c) => [h("span", { class: "mono" }, c.model), c.trainable ? "yes" : "no", num(c.billed_tokens),
        usd(c.cost_usd), num(c.over_limit_examples), c.exact === undefined ? "—" : c.exact ? "yes" : "approximate"]),
      { numeric: [2, 3, 4] }),
  ];
}

export async function render(main, { params, signal }) {
  const fileId = params[0];
  let file;
  try {
    file = await api(`/v1/files/${encodeURIComponent(fileId)}`, { signal });
  } catch (err) {
    if (err instanceof ApiError && err.status === 404) return notfound.render(main, { what: `File ${fileId}`, err });
    fill(main, h("h1", {}, `File ${fileId}`), errorAlert(err, "Could not load the file"));
    return null;
  }
  document.title = `${file.filename} · Tuneline console`;
  const reportBox = h("div", { id: "report" });
  fill(main,
    h("p", {}, h("a", { href: "#/files" }, "← All files")),
    h("h1", {}, "File ", h("span", { class: "mono" }, file.id)),
    h("div", { class: "panel" }, h("dl", { class: "summary" },
      [["Name", file.filename], ["Status", badge(file.status)], ["Details", file.status_details || "—"],
        ["Bytes", num(file.bytes)], ["sha256", h("span", { class: "mono" }, file.sha256 || "—")], ["Created", timeEl(file.created_at)]]
        .map(([k, v]) => [h("dt", {}, k), h("dd", {}, v)]))),
    h("h2", {}, "Preparation report"),
    reportBox);

  let timer = null;
  async function load() {
    try {
      const report = await api(`/v1/files/${encodeURIComponent(file.id)}/report`, { signal });
      const c = report.counts || {};
      fill(reportBox,
        h("p", {}, "Result: ", badge(report.status), ` · format ${report.format || "—"} · encoding ${report.encoding || "—"}`),
        h("div", { class: "grid" },
          h("section", { class: "panel", "aria-labelledby": "h-counts" }, h("h3", { id: "h-counts" }, "Counts"),
            h("ul", { class: "stat-list" }, [...COUNT_ORDER.filter((k) => k in c), ...Object.keys(c).filter((k) => !COUNT_ORDER.includes(k))].map((k) => [k, c[k]]).map(([k, v]) => h("li", {}, h("span", {}, k), h("span", { class: "n" }, num(v)))))),
          h("section", { class: "panel", "aria-labelledby": "h-tokens" }, h("h3", { id: "h-tokens" }, "Token statistics"), tokens(report.tokens)),
          h("section", { class: "panel", "aria-labelledby": "h-fixes" }, h("h3", { id: "h-fixes" }, "Fixes applied"),
            (report.fixes || []).length
              ? h("ul", {}, report.fixes.map((f) => h("li", {}, `${f.message}${f.count !== undefined ? ` (${num(f.count)})` : ""}`)))
              : h("p", { class: "muted" }, "None."))),
        h("h3", {}, "Findings by kind"),
        h("div", { id: "findings" }, findingGroups(report)),
        h("h3", {}, "Cost estimate"),
        h("div", { id: "cost-estimate" }, estimate(report.estimate)));
    } catch (err) {
      if (err.name === "AbortError") return;
      if (err instanceof ApiError && err.code === "report_not_ready") {
        fill(reportBox, h("p", { class: "muted", role: "status" }, "The file is still being prepared; this page updates when the report is ready."));
        timer = setTimeout(load, 1500);
      } else {
        fill(reportBox, errorAlert(err, "Could not load the report"));
      }
    }
  }
  await load();
  return () => clearTimeout(timer);
}
