// Line charts for the dashboard (JS twin of madopd/widgets/chart.py): a title row outside the plot
// with each series' last value, a legend, axes with "nice" ticks, a y range fitted to the data,
// optional log-y and TensorBoard-style smoothing (debiased EMA; the raw curve stays faint
// behind), and a hover cursor that reads every series at the nearest step.
import { h, fmt, visibleText } from "./common.js";

const CHART_NS = "http://www.w3.org/2000/svg";
function chartSvg(tag, attrs = {}) {
  const el = document.createElementNS(CHART_NS, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, String(v));
  return el;
}

// 1-2-5 ticks covering [lo, hi] (about n of them). Same steps as chart.py:nice_ticks.
export function niceTicks(lo, hi, n = 4) {
  if (!(hi > lo)) { const d = Math.abs(lo) > 0 ? Math.abs(lo) * 0.1 : 1; lo -= d; hi += d; }
  const raw = (hi - lo) / n, mag = Math.pow(10, Math.floor(Math.log10(raw)));
  const step = [1, 2, 5, 10].map((m) => m * mag).find((s) => s >= raw);
  const out = [];
  for (let v = Math.ceil(lo / step - 1e-9) * step; v <= hi + step * 1e-9; v += step) out.push(Math.abs(v) < step * 1e-9 ? 0 : v);
  return out;
}

// Debiased exponential moving average (TensorBoard's smoothing slider); nulls are carried over.
export function ema(ys, alpha) {
  if (!(alpha > 0)) return ys.slice();
  let acc = 0, n = 0;
  return ys.map((y) => {
    if (y === null || y === undefined || !Number.isFinite(y)) return null;
    acc = alpha * acc + (1 - alpha) * y; n++;
    return acc / (1 - Math.pow(alpha, n));
  });
}

// Fitted y range: [min, max] of the data padded by 5 %, in log10 units when `log`.
export function yRange(values, log) {
  const vs = values.filter((v) => v !== null && v !== undefined && Number.isFinite(v) && (!log || v > 0));
  if (!vs.length) return null;
  let lo = Math.min(...vs), hi = Math.max(...vs);
  if (log) { lo = Math.log10(lo); hi = Math.log10(hi); }
  const pad = hi > lo ? 0.05 * (hi - lo) : Math.max(Math.abs(hi) * 0.05, 1e-3);
  return [lo - pad, hi + pad];
}

