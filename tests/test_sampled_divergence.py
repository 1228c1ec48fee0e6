"""Sampled-token reverse KL (madopd.divergence.sampled) against float64 brute force."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from madopd.divergence import DivergenceSpec, reverse_kl, sampled_token_reverse_kl
from madopd.errors import ConfigError
from madopd.types import AlignedLogprobs, TopKLogprobs


def _setup(seed=0, B=2, T=3, V=5, K=2):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(B, T, V, generator=g, dtype=torch.float64) * 2
    ts = [torch.randn(B, T, V, generator=g, dtype=torch.float64) * 2 for _ in range(K)]
    w = torch.rand(B, K, generator=g, dtype=torch.float64) + 0.1
    w = w / w.sum(-1, keepdim=True)
    ids = torch.randint(0, V, (B, T), generator=g)
    return z, ts, w, ids


def _brute(z, ts, w, ids, mask, tau=1.0):
    """Per-token value and ∂loss_sum/∂z by explicit float64 loops."""
    B, T, V = z.shape
    val = torch.zeros(B, T, dtype=torch.float64)
    grad = torch.zeros(B, T, V, dtype=torch.float64)
    for b, t in itertools.product(range(B), range(T)):
        if not mask[b, t]:
            continue
        q = [math.exp(x) for x in torch.log_softmax(z[b, t] / tau, -1).tolist()]
        y = int(ids[b, t])
        d = 0.0
        for k, tk in enumerate(ts):
            lp = torch.log_softmax(tk[b, t] / tau, -1)[y].item()
            d += float(w[b, k]) * (math.log(q[y]) - lp)
        val[b, t] = d
        for j in range(V):  # ∂ log q_y / ∂ z_j = ([j = y] - q_j) / τ
            grad[b, t, j] = d * ((1.0 if j == y else 0.0) - q[j]) / tau
    return val, grad


@pytest.mark.parametrize("tau", [1.0, 0.7])
def test_value_and_gradient_equal_float64_brute_force(tau):
    z, ts, w, ids = _setup()
    mask = torch.tensor([[True, True, False], [True, False, True]])
    zz = z.clone().requires_grad_(True)
    out = sampled_token_reverse_kl(zz, ts, w, ids, mask=mask, temperature=tau, reduction="none")
    out.sum().backward()
    val, grad = _brute(z, ts, w, ids, mask, tau)
    torch.testing.assert_close(out.detach(), val, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(zz.grad, grad, rtol=1e-12, atol=1e-12)


def test_expectation_over_the_student_is_the_exact_reverse_kl_and_its_gradient():
    """Σ_y q(y) δ(y) = KL(q ‖ p) and Σ_y q(y) ∇loss(y) = ∇ KL(q ‖ p), enumerating y."""
    z, ts, _, _ = _setup(seed=3, B=1, T=1, V=6, K=1)
    q = torch.softmax(z, -1)[0, 0]
    exp_val = torch.zeros((), dtype=torch.float64)
    exp_grad = torch.zeros_like(z)
    for y in range(z.shape[-1]):
        zz = z.clone().requires_grad_(True)
        out = sampled_token_reverse_kl(zz, ts, torch.ones(1, 1, dtype=torch.float64),
                                       torch.tensor([[y]]), reduction="sum")
        out.backward()
        exp_val += q[y] * out.detach()
        exp_grad += q[y] * zz.grad
    zr = z.clone().requires_grad_(True)
    exact = reverse_kl(zr, ts[0], reduction="sum")
    exact.backward()
    torch.testing.assert_close(exp_val, exact.detach(), rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(exp_grad, zr.grad, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("reduction", ["token_mean", "sequence_mean", "sum"])
def test_reductions(reduction):
    z, ts, w, ids = _setup(seed=1)
    mask = torch.tensor([[True, True, False], [True, False, False]])
    none = sampled_token_reverse_kl(z, ts, w, ids, mask=mask, reduction="none")
    got = sampled_token_reverse_kl(z, ts, w, ids, mask=mask, reduction=reduction)
    want = {"sum": none.sum(), "token_mean": none.sum() / 3,
            "sequence_mean": (none[0].sum() / 2 + none[1].sum()) / 2}[reduction]
    torch.testing.assert_close(got, want)


def test_topk_teacher_missing_the_token_gives_its_weight_to_the_others_and_is_counted():
    z, ts, w, ids = _setup(seed=2, B=1, T=3, V=5, K=2)
    lp1 = torch.log_softmax(ts[1], -1)
    ids_k = torch.stack([ids[0], (ids[0] + 1) % 5, (ids[0] + 2) % 5], -1)[None]  # [1, 3, 3]
    ids_k[0, 1] = torch.tensor([(int(ids[0, 1]) + j) % 5 for j in (1, 2, 3)])  # t=1: y absent
    top = TopKLogprobs(ids_k, lp1.gather(-1, ids_k))
    stats = {}
    got, per = sampled_token_reverse_kl(z, [ts[0], top], w, ids, reduction="none", stats=stats,
                                        return_per_teacher=True)
    full = sampled_token_reverse_kl(z, ts, w, ids, reduction="none")
    only0 = sampled_token_reverse_kl(z, [ts[0]], w[:, :1], ids, reduction="none")
    torch.testing.assert_close(got[0, [0, 2]], full[0, [0, 2]])
    torch.testing.assert_close(got[0, 1], only0[0, 1])  # teacher 1 unknown: all weight on 0
    assert stats["count/srkl_teacher_unknown"] == 1 and per[0, 1, 1] == 0


def test_aligned_spans_single_tokens_equal_dense_and_longer_spans_sum_exactly():
    z, ts, _, ids = _setup(seed=4, B=1, T=4, V=7, K=1)
    lp = torch.log_softmax(ts[0], -1).gather(-1, ids[..., None]).squeeze(-1)  # [1, 4]
    one = AlignedLogprobs(torch.arange(4)[None], lp.clone())
    w = torch.ones(1, 1, dtype=torch.float64)
    dense = sampled_token_reverse_kl(z, ts, w, ids, reduction="none")
    torch.testing.assert_close(sampled_token_reverse_kl(z, [one], w, ids, reduction="none"),
                               dense, rtol=0, atol=1e-12)
    # tokens 1 and 2 form one span with teacher log-prob P; token 3 is masked (-1)
    P = -3.25
    span = AlignedLogprobs(torch.tensor([[0, 1, 1, -1]]),
                           torch.tensor([[float(lp[0, 0]), P]], dtype=torch.float64))
    stats = {}
    got = sampled_token_reverse_kl(z, [span], w, ids, reduction="none", stats=stats)
    q = torch.log_softmax(z, -1).gather(-1, ids[..., None]).squeeze(-1)
    assert got[0, 0] == pytest.approx(float(dense[0, 0]), abs=1e-12)
    assert float(got[0, 1] + got[0, 2]) == pytest.approx(float(q[0, 1] + q[0, 2]) - P, abs=1e-12)
    assert float(got[0, 1]) == pytest.approx(float(got[0, 2]), abs=1e-12)  # shared ratio
    assert got[0, 3] == 0 and stats["count/srkl_tokens_unscored"] == 1


def test_spec_and_dense_api_name_the_sampled_kind():
    assert DivergenceSpec("srkl").sampled and not DivergenceSpec("rkl").sampled
    z, ts, _, _ = _setup()
    with pytest.raises(ConfigError, match="sampled_token_reverse_kl"):
        reverse_kl.__globals__["_one"]("srkl", 1.0, z, ts[0], None, 1.0, "sum", None, 0.0, None)


def test_distiller_step_with_srkl_matches_its_record(tiny_dirs):
    """MT-OPD steps with divergence='srkl' (two teachers, confidence-free weights): the loss
    is the token mean of Σ_k w_k δ_k recomputed in float64 from the record's per-token
    log ratios; mixture targets are refused."""
    from distill_helpers import make_cfg, make_task

    from madopd.distill import Distiller

    cfg = make_cfg(tiny_dirs, "mt_opd", divergence="srkl", batch_size=2, verify_train=False)
    d = Distiller.from_config(cfg, make_task())
    for _ in range(2):
        rec = d.step()
        tot, n = 0.0, 0
        for w, div in zip(rec.weights, rec.per_token_divergence):
            per_tok = [sum(wk * dk for wk, dk in zip(w, dd)) for dd in div]
            tot, n = tot + sum(per_tok), n + len(per_tok)
        assert math.isfinite(rec.loss) and rec.loss == pytest.approx(tot / n, rel=1e-5)
        assert any(dk < 0 for div in rec.per_token_divergence for dd in div for dk in dd)
    with pytest.raises(ConfigError, match="srkl"):
        make_cfg(tiny_dirs, "opd", divergence="srkl", target="mixture")
