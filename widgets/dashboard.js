// Live training dashboard on plotly: loss, divergence quantiles, teacher weights and n_eff as four
// stacked charts on ONE step axis (zoom or pan one and all follow; one hover cursor reads every
// chart at that step), several runs overlaid (MAD-OPD vs MT-OPD, seeds: payload.runs), smoothing
// and log-y; progress and ETA; PNG / SVG / CSV downloads; a step x token probe ribbon. Redrawn
// whenever the kernel updates `payload`. The pause button asks the kernel to flip the `paused`
// trait (a custom message); the Python callback waits at the next step boundary and reports the
// step in `paused_at`.
import { quantile } from "./divmath.js";
import { h, fmt, seqColor, tokenSpan, legend, teacherLegend } from "./common.js";
import { ema, yRange, lineMode, plotText, baseLayout, axisStyle, plotConfig, csvButton, plotBox } from "./plots.js";

export const LOSS_COLOR = "#0072B2";
export const NEFF_COLOR = "#CC79A7";
export const QUANTILE_COLORS = ["#7fcdbb", "#41b6c4", "#1d91c0", "#D55E00"];  // readable on dark too
// one colour per run for single-series charts (loss, n_eff); the run's line style everywhere
export const RUN_COLORS = [LOSS_COLOR, "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9"];
export const RUN_DASHES = ["solid", "dash", "dot", "dashdot", "longdash", "longdashdot"];
export const PANELS = ["loss", "per-token D(p_k‖q) quantiles", "teacher weights (batch mean)",
  "effective number of teachers"];

// The bounds a chart's y axis always spans: weights live in [0, 1] and n_eff in [1, K], so
// 0.498..0.502 is drawn as the flat line it is, not as a swing across the whole plot.
export function naturalRange(kind, K) {
  return kind === "weights" ? [0, 1] : kind === "n_eff" ? [1, Math.max(1, K)] : [];
}

// Seconds left from the step clock of the recorded steps (null until two are known). The kernel
// records each step's clock minus the time spent paused, so a pause does not slow the rate.
export function eta(times, steps, total) {
  if (!total || times.length < 2 || !steps.length) return null;
  const n = Math.min(times.length, 20);
  const rate = (times[times.length - 1] - times[times.length - n]) / Math.max(1, steps[steps.length - 1] - steps[steps.length - n]);
  return Math.max(0, (total - steps[steps.length - 1]) * rate);
}

// Every run shown: this run first (payload.name), then payload.runs (overlays), each with the
// same series fields as the payload.
export function allRuns(P) {
  return [{ ...P, name: P.name || "this run" }, ...(P.runs || [])];
}

// The plotly traces of the four panels (pure: unit-tested under node). Panel i draws on y axis
// i+1 and legend i+1; every trace shares the x axis "x" (the shared cursor and zoom).
export function dashboardTraces(P, { smooth = 0 } = {}) {
  const runs = allRuns(P), many = runs.length > 1, out = [];
  const axis = (i) => ({ xaxis: "x", yaxis: i ? `y${i + 1}` : "y", legend: i ? `legend${i + 1}` : "legend" });
  const add = (i, r, ri, name, ys, color) => {
    const label = plotText(many ? `${r.name} · ${name}` : name);
    const line = { color, width: 1.8, dash: RUN_DASHES[ri % RUN_DASHES.length] };
    if (smooth > 0) {
      out.push({ type: "scatter", mode: "lines", x: r.steps, y: ys, line: { ...line, width: 1 }, opacity: 0.25,
        hoverinfo: "skip", showlegend: false, ...axis(i) });
    }
    out.push({ type: "scatter", mode: lineMode(r.steps.length), x: r.steps, y: ema(ys, smooth), name: label,
      line, marker: { color, size: 5 }, hovertemplate: "%{y:.4g}", ...axis(i) });
  };
  runs.forEach((r, ri) => {
    add(0, r, ri, "loss", r.loss, many ? RUN_COLORS[ri % RUN_COLORS.length] : LOSS_COLOR);
    Object.entries(r.quantiles).forEach(([q, ys], qi) => add(1, r, ri, `p${Math.round(Number(q) * 100)}`, ys, QUANTILE_COLORS[qi % 4]));
    r.teacher_names.forEach((n, k) => add(2, r, ri, n, r.weights.map((w) => w[k]), (r.colors || P.colors)[k]));
    add(3, r, ri, "n_eff", r.n_eff, many ? RUN_COLORS[ri % RUN_COLORS.length] : NEFF_COLOR);
  });
  return out;
}

