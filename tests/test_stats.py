"""The core bootstrap over items x seeds (madopd.stats) and its tests, against brute force (float64)."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from madopd.errors import ConfigError, ShapeError
from madopd.stats import (
    Outcomes,
    bootstrap_draws,
    bootstrap_p,
    bootstrap_table,
    covers,
    fmt_p,
    item_weights,
    per_seed_scores,
    permutation_min_p,
    point_estimate,
    resampled_scores,
    seed_permutation_p,
)


def naive_score(Y, strata, seed_draw, item_draw):
    """The statistic from its definition: macro over families of the mean over drawn (seed, item)."""
    fams = sorted(set(strata))
    total = 0.0
    for f in fams:
        items = [i for i in item_draw if strata[i] == f]
        total += sum(Y[s][i] for s in seed_draw for i in items) / (len(seed_draw) * len(items))
    return total / len(fams)


def enumerate_resamples(strata, S):
    """Every ordered bootstrap draw (equally likely): stratified item draws x seed draws."""
    fams = sorted(set(strata))
    per_fam = [list(itertools.product([i for i, x in enumerate(strata) if x == f],
                                      repeat=strata.count(f))) for f in fams]
    for parts in itertools.product(*per_fam):
        items = [i for p in parts for i in p]
        for seeds in itertools.product(range(S), repeat=S):
            yield list(seeds), items


def weights_of(strata, S, seeds, items):
    F = len(set(strata))
    w = np.zeros(len(strata))
    for i in items:
        w[i] += 1.0 / (F * strata.count(strata[i]))
    v = np.zeros(S)
    for s in seeds:
        v[s] += 1.0 / S
    return w, v


STRATA = ["x", "x", "y"]
YA = [[1.0, 0.0, 1.0], [0.0, 0.0, 1.0]]  # seed x item
YB = [[0.0, 1.0, 0.0], [1.0, 1.0, 0.0]]


def test_point_estimate_is_the_macro_mean_of_the_definition():
    o = Outcomes(np.array(YA), ("a", "b", "c"), tuple(STRATA))
    assert point_estimate(o) == pytest.approx(naive_score(YA, STRATA, [0, 1], [0, 1, 2]), abs=1e-15)
    # per seed: family x mean, family y mean, averaged
    assert per_seed_scores(o).tolist() == pytest.approx([(0.5 + 1.0) / 2, (0.0 + 1.0) / 2], abs=1e-15)
    assert item_weights(tuple(STRATA)).sum() == pytest.approx(1.0, abs=1e-15)


def test_resampled_scores_equal_brute_force_on_every_resample():
    Y = np.array(YA)
    exact = []
    for seeds, items in enumerate_resamples(STRATA, 2):
        w, v = weights_of(STRATA, 2, seeds, items)
        got = resampled_scores(Y, w[None], v[None])[0]
        want = naive_score(YA, STRATA, seeds, items)
        assert got == pytest.approx(want, abs=1e-14)
        exact.append(want)
    # the bootstrap mean of a linear statistic is the point estimate, exactly
    o = Outcomes(Y, ("a", "b", "c"), tuple(STRATA))
    assert sum(exact) / len(exact) == pytest.approx(point_estimate(o), abs=1e-14)


def exact_delta_distribution():
    """Δ* = A* − B*: items drawn once for both (paired), seeds independently per method."""
    out = []
    for sa, items in enumerate_resamples(STRATA, 2):
        for sb in itertools.product(range(2), repeat=2):
            out.append(naive_score(YA, STRATA, sa, items) - naive_score(YB, STRATA, list(sb), items))
    return np.array(out)


def test_monte_carlo_bootstrap_matches_the_enumerated_distribution():
    items, strata = ("a", "b", "c"), tuple(STRATA)
    tasks = {"t": {"A": Outcomes(np.array(YA), items, strata), "B": Outcomes(np.array(YB), items, strata)}}
    B = 40_000
    star, point, _ = bootstrap_draws(tasks, B=B, seed=3)
    delta = star["A"]["t"] - star["B"]["t"]
    exact = exact_delta_distribution()
    for x in np.unique(exact):  # CDF at every atom, within 4 binomial standard errors
        p = np.mean(exact <= x + 1e-12)
        assert np.mean(delta <= x + 1e-12) == pytest.approx(p, abs=4 * math.sqrt(p * (1 - p) / B) + 1e-9)
    assert point["A"]["t"] - point["B"]["t"] == pytest.approx(exact.mean(), abs=1e-14)
    res = bootstrap_table(tasks, [("A", "B")], B=B, seed=3)
    cell = res["diffs"]["A - B"]["columns"]["t"]
    k = min(np.sum(exact <= 0), np.sum(exact >= 0)) / len(exact)
    assert cell["p_bootstrap"] == pytest.approx(min(1.0, 2 * k), abs=0.02)


def test_seed_permutation_p_matches_scipy_exact():
    scipy_stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(0)
    for _ in range(5):
        a, b = rng.normal(0.5, 0.1, 5), rng.normal(0.6, 0.1, 5)
        ref = scipy_stats.permutation_test(
            (a, b), lambda x, y: np.mean(x) - np.mean(y), permutation_type="independent",
            alternative="two-sided", n_resamples=np.inf).pvalue
        assert seed_permutation_p(a, b) == pytest.approx(ref, abs=1e-12)
    # 5 + 5 runs, completely separated: the smallest two-sided p is 2 / C(10, 5)
    assert seed_permutation_p(np.arange(5.0), np.arange(5.0) + 10) == pytest.approx(2 / 252)
    assert seed_permutation_p(np.ones(3), np.ones(3)) == 1.0


def test_bootstrap_p_counts_both_tails():
    assert bootstrap_p(np.zeros(99)) == 1.0
    assert bootstrap_p(np.ones(99)) == pytest.approx(1 / 100)
    d = np.concatenate([-np.ones(10), np.ones(89)])
    assert bootstrap_p(d) == pytest.approx(21 / 100)


outcome_matrix = st.integers(1, 4).flatmap(lambda S: st.integers(2, 7).flatmap(
    lambda N: st.tuples(
        st.lists(st.lists(st.sampled_from([0.0, 0.25, 0.5, 1.0]), min_size=N, max_size=N),
                 min_size=S, max_size=S),
        st.lists(st.sampled_from("pq"), min_size=N, max_size=N))))


@settings(max_examples=40, deadline=None)
@given(outcome_matrix, st.integers(0, 2**31 - 1), st.floats(-0.5, 0.5))
def test_properties(data, seed, shift):
    Y, strata = np.array(data[0]), tuple(data[1])
    items = tuple(f"i{k}" for k in range(Y.shape[1]))
    A, A2 = Outcomes(Y, items, strata), Outcomes(Y + shift, items, strata)
    tasks = {"t": {"A": A, "A+shift": A2, "A copy": Outcomes(Y.copy(), items, strata)}}
    r1 = bootstrap_table(tasks, [("A+shift", "A"), ("A copy", "A")], B=400, seed=seed)
    r2 = bootstrap_table(tasks, [("A+shift", "A"), ("A copy", "A")], B=400, seed=seed)
    assert r1 == r2  # deterministic under the seed
    m = r1["methods"]["A"]["t"]
    assert m["lo"] <= m["hi"]
    assert m["mean"] == pytest.approx(point_estimate(A), abs=1e-12)
    assert 0.0 - 1e-12 <= m["lo"] and m["hi"] <= 1.0 + 1e-12  # outcomes in [0, 1]
    # a constant shift moves the estimate by exactly the shift (the weights sum to 1)
    d = r1["diffs"]["A+shift - A"]["columns"]["t"]
    assert d["diff"] == pytest.approx(shift, abs=1e-12)
    # identical methods on the same items: the difference of equal draws is not exactly 0 (seeds
    # are resampled per method) unless every seed row is equal; it is centred on 0 either way
    same = r1["diffs"]["A copy - A"]["columns"]["t"]
    assert same["diff"] == 0.0 and same["lo"] <= 1e-12 <= same["hi"] + 2e-12
    if np.all(Y == Y[0]):
        assert same["lo"] == pytest.approx(0.0, abs=1e-12) and same["hi"] == pytest.approx(0.0, abs=1e-12)
        assert same["p_bootstrap"] == 1.0


def test_constant_outcomes_give_a_degenerate_interval():
    o = Outcomes(np.full((3, 6), 0.25), tuple("abcdef"), tuple("ppqqqr"))
    r = bootstrap_table({"t": {"A": o}}, [], B=200)
    assert r["methods"]["A"]["t"] == {"mean": 0.25, "lo": pytest.approx(0.25), "hi": pytest.approx(0.25)}


def test_pairing_over_items_narrows_the_difference():
    """B = A with one item changed: paired item draws give a far narrower Δ interval than A's own.
    (Seed rows equal here: seeds are resampled independently per method, so seed-to-seed
    variation of independent runs does not cancel in a difference, and should not.)"""
    rng = np.random.default_rng(1)
    Y = np.tile((rng.random(200) < 0.5).astype(float), (5, 1))
    Y2 = Y.copy()
    Y2[:, 0] = 1.0 - Y2[:, 0]
    items, strata = tuple(map(str, range(200))), tuple("ab" * 100)
    r = bootstrap_table({"t": {"A": Outcomes(Y, items, strata), "B": Outcomes(Y2, items, strata)}},
                        [("A", "B")], B=2000)
    a = r["methods"]["A"]["t"]
    d = r["diffs"]["A - B"]["columns"]["t"]
    assert (d["hi"] - d["lo"]) < 0.5 * (a["hi"] - a["lo"])


def test_interval_coverage_in_a_simulated_world():
    """Items and seeds drawn from a known population: the 95 % interval covers its mean in
    roughly 95 % of worlds (loose bounds: 5 seeds, and the two-level bootstrap is approximate)."""
    rng = np.random.default_rng(7)
    truth_a = rng.normal(0, 1, 400_000)
    truth_b = rng.normal(0, 0.4, 400_000)
    true_mean = float(np.mean(1 / (1 + np.exp(-(truth_a + truth_b)))))
    covered = 0
    n_worlds = 150
    for w in range(n_worlds):
        a, b = rng.normal(0, 1, 60), rng.normal(0, 0.4, 5)
        p = 1 / (1 + np.exp(-(a[None, :] + b[:, None])))
        Y = (rng.random(p.shape) < p).astype(float)
        o = Outcomes(Y, tuple(map(str, range(60))), ("f",) * 60)
        m = bootstrap_table({"t": {"A": o}}, [], B=500, seed=w)["methods"]["A"]["t"]
        covered += m["lo"] <= true_mean <= m["hi"]
    assert 0.85 <= covered / n_worlds <= 1.0


def test_bad_inputs_are_refused():
    with pytest.raises(ShapeError):
        Outcomes(np.zeros(3), ("a", "b", "c"), ("x", "x", "x"))
    with pytest.raises(ShapeError):
        Outcomes(np.zeros((2, 3)), ("a", "b"), ("x", "x"))
    with pytest.raises(ShapeError):
        Outcomes(np.array([[0.0, np.nan]]), ("a", "b"), ("x", "x"))
    o1 = Outcomes(np.zeros((2, 2)), ("a", "b"), ("x", "x"))
    o2 = Outcomes(np.zeros((2, 2)), ("a", "c"), ("x", "x"))
    with pytest.raises(ConfigError, match="other items"):
        bootstrap_table({"t": {"A": o1, "B": o2}}, [("A", "B")], B=100)
    with pytest.raises(ConfigError, match="B must be"):
        bootstrap_table({"t": {"A": o1}}, [], B=10)


def test_ragged_values_are_one_shape_error_naming_the_argument():
    with pytest.raises(ShapeError, match=r"Outcomes.values: .*row lengths \[2, 1\]"):
        Outcomes([[1.0, 2.0], [1.0]], ("a", "b"), ("x", "x"))
    with pytest.raises(ShapeError, match="seed_permutation_p"):
        seed_permutation_p(np.array([]), np.ones(2))


def test_covers_says_items_x_seeds_and_one_seed_is_items_only():
    assert covers(3, 16) == "bootstrap over 16 evaluation items x 3 training seeds"
    assert covers(2, 16, 8, "held-out items") == ("bootstrap over 16 held-out items (resampled "
                                                   "within 8 families) x 2 training seeds")
    assert covers(1, 4) == ("bootstrap over 4 evaluation items only (one seed: training "
                            "randomness not covered)")


def test_two_items_one_seed_interval_reaches_both_values():
    # resampled means of 2 items are a, (a+b)/2 or b with probabilities 1/4, 1/2, 1/4:
    # a 95 % percentile interval must reach both ends
    o = Outcomes(np.array([[0.0, 1.0]]), ("a", "b"), ("f", "f"))
    m = bootstrap_table({"t": {"A": o}}, [], B=4000, seed=3)["methods"]["A"]["t"]
    assert m == {"mean": 0.5, "lo": 0.0, "hi": 1.0}


def test_interval_matches_the_normal_approximation_on_many_items():
    rng = np.random.default_rng(0)
    y = rng.normal(0.0, 1.0, 400)
    o = Outcomes(y[None], tuple(map(str, range(400))), ("f",) * 400)
    m = bootstrap_table({"t": {"A": o}}, [], B=4000, seed=1)["methods"]["A"]["t"]
    se = y.std(ddof=1) / 20
    assert m["lo"] < m["mean"] < m["hi"]
    assert abs((m["hi"] - m["lo"]) / (2 * 1.96 * se) - 1.0) < 0.1


def test_seed_resampling_widens_the_interval():
    y = np.array([float(i % 3) for i in range(30)])
    items, strata = tuple(map(str, range(30))), ("f",) * 30
    same = bootstrap_table({"t": {"A": Outcomes(np.stack([y, y]), items, strata)}}, [], B=1000)
    shifted = bootstrap_table({"t": {"A": Outcomes(np.stack([y, y + 2.0]), items, strata)}}, [], B=1000)
    w = [r["methods"]["A"]["t"]["hi"] - r["methods"]["A"]["t"]["lo"] for r in (same, shifted)]
    assert w[1] > 2 * w[0]


@pytest.mark.parametrize("n_a,n_b", [(1, 1), (2, 1), (2, 2), (3, 2), (5, 5)])
def test_permutation_min_p_is_what_complete_separation_gives(n_a, n_b):
    a, b = np.arange(float(n_a)) + 100.0, np.arange(float(n_b))  # every a above every b
    assert seed_permutation_p(a, b) == pytest.approx(permutation_min_p(n_a, n_b), abs=1e-15)
    assert permutation_min_p(5, 5) == pytest.approx(2 / 252) and permutation_min_p(2, 2) == pytest.approx(1 / 3)


def test_fmt_p():
    assert fmt_p(0.0123) == "p = 0.0123" and fmt_p(0.0004) == "p = 4.0e-04"
    assert fmt_p(1 / 2001, 2000) == "p < 0.0010"


# --------------------------------------------------------------------------- seed-level tests, Holm

def test_welch_p_matches_scipy_and_treats_a_single_run_as_a_constant():
    from scipy import stats as ss

    from madopd.stats import welch_p

    rng = np.random.default_rng(0)
    for na, nb in ((2, 2), (3, 5), (5, 5)):
        a, b = rng.normal(size=na), rng.normal(0.3, 2.0, size=nb)
        assert welch_p(a, b) == pytest.approx(ss.ttest_ind(a, b, equal_var=False).pvalue, rel=1e-12)
    b = rng.normal(size=4)  # one deterministic run (Base): a one-sample t-test against it
    assert welch_p([0.5], b) == pytest.approx(ss.ttest_1samp(b, 0.5).pvalue, rel=1e-12)
    assert welch_p([0.5], [0.2]) is None
    assert welch_p([0.5, 0.5], [0.2, 0.2]) == 0.0 and welch_p([0.5, 0.5], [0.5, 0.5]) == 1.0


def test_holm_against_its_definition():
    from madopd.stats import holm

    rng = np.random.default_rng(1)
    for _ in range(200):
        p = list(rng.uniform(0, 0.2, size=rng.integers(1, 8)))
        adj = holm(p)
        order = np.argsort(p, kind="stable")
        m = len(p)
        for j, i in enumerate(order):  # max over the smaller ones of min(1, (m - k) p_(k))
            want = max(min(1.0, (m - k) * p[order[k]]) for k in range(j + 1))
            assert adj[i] == pytest.approx(want, abs=1e-15)
            assert adj[i] >= p[i]
    adj = holm([0.01, None, 0.04, 0.03])
    assert adj[1] is None and [adj[0], adj[2], adj[3]] == pytest.approx([0.03, 0.06, 0.06])


def test_bootstrap_table_cells_carry_seed_tests_and_adjust_table_adds_holm():
    from madopd.stats import adjust_table, welch_p

    rng = np.random.default_rng(2)
    items, strata = tuple("abcdef"), ("x", "x", "x", "y", "y", "y")
    tasks = {t: {m: Outcomes(rng.uniform(size=(3, 6)) + shift, items, strata)
                 for m, shift in (("A", 0.0), ("B", 0.2), ("C", 0.0))} for t in ("t1", "t2")}
    bt = adjust_table(bootstrap_table(tasks, [("A", "B"), ("A", "C")], B=300, seed=1))
    cells = [c for d in bt["diffs"].values() for c in d["columns"].values()]
    assert bt["family_size"] == len(cells) == 6  # 2 comparisons x (t1, t2, overall)
    _, _, runs = bootstrap_draws(tasks, B=300, seed=1)
    c = bt["diffs"]["A - B"]["columns"]["t1"]
    assert c["p_seed"] == pytest.approx(welch_p(runs["A"]["t1"], runs["B"]["t1"]), abs=1e-15)
    assert c["runs"] == [3, 3] and c["lo_items"] <= c["diff"] <= c["hi_items"]
    from madopd.stats import holm
    assert [x["p_seed_holm"] for x in cells] == pytest.approx(holm([x["p_seed"] for x in cells]))
    assert all(x["p_permutation_seeds_holm"] >= x["p_permutation_seeds"] for x in cells)


def test_item_bootstrap_holds_runs_fixed():
    """items_only: every resample is w_bᵀ (run mean of Y); identical runs give the same draws."""
    rng = np.random.default_rng(3)
    items, strata = tuple("abcd"), ("x", "x", "y", "y")
    Y = rng.uniform(size=(3, 4))
    tasks = {"t": {"A": Outcomes(Y, items, strata)}}
    fixed, point, _ = bootstrap_draws(tasks, B=500, seed=4, items_only=True)
    one = {"t": {"A": Outcomes(np.tile(Y.mean(0), (3, 1)), items, strata)}}
    both, _, _ = bootstrap_draws(one, B=500, seed=4)  # seed resampling of equal rows changes nothing
    assert fixed["A"]["t"] == pytest.approx(both["A"]["t"], abs=1e-14)
    assert fixed["A"]["t"].mean() == pytest.approx(point["A"]["t"], abs=0.02)


# --------------------------------------------------------------------------- null simulations

def test_permutation_batch_equals_the_scalar_test():
    from madopd.stats_null import permutation_p_batch

    rng = np.random.default_rng(5)
    for na, nb in ((2, 2), (3, 2), (5, 5)):
        a, b = rng.normal(size=(20, na)), rng.normal(size=(20, nb))
        a[0] = b[0, 0]  # ties
        got = permutation_p_batch(a, b)
        want = [seed_permutation_p(x, y) for x, y in zip(a, b)]
        assert got == pytest.approx(want, abs=1e-12)


def test_batched_bootstrap_weights_are_the_stratified_bootstrap():
    from madopd.stats_null import _item_counts

    sizes = (3, 2, 4)
    W = _item_counts(sizes, 40, 250, np.random.default_rng(6))
    strata = tuple(f"f{k}" for k, n in enumerate(sizes) for _ in range(n))
    assert W.sum(axis=2) == pytest.approx(np.ones((40, 250)), abs=1e-12)
    for lo, n in zip((0, 3, 5), sizes):  # each family's draws are worth 1/F
        assert W[:, :, lo:lo + n].sum(axis=2) == pytest.approx(np.full((40, 250), 1 / 3), abs=1e-12)
    assert W.mean(axis=(0, 1)) == pytest.approx(item_weights(strata), abs=0.01)


@pytest.mark.parametrize("seed_dist,seed_sd", [("normal", 0.4), ("collapse", 0.5)])
def test_decision_tests_keep_their_level_at_the_demo_designs(seed_dist, seed_sd):
    """Must-show (issue 28): null data (identical outcome distributions) at the toy design (5 + 5
    runs, the toy item counts and families) and the real design (2 + 2, 3 + 3 runs): the tests
    that decide "significant" reject at 0.05 in <= 7 % of 2,000 simulations."""
    from madopd.stats_null import demo_designs, null_rejection_rates

    for d in demo_designs(seed_dist, seed_sd):
        r = null_rejection_rates(d, 2000, seed=11, bootstrap=False)
        assert r["seed Welch t"] <= 0.07, (d, r)
        assert r["seed permutation"] <= 0.07, (d, r)
        assert r["seed Welch t"] > 0.005 or d.runs == (2, 2), (d, r)  # a live test, not p = 1


def test_the_items_x_seeds_bootstrap_is_demoted_because_it_rejects_too_often():
    """Why the bootstrap is an interval only: at the real design (2 + 2 runs, continuous NLL)
    it rejects a true null in > 15 % of simulations (the audit measured 23.5 %)."""
    from madopd.stats_null import REAL_FAMILIES, NullDesign, null_rejection_rates

    r = null_rejection_rates(NullDesign("real NLL 2+2", (2, 2), REAL_FAMILIES, samples=0), 2000, seed=12)
    assert r["bootstrap items x seeds"] > 0.15 and r["seed Welch t"] <= 0.07
