"""Teachers and students that run a transformers causal LM in this process.

``HFTeacher`` debates (``generate``) and force-decodes a student's tokens (``score``);
``HFStudent`` adds on-policy rollouts, response logits with grad, LoRA and saving.

Alignment (docs/architecture.md §3): for prompt ids P and continuation ids R, the logits that
predict R[t] are the model outputs at position len(P)+t-1. Only those positions go through the
LM head (``logits_to_keep`` with per-sample positions), so memory is O(B·T_cont·V), not
O(B·T_total·V) — the vocabulary projection dominates for real models (V ≈ 150k).
"""

from __future__ import annotations

import contextlib
import copy
import functools
import json
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from madopd.errors import ConfigError, TokenizerMismatchError, ValueRangeError
from madopd.models._common import (
    check_continuations,
    contexts_to_ids,
    cut_at_eos,
    fit_context,
    is_greedy,
    load_tokenizer,
    set_chat_template,
    topk_from_logprobs,
    validate_sampling,
    validate_truncation,
)
from madopd.types import Chat, Samples, Sampling, Scores, State


@functools.cache
def per_sample_logits_to_keep() -> bool:
    """Whether this transformers reads a 2-D ``logits_to_keep`` as per-sample positions
    (``slice_logits_to_keep``, transformers >= 5.20); older versions would index every
    sample's hidden states with every row of it."""
    import transformers.modeling_utils as mu

    return hasattr(mu, "slice_logits_to_keep")


# Sampling in transformers draws from torch's global RNG. Debates call teachers from threads,
# so sampled generation is serialised: a seeded call then sees only its own RNG stream.
_SAMPLING_LOCK = threading.RLock()


