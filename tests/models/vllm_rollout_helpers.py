"""Helpers shared by the vLLM rollout tests (colocated engine and server): prompts, the
log-prob gap between vLLM's sampled tokens and the HF student's forward, and a weight-moving
optimizer step. Imported by module name (pytest puts this folder on sys.path)."""

from __future__ import annotations

import torch

# vLLM's CPU kernels sum in another order than torch's; fp32 tiny models.
TOL = 1e-4


def make_states(n: int, prefix: str = "s"):
    from madopd.types import State

    return [State(f"{prefix}{i}", [{"role": "user", "content": f"What is {i} + {i}?"}])
            for i in range(n)]


def hf_logprobs(student, samples) -> list[torch.Tensor]:
    """log p(sampled token) under the HF student's forward, per sample [T_b]."""
    with torch.no_grad():
        logits, _ = student.response_logits(samples)
    lp = torch.log_softmax(logits.float(), -1)
    return [lp[b, torch.arange(len(r)), torch.tensor(r, dtype=torch.long)]
            for b, r in enumerate(samples.response_ids)]


def max_gap(student, samples) -> float:
    """max |vLLM log p(sampled token) - HF student's log_softmax| over the batch."""
    assert all(len(v) == len(r) for v, r in zip(samples.sampler_logprobs, samples.response_ids))
    hf = hf_logprobs(student, samples)
    return max((h - torch.tensor(v)).abs().max().item()
               for h, v in zip(hf, samples.sampler_logprobs) if len(v))


def train_step(student, opt, samples) -> None:
    """One optimizer step that moves the weights noticeably (NLL of the samples, big lr)."""
    logits, mask = student.response_logits(samples)
    ids = torch.zeros(mask.shape, dtype=torch.long)
    for b, r in enumerate(samples.response_ids):
        ids[b, : len(r)] = torch.tensor(r)
    nll = -torch.log_softmax(logits.float(), -1).gather(-1, ids[..., None]).squeeze(-1)
    nll[mask].mean().backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
