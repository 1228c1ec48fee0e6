"""The real world's summary table from synthetic job results (no model needed): the core
bootstrap (madopd.stats) behind it, Base's reused seeds, the named tests, resummarize."""

from __future__ import annotations

import json

import numpy as np
import pytest

from madopd.errors import DataError
from madopd.realworld.table import BLIND_ROWS, CONTRASTS
from madopd.realworld.world import ROWS, format_real_table, resummarize, summarize_real
from madopd.stats import Outcomes, bootstrap_table, fmt_p, holm

FAMS = ["f0", "f0", "f1", "f1", "f2", "f2", "f3", "f3"]
IDS = [f"{f}-{i}" for i, f in enumerate(FAMS)]


def _results(shift: dict[str, float], seeds=(0, 1), n=8, base_reused=True):
    out = []
    for row in ROWS:
        for s in seeds:
            if (row == "Base" or row in BLIND_ROWS) and base_reused and s != seeds[0]:  # as run_real_demo does
                out.append(dict(out[-1], seed=s, reused_from_seed=seeds[0], seconds=0.0, cpu_seconds=0.0))
                continue
            out.append({"row": row, "seed": s, "accuracy": [float((i + s) % 4 == 0) for i in range(n)],
                        "ref_nll": [5.0 + shift[row] + 0.1 * i + 0.05 * s for i in range(n)],
                        "seconds": 10.0, "cpu_seconds": 15.0})
    return out


SHIFT = {"Base": 2.0, "OPD-A": 0.5, "OPD-B": 0.6, "MT-OPD": 0.4, "MAD-OPD": 0.7,
         "Teacher A (blind)": -1.0, "Teacher B (blind)": -0.9}


def test_summary_has_intervals_named_tests_and_times():
    B = 500
    summ = summarize_real(_results(SHIFT), IDS, FAMS, reps=B, strata="family")
    rows = summ["rows"]
    assert list(rows) == list(ROWS) and summ["n_strata"] == 4
    assert summ["covers"] == "bootstrap over 8 held-out items (resampled within 4 families) x 2 training seeds"
    for row, c in rows.items():
        n = c["ref_nll"]
        assert n["lo"] <= n["mean"] <= n["hi"] and c["seeds"] == [0, 1]
        assert n["mean"] == pytest.approx(5.0 + SHIFT[row] + 0.35 + (0.0 if row == "Base" or row in BLIND_ROWS else 0.025), abs=1e-12)
    assert rows["OPD-A"]["seconds"] == 20.0 and rows["OPD-A"]["cpu_seconds"] == 30.0
    assert list(summ["contrasts"]) == [f"{a} - {b}" for a, b in CONTRASTS]
    d = summ["contrasts"]["MAD-OPD - MT-OPD"]
    nll = d["ref_nll"]
    # every paired cell differs by +0.3; the seeds (worth 0.05 each) are resampled per row
    assert nll["diff"] == pytest.approx(0.3, abs=1e-12)
    assert 0.25 - 1e-12 <= nll["lo"] <= nll["hi"] <= 0.35 + 1e-12
    assert nll["p_bootstrap"] == pytest.approx(1 / (B + 1))
    assert nll["p_permutation_seeds"] == pytest.approx(1 / 3) and d["permutation_min_p"] == pytest.approx(1 / 3)
    acc = summ["contrasts"]["OPD-A - Base"]["accuracy"]
    assert acc["lo"] <= acc["diff"] <= acc["hi"] and acc["p_bootstrap"] > 0.05
    text = format_real_table(summ, "title")
    assert text.startswith("title\n") and "[95% CI]" in text and "MAD-OPD - MT-OPD: ref NLL +0.300" in text
    assert "bootstrap p < 0.0040 (descriptive)" in text and "seed permutation p = 0.333" in text
    # the decision is seed-level with Holm over every contrast x metric: +0.3 on 2 + 2 runs is
    # t = 8.5 on ~2 df, p = 0.0136; Holm over the family (recomputed here from its raw p-values
    # with stats.holm) leaves it above 0.05: not significant (the bootstrap said p < 0.004)
    cells = [summ["contrasts"][k][m] for k in summ["contrasts"] for m in ("ref_nll", "accuracy")]
    raw = [c["p_seed"] for c in cells]
    assert summ["family_size"] == sum(p is not None for p in raw) == 2 * len(CONTRASTS)
    assert nll["p_seed"] == pytest.approx(0.013606, abs=1e-6)
    assert [c["p_seed_holm"] for c in cells] == pytest.approx(holm(raw))
    assert nll["p_seed_holm"] > 0.05
    assert f"seed t p = 0.0136 (Holm {fmt_p(nll['p_seed_holm'])}: not significant at 0.05)" in text
    assert "2 + 2 runs: the seed permutation test's smallest possible p is 0.333, too few seeds" in text
    assert "two-sided paired bootstrap test over items x seeds" in text
    assert "2 runs per row: the seed resampling draws from 2 values" in text
    assert "exact permutation test over training seeds" in text


