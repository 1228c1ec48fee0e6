"""The widgets' small float64 math against madopd.divergence / madopd.weighting, and JS == Python."""

import math
import random

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from jsrun import node_json

from madopd import divergence as D
from madopd import weighting
from madopd.types import TopKLogprobs
from madopd.widgets import divmath as dm


def _cases(n=6, seed=0):
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        V = rng.randint(3, 12)
        out.append(([rng.gauss(0, 2.5) for _ in range(V)], [rng.gauss(0, 2.5) for _ in range(V)],
                    rng.choice([0.5, 1.0, 2.0]), rng.choice([0.1, 0.5, 0.9])))
    return out


@pytest.mark.parametrize("tl,sl,temp,beta", _cases())
def test_dense_matches_madopd_divergence(tl, sl, temp, beta):
    r = dm.dense(tl, sl, temperature=temp, beta=beta)
    fns = {"fkl": lambda s, t: D.forward_kl(s, t, temperature=temp, reduction="sum"),
           "rkl": lambda s, t: D.reverse_kl(s, t, temperature=temp, reduction="sum"),
           "jsd": lambda s, t: D.jsd(s, t, beta, temperature=temp, reduction="sum"),
           "njsd": lambda s, t: D.normalized_jsd(s, t, beta, temperature=temp, reduction="sum")}
    for kind, fn in fns.items():
        s = torch.tensor([sl], dtype=torch.float64, requires_grad=True)
        val = fn(s, torch.tensor([tl], dtype=torch.float64))
        (g,) = torch.autograd.grad(val, s)
        assert r["values"][kind] == pytest.approx(float(val.detach()), abs=1e-10)
        assert r["grads"][kind] == pytest.approx(g[0].tolist(), abs=1e-10)


def test_gradients_match_finite_differences():
    tl, sl = [1.0, -2.0, 0.5, 3.0], [0.0, 0.3, -1.0, 2.0]
    r = dm.dense(tl, sl, temperature=0.7, beta=0.3)
    for kind in dm.KINDS:
        for i in range(4):
            e = 1e-6
            up, dn = list(sl), list(sl)
            up[i] += e
            dn[i] -= e
            num = (dm.dense(tl, up, temperature=0.7, beta=0.3)["values"][kind]
                   - dm.dense(tl, dn, temperature=0.7, beta=0.3)["values"][kind]) / (2 * e)
            assert r["grads"][kind][i] == pytest.approx(num, abs=1e-7)


def test_buckets_equal_topk_teacher_divergence_of_madopd():
    """Student known everywhere + teacher top-k = madopd.divergence's TopKLogprobs path."""
    g = torch.Generator().manual_seed(0)
    V, k = 10, 4
    s = torch.randn(1, V, generator=g, dtype=torch.float64) * 2
    tlp = torch.log_softmax(torch.randn(1, V, generator=g, dtype=torch.float64) * 2, -1)
    top = tlp.topk(k, -1)
    teacher = TopKLogprobs(top.indices, top.values)
    slp = torch.log_softmax(s, -1)[0].tolist()
    t_partial = [None] * V
    for i, lp in zip(top.indices[0].tolist(), top.values[0].tolist()):
        t_partial[i] = lp
    _, p, q = dm.buckets(slp, t_partial)
    vals = dm.divergences(p, q, 0.5)
    assert vals["fkl"] == pytest.approx(float(D.forward_kl(s, teacher, reduction="sum")), abs=1e-9)
    assert vals["rkl"] == pytest.approx(float(D.reverse_kl(s, teacher, reduction="sum")), abs=1e-9)
    assert vals["jsd"] == pytest.approx(float(D.jsd(s, teacher, 0.5, reduction="sum")), abs=1e-9)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.floats(-6, 6), min_size=4, max_size=9), st.integers(0, 2**31 - 1),
       st.floats(0.05, 0.95))
