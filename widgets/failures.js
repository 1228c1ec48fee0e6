// Failure-case finder: a sortable, filterable table over (step, sample) rows; clicking a row sends
// {step, sample} back to the kernel through the synced `selected` trait (the kernel then shows that
// sample on the linked board, lens and decomposition). Each teacher's final answer is judged against
// the reference in Python (failures.judge_row); the filters here only read those columns.
import { quantile } from "./divmath.js";
import { h, fmt, seqColor, textColor } from "./common.js";
import { csvButton } from "./plots.js";

// Pure filtering/sorting (unit-tested under node).
export function viewRows(rows, { sortBy = "loss", desc = true, text = "", onlyWrong = false,
  onlyMissing = false, onlyConfWrong = false, onlyFlipped = false, onlyCopied = false, state = null } = {}) {
  const needle = text.trim().toLowerCase();
  const out = rows.filter((r) =>
    (!onlyWrong || r.correct === 0) && (!onlyMissing || r.missing > 0) && (!onlyConfWrong || r.conf_wrong === true) &&
    (!onlyFlipped || r.flipped === true) && (!onlyCopied || r.copied === true) && (state === null || r.state_id === state) &&
    (!needle || [r.state_id, r.family, r.response].some((x) => String(x ?? "").toLowerCase().includes(needle))));
  const key = (r) => r[sortBy];
  out.sort((a, b) => {
    const x = key(a), y = key(b);
    if (x === null || x === undefined) return 1;
    if (y === null || y === undefined) return -1;
    const c = typeof x === "string" ? x.localeCompare(y) : x - y;
    return desc ? -c : c;
  });
  return out;
}

