"""`Distiller`: the one training loop behind every method of the paper (architecture.md §1).

One optimizer step::

    for each micro-batch (grad_accum of them):                 phase 1, no gradients
        states -> student rollout (or teacher generation, MT-SeqKD) -> Samples
        states -> debate (cached; never sees the answer) -> transcripts -> weights w [B, K]
    N = tokens (or sequences) kept in the whole accumulated batch
    for each micro-batch:                                       phase 2, one micro-batch of logits
        teacher_k.score(debate.score_context(state, transcript | None, k), response ids)
        student.response_logits -> Σ_k w_k D(p_k ‖ q) per token (Eq. 8) -> Σ / N -> backward
    clip, AdamW step, schedule step (skipped and counted on NaN)
    rollout_backend 'vllm_colocated' / 'vllm_server': the engine reloads the updated weights

Loss normalisation (the same for every method): ``token`` = Σ of per-token losses over ALL
micro-batches / number of tokens in the accumulated batch, so 2 micro-batches of B/2 give the
same gradient as one of B. ``sequence`` = mean over sequences of each sequence's token mean
(Eqs. 8-9 literally). Both are exact under accumulation because N is counted before backward.

Multi-process (``accelerate launch`` / ``torchrun``, docs/scaling.md): distribution is by
wrapping. The student is ``accelerator.prepare``d (DDP, or FSDP2 from accelerate's launch
configuration), which averages gradients in ``backward``; each process draws its own
micro-batches (the sampler shards them by rank), N is summed over processes, and each loss is
scaled by the number of processes, so the update equals one process with the union of the
batches (tested in tests/test_distributed.py). A process that must skip a micro-batch joins
the engine's collectives with a zero-weighted backward. Metrics and records are gathered into
one record of the whole step; only the main process writes the run folder. Teachers are never
wrapped: they are frozen and each process holds its own copy (or talks to a server).
"""

from __future__ import annotations

import dataclasses
import math
import random
import time
from collections import defaultdict
from contextlib import contextmanager
from typing import Any

import torch

from madopd.distill import phases
from madopd.distill.config import DistillConfig
from madopd.distill.data import TrainPool, check_pool_config
from madopd.distill.distributed import (
    Collective,
    check_engine,
    check_launch,
    is_sharded,
    sum_floats,
)
from madopd.distill.phases import Micro, SkipStep
from madopd.distill.records import StepRecorder, TokenDecoder
from madopd.errors import ConfigError, DataError, ValueRangeError
from madopd.opad import derive_seed
from madopd.types import Sampling, StepRecord

PHASES = ("rollout", "debate", "score", "loss", "update")
TEMPLATES_BY_KIND = {"agentic": "tool_use", "code": "code", "general": "general"}


@contextmanager
def _clock(timings: dict[str, float], phase: str):
    """Add the block's wall seconds to ``timings["time/<phase>"]`` (not when it raises)."""
    t0 = time.perf_counter()
    yield
    timings[f"time/{phase}"] += time.perf_counter() - t0


def debate_sampling(cfg: DistillConfig) -> Sampling:
    """The teachers' debate decoding. A sampled debate's seed joins the training seed, so
    training seeds draw different debates (issue 13, item 5); greedy turns need no seed."""
    s = cfg.debate_sampling
    if s.greedy or s.temperature <= 0:
        return s
    return dataclasses.replace(s, seed=derive_seed(cfg.seed, s.seed, "debate"))


def _is_cross(teacher: Any) -> bool:
    from madopd.crosstok.teacher import CrossTokenizerTeacher

    return isinstance(teacher, CrossTokenizerTeacher)


def wrap_other_tokenizers(cfg: Any, student: Any, teachers: list[Any]) -> list[Any]:
    """With ``cfg.cross_tokenizer`` on, every teacher whose vocabulary differs from the
    student's scores through byte-offset spans (madopd.crosstok); same-vocabulary teachers
    keep the exact path. Off: nothing changes (``check_same_vocab`` refuses a mismatch)."""
    if cfg.cross_tokenizer == "off":
        return teachers
    from madopd.crosstok.teacher import CrossTokenizerTeacher

    svocab = student.tokenizer.get_vocab()
    return [t if _is_cross(t) or t.tokenizer.get_vocab() == svocab else
            CrossTokenizerTeacher(t, student.tokenizer, mode=cfg.cross_tokenizer,
                                  top_k=cfg.cross_tokenizer_top_k) for t in teachers]


