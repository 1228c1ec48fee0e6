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
                     (``debate/forced_tag_low_mass``; ``debate/forced_ask_low_mass`` for the next
                     source); ``max_non_numeric`` < 1 turns them into missing confidences.
``"forced_ask"``     the turn's chat, the reply as an assistant message, then a user turn
                     ``ASK`` ("How likely is it that your answer above is correct? Reply with
                     one integer from 0 to 100 ...") and the generation prompt; the number is
                     read from the first reply token the same way. The question names the
                     scale and shows no placeholder (numeric mass and spread per source:
                     docs/real-models.md); it is a belief *reported when asked*, after the
                     fact, not the model's own tag.
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
from typing import Any

import torch

from madopd.errors import ConfigError

FALLBACKS = ("none", "forced_tag", "forced_ask", "answer_logprob")
SOURCES = ("tag", "forced_tag", "forced_ask", "answer_logprob")
FORCED = ("forced_tag", "forced_ask")  # read from the next-token distribution over digits
PREFIX = "\n<<CONFIDENCE="
ASK = ("How likely is it that your answer above is correct? Reply with one integer from 0 to "
       "100, your probability in percent, and nothing else.")


def check_fallback(name: str, teachers: list[Any]) -> str:
    """Validate a fallback name and that every teacher can run it (in-process backends)."""
    if name not in FALLBACKS:
        raise ConfigError(f"confidence_fallback: expected one of {FALLBACKS}, got {name!r}")
    if name in FORCED:
        for k, t in enumerate(teachers):
            if not (hasattr(t, "model") and hasattr(t, "tokenizer")):
                raise ConfigError(f"confidence_fallback={name!r}: teacher {k} "
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


def forced_ids(teacher: Any, chat: list[dict], reply: str, source: str = "forced_tag") -> list[int]:
    """Token ids after which the next token starts the number (see the module docstring).

    ``forced_tag``: the turn's chat + the reply (tags stripped) + ``"\\n<<CONFIDENCE="``, as the
    assistant's own continuation. ``forced_ask``: the turn's chat, the reply as an assistant
    message, then a user turn ``ASK`` and the generation prompt (the model answers the
    question with its first token).
    """
    from madopd.models._common import render_prompt_ids
    from madopd.weighting import strip_confidence

    tok = teacher.tokenizer
    if source == "forced_tag":
        return render_prompt_ids(tok, chat) + list(tok(strip_confidence(reply) + PREFIX,
                                                       add_special_tokens=False)["input_ids"])
    if source == "forced_ask":
        return render_prompt_ids(tok, list(chat) + [
            {"role": "assistant", "content": strip_confidence(reply)},
            {"role": "user", "content": ASK}])
    raise ConfigError(f"forced_ids: source must be 'forced_tag' or 'forced_ask', got {source!r}")


@torch.no_grad()
def forced_confidences(teacher: Any, id_lists: list[list[int]], max_non_numeric: float = 1.0,
                       batch_size: int = 4) -> list[tuple[float | None, float]]:
    """E[N] of the number that would follow each id list.  -> [(value | None, mass)] per row.

    ``mass`` is the numeric probability mass of the first token. Two forward passes per chunk
    of ``batch_size`` rows (left-padded): the prefixes (keys/values kept, logits of the last
    position only), then 11 two-token continuations per row on the repeated cache: the ten
    digits (p2 read at their own position) and "1","0" (p3 = p("0" | "10") at the second).
    Memory: the cache is repeated 11 times, so ``batch_size`` bounds it.
    """
    tok, model = teacher.tokenizer, teacher.model
    dig = digit_ids(tok)
    max_ctx = getattr(teacher, "max_context", None)
    rows = [ids[-(max_ctx - 3):] if max_ctx and len(ids) > max_ctx - 3 else list(ids)
            for ids in id_lists]
    pad = tok.pad_token_id if tok.pad_token_id is not None else (tok.eos_token_id or 0)
    was_training = model.training
    model.eval()
    out: list[tuple[float | None, float]] = []
    try:
        for s in range(0, len(rows), max(1, batch_size)):
            p1, p2, p3 = _digit_steps_batch(model, rows[s:s + batch_size], dig, pad)
            for b in range(p1.shape[0]):
                out.append(_expected_number(p1[b], p2[b], float(p3[b]), max_non_numeric))
    finally:
        model.train(was_training)
    return out


def _expected_number(p1: torch.Tensor, p2: torch.Tensor, p3_zero: float,
                     max_non_numeric: float) -> tuple[float | None, float]:
    """(E[N] renormalised over numbers, numeric mass) from the digit probabilities of one row."""
    dist = number_distribution(p1, p2, p3_zero)
    mass = float(p1.sum())
    total = float(dist.sum())
    if mass < 1.0 - max_non_numeric or mass <= 0 or total <= 0 or not math.isfinite(total):
        return None, mass
    values = torch.arange(101, dtype=torch.float64)
    return float((dist * values).sum() / total), mass


def _digit_steps_batch(model: Any, rows: list[list[int]], dig: list[int], pad: int):
    """Digit probabilities for a chunk of prefixes.  -> p1 [b, 10], p2 [b, 10, 10], p3 [b]."""
    from madopd.models.prefix_cache import cache_kwarg, output_cache

    dev = next(model.parameters()).device
    b, L = len(rows), max(len(r) for r in rows)
    ids = torch.full((b, L), pad, dtype=torch.long)
    attn = torch.zeros(b, L, dtype=torch.long)
    for i, r in enumerate(rows):  # left padding: every row's last token is at L - 1
        ids[i, L - len(r):] = torch.tensor(r)
        attn[i, L - len(r):] = 1
    pos = (attn.cumsum(-1) - 1).clamp_min(0)
    out = model(input_ids=ids.to(dev), attention_mask=attn.to(dev), position_ids=pos.to(dev),
                use_cache=True, logits_to_keep=1)
    p1 = torch.softmax(out.logits[:, -1].float(), -1)  # [b, V]
    cache = output_cache(out)  # transformers 5.2x renamed past_key_values to cache
    cache.batch_repeat_interleave(11)
    d = torch.tensor(dig)
    x2 = torch.full((b, 11, 2), pad, dtype=torch.long)
    x2[:, :10, 0] = d  # digit d; the second column is a pad nobody reads (causal)
    x2[:, 10, 0], x2[:, 10, 1] = d[1], d[0]  # "1" "0": p3 at the second position
    lengths = torch.tensor([len(r) for r in rows])
    pos2 = (lengths[:, None, None] + torch.arange(2)).expand(b, 11, 2).reshape(b * 11, 2)
    attn2 = torch.cat([attn.repeat_interleave(11, 0), torch.ones(b * 11, 2, dtype=torch.long)], 1)
    step = model(input_ids=x2.view(b * 11, 2).to(dev), attention_mask=attn2.to(dev),
                 position_ids=pos2.to(dev), use_cache=True, **{cache_kwarg(model): cache})
    probs = torch.softmax(step.logits.float(), -1).view(b, 11, 2, -1)  # [b, 11, 2, V]
    p2 = probs[:, :10, 0][..., d]  # [b, 10, 10]: e after d
    p3 = probs[:, 10, 1, d[0]]  # [b]
    return p1[:, d].cpu(), p2.cpu(), p3.cpu()


def forced_tag_confidence(teacher: Any, chat: list[dict], reply: str,
                          max_non_numeric: float = 1.0, source: str = "forced_tag",
                          ) -> tuple[float | None, float]:
    """E[N] for one turn (``forced_confidences`` on one row).  -> (value | None, mass)."""
    return forced_confidences(teacher, [forced_ids(teacher, chat, reply, source)],
                              max_non_numeric)[0]


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
