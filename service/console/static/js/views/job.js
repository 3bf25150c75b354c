// Job page: summary, pause/resume and cancel, live event log (fetch-streamed SSE), curves, checkpoints, evaluation, webhooks.
import { api, ApiError, stream, url } from "../api.js";
import { lineChart } from "../chart.js";
import {
  announce, badge, duration, errorAlert, fill, h, nowSeconds, num, table, TERMINAL, timeEl, usd,
} from "../dom.js";
import { fraction, fromEvents } from "../progress.js";
import { loadSettings } from "../settings.js";
import * as notfound from "./notfound.js";

const LOSS = ["train_loss", "valid_loss", "full_valid_loss"];
const ACCURACY = ["train_mean_token_accuracy", "valid_mean_token_accuracy", "full_valid_mean_token_accuracy"];
// DPO jobs' columns (service/core/jobs/metrics.py DPO_METRIC_COLUMNS): no token accuracy, but how
// often the preferred answer wins and by how much.
const PREFERENCE = ["train_preference_accuracy", "valid_preference_accuracy", "full_valid_preference_accuracy"];
const MARGIN = ["train_reward_margin", "valid_reward_margin", "full_valid_reward_margin"];

/** The charts of a job's method: loss, then token accuracy (supervised) or the DPO figures. */
function chartsFor(job) {
  const loss = lineChart("Loss", LOSS, "loss");
  if (job.method?.type === "dpo") {
    return [loss, lineChart("Preference accuracy", PREFERENCE, "accuracy"), lineChart("Reward margin", MARGIN, "margin")];
  }
  return [loss, lineChart("Token accuracy", ACCURACY, "accuracy")];
}

function integrationsText(list) {
  if (!list || !list.length) return "—";
  return list.map((i) => {
    const s = i[i.type] || {};
    const where = i.type === "wandb" ? [s.entity, s.project].filter(Boolean).join("/") : s.experiment_name || "tuneline";
    return h("span", { class: "badge info" }, `${i.type}: ${where}`);
  });
}
const MAX_LOG = 2000;

function debounce(fn, ms) {
  let t = null;
  return () => { clearTimeout(t); t = setTimeout(fn, ms); };
}

function fileLink(id) {
  return id ? h("a", { href: `#/files/${encodeURIComponent(id)}`, class: "mono" }, id) : "—";
}

function summary(job) {
  const rows = [
    ["Status", [badge(job.status), " ", h("span", { class: "muted" }, `stage ${job.stage || "—"}`)]],
    ["Provider", [job.provider, job.provider_status ? ` (provider status: ${job.provider_status})` : "",
      job.provider_job_id ? [" · ", h("span", { class: "mono" }, job.provider_job_id)] : ""]],
    ["Model", h("span", { class: "mono" }, job.model)],
    ["Fine-tuned model", job.fine_tuned_model ? h("span", { class: "mono" }, job.fine_tuned_model) : "—"],
    ["Training file", fileLink(job.training_file)],
    ["Validation file", fileLink(job.validation_file)],
    ["Created", [timeEl(job.created_at), ` (${duration(nowSeconds() - job.created_at)} ago)`]],
    ["Finished", timeEl(job.finished_at)],
    ["Estimated finish", timeEl(job.estimated_finish)],
    ["Trained tokens", num(job.trained_tokens)],
    ["Cost estimate", job.estimate
      ? `${usd(job.estimate.cost_usd)} (${num(job.estimate.billed_tokens)} billed tokens, ${job.estimate.n_epochs} epochs)`
      : "—"],
    ["Budget (max_cost_usd)", usd(job.max_cost_usd)],
    ["Method", job.method?.type || "supervised"],
    ["Seed", job.seed ?? "—"],
    ["Integrations", integrationsText(job.integrations)],
    ["Tenant", job.tenant || job.organization_id],
    ["Suffix", job.suffix || "—"],
    ["Metadata", job.metadata && Object.keys(job.metadata).length
      ? Object.entries(job.metadata).map(([k, v]) => h("span", { class: "badge info" }, `${k}: ${v}`))
      : "—"],
    ["Webhook", job.webhook ? h("span", { class: "mono" }, job.webhook.url) : "—"],
  ];
  return h("dl", { class: "summary" }, rows.map(([k, v]) => [h("dt", {}, k), h("dd", {}, v)]));
}