class Distiller:
    """Distil ``student`` from ``teachers`` on ``task`` under ``config`` (see module docstring).

    Args:
        config: a DistillConfig (use ``madopd.distill.preset(name, ...)`` for paper methods).
        student: an ``HFStudent`` (trainable); teachers: ``Teacher`` objects. With
            ``config.num_teachers`` set, only the first N teachers are used.
        task: a ``Task`` (single-turn) or ``EpisodicTask`` (OPAD, ``config.opad_mode``).
        debate_protocol: overrides the protocol built from the config (templates, debate
            sampling, the debate's own teacher-error policy); its ``rounds`` and missing-tag
            policy must equal ``config.rounds`` / ``config.on_missing``.
        store: a ``RunStore``: metrics, records and checkpoints are written there.
    """

    def __init__(self, config: DistillConfig, student: Any, teachers: list[Any], task: Any,
                 debate_protocol: Any = None, store: Any = None):
        from madopd.cache import DebateCache
        from madopd.debate import Debate, DebateProtocol

        self.config = cfg = config
        self.student, self.task, self.store = student, task, store
        teachers = list(teachers)
        if cfg.num_teachers is not None:
            teachers = teachers[: cfg.num_teachers]
        if cfg.method != "base" and not teachers:
            raise ConfigError("teachers: at least one teacher is needed to distil "
                              "(method 'base' is the only one without teachers)")
        if cfg.fixed_weights is not None and len(cfg.fixed_weights) != len(teachers):
            raise ConfigError(f"fixed_weights has {len(cfg.fixed_weights)} entries for "
                              f"{len(teachers)} teachers")
        self.teachers = teachers
        self.K = len(teachers)
        for t in teachers:  # in-process teachers reuse their scoring contexts' keys/values
            if hasattr(t, "enable_prefix_cache"):
                t.enable_prefix_cache(cfg.score_cache_entries, cfg.score_cache_mib)
        if teachers and hasattr(student, "tokenizer"):
            from madopd.models.hf import check_same_vocab

            teachers = self.teachers = wrap_other_tokenizers(cfg, student, teachers)
            check_same_vocab(student, [t for t in teachers if not _is_cross(t)])
        if debate_protocol is None:
            debate_protocol = DebateProtocol(
                rounds=cfg.rounds, templates=TEMPLATES_BY_KIND.get(task.kind, "general"),
                sampling=debate_sampling(cfg),
                on_teacher_error="drop_teacher" if cfg.on_teacher_error == "drop_teacher" else "raise",
                on_missing_confidence=cfg.on_missing, confidence_fallback=cfg.confidence_fallback)
        elif debate_protocol.rounds != cfg.rounds:
            raise ConfigError(f"debate_protocol.rounds={debate_protocol.rounds} differs from "
                              f"config.rounds={cfg.rounds}")
        elif debate_protocol.on_missing_confidence != cfg.on_missing:
            raise ConfigError(f"debate_protocol.on_missing_confidence="
                              f"{debate_protocol.on_missing_confidence!r} differs from "
                              f"config.on_missing={cfg.on_missing!r} (the weights use the config)")
        self.debate = Debate(teachers, debate_protocol, names=cfg.teacher_names[: self.K]
                             if cfg.teacher_names else None) if teachers else None
        self.teacher_names = list(self.debate.names) if self.debate else []
        self.cache = DebateCache(cfg.debate_cache_path) if cfg.debate_cache else None
        self.spec = self._divergence_spec()
        self._setup_accelerator()
        self.pool = TrainPool(task, opad_mode=cfg.opad_mode, batch_size=cfg.batch_size,
                              seed=cfg.seed, rank=self.accelerator.process_index,
                              world_size=self.accelerator.num_processes)
        check_pool_config(self.pool, cfg.on_policy_fraction)
        if is_sharded(self.accelerator) and self.pool.full:
            raise ConfigError("opad_mode 'full' under FSDP: episodes make a different number of "
                              "student calls on each process; use DDP")
        self.rollout_engine = self._make_rollout_engine()
        self.rng = random.Random(derive_seed(cfg.seed, "distiller"))
        self._decode_tokens = TokenDecoder(student.tokenizer)
        self.recorder = StepRecorder(cfg, self.K, self.teacher_names, student.tokenizer,
                                     self._decode_tokens, task)
        self.step_count = 0
        self.nan_streak = 0
        self._saved_step: int | None = None  # step of the last checkpoint written or resumed
        self._stop = False
        self.check_in_sync()
        from madopd.tracking import check_installed

        check_installed(cfg.report_to)  # a missing tracker package: one line, before step 1

    # ------------------------------------------------------------------ construction helpers
    def _divergence_spec(self):
        from madopd.divergence import DivergenceSpec, divergence_for_task

        cfg = self.config
        if cfg.divergence != "auto":
            return DivergenceSpec(cfg.divergence, cfg.beta)
        # Remark 1 covers agentic (JSD 0.5) and code (reverse KL); other tasks get the bounded
        # JSD(0.5) as well (documented in DistillConfig.divergence).
        kind = self.task.kind if self.task.kind in ("agentic", "code") else "agentic"
        return divergence_for_task(kind)

    def _setup_accelerator(self) -> None:
        """The engine: ``accelerator.prepare`` wraps the student (DDP / FSDP2 / nothing for one
        process) with its optimizer and schedule; the student keeps its own module for
        ``generate`` and forwards with gradients through the wrapper."""
        from accelerate import Accelerator

        cfg = self.config
        cpu = cfg.cpu or cfg.device == "cpu" or not torch.cuda.is_available()
        self.accelerator = acc = Accelerator(cpu=cpu)
        check_launch(acc.num_processes)
        check_engine(acc)
        model = self.student.model
        params = [p for p in model.parameters() if p.requires_grad]
        if not params:
            raise ConfigError("the student has no trainable parameters")
        opt = torch.optim.AdamW(params, lr=cfg.lr, betas=tuple(cfg.adam_betas),
                                weight_decay=cfg.weight_decay)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, self._lr_lambda(acc.num_processes))
        # FSDP2 must see model and optimizer together (it swaps the parameters for shards)
        engine, self.optimizer, self.scheduler = acc.prepare(model, opt, sched)
        self.engine = engine
        self.student.attach_engine(engine, acc.unwrap_model(engine), synced=is_sharded(acc))
        self.student.device = acc.device
        self.params = [p for p in engine.parameters() if p.requires_grad]
        self.collective = Collective(acc, engine, self.student)
        if acc.num_processes > 1 and acc.is_main_process:
            import sys

            kind = "fsdp" if is_sharded(acc) else "ddp"
            print(f"madopd: {acc.num_processes} processes, engine {kind} "
                  f"({type(engine).__name__})", file=sys.stderr)

    def _make_rollout_engine(self) -> Any:
        """None (the student samples with transformers), the colocated vLLM engine or a vLLM
        rollout server, synced to the student's current weights (``rollout_backend``)."""
        cfg = self.config
        if cfg.rollout_backend == "hf":
            return None
        if self.accelerator.num_processes > 1:
            raise ConfigError(f"rollout_backend={cfg.rollout_backend!r} syncs one engine from "
                              f"one process; this launch has {self.accelerator.num_processes} "
                              "processes (use rollout_backend='hf' under DDP/FSDP)")
        if cfg.rollout_backend == "vllm_server":
            from madopd.models.vllm_rollout_server import VLLMServerRollout

            return VLLMServerRollout(self.student, cfg.rollout_server_url,
                                     model=cfg.rollout_server_model,
                                     weights_dir=cfg.rollout_weights_dir,
                                     timeout=cfg.rollout_server_timeout)
        from madopd.models.vllm_rollout import VLLMColocatedRollout

        return VLLMColocatedRollout(self.student, max_model_len=cfg.rollout_max_model_len,
                                    gpu_memory_utilization=cfg.rollout_gpu_memory_utilization,
                                    seed=cfg.seed)

    @property
    def sampler(self) -> Any:
        """Who samples the student's rollouts: the vLLM engine or the student itself."""
        return self.rollout_engine if self.rollout_engine is not None else self.student

    def sync_rollout_weights(self, metrics: dict | None = None) -> None:
        """Push the student's weights into the rollout engine (no-op for 'hf'); the seconds
        and the count go to ``metrics`` (``rollout/sync_seconds``, ``count/rollout/weight_syncs``)."""
        if self.rollout_engine is None:
            return
        dt = self.rollout_engine.sync()
        if metrics is not None:
            metrics["rollout/sync_seconds"] = metrics.get("rollout/sync_seconds", 0.0) + dt
            metrics["count/rollout/weight_syncs"] = metrics.get("count/rollout/weight_syncs", 0) + 1

    def check_in_sync(self) -> None:
        """Raise when the processes hold different student weights (a no-op for one process).

        Summed gradients keep identical weights identical; this catches a process that loaded
        another checkpoint or missed an update. Called at start-up and at every checkpoint.
        """
        from madopd.distill.distributed import params_checksum

        if self.accelerator.num_processes == 1 or is_sharded(self.accelerator):
            return  # sharded: each process holds its own slice; the engine keeps them apart
        sums = self.collective.gather(params_checksum(self.params))
        if any(s != sums[0] for s in sums):
            raise ValueRangeError(f"step {self.step_count}: the {len(sums)} processes hold "
                                  f"different student weights (checksums {sums})")

    def _lr_lambda(self, num_processes: int):
        cfg = self.config
        total = max(1, cfg.max_steps)
        warm = int(cfg.warmup_ratio * total)

        def f(s: int) -> float:
            step = s // max(1, num_processes)  # accelerate steps the schedule once per process
            if warm and step < warm:
                return (step + 1) / warm
            if cfg.schedule == "constant":
                return 1.0
            progress = min(1.0, (step - warm) / max(1, total - warm))
            if cfg.schedule == "linear":
                return 1.0 - progress
            return 0.5 * (1.0 + math.cos(math.pi * progress))
        return f

    @classmethod
    def from_config(cls, config: DistillConfig, task: Any, *, store: Any = None,
                    debate_protocol: Any = None) -> Distiller:
        """Load the student and teachers named by the config, then build the Distiller."""
        from madopd.distill.loading import load_student, load_teachers

        student = load_student(config)
        teachers = [] if config.method == "base" else load_teachers(config)
        return cls(config, student, teachers, task, debate_protocol=debate_protocol, store=store)
    # ------------------------------------------------------------------ one step
    def step(self) -> StepRecord:
        """One optimizer step (all micro-batches); logs to the store when there is one."""
        from madopd.distill.state import check_finite_after_step

        record = self._step()
        check_finite_after_step(self, record)  # NaN/inf weights: logged, counted, stop
        self._log(record)
        return record

    def _weights(self, transcripts: list, n: int,
                 counters: dict[str, float]) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-sample teacher weights w [n, K] and keep [n] (``phases.debate_weights``); a method
        so an ablation can override it (``toyworld.ablations.shuffled_confidence_distiller``)."""
        return phases.debate_weights(self.config, self.K, transcripts, n, counters)

    def _step(self) -> StepRecord:
        """One step, top to bottom: rollout -> debate -> weights per micro-batch (phase 1, no
        gradients), then score -> loss -> backward one micro-batch of logits at a time
        (phase 2), then the update. Each phase is a function of ``distill/phases.py``; the
        sums over processes (the loss denominator, the skip vote, the loss) go through
        ``self.collective``, which is the identity for one process."""
        cfg = self.config
        if cfg.method == "base":
            raise ConfigError("method 'base' is the untrained student: there is no training step "
                              "(use evaluate())")
        t_start = time.perf_counter()
        self.step_count += 1
        step = self.step_count
        timings: dict[str, float] = defaultdict(float, {f"time/{k}": 0.0 for k in PHASES})
        counters: dict[str, float] = defaultdict(float)
        step_counters: dict[str, float] = {}  # per step, not per process: never summed
        self.student.train() if hasattr(self.student, "train") else None
        self.optimizer.zero_grad(set_to_none=True)
        student_before = dict(getattr(self.student, "counters", {}) or {})

        # phase 1: rollout -> debate -> weights, per micro-batch (no gradients)
        micros: list[Micro] = []
        local_skip = False
        try:
            for i in range(cfg.grad_accum):
                with _clock(timings, "rollout"):
                    ro = self._rollout(step, i, counters)
                needs_debate = ro.on_policy or cfg.off_policy_loss == "divergence"
                with _clock(timings, "debate"):
                    transcripts = (phases.run_debate(cfg, self.debate, self.cache, ro.states,
                                                     counters)
                                   if needs_debate else [None] * len(ro.states))
                weights, keep = (phases.one_hot_weights(ro.source, self.K)
                                 if ro.source is not None and not needs_debate else
                                 self._weights(transcripts, len(ro.states), counters))
                micros.append(phases.micro_batch(ro, transcripts, weights, keep, counters))
        except SkipStep:
            local_skip = True
        denom, n_skip = self.collective.sum([phases.loss_denominator(cfg, micros),
                                             float(local_skip)])
        skipped = n_skip > 0

        # phase 2: score -> loss -> backward, one micro-batch of logits at a time
        parts: list[dict[str, Any]] = []
        if not skipped and denom > 0:
            for i, mb in enumerate(micros):
                with self.collective.accumulate(last=i == len(micros) - 1):
                    try:
                        if local_skip:
                            raise SkipStep()
                        parts.append(self._micro_loss_backward(mb, denom, timings, counters))
                    except SkipStep:
                        local_skip = True
                        self.collective.join_backward()
        loss = sum(p["loss"] for p in parts) if parts else float("nan")
        loss, n_skip = self.collective.sum([loss, float(local_skip)])
        if skipped or n_skip > 0:
            skipped = True
            step_counters["count/skipped_steps"] = 1.0
            self.optimizer.zero_grad(set_to_none=True)
            denom = 0.0

        # update: clip, AdamW, schedule (NaN policy)
        for k, v in (getattr(self.student, "counters", {}) or {}).items():
            if "truncat" in k:  # prompts cut to fit the student's window (rollout or forward)
                counters[f"count/student/{k}"] += v - student_before.get(k, 0)
        metrics = self._update(loss, denom, skipped, timings, step_counters)
        metrics.update(step_counters)
        timings["time/step"] = time.perf_counter() - t_start
        record, stats = self.recorder.build(step, loss, float(self.scheduler.get_last_lr()[0]),
                                            micros, parts, metrics, timings, counters)
        if self.collective.processes > 1:
            record = self.recorder.gather(self.collective, record, stats, micros, metrics)
        return record

    def _rollout(self, step: int, micro: int, counters) -> phases.Rollout:
        """The next micro-batch of states and their samples (``phases.rollout``)."""
        cfg = self.config
        items = self.pool.next_batch()
        sampling = phases.rollout_sampling(cfg, step, micro, self.collective.rank)

        def teacher_writer(states, sampling, counters):  # MT-SeqKD's off-policy samples
            return phases.teacher_samples(
                states, sampling, counters, teachers=self.teachers, debate=self.debate,
                student=self.student, mix=cfg.fixed_weights or [1.0] * self.K, rng=self.rng)

        return phases.rollout(cfg, items, self.sampler, sampling, self.rng,
                              self.task.environment if self.pool.full else None, self.pool.full,
                              teacher_writer, counters)

    def _micro_loss_backward(self, mb: Micro, denom: float, timings, counters) -> dict[str, Any]:
        """Phase 2 for one micro-batch: the teachers score the student's tokens, the student's
        logits give the loss (``phases.micro_loss``), backward; -> the record's part."""
        cfg = self.config
        scored = None
        if mb.on_policy or cfg.off_policy_loss == "divergence":
            with _clock(timings, "score"):
                scored = phases.score(cfg, self.teachers, self.debate, mb, counters)
        t0 = time.perf_counter()
        logits, mask = self.student.response_logits(mb.samples)  # [B, T, V] with grad
        if not phases.finite_inputs(logits, scored.dists if scored is not None else []):
            # A NaN/inf student (diverged training) or a NaN teacher: the NaN policy of _update
            # skips the whole step and counts it (the divergences refuse non-finite input).
            counters["count/nonfinite_inputs"] += 1
            timings["time/loss"] += time.perf_counter() - t0
            if self.collective.processes > 1:  # still join the engine's all-reduces
                self.collective.backward(logits.float().sum() * 0.0)
            return self.recorder.empty_part(mb, float("nan"))
        ml = phases.micro_loss(cfg, self.spec, self.K, logits, mask, mb, scored, denom,
                               counters)
        timings["time/loss"] += time.perf_counter() - t0
        with _clock(timings, "update"):
            if torch.isfinite(ml.loss) or self.collective.processes > 1:  # NaN: see _update
                self.collective.backward(ml.loss)
        return self.recorder.micro_part(mb, ml, scored)

    # the step's statistics and metrics (``StepRecorder``; tests call these on a Distiller)
    def _stats(self, parts, micros, weights, correct, resp_ids, counters, timings) -> dict:
        return self.recorder.stats(parts, micros, weights, correct, resp_ids, counters, timings)

    def _metrics(self, base: dict[str, float], stats: dict[str, Any]) -> dict[str, float]:
        return self.recorder.metrics(base, stats)

    def _update(self, loss: float, denom: float, skipped: bool, timings, counters) -> dict:
        """Clip and step (gradients are already summed by the engine). ``loss``, ``denom`` and
        ``skipped`` are global (equal on every process), so every process takes the same
        branch."""
        cfg = self.config
        t0 = time.perf_counter()
        metrics: dict[str, float] = {}
        if skipped or denom == 0:
            if not skipped:
                counters["count/empty_steps"] = counters.get("count/empty_steps", 0) + 1
            self.optimizer.zero_grad(set_to_none=True)
            timings["time/update"] += time.perf_counter() - t0
            return metrics
        gn = float("nan")
        if math.isfinite(loss):
            # all parameters (accelerate matches them to the FSDP model); inf = measure only
            norm = self.accelerator.clip_grad_norm_(
                list(self.engine.parameters()),
                cfg.max_grad_norm if cfg.max_grad_norm is not None else float("inf"))
            gn = float(norm.full_tensor() if hasattr(norm, "full_tensor") else norm)
            metrics["grad_norm"] = gn
        if not (math.isfinite(loss) and math.isfinite(gn)):
            self.optimizer.zero_grad(set_to_none=True)
            self.nan_streak += 1
            counters["count/nan_skips"] = counters.get("count/nan_skips", 0) + 1
            timings["time/update"] += time.perf_counter() - t0
            if self.nan_streak >= cfg.max_nan_skips:
                raise ValueRangeError(
                    f"step {self.step_count}: loss or gradient is NaN/inf for {self.nan_streak} "
                    f"steps in a row (max_nan_skips={cfg.max_nan_skips}); every one was skipped "
                    "without an update. Lower lr, check the teachers' outputs, or raise the limit.")
            return metrics
        self.nan_streak = 0
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.sync_rollout_weights(counters)  # the next rollout samples the updated student
        timings["time/update"] += time.perf_counter() - t0
        return metrics

    # ------------------------------------------------------------------ training
    def request_stop(self) -> None:
        """Ask ``train`` to stop after the current step (widgets' stop button)."""
        self._stop = True

    def train(self, steps: int | None = None, callbacks: list[Any] = (),
              progress: bool = True) -> list[StepRecord]:
        """Run ``steps`` steps (default: up to ``config.max_steps``); returns the records.

        ``callbacks``: callables ``cb(record)`` or objects with ``on_step(record)``; a callback
        returning False, or one with ``should_stop()`` returning True, stops training after
        this step (a pause is a callback that blocks). Evaluates every ``eval_every`` steps
        (metrics ``eval/...`` in the step's record) and checkpoints every ``checkpoint_every``
        steps and at the end when there is a store.
        """
        from tqdm.auto import tqdm

        cfg = self.config
        if cfg.method == "base":
            return []
        n = steps if steps is not None else max(0, cfg.max_steps - self.step_count)
        self._stop = False
        records = []
        bar = tqdm(total=n, desc=f"{cfg.method}", disable=not progress or
                   not self.accelerator.is_main_process)
        from madopd.distill.state import check_finite_after_step

        for _ in range(n):
            rec = self._step()
            check_finite_after_step(self, rec)  # NaN/inf weights: logged, counted, stop
            if cfg.eval_every and rec.step % cfg.eval_every == 0:
                ev = self.evaluate(limit=cfg.eval_limit)
                rec.metrics.update({f"eval/{k}": float(v) for k, v in ev.items()})
            self._log(rec)
            if self.store is not None and cfg.checkpoint_every and \
                    rec.step % cfg.checkpoint_every == 0:
                self.save_checkpoint()
            records.append(rec)
            bar.update(1)
            bar.set_postfix(loss=f"{rec.loss:.4g}")
            for cb in callbacks:
                fn = getattr(cb, "on_step", cb)
                if fn(rec) is False:
                    self._stop = True
                should = getattr(cb, "should_stop", None)
                if callable(should) and should():
                    self._stop = True
            if self.accelerator.num_processes > 1:  # every process stops at the same step
                self._stop = sum_floats(self.accelerator, [float(self._stop)])[0] > 0
            if self._stop:
                break
        bar.close()
        if self.store is not None and records and self._saved_step != self.step_count:
            self.save_checkpoint()
        from madopd.tracking import close_trackers

        close_trackers(self)  # flush W&B / trackio / TensorBoard (a later step reopens them)
        return records

    def _log(self, record: StepRecord) -> None:
        if self.store is None or not self.accelerator.is_main_process:
            return
        from madopd.tracking import log_step

        log_step(self, record)  # config.report_to: TensorBoard / trackio / W&B (main process)
        self.store.log_metrics(record.step, record.metrics)
        if self.config.record_every and record.step % self.config.record_every == 0:
            self.store.log_record(record)

    # ------------------------------------------------------------------ evaluation & state
    def evaluate(self, task: Any = None, sampling: Sampling | None = None,
                 limit: int | None = None, batch_size: int | None = None,
                 outcomes: list | None = None) -> dict[str, float]:
        """Greedy evaluation (see ``madopd.distill.evaluation.evaluate_student``; ``outcomes``
        collects one ``{"id", "family", "value"}`` per item)."""
        from madopd.distill.evaluation import evaluate_student

        task = task or self.task
        sampling = sampling or Sampling(greedy=True,
                                        max_new_tokens=self.config.sampling.max_new_tokens)
        return evaluate_student(self.student, task, sampling, limit=limit,
                                batch_size=batch_size or max(self.config.batch_size, 16),
                                max_steps=self.config.opad_max_steps, outcomes=outcomes)

    def save(self, path) -> Any:
        """The student in Hugging Face format."""
        return self.student.save(path)

    def save_checkpoint(self) -> Any:
        """Write ``checkpoints/step_N`` (under several processes: call it on every process;
        the main process writes, the others wait)."""
        from madopd.distill.state import save_checkpoint

        if self.store is None:
            raise ConfigError("save_checkpoint needs a RunStore (Distiller(..., store=RunStore(dir)))")
        return save_checkpoint(self)

    def resume(self, path: Any = None) -> int:
        """Continue from a checkpoint (a checkpoint folder, a run folder, or the store's latest).

        Restores weights, optimiser, schedule, RNG and data order, and truncates the run's
        metrics/records to the checkpoint's step. Returns the step resumed from.
        """
        from madopd.distill.state import load_checkpoint

        step = load_checkpoint(self, path)
        self.sync_rollout_weights()  # the engine still holds the weights of before the resume
        return step


__all__ = ["Distiller", "DataError"]
