"""Failure-case finder: one row per (step, sample) of a run's step records, sortable/filterable.

Columns (all computed from StepRecord fields):
  loss        mean per-token loss of the sample
  div_mean    mean over tokens and teachers of D(p_k ‖ q)
  div_spread  mean over tokens of (max_k − min_k) D_k: how much the teachers disagree per token
  disagree    fraction of teachers whose final answer differs from the majority's
  w_entropy   entropy of the teacher weights (log K = uniform)
  max_conf    highest final confidence (None if all missing)
  correct     verifier score of the response (None if unknown)
  missing     number of missing confidence tags in the final round
  teacher_wrong  teachers whose final answer differs from the reference, with their confidence
                 ("B 90"); empty when every teacher is right, None without a reference
  conf_wrong  a teacher was confidently wrong: final confidence >= CONFIDENT and its answer is
              not the reference (the *teacher's* answer, not the student's)
  flipped     the debate flipped a teacher to wrong: right in round 1, wrong in the final round
  copied      the student copied a wrong teacher: the student is wrong and its answer is that
              teacher's final answer

References join on the state id (``madopd.types.step_state_id``); rows without one are counted
(payload ``references_missing``) and their teacher columns stay unknown (None).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence

from madopd.types import StepRecord
from madopd.widgets.board import norm_answer
from madopd.widgets.style import SEQUENTIAL, clip_max, esc, fmt, seq_color, text_color

COLUMNS = ("step", "sample", "state_id", "family", "loss", "div_mean", "div_spread", "disagree",
           "w_entropy", "max_conf", "correct", "missing", "teacher_wrong", "conf_wrong", "flipped",
           "copied", "response")
CONFIDENT = 80  # a final confidence at or above this counts as "confident"
NUMERIC = ("loss", "div_mean", "div_spread", "disagree", "w_entropy", "max_conf")
# Readable headers and their tooltips (the JS front end uses the same, from the payload).
LABELS = {"step": "step", "sample": "sample", "state_id": "state", "family": "family",
          "loss": "loss", "div_mean": "mean D", "div_spread": "teacher spread",
          "disagree": "answers differ", "w_entropy": "weight entropy", "max_conf": "top confidence",
          "correct": "correct", "missing": "missing tags", "teacher_wrong": "wrong teachers",
          "conf_wrong": "teacher confidently wrong", "flipped": "debate flipped to wrong",
          "copied": "student copied a wrong teacher",
          "response": "student answer"}
TIPS = {"loss": "mean per-token loss of the sample",
        "div_mean": "mean over tokens and teachers of D(p_k‖q)",
        "div_spread": "mean over tokens of max_k D_k − min_k D_k: how much the teachers disagree per token",
        "disagree": "share of teachers whose final answer differs from the majority's",
        "w_entropy": "entropy of the teacher weights (log K = uniform)",
        "max_conf": "highest final-round confidence (– if every tag is missing)",
        "correct": "verifier: ✓ correct, ✗ wrong, – unknown",
        "missing": "confidence tags missing in the final round",
        "teacher_wrong": "teachers whose final answer is not the reference, with their final confidence",
        "conf_wrong": "a teacher's final confidence ≥ 80 and its answer is not the reference",
        "flipped": "a teacher was right in round 1 and wrong in the final round",
        "copied": "the student is wrong and gave a wrong teacher's final answer",
        "response": "the student's sampled answer (hover for the full text)"}


# A column is "flat" (not shaded) when its spread is below float noise or below FLAT_REL of its
# magnitude: the sequential scale runs 0..p99, so a column like 0.6931, 0.6932, 0.6934 (or
# weight entropies 1.066..1.099, all near-uniform) would otherwise come out uniformly dark, a
# contrast the data does not have. The scale has 9 stops over its range, one stop ~ 12 %: a
# spread under 5 % is less than half a stop, no visible step, only a dark column.
FLAT_ABS = 1e-6
FLAT_REL = 0.05


def column_spread(rows: list[dict], c: str) -> tuple[float, float] | None:
    """(max − min, max |v|) of column ``c`` over the rows where it is known; None if none is."""
    vals = [float(r[c]) for r in rows if r.get(c) is not None and math.isfinite(r[c])]
    if not vals:
        return None
    return max(vals) - min(vals), max(abs(v) for v in vals)


def constant_columns(rows: list[dict], *, rel: float = FLAT_REL, tol: float = FLAT_ABS) -> list[str]:
    """Numeric columns whose spread is ≤ ``tol + rel · max|v|`` (constant up to float noise or
    to ``rel`` of their size): shown as plain numbers, never shaded (no false contrast)."""
    out = []
    for c in NUMERIC:
        sp = column_spread(rows, c)
        if sp is None or sp[0] <= tol + rel * sp[1]:
            out.append(c)
    return out


PREVIEW_CHARS = 160


def _mean(xs):
    xs = list(xs)
    return sum(xs) / len(xs) if xs else None


def sample_row(record: StepRecord, b: int) -> dict:
    div = record.per_token_divergence[b]  # [T][K]
    tr = record.transcripts[b] if b < len(record.transcripts) else None
    conf = tr.final_confidences() if tr is not None else []
    answers = [norm_answer(a) for a in tr.final_answers()] if tr is not None else []
    disagree = None
    if answers:
        top = Counter(answers).most_common(1)[0][1]
        disagree = 1.0 - top / len(answers)
    w = record.weights[b] if b < len(record.weights) else []
    present = [c for c in conf if c is not None]
    correct = record.correct[b] if b < len(record.correct) else None
    max_conf = max(present) if present else None
    r6 = lambda x: None if x is None else round(float(x), 6)
    return {
        "step": record.step, "sample": b,
        "state_id": record.state_ids[b] if b < len(record.state_ids) else str(b),
        "family": record.families[b] if b < len(record.families) else None,
        "loss": r6(_mean(record.per_token_loss[b])),
        "div_mean": r6(_mean(v for row in div for v in row)),
        "div_spread": r6(_mean(max(row) - min(row) for row in div if row)),
        "disagree": r6(disagree),
        "w_entropy": r6(-sum(x * math.log(x) for x in w if x > 0)) if w else None,
        "max_conf": max_conf, "correct": correct,
        "missing": sum(c is None for c in conf),
        "answers": [m.answer[:PREVIEW_CHARS] for m in tr.messages if m.round == tr.rounds]
        if tr is not None and tr.rounds else [],
        "confidences": conf,
        "first_answers": [m.answer[:PREVIEW_CHARS] for m in tr.messages if m.round == 1]
        if tr is not None and tr.rounds else [],
        "sources": [tr.turn(k, tr.rounds).confidence_source for k in range(len(tr.teacher_names))]
        if tr is not None and tr.rounds else [],
        "reference": None,
        "response": record.responses[b][:PREVIEW_CHARS],
        "truncated": len(record.responses[b]) > PREVIEW_CHARS,
    }


def judge_row(row: dict, reference: str | None, teacher_names: Sequence[str]) -> dict:
    """Mark each teacher's final (and round-1) answer right/wrong against ``reference`` and fill
    the teacher columns (see the module docstring); without a reference they stay None."""
    row["reference"] = None if reference is None else str(reference)[:PREVIEW_CHARS]
    if reference is None or not row["answers"]:
        row.update(teacher_right=None, teacher_wrong=None, conf_wrong=None, flipped=None, copied=None)
        return row
    ref = norm_answer(str(reference))
    right = [norm_answer(a) == ref for a in row["answers"]]
    first = [norm_answer(a) == ref for a in row["first_answers"]]
    conf = row["confidences"]
    wrong = [k for k, ok in enumerate(right) if not ok]
    name = lambda k: teacher_names[k] if k < len(teacher_names) else f"teacher {k}"
    row["teacher_right"] = right
    row["teacher_wrong"] = ", ".join(f"{name(k)} {'–' if conf[k] is None else fmt(conf[k], 0)}"
                                     for k in wrong)
    row["conf_wrong"] = any(conf[k] is not None and conf[k] >= CONFIDENT for k in wrong)
    row["flipped"] = any(k < len(first) and first[k] and not right[k] for k in range(len(right)))
    student = norm_answer(row["response_full"])
    row["copied"] = bool(row["correct"] == 0 and any(
        norm_answer(row["answers"][k]) == student for k in wrong))
    return row


def state_history(rows: list[dict]) -> dict[str, list[dict]]:
    """{state_id: [{step, sample, correct, copied}, ...] by step}: one state followed across the
    run (did the student learn what a wrong teacher said?)."""
    hist: dict[str, list[dict]] = {}
    for r in rows:
        hist.setdefault(r["state_id"], []).append(
            {"step": r["step"], "sample": r["sample"], "correct": r["correct"], "copied": r["copied"]})
    for v in hist.values():
        v.sort(key=lambda e: (e["step"], e["sample"]))
    return hist


def failures_payload(records: Sequence[StepRecord], references: dict | None = None) -> dict:
    """``references``: optional {state_id: reference answer} (ids as ``step_state_id`` makes
    them), joined to every row, shown beside the student's and used to judge the teachers."""
    names = list(records[0].teacher_names) if records else []
    rows = []
    for r in records:
        for b in range(len(r.responses)):
            if b < len(r.skipped) and r.skipped[b]:
                continue
            row = sample_row(r, b)
            row["response_full"] = r.responses[b]
            judge_row(row, (references or {}).get(row["state_id"]), names)
            del row["response_full"]
            rows.append(row)
    skipped = sum(sum(bool(s) for s in r.skipped) for r in records)
    missing_refs = sum(r["reference"] is None for r in rows) if references is not None else len(rows)
    return {"kind": "failures", "version": 2, "columns": list(COLUMNS), "numeric": list(NUMERIC),
            "rows": rows, "skipped_samples": skipped, "labels": LABELS, "tips": TIPS,
            "constant": constant_columns(rows), "flat_rel": FLAT_REL, "confident": CONFIDENT,
            "references_missing": missing_refs, "history": state_history(rows),
            "teacher_names": names}


