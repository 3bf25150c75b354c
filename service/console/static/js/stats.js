// GET /v1/stats (CONTRACTS.md), or null where this server has no such route yet.
import { api, ApiError, url } from "./api.js";

export async function loadStats(signal, tenant) {
  try {
    return await api(url("/v1/stats", { tenant }), { signal });
  } catch (err) {
    if (err instanceof ApiError && err.status === 404 && !tenant) return null;
    throw err;
  }
}

/** ops keys get queue depths; members get {} (CONTRACTS.md). */
export function roleFrom(stats) {
  if (!stats) return null;
  return stats.queues && Object.keys(stats.queues).length ? "ops" : "member";
}

export function currentRole() {
  return sessionStorage.getItem("tuneline.console.role");
}
