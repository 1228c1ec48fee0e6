"""Where a debate turn's confidence comes from when the teacher did not write the tag.

Small real instruct models rarely end a turn with ``<<CONFIDENCE=N>>`` (SmolLM2-135M: see
docs/real-models.md). Guessing a number would be silent; falling back to uniform weights makes
the debate teach nothing. These are explicit, labelled sources, a protocol choice
(``DebateProtocol.confidence_fallback`` / ``DistillConfig.confidence_fallback``), applied only
to turns without a readable tag, and counted per source (``debate/confidence_from_<source>``):

``"tag"``            the teacher wrote a readable tag (always tried first).
``"forced_tag"``     the turn's chat + the teacher's reply + ``"\\n<<CONFIDENCE="`` is fed to
                     the teacher, and the number is read from its next-token distribution
                     over digit tokens: the **expected value** of N over 0..100 (below),
                     renormalised over the digit tokens. The numeric mass of the first token is
                     reported: SmolLM2-135M puts ~97 % on "N" (it copies the instruction's
                     placeholder), so turns whose numeric mass is < 0.5 are counted
                     (``debate/forced_tag_low_mass``); ``max_non_numeric`` < 1 turns them into
                     missing confidences instead.
``"answer_logprob"`` 100 · exp(mean log p(reply tokens | the turn's chat)) under the teacher
                     itself: how sure the teacher was of its own words (a fluency-flavoured
                     signal, not a stated belief).
``"none"``           no fallback: a missing tag stays missing (the weights' ``on_missing``
                     policy then applies, counted).

Expected value of the forced tag. With p1(d) the distribution of the token after the prefix and
p2(e | d) that of the token after digit d (one cached step for all ten d at once), a number is
read as: ``d`` then a non-digit -> d; ``d e`` -> 10d + e (two digits end the number, except
``1 0`` whose third token, p3(0 | "10"), makes 100). Leading-zero forms ("05") count as their
value. E[N] = Σ_v v · P(v) / Σ_v P(v).
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import torch

from madopd.errors import ConfigError

FALLBACKS = ("none", "forced_tag", "answer_logprob")
SOURCES = ("tag", "forced_tag", "answer_logprob")
PREFIX = "\n<<CONFIDENCE="


def check_fallback(name: str, teachers: list[Any]) -> str:
    """Validate a fallback name and that every teacher can run it (in-process backends)."""
    if name not in FALLBACKS:
        raise ConfigError(f"confidence_fallback: expected one of {FALLBACKS}, got {name!r}")
    if name == "forced_tag":
        for k, t in enumerate(teachers):
            if not (hasattr(t, "model") and hasattr(t, "tokenizer")):
                raise ConfigError(f"confidence_fallback='forced_tag': teacher {k} "
                                  f"({getattr(t, 'name', '?')!r}) has no in-process model; use "
                                  "'answer_logprob' or 'none' for this backend")
    if name == "answer_logprob":
        for k, t in enumerate(teachers):
            if not callable(getattr(t, "score", None)) or not hasattr(t, "tokenizer"):
                raise ConfigError(f"confidence_fallback='answer_logprob': teacher {k} cannot score")
    return name


def digit_ids(tokenizer: Any) -> list[int]:
    """Token ids of the ten single digits "0".."9" (ConfigError if a digit is not one token)."""
    ids = []
    for d in "0123456789":
        enc = tokenizer(d, add_special_tokens=False)["input_ids"]
        if len(enc) != 1:
            raise ConfigError(f"forced_tag needs single-token digits; {d!r} -> {enc}")
        ids.append(int(enc[0]))
    return ids


def number_distribution(p1: torch.Tensor, p2: torch.Tensor, p3_zero: float) -> torch.Tensor:
    """P(N = v) for v = 0..100 (unnormalised; its sum is the numeric mass).  -> [101] float64.

    p1 [10]: probability of digit d right after the prefix; p2 [10, 10]: of digit e after
    digit d (rows need not sum to 1: the rest is "the number ends"); p3_zero = p("0" | "10").
    """
    p1, p2 = p1.double(), p2.double()
    out = torch.zeros(101, dtype=torch.float64)
    digit_mass2 = p2.sum(-1)  # [10] P(a second digit | d)
    for d in range(10):
        out[d] += p1[d] * (1.0 - digit_mass2[d])  # d, then the number ends
        for e in range(10):
            v = 10 * d + e
            pe = p1[d] * p2[d, e]
            if d == 1 and e == 0:  # "10" may go on to "100"
                out[100] += pe * p3_zero
                out[10] += pe * (1.0 - p3_zero)
            else:
                out[v] += pe
    return out


@torch.no_grad()
def forced_tag_confidence(teacher: Any, chat: list[dict], reply: str,
                          max_non_numeric: float = 1.0) -> tuple[float | None, float]:
    """E[N] of the forced ``<<CONFIDENCE=`` continuation of ``reply``.  -> (value | None, mass).

    ``mass`` is the numeric probability mass of the first token after the prefix. Three forward
    passes: the prefix (with a KV cache), the ten digits as a batch of ten one-token steps, and
    "0" after "10".
    """
    from madopd.models._common import render_prompt_ids
    from madopd.weighting import strip_confidence

    tok = teacher.tokenizer
    model = teacher.model
    dig = digit_ids(tok)
    ids = render_prompt_ids(tok, chat) + list(tok(strip_confidence(reply) + PREFIX,
                                                  add_special_tokens=False)["input_ids"])
    max_ctx = getattr(teacher, "max_context", None)
    if max_ctx and len(ids) > max_ctx - 3:
        ids = ids[-(max_ctx - 3):]
    was_training = model.training
    model.eval()
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", ".*past_key_values.*")  # 5.x cache rename
            p1, p2, p3 = _digit_steps(model, ids, dig)
    finally:
        model.train(was_training)
    dist = number_distribution(p1[dig], p2[:, dig], float(p3[dig[0]]))
    mass = float(p1[dig].sum())
    total = float(dist.sum())
    if mass < 1.0 - max_non_numeric or mass <= 0 or total <= 0 or not math.isfinite(total):
        return None, mass
    values = torch.arange(101, dtype=torch.float64)
    return float((dist * values).sum() / total), mass


def _digit_steps(model: Any, ids: list[int], dig: list[int]):
    """Next-token probabilities after the prefix [V], after each digit [10, V], after "10" [V]."""
    dev = next(model.parameters()).device
    x = torch.tensor([ids], device=dev)
    out = model(input_ids=x, use_cache=True)
    p1 = torch.softmax(out.logits[0, -1].float(), -1)  # [V]
    cache = out.past_key_values
    # ten one-token continuations share the prefix: repeat the cache along the batch
    cache.batch_repeat_interleave(10)
    pos = torch.full((10, 1), len(ids), device=dev)
    step = model(input_ids=torch.tensor(dig, device=dev).view(10, 1), past_key_values=cache,
                 position_ids=pos, use_cache=True)
    p2 = torch.softmax(step.logits[:, -1].float(), -1)  # [10, V]
    x3 = torch.tensor([ids + [dig[1], dig[0]]], device=dev)
    p3 = torch.softmax(model(input_ids=x3, use_cache=False).logits[0, -1].float(), -1)
    return p1, p2, p3


@torch.no_grad()
def answer_logprob_confidence(teacher: Any, chat: list[dict], reply: str) -> float | None:
    """100 · exp(mean token log-prob) of the reply (tags stripped) under ``chat``; None if empty."""
    from madopd.weighting import strip_confidence

    ids = list(teacher.tokenizer(strip_confidence(reply), add_special_tokens=False)["input_ids"])
    if not ids:
        return None
    scores = teacher.score([chat], [ids], top_k=None)
    lp = torch.as_tensor(scores.dists)[0, : len(ids)].double()  # [T, V]
    tok_lp = lp.gather(-1, torch.tensor(ids).view(-1, 1)).squeeze(-1)
    return float(100.0 * tok_lp.mean().exp())
