"""Exact zeros (issue 13 item 4) and the fused kernel path (issue 15) of madopd.divergence.

p = teacher, q = student. Masked vocabularies: -inf logits are probability 0, on either side
or both, for dense and top-k teachers. Values and gradients must equal the float64
brute-force reference (tests/reference.py). A divergence is legitimately +inf where the
"from" distribution has mass the other lacks (forward KL: q = 0 < p; reverse KL: p = 0 < q);
those rows are compared as +inf and left out of the gradient comparison (the gradient of +inf
is not a number; see docs/performance.md, "Infinite values").

The fused kernel is exercised uncompiled (``madopd.divergence.fused._compile`` patched to the
identity: the same function the compiler gets) so the default suite pays no compile time;
one test compiles for real.
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from reference import per_token64, softmax64

from madopd import divergence as D
from madopd.divergence import fused
from madopd.errors import ConfigError
from madopd.types import TopKLogprobs

FAST = settings(max_examples=30, deadline=None)
# the `uncompiled` fixture only patches a module attribute: sharing it across examples is safe
FAST_FIXTURE = settings(max_examples=30, deadline=None,
                        suppress_health_check=[HealthCheck.function_scoped_fixture])
KINDS = ["fkl", "rkl", "jsd", "njsd"]


@pytest.fixture
def uncompiled(monkeypatch):
    """The fused path with the kernel run as plain torch (no compile cost)."""
    fused.reset()
    monkeypatch.setattr(fused, "_compile", lambda fn: fn)
    old = fused.set_policy(mode="compiled")
    yield
    fused.set_policy(old)
    fused.reset()


def masked_case(seed, sides, B=2, T=3, V=7, k=None):
    """Random logits with random vocabulary entries set to -inf on `sides`."""
    g = torch.Generator().manual_seed(seed)
    s = float(torch.empty(1).uniform_(0.3, 4.0, generator=g))
    z = torch.randn(B, T, V, generator=g, dtype=torch.float64) * s
    t = torch.randn(B, T, V, generator=g, dtype=torch.float64) * s
    for x, side in ((t, "teacher"), (z, "student")):
        if sides in (side, "both"):
            drop = torch.rand(B, T, V, generator=g) < 0.45
            drop[..., int(torch.randint(V, (1,), generator=g))] = False  # never all -inf
            x.masked_fill_(drop, -math.inf)
    mask = torch.rand(B, T, generator=g) > 0.25
    mask[0, 0] = True
    teacher = t
    if k is not None:  # top-k of the (masked) teacher: -inf log-probs among the ids
        lp = torch.log_softmax(t, -1)
        ids = torch.argsort(torch.rand(t.shape, generator=g), -1)[..., :k]
        lpk = lp.gather(-1, ids)
        teacher = TopKLogprobs(ids, lpk, (1 - lpk.exp().sum(-1)).clamp_min(0))
    return z, teacher, mask, g


def beta_for(kind, g):
    return float(torch.empty(1).uniform_(0.05, 0.95, generator=g)) if kind in ("jsd", "njsd") \
        else 0.5


def check_against_reference(kind, beta, z, teacher, mask, temperature, chunk):
    spec = D.DivergenceSpec(kind, beta)
    ref = per_token64(kind, beta, z, teacher, mask, temperature)  # [B, T], +inf allowed
    x = z.clone().requires_grad_(True)
    got = D.divergence(x, teacher, spec, mask=mask, reduction="none", temperature=temperature,
                       chunk_size=chunk)
    torch.testing.assert_close(got, ref, atol=1e-9, rtol=1e-7)  # inf == inf positions too
    finite = torch.isfinite(ref)
    w = torch.arange(1.0, 1 + ref.numel(), dtype=torch.float64).view_as(ref)
    torch.where(finite, got * w, 0.0).sum().backward()
    xr = z.clone().requires_grad_(True)
    ref_rows = per_token64(kind, beta, xr, teacher, mask, temperature)
    torch.where(finite, ref_rows * w, 0.0).sum().backward()
    keep = finite if mask is None else finite & mask
    torch.testing.assert_close(x.grad[keep], xr.grad[keep], atol=1e-9, rtol=1e-7)
    assert torch.isfinite(x.grad).all()  # zero-weight rows (infinite ones too) get 0
    return got, ref


# ----------------------------------------------------------------------------- reference
def test_reference_handles_infinite_logits():
    inf = math.inf
    torch.testing.assert_close(softmax64(torch.tensor([0.0, -inf, math.log(3.0)])),
                               torch.tensor([0.25, 0.0, 0.75], dtype=torch.float64))
    torch.testing.assert_close(softmax64(torch.tensor([inf, 5.0, inf])),
                               torch.tensor([0.5, 0.0, 0.5], dtype=torch.float64))
    # p = (1/2, 1/2), q = (1, 0): hand values with m = β p + (1 - β) q
    z = torch.tensor([[[0.0, -inf]]], dtype=torch.float64)
    t = torch.tensor([[[0.0, 0.0]]], dtype=torch.float64)
    for beta in (0.5, 0.9):
        m = (beta * 0.5 + (1 - beta), beta * 0.5)
        jsd = beta * (0.5 * math.log(0.5 / m[0]) + 0.5 * math.log(0.5 / m[1])) \
            + (1 - beta) * math.log(1 / m[0])
        assert per_token64("jsd", beta, z, t).item() == pytest.approx(jsd, rel=1e-12)
        assert per_token64("njsd", beta, z, t).item() == pytest.approx(
            jsd / (beta * (1 - beta)), rel=1e-12)
    assert per_token64("rkl", 0.5, z, t).item() == pytest.approx(math.log(2), rel=1e-12)
    assert per_token64("fkl", 0.5, z, t).item() == math.inf  # KL(p‖q), q = 0 < p


# ----------------------------------------------------------------------------- the issue's cases
@pytest.mark.parametrize("path", ["eager", "fused"])
def test_issue_cases_student_and_teacher_minus_inf(path, request):
    """JSD β = 0.5 with a student -inf logit, normalised JSD β = 0.9 with a teacher -inf:
    the old code turned an ∞ - ∞ NaN into 0 (values 0.092 / 0.32 instead of 0.293 / 1.80)."""
    if path == "fused":
        request.getfixturevalue("uncompiled")
    g = torch.Generator().manual_seed(0)
    z = torch.randn(1, 2, 5, generator=g, dtype=torch.float64) * 2
    t = torch.randn(1, 2, 5, generator=g, dtype=torch.float64) * 2
    zs = z.clone()
    zs[0, :, 1] = -math.inf
    got, _ = check_against_reference("jsd", 0.5, zs, t, None, 1.0, None)
    assert (got > 0.05).all()
    tt = t.clone()
    tt[0, :, 2] = -math.inf
    check_against_reference("njsd", 0.9, z, tt, None, 1.0, None)
    # a teacher that is one-hot on a token the student has: JSD -> the bound side
    zo, to = torch.zeros(1, 1, 2, dtype=torch.float64), torch.tensor([[[0.0, -math.inf]]])
    check_against_reference("njsd", 0.9, zo, to.double(), None, 1.0, None)


# ----------------------------------------------------------------------------- properties
@FAST
@given(seed=st.integers(0, 2**31 - 1), kind=st.sampled_from(KINDS),
       sides=st.sampled_from(["teacher", "student", "both"]),
       k=st.sampled_from([None, None, 1, 3, 7]), chunk=st.sampled_from([None, 1, 2]),
       temperature=st.sampled_from([1.0, 1.0, 0.7]))
def test_masked_vocabularies_match_reference_eager(seed, kind, sides, k, chunk, temperature):
    if k is not None:
        temperature = 1.0  # top-k teachers allow τ = 1 only
    z, teacher, mask, g = masked_case(seed, sides, k=k)
    with fused.policy(mode="eager"):
        check_against_reference(kind, beta_for(kind, g), z, teacher, mask, temperature, chunk)


@FAST_FIXTURE
@given(seed=st.integers(0, 2**31 - 1), kind=st.sampled_from(KINDS),
       sides=st.sampled_from(["teacher", "student", "both"]), chunk=st.sampled_from([None, 1, 2]),
       temperature=st.sampled_from([1.0, 0.7]))
def test_masked_vocabularies_match_reference_fused(uncompiled, seed, kind, sides, chunk,
                                                   temperature):
    z, teacher, mask, g = masked_case(seed, sides)
    check_against_reference(kind, beta_for(kind, g), z, teacher, mask, temperature, chunk)


@FAST_FIXTURE
@given(seed=st.integers(0, 2**31 - 1), kind=st.sampled_from(KINDS),
       sides=st.sampled_from(["none", "teacher", "student", "both"]), masked=st.booleans(),
       K=st.sampled_from([1, 3]), reduction=st.sampled_from(["none", "token_mean", "sum"]))
def test_fused_equals_eager_and_chunked_equals_plain(uncompiled, seed, kind, sides, masked, K,
                                                     reduction):
    z, t, mask, g = masked_case(seed, sides, B=2, T=4, V=9)
    ts = [t] + [masked_case(seed + i, sides, B=2, T=4, V=9)[1] for i in (1, 2)][:K - 1]
    w = torch.softmax(torch.randn(2, K, generator=g, dtype=torch.float64), -1)
    spec = D.DivergenceSpec(kind, beta_for(kind, g))
    mask = mask if masked else None
    outs = []
    for mode, chunk in (("eager", None), ("compiled", None), ("compiled", 1), ("compiled", 3)):
        x = z.clone().requires_grad_(True)
        with fused.policy(mode=mode):
            out = D.multi_teacher_divergence(x, ts, w, spec, mask=mask, reduction=reduction,
                                             chunk_size=chunk)
        ok = torch.isfinite(out.detach())
        torch.where(ok, out, 0.0).sum().backward()
        outs.append((out.detach(), x.grad))
    for o, gr in outs[1:]:
        torch.testing.assert_close(o, outs[0][0], atol=1e-12, rtol=1e-10)
        torch.testing.assert_close(gr, outs[0][1], atol=1e-12, rtol=1e-10, equal_nan=True)


# ----------------------------------------------------------------------------- infinite values
@pytest.mark.parametrize("mode", ["eager", "compiled"])
def test_infinite_values_are_reported_and_counted(uncompiled, mode):
    """fkl is +inf where q = 0 < p, rkl where p = 0 < q; JSD never is. Reported as +inf
    (never clamped), counted in stats; forward KL's gradient is its finite limit (q - p)/τ."""
    z = torch.tensor([[[0.0, 1.0, -math.inf], [0.0, 1.0, 2.0]]], dtype=torch.float64)
    t = torch.tensor([[[0.0, 0.5, 0.2], [0.0, -math.inf, 1.0]]], dtype=torch.float64)
    with fused.policy(mode=mode):
        for kind, inf_row in (("fkl", 0), ("rkl", 1)):
            stats = {}
            x = z.clone().requires_grad_(True)
            v = D.divergence(x, t, D.DivergenceSpec(kind), reduction="none", stats=stats)
            assert math.isinf(v[0, inf_row].item()) and math.isfinite(v[0, 1 - inf_row].item())
            assert stats["count/divergence_infinite"] == 1
            assert D.divergence(z, t, D.DivergenceSpec(kind), reduction="sum").item() == math.inf
            if kind == "fkl":
                v.sum().backward()
                want = torch.softmax(z[0, 0], -1) - torch.softmax(t[0, 0], -1)
                torch.testing.assert_close(x.grad[0, 0], want)
        for kind in ("jsd", "njsd"):
            assert torch.isfinite(D.divergence(z, t, D.DivergenceSpec(kind, 0.3),
                                               reduction="none")).all()


