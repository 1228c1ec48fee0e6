"""madopd.toyworld.multimode: form probabilities, sample classes, the demo group's plan, table and report."""

from __future__ import annotations

import json
import math

import pytest
import torch

from madopd.toyworld.demo import PROFILES, plan
from madopd.toyworld.multimode import (
    form_summary,
    format_multimode,
    interval,
    multimode_html,
    multimode_summary,
    program_logprobs,
    sample_metrics,
    welch,
)
from madopd.toyworld.toy_code_multi import FORMS, ToyCodeMultiTask, forms_of


def test_multimode_profile_plans_base_and_three_divergences_per_seed():
    prof = PROFILES["multimode"]
    jobs = plan(prof)
    assert len(prof.seeds) >= 5 and len(jobs) == 4 * len(prof.seeds)
    assert {(j.group, j.world, j.task) for j in jobs} == {("multimode", "multi", "toy-code")}
    for s in prof.seeds:
        mine = {j.row: j for j in jobs if j.seed == s}
        assert set(mine) == {"Base", "MAD-OPD jsd", "MAD-OPD rkl", "MAD-OPD fkl"}
        for d in ("jsd", "rkl", "fkl"):
            j = mine[f"MAD-OPD {d}"]
            assert j.divergence == d and j.preset == "mad_opd" and j.rounds == 2
            assert j.weighting == "confidence" and j.teachers == (0, 1)
        assert mine["Base"].preset == "base"
    assert plan(prof, tasks=("toy-tools",)) == []  # the world has no tools task


def test_full_profile_adds_the_multimode_group_and_smoke_does_not():
    full = plan(PROFILES["full"])
    mm = [j for j in full if j.group == "multimode"]
    assert len(mm) == 4 * len(PROFILES["full"].seeds)
    assert any(j.group == "main" for j in full)
    assert not [j for j in plan(PROFILES["smoke"]) if j.group == "multimode"]
    assert PROFILES["full"].multimode_zoo == "multimode"


