"""Intervals for the real world's table: a bootstrap over held-out items x training seeds.

Every row of the real world is evaluated on the same held-out items with the same seeds, so a
result is a grid ``values[seed][item]`` per row and metric. Two sources of variation matter:
which items were held out (16 prompts) and which training seed ran (rollout sampling and the
order of the training states). ``bootstrap_ci`` resamples both, hierarchically: draw S seeds
with replacement, then n items with replacement (the same item draw for every seed of a
replicate, because a seed's items are the same prompts), and take the mean of the drawn cells.
The percentile interval of those means is the 95 % interval reported; it covers item and seed
sampling, not the choice of teacher, student, task or hyper-parameters. With one seed it
covers items only (stated in ``covers``).

``paired_diff_ci`` does the same on the difference of two rows, with one shared draw for both
rows (paired: the rows differ by method only), which is much tighter than comparing two
marginal intervals. An interval excluding 0 is reported as "the bootstrap interval excludes 0"
-- a percentile bootstrap, not a named significance test.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence

Grid = Sequence[Sequence[float]]  # [seeds][items]


def _check(grid: Grid, name: str) -> tuple[int, int]:
    from madopd.errors import ShapeError

    S = len(grid)
    if S == 0 or any(len(r) != len(grid[0]) for r in grid) or len(grid[0]) == 0:
        raise ShapeError(f"{name}: expected a non-empty [seeds][items] grid with equal rows, "
                         f"got row lengths {[len(r) for r in grid]}")
    return S, len(grid[0])


def _draws(S: int, n: int, reps: int, seed: int) -> list[tuple[list[int], list[int]]]:
    rng = random.Random(seed)
    return [([rng.randrange(S) for _ in range(S)], [rng.randrange(n) for _ in range(n)])
            for _ in range(reps)]


def _mean_of(grid: Grid, seeds: list[int], items: list[int]) -> float:
    return sum(grid[s][i] for s in seeds for i in items) / (len(seeds) * len(items))


def _percentiles(values: list[float], level: float) -> tuple[float, float]:
    v = sorted(values)
    lo = (1.0 - level) / 2.0
    # nearest-rank percentiles: reproducible and exact for the tests' small grids
    i_lo = max(0, math.floor(lo * len(v)))
    i_hi = min(len(v) - 1, math.ceil((1.0 - lo) * len(v)) - 1)
    return v[i_lo], v[i_hi]


def covers(n_seeds: int, n_items: int) -> str:
    if n_seeds > 1:
        return f"bootstrap over {n_items} held-out items x {n_seeds} training seeds"
    return f"bootstrap over {n_items} held-out items (one seed: training randomness not covered)"


def bootstrap_ci(grid: Grid, *, reps: int = 2000, level: float = 0.95, seed: int = 0) -> dict:
    """Mean of ``grid`` [seeds][items] and its hierarchical percentile bootstrap interval.

    -> {"mean", "lo", "hi", "level", "reps", "covers"}. Deterministic for a given ``seed``.
    """
    S, n = _check(grid, "bootstrap_ci")
    means = [_mean_of(grid, s, i) for s, i in _draws(S, n, reps, seed)]
    lo, hi = _percentiles(means, level)
    return {"mean": _mean_of(grid, list(range(S)), list(range(n))), "lo": lo, "hi": hi,
            "level": level, "reps": reps, "covers": covers(S, n)}


def paired_diff_ci(a: Grid, b: Grid, *, reps: int = 2000, level: float = 0.95,
                   seed: int = 0) -> dict:
    """Mean of a - b (same seeds, same items) with a paired hierarchical bootstrap interval."""
    S, n = _check(a, "paired_diff_ci(a)")
    if _check(b, "paired_diff_ci(b)") != (S, n):
        from madopd.errors import ShapeError

        raise ShapeError(f"paired_diff_ci: grids differ in shape: {(S, n)} vs {_check(b, 'b')}")
    diff = [[x - y for x, y in zip(ra, rb)] for ra, rb in zip(a, b)]
    out = bootstrap_ci(diff, reps=reps, level=level, seed=seed)
    out["excludes_zero"] = out["lo"] > 0 or out["hi"] < 0
    return out
