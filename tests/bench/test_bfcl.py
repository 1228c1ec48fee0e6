"""BFCL through our converter and the package's own checker: gold passes, perturbed fails."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

pytest.importorskip("bfcl_eval", reason="needs the 'bench' extra: pip install 'madopd[bench]'")

from madopd.bench import get_benchmark  # noqa: E402
from madopd.bench.bfcl import (  # noqa: E402
    RELEVANCE,
    SUPPORTED,
    DecodeError,
    bfcl_overall,
    build_chat,
    decode_calls,
    encode_calls,
    judge,
)
from madopd.errors import ConfigError  # noqa: E402


@pytest.fixture(scope="module")
def bench_states():
    bench = get_benchmark("bfcl", categories=SUPPORTED)  # single-turn (multi-turn: own tests)
    return bench, bench.states()


def test_reference_answers_score_100_percent_in_every_category(bench_states):
    bench, states = bench_states
    assert {s.meta["category"] for s in states} == set(SUPPORTED)
    res = bench.score(states, [[bench.reference(s)] for s in states])
    failed = {r["id"] for r in res.records if not r["correct"]}
    inconsistent = set(res.summary["gold_inconsistent"])
    # The only failures are the items whose gold answer contradicts its own function docs
    # (found by a structural check, independent of the checker), and they are rare.
    assert failed == inconsistent
    assert len(inconsistent) <= 0.005 * len(states)
    assert res.summary["self_check_score"] == 1.0
    for cat in SUPPORTED:
        ok = [r["correct"] for r, s in zip(res.records, states)
              if s.meta["category"] == cat and not s.meta["gold_issues"]]
        assert ok and all(ok), cat


def _perturb_value(calls):
    for call in calls:
        (name, args), = call.items()
        for key, value in args.items():
            if isinstance(value, bool):
                args[key] = not value
            elif isinstance(value, (int, float)):
                args[key] = value + 1000
            elif isinstance(value, str):
                args[key] = "madopd-wrong-value"
            else:
                continue
            return True
    return False


def test_perturbed_answers_fail(bench_states):
    bench, states = bench_states
    checked = 0
    for cat in SUPPORTED:
        sample = [s for s in states if s.meta["category"] == cat and not s.meta["gold_issues"]][:10]
        for s in sample:
            gold = bench.reference(s)
            if cat in RELEVANCE:  # the opposite behaviour: a call where none fits, or vice versa
                bad = "I cannot help with that." if cat == "live_relevance" else \
                    encode_calls([{s.meta["functions"][0]["name"]: {}}])
                assert judge(cat, s.meta["functions"], None, bad)[0] is False
                checked += 1
                continue
            calls = decode_calls(gold)
            renamed = [{name + "_x": args} for c in calls for name, args in c.items()]
            assert judge(cat, s.meta["functions"], s.meta["ground_truth"], encode_calls(renamed))[0] is False
            if _perturb_value(calls):
                ok, err = judge(cat, s.meta["functions"], s.meta["ground_truth"], encode_calls(calls))
                assert ok is False, (s.id, encode_calls(calls))
            checked += 1
    assert checked == 10 * len(SUPPORTED)


@pytest.mark.parametrize("text", [
    "", "hello there", None, 42, "[" * 5000, "]]][[[", "```\n```", "[f(1, 2)]", "[f(**x)]",
    "[f(a=lambda: 1)]", "[f(a=2**10000)]", "[f(a=9e300*9e300)]", "[f(a=1/0)]", "x" * 50000,
    "[os.system('rm -rf /')(a=1)]",
])
def test_unparsable_output_is_wrong_never_a_crash(bench_states, text):
    _, states = bench_states
    s = next(s for s in states if s.meta["category"] == "simple_python")
    ok, err = judge("simple_python", s.meta["functions"], s.meta["ground_truth"], text)
    assert ok is False and err


def test_decoder_never_executes_anything(tmp_path):
    marker = tmp_path / "pwned"
    calls = decode_calls(f"[f(a=__import__('os').system('touch {marker}'), b=open('{marker}', 'w'))]")
    assert not marker.exists()
    assert calls == [{"f": {"a": f"__import__('os').system('touch {marker}')",
                            "b": f"open('{marker}', 'w')"}}]  # BFCL: a positional-only call -> its source
    assert decode_calls("[a.b.c(x=-1, y=[1, 2.5], z={'k': (1, 2)}, w=None, v=True, u=2*3)]") == [
        {"a.b.c": {"x": -1, "y": [1, 2.5], "z": {"k": (1, 2)}, "w": None, "v": True, "u": 6}}]
    assert decode_calls("```\nf(a=1)\n```") == [{"f": {"a": 1}}]
    # Java/JS parameters may be Python keywords; string contents stay untouched
    assert decode_calls("[f(from='x from=1', to=g(class=3))]") == [
        {"f": {"from": "x from=1", "to": {"g": {"class": 3}}}}]
    with pytest.raises(DecodeError):
        decode_calls("[f(a=1), 3]")


_values = st.recursive(
    st.none() | st.booleans() | st.integers(-10**6, 10**6) | st.text(max_size=8)
    | st.floats(allow_nan=False, allow_infinity=False, width=32),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
    max_leaves=6)
_names = st.from_regex(r"[a-z_][a-z0-9_]{0,6}(\.[a-z_][a-z0-9_]{0,6}){0,2}", fullmatch=True)
_calls = st.lists(st.builds(lambda n, a: {n: a}, _names,
                            st.dictionaries(st.from_regex(r"[a-z_][a-z0-9_]{0,6}", fullmatch=True),
                                            _values, max_size=3)), min_size=1, max_size=3)


@settings(max_examples=60, deadline=None)
@given(_calls)
def test_encode_decode_round_trip(calls):
    import keyword
    for call in calls:
        (name, args), = call.items()
        if any(keyword.iskeyword(p) for p in name.split(".")) or any(keyword.iskeyword(k) for k in args):
            return
    assert decode_calls(encode_calls(calls)) == calls


def test_bfcl_overall_follows_the_leaderboard_formula():
    acc = {"simple_python": 0.9, "multiple": 0.8, "parallel": 0.7, "parallel_multiple": 0.6,
           "live_simple": 0.5, "live_multiple": 0.25, "irrelevance": 1.0, "live_irrelevance": 0.5}
    count = {"live_simple": 100, "live_multiple": 300}
    out = bfcl_overall(acc, count)
    non_live = ((0.9 + 0 + 0) / 3 + 0.8 + 0.7 + 0.6) / 4  # java/js missing count as 0
    live = (0.5 * 100 + 0.25 * 300) / 400
    irr = (1.0 + 0.5) / 2
    assert out["non_live"] == pytest.approx(non_live)
    assert out["live"] == pytest.approx(live)
    assert out["irrelevance"] == pytest.approx(irr)
    assert out["overall"] == pytest.approx((10 * non_live + 10 * live + 10 * irr) / 100)
    evaluated_non_live = (0.9 + 0.8 + 0.7 + 0.6) / 4
    assert out["overall_evaluated"] == pytest.approx((evaluated_non_live + live + irr) / 3)
    assert out["groups_evaluated"] == ["non_live", "live", "irrelevance"]


def test_chat_layout_and_bad_categories():
    chat = build_chat([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "q"}],
                      [{"name": "f", "description": "d", "parameters": {"type": "dict", "properties": {}}}])
    assert [m["role"] for m in chat] == ["system", "user"]
    assert chat[0]["content"].endswith("\n\nBe brief.") and '"name": "f"' in chat[0]["content"]
    assert "[func_name1(params_name1=params_value1" in chat[0]["content"]
    with pytest.raises(ConfigError, match="unsupported categories"):
        get_benchmark("bfcl", categories=["web_search_base"])


def test_single_and_multi_turn_together_give_one_bfcl_summary():
    bench = get_benchmark("bfcl", categories=["simple_python", "multi_turn_base"])
    states = bench.states(3)
    assert [s.meta["category"] for s in states] == ["simple_python"] * 3 + ["multi_turn_base"] * 3
    res = bench.score(states, [[bench.reference(s)] for s in states])
    assert res.summary["accuracy"] == {"simple_python": 1.0, "multi_turn_base": 1.0}
    assert res.summary["bfcl"]["multi_turn"] == pytest.approx(0.25)  # 1 of its 4 categories
    assert res.summary["self_check_score"] == 1.0
