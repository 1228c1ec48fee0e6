"""Debate board: teachers × rounds, confidence badges, τ-weights, round-to-round changes, and the
student's tokens coloured by each teacher's divergence.

The weights shown are softmax(c/100/τ) of the final-round confidences (paper Eqs. 6-7) with the
run's missing-tag policy; the browser recomputes them when τ moves (``divmath.js``).
"""

from __future__ import annotations

import difflib
import re

from madopd.errors import ValueRangeError
from madopd.types import StepRecord, Transcript
from madopd.widgets import divmath
from madopd.widgets.health import confidence_counts, missing_banner
from madopd.widgets.style import (
    banner_html,
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

POLICIES = ("uniform", "drop_teacher", "skip_sample")
# Where a confidence came from (DebateMessage.confidence_source, madopd.confidence.SOURCES): a
# written tag is the teacher's own number; the others are fallbacks the run computed for it.
SOURCE_LABELS = {"tag": "written", "forced_tag": "fallback: forced tag",
                 "forced_ask": "fallback: asked", "answer_logprob": "fallback: answer log-prob",
                 None: "source not recorded"}


def source_label(source: str | None) -> str:
    return SOURCE_LABELS.get(source, f"fallback: {source}")


def norm_answer(a: str) -> str:
    """Answers compare after lower-casing and collapsing whitespace (JS: normAnswer)."""
    return re.sub(r"\s+", " ", a.strip().lower())


def debate_payload(transcript: Transcript, *, record: StepRecord | None = None,
                   sample: int | None = None, tau: float = 1.0,
                   policy: str = "uniform", reference: str | None = None) -> dict:
    """Payload for one debate; with ``record`` + ``sample`` also the student's per-token view."""
    if tau <= 0:
        raise ValueRangeError(f"tau must be > 0, got {tau}")
    if policy not in POLICIES:
        raise ValueRangeError(f"policy must be one of {POLICIES}, got {policy!r}")
    names = list(transcript.teacher_names)
    K, R = len(names), transcript.rounds
    cells = []
    for k in range(K):
        row = []
        for r in range(1, R + 1):
            m = transcript.turn(k, r)
            prev = transcript.turn(k, r - 1).answer if r > 1 else None
            row.append({"text": m.text, "answer": m.answer, "confidence": m.confidence,
                        "source": None if m.confidence is None else m.confidence_source,
                        "source_label": None if m.confidence is None else source_label(m.confidence_source),
                        "changed": prev is not None and norm_answer(prev) != norm_answer(m.answer)})
        cells.append(row)
    agree = [len({norm_answer(cells[k][r]["answer"]) for k in range(K)}) == 1 for r in range(R)]
    payload = {
        "kind": "debate", "version": 1, "state_id": transcript.state_id,
        "teacher_names": names, "colors": [teacher_color(k) for k in range(K)],
        "rounds": R, "cells": cells, "agree": agree, "tau": float(tau), "policy": policy,
        "final_confidences": transcript.final_confidences(), "reference": reference,
        "student": None, "banner": missing_banner(confidence_counts([transcript]), policy),
        "prompt": None,
    }
    if record is not None:
        b = 0 if sample is None else sample
        if not 0 <= b < len(record.responses):
            raise ValueRangeError(f"sample must be in [0, {len(record.responses)}), got {b}")
        payload["prompt"] = record.prompts[b]
        payload["student"] = {
            "prompt": record.prompts[b], "response": record.responses[b],
            "tokens": list(record.response_tokens[b]),
            "div": [[round(float(v), 6) for v in row] for row in record.per_token_divergence[b]],
            "recorded_weights": list(record.weights[b]),
            "correct": record.correct[b] if b < len(record.correct) else None,
        }
    payload["weights"] = divmath.confidence_weights(payload["final_confidences"], tau, policy) \
        if R > 0 else None
    return payload


# ------------------------------------------------------------------------ static render
def _diff_html(old: str, new: str) -> str:
    a, b = old.split(), new.split()
    out = []
    for op, i1, i2, j1, j2 in difflib.SequenceMatcher(a=a, b=b, autojunk=False).get_opcodes():
        if op in ("delete", "replace"):
            out.append(f'<span style="background:#f4a582;color:#111;text-decoration:line-through">'
                       f'{esc(" ".join(a[i1:i2]))}</span>')
        if op in ("insert", "replace"):
            out.append(f'<span style="background:#92c5de;color:#111">{esc(" ".join(b[j1:j2]))}</span>')
        if op == "equal":
            out.append(esc(" ".join(a[i1:i2])))
    return " ".join(out)


def _badge(conf, k: int, label: str | None = None) -> str:
    if conf is None:
        return ('<span style="background:#777;color:#fff;border-radius:8px;padding:0 6px;'
                'font-size:10px">confidence missing</span>')
    fallback = label is not None and label != "written"
    style = "border:1px dashed currentColor;" if fallback else ""
    return (f'<span class="madopd-badge" data-source="{esc(label or "")}" style="{style}'
            f'background:{teacher_color(k)};color:{text_color(teacher_color(k))};'
            f'border-radius:8px;padding:0 6px;font-size:10px">conf {fmt(conf, 0)}'
            f'{f" ({esc(label)})" if label else ""}</span>')


def render_debate_html(payload: dict) -> str:
    """Inline-styled HTML table (teachers × rounds) + weights + student strips."""
    names, R, cells = payload["teacher_names"], payload["rounds"], payload["cells"]
    head = "".join(
        f'<th style="border:1px solid var(--jp-border-color2, #ddd);padding:3px">round {r + 1}'
        f'{" (agree)" if payload["agree"][r] else " (disagree)"}</th>' for r in range(R))
    rows = []
    w = payload["weights"]
    for k, name in enumerate(names):
        tds = []
        for r in range(R):
            c = cells[k][r]
            diff = (f'<div style="font-size:10px;color:var(--jp-ui-font-color2, #555)">changed: '
                    f'{_diff_html(cells[k][r - 1]["answer"], c["answer"])}</div>'
                    if c["changed"] else "")
            tds.append(
                f'<td class="madopd-cell" data-teacher="{k}" data-round="{r + 1}" '
                f'style="border:1px solid var(--jp-border-color2, #ddd);padding:4px;vertical-align:top;max-width:320px;overflow-wrap:anywhere'
                f'{";box-shadow:inset 3px 0 0 #CC79A7" if c["changed"] else ""}">'
                f'{_badge(c["confidence"], k, c.get("source_label"))} <b>{esc(c["answer"])}</b>{diff}'
                f'<div style="white-space:pre-wrap;word-break:break-word;color:var(--jp-ui-font-color1, #444);'
                f'font-size:11px;max-height:120px;overflow:auto">{esc(c["text"])}</div></td>')
        wtxt = "skipped" if w is None else f"w = {fmt(w[k])}"
        wbar = "" if w is None else (f'<span style="display:inline-block;height:8px;width:'
                                     f'{80 * w[k]:.1f}px;background:{teacher_color(k)}"></span>')
        rows.append(
            f'<tr><th style="border:1px solid var(--jp-border-color2, #ddd);padding:3px;text-align:left;border-left:4px '
            f'solid {teacher_color(k)}">{esc(name)}<br><span style="font-weight:normal">{wtxt} '
            f"{wbar}</span></th>{''.join(tds)}</tr>")
    table = (f'<table style="border-collapse:collapse;font-size:11px"><tr><th></th>{head}</tr>'
             f"{''.join(rows)}</table>")
    student = ""
    st = payload["student"]
    if st:
        vmax = clip_max([v for row in st["div"] for v in row])
        strips = []
        for k, name in enumerate(names):
            spans = "".join(
                f'<span class="madopd-tok" data-teacher="{k}" data-t="{t}" title="t={t} '
                f'D={fmt(row[k], 4)}" style="background:{seq_color(row[k], vmax)};color:'
                f'{text_color(seq_color(row[k], vmax))};font:12px/1.5 monospace;white-space:pre;'
                f'display:inline-block;margin:0 1px 1px 0;padding:0 1px">{token_html(tok)}</span>'
                for t, (tok, row) in enumerate(zip(st["tokens"], st["div"])))
            strips.append(
                f'<div style="display:flex;gap:6px"><div style="width:110px;flex:none;'
                f'text-align:right;border-right:4px solid {teacher_color(k)};padding-right:4px">'
                f'{esc(name)}</div><div style="display:flex;flex-wrap:wrap">{spans}</div></div>')
        student = (f'<div style="margin-top:6px"><b>student</b> (correct: '
                   f'{esc(st["correct"])}) tokens coloured by D(p_k‖q):</div>'
                   f'{legend_html("D per token", vmax)}{"".join(strips)}')
    return (
        '<div class="madopd-static madopd-debate" style="font:12px sans-serif;'
        'color:var(--jp-ui-font-color1, #222)">'
        f'<div>Debate board — state {esc(payload["state_id"])}, τ = {payload["tau"]:g}, '
        f'missing-tag policy {esc(payload["policy"])} (static render)</div>'
        f"{_context_html(payload)}{banner_html(payload.get('banner'))}{teacher_legend_html(names)}{table}{student}</div>")


def _context_html(payload: dict) -> str:
    """What the debate was about: the student's prompt (its last lines) and the reference."""
    prompt, ref = payload.get("prompt"), payload.get("reference")
    box = "white-space:pre-wrap;font:11px monospace;max-height:90px;overflow:auto;margin:2px 0"
    return (f'<div class="madopd-context"><div>prompt:</div><div class="madopd-prompt" style="{box}">'
            f'{esc("– (not recorded)" if prompt is None else prompt[-600:])}</div>'
            f'<div>reference: <b class="madopd-reference">{esc("– (not given)" if ref is None else ref)}'
            f"</b></div></div>")


ROUND_W = 40  # width of one round's confidence box in the PNG


def render_debate_png(payload: dict) -> bytes:
    """PNG of the board (colours only). Every teacher row has its fixed colour as a left bar.
    Top: the student's tokens as teacher × token heat rows of D(p_k‖q) (the HTML's scale and
    p99 clip); middle: the τ-weights as bars of 80·w_k px; bottom: teachers × rounds boxes filled
    to confidence/100 in the teacher's colour (grey box: confidence missing; pink outline: the
    answer changed this round, as the HTML's pink edge); last the D scale legend."""
    from madopd.widgets import png

    names, R = payload.get("teacher_names", []), payload.get("rounds", 0)
    K, st, w = len(names), payload.get("student"), payload.get("weights")
    cells = payload.get("cells", [])
    div = st["div"] if st else []  # [T][K]
    vmax = clip_max([v for row in div for v in row])
    x0, pitch = png.MARGIN + png.BAR_W + png.BAR_GAP, png.CELL_W + png.GAP
    y_w = png.MARGIN + (png.rows_height(K) + png.MARGIN if st else 0)
    y_r = y_w + png.rows_height(K) + png.MARGIN
    y_leg = y_r + png.rows_height(K) + png.MARGIN
    width = max(x0 + len(div) * pitch, x0 + 80, x0 + R * (ROUND_W + png.GAP),
                png.MARGIN + png.LEGEND_W + 2) + png.MARGIN
    cv = png.Canvas(width, y_leg + (png.LEGEND_H + 4 if st else 0) + png.MARGIN)
    for k in range(K):
        color, dy = teacher_color(k), png.rows_height(k)
        for y in ((png.MARGIN + dy) if st else None, y_w + dy, y_r + dy):
            if y is not None:
                cv.fill_rect(png.MARGIN, y, png.BAR_W, png.CELL_H, color)
        if st:
            png.heat_row(cv, x0, png.MARGIN + dy, [seq_color(row[k], vmax) for row in div])
        if w is not None:
            cv.fill_rect(x0, y_w + dy, int(round(80 * w[k])), png.CELL_H, color)
        for r in range(R):
            c, x = cells[k][r], x0 + r * (ROUND_W + png.GAP)
            if c["confidence"] is None:
                cv.fill_rect(x, y_r + dy, ROUND_W, png.CELL_H, "#777777")
            else:
                cv.fill_rect(x, y_r + dy, int(round(ROUND_W * c["confidence"] / 100)),
                             png.CELL_H, color)
            cv.outline(x, y_r + dy, ROUND_W, png.CELL_H, "#CC79A7" if c["changed"] else "#dddddd")
    if st:
        png.gradient_bar(cv, png.MARGIN + 1, y_leg + 1, lambda f: seq_color(f * vmax, vmax))
    return cv.to_png()
