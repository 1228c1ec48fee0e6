// Charts on plotly.js (dashboard, decomposition, the playground's curves): the loader, the theme,
// safe labels, smoothing, y ranges with natural bounds, and PNG / SVG / CSV downloads.
//
// plotly.js never comes from the network: the kernel reads plotly's own dist file from the
// installed python package (plotly/package_data/plotly.min.js) into ONE hidden widget
// (classes.PlotlyLibrary, shared by every chart of the kernel); a chart widget gets that model
// through anywidget's host.getModel, imports the source once from a blob URL and keeps the
// library on `globalThis.Plotly`. The library model is part of the saved widget state, so a
// reopened notebook draws its charts without a kernel and without a network.
import { h, visibleText } from "./common.js";

// Plotly reads a small HTML subset in every label (<b>, <br>, <a href>, &entities;). Model text and
// user names must stay text: escape the three characters that start markup or an entity.
export function plotText(s) {
  return visibleText(String(s)).replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");
}

// Debiased exponential moving average (TensorBoard's smoothing slider); nulls stay gaps.
export function ema(ys, alpha) {
  if (!(alpha > 0)) return ys.slice();
  let acc = 0, n = 0;
  return ys.map((y) => {
    if (y === null || y === undefined || !Number.isFinite(y)) return null;
    acc = alpha * acc + (1 - alpha) * y; n++;
    return acc / (1 - Math.pow(alpha, n));
  });
}

// The y range to draw: the data's [min, max] widened to span `include` (a quantity's natural
// bounds, e.g. [0, 1] for weights), padded by 5 %; in log10 units when `log` (plotly's log axes
// take log10 ranges). null when there is no finite value (plotly then autoranges an empty axis).
export function yRange(values, include = [], log = false) {
  const vs = values.concat(include).filter((v) => v !== null && v !== undefined && Number.isFinite(v) && (!log || v > 0));
  if (!vs.length) return null;
  let lo = Math.min(...vs), hi = Math.max(...vs);
  if (log) { lo = Math.log10(lo); hi = Math.log10(hi); }
  const pad = hi > lo ? 0.05 * (hi - lo) : Math.max(Math.abs(hi) * 0.05, 1e-3);
  return [lo - pad, hi + pad];
}

// Markers as well as lines while a series has few points: one step is a dot, not an empty chart.
export function lineMode(n) {
  return n <= 1 ? "markers" : n <= 30 ? "lines+markers" : "lines";
}

// Colours from JupyterLab's theme variables, so light and dark themes both read.
export function theme(el) {
  const css = typeof getComputedStyle === "function" && el ? getComputedStyle(el) : null;  // null under node
  const v = (name, dflt) => (css && css.getPropertyValue(name) || "").trim() || dflt;
  return { font: v("--jp-ui-font-color1", "#222"), muted: v("--jp-ui-font-color2", "#555"),
    grid: v("--jp-border-color2", "#e0e0e0"), bg: v("--jp-layout-color0", "#ffffff"),
    hoverBg: v("--jp-layout-color1", "#ffffff") };
}

export function baseLayout(el, extra = {}) {
  const t = theme(el);
  return { paper_bgcolor: t.bg, plot_bgcolor: t.bg, font: { color: t.font, size: 11 },
    margin: { l: 56, r: 16, t: 28, b: 36 }, hoverlabel: { bgcolor: t.hoverBg, font: { color: t.font } },
    ...extra };
}

export function axisStyle(el, extra = {}) {
  const t = theme(el);
  return { gridcolor: t.grid, zerolinecolor: t.grid, linecolor: t.muted, showline: true, ticks: "outside",
    tickcolor: t.muted, ...extra };
}

// The mode bar: zoom / pan / autoscale / PNG (plotly's camera button) plus an SVG download.
export function plotConfig(Plotly, filename) {
  const svgButton = { name: "download-svg", title: "Download plot as SVG",
    icon: Plotly.Icons.camera, click: (gd) => Plotly.downloadImage(gd, { format: "svg", filename }) };
  return { displaylogo: false, responsive: true, toImageButtonOptions: { format: "png", filename, scale: 2 },
    modeBarButtonsToAdd: [svgButton], modeBarButtonsToRemove: ["lasso2d", "select2d"] };
}

// ------------------------------------------------------------------ CSV downloads
function csvCell(v) {
  if (v === null || v === undefined || (typeof v === "number" && !Number.isFinite(v))) return "";
  let s = String(v);
  // a cell that a spreadsheet would run as a formula is prefixed with a quote (model text!)
  if (/^[=+\-@\t\r]/.test(s) && !(typeof v === "number")) s = "'" + s;
  return /[",\n\r]/.test(s) ? `"${s.replace(/"/g, '""')}"` : s;
}

export function csvText(header, rows) {
  return [header, ...rows].map((r) => r.map(csvCell).join(",")).join("\r\n") + "\r\n";
}

export function download(filename, text, mime = "text/csv") {
  const url = URL.createObjectURL(new Blob([text], { type: mime }));
  const a = h("a", { href: url, download: filename, style: { display: "none" } });
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 1000);
}

// A button that downloads table() = {header, rows} as `filename`.
export function csvButton(filename, table, label = "CSV") {
  return h("button", { class: "madopd-btn madopd-csv", title: `download the table as ${filename}`,
    onclick: () => { const t = table(); download(filename, csvText(t.header, t.rows)); } }, label);
}

// ------------------------------------------------------------------ loading plotly.js
const LOADING = "__madopdPlotly";

// The Plotly object: the page's own if one is loaded, else the kernel's copy (see the header).
// `host` is anywidget's render argument; `ref` the chart model's "anywidget:<id>" reference to the library.
export async function loadPlotly(host, ref) {
  if (globalThis.Plotly && globalThis.Plotly.react) return globalThis.Plotly;
  if (!globalThis[LOADING]) {
    globalThis[LOADING] = (async () => {
      if (!host || !host.getModel || !ref) throw new Error("this front end cannot share models (anywidget host.getModel)");
      const lib = await host.getModel(ref);
      const url = URL.createObjectURL(new Blob([lib.get("source")], { type: "text/javascript" }));
      try { await import(/* webpackIgnore: true */ url); } finally { URL.revokeObjectURL(url); }
      if (!globalThis.Plotly) throw new Error("plotly.js did not define window.Plotly");
      return globalThis.Plotly;
    })();
    globalThis[LOADING].catch(() => { delete globalThis[LOADING]; });  // a later widget may retry
  }
  return globalThis[LOADING];
}

// A div that becomes a plotly chart once the library is loaded; draw(Plotly, div) does the
// drawing (and every redraw). A failure to load shows one line in the widget, never a blank.
export function plotBox(host, model, cls, draw) {
  const div = h("div", { class: `madopd-plot ${cls}` });
  const box = h("div", { class: "madopd-plot-box" }, div);
  let P = null;
  loadPlotly(host, model.get("_plotly")).then((lib) => { P = lib; draw(P, div); })
    .catch((e) => box.replaceChildren(h("div", { class: "madopd-banner madopd-plot-error", role: "alert" },
      "⚠ charts unavailable: plotly.js could not be loaded (" + String(e && e.message || e) + ")")));
  return { el: box, div, redraw: () => { if (P) draw(P, div); } };
}
