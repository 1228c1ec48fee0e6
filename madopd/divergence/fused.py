"""Private: the fused per-chunk kernel for dense teachers, its compile policy and counters.

Conventions: p = teacher, q = student, a = log p, b = log q, z = student logits, c = the
per-row, per-teacher coefficients of the combined loss (Eq. 8 weights × reduction weights).

One call of :func:`fused_dense` reads a block of student rows [n, V] and the J dense teachers'
rows once each and returns the per-row values [n, J] plus (optionally) writes
Σ_j c_j ∂D_j/∂z into ``out`` [n, V]. Written as plain torch ops, it is what ``torch.compile``
turns into one fused loop nest (C++/OpenMP on CPU, Triton on GPU): every [n, V] intermediate
(log-probs, probabilities, log ratios) lives in registers, so memory traffic is the inputs
read once and the gradient written once. The gradient formulas use Σ_v p_v = 1 so each kind
needs at most two row reductions besides the log-softmax:

* fkl  ∂/∂z = q - p                                  (no extra reduction: Σ_v -p_v = -1)
* rkl  ∂/∂z = q (log(q/p) - KL(q‖p))                  (S = Σ q g = KL + 1)
* jsd  ∂/∂z = (1-β) (t_q - q Σ t_q), t_q = q log(q/m)   (njsd: the same / β instead of (1-β))

Which path ran is never silent: :data:`RUNS` counts every chunk loop by path, ``stats``
(when the caller passes a dict) gets the same counts, and a compile failure is counted,
warned about once, and either raised or answered by the op-by-op path, as the policy says.
"""

from __future__ import annotations

import math
import os
import warnings
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass, field, replace

import torch

from madopd.divergence import cpp as _cpp
from madopd.errors import ConfigError

MODES = ("auto", "compiled", "eager")
ON_ERROR = ("fallback", "raise")
CPU_KERNELS = ("cpp", "inductor")
# auto compiles only calls that read at least this many logits (student + teachers): below it
# a first compile (~5-20 s per kind, measured loaded) costs more than it can save in a run,
# and the tiny-model tests and demos stay compile-free. 2^24 = 16.8M logits (64 MiB fp32),
# e.g. 2,048 tokens x 32,000 vocab with one teacher is 131M.
DEFAULT_MIN_LOGITS = 1 << 24

# chunk loops per path: "compiled" (a fused kernel: "cpp" or inductor's), "eager",
# "compile_failed"; and "cpp" / "cpp_failed" (the C++ row kernel ran / failed to build and
# inductor's kernel ran instead)
RUNS: Counter = Counter()


@dataclass(frozen=True)
class KernelPolicy:
    """How the divergences run their per-chunk math (see docs/performance.md)."""

    mode: str = field(default="auto", metadata={
        "help": "'auto': the torch.compile'd fused kernel for dense teachers when a call reads "
                ">= min_logits logits, op-by-op otherwise; 'compiled': always the fused kernel "
                "for dense teachers; 'eager': always op-by-op (no compiler needed). Top-k and "
                "mixture targets always run op-by-op."})
    min_logits: int = field(default=DEFAULT_MIN_LOGITS, metadata={
        "help": "auto mode: the smallest call (rows x V x (1 + teachers)) worth compiling"})
    on_compile_error: str = field(default="fallback", metadata={
        "help": "'fallback': run op-by-op, count 'compile_failed' and warn once; 'raise': a "
                "ConfigError naming the compiler's error"})
    cpu_kernel: str = field(default="cpp", metadata={
        "help": "the fused kernel on CPU with float32 compute: 'cpp', the hand-written row "
                "kernel (divergence/cpp.py, built with inductor's C++ toolchain; if it fails to "
                "build, counted as 'cpp_failed', warned once, and inductor's kernel runs), or "
                "'inductor', torch.compile of fused_dense. float64 compute and accelerators "
                "always use torch.compile"})

    def __post_init__(self):
        if self.mode not in MODES:
            raise ConfigError(f"KernelPolicy.mode must be one of {MODES}, got {self.mode!r}")
        if self.on_compile_error not in ON_ERROR:
            raise ConfigError(f"KernelPolicy.on_compile_error must be one of {ON_ERROR}, got "
                              f"{self.on_compile_error!r}")
        if self.cpu_kernel not in CPU_KERNELS:
            raise ConfigError(f"KernelPolicy.cpu_kernel must be one of {CPU_KERNELS}, got "
                              f"{self.cpu_kernel!r}")
        if isinstance(self.min_logits, bool) or not isinstance(self.min_logits, int) \
                or self.min_logits < 0:
            raise ConfigError(f"KernelPolicy.min_logits must be an int >= 0, got "
                              f"{self.min_logits!r}")


