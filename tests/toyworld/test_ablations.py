"""The ablation profile (issue 28, Build 2): its jobs, shared runs, variants and tables."""

from __future__ import annotations

import random

import pytest
import torch

from madopd.toyworld.ablations import (
    GROUPS,
    REFERENCE,
    WORLD,
    FirstStepOnly,
    ablation_comparisons,
    shuffled_confidence_distiller,
)
from madopd.toyworld.demo import PROFILES, plan, row_jobs, split_replicas, summarize


def _paths():
    spec = {"tool_episodes": 1500, "eval_episodes": 250}
    return {WORLD: {"student": "/z/s", "teachers": ["/z/A", "/z/B"], "names": ["A", "B"], "spec": spec}}


def test_ablation_profile_plans_every_table_and_runs_shared_runs_once():
    prof = PROFILES["ablations"]
    jobs = plan(prof)
    assert {j.group for j in jobs} == set(GROUPS) and {j.world for j in jobs} == {WORLD}
    rows = {g: {j.row for j in jobs if j.group == g} for g in GROUPS}
    assert {j.rounds for j in jobs if j.group == "rounds"} == {0, 1, 2, 3}
    assert REFERENCE["rounds"] in rows["rounds"] and REFERENCE["confidence"] in rows["confidence"]
    assert rows["divergence"] == {"MAD-OPD JSD", "MAD-OPD RKL", "MAD-OPD FKL"}
    assert {"no debate (MT-OPD)", "no confidence w (uniform)", "no OPAD (first step only)"} <= rows["components"]
    assert all(j.task == "toy-tools" for j in jobs if j.opad_first_step)
    assert {j.tau for j in jobs if j.group == "confidence"} == {0.1, 1.0, 10.0}
    assert sum(j.shuffle_confidence for j in jobs) == 2 * len(prof.seeds)
    run, copies = split_replicas(jobs, prof, _paths())
    for job, src in copies:  # only the same experiment is copied
        assert (job.task, job.seed, job.preset, job.rounds, job.weighting, job.tau) == \
            (src.task, src.seed, src.preset, src.rounds, src.weighting, src.tau) and job.group != src.group
    # per task and seed: MAD-OPD is run once for four tables (3 copies; on a task its default
    # divergence row is the same run), MT-OPD once for two (1 copy)
    assert len(copies) == 2 * len(prof.seeds) * (3 + 1)
    assert len(run) == 23 * len(prof.seeds)  # 12 toy-tools + 11 toy-code runs per seed
    div_default = [j for j, _ in copies if j.group == "divergence"]
    assert {(j.task, j.row) for j in div_default} == {("toy-tools", "MAD-OPD JSD"), ("toy-code", "MAD-OPD RKL")}


def test_ablation_comparisons():
    assert ablation_comparisons("rounds", ["R = 0 (MT-OPD)", "R = 1", "R = 2 (MAD-OPD)", "R = 3"]) == [
        ("R = 0 (MT-OPD)", "R = 2 (MAD-OPD)"), ("R = 1", "R = 2 (MAD-OPD)"), ("R = 3", "R = 2 (MAD-OPD)")]
    assert ablation_comparisons("divergence", ["MAD-OPD FKL", "MAD-OPD JSD", "MAD-OPD RKL"]) == [
        ("MAD-OPD FKL", "MAD-OPD JSD"), ("MAD-OPD FKL", "MAD-OPD RKL"), ("MAD-OPD JSD", "MAD-OPD RKL")]
    assert ablation_comparisons("components", ["no debate (MT-OPD)"]) == []  # no reference: nothing