// Four stacked panels on one x axis; weights and n_eff always span their natural bounds.
export function dashboardLayout(P, traces, el, { logY = false, height = 720 } = {}) {
  const gap = 0.06, hgt = (1 - 3 * gap) / 4;
  const K = Math.max(1, ...allRuns(P).map((r) => r.teacher_names.length));
  const lay = baseLayout(el, { height, hovermode: "x unified", hoversubplots: "axis", uirevision: "keep", showlegend: true,
    margin: { l: 56, r: 170, t: 24, b: 40 }, annotations: [] });
  lay.xaxis = axisStyle(el, { title: { text: "step" }, anchor: "y4", showspikes: true, spikemode: "across",
    spikesnap: "cursor", spikethickness: 1, spikedash: "dot", rangemode: "normal" });
  for (let i = 0; i < 4; i++) {
    const top = 1 - i * (hgt + gap), dom = [top - hgt, top];
    const ys = traces.filter((t) => t.yaxis === (i ? `y${i + 1}` : "y") && t.showlegend !== false).flatMap((t) => t.y);
    const natural = naturalRange(i === 2 ? "weights" : i === 3 ? "n_eff" : "", K);
    const log = logY && i < 2;
    const range = natural.length ? yRange(ys, natural) : null;
    lay[i ? `yaxis${i + 1}` : "yaxis"] = axisStyle(el, { domain: dom, type: log ? "log" : "linear",
      ...(range ? { range, autorange: false } : { autorange: true }) });
    lay[i ? `legend${i + 1}` : "legend"] = { x: 1.01, xanchor: "left", y: top, yanchor: "top", font: { size: 10 },
      bgcolor: "rgba(0,0,0,0)" };
    lay.annotations.push({ text: `<b>${plotText(PANELS[i])}</b>`, xref: "paper", yref: "paper", x: 0, y: top,
      xanchor: "left", yanchor: "bottom", showarrow: false, font: { size: 11 } });
  }
  if (!allRuns(P).some((r) => r.steps.length)) {
    lay.annotations.push({ text: "waiting for the first step", xref: "paper", yref: "paper", x: 0.5, y: 0.5,
      showarrow: false, font: { size: 13 } });
  }
  return lay;
}

// One CSV row per (run, step): the numbers behind every chart.
export function dashboardTable(P) {
  const runs = allRuns(P);
  const qs = Object.keys(P.quantiles).map((q) => `p${Math.round(Number(q) * 100)}`);
  const names = [...new Set(runs.flatMap((r) => r.teacher_names))];
  const rows = runs.flatMap((r) => r.steps.map((s, i) => [r.name, s, r.loss[i],
    ...Object.values(r.quantiles).map((ys) => ys[i]),
    ...names.map((n) => { const k = r.teacher_names.indexOf(n); return k < 0 ? null : r.weights[i][k]; }),
    r.n_eff[i]]));
  return { header: ["run", "step", "loss", ...qs, ...names.map((n) => `weight ${n}`), "n_eff"], rows };
}

function clock(s) {
  if (s === null) return "–";
  s = Math.round(s);
  return s >= 60 ? `${Math.floor(s / 60)} min ${s % 60} s` : `${s} s`;
}

