"""Live training dashboard: loss, divergence quantiles, weights, n_eff, and a probe ribbon.

``add_record(payload, record)`` folds one StepRecord into the payload (the LiveDashboard widget
calls it from the Distiller callback); ``add_probe(payload, step, tokens, values)`` adds one row
of the step × token ribbon (a fixed probe completion re-scored every N steps);
``set_run(payload, name, records)`` overlays another run's curves (``payload["runs"]``: MAD-OPD
next to MT-OPD, several seeds), which the browser draws on the same charts, dashed.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from madopd.types import StepRecord
from madopd.widgets.health import confidence_counts, merge_counts, missing_banner
from madopd.widgets.style import (
    SEQUENTIAL,
    banner_html,
    clip_max,
    esc,
    fmt,
    legend_html,
    quantile,
    seq_color,
    teacher_color,
    teacher_legend_html,
    token_html,
)

QUANTILES = (0.1, 0.5, 0.9, 0.99)
MAX_POINTS = 5000  # older points are dropped (counted in payload["dropped_points"])


def dashboard_payload(teacher_names: Sequence[str] = (), *, every: int = 10,
                      records: Sequence[StepRecord] = (), policy: str = "uniform",
                      total_steps: int | None = None) -> dict:
    p = {"kind": "dashboard", "version": 1, "teacher_names": list(teacher_names),
         "colors": [teacher_color(k) for k in range(len(teacher_names))], "every": every,
         "steps": [], "loss": [], "quantiles": {str(q): [] for q in QUANTILES},
         "weights": [], "n_eff": [], "probe": {"tokens": [], "steps": [], "rows": []},
         "dropped_points": 0, "policy": policy, "confidence": {"turns": 0, "missing": 0},
         "banner": None, "total_steps": total_steps, "times": [], "name": "this run", "runs": []}
    for r in records:
        add_record(p, r)
    return p


def add_record(p: dict, record: StepRecord, now: float | None = None) -> dict:
    """Append one step's scalars. Weights/n_eff are batch means over non-skipped samples.
    ``now``: the step's clock for the ETA (default wall time; the live dashboard passes wall
    time minus the time spent paused, so a pause does not slow the estimated rate)."""
    if not p["teacher_names"]:
        p["teacher_names"] = list(record.teacher_names)
        p["colors"] = [teacher_color(k) for k in range(len(record.teacher_names))]
    K = len(p["teacher_names"])
    vals = [v for sample in record.per_token_divergence for row in sample for v in row]
    keep = [b for b in range(len(record.weights))
            if not (b < len(record.skipped) and record.skipped[b])]
    w = [sum(record.weights[b][k] for b in keep) / len(keep) if keep else None for k in range(K)]
    n_eff = [1.0 / sum(x * x for x in record.weights[b]) for b in keep
             if sum(x * x for x in record.weights[b]) > 0]
    p["confidence"] = merge_counts(p.get("confidence", {}), confidence_counts(record.transcripts))
    p["banner"] = missing_banner(p["confidence"], p.get("policy", "uniform"))
    p.setdefault("times", []).append(round(time.time() if now is None else now, 3))  # the ETA's rate
    p["steps"].append(record.step)
    p["loss"].append(round(float(record.loss), 6))
    for q in QUANTILES:
        p["quantiles"][str(q)].append(round(quantile(vals, q), 6) if vals else None)
    p["weights"].append([None if x is None else round(x, 6) for x in w])
    p["n_eff"].append(round(sum(n_eff) / len(n_eff), 6) if n_eff else None)
    if len(p["steps"]) > MAX_POINTS:
        for key in ("steps", "loss", "weights", "n_eff", "times"):
            p[key].pop(0)
        for q in p["quantiles"].values():
            q.pop(0)
        p["dropped_points"] += 1
    return p


def add_probe(p: dict, step: int, tokens: Sequence[str], values: Sequence[float]) -> dict:
    """One ribbon row: the probe completion's per-token divergence at ``step``."""
    if len(tokens) != len(values):
        from madopd.errors import ShapeError

        raise ShapeError(f"probe: {len(tokens)} tokens but {len(values)} values")
    p["probe"]["tokens"] = list(tokens)
    p["probe"]["steps"].append(step)
    p["probe"]["rows"].append([round(float(v), 6) for v in values])
    return p