class HFTeacher:
    """A frozen transformers model as a MAD-OPD teacher (implements ``madopd.types.Teacher``).

    Args:
        model_or_path: a ``PreTrainedModel``, a checkpoint directory, a hub id, or a catalogue
            name (``madopd.models.catalogue``, e.g. ``"smollm2-135m-instruct"``).
        tokenizer: tokenizer object or path; defaults to the checkpoint directory.
        name: label in transcripts and records; defaults to the directory name.
        max_context: longest context + continuation in tokens (default: the model's
            ``max_position_embeddings``).
        truncation: ``"left"`` drops the oldest context tokens (counted in
            ``counters["truncated_contexts"]`` and flagged in ``Scores.truncated``), ``"error"``
            raises ``ValueRangeError`` naming the sample and the lengths.
        batch_size: sequences per forward pass (bounds peak memory).
        vocab_columns: keep only the first ``vocab_columns`` logit columns before the softmax
            (set by ``check_same_vocab(restrict_to_tokenizer=True)``); None keeps all of them.
        chat_template: None keeps the tokenizer's; ``"plain"`` sets the plain-text template
            for base models without one (``madopd.models._common.PLAIN_CHAT_TEMPLATE``);
            any other string is a Jinja template. A chat rendered without any template is a
            ``ConfigError`` saying this.
    """

    trainable = False
    engine: Any = None  # the accelerate-wrapped model (DDP/FSDP) for forwards; see attach_engine
    synced_generation = False  # generate until every process is done (sharded weights)

    def __init__(self, model_or_path: Any, tokenizer: Any = None, *, name: str | None = None,
                 device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32,
                 max_context: int | None = None, truncation: str = "left", batch_size: int = 16,
                 vocab_columns: int | None = None, chat_template: str | None = None):
        self.truncation = validate_truncation(truncation)
        if batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
        self.batch_size = batch_size
        self.device = torch.device(device)
        if isinstance(model_or_path, (str, Path)):
            from transformers import AutoModelForCausalLM

            from madopd.models.catalogue import resolve_model_path

            path = str(resolve_model_path(str(model_or_path)))  # catalogue name -> cached folder
            model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
            tokenizer = path if tokenizer is None else tokenizer
            owned = True
        else:
            # a model object may be shared (e.g. the student as its own teacher): never freeze
            # or re-mode it here; score/generate switch to eval temporarily and restore.
            owned = False
            model = model_or_path
            path = getattr(getattr(model, "config", None), "_name_or_path", "") or ""
            if tokenizer is None:
                if not path:
                    raise ConfigError("tokenizer: required when model_or_path is a model object "
                                      "without a checkpoint path")
                tokenizer = path
        self._tokenizer = load_tokenizer(tokenizer)
        set_chat_template(self._tokenizer, chat_template)
        self.model = model.to(self.device)
        self.name = name or (Path(path).name if path else type(model).__name__)
        cfg = self.base_model.config
        self.max_context = int(max_context or getattr(cfg, "max_position_embeddings", 0) or 0)
        if self.max_context < 2:
            raise ConfigError(f"max_context: could not infer it from the model config; pass it (got {max_context})")
        self.vocab_columns = vocab_columns
        self.counters: dict[str, int] = {"truncated_contexts": 0, "truncated_prompts": 0,
                                         "sequences_scored": 0, "tokens_scored": 0,
                                         "sequences_generated": 0, "full_logits_fallback": 0}
        self.pad_id = self._tokenizer.pad_token_id
        if self.pad_id is None:  # padding is masked out; any valid id works
            self.pad_id = self._tokenizer.eos_token_id or 0
        self.eos_ids = self._eos_ids()
        self.prefix_cache = None  # enable_prefix_cache(); off by default outside a Distiller
        if owned and not self.trainable:
            self.model.requires_grad_(False)
            self.model.eval()

    # ------------------------------------------------------------------ basics
    @property
    def tokenizer(self) -> Any:
        return self._tokenizer

    @property
    def base_model(self) -> Any:
        """The underlying ``PreTrainedModel`` (unwraps a peft model)."""
        m = self.model
        return m.get_base_model() if hasattr(m, "get_base_model") else m

    @property
    def logit_width(self) -> int:
        """Number of logit columns this backend returns (may exceed len(tokenizer))."""
        full = self.base_model.get_output_embeddings().weight.shape[0]
        return min(full, self.vocab_columns) if self.vocab_columns else full

    def _eos_ids(self) -> set[int]:
        ids = {self._tokenizer.eos_token_id}
        gen = getattr(self.base_model, "generation_config", None)
        extra = getattr(gen, "eos_token_id", None)
        ids.update(extra if isinstance(extra, (list, tuple)) else [extra])
        return {int(i) for i in ids if i is not None}

    # ------------------------------------------------------------------ force decoding
    def _continuation_logits(self, prompts: list[list[int]], conts: list[list[int]],
                             ) -> tuple[torch.Tensor, torch.Tensor, list[bool]]:
        """Logits at continuation positions, one forward pass per sequence (grad follows caller).

        Returns logits [B, T, V'] in the model dtype (T = longest continuation, V' = logit_width),
        mask [B, T] and per-sample truncation flags.
        """
        fitted, truncated = [], []
        for i, (p, c) in enumerate(zip(prompts, conts)):
            p2, cut = fit_context(p, len(c), self.max_context, self.truncation, i)
            fitted.append(p2)
            truncated.append(cut)
        self.counters["truncated_contexts"] += sum(truncated)
        B, T, V = len(conts), max((len(c) for c in conts), default=0), self.logit_width
        mask = torch.zeros(B, T, dtype=torch.bool)
        for b, c in enumerate(conts):
            mask[b, : len(c)] = True
        if T == 0:
            return torch.zeros(B, 0, V, device=self.device), mask, truncated
        chunks = []
        for s in range(0, B, self.batch_size):
            chunks.append(self._forward_chunk(fitted[s:s + self.batch_size], conts[s:s + self.batch_size], T))
        self.counters["sequences_scored"] += B
        self.counters["tokens_scored"] += int(mask.sum())
        return torch.cat(chunks, 0), mask, truncated

    def enable_prefix_cache(self, max_entries: int = 256, max_mib: float = 1024.0) -> None:
        """Reuse the keys/values of scoring contexts across ``score`` calls
        (``madopd.models.prefix_cache``); ``max_entries=0`` turns it off."""
        from madopd.models.prefix_cache import PrefixKVCache

        self.prefix_cache = PrefixKVCache(max_entries, max_mib) if max_entries else None

    def _forward_chunk(self, prompts: list[list[int]], conts: list[list[int]], T: int) -> torch.Tensor:
        """Logits [b, T, V'] for one chunk; through the prefix cache when it is on and no
        gradient is wanted (the student's own forward always runs in full)."""
        cache = getattr(self, "prefix_cache", None)
        if cache is None or torch.is_grad_enabled():
            return self._forward_plain(prompts, conts, T)[0]
        cache.check_version(self.model)
        hits, kvs, misses = [], [], []
        for b, p in enumerate(prompts):
            kv = cache.get(tuple(p)) if len(p) > 1 else None
            (hits if kv is not None else misses).append(b)
            if kv is not None:
                kvs.append(kv)
        out: list[torch.Tensor | None] = [None] * len(prompts)
        if misses:
            logits, layers = self._forward_plain([prompts[b] for b in misses],
                                                 [conts[b] for b in misses], T, keep_cache=True)
            self._store_prefixes(cache, [prompts[b] for b in misses], layers)
            for i, b in enumerate(misses):
                out[b] = logits[i]
        if hits:
            logits = self._forward_cached([prompts[b] for b in hits], [conts[b] for b in hits],
                                          kvs, T)
            for i, b in enumerate(hits):
                out[b] = logits[i]
        return torch.stack(out, 0)

    def _store_prefixes(self, cache: Any, prompts: list[list[int]], layers: Any) -> None:
        from madopd.models.prefix_cache import rows_prefix

        if layers is None:  # sliding-window / linear-attention caches cannot be cut
            self.counters["prefix_cache_unsupported"] = \
                self.counters.get("prefix_cache_unsupported", 0) + 1
            return
        for i, p in enumerate(prompts):
            if len(p) > 1:
                cache.put(tuple(p), rows_prefix(layers, i, len(p) - 1))

    def _forward_plain(self, prompts: list[list[int]], conts: list[list[int]], T: int,
                       keep_cache: bool = False) -> tuple[torch.Tensor, Any]:
        """Right-padded batch; positions len(P)+t-1 selected before the LM head.

        -> (logits [b, T, V'], per-layer keys/values [b, H, L, D] when ``keep_cache``)."""
        from madopd.models.prefix_cache import layer_tensors, output_cache

        seqs = [p + c for p, c in zip(prompts, conts)]
        L = max(len(s) for s in seqs)
        ids = torch.full((len(seqs), L), self.pad_id, dtype=torch.long)
        attn = torch.zeros(len(seqs), L, dtype=torch.long)
        keep = torch.zeros(len(seqs), T, dtype=torch.long)  # [b, T] positions to project
        for b, (p, c) in enumerate(zip(prompts, conts)):
            ids[b, : len(p) + len(c)] = torch.tensor(p + c)
            attn[b, : len(p) + len(c)] = 1
            # right padding keeps the default positions 0..L-1 correct for the real tokens;
            # padded t >= len(c) point at position 0 and are masked out by the caller.
            keep[b, : len(c)] = torch.arange(len(p) - 1, len(p) + len(c) - 1)
        ids, attn, keep = ids.to(self.device), attn.to(self.device), keep.to(self.device)
        module = self.engine if self.engine is not None else self.model
        # transformers < 5.20 (the vLLM venv's 5.19) indexes hidden[:, keep] with a 2-D keep,
        # giving [b, b, T, V]: there, project every position and gather (counted below)
        out = module(input_ids=ids, attention_mask=attn, use_cache=keep_cache,
                     logits_to_keep=keep if per_sample_logits_to_keep() else 0)
        logits = out.logits
        if logits.ndim != 3 or logits.shape[:2] != (len(seqs), T):  # all positions projected
            self.counters["full_logits_fallback"] += 1
            logits = torch.gather(logits, 1, keep.unsqueeze(-1).expand(-1, -1, logits.shape[-1]))
        if self.vocab_columns:
            logits = logits[..., : self.vocab_columns]
        return logits, (layer_tensors(output_cache(out)) if keep_cache else None)  # [b, T, V']

    def _forward_cached(self, prompts: list[list[int]], conts: list[list[int]],
                        prefixes: list[Any], T: int) -> torch.Tensor:
        """Suffix P[-1] + R[:-1] on top of the cached keys/values of P[:-1] -> [b, T, V'].

        Cached rows are left-padded to the longest prefix Lp (masked); the suffix is
        right-padded; position ids len(P)-1+t equal the uncached forward's."""
        from madopd.models.prefix_cache import build_batch_cache, cache_kwarg

        b = len(prompts)
        cache, pad_mask, _ = build_batch_cache(prefixes)
        ids = torch.full((b, T), self.pad_id, dtype=torch.long)
        pos = torch.zeros(b, T, dtype=torch.long)
        for r, (p, c) in enumerate(zip(prompts, conts)):
            ids[r, : len(c)] = torch.tensor([p[-1], *c[:-1]])
            pos[r] = torch.arange(len(p) - 1, len(p) - 1 + T)  # pads continue the count
        # suffix pads are attended only by later pads (causality): their outputs are dropped
        attn = torch.cat([pad_mask, torch.ones(b, T, dtype=torch.long)], 1)
        out = self.model(input_ids=ids.to(self.device), attention_mask=attn.to(self.device),
                         position_ids=pos.to(self.device), use_cache=True,
                         **{cache_kwarg(self.base_model): cache})
        logits = out.logits  # [b, T, V]
        if self.vocab_columns:
            logits = logits[..., : self.vocab_columns]
        return logits

    @torch.no_grad()
    def score(self, contexts: list[Chat] | list[list[int]], continuation_ids: list[list[int]], *,
              top_k: int | None = None) -> Scores:
        """Force decoding: log p(·| context + generation prompt, continuation_<t) per position.

        ``contexts`` are chats (rendered with the chat template and ``add_generation_prompt``)
        or pre-tokenised prompt ids. Returns dense fp32 log-probs [B, T, V'] or, with ``top_k``,
        ``TopKLogprobs`` [B, T, k] plus tail mass; mask [B, T]; truncation flags [B].
        """
        conts = check_continuations(continuation_ids, len(contexts))
        prompts = contexts_to_ids(self._tokenizer, contexts)
        was_training = self.model.training
        self.model.eval()
        try:
            logits, mask, truncated = self._continuation_logits(prompts, conts)
        finally:
            self.model.train(was_training)
        logprobs = torch.log_softmax(logits.float(), dim=-1)  # [B, T, V'] fp32
        dists = logprobs if top_k is None else topk_from_logprobs(logprobs, int(top_k))
        return Scores(dists=dists, mask=mask.to(logprobs.device), truncated=truncated)

    # ------------------------------------------------------------------ generation
    @torch.no_grad()
    def generate_ids(self, prompts: list[Chat] | list[list[int]], sampling: Sampling,
                     ) -> tuple[list[list[int]], list[list[int]], list[bool]]:
        """Sample one reply per prompt. Returns (prompt ids, reply ids incl. EOS, hit_limit flags).

        Left padding (a decoder continues from the last real token); transformers derives
        position ids from the attention mask. A ``sampling.seed`` makes the call deterministic
        without touching the global RNG stream (``fork_rng``).
        """
        validate_sampling(sampling)
        prompt_ids = contexts_to_ids(self._tokenizer, prompts)
        fitted = []
        for i, p in enumerate(prompt_ids):
            p2, cut = fit_context(p, sampling.max_new_tokens, self.max_context, self.truncation, i)
            self.counters["truncated_prompts"] += int(cut)
            fitted.append(p2)
        kwargs: dict[str, Any] = {"max_new_tokens": sampling.max_new_tokens, "use_cache": True,
                                  "pad_token_id": self.pad_id, "eos_token_id": sorted(self.eos_ids)}
        if self.synced_generation:  # sharded weights: every forward is a collective
            kwargs["synced_gpus"] = True
        if is_greedy(sampling):
            kwargs["do_sample"] = False
        else:  # top_k=0 explicitly: transformers' default would be 50
            kwargs.update(do_sample=True, temperature=sampling.temperature, top_p=sampling.top_p,
                          top_k=sampling.top_k)
        was_training = self.model.training
        self.model.eval()
        replies: list[list[int]] = []
        hit_limit: list[bool] = []
        try:
            with self._rng_scope(sampling):
                for s in range(0, len(fitted), self.batch_size):
                    r, h = self._generate_chunk(fitted[s:s + self.batch_size], kwargs)
                    replies += r
                    hit_limit += h
        finally:
            self.model.train(was_training)
        self.counters["sequences_generated"] += len(replies)
        return fitted, replies, hit_limit

    @contextlib.contextmanager
    def _rng_scope(self, sampling: Sampling):
        """Greedy: no RNG. Unseeded sampling: the global stream (advanced as usual). Seeded:
        a forked stream started at ``seed``, restored afterwards. Sampling holds a lock so
        concurrent teachers (debate threads) cannot interleave draws or restores."""
        if is_greedy(sampling):
            yield
            return
        with _SAMPLING_LOCK:
            if sampling.seed is None:
                yield
                return
            devices = [] if self.device.type == "cpu" else [self.device]
            with torch.random.fork_rng(devices=devices):
                torch.manual_seed(sampling.seed)
                yield

    def _generate_chunk(self, prompts: list[list[int]], kwargs: dict) -> tuple[list[list[int]], list[bool]]:
        L = max(len(p) for p in prompts)
        ids = torch.full((len(prompts), L), self.pad_id, dtype=torch.long)
        attn = torch.zeros(len(prompts), L, dtype=torch.long)
        for b, p in enumerate(prompts):
            ids[b, L - len(p):] = torch.tensor(p)
            attn[b, L - len(p):] = 1
        out = self.model.generate(input_ids=ids.to(self.device), attention_mask=attn.to(self.device),
                                  **kwargs)
        new = out[:, L:].tolist()  # [b, <= max_new_tokens]
        replies, hit_limit = [], []
        for row in new:
            r, found = cut_at_eos(row, self.eos_ids)
            replies.append(r)
            hit_limit.append(not found)
        return replies, hit_limit

    def decode(self, ids: list[int]) -> str:
        return self._tokenizer.decode(ids, skip_special_tokens=True)

    def generate(self, chats: list[Chat], sampling: Sampling) -> list[str]:
        """One reply text per chat (chat template + generation prompt, special tokens stripped)."""
        _, replies, _ = self.generate_ids(chats, sampling)
        return [self.decode(r) for r in replies]

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, max_context={self.max_context})"


