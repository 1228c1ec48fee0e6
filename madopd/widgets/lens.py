"""Divergence lens: one student completion as token strips coloured by per-token FKL, RKL, JSD(β).

Payload per response token t (top-k only, rounded to 6 decimals):
  cand.ids/text  candidate ids: the student's top-k, then each teacher's top-k ids not seen yet
  cand.s         student log-prob of each candidate, or None where unknown
  cand.t[k]      teacher k's log-prob of each candidate, or None where unknown
Per-token divergences are computed on the coarse-grained support of ``divmath.buckets``
(candidates known on both sides + one "rest" bucket), a lower bound of the dense value that
the browser recomputes for any β from the same numbers. The exact value the training loss used
(``StepRecord.per_token_divergence``) is shown as its own strip, "recorded".
"""

from __future__ import annotations

from collections.abc import Callable

from madopd.errors import ValueRangeError
from madopd.types import StepRecord
from madopd.widgets import divmath
from madopd.widgets.style import (
    clip_max,
    esc,
    fmt,
    legend_html,
    seq_color,
    teacher_color,
    teacher_legend_html,
    text_color,
    token_html,
)

LENS_KINDS = ("fkl", "rkl", "jsd")
LABELS = {"fkl": "forward KL(p‖q), top-k", "rkl": "reverse KL(q‖p), top-k", "jsd": "JSD(β), top-k",
          "recorded": "training loss D (recorded)"}
LOW_COVERAGE = 0.9  # mean top-k coverage below this: the top-k strips are a flagged lower bound
STATIC_MAX_TOKENS = 400  # static renders show at most this many tokens (the rest is counted)


def _r6(x):
    return None if x is None else round(float(x), 6)


def _decoder(decode) -> Callable[[int], str]:
    if decode is None:
        return lambda i: f"#{i}"
    if hasattr(decode, "decode"):
        return lambda i: decode.decode([int(i)])
    return decode


def lens_payload(record: StepRecord, sample: int = 0, *, beta: float = 0.5,
                 decode=None) -> dict:
    """Build the lens payload for sample ``sample`` of a step record.

    ``decode`` maps a token id to text (a callable or a tokenizer); without it candidates that
    are not the sampled token show as ``#id``.
    """
    if not 0.0 < beta < 1.0:
        raise ValueRangeError(f"beta must be in (0, 1), got {beta}")
    if not 0 <= sample < len(record.responses):
        raise ValueRangeError(f"sample must be in [0, {len(record.responses)}), got {sample}")
    dec = _decoder(decode)
    b, names = sample, list(record.teacher_names)
    K = len(names)
    tokens = [str(x) for x in record.response_tokens[b]]
    ids = [int(x) for x in record.response_ids[b]]
    T = len(tokens)
    cands = []
    have_topk = record.student_topk is not None and record.teacher_topk is not None
    for t in range(T):
        cands.append(_candidates(record, b, t, K, ids[t], tokens[t], dec) if have_topk else
                     {"ids": [], "text": [], "s": [], "t": [[] for _ in range(K)]})
    recorded = None
    if record.per_token_divergence and len(record.per_token_divergence) > b:
        recorded = [[_r6(v) for v in row] for row in record.per_token_divergence[b]]
    payload = {
        "kind": "lens", "version": 1, "step": record.step,
        "state_id": record.state_ids[b] if b < len(record.state_ids) else str(b),
        "prompt": record.prompts[b] if b < len(record.prompts) else "",
        "response": record.responses[b],
        "teacher_names": names, "colors": [teacher_color(k) for k in range(K)],
        "weights": list(record.weights[b]) if b < len(record.weights) else [],
        "tokens": tokens, "token_ids": ids, "cand": cands, "recorded": recorded,
        "has_topk": have_topk, "beta": float(beta), "window": 160,
    }
    payload["values"] = _rounded(lens_values(payload, beta)) if have_topk else None
    return payload


