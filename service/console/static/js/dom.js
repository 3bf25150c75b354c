// Small DOM and formatting helpers. Text always goes in as text nodes, never parsed as HTML.

/** h("a", {href: "#/"}, "text", child) builds an element; attributes starting with "on" are listeners. */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith("on") && typeof value === "function") {
      el.addEventListener(name.slice(2).toLowerCase(), value);
    } else if (name === "class") {
      el.className = value;
    } else if (name === "dataset") {
      Object.assign(el.dataset, value);
    } else if (value === true) {
      el.setAttribute(name, "");
    } else {
      el.setAttribute(name, String(value));
    }
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

/** Replace the children of ``el``. */
export function fill(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

export const TERMINAL = new Set(["succeeded", "failed", "cancelled"]);
export const STATUSES = ["validating_files", "queued", "running", "paused", "succeeded", "failed", "cancelled"];
export const PROVIDERS = ["openai", "azure", "sandbox", "local"];

export function badge(value, extra = "") {
  const cls = String(value || "unknown").replace(/[^a-z_]/gi, "");
  return h("span", { class: `badge ${cls} ${extra}`.trim() }, value ?? "—");
}

export function isoTime(epochSeconds) {
  return epochSeconds ? new Date(epochSeconds * 1000).toISOString().replace(".000Z", "Z") : "";
}

/** A <time> element showing a local date-time, with the ISO value as its machine-readable form. */
export function timeEl(epochSeconds) {
  if (!epochSeconds) return "—";
  const d = new Date(epochSeconds * 1000);
  return h("time", { datetime: isoTime(epochSeconds), title: isoTime(epochSeconds) }, d.toLocaleString());
}

export function duration(seconds) {
  if (seconds === null || seconds === undefined || Number.isNaN(seconds)) return "—";
  const s = Math.max(0, Math.round(seconds));
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
  return `${Math.floor(s / 86400)} d ${Math.floor((s % 86400) / 3600)} h`;
}

export function nowSeconds() {
  return Date.now() / 1000;
}

export function usd(value) {
  if (value === null || value === undefined) return "—";
  return `$${Number(value).toFixed(value < 1 ? 4 : 2)}`;
}

export function num(value, digits = 4) {
  if (value === null || value === undefined) return "—";
  return Number.isInteger(value) ? value.toLocaleString() : Number(value).toFixed(digits);
}

/** A table with a caption; ``rows`` are arrays of cells (nodes or text); columns label cells on phones. */
export function table(caption, columns, rows, { empty = "Nothing to show.", numeric = [] } = {}) {
  if (!rows.length) return h("p", { class: "muted" }, empty);
  const head = h("tr", {}, columns.map((c, i) => h("th", { scope: "col", class: numeric.includes(i) ? "num" : null }, c)));
  const body = rows.map((row) =>
    h("tr", row.attrs || {}, (row.cells || row).map((cell, i) =>
      h("td", { "data-label": columns[i], class: numeric.includes(i) ? "num" : null }, cell ?? "—"))),
  );
  return h("div", { class: "table-wrap" },
    h("table", { class: "stack" }, caption ? h("caption", {}, caption) : null, h("thead", {}, head), h("tbody", {}, body)));
}

/** The OpenAI error envelope shown as an alert; never swallowed. */
export function errorAlert(err, prefix = "") {
  const title = prefix ? `${prefix}: ` : "";
  const parts = [];
  if (err && err.status !== undefined) {
    const bits = [err.status ? `HTTP ${err.status}` : null, err.type, err.code, err.param ? `param ${err.param}` : null];
    parts.push(h("span", { class: "detail" }, bits.filter(Boolean).join(" · ")));
  }
  return h("div", { class: "alert error", role: "alert" }, title, err?.message || String(err), parts);
}

export function announce(text) {
  const el = document.getElementById("announcer");
  if (el) {
    el.textContent = "";
    setTimeout(() => { el.textContent = text; }, 50);
  }
}
