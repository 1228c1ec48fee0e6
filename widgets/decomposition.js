// Per-token loss decomposition by teacher on plotly: stacked bars c_k(t) = w_k(t) D_k(t) in teacher
// colours; a view switch between the actual weights, equal weights (1/K) and their difference per
// teacher (its own y scale, so near-equal weights still show which teacher gained or lost loss);
// the signed total difference under the tokens on a diverging scale; CSV of the numbers.
import { quantile } from "./divmath.js";
import { h, fmt, divColor, textColor, tokenSpan, tokenSegments, legend, teacherLegend, remountOnPayload } from "./common.js";
import { plotText, baseLayout, axisStyle, plotConfig, csvButton, plotBox } from "./plots.js";

export const VIEWS = { actual: "actual weights", equal: "what if equal weights (1/K)", diff: "difference: actual − equal, per teacher" };

// Bars [T][K] of a view: "actual" (w_k D_k), "equal" (D_k / K) or "diff" (w_k D_k − D_k / K).
// A boolean is read as the old toggle (true = equal).
export function stacks(P, view) {
  const mode = view === true ? "equal" : view === false || view === undefined ? "actual" : view;
  const K = P.teacher_names.length;
  return P.div.map((row, t) => row.map((d, k) => (mode === "equal" ? d / K : mode === "diff" ? P.contrib[t][k] - d / K : P.contrib[t][k])));
}

const tokenLabel = (tok) => tokenSegments(tok).map(([t]) => t).join("");

export function decompositionTraces(P, view) {
  const bars = stacks(P, view), xs = P.tokens.map((_, t) => t);
  const traces = P.teacher_names.map((n, k) => ({ type: "bar", name: plotText(n), x: xs, y: bars.map((r) => r[k]),
    marker: { color: P.colors[k] }, customdata: xs.map((t) => [P.weights[t][k], P.div[t][k]]),
    hovertemplate: `${plotText(n)}: %{y:.4g} (w %{customdata[0]:.3f}, D %{customdata[1]:.4g})<extra></extra>` }));
  if (view === "diff") {
    traces.push({ type: "scatter", mode: "markers", name: "net (all teachers)", x: xs, y: P.diff,
      marker: { color: "#444", symbol: "diamond", size: 7 }, hovertemplate: "net: %{y:.4g}<extra></extra>" });
  }
  return traces;
}

export function decompositionTable(P) {
  const K = P.teacher_names.length;
  const rows = P.tokens.flatMap((tok, t) => P.teacher_names.map((n, k) =>
    [t, tokenLabel(tok), n, P.weights[t][k], P.div[t][k], P.contrib[t][k], P.div[t][k] / K]));
  return { header: ["t", "token", "teacher", "w", "D", "w*D", "D/K"], rows };
}

function render({ model, el, host }) {
  const P = model.get("payload");
  const K = P.teacher_names.length;
  let view = "actual", sel = -1;
  const root = h("div", { class: "madopd madopd-decomposition" });
  el.append(root);
  const info = h("div", { class: "madopd-detail" }, "Click a bar for its per-teacher numbers.");
  const pick = h("select", { class: "madopd-view" }, Object.entries(VIEWS).map(([v, label]) => h("option", { value: v }, label)));
  pick.addEventListener("change", () => { view = pick.value; draw(); });
  const sumBox = h("span", { class: "madopd-small madopd-sum" });
  const caption = h("div", { class: "madopd-small madopd-caption" });
  const vabs = P.diff_scale ?? quantile(P.diff.map(Math.abs), 0.99);
  const plot = plotBox(host, model, "madopd-decomp-plot", (Plotly, div) => {
    const lay = baseLayout(el, { height: 300, barmode: view === "diff" ? "relative" : "stack", hovermode: "x unified",
      legend: { orientation: "h", y: 1.12, x: 0 }, margin: { l: 60, r: 16, t: 36, b: 70 } });
    lay.xaxis = axisStyle(el, { tickmode: "array", tickvals: P.tokens.map((_, t) => t), tickangle: -45,
      ticktext: P.tokens.map((tok) => plotText(tokenLabel(tok).slice(0, 12))), title: { text: "response token" } });
    lay.yaxis = axisStyle(el, { title: { text: view === "diff" ? "w_k·D_k − D_k/K" : view === "equal" ? "D_k/K per token" : "w_k·D_k per token" },
      rangemode: view === "diff" ? "normal" : "tozero", zeroline: true });
    Plotly.react(div, decompositionTraces(P, view), lay, plotConfig(Plotly, "madopd-decomposition"));
    if (!div.__madopdClick) {
      div.__madopdClick = true;
      div.on("plotly_click", (ev) => { if (ev.points && ev.points.length) { sel = ev.points[0].x; drawInfo(); } });
    }
  });
  const strip = h("div", { class: "madopd-strip-toks" });
  root.append(h("div", { class: "madopd-small" }, `step ${P.step} · state `, String(P.state_id)),
    teacherLegend(P.teacher_names),
    h("div", { class: "madopd-controls" }, h("label", {}, "show ", pick), sumBox,
      csvButton("madopd-decomposition.csv", () => decompositionTable(P))),
    plot.el, caption, h("div", { class: "madopd-small" }, "each token coloured by its total actual − equal:"), strip,
    legend("actual − equal", vabs, true), info);

  const CAPTIONS = {
    actual: "What to look at: tall bars are the tokens that carry the loss, and the colours say which teacher's disagreement they come from. The debate's confidence weights decide how tall each colour is.",
    equal: "What to look at: the same tokens if every teacher counted the same (1/K). Compare with the actual view: a colour that shrinks here is a teacher the debate trusted more than average.",
    diff: "What to look at: bars above zero are loss a teacher gained from its confidence weight, bars below zero loss it gave away; the diamond is the net change of the token. This view has its own scale, so even near-equal weights show who gained.",
  };
  function draw() {
    plot.redraw();
    caption.textContent = CAPTIONS[view];
    strip.replaceChildren(...P.tokens.map((tok, t) => {
      const bg = divColor(P.diff[t], vabs);
      const s = tokenSpan(tok, { "data-t": t, title: `t=${t} actual−equal=${fmt(P.diff[t], 4)}` });
      Object.assign(s.style, { background: bg, color: textColor(bg) });
      s.addEventListener("click", () => { sel = t; drawInfo(); });
      return s;
    }));
    const a = P.total.reduce((x, y) => x + y, 0), e = P.equal.reduce((x, y) => x + y, 0);
    sumBox.textContent = `Σ loss: actual ${fmt(a)} · equal weights ${fmt(e)} · difference ${fmt(a - e, 4)} · showing ${view}`;
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
