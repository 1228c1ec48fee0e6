"""Variance of the sampled-token reverse KL against the exact reverse KL (toy models).

For random student/teacher logits over V tokens at N positions, draws y ~ q S times per
position and compares the one-sample estimate (value δ = log q(y) - log p(y), gradient
δ ∇ log q(y)) with the exact KL(q ‖ p) and its gradient. Prints ratios (machine independent):
  mean ratio      E[δ] / KL                    (1 = unbiased)
  value rel. sd   sd(δ) / KL                   (spread of one sample per token)
  grad rel. mse   E‖g_s - g‖² / ‖g‖²           (one sample per token)
  grad cos        cos(mean of S·N sample grads, exact grad) over a batch of N tokens
Run: PYTHONPATH=. python benchmarks/bench_sampled_rkl.py
"""

from __future__ import annotations

import torch

from madopd.divergence import reverse_kl, sampled_token_reverse_kl


def one_setting(V: int, gap: float, N: int = 64, S: int = 256, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(1, N, V, generator=g, dtype=torch.float64) * 2
    t = z + gap * torch.randn(1, N, V, generator=g, dtype=torch.float64)
    zr = z.clone().requires_grad_(True)
    exact = reverse_kl(zr, t, reduction="none")[0]  # [N]
    exact.sum().backward()
    exact = exact.detach()
    g_exact = zr.grad[0]  # [N, V]
    q = torch.softmax(z, -1)[0]
    vals, errs, g_mean = [], [], torch.zeros_like(g_exact)
    for _ in range(S):
        ids = torch.multinomial(q, 1, generator=g).T  # [1, N]
        zs = z.clone().requires_grad_(True)
        v = sampled_token_reverse_kl(zs, [t], torch.ones(1, 1, dtype=torch.float64), ids,
                                     reduction="none")[0]
        v.sum().backward()
        vals.append(v.detach())
        gs = zs.grad[0]
        errs.append(((gs - g_exact) ** 2).sum(-1) / (g_exact ** 2).sum(-1))
        g_mean += gs / S
    vals = torch.stack(vals)  # [S, N]
    cos = torch.nn.functional.cosine_similarity(g_mean.flatten(), g_exact.flatten(), dim=0)
    return {"V": V, "gap": gap, "exact_kl": float(exact.mean()),
            "mean_ratio": float(vals.mean() / exact.mean()),
            "value_rel_sd": float((vals.std(0) / exact).median()),
            "grad_rel_mse": float(torch.stack(errs).mean(0).median()),
            "grad_cos_batch": float(cos)}


def main() -> None:
    print(f"{'V':>6} {'gap':>5} {'KL':>8} {'mean ratio':>10} {'value rel sd':>12} "
          f"{'grad rel mse':>12} {'grad cos(S*N)':>13}")
    for V in (64, 4096):
        for gap in (0.3, 1.0, 3.0):
            r = one_setting(V, gap)
            print(f"{V:>6} {gap:>5} {r['exact_kl']:>8.4f} {r['mean_ratio']:>10.3f} "
                  f"{r['value_rel_sd']:>12.2f} {r['grad_rel_mse']:>12.2f} "
                  f"{r['grad_cos_batch']:>13.3f}")


if __name__ == "__main__":
    main()
