"""A self-contained HTML report of a `madopd demo` run: static tables and inline SVG, no scripts.

Everything that came from a model (debate turns, student answers) is escaped with
``html.escape``; numbers are formatted here. No CDN, no JavaScript: the file opens offline.
"""

from __future__ import annotations

import html
import math
from pathlib import Path
from typing import Any

# one task per group, so "Agentic avg" / "Code avg" would repeat the task columns (table.txt
# dropped them too)
COLS = (("toy-tools", "toy-tools"), ("toy-code", "toy-code"), ("overall", "Overall"))
PALETTE = ("#8c8c8c", "#b07aa1", "#4e79a7", "#76b7b2", "#f28e2b", "#e15759", "#59a14f", "#edc948",
           "#9c755f", "#ff9da7")
# one colour per row name, so a row looks the same in every chart (the control table has no
# MT-SeqKD row; colouring by position gave MAD-OPD another colour there)
ROW_COLOURS = dict(zip(("Base", "MT-SeqKD", "OPD-A", "OPD-B", "MT-OPD", "MAD-OPD", "Teacher A (blind)",
                        "Teacher B (blind)", "OPD-C", "Teacher C (blind)"), PALETTE))


def row_colour(name: str, index: int) -> str:
    """The row's own colour; rows without one (ablations) by position."""
    return ROW_COLOURS.get(name, PALETTE[index % len(PALETTE)])

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;margin:2em auto;max-width:1100px;color:#222}
table{border-collapse:collapse;margin:0.6em 0 1.2em}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}
th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}.best{font-weight:bold}
.small{color:#666;font-size:0.9em}pre{background:#f7f7f7;padding:0.6em;overflow-x:auto}
"""


def esc(x: Any) -> str:
    """Escaped text; bidi/control characters of model text as visible escapes (``\\u202e``)."""
    from madopd.widgets.style import visible_text

    return html.escape(visible_text(str(x)), quote=True)


def plain(x: Any) -> str:
    """A dict, list or tuple as readable text ("a: 1, b: 2") rather than a Python repr."""
    if isinstance(x, dict):
        return ", ".join(f"{k}: {plain(v)}" for k, v in x.items())
    if isinstance(x, (list, tuple)):
        return ", ".join(plain(v) for v in x)
    return str(x)


def _fmt(c: dict | None, iv: dict | None = None) -> str:
    """'mean [lo, hi]' with a bootstrap interval (fractions in ``iv``), else 'mean ± SE'."""
    if not c:
        return "–"
    if iv is not None:
        return f"{c['mean']:.1f} [{100 * iv['lo']:.1f}, {100 * iv['hi']:.1f}]"
    se = c.get("se")
    se_txt = "n/a" if se is None or se != se else f"{se:.1f}"
    return f"{c['mean']:.1f} ± {se_txt}"


def table_html(rows: dict, caption: str, intervals: dict | None = None) -> str:
    methods = (intervals or {}).get("methods", {})
    best = {}
    for key, _ in COLS:
        vals = [r[key]["mean"] for r in rows.values() if key in r]
        best[key] = max(vals) if vals else None
    out = [f"<table><caption>{esc(caption)}</caption><tr><th>method</th>"]
    out += [f"<th>{esc(label)}</th>" for _, label in COLS] + ["</tr>"]
    for name, row in rows.items():
        out.append(f"<tr><td>{esc(name)}</td>")
        for key, _ in COLS:
            c = row.get(key)
            cls = ' class="best"' if c and best[key] is not None and c["mean"] == best[key] else ""
            title = f' title="per seed: {esc(", ".join(f"{v:.1f}" for v in c["values"]))}"' if c else ""
            out.append(f"<td{cls}{title}>{esc(_fmt(c, methods.get(name, {}).get(key)))}</td>")
        out.append("</tr>")
    out.append("</table>")
    return "".join(out)


def _whisker(rows: dict, methods: dict, n: str, col: str) -> tuple[float, float]:
    """(low, high) of a bar's whisker in %: the bootstrap interval, else mean ± 1 SE."""
    c = rows[n][col]
    iv = methods.get(n, {}).get(col)
    if iv is not None:
        return 100 * iv["lo"], 100 * iv["hi"]
    se = c["se"] if c["se"] == c["se"] else 0.0
    return c["mean"] - se, c["mean"] + se


def bar_chart(rows: dict, columns=("toy-tools", "toy-code", "overall"), width: int = 760,
              height: int = 260, intervals: dict | None = None) -> str:
    """Grouped bars (mean) with whiskers (95 % bootstrap interval when ``intervals`` has the
    cell, else ±1 SE), one group per column, one colour per row."""
    names = list(rows)
    methods = (intervals or {}).get("methods", {})
    if not names:
        return ""
    pad_l, pad_b, pad_t = 46, 40, 20
    plot_w, plot_h = width - pad_l - 10, height - pad_b - pad_t
    vals = [_whisker(rows, methods, n, c)[1] for n in names for c in columns if c in rows[n]]
    top = max(10.0, math.ceil(max(vals + [0.0]) / 10) * 10)
    group_w = plot_w / len(columns)
    bar_w = group_w * 0.8 / len(names)
    y = lambda v: pad_t + plot_h * (1 - v / top)
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height + 20 * ((len(names) + 3) // 4)}" '
             f'font-family="sans-serif" font-size="11">',
             f'<text transform="translate(11,{pad_t + plot_h / 2:.0f}) rotate(-90)" text-anchor="middle">'
             f'score (%, mean, {"95 % interval" if methods else "± 1 SE"})</text>']
    for t in range(0, int(top) + 1, max(10, int(top) // 5)):
        parts.append(f'<line x1="{pad_l}" x2="{width - 10}" y1="{y(t):.1f}" y2="{y(t):.1f}" stroke="#eee"/>'
                     f'<text x="{pad_l - 4}" y="{y(t) + 4:.1f}" text-anchor="end">{t}</text>')
    for g, col in enumerate(columns):
        x0 = pad_l + g * group_w + group_w * 0.1
        parts.append(f'<text x="{x0 + group_w * 0.4:.1f}" y="{height - pad_b + 16}" '
                     f'text-anchor="middle">{esc(col)}</text>')
        for i, n in enumerate(names):
            if col not in rows[n]:
                continue
            c = rows[n][col]
            x = x0 + i * bar_w
            parts.append(f'<rect x="{x:.1f}" y="{y(c["mean"]):.1f}" width="{bar_w * 0.9:.1f}" '
                         f'height="{max(0.0, y(0) - y(c["mean"])):.1f}" fill="{row_colour(n, i)}">'
                         f'<title>{esc(n)} {esc(col)}: {esc(_fmt(c, methods.get(n, {}).get(col)))}</title></rect>')
            lo, hi = _whisker(rows, methods, n, col)
            if hi > lo:
                cx = x + bar_w * 0.45
                parts.append(f'<line x1="{cx:.1f}" x2="{cx:.1f}" y1="{y(lo):.1f}" '
                             f'y2="{y(hi):.1f}" stroke="#222"/>')
    for i, n in enumerate(names):  # legend
        lx, ly = pad_l + (i % 4) * 180, height + 4 + 20 * (i // 4)
        parts.append(f'<rect x="{lx}" y="{ly}" width="12" height="12" fill="{row_colour(n, i)}"/>'
                     f'<text x="{lx + 16}" y="{ly + 10}">{esc(n)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def calibration_html(report: dict) -> str:
    out = []
    for name, rows in report.get("calibration", {}).items():
        out.append(f"<table><caption>teacher {esc(name)}: accuracy by stated confidence (all rounds, "
                   f"held-out)</caption><tr><th>confidence</th><th>n</th><th>mean stated</th>"
                   f"<th>accuracy</th></tr>")
        for r in rows:
            if r["n"]:
                out.append(f"<tr><td>{esc(r['bucket'])}</td><td>{r['n']}</td>"
                           f"<td>{100 * r['mean_confidence']:.0f}</td><td>{100 * r['accuracy']:.1f}</td></tr>")
        out.append("</table>")
    return "".join(out)


def teachers_html(report: dict) -> str:
    out = []
    for name, stages in report.get("teachers", {}).items():
        fams = None
        rows = []
        for stage, by_task in stages.items():
            for task, accs in by_task.items():
                fams = fams or [f for f in accs if f != "all"] + ["all"]
                rows.append(f"<tr><td>{esc(stage)}</td><td>{esc(task)}</td>" + "".join(
                    f"<td>{100 * accs[f]:.1f}</td>" if f in accs else "<td>–</td>" for f in fams) + "</tr>")
        if fams:
            out.append(f"<table><caption>teacher {esc(name)}: held-out accuracy (%)</caption><tr><th>stage</th>"
                       f"<th>task</th>" + "".join(f"<th>{esc(f)}</th>" for f in fams) + "</tr>"
                       + "".join(rows) + "</table>")
    base = report.get("student_base", {})
    if base:
        out.append("<p>Base student (greedy, held-out): " + "; ".join(
            esc(t) + ": " + ", ".join(f"{esc(f)} {100 * v:.1f}" for f, v in a.items()) for t, a in base.items())
            + "</p>")
    return "".join(out)


def examples_html(summary: dict, limit: int = 6) -> str:
    """A few debate transcripts from a MAD-OPD run's stored records (escaped model text)."""
    from madopd.runs import load_run

    for r in summary.get("runs", []):
        if r["job"]["row"] != "MAD-OPD" or r["job"]["group"] != "main":
            continue
        try:
            run = load_run(r["run_dir"])
            rec = run.records[-1] if len(run.records) else None
        except Exception as e:  # a report must not fail because a run dir is gone
            return f"<p class=small>(no records: {esc(e)})</p>"
        if rec is None:
            continue
        out = [f"<p class=small>run {esc(r['run_dir'])}, step {rec.step}</p><table><tr><th>prompt</th>"
               f"<th>debate (final round)</th><th>weights</th><th>student</th><th>correct</th></tr>"]
        for b in range(min(limit, len(rec.responses))):
            tr = rec.transcripts[b] if rec.transcripts else None
            debate = "" if tr is None else " | ".join(m.text for m in tr.messages if m.round == tr.rounds)
            w = ", ".join(f"{x:.2f}" for x in rec.weights[b]) if rec.weights else ""
            ok = rec.correct[b] if rec.correct else None
            out.append(f"<tr><td><code>{esc(rec.prompts[b][-80:])}</code></td><td><code>{esc(debate)}</code></td>"
                       f"<td>{esc(w)}</td><td><code>{esc(rec.responses[b])}</code></td><td>{esc(ok)}</td></tr>")
        out.append("</table>")
        return "".join(out)
    return ""


def _skills_text(spec: dict) -> str:
    from madopd.toyworld.toy_common import world_skills

    try:
        skills = world_skills(spec.get("world", "default"), spec.get("n_teachers", 2),
                              spec.get("overlap", 0.0), spec.get("calibration", "calibrated"))
    except Exception as e:  # a report must not fail on an odd spec; say why
        return f"(skills unavailable: {e})"
    parts = []
    for sk in skills:
        full = [f for f, (lo, hi) in sk.known.items() if (lo, hi) == (0.0, 1.0)]
        part = [f"{f} items {lo:.2f}-{hi:.2f}" for f, (lo, hi) in sk.known.items() if 0 < hi - lo < 1]
        wrong = f", confidently wrong on {'/'.join(sk.confident_wrong)} traps" if sk.confident_wrong else ""
        parts.append(f"teacher {sk.name} knows {', '.join(full) or 'nothing'} fully"
                     f"{' and ' + ', '.join(part) if part else ''}{wrong}")
    return "; ".join(parts)


def _diff_text(d: dict | None, B: int | None) -> str:
    from madopd.toyworld.demo_stats import fmt_diff, significance

    return "–" if not d else f"{fmt_diff(d, B)} ({significance(d)})"


def gains_html(g: dict, B: int | None) -> str:
    """Per column: MAD-OPD minus the best OPD, minus MT-OPD, minus each blind teacher (%)."""
    if not g:
        return ""
    out = ["<table><tr><th>column</th><th>minus the best single-teacher OPD</th><th>minus MT-OPD</th>"
           "<th>minus each blind teacher</th><th>beats every blind teacher?</th></tr>"]
    for col, v in g.items():
        best = v.get("best_opd")
        blind = "<br>".join(f"{esc(r)}: {esc(_diff_text(d, B))}" for r, d in v.get("blind", {}).items())
        verdict = {True: "yes", False: "no"}.get(v.get("beats_every_blind_teacher"), "–")
        out.append(f"<tr><td>{esc(col)}</td><td>{esc((best['row'] + ': ') if best else '')}"
                   f"{esc(_diff_text(best, B))}</td><td>{esc(_diff_text(v.get('mt_opd'), B))}</td>"
                   f"<td>{blind or '–'}</td><td>{esc(verdict)}</td></tr>")
    out.append("</table>")
    return "".join(out)


def mechanism_html(summary: dict) -> str:
    """What the toy world builds in, why the gain appears, when it vanishes (issue 13, item 2)."""
    zoo = summary.get("zoo", {})
    spec = zoo.get("default", {}).get("spec", {})
    out = ["<h2>what this world builds in (read before the table)</h2><p>",
           esc(f"The teachers are tiny models trained to imitate a written skill spec: {_skills_text(spec)}. "
               "Outside its skills a teacher answers with a plausible wrong operation at confidence 20; "
               "inside, correctly at confidence 90. In a revision round, and when it scores with a "
               "debate transcript in its context, a teacher was trained to adopt a peer's answer stated "
               "with confidence >= 50 (except on dst, where both are stubborn). The skills are "
               "complementary by construction."), "</p><p>",
           esc("Why the gain appears: with the transcript in its context each teacher's force-decoding "
               "distribution points at the peer's correct answer outside its own skills too, so the "
               "student (trained on the confidence-weighted divergence to both, paper Eq. 8) is taught "
               "the union of the skills. Without the transcript (OPD, MT-OPD) each teacher also teaches "
               "its own errors. So the demo shows that the pipeline carries a debate's correction into "
               "the student, not that debate helps in general."), "</p>"]
    ctrl = zoo.get("blind", {}).get("spec")
    key = next(iter(summary.get("extra_intervals", {})), None)
    g = summary.get("extra_gain", {}).get(key) if key else None
    B = summary.get("intervals", {}).get("B")
    if ctrl is not None:
        out.append("<p>" + esc(f"When it vanishes: in the control world {_skills_text(ctrl)} — a "
                               "shared blind spot, so the debate has no correct answer to adopt there. ")
                   + (esc("Measured (overall column): MAD-OPD minus the best OPD "
                          f"{_diff_text(g['overall'].get('best_opd'), B)}; minus MT-OPD "
                          f"{_diff_text(g['overall'].get('mt_opd'), B)}.")
                      if g and "overall" in g else esc("(control rows not run)")) + "</p>")
    else:
        out.append("<p>" + esc("The control world (a shared blind spot, where the gain should vanish) "
                               "was not run in this profile.") + "</p>")
    return "".join(out)


def ablations_html(ablations: dict, B: int | None) -> str:
    """One section per ablation table (toyworld/ablations.py): the table, a bar chart, every
    difference with its seed-level test and Holm-adjusted verdict, the per-family breakdown."""
    from madopd.toyworld.demo_stats import fmt_diff, significance

    out = []
    for ab in ablations.values():
        iv = ab.get("intervals") or None
        m = (iv or {}).get("family_size", "?")
        out.append(f"<h2>{esc(ab['title'])}</h2><p class=small>CPU seconds of its own runs: "
                   f"{esc(ab.get('cpu_seconds'))} (a run shared with another table counts once). "
                   f"Each variant against {esc(ab.get('reference') or 'each other variant')}; decision: "
                   f"seed-level Welch t-test, Holm across the table's {esc(m)} comparisons.</p>")
        out.append(table_html(ab["rows"], ab["title"], iv) + bar_chart(ab["rows"], intervals=iv))
        items = [f"<li>{esc(name)} [{esc(col)}]: {esc(fmt_diff(c, (iv or {}).get('B')))} "
                 f"({esc(significance(c))})</li>"
                 for name, d in (iv or {}).get("diffs", {}).items() for col, c in d["columns"].items()]
        if items:
            out.append("<ul class=small>" + "".join(items) + "</ul>")
        fams = ab.get("families") or {}
        if fams:
            cols = sorted({f for tasks in fams.values() for by_f in tasks.values() for f in by_f})
            out.append("<table><caption>per family (%, mean over seeds)</caption><tr><th>row</th>"
                       "<th>task</th>" + "".join(f"<th>{esc(f)}</th>" for f in cols) + "</tr>")
            for row, tasks in fams.items():
                for task, by_f in tasks.items():
                    out.append(f"<tr><td>{esc(row)}</td><td>{esc(task)}</td>" + "".join(
                        f"<td>{by_f[f]:.1f}</td>" if f in by_f else "<td>–</td>" for f in cols) + "</tr>")
            out.append("</table>")
    return "".join(out)


def write_report(summary: dict, path: str | Path) -> Path:
    from madopd.toyworld.demo_stats import (
        HOLM_NAME,
        ITEM_BOOT_NAME,
        PERM_NAME,
        SEED_TEST_NAME,
        TEST_NAME,
    )

    tests = {"primary": SEED_TEST_NAME, "secondary": PERM_NAME, "adjustment": HOLM_NAME,
             "items_only": ITEM_BOOT_NAME, "interval": f"95 % percentile interval, {TEST_NAME}",
             **summary.get("tests", {})}
    iv = summary.get("intervals") or None
    B = (iv or {}).get("B")
    what = (f"Mean over training seeds {esc(plain(summary.get('profile_settings', {}).get('seeds')))} "
            f"[{esc(tests.get('interval', 'no interval'))}]") if iv else \
        f"Mean ± standard error over seeds {esc(plain(summary.get('profile_settings', {}).get('seeds')))}"
    parts = ["<!doctype html><html><head><meta charset='utf-8'><title>madopd demo</title>",
             f"<style>{CSS}</style></head><body>",
             f"<h1>MAD-OPD on the toy world — profile {esc(summary.get('profile'))}</h1>",
             mechanism_html(summary)]
    if summary.get("table"):  # the ablations / multimode profiles run no main table
        parts += [
                 f"<h2>main table</h2><p>{what}; "
                 f"toy-tools = episode success (%), toy-code = pass@1 (%), both on held-out items. "
                 f"'(blind)' rows: the teacher itself answering with no transcript (the single-teacher "
                 f"ceiling). Divergences: {esc(plain(summary.get('divergences')))}. Wall time "
                 f"{esc(summary.get('wall_seconds'))} s (zoo {esc(summary.get('zoo_seconds'))} s, debate caches "
                 f"{esc(summary.get('debate_cache_seconds'))} s, {esc(summary.get('workers'))} processes).</p>",
                 table_html(summary.get("table", {}), "main table (paper Table 1 in miniature)", iv),
                 bar_chart(summary.get("table", {}), intervals=iv)]
    g = summary.get("gain", {})
    if g:
        m = (iv or {}).get("family_size", "?")
        parts.append(f"<p>Differences in points [95 % interval: bootstrap over items x seeds, "
                     f"B = {esc(B)}, descriptive]. Decision: {esc(tests.get('primary'))}, "
                     f"{esc(tests.get('adjustment', 'no multiple-comparison adjustment'))} (m = {esc(m)}); "
                     f"'significant' means the adjusted p &lt; 0.05. Also printed: the "
                     f"{esc(tests.get('secondary'))} (raw and Holm) and the "
                     f"{esc(tests.get('items_only', 'item bootstrap'))}.</p>" + gains_html(g, B))
    coll = summary.get("collapse", {}).get("main/default")
    if coll:
        from madopd.toyworld.demo_stats import format_collapse

        parts.append("<h3>collapse (toy-tools: the first operation each held-out episode calls)</h3>"
                     f"<pre>{esc(format_collapse(coll))}</pre>")
    for key, rows in summary.get("extra", {}).items():
        xiv = summary.get("extra_intervals", {}).get(key)
        parts.append(f"<h2>{esc(key)}</h2>" + table_html(rows, key if xiv else key + " (mean ± SE)", xiv)
                     + bar_chart(rows, intervals=xiv))
        eg = summary.get("extra_gain", {}).get(key)
        if eg:
            parts.append(gains_html(eg, B))
    parts.append(ablations_html(summary.get("ablations", {}), B))
    from madopd.toyworld.multimode import (
        multimode_html,  # the multi-mode group (issue 13.7), if run
    )

    parts.append(multimode_html(summary.get("multimode")))
    for world, z in summary.get("zoo", {}).items():
        parts.append(f"<h2>zoo: {esc(world)} world</h2><p class=small>{esc(plain(z.get('spec')))}</p>")
        parts.append(teachers_html(z.get("report", {})) + calibration_html(z.get("report", {})))
    ex = examples_html(summary)
    if ex:
        parts.append("<h2>example debates (MAD-OPD, last recorded step)</h2>" + ex)
    parts.append("</body></html>")
    path = Path(path)
    path.write_text("".join(parts), encoding="utf-8")
    return path