def _candidates(record, b, t, K, sampled_id, sampled_tok, dec) -> dict:
    order: list[int] = []
    s_lp: dict[int, float] = {}
    t_lp: list[dict[int, float]] = [{} for _ in range(K)]
    st = record.student_topk
    for i, lp in zip(st["ids"][b][t], st["logprobs"][b][t]):
        s_lp[int(i)] = float(lp)
        order.append(int(i))
    # Optional: the student's log-probs at each teacher's top-k ids (a dense student knows them).
    at_teacher = st.get("at_teacher")
    for k in range(K):
        tk = record.teacher_topk[k]
        for j, (i, lp) in enumerate(zip(tk["ids"][b][t], tk["logprobs"][b][t])):
            i = int(i)
            t_lp[k][i] = float(lp)
            if i not in s_lp and at_teacher is not None:
                s_lp[i] = float(at_teacher[k][b][t][j])
            if i not in order:
                order.append(i)
    return {
        "ids": order,
        "text": [sampled_tok if i == sampled_id else dec(i) for i in order],
        "s": [_r6(s_lp.get(i)) for i in order],
        "t": [[_r6(t_lp[k].get(i)) for i in order] for k in range(K)],
    }


def lens_values(payload: dict, beta: float) -> dict:
    """Per teacher, per token: bucketed FKL / RKL / JSD(β) and the teacher mass covered.

    Returns {"fkl": [K][T], "rkl": [K][T], "jsd": [K][T], "coverage": [K][T]} (what the JS
    recomputes when β moves).
    """
    K = len(payload["teacher_names"])
    out = {k: [[] for _ in range(K)] for k in (*LENS_KINDS, "coverage")}
    for c in payload["cand"]:
        for k in range(K):
            _, p, q = divmath.buckets(c["s"], c["t"][k])
            vals = divmath.divergences(p, q, beta)
            for kind in LENS_KINDS:
                out[kind][k].append(vals[kind])
            out["coverage"][k].append(1.0 - p[-1])
    return out


def _rounded(values: dict) -> dict:
    return {kind: [[round(v, 6) for v in row] for row in rows] for kind, rows in values.items()}


def token_detail(payload: dict, t: int, k: int, beta: float) -> list[dict]:
    """Rows of the click-a-token panel: each candidate's probabilities and contributions."""
    c = payload["cand"][t]
    idx, p, q = divmath.buckets(c["s"], c["t"][k])
    con = divmath.contributions(p, q, beta)
    rows = [{"text": c["text"][i], "id": c["ids"][i], "q": q[j], "p": p[j],
             **{kind: con[kind][j] for kind in LENS_KINDS}, "grad_fkl": q[j] - p[j]}
            for j, i in enumerate(idx)]
    rows.append({"text": "(rest)", "id": None, "q": q[-1], "p": p[-1],
                 **{kind: con[kind][-1] for kind in LENS_KINDS}, "grad_fkl": None})
    return rows


# ------------------------------------------------------------------------ static render
def _strip(label: str, tokens: list[str], values: list, vmax: float, kind: str, k: int) -> str:
    spans = []
    for t, (tok, v) in enumerate(zip(tokens, values)):
        bg = seq_color(v, vmax)
        spans.append(
            f'<span class="madopd-tok" data-kind="{kind}" data-teacher="{k}" data-t="{t}" '
            f'title="t={t} {esc(kind)}={fmt(v, 4)}" style="background:{bg};color:{text_color(bg)};'
            'font:12px/1.5 monospace;white-space:pre;padding:0 1px;margin:0 1px 1px 0;'
            f'border-radius:2px;display:inline-block">{token_html(tok)}</span>')
        if tok.endswith("\n"):  # line break after newline tokens: code keeps its shape
            spans.append('<span style="flex-basis:100%;height:0"></span>')
    return ('<div style="display:flex;gap:6px;align-items:flex-start;margin:2px 0">'
            f'<div style="width:160px;flex:none;text-align:right;font-size:11px">{label}</div>'
            f'<div style="display:flex;flex-wrap:wrap">{"".join(spans)}</div></div>')