// series: [{name, ys, color}]; opts: {log, smooth, width, height, yFmt, include}
// include: values the y range always spans (e.g. [0, 1] for weights), so a fitted range cannot
// magnify noise of a quantity with natural bounds into a dramatic-looking curve.
export function lineChart(title, xs, series, opts = {}) {
  const W = opts.width || 300, H = opts.height || 150, L = 46, R = 8, T = 6, B = 24;
  const pw = W - L - R, ph = H - T - B;
  const log = !!opts.log, smooth = opts.smooth || 0;
  const shown = series.map((s) => ({ ...s, sm: ema(s.ys, smooth) }));
  const last = (ys) => { for (let i = ys.length - 1; i >= 0; i--) if (ys[i] !== null && ys[i] !== undefined) return ys[i]; return null; };
  const head = h("div", { class: "madopd-chart-title" }, h("b", {}, title),
    ...shown.map((s) => h("span", { class: "madopd-chip madopd-last", "data-series": s.name },
      h("span", { class: "madopd-swatch", style: { background: s.color } }), `${s.name} ${fmt(last(s.ys), 4)}`)));
  const box = chartSvg("svg", { width: W, height: H, class: "madopd-chart", "data-title": title });
  const wrap = h("div", { class: "madopd-chart-wrap" }, head);
  const plot = h("div", { style: { position: "relative" } }, box);
  wrap.append(plot);
  const all = shown.flatMap((s) => s.ys.concat(s.sm));
  const yr = yRange(xs.length ? all.concat(opts.include || []) : all, log);
  if (!xs.length || !yr) {
    const t = chartSvg("text", { x: L + 4, y: T + 16, class: "madopd-axis-text" });
    t.textContent = "no data yet";
    box.append(t);
    return wrap;
  }
  const x0 = Math.min(...xs), x1 = Math.max(...xs);
  const tf = (v) => (log ? Math.log10(v) : v);
  const sx = (x) => L + pw * (x1 > x0 ? (x - x0) / (x1 - x0) : 0.5);
  const sy = (v) => T + ph * (1 - (tf(v) - yr[0]) / (yr[1] - yr[0]));
  // axes, grid and ticks
  box.append(chartSvg("rect", { x: L, y: T, width: pw, height: ph, class: "madopd-plot-bg" }));
  for (const v of niceTicks(yr[0], yr[1], 5)) {
    const y = T + ph * (1 - (v - yr[0]) / (yr[1] - yr[0]));
    if (y < T - 0.5 || y > T + ph + 0.5) continue;
    box.append(chartSvg("line", { x1: L, x2: L + pw, y1: y, y2: y, class: "madopd-grid-line" }));
    const t = chartSvg("text", { x: L - 4, y: y + 3, "text-anchor": "end", class: "madopd-axis-text madopd-ytick" });
    t.textContent = log ? fmt(Math.pow(10, v), 3) : fmt(v, Math.abs(v) >= 10 ? 0 : 3);
    box.append(t);
  }
  for (const v of niceTicks(x0, x1 > x0 ? x1 : x0 + 1, 5)) {
    if (v < x0 || v > x1 || Math.round(v) !== v) continue;
    const x = sx(v);
    box.append(chartSvg("line", { x1: x, x2: x, y1: T + ph, y2: T + ph + 4, class: "madopd-axis-line" }));
    const t = chartSvg("text", { x, y: T + ph + 14, "text-anchor": "middle", class: "madopd-axis-text madopd-xtick" });
    t.textContent = String(v);
    box.append(t);
  }
  box.append(chartSvg("line", { x1: L, x2: L, y1: T, y2: T + ph, class: "madopd-axis-line" }),
    chartSvg("line", { x1: L, x2: L + pw, y1: T + ph, y2: T + ph, class: "madopd-axis-line" }));
  const xl = chartSvg("text", { x: L + pw, y: H - 1, "text-anchor": "end", class: "madopd-axis-text" });
  xl.textContent = "step";
  box.append(xl);
  const path = (ys) => xs.map((x, i) => (ys[i] === null || ys[i] === undefined || (log && !(ys[i] > 0)) ? null
    : `${sx(x).toFixed(1)},${sy(ys[i]).toFixed(1)}`)).filter(Boolean).join(" ");
  for (const s of shown) {
    if (smooth > 0) box.append(chartSvg("polyline", { points: path(s.ys), fill: "none", stroke: s.color, "stroke-width": 1, "stroke-opacity": 0.25 }));
    const line = chartSvg("polyline", { points: path(s.sm), fill: "none", stroke: s.color, "stroke-width": 1.8, class: "madopd-line", "data-series": s.name });
    const tt = chartSvg("title");
    tt.textContent = visibleText(s.name);
    line.append(tt);
    box.append(line);
  }
  // hover: a cursor line and a readout of every series at the nearest step
  const cursor = chartSvg("line", { y1: T, y2: T + ph, class: "madopd-cursor", visibility: "hidden" });
  const tip = h("div", { class: "madopd-tip", style: { display: "none" } });
  box.append(cursor);
  plot.append(tip);
  const hit = chartSvg("rect", { x: L, y: T, width: pw, height: ph, fill: "transparent", class: "madopd-hit" });
  hit.addEventListener("mousemove", (ev) => {
    const r = box.getBoundingClientRect();
    const px = ev.clientX - r.left;
    let best = 0;
    xs.forEach((x, i) => { if (Math.abs(sx(x) - px) < Math.abs(sx(xs[best]) - px)) best = i; });
    cursor.setAttribute("x1", sx(xs[best])); cursor.setAttribute("x2", sx(xs[best]));
    cursor.setAttribute("visibility", "visible");
    tip.replaceChildren(h("div", {}, `step ${xs[best]}`),
      ...shown.map((s) => h("div", {}, h("span", { class: "madopd-swatch", style: { background: s.color } }),
        ` ${s.name}: ${fmt(s.ys[best], 4)}` + (smooth > 0 ? ` (smoothed ${fmt(s.sm[best], 4)})` : ""))));
    tip.style.display = "block";
    tip.style.left = `${Math.min(sx(xs[best]) + 8, W - 120)}px`;
    tip.style.top = `${T + 4}px`;
  });
  hit.addEventListener("mouseleave", () => { cursor.setAttribute("visibility", "hidden"); tip.style.display = "none"; });
  box.append(hit);
  return wrap;
}