function render({ model, el }) {
  const P = model.get("payload");
  const st = { sortBy: "loss", desc: true, text: "", onlyWrong: false, onlyMissing: false, onlyConfWrong: false,
    onlyFlipped: false, onlyCopied: false, state: null };
  const vmax = {};
  for (const c of P.numeric) vmax[c] = quantile(P.rows.map((r) => r[c]), 0.99);
  const constant = new Set(P.constant || []);  // flat columns (decided in Python: failures.constant_columns)
  const flatTip = `spread over the rows below ${Math.round(100 * (P.flat_rel ?? 0.05))} % of the values (or float noise): not shaded`;
  const label = (c) => (P.labels && P.labels[c]) || c;
  let current = [];
  const root = h("div", { class: "madopd madopd-failures" });
  el.append(root);
  const search = h("input", { type: "search", placeholder: "filter state / family / response", class: "madopd-filter" });
  search.addEventListener("input", () => { st.text = search.value; draw(); });
  const box = (label, key) => {
    const cb = h("input", { type: "checkbox", "data-key": key });
    cb.addEventListener("change", () => { st[key] = cb.checked; draw(); });
    return h("label", {}, cb, " ", label);
  };
  const count = h("span", { class: "madopd-small madopd-count" });
  const table = h("table", { class: "madopd-table" });
  const scroller = h("div", { class: "madopd-finder-scroll", tabindex: 0, title: "↑/↓ move the selection", "data-lm-suppress-shortcuts": "true",
    style: { maxHeight: "360px", overflow: "auto" } }, table);
  const detail = h("div", { class: "madopd-detail madopd-finder-detail" }, "Click a row (or focus the table and use ↑/↓) to compare the answers.");
  const stateChip = h("span", { class: "madopd-small madopd-state-filter" });
  const refNote = P.references_missing ? h("div", { class: "madopd-small madopd-refs-missing" },
    `${P.references_missing} of ${P.rows.length} rows have no reference: their teachers cannot be judged (–)`) : "";
  root.append(h("div", { class: "madopd-controls" }, search, box("student wrong", "onlyWrong"),
    box("missing tags", "onlyMissing"), box(`teacher confidently wrong (≥ ${P.confident ?? 80})`, "onlyConfWrong"),
    box("debate flipped to wrong", "onlyFlipped"), box("student copied a wrong teacher", "onlyCopied"), stateChip, count,
    csvButton("madopd-failures.csv", () => ({ header: P.columns.map(label), rows: current.map((r) => P.columns.map((c) => r[c])) }))),
    refNote, scroller,
    h("div", { class: "madopd-small madopd-caption" }, "What to look at: tick \u201cteacher confidently wrong\u201d, then click a row; the history shows whether the student learned the wrong answer at later steps."),
    detail);
  function followState(id) {
    st.state = id;
    stateChip.replaceChildren(...(id === null ? [] : ["state ", h("b", {}, String(id)), " ",
      h("button", { class: "madopd-btn madopd-state-clear", onclick: () => followState(null) }, "show all states")]));
    draw();
  }
  function choose(r) {
    model.set("selected", { step: r.step, sample: r.sample });
    model.save_changes();
    draw();
  }
  scroller.addEventListener("keydown", (ev) => {
    if (ev.key !== "ArrowDown" && ev.key !== "ArrowUp") return;
    ev.preventDefault();
    const sel = model.get("selected") || {};
    const i = current.findIndex((r) => r.step === sel.step && r.sample === sel.sample);
    const j = Math.max(0, Math.min(current.length - 1, i < 0 ? 0 : i + (ev.key === "ArrowDown" ? 1 : -1)));
    if (current[j]) choose(current[j]);
  });
  const mark = (ok) => ok === null || ok === undefined ? "–" : ok ? "✓ right" : "✗ wrong";
  function drawDetail(r) {
    if (!r) { detail.replaceChildren("Click a row (or focus the table and use ↑/↓) to compare the answers."); return; }
    const names = P.teacher_names || [];
    const hist = (P.history || {})[r.state_id] || [];
    detail.replaceChildren(h("div", {}, h("b", {}, `step ${r.step}, sample ${r.sample}`), " · state ", String(r.state_id)),
      h("table", { class: "madopd-table" },
        h("tr", {}, h("th", {}, "who"), h("th", {}, "answer"), h("th", {}, "vs reference"), h("th", {}, "confidence")),
        h("tr", {}, h("td", { class: "madopd-text" }, "student"), h("td", { class: "madopd-text" }, String(r.response)),
          h("td", {}, r.correct === null || r.correct === undefined ? "–" : r.correct ? "✓ correct" : "✗ wrong"), h("td", {}, "")),
        ...(r.answers || []).map((a, k) => h("tr", { class: "madopd-teacher-row", "data-teacher": k,
          "data-right": r.teacher_right ? String(r.teacher_right[k]) : "unknown" },
          h("td", { class: "madopd-text" }, names[k] ?? `teacher ${k}`),
          h("td", { class: "madopd-text" }, String(a)), h("td", { class: r.teacher_right && !r.teacher_right[k] ? "madopd-wrong" : "" },
            mark(r.teacher_right ? r.teacher_right[k] : null)),
          h("td", {}, fmt((r.confidences || [])[k], 0), (r.sources || [])[k] && r.sources[k] !== "tag" ? ` (${r.sources[k]})` : ""))),
        h("tr", {}, h("td", { class: "madopd-text" }, "reference"),
          h("td", { class: "madopd-text madopd-reference" }, r.reference === null || r.reference === undefined ? "– (not given)" : String(r.reference)),
          h("td", {}, ""), h("td", {}, ""))),
      h("div", { class: "madopd-small madopd-history" }, `this state across the run (${hist.length}): `,
        ...hist.map((e) => h("button", { class: "madopd-btn madopd-history-step" + (e.step === r.step && e.sample === r.sample ? " madopd-sel" : ""),
          title: e.copied ? "the student copied a wrong teacher here" : "",
          onclick: () => choose(e) }, `step ${e.step} ${e.correct === null || e.correct === undefined ? "–" : e.correct ? "✓" : "✗"}${e.copied ? " (copied)" : ""}`)),
        " ", h("button", { class: "madopd-btn madopd-follow", onclick: () => followState(r.state_id) }, "only this state")));
  }

  function draw() {
    const rows = viewRows(P.rows, st);
    const sel = model.get("selected") || {};
    count.textContent = `${rows.length} of ${P.rows.length} samples` + (P.skipped_samples ? ` (${P.skipped_samples} skipped samples excluded)` : "") +
      (constant.size ? ` · not shaded (nearly constant): ${[...constant].map(label).join(", ")}` : "");
    current = rows;
    const head = h("tr", {}, P.columns.map((c) => h("th", { "data-col": c, title: (P.tips && P.tips[c]) || c, onclick: () => {
      st.desc = st.sortBy === c ? !st.desc : true; st.sortBy = c; draw();
    } }, label(c) + (st.sortBy === c ? (st.desc ? " ▼" : " ▲") : ""))));
    const body = h("tbody", {});
    for (const r of rows) {
      const tr = h("tr", { class: "madopd-row" + (sel.step === r.step && sel.sample === r.sample ? " madopd-sel" : ""),
        "data-step": r.step, "data-sample": r.sample });
      for (const c of P.columns) {
        const v = r[c];
        if (c === "correct") {
          tr.append(h("td", { "data-col": c, class: v === 0 ? "madopd-wrong" : "" }, v === null || v === undefined ? "–" : v ? "✓" : "✗"));
        } else if (c === "conf_wrong" || c === "flipped" || c === "copied") {
          tr.append(h("td", { "data-col": c }, v === null || v === undefined ? "–" : v ? "⚠ yes" : ""));
        } else if (P.numeric.includes(c) && v !== null && v !== undefined && constant.has(c)) {
          tr.append(h("td", { "data-col": c, title: flatTip }, fmt(v, c === "max_conf" ? 0 : undefined)));
        } else if (P.numeric.includes(c) && v !== null && v !== undefined) {
          const bg = seqColor(v, vmax[c]);
          tr.append(h("td", { "data-col": c, style: { background: bg, color: textColor(bg) } }, fmt(v, c === "max_conf" ? 0 : undefined)));
        } else if (c === "response") {
          const shown = String(v).replace(/\r?\n/g, "↵");  // one line per row
          tr.append(h("td", { "data-col": c, class: "madopd-text", title: String(v) }, shown + (r.truncated ? "…" : "")));
        } else {
          tr.append(h("td", { "data-col": c }, v === null || v === undefined ? "–" : String(v)));
        }
      }
      tr.addEventListener("click", () => choose(r));
      body.append(tr);
    }
    table.replaceChildren(h("thead", {}, head), body);
    // the detail pane shows the selection only while it passes the filters (else it would describe a hidden row)
    drawDetail(rows.find((r) => sel.step === r.step && sel.sample === r.sample));
    const selRow = body.querySelector("tr.madopd-sel");
    if (selRow && selRow.scrollIntoView) selRow.scrollIntoView({ block: "nearest" });
  }
  model.on("change:selected", draw);
  draw();
}

export default { render };
