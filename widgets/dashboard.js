// Live training dashboard: SVG line charts (loss, divergence quantiles, weights, n_eff) and a
// step x token probe ribbon, redrawn whenever the kernel updates `payload`. The pause button flips
// the synced `paused` trait, which the Python callback honours between steps.
import { quantile } from "./divmath.js";
import { h, fmt, seqColor, SEQUENTIAL, tokenSpan, legend, teacherLegend } from "./common.js";

const SVGNS = "http://www.w3.org/2000/svg";
function svg(tag, attrs = {}) {
  const el = document.createElementNS(SVGNS, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, String(v));
  return el;
}

function lineChart(title, xs, series, W = 280, H = 110) {
  const box = svg("svg", { width: W, height: H, class: "madopd-chart", "data-title": title });
  const pts = series.flatMap(([, ys]) => ys.filter((v) => v !== null && v !== undefined));
  const t = svg("text", { x: 4, y: 11, "font-size": 10 });
  box.append(t);
  if (!xs.length || !pts.length) { t.textContent = `${title}: no data yet`; return box; }
  const x0 = Math.min(...xs), x1 = Math.max(...xs), y0 = Math.min(0, ...pts), y1 = Math.max(...pts) || 1;
  t.textContent = `${title} (max ${fmt(y1)})`;
  const sx = (x) => 4 + (W - 8) * (x1 > x0 ? (x - x0) / (x1 - x0) : 0.5);
  const sy = (y) => H - 14 - (H - 26) * (y1 > y0 ? (y - y0) / (y1 - y0) : 0.5);
  for (const [name, ys, color] of series) {
    const p = xs.map((x, i) => (ys[i] === null || ys[i] === undefined ? null : `${sx(x).toFixed(1)},${sy(ys[i]).toFixed(1)}`)).filter(Boolean);
    const line = svg("polyline", { points: p.join(" "), fill: "none", stroke: color, "stroke-width": 1.5, class: "madopd-line" });
    const tt = svg("title");
    tt.textContent = visibleText(name);
    line.append(tt);
    box.append(line);
  }
  const a = svg("text", { x: 4, y: H - 2, "font-size": 9 });
  a.textContent = `step ${x0}`;
  const b = svg("text", { x: W - 4, y: H - 2, "font-size": 9, "text-anchor": "end" });
  b.textContent = String(x1);
  box.append(a, b);
  return box;
}

function render({ model, el }) {
  const root = h("div", { class: "madopd madopd-dashboard" });
  el.append(root);
  const btn = h("button", { class: "madopd-btn madopd-pause", onclick: () => {
    model.set("paused", !model.get("paused"));
    model.save_changes();
    sync();
  } });
  const status = h("span", { class: "madopd-small madopd-status" });
  const legendBox = h("div", {});
  const charts = h("div", { style: { display: "flex", flexWrap: "wrap", gap: "6px" } });
  const ribbon = h("div", {});
  root.append(h("div", { class: "madopd-controls" }, btn, status), legendBox, charts, ribbon);

  function sync() {
    const paused = model.get("paused");
    btn.textContent = paused ? "resume" : "pause";
    const P = model.get("payload");
    status.textContent = `${P.steps.length} steps` + (paused ? " · paused (the training thread waits)" : "");
  }
  function draw() {
    const P = model.get("payload");
    sync();
    legendBox.replaceChildren(teacherLegend(P.teacher_names));
    const qs = Object.entries(P.quantiles).map(([q, ys], i) => [`p${Math.round(Number(q) * 100)}`, ys, SEQUENTIAL[2 + 2 * i]]);
    charts.replaceChildren(
      lineChart("loss", P.steps, [["loss", P.loss, "#000000"]]),
      lineChart("divergence quantiles p10/p50/p90/p99", P.steps, qs),
      lineChart("teacher weights (batch mean)", P.steps, P.teacher_names.map((n, k) => [n, P.weights.map((w) => w[k]), P.colors[k]])),
      lineChart("effective number of teachers", P.steps, [["n_eff", P.n_eff, "#CC79A7"]]));
    ribbon.replaceChildren();
    const pr = P.probe;
    if (pr.rows.length) {
      const vm = quantile(pr.rows.flat(), 0.99);
      const grid = h("div", { class: "madopd-ribbon", style: { display: "grid", gridTemplateColumns: `50px repeat(${pr.tokens.length}, 16px)`, gap: "1px" } });
      grid.append(h("div", {}), ...pr.tokens.map((t) => tokenSpan(t, { style: { fontSize: "9px" } })));
      pr.rows.forEach((row, i) => {
        grid.append(h("div", { class: "madopd-small" }, String(pr.steps[i])));
        row.forEach((v, t) => grid.append(h("div", { class: "madopd-ribbon-cell", title: `step ${pr.steps[i]} t=${t} D=${fmt(v, 4)}`,
          style: { background: seqColor(v, vm), height: "10px" } })));
      });
      ribbon.append(h("div", { class: "madopd-small" }, `probe re-scored every ${P.every} steps (rows = steps, columns = tokens)`), legend("probe D", vm), grid);
    }
  }
  model.on("change:payload", draw);
  model.on("change:paused", sync);
  draw();
}

export default { render };
