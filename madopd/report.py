"""A self-contained HTML report of a `madopd demo` run: static tables and inline SVG, no scripts.

Everything that came from a model (debate turns, student answers) is escaped with
``html.escape``; numbers are formatted here. No CDN, no JavaScript: the file opens offline.
"""

from __future__ import annotations

import html
import math
from pathlib import Path
from typing import Any

COLS = (("toy-tools", "toy-tools"), ("toy-code", "toy-code"), ("toy-tools", "Agentic avg"),
        ("toy-code", "Code avg"), ("overall", "Overall"))
PALETTE = ("#8c8c8c", "#b07aa1", "#4e79a7", "#76b7b2", "#f28e2b", "#e15759", "#59a14f", "#edc948")

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


def _fmt(c: dict | None) -> str:
    if not c:
        return "–"
    se = c.get("se")
    se_txt = "n/a" if se is None or se != se else f"{se:.1f}"
    return f"{c['mean']:.1f} ± {se_txt}"


def table_html(rows: dict, caption: str) -> str:
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
            out.append(f"<td{cls}{title}>{esc(_fmt(c))}</td>")
        out.append("</tr>")
    out.append("</table>")
    return "".join(out)


def bar_chart(rows: dict, columns=("toy-tools", "toy-code", "overall"), width: int = 760,
              height: int = 260) -> str:
    """Grouped bars (mean) with ±1 SE whiskers, one group per column, one colour per row."""
    names = list(rows)
    if not names:
        return ""
    pad_l, pad_b, pad_t = 46, 40, 20
    plot_w, plot_h = width - pad_l - 10, height - pad_b - pad_t
    vals = [rows[n][c]["mean"] + (rows[n][c]["se"] if rows[n][c]["se"] == rows[n][c]["se"] else 0)
            for n in names for c in columns if c in rows[n]]
    top = max(10.0, math.ceil(max(vals + [0.0]) / 10) * 10)
    group_w = plot_w / len(columns)
    bar_w = group_w * 0.8 / len(names)
    y = lambda v: pad_t + plot_h * (1 - v / top)
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height + 20 * ((len(names) + 3) // 4)}" '
             f'font-family="sans-serif" font-size="11">',
             f'<text transform="translate(11,{pad_t + plot_h / 2:.0f}) rotate(-90)" text-anchor="middle">'
             f'score (%, mean ± 1 SE)</text>']
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
                         f'height="{max(0.0, y(0) - y(c["mean"])):.1f}" fill="{PALETTE[i % len(PALETTE)]}">'
                         f'<title>{esc(n)} {esc(col)}: {esc(_fmt(c))}</title></rect>')
            if c["se"] == c["se"] and c["se"] > 0:
                cx = x + bar_w * 0.45
                parts.append(f'<line x1="{cx:.1f}" x2="{cx:.1f}" y1="{y(c["mean"] - c["se"]):.1f}" '
                             f'y2="{y(c["mean"] + c["se"]):.1f}" stroke="#222"/>')
    for i, n in enumerate(names):  # legend
        lx, ly = pad_l + (i % 4) * 180, height + 4 + 20 * (i // 4)
        parts.append(f'<rect x="{lx}" y="{ly}" width="12" height="12" fill="{PALETTE[i % len(PALETTE)]}"/>'
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


def write_report(summary: dict, path: str | Path) -> Path:
    parts = ["<!doctype html><html><head><meta charset='utf-8'><title>madopd demo</title>",
             f"<style>{CSS}</style></head><body>",
             f"<h1>MAD-OPD on the toy world — profile {esc(summary.get('profile'))}</h1>",
             f"<p>Mean ± standard error over seeds {esc(plain(summary.get('profile_settings', {}).get('seeds')))}; "
             f"toy-tools = episode success (%), toy-code = pass@1 (%). Divergences: "
             f"{esc(plain(summary.get('divergences')))}. Wall time {esc(summary.get('wall_seconds'))} s "
             f"(zoo {esc(summary.get('zoo_seconds'))} s, debate caches {esc(summary.get('debate_cache_seconds'))} s, "
             f"{esc(summary.get('workers'))} processes).</p>",
             table_html(summary.get("table", {}), "main table (paper Table 1 in miniature)")]
    g = summary.get("gain", {})
    if g:
        parts.append("<p>MAD-OPD minus the best single-teacher OPD: " + "; ".join(
            f"{esc(c)} {v['gain']:+.1f} ± {v['se']:.1f} (vs {esc(v['best_opd'])}, "
            f"{'> 2 SE' if v['significant'] else 'not > 2 SE'})" for c, v in g.items()) + "</p>")
    parts.append(bar_chart(summary.get("table", {})))
    for key, rows in summary.get("extra", {}).items():
        parts.append(f"<h2>{esc(key)}</h2>" + table_html(rows, key) + bar_chart(rows))
        eg = summary.get("extra_gain", {}).get(key)
        if eg:
            parts.append("<p>gain over the best OPD: " + "; ".join(
                f"{esc(c)} {v['gain']:+.1f} ± {v['se']:.1f}" for c, v in eg.items()) + "</p>")
    from madopd.multimode import multimode_html  # the multi-mode group (issue 13.7), if run

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
