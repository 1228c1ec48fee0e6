// Divergence playground: drag a teacher distribution, watch one student per divergence being fitted
// by Adam with analytic gradients (same arithmetic as madopd/widgets/playground.py:simulate).
import { dense, softmax } from "./divmath.js";
import { h, fmt, slider, divColor, visibleText } from "./common.js";
import { plotText, baseLayout, axisStyle, plotConfig, plotBox } from "./plots.js";

export function studentLogits(P, theta) {
  if (P.family === "free") return theta.slice();
  const [mu, logSigma] = theta;
  const inv = 1 / (2 * Math.exp(2 * logSigma));
  return P.teacher_probs.map((_, i) => -(i - mu) * (i - mu) * inv);
}

export function paramGrad(P, theta, gz) {
  if (P.family === "free") return gz.slice();
  const [mu, logSigma] = theta;
  const sig2 = Math.exp(2 * logSigma);
  let gMu = 0, gLs = 0;
  gz.forEach((g, i) => { gMu += g * (i - mu) / sig2; });
  gz.forEach((g, i) => { gLs += g * (i - mu) * (i - mu) / sig2; });
  return [gMu, gLs];
}

export function project(P, theta) {
  if (P.family === "free") return theta;
  const n = P.teacher_probs.length;
  const lo = Math.log(P.sigma_range[0]), hi = Math.log(P.sigma_range[1]);
  return [Math.min(n - 1, Math.max(0, theta[0])), Math.min(hi, Math.max(lo, theta[1]))];
}

export function newSim(P) {
  return { theta: P.init.slice(), m: P.init.map(() => 0), v: P.init.map(() => 0), t: 0,
    values: [], gradInf: [], last: null };
}

// One Adam step for one divergence; records D and ||grad_z D||_inf before the update.
export function stepSim(P, kind, sim) {
  const tl = P.teacher_probs.map(Math.log);
  const r = dense(tl, studentLogits(P, sim.theta), P.temperature, P.beta);
  sim.values.push(r.values[kind]);
  sim.gradInf.push(r.gradInf[kind]);
  sim.last = r;
  const g = paramGrad(P, sim.theta, r.grads[kind]);
  const a = P.adam;
  sim.t += 1;
  for (let j = 0; j < sim.theta.length; j++) {
    sim.m[j] = a.b1 * sim.m[j] + (1 - a.b1) * g[j];
    sim.v[j] = a.b2 * sim.v[j] + (1 - a.b2) * g[j] * g[j];
    const mh = sim.m[j] / (1 - Math.pow(a.b1, sim.t));
    const vh = sim.v[j] / (1 - Math.pow(a.b2, sim.t));
    sim.theta[j] -= P.lr * mh / (Math.sqrt(vh) + a.eps);
  }
  sim.theta = project(P, sim.theta);
  return sim;
}

export function simulate(P, kind, steps) {
  const sim = newSim(P);
  for (let s = 0; s < steps; s++) stepSim(P, kind, sim);
  return { theta: sim.theta, q: softmax(studentLogits(P, sim.theta), P.temperature),
    values: sim.values, grad_inf: sim.gradInf };
}

const SVGNS = "http://www.w3.org/2000/svg";
function svg(tag, attrs = {}) {
  const el = document.createElementNS(SVGNS, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, String(v));
  return el;
}

const W = 300, H = 120, MAX_STEPS = 600, STEPS_PER_FRAME = 3;

// The students' curves on one chart and one scale: ‖∇_z D‖∞ (top) and D (bottom) per step.
export function curveTraces(P, sims) {
  return P.kinds.flatMap((kind) => {
    const sim = sims[kind], xs = sim.gradInf.map((_, s) => s + 1), label = plotText(P.kind_labels[kind]);
    const line = { color: P.kind_colors[kind], width: 1.8 };
    return [{ type: "scatter", mode: "lines", x: xs, y: sim.gradInf, name: label, legendgroup: kind, line, yaxis: "y",
      hovertemplate: `${label} ‖∇‖∞ %{y:.4g}<extra></extra>` },
    { type: "scatter", mode: "lines", x: xs, y: sim.values, name: label, legendgroup: kind, showlegend: false, line, yaxis: "y2",
      hovertemplate: `${label} D %{y:.4g}<extra></extra>` }];
  });
}

