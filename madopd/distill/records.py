"""Turn one step's tensors into the plain-Python ``StepRecord`` lists (ragged per sample).

Kept apart from the loop so the loop reads like the diagram in docs/architecture.md §1.
``StepRecorder`` holds what every record needs (config, teacher names, tokenizer, task);
each method takes the step's pieces as arguments and returns the record's.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from madopd.types import AlignedLogprobs, StepRecord, TopKLogprobs


def _num(x: float) -> float | None:
    """JSON-safe float: NaN/inf become None."""
    return float(x) if math.isfinite(x) else None


def ragged(t: torch.Tensor, lengths: list[int]) -> list[list[Any]]:
    """[B, T, ...] -> per-sample lists cut at each sample's length (floats, NaN -> None).

    Only rows holding a non-finite value take the slow element-wise path.
    """
    x = t.detach().float().cpu()
    finite = torch.isfinite(x).reshape(x.shape[0], x.shape[1], -1).all(-1)  # [B, T]
    rows = x.tolist()
    out = []
    for b, (row, n) in enumerate(zip(rows, lengths)):
        out.append(row[:n] if bool(finite[b, :n].all()) else _clean(row[:n]))
    return out


def _clean(x: Any) -> Any:
    if isinstance(x, list):
        return [_clean(v) for v in x]
    return _num(x)


def topk_view(dist: torch.Tensor | TopKLogprobs, k: int, lengths: list[int],
              temperature: float = 1.0, logits: bool = False) -> dict[str, list]:
    """Top-k ids and log-probs per position: {"ids": [B][T_b][k], "logprobs": [B][T_b][k]}.

    ``dist`` is dense ([B, T, V] log-probs, or logits when ``logits=True``: they are divided
    by ``temperature`` and normalised like the loss does) or TopKLogprobs.
    """
    with torch.no_grad():
        if isinstance(dist, TopKLogprobs):
            k = min(k, dist.logprobs.shape[-1])
            vals, pos = torch.topk(dist.logprobs.float(), k, dim=-1)
            ids = torch.gather(dist.ids, -1, pos)
        else:
            lp = dist.float()
            if logits:
                lp = torch.log_softmax(lp / temperature, dim=-1)
            vals, ids = torch.topk(lp, min(k, lp.shape[-1]), dim=-1)
    i = ids.cpu().tolist()
    return {"ids": [i[b][:n] for b, n in enumerate(lengths)], "logprobs": ragged(vals, lengths)}


def merge_topk(parts: list[dict[str, list] | None]) -> dict[str, list] | None:
    """Concatenate per-micro-batch top-k views along the sample axis."""
    if not parts or any(p is None for p in parts):
        return None
    return {"ids": [r for p in parts for r in p["ids"]],
            "logprobs": [r for p in parts for r in p["logprobs"]]}


class TokenDecoder:
    """One display string per token id (special tokens kept so EOS is visible), memoised:
    a step records every response token, and decoding ids one by one dominates otherwise."""

    def __init__(self, tokenizer: Any):
        self.tokenizer = tokenizer
        self._memo: dict[int, str] = {}

    def __call__(self, ids: list[int]) -> list[str]:
        memo = self._memo
        out = []
        for i in ids:
            s = memo.get(i)
            if s is None:
                s = memo[i] = self.tokenizer.decode([i], skip_special_tokens=False)
            out.append(s)
        return out


class StepRecorder:
    """Builds a step's StepRecord: per-micro-batch parts, the step's sufficient statistics
    (sums that add up over processes) and its metrics.

    Args: config (DistillConfig), K (teachers), teacher_names, tokenizer (the student's),
    decode_tokens (ids -> display strings, memoised: ``TokenDecoder``), task (``verify``).
    """

    def __init__(self, config: Any, K: int, teacher_names: list[str], tokenizer: Any,
                 decode_tokens: Any, task: Any):
        self.config = config
        self.K = K
        self.teacher_names = list(teacher_names)
        self.tokenizer = tokenizer
        self.decode_tokens = decode_tokens
        self.task = task

    def empty_part(self, mb: Any, loss: float) -> dict[str, Any]:
        """The part of a micro-batch whose loss was not computed (non-finite inputs)."""
        B, K = len(mb.states), self.K
        return {"loss": loss, "per_token_divergence": [[] for _ in range(B)],
                "per_token_loss": [[] for _ in range(B)],
                "weights": [[float(x) for x in row] for row in mb.weights.tolist()],
                "div_sum": [0.0] * K, "div_count": 0.0, "student_topk": None,
                "teacher_topk": [None] * K}

    def micro_part(self, mb: Any, ml: Any, scored: Any) -> dict[str, Any]:
        """One micro-batch's part of the record from its ``phases.MicroLoss`` (``ml``) and
        ``phases.Scored`` (None: NLL on teacher text)."""
        cfg = self.config
        lengths = [len(r) for r in mb.samples.response_ids]
        logits, loss_tok, per, tok_w, w_rec = ml.logits, ml.loss_tok, ml.per, ml.tok_w, ml.w_rec
        alive, dists = (scored.alive if scored is not None else []), ml.dists
        loss_value = float(ml.loss.detach())
        K = self.K
        out: dict[str, Any] = {"loss": loss_value}
        if per is not None:
            full = torch.full(per.shape[:2] + (K,), float("nan"))
            full[..., alive] = per.detach().float().cpu()
            out["per_token_divergence"] = ragged(full, lengths)
            T = per.shape[1]
            valid = (torch.arange(T)[None, :] < torch.tensor(lengths)[:, None]) & mb.keep[:, None]
            out["div_sum"] = [float((full[..., k] * valid).nansum()) for k in range(K)]
            out["div_count"] = float(valid.sum())
        else:
            out["per_token_divergence"] = [[] for _ in lengths]
        if tok_w is not None:
            full_w = torch.zeros(tok_w.shape[:2] + (K,))
            full_w[..., alive] = tok_w.detach().float().cpu()
            out["token_weights"] = ragged(full_w, lengths)
        out["per_token_loss"] = ragged(loss_tok, lengths)
        out["weights"] = [[float(x) for x in row] for row in w_rec.tolist()]
        if cfg.record_topk:
            out["student_topk"] = topk_view(logits, cfg.record_topk, lengths,
                                            cfg.loss_temperature, logits=True)
            tk = [None] * K
            for j, k in enumerate(alive):
                if not isinstance(dists[j], AlignedLogprobs):  # spans: no vocabulary view
                    tk[k] = topk_view(dists[j], cfg.record_topk, lengths)
            out["teacher_topk"] = tk
        return out

    def stats(self, parts, micros, weights, correct, resp_ids, counters, timings) -> dict:
        """Sufficient statistics of a step's metrics: sums that add up over processes
        (``distributed.combine_stats``), so one or several processes give the same metrics."""
        have = len(parts) == len(micros) and parts
        div = have and any("div_sum" in p for p in parts)
        st: dict[str, Any] = {
            "n": len(resp_ids), "tokens": float(sum(len(r) for r in resp_ids)),
            "correct_sum": float(sum(c for c in correct if c is not None)),
            "verified": float(sum(c is not None for c in correct)),
            "w_sum": [0.0] * self.K, "live": 0.0, "neff_sum": 0.0,
            "div_sum": [sum(p.get("div_sum", [0.0] * self.K)[k] for p in parts)
                        for k in range(self.K)] if div else None,
            "div_count": float(sum(p.get("div_count", 0.0) for p in parts)) if div else 0.0,
            "counters": dict(counters), "timings": dict(timings)}
        if weights and self.K:
            from madopd.weighting import effective_teachers

            w = torch.tensor(weights, dtype=torch.float64)  # [B, K]
            st["w_sum"] = [float(x) for x in w.sum(0)]
            live = w.sum(-1) > 0
            st["live"] = float(live.sum())
            if live.any():
                st["neff_sum"] = float(effective_teachers(w[live]).sum())
        return st

    def metrics(self, base: dict[str, float], st: dict[str, Any]) -> dict[str, float]:
        """``base`` (loss, lr, grad_norm, step-level counters, eval) + metrics of the stats."""
        m = dict(base)
        m["tokens"] = st["tokens"]
        m.update(st["timings"])
        m.update(st["counters"])
        c = st["counters"]
        total = c.get("count/cache_hits", 0) + c.get("count/cache_misses", 0)
        if total:
            m["cache/hit_rate"] = c.get("count/cache_hits", 0) / total
        if st["div_sum"] is not None:
            for k, name in enumerate(self.teacher_names):
                m[f"div/{name}"] = st["div_sum"][k] / max(st["div_count"], 1)
        if st["n"] and self.K:
            for k, name in enumerate(self.teacher_names):
                m[f"weight/{name}"] = st["w_sum"][k] / st["n"]
            if st["live"]:
                m["n_eff"] = st["neff_sum"] / st["live"]
        if st["verified"]:
            m["accuracy/train"] = st["correct_sum"] / st["verified"]  # student samples only
        if c.get("count/teacher_samples_verified"):
            m["accuracy/teacher_samples"] = (c["count/teacher_samples_correct"]
                                             / c["count/teacher_samples_verified"])
        return {k: float(v) for k, v in m.items()}

    def build(self, step: int, loss: float, lr: float, micros: list, parts: list[dict],
              metrics: dict, timings: dict, counters: dict) -> tuple[StepRecord, dict[str, Any]]:
        """This process's record of the step, and the statistics its metrics came from."""
        cfg = self.config
        tok = self.tokenizer
        states = [s for mb in micros for s in mb.states]
        samples = [mb.samples for mb in micros]
        resp_ids = [list(r) for s in samples for r in s.response_ids]
        B = len(states)
        have = len(parts) == len(micros) and parts

        def cat(key, default):
            return [x for p in parts for x in p[key]] if have else default

        weights = cat("weights", [[float(x) for x in row] for mb in micros
                                  for row in mb.weights.tolist()])
        correct: list[float | None] = [None] * B
        if cfg.verify_train:
            # accuracy/train is the STUDENT's: a teacher-written (off-policy, MT-SeqKD) sample
            # is verified apart and reported as accuracy/teacher_samples.
            correct = []
            for mb in micros:
                for st, t in zip(mb.states, mb.samples.texts):
                    if st.meta.get("reference_valid") is False:  # full OPAD off the gold path
                        correct.append(None)  # no reference to verify against (counted in opad)
                        continue
                    c = float(self.task.verify(st, t))
                    if mb.on_policy:
                        correct.append(c)
                    else:
                        correct.append(None)
                        counters["count/teacher_samples_verified"] = \
                            counters.get("count/teacher_samples_verified", 0) + 1
                        counters["count/teacher_samples_correct"] = \
                            counters.get("count/teacher_samples_correct", 0) + c
        base = dict(metrics)
        base["loss"] = loss
        base["lr"] = lr
        stats = self.stats(parts, micros, weights, correct, resp_ids, counters, timings)
        keep = [bool(k) for mb in micros for k in mb.keep.tolist()]
        record = StepRecord(
            step=step, loss=loss, metrics=self.metrics(base, stats),
            teacher_names=list(self.teacher_names), state_ids=[s.id for s in states],
            prompts=[tok.decode(p, skip_special_tokens=False) for s in samples for p in s.prompt_ids],
            responses=[t for s in samples for t in s.texts], response_ids=resp_ids,
            response_tokens=[self.decode_tokens(r) for r in resp_ids],
            weights=weights,
            per_token_divergence=cat("per_token_divergence", [[] for _ in range(B)]),
            per_token_loss=cat("per_token_loss", [[] for _ in range(B)]),
            token_weights=cat("token_weights", None) if have and all("token_weights" in p for p in parts) else None,
            transcripts=[t for mb in micros for t in mb.transcripts],
            correct=correct, families=[s.family for s in states],
            student_topk=merge_topk([p.get("student_topk") for p in parts]) if have else None,
            teacher_topk=[merge_topk([p["teacher_topk"][k] for p in parts])
                          for k in range(self.K)] if have and all("teacher_topk" in p for p in parts) else None,
            skipped=[not k for k in keep] if parts else [True] * B)
        return record, stats

    def gather(self, collective: Any, record: StepRecord, stats: dict, micros: list,
               metrics: dict) -> StepRecord:
        """One record of the whole step on every process: metrics from the summed statistics;
        per-sample lists of all processes on recorded steps (``record_every``), otherwise this
        process's samples only (gathering every token's data costs a pickle per step)."""
        from madopd.distill.distributed import combine_stats, merge_records

        cfg = self.config
        full = bool(cfg.record_every) and record.step % cfg.record_every == 0
        sizes = [len(mb.states) for mb in micros]
        got = collective.gather((stats, sizes, record if full else None))
        base = {**metrics, "loss": record.loss, "lr": record.metrics["lr"]}
        merged = self.metrics(base, combine_stats([g[0] for g in got]))
        if not full:
            record.metrics = merged
            return record
        return merge_records([g[2] for g in got], [g[1] for g in got], merged)