@dataclass
class LoraSpec:
    """LoRA adapter settings (peft). Only adapter weights train; the base stays frozen."""

    r: int = field(default=8, metadata={"help": "adapter rank, >= 1"})
    alpha: float = field(default=16.0, metadata={"help": "scaling numerator (scale = alpha / r), > 0"})
    dropout: float = field(default=0.0, metadata={"help": "dropout on the adapter input, in [0, 1)"})
    target_modules: tuple[str, ...] = field(
        default=("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"),
        metadata={"help": "module names that get adapters"})

    def __post_init__(self):
        if not isinstance(self.r, int) or self.r < 1:
            raise ConfigError(f"LoraSpec.r must be an int >= 1, got {self.r!r}")
        if not self.alpha > 0:
            raise ConfigError(f"LoraSpec.alpha must be > 0, got {self.alpha!r}")
        if not 0 <= self.dropout < 1:
            raise ConfigError(f"LoraSpec.dropout must be in [0, 1), got {self.dropout!r}")
        self.target_modules = tuple(self.target_modules)
        if not self.target_modules or not all(isinstance(m, str) and m for m in self.target_modules):
            raise ConfigError(f"LoraSpec.target_modules must be non-empty module names, got {self.target_modules!r}")


class HFStudent(HFTeacher):
    """The trainable student: on-policy rollouts and response logits with grad.

    A checkpoint directory that holds a peft adapter (``adapter_config.json``) is loaded as a
    trainable LoRA model on top of its base; otherwise ``lora`` adds fresh adapters.
    """

    trainable = True

    def __init__(self, model_or_path: Any, tokenizer: Any = None, *, lora: LoraSpec | None = None,
                 **kwargs: Any):
        if isinstance(model_or_path, (str, Path)) and (Path(model_or_path) / "adapter_config.json").exists():
            model_or_path, tokenizer = self._load_adapter(Path(model_or_path), tokenizer, kwargs)
            if lora is not None:
                raise ConfigError("lora: the checkpoint already holds an adapter; pass lora=None")
        super().__init__(model_or_path, tokenizer, **kwargs)
        self.lora = lora
        if lora is not None:
            from peft import LoraConfig, get_peft_model

            cfg = LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                             target_modules=list(lora.target_modules), task_type="CAUSAL_LM")
            self.model = get_peft_model(self.model, cfg)
        self.model.train()

    @staticmethod
    def _load_adapter(path: Path, tokenizer: Any, kwargs: dict) -> tuple[Any, Any]:
        from peft import PeftModel
        from transformers import AutoModelForCausalLM

        from madopd.models.catalogue import resolve_model_path

        base_path = json.loads((path / "adapter_config.json").read_text())["base_model_name_or_path"]
        base_path = resolve_model_path(base_path)
        base = AutoModelForCausalLM.from_pretrained(base_path, dtype=kwargs.get("dtype", torch.float32))
        model = PeftModel.from_pretrained(base, str(path), is_trainable=True)
        kwargs.setdefault("name", path.name)
        return model, (str(path) if tokenizer is None else tokenizer)

    @classmethod
    def load(cls, path: str | Path, **kwargs: Any) -> HFStudent:
        """Load what ``save`` wrote (full model or LoRA adapter)."""
        return cls(str(path), **kwargs)

    def attach_engine(self, engine: Any, module: Any, *, synced: bool = False) -> None:
        """Train through ``engine`` (``accelerator.prepare``'s DDP/FSDP wrapper, or the model
        itself for one process); ``module`` (the unwrapped model) keeps ``generate``, saving
        and the peft API. ``synced`` (FSDP): generation runs until every process is done and
        each micro-batch is one forward, so all processes make the same collectives."""
        self.model = module
        self.engine = None if engine is module else engine
        self.synced_generation = synced
        if synced:
            self.batch_size = 2**31 - 1

    @property
    def is_lora(self) -> bool:
        return hasattr(self.model, "peft_config")

    def parameters(self) -> list[torch.nn.Parameter]:
        """Trainable parameters for the optimiser (adapters only under LoRA)."""
        return [p for p in self.model.parameters() if p.requires_grad]

    def train(self) -> HFStudent:
        self.model.train()
        return self

    def eval(self) -> HFStudent:
        self.model.eval()
        return self

    def rollout(self, states: list[State], sampling: Sampling) -> Samples:
        """Sample the student's own answers (on-policy). The student sees ``state.messages`` only."""
        prompts, replies, hit_limit = self.generate_ids([s.messages for s in states], sampling)
        return Samples(prompt_ids=prompts, response_ids=replies,
                       texts=[self.decode(r) for r in replies], truncated=hit_limit)

    def response_logits(self, samples: Samples) -> tuple[torch.Tensor, torch.Tensor]:
        """Student logits at the response positions, with grad: ([B, T, V'] model dtype, mask [B, T]).

        Same alignment and the same truncation policy as ``score`` (the logits for R[t] come
        from position len(P)+t-1), so student-as-teacher gives identical distributions.
        """
        conts = check_continuations(samples.response_ids, len(samples.prompt_ids))
        logits, mask, _ = self._continuation_logits([list(p) for p in samples.prompt_ids], conts)
        return logits, mask.to(logits.device)

    def save(self, path: str | Path, *, merged: bool = False,
             state_dict: dict[str, torch.Tensor] | None = None) -> Path:
        """Save in Hugging Face format (+ tokenizer). LoRA: the adapter at ``path``; with
        ``merged=True`` also a full merged model under ``path/merged`` (a deep copy is merged,
        so training can continue; it briefly needs twice the model's memory). ``state_dict``: the
        full weights gathered from a sharded (FSDP) engine; None saves the module's own."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        self.model.save_pretrained(path, state_dict=state_dict)  # None: the module's own
        self._tokenizer.save_pretrained(path)
        if merged and self.is_lora:
            full = copy.deepcopy(self.model).merge_and_unload()
            full.save_pretrained(path / "merged")
            self._tokenizer.save_pretrained(path / "merged")
        return path


def _vocab_of(member: Any) -> tuple[dict[str, int], tuple]:
    tok = member.tokenizer
    specials = (tok.eos_token_id, getattr(tok, "bos_token_id", None), tok.pad_token_id)
    return tok.get_vocab(), specials


def check_same_vocab(student: Any, teachers: list[Any], *, restrict_to_tokenizer: bool = False) -> int:
    """Check that every teacher shares the student's vocabulary; return the common logit width.

    The tokenizers must agree exactly (``get_vocab()`` and EOS/BOS/PAD ids). Model logit widths
    may exceed ``len(tokenizer)`` (real Qwen pads 151 669 tokens to 151 936 columns): columns
    beyond the tokenizer are ids no text maps to. If the dense widths differ, divergences
    cannot compare them: with ``restrict_to_tokenizer=True`` every in-process backend keeps
    only the first ``len(tokenizer)`` columns (its softmax renormalises over real tokens, for
    student and teachers alike); otherwise ``TokenizerMismatchError`` is raised. Backends
    without dense logits (``logit_width`` absent, e.g. a vLLM server) return top-k ids that are
    tokenizer ids and never constrain the width.
    """
    ref_vocab, ref_specials = _vocab_of(student)
    for k, t in enumerate(teachers):
        vocab, specials = _vocab_of(t)
        if vocab != ref_vocab or specials != ref_specials:
            only_s = sorted(set(ref_vocab) - set(vocab))[:5]
            only_t = sorted(set(vocab) - set(ref_vocab))[:5]
            moved = sorted(w for w in set(vocab) & set(ref_vocab) if vocab[w] != ref_vocab[w])[:5]
            raise TokenizerMismatchError(
                f"teacher {k} ({getattr(t, 'name', '?')!r}) has a different vocabulary from the "
                f"student ({len(vocab)} vs {len(ref_vocab)} tokens; only in student: {only_s}, "
                f"only in teacher: {only_t}, different ids: {moved}; special ids (eos, bos, pad) "
                f"{specials} vs {ref_specials}). Without cross-tokenizer scoring they must agree: "
                "set cross_tokenizer='sampled' (with divergence='srkl') or 'full' to score it "
                "through byte-offset spans (docs/cross-tokenizer.md).")
    members = [student, *teachers]
    widths = {getattr(m, "logit_width", None) for m in members} - {None}
    if len(widths) <= 1:
        return widths.pop() if widths else len(student.tokenizer)
    if not restrict_to_tokenizer:
        raise TokenizerMismatchError(
            f"student and teachers share the tokenizer but their models have different logit "
            f"widths {sorted(widths)}; pass restrict_to_tokenizer=True to keep the first "
            f"len(tokenizer)={len(student.tokenizer)} columns everywhere")
    n = len(student.tokenizer)
    if min(widths) < n:
        raise ValueRangeError(f"a model has fewer logit columns ({min(widths)}) than tokens ({n})")
    for m in members:
        if hasattr(m, "vocab_columns"):
            m.vocab_columns = n
    return n
