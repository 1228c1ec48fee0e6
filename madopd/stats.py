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

Tests (two-sided). The unit of replication is the training run, so the tests that decide
"significant" work on the per-run (per-seed) scores; items enter only through each run's score:
* ``seed-level Welch t-test`` (``welch_p``, primary, ``SEED_TEST_NAME``): per-run macro scores
  of a against b, Welch's t with Satterthwaite's degrees of freedom. A side with a single distinct
  run enters as a constant (right for an untrained model evaluated greedily, e.g. Base).
* ``exact permutation test over seeds`` (``seed_permutation_p``, ``PERM_NAME``): the S_a + S_b
  runs relabelled in all C(S_a + S_b, S_a) ways (items held fixed), statistic |mean_a − mean_b|.
  Exact, assumption-free, but its smallest p is bounded below (``permutation_min_p``: 2/252 ≈
  0.008 with 5 + 5 runs, 1/3 with 2 + 2), so with few seeds it cannot reach 0.05 whatever the data.
* Holm's step-down correction (``holm``) across each table's family of comparisons (every
  difference x column); "significant" means the Holm-adjusted seed-level p < alpha.
Bootstraps (descriptive, not significance tests):
* ``item bootstrap`` (``p_items``, ``lo_items``/``hi_items``): items resampled, runs FIXED — the
  uncertainty over evaluation items for these particular runs. It ignores training randomness,
  so it says nothing about a rerun with other seeds.
