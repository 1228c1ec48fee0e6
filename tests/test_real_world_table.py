"""The real world's summary table from synthetic job results (no model needed)."""

from __future__ import annotations

from madopd.real_world import ROWS, format_real_table, summarize_real


def _results(shift: dict[str, float], seeds=(0, 1), n=8):
    out = []
    for row in ROWS:
        for s in seeds:
            out.append({"row": row, "seed": s, "accuracy": [float((i + s) % 4 == 0) for i in range(n)],
                        "ref_nll": [5.0 + shift[row] + 0.1 * i + 0.05 * s for i in range(n)],
                        "seconds": 10.0, "cpu_seconds": 15.0})
    return out


def test_summary_has_intervals_paired_differences_and_times():
    shift = {"Base": 2.0, "OPD-A": 0.5, "MT-OPD": 0.4, "MAD-OPD": 0.7}
    summ = summarize_real(_results(shift), reps=500)
    rows = summ["rows"]
    assert list(rows) == list(ROWS)
    for c in rows.values():
        n = c["ref_nll"]
        assert n["lo"] <= n["mean"] <= n["hi"] and "8 held-out items x 2 training seeds" in n["covers"]
        assert c["seconds"] == 20.0 and c["cpu_seconds"] == 30.0 and c["seeds"] == 2
    d = summ["paired"]["MAD-OPD - MT-OPD"]["ref_nll"]
    # every paired cell differs by exactly +0.3: a point interval that excludes 0
    assert abs(d["mean"] - 0.3) < 1e-12 and abs(d["lo"] - 0.3) < 1e-12 and d["excludes_zero"]
    acc = summ["paired"]["OPD-A - Base"]["accuracy"]
    assert acc["mean"] == 0.0 and not acc["excludes_zero"]
    text = format_real_table(summ, "title")
    assert "MAD-OPD" in text and "[95% CI]" in text and "paired MAD-OPD - MT-OPD" in text
    assert "(excludes 0)" in text and "bootstrap over 8 held-out items x 2 training seeds" in text


def test_one_seed_says_what_the_interval_covers():
    summ = summarize_real(_results({r: 0.0 for r in ROWS}, seeds=(0,)), reps=200)
    assert "training randomness not covered" in summ["rows"]["Base"]["accuracy"]["covers"]
