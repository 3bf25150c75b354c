// Copies the front-end dependencies from node_modules into static/vendor (committed; served offline).
import { copyFileSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const vendor = join(here, "static", "vendor");

const files = [
  ["uplot/dist/uPlot.esm.js", "uplot/uPlot.esm.js"],
  ["uplot/dist/uPlot.min.css", "uplot/uPlot.min.css"],
  ["uplot/LICENSE", "uplot/LICENSE"],
];

const manifest = {};
for (const [from, to] of files) {
  const target = join(vendor, to);
  mkdirSync(dirname(target), { recursive: true });
  copyFileSync(join(here, "node_modules", from), target);
}
for (const name of new Set(files.map(([from]) => from.split("/")[0]))) {
  const pkg = JSON.parse(readFileSync(join(here, "node_modules", name, "package.json"), "utf8"));
  manifest[name] = { version: pkg.version, license: pkg.license };
}
writeFileSync(join(vendor, "manifest.json"), JSON.stringify(manifest, null, 2) + "\n");
console.log("vendored", Object.entries(manifest).map(([n, m]) => `${n}@${m.version}`).join(", "));
