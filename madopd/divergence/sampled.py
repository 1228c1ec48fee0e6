"""Sampled-token reverse KL: the per-token estimate on the student's own sampled token.

p = teacher, q = student, y_t = the token the student sampled at position t (so y_t ~ q).
For teacher k the per-token log ratio is

    δ_k,t = log q(y_t) - log p_k(y_t),        E_{y_t ~ q}[δ_k,t] = KL(q ‖ p_k)   (Eq. 3)

so δ is an unbiased one-sample estimate of the exact reverse KL at that position (the "k1"
estimator). Over teachers it is weighted like the dense divergences (Eq. 8):
δ_t = Σ_k w̃_k,t δ_k,t, with w̃ the confidence (or other) weights renormalised over the
teachers whose log-prob of y_t is known.

Sign convention (policy-gradient form). The per-token advantage is A_t = -δ_t
= Σ_k w̃_k (log p_k(y_t) - log q(y_t)): positive where the teachers like the token more than
the student does. The loss is

    loss_t = -sg(A_t) · log q(y_t)   (+ a constant that makes its *value* δ_t)

so gradient descent raises log q(y_t) where A_t > 0, and E_q[∇ loss_t] = ∇_q KL(q ‖ p) at
that position (E_q[∇ log q] = 0). Its value is δ_t (not -A_t log q), so the logged loss
estimates the reverse KL. Only log q(y_t) and log p_k(y_t) are read: any teacher works,
including one of another tokenizer (``AlignedLogprobs``), where no dense p over the
student's vocabulary exists.

Teachers: dense logits/log-probs [B, T, V] (log_softmax at the temperature is applied),
``TopKLogprobs`` (y_t outside the top-k: that teacher's log-prob is unknown, its weight goes
to the others; counted), or ``AlignedLogprobs`` (a cross-tokenizer teacher: a span of n
student tokens with teacher log-prob P and student log-prob Q gives each of its tokens
log q(y_t) + (P - Q)/n, so the span's δ sum is exactly Q - P; n = 1 is exact per token).
"""

from __future__ import annotations

import math

import torch

from madopd.errors import ShapeError, ValueRangeError
from madopd.types import AlignedLogprobs, TopKLogprobs

SAMPLED_KINDS = ("srkl",)
_REDUCTIONS = ("none", "token_mean", "sequence_mean", "sum")


def _count(stats: dict | None, key: str, n: int) -> None:
    if stats is not None:
        stats[key] = stats.get(key, 0) + int(n)


def student_token_logprobs(student_logits: torch.Tensor, ids: torch.Tensor,
                           temperature: float = 1.0) -> torch.Tensor:
    """log q(y_t) = log_softmax(z_t / τ)[y_t]: [B, T] with the student's gradient path.

    student_logits [B, T, V], ids [B, T] (any value where masked: it is clamped to 0).
    Computed in float32 (float64 for float64 logits).
    """
    cd = torch.float64 if student_logits.dtype == torch.float64 else torch.float32
    z = student_logits.to(cd)
    if temperature != 1.0:
        z = z / temperature
    return z.gather(-1, ids.clamp_min(0)[..., None]).squeeze(-1) - torch.logsumexp(z, -1)


