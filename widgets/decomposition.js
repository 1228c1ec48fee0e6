// Per-token loss decomposition by teacher: stacked bars c_k(t) = w_k(t) D_k(t) in teacher colours,
// a toggle for the equal-weights counterfactual, and the signed difference on a diverging scale.
import { quantile } from "./divmath.js";
import { h, fmt, divColor, textColor, tokenSpan, tokenSegments, legend, teacherLegend, remountOnPayload } from "./common.js";
import { niceTicks } from "./chart.js";

const SVGNS = "http://www.w3.org/2000/svg";
function svg(tag, attrs = {}) {
  const el = document.createElementNS(SVGNS, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, String(v));
  return el;
}

// Bars for either the actual weights or uniform 1/K weights: [T][K].
export function stacks(P, equal) {
  const K = P.teacher_names.length;
  return P.div.map((row, t) => row.map((d, k) => (equal ? d / K : P.contrib[t][k])));
}

function render({ model, el }) {
  const P = model.get("payload");
  const T = P.tokens.length, K = P.teacher_names.length, H = 110, AX = 44, PAD = 16;
  // one column per token, wide enough for its label (≈ 7 px per character, 18-84 px)
  const label = (tok) => tokenSegments(tok).map(([t]) => t).join("");
  const widths = P.tokens.map((tok) => Math.max(18, Math.min(84, 7 * [...label(tok)].length + 6)));
  const xs = widths.reduce((acc, w, i) => { acc.push(i ? acc[i - 1] + widths[i - 1] : AX); return acc; }, []);
  const plotW = AX + widths.reduce((a, b) => a + b, 0);
  let equal = false, sel = -1;
  const root = h("div", { class: "madopd madopd-decomposition" });
  el.append(root);
  const chart = svg("svg", { width: plotW, height: H + PAD, class: "madopd-chart" });
  const strip = h("div", { class: "madopd-strip-toks", style: { flexWrap: "nowrap", marginLeft: `${AX}px` } });
  const info = h("div", { class: "madopd-detail" }, "Click a bar for its per-teacher numbers.");
  const toggle = h("input", { type: "checkbox", class: "madopd-equal" });
  toggle.addEventListener("change", () => { equal = toggle.checked; draw(); });
  const sumBox = h("span", { class: "madopd-small" });
  const vabs = P.diff_scale ?? quantile(P.diff.map(Math.abs), 0.99);
  root.append(h("div", { class: "madopd-small" }, `step ${P.step} · state `, String(P.state_id)),
    teacherLegend(P.teacher_names),
    h("div", { class: "madopd-controls" }, h("label", {}, toggle, " what if equal weights (1/K)"), sumBox),
    h("div", { style: { overflowX: "auto" } }, chart, strip),
    legend("actual − equal", vabs, true), info);
  const top = Math.max(1e-12, ...P.total, ...P.equal);

  function draw() {
    chart.replaceChildren();
    for (const v of niceTicks(0, top, 4)) {  // y axis: loss per token
      if (v > top * 1.0001) continue;
      const y = PAD + H - (H * v) / top;
      chart.append(svg("line", { x1: AX - 4, x2: plotW, y1: y, y2: y, class: "madopd-grid-line" }));
      const t = svg("text", { x: AX - 6, y: y + 3, "text-anchor": "end", class: "madopd-axis-text madopd-ytick" });
      t.textContent = fmt(v, 3);
      chart.append(t);
    }
    chart.append(svg("line", { x1: AX, x2: AX, y1: PAD, y2: PAD + H, class: "madopd-axis-line" }));
    const yl = svg("text", { x: 2, y: 10, class: "madopd-axis-text" });
    yl.textContent = "loss share w_k·D_k per token";
    chart.append(yl);
    stacks(P, equal).forEach((row, t) => {
      let y = PAD + H;
      row.forEach((c, k) => {
        const hh = (H * c) / top;
        y -= hh;
        const r = svg("rect", { x: xs[t] + 1, y, width: widths[t] - 2, height: hh, fill: P.colors[k],
          class: "madopd-seg", "data-t": t, "data-teacher": k });
        r.addEventListener("click", () => { sel = t; drawInfo(); });
        chart.append(r);
      });
    });
    strip.replaceChildren(...P.tokens.map((tok, t) => {
      const bg = divColor(P.diff[t], vabs);
      const s = tokenSpan(tok, { "data-t": t, title: `t=${t} actual−equal=${fmt(P.diff[t], 4)}` });
      Object.assign(s.style, { background: bg, color: textColor(bg), width: `${widths[t] - 1}px`, boxSizing: "border-box", margin: "0 1px 0 0", overflow: "hidden", textAlign: "center" });
      s.addEventListener("click", () => { sel = t; drawInfo(); });
      return s;
    }));
    const a = P.total.reduce((x, y) => x + y, 0), e = P.equal.reduce((x, y) => x + y, 0);
    sumBox.textContent = `Σ loss: actual ${fmt(a)} · equal weights ${fmt(e)} · showing ${equal ? "equal" : "actual"}`;
    drawInfo();
  }
  function drawInfo() {
    if (sel < 0) return;
    info.replaceChildren(h("div", {}, `token ${sel}: `, tokenSpan(P.tokens[sel])),
      h("table", { class: "madopd-table" },
        h("tr", {}, ["teacher", "w", "D", "w·D", "D/K"].map((x) => h("th", {}, x))),
        P.teacher_names.map((n, k) => h("tr", {}, h("td", { class: "madopd-text", style: { borderLeft: `4px solid ${P.colors[k]}` } }, n),
          h("td", {}, fmt(P.weights[sel][k])), h("td", {}, fmt(P.div[sel][k])), h("td", {}, fmt(P.contrib[sel][k])),
          h("td", {}, fmt(P.div[sel][k] / K))))));
  }
  draw();
}

export default { render: remountOnPayload(render) };