def _fake(group, rows_scores, fam_scores=None):
    out = []
    for row, (tools, code) in rows_scores.items():
        for seed, jit in enumerate((-0.04, 0.0, 0.04)):
            for task, base in (("toy-tools", tools), ("toy-code", code)):
                j = row_jobs("MAD-OPD", task, seed, 2, label=row, group=group, world=WORLD)
                score = base + jit
                k = round(score * 20)
                vals = [float((i + seed) % 20 < k) for i in range(20)] * 2
                ev = {"pass@1": score, "episode_success": score}
                for f, v in (fam_scores or {}).get(row, {}).items():
                    ev[f"pass@1/{f}"] = v
                out.append({"job": j.__dict__ | {"teachers": list(j.teachers)}, "score": score, "eval": ev,
                            "items": {"ids": [f"{task}-{i}" for i in range(40)],
                                      "families": ["f"] * 20 + ["g"] * 20, "values": vals},
                            "cpu_seconds": 1.0})
    return out


def test_ablation_tables_have_seed_level_holm_tests_and_the_family_breakdown():
    from madopd.toyworld.ablations import ablation_summary, format_contrasts, format_families
    from madopd.toyworld.demo_stats import interval_tables
    from madopd.toyworld.report import ablations_html

    res = _fake("divergence", {"MAD-OPD FKL": (0.6, 0.85), "MAD-OPD JSD": (0.6, 0.8), "MAD-OPD RKL": (0.6, 0.5)},
                {"MAD-OPD RKL": {"dst": 0.0, "add": 0.9}, "MAD-OPD FKL": {"dst": 0.5, "add": 0.9}})
    iv = interval_tables(res, B=500)
    ab = ablation_summary(summarize(res), iv, res, {"toy-tools": "episode_success", "toy-code": "pass@1"})
    div = ab["divergence"]
    assert div["intervals"]["family_size"] == 9  # 3 pairs x (tools, code, overall)
    c = div["intervals"]["diffs"]["MAD-OPD FKL - MAD-OPD RKL"]["columns"]["toy-code"]
    assert c["diff"] == pytest.approx(0.35) and c["p_seed_holm"] < 0.05 and c["p_seed_holm"] >= c["p_seed"]
    assert div["families"]["MAD-OPD RKL"]["toy-code"] == {"add": pytest.approx(90.0), "dst": 0.0}
    assert div["cpu_seconds"] == 18.0
    text = format_contrasts(div["intervals"], 500) + "\n" + format_families(div["families"])
    assert "MAD-OPD FKL - MAD-OPD RKL [toy-code]: +35.0" in text and "dst 0.0" in text
    html = ablations_html({"divergence": {**div, "title": "<b>x</b>"}}, 500)
    assert "&lt;b&gt;x&lt;/b&gt;" in html and "<b>x</b>" not in html and "dst" in html


def test_first_step_only_keeps_one_state_per_training_episode():
    from madopd.distill.data import TrainPool
    from madopd.toyworld.toy_tools import ToyToolsTask

    task = ToyToolsTask(n_train=30, n_eval=10, seed=0)
    full = TrainPool(task, opad_mode="teacher_forced", batch_size=4, seed=0).items
    first = TrainPool(FirstStepOnly(task), opad_mode="teacher_forced", batch_size=4, seed=0).items
    assert len(first) == len(task.train_episodes()) < len(full)
    assert all(s.meta["step"] == 0 for s in first)
    assert {s.id for s in first} <= {s.id for s in full}  # the same states (debate cache keys too)
    assert FirstStepOnly(task).eval_episodes() == task.eval_episodes()


def test_shuffled_confidence_weights_permute_each_states_weights(monkeypatch):
    from madopd.distill import Distiller

    w = torch.tensor([[0.7, 0.3]] * 400)
    monkeypatch.setattr(Distiller, "_weights", lambda self, tr, n, c: (w.clone(), torch.ones(n, dtype=torch.bool)))
    cls = shuffled_confidence_distiller(seed=0)
    counters = {}
    got, keep = cls._weights(object.__new__(cls), [None] * 400, 400, counters)
    assert sorted(map(tuple, got.tolist())) != [(0.7, 0.3)] * 400  # some states swapped
    assert torch.allclose(got.sort(dim=-1).values, w.sort(dim=-1).values)  # the same weights
    assert 120 < int((got[:, 0] < 0.5).sum()) < 280 and counters["count/confidence_shuffled"] == 400


