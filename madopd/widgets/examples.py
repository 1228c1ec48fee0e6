"""EXAMPLE DATA ONLY: synthetic StepRecords and Transcripts for widget tests and docs.

Nothing here comes from a model. The records are internally consistent (top-k views are the
top-k of the same dense random distributions whose divergences fill ``per_token_divergence``),
and deliberately contain hostile "model text" (``<script>``, ``<img onerror>``, unbalanced tags,
control characters) so every renderer is exercised against it.
"""

from __future__ import annotations

import math

import numpy as np

from madopd.types import DebateMessage, StepRecord, Transcript

HOSTILE = (
    '<script>alert("pwned")</script>',
    "<img src=x onerror=alert(1)>",
    "</div></td><b>unclosed <i>tags",
    "&amp; \"quotes\" 'single' \x07bell",
)
EXAMPLE_TEACHERS = ("qwen-8b", "qwen-14b", "<b>llama</b>")
_PROMPTS = (
    "What is 17 + 25?",
    "Call the weather tool for Paris.",
    "Write add(a, b) in Python.",
    "Echo this string: " + HOSTILE[0],
)
_RESPONSES = (
    "17 + 25 = 42",
    '{"tool": "weather", "args": {"city": "Paris"}}',
    "def add(a, b):\n\treturn a + b",
    "Sure: " + HOSTILE[0] + " " + HOSTILE[1] + " " + HOSTILE[2],
)
_ANSWERS = (("42", "42", "43"), ("weather(Paris)", "weather(Paris)", "weather(paris)"),
            ("return a + b", "return a+b", "return a - b"), ("echo", HOSTILE[1], "echo"))
V = 256  # byte vocabulary: token id = byte value


def _log_softmax(x: np.ndarray) -> np.ndarray:
    m = x.max(-1, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(-1, keepdims=True))


def _dense_jsd(lp: np.ndarray, lq: np.ndarray, beta: float = 0.5) -> np.ndarray:
    """JSD_β(p‖q) over the last axis, float64 (matches madopd.divergence.jsd)."""
    p, q = np.exp(lp), np.exp(lq)
    lm = np.log(beta * p + (1 - beta) * q)
    return beta * (p * (lp - lm)).sum(-1) + (1 - beta) * (q * (lq - lm)).sum(-1)


def _topk(lp: np.ndarray, k: int) -> tuple[list, list]:
    idx = np.argsort(-lp, axis=-1, kind="stable")[..., :k]
    return idx.tolist(), np.take_along_axis(lp, idx, -1).tolist()


def example_transcript(state_id: str, answers: tuple[str, ...], teacher_names=EXAMPLE_TEACHERS,
                       rounds: int = 2, seed: int = 0, missing: bool = False) -> Transcript:
    """A debate where the dissenting teacher changes its answer in the last round (example data)."""
    rng = np.random.default_rng(seed)
    K = len(teacher_names)
    msgs = []
    for r in range(1, rounds + 1):
        for k in range(K):
            ans = answers[k % len(answers)]
            if r == rounds and k == K - 1:  # the dissenter converges to the majority
                ans = answers[0]
            conf = float(int(rng.integers(40, 100)))
            if missing and k == 1 and r == rounds:
                conf = None
            tag = "" if conf is None else f"\n<<CONFIDENCE={int(conf)}>>"
            text = f"Round {r}: I think the answer is {ans}.{tag}"
            msgs.append(DebateMessage(teacher=k, round=r, text=text, answer=f"{ans}",
                                      confidence=conf))
    return Transcript(state_id=state_id, teacher_names=list(teacher_names), rounds=rounds,
                      messages=msgs)