def test_intervals_are_the_core_bootstrap_on_the_rows_outcomes():
    summ = summarize_real(_results(SHIFT), IDS, FAMS, reps=300, seed=4, strata="family")
    res = _results(SHIFT)
    tasks = {"real-calls": {}}
    for row in ROWS:  # Base enters once: its second seed is a copy
        runs = [r for r in res if r["row"] == row and "reused_from_seed" not in r]
        tasks["real-calls"][row] = Outcomes(np.array([[100.0 * v for v in r["accuracy"]] for r in runs]),
                                            tuple(IDS), tuple(FAMS))
    ref = bootstrap_table(tasks, list(CONTRASTS), B=300, seed=4)
    for row in ROWS:
        assert summ["rows"][row]["accuracy"] == ref["methods"][row]["real-calls"]
    for a, b in CONTRASTS:
        got = summ["contrasts"][f"{a} - {b}"]["accuracy"]
        assert {k: v for k, v in got.items() if not k.endswith("_holm")} == \
            ref["diffs"][f"{a} - {b}"]["columns"]["real-calls"]


def test_base_reused_seeds_count_once_and_say_so():
    summ = summarize_real(_results(SHIFT), IDS, FAMS, reps=200)
    base = summ["rows"]["Base"]
    assert base["runs"] == 1 and base["reused_seeds"] == [1] and base["seeds"] == [0, 1]
    assert "only (one seed: training randomness not covered)" in base["covers"]
    d = summ["contrasts"]["OPD-A - Base"]
    assert d["runs"] == [2, 1] and d["permutation_min_p"] == pytest.approx(1 / 3)
    text = format_real_table(summ, "t")
    assert "Base: seed 1 reuses seed 0's run" in text and "1 of 2" in text
    bad = _results(SHIFT)
    bad[1]["ref_nll"] = [0.0] * 8  # a "copy" that is not one
    with pytest.raises(DataError, match="reused_from_seed 0 names no run"):
        summarize_real(bad, IDS, FAMS, reps=200)


def test_one_seed_covers_items_only_and_runs_no_permutation_test():
    summ = summarize_real(_results({r: 0.0 for r in ROWS}, seeds=(0,)), IDS, FAMS, reps=200)
    assert "training randomness not covered" in summ["rows"]["OPD-A"]["covers"]
    assert "training randomness not covered" in summ["covers"]
    c = summ["contrasts"]["MAD-OPD - MT-OPD"]
    assert c["ref_nll"]["p_permutation_seeds"] is None and c["accuracy"]["p_permutation_seeds"] is None
    text = format_real_table(summ, "t")
    assert "one run per row: the bootstrap test covers items only, no seed permutation test" in text
    assert "seed permutation p" not in text


