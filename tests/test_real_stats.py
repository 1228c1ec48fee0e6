"""The real world's bootstrap intervals (madopd.real_stats); no model needed."""

from __future__ import annotations

import random

import pytest

from madopd.errors import ShapeError
from madopd.real_stats import bootstrap_ci, covers, paired_diff_ci


def test_constant_grid_has_a_point_interval():
    ci = bootstrap_ci([[0.5] * 7, [0.5] * 7], reps=200)
    assert ci["mean"] == ci["lo"] == ci["hi"] == 0.5
    assert "7 held-out items x 2 training seeds" in ci["covers"]


def test_two_items_one_seed_interval_spans_both_values():
    # resampled means of 2 items are a, (a+b)/2 or b with probabilities 1/4, 1/2, 1/4:
    # a 95 % percentile interval must reach both ends
    ci = bootstrap_ci([[0.0, 1.0]], reps=4000, seed=3)
    assert ci["mean"] == 0.5 and ci["lo"] == 0.0 and ci["hi"] == 1.0
    assert "training randomness not covered" in ci["covers"]


def test_interval_matches_the_normal_approximation_on_a_large_grid():
    rng = random.Random(0)
    grid = [[rng.gauss(0.0, 1.0) for _ in range(400)]]
    ci = bootstrap_ci(grid, reps=2000, seed=1)
    se = (sum((x - ci["mean"]) ** 2 for x in grid[0]) / 399) ** 0.5 / 20
    assert ci["lo"] < ci["mean"] < ci["hi"]
    assert abs((ci["hi"] - ci["lo"]) / (2 * 1.96 * se) - 1.0) < 0.15


def test_seed_resampling_widens_the_interval():
    items = [float(i % 3) for i in range(30)]
    same = bootstrap_ci([items, items], reps=1000)
    shifted = bootstrap_ci([items, [x + 2.0 for x in items]], reps=1000)
    assert (shifted["hi"] - shifted["lo"]) > 2 * (same["hi"] - same["lo"])


def test_paired_difference():
    rng = random.Random(2)
    a = [[rng.random() for _ in range(16)] for _ in range(2)]
    same = paired_diff_ci(a, a, reps=300)
    assert same["mean"] == same["lo"] == same["hi"] == 0.0 and not same["excludes_zero"]
    b = [[x - 0.1 for x in row] for row in a]  # a is better by exactly 0.1 on every cell
    d = paired_diff_ci(a, b, reps=300)
    assert d["lo"] == pytest.approx(0.1) and d["hi"] == pytest.approx(0.1) and d["excludes_zero"]


def test_bad_shapes_are_one_error():
    with pytest.raises(ShapeError, match="row lengths"):
        bootstrap_ci([[1.0, 2.0], [1.0]])
    with pytest.raises(ShapeError):
        bootstrap_ci([])
    with pytest.raises(ShapeError, match="differ in shape"):
        paired_diff_ci([[1.0, 2.0]], [[1.0]])


def test_covers_wording():
    assert covers(3, 16) == "bootstrap over 16 held-out items x 3 training seeds"
