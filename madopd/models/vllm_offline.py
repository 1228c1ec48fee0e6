"""A teacher that runs vLLM's in-process ``LLM`` engine (GPU machines; needs ``pip install vllm``).

Same contract and the same top-k conversion as ``VLLMServerTeacher`` (see its module docstring):
debate turns via ``LLM.chat``, force decoding via ``LLM.generate`` on token-id prompts with
``max_tokens=1, prompt_logprobs=k``. Scripts that build it need an
``if __name__ == "__main__":`` guard (vLLM starts worker processes).

Not exercised by the default test suite (vLLM is not importable there); the server teacher,
which shares the conversion code, is tested against a real CPU vLLM server (marker ``vllm``).
"""

from __future__ import annotations

from typing import Any

import torch

from madopd.errors import ConfigError, MissingExtraError
from madopd.models._common import (
    check_continuations,
    contexts_to_ids,
    fit_context,
    is_greedy,
    load_tokenizer,
    validate_sampling,
    validate_truncation,
)
from madopd.models.vllm_server import _entries, _to_dense, _to_topk
from madopd.types import Chat, Sampling, Scores


class VLLMOfflineTeacher:
    """Args: ``model`` path, ``tokenizer`` (default: the model path), ``name``, ``truncation``,
    and ``**llm_kwargs`` forwarded to ``vllm.LLM`` (dtype, max_model_len, max_logprobs, ...)."""

    def __init__(self, model: str, *, tokenizer: Any = None, name: str | None = None,
                 truncation: str = "left", **llm_kwargs: Any):
        try:
            import vllm
        except ImportError as e:
            raise MissingExtraError("vllm", "vllm", "the offline vLLM teacher") from e
        self._vllm = vllm
        self.truncation = validate_truncation(truncation)
        self.llm = vllm.LLM(model=model, **llm_kwargs)
        self._tokenizer = load_tokenizer(tokenizer or model)
        self.name = name or model.rstrip("/").split("/")[-1]
        self.max_context = int(self.llm.llm_engine.model_config.max_model_len)
        self.counters: dict[str, int] = {"truncated_contexts": 0, "sequences_scored": 0,
                                         "sequences_generated": 0}

    @property
    def tokenizer(self) -> Any:
        return self._tokenizer

    def generate(self, chats: list[Chat], sampling: Sampling) -> list[str]:
        validate_sampling(sampling)
        params = []
        for i in range(len(chats)):  # seed + i, as in the server teacher
            kw: dict[str, Any] = {"max_tokens": sampling.max_new_tokens}
            if is_greedy(sampling):
                kw["temperature"] = 0.0
            else:
                kw.update(temperature=sampling.temperature, top_p=sampling.top_p, top_k=sampling.top_k)
            if sampling.seed is not None:
                kw["seed"] = sampling.seed + i
            params.append(self._vllm.SamplingParams(**kw))
        outs = self.llm.chat(chats, params, use_tqdm=False)
        self.counters["sequences_generated"] += len(outs)
        return [o.outputs[0].text for o in outs]

    def score(self, contexts: list[Chat] | list[list[int]], continuation_ids: list[list[int]], *,
              top_k: int | None = None) -> Scores:
        if top_k is not None and int(top_k) < 1:
            raise ConfigError(f"top_k must be >= 1 or None, got {top_k}")
        conts = check_continuations(continuation_ids, len(contexts))
        fitted, truncated = [], []
        for i, (p, c) in enumerate(zip(contexts_to_ids(self._tokenizer, contexts), conts)):
            p2, cut = fit_context(p, len(c) + 1, self.max_context, self.truncation, i)
            fitted.append(p2)
            truncated.append(cut)
        self.counters["truncated_contexts"] += sum(truncated)
        params = self._vllm.SamplingParams(max_tokens=1, temperature=0.0,
                                           prompt_logprobs=-1 if top_k is None else int(top_k))
        outs = self.llm.generate([{"prompt_token_ids": p + c} for p, c in zip(fitted, conts)],
                                 params, use_tqdm=False)
        per_sample = []
        for b, (p, c, o) in enumerate(zip(fitted, conts, outs)):
            plp = o.prompt_logprobs
            rows = []
            for t in range(len(c)):
                pos = {tid: {"logprob": lp.logprob, "rank": lp.rank} for tid, lp in plp[len(p) + t].items()}
                rows.append(_entries(pos, top_k, b, t))
            per_sample.append(rows)
        B, T = len(conts), max((len(c) for c in conts), default=0)
        mask = torch.zeros(B, T, dtype=torch.bool)
        for b, c in enumerate(conts):
            mask[b, : len(c)] = True
        self.counters["sequences_scored"] += B
        dists = _to_dense(per_sample, B, T, len(self._tokenizer)) if top_k is None else \
            _to_topk(per_sample, B, T, top_k)
        return Scores(dists=dists, mask=mask, truncated=truncated)
