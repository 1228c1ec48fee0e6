"""Per-token loss decomposition by teacher (any K), with "what if equal weights".

The MAD-OPD loss at token t is Σ_k w_k(t)·D(p_k ‖ q)(t) (paper Eq. 8). Each teacher's share
c_k(t) = w_k(t)·D_k(t) is drawn as a stacked bar in the teacher's colour; the equal-weights
counterfactual is (1/K)·Σ_k D_k(t), and the signed difference (actual − equal) uses a diverging
scale centred at 0 (red: the confidence weights made this token's loss larger).
"""

from __future__ import annotations

from madopd.errors import ValueRangeError
from madopd.types import StepRecord
from madopd.widgets.style import (
    clip_abs,
    clip_max,
    div_color,
    esc,
    fmt,
    legend_html,
    seq_color,
    teacher_color,
    teacher_legend_html,
    text_color,
    token_html,
)

NOISE_FLOOR = 1e-3  # the diverging scale spans at least 0.1 % of the largest token loss


def diff_scale(payload: dict) -> float:
    """Half-width of the actual − equal scale: p99 of |diff|, but never below NOISE_FLOOR × the
    largest token loss, so ±1e-6 float noise stays white instead of fully saturated."""
    top = max([abs(x) for x in payload["total"]] + [abs(x) for x in payload["equal"]] + [0.0])
    return max(clip_abs(payload["diff"]), NOISE_FLOOR * top, 1e-12)


def decomposition_payload(record: StepRecord, sample: int = 0) -> dict:
    if not 0 <= sample < len(record.responses):
        raise ValueRangeError(f"sample must be in [0, {len(record.responses)}), got {sample}")
    b = sample
    div = record.per_token_divergence[b]  # [T][K]
    K = len(record.teacher_names)
    if record.token_weights is not None:
        w = record.token_weights[b]  # [T][K]
    else:
        w = [list(record.weights[b])] * len(div)
    contrib = [[round(wt[k] * dt[k], 6) for k in range(K)] for wt, dt in zip(w, div)]
    equal = [round(sum(dt) / K, 6) for dt in div]
    total = [round(sum(c), 6) for c in contrib]
    payload = {
        "kind": "decomposition", "version": 1, "step": record.step,
        "state_id": record.state_ids[b] if b < len(record.state_ids) else str(b),
        "teacher_names": list(record.teacher_names),
        "colors": [teacher_color(k) for k in range(K)],
        "tokens": list(record.response_tokens[b]),
        "weights": [[round(x, 6) for x in row] for row in w],
        "div": [[round(x, 6) for x in row] for row in div],
        "contrib": contrib, "total": total, "equal": equal,
        "diff": [round(a - e, 6) for a, e in zip(total, equal)],
        "recorded_loss": [round(x, 6) for x in record.per_token_loss[b]],
        "per_token_weights": record.token_weights is not None,
    }
    payload["diff_scale"] = diff_scale(payload)
    return payload


def _bars_svg(contrib: list[list[float]], top: float, width_per: int = 14, height: int = 90) -> str:
    T = len(contrib)
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{T * width_per}" height="{height}" '
             'style="display:block">']
    for t, row in enumerate(contrib):
        y = float(height)
        for k, c in enumerate(row):
            hh = height * c / top if top > 0 else 0.0
            y -= hh
            parts.append(f'<rect class="madopd-seg" data-t="{t}" data-teacher="{k}" '
                         f'x="{t * width_per + 1}" y="{y:.2f}" width="{width_per - 2}" '
                         f'height="{hh:.2f}" fill="{teacher_color(k)}"/>')
    parts.append("</svg>")
    return "".join(parts)


