// Sign in by pasting an API key; it is checked, then kept in sessionStorage for this tab only.
import { ApiError, probeKey, setKey } from "../api.js";
import { errorAlert, fill, h } from "../dom.js";
import { loadStats, roleFrom } from "../stats.js";

export function render(main, { notice, onSignedIn }) {
  const input = h("input", {
    id: "api-key", name: "api-key", type: "password", autocomplete: "off", spellcheck: "false",
    required: true, "aria-describedby": "api-key-hint",
  });
  const feedback = h("div", { id: "signin-feedback" });
  const button = h("button", { type: "submit" }, "Sign in");
  const form = h("form", { class: "card-form", novalidate: true },
    h("div", { class: "field" },
      h("label", { for: "api-key" }, "API key"),
      input,
      h("p", { class: "hint", id: "api-key-hint" },
        "Paste a Tuneline API key (from `tuneline keys create`). It is kept only in this tab's session storage and sent as a bearer header.")),
    button,
    feedback);
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    const key = input.value.trim();
    if (!key) {
      fill(feedback, h("div", { class: "alert error", role: "alert" }, "Enter an API key."));
      input.focus();
      return;
    }
    button.disabled = true;
    fill(feedback, h("p", { class: "muted", role: "status" }, "Checking the key…"));
    try {
      await probeKey(key);
      setKey(key);
      let role = null;
      try { role = roleFrom(await loadStats()); } catch { role = null; }
      if (role) sessionStorage.setItem("tuneline.console.role", role);
      input.value = "";
      onSignedIn();
    } catch (err) {
      button.disabled = false;
      if (err instanceof ApiError && err.status === 401) {
        fill(feedback, h("div", { class: "alert error", role: "alert" },
          "This API key was not accepted: it is invalid or has been revoked.",
          h("span", { class: "detail" }, `Server said: ${err.message}`)));
      } else {
        fill(feedback, errorAlert(err, "Could not sign in"));
      }
      input.focus();
    }
  });
  fill(main,
    h("h1", {}, "Sign in"),
    notice ? h("div", { class: "alert info", role: "status" }, notice) : null,
    form);
  input.focus();
  return null;
}