RUN_KEYS = ("teacher_names", "colors", "steps", "loss", "quantiles", "weights", "n_eff")


def run_records(source) -> list[StepRecord]:
    """The StepRecords of ``source``: a sequence of records, or a run folder (read-only, through
    ``runs.load_run``: its ``records/`` files)."""
    from pathlib import Path

    if isinstance(source, (str, Path)):
        from madopd.runs import load_run

        return list(load_run(source).records)
    return list(source)


def run_series(name: str, records: Sequence[StepRecord]) -> dict:
    """One overlay: ``name`` and the chart series of ``records`` (the payload's own keys)."""
    p = dashboard_payload(records=records)
    return {"name": str(name), **{k: p[k] for k in RUN_KEYS}}


def set_run(p: dict, name: str, records: Sequence[StepRecord]) -> dict:
    """Overlay (or replace, by name) another run's curves on the dashboard's charts."""
    return put_run(p, run_series(name, records))


def put_run(p: dict, series: dict) -> dict:
    """Add ``series`` (a ``run_series`` dict) to ``p["runs"]``, replacing one of the same name."""
    if series["name"] == p.get("name", "this run"):
        from madopd.errors import ConfigError

        raise ConfigError(f"overlay name {series['name']!r} is this dashboard's own run name; "
                          "pick another")
    runs = p.setdefault("runs", [])
    names = [r["name"] for r in runs]
    if series["name"] in names:
        runs[names.index(series["name"])] = series
    else:
        runs.append(series)
    return p


# ------------------------------------------------------------------------ static render
def nice_ticks(lo: float, hi: float, n: int = 4) -> list[float]:
    """1-2-5 ticks covering [lo, hi] (about ``n``) for the static render (plotly ticks the live one)."""
    import math

    if not hi > lo:
        d = abs(lo) * 0.1 if lo else 1.0
        lo, hi = lo - d, hi + d
    raw = (hi - lo) / n
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 5, 10) if m * mag >= raw)
    out, v = [], math.ceil(lo / step - 1e-9) * step
    while v <= hi + step * 1e-9:
        out.append(0.0 if abs(v) < step * 1e-9 else v)
        v += step
    return out


LOSS_COLOR, NEFF_COLOR = "#0072B2", "#CC79A7"
RUN_COLORS = (LOSS_COLOR, "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9")  # dashboard.js
QUANTILE_COLORS = ("#7fcdbb", "#41b6c4", "#1d91c0", "#D55E00")
_TXT = 'style="fill:var(--jp-ui-font-color1, #222)" font-size="10"'


