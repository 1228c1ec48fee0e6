"""Each test's error rate, measured: null simulations at the designs the demos use.

Null data: two methods with IDENTICAL outcome distributions, evaluated on the same items (paired).
Per simulation, item i of family f has a difficulty d_i ~ N(0, item_sd²) shared by both methods;
each training run r of a method draws a run effect u_r from ``seed_dist`` with scale ``seed_sd``
(what a training seed changes), and each (run, item) an interaction e_ri ~ N(0, item_seed_sd²)
(runs disagree on single items). The outcome is

    binary / sampled:  Y[r, i] = Binomial(samples, σ(d_i + u_r + e_ri)) / samples
    continuous (NLL):  Y[r, i] = d_i + u_r + e_ri

(``samples`` = 1: episode success or exact match; 4: toy-code's unbiased pass@1 = c/4). Each
run's score is the macro mean over families (``madopd.stats.item_weights``), as in the tables.

``null_rejection_rates`` returns, per test, the fraction of simulations whose two-sided p < alpha:
the seed-level Welch t-test and the exact seed permutation test (the tests that decide), and the
two bootstraps (items x seeds, and items with runs fixed), which are reported as intervals only.
Everything is vectorised over simulations with numpy (bootstraps in chunks), so 2,000 simulations
of a design take seconds. The designs and measured rates are in docs/statistics.md.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np

from madopd.errors import ConfigError
from madopd.stats import item_weights, welch_p_batch

SEED_DISTS = ("normal", "collapse", "t3")
TESTS = ("seed Welch t", "seed permutation", "bootstrap items x seeds", "item bootstrap (runs fixed)")


@dataclass(frozen=True)
class NullDesign:
    """One table design: runs per method, items per family, the outcome's kind and spreads."""

    name: str
    runs: tuple[int, int]
    family_sizes: tuple[int, ...]
    samples: int = 1  # Bernoulli draws per item outcome (0 = continuous outcome)
    seed_sd: float = 0.4  # run effect scale (logit units; nats for continuous)
    seed_dist: str = "normal"  # normal | collapse (20 % of runs shifted by -4 sd) | t3 (heavy tails)
    item_sd: float = 1.5
    item_seed_sd: float = 0.5

    def __post_init__(self):
        if min(self.runs) < 1 or sum(self.runs) < 3:
            raise ConfigError(f"NullDesign.runs: needs >= 1 run per side and >= 3 in all, got {self.runs}")
        if self.seed_dist not in SEED_DISTS:
            raise ConfigError(f"NullDesign.seed_dist: expected one of {SEED_DISTS}, got {self.seed_dist!r}")
        if self.samples < 0 or not self.family_sizes or min(self.family_sizes) < 1:
            raise ConfigError(f"NullDesign {self.name}: samples >= 0 and non-empty families needed")

    @property
    def strata(self) -> tuple[str, ...]:
        return tuple(f"f{k}" for k, n in enumerate(self.family_sizes) for _ in range(n))


TOY_TOOLS_FAMILIES = (50, 50, 50, 50, 50)  # 250 held-out episodes, five operations
TOY_CODE_FAMILIES = (31, 27, 24, 21, 19)  # 122 held-out specs (max, dst, add, sub, min)
REAL_FAMILIES = (2,) * 8  # real-calls: 16 held-out items, 2 per function family


def demo_designs(seed_dist: str = "normal", seed_sd: float = 0.4) -> list[NullDesign]:
    """The designs of the demos' tables: toy (5 + 5 runs, both tasks), real (2 + 2 and 3 + 3
    runs, exact match and the continuous reference NLL)."""
    kw = dict(seed_dist=seed_dist, seed_sd=seed_sd)
    return [
        NullDesign("toy-tools 5+5", (5, 5), TOY_TOOLS_FAMILIES, samples=1, **kw),
        NullDesign("toy-code 5+5", (5, 5), TOY_CODE_FAMILIES, samples=4, **kw),
        NullDesign("real acc 2+2", (2, 2), REAL_FAMILIES, samples=1, **kw),
        NullDesign("real NLL 2+2", (2, 2), REAL_FAMILIES, samples=0, **kw),
        NullDesign("real acc 3+3", (3, 3), REAL_FAMILIES, samples=1, **kw),
        NullDesign("real NLL 3+3", (3, 3), REAL_FAMILIES, samples=0, **kw),
    ]


