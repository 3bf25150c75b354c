// Imports list: provider accounts copied into Tuneline (DESIGN §15), with status and progress.
import { api, url } from "../api.js";
import { badge, errorAlert, fill, h, num, table, TERMINAL, timeEl } from "../dom.js";
import { loadSettings } from "../settings.js";

export function progressCells(doc) {
  const p = doc.progress || {};
  return [num(p.jobs_imported), num(p.jobs_already_imported), num(p.jobs_skipped), num(p.files_imported), num(p.files_reused)];
}

export async function render(main, { signal }) {
  document.title = "Imports · Tuneline console";
  const box = h("div", { id: "imports-table" });
  fill(main, h("h1", {}, "Imports"),
    h("p", { class: "muted" }, "Fine-tuning history copied from an OpenAI-shaped account. Start one with ",
      h("code", {}, "tuneline migrate openai"), " or POST /v1/imports."),
    box);
  let timer = null;
  async function load() {
    try {
      const page = await api(url("/v1/imports", { limit: 100 }), { signal });
      fill(box, table(
        page.has_more ? "Newest 100 imports" : `${page.data.length} imports`,
        ["Import", "Source", "Status", "Jobs imported", "Already imported", "Skipped", "Files imported", "Files reused", "Created"],
        page.data.map((d) => ({
          attrs: { "data-import-id": d.id, "data-status": d.status },
          cells: [h("a", { href: `#/imports/${encodeURIComponent(d.id)}`, class: "mono" }, d.id), d.source,
            badge(d.status), ...progressCells(d), timeEl(d.created_at)],
        })),
        { empty: "No imports yet.", numeric: [3, 4, 5, 6, 7] }));
      // Refresh while one still runs.
      if (page.data.some((d) => !TERMINAL.has(d.status))) timer = setTimeout(load, loadSettings().refreshSeconds * 1000);
    } catch (err) {
      if (err.name !== "AbortError") fill(box, errorAlert(err, "Could not list imports"));
    }
  }
  await load();
  return () => clearTimeout(timer);
}