def render_decomposition_html(payload: dict, *, max_tokens: int = 300) -> str:
    """Stacked bars (actual weights), the equal-weights totals and the signed difference strip."""
    T = min(len(payload["tokens"]), max_tokens)
    contrib = payload["contrib"][:T]
    top = max([sum(r) for r in contrib] + payload["equal"][:T] + [1e-12])
    vabs = payload.get("diff_scale") or diff_scale(payload)
    diff_spans = "".join(
        f'<span class="madopd-tok" data-t="{t}" title="t={t} actual−equal={fmt(d, 4)}" '
        f'style="background:{div_color(d, vabs)};color:{text_color(div_color(d, vabs))};'
        'display:inline-block;width:12px;margin:0 1px;font:10px monospace;overflow:hidden;'
        f'white-space:pre;text-align:center">{token_html(tok)}</span>'
        for t, (tok, d) in enumerate(zip(payload["tokens"][:T], payload["diff"][:T])))
    note = (f'<div style="color:#a00">showing {T} of {len(payload["tokens"])} tokens</div>'
            if T < len(payload["tokens"]) else "")
    tot, eq = sum(payload["total"]), sum(payload["equal"])
    return (
        '<div class="madopd-static madopd-decomposition" style="font:12px sans-serif">'
        f'<div>Per-token loss by teacher — step {esc(payload["step"])}, state '
        f'{esc(payload["state_id"])} (static render). Σ loss: actual {fmt(tot)} vs equal '
        f"weights {fmt(eq)}</div>{teacher_legend_html(payload['teacher_names'])}{note}"
        f'<div style="overflow-x:auto">{_bars_svg(contrib, top)}'
        f'<div style="white-space:nowrap">{diff_spans}</div></div>'
        f'{legend_html("actual − equal weights", vabs, signed=True)}</div>')


def render_decomposition_png(payload: dict, *, max_tokens: int = 300, bars_h: int = 40) -> bytes:
    """PNG of the decomposition (colours only): one heat row per teacher of its share
    c_k(t) = w_k·D_k (sequential scale, p99 clip over all shares; the teacher's colour as a left
    bar), the signed actual − equal row (the diverging scale of the HTML), the stacked bars in
    teacher colours (same top as the HTML), then the two scale legends."""
    from madopd.widgets import png

    T = min(len(payload["tokens"]), max_tokens)
    K = len(payload["teacher_names"])
    contrib = payload["contrib"][:T]  # [T][K]
    cmax = clip_max([v for row in payload["contrib"] for v in row])
    vabs = payload.get("diff_scale") or diff_scale(payload)
    top = max([sum(r) for r in contrib] + payload["equal"][:T] + [1e-12])
    x0 = png.MARGIN + png.BAR_W + png.BAR_GAP
    pitch = png.CELL_W + png.GAP
    width = max(x0 + T * pitch, png.MARGIN + png.LEGEND_W + 2) + png.MARGIN
    y_diff = png.MARGIN + png.rows_height(K) + png.MARGIN
    y_bars = y_diff + png.rows_height(1) + png.MARGIN
    y_leg = y_bars + bars_h + png.MARGIN
    cv = png.Canvas(width, y_leg + 2 * (png.LEGEND_H + 4) + png.MARGIN)
    for k in range(K):
        y = png.MARGIN + png.rows_height(k)
        cv.fill_rect(png.MARGIN, y, png.BAR_W, png.CELL_H, teacher_color(k))
        png.heat_row(cv, x0, y, [seq_color(row[k], cmax) for row in contrib])
    png.heat_row(cv, x0, y_diff, [div_color(d, vabs) for d in payload["diff"][:T]])
    for t, row in enumerate(contrib):
        base = y_bars + bars_h  # stack upwards from the baseline, teacher 0 at the bottom
        for k, c in enumerate(row):
            hh = int(round(bars_h * c / top))
            cv.fill_rect(x0 + t * pitch, base - hh, png.CELL_W, hh, teacher_color(k))
            base -= hh
    cv.hline(x0, max(x0, x0 + T * pitch - 1), y_bars + bars_h, "#999999")
    png.gradient_bar(cv, png.MARGIN + 1, y_leg + 1, lambda f: seq_color(f * cmax, cmax))
    png.gradient_bar(cv, png.MARGIN + 1, y_leg + png.LEGEND_H + 5,
                     lambda f: div_color((2 * f - 1) * vabs, vabs))
    return cv.to_png()
