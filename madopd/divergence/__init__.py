"""Token-level divergences between a teacher p and a student q (paper Eqs. 2-4, 8).

Convention everywhere: **p = teacher, q = student**, arguments are always
``(student_logits, teacher, ...)``, and the student is the one that gets the gradient.

* ``forward_kl``   = KL(p ‖ q) = Σ p log(p/q)                          (Eq. 2, mode covering)
* ``reverse_kl``   = KL(q ‖ p) = Σ q log(q/p)                          (Eq. 3, mode seeking)
* ``jsd(beta)``    = β KL(p ‖ m) + (1-β) KL(q ‖ m), m = βp + (1-β)q, 0 < β < 1      (Eq. 4)
* ``normalized_jsd(beta)`` = JSD_β / (β(1-β)) for β in [0, 1]: a continuous family whose
  limit at β → 0 is forward KL and at β → 1 is reverse KL (returned exactly at β = 0 / 1).
* ``multi_teacher_divergence`` = Σ_k w_k D(p_k ‖ q) (Eq. 8) or D(Σ_k w_k p_k ‖ q).

PyTorch pitfall: ``F.kl_div(input, target)`` computes KL(target ‖ input) -- the *second*
argument is the first distribution. The official MAD-OPD code therefore writes forward KL as
``kl_div(student, teacher)``; this module never uses ``F.kl_div``.

Common keyword arguments of every divergence:

* ``mask``: bool [B, T] (or [N]); False positions are never read (padding may hold garbage)
  and are 0 in ``reduction="none"``.
* ``temperature``: divides both sides' logits (log-probs work too: log_softmax(log p / τ) is
  the tempered distribution). A top-k teacher only allows τ = 1 (the server must apply it).
* ``reduction``: "none" -> [B, T] (or [N]); "token_mean" = Σ over unmasked tokens / their
  count; "sequence_mean" = mean over sequences of each sequence's token mean (sequences with
  no unmasked token are excluded; for [N, V] inputs all rows form one sequence); "sum".
  An all-masked batch gives 0.0 that still has a grad path (its gradient is zero).
* ``chunk_size``: tokens per chunk (None = auto: from a cache/memory budget, see
  :func:`auto_chunk_size` and docs/performance.md). Peak memory in forward and backward is
  one [B, T, V] gradient buffer (unavoidable; filled during the forward when the student
  requires grad, so the backward only rescales it, or not at all for a plain
  ``loss.backward()`` of a scalar reduction) plus O(chunk_size·V) temporaries.
* ``stats``: a dict that gets counters: which kernel ran ("count/divergence_kernel_compiled",
  "..._eager", "..._compile_failed"; "..._cpp" when the compiled one was the C++ row kernel,
  "..._cpp_failed" when that failed to build and inductor's ran), tail floors, and
  "count/divergence_infinite".
* ``tail_floor``: top-k teachers carry a tail bucket on both sides (student tail =
  1 - Σ q[ids], computed exactly as a logsumexp outside the ids). Bucket masses below this
  floor (rounding: top-k log-probs summing to ~1) are raised to it, so reverse KL stays
  finite; ``stats`` (a dict) counts how often ("count/divergence_*_tail_floored").

Kernels: dense teachers run a fused kernel (value and gradient from one read of the logits)
when the call is large enough, op-by-op torch otherwise. The fused kernel is, on CPU with
float32 compute, a hand-written C++ row kernel (``divergence.cpp``, built once with
inductor's C++ toolchain), else ``torch.compile`` of the chunk function (float64, GPUs, or
``cpu_kernel="inductor"``). :class:`KernelPolicy` (``set_kernel_policy`` / ``kernel_policy``,
environment ``MADOPD_DIVERGENCE_KERNEL``) chooses, and a compiler failure is counted and
warned about or raised, never silent. All paths compute the same formulas (tested equal and
against a float64 reference).

Numerics: computed in float32 (float64 if an input is float64) whatever the input dtype,
read element by element (bf16/fp16 are never copied whole); values are clamped at 0
(rounding). The teacher gets no gradient (it is detached: a fixed target).

Zero probabilities: -inf in teacher or student logits/log-probs means probability 0 and is
exact on either side (0·log 0 = 0; JSD's log ratios at p = 0 or q = 0 are -log(1-β) and
-log β, never an ∞ - ∞ NaN). A divergence is legitimately +inf where the first distribution
has mass the second lacks: forward KL when the student gives 0 to a teacher-supported token,
reverse KL when the teacher gives 0 to a student-supported one (dense teachers; a top-k tail
is floored). Such values are returned as +inf (reductions too), counted in ``stats``; their
gradient row is forward KL's finite limit (q - p)/τ, and not a number for reverse KL; a row
whose upstream weight is 0 gets a zero gradient. JSD and normalised JSD (β in (0, 1)) are
always finite. NaN, +inf or an all -inf row is a ``ValueRangeError`` (a +inf logit is not a
distribution this API accepts; the test reference treats it as the limit). The autograd
function is not twice differentiable.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from madopd.divergence import core, fused
from madopd.divergence.fused import KernelPolicy
from madopd.divergence.plan import (
    Dense,
    Plan,
    auto_chunk,
    check_kind_beta,
    compute_dtype,
    make_plan,
)
from madopd.divergence.sampled import SAMPLED_KINDS, sampled_token_reverse_kl
from madopd.errors import ConfigError, ShapeError, ValueRangeError
from madopd.types import TopKLogprobs

__all__ = [
    "KernelPolicy", "auto_chunk_size", "get_kernel_policy", "kernel_policy", "kernel_runs",
    "set_kernel_policy", "DivergenceSpec", "divergence", "divergence_for_task", "entropy", "forward_kl", "jsd",
    "logit_grad_norm", "multi_teacher_divergence", "normalized_jsd", "per_teacher_divergence",
    "reverse_kl", "sampled_token_reverse_kl", "top1_agreement",
]

REDUCTIONS = ("none", "token_mean", "sequence_mean", "sum")
DEFAULT_TAIL_FLOOR = 1e-10


@dataclass(frozen=True)
class DivergenceSpec:
    """Which divergence D(p ‖ q) to use (p = teacher, q = student)."""

    kind: str = field(default="jsd", metadata={
        "help": "fkl = KL(p‖q) (Eq. 2), rkl = KL(q‖p) (Eq. 3), jsd = JSD_β (Eq. 4), "
                "njsd = JSD_β/(β(1-β)) (fkl at β=0, rkl at β=1), srkl = reverse KL estimated "
                "on the student's sampled token (policy-gradient form, "
                ":func:`sampled_token_reverse_kl`)"})
    beta: float = field(default=0.5, metadata={
        "help": "mixture weight of the teacher in m = βp + (1-β)q; (0, 1) for jsd, [0, 1] for "
                "njsd, ignored by fkl/rkl"})

    def __post_init__(self):
        if self.kind not in SAMPLED_KINDS:
            check_kind_beta(self.kind, self.beta, where="DivergenceSpec")

    @property
    def sampled(self) -> bool:
        """True for a sampled-token estimate (needs the sampled ids, not only the logits)."""
        return self.kind in SAMPLED_KINDS


# ----------------------------------------------------------------------------- kernel policy
get_kernel_policy = fused.get_policy
set_kernel_policy = fused.set_policy  # set_kernel_policy(mode="eager") or (KernelPolicy(...))
kernel_policy = fused.policy  # with kernel_policy(mode="compiled"): ...


def kernel_runs() -> dict:
    """How many chunk loops ran on each path in this process: {"compiled", "eager",
    "compile_failed", and among "compiled": "cpp" / "cpp_failed"} (per call, also in
    ``stats`` as "count/divergence_kernel_*")."""
    return dict(fused.RUNS)


def auto_chunk_size(vocab: int, n_teachers: int = 1, n_rows: int = 1 << 30,
                    device="cpu", dtype=torch.float32) -> int:
    """Tokens per chunk the auto setting (chunk_size=None) would use on a call of n_rows
    rows against n_teachers dense teachers under the current kernel policy."""
    z = torch.empty(0, dtype=dtype, device=device)
    pol = fused.get_policy()
    on = pol.mode == "compiled" or (pol.mode == "auto"
                                    and n_rows * vocab * (1 + n_teachers) >= pol.min_logits)
    return auto_chunk(vocab, n_teachers, z, on)


_TASK_SPECS = {"agentic": DivergenceSpec("jsd", 0.5), "code": DivergenceSpec("rkl")}


def divergence_for_task(task: str) -> DivergenceSpec:
    """Paper Remark 1: JSD(β=0.5) for multi-step agentic tasks (bounded logit gradient,
    Lemma 1), reverse KL for code (mode seeking: one coherent implementation, Lemma 2)."""
    if task not in _TASK_SPECS:
        raise ConfigError(f"task must be one of {sorted(_TASK_SPECS)}, got {task!r}")
    return _TASK_SPECS[task]


# ----------------------------------------------------------------------------- reductions
def _check_reduction(reduction):
    if reduction not in REDUCTIONS:
        raise ValueRangeError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")


def _reduce(values: torch.Tensor, plan: Plan, reduction: str) -> torch.Tensor:
    """values [M] (or [M, K]) at the selected rows -> the requested reduction."""
    B, T = plan.z.shape[:2]
    M = plan.M
    if reduction == "none":
        out = values.new_zeros((B, T) + tuple(values.shape[1:]))
        out = out.index_put((plan.bi, plan.ti), values)  # out of place: keeps the grad path
        return out[0] if plan.two_d else out
    if reduction == "sum":
        return values.sum(0)
    if reduction == "token_mean":
        return values.sum(0) / max(M, 1)  # M = 0: an empty sum, 0.0 with a grad path
    per_seq = values.new_zeros((B,) + tuple(values.shape[1:])).index_add(0, plan.bi, values)
    counts = torch.bincount(plan.bi, minlength=B)
    keep = counts > 0
    if not bool(keep.any()):
        return values.sum(0)
    cnt = counts[keep].to(values.dtype)
    cnt = cnt.view(-1, *([1] * (values.dim() - 1)))
    return (per_seq[keep] / cnt).mean(0)


def _row_weights(plan: Plan, reduction: str) -> torch.Tensor | None:
    """The reduction as row weights r [M] (loss = Σ_rows r·D), None for "none".

    Folding r into the kernel's coefficients makes the gradient buffer final in the forward:
    ``loss.backward()`` then skips a rescaling pass over [B, T, V] (see ``core.DivFn``).
    """
    if reduction == "none":
        return None
    M, dev = plan.M, plan.z.device
    if reduction == "sum":
        return torch.ones(M, dtype=plan.cd, device=dev)
    if reduction == "token_mean":
        return torch.full((M,), 1.0 / max(M, 1), dtype=plan.cd, device=dev)
    counts = torch.bincount(plan.bi, minlength=plan.z.shape[0])  # sequence_mean
    n_seq = max(int((counts > 0).sum()), 1)
    return 1.0 / (counts[plan.bi].to(plan.cd) * n_seq)


def _one(kind, beta, student_logits, teacher, mask, temperature, reduction, chunk_size,
         tail_floor, stats):
    _check_reduction(reduction)
    plan = make_plan(student_logits, [teacher], kind, beta, mask=mask,
                          temperature=temperature, chunk_size=chunk_size,
                          tail_floor=tail_floor, stats=stats)
    r = _row_weights(plan, reduction)
    coef = torch.ones(plan.M, 1, dtype=plan.cd, device=plan.z.device) if r is None \
        else r[:, None]
    values = core.DivFn.apply(plan.z, coef, plan)  # [M], already weighted by r
    return _reduce(values, plan, "none") if r is None else values.sum(0)


# ----------------------------------------------------------------------------- public API
def forward_kl(student_logits, teacher, *, mask=None, temperature=1.0, reduction="token_mean",
               chunk_size=None, tail_floor=DEFAULT_TAIL_FLOOR, stats=None):
    """Forward KL(p ‖ q) = Σ_v p(v) log(p(v)/q(v)), p = teacher, q = student (Eq. 2).

    student_logits: [B, T, V] or [N, V]; teacher: dense logits/log-probs of the same shape or
    TopKLogprobs [B, T, k]. Returns the reduction (``"none"``: [B, T] or [N]). Its logit
    gradient is (q - p)/τ, so ‖∇_z‖_∞ ≤ 1 (bounded but mode covering, Prop. 1.3).
    """
    return _one("fkl", 0.0, student_logits, teacher, mask, temperature, reduction, chunk_size,
                tail_floor, stats)


def reverse_kl(student_logits, teacher, *, mask=None, temperature=1.0, reduction="token_mean",
               chunk_size=None, tail_floor=DEFAULT_TAIL_FLOOR, stats=None):
    """Reverse KL(q ‖ p) = Σ_v q(v) log(q(v)/p(v)), p = teacher, q = student (Eq. 3).

    Arguments (student_logits, teacher), as for :func:`forward_kl`. Mode seeking (Lemma 2); its logit gradient
    q_j(log(q_j/p_j) - KL) is unbounded as p(v) → 0 with q(v) > 0 (Prop. 1).
    """
    return _one("rkl", 1.0, student_logits, teacher, mask, temperature, reduction, chunk_size,
                tail_floor, stats)


def jsd(student_logits, teacher, beta=0.5, *, mask=None, temperature=1.0,
        reduction="token_mean", chunk_size=None, tail_floor=DEFAULT_TAIL_FLOOR, stats=None):
    """Generalised JSD_β(p ‖ q) = β KL(p‖m) + (1-β) KL(q‖m), m = βp + (1-β)q (Eq. 4).

    Arguments (student_logits, teacher, beta): p = teacher, q = student, 0 < β < 1 (β = 0.5 in the paper). Bounded by
    -β log β - (1-β) log(1-β) (log 2 at β = 0.5), with ‖∇_z JSD_0.5‖_∞ ≤ 2 (Lemma 1;
    in fact ≤ ln(2)/2, proved in :func:`logit_grad_norm`).
    """
    return _one("jsd", beta, student_logits, teacher, mask, temperature, reduction, chunk_size,
                tail_floor, stats)


def normalized_jsd(student_logits, teacher, beta=0.5, *, mask=None, temperature=1.0,
                   reduction="token_mean", chunk_size=None, tail_floor=DEFAULT_TAIL_FLOOR,
                   stats=None):
    """JSD_β(p ‖ q) / (β(1-β)) for β in [0, 1]; arguments (student_logits, teacher, beta),
    p = teacher, q = student.

    Continuous in β: → KL(p ‖ q) (forward, Eq. 2) as β → 0 and → KL(q ‖ p) (reverse, Eq. 3)
    as β → 1; those limits are returned at exactly β = 0 and β = 1. Computed with log1p so the
    division by β(1-β) loses no precision near the endpoints.
    """
    return _one("njsd", beta, student_logits, teacher, mask, temperature, reduction,
                chunk_size, tail_floor, stats)


def divergence(student_logits, teacher, spec: DivergenceSpec, *, mask=None, temperature=1.0,
               reduction="token_mean", chunk_size=None, tail_floor=DEFAULT_TAIL_FLOOR,
               stats=None):
    """D(p ‖ q) chosen by ``spec``; arguments (student_logits, teacher, spec), p = teacher,
    q = student; keywords as in :func:`forward_kl`."""
    if not isinstance(spec, DivergenceSpec):
        raise ConfigError(f"spec must be a DivergenceSpec, got {type(spec).__name__}")
    return _one(spec.kind, spec.beta, student_logits, teacher, mask, temperature, reduction,
                chunk_size, tail_floor, stats)


def per_teacher_divergence(student_logits, teachers: list, spec: DivergenceSpec, mask=None,
                           temperature=1.0, chunk_size=None, *, tail_floor=DEFAULT_TAIL_FLOOR,
                           stats=None) -> torch.Tensor:
    """D(p_k ‖ q) per token and teacher: [B, T, K] (or [N, K]); 0 at masked positions.

    Arguments (student_logits, teachers, spec): p_k = teachers[k] (dense or TopKLogprobs, may be mixed), q = student. Differentiable:
    the backward recomputes chunk by chunk with the incoming per-teacher weights.
    """
    _check_teachers(teachers)
    plan = make_plan(student_logits, list(teachers), spec.kind, spec.beta, mask=mask,
                          temperature=temperature, chunk_size=chunk_size,
                          tail_floor=tail_floor, stats=stats, teacher_arg="teachers")
    values = core.DivFn.apply(plan.z, None, plan)  # [M, K]
    return _reduce(values, plan, "none")


def multi_teacher_divergence(student_logits, teachers: list, weights: torch.Tensor,
                             spec: DivergenceSpec, target: str = "sum", mask=None,
                             reduction="token_mean", temperature=1.0, chunk_size=None, *,
                             tail_floor=DEFAULT_TAIL_FLOOR, stats=None,
                             return_per_teacher=False):
    """Multi-teacher loss; arguments (student_logits, teachers, weights, spec), p_k =
    teachers[k], q = student, w = weights.

    target="sum":     Σ_k w_k D(p_k ‖ q)   (paper Eq. 8; w from Eqs. 6-7). Differentiable in w.
    target="mixture": D(Σ_k w_k p_k ‖ q)   (one target: the teachers' probability mixture);
                      w must sum to 1 and gets no gradient. Top-k teachers are supported only
                      when they all carry the same ids (else ConfigError: the mass of an id
                      outside a teacher's top-k is unknown).
    weights: [B, K] per sample or [B, T, K] per token ([K] or [N, K] for [N, V] students),
    finite and >= 0. Returns the reduction of the per-token combined loss, plus the detached
    per-teacher values [B, T, K] when ``return_per_teacher`` (target="mixture": computed in a
    second, gradient-free pass).
    """
    _check_reduction(reduction)
    _check_teachers(teachers)
    if target not in ("sum", "mixture"):
        raise ConfigError(f"target must be 'sum' or 'mixture', got {target!r}")
    args = dict(mask=mask, temperature=temperature, chunk_size=chunk_size,
                tail_floor=tail_floor, teacher_arg="teachers")
    probe = make_plan(student_logits, list(teachers), spec.kind, spec.beta,
                           stats=stats if target == "sum" else None, **args)
    w = _weights_rows(weights, probe, len(teachers))  # [M, K]
    r = _row_weights(probe, reduction)
    if target == "sum":
        values = core.DivFn.apply(probe.z, w if r is None else w * r[:, None], probe)  # [M]
        out = _reduce(values, probe, "none") if r is None else values.sum(0)
        per = _reduce(probe.values, probe, "none") if return_per_teacher else None
    else:
        wd = w.detach()
        if w.numel() and float((wd.sum(-1) - 1).abs().max()) > 1e-4:
            raise ValueRangeError("weights must sum to 1 over teachers for target='mixture'")
        plan = make_plan(student_logits, list(teachers), spec.kind, spec.beta,
                              mixture_weights=wd, stats=stats, **args)
        coef = torch.ones(plan.M, 1, dtype=plan.cd, device=plan.z.device) if r is None \
            else r[:, None]
        values = core.DivFn.apply(plan.z, coef, plan)
        out = _reduce(values, plan, "none") if r is None else values.sum(0)
        per = None
        if return_per_teacher:
            with torch.no_grad():
                per = per_teacher_divergence(student_logits, teachers, spec, mask, temperature,
                                             chunk_size, tail_floor=tail_floor)
    return (out, per) if return_per_teacher else out


def _check_teachers(teachers):
    if not isinstance(teachers, (list, tuple)) or len(teachers) == 0:
        raise ShapeError(f"teachers must be a non-empty list, got {type(teachers).__name__}"
                         f"{'' if not isinstance(teachers, (list, tuple)) else ' of length 0'}")


def _weights_rows(weights, plan: Plan, K: int) -> torch.Tensor:
    """Gather the weights of the selected rows: [M, K] (keeps the autograd path)."""
    B, T = plan.z.shape[:2]
    if plan.two_d:
        per_sample, per_token = (K,), (T, K)
    else:
        per_sample, per_token = (B, K), (B, T, K)
    if not isinstance(weights, torch.Tensor) or not weights.is_floating_point():
        raise ShapeError(f"weights must be a floating tensor of shape {per_sample} or "
                         f"{per_token}, got {type(weights).__name__}")
    shape = tuple(weights.shape)
    if shape == per_sample:
        w = weights.expand(T, K) if plan.two_d else weights
        rows = w[plan.ti] if plan.two_d else w[plan.bi]
    elif shape == per_token:
        rows = (weights.unsqueeze(0) if plan.two_d else weights)[plan.bi, plan.ti]
    else:
        raise ShapeError(f"weights has shape {shape}, expected {per_sample} (per sample) or "
                         f"{per_token} (per token) for {K} teachers")
    wd = rows.detach()
    if wd.numel() and (not bool(torch.isfinite(wd).all()) or float(wd.min()) < 0):
        raise ValueRangeError("weights must be finite and >= 0")
    return rows.to(plan.cd)


# ----------------------------------------------------------------------------- diagnostics
def logit_grad_norm(student_logits, teacher, spec: DivergenceSpec, mask=None, ord=math.inf, *,
                    temperature=1.0, chunk_size=None, tail_floor=DEFAULT_TAIL_FLOOR):
    """‖∇_z D(p ‖ q)‖_ord per token w.r.t. the student logits z: [B, T] (0 where masked).

    Arguments (student_logits, teacher, spec): p = teacher, q = student. Analytic, chunked,
    no autograd graph.

    Lemma 1 says ‖∇_z JSD_0.5‖_∞ ≤ 2 whatever p and q; in fact ≤ ln(2)/2 ≈ 0.347 (τ = 1).
    Proof: ∂/∂z_j = q_j (g_j - S) with g_i = ½ log(q_i/m_i), m = (p+q)/2, and
    S = Σ_i q_i g_i = ½ KL(q‖m) ∈ [0, ½ ln 2] (m ≥ q/2). Upper side: q_j (g_j - S) ≤ q_j g_j ≤
    ½ q_j ln(2q_j/(p_j+q_j)) ≤ ½ ln 2. Lower side: q_j (S - g_j) ≤ ½ q_j ln((p_j+q_j)/q_j) ≤
    ½ q_j ln(1 + 1/q_j) ≤ ½ ln 2 (p_j ≤ 1; increasing in q_j). With temperature τ divide by τ.
    Prop. 1: for reverse KL the norm grows without bound (like log 1/p(v)) as p(v) → 0 with
    q(v) > 0; forward KL's gradient is q - p, so ≤ 1.
    """
    plan = make_plan(student_logits, [teacher], spec.kind, spec.beta, mask=mask,
                          temperature=temperature, chunk_size=chunk_size, tail_floor=tail_floor)
    norms = torch.zeros(plan.M, dtype=plan.cd, device=plan.z.device)

    def sink(s, e, rows):
        norms[s:e] = torch.linalg.vector_norm(rows, ord=ord, dim=-1)

    with torch.no_grad():
        coef = torch.ones(plan.M, 1, dtype=plan.cd, device=plan.z.device)
        core.run_chunks(plan, coef, sink)
    return _reduce(norms, plan, "none")


def entropy(logits_or_logprobs, *, mask=None, temperature=1.0, chunk_size=None):
    """Entropy H = -Σ p log p per token: [B, T] (or [N]); 0 where masked; no gradient.

    Dense logits/log-probs [B, T, V] (log_softmax is applied), or TopKLogprobs: then the
    entropy of the k ids plus the tail bucket (a lower bound of the full entropy).
    """
    x = logits_or_logprobs
    with torch.no_grad():
        if isinstance(x, TopKLogprobs):
            return _topk_entropy(x, mask)
        plan = make_plan(x, [x], "fkl", 0.0, mask=mask, temperature=temperature,
                              chunk_size=chunk_size, tail_floor=0.0)
        h = torch.empty(plan.M, dtype=plan.cd, device=plan.z.device)
        bad: dict = {}
        for s in range(0, plan.M, plan.chunk):
            e = min(plan.M, s + plan.chunk)
            a = core.student_logprobs(plan, s, e, bad)
            h[s:e] = -torch.where(a > -math.inf, a.exp() * a, 0.0).sum(-1)  # 0 log 0 = 0
        core.raise_bad_rows(plan, bad)
        return _reduce(h, plan, "none")


def _topk_entropy(x: TopKLogprobs, mask):
    lp = x.logprobs.to(compute_dtype(x.logprobs))  # [B, T, k]
    if x.tail_mass is None:
        tail = -torch.expm1(torch.logsumexp(lp, -1))
    else:
        tail = x.tail_mass.to(lp.dtype)
        if tuple(tail.shape) != tuple(lp.shape[:-1]):
            raise ShapeError(f"tail_mass has shape {tuple(tail.shape)}, expected "
                             f"{tuple(lp.shape[:-1])}")
    a = torch.cat([lp, tail.clamp_min(0).log().unsqueeze(-1)], -1)
    p = a.exp()
    h = torch.where(p > 0, -p * a, p.new_zeros(())).sum(-1)
    if mask is not None:
        if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool \
                or mask.shape != h.shape:
            raise ShapeError(f"mask must be a bool tensor of shape {tuple(h.shape)}")
        h = torch.where(mask, h, h.new_zeros(()))
    return h


def top1_agreement(student_logits, teacher, *, mask=None) -> torch.Tensor:
    """argmax q == argmax p per token: bool [B, T] (or [N]); False where masked.

    Arguments (student_logits, teacher): p = teacher (dense [B, T, V] or TopKLogprobs: the id
    with the largest log-prob), q = student.
    """
    plan = make_plan(student_logits, [teacher], "fkl", 0.0, mask=mask, temperature=1.0,
                          chunk_size=None, tail_floor=0.0)
    with torch.no_grad():
        s_top = plan.z.argmax(-1)  # [B, T]
        t = plan.targets[0]
        if isinstance(t, Dense):
            t_top = t.x.argmax(-1)[plan.bi, plan.ti]
        else:
            t_top = t.ids.gather(1, t.logp.argmax(-1, keepdim=True)).squeeze(1)
        agree = s_top[plan.bi, plan.ti] == t_top
        out = torch.zeros(plan.z.shape[:2], dtype=torch.bool, device=plan.z.device)
        out[plan.bi, plan.ti] = agree
    return out[0] if plan.two_d else out
