"""`DistillConfig`: one flat, validated configuration for every method of the paper.

Every method is a point in one configuration space (docs/architecture.md §1); `PRESETS` fill in
only the table's columns (teachers used, debate rounds, weights, on-policy fraction) so two
methods run with the same preset base differ in nothing else: same loss temperature, same
context format, same loss normalisation (paper-digest W7, W15).

Configs load from YAML or JSON files, accept ``--set key=value`` overrides typed by the field
(dotted keys reach nested samplings: ``sampling.temperature=0.7``), and round-trip through
``to_dict``/``from_dict``.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from madopd.errors import ConfigError
from madopd.types import Sampling

WEIGHTINGS = ("confidence", "uniform", "fixed", "entropy", "token_prob")
DIVERGENCES = ("auto", "fkl", "rkl", "jsd", "njsd", "srkl")
ON_MISSING = ("uniform", "drop_teacher", "skip_sample")
ON_TEACHER_ERROR = ("raise", "drop_teacher", "skip_step")
SCHEDULES = ("constant", "cosine", "linear")
# student rollouts: transformers generate, an in-process vLLM engine, or a vLLM server (issue 14)
ROLLOUT_BACKENDS = ("hf", "vllm_colocated", "vllm_server")
METHODS = ("base", "mt_seqkd", "opd", "mt_opd", "mad_opd", "custom")
MAX_LR = 1.0  # AdamW steps are ~lr per parameter: above 1 nothing trains, far above overflows
FLOAT32_MAX = 3.4028234663852886e38  # every float field must survive a cast to float32
INT_MAX = 2**53  # every int field: exact in JSON and float64 (a step counter, a seed)


def _help(text: str, **kw) -> Any:
    """A dataclass field with TRL-style help metadata."""
    return field(metadata={"help": text}, **kw)


@dataclass
class DistillConfig:
    """Everything one distillation run needs. Field help strings double as CLI documentation."""

    # ---- models -------------------------------------------------------------------------
    student: str | None = _help("student checkpoint path (Hugging Face format)", default=None)
    teachers: list[str] = _help("teacher checkpoint paths (or model names on a vLLM server)",
                                default_factory=list)
    num_teachers: int | None = _help(
        "use only the first N of `teachers` (None = all). OPD's preset sets 1: the first "
        "teacher should be the strongest", default=None)
    teacher_names: list[str] | None = _help("display names of the teachers (default: folder names)",
                                            default=None)
    teacher_backend: str = _help("'hf' (transformers in process), 'vllm_server', 'vllm_offline'",
                                 default="hf")
    teacher_base_urls: list[str] | None = _help(
        "one OpenAI-compatible base URL per teacher for teacher_backend='vllm_server'", default=None)
    teacher_tokenizers: list[str] | None = _help(
        "vllm_server: one tokenizer folder (or hub id) per teacher. Needed for every teacher whose "
        "served name is not a local folder: madopd never assumes the student's tokenizer", default=None)
    # vLLM-server requests (madopd.models.vllm_server): a server that trickles bytes cannot
    # hold a run forever, and a flaky one cannot retry forever.
    teacher_timeout: float = _help("vllm_server: seconds to connect and to wait for each read",
                                   default=30.0)
    # Defaults bound one request at (retries + 1) * deadline + backoff = 3 * 120 + 1.5 s and a
    # teacher's retries over a run at 32 (issue 23: 300 s x 3 retries, no budget, let one
    # trickling server cost ~20 minutes a request).
    teacher_deadline: float = _help(
        "vllm_server: TOTAL seconds one request attempt may take (connect, send, every read)",
        default=120.0)
    teacher_retries: int = _help("vllm_server: extra attempts per request on transient failures",
                                 default=2)
    teacher_retry_budget: int | None = _help(
        "vllm_server: retries one teacher may spend over the whole run (None = no limit); "
        "once spent, a failure is final (counted)", default=32)
    teacher_max_reply_mib: float = _help(
        "vllm_server: largest reply body read from a server, in MiB; a longer one (or a "
        "Content-Length above it) is a TeacherError, never allocated. Dense scoring "
        "(score_top_k=None) of long continuations may need more", default=256.0)
    device: str = _help("'auto' (cuda when available), 'cpu' or 'cuda'", default="auto")
    dtype: str = _help("model dtype: 'float32', 'bfloat16' or 'float16'", default="float32")
    task: str | None = _help(
        "task for `madopd train`: 'jsonl-code:PATH', 'jsonl-tools:PATH' or a registered name "
        "(madopd.tasks.get_task)", default=None)
    method: str = _help("label of the preset this config came from (informational, except "
                        "'base' which never trains)", default="custom")

    # ---- debate and weights (paper §4.1-4.2) ----------------------------------------------
    rounds: int = _help("debate rounds R (0 = no debate: teachers score with the blind cue)",
                        default=2)
    debate_sampling: Sampling = _help(
        "decoding settings of the debate (teachers' turns)",
        default_factory=lambda: Sampling(temperature=0.7, top_p=0.8, top_k=20,
                                         max_new_tokens=256, seed=0))
    weighting: str = _help(
        "'confidence' (Eqs. 6-7; uniform when R = 0 because there is nothing to weigh), "
        "'uniform', 'fixed' (fixed_weights), or per-token 'entropy' / 'token_prob'",
        default="confidence")
    tau: float = _help("softmax temperature of the confidence weights (Eq. 7), > 0", default=1.0)
    on_missing: str = _help("missing confidence tag policy: 'uniform', 'drop_teacher', "
                            "'skip_sample' (always counted)", default="uniform")
    confidence_fallback: str = _help(
        "a debate turn without a readable confidence tag: 'none' (missing; on_missing applies), "
        "'forced_tag' (expected N read after forcing '<<CONFIDENCE='), 'forced_ask' "
        "(expected N of the reply when asked for a 0-100 number in a follow-up turn) or "
        "'answer_logprob' (the teacher's mean probability of its reply); counted per "
        "source (madopd.confidence)", default="none")
    on_teacher_error: str = _help(
        "a teacher failing while force-decoding: 'raise', 'drop_teacher' (its weight goes to the "
        "others for this micro-batch), 'skip_step' (counted)", default="raise")
    fixed_weights: list[float] | None = _help(
        "per-teacher weights for weighting='fixed' and the MT-SeqKD teacher mix ratio "
        "(normalised; None = uniform), e.g. [0.7, 0.3]", default=None)

    # ---- loss (paper §3, Eq. 8) ---------------------------------------------------------
    divergence: str = _help("'fkl', 'rkl', 'jsd', 'njsd', 'srkl' (reverse KL estimated on the "
                            "student's sampled token, policy-gradient form; works with teachers "
                            "of another tokenizer), or 'auto' (Remark 1: jsd(0.5) for "
                            "agentic tasks, rkl for code; 'general' tasks get the bounded "
                            "jsd(0.5) too; auto ignores beta)", default="auto")
    beta: float = _help("beta of jsd (0 < beta < 1) / njsd (0 <= beta <= 1)", default=0.5)
    target: str = _help("'sum' = Σ_k w_k D(p_k‖q) (Eq. 8) or 'mixture' = D(Σ_k w_k p_k ‖ q)",
                        default="sum")
    loss_temperature: float = _help(
        "divides student and teacher logits in every loss; the SAME for every method (W7)",
        default=1.0)
    loss_normalization: str = _help(
        "'token': Σ per-token losses / number of tokens in the accumulated batch (default); "
        "'sequence': mean over sequences of each sequence's token mean (exactly Eqs. 8-9)",
        default="token")
    cross_tokenizer: str = _help(
        "teachers whose tokenizer differs from the student's: 'off' (refused: "
        "TokenizerMismatchError), 'sampled' (byte-offset spans, sampled-token reverse KL: "
        "needs divergence='srkl') or 'full' (their distribution over the tokens whose strings "
        "match, top cross_tokenizer_top_k + tail, at span starts; coverage counted). "
        "madopd.crosstok, docs/cross-tokenizer.md", default="off")
    cross_tokenizer_top_k: int = _help("matched tokens kept per position in "
                                       "cross_tokenizer='full' (the rest is the tail bucket)",
                                       default=64)
    score_top_k: int | None = _help("teachers return top-k log-probs + tail (None = dense)",
                                    default=None)
    chunk_size: int | None = _help("tokens per divergence chunk (bounds peak memory); None: "
                                   "from a cache/memory budget (docs/performance.md)",
                                   default=None)
    score_cache_entries: int = _help(
        "in-process teachers keep the key/value cache of this many scoring contexts (state + "
        "transcript + cue) and reuse it across steps and samples of a state; equal to uncached "
        "scoring to 1e-5 (madopd.models.prefix_cache). 0 = off", default=256)
    score_cache_mib: float = _help("memory bound of each teacher's scoring-context cache in MiB "
                                   "(least recently used contexts go first)", default=1024.0)

    # ---- on-policy fraction (MT-SeqKD) -----------------------------------------------------
    on_policy_fraction: float = _help(
        "λ: probability that a micro-batch is sampled by the student (1 = on-policy). With "
        "probability 1-λ teachers generate the responses (per sample, by fixed_weights)",
        default=1.0)
    off_policy_loss: str = _help(
        "loss on teacher-generated responses: 'nll' (classic sequence-level KD, the MT-SeqKD "
        "default) or 'divergence' (the same per-token divergence as on-policy)", default="nll")

    # ---- student sampling --------------------------------------------------------------
    sampling: Sampling = _help("decoding settings of student rollouts (the debate has its own)",
                               default_factory=lambda: Sampling(temperature=1.0, max_new_tokens=64))

    rollout_backend: str = _help(
        "who samples the student's rollouts: 'hf' (transformers generate, in process), "
        "'vllm_colocated' (vllm.LLM in this process, weights pushed in place after every "
        "optimizer step; madopd.models.vllm_rollout) or 'vllm_server' (a separate vLLM server "
        "at rollout_server_url, started with VLLM_SERVER_DEV_MODE=1; weights written to "
        "rollout_weights_dir and reloaded by the server after every optimizer step; "
        "madopd.models.vllm_rollout_server). vLLM backends: LoRA merged, one process only. "
        "Same sampling semantics (seed + i per sample on vLLM)", default="hf")
    rollout_server_url: str | None = _help(
        "vllm_server: the server's base URL, http(s)://host:port (required there; refused "
        "with another backend)", default=None)
    rollout_server_model: str | None = _help(
        "vllm_server: the served model name (None = the one model the server lists)",
        default=None)
    rollout_weights_dir: str | None = _help(
        "vllm_server: folder the trainer writes model.safetensors into and the server reloads "
        "from; the server must see it at the same path (None = a temporary folder on this "
        "machine: a server on the same machine)", default=None)
    rollout_server_timeout: float = _help(
        "vllm_server: seconds to connect and for each read of a request (an attempt ends "
        "after 10x); a sampling request is retried twice on transient failures", default=60.0)
    rollout_max_model_len: int | None = _help(
        "vllm_colocated: the engine's context in tokens (None = the student's max_context, "
        "at most 4096)", default=None)
    rollout_gpu_memory_utilization: float = _help(
        "vllm_colocated on a GPU: fraction of its memory the engine may take (leave room for "
        "training); on CPU the KV cache is $VLLM_CPU_KVCACHE_SPACE GiB (default 1)", default=0.3)

    # ---- optimisation ------------------------------------------------------------------
    lr: float = _help("AdamW learning rate", default=1e-5)
    weight_decay: float = _help("AdamW weight decay", default=0.01)
    adam_betas: list[float] = _help("AdamW betas", default_factory=lambda: [0.9, 0.999])
    schedule: str = _help("learning-rate schedule: 'constant', 'cosine', 'linear'",
                          default="cosine")
    warmup_ratio: float = _help("fraction of max_steps spent warming up linearly", default=0.05)
    max_steps: int = _help("optimizer steps of a run (also the schedule's length)", default=100)
    batch_size: int = _help("states per micro-batch per process (full OPAD: episodes)", default=8)
    grad_accum: int = _help("micro-batches accumulated per optimizer step", default=1)
    max_grad_norm: float | None = _help("gradient clipping norm (None = off)", default=1.0)
    lora_r: int = _help("LoRA rank (0 = full fine-tuning)", default=0)
    lora_alpha: float = _help("LoRA alpha", default=16.0)
    lora_dropout: float = _help("LoRA dropout", default=0.0)
    lora_targets: list[str] | None = _help("LoRA target modules (None = the backend's default)",
                                           default=None)
    seed: int = _help("seed of data order, on-policy coin flips and per-step sampling seeds",
                      default=0)
    max_nan_skips: int = _help("stop with an error after this many NaN steps in a row (each "
                               "skipped step is counted)", default=3)
    cpu: bool = _help("force accelerate onto the CPU", default=False)

    # ---- runs, checkpoints, evaluation -------------------------------------------------------
    checkpoint_every: int = _help("save a checkpoint every N steps (0 = only at the end)",
                                  default=100)
    keep_checkpoints: int | None = _help("keep only the newest N checkpoints (None = all)",
                                         default=None)
    eval_every: int = _help("evaluate every N steps (0 = never during training)", default=0)
    eval_limit: int | None = _help("evaluate on at most N held-out states/episodes", default=None)
    record_every: int = _help("store the full StepRecord every N steps (0 = never)", default=1)
    allow_unverified_checkpoints: bool = _help(
        "resume from a checkpoint without SHA256SUMS (written by an older madopd): its files "
        "cannot be verified, so this is refused unless set; each such load is counted and "
        "written to events.jsonl", default=False)
    on_corrupt_checkpoint: str = _help(
        "a checkpoint whose SHA256SUMS do not verify on resume: 'raise' (an error naming the "
        "file) or 'previous' (resume from the newest older one that verifies; counted)",
        default="raise")
    record_topk: int = _help("top-k ids/log-probs kept per token in records (0 = none)", default=5)
    verify_train: bool = _help("run task.verify on training responses (StepRecord.correct)",
                               default=True)

    # ---- experiment trackers (madopd.tracking) ----------------------------------------------
    report_to: list[str] = _help(
        "experiment trackers the main process logs to: any of 'tensorboard', 'trackio', 'wandb' "
        "(a list or 'a,b'; 'all', 'none'). Every metrics.jsonl scalar under its own name, "
        "share/<teacher> token shares, and a debate/completions table every record_every steps. "
        "Needs pip install 'madopd[tracking]'", default_factory=list)
    tracking_project: str = _help("project name in trackio / W&B (the run is named after its "
                                  "folder)", default="madopd")
    tracking_offline: bool = _help(
        "True: nothing tries the network (W&B offline mode, `wandb sync RUN/wandb/offline-run-*` "
        "uploads later; trackio's local store; TensorBoard event files). False: W&B online",
        default=True)
    on_tracker_error: str = _help(
        "a tracker failing to start or to log: 'continue' (counted as "
        "count/tracking/<tracker>_errors, tried again next step), 'disable' (counted, not used "
        "again) or 'raise'", default="continue")

    # ---- debate cache, OPAD ----------------------------------------------------------------
    debate_cache: bool = _help("cache debate transcripts (the debate never sees the student's "
                               "answer)", default=True)
    debate_cache_path: str | None = _help("JSONL file backing the cache (None = memory only)",
                                          default=None)
    opad_mode: str = _help("multi-turn tasks: 'teacher_forced' (reference history, the official "
                           "default) or 'full' (the student's own rollouts, Eqs. 9-10)",
                           default="teacher_forced")
    opad_max_steps: int = _help("maximum actions per episode in full OPAD rollouts", default=10)

    def __post_init__(self):
        self.debate_sampling = _as_sampling(self.debate_sampling, "debate_sampling")
        self.sampling = _as_sampling(self.sampling, "sampling")
        self.teachers = list(self.teachers or [])
        self.adam_betas = [float(b) for b in self.adam_betas]
        from madopd.tracking import normalize_report_to

        self.report_to = normalize_report_to(self.report_to)
        self.validate()

    # ---- validation ------------------------------------------------------------------------
    def _validate_rollout_server(self) -> None:
        fields = ("rollout_server_url", "rollout_server_model", "rollout_weights_dir")
        if self.rollout_backend != "vllm_server":
            used = [f for f in fields if getattr(self, f) is not None]
            if used:
                raise ConfigError(f"{used[0]} is set but rollout_backend is "
                                  f"{self.rollout_backend!r} (it is used by 'vllm_server' only)")
        elif self.rollout_server_url is None:
            raise ConfigError("rollout_server_url: required with rollout_backend='vllm_server'")
        else:
            from madopd.models.vllm_rollout_server import check_server_url

            check_server_url(self.rollout_server_url)
        if not 0 < self.rollout_server_timeout < float("inf"):
            raise ConfigError(f"rollout_server_timeout must be a finite number of seconds > 0, "
                              f"got {self.rollout_server_timeout}")

    def validate(self) -> None:
        """Raise ConfigError naming the first invalid field."""
        _check_finite(self)
        _choice(self, "on_corrupt_checkpoint", ("raise", "previous"))
        if not self.teacher_timeout > 0 or not self.teacher_deadline > 0:
            raise ConfigError(f"teacher_timeout and teacher_deadline must be > 0, got "
                              f"{self.teacher_timeout}, {self.teacher_deadline}")
        if self.teacher_retries < 0 or (self.teacher_retry_budget is not None
                                        and self.teacher_retry_budget < 0):
            raise ConfigError(f"teacher_retries and teacher_retry_budget must be >= 0, got "
                              f"{self.teacher_retries}, {self.teacher_retry_budget}")
        _choice(self, "method", METHODS)
        _choice(self, "teacher_backend", ("hf", "vllm_server", "vllm_offline"))
        _choice(self, "device", ("auto", "cpu", "cuda"))
        _choice(self, "dtype", ("float32", "bfloat16", "float16"))
        _choice(self, "weighting", WEIGHTINGS)
        _choice(self, "confidence_fallback", ("none", "forced_tag", "forced_ask", "answer_logprob"))
        _choice(self, "on_missing", ON_MISSING)
        _choice(self, "on_teacher_error", ON_TEACHER_ERROR)
        _choice(self, "divergence", DIVERGENCES)
        _choice(self, "target", ("sum", "mixture"))
        _choice(self, "loss_normalization", ("token", "sequence"))
        _choice(self, "off_policy_loss", ("nll", "divergence"))
        _choice(self, "schedule", SCHEDULES)
        _choice(self, "opad_mode", ("teacher_forced", "full"))
        _choice(self, "rollout_backend", ROLLOUT_BACKENDS)
        _choice(self, "on_tracker_error", ("continue", "disable", "raise"))
        self._validate_rollout_server()
        if self.rollout_max_model_len is not None and self.rollout_max_model_len < 2:
            raise ConfigError(f"rollout_max_model_len must be >= 2 or None, got "
                              f"{self.rollout_max_model_len}")
        if not 0 < self.rollout_gpu_memory_utilization <= 1:
            raise ConfigError(f"rollout_gpu_memory_utilization must be in (0, 1], got "
                              f"{self.rollout_gpu_memory_utilization}")
        if self.num_teachers is not None and self.num_teachers < 1:
            raise ConfigError(f"num_teachers must be >= 1 or None, got {self.num_teachers}")
        if self.teacher_names is not None and len(self.teacher_names) != len(self.teachers):
            raise ConfigError(f"teacher_names has {len(self.teacher_names)} names for "
                              f"{len(self.teachers)} teachers")
        if self.rounds < 0:
            raise ConfigError(f"rounds must be >= 0, got {self.rounds}")
        _positive(self, "tau")
        _positive(self, "loss_temperature")
        if self.divergence == "jsd" and not 0.0 < self.beta < 1.0:
            raise ConfigError(f"beta must be in (0, 1) for divergence='jsd', got {self.beta}")
        if self.divergence in ("njsd", "auto") and not 0.0 <= self.beta <= 1.0:
            raise ConfigError(f"beta must be in [0, 1], got {self.beta}")
        _choice(self, "cross_tokenizer", ("off", "sampled", "full"))
        if self.cross_tokenizer == "sampled" and self.divergence != "srkl":
            raise ConfigError("cross_tokenizer='sampled' needs divergence='srkl' (span "
                              "log-probs carry no distribution over the student's vocabulary)")
        if self.cross_tokenizer != "off" and self.weighting in ("entropy", "token_prob"):
            raise ConfigError(f"weighting={self.weighting!r} reads each teacher's distribution "
                              "per token: not available with cross_tokenizer; use "
                              "'confidence', 'uniform' or 'fixed'")
        if self.cross_tokenizer_top_k < 1:
            raise ConfigError(f"cross_tokenizer_top_k must be >= 1, got "
                              f"{self.cross_tokenizer_top_k}")
        if self.divergence == "srkl" and self.target != "sum":
            raise ConfigError("divergence='srkl' needs target='sum' (a sampled-token estimate "
                              "weights the teachers' log ratios; no mixture distribution)")
        if not 0.0 <= self.on_policy_fraction <= 1.0:
            raise ConfigError(f"on_policy_fraction must be in [0, 1], got {self.on_policy_fraction}")
        if self.fixed_weights is not None:
            if any(w < 0 for w in self.fixed_weights) or sum(self.fixed_weights) <= 0:
                raise ConfigError(f"fixed_weights must be >= 0 with a positive sum, got "
                                  f"{self.fixed_weights}")
            k = self.effective_num_teachers
            if k and len(self.fixed_weights) != k:
                raise ConfigError(f"fixed_weights has {len(self.fixed_weights)} entries for {k} "
                                  "teachers")
        if self.score_top_k is not None and self.score_top_k < 1:
            raise ConfigError(f"score_top_k must be >= 1 or None, got {self.score_top_k}")
        for name in ("batch_size", "grad_accum", "chunk_size", "max_nan_skips", "opad_max_steps"):
            if name == "chunk_size" and self.chunk_size is None:
                continue
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("max_steps", "checkpoint_every", "eval_every", "record_every", "record_topk",
                     "lora_r", "score_cache_entries"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be >= 0, got {getattr(self, name)}")
        _positive(self, "lr")
        if self.lr > MAX_LR:  # 1e300 is finite in float64 but inf in the float32 optimiser
            raise ConfigError(f"field 'lr' must be <= {MAX_LR}, got {self.lr!r}")
        _positive(self, "teacher_max_reply_mib")
        _positive(self, "score_cache_mib")
        if self.weight_decay < 0:
            raise ConfigError(f"weight_decay must be >= 0, got {self.weight_decay}")
        if len(self.adam_betas) != 2 or not all(0.0 <= b < 1.0 for b in self.adam_betas):
            raise ConfigError(f"adam_betas must be two numbers in [0, 1), got {self.adam_betas}")
        if not 0.0 <= self.warmup_ratio < 1.0:
            raise ConfigError(f"warmup_ratio must be in [0, 1), got {self.warmup_ratio}")
        if self.max_grad_norm is not None and self.max_grad_norm <= 0:
            raise ConfigError(f"max_grad_norm must be > 0 or None, got {self.max_grad_norm}")
        if self.teacher_backend == "vllm_server":
            if not self.teacher_base_urls or len(self.teacher_base_urls) != len(self.teachers):
                raise ConfigError("teacher_base_urls needs one URL per teacher for "
                                  "teacher_backend='vllm_server'")
            if self.teacher_tokenizers is not None and \
                    len(self.teacher_tokenizers) != len(self.teachers):
                raise ConfigError(f"teacher_tokenizers has {len(self.teacher_tokenizers)} entries "
                                  f"for {len(self.teachers)} teachers")
        for name in ("sampling", "debate_sampling"):
            s = getattr(self, name)
            if s.max_new_tokens < 1 or s.temperature < 0 or not 0 < s.top_p <= 1 or s.top_k < 0:
                raise ConfigError(f"{name} is invalid: {s}")

    @property
    def effective_num_teachers(self) -> int:
        """K after `num_teachers` (0 when no teacher paths are configured)."""
        k = len(self.teachers)
        return min(k, self.num_teachers) if self.num_teachers is not None else k

    # ---- (de)serialisation -----------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DistillConfig:
        if not isinstance(data, dict):
            raise ConfigError(f"a config must be a mapping of field names, got {type(data).__name__}")
        names = {f.name for f in dataclasses.fields(cls)}
        kwargs = {}
        for key, value in data.items():
            if key not in names:
                raise ConfigError(f"unknown config field {key!r}{_did_you_mean(key, names)}")
            kwargs[key] = _coerce(value, _hints()[key], key)
        return cls(**kwargs)

    @classmethod
    def from_file(cls, path: str | Path, overrides: list[str] | None = None) -> DistillConfig:
        """Load a YAML (.yaml/.yml) or JSON file, then apply ``key=value`` overrides."""
        return cls.from_dict(apply_overrides(read_config_file(path), overrides or []))

    def replace(self, **changes) -> DistillConfig:
        return DistillConfig.from_dict({**self.to_dict(), **changes})


# ---- presets: the table of docs/architecture.md §1 --------------------------------------------

PRESETS: dict[str, dict[str, Any]] = {
    # Base: the untrained student (evaluate only; `Distiller.step` refuses to train).
    "base": {"method": "base"},
    # MT-SeqKD: teachers generate (λ = 0) with a fixed mix ratio (fixed_weights), no debate.
    "mt_seqkd": {"method": "mt_seqkd", "num_teachers": None, "rounds": 0, "weighting": "fixed",
                 "on_policy_fraction": 0.0},
    # OPD: one teacher (the first, i.e. the strongest), no debate.
    "opd": {"method": "opd", "num_teachers": 1, "rounds": 0, "weighting": "uniform",
            "on_policy_fraction": 1.0},
    # MT-OPD: all teachers, uniform weights, no debate.
    "mt_opd": {"method": "mt_opd", "num_teachers": None, "rounds": 0, "weighting": "uniform",
               "on_policy_fraction": 1.0},
    # MAD-OPD: all teachers debate R = 2 rounds (paper's best), confidence weights.
    "mad_opd": {"method": "mad_opd", "num_teachers": None, "rounds": 2,
                "weighting": "confidence", "on_policy_fraction": 1.0},
}


def preset(name: str, base: DistillConfig | dict | None = None, **fields) -> DistillConfig:
    """A config for one paper method: ``base`` (a config or dict) + the preset's columns + fields.

    The preset only sets the table's columns, so ``preset("opd", cfg)`` and
    ``preset("mad_opd", cfg)`` differ in nothing else.
    """
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}")
    data = base.to_dict() if isinstance(base, DistillConfig) else dict(base or {})
    return DistillConfig.from_dict({**data, **PRESETS[name], **fields})


# ---- file loading and --set overrides -------------------------------------------------------

def read_config_file(path: str | Path) -> dict[str, Any]:
    """The mapping of a YAML or JSON config file, read through ``madopd.safe_io`` (size,
    depth and alias-expansion limits, duplicate keys refused): ConfigError naming the file
    and line otherwise. A FIFO or device is refused, not read."""
    import os

    from madopd import nofollow, safe_io
    from madopd.errors import DataError

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    try:
        with os.fdopen(nofollow.open_fd(path.resolve(), os.O_RDONLY), "rb") as f:
            raw = f.read(safe_io.MAX_YAML_BYTES + 1)
    except (OSError, DataError) as exc:
        raise ConfigError(f"config file {path}: cannot read ({exc})") from None
    if len(raw) > safe_io.MAX_YAML_BYTES:
        raise ConfigError(f"config file {path}: larger than {safe_io.MAX_YAML_BYTES} bytes")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise ConfigError(f"config file {path}, line {line}: not UTF-8 (byte {exc.start}: "
                          f"{raw[exc.start:exc.start + 1]!r}); save it as UTF-8") from None
    try:
        if path.suffix in (".yaml", ".yml"):
            data = safe_io.loads_yaml(text, str(path))
        else:
            data = safe_io.loads_json(raw, str(path), what="config")
    except DataError as exc:  # names the file, the line and (duplicates) the key
        raise ConfigError(f"config file could not be parsed: {exc}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping, got {type(data).__name__}")
    return data


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``key=value`` strings (``sampling.temperature=0.7`` reaches nested fields).

    Values are parsed as YAML scalars/lists (``[a, b]``, ``null``, ``true``) and then coerced
    to the field's type, so ``lr=1e-5`` becomes a float even though YAML 1.1 reads a string.
    """
    data = json.loads(json.dumps(data, default=_jsonable))  # deep copy, dataclasses -> dicts
    hints = _hints()
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"--set expects key=value, got {item!r}")
        key, raw = item.split("=", 1)
        key = key.strip()
        top, _, sub = key.partition(".")
        if top not in hints:
            raise ConfigError(f"--set: unknown config field {top!r}{_did_you_mean(top, hints)}")
        value = _parse_scalar(raw)
        if sub:
            if hints[top] is not Sampling:
                raise ConfigError(f"--set: field {top!r} has no sub-field {sub!r}")
            sub_hints = typing.get_type_hints(Sampling)
            if sub not in sub_hints:
                raise ConfigError(f"--set: Sampling has no field {sub!r}"
                                  f"{_did_you_mean(sub, sub_hints)}")
            nested = data.get(top)
            nested = dict(nested) if isinstance(nested, dict) else (
                dataclasses.asdict(_default_of(top)))
            nested[sub] = _coerce(value, sub_hints[sub], key)
            data[top] = nested
        else:
            data[top] = _coerce(value, hints[top], key)
    return data