function render({ model, el, host }) {
  const P = structuredClone(model.get("payload"));
  P.beta = model.get("beta") ?? P.beta;
  P.temperature = model.get("temperature") ?? P.temperature;
  const synced = model.get("teacher_probs");
  if (synced && synced.length === P.teacher_probs.length) P.teacher_probs = synced.slice();
  let sims = {}, running = true, raf = null;
  const root = h("div", { class: "madopd madopd-playground" });
  el.append(root);

  const panels = {};
  function buildPanel(kind) {
    const bars = svg("svg", { width: W, height: H + 14, class: "madopd-pg-bars" });
    const grad = svg("svg", { width: W, height: 30, class: "madopd-pg-grad" });
    const value = h("span", { class: "madopd-pg-value", "data-kind": kind });
    const gnorm = h("span", { class: "madopd-pg-gnorm", "data-kind": kind });
    const title = h("div", { class: "madopd-pg-title", style: { color: P.kind_colors[kind] } },
      P.kind_labels[kind]);
    const panel = h("div", { class: "madopd-pg-panel", "data-kind": kind }, title, bars,
      h("div", { class: "madopd-small" }, "∂D/∂z (blue < 0 < red)"), grad,
      h("div", { class: "madopd-small" }, "D = ", value, "  ‖∇_z D‖∞ = ", gnorm));
    bars.addEventListener("pointerdown", (ev) => startDrag(ev, bars));
    panels[kind] = { panel, bars, grad, value, gnorm, title };
    return panel;
  }

  // Dragging a bar sets that outcome's probability; the others are rescaled to keep Σp = 1.
  function setFromPointer(ev, bars) {
    const rect = bars.getBoundingClientRect();
    const n = P.teacher_probs.length;
    const i = Math.floor(((ev.clientX - rect.left) / rect.width) * n);
    if (i < 0 || i >= n) return;
    const top = Math.max(...P.teacher_probs);
    const target = Math.min(0.97, Math.max(0.002, (1 - (ev.clientY - rect.top) / H) * top));
    const rest = 1 - P.teacher_probs[i];
    P.teacher_probs = P.teacher_probs.map((p, j) =>
      (j === i ? target : Math.max(1e-4, (p * (1 - target)) / rest)));
    const s = P.teacher_probs.reduce((a, b) => a + b, 0);
    P.teacher_probs = P.teacher_probs.map((p) => p / s);
    reset();
  }
  function startDrag(ev, bars) {
    ev.preventDefault();
    setFromPointer(ev, bars);
    const move = (e) => setFromPointer(e, bars);
    const up = () => {
      window.removeEventListener("pointermove", move);
      window.removeEventListener("pointerup", up);
      model.set("teacher_probs", P.teacher_probs.slice());
      model.save_changes();
    };
    window.addEventListener("pointermove", move);
    window.addEventListener("pointerup", up);
  }

  function drawPanel(kind) {
    const { bars, grad, value, gnorm } = panels[kind];
    const sim = sims[kind];
    const n = P.teacher_probs.length, bw = W / n;
    const q = softmax(studentLogits(P, sim.theta), P.temperature);
    const p = softmax(P.teacher_probs.map(Math.log), P.temperature);
    const top = Math.max(...p, ...q);
    bars.replaceChildren();
    for (let i = 0; i < n; i++) {
      bars.append(svg("rect", { x: i * bw + 1, y: H - (H * q[i]) / top, width: bw - 2,
        height: (H * q[i]) / top, fill: P.kind_colors[kind], "fill-opacity": 0.75, class: "madopd-pg-q" }));
      bars.append(svg("rect", { x: i * bw + 1, y: H - (H * p[i]) / top, width: bw - 2,
        height: (H * p[i]) / top, fill: "transparent", "stroke-width": 1.2,
        class: "madopd-pg-p", style: "cursor:ns-resize" }));
      const t = svg("text", { x: i * bw + bw / 2, y: H + 11, "font-size": 9, "text-anchor": "middle" });
      t.textContent = visibleText(P.labels[i]);
      bars.append(t);
    }
    const r = sim.last;
    grad.replaceChildren();
    if (r) {
      const g = r.grads[kind];
      const gmax = Math.max(1e-12, ...g.map(Math.abs));
      g.forEach((gi, i) => {
        const hh = (14 * Math.abs(gi)) / gmax;
        grad.append(svg("rect", { x: i * bw + 1, y: gi >= 0 ? 15 - hh : 15, width: bw - 2,
          height: Math.max(hh, 0.5), fill: divColor(gi, gmax) }));
      });
      value.textContent = fmt(r.values[kind], 4);
      gnorm.textContent = fmt(r.gradInf[kind], 4);
    }
  }

  let frames = 0;
  const curves = plotBox(host, model, "madopd-pg-curves", (Plotly, div) => {
    const lay = baseLayout(el, { height: 300, hovermode: "x unified", uirevision: "keep", legend: { orientation: "h", y: 1.14, x: 0 },
      margin: { l: 60, r: 16, t: 30, b: 40 } });
    lay.xaxis = axisStyle(el, { title: { text: "student update step" }, anchor: "y2", range: [0, MAX_STEPS] });
    lay.yaxis = axisStyle(el, { domain: [0.56, 1], title: { text: "‖∇_z D‖∞" }, rangemode: "tozero" });
    lay.yaxis2 = axisStyle(el, { domain: [0, 0.44], title: { text: "D(p‖q)" }, rangemode: "tozero" });
    Plotly.react(div, curveTraces(P, sims), lay, plotConfig(Plotly, "madopd-playground"));
  });
  function frame() {
    let busy = false;
    for (const kind of P.kinds) {
      const sim = sims[kind];
      for (let s = 0; s < STEPS_PER_FRAME && sim.t < MAX_STEPS; s++) { stepSim(P, kind, sim); busy = true; }
      drawPanel(kind);
    }
    status.textContent = `step ${sims[P.kinds[0]].t} / ${MAX_STEPS}`;
    if (!busy || ++frames % 8 === 0) curves.redraw();  // plotly at ~8 fps is plenty for a trace
    raf = running && busy ? requestAnimationFrame(frame) : null;
  }
  function reset() {
    for (const kind of P.kinds) sims[kind] = newSim(P);
    for (const kind of P.kinds) stepSim(P, kind, sims[kind]);
    if (raf === null) raf = requestAnimationFrame(frame);
  }

  const status = h("span", { class: "madopd-small madopd-pg-status" });
  const playBtn = h("button", { class: "madopd-btn", onclick: () => {
    running = !running;
    playBtn.textContent = running ? "pause" : "play";
    if (running && raf === null) raf = requestAnimationFrame(frame);
  } }, "pause");
  const betaSlider = slider("β", { min: 0.05, max: 0.95, step: 0.05, value: P.beta }, (v) => {
    P.beta = v; model.set("beta", v); model.save_changes(); reset();
  });
  const tSlider = slider("T", { min: 0.25, max: 4, step: 0.05, value: P.temperature }, (v) => {
    P.temperature = v; model.set("temperature", v); model.save_changes(); reset();
  });
  const lrSlider = slider("lr", { min: 0.005, max: 0.3, step: 0.005, value: P.lr }, (v) => { P.lr = v; reset(); });
  const resetBtn = h("button", { class: "madopd-btn", onclick: () => {
    P.teacher_probs = model.get("payload").teacher_probs.slice();
    model.set("teacher_probs", P.teacher_probs.slice()); model.save_changes(); reset();
  } }, "reset teacher");
  const restart = h("button", { class: "madopd-btn", onclick: reset }, "restart students");
  root.append(
    h("div", { class: "madopd-controls" }, betaSlider, tSlider, lrSlider, playBtn, restart, resetBtn, status),
    h("div", { class: "madopd-small" },
      `Outline = teacher p (drag a bar), filled = student q (${P.family} family). `,
      "Forward KL covers all modes; reverse KL seeks one; JSD(β) sits in between."),
    h("div", { class: "madopd-pg-panels" }, P.kinds.map(buildPanel)), curves.el,
    h("div", { class: "madopd-small madopd-caption" },
      "What to look at: all three students on one scale. Where the teacher puts almost no mass on an outcome the student still likes, the reverse-KL gradient grows without bound while the JSD gradient stays bounded; the lower chart shows which student ends closest to the teacher."));

  model.on("change:beta", () => { P.beta = model.get("beta"); betaSlider.setValue(P.beta); reset(); });
  model.on("change:temperature", () => {
    P.temperature = model.get("temperature"); tSlider.setValue(P.temperature); reset();
  });
  reset();
  return () => { if (raf !== null) cancelAnimationFrame(raf); running = false; };
}

export default { render };
