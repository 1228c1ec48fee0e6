"""Private engine behind :mod:`madopd.divergence`: chunked kernels and the autograd function.

Conventions: p = teacher, q = student, a = log p, b = log q, z = student logits. Every kernel
works on "cells": the vocabulary for a dense teacher, or the k top-k ids plus one tail bucket
for a sparse teacher. Only the rows (token positions) selected by the mask are ever read.

Memory: the chunk loop reads ``chunk`` rows at a time, upcasts them to the compute dtype and
frees them before the next chunk, so every temporary is [chunk, V]. The gradient w.r.t. the
student logits is computed analytically per chunk (``DivFn``), never through autograd of the
per-element graph, so backward memory is one [B, T, V] gradient buffer plus one chunk.
"""

from __future__ import annotations

import math

import torch

from madopd.divergence import fused
from madopd.divergence.plan import (
    Dense,
    Plan,
    Sparse,
    _rows,
    auto_chunk,
)
from madopd.errors import ValueRangeError


# ----------------------------------------------------------------------------- kernels
def pointwise(kind: str, beta: float, a, b, p, q, need_qg: bool):
    """Per-row divergence and q·∂D/∂q per cell. a = log p, b = log q (either may be -inf),
    p = exp(a), q = exp(b), all [n, W].

    Returns (value [n], qg [n, W] or None). The gradient w.r.t. the logits follows from
    ∂D/∂z_j = q_j (g_j - Σ_i q_i g_i) / τ with g = ∂D/∂q (see ``student_grad``).
    Zero probabilities are exact, never a NaN patched to 0: a term p·log(p/·) is selected
    away where p = 0 (0·log 0 = 0), and JSD's log ratios are exact at p = 0 or q = 0
    (``jsd_log_ratios``). Infinite values (fkl: q = 0 < p; rkl: p = 0 < q) stay +inf.
    """
    if kind == "fkl":  # Eq. 2: Σ p log(p/q); ∂/∂q = -p/q
        val = torch.where(p > 0, p * (a - b), 0.0).sum(-1)
        return val, (p.neg() if need_qg else None)
    if kind == "rkl":  # Eq. 3: Σ q log(q/p); ∂/∂q = log(q/p) + 1
        tq = torch.where(q > 0, q * (b - a), 0.0)
        val = tq.sum(-1)
        return val, (tq.add_(q) if need_qg else None)
    lp, lq = fused.jsd_log_ratios(beta, a, b, p, q)
    tp = torch.where(p > 0, p * lp, 0.0)
    tq = torch.where(q > 0, q * lq, 0.0)
    if kind == "jsd":  # Eq. 4: β KL(p‖m) + (1-β) KL(q‖m); ∂/∂q = (1-β) log(q/m)
        val = beta * tp.sum(-1) + (1 - beta) * tq.sum(-1)
        return val, (tq.mul_(1 - beta) if need_qg else None)
    # njsd = JSD_β / (β(1-β)); ∂/∂q = log(q/m) / β
    val = tp.sum(-1) / (1 - beta) + tq.sum(-1) / beta
    return val, (tq.div_(beta) if need_qg else None)


def _logprobs(x: torch.Tensor, plan: Plan, name: str, bad: dict) -> torch.Tensor:
    """log_softmax(x / τ) in the compute dtype; rows that are NaN / +inf / all -inf are
    recorded in ``bad[name]`` (checked once after the loop: no device sync per chunk)."""
    x = x.to(plan.cd)  # [n, V] upcast (a no-op for fp32/fp64 inputs)
    if plan.temperature != 1.0:
        x = x / plan.temperature
    out = torch.log_softmax(x, -1)
    # log_softmax turns any NaN, +inf or all -inf row into NaN entries, and nothing else does
    bad.setdefault(name, []).append(torch.isnan(out.sum(-1)))
    return out


def raise_bad_rows(plan: Plan, bad: dict) -> None:
    for name, flags in bad.items():
        flags = torch.cat(flags)
        if bool(flags.any()):
            r = int(flags.nonzero()[0, 0])
            where = f"row {int(plan.ti[r])}" if plan.two_d else \
                f"position [b={int(plan.bi[r])}, t={int(plan.ti[r])}]"
            raise ValueRangeError(f"{name} contains NaN or +inf (or a row that is all -inf) "
                                  f"at {where}; -inf alone means zero probability and is "
                                  f"allowed")


