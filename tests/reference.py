"""Float64 brute-force references for madopd.divergence, written independently of it.

Deliberately naive: explicit loops over positions, textbook formulas (softmax by exp/sum,
KL by Σ p log(p/q) with the 0·log 0 = 0 convention, mixture m built explicitly), the student's
top-k tail as 1 - Σ q[ids]. Shares no code with madopd; differentiable w.r.t. the student
logits through plain autograd so it also gives reference gradients.
p = teacher, q = student.
"""

from __future__ import annotations

import torch


def softmax64(row: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """softmax(row / τ) with the limits at infinite logits: -inf is probability 0; if any
    logit is +inf, the distribution is uniform over the +inf logits (the limit as they grow)."""
    x = row.double() / temperature
    top = x == float("inf")
    if bool(top.any()):
        return top.double() / top.sum()
    e = torch.exp(x - x.max())  # -inf -> exp(-inf) = 0
    return e / e.sum()


def _kl(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """KL(a ‖ b) = Σ a log(a/b) over the support of a (0·log 0 = 0); +inf if b = 0 < a."""
    keep = a > 0
    return (a[keep] * (torch.log(a[keep]) - torch.log(b[keep]))).sum()


def div64(kind: str, beta: float, p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    if kind == "fkl" or (kind == "njsd" and beta == 0.0):
        return _kl(p, q)
    if kind == "rkl" or (kind == "njsd" and beta == 1.0):
        return _kl(q, p)
    m = beta * p + (1 - beta) * q
    j = beta * _kl(p, m) + (1 - beta) * _kl(q, m)
    return j / (beta * (1 - beta)) if kind == "njsd" else j


def teacher_row(teacher, b, t, V, temperature=1.0, floor=1e-10):
    """(P, cells) for one position: dense -> (probs [V], None); sparse -> (bucket probs, ids)."""
    if isinstance(teacher, torch.Tensor):
        return softmax64(teacher[b, t], temperature), None
    ids = teacher.ids[b, t].long()
    pk = torch.exp(teacher.logprobs[b, t].double())
    if len(ids) == V:
        return pk, ids
    tail = 1.0 - pk.sum() if teacher.tail_mass is None else teacher.tail_mass[b, t].double()
    return torch.cat([pk, torch.clamp(tail, min=floor).reshape(1)]), ids


def student_cells(q: torch.Tensor, ids, floor=1e-10):
    if ids is None:
        return q
    qk = q[ids]
    if len(ids) == len(q):
        return qk
    tail = 1.0 - qk.sum()
    return torch.cat([qk, torch.clamp(tail, min=floor).reshape(1)])


def per_token64(kind, beta, z, teacher, mask=None, temperature=1.0, floor=1e-10):
    """[B, T] float64 per-token divergence (0 where masked); z is [B, T, V]."""
    B, T, V = z.shape
    rows = []
    for b in range(B):
        row = []
        for t in range(T):
            if mask is not None and not bool(mask[b, t]):
                row.append(torch.zeros((), dtype=torch.float64))
                continue
            P, ids = teacher_row(teacher, b, t, V, temperature, floor)
            Q = student_cells(softmax64(z[b, t], temperature), ids, floor)
            row.append(div64(kind, beta, P, Q))
        rows.append(torch.stack(row))
    return torch.stack(rows)


def mixture_per_token64(kind, beta, z, teachers, weights, mask=None, temperature=1.0):
    """D(Σ_k w_k p_k ‖ q) for dense teachers; weights [B, K] or [B, T, K]."""
    B, T, V = z.shape
    out = torch.zeros(B, T, dtype=torch.float64)
    for b in range(B):
        for t in range(T):
            if mask is not None and not bool(mask[b, t]):
                continue
            w = weights[b] if weights.dim() == 2 else weights[b, t]
            P = sum(float(w[k]) * softmax64(teachers[k][b, t], temperature)
                    for k in range(len(teachers)))
            out[b, t] = div64(kind, beta, P, softmax64(z[b, t], temperature))
    return out


def reduce64(per_token: torch.Tensor, mask, reduction: str) -> torch.Tensor:
    B, T = per_token.shape
    if reduction == "none":
        return per_token
    keep = [[mask is None or bool(mask[b, t]) for t in range(T)] for b in range(B)]
    total = sum(per_token[b, t] for b in range(B) for t in range(T) if keep[b][t])
    count = sum(keep[b][t] for b in range(B) for t in range(T))
    if reduction == "sum":
        return torch.as_tensor(total, dtype=torch.float64)
    if reduction == "token_mean":
        return torch.as_tensor(total / max(count, 1), dtype=torch.float64)
    means = []
    for b in range(B):
        n = sum(keep[b])
        if n:
            means.append(sum(per_token[b, t] for t in range(T) if keep[b][t]) / n)
    return torch.stack(means).mean() if means else torch.zeros((), dtype=torch.float64)


def entropy64(x_row: torch.Tensor) -> torch.Tensor:
    p = softmax64(x_row)
    keep = p > 0
    return -(p[keep] * torch.log(p[keep])).sum()


def manual_continuation_logprobs(teacher, chat, cont: list[int]) -> torch.Tensor:
    """Log-probs [len(cont), V] of ``cont`` after ``chat`` from one plain forward of the
    teacher's model (no cache, no batching): the reference for ``Teacher.score``."""
    from madopd.models._common import render_prompt_ids

    full = torch.tensor([render_prompt_ids(teacher.tokenizer, chat) + cont])
    with torch.no_grad():
        logits = teacher.model(input_ids=full).logits[0].double()
    P = full.shape[1] - len(cont)
    return torch.log_softmax(logits[P - 1: P - 1 + len(cont)].float(), -1).double()