def _parse_scalar(raw: str) -> Any:
    """A --set value as YAML (bounded like a config file); text YAML cannot parse is kept
    as the string itself, a value beyond the limits is a ConfigError."""
    from madopd import safe_io
    from madopd.errors import DataError

    try:
        return safe_io.loads_yaml(raw, "--set value")
    except DataError as exc:
        if "invalid YAML" in str(exc):
            return raw
        raise ConfigError(str(exc)) from None


def _jsonable(obj):
    if dataclasses.is_dataclass(obj):
        return dataclasses.asdict(obj)
    raise TypeError(f"not serialisable: {type(obj).__name__}")


def _default_of(name: str):
    f = next(f for f in dataclasses.fields(DistillConfig) if f.name == name)
    return f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default


_HINTS: dict[str, Any] = {}


def _hints() -> dict[str, Any]:
    if not _HINTS:
        _HINTS.update(typing.get_type_hints(DistillConfig))
    return _HINTS


def _coerce(value: Any, hint: Any, name: str) -> Any:
    """Convert ``value`` to the annotated type ``hint`` or raise ConfigError naming ``name``."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(value, inner[0], name)
    if hint is Sampling:
        return _as_sampling(value, name)
    if origin is list:
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"field {name!r} expects a list, got {value!r}")
        return [_coerce(v, args[0], f"{name}[{i}]") for i, v in enumerate(value)]
    try:
        if hint is bool:
            if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
                return value.lower() in ("true", "1", "yes")
            if isinstance(value, bool):
                return value
            raise ValueError
        if hint is int:
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError
            out = int(value)
            if abs(out) > INT_MAX:
                raise ValueError
            return out
        if hint is float:
            if isinstance(value, bool):
                raise ValueError
            return float(value)
        if hint is str:
            if not isinstance(value, str):
                raise ValueError
            return value
    except (TypeError, ValueError, OverflowError):  # int(1e999) overflows
        raise ConfigError(f"field {name!r} expects {getattr(hint, '__name__', hint)}, "
                          f"got {value!r}") from None
    return value


def _as_sampling(value: Any, name: str) -> Sampling:
    if isinstance(value, Sampling):
        return value
    if not isinstance(value, dict):
        raise ConfigError(f"field {name!r} expects a mapping of Sampling fields, got {value!r}")
    hints = typing.get_type_hints(Sampling)
    out = {}
    for key, v in value.items():
        if key not in hints:
            raise ConfigError(f"field {name!r}: Sampling has no field {key!r}"
                              f"{_did_you_mean(key, hints)}")
        out[key] = _coerce(v, hints[key], f"{name}.{key}")
    return Sampling(**out)


def _check_finite(cfg) -> None:
    """Every float of the config (lists and samplings included) must be finite: ``lr: .inf``
    would make step 1 all NaN."""
    for f in dataclasses.fields(cfg):
        v = getattr(cfg, f.name)
        if isinstance(v, list):
            items = [(f"{f.name}[{i}]", x) for i, x in enumerate(v)]
        elif isinstance(v, Sampling):
            items = [(f"{f.name}.{k}", x) for k, x in dataclasses.asdict(v).items()]
        else:
            items = [(f.name, v)]
        for name, x in items:
            if isinstance(x, float) and not math.isfinite(x):
                raise ConfigError(f"field {name!r} must be a finite number, got {x!r}")
            if isinstance(x, float) and abs(x) > FLOAT32_MAX:
                raise ConfigError(f"field {name!r} must fit a float32 (|x| <= 3.4e38), got {x!r}")
            if isinstance(x, int) and not isinstance(x, bool) and abs(x) > INT_MAX:
                raise ConfigError(f"field {name!r} must be an integer within +-2**53, got {x!r}")


def _choice(cfg, name: str, options) -> None:
    value = getattr(cfg, name)
    if value not in options:
        raise ConfigError(f"field {name!r} must be one of {list(options)}, got {value!r}")


def _positive(cfg, name: str) -> None:
    value = getattr(cfg, name)
    if not value > 0:
        raise ConfigError(f"field {name!r} must be > 0, got {value!r}")


def _did_you_mean(key: str, names) -> str:
    close = difflib.get_close_matches(key, list(names), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""
