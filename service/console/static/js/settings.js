// Page settings kept in localStorage (they are preferences, not secrets): stuck threshold, refresh.

const KEY = "tuneline.console.settings";
export const DEFAULTS = { stuckMinutes: 15, refreshSeconds: 5 };

export function loadSettings() {
  try {
    return { ...DEFAULTS, ...JSON.parse(localStorage.getItem(KEY) || "{}") };
  } catch {
    return { ...DEFAULTS };
  }
}

export function saveSettings(values) {
  localStorage.setItem(KEY, JSON.stringify({ ...loadSettings(), ...values }));
}
