// Files list: the tenant's datasets with status, size and a link to each preparation report.
import { api, url } from "../api.js";
import { badge, errorAlert, fill, h, num, table, timeEl } from "../dom.js";

export async function render(main, { signal }) {
  document.title = "Files · Tuneline console";
  const box = h("div");
  fill(main, h("h1", {}, "Files"), box);
  try {
    const page = await api(url("/v1/files", { limit: 100 }), { signal });
    fill(box, table(
      page.has_more ? "Newest 100 files" : `${page.data.length} files`,
      ["File", "Name", "Status", "Bytes", "Created", "Details"],
      page.data.map((f) => [
        h("a", { href: `#/files/${encodeURIComponent(f.id)}`, class: "mono" }, f.id),
        f.filename, badge(f.status), num(f.bytes), timeEl(f.created_at), f.status_details || "—",
      ]),
      { empty: "No files uploaded yet.", numeric: [3] }));
  } catch (err) {
    if (err.name !== "AbortError") fill(box, errorAlert(err, "Could not list files"));
  }
  return null;
}