# ----------------------------------------------------------------------------- policy
def test_auto_policy_stays_eager_below_threshold_and_counts_paths():
    z = torch.randn(2, 3, 6)
    stats = {}
    before = fused.RUNS["eager"]
    assert fused.get_policy().mode == "auto"
    D.jsd(z, torch.randn(2, 3, 6), stats=stats)  # 36 logits: far below min_logits
    assert stats["count/divergence_kernel_eager"] == 1
    assert "count/divergence_kernel_compiled" not in stats
    assert fused.RUNS["eager"] == before + 1
    tk = TopKLogprobs(torch.zeros(2, 3, 1, dtype=torch.long), torch.full((2, 3, 1), -0.1))
    with fused.policy(mode="compiled", min_logits=0):  # top-k targets always run op-by-op
        D.jsd(z, tk, stats=stats)
    assert stats["count/divergence_kernel_eager"] == 2
    with pytest.raises(ConfigError, match="mode"):
        fused.KernelPolicy(mode="fast")


def test_compile_failure_falls_back_counted_or_raises(monkeypatch):
    fused.reset()

    def broken(fn):
        def run(*a, **k):
            raise RuntimeError("no C compiler (simulated)")
        return run

    monkeypatch.setattr(fused, "_compile", broken)
    z, t = torch.randn(2, 3, 6, dtype=torch.float64), torch.randn(2, 3, 6, dtype=torch.float64)
    want = D.jsd(z, t, reduction="none")
    try:
        with fused.policy(mode="compiled"):
            stats = {}
            with pytest.warns(RuntimeWarning, match="compile failed"):
                got = D.jsd(z, t, reduction="none", stats=stats)
            torch.testing.assert_close(got, want)
            assert stats["count/divergence_kernel_compile_failed"] == 1
            assert stats["count/divergence_kernel_eager"] == 1
        fused.reset()
        with fused.policy(mode="compiled", on_compile_error="raise"):
            with pytest.raises(ConfigError, match="torch.compile"):
                D.jsd(z, t)
    finally:
        fused.reset()


