// The console shell: hash router, sign-in gate, navigation state and view lifecycle.
import { clearKey, getKey } from "./api.js";
import { fill, h } from "./dom.js";
import * as file from "./views/file.js";
import * as files from "./views/files.js";
import * as job from "./views/job.js";
import * as imp from "./views/import.js";
import * as imports from "./views/imports.js";
import * as jobs from "./views/jobs.js";
import * as notfound from "./views/notfound.js";
import * as overview from "./views/overview.js";
import * as settings from "./views/settings.js";
import * as signin from "./views/signin.js";

const ROUTES = [
  [/^\/?$/, overview, "overview"],
  [/^\/jobs$/, jobs, "jobs"],
  [/^\/jobs\/([^/]+)$/, job, "jobs"],
  [/^\/files$/, files, "files"],
  [/^\/files\/([^/]+)$/, file, "files"],
  [/^\/imports$/, imports, "imports"],
  [/^\/imports\/([^/]+)$/, imp, "imports"],
  [/^\/settings$/, settings, "settings"],
];

const main = document.getElementById("main");
let current = { controller: null, cleanup: null };
let signInNotice = null;

function parseHash() {
  const raw = location.hash.startsWith("#/") ? location.hash.slice(1) : "/";
  const [path, qs = ""] = raw.split("?");
  return { path: decodeURIComponent(path), query: Object.fromEntries(new URLSearchParams(qs)) };
}

function setChrome(signedIn, section) {
  document.getElementById("main-nav").hidden = !signedIn;
  document.getElementById("session").hidden = !signedIn;
  const role = sessionStorage.getItem("tuneline.console.role");
  document.getElementById("session-label").textContent = signedIn
    ? `Signed in${role ? ` · ${role} key` : ""}`
    : "";
  for (const a of document.querySelectorAll("[data-nav]")) {
    if (a.dataset.nav === section) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
}

async function route() {
  if (location.hash && !location.hash.startsWith("#/")) return; // in-page anchors (skip link)
  current.controller?.abort();
  if (typeof current.cleanup === "function") current.cleanup();
  const controller = new AbortController();
  current = { controller, cleanup: null };
  const { path, query } = parseHash();
  if (!getKey()) {
    setChrome(false, null);
    document.title = "Sign in · Tuneline console";
    current.cleanup = signin.render(main, { notice: signInNotice, onSignedIn: () => { signInNotice = null; route(); } });
    return;
  }
  let view = notfound;
  let params = [];
  let section = null;
  for (const [pattern, module, name] of ROUTES) {
    const m = path.match(pattern);
    if (m) {
      view = module;
      params = m.slice(1);
      section = name;
      break;
    }
  }
  setChrome(true, section);
  fill(main, h("p", { class: "muted" }, "Loading…"));
  let cleanup = null;
  try {
    cleanup = await view.render(main, { params, query, signal: controller.signal, path });
  } catch (err) {
    if (err.name === "AbortError") return;
    throw err;
  }
  // A view that finished rendering after the user moved on must not keep its timers running.
  if (controller.signal.aborted) {
    if (typeof cleanup === "function") cleanup();
  } else {
    current.cleanup = cleanup;
  }
}

/** Focus the new view, unless the user already moved into it while it was still loading. */
function focusMain() {
  if (!main.contains(document.activeElement)) main.focus({ preventScroll: true });
}

window.addEventListener("hashchange", () => { route().then(focusMain); });
window.addEventListener("tuneline:unauthorized", (e) => {
  if (!getKey()) return;
  clearKey();
  sessionStorage.removeItem("tuneline.console.role");
  signInNotice = `Your API key is no longer accepted (${e.detail.message}). It may have been revoked: sign in again.`;
  route();
});
document.getElementById("sign-out").addEventListener("click", () => {
  clearKey();
  sessionStorage.removeItem("tuneline.console.role");
  signInNotice = "Signed out. The key was removed from this tab.";
  route();
});
document.getElementById("skip-link").addEventListener("click", (e) => {
  e.preventDefault();
  focusMain();
});
route();