* ``paired bootstrap over items x seeds`` (``p_bootstrap``, the cells' and differences' intervals):
  p = 2·min(#{Δ* ≤ 0}, #{Δ* ≥ 0}) + 1 over (B + 1). Resampling S seeds with replacement sees
  (S − 1)/S of the seed variance, so as a test it rejects a true null far too often with few
  seeds (measured by ``madopd.stats_null``: docs/statistics.md); kept as an interval only.
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


TEST_NAME = bootstrap_test_name()  # the items x seeds bootstrap: an interval, not the primary test
PERM_NAME = "exact permutation test over training seeds (items fixed)"
SEED_TEST_NAME = "two-sided Welch t-test on the per-seed scores (unit = training run)"
ITEM_BOOT_NAME = "item bootstrap (items resampled, runs fixed: uncertainty over items only)"
HOLM_NAME = "Holm step-down adjustment across the table's comparisons (every difference x column)"


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


def welch_t(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Welch's t of per-run scores, batched: a [..., S_a], b [..., S_b] -> (diff, t, df) [...].

    t = (ā − b̄) / sqrt(s_a²/S_a + s_b²/S_b), df = Satterthwaite's. A side with one run enters
    as a constant (variance term 0, df from the other side alone). Both variance terms 0: t is
    ±inf for a nonzero difference and 0 for none (no randomness left to test against).
    """
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    na, nb = a.shape[-1], b.shape[-1]
    diff = a.mean(-1) - b.mean(-1)
    va = a.var(-1, ddof=1) / na if na > 1 else np.zeros(diff.shape)
    vb = b.var(-1, ddof=1) / nb if nb > 1 else np.zeros(diff.shape)
    se2 = va + vb
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.where(se2 > 0, diff / np.sqrt(se2), np.where(diff == 0, 0.0, np.sign(diff) * np.inf))
        den = (va ** 2 / (na - 1) if na > 1 else 0.0) + (vb ** 2 / (nb - 1) if nb > 1 else 0.0)
        df = np.where(den > 0, se2 ** 2 / np.where(den > 0, den, 1.0), np.inf)
    return diff, t, df


def welch_p_batch(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Two-sided Welch p, batched over leading axes (``welch_t``); NaN where both sides have one run."""
    from scipy.stats import t as student_t

    _, t, df = welch_t(a, b)
    p = np.where(np.isinf(t), 0.0, 2.0 * student_t.sf(np.abs(np.where(np.isinf(t), 0.0, t)), df))
    if np.asarray(a).shape[-1] < 2 and np.asarray(b).shape[-1] < 2:
        p = np.full(np.shape(t), np.nan)
    return np.minimum(1.0, p)


def welch_p(a, b) -> float | None:
    """The seed-level Welch t-test's two-sided p of per-run scores a [S_a] vs b [S_b] (primary);
    None with one run on each side (no variance to test against)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if len(a) < 1 or len(b) < 1:
        raise ShapeError(f"welch_p: needs runs on both sides, got {len(a)} and {len(b)}")
    p = float(welch_p_batch(a, b))
    return None if math.isnan(p) else p


def holm(pvalues) -> list[float | None]:
    """Holm's step-down adjusted p-values (None entries are skipped and stay None).

    The j-th smallest of m p-values becomes max_{i <= j} min(1, (m − i + 1)·p_(i)); rejecting
    where adjusted < alpha controls the family-wise error rate at alpha under any dependence.
    """
    idx = [i for i, p in enumerate(pvalues) if p is not None]
    out: list[float | None] = [None] * len(pvalues)
    m = len(idx)
    running = 0.0
    for rank, i in enumerate(sorted(idx, key=lambda i: pvalues[i])):
        running = max(running, min(1.0, (m - rank) * float(pvalues[i])))
        out[i] = running
    return out


def holm_adjust(cells: list[dict], keys: tuple[str, ...] = ("p_seed", "p_permutation_seeds")) -> int:
    """Add ``<key>_holm`` to every cell (one family: all ``cells``) for each p-value key; -> m,
    the family's size (cells with a p-value for the first key)."""
    for key in keys:
        adj = holm([c.get(key) for c in cells])
        for c, a in zip(cells, adj):
            c[f"{key}_holm"] = a
    return sum(c.get(keys[0]) is not None for c in cells)


def adjust_table(table: dict[str, Any]) -> dict[str, Any]:
    """Holm across one ``bootstrap_table`` result's family (every difference x column), in place:
    adds ``p_seed_holm`` / ``p_permutation_seeds_holm`` to each cell and ``family_size``."""
    cells = [c for d in table["diffs"].values() for c in d["columns"].values()]
    table["family_size"] = holm_adjust(cells)
    table["adjustment"] = HOLM_NAME
    return table


def _check_task(methods: dict[str, Outcomes], task: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    first = next(iter(methods.values()))
    for name, o in methods.items():
        if o.items != first.items or o.strata != first.strata:
            raise ConfigError(f"{task}: method {name!r} was evaluated on other items than "
                              f"{next(iter(methods))!r}; a paired comparison needs the same items")
    return first.items, first.strata


def bootstrap_draws(tasks: dict[str, dict[str, Outcomes]], *, B: int = 10_000, seed: int = 0,
                    items_only: bool = False) -> tuple[dict, dict, dict]:
    """The resampled scores behind ``bootstrap_table``: (star, point, runs), each method -> column.

    star[m][col] [B] resampled scores; point[m][col] the estimate; runs[m][col] [S] per-seed
    scores. ``items_only``: the seeds are not resampled (every run weighs 1/S: runs fixed), the
    same item draws otherwise. One stratified item draw per task shared by all its methods (paired); one seed draw
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
            # runs fixed: every run weighs 1/S, so score* = w_bᵀ (mean over runs of Y)
            star[m][t] = (W[t] @ o.values.mean(axis=0) if items_only
                          else resampled_scores(o.values, W[t], V[m]))
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
    hi (items x seeds), p_seed, t_seed, df_seed, runs, p_permutation_seeds, p_items, lo_items,
    hi_items (runs fixed), p_bootstrap (items x seeds)}}}, "B", "level", "seed"}; values in the
    outcomes' unit. Holm across the table: ``adjust_table`` (callers own the family).
    """
    star, point, runs = bootstrap_draws(tasks, B=B, seed=seed)
    fixed, _, _ = bootstrap_draws(tasks, B=B, seed=seed, items_only=True)
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
            d_items = fixed[a][c] - fixed[b][c]
            lo, hi = percentile_interval(d, level)
            lo_i, hi_i = percentile_interval(d_items, level)
            _, t, df = welch_t(runs[a][c], runs[b][c])
            cols[c] = {"diff": point[a][c] - point[b][c], "lo": lo, "hi": hi,
                       "p_seed": welch_p(runs[a][c], runs[b][c]), "t_seed": float(t),
                       "df_seed": float(df), "runs": [len(runs[a][c]), len(runs[b][c])],
                       "p_permutation_seeds": seed_permutation_p(runs[a][c], runs[b][c]),
                       "p_items": bootstrap_p(d_items), "lo_items": lo_i, "hi_items": hi_i,
                       "p_bootstrap": bootstrap_p(d)}
        out["diffs"][f"{a} - {b}"] = {"a": a, "b": b, "columns": cols}
    return out
