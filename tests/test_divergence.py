"""madopd.divergence against the independent float64 reference (tests/reference.py).

p = teacher, q = student throughout. Random inputs come from a hypothesis-drawn seed so every
example is reproducible; shapes stay tiny to keep this file well under 20 s.
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from reference import entropy64, mixture_per_token64, per_token64, reduce64, softmax64

from madopd import divergence as D
from madopd.errors import ConfigError, ShapeError, ValueRangeError
from madopd.types import TopKLogprobs

FAST = settings(max_examples=25, deadline=None)
FEWER = settings(max_examples=12, deadline=None)  # for the tests that loop inside
KINDS = ["fkl", "rkl", "jsd", "njsd"]
REDUCTIONS = ["none", "token_mean", "sequence_mean", "sum"]


def call(kind, beta, z, teacher, **kw):
    return D.divergence(z, teacher, D.DivergenceSpec(kind, beta), **kw)


def make(seed, B=2, T=3, V=6, dtype=torch.float64, scale=None, masked=False):
    g = torch.Generator().manual_seed(seed)
    s = scale if scale is not None else float(torch.empty(1).uniform_(0.1, 4.0, generator=g))
    z = (torch.randn(B, T, V, generator=g) * s).to(dtype)
    t = (torch.randn(B, T, V, generator=g) * s).to(dtype)
    mask = torch.rand(B, T, generator=g) > 0.35 if masked else None
    return z, t, mask, g


def topk_of(t, k, g, with_tail=True, temperature=1.0):
    """A TopKLogprobs holding k random (not necessarily top) ids of the dense teacher t."""
    lp = torch.log_softmax(t.double() / temperature, -1)
    ids = torch.argsort(torch.rand(t.shape, generator=g), -1)[..., :k]
    lpk = lp.gather(-1, ids)
    tail = (1 - lpk.exp().sum(-1)).clamp_min(0) if with_tail else None
    return TopKLogprobs(ids, lpk.to(t.dtype), tail)


def betas_for(kind, g):
    if kind in ("jsd", "njsd"):
        return float(torch.empty(1).uniform_(0.05, 0.95, generator=g))
    return 0.5


# ----------------------------------------------------------------------------- reference
@FAST
@given(seed=st.integers(0, 2**31 - 1), kind=st.sampled_from(KINDS),
       reduction=st.sampled_from(REDUCTIONS), masked=st.booleans(),
       temperature=st.sampled_from([1.0, 0.7, 2.0]), chunk=st.sampled_from([None, 1, 2, 5]))
def test_dense_matches_reference(seed, kind, reduction, masked, temperature, chunk):
    z, t, mask, g = make(seed, masked=masked)
    beta = betas_for(kind, g)
    got = call(kind, beta, z, t, mask=mask, reduction=reduction, temperature=temperature,
               chunk_size=chunk)
    ref = reduce64(per_token64(kind, beta, z, t, mask, temperature), mask, reduction)
    torch.testing.assert_close(got, ref, atol=1e-6, rtol=1e-6)


@FAST
@given(seed=st.integers(0, 2**31 - 1), kind=st.sampled_from(KINDS), k=st.integers(1, 6),
       masked=st.booleans(), with_tail=st.booleans(), reduction=st.sampled_from(REDUCTIONS))
def test_sparse_matches_reference(seed, kind, k, masked, with_tail, reduction):
    z, t, mask, g = make(seed, masked=masked)
    beta = betas_for(kind, g)
    tk = topk_of(t, k, g, with_tail)
    got = call(kind, beta, z, tk, mask=mask, reduction=reduction, chunk_size=2)
    ref = reduce64(per_token64(kind, beta, z, tk, mask), mask, reduction)
    torch.testing.assert_close(got, ref, atol=1e-6, rtol=1e-6)


@FAST
@given(seed=st.integers(0, 2**31 - 1), kind=st.sampled_from(KINDS), sparse=st.booleans())
def test_gradients_match_reference_autograd(seed, kind, sparse):
    z, t, mask, g = make(seed, masked=True)
    mask[0, 0] = True  # at least one token, so the reference has a graph
    beta = betas_for(kind, g)
    teacher = topk_of(t, 3, g) if sparse else t
    temperature = 1.0 if sparse else 1.3
    z1 = z.clone().requires_grad_(True)
    call(kind, beta, z1, teacher, mask=mask, temperature=temperature,
         reduction="sequence_mean", chunk_size=2).backward()
    z2 = z.clone().requires_grad_(True)
    reduce64(per_token64(kind, beta, z2, teacher, mask, temperature), mask,
             "sequence_mean").backward()
    torch.testing.assert_close(z1.grad, z2.grad, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("sparse", [False, True])
def test_gradcheck_float64(kind, sparse):
    z, t, mask, g = make(3, B=2, T=2, V=5, masked=True)
    mask[0, 0] = True
    teacher = topk_of(t, 2, g) if sparse else t
    z.requires_grad_(True)
    assert torch.autograd.gradcheck(
        lambda x: call(kind, 0.3, x, teacher, mask=mask, reduction="none", chunk_size=1), (z,))


# ----------------------------------------------------------------------------- properties
@FAST
@given(seed=st.integers(0, 2**31 - 1), kind=st.sampled_from(KINDS),
       scale=st.sampled_from([0.01, 1.0, 10.0, 60.0]), sparse=st.booleans())
def test_nonnegative_float32_even_for_extreme_logits(seed, kind, scale, sparse):
    z, t, _, g = make(seed, B=3, T=4, V=50, dtype=torch.float32, scale=scale)
    teacher = topk_of(t, 7, g) if sparse else t
    out = call(kind, 0.5, z, teacher, reduction="none")
    assert torch.isfinite(out).all() and (out >= 0).all()


@pytest.mark.parametrize("kind", KINDS)
def test_zero_at_identity(kind):
    z, _, _, _ = make(0, dtype=torch.float32, scale=5.0)
    out = call(kind, 0.4, z, z.clone(), reduction="none")
    assert out.abs().max() < 1e-6


@FAST
@given(seed=st.integers(0, 2**31 - 1))
def test_jsd_half_symmetric_and_bounded(seed):
    z, t, _, _ = make(seed, scale=20.0)
    a, b = D.jsd(z, t, reduction="none"), D.jsd(t, z, reduction="none")
    torch.testing.assert_close(a, b, atol=1e-12, rtol=1e-9)
    assert (a <= math.log(2) + 1e-12).all()
    beta = 0.2  # JSD_β ≤ h(β) = -β log β - (1-β) log(1-β)
    hb = -beta * math.log(beta) - (1 - beta) * math.log(1 - beta)
    assert (D.jsd(z, t, beta, reduction="none") <= hb + 1e-12).all()


def test_normalized_jsd_limits_and_continuity():
    z, t, _, _ = make(5, B=2, T=4, V=30, scale=3.0)
    fkl = D.forward_kl(z, t, reduction="none")
    rkl = D.reverse_kl(z, t, reduction="none")
    njsd = lambda x, y, beta: D.normalized_jsd(x, y, beta, reduction="none")
    torch.testing.assert_close(njsd(z, t, 0.0), fkl)
    torch.testing.assert_close(njsd(z, t, 1.0), rkl)
    # the limit is approached continuously: once ε is below the smallest q/p (p/q) ratio the
    # gap shrinks like O(ε), and keeps doing so down to ε = 1e-12 (no loss of precision)
    gaps0, gaps1 = [], []
    for eps in (1e-8, 1e-10, 1e-12):
        gaps0.append((njsd(z, t, eps) - fkl).abs().max().item())
        gaps1.append((njsd(z, t, 1 - eps) - rkl).abs().max().item())
    for gaps in (gaps0, gaps1):
        assert gaps[-1] < 1e-6 and all(b < a / 50 for a, b in zip(gaps, gaps[1:]))
    # near the endpoints the value matches the reference definition JSD_β/(β(1-β)) ...
    for beta in (1e-3, 1e-5, 1 - 1e-5):
        torch.testing.assert_close(njsd(z, t, beta), per_token64("njsd", beta, z, t),
                                   atol=1e-6, rtol=1e-6)
    # ... and float32 loses no precision there (no cancellation in the division by β(1-β))
    for beta in (1e-6, 1e-4, 1 - 1e-4, 1 - 1e-6):
        torch.testing.assert_close(njsd(z.float(), t.float(), beta),
                                   njsd(z, t, beta).float(), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("kind", KINDS)
def test_sparse_with_all_ids_equals_dense(kind):
    z, t, mask, g = make(11, masked=True)
    tk = topk_of(t, t.shape[-1], g, with_tail=False)
    torch.testing.assert_close(call(kind, 0.3, z, tk, mask=mask, reduction="none"),
                               call(kind, 0.3, z, t, mask=mask, reduction="none"),
                               atol=1e-12, rtol=1e-10)


@FAST
@given(seed=st.integers(0, 2**31 - 1), kind=st.sampled_from(KINDS), k=st.integers(1, 5))
def test_sparse_lower_bound_of_dense(seed, kind, k):
    """Data processing: merging cells into a tail bucket can only shrink an f-divergence."""
    z, t, _, g = make(seed, V=7)
    tk = topk_of(t, k, g)
    sparse = call(kind, 0.3, z, tk, reduction="none")
    dense = call(kind, 0.3, z, t, reduction="none")
    assert (sparse >= 0).all() and (sparse <= dense + 1e-12).all()


@FEWER
@given(seed=st.integers(0, 2**31 - 1), kind=st.sampled_from(KINDS), sparse=st.booleans(),
       masked=st.booleans())
def test_chunked_equals_unchunked(seed, kind, sparse, masked):
    z, t, mask, g = make(seed, B=3, T=5, V=9, masked=masked)
    teacher = topk_of(t, 4, g) if sparse else t
    outs, grads = [], []
    for chunk in (1, 2, 4, 7, 1000, None):
        x = z.clone().requires_grad_(True)
        v = call(kind, 0.5, x, teacher, mask=mask, reduction="none", chunk_size=chunk)
        (v * torch.arange(1.0, 1 + v.numel()).view_as(v)).sum().backward()
        outs.append(v.detach())
        grads.append(x.grad)
    for o, gr in zip(outs[1:], grads[1:]):
        torch.testing.assert_close(o, outs[0], atol=1e-13, rtol=1e-12)
        torch.testing.assert_close(gr, grads[0], atol=1e-13, rtol=1e-12)


@pytest.mark.parametrize("kind", KINDS)
def test_bf16_inputs_same_as_float32_of_same_values(kind):
    z, t, _, _ = make(2, B=2, T=8, V=100, dtype=torch.bfloat16, scale=3.0)
    zb = z.clone().requires_grad_(True)
    vb = call(kind, 0.5, zb, t, reduction="none")
    zf = z.float().requires_grad_(True)
    vf = call(kind, 0.5, zf, t.float(), reduction="none")
    assert vb.dtype == torch.float32  # computed in fp32 whatever the input dtype
    torch.testing.assert_close(vb, vf, atol=1e-3, rtol=1e-3)
    vb.sum().backward()
    vf.sum().backward()
    assert zb.grad.dtype == torch.bfloat16
    torch.testing.assert_close(zb.grad.float(), zf.grad, atol=1e-3, rtol=1e-2)


def test_two_dim_inputs_and_reductions():
    z, t, mask, _ = make(4, B=1, T=6, masked=True)
    out = D.jsd(z[0], t[0], mask=mask[0], reduction="none")
    assert out.shape == (6,)
    torch.testing.assert_close(out, D.jsd(z, t, mask=mask, reduction="none")[0])
    torch.testing.assert_close(D.jsd(z[0], t[0], mask=mask[0], reduction="sequence_mean"),
                               D.jsd(z[0], t[0], mask=mask[0], reduction="token_mean"))


def test_sequence_mean_excludes_empty_sequences_and_nan_padding_is_ignored():
    z, t, _, _ = make(6, B=3, T=4)
    mask = torch.tensor([[1, 1, 0, 0], [0, 0, 0, 0], [1, 1, 1, 1]], dtype=torch.bool)
    z[~mask] = float("nan")  # padding may hold garbage: it is never read
    per = per_token64("fkl", 0.5, z, t, mask)
    want = (per[0, :2].mean() + per[2].mean()) / 2
    torch.testing.assert_close(D.forward_kl(z, t, mask=mask, reduction="sequence_mean"), want)


@pytest.mark.parametrize("reduction", REDUCTIONS[1:])
def test_all_masked_returns_zero_with_grad_path(reduction):
    z, t, _, _ = make(1)
    z.requires_grad_(True)
    mask = torch.zeros(z.shape[:2], dtype=torch.bool)
    out = D.reverse_kl(z, t, mask=mask, reduction=reduction)
    assert out.item() == 0.0 and out.requires_grad
    out.backward()
    assert torch.equal(z.grad, torch.zeros_like(z))


# ----------------------------------------------------------------------------- multi-teacher
def _teachers(seed, K=3, sparse_mix=False):
    z, _, mask, g = make(seed, masked=True)
    ts = [torch.randn(z.shape, generator=g, dtype=torch.float64) * 2 for _ in range(K)]
    if sparse_mix:
        ts[1] = topk_of(ts[1], 3, g)
    return z, ts, mask, g


@FAST
@given(seed=st.integers(0, 2**31 - 1), kind=st.sampled_from(KINDS), per_token=st.booleans())
def test_multi_teacher_sum_equals_looped_sum(seed, kind, per_token):
    z, ts, mask, g = _teachers(seed, sparse_mix=True)
    shape = z.shape[:2] + (3,) if per_token else (z.shape[0], 3)
    w = torch.rand(shape, generator=g, dtype=torch.float64)
    spec = D.DivergenceSpec(kind, 0.4)
    z1 = z.clone().requires_grad_(True)
    got, per = D.multi_teacher_divergence(z1, ts, w, spec, mask=mask, reduction="none",
                                          return_per_teacher=True)
    wt = w if per_token else w[:, None, :].expand(*z.shape[:2], 3)
    z2 = z.clone().requires_grad_(True)
    loop = sum(wt[..., k] * D.divergence(z2, ts[k], spec, mask=mask, reduction="none")
               for k in range(3))
    torch.testing.assert_close(got, loop, atol=1e-12, rtol=1e-10)
    torch.testing.assert_close(per, D.per_teacher_divergence(z, ts, spec, mask=mask))
    got.sum().backward()
    loop.sum().backward()
    torch.testing.assert_close(z1.grad, z2.grad, atol=1e-12, rtol=1e-10)


def test_per_token_weights_equal_broadcast_per_sample_weights():
    z, ts, mask, g = _teachers(8)
    w = torch.softmax(torch.randn(z.shape[0], 3, generator=g, dtype=torch.float64), -1)
    spec = D.DivergenceSpec("jsd", 0.5)
    for target in ("sum", "mixture"):
        a = D.multi_teacher_divergence(z, ts, w, spec, target=target, mask=mask)
        b = D.multi_teacher_divergence(z, ts, w[:, None].expand(*z.shape[:2], 3).clone(), spec,
                                       target=target, mask=mask)
        torch.testing.assert_close(a, b)


def test_per_teacher_backward_and_weight_gradients():
    z, ts, mask, g = _teachers(9)
    spec = D.DivergenceSpec("rkl")
    w = torch.rand(z.shape[0], 3, generator=g, dtype=torch.float64, requires_grad=True)
    z1 = z.clone().requires_grad_(True)
    per = D.per_teacher_divergence(z1, ts, spec, mask=mask)  # [B, T, K], lazy backward
    (per * w[:, None, :]).sum().backward()
    z2 = z.clone().requires_grad_(True)
    w2 = w.detach().clone().requires_grad_(True)
    D.multi_teacher_divergence(z2, ts, w2, spec, mask=mask, reduction="sum").backward()
    torch.testing.assert_close(z1.grad, z2.grad)
    torch.testing.assert_close(w.grad, w2.grad)
    # a retained graph backwarded twice recomputes and gives the same gradient again
    z3 = z.clone().requires_grad_(True)
    loss = D.multi_teacher_divergence(z3, ts, w.detach(), spec, mask=mask, reduction="sum")
    loss.backward(retain_graph=True)
    first = z3.grad.clone()
    loss.backward()
    torch.testing.assert_close(z3.grad, 2 * first)


@pytest.mark.parametrize("kind", KINDS)
def test_mixture_target_matches_reference(kind):
    z, ts, mask, g = _teachers(10)
    w = torch.softmax(torch.randn(*z.shape[:2], 3, generator=g, dtype=torch.float64), -1)
    got = D.multi_teacher_divergence(z, ts, w, D.DivergenceSpec(kind, 0.3), target="mixture",
                                     mask=mask, reduction="none")
    torch.testing.assert_close(got, mixture_per_token64(kind, 0.3, z, ts, w, mask))


def test_mixture_of_topk_teachers_sharing_ids():
    z, ts, mask, g = _teachers(12, K=2)
    ids = torch.argsort(torch.rand(z.shape, generator=g), -1)[..., :4]
    tks = [TopKLogprobs(ids, torch.log_softmax(t, -1).gather(-1, ids)) for t in ts]
    w = torch.tensor([[0.3, 0.7], [0.6, 0.4]], dtype=torch.float64)
    got = D.multi_teacher_divergence(z, tks, w, D.DivergenceSpec("fkl"), target="mixture",
                                     mask=mask, reduction="none")
    mix_lp = torch.logsumexp(torch.stack([w[:, None, k, None].log() + tks[k].logprobs
                                          for k in range(2)]), 0)
    want = D.forward_kl(z, TopKLogprobs(ids, mix_lp), mask=mask, reduction="none")
    torch.testing.assert_close(got, want)
    other = TopKLogprobs(ids.flip(-1), tks[1].logprobs)
    with pytest.raises(ConfigError, match="same ids"):
        D.multi_teacher_divergence(z, [tks[0], other], w, D.DivergenceSpec("fkl"),
                                   target="mixture")


def test_reverse_kl_sum_is_geometric_mean_identity():
    """Σ_k w_k KL(q‖p_k) = KL(q ‖ g/Z) - log Z, g = Π p_k^{w_k} (digest §3.9)."""
    z, ts, _, g = _teachers(13)
    w = torch.softmax(torch.randn(z.shape[0], 3, generator=g, dtype=torch.float64), -1)
    lhs = D.multi_teacher_divergence(z, ts, w, D.DivergenceSpec("rkl"), reduction="none")
    log_g = sum(w[:, None, k, None] * torch.log_softmax(ts[k], -1) for k in range(3))
    log_z = torch.logsumexp(log_g, -1)
    rhs = D.reverse_kl(z, log_g, reduction="none") - log_z  # log_softmax renormalises g
    torch.testing.assert_close(lhs, rhs)
    # forward KL: Σ_k w_k KL(p_k‖q) - KL(Σ w_k p_k ‖ q) does not depend on q
    diffs = []
    for seed in (1, 2):
        zq = torch.randn(z.shape, generator=torch.Generator().manual_seed(seed),
                         dtype=torch.float64)
        spec = D.DivergenceSpec("fkl")
        diffs.append(D.multi_teacher_divergence(zq, ts, w, spec, reduction="none")
                     - D.multi_teacher_divergence(zq, ts, w, spec, target="mixture",
                                                  reduction="none"))
    torch.testing.assert_close(diffs[0], diffs[1])


# ----------------------------------------------------------------------------- diagnostics
@FAST
@given(seed=st.integers(0, 2**31 - 1), kind=st.sampled_from(KINDS),
       ord_=st.sampled_from([math.inf, 2]))
def test_logit_grad_norm_matches_autograd(seed, kind, ord_):
    z, t, mask, _ = make(seed, B=1, T=3, masked=False)
    got = D.logit_grad_norm(z, t, D.DivergenceSpec(kind, 0.5), ord=ord_)
    for i in range(3):
        x = z.clone().requires_grad_(True)
        per_token64(kind, 0.5, x, t)[0, i].backward()
        want = torch.linalg.vector_norm(x.grad[0, i], ord=ord_)
        torch.testing.assert_close(got[0, i], want, atol=1e-9, rtol=1e-7)


def _adversarial(V=64):
    """Student confident on token 0, teacher giving token 0 probability ~ε (p → 0)."""
    rows_z, rows_t = [], []
    for e in range(1, 40):
        z = torch.full((V,), -30.0, dtype=torch.float64)
        z[0] = 0.0
        z[1] = 0.0
        t = torch.zeros(V, dtype=torch.float64)
        t[0] = -float(e)
        rows_z.append(z)
        rows_t.append(t)
    return torch.stack(rows_z)[None], torch.stack(rows_t)[None]


def test_lemma1_jsd_gradient_bounded_by_two_and_rkl_unbounded():
    g = torch.Generator().manual_seed(0)
    za, ta = _adversarial()
    cases = [za, ta]
    for scale in (0.1, 3.0, 30.0, 300.0):  # random, peaked, disjoint supports
        cases.append((torch.randn(4, 16, 64, generator=g, dtype=torch.float64) * scale,
                      torch.randn(4, 16, 64, generator=g, dtype=torch.float64) * scale))
    cases = [(za, ta)] + cases[2:]
    jspec = D.DivergenceSpec("jsd", 0.5)
    for z, t in cases:
        assert D.logit_grad_norm(z, t, jspec).max() <= 2.0  # Lemma 1 as stated
        assert D.logit_grad_norm(z, t, jspec).max() <= math.log(2) / 2 + 1e-12  # tighter
        assert D.logit_grad_norm(z, t, D.DivergenceSpec("fkl")).max() <= 1.0 + 1e-12
    # reverse KL: grows like log(1/ε) as p(token 0) = ε → 0 while q(token 0) = 1/2
    r = D.logit_grad_norm(za, ta, D.DivergenceSpec("rkl"))[0]
    assert r[-1] > 2.0 and (r[1:] >= r[:-1] - 1e-12).all()
    j = D.logit_grad_norm(za, ta, jspec)[0]
    assert j.max() < 0.5


@FAST
@given(seed=st.integers(0, 2**31 - 1), scale=st.sampled_from([1.0, 10.0, 100.0]),
       sparse_p=st.booleans())
def test_jsd_gradient_bound_on_random_peaked_and_sparse_supports(seed, scale, sparse_p):
    z, t, _, g = make(seed, B=4, T=8, V=12, scale=scale)
    if sparse_p:  # the teacher gives zero probability to random tokens
        t = t.masked_fill(torch.rand(t.shape, generator=g) < 0.5, -math.inf)
        t[..., 0] = 0.0
    norms = D.logit_grad_norm(z, t, D.DivergenceSpec("jsd", 0.5))
    assert norms.max() <= math.log(2) / 2 + 1e-12


def test_entropy_and_top1_agreement():
    z, t, mask, g = make(14, masked=True)
    h = D.entropy(z, mask=mask)
    for b in range(2):
        for i in range(3):
            want = entropy64(z[b, i]) if mask[b, i] else torch.zeros((), dtype=torch.float64)
            torch.testing.assert_close(h[b, i], want)
    tk = topk_of(t, 6, g, with_tail=False)
    torch.testing.assert_close(D.entropy(tk), D.entropy(t))
    agree = D.top1_agreement(z, t, mask=mask)
    want = (z.argmax(-1) == t.argmax(-1)) & mask
    assert torch.equal(agree, want)
    assert torch.equal(D.top1_agreement(z, topk_of(t, 6, g, with_tail=False), mask=mask), want)


def test_tail_floor_is_counted():
    z = torch.tensor([[[5.0, 0.0, -50.0]]], dtype=torch.float64)
    lp = torch.log_softmax(torch.tensor([[[9.0, 0.0, -60.0]]], dtype=torch.float64), -1)
    tk = TopKLogprobs(torch.tensor([[[0, 1]]]), lp[..., :2], torch.zeros(1, 1))
    stats = {}
    out = D.reverse_kl(z, tk, stats=stats)
    assert torch.isfinite(out) and stats["count/divergence_teacher_tail_floored"] == 1


def test_divergence_for_task_and_spec():
    assert D.divergence_for_task("agentic") == D.DivergenceSpec("jsd", 0.5)
    assert D.divergence_for_task("code") == D.DivergenceSpec("rkl")
    with pytest.raises(ConfigError, match="task"):
        D.divergence_for_task("math")
    with pytest.raises(ConfigError, match="kind"):
        D.DivergenceSpec("kl")


# ----------------------------------------------------------------------------- errors
def test_bad_inputs_raise_one_named_error():
    z, t, mask, g = make(15)
    cases = [
        (ShapeError, r"teacher has shape \(2, 3, 5\).*\(2, 3, 6\).*vocabulary",
         lambda: D.jsd(z, t[..., :5])),
        (ShapeError, r"teacher has shape \(2, 2, 6\)", lambda: D.jsd(z, t[:, :2])),
        (ShapeError, "student_logits", lambda: D.jsd(z[0, 0], t[0, 0])),
        (ShapeError, "mask", lambda: D.jsd(z, t, mask=torch.ones(2, 3))),
        (ShapeError, "mask", lambda: D.jsd(z, t, mask=torch.ones(3, 2, dtype=torch.bool))),
        (ValueRangeError, "beta", lambda: D.jsd(z, t, 0.0)),
        (ValueRangeError, "beta", lambda: D.jsd(z, t, 1.0)),
        (ValueRangeError, "beta", lambda: D.normalized_jsd(z, t, 1.5)),
        (ValueRangeError, "beta", lambda: D.DivergenceSpec("njsd", float("nan"))),
        (ValueRangeError, "reduction", lambda: D.jsd(z, t, reduction="mean")),
        (ValueRangeError, "temperature", lambda: D.jsd(z, t, temperature=0.0)),
        (ValueRangeError, "chunk_size", lambda: D.jsd(z, t, chunk_size=0)),
        (ValueRangeError, "temperature=1", lambda: D.jsd(z, topk_of(t, 2, g), temperature=2.0)),
        (ShapeError, "weights", lambda: D.multi_teacher_divergence(
            z, [t, t], torch.ones(2, 3), D.DivergenceSpec())),
        (ValueRangeError, "weights", lambda: D.multi_teacher_divergence(
            z, [t, t], -torch.ones(2, 2, dtype=torch.float64), D.DivergenceSpec())),
        (ValueRangeError, "sum to 1", lambda: D.multi_teacher_divergence(
            z, [t, t], torch.ones(2, 2, dtype=torch.float64), D.DivergenceSpec(),
            target="mixture")),
        (ConfigError, "target", lambda: D.multi_teacher_divergence(
            z, [t], torch.ones(2, 1, dtype=torch.float64), D.DivergenceSpec(), target="max")),
        (ShapeError, "teachers", lambda: D.per_teacher_divergence(z, [], D.DivergenceSpec())),
    ]
    for nan_val, who in ((float("nan"), "student_logits"), (float("inf"), "student_logits")):
        bad = z.clone()
        bad[1, 2, 3] = nan_val
        cases.append((ValueRangeError, rf"{who}.*\[b=1, t=2\]", lambda bad=bad: D.jsd(bad, t)))
    bad_t = t.clone()
    bad_t[0, 1, 0] = float("nan")
    cases.append((ValueRangeError, r"teacher.*\[b=0, t=1\]", lambda: D.jsd(z, bad_t)))
    all_neg_inf = z.clone()
    all_neg_inf[0, 0] = -math.inf
    cases.append((ValueRangeError, "all -inf", lambda: D.forward_kl(all_neg_inf, t)))
    tk = topk_of(t, 3, g)
    for ids, msg in ((tk.ids + 6, r"ids must lie in \[0, 6\)"), (tk.ids - 6, "ids must lie"),
                     (tk.ids[..., [0, 0, 1]], "distinct")):
        cases.append((ValueRangeError, msg,
                      lambda ids=ids: D.jsd(z, TopKLogprobs(ids, tk.logprobs, tk.tail_mass))))
    cases += [
        (ShapeError, r"ids has shape \(2, 2, 3\)", lambda: D.jsd(z, TopKLogprobs(
            tk.ids[:, :2], tk.logprobs[:, :2]))),
        (ShapeError, "k=7", lambda: D.jsd(z, TopKLogprobs(
            torch.zeros(2, 3, 7, dtype=torch.long), torch.zeros(2, 3, 7)))),
        (ShapeError, "tail_mass", lambda: D.jsd(z, TopKLogprobs(tk.ids, tk.logprobs,
                                                                torch.zeros(3)))),
        (ValueRangeError, "sum to", lambda: D.jsd(z, TopKLogprobs(tk.ids, tk.logprobs + 1.0))),
        (ValueRangeError, "tail_mass", lambda: D.jsd(z, TopKLogprobs(tk.ids, tk.logprobs,
                                                                     tk.tail_mass + 0.5))),
    ]
    for err, msg, fn in cases:
        with pytest.raises(err, match=msg):
            fn()


def test_minus_inf_is_zero_probability():
    z, t, _, _ = make(16)
    t[0, 0, :3] = -math.inf  # teacher: zero probability on three tokens is legal
    for kind in ("fkl", "jsd", "njsd"):
        out = call(kind, 0.5, z, t, reduction="none")
        assert torch.isfinite(out).all()
        torch.testing.assert_close(out, per_token64(kind, 0.5, z, t))
    assert math.isinf(D.reverse_kl(z, t, reduction="none")[0, 0].item())  # KL(q‖p), p = 0
    z2 = z.clone()
    z2[1, 1, :2] = -math.inf  # student: zero probability too
    torch.testing.assert_close(D.reverse_kl(z2, t, reduction="none")[1, 1],
                               per_token64("rkl", 0.5, z2, t)[1, 1])


def test_reference_softmax_sanity():
    torch.testing.assert_close(softmax64(torch.tensor([0.0, math.log(3.0)])),
                               torch.tensor([0.25, 0.75], dtype=torch.float64))


def test_two_dim_student_with_global_and_per_row_weights():
    z, ts, _, g = _teachers(17, K=2)
    z2, t2 = z[0], [t[0] for t in ts]  # [N, V] rows
    w = torch.tensor([0.25, 0.75], dtype=torch.float64)
    spec = D.DivergenceSpec("jsd", 0.5)
    a = D.multi_teacher_divergence(z2, t2, w, spec, reduction="none")
    b = D.multi_teacher_divergence(z2, t2, w.expand(3, 2).clone(), spec, reduction="none")
    want = 0.25 * D.jsd(z2, t2[0], reduction="none") + 0.75 * D.jsd(z2, t2[1], reduction="none")
    assert a.shape == (3,)
    torch.testing.assert_close(a, want)
    torch.testing.assert_close(b, want)


def test_stats_count_each_floor_once():
    z = torch.tensor([[[5.0, 0.0, -80.0, -80.0]]], dtype=torch.float64)
    lp = torch.log_softmax(torch.tensor([[[9.0, 0.0, -60.0, -70.0]]], dtype=torch.float64), -1)
    ids = torch.tensor([[[0, 1]]])
    tk = TopKLogprobs(ids, lp[..., :2], torch.zeros(1, 1))
    stats = {}
    w = torch.ones(1, 2, dtype=torch.float64) / 2
    D.multi_teacher_divergence(z, [tk, tk], w, D.DivergenceSpec("rkl"), target="mixture",
                               stats=stats)
    assert stats["count/divergence_teacher_tail_floored"] == 2  # two teachers, one position
    assert stats["count/divergence_student_tail_floored"] == 1  # student tail e^-85 < 1e-10
