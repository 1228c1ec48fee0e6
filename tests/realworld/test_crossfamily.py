"""The cross-family real profile's pieces that need no model: config, table, CLI dispatch."""

from __future__ import annotations

import pytest

from madopd.realworld.crossfamily import (
    CROSS_PROFILES,
    _config,
    format_table,
    run_crossfamily_demo,
    summarize,
)


def test_configs_are_opd_with_a_cross_tokenizer_teacher():
    cfg = _config(CROSS_PROFILES["crossfamily"], "student-path", seed=3)
    assert (cfg.divergence, cfg.cross_tokenizer, cfg.rounds, cfg.seed) == ("jsd", "full", 0, 3)
    assert cfg.teachers == ["gemma3-270m"]
    cfg = _config(CROSS_PROFILES["crossfamily-srkl"], "student-path", seed=0)
    assert (cfg.divergence, cfg.cross_tokenizer) == ("srkl", "sampled")


def test_table_intervals_and_contrast_from_per_item_lists():
    ids, fam = [f"i{k}" for k in range(8)], ["f"] * 8
    base = {"row": "Base", "seed": 0, "accuracy": [0.0] * 8, "ref_nll": [9.0 + k / 10 for k in range(8)]}
    opd = [{"row": "OPD-Gemma", "seed": s, "accuracy": [0.0] * 7 + [1.0],
            "ref_nll": [8.0 + k / 10 + s / 100 for k in range(8)]} for s in (0, 1)]
    table = summarize([base, *opd], ids, fam, reps=200)
    d = table["diffs"]["OPD-Gemma - Base"]["columns"]["ref_nll"]
    assert d["diff"] == pytest.approx(-0.995) and d["hi"] < 0
    text = format_table(table)
    assert "OPD-Gemma - Base ref_nll: -0.995" in text and "overall" not in text


def test_unknown_profile_is_one_line(tmp_path):
    from madopd.errors import ConfigError

    with pytest.raises(ConfigError, match="crossfamily"):
        run_crossfamily_demo("nope", out=tmp_path)
