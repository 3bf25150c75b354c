// A job's progress and last activity, read from its newest events (steps come in metrics events).
import { api, url } from "./api.js";
import { TERMINAL } from "./dom.js";

export async function recentActivity(job, signal) {
  if (TERMINAL.has(job.status)) return null;
  const page = await api(url(`/v1/fine_tuning/jobs/${encodeURIComponent(job.id)}/events`, { limit: 25 }), { signal });
  return fromEvents(page.data);
}

/** {step, total, lastEventAt} from events listed newest first. */
export function fromEvents(events) {
  const out = { step: null, total: null, lastEventAt: events.length ? events[0].created_at : null };
  for (const e of events) {
    const d = e.data || {};
    if (d.step !== undefined && d.total_steps) {
      out.step = d.step;
      out.total = d.total_steps;
      break;
    }
  }
  return out;
}

export function fraction(job, activity) {
  if (job.status === "succeeded") return 1;
  if (activity && activity.total) return Math.min(1, activity.step / activity.total);
  return null;
}

/** Seconds since a non-terminal job last showed progress, or null for finished jobs. */
export function idleSeconds(job, activity, now) {
  if (TERMINAL.has(job.status)) return null;
  const last = Math.max(job.created_at || 0, (activity && activity.lastEventAt) || 0);
  return now - last;
}
