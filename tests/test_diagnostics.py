"""Debate diagnostics on hand-built transcripts with known flips, consensus and calibration.

Scenario (K = 3 teachers A, B, C; R = 2; the right answer is "4" for every state):
  s0  r1: 4(90) 5(60) 5(50)   r2: 5(80) 5(70) 5(75)  A conforms, harmful flip, wrong consensus
  s1  r1: 3(40) 4(80) 4(90)   r2: 4(85) 4(80) 4(95)  A conforms, helpful flip
  s2  r1: 4(30) 7(90) 7(20)   r2: 4(30) 7(95) 9(10)  A resists the majority; C flips wrong->wrong;
                                                      oracle gap (B has the max weight)
  s3  r1: 4(100) fail 4(100)  r2: 4(--) 4(0) 4(100)  B failed in round 1; A's final tag missing
"""

from __future__ import annotations

import math

import pytest
import torch

from madopd.debate import FailedTurn
from madopd.diagnostics import calibration_table, debate_cases, debate_metrics
from madopd.errors import ConfigError
from madopd.types import DebateMessage, State, Transcript
from madopd.weighting import confidence_weights, effective_teachers

ROWS = {
    "s0": [[("4", 90), ("5", 60), ("5", 50)], [("5", 80), ("5", 70), ("5", 75)]],
    "s1": [[("3", 40), ("4", 80), ("4", 90)], [("4", 85), ("4", 80), ("4", 95)]],
    "s2": [[("4", 30), ("7", 90), ("7", 20)], [("4", 30), ("7", 95), ("9", 10)]],
    "s3": [[("4", 100), None, ("4", 100)], [("4", None), ("4", 0), ("4", 100)]],
}


def _transcripts():
    out = []
    for sid, rounds in ROWS.items():
        msgs = []
        for r, turns in enumerate(rounds, start=1):
            for k, turn in enumerate(turns):
                if turn is None:
                    msgs.append(FailedTurn(k, r, "", "", None, error="down"))
                    continue
                ans, conf = turn
                text = ans if conf is None else f"{ans}\n<<CONFIDENCE={conf}>>"
                msgs.append(DebateMessage(k, r, text, ans, None if conf is None else float(conf)))
        out.append(Transcript(sid, ["A", "B", "C"], 2, msgs))
    return out


STATES = [State(sid, [{"role": "user", "content": "2+2?"}], reference="4") for sid in ROWS]


def verify(state, answer):
    return float(answer.strip() == state.reference)


def test_metrics_without_verifier():
    m = debate_metrics(_transcripts())
    assert m["debate/n_samples"] == 4 and m["debate/rounds"] == 2
    assert m["debate/flip_n"] == 11  # 12 transitions minus B's in s3 (failed round 1)
    assert m["debate/flip_rate"] == 3 / 11
    assert m["debate/conformity_n"] == 3 and m["debate/conformity_rate"] == 2 / 3
    assert m["debate/unanimous_first"] == 0 and m["debate/unanimous_final"] == 3 / 4
    assert m["debate/failed_turn_rate"] == 1 / 24 and m["debate/missing_confidence_rate"] == 1 / 12
    assert m["debate/weight_collapse"] == 0  # tau = 1: weights stay within [0.21, 0.58] for K = 3
    assert "debate/acc_final" not in m and not any(k.startswith("calib/") for k in m)
    # n_eff against a direct computation from the final confidences (s3: uniform -> 3).
    finals = [[80, 70, 75], [85, 80, 95], [30, 95, 10]]
    neff = [1 / sum(w * w for w in row) for row in confidence_weights(
        torch.tensor(finals, dtype=torch.float64)).tolist()] + [3.0]
    assert abs(m["debate/n_eff_mean"] - sum(neff) / 4) < 1e-6


def test_metrics_with_verifier_exact_numbers():
    m = debate_metrics(_transcripts(), STATES, verify)
    assert m["debate/acc_round1"] == 6 / 11 and m["debate/acc_round2"] == 7 / 12
    assert m["debate/acc_final"] == 7 / 12
    assert m["debate/verified_n"] == 11
    assert m["debate/helpful_flips"] == 1 / 11 and m["debate/harmful_flips"] == 1 / 11
    assert m["debate/net_correction"] == 0
    assert m["debate/wrong_consensus"] == 1 / 4
    assert m["debate/oracle_acc"] == 3 / 4 and m["debate/weighted_acc"] == 2 / 4
    assert m["debate/oracle_gap"] == 1 / 4
    # Calibration of final-round answers (s3's A has no confidence and is left out).
    exp = {"A": (3, 0.45, (0.64 + 0.0225 + 0.49) / 3),
           "B": (4, 2.85 / 4, (0.49 + 0.04 + 0.9025 + 1.0) / 4),
           "C": (4, 0.9 / 4, (0.5625 + 0.0025 + 0.01 + 0.0) / 4)}
    for name, (n, ece, brier) in exp.items():
        assert m[f"calib/{name}/n"] == n
        assert abs(m[f"calib/{name}/ece"] - ece) < 1e-12
        assert abs(m[f"calib/{name}/brier"] - brier) < 1e-12
    assert m["calib/all/n"] == 11
    assert abs(m["calib/all/accuracy"] - 6 / 11) < 1e-12
    assert all(isinstance(v, float) for v in m.values())