def flat_note(flat) -> str:
    """The static table says which columns it leaves unshaded (and why), never silently."""
    names = [LABELS.get(c, c) for c in NUMERIC if c in set(flat)]
    return (f"; not shaded (spread under {round(100 * FLAT_REL)} % of the values): "
            f"{esc(', '.join(names))}") if names else ""


def render_failures_html(payload: dict, *, sort_by: str = "loss", max_rows: int = 50) -> str:
    """The table sorted by ``sort_by`` (descending), numeric cells shaded per column (p99 clip)."""
    rows = sorted(payload["rows"], key=lambda r: (r[sort_by] is None, -(r[sort_by] or 0)))
    vmax = {c: clip_max([r[c] for r in payload["rows"]]) for c in NUMERIC}
    const = set(payload.get("constant", constant_columns(payload["rows"])))
    head = "".join(f'<th title="{esc(TIPS.get(c, ""))}" style="border:1px solid #ddd;padding:2px 4px;'
                   f'background:var(--jp-layout-color2, #f4f4f4)">{esc(LABELS.get(c, c))}</th>'
                   for c in COLUMNS)
    body = []
    for r in rows[:max_rows]:
        tds = []
        for c in COLUMNS:
            v = r[c]
            style = "border:1px solid #ddd;padding:2px 4px"
            if c == "correct":
                txt = {1: "✓", 0: "✗"}.get(v, "–" if v is None else fmt(v, 2))
            elif c in ("conf_wrong", "flipped", "copied"):
                txt = "–" if v is None else "⚠ yes" if v else ""
            elif c == "teacher_wrong":
                txt = "–" if v is None else esc(v)
            elif c in NUMERIC and v is not None and c in const:  # flat: no false contrast
                style += ";text-align:right"
                txt = fmt(v)
            elif c in NUMERIC and v is not None:
                bg = seq_color(v, vmax[c])
                style += f";background:{bg};color:{text_color(bg)};text-align:right"
                txt = fmt(v)
            elif c == "response":
                style += ";text-align:left;white-space:pre;max-width:320px;overflow:hidden"
                txt = esc(v.replace("\r\n", "↵").replace("\n", "↵")) + ("…" if r["truncated"] else "")
            else:
                txt = esc("–" if v is None else v)
            tds.append(f'<td data-col="{c}" style="{style}">{txt}</td>')
        body.append(f'<tr class="madopd-row" data-step="{r["step"]}" data-sample="{r["sample"]}">'
                    f"{''.join(tds)}</tr>")
    more = len(rows) - min(len(rows), max_rows)
    return ('<div class="madopd-static madopd-failures" style="font:11px sans-serif;'
            'color:var(--jp-ui-font-color1, #222)">'
            f"<div>Failure-case finder (static render): {len(rows)} samples, sorted by "
            f"{esc(sort_by)} (descending){f'; {more} more not shown' if more else ''}; "
            f"{payload['skipped_samples']} skipped samples excluded; "
            f"{payload.get('references_missing', 0)} rows without a reference"
            f"{flat_note(const)}.</div>"
            f'<table style="border-collapse:collapse"><tr>{head}</tr>{"".join(body)}</table></div>')


def render_failures_png(payload: dict, *, sort_by: str = "loss", max_rows: int = 50) -> bytes:
    """PNG of the table's numeric shading (colours only): rows in the HTML's order, one cell per
    NUMERIC column, the same per-column scale and p99 clip (grey: value missing; a flat column,
    see ``constant_columns``, in the scale's lightest colour)."""
    from madopd.widgets import png

    rows = sorted(payload["rows"], key=lambda r: (r[sort_by] is None, -(r[sort_by] or 0)))
    vmax = {c: clip_max([r[c] for r in payload["rows"]]) for c in NUMERIC}
    n = min(len(rows), max_rows)
    cv = png.Canvas(2 * png.MARGIN + len(NUMERIC) * (png.CELL_W + png.GAP),
                    2 * png.MARGIN + png.rows_height(n) + 1)
    flat = set(payload.get("constant", constant_columns(payload["rows"])))
    for i, r in enumerate(rows[:n]):  # a flat column is drawn in the scale's lightest colour
        png.heat_row(cv, png.MARGIN, png.MARGIN + png.rows_height(i),
                     [SEQUENTIAL[0] if c in flat and r[c] is not None else seq_color(r[c], vmax[c])
                      for c in NUMERIC])
    return cv.to_png()