def test_strata_from_families():
    res = _results(SHIFT)
    one = summarize_real(res, IDS, [None] * 8, reps=200)
    assert one["n_strata"] == 1 and "resampled within" not in one["covers"]
    with pytest.raises(DataError, match="'f0-1' has no family"):
        summarize_real(res, IDS, ["f0", None] + FAMS[2:], reps=200, strata="family")
    with pytest.raises(DataError, match="8 values of 'ref_nll' for 7 held-out items"):
        summarize_real(res, IDS[:7], FAMS[:7], reps=200)
    dup = res + [dict(res[2])]
    with pytest.raises(DataError, match="seed appears twice"):
        summarize_real(dup, IDS, FAMS, reps=200)


def _write(tmp_path, runs, **extra):
    path = tmp_path / "results.json"
    path.write_text(json.dumps({"world": "real", "profile": "default", "runs": runs,
                                "profile_settings": {"bootstrap_reps": 300, "eval_states": extra.pop("n", None)},
                                **extra}))
    return path


def test_resummarize_recomputes_a_saved_results_json_and_writes_nothing(tmp_path):
    runs = _results(SHIFT)
    path = _write(tmp_path, runs, eval_items={"ids": IDS, "families": FAMS})
    before = sorted(p.name for p in tmp_path.iterdir())
    summ = resummarize(path)
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    ref = summarize_real(runs, IDS, FAMS, reps=300)
    assert summ["rows"] == ref["rows"] and summ["contrasts"] == ref["contrasts"]
    assert summ["items_source"] == "results.json eval_items" and summ["B"] == 300
    text = format_real_table(summ)
    assert text.startswith("real world (smollm2-135m-instruct x3 personas") and "profile default" in text
    zoo_file = _write(tmp_path, runs, eval_items={"ids": IDS, "families": FAMS}, zoo={"key": "k"})
    assert format_real_table(resummarize(zoo_file)).startswith(
        "real world (2 house-calls smollm2-135m-instruct teachers")


def test_resummarize_of_a_file_without_eval_items_rebuilds_them_from_the_task(tmp_path):
    from madopd.realworld.calls import RealCallsTask

    states = RealCallsTask().eval_states()[:4]
    summ = resummarize(_write(tmp_path, _results(SHIFT, n=4), n=4))
    assert "predates eval_items" in summ["items_source"]
    assert summ["n_items"] == 4 and summ["n_strata"] == 1  # the default pools the items
    assert len({s.family for s in states}) > 1
    with pytest.raises(DataError, match="the runs have 8 held-out items, the task gives 4"):
        resummarize(_write(tmp_path, _results(SHIFT, n=8), n=4))
    (tmp_path / "bad.json").write_text("{\"runs\": []}")
    with pytest.raises(DataError, match="non-empty 'runs'"):
        resummarize(tmp_path / "bad.json")


def test_strata_choice_and_its_small_stratum_note():
    res = _results(SHIFT)
    fam = summarize_real(res, IDS, FAMS, reps=400, strata="family")
    pooled = summarize_real(res, IDS, FAMS, reps=400, strata="none")
    assert fam["strata"] == "family" and fam["smallest_stratum"] == 2
    assert pooled["n_strata"] == 1 and "resampled within" not in pooled["covers"]
    # the NLL rises with the item index across families: pooling them widens the interval
    w = [s["rows"]["OPD-A"]["ref_nll"]["hi"] - s["rows"]["OPD-A"]["ref_nll"]["lo"] for s in (fam, pooled)]
    assert w[1] > w[0]
    assert "smallest family 2 items: resampling within families sees 1/2" in format_real_table(fam, "t")
    assert "smallest family" not in format_real_table(pooled, "t")
    assert "items resampled as one pool" in pooled["test"] and "within families" in fam["test"]
    from madopd.errors import ConfigError
    from madopd.realworld.world import RealProfile

    with pytest.raises(ConfigError, match="strata"):
        summarize_real(res, IDS, FAMS, reps=400, strata="items")
    with pytest.raises(ConfigError, match="bootstrap_strata"):
        RealProfile(bootstrap_strata="families")
