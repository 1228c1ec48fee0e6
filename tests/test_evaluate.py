"""madopd.evaluate: the pass@k estimator against exact fractions, and the sandboxed code harness."""

from __future__ import annotations

from fractions import Fraction
from math import comb

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from madopd.errors import ValueRangeError
from madopd.evaluate import (
    CodeProblem,
    check_program,
    completion_from_response,
    evaluate_code,
    extract_code,
    mean_pass_at_k,
    pass_at_k,
)


def exact_pass_at_k(n: int, c: int, k: int) -> Fraction:
    return 1 - Fraction(comb(n - c, k), comb(n, k))  # comb(m, k) = 0 when m < k


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_pass_at_k_matches_closed_form(data):
    n = data.draw(st.integers(1, 200))
    c = data.draw(st.integers(0, n))
    k = data.draw(st.integers(1, n))
    assert pass_at_k(n, c, k) == pytest.approx(float(exact_pass_at_k(n, c, k)), rel=1e-12, abs=1e-12)


def test_pass_at_k_hand_counts_and_limits():
    assert pass_at_k(10, 0, 1) == 0.0
    assert pass_at_k(10, 10, 10) == 1.0
    assert pass_at_k(10, 3, 1) == pytest.approx(0.3)
    assert pass_at_k(5, 2, 2) == pytest.approx(1 - 3 / 10)  # 1 - C(3,2)/C(5,2)
    assert pass_at_k(4, 1, 4) == 1.0  # n - c < k: every draw holds the correct one
    # huge n: the product form stays finite where C(n, k) would overflow a float
    assert pass_at_k(100_000, 1, 50_000) == pytest.approx(0.5, abs=1e-9)
    for bad in [(0, 0, 1), (5, 6, 1), (5, 1, 0), (5, 1, 6), (5, -1, 1), (5.0, 1, 1)]:
        with pytest.raises(ValueRangeError):
            pass_at_k(*bad)


def test_mean_pass_at_k_averages_and_reports_skipped_k():
    counts = [(4, 1), (4, 0), (2, 2)]
    means, skipped = mean_pass_at_k(counts, [1, 2, 4])
    assert means["pass@1"] == pytest.approx((0.25 + 0 + 1) / 3)
    want2 = float((exact_pass_at_k(4, 1, 2) + exact_pass_at_k(4, 0, 2) + exact_pass_at_k(2, 2, 2)) / 3)
    assert means["pass@2"] == pytest.approx(want2)
    assert "pass@4" not in means and skipped == [4]  # one problem has only 2 samples


ADD = CodeProblem("t/add", 'def add(a, b):\n    """Sum."""\n',
                  "def check(candidate):\n    assert candidate(2, 3) == 5\n", "add", "    return a + b\n")


def test_extraction_modes():
    fenced = "Here you go:\n```python\ndef add(a, b):\n    return a + b\n```\nDone."
    assert extract_code(fenced) == "def add(a, b):\n    return a + b\n"
    comp, mode = completion_from_response(ADD, fenced)
    assert mode == "function" and "def add" in comp
    comp, mode = completion_from_response(ADD, "    return a + b\n")
    assert (comp, mode) == ("    return a + b\n", "body")
    prog = check_program(ADD, "    return a + b\n")
    assert prog.candidate.startswith(ADD.prompt + "    return a + b\n")
    assert (prog.tests, prog.entry_point, prog.prelude) == (ADD.test, "add", ADD.prompt)


def test_evaluate_code_scores_and_never_crashes_on_garbage():
    responses = [[
        "```python\ndef add(a, b):\n    return a + b\n```",  # right, full function
        "    return a + b\n",  # right, body
        "    return a - b\n",  # wrong
        "\x00<|end|> ))) def def",  # unparsable model output
        "```python\nimport os\nos._exit(0)\n```",  # exits 0 before the tests run
        None,  # not even text
    ]]
    res = evaluate_code([ADD], responses, ks=[1, 2])
    passed = [r["passed"] for r in res.records]
    # exiting 0 before the tests ran is the worker dying: a failure, not a pass
    assert passed == [True, True, False, False, False, False]
    assert res.records[4]["reason"] == "candidate-exited"
    assert res.records[5]["mode"] == "non-text"
    assert res.summary["samples"] == 6 and res.summary["problems"] == 1
    assert res.summary["pass@1"] == pytest.approx(2 / 6)
    assert res.summary["pass@2"] == pytest.approx(float(exact_pass_at_k(6, 2, 2)))
    assert res.summary["best_of_n"] == 1.0
    assert res.problems[0]["n"] == 6 and res.problems[0]["c"] == 2


def test_evaluate_code_checks_lengths():
    with pytest.raises(ValueRangeError, match="one list per problem"):
        evaluate_code([ADD], [])