def test_compiled_kernel_really_compiles_and_matches_eager():
    """One real torch.compile (fkl: the cheapest kernel, a few seconds): values, gradients,
    masked rows and bf16 input equal the op-by-op path. (Pinned to inductor's kernel: the
    C++ row kernel, the CPU default, has its own tests in test_divergence_cpp.py.)"""
    fused.reset()
    g = torch.Generator().manual_seed(1)
    z = torch.randn(3, 5, 40, generator=g) * 3
    t = torch.randn(3, 5, 40, generator=g) * 3
    t[..., :4] = -math.inf
    mask = torch.rand(3, 5, generator=g) > 0.3
    res = {}
    for mode in ("eager", "compiled"):
        with fused.policy(mode=mode, on_compile_error="raise", cpu_kernel="inductor"):
            stats = {}
            x = z.clone().bfloat16().requires_grad_(True)
            v = D.forward_kl(x, t.bfloat16(), mask=mask, reduction="none", stats=stats)
            (v * torch.arange(15.0).view(3, 5)).sum().backward()
            res[mode] = (v.detach(), x.grad.float())
            assert stats[f"count/divergence_kernel_{mode}"] == 1
    torch.testing.assert_close(res["compiled"][0], res["eager"][0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(res["compiled"][1], res["eager"][1], atol=1e-2, rtol=1e-2)
    fused.reset()