def render_lens_html(payload: dict) -> str:
    """Inline-styled HTML: for each teacher, FKL / RKL / JSD(β) strips (+ the recorded value)."""
    names, beta = payload["teacher_names"], payload["beta"]
    T = len(payload["tokens"])
    shown = min(T, STATIC_MAX_TOKENS)
    tokens = payload["tokens"][:shown]
    vals = payload["values"]
    rec = payload["recorded"]
    series = {kind: [v for row in vals[kind] for v in row] for kind in LENS_KINDS} if vals else {}
    if rec:
        series["recorded"] = [v for row in rec for v in row]
    shared = payload.get("shared_scale", True)
    vmax = {kind: clip_max(s) for kind, s in series.items()}
    if shared and vmax:
        vmax = dict.fromkeys(vmax, max(vmax.values()))
    blocks = []
    for k, name in enumerate(names):
        head = (f'<div style="font-weight:bold;margin-top:6px;border-left:4px solid '
                f'{teacher_color(k)};padding-left:4px">teacher {k}: {esc(name)}</div>')
        strips = []
        for kind in LENS_KINDS if vals else ():
            lab = esc(LABELS[kind].replace("β", f"β={beta:g}"))
            strips.append(_strip(lab, tokens, vals[kind][k][:shown], vmax[kind], kind, k))
        if rec:
            strips.append(_strip(esc(LABELS["recorded"]), tokens,
                                 [row[k] for row in rec][:shown], vmax["recorded"], "recorded", k))
        if vals:
            cov = vals["coverage"][k]
            mean = sum(cov) / len(cov) if cov else 1.0
            badge = ('<span class="madopd-badge-lb" style="background:#D55E00;color:#fff;'
                     'border-radius:8px;padding:0 6px;font-size:10px" title="the top-k strips see only '
                     'the candidates both sides know; they underestimate the dense divergence">lower '
                     'bound</span> ' if mean < LOW_COVERAGE else "")
            strips.append(f'<div style="font-size:11px;margin:2px 0 2px 136px">{badge}top-k covers '
                          f'{100 * mean:.1f} % of the teacher\'s mass on average</div>')
            strips.append(_strip("top-k coverage", tokens, cov[:shown], 1.0, "coverage", k))
        blocks.append(head + "".join(strips))
    if shared and series:
        legends = legend_html("D per token, every strip", max(vmax.values()))
    else:
        legends = "".join(legend_html(LABELS[kind].replace("β", f"β={beta:g}"), vmax[kind])
                          for kind in series)
    if vals:
        legends += legend_html("top-k coverage", 1.0, suffix=" (all the mass)")
    note = (f'<div style="color:#a00">showing {shown} of {T} tokens ({T - shown} not shown)</div>'
            if shown < T else "")
    if not vals:
        note += ('<div style="color:#a00">no top-k cached in this record: only the recorded '
                 "divergence is shown</div>")
    return (
        '<div class="madopd-static madopd-lens" style="font:12px sans-serif;color:var(--jp-ui-font-color1, #222)">'
        f'<div>Divergence lens — step {esc(payload["step"])}, state {esc(payload["state_id"])} '
        "(static render; values on the shared top-k support + rest bucket)</div>"
        f'<div style="color:var(--jp-ui-font-color2, #555);white-space:pre-wrap;max-height:60px;overflow:auto">prompt: '
        f'{esc(payload["prompt"])}</div>'
        f"{teacher_legend_html(names)}{legends}{note}{''.join(blocks)}</div>")


def render_lens_png(payload: dict) -> bytes:
    """PNG of the static render (colours only, no text): per teacher (a bar in its colour at the
    left) one row per strip — FKL, RKL, JSD(β), then recorded D — one cell per token, coloured by
    the same scales as ``render_lens_html``; below, one scale legend per strip (0 -> p99 clip)."""
    from madopd.widgets import png

    shown = min(len(payload["tokens"]), STATIC_MAX_TOKENS)
    vals, rec = payload["values"], payload["recorded"]
    series = {kind: vals[kind] for kind in LENS_KINDS} if vals else {}
    if rec:
        series["recorded"] = [list(col) for col in zip(*rec)]  # [T][K] -> [K][T]
    vmax = {kind: clip_max([v for row in rows for v in row]) for kind, rows in series.items()}
    K = len(payload["teacher_names"])
    block = png.rows_height(len(series))
    legends = len(series) * (png.LEGEND_H + 4)
    x0 = png.MARGIN + png.BAR_W + png.BAR_GAP
    width = max(x0 + shown * (png.CELL_W + png.GAP), png.MARGIN + png.LEGEND_W + 2) + png.MARGIN
    cv = png.Canvas(width, 2 * png.MARGIN + K * (block + png.MARGIN) + legends)
    y = png.MARGIN
    for k in range(K):
        if block:
            cv.fill_rect(png.MARGIN, y, png.BAR_W, block - png.GAP, teacher_color(k))
        for i, (kind, rows) in enumerate(series.items()):
            row = rows[k][:shown] if k < len(rows) else []
            png.heat_row(cv, x0, y + png.rows_height(i), [seq_color(v, vmax[kind]) for v in row])
        y += block + png.MARGIN
    for kind in series:
        png.gradient_bar(cv, png.MARGIN + 1, y + 1, lambda f, m=vmax[kind]: seq_color(f * m, m))
        y += png.LEGEND_H + 4
    return cv.to_png()