def _policy_from_env() -> KernelPolicy:
    mode = os.environ.get("MADOPD_DIVERGENCE_KERNEL", "auto")
    try:
        return KernelPolicy(mode=mode)
    except ConfigError as e:
        raise ConfigError(f"environment variable MADOPD_DIVERGENCE_KERNEL: {e}") from None


_POLICY = _policy_from_env()


def get_policy() -> KernelPolicy:
    return _POLICY


def set_policy(policy: KernelPolicy | None = None, **changes) -> KernelPolicy:
    """Set the process-wide policy (a KernelPolicy, or field changes); returns the old one."""
    global _POLICY
    old = _POLICY
    new = policy if policy is not None else replace(_POLICY, **changes)
    if not isinstance(new, KernelPolicy):
        raise ConfigError(f"policy must be a KernelPolicy, got {type(new).__name__}")
    _POLICY = new
    return old


@contextmanager
def policy(**changes):
    """``with kernel_policy(mode="eager"): ...`` -- a temporary policy."""
    old = set_policy(**changes)
    try:
        yield _POLICY
    finally:
        set_policy(old)


# ----------------------------------------------------------------------------- math
def neg_logaddexp(u: torch.Tensor, c: float) -> torch.Tensor:
    """-log(e^u + e^c) for a tensor u (±inf allowed) and a finite constant c."""
    m = u.clamp_min(c)
    return -(m + torch.log1p(torch.exp(-(u - c).abs())))


def jsd_log_ratios(beta: float, a, b, p, q):
    """(log(p/m), log(q/m)) with m = βp + (1-β)q, exact where p = 0 or q = 0.

    log(q/m) = -log(β e^d + 1-β), log(p/m) = -log(β + (1-β) e^-d), d = a - b. The small
    one (q side as β → 0, p side as β → 1) is computed directly with log1p so normalized JSD
    keeps full precision near the endpoints, the other as d ± it -- except where that is
    ∞ - ∞: at q = 0, m = βp and log(p/m) = -log β; at p = 0, log(q/m) = -log(1-β).
    """
    lb, l1b = math.log(beta), math.log1p(-beta)
    d = a - b
    if beta <= 0.5:
        lq = neg_logaddexp(d + lb, l1b)
        lp = torch.where(q > 0, d + lq, -lb)
    else:
        lp = neg_logaddexp(l1b - d, lb)
        lq = torch.where(p > 0, lp - d, -l1b)
    return lp, lq


def _logp(x: torch.Tensor, inv_tau: float, cd: torch.dtype):
    """(log_softmax(x / τ) [n, V], logsumexp [n]); the lse is NaN exactly for rows with NaN,
    +inf or all -inf (the caller reports those)."""
    x = x.to(cd) * inv_tau
    m = x.amax(-1, keepdim=True)
    lse = m + (x - m).exp().sum(-1, keepdim=True).log()
    return x - lse, lse.squeeze(-1)


def fused_dense(z, teachers, coef, out, *, kind: str, beta: float, inv_tau: float,
                cd: torch.dtype):
    """Values [n, J] and bad-row flags [n, 1 + J] of J dense teachers on n student rows.

    z [n, V] student logits (any float dtype: upcast element by element, never copied);
    teachers: J tensors [n, V]; coef [n, J] (None: no gradient); out [n, V] receives
    Σ_j coef_j ∂D_j/∂z (already divided by τ) in its own dtype. Pure torch: runs as is, or
    compiled. 0·log 0 = 0 everywhere; an infinite value (fkl with q = 0 < p, rkl with
    p = 0 < q) stays +inf.
    """
    b, lz = _logp(z, inv_tau, cd)
    q = b.exp()
    bad, vals, grad = [torch.isnan(lz)], [], None
    for j, t in enumerate(teachers):
        a, lt = _logp(t, inv_tau, cd)
        p = a.exp()
        bad.append(torch.isnan(lt))
        if kind == "fkl":
            v = torch.where(p > 0, p * (a - b), 0.0).sum(-1)
            g = q - p
        elif kind == "rkl":
            v = torch.where(q > 0, q * (b - a), 0.0).sum(-1)
            g = torch.where(q > 0, q * (b - a - v[:, None]), 0.0)
        else:
            lp, lq = jsd_log_ratios(beta, a, b, p, q)
            sp = torch.where(p > 0, p * lp, 0.0).sum(-1)
            tq = torch.where(q > 0, q * lq, 0.0)
            sq = tq.sum(-1)
            if kind == "jsd":
                v = beta * sp + (1 - beta) * sq
                g = (tq - q * sq[:, None]) * (1 - beta)
            else:  # njsd = JSD_β / (β(1-β))
                v = sp / (1 - beta) + sq / beta
                g = (tq - q * sq[:, None]) / beta
        vals.append(v)
        if coef is not None:
            g = g * coef[:, j:j + 1]
            grad = g if grad is None else grad + g
    if coef is not None:
        out.copy_(grad * inv_tau)
    return torch.stack(vals, -1), torch.stack(bad, -1)


