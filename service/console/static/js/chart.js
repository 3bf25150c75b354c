// Training curves drawn with uPlot (vendored from npm by `make console`), plus a data-table fallback.
import uPlot from "../vendor/uplot/uPlot.esm.js";
import { h, num, table } from "./dom.js";

const COLORS = ["#0b5cad", "#c2410c", "#15803d", "#7e22ce"];

/**
 * A figure with a line chart of ``series`` (metric names) against ``step``; returns
 * {figure, update(rows), destroy()}. Missing values (null) leave gaps.
 */
export function lineChart(title, series, yLabel) {
  const box = h("div", { class: "chart-box", role: "img", "aria-label": `${title} chart` });
  const note = h("p", { class: "muted" }, "No metrics yet.");
  const data = h("details", {}, h("summary", {}, `${title}: data table`), h("div"));
  const figure = h("figure", { class: "chart", "data-chart": title }, h("figcaption", {}, title), note, box, data);
  let plot = null;
  let rows = [];
  const observer = new ResizeObserver(() => {
    if (plot) plot.setSize({ width: Math.max(200, box.clientWidth), height: 240 });
  });
  observer.observe(box);

  function build(present) {
    const opts = {
      width: Math.max(200, box.clientWidth || 400),
      height: 240,
      scales: { x: { time: false } },
      axes: [{ label: "step" }, { label: yLabel, size: 60 }],
      series: [{ label: "step" }, ...present.map((name, i) => ({
        label: name, stroke: COLORS[i % COLORS.length], width: 2, spanGaps: true, points: { show: true, size: 4 },
      }))],
      legend: { live: true },
    };
    return new uPlot(opts, columns(present), box);
  }

  function columns(present) {
    return [rows.map((r) => r.step), ...present.map((name) => rows.map((r) => r[name] ?? null))];
  }

  function update(newRows) {
    rows = newRows;
    const present = series.filter((name) => rows.some((r) => r[name] !== null && r[name] !== undefined));
    note.hidden = rows.length > 0 && present.length > 0;
    box.dataset.points = String(rows.length);
    if (!present.length) return;
    const signature = present.join(",");
    if (!plot || plot._signature !== signature) {
      plot?.destroy();
      plot = build(present);
      plot._signature = signature;
    } else {
      plot.setData(columns(present));
    }
    data.lastChild.replaceWith(h("div", {}, table(null, ["step", ...present],
      rows.map((r) => [r.step, ...present.map((name) => num(r[name], 5))]), { numeric: present.map((_, i) => i + 1) })));
  }

  return { figure, update, destroy: () => { observer.disconnect(); plot?.destroy(); } };
}
