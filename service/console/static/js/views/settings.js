// Page settings: when a job counts as stuck, and how often lists refresh.
import { announce, fill, h } from "../dom.js";
import { DEFAULTS, loadSettings, saveSettings } from "../settings.js";

export function render(main) {
  document.title = "Settings · Tuneline console";
  const s = loadSettings();
  const stuck = h("input", { id: "stuck-minutes", type: "number", min: "0.05", step: "any", value: s.stuckMinutes, required: true, "aria-describedby": "stuck-hint" });
  const refresh = h("input", { id: "refresh-seconds", type: "number", min: "1", max: "600", step: "1", value: s.refreshSeconds, required: true, "aria-describedby": "refresh-hint" });
  const feedback = h("div", { role: "status" });
  const form = h("form", { class: "card-form" },
    h("div", { class: "field" },
      h("label", { for: "stuck-minutes" }, "Stuck after (minutes without progress)"), stuck,
      h("p", { class: "hint", id: "stuck-hint" }, `An active job with no new event for this long is highlighted. Default ${DEFAULTS.stuckMinutes}.`)),
    h("div", { class: "field" },
      h("label", { for: "refresh-seconds" }, "Refresh lists every (seconds)"), refresh,
      h("p", { class: "hint", id: "refresh-hint" }, `Default ${DEFAULTS.refreshSeconds}.`)),
    h("button", { type: "submit" }, "Save settings"),
    feedback);
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    const stuckMinutes = Number(stuck.value);
    const refreshSeconds = Number(refresh.value);
    if (!(stuckMinutes > 0) || !(refreshSeconds >= 1)) {
      fill(feedback, h("div", { class: "alert error", role: "alert" }, "Both values must be positive numbers (refresh at least 1 second)."));
      return;
    }
    saveSettings({ stuckMinutes, refreshSeconds });
    fill(feedback, h("div", { class: "alert info" }, "Settings saved."));
    announce("Settings saved");
  });
  fill(main, h("h1", {}, "Settings"), form);
  return null;
}
