// Debate board: teachers x rounds grid with confidence badges, weights under a tau slider
// (softmax(c/100/tau), recomputed here), round-to-round word diffs, an "only disagreements" filter,
// and the student's tokens coloured by each teacher's divergence. Model text only via textContent.
import { confidenceWeights, effectiveTeachers, quantile } from "./divmath.js";
import { h, fmt, seqColor, textColor, tokenSpan, legend, teacherColor, slider } from "./common.js";
import { csvButton } from "./plots.js";

export function normAnswer(a) {
  return a.trim().toLowerCase().replace(/\s+/g, " ");
}

// Word-level LCS diff: [[op, text]] with op in "=", "-", "+".
export function wordDiff(oldText, newText) {
  const a = oldText.split(/\s+/).filter(Boolean), b = newText.split(/\s+/).filter(Boolean);
  const n = a.length, m = b.length;
  const L = Array.from({ length: n + 1 }, () => new Array(m + 1).fill(0));
  for (let i = n - 1; i >= 0; i--) for (let j = m - 1; j >= 0; j--)
    L[i][j] = a[i] === b[j] ? L[i + 1][j + 1] + 1 : Math.max(L[i + 1][j], L[i][j + 1]);
  const out = [];
  let i = 0, j = 0;
  while (i < n && j < m) {
    if (a[i] === b[j]) { out.push(["=", a[i]]); i++; j++; }
    else if (L[i + 1][j] >= L[i][j + 1]) out.push(["-", a[i++]]);
    else out.push(["+", b[j++]]);
  }
  while (i < n) out.push(["-", a[i++]]);
  while (j < m) out.push(["+", b[j++]]);
  return out;
}

export function boardView(P, { tau, onlyDisagreements }) {
  const rounds = [];
  for (let r = 0; r < P.rounds; r++) if (!onlyDisagreements || !P.agree[r]) rounds.push(r);
  return { rounds, weights: P.rounds > 0 ? confidenceWeights(P.final_confidences, tau, P.policy) : null };
}

// A fallback confidence (computed by the run, not written by the teacher) gets a dashed outline and
// names its source, so it never looks like a written tag.
function badge(conf, k, sourceLabel) {
  if (conf === null || conf === undefined) return h("span", { class: "madopd-badge madopd-missing" }, "confidence missing");
  const bg = teacherColor(k);
  const fallback = sourceLabel && sourceLabel !== "written";
  return h("span", { class: "madopd-badge" + (fallback ? " madopd-fallback" : ""), "data-source": sourceLabel ?? "",
    title: sourceLabel === "written" ? "the teacher wrote this <<CONFIDENCE=N>> tag" : sourceLabel ?? "",
    style: { background: bg, color: textColor(bg) } }, `conf ${fmt(conf, 0)}`, sourceLabel ? ` (${sourceLabel})` : "");
}

// Browsing a run's debates: the index a search lands on (first id containing the text, case-insensitive).
export function searchIndex(ids, text, from = 0) {
  const needle = text.trim().toLowerCase();
  if (!needle) return -1;
  for (let j = 0; j < ids.length; j++) {
    const i = (from + j) % ids.length;
    if (String(ids[i]).toLowerCase().includes(needle)) return i;
  }
  return -1;
}

// One CSV row per (teacher, round): answer, confidence and where it came from, the text.
export function debateTable(P) {
  const rows = (P.teacher_names || []).flatMap((n, k) => P.cells[k].map((c, r) =>
    [P.state_id, n, r + 1, c.answer, c.confidence, c.source_label, c.changed, c.text]));
  return { header: ["state", "teacher", "round", "answer", "confidence", "confidence source", "changed", "text"], rows };
}