# ----------------------------------------------------------------------------- compile
def _compile(fn):
    """One compile serves every row count and vocabulary (dynamic shapes); fullgraph makes a
    graph break an error (counted by the policy) rather than a silently slower kernel."""
    return torch.compile(fn, dynamic=True, fullgraph=True)


_COMPILED: dict = {}
_FAILED: dict = {}


def compiled_kernel(kind, beta, inv_tau, cd, n_teachers, with_grad, device_type, dtypes=None,
                    plan=None):
    """The fused kernel for one configuration (cached), or raises: the C++ row kernel when
    the policy and ``dtypes`` = (student dtype, teacher dtypes) allow it, else torch.compile'd
    :func:`fused_dense`. Returns (fn, key, is_cpp)."""
    if dtypes is not None and _POLICY.cpu_kernel == "cpp" and _cpp.supported(
            cd, dtypes[0], dtypes[1], device_type):
        ckey = ("cpp", kind, beta, inv_tau, n_teachers, with_grad, dtypes[0], dtypes[1][0])
        fn = _COMPILED.get(ckey)
        if fn is None and ckey not in _FAILED:
            try:
                fn = _cpp.build(kind, beta, inv_tau, n_teachers, with_grad, dtypes[0],
                                dtypes[1][0])
                _COMPILED[ckey] = fn
            except Exception as err:  # noqa: BLE001 -- compiler failures have many types
                _FAILED[ckey] = err
                if _POLICY.on_compile_error == "raise":
                    raise
                _warn_once(ckey, f"madopd.divergence: the C++ row kernel failed to build "
                           f"({type(err).__name__}); inductor's fused kernel runs instead "
                           f"(counted as kernel 'cpp_failed')")
        if fn is not None:
            return fn, ckey, True
        if _POLICY.on_compile_error == "raise":  # an earlier failure, policy changed since
            raise _FAILED[ckey]
        if plan is not None:
            count(plan, "cpp_failed")
    fn, key = _inductor_kernel(kind, beta, inv_tau, cd, n_teachers, with_grad, device_type)
    return fn, key, False


def _inductor_kernel(kind, beta, inv_tau, cd, n_teachers, with_grad, device_type):
    key = (kind, beta, inv_tau, cd, n_teachers, with_grad, device_type)
    if key in _FAILED:
        raise _FAILED[key]
    fn = _COMPILED.get(key)
    if fn is None:
        def kernel(z, teachers, coef, out):
            return fused_dense(z, teachers, coef, out, kind=kind, beta=beta, inv_tau=inv_tau,
                               cd=cd)
        fn = _compile(kernel)
        _COMPILED[key] = fn
    return fn, key


def mark_failed(key, err: Exception) -> None:
    _FAILED[key] = err
    _COMPILED.pop(key, None)


def use_fused(all_dense: bool, n_logits: int) -> bool:
    """Whether a chunk loop should try the compiled fused kernel: only when every target is a
    dense teacher (``plan.Dense``; the caller says so, so this module never imports the plan)."""
    pol = _POLICY
    if pol.mode == "eager" or not all_dense:
        return False
    return pol.mode == "compiled" or n_logits >= pol.min_logits


def count(plan, what: str, n: int = 1) -> None:
    RUNS[what] += n
    if plan.stats is not None:
        key = f"count/divergence_kernel_{what}"
        plan.stats[key] = plan.stats.get(key, 0) + n


_WARNED: set = set()


def handle_compile_error(plan, key, err: Exception) -> None:
    """Policy on a compiler failure: raise, or count + warn once and let eager run."""
    mark_failed(key, err)
    if _POLICY.on_compile_error == "raise":
        raise ConfigError(f"torch.compile of the fused divergence kernel failed ({type(err).__name__}: "
                          f"{str(err).splitlines()[0] if str(err) else ''}); set "
                          f"KernelPolicy(on_compile_error='fallback') or mode='eager'") from err
    count(plan, "compile_failed")
    _warn_once(key, f"madopd.divergence: torch.compile failed ({type(err).__name__}); the "
               f"op-by-op path runs instead (counted as kernel 'compile_failed')")


def _warn_once(key, msg: str) -> None:
    if key not in _WARNED:
        _WARNED.add(key)
        warnings.warn(msg, RuntimeWarning, stacklevel=4)


def reset() -> None:
    """Forget compiled kernels, recorded failures and warnings (tests, policy changes)."""
    _COMPILED.clear()
    _FAILED.clear()
    _WARNED.clear()