def example_record(step: int = 0, *, batch: int = 4, teacher_names=EXAMPLE_TEACHERS,
                   rounds: int = 2, k: int = 5, tau: float = 1.0, seed: int = 0,
                   progress: float = 0.0) -> StepRecord:
    """A synthetic StepRecord (EXAMPLE DATA). ``progress`` in [0, 1] lowers the divergences."""
    rng = np.random.default_rng(seed + 1000 * step)
    K = len(teacher_names)
    sharp = 6.5 + 2.0 * progress  # the student gets closer to the teachers as training goes on
    rec = dict(state_ids=[], prompts=[], responses=[], response_ids=[], response_tokens=[],
               weights=[], per_token_divergence=[], per_token_loss=[], transcripts=[],
               correct=[], families=[], skipped=[])
    s_topk = {"ids": [], "logprobs": [], "at_teacher": [[] for _ in range(K)]}
    t_topk = [{"ids": [], "logprobs": []} for _ in range(K)]
    for b in range(batch):
        i = (b + step) % len(_PROMPTS)
        text = _RESPONSES[i]
        ids = list(text.encode("utf-8"))
        toks = [bytes([x]).decode("latin-1") for x in ids]
        T = len(ids)
        onehot = np.zeros((T, V))
        onehot[np.arange(T), ids] = 1.0
        lq = _log_softmax(rng.normal(0, 1.0, (T, V)) + sharp * onehot)  # [T, V]
        lps = []
        for kk in range(K):
            alt = np.roll(onehot, kk + 1, axis=1)  # teachers disagree on a different id
            mix = rng.random((T, 1)) < 0.06 * (kk + 1)
            lps.append(_log_softmax(rng.normal(0, 1.0, (T, V)) + 8.5 * np.where(mix, alt, onehot)))
        div = np.stack([_dense_jsd(lp, lq) for lp in lps], -1)  # [T, K]
        tr = example_transcript(f"s{i}", _ANSWERS[i], teacher_names, rounds, seed=seed + i,
                                missing=(i == 2))
        conf = tr.final_confidences()
        if any(c is None for c in conf):
            w = [1.0 / K] * K  # missing-tag policy "uniform"
        else:
            z = np.array(conf) / 100.0 / tau
            w = (np.exp(z - z.max()) / np.exp(z - z.max()).sum()).tolist()
        rec["state_ids"].append(f"s{i}")
        rec["prompts"].append(_PROMPTS[i])
        rec["responses"].append(text)
        rec["response_ids"].append(ids)
        rec["response_tokens"].append(toks)
        rec["weights"].append(w)
        rec["per_token_divergence"].append(div.tolist())
        rec["per_token_loss"].append((div @ np.array(w)).tolist())
        rec["transcripts"].append(tr)
        rec["correct"].append(float(rng.random() < 0.4 + 0.5 * progress))
        rec["families"].append(("add", "tool", "code", "echo")[i])
        rec["skipped"].append(False)
        sid, slp = _topk(lq, k)
        s_topk["ids"].append(sid)
        s_topk["logprobs"].append(slp)
        for kk in range(K):
            tid, tlp = _topk(lps[kk], k)
            t_topk[kk]["ids"].append(tid)
            t_topk[kk]["logprobs"].append(tlp)
            s_topk["at_teacher"][kk].append(np.take_along_axis(lq, np.array(tid), -1).tolist())
    tok_losses = [x for row in rec["per_token_loss"] for x in row]
    loss = float(np.mean(tok_losses))
    w_arr = np.array(rec["weights"])
    metrics = {"loss": loss, "time/rollout": 0.1, "time/debate": 0.3, "time/score": 0.2,
               "n_eff": float(np.mean(1.0 / (w_arr ** 2).sum(-1))),
               "count/missing_confidence": float(sum(
                   sum(c is None for c in t.final_confidences()) for t in rec["transcripts"]))}
    return StepRecord(step=step, loss=loss, metrics=metrics, teacher_names=list(teacher_names),
                      token_weights=None, student_topk=s_topk, teacher_topk=t_topk, **rec)


def example_run(steps: int = 12, **kw) -> list[StepRecord]:
    """A short synthetic 'training run' whose divergences shrink (EXAMPLE DATA)."""
    return [example_record(s, progress=s / max(1, steps - 1), **kw) for s in range(steps)]


def example_probe(steps: int = 12, every: int = 1, seed: int = 0) -> tuple[list[str], list[list[float]]]:
    """A fixed probe completion and its per-token divergence at each scored step (EXAMPLE DATA)."""
    rng = np.random.default_rng(seed)
    tokens = list("17 + 25 = 42")
    rows = []
    for s in range(0, steps, every):
        decay = math.exp(-3.0 * s / max(1, steps))
        rows.append((rng.gamma(2.0, 0.2, len(tokens)) * decay).tolist())
    return tokens, rows


def _judged_debate(state_id: str, first, final, conf, sources) -> Transcript:
    msgs = [DebateMessage(k, 1, a, a, 50.0, confidence_source="tag") for k, a in enumerate(first)]
    msgs += [DebateMessage(k, 2, f"{a}\n<<CONFIDENCE={int(c)}>>" if src == "tag" else a, a, c,
                           confidence_source=src) for k, (a, c, src) in enumerate(zip(final, conf, sources))]
    return Transcript(state_id, ["A", "B"], 2, msgs)


def example_judged_run() -> tuple[list[StepRecord], dict[str, str]]:
    """Two steps of a toy-tools-like run with known teacher failures, and its references
    (EXAMPLE DATA). Step 0: on ``tools/0/621#3`` teacher B is confidently wrong ("ans 58" at 90,
    reference "ans 5") and the student copies it; on ``tools/0/7#2`` the debate flips A from right
    to wrong (its confidence is a forced-tag fallback); on ``tools/0/9#0`` both are right. Step 1:
    the same states, the student now right everywhere."""
    import dataclasses

    base = example_record(0, batch=3, teacher_names=("A", "B"))
    tr = [_judged_debate("tools/0/621#3", ["ans 5", "ans 58"], ["ans 5", "ans 58"], [70.0, 90.0],
                         ["tag", "tag"]),
          _judged_debate("tools/0/7#2", ["add 1 2", "add 1 2"], ["sub 1 2", "add 1 2"], [60.0, 95.0],
                         ["forced_tag", "tag"]),
          _judged_debate("tools/0/9#0", ["get a", "get a"], ["get a", "get a"], [90.0, 90.0],
                         ["tag", "tag"])]
    prompts = ["T:sum g h | get g | 48 | get h | 71 | add 48 71 | 5", "T:sum a b | get a | 1 | get b | 2",
               "T:least a b"]
    step0 = dataclasses.replace(base, state_ids=[t.state_id for t in tr], transcripts=tr,
                                prompts=prompts, responses=["ans 58", "add 1 2", "get a"],
                                correct=[0.0, 1.0, 1.0], families=["add", "add", "min"])
    step1 = dataclasses.replace(step0, step=1, responses=["ans 5", "add 1 2", "get a"],
                                correct=[1.0, 1.0, 1.0])
    refs = {"tools/0/621#3": "ans 5", "tools/0/7#2": "add 1 2", "tools/0/9#0": "get a"}
    return [step0, step1], refs
