"""Helpers shared by the model backends: chat rendering, context fitting, top-k conversion.

Kept free of any backend import (transformers, vLLM, HTTP) so every backend renders chats and
truncates contexts the same way — parity tests between backends depend on it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch

from madopd.errors import ConfigError, ShapeError, ValueRangeError
from madopd.types import Chat, Sampling, TopKLogprobs

TRUNCATION_POLICIES = ("left", "error")

# A plain-text chat template for base models that ship none (gemma3-270m): the model's BOS,
# then "System: / User: / Assistant: <content>" blocks separated by blank lines, and
# "Assistant:" as the generation prompt. A base model was never trained on it: it is a
# readable, documented convention (docs/real-models.md), not the model's own format.
PLAIN_CHAT_TEMPLATE = (
    "{% if bos_token %}{{ bos_token }}{% endif %}"
    "{% for m in messages %}{{ m['role'] | capitalize }}: {{ m['content'] }}\n\n{% endfor %}"
    "{% if add_generation_prompt %}Assistant:{% endif %}")


def set_chat_template(tokenizer: Any, template: str | None) -> None:
    """``"plain"`` -> PLAIN_CHAT_TEMPLATE; another string is used as a Jinja template; None
    keeps the tokenizer's own (a base model's tokenizer may have none: see render_prompt_ids)."""
    if template is None:
        return
    if not isinstance(template, str) or not template.strip():
        raise ConfigError(f"chat_template: expected 'plain' or a Jinja template string, got {template!r}")
    tokenizer.chat_template = PLAIN_CHAT_TEMPLATE if template == "plain" else template


def load_tokenizer(tokenizer: Any) -> Any:
    """A tokenizer object, or a path/name loaded with ``AutoTokenizer.from_pretrained``."""
    if isinstance(tokenizer, (str, bytes)) or hasattr(tokenizer, "__fspath__"):
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(str(tokenizer))
    if tokenizer is None or not hasattr(tokenizer, "get_vocab"):
        raise ConfigError(f"tokenizer: expected a path or a transformers tokenizer, got {tokenizer!r}")
    return tokenizer


def render_prompt_ids(tokenizer: Any, chat: Chat) -> list[int]:
    """Chat template + generation prompt, tokenised without extra special tokens.

    Rendering to text first and tokenising with ``add_special_tokens=False`` avoids a second
    BOS (the template already writes any BOS it wants) and the transformers-5 BatchEncoding
    return type of ``apply_chat_template(tokenize=True)``.
    """
    if not isinstance(chat, list) or not all(isinstance(m, dict) for m in chat):
        raise ShapeError(f"chat: expected a list of {{'role', 'content'}} dicts, got {type(chat).__name__}")
    if getattr(tokenizer, "chat_template", None) is None:
        name = getattr(tokenizer, "name_or_path", "") or type(tokenizer).__name__
        raise ConfigError(f"tokenizer {name!r} has no chat template (a base model?): pass "
                          "chat_template='plain' to HFTeacher/HFStudent (a plain 'User: ... "
                          "Assistant:' text template, madopd.models._common.PLAIN_CHAT_TEMPLATE)"
                          " or your own Jinja template string")
    text = tokenizer.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def is_token_ids(item: Any) -> bool:
    """True for a pre-tokenised context (a list of ints), False for a chat (a list of dicts)."""
    return isinstance(item, (list, tuple)) and all(isinstance(x, int) for x in item) and (
        len(item) == 0 or not isinstance(item[0], dict))


def contexts_to_ids(tokenizer: Any, contexts: Sequence[Chat | list[int]]) -> list[list[int]]:
    """Render chats (or pass through pre-tokenised contexts) to prompt ids."""
    out = []
    for i, ctx in enumerate(contexts):
        if is_token_ids(ctx) and len(ctx) > 0:
            out.append([int(x) for x in ctx])
        elif isinstance(ctx, list) and ctx and isinstance(ctx[0], dict):
            out.append(render_prompt_ids(tokenizer, ctx))
        else:
            raise ShapeError(f"contexts[{i}]: expected a non-empty chat (list of message dicts) "
                             f"or a non-empty list of token ids, got {ctx!r:.80}")
    return out


def fit_context(ctx: list[int], n_cont: int, max_context: int, policy: str,
                index: int) -> tuple[list[int], bool]:
    """Cut a context so that context + continuation fits ``max_context`` tokens.

    ``policy="left"`` drops the oldest tokens (the caller counts it); ``"error"`` raises.
    At least one context token must remain: it is the position that predicts the first
    continuation token (alignment: logits for R[t] come from position len(P)+t-1).
    """
    total = len(ctx) + n_cont
    if total <= max_context:
        return ctx, False
    room = max_context - n_cont
    if policy == "error" or room < 1:
        why = ("the continuation alone does not fit (at least 1 context token is needed)"
               if room < 1 else "truncation='error'")
        raise ValueRangeError(
            f"sample {index}: context ({len(ctx)} tokens) + continuation ({n_cont} tokens) = "
            f"{total} > max_context={max_context}; {why}")
    return ctx[-room:], True


def validate_sampling(sampling: Sampling) -> None:
    if not isinstance(sampling, Sampling):
        raise ConfigError(f"sampling: expected madopd.types.Sampling, got {type(sampling).__name__}")
    if sampling.max_new_tokens < 1:
        raise ValueRangeError(f"Sampling.max_new_tokens must be >= 1, got {sampling.max_new_tokens}")
    if not sampling.greedy:
        if not (sampling.temperature >= 0 and math.isfinite(sampling.temperature)):
            raise ValueRangeError(f"Sampling.temperature must be finite and >= 0, got {sampling.temperature}")
        if not 0 < sampling.top_p <= 1:
            raise ValueRangeError(f"Sampling.top_p must be in (0, 1], got {sampling.top_p}")
        if sampling.top_k < 0:
            raise ValueRangeError(f"Sampling.top_k must be >= 0 (0 = off), got {sampling.top_k}")


def is_greedy(sampling: Sampling) -> bool:
    """Greedy when asked for, or when temperature is 0 (the OpenAI convention)."""
    return sampling.greedy or sampling.temperature == 0


def cut_at_eos(ids: Sequence[int], eos_ids: set[int]) -> tuple[list[int], bool]:
    """Keep tokens up to and including the first EOS. Returns (ids, eos_found)."""
    out = []
    for tok in ids:
        out.append(int(tok))
        if int(tok) in eos_ids:
            return out, True
    return out, False


def topk_from_logprobs(logprobs: torch.Tensor, k: int) -> TopKLogprobs:
    """Dense log-probs [B, T, V] -> TopKLogprobs [B, T, k] with tail mass 1 - Σ p (clamped >= 0)."""
    if k < 1:
        raise ValueRangeError(f"top_k must be >= 1, got {k}")
    k = min(k, logprobs.shape[-1])
    vals, ids = torch.topk(logprobs, k, dim=-1)  # [B, T, k]
    tail = (1.0 - vals.exp().sum(-1)).clamp_min(0.0)  # [B, T]
    return TopKLogprobs(ids=ids, logprobs=vals, tail_mass=tail)


def validate_truncation(truncation: str) -> str:
    if truncation not in TRUNCATION_POLICIES:
        raise ConfigError(f"truncation: expected one of {TRUNCATION_POLICIES}, got {truncation!r}")
    return truncation


def check_continuations(continuation_ids: Sequence[Sequence[int]], n_contexts: int) -> list[list[int]]:
    if len(continuation_ids) != n_contexts:
        raise ShapeError(f"continuation_ids: expected {n_contexts} lists (one per context), "
                         f"got {len(continuation_ids)}")
    out = []
    for i, c in enumerate(continuation_ids):
        if not all(isinstance(x, int) or (torch.is_tensor(x) and x.ndim == 0) for x in c):
            raise ShapeError(f"continuation_ids[{i}]: expected a list of ints")
        out.append([int(x) for x in c])
    return out
