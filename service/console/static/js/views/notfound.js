// The not-found page: unknown routes, and jobs or files this key cannot see (404, as the API says).
import { fill, h } from "../dom.js";

export function render(main, { path, what, err }) {
  document.title = "Not found · Tuneline console";
  fill(main,
    h("h1", {}, "Not found"),
    h("div", { class: "alert warn", role: "alert" },
      what ? `${what} was not found.` : `There is no page at ${path}.`,
      err ? h("span", { class: "detail" }, err.message) : null,
      what ? h("span", { class: "detail" }, "It may not exist, or it may belong to another tenant.") : null),
    h("p", {}, h("a", { href: "#/jobs" }, "Back to jobs"), " · ", h("a", { href: "#/" }, "Overview")));
  return null;
}