function flatten(obj, prefix = "", out = []) {
  for (const [k, v] of Object.entries(obj || {})) {
    const name = prefix ? `${prefix}.${k}` : k;
    if (v && typeof v === "object" && !Array.isArray(v) && prefix.split(".").length < 3) flatten(v, name, out);
    else if (v === null || typeof v !== "object") out.push([name, typeof v === "number" ? num(v) : String(v)]);
  }
  return out;
}

const MEASURES = ["exact_match", "char_f1", "rouge_l", "bleu", "preference_accuracy", "preference_margin", "preference_pairs",
  "examples", "answered", "errors"]; // the preference_* figures: DPO jobs only

/** The held-out evaluation: summary against the base model, then the first answers. */
function evaluation(ev) {
  const mono = (text) => h("span", { class: "mono" }, text);
  const head = h("p", {}, "Status: ", badge(ev.status),
    ev.model ? [" · model ", mono(ev.model)] : null,
    ev.baseline_model ? [" · baseline ", mono(ev.baseline_model)] : null);
  const raw = h("details", {}, h("summary", {}, "Raw evaluation JSON"), h("pre", { class: "json" }, JSON.stringify(ev, null, 2)));
  if (!("metrics" in ev) && !Array.isArray(ev.data)) {
    const rows = flatten(ev).filter(([k]) => !["object", "status", "job_id"].includes(k));
    return [head, table(null, ["Measure", "Value"], rows, { empty: "The evaluation has no figures yet.", numeric: [1] }), raw];
  }
  const summaryTable = ev.metrics
    ? table("Summary (means; BLEU 0-100)", ["Measure", "Fine-tuned", "Base model"],
      MEASURES.filter((m) => ev.metrics[m] !== undefined)
        .map((m) => [m, num(ev.metrics[m]), ev.baseline ? num(ev.baseline[m]) : "—"]), { numeric: [1, 2] })
    : h("p", { class: "muted" }, "No figures yet.");
  const examples = (ev.data || []).map((x) => [String(x.index), x.prompt, x.reference,
    x.error ? `error: ${x.error.message || x.error.code || ""}` : x.answer ?? "—", num(x.char_f1),
    x.baseline ? x.baseline.answer ?? "—" : "—"]);
  return [head, summaryTable,
    examples.length ? [h("h3", {}, `Answers${ev.has_more ? ` (first ${examples.length} of ${ev.examples})` : ""}`),
      table(null, ["#", "Prompt", "Reference", "Answer", "char F1", "Base model answer"], examples, { numeric: [0, 4] })] : null,
    raw];
}

