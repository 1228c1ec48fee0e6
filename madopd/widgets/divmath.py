"""Small float64 divergence math on plain lists (Python twin of ``widgets/divmath.js``).

Why not ``madopd.divergence``? The widgets work on *payloads* (rounded top-k lists already sent to
the browser), and the static renderer must compute exactly what the JS computes from the same
payload. ``madopd.divergence`` stays the contract: ``tests/widgets/test_divmath.py`` checks this
module against it, and the playground payload carries reference values computed by it.

Conventions (as in madopd.divergence): p = teacher, q = student;
FKL = KL(p‖q), RKL = KL(q‖p), JSD_β = β·KL(p‖m) + (1−β)·KL(q‖m) with m = βp + (1−β)q,
NJSD_β = JSD_β / (β(1−β)) (= FKL at β = 0, RKL at β = 1). Temperature T divides both logits.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

TINY = 1e-30  # floor inside log of a *denominator*: a zero-mass bucket gives a large finite value
KINDS = ("fkl", "rkl", "jsd", "njsd")


def log_softmax(z: Sequence[float], temperature: float = 1.0) -> list[float]:
    u = [x / temperature for x in z]
    m = max(u)
    lse = m + math.log(sum(math.exp(x - m) for x in u))
    return [x - lse for x in u]


def softmax(z: Sequence[float], temperature: float = 1.0) -> list[float]:
    return [math.exp(x) for x in log_softmax(z, temperature)]


def xlog_ratio(x: float, y: float) -> float:
    """x·log(x/y) with 0·log(0/y) = 0 and y floored at TINY."""
    if x <= 0.0:
        return 0.0
    return x * (math.log(x) - math.log(max(y, TINY)))


def contributions(p: Sequence[float], q: Sequence[float], beta: float) -> dict[str, list[float]]:
    """Per-outcome terms whose sums are the divergences (the lens's 'contribution' column)."""
    _check_beta(beta)
    out: dict[str, list[float]] = {k: [] for k in KINDS}
    for pi, qi in zip(p, q):
        out["fkl"].append(xlog_ratio(pi, qi))
        out["rkl"].append(xlog_ratio(qi, pi))
        if 0.0 < beta < 1.0:
            mi = beta * pi + (1.0 - beta) * qi
            j = beta * xlog_ratio(pi, mi) + (1.0 - beta) * xlog_ratio(qi, mi)
            out["jsd"].append(j)
            out["njsd"].append(j / (beta * (1.0 - beta)))
        else:  # JSD_0 = JSD_1 = 0; the normalised family takes its limits
            out["jsd"].append(0.0)
            out["njsd"].append(out["fkl"][-1] if beta == 0.0 else out["rkl"][-1])
    return out


def divergences(p: Sequence[float], q: Sequence[float], beta: float) -> dict[str, float]:
    return {k: sum(v) for k, v in contributions(p, q, beta).items()}


def dense(teacher_logits: Sequence[float], student_logits: Sequence[float], *,
          temperature: float = 1.0, beta: float = 0.5) -> dict:
    """Values and analytic gradients d D / d student_logits for one position.

    With u = z/T and q = softmax(u): dFKL/du = q − p; dRKL/du_j = q_j(log q_j/p_j − RKL);
    dJSD/du_j = (1−β) q_j (log q_j/m_j − KL(q‖m)) (from dJSD/dq_i = (1−β) log(q_i/m_i));
    each times 1/T for the gradient w.r.t. z (paper Lemma 1 bounds the JSD one by 2 in ∞-norm).
    """
    _check_beta(beta)
    p = softmax(teacher_logits, temperature)
    q = softmax(student_logits, temperature)
    vals = divergences(p, q, beta)
    inv_t = 1.0 / temperature
    g_fkl = [(qi - pi) * inv_t for pi, qi in zip(p, q)]
    g_rkl = [qi * (math.log(qi) - math.log(max(pi, TINY)) - vals["rkl"]) * inv_t
             for pi, qi in zip(p, q)]
    if 0.0 < beta < 1.0:
        m = [beta * pi + (1.0 - beta) * qi for pi, qi in zip(p, q)]
        kl_qm = sum(xlog_ratio(qi, mi) for qi, mi in zip(q, m))
        g_jsd = [(1.0 - beta) * qi * (math.log(qi) - math.log(mi) - kl_qm) * inv_t
                 for qi, mi in zip(q, m)]
        g_njsd = [g / (beta * (1.0 - beta)) for g in g_jsd]
    else:
        g_jsd = [0.0] * len(q)
        g_njsd = g_fkl if beta == 0.0 else g_rkl
    grads = {"fkl": g_fkl, "rkl": g_rkl, "jsd": g_jsd, "njsd": g_njsd}
    return {"p": p, "q": q, "values": vals, "grads": grads,
            "grad_inf": {k: max(abs(g) for g in v) for k, v in grads.items()}}


def buckets(student_lp: Sequence[float | None], teacher_lp: Sequence[float | None]
            ) -> tuple[list[int], list[float], list[float]]:
    """Coarse-grain two partial (top-k) distributions onto a common support.

    Candidates known on *both* sides stay separate outcomes; everything else (ids in only one
    top-k, and both tails) is merged into one "rest" bucket of mass 1 − Σ known, floored at 0.
    Merging outcomes can only lower a divergence (data-processing inequality), so these values
    are lower bounds of the dense ones and equal them when both sides are complete.
    Returns (indices of the known candidates, P [n+1], Q [n+1]) with the rest bucket last.
    """
    idx = [i for i, (s, t) in enumerate(zip(student_lp, teacher_lp))
           if s is not None and t is not None]
    p = [math.exp(teacher_lp[i]) for i in idx]
    q = [math.exp(student_lp[i]) for i in idx]
    p.append(max(0.0, 1.0 - sum(p)))
    q.append(max(0.0, 1.0 - sum(q)))
    return idx, p, q


def _check_beta(beta: float) -> None:
    if not 0.0 <= beta <= 1.0:
        from madopd.errors import ValueRangeError

        raise ValueRangeError(f"beta must be in [0, 1], got {beta}")


def confidence_weights(conf: Sequence[float | None], tau: float,
                       policy: str = "uniform") -> list[float] | None:
    """softmax(c/100/τ) over teachers (paper Eqs. 6-7) with a missing-tag policy.

    "uniform": uniform weights when any tag is missing; "drop_teacher": missing teachers get 0
    (uniform when all are missing); "skip_sample": None (the sample is skipped). Same policies
    as ``madopd.weighting.weights_from_confidences``. Twin of divmath.js:confidenceWeights; checked
    against madopd.weighting in tests.
    """
    if tau <= 0:
        from madopd.errors import ValueRangeError

        raise ValueRangeError(f"tau must be > 0, got {tau}")
    K = len(conf)
    missing = [c is None for c in conf]
    if any(missing):
        if policy == "uniform" or all(missing) and policy == "drop_teacher":
            return [1.0 / K] * K
        if policy == "skip_sample":
            return None
    z = [-math.inf if m else c / 100.0 / tau for c, m in zip(conf, missing)]
    top = max(z)
    e = [0.0 if x == -math.inf else math.exp(x - top) for x in z]
    s = sum(e)
    return [x / s for x in e]


def effective_teachers(w: Sequence[float]) -> float:
    """n_eff = 1 / Σ w² (1 = one teacher dominates, K = uniform)."""
    return 1.0 / sum(x * x for x in w)
