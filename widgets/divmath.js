// Divergence math for the widgets (JS twin of madopd/widgets/divmath.py; same formulas, float64).
// p = teacher, q = student. FKL = KL(p||q), RKL = KL(q||p),
// JSD_b = b KL(p||m) + (1-b) KL(q||m), m = b p + (1-b) q, NJSD_b = JSD_b / (b (1-b)).
// Pure functions only (no DOM), so `node --test` can check them against Python references.

export const TINY = 1e-30;
export const KINDS = ["fkl", "rkl", "jsd", "njsd"];

export function logSoftmax(z, temperature = 1.0) {
  const u = z.map((x) => x / temperature);
  const m = Math.max(...u);
  let s = 0;
  for (const x of u) s += Math.exp(x - m);
  const lse = m + Math.log(s);
  return u.map((x) => x - lse);
}

export function softmax(z, temperature = 1.0) {
  return logSoftmax(z, temperature).map(Math.exp);
}

export function xlogRatio(x, y) {
  if (x <= 0) return 0;
  return x * (Math.log(x) - Math.log(Math.max(y, TINY)));
}

// Per-outcome terms; their sums are the divergences.
export function contributions(p, q, beta) {
  const out = { fkl: [], rkl: [], jsd: [], njsd: [] };
  for (let i = 0; i < p.length; i++) {
    const pi = p[i], qi = q[i];
    const f = xlogRatio(pi, qi), r = xlogRatio(qi, pi);
    out.fkl.push(f);
    out.rkl.push(r);
    if (beta > 0 && beta < 1) {
      const mi = beta * pi + (1 - beta) * qi;
      const j = beta * xlogRatio(pi, mi) + (1 - beta) * xlogRatio(qi, mi);
      out.jsd.push(j);
      out.njsd.push(j / (beta * (1 - beta)));
    } else {
      out.jsd.push(0);
      out.njsd.push(beta === 0 ? f : r);
    }
  }
  return out;
}

// Sum left to right, like Python's sum(), so both sides round identically.
export function sum(xs) {
  let s = 0;
  for (const x of xs) s += x;
  return s;
}

export function divergences(p, q, beta) {
  const c = contributions(p, q, beta);
  const out = {};
  for (const k of KINDS) out[k] = sum(c[k]);
  return out;
}

// Values and analytic gradients dD/d(student logits) at one position (see divmath.py:dense).
export function dense(teacherLogits, studentLogits, temperature = 1.0, beta = 0.5) {
  const p = softmax(teacherLogits, temperature);
  const q = softmax(studentLogits, temperature);
  const values = divergences(p, q, beta);
  const invT = 1 / temperature;
  const gF = q.map((qi, i) => (qi - p[i]) * invT);
  const gR = q.map((qi, i) =>
    qi * (Math.log(qi) - Math.log(Math.max(p[i], TINY)) - values.rkl) * invT);
  let gJ, gN;
  if (beta > 0 && beta < 1) {
    const m = q.map((qi, i) => beta * p[i] + (1 - beta) * qi);
    const klQM = sum(q.map((qi, i) => xlogRatio(qi, m[i])));
    gJ = q.map((qi, i) => (1 - beta) * qi * (Math.log(qi) - Math.log(m[i]) - klQM) * invT);
    gN = gJ.map((g) => g / (beta * (1 - beta)));
  } else {
    gJ = q.map(() => 0);
    gN = beta === 0 ? gF : gR;
  }
  const grads = { fkl: gF, rkl: gR, jsd: gJ, njsd: gN };
  const gradInf = {};
  for (const k of KINDS) gradInf[k] = Math.max(...grads[k].map(Math.abs));
  return { p, q, values, grads, gradInf };
}

// Coarse-grain two partial (top-k) distributions: candidates known on both sides + one rest bucket.
export function buckets(studentLp, teacherLp) {
  const idx = [], p = [], q = [];
  for (let i = 0; i < studentLp.length; i++) {
    if (studentLp[i] !== null && teacherLp[i] !== null) {
      idx.push(i);
      p.push(Math.exp(teacherLp[i]));
      q.push(Math.exp(studentLp[i]));
    }
  }
  p.push(Math.max(0, 1 - sum(p)));
  q.push(Math.max(0, 1 - sum(q)));
  return { idx, p, q };
}

// Confidence weights (paper Eqs. 6-7): softmax(c / 100 / tau) over teachers, with the
// missing-tag policy of madopd.weighting: "uniform" -> uniform weights when any tag is missing,
// "drop_teacher" -> missing teachers get 0 (uniform if all missing), "skip_sample" -> null.
export function confidenceWeights(conf, tau, policy = "uniform") {
  const K = conf.length;
  const missing = conf.map((c) => c === null || c === undefined);
  if (missing.some((x) => x)) {
    if (policy === "uniform" || (policy === "drop_teacher" && missing.every((x) => x)))
      return conf.map(() => 1 / K);
    if (policy === "skip_sample") return null;
  }
  const z = conf.map((c, i) => (missing[i] ? -Infinity : c / 100 / tau));
  const m = Math.max(...z);
  const e = z.map((x) => (x === -Infinity ? 0 : Math.exp(x - m)));
  const s = sum(e);
  return e.map((x) => x / s);
}

export function effectiveTeachers(w) {
  return 1 / sum(w.map((x) => x * x));
}

// numpy's default ("linear") quantile over finite values; 0 when there are none.
export function quantile(values, q) {
  const xs = values.filter((v) => v !== null && Number.isFinite(v)).sort((a, b) => a - b);
  if (xs.length === 0) return 0;
  const pos = (xs.length - 1) * q;
  const lo = Math.floor(pos);
  const hi = Math.min(lo + 1, xs.length - 1);
  return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo);
}
