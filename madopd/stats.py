"""Intervals and tests for a results table: a two-level bootstrap over evaluation items x seeds.

Used by both worlds (the toy world's ``toyworld/demo_stats.py``, the real world's
``realworld/world.py``); the core module knows nothing of either. Each cell is a statistic of a
matrix ``Y [S, N]`` (float64): training seed s, evaluation item i, ``Y[s, i]`` = the item's
outcome (episode success, the spec's unbiased pass@1 = c / n, an exact-match 0/1, a per-item
NLL). The cell is the macro average over families (strata) of the mean over seeds and items:

    score(Y) = (1/F) Σ_f (1/(S·n_f)) Σ_s Σ_{i ∈ f} Y[s, i]

which is what ``evaluate_student`` / ``evaluate_code`` report for one seed, averaged over seeds
(with one stratum, or equal family sizes, it is the plain mean).

Two sources of variation are resampled (a two-level bootstrap):
* items, stratified by family (n_f draws with replacement inside each family), ONE draw shared
  by every method of a task: methods are compared on the same items (paired);
* seeds (S draws with replacement), independently per method: different methods' runs with the
  same seed number share nothing but that number.

A resample is a pair of weight vectors (item weights w [N], seed weights v [S]) and the statistic
is linear in Y: score* = vᵀ Y w. Its bootstrap mean equals the point estimate exactly
(E w_i = 1/(F n_f), E v_s = 1/S, independent), which the tests check by enumeration.

Tests (two-sided; both named wherever a p-value is printed: ``TEST_NAME``, ``PERM_NAME``):
* ``paired bootstrap test``: p = 2·min(#{Δ* ≤ 0}, #{Δ* ≥ 0}) + 1 over (B + 1), capped at 1 —
  the test dual to the percentile interval (p < 0.05 iff the 95 % interval excludes 0, up to
  the +1s). Items and seeds both vary under it (items only where both methods have one seed).
* ``exact permutation test over seeds``: the S_a + S_b runs of two methods are relabelled in all
  C(S_a + S_b, S_a) ways (items held fixed), statistic |mean_a − mean_b| of the per-run scores.
  Exact, needs no distributional assumption, but its smallest p is bounded below
  (``permutation_min_p``: 2/252 ≈ 0.008 with 5 + 5 runs, 1/3 with 2 + 2), so with few seeds
  it cannot reach 0.05 whatever the data.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from madopd.errors import ConfigError, ShapeError


@dataclass(frozen=True)
class Outcomes:
    """One method's per-item outcomes on one task.

    values: [S, N] float64, row s = training seed ``seeds[s]``, column i = item ``items[i]``.
    strata: [N] the family of each item (the macro average's groups).
    """

    values: np.ndarray
    items: tuple[str, ...]
    strata: tuple[str, ...]
    seeds: tuple[int, ...] = field(default=())

    def __post_init__(self):
        try:
            v = np.asarray(self.values, dtype=np.float64)
        except ValueError as e:  # ragged rows: name the argument and the row lengths
            lens = [len(r) for r in self.values] if isinstance(self.values, (list, tuple)) else "?"
            raise ShapeError(f"Outcomes.values: expected [seeds, items] with equal rows, got row "
                             f"lengths {lens}") from e
        object.__setattr__(self, "values", v)
        if v.ndim != 2:
            raise ShapeError(f"Outcomes.values: expected [seeds, items], got shape {v.shape}")
        if v.shape[1] != len(self.items) or len(self.strata) != len(self.items):
            raise ShapeError(f"Outcomes: values {v.shape} vs {len(self.items)} items / "
                             f"{len(self.strata)} strata")
        if self.seeds and len(self.seeds) != v.shape[0]:
            raise ShapeError(f"Outcomes: {v.shape[0]} rows but seeds {self.seeds}")
        if v.shape[0] < 1 or v.shape[1] < 1:
            raise ShapeError(f"Outcomes.values: needs >= 1 seed and >= 1 item, got {v.shape}")
        if not np.all(np.isfinite(v)):
            raise ShapeError("Outcomes.values: every outcome must be finite")


def bootstrap_test_name(stratified: bool = True) -> str:
    """The paired bootstrap test's name as printed under a table."""
    how = "within families" if stratified else "as one pool"
    return (f"two-sided paired bootstrap test over items x seeds (items resampled {how}, "
            "shared by both methods; seeds resampled per method)")


TEST_NAME = bootstrap_test_name()
PERM_NAME = "exact permutation test over training seeds (items fixed)"


def covers(n_seeds: int, n_items: int, n_strata: int = 1, what: str = "evaluation items") -> str:
    """What an interval of an [n_seeds, n_items] table covers, in words (one seed: items only)."""
    items = f"{n_items} {what}" + (f" (resampled within {n_strata} families)" if n_strata > 1 else "")
    if n_seeds > 1:
        return f"bootstrap over {items} x {n_seeds} training seeds"
    return f"bootstrap over {items} only (one seed: training randomness not covered)"


def item_weights(strata: tuple[str, ...]) -> np.ndarray:
    """[N] weights of the macro average: 1 / (F · n_f) for an item of family f."""
    fams, inv, counts = np.unique(np.asarray(strata, dtype=object).astype(str), return_inverse=True,
                                  return_counts=True)
    return 1.0 / (len(fams) * counts[inv].astype(np.float64))


def point_estimate(o: Outcomes) -> float:
    """score(Y): macro over families of the mean over seeds and items (float64)."""
    return float(o.values.mean(axis=0) @ item_weights(o.strata))


def per_seed_scores(o: Outcomes) -> np.ndarray:
    """[S] the macro score of each seed's run (what the per-run log line prints)."""
    return o.values @ item_weights(o.strata)


def draw_item_weights(strata: tuple[str, ...], B: int, rng: np.random.Generator) -> np.ndarray:
    """[B, N] stratified bootstrap weights: inside family f, n_f draws with replacement, each
    draw worth 1 / (F · n_f); every row sums to 1."""
    labels = np.asarray(strata, dtype=object).astype(str)
    fams = np.unique(labels)
    W = np.zeros((B, len(labels)), dtype=np.float64)
    for f in fams:
        idx = np.flatnonzero(labels == f)
        counts = rng.multinomial(len(idx), np.full(len(idx), 1.0 / len(idx)), size=B)
        W[:, idx] = counts / (len(fams) * len(idx))
    return W


def draw_seed_weights(S: int, B: int, rng: np.random.Generator) -> np.ndarray:
    """[B, S] bootstrap weights over seeds: S draws with replacement, each worth 1 / S."""
    return rng.multinomial(S, np.full(S, 1.0 / S), size=B) / S


def resampled_scores(values: np.ndarray, W: np.ndarray, V: np.ndarray) -> np.ndarray:
    """[B] score* = v_bᵀ Y w_b for each resample b (Y [S, N], W [B, N], V [B, S])."""
    return np.einsum("bs,sn,bn->b", V, values, W)


def percentile_interval(x: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    a = (1.0 - level) / 2.0
    lo, hi = np.quantile(x, [a, 1.0 - a])
    return float(lo), float(hi)


def bootstrap_p(deltas: np.ndarray) -> float:
    """Two-sided paired bootstrap test of Δ = 0: (2·min(#≤0, #≥0) + 1) / (B + 1), capped at 1."""
    B = len(deltas)
    k = min(int(np.sum(deltas <= 0)), int(np.sum(deltas >= 0)))
    return min(1.0, (2 * k + 1) / (B + 1))


def permutation_min_p(n_a: int, n_b: int) -> float:
    """The smallest p ``seed_permutation_p`` can return for n_a and n_b distinct runs: the
    observed labelling alone is the most extreme (and its mirror, when n_a == n_b)."""
    return (2 if n_a == n_b else 1) / math.comb(n_a + n_b, n_a)


def fmt_p(p: float, B: int | None = None) -> str:
    """'p = 0.0123'; with the bootstrap's B, the floor 1/(B+1) prints as 'p < 2/(B+1)'."""
    if B is not None and p <= 1.0 / (B + 1) * 1.0000001:
        return f"p < {2 / (B + 1):.4f}"
    return f"p = {p:.3g}" if p >= 0.001 else f"p = {p:.1e}"


def seed_permutation_p(a: np.ndarray, b: np.ndarray, *, max_exact: int = 200_000,
                       n_random: int = 20_000, seed: int = 0) -> float:
    """Two-sided permutation test over runs: per-run scores ``a`` [S_a] and ``b`` [S_b].

    Every relabelling of the pooled runs into groups of S_a and S_b (exactly, when there are at
    most ``max_exact`` of them; otherwise ``n_random`` random ones plus the observed one).
    Statistic |mean_a − mean_b|; ties count as at least as extreme (1e-12 slack for rounding).
    """
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    pooled = np.concatenate([a, b])
    n, na = len(pooled), len(a)
    if na < 1 or len(b) < 1:
        raise ShapeError(f"seed_permutation_p: needs runs on both sides, got {na} and {len(b)}")
    observed = abs(a.mean() - b.mean())
    total = pooled.sum()
    if math.comb(n, na) <= max_exact:
        hits = count = 0
        for idx in itertools.combinations(range(n), na):
            sa = pooled[list(idx)].sum()
            stat = abs(sa / na - (total - sa) / (n - na))
            hits += stat >= observed - 1e-12
            count += 1
        return hits / count
    rng = np.random.default_rng(seed)
    hits = 1  # the observed labelling
    for _ in range(n_random):
        perm = rng.permutation(pooled)
        hits += abs(perm[:na].mean() - perm[na:].mean()) >= observed - 1e-12
    return hits / (n_random + 1)


def _check_task(methods: dict[str, Outcomes], task: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    first = next(iter(methods.values()))
    for name, o in methods.items():
        if o.items != first.items or o.strata != first.strata:
            raise ConfigError(f"{task}: method {name!r} was evaluated on other items than "
                              f"{next(iter(methods))!r}; a paired comparison needs the same items")
    return first.items, first.strata


def bootstrap_draws(tasks: dict[str, dict[str, Outcomes]], *, B: int = 10_000, seed: int = 0,
                    ) -> tuple[dict, dict, dict]:
    """The resampled scores behind ``bootstrap_table``: (star, point, runs), each method -> column.

    star[m][col] [B] resampled scores; point[m][col] the estimate; runs[m][col] [S] per-seed
    scores. One stratified item draw per task shared by all its methods (paired); one seed draw
    per method shared by its tasks. ``overall`` (the mean over tasks) where a method has every task.
    """
    if B < 100:
        raise ConfigError(f"bootstrap: B must be >= 100, got {B}")
    rng = np.random.default_rng(seed)
    W = {t: draw_item_weights(_check_task(ms, t)[1], B, rng) for t, ms in tasks.items()}
    names = sorted({m for ms in tasks.values() for m in ms})
    V = {}
    for m in names:
        S = {ms[m].values.shape[0] for ms in tasks.values() if m in ms}
        if len(S) != 1:
            raise ConfigError(f"method {m!r} has different seed counts across tasks: {sorted(S)}")
        V[m] = draw_seed_weights(S.pop(), B, rng)
    star: dict[str, dict[str, np.ndarray]] = {m: {} for m in names}
    point: dict[str, dict[str, float]] = {m: {} for m in names}
    runs: dict[str, dict[str, np.ndarray]] = {m: {} for m in names}
    for t, ms in tasks.items():
        for m, o in ms.items():
            star[m][t] = resampled_scores(o.values, W[t], V[m])
            point[m][t] = point_estimate(o)
            runs[m][t] = per_seed_scores(o)
    for m in names:
        if len(star[m]) == len(tasks) and len(tasks) > 1:
            star[m]["overall"] = sum(star[m][t] for t in tasks) / len(tasks)
            point[m]["overall"] = sum(point[m][t] for t in tasks) / len(tasks)
            runs[m]["overall"] = sum(runs[m][t] for t in tasks) / len(tasks)
    return star, point, runs


def bootstrap_table(tasks: dict[str, dict[str, Outcomes]], comparisons: list[tuple[str, str]],
                    *, B: int = 10_000, level: float = 0.95, seed: int = 0) -> dict[str, Any]:
    """Intervals per (method, column) and per difference (columns: the tasks and ``overall``).

    tasks: task -> method -> Outcomes (every method of a task on the same items).
    comparisons: (a, b) pairs; Δ = a − b (skipped when a method is missing).
    Returns {"methods": {m: {col: {mean, lo, hi}}}, "diffs": {"a - b": {"a", "b", col: {diff, lo,
    hi, p_bootstrap, p_permutation_seeds}}}, "B", "level", "seed"}; values in the outcomes' unit.
    """
    star, point, runs = bootstrap_draws(tasks, B=B, seed=seed)
    out: dict[str, Any] = {"B": B, "level": level, "seed": seed, "methods": {}, "diffs": {}}
    for m in star:
        out["methods"][m] = {c: {"mean": point[m][c], **dict(zip(("lo", "hi"), percentile_interval(x, level)))}
                             for c, x in star[m].items()}
    for a, b in comparisons:
        if a not in star or b not in star:
            continue
        cols: dict[str, Any] = {}
        for c in star[a]:
            if c not in star[b]:
                continue
            d = star[a][c] - star[b][c]
            lo, hi = percentile_interval(d, level)
            cols[c] = {"diff": point[a][c] - point[b][c], "lo": lo, "hi": hi,
                       "p_bootstrap": bootstrap_p(d),
                       "p_permutation_seeds": seed_permutation_p(runs[a][c], runs[b][c])}
        out["diffs"][f"{a} - {b}"] = {"a": a, "b": b, "columns": cols}
    return out
