// Failure-case finder: a sortable, filterable table over (step, sample) rows; clicking a row sends
// {step, sample} back to the kernel through the synced `selected` trait.
import { quantile } from "./divmath.js";
import { h, fmt, seqColor, textColor } from "./common.js";

// Pure filtering/sorting (unit-tested under node).
export function viewRows(rows, { sortBy = "loss", desc = true, text = "", onlyWrong = false,
  onlyMissing = false, onlyConfWrong = false } = {}) {
  const needle = text.trim().toLowerCase();
  const out = rows.filter((r) =>
    (!onlyWrong || r.correct === 0) && (!onlyMissing || r.missing > 0) && (!onlyConfWrong || r.conf_wrong) &&
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
  const st = { sortBy: "loss", desc: true, text: "", onlyWrong: false, onlyMissing: false, onlyConfWrong: false };
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
  const scroller = h("div", { class: "madopd-finder-scroll", tabindex: 0, title: "↑/↓ move the selection",
    style: { maxHeight: "360px", overflow: "auto" } }, table);
  const detail = h("div", { class: "madopd-detail madopd-finder-detail" }, "Click a row (or focus the table and use ↑/↓) to compare the answers.");
  root.append(h("div", { class: "madopd-controls" }, search, box("incorrect", "onlyWrong"),
    box("missing tags", "onlyMissing"), box("confident & wrong", "onlyConfWrong"), count), scroller, detail);
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
  function drawDetail(r) {
    if (!r) return;
    const names = P.teacher_names || [];
    detail.replaceChildren(h("div", {}, h("b", {}, `step ${r.step}, sample ${r.sample}`), " · state ", String(r.state_id)),
      h("table", { class: "madopd-table" },
        h("tr", {}, h("th", {}, "who"), h("th", {}, "answer"), h("th", {}, "confidence")),
        h("tr", {}, h("td", { class: "madopd-text" }, "student"), h("td", { class: "madopd-text" }, String(r.response)),
          h("td", {}, r.correct === null || r.correct === undefined ? "–" : r.correct ? "✓ correct" : "✗ wrong")),
        ...(r.answers || []).map((a, k) => h("tr", {}, h("td", { class: "madopd-text" }, names[k] ?? `teacher ${k}`),
          h("td", { class: "madopd-text" }, String(a)), h("td", {}, fmt((r.confidences || [])[k], 0)))),
        h("tr", {}, h("td", { class: "madopd-text" }, "reference"),
          h("td", { class: "madopd-text" }, r.reference === null || r.reference === undefined ? "– (not given)" : String(r.reference)), h("td", {}, ""))));
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
        } else if (c === "conf_wrong") {
          tr.append(h("td", { "data-col": c }, v ? "⚠ yes" : ""));
        } else if (P.numeric.includes(c) && v !== null && v !== undefined && constant.has(c)) {
          tr.append(h("td", { "data-col": c, title: flatTip }, fmt(v)));
        } else if (P.numeric.includes(c) && v !== null && v !== undefined) {
          const bg = seqColor(v, vmax[c]);
          tr.append(h("td", { "data-col": c, style: { background: bg, color: textColor(bg) } }, fmt(v)));
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
    const chosen = P.rows.find((r) => sel.step === r.step && sel.sample === r.sample);
    drawDetail(chosen);
    const selRow = body.querySelector("tr.madopd-sel");
    if (selRow && selRow.scrollIntoView) selRow.scrollIntoView({ block: "nearest" });
  }
  model.on("change:selected", draw);
  draw();
}

export default { render };