function render({ model, el, host }) {
  const root = h("div", { class: "madopd madopd-dashboard" });
  el.append(root);
  let smooth = 0, logY = false;
  // Pause/resume travel as a custom comm message, not as a trait sync: ipywidgets sends a
  // model's next sync only after the kernel reports "idle" for the previous one, and ipykernel
  // (>= 7) handles comm messages during an awaiting cell (`await dash.wait()`) without any
  // status message, so a synced "resume" after a synced "pause" would wait forever. The kernel
  // sets `paused` and syncs it back.
  const btn = h("button", { class: "madopd-btn madopd-pause", onclick: () => {
    const now = !model.get("paused");
    model.set("paused", now);  // shown at once; the kernel's echo confirms it
    model.send({ event: "pause", paused: now });
    sync();
  } });
  const status = h("span", { class: "madopd-small madopd-status" });
  const bar = h("progress", { class: "madopd-progress", max: 1, value: 0 });
  const smoothIn = h("input", { type: "range", min: 0, max: 0.99, step: 0.01, value: 0, class: "madopd-smooth",
    "data-lm-suppress-shortcuts": "true" });
  const smoothOut = h("span", { class: "madopd-val" }, "0.00");
  smoothIn.addEventListener("input", () => { smooth = Number(smoothIn.value); smoothOut.textContent = smooth.toFixed(2); plot.redraw(); });
  const logIn = h("input", { type: "checkbox", class: "madopd-log" });
  logIn.addEventListener("change", () => { logY = logIn.checked; plot.redraw(); });
  const banner = h("div", {});
  const legendBox = h("div", {});
  const runsBox = h("div", { class: "madopd-small madopd-runs" });
  const ribbon = h("div", {});
  const plot = plotBox(host, model, "madopd-dash-plot", (Plotly, div) => {
    const P = model.get("payload");
    const traces = dashboardTraces(P, { smooth });
    Plotly.react(div, traces, dashboardLayout(P, traces, el, { logY }), plotConfig(Plotly, "madopd-dashboard"));
  });
  root.append(h("div", { class: "madopd-controls" }, btn, bar, status,
    h("label", { class: "madopd-slider", title: "exponential moving average, as TensorBoard's smoothing" }, "smoothing", smoothIn, smoothOut),
    h("label", {}, logIn, " log y (loss, quantiles)"),
    csvButton("madopd-dashboard.csv", () => dashboardTable(model.get("payload")))), banner, legendBox, runsBox, plot.el,
  h("div", { class: "madopd-small madopd-caption" },
    "What to look at: the loss and the divergence quantiles should fall together; the weights show which teacher the debate trusts, and n_eff how many teachers still count (1 = one teacher decides, K = all equal). Drag to zoom, double-click to reset; the cursor reads every chart at one step."),
  ribbon);

  function sync() {
    const P = model.get("payload");
    const paused = model.get("paused"), at = model.get("paused_at") ?? -1;
    const finished = model.get("finished") ?? false;  // training ended: nothing left to pause
    btn.textContent = finished ? "finished" : paused ? "resume" : "pause";
    btn.disabled = finished;
    const done = P.steps.length ? P.steps[P.steps.length - 1] : 0, total = P.total_steps;
    bar.value = total ? done / total : 0;
    bar.style.display = total ? "" : "none";
    let s = total ? `step ${done} / ${total}` + (finished ? "" : ` · ETA ${clock(eta(P.times || [], P.steps, total))}`) : `${P.steps.length} steps`;
    if (paused) s += at >= 0 ? ` · paused after step ${at} (the training thread waits)` : " · pausing at the next step boundary…";
    status.textContent = s;
  }
  function draw() {
    const P = model.get("payload");
    sync();
    banner.replaceChildren(...(P.banner ? [h("div", { class: "madopd-banner", role: "alert" }, "⚠ " + P.banner)] : []));
    legendBox.replaceChildren(h("span", { class: "madopd-small" }, "teachers: "), teacherLegend(P.teacher_names));
    const runs = allRuns(P);
    runsBox.replaceChildren(...(runs.length > 1 ? ["runs: ", ...runs.map((r, i) =>
      h("span", { class: "madopd-chip madopd-run", "data-run": r.name }, `${r.name} (${RUN_DASHES[i % RUN_DASHES.length]} line, ${r.steps.length} steps)`))] : []));
    plot.redraw();
    ribbon.replaceChildren();
    const pr = P.probe;
    if (pr.rows.length) {
      const vm = quantile(pr.rows.flat(), 0.99);
      const grid = h("div", { class: "madopd-ribbon", style: { display: "grid", gridTemplateColumns: `50px repeat(${pr.tokens.length}, minmax(16px, max-content))`, gap: "1px" } });
      grid.append(h("div", { class: "madopd-small" }, "step"), ...pr.tokens.map((t) => tokenSpan(t, { style: { fontSize: "9px" } })));
      pr.rows.forEach((row, i) => {
        grid.append(h("div", { class: "madopd-small" }, String(pr.steps[i])));
        row.forEach((v, t) => grid.append(h("div", { class: "madopd-ribbon-cell", title: `step ${pr.steps[i]} t=${t} D=${fmt(v, 4)}`,
          style: { background: seqColor(v, vm), height: "10px" } })));
      });
      ribbon.append(h("div", { class: "madopd-small" }, `probe completion re-scored every ${P.every} steps (rows = steps, columns = tokens; mean D over teachers)`), legend("probe D", vm), grid,
        h("div", { class: "madopd-small madopd-caption" }, "What to look at: rows get lighter downwards where the student learns those tokens; a column that stays dark is a token the teachers still disagree with."));
    }
  }
  model.on("change:payload", draw);
  model.on("change:paused", sync);
  model.on("change:paused_at", sync);
  model.on("change:finished", sync);
  draw();
}

export default { render };
