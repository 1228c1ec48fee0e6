// Divergence lens: token strips coloured by per-token FKL / RKL / JSD(beta) for one teacher, a beta
// slider recomputed here from the cached top-k (see madopd/widgets/lens.py:lens_values), and a
// click-a-token panel with each candidate's contribution. Model text only via textContent.
import { buckets, contributions, divergences, quantile } from "./divmath.js";
import { h, fmt, seqColor, textColor, tokenSpan, legend, teacherColor, slider, minimap, remountOnPayload, tokenSegments } from "./common.js";
import { csvButton } from "./plots.js";

export const LENS_KINDS = ["fkl", "rkl", "jsd"];
const LABELS = { fkl: "forward KL(p‖q), top-k", rkl: "reverse KL(q‖p), top-k", jsd: "JSD(β), top-k", recorded: "training loss D (recorded)" };
const LOW_COVERAGE = 0.9; // below this mean top-k coverage the top-k strips are flagged "lower bound"

// True when the token ends a line (so code keeps its shape: the strip breaks after it).
export function endsLine(tok) { return typeof tok === "string" && tok.endsWith("\n"); }

// Same as lens.py:lens_values -> {fkl, rkl, jsd, coverage}: [K][T].
export function lensValues(P, beta) {
  const K = P.teacher_names.length;
  const out = {};
  for (const kind of [...LENS_KINDS, "coverage"]) out[kind] = Array.from({ length: K }, () => []);
  for (const c of P.cand) {
    for (let k = 0; k < K; k++) {
      const { p, q } = buckets(c.s, c.t[k]);
      const v = divergences(p, q, beta);
      for (const kind of LENS_KINDS) out[kind][k].push(v[kind]);
      out.coverage[k].push(1 - p[p.length - 1]);
    }
  }
  return out;
}

