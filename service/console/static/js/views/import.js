// Import page: progress, what was skipped and why, its distillation, and its re-training: the
// original models' held-out scores beside the open candidates', experiment by experiment.
import { api, ApiError } from "../api.js";
import { badge, errorAlert, fill, h, num, table, TERMINAL, timeEl } from "../dom.js";
import { loadSettings } from "../settings.js";
import * as notfound from "./notfound.js";
import { progressCells } from "./imports.js";

const METRICS = ["exact_match", "char_f1", "rouge_l", "bleu"];

function summary(doc) {
  return [
    h("p", {}, badge(doc.status), ` from ${doc.source}`, doc.base_url ? ` (${doc.base_url})` : "",
      " · created ", timeEl(doc.created_at), doc.finished_at ? [" · finished ", timeEl(doc.finished_at)] : ""),
    doc.error ? h("div", { class: "alert error", role: "alert" }, `The import stopped: ${doc.error.message} (${doc.error.code})`) : null,
    table("Progress", ["Jobs imported", "Already imported", "Skipped", "Files imported", "Files reused (same content)"],
      [progressCells(doc)], { numeric: [0, 1, 2, 3, 4] }),
  ];
}

function skipped(doc) {
  return [h("h2", {}, "Skipped"),
    table(null, ["Provider job", "Code", "Why"],
      (doc.skipped || []).map((s) => [h("span", { class: "mono" }, s.job || "—"), h("span", { class: "mono" }, s.code), s.message]),
      { empty: "Nothing was skipped." })];
}

function candidateRows(exp) {
  return exp.candidates.map((c) => ({
    attrs: { "data-evaluate-only": c.evaluate_only ? "true" : "false" },
    cells: [
      [h("span", { class: "mono" }, c.model || "—"), c.evaluate_only ? [" ", h("span", { class: "badge original" }, "original")] : null],
      c.provider, badge(c.status), ...METRICS.map((m) => num(c.metrics ? c.metrics[m] : null)),
      h("a", { href: `#/jobs/${encodeURIComponent(c.job_id)}`, class: "mono" }, c.job_id),
    ],
  }));
}

function distilled(doc) {
  const d = doc.distill;
  if (!d) return null;
  return [h("h2", {}, "Distillation"),
    h("p", {}, badge(d.status), ` · $${Number(d.spent_usd).toFixed(4)} spent of $${Number(d.max_cost_usd).toFixed(2)}`,
      ` (estimated at most $${Number(d.estimated_cost_usd).toFixed(4)})`, d.error ? ` · ${d.error.message}` : ""),
    table(null, ["Job", "Original model", "Answers", "Errors", "New training file"],
      d.jobs.map((j) => [h("span", { class: "mono" }, j.provider_job_id || j.job_id), h("span", { class: "mono" }, j.fine_tuned_model || "—"),
        `${num(j.answered)} / ${num(j.prompts)}`, num(j.errors),
        j.file_id ? [h("a", { href: `#/files/${encodeURIComponent(j.file_id)}`, class: "mono" }, j.file_id), j.complete === false ? " (partial)" : ""] : "—"]),
      { numeric: [3] })];
}

async function retrained(doc, signal) {
  if (!doc.retrain) {
    return [h("h2", {}, "Re-training"),
      h("p", { class: "muted" }, "Not re-trained yet: ", h("code", {}, `POST /v1/imports/${doc.id}/retrain`),
        " (or ", h("code", {}, "tuneline migrate openai --retrain local:<model>"), ") makes one experiment per job.")];
  }
  const parts = [h("h2", {}, "Re-training")];
  for (const entry of doc.retrain.data) {
    const exp = await api(`/v1/experiments/${encodeURIComponent(entry.experiment_id)}`, { signal });
    parts.push(h("section", { class: "experiment", "data-experiment-id": exp.id },
      h("h3", {}, `Job ${entry.provider_job_id} → `, h("span", { class: "mono" }, exp.id), " ", badge(exp.status)),
      h("p", { class: "muted" }, entry.test_set === "split"
        ? "Held out of the training file, which the original model trained on: its scores are an upper bound."
        : "Held out: the job's validation file, which no model trained on."),
      table(null, ["Model", "Provider", "Status", ...METRICS, "Job"], candidateRows(exp), { numeric: [3, 4, 5, 6] })));
  }
  if (doc.retrain.skipped.length) {
    parts.push(table("Not re-trained", ["Job", "Code", "Why"],
      doc.retrain.skipped.map((s) => [h("span", { class: "mono" }, s.provider_job_id || s.job_id), h("span", { class: "mono" }, s.code), s.message])));
  }
  return parts;
}

export async function render(main, { params, signal }) {
  const importId = params[0];
  document.title = `${importId} · Imports · Tuneline console`;
  const box = h("div");
  fill(main, h("h1", {}, "Import ", h("span", { class: "mono" }, importId)), box);
  let timer = null;
  async function load() {
    let doc;
    try {
      doc = await api(`/v1/imports/${encodeURIComponent(importId)}`, { signal });
    } catch (err) {
      if (err.name === "AbortError") return;
      if (err instanceof ApiError && err.status === 404) {
        notfound.render(main, { what: `Import ${importId}`, err });
        return;
      }
      fill(box, errorAlert(err, "Could not load the import"));
      return;
    }
    try {
      fill(box, summary(doc), skipped(doc), distilled(doc), await retrained(doc, signal));
    } catch (err) {
      if (err.name !== "AbortError") fill(box, summary(doc), skipped(doc), errorAlert(err, "Could not load its experiments"));
      return;
    }
    const experimentsRunning = doc.retrain && box.querySelector("section.experiment .badge.running");
    const distilling = doc.distill && ["queued", "running"].includes(doc.distill.status);
    if (!TERMINAL.has(doc.status) || experimentsRunning || distilling) timer = setTimeout(load, loadSettings().refreshSeconds * 1000);
  }
  await load();
  return () => clearTimeout(timer);
}