def test_program_logprobs_match_a_direct_forward(tiny_dirs):
    from madopd.models.hf import HFStudent

    model = HFStudent(tiny_dirs["student"], name="s")
    task = ToyCodeMultiTask()
    states = [task.make_state("add", 23), task.make_state("max", 61)]
    got = program_logprobs(model, [s.messages for s in states], states, batch=5)
    assert set(got[0]) == set(FORMS) and len(got[0]["add"]) == 3 and len(got[1]["max"]) == 2
    tok = model.tokenizer
    from madopd.models._common import render_prompt_ids

    for st, lp in zip(states, got):
        prompt = render_prompt_ids(tok, st.messages)
        for fam in ("add", "dst"):
            for form, v in zip(forms_of(fam, st.meta["c"]), lp[fam]):
                cont = tok(form, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
                ids = torch.tensor([prompt + cont])
                with torch.no_grad():
                    logits = model.model(input_ids=ids).logits[0].double()
                ref = torch.log_softmax(logits, -1)[len(prompt) - 1:-1].gather(
                    -1, torch.tensor(cont)[:, None]).sum()
                assert v == pytest.approx(float(ref), abs=1e-4)


def _logps(states, probs_right):
    """Fake program log-probs: the right family's forms get ``probs_right``, others ~0."""
    out = []
    for st in states:
        d = {f: [math.log(1e-12)] * len(FORMS[f]) for f in FORMS}
        d[st.family] = [math.log(p) for p in probs_right[: len(FORMS[st.family])]]
        out.append(d)
    return out


def test_form_summary_even_and_committed():
    task = ToyCodeMultiTask()
    states = [task.make_state("max", 40), task.make_state("min", 50)]
    even = form_summary(states, _logps(states, [0.45, 0.45]))
    assert even["mass"] == pytest.approx(0.9, abs=1e-6) and even["evenness"] == pytest.approx(1.0)
    assert even["top_share"] == pytest.approx(0.5) and even["top_is_right"] == 1.0
    assert even["p_forms"]["max"] == [0.45, 0.45]
    one = form_summary(states, _logps(states, [0.9, 1e-9]))
    assert one["evenness"] < 1e-6 and one["top_share"] == pytest.approx(1.0)


def test_sample_metrics_classes_and_commitment():
    task = ToyCodeMultiTask()
    st = task.make_state("add", 30)
    texts = ["x+30", "x+30", "30+x", "x++x", "x-30", "zz", "x+30", "x+30"]
    ok = [1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 1.0, 1.0]
    m = sample_metrics(task, [st, st], texts, ok, 4)
    assert m["share/form"] == pytest.approx(5 / 8) and m["share/hybrid"] == pytest.approx(1 / 8)
    assert m["share/wrong_op"] == pytest.approx(1 / 8) and m["share/other_fail"] == pytest.approx(1 / 8)
    # spec 1: x+30, x+30, 30+x -> 2/3; spec 2: x-30 (sub form 0), x+30, x+30 -> 2/3
    assert m["commitment"] == pytest.approx(2 / 3) and m["commitment_specs"] == 2
    assert m["form_share/0"] == pytest.approx(5 / 6) and m["form_share/1"] == pytest.approx(1 / 6)


def test_interval_and_welch_against_scipy():
    from scipy import stats

    v = [1.0, 2.0, 4.0, 3.0]
    iv = interval(v)
    lo, hi = stats.t.interval(0.95, 3, loc=2.5, scale=stats.sem(v))
    assert iv["mean"] == pytest.approx(2.5) and iv["half"] == pytest.approx((hi - lo) / 2)
    assert math.isnan(interval([1.0])["half"]) and interval([float("nan"), 2.0])["n"] == 1
    assert welch([1, 2, 3], [4, 5, 7]) == pytest.approx(stats.ttest_ind([1, 2, 3], [4, 5, 7], equal_var=False).pvalue)
    assert math.isnan(welch([1.0], [2.0, 3.0])) and math.isnan(welch([1, 1], [1, 1]))


def _fake_results():
    out = []
    for seed in range(3):
        for row, (score, hyb) in {"Base": (0.2, 0.1), "MAD-OPD rkl": (0.8, 0.0),
                                  "MAD-OPD fkl": (0.6, 0.2), "MAD-OPD jsd": (0.7, 0.1)}.items():
            ev = {"pass@1": score + 0.01 * seed, "share/hybrid": hyb, "commitment": 0.5,
                  "modes/p_form/add/0": 0.3, "modes/p_form/add/1": 0.3, "modes/p_form/add/2": 0.3}
            out.append({"job": {"group": "multimode", "row": row, "seed": seed}, "eval": ev, "score": score})
    out.append({"job": {"group": "main", "row": "Base", "seed": 0}, "eval": {}, "score": 0.0})
    return out


def test_multimode_summary_table_tests_and_report():
    teacher = {"A": {"privileged": {"p_forms": {"add": [0.3, 0.3, 0.3]}},
                     "blind": {"p_forms": {"add": [0.33, 0.33, 0.33]}}}}
    s = multimode_summary(_fake_results(), teacher)
    assert list(s["table"]) == ["Base", "MAD-OPD jsd", "MAD-OPD rkl", "MAD-OPD fkl"]
    cell = s["table"]["MAD-OPD rkl"]["pass@1"]
    assert cell["mean"] == pytest.approx(81.0) and cell["n"] == 3 and cell["half"] > 0
    assert s["table"]["MAD-OPD rkl"]["seeds"] == [0, 1, 2]
    assert s["welch_p"]["MAD-OPD rkl vs MAD-OPD fkl"]["pass@1"] < 1e-3
    from madopd.stats import holm  # Holm over every (pair, metric) with a p-value (issue 28.2)
    flat = [(pr, k) for pr, ps in s["welch_p"].items() for k, p in ps.items() if p == p]
    adj = holm([s["welch_p"][pr][k] for pr, k in flat])
    assert [s["welch_p_holm"][pr][k] for pr, k in flat] == pytest.approx(adj)
    assert len(flat) > 1 and "(Holm " in format_multimode(s)
    assert s["p_forms"]["teacher A (privileged)"] == {"add": [0.3, 0.3, 0.3]}
    assert s["p_forms"]["student MAD-OPD fkl"] == {"add": [0.3, 0.3, 0.3]}
    text = format_multimode(s)
    assert "MAD-OPD rkl" in text and "81.0 ±" in text and "Welch" in text
    html = multimode_html(s)
    assert "<table>" in html and "MAD-OPD fkl" in html and "<script" not in html
    json.dumps(s)


def test_multimode_html_escapes_row_names():
    s = multimode_summary(_fake_results())
    s["table"]["<img src=x onerror=alert(1)>"] = s["table"].pop("Base")
    assert "<img" not in multimode_html(s)
    assert multimode_html(None) == "" and multimode_html({"table": {}}) == ""


@pytest.mark.slow
def test_multimode_smoke_group_end_to_end(tmp_path):
    from madopd.cli import main

    out = tmp_path / "out"
    rc = main(["demo", "--profile", "multimode-smoke", "--out", str(out), "--zoo-dir", str(tmp_path / "zoo")])
    assert rc == 0
    res = json.loads((out / "results.json").read_text())
    table = res["multimode"]["table"]
    assert set(table) == {"Base", "MAD-OPD jsd", "MAD-OPD rkl", "MAD-OPD fkl"}
    for row in table.values():
        assert row["seeds"] == [0, 1] and len(row["pass@1"]["values"]) == 2
    assert "modes" in res["zoo"]["multi"]["report"]
    assert {r["job"]["group"] for r in res["runs"]} == {"multimode"}
    assert "multi-mode code world" in (out / "report.html").read_text()
    assert "multi-mode code world" in (out / "table.txt").read_text()


def test_zoo_info_prints_the_teachers_form_spread():
    from madopd.toyworld.zoo_eval import format_report

    v = {"evenness": 0.95, "top_share": 0.51, "mass": 0.46}
    text = format_report({"modes": {"A": {"blind": v, "privileged": dict(v, evenness=0.55),
                                          "samples_blind": {"share/form": 0.5, "share/hybrid": 0.0,
                                                            "commitment": 0.6}}}})
    assert "forms, A: blind evenness 0.95" in text and "privileged evenness 0.55" in text
    assert "hybrids 0.0%" in text