def test_sharp_weights_collapse_and_oracle_gap_follow_weights():
    m = debate_metrics(_transcripts(), tau=0.01)
    assert m["debate/weight_collapse"] == 3 / 4  # s3 is uniform (missing tag)
    # User weights: pick A everywhere -> s0 wrong, s1, s2, s3 right.
    w = torch.tensor([[1.0, 0, 0]] * 4)
    m = debate_metrics(_transcripts(), STATES, verify, weights=w)
    assert m["debate/weighted_acc"] == 3 / 4 and m["debate/oracle_gap"] == 0
    assert m["debate/weight_collapse"] == 1 and m["debate/n_eff_mean"] == 1
    skip = debate_metrics(_transcripts(), STATES, verify, on_missing="skip_sample")
    # s3 skipped (no weighted answer): s0 wrong, s1 right, s2 wrong.
    assert skip["debate/weighted_acc"] == 1 / 3 and skip["debate/oracle_gap"] == 1 / 3


def test_calibration_table_and_rounds():
    rows = calibration_table(_transcripts(), STATES, verify)
    assert len(rows) == 30 and {r["teacher"] for r in rows} == {"A", "B", "C"}
    a8 = next(r for r in rows if r["teacher"] == "A" and r["bucket"] == 8)
    assert (a8["lo"], a8["hi"], a8["n"]) == (80.0, 90.0, 2)
    assert abs(a8["mean_confidence"] - 0.825) < 1e-12 and a8["accuracy"] == 0.5
    c9 = next(r for r in rows if r["teacher"] == "C" and r["bucket"] == 9)
    assert c9["n"] == 2  # confidence 100 belongs to the top bucket
    empty = next(r for r in rows if r["teacher"] == "A" and r["bucket"] == 5)
    assert empty["n"] == 0 and math.isnan(empty["accuracy"])
    all_rounds = calibration_table(_transcripts(), STATES, verify, rounds="all")
    assert sum(r["n"] for r in all_rounds) == 11 + 11  # round 1: 11 turns with tags
    m = debate_metrics(_transcripts(), STATES, verify, calibration_rounds="all")
    assert m["calib/all/n"] == 22
    with pytest.raises(ConfigError):
        calibration_table(_transcripts(), STATES, verify, rounds="first")


def test_cases_for_widgets():
    cases = debate_cases(_transcripts(), STATES, verify)
    assert cases == {"flip": ["s0", "s1", "s2"], "helpful_flip": ["s1"], "harmful_flip": ["s0"],
                     "conformity": ["s0", "s1"], "wrong_consensus": ["s0"], "oracle_gap": ["s2"],
                     "failed_turn": ["s3"]}


def test_verify_called_once_per_answer_and_pluggable_normalisation():
    calls = []

    def counting(state, answer):
        calls.append((state.id, answer))
        return verify(state, answer)

    debate_metrics(_transcripts(), STATES, counting)
    assert len(calls) == len(set(calls)) == 8  # distinct (state, answer) pairs: 2 + 2 + 3 + 1
    # A normaliser that maps every answer to one key: no flips, everything unanimous.
    m = debate_metrics(_transcripts(), normalize=lambda s: "same")
    assert m["debate/flip_rate"] == 0 and m["debate/unanimous_final"] == 1
    assert m["debate/unanimous_first"] == 3 / 4  # s3 still has a failed turn


def test_edge_cases():
    assert debate_metrics([]) == {"debate/n_samples": 0.0}
    r0 = debate_metrics([Transcript("x", ["A", "B"], 0)])
    assert r0 == {"debate/n_samples": 1.0, "debate/rounds": 0.0}
    one_round = [Transcript("x", ["A", "B"], 1, [DebateMessage(0, 1, "a", "a", 50.0),
                                                  DebateMessage(1, 1, "b", "b", 50.0)])]
    m = debate_metrics(one_round)
    assert m["debate/flip_n"] == 0 and math.isnan(m["debate/flip_rate"])  # NaN, not a made-up 0
    with pytest.raises(ConfigError, match="both"):
        debate_metrics(_transcripts(), STATES)
    assert effective_teachers(torch.tensor([[0.5, 0.5]])).item() == 2