def _line_svg(title: str, xs: list, series: list[tuple[str, list, str]], w=300, h=150,
              include: Sequence[float] = ()) -> str:
    """A chart: title row (outside the plot) with each series' last value, then an SVG with
    axes, ticks, a y range fitted to the data (±5 %) and widened to span ``include`` (a
    quantity's natural bounds), one polyline per series."""
    def last(ys):
        return next((v for v in reversed(ys) if v is not None), None)

    chips = "".join(f'<span style="display:inline-flex;align-items:center;gap:3px;margin-left:8px">'
                    f'<span style="display:inline-block;width:10px;height:10px;background:{c}"></span>'
                    f"{esc(n)} {esc(fmt(last(ys), 4))}</span>" for n, ys, c in series)
    head = f'<div style="font-size:11px;max-width:{w}px"><b>{esc(title)}</b>{chips}</div>'
    pts_all = [v for _, ys, _ in series for v in ys if v is not None]
    if not xs or not pts_all:
        return f'<div>{head}<div style="font-size:11px">no data yet</div></div>'
    L, R, T, B = 46, 8, 6, 24
    pw, ph = w - L - R, h - T - B
    x0, x1 = min(xs), max(xs)
    lo, hi = min(pts_all + list(include)), max(pts_all + list(include))
    pad = 0.05 * (hi - lo) if hi > lo else max(abs(hi) * 0.05, 1e-3)
    y0, y1 = lo - pad, hi + pad
    sx = lambda x: L + pw * ((x - x0) / (x1 - x0) if x1 > x0 else 0.5)
    sy = lambda y: T + ph * (1 - (y - y0) / (y1 - y0))
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" style="display:block">']
    for v in nice_ticks(y0, y1, 5):
        y = sy(v)
        if T - 0.5 <= y <= T + ph + 0.5:
            out.append(f'<line x1="{L}" x2="{L + pw}" y1="{y:.1f}" y2="{y:.1f}" stroke="#8884" />'
                       f'<text x="{L - 4}" y="{y + 3:.1f}" text-anchor="end" {_TXT}>'
                       f"{fmt(v, 0 if abs(v) >= 10 else 3)}</text>")
    for v in nice_ticks(x0, x1 if x1 > x0 else x0 + 1, 5):
        if x0 <= v <= x1 and v == int(v):
            out.append(f'<line x1="{sx(v):.1f}" x2="{sx(v):.1f}" y1="{T + ph}" y2="{T + ph + 4}" '
                       f'stroke="#888" /><text x="{sx(v):.1f}" y="{T + ph + 14}" '
                       f'text-anchor="middle" {_TXT}>{int(v)}</text>')
    out.append(f'<line x1="{L}" x2="{L}" y1="{T}" y2="{T + ph}" stroke="#888" />'
               f'<line x1="{L}" x2="{L + pw}" y1="{T + ph}" y2="{T + ph}" stroke="#888" />'
               f'<text x="{L + pw}" y="{h - 1}" text-anchor="end" {_TXT}>step</text>')
    for name, ys, color in series:
        pts = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in zip(xs, ys) if y is not None)
        out.append(f'<polyline points="{pts}" fill="none" stroke="{color}" stroke-width="1.8">'
                   f"<title>{esc(name)}</title></polyline>")
    out.append("</svg>")
    return f'<div>{head}{"".join(out)}</div>'


def render_dashboard_html(p: dict) -> str:
    names = p["teacher_names"]
    xs = p["steps"]
    qs = [(f"p{round(float(q) * 100)}", v, QUANTILE_COLORS[i % 4])
          for i, (q, v) in enumerate(p["quantiles"].items())]
    wser = [(n, [None if row[k] is None else row[k] for row in p["weights"]], teacher_color(k))
            for k, n in enumerate(names)]
    runs = p.get("runs", [])
    loss = [(p.get("name", "this run") if runs else "loss", p["loss"], LOSS_COLOR)]
    for i, r in enumerate(runs):  # overlays: their loss on the same steps (missing steps: gaps)
        by_step = dict(zip(r["steps"], r["loss"]))
        loss.append((r["name"], [by_step.get(s) for s in xs], RUN_COLORS[(i + 1) % len(RUN_COLORS)]))
    charts = [
        _line_svg("loss", xs, loss),
        _line_svg("per-token D(p_k‖q) quantiles", xs, qs),
        _line_svg("teacher weights (batch mean)", xs, wser, include=(0.0, 1.0)),
        _line_svg("effective number of teachers", xs, [("n_eff", p["n_eff"], NEFF_COLOR)],
                  include=(1.0, float(max(1, len(names))))),
    ]
    ribbon = ""
    pr = p["probe"]
    if pr["rows"]:
        vmax = clip_max([v for row in pr["rows"] for v in row])
        cells = []
        for s, row in zip(pr["steps"], pr["rows"]):
            tds = "".join(f'<td title="step {s} t={t} D={fmt(v, 4)}" style="background:'
                          f'{seq_color(v, vmax)};width:14px;height:10px"></td>'
                          for t, v in enumerate(row))
            cells.append(f'<tr><th style="font:9px sans-serif;text-align:right">{s}</th>{tds}</tr>')
        toks = "".join(f'<th style="font:9px monospace;writing-mode:vertical-rl">{token_html(t)}'
                       "</th>" for t in pr["tokens"])
        ribbon = (f'<div>probe ribbon (rows = steps, columns = probe tokens)</div>'
                  f'{legend_html("probe D", vmax)}<table class="madopd-ribbon" '
                  f'style="border-collapse:collapse"><tr><th></th>{toks}</tr>{"".join(cells)}</table>')
    dropped = f", {p['dropped_points']} older points dropped" if p["dropped_points"] else ""
    total = p.get("total_steps")
    prog = f" of {total}" if total else ""
    return ('<div class="madopd-static madopd-dashboard" style="font:12px sans-serif;'
            'color:var(--jp-ui-font-color1, #222)">'
            f"<div>Training dashboard (static render): {len(xs)} steps{prog}{dropped}</div>"
            f"{banner_html(p.get('banner'))}{teacher_legend_html(names)}"
            f'<div style="display:flex;flex-wrap:wrap;gap:10px">{"".join(charts)}</div>{ribbon}</div>')