def student_logprobs(plan: Plan, s: int, e: int, bad: dict) -> torch.Tensor:
    return _logprobs(_rows(plan.z, plan, s, e), plan, "student_logits", bad)


def _cells(target, plan: Plan, s: int, e: int, s_full, q_full, tag: str, bad: dict):
    """(a, b, p, q, sparse_info) for one target on rows s:e; sparse_info None when dense."""
    if isinstance(target, Dense):
        a = _logprobs(_rows(target.x, plan, s, e), plan, tag, bad)
        return a, s_full, a.exp(), q_full, None
    if isinstance(target, Sparse):
        ids = target.ids[s:e]
        b_ids = s_full.gather(1, ids)
        if target.log_tail is None:
            a = target.logp[s:e]
            return a, b_ids, a.exp(), b_ids.exp(), (ids, None)
        # log q_tail = logsumexp of the student's log-probs outside the ids: exact, no 1 - Σ.
        s_tail = s_full.scatter(1, ids, -math.inf).logsumexp(-1)  # [n]
        b_tail = s_tail.clamp_min(plan.log_floor)
        a = torch.cat([target.logp[s:e], target.log_tail[s:e, None]], -1)
        b = torch.cat([b_ids, b_tail[:, None]], -1)
        return a, b, a.exp(), b.exp(), (ids, s_tail)
    # Mixture: log Σ_k w_k p_k, accumulated with logaddexp (one [n, W] at a time).
    a_mix = None
    for k, part in enumerate(target.parts):
        a_k, b, _, q, info = _cells(part, plan, s, e, s_full, q_full, f"{tag}[{k}]", bad)
        a_k = a_k + target.logw[s:e, k:k + 1]
        a_mix = a_k if a_mix is None else torch.logaddexp(a_mix, a_k)
    return a_mix, b, a_mix.exp(), q, info


def student_grad(qg, q_full, info, log_floor):
    """(Gq [n, V], S [n]) with Gq_j = q_j g_{cell(j)} and S = Σ_j q_j g_{cell(j)}.

    Dense: Gq = qg. Sparse: an id's cell is itself; every other id shares the tail cell, whose
    g is qg_tail / Q_tail (0 when the student's tail was floored: the floor is a constant).
    """
    if info is None:
        return qg, qg.sum(-1)
    ids, s_tail = info
    k = ids.shape[1]
    if s_tail is None:
        Gq = torch.zeros_like(q_full).scatter_(1, ids, qg)
        return Gq, qg.sum(-1)
    q_tail_b = s_tail.clamp_min(log_floor).exp()
    g_tail = (qg[:, k] / q_tail_b).masked_fill_((s_tail < log_floor) | (q_tail_b == 0), 0.0)
    Gq = (q_full * g_tail[:, None]).scatter_(1, ids, qg[:, :k])
    return Gq, qg[:, :k].sum(-1) + s_tail.exp() * g_tail


def run_chunks(plan: Plan, coef: torch.Tensor | None, grad_sink=None) -> torch.Tensor:
    """Values [M, J] of every target; if ``grad_sink`` is given, also the per-row gradient
    Σ_j coef[:, j] ∂D_j/∂z (already divided by τ), handed to grad_sink(s, e, rows).

    Runs the compiled fused kernel when ``plan.fused`` (dense targets, policy allows), else
    the op-by-op loop; a compiler failure is handled by the policy (raise, or count and run
    op-by-op). Which one ran is counted (``fused.RUNS`` and ``plan.stats``).
    """
    if plan.fused:
        try:
            values = _run_fused(plan, coef, grad_sink)
        except _CompileError as e:
            fused.handle_compile_error(plan, e.key, e.err)
            plan.fused = False
            if plan.auto_chunk:
                plan.chunk = auto_chunk(plan.z.shape[-1], len(plan.targets), plan.z, False)
        else:
            fused.count(plan, "compiled")
            _count_infinite(plan, values)
            return values
    fused.count(plan, "eager")
    values = _run_eager(plan, coef, grad_sink)
    _count_infinite(plan, values)
    return values


