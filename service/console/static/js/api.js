// The public API over fetch: bearer key from sessionStorage, OpenAI error envelopes as ApiError.

const KEY = "tuneline.console.apiKey";

export function getKey() {
  return sessionStorage.getItem(KEY);
}

export function setKey(key) {
  sessionStorage.setItem(KEY, key);
}

export function clearKey() {
  sessionStorage.removeItem(KEY);
}

export class ApiError extends Error {
  constructor(status, body, fallback) {
    const e = (body && typeof body === "object" && body.error) || {};
    super(e.message || fallback || `HTTP ${status}`);
    this.name = "ApiError";
    this.status = status;
    this.type = e.type || null;
    this.code = e.code || null;
    this.param = e.param || null;
  }
}

function headers(extra = {}) {
  const key = getKey();
  return { ...(key ? { Authorization: `Bearer ${key}` } : {}), ...extra };
}

/** Build "/v1/...?a=b" from a path and a query object (empty values dropped). */
export function url(path, query = {}) {
  const params = new URLSearchParams();
  for (const [k, v] of Object.entries(query)) {
    if (v !== undefined && v !== null && v !== "") params.set(k, v);
  }
  const qs = params.toString();
  return qs ? `${path}?${qs}` : path;
}

async function send(path, { method = "GET", body, signal, key } = {}) {
  const extra = { Accept: "application/json" };
  if (body !== undefined) extra["Content-Type"] = "application/json";
  if (key) extra.Authorization = `Bearer ${key}`;
  try {
    return await fetch(path, {
      method,
      headers: headers(extra),
      body: body === undefined ? undefined : JSON.stringify(body),
      signal,
      cache: "no-store",
      credentials: "omit",
    });
  } catch (err) {
    if (err.name === "AbortError") throw err;
    throw new ApiError(0, null, `Network error: could not reach the Tuneline API (${err.message}).`);
  }
}

async function failure(res) {
  const text = await res.text();
  let body = null;
  try { body = JSON.parse(text); } catch { /* not JSON: use the text below */ }
  const err = new ApiError(res.status, body, text.slice(0, 300) || res.statusText);
  if (res.status === 401) window.dispatchEvent(new CustomEvent("tuneline:unauthorized", { detail: err }));
  return err;
}

/** JSON request; throws ApiError with the envelope's message on any non-2xx answer. */
export async function api(path, options = {}) {
  const res = await send(path, options);
  if (!res.ok) throw await failure(res);
  return res.json();
}

/** Check a key before keeping it: 401 means invalid or revoked. */
export async function probeKey(key) {
  const res = await send(url("/v1/fine_tuning/jobs", { limit: 1 }), { key });
  if (!res.ok) {
    const text = await res.text();
    let body = null;
    try { body = JSON.parse(text); } catch { /* keep null */ }
    throw new ApiError(res.status, body, text.slice(0, 300));
  }
}

/**
 * Follow a server-sent event stream with fetch (EventSource cannot send the bearer header).
 * Calls onEvent({event, id, data}) per message; resolves when the server closes the stream.
 */
export async function stream(path, onEvent, signal) {
  const res = await fetch(path, {
    headers: headers({ Accept: "text/event-stream" }),
    signal,
    cache: "no-store",
    credentials: "omit",
  }).catch((err) => {
    if (err.name === "AbortError") throw err;
    throw new ApiError(0, null, `Network error: ${err.message}`);
  });
  if (!res.ok) throw await failure(res);
  const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += value.replace(/\r\n?/g, "\n");
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, cut);
      buffer = buffer.slice(cut + 2);
      const msg = { event: "message", id: null, data: "" };
      const data = [];
      for (const line of block.split("\n")) {
        if (!line || line.startsWith(":")) continue;
        const colon = line.indexOf(":");
        const field = colon < 0 ? line : line.slice(0, colon);
        const val = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
        if (field === "event") msg.event = val;
        else if (field === "id") msg.id = val;
        else if (field === "data") data.push(val);
      }
      if (!data.length) continue;
      msg.data = data.join("\n");
      try { msg.data = JSON.parse(msg.data); } catch { /* leave as text */ }
      onEvent(msg);
    }
  }
}

/** All pages of a list route, up to ``max`` items (for counting when /v1/stats is missing). */
export async function listAll(path, query = {}, max = 500, signal) {
  const items = [];
  let after;
  for (;;) {
    const page = await api(url(path, { ...query, limit: 100, after }), { signal });
    items.push(...page.data);
    if (!page.has_more || items.length >= max || !page.data.length) return { items, truncated: page.has_more };
    after = page.data[page.data.length - 1].id;
  }
}
