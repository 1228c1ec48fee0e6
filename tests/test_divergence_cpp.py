"""The hand-written C++ row kernel of madopd.divergence (``madopd.divergence.cpp``, issue 15).

Every case builds the real kernel (a C++ compile of a few seconds, cached by inductor) and
compares float32 values and gradients with the float64 brute-force reference
(tests/reference.py). Rows are long enough (V = 2,500: three 1,024-logit blocks and a
partial vector) that the blocked log-normaliser's rescaling, an all -inf block, and the
vector tail are exercised.
"""

from __future__ import annotations

import math

import pytest
import torch
from reference import per_token64

from madopd import divergence as D
from madopd.divergence import cpp, fused
from madopd.errors import ConfigError, ValueRangeError

V = 2500


def case(seed, K, B=2, T=4):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(B, T, V, generator=g, dtype=torch.float64) * 3
    ts = [torch.randn(B, T, V, generator=g, dtype=torch.float64) * 3 for _ in range(K)]
    z[0, 0, :1100] = -math.inf  # a whole first block of -inf: the running max starts later
    z[0, 1, 2000] = 40.0  # the row's max in the last block: the running sum is rescaled
    z[1, 2, ::7] = -math.inf  # student zeros scattered (q = 0 < p: fkl +inf there)
    ts[0][0, 2, 5:900] = -math.inf  # teacher zeros (p = 0 < q: rkl +inf there)
    ts[0][1, 3, 2499] = 35.0  # the teacher's max in the vector tail
    mask = torch.rand(B, T, generator=g) > 0.2
    mask[0, 0] = mask[0, 1] = True
    w = torch.softmax(torch.randn(B, T, K, generator=g, dtype=torch.float64), -1)
    return z, ts, w, mask


def run(kind, beta, z, ts, w, mask, temperature, dtype, cpu_kernel="cpp"):
    """Values [B, T] and the gradient of Σ finite values·weights, float64."""
    stats = {}
    x = z.to(dtype).requires_grad_(True)
    tt = [t.to(dtype) for t in ts]
    spec = D.DivergenceSpec(kind, beta)
    with fused.policy(mode="compiled", on_compile_error="raise", cpu_kernel=cpu_kernel):
        if len(ts) == 1:
            v = D.divergence(x, tt[0], spec, mask=mask, reduction="none",
                             temperature=temperature, stats=stats)
        else:
            v = D.multi_teacher_divergence(x, tt, w.to(dtype), spec, mask=mask,
                                           reduction="none", temperature=temperature,
                                           stats=stats)
    ok = torch.isfinite(v.detach())
    wt = torch.arange(1.0, 1 + v.numel(), dtype=v.dtype).view_as(v)
    torch.where(ok, v * wt, 0.0).sum().backward()
    return v.detach().double(), x.grad.double(), stats


def reference(kind, beta, z, ts, w, mask, temperature):
    zr = z.clone().requires_grad_(True)
    v = sum(w[..., k] * per_token64(kind, beta, zr, t, mask, temperature)
            for k, t in enumerate(ts)) if len(ts) > 1 else \
        per_token64(kind, beta, zr, ts[0], mask, temperature)
    ok = torch.isfinite(v.detach())
    wt = torch.arange(1.0, 1 + v.numel(), dtype=v.dtype).view_as(v)
    torch.where(ok, v * wt, 0.0).sum().backward()
    return v.detach(), zr.grad


def check(kind, beta, K, dtype=torch.float32, temperature=1.0, seed=0):
    z, ts, w, mask = case(seed, K)
    if dtype != torch.float32:  # the reference sees the same rounded inputs
        z, ts = z.to(dtype).double(), [t.to(dtype).double() for t in ts]
    before = fused.RUNS["cpp"]
    v, g, stats = run(kind, beta, z, ts, w, mask, temperature, dtype)
    assert stats["count/divergence_kernel_cpp"] == 1 and fused.RUNS["cpp"] == before + 1
    assert stats["count/divergence_kernel_compiled"] == 1
    rv, rg = reference(kind, beta, z, ts, w, mask, temperature)
    torch.testing.assert_close(v, rv, atol=1e-5, rtol=2e-5)  # +inf at the same places too
    finite = torch.isfinite(rv) & mask
    gtol = dict(atol=2e-5, rtol=1e-4) if dtype == torch.float32 else dict(atol=1e-2, rtol=1e-2)
    torch.testing.assert_close(g[finite], rg[finite], **gtol)
    assert torch.isfinite(g[~mask]).all() and (g[~mask] == 0).all()
    return stats


# ----------------------------------------------------------------------------- default suite
def test_cpp_jsd_three_teachers_matches_reference():
    """JSD β = 0.5 (log-mixture form), Eq. 8 sum of K = 3, masked rows, τ = 0.7."""
    check("jsd", 0.5, 3, temperature=0.7)


