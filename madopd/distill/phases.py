"""The phases of one distillation step as plain functions (``Distiller._step`` calls them in
order: rollout -> debate -> weights -> score -> loss; the update is in loop.py).

Every function takes what it reads as arguments and returns what it makes; the only shared
mutable inputs are the step's ``counters`` and ``timings`` dicts (``defaultdict(float)``),
which each phase adds to. Nothing here knows about several processes: the step's
``Collective`` (distributed.py) does the sums and the backward.

Phase 1 (no gradients): states -> student rollout (or teacher generation for MT-SeqKD) ->
debate (cached) -> weights. Phase 2 (one micro-batch of logits at a time): teachers
force-decode the student's tokens with ``debate.score_context`` -> per-token divergences ->
weighted, normalised loss (Eq. 8; Eqs. 9-10 for OPAD states).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, replace
from typing import Any

import torch

from madopd.errors import TeacherError
from madopd.opad import derive_seed, rollout_episodes
from madopd.types import Samples, Sampling, State, Transcript


class SkipStep(Exception):
    """A teacher failed under on_teacher_error='skip_step' (or every teacher's score failed)."""


@dataclass
class Micro:
    """Phase-1 output for one micro-batch."""

    states: list[State]
    samples: Samples
    on_policy: bool
    transcripts: list[Transcript | None]
    weights: torch.Tensor  # [B, K] (rows of skipped samples are 0)
    keep: torch.Tensor  # [B] bool


@dataclass
class Rollout:
    """What the rollout phase produced for one micro-batch."""

    states: list[State]
    samples: Samples
    on_policy: bool
    source: list[int] | None  # MT-SeqKD: which teacher wrote each sample; None: the student


@dataclass
class Scored:
    """The teachers' force-decoded distributions of one micro-batch (``score``)."""

    dists: list[Any]  # per alive teacher: dense log-probs [B, T, V] or TopKLogprobs
    alive: list[int]  # teacher indices whose scores arrived
    scores: list[Any]  # their ``Scores``


@dataclass
class MicroLoss:
    """The loss of one micro-batch and the per-token tensors its record is built from."""

    loss: torch.Tensor  # scalar: this process's share of Σ/N, with grad
    loss_tok: torch.Tensor  # [B, T] per-token loss (0 outside the valid tokens)
    logits: torch.Tensor  # [B, T, V] the student's response logits
    per: torch.Tensor | None  # [B, T, K'] per alive teacher divergence (None: NLL)
    tok_w: torch.Tensor | None  # [B, T, K'] per-token weights (entropy / token_prob modes)
    w_rec: torch.Tensor  # [B, K] the per-sample weights to record
    dists: list[Any]  # the alive teachers' distributions on the logits' device ([] for NLL)


def add_counts(counters: dict[str, float], items: dict[str, Any], prefix: str = "count/") -> None:
    for k, v in items.items():
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            counters[prefix + k] += v


# ----------------------------------------------------------------------------- phase 1
def rollout_sampling(cfg: Any, step: int, micro: int, rank: int | None) -> Sampling:
    """Per-step rollout seed: deterministic and resumable without the global RNG.

    Under several processes the rank joins the seed (``rank`` is None for one process):
    otherwise every process would draw the same random numbers for its (different) samples.
    """
    parts: tuple = (cfg.seed, cfg.sampling.seed, "rollout", step, micro)
    if rank is not None:
        parts += ("rank", rank)
    return replace(cfg.sampling, seed=derive_seed(*parts))


def rollout(cfg: Any, items: list, sampler: Any, sampling: Sampling, rng: random.Random,
            environment: Any, full_episodes: bool, teacher_writer: Any,
            counters: dict[str, float]) -> Rollout:
    """One micro-batch's samples: full OPAD episodes, the student's rollouts (on-policy,
    drawn with probability ``on_policy_fraction`` from ``rng``) or teacher-written answers
    (``teacher_writer(states, sampling, counters) -> (Samples, source)``, MT-SeqKD)."""
    on_policy = cfg.on_policy_fraction >= 1.0 or rng.random() < cfg.on_policy_fraction
    source = None
    if full_episodes:
        runs = rollout_episodes(sampler, items, environment, sampling, cfg.opad_max_steps,
                                counters)
        states = [s for r in runs for s in r.states]
        samples = Samples([p for r in runs for p in r.prompt_ids],
                          [x for r in runs for x in r.response_ids],
                          [a for r in runs for a in r.actions],
                          [t for r in runs for t in r.truncated])
    elif on_policy:
        states = items
        samples = sampler.rollout(states, sampling)  # HF generate or vLLM
    else:
        states = items
        samples, source = teacher_writer(states, sampling, counters)
    counters["count/truncated_rollouts"] += sum(samples.truncated or [])
    counters["samples/on_policy"] += len(states) if on_policy else 0
    counters["samples/total"] += len(states)
    return Rollout(states, samples, on_policy, source)


def teacher_samples(states: list[State], sampling: Sampling, counters: dict[str, float], *,
                    teachers: list[Any], debate: Any, student: Any, mix: list[float],
                    rng: random.Random) -> tuple[Samples, list[int]]:
    """MT-SeqKD: a teacher (drawn per sample by the mix ratio) answers each state blind."""
    from madopd.models._common import render_prompt_ids

    source = [rng.choices(range(len(teachers)), weights=mix)[0] for _ in states]
    tok = student.tokenizer
    prompt_ids = [render_prompt_ids(tok, s.messages) for s in states]
    response_ids: list[list[int]] = [[] for _ in states]
    truncated = [False] * len(states)
    for k in sorted(set(source)):
        idx = [b for b, s in enumerate(source) if s == k]
        chats = [debate.score_context(states[b], None, k) for b in idx]
        teacher = teachers[k]
        if hasattr(teacher, "generate_ids"):
            _, replies, hit = teacher.generate_ids(chats, sampling)
        else:
            texts = teacher.generate(chats, sampling)
            eos = tok.eos_token_id
            replies = [list(tok(t, add_special_tokens=False)["input_ids"])[
                : sampling.max_new_tokens - 1] + [eos] for t in texts]
            hit = [False] * len(texts)
        for b, r, h in zip(idx, replies, hit):
            response_ids[b], truncated[b] = list(r), bool(h)
    counters["count/truncated_teacher_generations"] += sum(truncated)
    texts = [student.decode(r) for r in response_ids]
    return Samples(prompt_ids, response_ids, texts, truncated), source


def run_debate(cfg: Any, debate: Any, cache: Any, states: list[State],
               counters: dict[str, float]) -> list[Transcript | None]:
    """The debate about each state (R rounds; cached when ``cache`` is given). -> transcripts."""
    if cfg.rounds == 0 or debate is None:
        return [None] * len(states)
    before = dict(debate.counters)
    try:
        if cache is not None:
            transcripts, stats = cache.get_or_run(debate, states)
            add_counts(counters, stats)
        else:
            transcripts = debate.run(states)
            counters["count/cache_misses"] += len(states)
    except TeacherError:
        if cfg.on_teacher_error == "skip_step":
            counters["count/teacher_errors"] += 1
            raise SkipStep() from None
        raise
    finally:
        for k, v in debate.counters.items():
            counters[f"count/{k}"] += v - before.get(k, 0)
    return list(transcripts)


def debate_weights(cfg: Any, K: int, transcripts: list, n: int,
                   counters: dict[str, float]) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample teacher weights w [n, K] (Eqs. 6-7 for confidence) and keep [n] bool."""
    from madopd.weighting import fixed_weights, uniform_weights, weights_from_transcripts

    if cfg.weighting == "confidence" and cfg.rounds > 0:
        res = weights_from_transcripts(transcripts, tau=cfg.tau, on_missing=cfg.on_missing)
        add_counts(counters, res.counters)
        return res.weights.float(), res.keep.bool()
    keep = torch.ones(n, dtype=torch.bool)
    if cfg.weighting == "fixed":
        return fixed_weights(cfg.fixed_weights or [1.0] * K, n), keep
    # uniform; confidence with R = 0 (no confidences exist); per-token modes (their
    # per-sample weights are only a record of the mean: the loss uses token_weights)
    return uniform_weights(n, K), keep


def one_hot_weights(source: list[int], K: int) -> tuple[torch.Tensor, torch.Tensor]:
    """NLL on teacher-written text: w [n, K] records which teacher wrote each sample."""
    weights = torch.nn.functional.one_hot(torch.tensor(source), K).float()
    return weights, torch.ones(len(source), dtype=torch.bool)


def micro_batch(ro: Rollout, transcripts: list, weights: torch.Tensor, keep: torch.Tensor,
                counters: dict[str, float]) -> Micro:
    """Phase 1's output; empty responses are dropped from ``keep`` and counted."""
    empty = torch.tensor([len(r) == 0 for r in ro.samples.response_ids], dtype=torch.bool)
    counters["count/empty_responses"] += int(empty.sum())
    keep = keep & ~empty
    counters["count/skipped_samples"] += int((~keep).sum())
    return Micro(ro.states, ro.samples, ro.on_policy, transcripts, weights, keep)


# ----------------------------------------------------------------------------- phase 2
def score(cfg: Any, teachers: list[Any], debate: Any, mb: Micro,
          counters: dict[str, float]) -> Scored:
    """Force-decode the student's tokens with every teacher (its privileged context:
    ``debate.score_context``). A failed teacher is raised, skips the step, or is dropped, as
    ``on_teacher_error`` says; SkipStep when none is left."""
    dists, alive, scores = [], [], []
    for k, teacher in enumerate(teachers):
        contexts = [debate.score_context(s, tr, k) for s, tr in zip(mb.states, mb.transcripts)]
        pc = getattr(teacher, "prefix_cache", None)
        before = dict(pc.counters) if pc is not None else {}
        xc = getattr(teacher, "crosstok_counters", None)  # cross-tokenizer alignment counts
        before_x = dict(xc) if xc is not None else {}
        try:
            sc = teacher.score(contexts, mb.samples.response_ids, top_k=cfg.score_top_k)
        except TeacherError:
            counters["count/teacher_errors"] += 1
            if cfg.on_teacher_error == "raise":
                raise
            if cfg.on_teacher_error == "skip_step":
                raise SkipStep() from None
            counters["count/dropped_teacher_scores"] += 1
            continue
        counters["count/teacher_context_truncated"] += sum(sc.truncated or [])
        for key, v in (pc.counters.items() if pc is not None else ()):
            counters[f"count/score_cache/{key}"] += v - before[key]
        for key, v in (xc.items() if xc is not None else ()):
            counters[f"count/{key}"] += v - before_x.get(key, 0)
        dists.append(sc.dists)
        alive.append(k)
        scores.append(sc)
    if not alive:
        counters["count/teacher_errors_all"] += 1
        raise SkipStep()
    return Scored(dists, alive, scores)


def finite_inputs(logits: torch.Tensor, dists: list[Any]) -> bool:
    """False when the student's logits hold NaN/inf or a teacher's log-probs hold NaN
    (-inf log-probs are zero probabilities: allowed)."""
    if not bool(torch.isfinite(logits.detach()).all()):
        return False
    for d in dists:
        lp = d.logprobs if hasattr(d, "logprobs") else \
            d.span_logp if hasattr(d, "span_logp") else d
        if bool(torch.isnan(lp).any()):
            return False
    return True


def micro_loss(cfg: Any, spec: Any, K: int, logits: torch.Tensor, mask: torch.Tensor,
               mb: Micro, scored: Scored | None, denom: float,
               counters: dict[str, float] | None = None) -> MicroLoss:
    """The micro-batch's share of the step's loss: Σ_k w_k D(p_k ‖ q) per token (Eq. 8;
    ``scored`` None: NLL of the teacher-written text), normalised by the step's global
    ``denom`` (tokens or sequences of all micro-batches and processes).

    logits [B, T, V] with grad, mask [B, T] (the student's response positions).
    ``counters`` (the step's) gets the sampled-token and cross-tokenizer mask counts.
    """
    from collections import defaultdict

    counters = counters if counters is not None else defaultdict(float)
    from madopd.divergence import multi_teacher_divergence, sampled_token_reverse_kl
    from madopd.weighting import token_weights

    B = len(mb.states)
    dev = logits.device
    valid = mask.bool() & mb.keep.to(dev)[:, None]  # [B, T]
    T = logits.shape[1]
    per = tok_w = None
    w_rec = mb.weights.clone()
    dists: list[Any] = []
    if scored is not None:
        alive = scored.alive
        dists = [d.to(dev) for d in scored.dists]
        w = mb.weights[:, alive].to(dev)  # [B, K']
        w = w / w.sum(-1, keepdim=True).clamp_min(1e-12)
        w = torch.where(w.sum(-1, keepdim=True) > 0, w, torch.full_like(w, 1.0 / len(alive)))
        if cfg.weighting in ("entropy", "token_prob"):
            tok_w = token_weights(scored.scores, mb.samples.response_ids, mode=cfg.weighting,
                                  tau=cfg.tau, mask=valid.cpu()).to(dev)  # [B, T, K']
            w = tok_w
            w_rec = torch.zeros(B, K)
            for j, k in enumerate(alive):
                den = valid.sum(-1).clamp_min(1).cpu()
                w_rec[:, k] = (tok_w[..., j].cpu() * valid.cpu()).sum(-1) / den
        else:
            w_rec = torch.zeros(B, K)
            w_rec[:, alive] = w.cpu() * mb.keep[:, None]
        w, valid = teacher_masks(scored, w, valid, counters)
        if getattr(spec, "sampled", False):  # srkl: log ratios on the sampled tokens
            loss_tok, per = sampled_token_reverse_kl(
                logits, dists, w, response_ids(mb, T, dev), mask=valid, reduction="none",
                temperature=cfg.loss_temperature, stats=counters, return_per_teacher=True)
        else:
            loss_tok, per = multi_teacher_divergence(
                logits, dists, w, spec, target=cfg.target, mask=valid, reduction="none",
                temperature=cfg.loss_temperature, chunk_size=cfg.chunk_size,
                return_per_teacher=True)  # [B, T], [B, T, K']
    else:  # sequence-level KD on teacher text: NLL at the shared loss temperature
        ids = response_ids(mb, T, dev)
        logp = torch.log_softmax(logits.float() / cfg.loss_temperature, dim=-1)
        loss_tok = -logp.gather(-1, ids.unsqueeze(-1)).squeeze(-1)  # [B, T]
    loss_tok = torch.where(valid, loss_tok, torch.zeros_like(loss_tok))
    if cfg.loss_normalization == "token":
        coef = valid.float() / denom
    else:
        coef = valid.float() / (valid.sum(-1, keepdim=True).clamp_min(1) * denom)
    loss = (loss_tok * coef).sum()
    return MicroLoss(loss, loss_tok, logits, per, tok_w, w_rec, dists)


def response_ids(mb: Micro, T: int, dev) -> torch.Tensor:
    """The micro-batch's response ids as a right-padded [B, T] tensor (0 = padding)."""
    ids = torch.zeros(len(mb.samples.response_ids), T, dtype=torch.long, device=dev)
    for b, r in enumerate(mb.samples.response_ids):
        ids[b, : len(r)] = torch.tensor(r[:T], dtype=torch.long)
    return ids


def teacher_masks(scored: Scored, w: torch.Tensor, valid: torch.Tensor,
                  counters: dict[str, float]) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-teacher token masks (``Scores.mask``) into the weights.

    A same-tokenizer teacher's mask is every continuation token, so nothing changes. A
    cross-tokenizer teacher masks tokens it could not align (madopd.crosstok, counted there):
    there its weight goes to the other teachers (w becomes per token [B, T, K']), and a token
    no teacher scored leaves the loss (counted: "count/tokens_unscored_by_all_teachers").
    """
    masks = []
    for sc in scored.scores:
        m = sc.mask.to(valid.device).bool()
        if tuple(m.shape) != tuple(valid.shape):  # a backend's own padding: widen/cut to T
            mm = torch.zeros_like(valid)
            t = min(m.shape[1], valid.shape[1])
            mm[:, :t] = m[:, :t]
            m = mm
        masks.append(m)
    tm = torch.stack(masks, -1) & valid[..., None]  # [B, T, K']
    if bool((tm == valid[..., None]).all()):
        return w, valid
    wt = (w[:, None, :] if w.dim() == 2 else w) * tm.to(w.dtype)
    total = wt.sum(-1, keepdim=True)
    n = tm.sum(-1, keepdim=True).to(w.dtype)
    wt = torch.where(total > 0, wt / total.clamp_min(1e-12), tm.to(w.dtype) / n.clamp_min(1))
    scored_any = tm.any(-1)
    counters["count/tokens_unscored_by_all_teachers"] += int((valid & ~scored_any).sum())
    return wt, valid & scored_any


def loss_denominator(cfg: Any, micros: list[Micro]) -> float:
    """This process's kept tokens (or sequences) in the accumulated batch (before the sum
    over processes)."""
    n = 0
    for mb in micros:
        for r, k in zip(mb.samples.response_ids, mb.keep.tolist()):
            if k and r:
                n += len(r) if cfg.loss_normalization == "token" else 1
    return float(n)
