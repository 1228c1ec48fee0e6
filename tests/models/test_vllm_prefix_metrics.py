"""vLLM's automatic prefix caching, read from a real server's /metrics (marker ``vllm``).

What it checks (vLLM 0.32, CPU): a repeated *generation* request reads its prompt's cached
blocks (``vllm:prefix_cache_hits`` grows), so the metric reading works and the test can fail;
a repeated *scoring* request (``prompt_logprobs``, what ``VLLMServerTeacher.score`` sends) does
not read the cache at all: vLLM sets ``SamplingParams.skip_reading_prefix_cache`` whenever
prompt log-probs are asked for, because a cached position would get no prompt log-prob. So a
served teacher re-encodes its whole scoring context on every request, and prefix-cached
scoring exists only for in-process teachers (``madopd.models.prefix_cache``); docs/scaling.md.
"""

from __future__ import annotations

import json
import re
import urllib.request

import pytest

pytestmark = pytest.mark.vllm

PROMPT = [10 + (i * 7) % 50 for i in range(300)]  # > 2 KV blocks of 128 tokens (vLLM CPU)


def _metric(url: str, name: str) -> float:
    """Sum of a Prometheus counter (``name`` or ``name_total``) over its label sets."""
    text = urllib.request.urlopen(f"{url}/metrics", timeout=30).read().decode()
    pattern = re.compile(rf"^{re.escape(name)}(?:_total)?(?:{{[^}}]*}})? ([0-9.eE+-]+)$", re.M)
    values = [float(v) for v in pattern.findall(text)]
    assert values, f"{name} not in {url}/metrics"
    return sum(values)


def _complete(url: str, model: str, **fields) -> dict:
    body = json.dumps({"model": model, "prompt": PROMPT, "max_tokens": 1, "temperature": 0.0,
                       **fields}).encode()
    req = urllib.request.Request(f"{url}/v1/completions", body, {"Content-Type": "application/json"})
    return json.loads(urllib.request.urlopen(req, timeout=120).read())


def _hits_and_queries(url: str) -> tuple[float, float]:
    return _metric(url, "vllm:prefix_cache_hits"), _metric(url, "vllm:prefix_cache_queries")


def test_generation_reads_the_prefix_cache_but_scoring_requests_skip_it(vllm_server):
    url, model = vllm_server
    _complete(url, model)  # fills the cache with PROMPT's blocks
    h0, q0 = _hits_and_queries(url)
    _complete(url, model)
    h1, q1 = _hits_and_queries(url)
    assert q1 - q0 >= len(PROMPT) - 1 and h1 - h0 >= 256  # two full blocks reused

    out = _complete(url, model, prompt_logprobs=1)  # the scoring request's shape
    assert len(out["choices"][0]["prompt_logprobs"]) == len(PROMPT)  # every position scored
    h2, q2 = _hits_and_queries(url)
    _complete(url, model, prompt_logprobs=1)
    h3, q3 = _hits_and_queries(url)
    assert h3 - h2 == 0 and q3 - q2 == 0  # not even looked up