def _count_infinite(plan: Plan, values: torch.Tensor) -> None:
    """Legitimately infinite values (fkl: q = 0 < p; rkl: p = 0 < q) are counted per target
    and row when the caller collects stats (a device sync, so only then)."""
    if plan.stats is not None:
        key = "count/divergence_infinite"
        plan.stats[key] = plan.stats.get(key, 0) + int(torch.isinf(values).sum())


class _CompileError(Exception):
    def __init__(self, key, err):
        super().__init__(str(err))
        self.key, self.err = key, err


def _run_fused(plan: Plan, coef, grad_sink) -> torch.Tensor:
    M, J = plan.M, len(plan.targets)
    dev = plan.z.device
    need = grad_sink is not None
    fn, key, is_cpp = None, None, False
    dtypes = (plan.z.dtype, tuple(t.x.dtype for t in plan.targets))
    try:
        fn, key, is_cpp = fused.compiled_kernel(plan.kind, plan.beta, 1.0 / plan.temperature,
                                                plan.cd, J, need, dev.type, dtypes, plan)
    except Exception as err:  # noqa: BLE001 -- a cached earlier failure, or no compiler
        raise _CompileError(key or (plan.kind,), err) from err
    if is_cpp:
        fused.count(plan, "cpp")
    values = torch.empty(M, J, dtype=plan.cd, device=dev)
    flags = []
    direct = getattr(grad_sink, "direct", None)
    for s in range(0, M, plan.chunk):
        e = min(M, s + plan.chunk)
        zr = _rows(plan.z, plan, s, e)
        ts = [_rows(t.x, plan, s, e) for t in plan.targets]
        c = coef[s:e].to(plan.cd) if need else None
        out = None
        if need:
            out = direct(s, e) if direct is not None else None
            if out is None:
                out = torch.empty(zr.shape, dtype=plan.z.dtype, device=dev)
        try:
            v, bad = fn(zr, ts, c, out)
        except Exception as err:  # noqa: BLE001 -- the compiler's failures have many types
            raise _CompileError(key, err) from err
        values[s:e] = v.clamp_min(0)
        flags.append(bad)
        if need and (direct is None or direct(s, e) is None):
            grad_sink(s, e, out)
    if flags:
        bad = torch.cat(flags)
        names = ["student_logits"] + (["teacher"] if J == 1 else
                                      [f"teachers[{j}]" for j in range(J)])
        raise_bad_rows(plan, {n: [bad[:, i]] for i, n in enumerate(names)})
    return values


def _run_eager(plan: Plan, coef: torch.Tensor | None, grad_sink=None) -> torch.Tensor:
    M, J = plan.M, len(plan.targets)
    values = torch.empty(M, J, dtype=plan.cd, device=plan.z.device)
    need = grad_sink is not None
    bad: dict = {}
    for s in range(0, M, plan.chunk):
        e = min(M, s + plan.chunk)
        s_full = student_logprobs(plan, s, e, bad)  # [n, V]
        q_full = s_full.exp()
        grad_rows = None
        for j, target in enumerate(plan.targets):
            tag = "teacher" if J == 1 else f"teachers[{j}]"
            a, b, p, q, info = _cells(target, plan, s, e, s_full, q_full, tag, bad)
            if plan.stats is not None and info is not None and info[1] is not None:
                key = "count/divergence_student_tail_floored"  # once per target and row
                plan.stats[key] = plan.stats.get(key, 0) + int((info[1] < plan.log_floor).sum())
            val, qg = pointwise(plan.kind, plan.beta, a, b, p, q, need)
            values[s:e, j] = val.clamp_min(0)  # rounding can dip below 0; D >= 0 always
            if need:
                Gq, S = student_grad(qg, q_full, info, plan.log_floor)
                rows = torch.addcmul(Gq, q_full, S[:, None], value=-1.0)
                rows.mul_(coef[s:e, j:j + 1].to(plan.cd))
                grad_rows = rows if grad_rows is None else grad_rows.add_(rows)
        if need:
            if plan.temperature != 1.0:
                grad_rows.div_(plan.temperature)
            grad_sink(s, e, grad_rows)
    raise_bad_rows(plan, bad)
    return values


