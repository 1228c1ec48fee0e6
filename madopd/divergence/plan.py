"""Private: argument validation and the per-call plan behind :mod:`madopd.divergence`.

Conventions: p = teacher, q = student. ``make_plan`` checks every argument once (raising a
ShapeError / ValueRangeError / ConfigError that names the argument and the shapes), selects
the masked-in rows (only those are ever read), and normalises teachers into ``Dense`` /
``Sparse`` / ``Mixture`` targets for the chunked kernels in ``core``.
"""

from __future__ import annotations

import functools
import math
import os
from dataclasses import dataclass, field

import torch

from madopd.divergence import fused as fused_policy
from madopd.errors import ConfigError, ShapeError, ValueRangeError
from madopd.types import TopKLogprobs

KINDS = ("fkl", "rkl", "jsd", "njsd")
SPARSE_TOL = 1e-3  # slack on Σ p of a top-k teacher (its log-probs come from another program)


# ----------------------------------------------------------------------------- validation
def check_kind_beta(kind: str, beta: float, where: str = "spec") -> None:
    if kind == "srkl":
        raise ConfigError(f"{where}.kind 'srkl' estimates reverse KL on the sampled tokens: "
                          "call sampled_token_reverse_kl (it needs the ids, not only logits)")
    if kind not in KINDS:
        raise ConfigError(f"{where}.kind must be one of {KINDS}, got {kind!r}")
    if not isinstance(beta, (int, float)) or not math.isfinite(beta):
        raise ValueRangeError(f"{where}.beta must be a finite number, got {beta!r}")
    if kind == "jsd" and not 0.0 < beta < 1.0:
        raise ValueRangeError(f"{where}.beta must be in (0, 1) for 'jsd' (use 'njsd' for the "
                              f"endpoints, or 'fkl'/'rkl'), got {beta}")
    if kind == "njsd" and not 0.0 <= beta <= 1.0:
        raise ValueRangeError(f"{where}.beta must be in [0, 1] for 'njsd', got {beta}")


def effective_kind(kind: str, beta: float) -> str:
    """normalized JSD at exactly β = 0 / 1 is its limit: forward / reverse KL."""
    if kind == "njsd" and beta == 0.0:
        return "fkl"
    if kind == "njsd" and beta == 1.0:
        return "rkl"
    return kind


def compute_dtype(*tensors: torch.Tensor | None) -> torch.dtype:
    """float64 if any floating input is float64, else float32 (bf16/fp16 are upcast)."""
    return torch.float64 if any(t is not None and t.dtype == torch.float64 for t in tensors) \
        else torch.float32


def _shape(t: torch.Tensor) -> tuple:
    return tuple(t.shape)


# ----------------------------------------------------------------------------- targets
@dataclass
class Dense:
    """A dense teacher: logits or log-probs [B, T, V] (log_softmax is applied per chunk)."""

    x: torch.Tensor


@dataclass
class Sparse:
    """A top-k teacher restricted to the selected rows: ids [M, k], log p [M, k], log tail [M].

    ``log_tail`` is None when k = V (the tail bucket is empty and dropped, so sparse = dense).
    """

    ids: torch.Tensor
    logp: torch.Tensor
    log_tail: torch.Tensor | None


@dataclass
class Mixture:
    """Σ_k w_k p_k of dense teachers, or of top-k teachers that share their ids (cell-wise)."""

    parts: list
    logw: torch.Tensor  # [M, K] log weights of the selected rows


@dataclass
class Plan:
    """Everything a chunk loop needs; built once per call by :func:`make_plan`."""

    z: torch.Tensor  # [B, T, V] student logits (a view of the caller's tensor)
    two_d: bool  # caller passed [N, V]
    bi: torch.Tensor  # [M] batch index of each selected row
    ti: torch.Tensor  # [M] token index of each selected row
    all_rows: bool  # mask was None: rows are z.view(-1, V) in order
    targets: list  # J targets: Dense | Sparse | Mixture
    kind: str
    beta: float
    temperature: float
    chunk: int
    log_floor: float
    cd: torch.dtype
    stats: dict | None = None
    values: torch.Tensor | None = None  # [M, J] per-target values, filled by the forward
    grad_buf: torch.Tensor | None = field(default=None, repr=False)
    auto_chunk: bool = True  # chunk came from the memory budget (recomputed on a fallback)
    fused: bool = False  # try the compiled fused kernel (``fused.use_fused``)

    @property
    def M(self) -> int:
        return int(self.bi.numel())