def teacher_token_logprobs(teacher, ids: torch.Tensor, b: torch.Tensor, mask: torch.Tensor,
                           temperature: float, name: str = "teacher"):
    """(log p(y_t) [B, T], known [B, T] bool) for one teacher; ``b`` = log q(y_t), detached
    (only an ``AlignedLogprobs`` span of several student tokens reads it)."""
    B, T = ids.shape
    cd = b.dtype
    if isinstance(teacher, AlignedLogprobs):
        if temperature != 1.0:
            raise ValueRangeError(f"{name} is a cross-tokenizer teacher: only temperature=1")
        sid = teacher.span_id
        if tuple(sid.shape) != (B, T):
            raise ShapeError(f"{name}.span_id has shape {tuple(sid.shape)}, expected {(B, T)}")
        known = (sid >= 0) & mask
        S = max(int(teacher.span_logp.shape[-1]), 1)
        idx = torch.where(known, sid, torch.zeros_like(sid)).long()
        if idx.numel() and int(idx.max()) >= teacher.span_logp.shape[-1] and bool(known.any()):
            raise ShapeError(f"{name}.span_id points past span_logp's {S} spans")
        kb = torch.where(known, b, torch.zeros_like(b))
        q_span = torch.zeros(B, S, dtype=cd, device=b.device).scatter_add(1, idx, kb)
        n_span = torch.zeros(B, S, dtype=cd, device=b.device).scatter_add(1, idx, known.to(cd))
        p_span = teacher.span_logp.to(cd)
        if p_span.shape[-1] == 0:
            p_span = torch.zeros(B, 1, dtype=cd, device=b.device)
        P, Q, n = p_span.gather(1, idx), q_span.gather(1, idx), n_span.gather(1, idx)
        shared = b + (P - Q) / n.clamp_min(1)
        a = torch.where(n == 1, P, shared)  # one token: the span's log-prob itself (exact)
        return torch.where(known, a, torch.zeros_like(a)), known
    if isinstance(teacher, TopKLogprobs):
        if temperature != 1.0:
            raise ValueRangeError(f"{name} is a top-k teacher, which only allows temperature=1")
        if tuple(teacher.ids.shape[:-1]) != (B, T):
            raise ShapeError(f"{name}.ids has shape {tuple(teacher.ids.shape)}, expected "
                             f"{(B, T, 'k')}")
        hit = teacher.ids == ids[..., None]  # [B, T, k]; ids are distinct: at most one hit
        lp = torch.where(hit, teacher.logprobs.to(cd), torch.full((), -math.inf, dtype=cd))
        known = hit.any(-1) & mask
        return torch.where(known, lp.max(-1).values, torch.zeros_like(b)), known
    if not isinstance(teacher, torch.Tensor) or not teacher.is_floating_point() \
            or teacher.dim() != 3 or tuple(teacher.shape[:2]) != (B, T):
        raise ShapeError(f"{name} must be dense logits/log-probs [B, T, V] = [{B}, {T}, V], "
                         f"TopKLogprobs or AlignedLogprobs, got "
                         f"{getattr(teacher, 'shape', type(teacher).__name__)}")
    x = teacher.detach().to(cd)
    if temperature != 1.0:
        x = x / temperature
    if ids.numel() and int(ids.max()) >= x.shape[-1]:
        raise ShapeError(f"{name} has {x.shape[-1]} columns but a sampled id is {int(ids.max())}")
    a = x.gather(-1, ids.clamp_min(0)[..., None]).squeeze(-1) - torch.logsumexp(x, -1)
    if bool(torch.isnan(torch.where(mask, a, torch.zeros_like(a))).any()):
        raise ValueRangeError(f"{name} contains NaN or +inf at an unmasked position")
    return torch.where(mask, a, torch.zeros_like(a)), mask.clone()


def _weights_btk(weights: torch.Tensor, B: int, T: int, K: int) -> torch.Tensor:
    if not isinstance(weights, torch.Tensor) or not weights.is_floating_point():
        raise ShapeError(f"weights must be a floating tensor [B, K] or [B, T, K], got "
                         f"{type(weights).__name__}")
    if tuple(weights.shape) == (B, K):
        w = weights[:, None, :].expand(B, T, K)
    elif tuple(weights.shape) == (B, T, K):
        w = weights
    else:
        raise ShapeError(f"weights has shape {tuple(weights.shape)}, expected {(B, K)} or "
                         f"{(B, T, K)} for {K} teachers")
    wd = w.detach()
    if wd.numel() and (not bool(torch.isfinite(wd).all()) or float(wd.min()) < 0):
        raise ValueRangeError("weights must be finite and >= 0")
    return wd