class _Sink:
    """Writes gradient rows into ``buf`` [B, T, V]; ``direct`` hands out a view to write
    into in place (all rows selected, contiguous buffer) so no row is copied twice."""

    def __init__(self, buf: torch.Tensor, plan: Plan):
        self.buf, self.plan = buf, plan
        self.flat = buf.view(-1, buf.shape[-1]) if plan.all_rows and buf.is_contiguous() \
            else None

    def direct(self, s, e):
        return None if self.flat is None else self.flat[s:e]

    def __call__(self, s, e, rows):
        if self.flat is not None:
            self.flat[s:e].copy_(rows)
        else:
            self.buf[self.plan.bi[s:e], self.plan.ti[s:e]] = rows.to(self.buf.dtype)


def _write_into(buf: torch.Tensor, plan: Plan) -> _Sink:
    return _Sink(buf, plan)


def _scale_rows_(grad_z: torch.Tensor, go: torch.Tensor, plan: Plan) -> None:
    """grad_z[row] *= go[row], in place. The reductions fold their row weights into coef, so
    ``loss.backward()`` hands a broadcast 1.0 here: then the pass over [B, T, V] is skipped."""
    if go.numel() and go.dim() == 1 and go.stride(0) == 0:  # one value for every row
        s = go[0]
        if s.device.type == "cpu" and float(s) in (0.0, 1.0):
            if float(s) == 0.0:
                grad_z.zero_()  # zero weight: zero gradient, even where D = +inf (NaN·0)
            return
        grad_z.mul_(s.to(grad_z.dtype))
        return
    scale = torch.zeros(grad_z.shape[:2], dtype=go.dtype, device=go.device)
    scale[plan.bi, plan.ti] = go
    scale = scale.unsqueeze(-1).to(grad_z.dtype)
    # a row with zero weight has zero gradient, even an infinite row's NaN one (NaN·0 = NaN)
    grad_z.mul_(scale).masked_fill_(scale == 0, 0.0)


class DivFn(torch.autograd.Function):
    """Chunked divergence with an analytic, chunked gradient w.r.t. the student logits.

    combined mode (coef [M, J] given): output [M] = Σ_j coef[:, j]·D_j; the gradient
    Σ_j coef_j ∇D_j is computed during the forward into one [B, T, V] buffer (no recompute),
    and the backward only scales it by grad_output in place. separate mode (coef None):
    output [M, J]; the backward recomputes chunk by chunk with coef = grad_output.
    A second backward through a retained graph recomputes too. Not twice differentiable.
    """

    @staticmethod
    def forward(ctx, z, coef, plan: Plan):
        ctx.plan = plan
        ctx.combined = coef is not None
        eager = ctx.combined and ctx.needs_input_grad[0]
        sink = None
        if eager:
            # every row is written when no mask selects rows: no zero fill needed
            plan.grad_buf = torch.empty_like(z) if plan.all_rows else torch.zeros_like(z)
            sink = _write_into(plan.grad_buf, plan)
        c = None if coef is None else coef.detach()
        values = run_chunks(plan, c, sink)
        plan.values = values
        ctx.save_for_backward(z, c if c is not None else values.new_empty(0))
        return (values * c.to(values.dtype)).sum(-1) if ctx.combined else values

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, go):
        plan = ctx.plan
        z, c = ctx.saved_tensors
        grad_z = grad_c = None
        if ctx.needs_input_grad[0]:
            if ctx.combined and plan.grad_buf is not None:
                grad_z, plan.grad_buf = plan.grad_buf, None  # hand the buffer over, no copy
                _scale_rows_(grad_z, go, plan)
            else:
                coef = go[:, None] * c.to(go.dtype) if ctx.combined else go
                grad_z = torch.zeros_like(z)
                stats, plan.stats = plan.stats, None  # the forward already counted
                try:
                    run_chunks(plan, coef, _write_into(grad_z, plan))
                finally:
                    plan.stats = stats
        if ctx.combined and ctx.needs_input_grad[1]:
            grad_c = (go[:, None] * plan.values).to(c.dtype)
        return grad_z, grad_c, None
