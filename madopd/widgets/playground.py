"""Divergence playground (no model): a student fitted to a teacher under FKL, RKL and JSD(β).

The teacher is a distribution over ~8-12 outcomes (dragged in the browser). Each divergence gets
its own student, optimised by Adam on its parameters with the *analytic* logit gradients of
``divmath.dense`` (chain rule to the parameters):

- ``family="gaussian"`` (default): student logits z_i = −(i−μ)²/(2σ²), σ ∈ [σ_min, σ_max].
  A unimodal student facing a bimodal teacher shows the textbook picture: forward KL covers
  both modes (wide, centred), reverse KL sits on the dominant mode (paper Lemma 2), JSD(β) in
  between. (With free logits every divergence has the same optimum q = p.)
- ``family="free"``: one logit per outcome; all reach p, at different speeds — watch the
  ‖∇_z D‖_∞ trace (paper Lemma 1 / Prop. 1: JSD's is bounded, reverse KL's is not).

The same simulation runs in ``widgets/playground.js``; the payload carries reference values
computed by ``madopd.divergence`` (torch autograd for the gradients) so tests can check the JS
math against the library to 1e-6.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from madopd.errors import ValueRangeError
from madopd.widgets import divmath
from madopd.widgets.style import esc, fmt, teacher_color

KINDS = ("fkl", "rkl", "jsd")
KIND_LABELS = {"fkl": "forward KL(p‖q)", "rkl": "reverse KL(q‖p)", "jsd": "JSD(β)",
               "njsd": "normalised JSD(β)"}
KIND_COLORS = {"fkl": "#0072B2", "rkl": "#D55E00", "jsd": "#009E73", "njsd": "#CC79A7"}
# Bimodal teacher: a minor mode at 2 and a dominant one at 9, with a low valley in between.
DEFAULT_TEACHER = (0.01, 0.08, 0.25, 0.08, 0.01, 0.01, 0.01, 0.06, 0.17, 0.34, 0.12, 0.01)
ADAM = {"b1": 0.9, "b2": 0.999, "eps": 1e-8}


def playground_payload(teacher_probs: Sequence[float] = DEFAULT_TEACHER, *,
                       labels: Sequence[str] | None = None, family: str = "gaussian",
                       init: Sequence[float] | None = None, beta: float = 0.5,
                       temperature: float = 1.0, lr: float = 0.05, sigma_range=(0.4, 2.5),
                       with_reference: bool = True) -> dict:
    """JSON payload for the playground widget and its static render."""
    p = [float(x) for x in teacher_probs]
    if not 2 <= len(p) <= 32:
        raise ValueRangeError(f"teacher_probs: expected 2..32 outcomes, got {len(p)}")
    if any(not math.isfinite(x) or x <= 0 for x in p):
        raise ValueRangeError("teacher_probs: every probability must be finite and > 0")
    s = sum(p)
    p = [x / s for x in p]
    if family not in ("gaussian", "free"):
        raise ValueRangeError(f"family must be 'gaussian' or 'free', got {family!r}")
    if not 0.0 < beta < 1.0:
        raise ValueRangeError(f"beta must be in (0, 1) for JSD, got {beta}")
    if temperature <= 0:
        raise ValueRangeError(f"temperature must be > 0, got {temperature}")
    n = len(p)
    if init is None:
        init = [(n - 1) / 2.0, math.log(sigma_range[1])] if family == "gaussian" else [0.0] * n
    payload = {
        "kind": "playground", "version": 1,
        "labels": [str(x) for x in (labels or range(n))],
        "teacher_probs": p, "family": family, "init": [float(x) for x in init],
        "beta": float(beta), "temperature": float(temperature), "lr": float(lr),
        "sigma_range": [float(sigma_range[0]), float(sigma_range[1])], "adam": dict(ADAM),
        "kinds": list(KINDS), "kind_labels": KIND_LABELS, "kind_colors": KIND_COLORS,
        "static_steps": 300,
    }
    if with_reference:
        payload["reference"] = reference_cases()
    return payload


# ------------------------------------------------------------------------ student families
def student_logits(payload: dict, theta: Sequence[float]) -> list[float]:
    n = len(payload["teacher_probs"])
    if payload["family"] == "free":
        return list(theta)
    mu, log_sigma = theta
    inv = 1.0 / (2.0 * math.exp(2.0 * log_sigma))
    return [-(i - mu) * (i - mu) * inv for i in range(n)]


def param_grad(payload: dict, theta: Sequence[float], gz: Sequence[float]) -> list[float]:
    """Chain rule dD/dθ = Σ_i dD/dz_i · dz_i/dθ (identity for free logits)."""
    if payload["family"] == "free":
        return list(gz)
    mu, log_sigma = theta
    sig2 = math.exp(2.0 * log_sigma)
    g_mu = sum(g * (i - mu) / sig2 for i, g in enumerate(gz))
    g_ls = sum(g * (i - mu) * (i - mu) / sig2 for i, g in enumerate(gz))
    return [g_mu, g_ls]


def project(payload: dict, theta: list[float]) -> list[float]:
    """Keep the Gaussian student inside its family (μ on the outcome range, σ in sigma_range)."""
    if payload["family"] == "free":
        return theta
    n = len(payload["teacher_probs"])
    lo, hi = (math.log(x) for x in payload["sigma_range"])
    return [min(n - 1.0, max(0.0, theta[0])), min(hi, max(lo, theta[1]))]


def simulate(payload: dict, kind: str, steps: int) -> dict:
    """Run ``steps`` Adam steps for one divergence; returns the final student and the traces."""
    tl = [math.log(x) for x in payload["teacher_probs"]]
    a, lr = payload["adam"], payload["lr"]
    theta = list(payload["init"])
    m = [0.0] * len(theta)
    v = [0.0] * len(theta)
    values, grad_inf = [], []
    for t in range(1, steps + 1):
        r = divmath.dense(tl, student_logits(payload, theta),
                          temperature=payload["temperature"], beta=payload["beta"])
        values.append(r["values"][kind])
        grad_inf.append(r["grad_inf"][kind])
        g = param_grad(payload, theta, r["grads"][kind])
        for j in range(len(theta)):
            m[j] = a["b1"] * m[j] + (1 - a["b1"]) * g[j]
            v[j] = a["b2"] * v[j] + (1 - a["b2"]) * g[j] * g[j]
            mh = m[j] / (1 - a["b1"] ** t)
            vh = v[j] / (1 - a["b2"] ** t)
            theta[j] -= lr * mh / (math.sqrt(vh) + a["eps"])
        theta = project(payload, theta)
    q = divmath.softmax(student_logits(payload, theta), payload["temperature"])
    return {"theta": theta, "q": q, "values": values, "grad_inf": grad_inf}


# ------------------------------------------------------------------------ reference values
REFERENCE_INPUTS = (
    # (teacher logits, student logits, temperature, beta): fixed inputs the JS must reproduce.
    ([2.0, 0.5, -1.0, 0.0, 1.5, -3.0, 0.2, 0.9], [0.1, 1.2, -0.4, 2.2, -1.0, 0.0, 0.3, -2.5], 1.0, 0.5),
    ([3.0, -2.0, -2.0, 4.0, -6.0, 0.0], [0.0, 0.0, 0.0, 0.0, 0.0, 0.0], 0.7, 0.3),
    ([9.0, -9.0, 0.0, 1.0, -4.0, 2.0, 0.5, -0.5, 3.0, -1.0], [-3.0, 5.0, 0.2, 0.1, 2.0, -2.0, 1.0, 0.0, 0.0, 4.0], 1.5, 0.9),
)


def reference_cases() -> list[dict]:
    """Values and logit gradients from ``madopd.divergence`` (float64, autograd) for fixed inputs."""
    import torch

    from madopd import divergence as D

    fns = {"fkl": lambda s, t, T, b: D.forward_kl(s, t, temperature=T, reduction="sum"),
           "rkl": lambda s, t, T, b: D.reverse_kl(s, t, temperature=T, reduction="sum"),
           "jsd": lambda s, t, T, b: D.jsd(s, t, beta=b, temperature=T, reduction="sum"),
           "njsd": lambda s, t, T, b: D.normalized_jsd(s, t, beta=b, temperature=T,
                                                        reduction="sum")}
    cases = []
    for tl, sl, temp, beta in REFERENCE_INPUTS:
        case = {"teacher_logits": tl, "student_logits": sl, "temperature": temp, "beta": beta,
                "values": {}, "grads": {}}
        for kind, fn in fns.items():
            s = torch.tensor([sl], dtype=torch.float64, requires_grad=True)  # [N=1, V]
            t = torch.tensor([tl], dtype=torch.float64)
            val = fn(s, t, temp, beta)
            (grad,) = torch.autograd.grad(val, s)
            case["values"][kind] = float(val.detach())
            case["grads"][kind] = [float(x) for x in grad[0]]
        cases.append(case)
    return cases


# ------------------------------------------------------------------------ static render
def _bars_svg(p: list[float], q: list[float], color: str, labels: list[str]) -> str:
    w, hgt, n = 300, 110, len(p)
    bw = w / n
    top = max(max(p), max(q)) or 1.0
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{hgt + 14}" '
             f'role="img" style="display:block">']
    for i in range(n):
        hp, hq = hgt * p[i] / top, hgt * q[i] / top
        x = i * bw
        parts.append(f'<rect x="{x + 1:.1f}" y="{hgt - hq:.1f}" width="{bw - 2:.1f}" '
                     f'height="{hq:.1f}" fill="{color}" fill-opacity="0.75"/>')
        parts.append(f'<rect x="{x + 1:.1f}" y="{hgt - hp:.1f}" width="{bw - 2:.1f}" '
                     f'height="{hp:.1f}" fill="none" stroke="#333" stroke-width="1.2"/>')
        parts.append(f'<text x="{x + bw / 2:.1f}" y="{hgt + 11}" font-size="9" '
                     f'text-anchor="middle">{esc(labels[i])}</text>')
    parts.append("</svg>")
    return "".join(parts)


def render_playground_html(payload: dict) -> str:
    """Inline-styled HTML: per divergence, the teacher (outline) and the fitted student (filled)."""
    p, labels = payload["teacher_probs"], payload["labels"]
    panels = []
    for kind in payload["kinds"]:
        sim = simulate(payload, kind, payload["static_steps"])
        label = KIND_LABELS[kind].replace("β", f"β={payload['beta']:g}")
        panels.append(
            f'<div class="madopd-static-panel" data-kind="{esc(kind)}" '
            f'style="border:1px solid #ddd;padding:6px;border-radius:4px">'
            f'<div style="font:bold 12px sans-serif;color:{KIND_COLORS[kind]}">{esc(label)}</div>'
            f"{_bars_svg(p, sim['q'], KIND_COLORS[kind], labels)}"
            f'<div style="font:11px sans-serif">after {payload["static_steps"]} Adam steps: '
            f"D = {fmt(sim['values'][-1])}, ‖∇<sub>z</sub>D‖<sub>∞</sub> = "
            f"{fmt(sim['grad_inf'][-1])} (start {fmt(sim['grad_inf'][0])})</div></div>")
    return (
        '<div class="madopd-static madopd-playground" style="font:12px sans-serif">'
        f'<div style="margin-bottom:4px">Divergence playground (static render; T = '
        f'{payload["temperature"]:g}, student family: {esc(payload["family"])}). '
        f'Outline = teacher p, filled = student q. <span style="color:{teacher_color(0)}">'
        "Run the notebook with a kernel to drag the teacher.</span></div>"
        f'<div style="display:flex;gap:8px;flex-wrap:wrap">{"".join(panels)}</div></div>')


PNG_BAR_W, PNG_BAR_H = 12, 80  # one outcome's column width and the bar area's height


def render_playground_png(payload: dict) -> bytes:
    """PNG of the static render (colours only): one panel per divergence, side by side; per
    outcome the fitted student q as a bar filled in the divergence's colour (KIND_COLORS, as in
    the HTML) and the teacher p as a dark outline, both scaled to the panel's largest value."""
    from madopd.widgets import png

    p, kinds = payload["teacher_probs"], payload["kinds"]
    n = len(p)
    pw = n * PNG_BAR_W
    cv = png.Canvas(png.MARGIN + len(kinds) * (pw + png.MARGIN) + png.MARGIN,
                    2 * png.MARGIN + 4 + PNG_BAR_H + 1)
    for j, kind in enumerate(kinds):
        q = simulate(payload, kind, payload["static_steps"])["q"]
        x0, y0 = png.MARGIN + j * (pw + png.MARGIN), png.MARGIN
        cv.fill_rect(x0, y0, pw, 2, KIND_COLORS[kind])  # which divergence this panel is
        base = y0 + 4 + PNG_BAR_H  # the baseline row (drawn grey below the bars)
        top = max(max(p), max(q)) or 1.0
        for i in range(n):
            hq, hp = int(round(PNG_BAR_H * q[i] / top)), int(round(PNG_BAR_H * p[i] / top))
            x = x0 + i * PNG_BAR_W + 1
            cv.fill_rect(x, base - hq, PNG_BAR_W - 2, hq, KIND_COLORS[kind])
            cv.outline(x, base - hp, PNG_BAR_W - 2, hp, "#333333")
        cv.hline(x0, x0 + pw - 1, base, "#999999")
    return cv.to_png()