function render({ model, el }) {
  let P = model.get("payload");
  let tau = model.get("tau") ?? P.tau;
  let only = model.get("only_disagreements") ?? false;
  const root = h("div", { class: "madopd madopd-debate" });
  el.append(root);
  const grid = h("div", { class: "madopd-grid" });
  const wbox = h("div", { class: "madopd-weights" });
  const studentBox = h("div", {});
  const tauCtl = slider("τ", { min: 0.05, max: 3, step: 0.05, value: tau }, (v) => {
    tau = v; model.set("tau", v); model.save_changes(); draw();
  });
  tauCtl.classList.add("madopd-tau");
  const onlyBox = h("input", { type: "checkbox", class: "madopd-only" });
  onlyBox.checked = only;
  onlyBox.addEventListener("change", () => { only = onlyBox.checked; model.set("only_disagreements", only); model.save_changes(); draw(); });
  const header = h("div", { class: "madopd-small" });
  const context = h("div", { class: "madopd-context" });
  const banner = h("div", {});
  const nav = h("div", { class: "madopd-controls madopd-browse" });
  const go = (i) => { model.set("index", i); model.save_changes(); };
  const prevBtn = h("button", { class: "madopd-btn madopd-prev", onclick: () => go(Math.max(0, (model.get("index") ?? 0) - 1)) }, "◀ prev");
  const nextBtn = h("button", { class: "madopd-btn madopd-next", onclick: () => go(Math.min(((P.browse || {}).count ?? 1) - 1, (model.get("index") ?? 0) + 1)) }, "next ▶");
  const pos = h("span", { class: "madopd-small madopd-browse-pos" });
  const find = h("input", { type: "search", class: "madopd-filter madopd-browse-search", placeholder: "find a state id (Enter: next match)" });
  find.addEventListener("keydown", (ev) => {
    if (ev.key !== "Enter") return;
    const i = searchIndex((P.browse || {}).ids || [], find.value, (model.get("index") ?? 0) + 1);
    find.classList.toggle("madopd-nomatch", i < 0);
    if (i >= 0) go(i);
  });
  nav.append(prevBtn, nextBtn, pos, find);
  root.append(nav, header, context, banner, h("div", { class: "madopd-controls" }, tauCtl,
    h("label", {}, onlyBox, " only disagreements"), csvButton("madopd-debate.csv", () => debateTable(model.get("payload")))), wbox, grid, studentBox,
    h("div", { class: "madopd-small madopd-caption" }, "What to look at: whether the teachers change their answers between rounds, and whether the most confident teacher is the one that matches the reference; its weight is how much the student listens to it."));

  function draw() {
    const K = P.teacher_names.length;
    const B = P.browse;
    nav.style.display = B ? "" : "none";
    if (B) {
      pos.textContent = `debate ${B.index + 1} of ${B.count}`;
      prevBtn.disabled = B.index <= 0;
      nextBtn.disabled = B.index >= B.count - 1;
    }
    context.replaceChildren(h("div", { class: "madopd-small" }, "prompt:"),
      h("div", { class: "madopd-prompt madopd-cell-text" }, P.prompt === null || P.prompt === undefined ? "– (not recorded)" : String(P.prompt).slice(-600)),
      h("div", { class: "madopd-small" }, "reference: ", h("b", { class: "madopd-reference" }, P.reference === null || P.reference === undefined ? "– (not given)" : String(P.reference))));
    header.replaceChildren(`state `, String(P.state_id), ` · ${K} teachers × ${P.rounds} rounds · missing-tag policy ${P.policy}`);
    banner.replaceChildren(...(P.banner ? [h("div", { class: "madopd-banner", role: "alert" }, "⚠ " + P.banner)] : []));
    const { rounds, weights } = boardView(P, { tau, onlyDisagreements: only });
    wbox.replaceChildren(h("span", { class: "madopd-small" }, "weights softmax(c/100/τ): "),
      ...P.teacher_names.map((name, k) => h("span", { class: "madopd-chip madopd-weight", "data-teacher": k },
        h("span", { class: "madopd-wbar", style: { width: `${weights ? 80 * weights[k] : 0}px`, background: teacherColor(k) } }),
        name, weights ? ` ${fmt(weights[k])}` : " skipped")),
      weights ? h("span", { class: "madopd-small madopd-neff" }, ` n_eff = ${fmt(effectiveTeachers(weights), 2)}`) : "");
    grid.style.gridTemplateColumns = `130px repeat(${Math.max(1, rounds.length)}, minmax(160px, 1fr))`;
    grid.replaceChildren(h("div", {}));
    for (const r of rounds) grid.append(h("div", { class: "madopd-head" }, `round ${r + 1} `, P.agree[r] ? "(agree)" : "(disagree)"));
    if (!rounds.length) grid.append(h("div", { class: "madopd-small" }, "no round with a disagreement"));
    P.teacher_names.forEach((name, k) => {
      grid.append(h("div", { class: "madopd-head", style: { borderLeft: `4px solid ${teacherColor(k)}`, paddingLeft: "4px" } }, name));
      for (const r of rounds) {
        const c = P.cells[k][r];
        const cell = h("div", { class: "madopd-cell" + (c.changed ? " madopd-changed" : ""), "data-teacher": k, "data-round": r + 1 },
          badge(c.confidence, k, c.source_label), " ", h("b", {}, c.answer));
        if (c.changed) {
          const d = h("div", { class: "madopd-small madopd-diff" }, "changed: ");
          for (const [op, w] of wordDiff(P.cells[k][r - 1].answer, c.answer))
            d.append(h("span", { class: op === "-" ? "madopd-diff-del" : op === "+" ? "madopd-diff-ins" : "" }, w), " ");
          cell.append(d);
        }
        cell.append(h("div", { class: "madopd-cell-text" }, c.text));
        grid.append(cell);
      }
    });
    drawStudent();
  }

  function drawStudent() {
    studentBox.replaceChildren();
    const st = P.student;
    if (!st) return;
    const vm = quantile(st.div.flat(), 0.99);
    studentBox.append(h("div", {}, h("b", {}, "student"), ` (correct: ${st.correct}) tokens coloured by D(p_k‖q)`),
      legend("D per token", vm));
    P.teacher_names.forEach((name, k) => {
      const row = h("div", { class: "madopd-strip-toks" });
      st.tokens.forEach((tok, t) => {
        const v = st.div[t][k], bg = seqColor(v, vm);
        const span = tokenSpan(tok, { "data-t": t, "data-teacher": k, title: `t=${t} D=${fmt(v, 4)}` });
        span.style.background = bg;
        span.style.color = textColor(bg);
        row.append(span);
      });
      studentBox.append(h("div", { class: "madopd-strip" },
        h("div", { class: "madopd-strip-label", style: { borderRight: `4px solid ${teacherColor(k)}`, paddingRight: "4px" } }, name), row));
    });
  }

  model.on("change:payload", () => { P = model.get("payload"); draw(); });
  model.on("change:tau", () => { const v = model.get("tau"); if (v !== tau) { tau = v; tauCtl.setValue(v); draw(); } });
  model.on("change:only_disagreements", () => { only = model.get("only_disagreements"); onlyBox.checked = only; draw(); });
  draw();
}

export default { render };
