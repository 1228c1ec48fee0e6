"""The two phases of one distillation step, as a mixin of ``Distiller`` (see loop.py).

Phase 1 (no gradients): states -> student rollout (or teacher generation for MT-SeqKD) ->
debate (cached) -> weights. Phase 2 (one micro-batch of logits at a time): teachers
force-decode the student's tokens with ``debate.score_context`` -> per-token divergences ->
weighted, normalised loss -> backward.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from typing import Any

import torch

from madopd.errors import TeacherError
from madopd.opad import derive_seed, rollout_episodes
from madopd.types import Samples, Sampling, State, Transcript


class _SkipStep(Exception):
    """A teacher failed under on_teacher_error='skip_step'."""


@dataclass
class _Micro:
    """Phase-1 output for one micro-batch."""

    states: list[State]
    samples: Samples
    on_policy: bool
    transcripts: list[Transcript | None]
    weights: torch.Tensor  # [B, K] (rows of skipped samples are 0)
    keep: torch.Tensor  # [B] bool


def _add(counters: dict[str, float], items: dict[str, Any], prefix: str = "count/") -> None:
    for k, v in items.items():
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            counters[prefix + k] += v


class PhasesMixin:
    """Phase 1 and phase 2 of a step (needs the attributes ``Distiller.__init__`` sets)."""

    # ------------------------------------------------------------------ phase 1
    def _sampling(self, step: int, micro: int) -> Sampling:
        """Per-step rollout seed: deterministic and resumable without the global RNG.

        Under several processes the rank joins the seed: otherwise every process would draw
        the same random numbers for its (different) samples, correlating the batch.
        """
        parts: tuple = (self.config.seed, self.config.sampling.seed, "rollout", step, micro)
        if self.accelerator.num_processes > 1:
            parts += ("rank", self.accelerator.process_index)
        return replace(self.config.sampling, seed=derive_seed(*parts))

    def _teacher_samples(self, states: list[State], sampling: Sampling,
                         counters: dict[str, float]) -> tuple[Samples, list[int]]:
        """MT-SeqKD: a teacher (drawn per sample by the mix ratio) answers each state blind."""
        from madopd.models._common import render_prompt_ids

        mix = self.config.fixed_weights or [1.0] * self.K
        source = [self.rng.choices(range(self.K), weights=mix)[0] for _ in states]
        tok = self.student.tokenizer
        prompt_ids = [render_prompt_ids(tok, s.messages) for s in states]
        response_ids: list[list[int]] = [[] for _ in states]
        truncated = [False] * len(states)
        for k in sorted(set(source)):
            idx = [b for b, s in enumerate(source) if s == k]
            chats = [self.debate.score_context(states[b], None, k) for b in idx]
            teacher = self.teachers[k]
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
        texts = [self.student.decode(r) for r in response_ids]
        return Samples(prompt_ids, response_ids, texts, truncated), source

    def _debate(self, states: list[State], counters: dict[str, float]) -> list[Transcript | None]:
        if self.config.rounds == 0 or self.debate is None:
            return [None] * len(states)
        before = dict(self.debate.counters)
        try:
            if self.cache is not None:
                transcripts, stats = self.cache.get_or_run(self.debate, states)
                _add(counters, stats)
            else:
                transcripts = self.debate.run(states)
                counters["count/cache_misses"] += len(states)
        except TeacherError:
            if self.config.on_teacher_error == "skip_step":
                counters["count/teacher_errors"] += 1
                raise _SkipStep() from None
            raise
        finally:
            for k, v in self.debate.counters.items():
                counters[f"count/{k}"] += v - before.get(k, 0)
        return list(transcripts)

    def _weights(self, transcripts: list, n: int, counters: dict[str, float]):
        from madopd.weighting import fixed_weights, uniform_weights, weights_from_transcripts

        cfg = self.config
        if cfg.weighting == "confidence" and cfg.rounds > 0:
            res = weights_from_transcripts(transcripts, tau=cfg.tau, on_missing=cfg.on_missing)
            _add(counters, res.counters)
            return res.weights.float(), res.keep.bool()
        keep = torch.ones(n, dtype=torch.bool)
        if cfg.weighting == "fixed":
            return fixed_weights(cfg.fixed_weights or [1.0] * self.K, n), keep
        # uniform; confidence with R = 0 (no confidences exist); per-token modes (their
        # per-sample weights are only a record of the mean: the loss uses token_weights)
        return uniform_weights(n, self.K), keep

    def _prepare_micro(self, step: int, micro: int, timings, counters) -> list[_Micro]:
        cfg = self.config
        t0 = time.perf_counter()
        items = self.pool.next_batch()
        sampling = self._sampling(step, micro)
        on_policy = cfg.on_policy_fraction >= 1.0 or self.rng.random() < cfg.on_policy_fraction
        source = None
        if self.pool.full:
            runs = rollout_episodes(self.sampler, items, self.task.environment, sampling,
                                    cfg.opad_max_steps, counters)
            states = [s for r in runs for s in r.states]
            samples = Samples([p for r in runs for p in r.prompt_ids],
                              [x for r in runs for x in r.response_ids],
                              [a for r in runs for a in r.actions],
                              [t for r in runs for t in r.truncated])
        elif on_policy:
            states = items
            samples = self.sampler.rollout(states, sampling)  # HF generate or vLLM
        else:
            states = items
            samples, source = self._teacher_samples(states, sampling, counters)
        counters["count/truncated_rollouts"] += sum(samples.truncated or [])
        counters["samples/on_policy"] += len(states) if on_policy else 0
        counters["samples/total"] += len(states)
        timings["time/rollout"] += time.perf_counter() - t0

        t0 = time.perf_counter()
        needs_debate = on_policy or cfg.off_policy_loss == "divergence"
        transcripts = self._debate(states, counters) if needs_debate else [None] * len(states)
        timings["time/debate"] += time.perf_counter() - t0
        if source is not None and not needs_debate:  # NLL: record which teacher wrote it
            weights = torch.nn.functional.one_hot(torch.tensor(source), self.K).float()
            keep = torch.ones(len(states), dtype=torch.bool)
        else:
            weights, keep = self._weights(transcripts, len(states), counters)
        empty = torch.tensor([len(r) == 0 for r in samples.response_ids], dtype=torch.bool)
        counters["count/empty_responses"] += int(empty.sum())
        keep = keep & ~empty
        counters["count/skipped_samples"] += int((~keep).sum())
        return [_Micro(states, samples, on_policy, transcripts, weights, keep)]

    # ------------------------------------------------------------------ phase 2
    def _score(self, mb: _Micro, counters) -> tuple[list[Any], list[int], list[Any]]:
        """Force-decode the student's tokens with every teacher. -> (dists, alive k, Scores)."""
        dists, alive, scores = [], [], []
        for k, teacher in enumerate(self.teachers):
            contexts = [self.debate.score_context(s, tr, k)
                        for s, tr in zip(mb.states, mb.transcripts)]
            pc = getattr(teacher, "prefix_cache", None)
            before = dict(pc.counters) if pc is not None else {}
            try:
                sc = teacher.score(contexts, mb.samples.response_ids, top_k=self.config.score_top_k)
            except TeacherError:
                counters["count/teacher_errors"] += 1
                if self.config.on_teacher_error == "raise":
                    raise
                if self.config.on_teacher_error == "skip_step":
                    raise _SkipStep() from None
                counters["count/dropped_teacher_scores"] += 1
                continue
            counters["count/teacher_context_truncated"] += sum(sc.truncated or [])
            for key, v in (pc.counters.items() if pc is not None else ()):
                counters[f"count/score_cache/{key}"] += v - before[key]
            dists.append(sc.dists)
            alive.append(k)
            scores.append(sc)
        if not alive:
            counters["count/teacher_errors_all"] += 1
            raise _SkipStep()
        return dists, alive, scores

    def _micro_backward(self, mb: _Micro, denom: float, timings, counters) -> dict[str, Any]:
        from madopd.divergence import multi_teacher_divergence
        from madopd.weighting import token_weights

        cfg = self.config
        use_teachers = mb.on_policy or cfg.off_policy_loss == "divergence"
        B = len(mb.states)
        lengths = [len(r) for r in mb.samples.response_ids]
        dists, alive, scores = [], [], []
        if use_teachers:
            t0 = time.perf_counter()
            dists, alive, scores = self._score(mb, counters)
            timings["time/score"] += time.perf_counter() - t0

        t0 = time.perf_counter()
        logits, mask = self.student.response_logits(mb.samples)  # [B, T, V] with grad
        dev = logits.device
        valid = mask.bool() & mb.keep.to(dev)[:, None]  # [B, T]
        T = logits.shape[1]
        per = tok_w = None
        w_rec = mb.weights.clone()
        if not self._finite_inputs(logits, dists):
            # A NaN/inf student (diverged training) or a NaN teacher: the NaN policy of _update
            # skips the whole step and counts it (the divergences refuse non-finite input).
            counters["count/nonfinite_inputs"] += 1
            timings["time/loss"] += time.perf_counter() - t0
            if self.accelerator.num_processes > 1:  # still join the engine's all-reduces
                self._backward(logits.float().sum() * 0.0)
            return self._empty_part(mb, float("nan"))
        if use_teachers:
            dists = [d.to(dev) for d in dists]
            w = mb.weights[:, alive].to(dev)  # [B, K']
            w = w / w.sum(-1, keepdim=True).clamp_min(1e-12)
            w = torch.where(w.sum(-1, keepdim=True) > 0, w, torch.full_like(w, 1.0 / len(alive)))
            if cfg.weighting in ("entropy", "token_prob"):
                tok_w = token_weights(scores, mb.samples.response_ids, mode=cfg.weighting,
                                      tau=cfg.tau, mask=valid.cpu()).to(dev)  # [B, T, K']
                w = tok_w
                w_rec = torch.zeros(B, self.K)
                for j, k in enumerate(alive):
                    den = valid.sum(-1).clamp_min(1).cpu()
                    w_rec[:, k] = (tok_w[..., j].cpu() * valid.cpu()).sum(-1) / den
            else:
                w_rec = torch.zeros(B, self.K)
                w_rec[:, alive] = w.cpu() * mb.keep[:, None]
            loss_tok, per = multi_teacher_divergence(
                logits, dists, w, self.spec, target=cfg.target, mask=valid, reduction="none",
                temperature=cfg.loss_temperature, chunk_size=cfg.chunk_size,
                return_per_teacher=True)  # [B, T], [B, T, K']
        else:  # sequence-level KD on teacher text: NLL at the shared loss temperature
            ids = torch.zeros(B, T, dtype=torch.long, device=dev)
            for b, r in enumerate(mb.samples.response_ids):
                ids[b, : len(r)] = torch.tensor(r, dtype=torch.long)
            logp = torch.log_softmax(logits.float() / cfg.loss_temperature, dim=-1)
            loss_tok = -logp.gather(-1, ids.unsqueeze(-1)).squeeze(-1)  # [B, T]
        loss_tok = torch.where(valid, loss_tok, torch.zeros_like(loss_tok))
        if cfg.loss_normalization == "token":
            coef = valid.float() / denom
        else:
            coef = valid.float() / (valid.sum(-1, keepdim=True).clamp_min(1) * denom)
        loss = (loss_tok * coef).sum()
        timings["time/loss"] += time.perf_counter() - t0

        t0 = time.perf_counter()
        if torch.isfinite(loss) or self.accelerator.num_processes > 1:  # NaN: see _update
            self._backward(loss)
        timings["time/update"] += time.perf_counter() - t0
        return self._micro_record(mb, lengths, logits, loss_tok, per, alive, tok_w, dists,
                                  w_rec, float(loss.detach()))