def test_cpp_rkl_matches_reference_infinite_rows_included():
    """Reverse KL: the second pass's where(q > 0) keeps q = 0 cells 0 even in a +inf row."""
    z, ts, w, mask = case(1, 1)
    v, _, stats = run("rkl", 0.5, z, ts, w, mask, 1.0, torch.float32)
    assert math.isinf(v[0, 2]) and stats["count/divergence_infinite"] >= 1
    check("rkl", 0.5, 1, seed=1)


def test_cpp_bad_rows_raise_like_the_other_paths():
    z, ts, w, mask = case(2, 1)
    for bad in (math.nan, math.inf):
        zb = z.clone()
        zb[1, 1, 1500] = bad
        with pytest.raises(ValueRangeError, match=r"student_logits .* position \[b=1, t=1\]"):
            run("rkl", 0.5, zb, ts, w, None, 1.0, torch.float32)
    tb = ts[0].clone()
    tb[0, 3] = -math.inf  # a teacher row with no mass at all
    with pytest.raises(ValueRangeError, match=r"teacher .* \[b=0, t=3\]"):
        run("rkl", 0.5, z, [tb], w, None, 1.0, torch.float32)


def test_cpp_build_failure_falls_back_to_inductor_counted(monkeypatch):
    fused.reset()
    monkeypatch.setattr(fused, "_compile", lambda fn: fn)  # inductor's kernel, uncompiled

    def broken(*a, **k):
        raise RuntimeError("no C++ compiler (simulated)")

    monkeypatch.setattr(cpp, "build", broken)
    z, ts, w, mask = case(3, 1)
    x = z[:1, :2].float()
    ts = [ts[0][:1, :2]]
    try:
        with fused.policy(mode="compiled"):
            stats = {}
            with pytest.warns(RuntimeWarning, match="C.. row kernel failed"):
                got = D.reverse_kl(x, ts[0].float(), reduction="none", stats=stats)
            assert stats["count/divergence_kernel_cpp_failed"] == 1
            assert stats["count/divergence_kernel_compiled"] == 1
            assert "count/divergence_kernel_cpp" not in stats
            with fused.policy(mode="eager"):
                torch.testing.assert_close(got, D.reverse_kl(x, ts[0].float(), reduction="none"))
        fused.reset()
        with fused.policy(mode="compiled", on_compile_error="raise"):
            with pytest.raises(ConfigError, match="no C.. compiler"):
                D.reverse_kl(x, ts[0].float())
    finally:
        fused.reset()


def test_cpu_kernel_policy_is_validated_and_float64_never_uses_cpp():
    with pytest.raises(ConfigError, match="cpu_kernel"):
        fused.KernelPolicy(cpu_kernel="asm")
    assert not cpp.supported(torch.float64, torch.float64, [torch.float64], "cpu")
    assert not cpp.supported(torch.float32, torch.float32, [torch.float32], "cuda")
    assert not cpp.supported(torch.float32, torch.float32, [torch.float32, torch.bfloat16],
                             "cpu")
    assert cpp.supported(torch.float32, torch.bfloat16, [torch.float16], "cpu")
    assert cpp.uses_log_m("jsd", 0.5) and not cpp.uses_log_m("njsd", 0.1)
    assert not cpp.uses_log_m("fkl", 0.5)


# ----------------------------------------------------------------------------- every kernel
@pytest.mark.slow
@pytest.mark.parametrize("K", [1, 3])
@pytest.mark.parametrize("kind,beta", [("fkl", 0.5), ("rkl", 0.5), ("jsd", 0.3),
                                       ("njsd", 0.5), ("jsd", 0.1), ("njsd", 0.9)])
def test_cpp_every_kind_matches_reference(kind, beta, K):
    """Both JSD forms (log mixture at 0.2 <= β <= 0.8, exp + log1p outside), K = 1 and 3."""
    check(kind, beta, K, temperature=0.7 if K == 3 else 1.0)


@pytest.mark.slow
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("kind", ["fkl", "njsd"])
def test_cpp_half_inputs_read_as_they_are(kind, dtype):
    check(kind, 0.5, 1, dtype=dtype)


@pytest.mark.slow
def test_cpp_values_without_gradient():
    """A student that needs no gradient builds the value-only kernel (no gradient pass)."""
    z, ts, w, mask = case(4, 1)
    with fused.policy(mode="compiled", on_compile_error="raise"):
        stats = {}
        v = D.jsd(z.float(), ts[0].float(), mask=mask, reduction="none", stats=stats)
    assert stats["count/divergence_kernel_cpp"] == 1
    torch.testing.assert_close(v.double(), per_token64("jsd", 0.5, z, ts[0], mask),
                               atol=1e-5, rtol=2e-5)
