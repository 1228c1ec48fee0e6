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
  root.append(h("div", { class: "madopd-controls" }, search, box("incorrect", "onlyWrong"),
    box("missing tags", "onlyMissing"), box("confident & wrong", "onlyConfWrong"), count),
  h("div", { style: { maxHeight: "360px", overflow: "auto" } }, table));

  function draw() {
    const rows = viewRows(P.rows, st);
    const sel = model.get("selected") || {};
    count.textContent = `${rows.length} of ${P.rows.length} samples` + (P.skipped_samples ? ` (${P.skipped_samples} skipped samples excluded)` : "");
    const head = h("tr", {}, P.columns.map((c) => h("th", { "data-col": c, onclick: () => {
      st.desc = st.sortBy === c ? !st.desc : true; st.sortBy = c; draw();
    } }, c + (st.sortBy === c ? (st.desc ? " ▼" : " ▲") : ""))));
    const body = h("tbody", {});
    for (const r of rows) {
      const tr = h("tr", { class: "madopd-row" + (sel.step === r.step && sel.sample === r.sample ? " madopd-sel" : ""),
        "data-step": r.step, "data-sample": r.sample });
      for (const c of P.columns) {
        const v = r[c];
        if (P.numeric.includes(c) && v !== null && v !== undefined) {
          const bg = seqColor(v, vmax[c]);
          tr.append(h("td", { "data-col": c, style: { background: bg, color: textColor(bg) } }, fmt(v)));
        } else if (c === "response") {
          const shown = String(v).replace(/\r?\n/g, "↵");  // one line per row
          tr.append(h("td", { "data-col": c, class: "madopd-text", title: String(v) }, shown + (r.truncated ? "…" : "")));
        } else {
          tr.append(h("td", { "data-col": c }, v === null || v === undefined ? "–" : String(v)));
        }
      }
      tr.addEventListener("click", () => {
        model.set("selected", { step: r.step, sample: r.sample });
        model.save_changes();
        draw();
      });
      body.append(tr);
    }
    table.replaceChildren(h("thead", {}, head), body);
  }
  model.on("change:selected", draw);
  draw();
}

export default { render };
