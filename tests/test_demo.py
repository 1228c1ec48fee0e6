"""`madopd demo`: planning, the table/results formatting (fake numbers), the report, the CLI."""

from __future__ import annotations

import json
import math

import pytest

from madopd.demo import (
    MAIN_ROWS,
    PROFILES,
    format_gains,
    format_table,
    gains,
    mean_se,
    plan,
    row_jobs,
    summarize,
)
from madopd.errors import ConfigError


def _fake_results():
    scores = {"Base": (20, 30), "MT-SeqKD": (25, 28), "OPD-A": (30, 35), "OPD-B": (40, 20),
              "MT-OPD": (33, 31), "MAD-OPD": (60, 50)}
    out = []
    for row, (tools, code) in scores.items():
        for seed, jitter in enumerate((-1.0, 0.0, 1.0)):
            for task, base in (("toy-tools", tools), ("toy-code", code)):
                job = row_jobs(row, task, seed, 2)
                out.append({"job": job.__dict__ | {"teachers": list(job.teachers)},
                            "score": (base + jitter) / 100.0})
    return out


def test_mean_se_matches_the_definition():
    m, se = mean_se([1.0, 2.0, 4.0])
    assert m == pytest.approx(7 / 3)
    var = sum((x - 7 / 3) ** 2 for x in [1, 2, 4]) / 2
    assert se == pytest.approx(math.sqrt(var / 3))
    assert math.isnan(mean_se([3.0])[1])


def test_summary_table_gain_and_json():
    table = summarize(_fake_results())["main/default"]
    assert list(table) == list(MAIN_ROWS)  # paper order, whatever order runs finished in
    cell = table["MAD-OPD"]["toy-tools"]
    assert cell["values"] == [59.0, 60.0, 61.0] and cell["seeds"] == [0, 1, 2]
    assert cell["mean"] == pytest.approx(60.0) and cell["se"] == pytest.approx(1 / math.sqrt(3))
    assert table["MAD-OPD"]["overall"]["mean"] == pytest.approx(55.0)
    g = gains(table)
    assert g["toy-tools"]["best_opd"] == "OPD-B" and g["toy-tools"]["gain"] == pytest.approx(20.0)
    assert g["toy-code"]["best_opd"] == "OPD-A" and g["toy-code"]["significant"]
    text = format_table(table, "t") + "\n" + format_gains(g)
    assert "MAD-OPD" in text and "60.0 ±  0.6" in text and "Agentic avg" in text
    assert "+20.0" in text and "> 2 SE" in text
    json.dumps(table)  # results.json content must be plain JSON


def test_report_escapes_model_text(tmp_path):
    from madopd.report import write_report

    table = summarize(_fake_results())["main/default"]
    evil = {"teachers": {"<script>alert(1)</script>": {"round1": {"toy-code": {"add": 1.0, "all": 1.0}}}},
            "calibration": {"A": [{"bucket": "80-100", "n": 3, "mean_confidence": 0.9, "accuracy": 1.0}]}}
    path = write_report({"profile": "test", "table": table, "gain": gains(table),
                         "zoo": {"default": {"spec": {}, "report": evil}}}, tmp_path / "r.html")
    html = path.read_text()
    assert "<script>" not in html and "&lt;script&gt;" in html
    assert "<svg" in html and "MAD-OPD" in html and "http" not in html.replace("http://www.w3.org/2000/svg", "")


def test_plan_and_bad_names():
    jobs = plan(PROFILES["default"])
    assert len(jobs) == len(MAIN_ROWS) * 2 * 3
    mad = next(j for j in jobs if j.row == "MAD-OPD")
    assert mad.rounds == 2 and mad.weighting == "confidence" and mad.teachers == (0, 1)
    assert next(j for j in jobs if j.row == "OPD-B").teachers == (1,)
    full = plan(PROFILES["full"])
    groups = {j.group for j in full}
    assert groups == {"main", "divergence", "rounds", "ablation", "control", "multimode"}
    assert any(not j.transcript_in_score and j.rounds == 1 for j in full)
    with pytest.raises(ConfigError, match="valid"):
        row_jobs("GPT-5", "toy-code", 0, 2)


def test_cli_rejects_unknown_profile_and_task(capsys):
    from madopd.cli import main

    assert main(["demo", "--profile", "huge"]) == 2
    err = capsys.readouterr().err
    assert "huge" in err and "smoke" in err and "default" in err and "full" in err
    assert main(["demo", "--tasks", "toy-math"]) == 2
    assert "toy-tools" in capsys.readouterr().err
    assert main(["zoo", "info", "--profile", "nope"]) == 2


@pytest.mark.slow
def test_smoke_profile_end_to_end(tmp_path):
    from madopd.cli import main

    out = tmp_path / "out"
    rc = main(["demo", "--profile", "smoke", "--out", str(out), "--zoo-dir", str(tmp_path / "zoo")])
    assert rc == 0
    res = json.loads((out / "results.json").read_text())
    assert res["profile"] == "smoke" and res["wall_seconds"] > 0
    for row in MAIN_ROWS:
        for task in ("toy-tools", "toy-code"):
            cell = res["table"][row][task]
            assert len(cell["values"]) == 2 and "mean" in cell and "se" in cell
    assert (out / "report.html").exists() and (out / "table.txt").exists()
    from madopd.runs import load_run

    run = load_run(res["runs"][0]["run_dir"])
    assert run.config["demo_job"]["row"] in MAIN_ROWS


def test_composite_tables_reuse_main_rows():
    from madopd.demo import composite_tables

    res = _fake_results()
    for seed in (0, 1, 2):
        for task in ("toy-tools", "toy-code"):
            j = row_jobs("MAD-OPD", task, seed, 2, group="rounds", rounds=1, label="MAD-OPD R=1")
            res.append({"job": j.__dict__ | {"teachers": list(j.teachers)}, "score": 0.45})
            j = row_jobs("MAD-OPD", task, seed, 2, group="divergence", divergence="fkl", label="MAD-OPD fkl")
            res.append({"job": j.__dict__ | {"teachers": list(j.teachers)}, "score": 0.40})
    tabs = composite_tables(summarize(res))
    rounds = next(v for k, v in tabs.items() if k.startswith("debate rounds"))
    assert list(rounds) == ["R = 0", "R = 1", "R = 2"]
    assert rounds["R = 2"]["toy-tools"]["mean"] == pytest.approx(60.0)
    assert rounds["R = 1"]["toy-code"]["mean"] == pytest.approx(45.0)
    div = next(v for k, v in tabs.items() if k.startswith("divergence"))
    assert div["MAD-OPD, JSD"]["toy-tools"]["mean"] == pytest.approx(60.0)  # main row, tools = JSD
    assert div["MAD-OPD, RKL"]["toy-code"]["mean"] == pytest.approx(50.0)  # main row, code = RKL
    assert div["MAD-OPD, FKL"]["toy-code"]["mean"] == pytest.approx(40.0)