export async function render(main, { params, signal }) {
  const jobId = params[0];
  const base = `/v1/fine_tuning/jobs/${encodeURIComponent(jobId)}`;
  let job;
  try {
    job = await api(base, { signal });
  } catch (err) {
    if (err instanceof ApiError && err.status === 404) return notfound.render(main, { what: `Job ${jobId}`, err });
    fill(main, h("h1", {}, `Job ${jobId}`), errorAlert(err, "Could not load the job"));
    return null;
  }
  document.title = `${job.id} · Tuneline console`;
  const settings = loadSettings();
  const timers = [];
  const stop = new AbortController();
  signal.addEventListener("abort", () => stop.abort());

  const heading = h("h1", {}, "Job ", h("span", { class: "mono" }, job.id), " ", h("span", { id: "job-status" }, badge(job.status)));
  const summaryBox = h("div", { class: "panel", id: "job-summary" });
  const errorBox = h("div", { id: "job-error" });
  const actions = h("div", { class: "toolbar", id: "job-actions" });
  const actionFeedback = h("div", { id: "action-feedback" });
  const progressBox = h("div", { class: "progress", id: "job-progress" });
  const charts = chartsFor(job);
  const metricsError = h("div");
  const checkpointsBox = h("div", { id: "checkpoints" });
  const evaluationBox = h("div", { id: "evaluation" });
  const deliveriesBox = h("div", { id: "deliveries" });
  const deliveriesFeedback = h("div", { id: "deliveries-feedback" });
  const log = h("ol", { class: "log mono", id: "event-log", role: "log", "aria-label": "Event log", tabindex: "0" });
  const streamState = h("p", { class: "stream-state", id: "stream-state", role: "status" }, "Connecting to the live event log…");
  const seen = new Set();
  const events = [];
  let evaluationFound = false;

  function renderJob() {
    fill(heading.querySelector("#job-status"), badge(job.status));
    fill(summaryBox, summary(job));
    fill(errorBox, job.error && (job.error.message || job.error.code)
      ? h("div", { class: "alert error", role: "alert" }, `Job error: ${job.error.message || ""}`,
        h("span", { class: "detail" }, [job.error.code, job.error.param].filter(Boolean).join(" · ")))
      : null);
    const activity = fromEvents([...events].reverse());
    const f = fraction(job, activity);
    fill(progressBox, f === null
      ? h("span", { class: "muted" }, TERMINAL.has(job.status) ? "Finished." : "No training steps yet.")
      : [h("progress", { max: "100", value: String(Math.round(f * 100)), "aria-label": "Training progress" }),
        h("span", {}, activity.total ? `step ${activity.step} of ${activity.total}` : `${Math.round(f * 100)}%`)]);
    renderActions();
  }

  /** Pause (a training job) or resume (a paused one), as OpenAI's routes allow; the server has the last word. */
  function controlButton() {
    let what = null;
    if (job.status === "running" && job.stage === "training") what = "pause";
    else if (job.status === "paused" && job.stage !== "pausing") what = "resume";
    if (!what) {
      return job.stage === "pausing" ? h("span", { class: "muted", id: "pausing-note" }, "Pausing: saving a checkpoint…") : null;
    }
    const label = what === "pause" ? "Pause job" : "Resume job";
    const button = h("button", { type: "button", class: "secondary", id: `${what}-job` }, label);
    button.addEventListener("click", async () => {
      button.disabled = true;
      try {
        job = await api(`${base}/${what}`, { method: "POST", signal });
        fill(actionFeedback, h("div", { class: "alert info", role: "status" }, `Job ${job.id} is ${job.status} (${job.stage}).`));
        announce(`Job ${job.status}`);
        renderJob();
      } catch (err) {
        if (err.name === "AbortError") return;
        fill(actionFeedback, errorAlert(err, what === "pause" ? "Pause failed" : "Resume failed"));
        renderActions();
      }
    });
    return button;
  }

  // An open "cancel?" confirmation stays as it is (with its focus) while refreshes re-render the
  // page around it; it closes on an answer, or when the job ends on its own.
  let confirming = false;

  function renderActions() {
    if (TERMINAL.has(job.status)) {
      confirming = false;
      fill(actions, h("span", { class: "muted" }, `This job is ${job.status}; it cannot be cancelled.`));
      return;
    }
    if (confirming) return;
    const cancel = h("button", { type: "button", class: "danger", id: "cancel-job" }, "Cancel job");
    cancel.addEventListener("click", () => {
      confirming = true;
      const yes = h("button", { type: "button", class: "danger", id: "confirm-cancel" }, "Yes, cancel this job");
      const no = h("button", { type: "button", class: "secondary" }, "Keep it running");
      no.addEventListener("click", () => {
        confirming = false;
        renderActions();
        actions.querySelector("#cancel-job")?.focus();
      });
      yes.addEventListener("click", async () => {
        yes.disabled = true;
        try {
          job = await api(`${base}/cancel`, { method: "POST", signal });
          confirming = false;
          fill(actionFeedback, h("div", { class: "alert info", role: "status" }, `Job ${job.id} is ${job.status}.`));
          announce(`Job ${job.status}`);
          renderJob();
        } catch (err) {
          if (err.name === "AbortError") return;
          confirming = false;
          fill(actionFeedback, errorAlert(err, "Cancel failed"));
          renderActions();
        }
      });
      fill(actions, h("span", { class: "confirm", role: "group", "aria-label": "Confirm cancel" },
        h("span", {}, "Cancel this job? A provider job is cancelled too."), yes, no));
      yes.focus();
    });
    fill(actions, controlButton(), cancel);
  }

  async function refreshJob() {
    try {
      job = await api(base, { signal });
      fill(errorBox);
      renderJob();
    } catch (err) {
      if (err.name !== "AbortError") fill(errorBox, errorAlert(err, "Could not refresh the job"));
    }
  }

  async function refreshMetrics() {
    try {
      const rows = (await api(`${base}/metrics`, { signal })).data;
      charts.forEach((chart) => chart.update(rows));
      fill(metricsError);
    } catch (err) {
      if (err.name !== "AbortError") fill(metricsError, errorAlert(err, "Could not load metrics"));
    }
  }

  async function refreshCheckpoints() {
    try {
      const page = await api(url(`${base}/checkpoints`, { limit: 100 }), { signal });
      fill(checkpointsBox, table(null, ["Step", "Checkpoint", "Model", "Metrics", "Created"],
        page.data.map((c) => [c.step_number, h("span", { class: "mono" }, c.id),
          h("span", { class: "mono" }, c.fine_tuned_model_checkpoint || "—"),
          Object.entries(c.metrics || {}).filter(([k]) => k !== "step").map(([k, v]) => `${k} ${num(v)}`).join(", ") || "—",
          timeEl(c.created_at)]),
        { empty: "No checkpoints yet.", numeric: [0] }));
    } catch (err) {
      if (err.name !== "AbortError") fill(checkpointsBox, errorAlert(err, "Could not load checkpoints"));
    }
  }

  async function refreshEvaluation() {
    try {
      const ev = await api(url(`${base}/evaluation`, { limit: 20 }), { signal });
      evaluationFound = ["completed", "failed", "not_run"].includes(ev.status);
      fill(evaluationBox, ev.status === "not_run"
        ? h("p", { class: "muted" }, "No evaluation for this job.", h("span", { class: "detail" }, " (status not_run: no held-out test data)"))
        : evaluation(ev));
    } catch (err) {
      if (err.name === "AbortError") return;
      if (err instanceof ApiError && err.status === 404) fill(evaluationBox, h("p", { class: "muted" }, "No evaluation for this job."));
      else fill(evaluationBox, errorAlert(err, "Could not load the evaluation"));
    }
  }

  function redeliverButton(d) {
    const button = h("button", { type: "button", class: "secondary", "aria-label": `Redeliver ${d.id}`, "data-delivery": d.id }, "Redeliver");
    button.addEventListener("click", async () => {
      button.disabled = true;
      try {
        const out = await api(`${base}/webhook_deliveries/${encodeURIComponent(d.id)}/redeliver`, { method: "POST", signal });
        fill(deliveriesFeedback, h("div", { class: "alert info", role: "status" }, `Delivery ${out.id} queued again (${out.status}).`));
        announce("Webhook redelivery queued");
      } catch (err) {
        if (err.name !== "AbortError") fill(deliveriesFeedback, errorAlert(err, "Redeliver failed"));
      }
      refreshDeliveries();
    });
    return button;
  }

  async function refreshDeliveries() {
    try {
      const page = await api(`${base}/webhook_deliveries`, { signal });
      fill(deliveriesBox, table(null, ["Delivery", "Event type", "URL", "Status", "Attempts", "Last attempt", "Next attempt", "Action"],
        page.data.map((d) => {
          const last = d.attempts[d.attempts.length - 1];
          return { attrs: { "data-delivery-id": d.id, "data-status": d.status }, cells: [
            h("span", { class: "mono" }, d.id), d.type, h("span", { class: "mono" }, d.url), badge(d.status),
            String(d.attempts.length),
            last ? `${last.status_code ?? "no response"}${last.error ? ` · ${last.error}` : ""}${last.latency_ms != null ? ` · ${last.latency_ms} ms` : ""}` : "—",
            d.next_attempt_at ? timeEl(d.next_attempt_at) : "—",
            redeliverButton(d)] };
        }),
        { empty: job.webhook ? "No deliveries yet (sent when a subscribed event happens)." : "This job has no webhook.", numeric: [4] }));
    } catch (err) {
      if (err.name !== "AbortError") fill(deliveriesBox, errorAlert(err, "Could not load webhook deliveries"));
    }
  }

  const refreshSoon = debounce(() => { refreshJob(); refreshCheckpoints(); }, 400);
  const metricsSoon = debounce(refreshMetrics, 600);

  function addEvent(e) {
    if (seen.has(e.id)) return;
    seen.add(e.id);
    events.push(e);
    const level = e.level || "info";
    log.append(h("li", { "data-type": e.type },
      h("time", { datetime: new Date(e.created_at * 1000).toISOString() }, new Date(e.created_at * 1000).toLocaleTimeString([], { hour12: false })),
      h("span", { class: `lvl lvl-${level}` }, level),
      h("span", { class: "msg" }, e.message)));
    while (log.children.length > MAX_LOG) log.firstElementChild.remove();
    const nearBottom = log.scrollHeight - log.scrollTop - log.clientHeight < 80;
    if (nearBottom) log.scrollTop = log.scrollHeight;
    if (e.type === "metrics") metricsSoon();
    else refreshSoon();
  }

  async function follow() {
    let delay = 1000;
    while (!stop.signal.aborted) {
      try {
        streamState.textContent = "Live: following events as they happen.";
        let finished = false;
        await stream(url(`${base}/events`, { stream: "true" }), (msg) => {
          if (msg.event === "done") finished = true;
          else if (msg.data && typeof msg.data === "object") addEvent(msg.data);
        }, stop.signal);
        if (finished) {
          streamState.textContent = "The job has ended; the log is complete.";
          refreshJob(); refreshMetrics(); refreshCheckpoints(); refreshDeliveries(); refreshEvaluation();
          return;
        }
        delay = 1000;
      } catch (err) {
        if (err.name === "AbortError") return;
        streamState.textContent = `Live log interrupted: ${err.message}. Reconnecting in ${Math.round(delay / 1000)} s…`;
        if (err instanceof ApiError && [401, 403, 404].includes(err.status)) return;
      }
      await new Promise((resolve) => setTimeout(resolve, delay));
      delay = Math.min(delay * 2, 15000);
    }
  }

  fill(main,
    h("p", {}, h("a", { href: "#/jobs" }, "← All jobs")),
    heading,
    errorBox,
    h("section", { "aria-labelledby": "h-summary" }, h("h2", { id: "h-summary", class: "visually-hidden" }, "Summary"),
      summaryBox, h("h3", {}, "Progress"), progressBox, actions, actionFeedback),
    h("section", { "aria-labelledby": "h-curves" }, h("h2", { id: "h-curves" }, "Training curves"),
      metricsError, h("div", { class: "charts" }, charts.map((chart) => chart.figure))),
    h("section", { "aria-labelledby": "h-log" }, h("h2", { id: "h-log" }, "Event log"), streamState, log),
    h("section", { "aria-labelledby": "h-ckpt" }, h("h2", { id: "h-ckpt" }, "Checkpoints"), checkpointsBox),
    h("section", { "aria-labelledby": "h-eval" }, h("h2", { id: "h-eval" }, "Evaluation"), evaluationBox),
    h("section", { "aria-labelledby": "h-hooks" }, h("h2", { id: "h-hooks" }, "Webhook deliveries"), deliveriesFeedback, deliveriesBox));
  renderJob();
  await Promise.all([refreshMetrics(), refreshCheckpoints(), refreshEvaluation(), refreshDeliveries()]);
  follow();
  timers.push(setInterval(() => {
    if (document.hidden) return;
    const wasActive = !TERMINAL.has(job.status);
    refreshDeliveries();
    if (wasActive) {
      refreshJob(); refreshMetrics(); refreshCheckpoints();
    }
    // A held-out evaluation can finish after the job succeeded.
    if (!evaluationFound && (wasActive || job.test_file || job.prepare?.split?.test)) refreshEvaluation();
  }, settings.refreshSeconds * 1000));
  return () => {
    stop.abort();
    timers.forEach(clearInterval);
    charts.forEach((chart) => chart.destroy());
  };
}