def _rows(x: torch.Tensor, plan: Plan, s: int, e: int) -> torch.Tensor:
    """Rows s:e of the selected positions of a [B, T, ...] tensor (a view when possible)."""
    if plan.all_rows and x.is_contiguous():
        return x.reshape(-1, *x.shape[2:])[s:e]
    return x[plan.bi[s:e], plan.ti[s:e]]


def _to_3d(t: torch.Tensor, two_d: bool) -> torch.Tensor:
    return t.unsqueeze(0) if two_d else t


def make_plan(student_logits, teachers, kind, beta, *, mask, temperature, chunk_size,
              tail_floor, stats=None, mixture_weights=None, teacher_arg="teacher") -> Plan:
    """Validate every argument and build the plan. Raises ShapeError / ValueRangeError."""
    z = student_logits
    if not isinstance(z, torch.Tensor) or not z.is_floating_point():
        raise ShapeError(f"student_logits must be a floating tensor [B, T, V] or [N, V], got "
                         f"{type(z).__name__}{'' if not isinstance(z, torch.Tensor) else z.dtype}")
    if z.dim() not in (2, 3) or z.shape[-1] < 1:
        raise ShapeError(f"student_logits must have shape [B, T, V] or [N, V], got {_shape(z)}")
    two_d = z.dim() == 2
    z3 = _to_3d(z, two_d)
    B, T, V = z3.shape
    lead = tuple(z.shape[:-1])
    check_kind_beta(kind, beta, where="divergence")
    if not isinstance(temperature, (int, float)) or not math.isfinite(temperature) \
            or temperature <= 0:
        raise ValueRangeError(f"temperature must be a finite number > 0, got {temperature!r}")
    if chunk_size is None:
        chunk = 0  # auto: set below from the memory budget, once the teachers are known
    elif isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueRangeError(f"chunk_size must be an int >= 1 or None (auto), got {chunk_size!r}")
    else:
        chunk = chunk_size
    if not isinstance(tail_floor, (int, float)) or not 0.0 <= tail_floor < 1e-2:
        raise ValueRangeError(f"tail_floor must be in [0, 0.01), got {tail_floor!r}")

    # mask -> selected rows
    if mask is None:
        bi = torch.arange(B, device=z.device).repeat_interleave(T)
        ti = torch.arange(T, device=z.device).repeat(B)
    else:
        if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool:
            raise ShapeError(f"mask must be a bool tensor of shape {lead}, got "
                             f"{getattr(mask, 'dtype', type(mask).__name__)} (use mask.bool())")
        if tuple(mask.shape) != lead:
            raise ShapeError(f"mask has shape {_shape(mask)} but student_logits {_shape(z)} "
                             f"needs {lead}")
        bi, ti = _to_3d(mask, two_d).nonzero(as_tuple=True)

    plan = Plan(z=z3, two_d=two_d, bi=bi, ti=ti, all_rows=mask is None, targets=[],
                kind=effective_kind(kind, float(beta)), beta=float(beta),
                temperature=float(temperature), chunk=chunk,
                log_floor=math.log(tail_floor) if tail_floor > 0 else -math.inf,
                cd=torch.float32, stats=stats, auto_chunk=chunk_size is None)
    dense_dtypes = [z]
    parsed = []
    for k, teacher in enumerate(teachers):
        name = teacher_arg if len(teachers) == 1 and teacher_arg == "teacher" \
            else f"{teacher_arg}[{k}]"
        parsed.append(_parse_teacher(teacher, name, z, two_d, plan))
        if isinstance(parsed[-1], Dense):
            dense_dtypes.append(parsed[-1].x)
        else:
            dense_dtypes.append(parsed[-1].logp)
    plan.cd = compute_dtype(*dense_dtypes)
    for t in parsed:
        if isinstance(t, Sparse):
            t.logp = t.logp.to(plan.cd)
            t.log_tail = None if t.log_tail is None else t.log_tail.to(plan.cd)
    if mixture_weights is None:
        plan.targets = parsed
    else:
        plan.targets = [_mixture(parsed, mixture_weights.to(plan.cd), teacher_arg)]
    all_dense = all(isinstance(t, Dense) for t in plan.targets)
    plan.fused = fused_policy.use_fused(all_dense, plan.M * V * (1 + len(plan.targets)))
    if plan.auto_chunk:
        plan.chunk = auto_chunk(V, len(plan.targets), z, plan.fused)
    return plan