def sampled_token_reverse_kl(student_logits: torch.Tensor, teachers: list,
                             weights: torch.Tensor, ids: torch.Tensor, *, mask=None,
                             temperature: float = 1.0, reduction: str = "token_mean",
                             stats: dict | None = None, return_per_teacher: bool = False):
    """Σ_k w̃_k δ_k,t per token (module docstring), with the policy-gradient gradient.

    student_logits [B, T, V] (q, gets the gradient); teachers: list of K dense [B, T, V] /
    TopKLogprobs / AlignedLogprobs; weights [B, K] or [B, T, K] (>= 0; renormalised over the
    teachers that know y_t); ids [B, T] the sampled tokens; mask bool [B, T].
    Returns the reduction of the per-token values (as ``multi_teacher_divergence``), plus the
    detached per-teacher δ [B, T, K] (0 where unknown) when ``return_per_teacher``.
    ``stats`` counts "count/srkl_teacher_unknown" (token-teacher pairs whose log-prob was
    unknown), "count/srkl_tokens_unscored" (tokens no teacher knew: left out of the loss) and
    "count/divergence_infinite" (teacher log-prob -inf: δ = +inf).
    """
    if reduction not in _REDUCTIONS:
        raise ValueRangeError(f"reduction must be one of {_REDUCTIONS}, got {reduction!r}")
    if not isinstance(temperature, (int, float)) or not math.isfinite(temperature) \
            or temperature <= 0:
        raise ValueRangeError(f"temperature must be a finite number > 0, got {temperature!r}")
    z = student_logits
    if not isinstance(z, torch.Tensor) or z.dim() != 3:
        raise ShapeError(f"student_logits must be [B, T, V], got "
                         f"{getattr(z, 'shape', type(z).__name__)}")
    B, T, _ = z.shape
    if not isinstance(ids, torch.Tensor) or tuple(ids.shape) != (B, T) \
            or ids.is_floating_point():
        raise ShapeError(f"ids must be an integer tensor of shape {(B, T)}, got "
                         f"{getattr(ids, 'shape', type(ids).__name__)}")
    if mask is None:
        mask = torch.ones(B, T, dtype=torch.bool, device=z.device)
    elif not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool \
            or tuple(mask.shape) != (B, T):
        raise ShapeError(f"mask must be a bool tensor of shape {(B, T)}")
    if not isinstance(teachers, (list, tuple)) or not teachers:
        raise ShapeError("teachers must be a non-empty list")
    ids = ids.long().to(z.device)
    K = len(teachers)
    w = _weights_btk(weights, B, T, K).to(z.device)
    b = student_token_logprobs(z, torch.where(mask, ids, torch.zeros_like(ids)), temperature)
    bd = b.detach()
    a_all, known_all = [], []
    for k, t in enumerate(teachers):
        name = "teacher" if K == 1 else f"teachers[{k}]"
        a, kn = teacher_token_logprobs(t, ids, bd, mask, float(temperature), name)
        a_all.append(a)
        known_all.append(kn)
    a = torch.stack(a_all, -1)  # [B, T, K]
    known = torch.stack(known_all, -1)
    wk = torch.where(known, w.to(bd.dtype), torch.zeros((), dtype=bd.dtype))
    total = wk.sum(-1, keepdim=True)
    # a token whose known teachers all have weight 0 falls back to uniform over the known ones
    n_known = known.sum(-1, keepdim=True).to(bd.dtype)
    wk = torch.where(total > 0, wk / total.clamp_min(1e-30), known.to(bd.dtype) / n_known.clamp_min(1))
    used = mask & known.any(-1)
    _count(stats, "count/srkl_teacher_unknown", int((mask[..., None] & ~known).sum()))
    _count(stats, "count/srkl_tokens_unscored", int((mask & ~used).sum()))
    delta = torch.where(known, bd[..., None] - a, torch.zeros((), dtype=bd.dtype))  # [B, T, K]
    value = torch.where(used, (wk * torch.where(wk > 0, delta, 0.0)).sum(-1),
                        torch.zeros((), dtype=bd.dtype))
    _count(stats, "count/divergence_infinite", int(torch.isinf(value).sum()))
    # value δ_t, gradient δ_t ∇ log q(y_t) = -sg(A_t) ∇ log q(y_t)
    loss_tok = value + (b - bd) * torch.where(used, value, torch.zeros((), dtype=bd.dtype))
    loss_tok = torch.where(used, loss_tok, torch.zeros((), dtype=bd.dtype))
    out = _reduce(loss_tok, used, reduction)
    return (out, delta) if return_per_teacher else out


def _reduce(x: torch.Tensor, used: torch.Tensor, reduction: str) -> torch.Tensor:
    if reduction == "none":
        return x
    if reduction == "sum":
        return x.sum()
    if reduction == "token_mean":
        return x.sum() / max(int(used.sum()), 1)
    n = used.sum(-1)
    keep = n > 0
    if not bool(keep.any()):
        return x.sum()
    return (x.sum(-1)[keep] / n[keep].to(x.dtype)).mean()