def _run_effects(design: NullDesign, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    if design.seed_dist == "normal":
        return design.seed_sd * rng.standard_normal(shape)
    if design.seed_dist == "t3":  # unit variance Student t with 3 df
        return design.seed_sd * rng.standard_t(3, shape) / math.sqrt(3.0)
    # a run collapses (e.g. to one operation) with probability 0.2
    return design.seed_sd * (rng.standard_normal(shape) - 4.0 * (rng.random(shape) < 0.2))


def simulate(design: NullDesign, n_sims: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Null outcomes (Y_a [n_sims, S_a, N], Y_b [n_sims, S_b, N]): same distribution, same items."""
    N = sum(design.family_sizes)
    d = design.item_sd * rng.standard_normal((n_sims, 1, N))
    out = []
    for S in design.runs:
        z = d + _run_effects(design, (n_sims, S, 1), rng)[..., :1] \
            + design.item_seed_sd * rng.standard_normal((n_sims, S, N))
        if design.samples == 0:
            out.append(z)
        else:
            out.append(rng.binomial(design.samples, 1.0 / (1.0 + np.exp(-z))) / design.samples)
    return out[0], out[1]


def permutation_p_batch(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The exact seed permutation test (``madopd.stats.seed_permutation_p``) for a [n, S_a], b [n, S_b]."""
    na, nb = a.shape[1], b.shape[1]
    pooled = np.concatenate([a, b], axis=1)
    idx = np.zeros((math.comb(na + nb, na), na + nb))
    for row, combo in enumerate(itertools.combinations(range(na + nb), na)):
        idx[row, list(combo)] = 1.0
    sa = pooled @ idx.T  # [n, C] sum of group a under each relabelling
    total = pooled.sum(axis=1, keepdims=True)
    stat = np.abs(sa / na - (total - sa) / nb)
    observed = np.abs(a.mean(axis=1) - b.mean(axis=1))[:, None]
    return np.mean(stat >= observed - 1e-12, axis=1)


def _item_counts(sizes: tuple[int, ...], c: int, B: int, rng: np.random.Generator) -> np.ndarray:
    """[c, B, N] stratified bootstrap weights (each family's n_f draws, worth 1 / (F n_f) each)."""
    N, F = sum(sizes), len(sizes)
    starts = np.cumsum((0,) + sizes[:-1])
    draws = np.concatenate([s + rng.integers(0, n, size=(c * B, n)) for s, n in zip(starts, sizes)], axis=1)
    flat = (np.arange(c * B)[:, None] * N + draws).ravel()
    counts = np.bincount(flat, minlength=c * B * N).reshape(c, B, N).astype(np.float64)
    per_item = np.concatenate([np.full(n, 1.0 / (F * n)) for n in sizes])
    return counts * per_item


def _boot_p(delta: np.ndarray) -> np.ndarray:
    """``madopd.stats.bootstrap_p`` per row of delta [c, B]."""
    B = delta.shape[1]
    k = np.minimum((delta <= 0).sum(axis=1), (delta >= 0).sum(axis=1))
    return np.minimum(1.0, (2 * k + 1) / (B + 1))


def bootstrap_p_batch(Ya: np.ndarray, Yb: np.ndarray, sizes: tuple[int, ...], B: int,
                      rng: np.random.Generator, chunk: int = 25) -> tuple[np.ndarray, np.ndarray]:
    """(p items x seeds, p items only) per simulation: the paired bootstraps of ``bootstrap_table``."""
    p_both, p_items = [], []
    for lo in range(0, len(Ya), chunk):
        ya, yb = Ya[lo:lo + chunk], Yb[lo:lo + chunk]
        c = len(ya)
        W = _item_counts(sizes, c, B, rng)
        star = []
        for y in (ya, yb):
            S = y.shape[1]
            V = rng.multinomial(S, np.full(S, 1.0 / S), size=(c, B)) / S
            star.append(np.einsum("cbs,csb->cb", V, np.einsum("csn,cbn->csb", y, W)))
        p_both.append(_boot_p(star[0] - star[1]))
        p_items.append(_boot_p(np.einsum("cbn,cn->cb", W, ya.mean(axis=1) - yb.mean(axis=1))))
    return np.concatenate(p_both), np.concatenate(p_items)


def null_rejection_rates(design: NullDesign, n_sims: int = 2000, *, alpha: float = 0.05,
                         B: int = 400, seed: int = 0, bootstrap: bool = True) -> dict[str, float]:
    """Per test (``TESTS``): the fraction of ``n_sims`` null simulations with p < alpha.

    ``bootstrap=False`` skips the two bootstraps (the slow part). Also returns ``n_sims`` and
    ``mc_se`` (the Monte Carlo standard error of a rate of alpha) and the permutation test's
    smallest possible p for the design.
    """
    if n_sims < 1 or not 0 < alpha < 1:
        raise ConfigError(f"null_rejection_rates: n_sims >= 1 and 0 < alpha < 1, got {n_sims}, {alpha}")
    rng = np.random.default_rng(seed)
    Ya, Yb = simulate(design, n_sims, rng)
    w = item_weights(design.strata)
    ra, rb = Ya @ w, Yb @ w  # [n_sims, S] per-run macro scores
    out: dict[str, float] = {
        "seed Welch t": float(np.mean(welch_p_batch(ra, rb) < alpha)),
        "seed permutation": float(np.mean(permutation_p_batch(ra, rb) < alpha)),
    }
    if bootstrap:
        p_both, p_items = bootstrap_p_batch(Ya, Yb, design.family_sizes, B, rng)
        out["bootstrap items x seeds"] = float(np.mean(p_both < alpha))
        out["item bootstrap (runs fixed)"] = float(np.mean(p_items < alpha))
    na, nb = design.runs
    out.update(n_sims=n_sims, mc_se=math.sqrt(alpha * (1 - alpha) / n_sims),
               permutation_min_p=(2 if na == nb else 1) / math.comb(na + nb, na))
    return out


def format_rates(rows: list[tuple[NullDesign, dict[str, float]]]) -> str:
    """A plain-text table: design, then each test's rejection rate in %."""
    head = f"{'design':<16} {'seed dist':<9} " + " ".join(f"{t[:14]:>14}" for t in TESTS)
    lines = [head]
    for d, r in rows:
        lines.append(f"{d.name:<16} {d.seed_dist + ' ' + format(d.seed_sd, 'g'):<9} "
                     + " ".join(f"{100 * r[t]:13.1f}%" if t in r else f"{'-':>14}" for t in TESTS))
    return "\n".join(lines)