def test_buckets_are_lower_bounds_and_exact_when_complete(logits, seed, beta):
    rng = random.Random(seed)
    V = len(logits)
    tl = dm.log_softmax(logits)
    sl = dm.log_softmax([rng.gauss(0, 2) for _ in range(V)])
    full = dm.divergences([math.exp(x) for x in tl], [math.exp(x) for x in sl], beta)
    keep = [rng.random() < 0.6 for _ in range(V)]
    _, p, q = dm.buckets([x if kp else None for x, kp in zip(sl, keep)], tl)
    part = dm.divergences(p, q, beta)
    _, p2, q2 = dm.buckets(sl, tl)
    exact = dm.divergences(p2, q2, beta)
    for kind in ("fkl", "rkl", "jsd"):
        assert part[kind] <= full[kind] + 1e-9
        assert part[kind] >= -1e-12
        assert exact[kind] == pytest.approx(full[kind], abs=1e-9)


@pytest.mark.parametrize("policy", ["uniform", "drop_teacher", "skip_sample"])
def test_confidence_weights_match_madopd_weighting(policy):
    rows = [[90.0, 40.0, 70.0], [80.0, None, 10.0], [None, None, None], [0.0, 100.0, 50.0]]
    for tau in (0.3, 1.0, 2.0):
        c = torch.tensor([[float("nan") if x is None else x for x in r] for r in rows],
                         dtype=torch.float64)
        ref = weighting.weights_from_confidences(c, tau=tau, on_missing=policy)
        for b, row in enumerate(rows):
            mine = dm.confidence_weights(row, tau, policy)
            if not bool(ref.keep[b]):
                assert mine is None
            else:
                assert mine == pytest.approx(ref.weights[b].tolist(), abs=1e-12)
                assert dm.effective_teachers(mine) == pytest.approx(
                    float(weighting.effective_teachers(ref.weights[b:b + 1])[0]), abs=1e-9)


def test_js_math_equals_python():
    cases = _cases(8, seed=3)
    partial = [[[-0.1, None, -2.5, -4.0], [-0.3, -1.9, None, -3.5]],
               [[None, None], [-0.5, -1.0]]]
    confs = [[90, 40, 70], [80, None, 10], [None, None, None]]
    got = node_json(
        'const D = await import(STATIC + "/divmath.js");'
        "print({dense: DATA.cases.map(([t, s, T, b]) => D.dense(t, s, T, b)),"
        " buckets: DATA.partial.map(([s, t]) => { const r = D.buckets(s, t); return [r.idx, r.p, r.q, D.divergences(r.p, r.q, 0.3)]; }),"
        " w: DATA.confs.map((c) => ['uniform', 'drop_teacher', 'skip_sample'].map((p) => D.confidenceWeights(c, 0.7, p)))});",
        {"cases": cases, "partial": partial, "confs": confs})
    for (tl, sl, temp, beta), js in zip(cases, got["dense"]):
        py = dm.dense(tl, sl, temperature=temp, beta=beta)
        for kind in dm.KINDS:
            assert js["values"][kind] == pytest.approx(py["values"][kind], abs=1e-12)
            assert js["grads"][kind] == pytest.approx(py["grads"][kind], abs=1e-12)
            assert js["gradInf"][kind] == pytest.approx(py["grad_inf"][kind], abs=1e-12)
    for (s, t), (idx, p, q, vals) in zip(partial, got["buckets"]):
        i2, p2, q2 = dm.buckets(s, t)
        assert (idx, p, q) == (i2, pytest.approx(p2, abs=1e-15), pytest.approx(q2, abs=1e-15))
        assert vals == pytest.approx(dm.divergences(p2, q2, 0.3), abs=1e-12)
    for c, row in zip(confs, got["w"]):
        for pol, w in zip(["uniform", "drop_teacher", "skip_sample"], row):
            ref = dm.confidence_weights(c, 0.7, pol)
            assert (w is None) == (ref is None)
            if ref is not None:
                assert w == pytest.approx(ref, abs=1e-12)