# ----------------------------------------------------------------------------- chunk budget
@functools.lru_cache(maxsize=1)
def _l2_bytes_per_core() -> int:
    """The CPU's per-core L2 cache (Linux sysfs), 1 MiB where it cannot be read."""
    base = "/sys/devices/system/cpu/cpu0/cache"
    try:
        for idx in sorted(os.listdir(base)):
            with open(os.path.join(base, idx, "level")) as f:
                if f.read().strip() != "2":
                    continue
            with open(os.path.join(base, idx, "size")) as f:
                size = f.read().strip().upper()
            mult = {"K": 1 << 10, "M": 1 << 20}.get(size[-1:], 1)
            return int(size.rstrip("KM")) * mult
    except (OSError, ValueError):
        pass
    return 1 << 20


def _device_bytes(device: torch.device) -> int:
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).total_memory
    return 16 << 30  # other accelerators: assume a 16 GiB device


def auto_chunk(V: int, J: int, z: torch.Tensor, fused: bool) -> int:
    """Tokens per chunk from a memory budget (docs/performance.md, "chunk size").

    CPU op-by-op: each op of the chunk loop is a pass over [chunk, V] fp32 temporaries, so
    two of them should fit in the L2 caches of the threads that run it (per-core L2 ×
    intra-op threads). CPU fused: the compiled loop keeps at most one or two [chunk, V]
    fp32 buffers (inductor materialises log q where many loops read it), so a chunk's inputs
    ((1 + J) rows of V logits) stay within 4 × that L2 (≥ 8 MiB): those buffers and the
    gathered rows of a masked call stay a few MiB. Accelerators: 1/2048 of device memory per
    temporary (op-by-op, within [8, 128] MiB), 1/128 of it for the fused kernel's inputs.
    """
    if z.device.type == "cpu":
        l2 = _l2_bytes_per_core() * max(1, torch.get_num_threads())
        if fused:
            budget, per_row = max(8 << 20, 4 * l2), (1 + J) * V * z.element_size()
        else:
            budget, per_row = l2, 2 * V * 4
    else:
        mem = _device_bytes(z.device)
        if fused:
            budget, per_row = mem // 128, (1 + J) * V * z.element_size()
        else:
            budget, per_row = min(max(mem // 2048, 8 << 20), 128 << 20), V * 4
    return max(1, budget // per_row)


def _parse_teacher(teacher, name, z, two_d, plan):
    if isinstance(teacher, TopKLogprobs):
        if plan.temperature != 1.0:
            raise ValueRangeError(
                f"{name} is a top-k teacher, which only allows temperature=1 (got "
                f"{plan.temperature}): its log-probs were normalised over the full vocabulary by "
                f"the server, and the mass outside the top-k cannot be re-tempered here; ask the "
                f"server to apply the temperature instead")
        return _parse_sparse(teacher, name, z, two_d, plan)
    if not isinstance(teacher, torch.Tensor) or not teacher.is_floating_point():
        raise ShapeError(f"{name} must be a floating tensor of shape {_shape(z)} or a "
                         f"TopKLogprobs, got {type(teacher).__name__}")
    if tuple(teacher.shape) != tuple(z.shape):
        what = "vocabulary" if teacher.shape[:-1] == z.shape[:-1] else "shape"
        raise ShapeError(f"{name} has shape {_shape(teacher)} but student_logits has "
                         f"{_shape(z)}: the {what} must match ([B, T, V] or [N, V])")
    # p = teacher is a fixed target: no gradient ever flows into it.
    return Dense(_to_3d(teacher.detach(), two_d))


def _parse_sparse(t: TopKLogprobs, name, z, two_d, plan) -> Sparse:
    V, lead = z.shape[-1], tuple(z.shape[:-1])
    ids, lp, tail = t.ids, t.logprobs, t.tail_mass
    if not isinstance(ids, torch.Tensor) or ids.is_floating_point() or ids.dtype == torch.bool:
        raise ShapeError(f"{name}.ids must be an integer tensor, got "
                         f"{getattr(ids, 'dtype', type(ids).__name__)}")
    if ids.dim() != len(lead) + 1 or tuple(ids.shape[:-1]) != lead or ids.shape[-1] < 1:
        raise ShapeError(f"{name}.ids has shape {_shape(ids)}, expected {lead + ('k',)} for "
                         f"student_logits {_shape(z)}")
    k = ids.shape[-1]
    if k > V:
        raise ShapeError(f"{name}.ids has k={k} ids per position but the vocabulary has V={V}")
    if not isinstance(lp, torch.Tensor) or not lp.is_floating_point() or lp.shape != ids.shape:
        raise ShapeError(f"{name}.logprobs must be a floating tensor of shape {_shape(ids)} "
                         f"(like ids), got {getattr(lp, 'shape', type(lp).__name__)}")
    if tail is not None and (not isinstance(tail, torch.Tensor) or tuple(tail.shape) != lead):
        raise ShapeError(f"{name}.tail_mass must have shape {lead} or be None, got "
                         f"{getattr(tail, 'shape', type(tail).__name__)}")
    bi, ti = plan.bi, plan.ti
    ids_m = _to_3d(ids, two_d)[bi, ti].long()  # [M, k]
    cd = compute_dtype(lp, z)
    lp_m = _to_3d(lp.detach(), two_d)[bi, ti].to(cd)  # [M, k]
    if ids_m.numel():
        lo, hi = int(ids_m.min()), int(ids_m.max())
        if lo < 0 or hi >= V:
            raise ValueRangeError(f"{name}.ids must lie in [0, {V}) (student vocabulary), got "
                                  f"values in [{lo}, {hi}]")
        srt = ids_m.sort(-1).values
        if k > 1 and bool((srt[:, 1:] == srt[:, :-1]).any()):
            raise ValueRangeError(f"{name}.ids repeat an id within a position; top-k ids must "
                                  f"be distinct")
        if bool(torch.isnan(lp_m).any() | (lp_m == math.inf).any()):
            raise ValueRangeError(f"{name}.logprobs contain NaN or +inf (-inf = zero "
                                  f"probability is allowed)")
    lse = torch.logsumexp(lp_m, -1)  # [M] log Σ_topk p
    if lse.numel() and float(lse.max()) > math.log1p(SPARSE_TOL):
        raise ValueRangeError(f"{name}.logprobs sum to {float(lse.max().exp()):.6g} > 1 at some "
                              f"position: they must be log-probs of the full distribution")
    if k == V:  # every id is present: the tail bucket is empty (exactly like dense)
        return Sparse(ids_m, lp_m, None)
    if tail is None:
        mass = -torch.expm1(lse)  # 1 - Σ p, stable when Σ p is close to 1
    else:
        mass = _to_3d(tail.detach(), two_d)[bi, ti].to(cd)
        if mass.numel():
            if not bool(torch.isfinite(mass).all()):
                raise ValueRangeError(f"{name}.tail_mass contains NaN or inf")
            total = mass + lse.exp()
            if float(mass.min()) < -SPARSE_TOL or float((total - 1).abs().max()) > SPARSE_TOL:
                raise ValueRangeError(
                    f"{name}.tail_mass must be >= 0 and tail + Σ exp(logprobs) must be 1 "
                    f"(±{SPARSE_TOL}); got tail in [{float(mass.min()):.3g}, "
                    f"{float(mass.max()):.3g}] and totals up to {float(total.max()):.6g}")
    # Rounding can make the tail slightly negative or exactly 0: floor it (counted).
    floor = math.exp(plan.log_floor)
    if plan.stats is not None:
        key = "count/divergence_teacher_tail_floored"
        plan.stats[key] = plan.stats.get(key, 0) + int((mass < floor).sum())
    log_tail = mass.clamp_min(floor).log() if floor > 0 else mass.clamp_min(0).log()
    return Sparse(ids_m, lp_m, log_tail)


def _mixture(parts, weights_m, teacher_arg) -> Mixture:
    if all(isinstance(p, Dense) for p in parts):
        pass
    elif all(isinstance(p, Sparse) for p in parts):
        first = parts[0]
        for p in parts[1:]:
            same_tail = (p.log_tail is None) == (first.log_tail is None)
            if not same_tail or p.ids.shape != first.ids.shape or not torch.equal(p.ids, first.ids):
                raise ConfigError(
                    f"target='mixture' with top-k {teacher_arg} needs every teacher to carry "
                    f"the same ids at every position (the mass of an id outside a teacher's "
                    f"top-k is unknown, so Σ_k w_k p_k is undefined there); use target='sum' "
                    f"or dense teachers")
    else:
        raise ConfigError(f"target='mixture' cannot mix dense and top-k {teacher_arg}; use "
                          f"target='sum' or give all teachers in the same form")
    return Mixture(parts, weights_m.log())