PNG_CHART_W, PNG_CHART_H = 280, 110


def _line_png(cv, x: int, y: int, xs: list, series: list[tuple[str, list, str]]) -> None:
    """One chart: a light grid (quarters), then each series as a polyline in its colour, scaled
    like ``_line_svg`` (y from min(0, min) to max; x from the first to the last step)."""
    w, h = PNG_CHART_W, PNG_CHART_H
    for i in range(1, 4):
        cv.hline(x, x + w - 1, y + h * i // 4, "#eeeeee")
        cv.vline(x + w * i // 4, y, y + h - 1, "#eeeeee")
    cv.outline(x, y, w, h, "#dddddd")
    pts_all = [v for _, ys, _ in series for v in ys if v is not None]
    if not xs or not pts_all:
        return
    x0, x1 = min(xs), max(xs)
    y0, y1 = min(0.0, min(pts_all)), max(pts_all) or 1.0
    sx = lambda v: x + 4 + (w - 8) * ((v - x0) / (x1 - x0) if x1 > x0 else 0.5)
    sy = lambda v: y + h - 14 - (h - 26) * ((v - y0) / (y1 - y0) if y1 > y0 else 0.5)
    for _, ys, color in series:
        pts = [(round(sx(a)), round(sy(b))) for a, b in zip(xs, ys) if b is not None]
        for (ax, ay), (bx, by) in zip(pts, pts[1:]):
            cv.line(ax, ay, bx, by, color)
        if len(pts) == 1:
            cv.set(*pts[0], color)


def render_dashboard_png(p: dict) -> bytes:
    """PNG of the dashboard (colours only): 2 × 2 charts — loss (black), divergence quantiles
    (sequential-scale colours), teacher weights (teacher colours), n_eff — as polylines on a
    grid, then the probe ribbon (rows = scored steps, one cell per probe token, the HTML's
    scale and p99 clip) with its legend."""
    from madopd.widgets import png

    names, xs = p["teacher_names"], p["steps"]
    qs = [(f"p{q}", v, SEQUENTIAL[2 + i * 2]) for i, (q, v) in enumerate(p["quantiles"].items())]
    wser = [(n, [row[k] for row in p["weights"]], teacher_color(k)) for k, n in enumerate(names)]
    charts = [[("loss", p["loss"], LOSS_COLOR)], qs, wser, [("n_eff", p["n_eff"], NEFF_COLOR)]]
    rows = p["probe"]["rows"]
    n_tok = max([len(r) for r in rows] + [0])
    y_rib = png.MARGIN + 2 * (PNG_CHART_H + png.MARGIN)
    width = max(png.MARGIN + 2 * (PNG_CHART_W + png.MARGIN),
                png.MARGIN + n_tok * (png.CELL_W + png.GAP) + png.MARGIN)
    cv = png.Canvas(width, y_rib + (png.rows_height(len(rows)) + png.LEGEND_H + 6
                                    if rows else 0) + png.MARGIN)
    for i, series in enumerate(charts):
        _line_png(cv, png.MARGIN + (i % 2) * (PNG_CHART_W + png.MARGIN),
                  png.MARGIN + (i // 2) * (PNG_CHART_H + png.MARGIN), xs, series)
    if rows:
        vmax = clip_max([v for row in rows for v in row])
        for r, row in enumerate(rows):
            png.heat_row(cv, png.MARGIN, y_rib + png.rows_height(r),
                         [seq_color(v, vmax) for v in row])
        png.gradient_bar(cv, png.MARGIN + 1, y_rib + png.rows_height(len(rows)) + 2,
                         lambda f: seq_color(f * vmax, vmax))
    return cv.to_png()
