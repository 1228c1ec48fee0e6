// Live training dashboard: line charts (loss, divergence quantiles, weights, n_eff) with axes,
// legends, hover readouts, smoothing and log toggles; progress and ETA; a step x token probe
// ribbon; redrawn whenever the kernel updates `payload`. The pause button asks the kernel to flip
// the `paused` trait (a custom message); the Python callback waits at the next step boundary and
// reports the step in `paused_at`.
import { quantile } from "./divmath.js";
import { h, fmt, seqColor, tokenSpan, legend, teacherLegend } from "./common.js";
import { lineChart } from "./chart.js";

export const LOSS_COLOR = "#0072B2";
export const NEFF_COLOR = "#CC79A7";
export const QUANTILE_COLORS = ["#7fcdbb", "#41b6c4", "#1d91c0", "#D55E00"];  // readable on dark too

// The bounds a chart's y axis always spans: weights live in [0, 1] and n_eff in [1, K], so
// 0.498..0.502 is drawn as the flat line it is, not as a swing across the whole plot.
export function naturalRange(kind, K) {
  return kind === "weights" ? [0, 1] : kind === "n_eff" ? [1, Math.max(1, K)] : [];
}

// Seconds left from the wall-clock times of the recorded steps (null until two are known).
export function eta(times, steps, total) {
  if (!total || times.length < 2 || !steps.length) return null;
  const n = Math.min(times.length, 20);
  const rate = (times[times.length - 1] - times[times.length - n]) / Math.max(1, steps[steps.length - 1] - steps[steps.length - n]);
  return Math.max(0, (total - steps[steps.length - 1]) * rate);
}

function clock(s) {
  if (s === null) return "–";
  s = Math.round(s);
  return s >= 60 ? `${Math.floor(s / 60)} min ${s % 60} s` : `${s} s`;
}

function render({ model, el }) {
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
  const smoothIn = h("input", { type: "range", min: 0, max: 0.99, step: 0.01, value: 0, class: "madopd-smooth" });
  const smoothOut = h("span", { class: "madopd-val" }, "0.00");
  smoothIn.addEventListener("input", () => { smooth = Number(smoothIn.value); smoothOut.textContent = smooth.toFixed(2); draw(); });
  const logIn = h("input", { type: "checkbox", class: "madopd-log" });
  logIn.addEventListener("change", () => { logY = logIn.checked; draw(); });
  const banner = h("div", {});
  const legendBox = h("div", {});
  const charts = h("div", { class: "madopd-charts" });
  const ribbon = h("div", {});
  root.append(h("div", { class: "madopd-controls" }, btn, bar, status,
    h("label", { class: "madopd-slider", title: "exponential moving average, as TensorBoard's smoothing" }, "smoothing", smoothIn, smoothOut),
    h("label", {}, logIn, " log y")), banner, legendBox, charts, ribbon);

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
    const qs = Object.entries(P.quantiles).map(([q, ys], i) => ({ name: `p${Math.round(Number(q) * 100)}`, ys, color: QUANTILE_COLORS[i % 4] }));
    const opts = { smooth, log: logY };
    charts.replaceChildren(
      lineChart("loss", P.steps, [{ name: "loss", ys: P.loss, color: LOSS_COLOR }], opts),
      lineChart("per-token D(p_k‖q) quantiles", P.steps, qs, opts),
      lineChart("teacher weights (batch mean)", P.steps, P.teacher_names.map((n, k) => ({ name: n, ys: P.weights.map((w) => w[k]), color: P.colors[k] })),
        { smooth, include: naturalRange("weights", P.teacher_names.length) }),
      lineChart("effective number of teachers", P.steps, [{ name: "n_eff", ys: P.n_eff, color: NEFF_COLOR }],
        { smooth, include: naturalRange("n_eff", P.teacher_names.length) }));
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
      ribbon.append(h("div", { class: "madopd-small" }, `probe completion re-scored every ${P.every} steps (rows = steps, columns = tokens; mean D over teachers)`), legend("probe D", vm), grid);
    }
  }
  model.on("change:payload", draw);
  model.on("change:paused", sync);
  model.on("change:paused_at", sync);
  model.on("change:finished", sync);
  draw();
}

export default { render };