def test_zoo_debate_rounds_three_adds_round_three_examples_and_keeps_old_keys():
    from madopd.toyworld.zoo import PROFILES as ZOO
    from madopd.toyworld.zoo import ZooSpec, _spec_key, make_tasks, member_settings
    from madopd.toyworld.zoo_data import make_debate, teacher_examples

    assert "debate_rounds" not in _spec_key(ZooSpec()) and "debate_rounds" in _spec_key(ZOO["ablations"])
    assert member_settings(ZOO["ablations"], "student") == member_settings(ZooSpec(), "student")
    name = ZooSpec().skills()[0].name
    assert member_settings(ZOO["ablations"], name) != member_settings(ZooSpec(), name)
    spec = ZOO["ablations-smoke"]
    skills = spec.skills()
    tools, _ = make_tasks(spec)
    st = tools.train_states()[5]
    ex = teacher_examples(skills, 0, tools, st, random.Random(0), make_debate([s.name for s in skills], 3), 3)
    assert [e.kind for e in ex] == ["r1", "r2", "s1", "s2", "blind", "r3", "s3"]
    two = teacher_examples(skills, 0, tools, st, random.Random(0), make_debate([s.name for s in skills]))
    assert [e.kind for e in two] == ["r1", "r2", "s1", "s2", "blind"]


@pytest.mark.slow
def test_ablations_smoke_profile_end_to_end(tmp_path):
    import json

    from madopd.cli import main

    out = tmp_path / "out"
    assert main(["demo", "--profile", "ablations-smoke", "--out", str(out), "--zoo-dir", str(tmp_path / "zoo")]) == 0
    res = json.loads((out / "results.json").read_text())
    assert set(res["ablations"]) == set(GROUPS)
    for ab in res["ablations"].values():
        assert ab["intervals"]["family_size"] >= 1
        for d in ab["intervals"]["diffs"].values():
            assert all("p_seed_holm" in c and "p_permutation_seeds_holm" in c for c in d["columns"].values())
    assert "R = 3" in res["ablations"]["rounds"]["rows"]
    assert "dst" in json.dumps(res["ablations"]["divergence"]["families"])
    html = (out / "report.html").read_text()
    assert "Fig. 4a" in html and "App. C.6" in html


def test_operation_calls_measure_collapse():
    from madopd.toyworld.demo import operation_calls
    from madopd.toyworld.demo_stats import collapse_summary, format_collapse

    collapsed = [{"family": f, "actions": ["get a", "get b", "sub 41 17", "ans 24"]} for f in ("add", "sub", "max")]
    m = operation_calls(collapsed + [{"family": "max", "actions": ["get a", "ans 3"]}])
    assert m["ops/distinct"] == 1.0 and m["ops/none"] == 1.0
    assert m["ops/right/sub"] == 1.0 and m["ops/right/add"] == 0.0 and m["ops/right/max"] == 0.0
    good = operation_calls([{"family": f, "actions": [f"{f} 4 3", "add 1 1"]} for f in ("add", "sub", "max")])
    assert good["ops/distinct"] == 3.0 and all(good[f"ops/right/{f}"] == 1.0 for f in ("add", "sub", "max"))
    res = []
    for seed, ev in enumerate((m, m, good)):
        j = row_jobs("MAD-OPD", "toy-tools", seed, 2)
        res.append({"job": j.__dict__, "eval": ev})
    c = collapse_summary(res)["main/default"]["MAD-OPD"]
    assert c["distinct"] == [1, 1, 3] and c["right"]["sub"] == pytest.approx(100.0)
    assert "COLLAPSED" in format_collapse({"MAD-OPD": c})