function render({ model, el }) {
  const P = model.get("payload");
  const T = P.tokens.length, K = P.teacher_names.length;
  let beta = model.get("beta") ?? P.beta;
  let teacher = Math.min(model.get("teacher") ?? 0, K - 1);
  let sel = model.get("selected_token") ?? -1;
  let start = 0;
  const win = Math.min(T, P.window || 160);
  let vals = P.has_topk ? lensValues(P, beta) : null;
  const root = h("div", { class: "madopd madopd-lens" });
  el.append(root);

  const flat = (rows) => rows.flat();
  function series(kind) {
    if (kind === "recorded") return P.recorded ? P.recorded.map((row) => row[teacher]) : null;
    return vals ? vals[kind][teacher] : null;
  }
  let shared = model.get("shared_scale") ?? true;
  function ownMax(kind) {
    if (kind === "recorded") return P.recorded ? quantile(flat(P.recorded), 0.99) : 0;
    return vals ? quantile(flat(vals[kind]), 0.99) : 0;
  }
  function vmaxOf(kind) { return shared ? Math.max(...kinds.map(ownMax)) : ownMax(kind); }
  function meanCoverage() {
    if (!vals) return null;
    const c = vals.coverage[teacher];
    return c.length ? c.reduce((a, b) => a + b, 0) / c.length : null;
  }
  const kinds = [...(P.has_topk ? LENS_KINDS : []), ...(P.recorded ? ["recorded"] : [])];

  const tabs = h("div", { class: "madopd-controls" }, P.teacher_names.map((name, k) =>
    h("button", { class: "madopd-btn madopd-teacher-tab", "data-teacher": k,
      style: { borderBottom: `3px solid ${teacherColor(k)}` },
      onclick: () => { teacher = k; model.set("teacher", k); model.save_changes(); draw(); } },
    `teacher ${k}: `, name, P.weights.length ? ` (w=${fmt(P.weights[k], 2)})` : "")));
  const betaCtl = slider("β", { min: 0.05, max: 0.95, step: 0.05, value: beta }, (v) => {
    beta = v;
    vals = P.has_topk ? lensValues(P, beta) : null;
    model.set("beta", v); model.save_changes();
    draw();
  });
  betaCtl.classList.add("madopd-beta");
  const sharedBox = h("input", { type: "checkbox", class: "madopd-shared" });
  sharedBox.checked = shared;
  sharedBox.addEventListener("change", () => { shared = sharedBox.checked; model.set("shared_scale", shared); model.save_changes(); draw(); });
  const badge = h("div", {});
  const strips = h("div", { class: "madopd-strips" });
  const legends = h("div", {});
  const detail = h("div", { class: "madopd-detail" }, "Click a token to see teacher vs student top-k.");
  const mapBox = h("div", {});
  let map = null;
  if (T > win) {
    const mapColors = () => { const s = series(kinds[0]); const vm = vmaxOf(kinds[0]); return s.map((v) => seqColor(v, vm)); };
    map = minimap(mapColors(), win, (s) => { start = s; draw(); });
    mapBox.append(h("div", { class: "madopd-small" }, `${T} tokens; window of ${win} (click the minimap)`), map.el);
  }
  root.append(
    h("div", { class: "madopd-small" }, `step ${P.step} · state `, String(P.state_id)),
    h("div", { class: "madopd-small madopd-prompt" }, "prompt: ", P.prompt),
    tabs, h("div", { class: "madopd-controls" }, betaCtl,
      h("label", { title: "one colour scale (0 → p99 over every strip) instead of one per strip" }, sharedBox, " shared colour scale"),
      csvButton("madopd-lens.csv", () => lensTable())),
    badge, legends, mapBox, strips,
    h("div", { class: "madopd-small madopd-caption" }, "What to look at: dark tokens are where the student and this teacher disagree most; click one to see both top candidates, and the token the student actually sampled."),
    detail);

  // every strip's value per (token, teacher) at the current β, as a table
  function lensTable() {
    const cols = P.teacher_names.flatMap((n, k) => kinds.map((kind) => [n, k, kind]));
    const rows = P.tokens.map((tok, t) => [t, tokenSegments(tok).map(([x]) => x).join(""), ...cols.map(([, k, kind]) =>
      (kind === "recorded" ? (P.recorded ? P.recorded[t][k] : null) : vals ? vals[kind][k][t] : null))]);
    return { header: ["t", "token", ...cols.map(([n, , kind]) => `${kind} ${n}`)], rows };
  }
  function draw() {
    strips.replaceChildren();
    legends.replaceChildren();
    for (const btn of tabs.querySelectorAll("button")) btn.style.fontWeight = Number(btn.dataset.teacher) === teacher ? "bold" : "normal";
    const cov = meanCoverage();
    badge.replaceChildren(...(cov !== null && P.has_topk ? [h("div", { class: "madopd-small madopd-coverage" },
      cov < LOW_COVERAGE ? h("span", { class: "madopd-badge-lb", title: "the top-k strips only see the candidates both sides know; the rest is one bucket, so they underestimate the dense divergence" }, "lower bound") : "",
      ` top-k covers ${fmt(100 * cov, 1)} % of ${P.teacher_names[teacher]}'s probability mass on average (per token: the "top-k coverage" strip)`)] : []));
    if (shared) legends.append(legend("D per token, every strip", vmaxOf(kinds[0])));
    const rows = [...kinds, ...(vals ? ["coverage"] : [])];
    for (const kind of rows) {
      const isCov = kind === "coverage";
      const s = isCov ? vals.coverage[teacher] : series(kind), vm = isCov ? 1 : vmaxOf(kind);
      const label = isCov ? "top-k coverage (teacher mass)" : kind === "jsd" ? `JSD(β=${fmt(beta, 2)}), top-k` : LABELS[kind];
      if (!shared && !isCov) legends.append(legend(label, vm));
      if (isCov) legends.append(legend("top-k coverage", 1, false, " (all the mass)"));
      const row = h("div", { class: "madopd-strip-toks" });
      for (let t = start; t < Math.min(T, start + win); t++) {
        const bg = seqColor(s[t], vm);
        const span = tokenSpan(P.tokens[t], { "data-t": t, "data-kind": kind, "data-value": s[t],
          title: `t=${t} ${label}=${fmt(s[t], 4)}` });
        span.style.background = bg;
        span.style.color = textColor(bg);
        if (t === sel) span.classList.add("madopd-sel");
        span.addEventListener("click", () => select(t));
        row.append(span);
        if (endsLine(P.tokens[t])) row.append(h("span", { class: "madopd-br", style: { flexBasis: "100%", height: 0 } }));
      }
      strips.append(h("div", { class: "madopd-strip", "data-kind": kind },
        h("div", { class: "madopd-strip-label" }, label), row));
    }
    if (map) map.update(start);
    drawDetail();
  }

  function select(t) {
    sel = t;
    model.set("selected_token", t);
    model.save_changes();
    draw();
  }

  function drawDetail() {
    if (sel < 0 || sel >= T) return;
    const c = P.cand[sel];
    detail.replaceChildren(h("div", {}, `token ${sel}: `, tokenSpan(P.tokens[sel]), ` (id ${P.token_ids[sel]}) vs teacher ${teacher}: `, P.teacher_names[teacher]));
    if (!P.has_topk) { detail.append(h("div", {}, "no top-k cached for this record")); return; }
    const { idx, p, q } = buckets(c.s, c.t[teacher]);
    const con = contributions(p, q, beta);
    const head = h("tr", {}, ["candidate", "q (student)", "p (teacher)", "FKL term", "RKL term", `JSD(β=${fmt(beta, 2)}) term`, "q−p = ∂FKL/∂z"].map((x) => h("th", {}, x)));
    const body = h("tbody", {});
    idx.forEach((i, j) => body.append(h("tr", { class: "madopd-cand" + (c.ids[i] === P.token_ids[sel] ? " madopd-sel" : "") },
      h("td", { class: "madopd-text" }, tokenSpan(c.text[i])), h("td", {}, fmt(q[j], 4)), h("td", {}, fmt(p[j], 4)),
      h("td", {}, fmt(con.fkl[j], 4)), h("td", {}, fmt(con.rkl[j], 4)), h("td", {}, fmt(con.jsd[j], 4)), h("td", {}, fmt(q[j] - p[j], 4)))));
    // The sampled token always gets a row: when one side's top-k lacks it, its mass is inside
    // (rest) for the totals, and the row says so instead of hiding the token.
    const si = c.ids.indexOf(P.token_ids[sel]);
    if (!idx.some((i) => c.ids[i] === P.token_ids[sel])) {
      const known = (lp) => (lp === null || lp === undefined ? "– (not in top-k)" : fmt(Math.exp(lp), 4));
      body.append(h("tr", { class: "madopd-sel madopd-sampled-rest", title: "the sampled token is outside one side's top-k: counted inside (rest)" },
        h("td", { class: "madopd-text" }, tokenSpan(P.tokens[sel]), " (sampled, in rest)"),
        h("td", {}, si < 0 ? "– (not in top-k)" : known(c.s[si])), h("td", {}, si < 0 ? "– (not in top-k)" : known(c.t[teacher][si])),
        h("td", {}, ""), h("td", {}, ""), h("td", {}, ""), h("td", {}, "")));
    }
    const r = p.length - 1;
    body.append(h("tr", { class: "madopd-rest" }, h("td", { class: "madopd-text" }, "(rest)"), h("td", {}, fmt(q[r], 4)), h("td", {}, fmt(p[r], 4)),
      h("td", {}, fmt(con.fkl[r], 4)), h("td", {}, fmt(con.rkl[r], 4)), h("td", {}, fmt(con.jsd[r], 4)), h("td", {}, "")));
    const tot = divergences(p, q, beta);
    body.append(h("tr", { class: "madopd-total" }, h("td", { class: "madopd-text" }, "total"), h("td", {}, ""), h("td", {}, ""),
      h("td", { class: "madopd-total-fkl" }, fmt(tot.fkl, 4)), h("td", { class: "madopd-total-rkl" }, fmt(tot.rkl, 4)),
      h("td", { class: "madopd-total-jsd" }, fmt(tot.jsd, 4)), h("td", {}, "")));
    const only = c.ids.length - idx.length;
    detail.append(h("table", { class: "madopd-table" }, h("thead", {}, head), body),
      h("div", { class: "madopd-small" }, `${only} candidate(s) known on one side only are merged into (rest). `,
        P.recorded ? `Recorded training divergence: ${fmt(P.recorded[sel][teacher], 4)}` : ""));
  }

  model.on("change:beta", () => {
    const v = model.get("beta");
    if (v !== beta) { beta = v; betaCtl.setValue(v); vals = P.has_topk ? lensValues(P, beta) : null; draw(); }
  });
  draw();
}

export default { render: remountOnPayload(render) };
