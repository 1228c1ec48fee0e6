"""The REAL SmolLM2-135M-Instruct served by vLLM (marker ``vllm``; issue 10, item 5).

A vLLM CPU server on the cached folder (``vllm_real_server`` in conftest; skipped, and counted by
``-rs``, when the venv or the pulled model is missing; CI pulls it) against ``HFTeacher`` on the
SAME weights (the folder madopd converted from the 4-bit GGUF, de-quantized to fp32):

- ``prompt_logprobs`` through ``VLLMServerTeacher.score`` equal ``HFTeacher.score``: the top-20
  (ids and log-probs, compared as a dense scatter so ties in another order still match), the
  tail mass, and the log-prob of every continuation token (ranked in the top-k or not).
  Tolerance ``ATOL`` below, stated in docs/real-models.md with the measured maximum.
- One full debate through the served teacher: K = 2 personas on the one server (the persona is
  the debate's system template), R = 1, the ``general`` templates, confidences from the tag
  only (counted per source; see the protocol below for why no fallback), then the
  force-decoding of a student answer under each teacher's ``score_context`` — what a MAD-OPD
  step asks of its teachers.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

pytestmark = pytest.mark.vllm

# Measured max |vLLM - HF| (fp32 both sides, 30 layers, V = 49,152; 2 shared cores, loaded):
# 7.7e-5 over the top-20 log-probs (the largest gaps sit at log p ~ -10 and below), 2.0e-5 over
# the continuation tokens' own log-probs, 1.4e-6 on the tail mass (docs/real-models.md).
# vLLM's CPU kernels sum in another order than torch's; the bound is ~4x the largest gap.
ATOL = 3e-4
TOP_K = 20
CHATS = [
    [{"role": "user", "content": "What is the capital of France?"}],
    [{"role": "system", "content": "You are a terse assistant."},
     {"role": "user", "content": "Call get_weather for Paris in celsius."}],
    [{"role": "user", "content": "Write a Python function that adds two numbers."}],
]
ANSWERS = ["The capital of France is Paris.",
           'get_weather(city="Paris", unit="celsius")',
           "def add(a, b):\n    return a + b"]


def _conts(tok) -> list[list[int]]:
    return [list(tok(a, add_special_tokens=False)["input_ids"]) + [tok.eos_token_id]
            for a in ANSWERS]


def _own_token_logprobs(v, prompts, conts) -> list[list[float]]:
    """log p(R[t] | ...) of each continuation token from vLLM's raw prompt_logprobs (the
    prompt token is always listed, whatever its rank)."""
    body = {"model": v.model, "prompt": [p + c for p, c in zip(prompts, conts)], "max_tokens": 1,
            "temperature": 0.0, "prompt_logprobs": 1}
    choices = sorted(v._request("POST", "/v1/completions", body)["choices"],
                     key=lambda ch: ch["index"])
    out = []
    for p, c, ch in zip(prompts, conts, choices):
        plp = ch["prompt_logprobs"]
        out.append([float(plp[len(p) + t][str(tok)]["logprob"]) for t, tok in enumerate(c)])
    return out


def test_real_smollm2_prompt_logprobs_match_hf(vllm_real_server):
    from madopd.models import HFTeacher, VLLMServerTeacher
    from madopd.models._common import contexts_to_ids

    url, folder = vllm_real_server
    torch.set_num_threads(2)
    v = VLLMServerTeacher(url, folder, tokenizer=folder, name="served")
    h = HFTeacher(folder, name="hf")
    assert len(h.tokenizer) == 49152 and v.max_context == 2048
    conts = _conts(h.tokenizer)
    a, b = v.score(CHATS, conts, top_k=TOP_K), h.score(CHATS, conts, top_k=TOP_K)
    m = a.mask
    assert torch.equal(m, b.mask) and a.dists.ids.shape == b.dists.ids.shape
    V = h.logit_width
    da = torch.full((*m.shape, V), -1e4).scatter(-1, a.dists.ids, a.dists.logprobs)
    db = torch.full((*m.shape, V), -1e4).scatter(-1, b.dists.ids, b.dists.logprobs)
    # an id can sit at rank k on one side and k+1 on the other when two log-probs are within
    # the tolerance of each other: compare only ids both sides ranked
    both = (da > -1e4) & (db > -1e4)
    assert both[m].sum(-1).min() >= TOP_K - 1  # at most one swap at the border per position
    diff_topk = (da - db).abs()[both & m[..., None]].max().item()
    diff_tail = (a.dists.tail_mass - b.dists.tail_mass).abs()[m].max().item()
    dense = h.score(CHATS, conts).dists  # [B, T, V] log-probs
    own_v = _own_token_logprobs(v, contexts_to_ids(h.tokenizer, CHATS), conts)
    diff_own = max(abs(own_v[i][t] - float(dense[i, t, c]))
                   for i, cont in enumerate(conts) for t, c in enumerate(cont))
    print(f"\nreal SmolLM2 vLLM vs HF: max |d logprob| top-{TOP_K} {diff_topk:.2e}, "
          f"own tokens {diff_own:.2e} ({int(m.sum())} positions), tail mass {diff_tail:.2e}")
    assert diff_topk <= ATOL and diff_own <= ATOL and diff_tail <= ATOL
    assert v.counters["failures"] == 0 and v.counters["truncated_contexts"] == 0


def test_real_smollm2_debate_through_served_teachers(vllm_real_server):
    from madopd.debate import TEMPLATES, Debate, DebateProtocol
    from madopd.models import HFTeacher, VLLMServerTeacher
    from madopd.realworld.world import PERSONAS
    from madopd.types import Sampling, State

    url, folder = vllm_real_server
    torch.set_num_threads(2)
    teachers = [VLLMServerTeacher(url, folder, tokenizer=folder, name=n) for n in PERSONAS[:2]]
    tpl = dataclasses.replace(TEMPLATES["general"], system="You are {name}.")
    # confidence_fallback 'none': forced_tag needs an in-process model, and answer_logprob
    # asks a server for DENSE prompt log-probs (49,152 per position as JSON: no reply within
    # the 30 s read timeout in 4 attempts here), so untagged turns stay missing, counted
    protocol = DebateProtocol(rounds=1, templates=tpl, confidence_fallback="none",
                              sampling=Sampling(greedy=True, max_new_tokens=32))
    debate = Debate(teachers, protocol)
    states = [State(f"q{i}", chat[-1:], meta={"student_answer": "SENTINEL-real"})
              for i, chat in enumerate(CHATS[:2])]
    transcripts = debate.run(states)
    for tr in transcripts:
        assert tr.rounds == 1 and [m.teacher for m in tr.messages] == [0, 1]
        assert all(m.text.strip() for m in tr.messages)  # real text, not empty turns
    c = debate.counters
    assert c["debate/teacher_errors"] == 0 and c["debate/truncated_contexts"] == 0
    sources = {k: v for k, v in c.items()
               if k.startswith("debate/confidence_from_") or k == "debate/confidence_missing"}
    assert sum(sources.values()) == 4, sources  # 2 states x 2 teachers, every turn counted
    tagged = sum(m.confidence is not None for tr in transcripts for m in tr.messages)
    assert tagged == c["debate/confidence_from_tag"]  # no confidence without a source
    # the teachers' half of a MAD-OPD step: force-decode a student answer under each
    # teacher's privileged score context; the served teacher equals HF on the same weights
    h = HFTeacher(folder, name="hf")
    conts = _conts(h.tokenizer)[:2]
    for k, t in enumerate(teachers):
        ctx = [debate.score_context(s, tr, k) for s, tr in zip(states, transcripts)]
        assert not any("SENTINEL" in msg["content"] for chat in ctx for msg in chat)
        a, b = t.score(ctx, conts, top_k=TOP_K), h.score(ctx, conts, top_k=TOP_K)
        da = torch.full((*a.mask.shape, h.logit_width), -1e4).scatter(
            -1, a.dists.ids, a.dists.logprobs)
        db = torch.full_like(da, -1e4).scatter(-1, b.dists.ids, b.dists.logprobs)
        both = (da > -1e4) & (db > -1e4) & a.mask[..., None]
        assert (da - db).abs()[both].max().item() <= ATOL
    print(f"\nreal SmolLM2 served debate: confidence sources {sources}; "
          f"turn 0: {transcripts[0].messages[0].text[:80]!r}")
