"""VLLMServerTeacher: protocol handling against a scripted stdlib HTTP server (default run), and
parity with HFTeacher against a REAL vLLM server (marker ``vllm``; needs .ci/setup_vllm.sh)."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import torch

from madopd.errors import ConfigError, MissingExtraError, TeacherError
from madopd.models import HFTeacher, VLLMOfflineTeacher, VLLMServerTeacher
from madopd.models._common import render_prompt_ids
from madopd.models.tiny import build_tokenizer
from madopd.models.vllm_server import free_port
from madopd.types import Sampling, TopKLogprobs

TOK = build_tokenizer()


class FakeServer:
    """Answers each POST with the next scripted (status, body) and records the request bodies."""

    def __init__(self, script):
        self.script, self.requests = list(script), []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                fake.requests.append((self.path, body))
                status, reply = fake.script.pop(0) if fake.script else (500, {"error": "empty"})
                reply = reply(body) if callable(reply) else reply
                data = json.dumps(reply).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *a):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def fake():
    servers = []

    def make(script):
        servers.append(FakeServer(script))
        return servers[-1]

    yield make
    for s in servers:
        s.close()


def teacher(url, **kw):
    kw.setdefault("max_context", 512)
    return VLLMServerTeacher(url, "tiny", tokenizer=TOK, backoff=0.0, **kw)


def canned_prompt_logprobs(body, k):
    """Deterministic fake log-probs: position j of prompt ids x holds ranks 1..k on ids
    (j+r) % 50 with logprob -r, plus x_j itself with rank 99 when it is not among them."""
    choices = []
    for i, ids in enumerate(body["prompt"]):
        plp = [None]
        for j in range(1, len(ids)):
            d = {str((j + r) % 50): {"logprob": -float(r), "rank": r, "decoded_token": "?"}
                 for r in range(1, k + 1)}
            d.setdefault(str(ids[j]), {"logprob": -20.0, "rank": 99, "decoded_token": "?"})
            plp.append(d)
        choices.append({"index": i, "text": "x", "prompt_logprobs": plp})
    return {"choices": choices[::-1]}  # out of order on purpose: the client sorts by index


def test_score_request_and_topk_conversion(fake):
    srv = fake([(200, lambda body: canned_prompt_logprobs(body, 3))])
    chats = [[{"role": "user", "content": "hi"}], [{"role": "user", "content": "a longer one"}]]
    conts = [[65, 66, 67], [70]]
    s = teacher(srv.url).score(chats, conts, top_k=3)
    route, body = srv.requests[0]
    prompts = [render_prompt_ids(TOK, c) for c in chats]
    assert route == "/v1/completions" and body["max_tokens"] == 1 and body["prompt_logprobs"] == 3
    assert body["prompt"] == [p + c for p, c in zip(prompts, conts)]
    assert isinstance(s.dists, TopKLogprobs) and s.dists.ids.shape == (2, 3, 3)
    assert s.mask.tolist() == [[True] * 3, [True, False, False]]
    for b, (p, c) in enumerate(zip(prompts, conts)):
        for t in range(len(c)):
            j = len(p) + t  # the entry that predicts c[t]
            assert s.dists.ids[b, t].tolist() == [(j + r) % 50 for r in (1, 2, 3)]
            assert s.dists.logprobs[b, t].tolist() == [-1.0, -2.0, -3.0]
    # the rank-99 prompt token is NOT kept: it belongs to the tail bucket
    torch.testing.assert_close(s.dists.tail_mass[0, 0],
                               torch.tensor(1 - sum(torch.exp(torch.tensor([-1.0, -2, -3])).tolist())))


def test_retries_then_success_and_4xx_is_not_retried(fake):
    ok = lambda body: canned_prompt_logprobs(body, 2)
    srv = fake([(500, {"error": "busy"}), (503, {"error": "busy"}), (200, ok)])
    t = teacher(srv.url, retries=3)
    assert t.score([[1, 2]], [[3]], top_k=2).mask.all()
    assert t.counters["retries"] == 2 and t.counters["failures"] == 0
    srv2 = fake([(400, {"error": "bad prompt_logprobs"})])
    t2 = teacher(srv2.url, retries=3)
    with pytest.raises(TeacherError, match="HTTP 400.*bad prompt_logprobs"):
        t2.score([[1, 2]], [[3]], top_k=2)
    assert len(srv2.requests) == 1 and t2.counters["retries"] == 0


def test_unreachable_server_raises_or_drops():
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    t = teacher(url, retries=2, timeout=2)
    with pytest.raises(TeacherError, match="failed after 3 attempts"):
        t.generate([[{"role": "user", "content": "hi"}]], Sampling(greedy=True))
    assert t.counters["requests"] == 3 and t.counters["failures"] == 1
    d = teacher(url, retries=0, timeout=2, on_failure="drop")
    assert d.score([[1, 2]], [[3]], top_k=2) is None
    assert d.generate([[{"role": "user", "content": "hi"}]], Sampling()) is None
    assert d.counters["dropped_batches"] == 2
    with pytest.raises(ConfigError, match="on_failure"):
        teacher(url, on_failure="ignore")


def test_generate_request_fields(fake):
    reply = lambda body: {"choices": [{"index": 0, "message": {"role": "assistant",
                                                              "content": f"seed={body.get('seed')}"}}]}
    srv = fake([(200, reply)] * 4)
    chats = [[{"role": "user", "content": "a"}], [{"role": "user", "content": "b"}]]
    t = teacher(srv.url, max_concurrency=1)
    assert t.generate(chats, Sampling(seed=10, top_k=0, temperature=0.7, max_new_tokens=5)) == \
        ["seed=10", "seed=11"]
    body = srv.requests[0][1]
    assert body["messages"] == chats[0] and body["max_tokens"] == 5 and body["top_k"] == -1
    assert body["temperature"] == 0.7
    t.generate(chats, Sampling(greedy=True, temperature=0.7))
    assert srv.requests[-1][1]["temperature"] == 0.0 and "seed" not in srv.requests[-1][1]


def test_offline_teacher_import_guard():
    try:
        import vllm  # noqa: F401
    except ImportError:
        with pytest.raises(MissingExtraError, match="madopd\\[vllm\\]"):
            VLLMOfflineTeacher("/nonexistent")
    else:
        pytest.skip("vllm is importable here; the guard cannot be exercised")


# ---------------------------------------------------------------- real vLLM server
CHATS = [
    [{"role": "user", "content": "Q: 12+34="}],
    [{"role": "system", "content": "be brief"}, {"role": "user", "content": "a much longer question?"}],
    [{"role": "user", "content": "x"}],
]
CONTS = [[65, 66, 67, 68, 257], [70], [71, 72, 73]]


@pytest.mark.vllm
def test_vllm_scores_match_hf(vllm_server):
    url, model_dir = vllm_server
    v = VLLMServerTeacher(url, model_dir, tokenizer=model_dir)
    h = HFTeacher(model_dir)
    assert v.max_context == 512
    V = len(h.tokenizer)
    for k in (1, 5, V):
        a, b = v.score(CHATS, CONTS, top_k=k), h.score(CHATS, CONTS, top_k=k)
        assert torch.equal(a.mask, b.mask) and a.dists.ids.shape == b.dists.ids.shape
        m = a.mask
        # compare as dense scatter so equal-probability ties in a different order still match
        da = torch.full((*m.shape, V), -1e4).scatter(-1, a.dists.ids, a.dists.logprobs)
        db = torch.full((*m.shape, V), -1e4).scatter(-1, b.dists.ids, b.dists.logprobs)
        torch.testing.assert_close(da[m], db[m], atol=1e-4, rtol=0)
        torch.testing.assert_close(a.dists.tail_mass[m], b.dists.tail_mass[m], atol=1e-4, rtol=0)
    dense_v, dense_h = v.score(CHATS, CONTS), h.score(CHATS, CONTS)
    torch.testing.assert_close(dense_v.dists[dense_v.mask], dense_h.dists[dense_h.mask], atol=1e-4, rtol=0)
    assert v.counters["failures"] == 0


@pytest.mark.vllm
def test_vllm_generate_through_chat_completions(vllm_server):
    url, model_dir = vllm_server
    v = VLLMServerTeacher(url, model_dir, tokenizer=model_dir)
    h = HFTeacher(model_dir)
    greedy = Sampling(greedy=True, max_new_tokens=8)
    out = v.generate(CHATS, greedy)
    assert out == v.generate(CHATS, greedy) and len(out) == 3
    # greedy replies agree with the in-process model token for token (ids via vLLM's
    # return_tokens_as_token_ids extension; EOS is not listed by vLLM, so drop it on our side)
    ids_h = h.generate_ids(CHATS, greedy)[1]
    for chat, r, text in zip(CHATS, ids_h, out):
        body = {"model": model_dir, "messages": chat, "max_tokens": 8, "temperature": 0.0,
                "logprobs": True, "return_tokens_as_token_ids": True}
        reply = v._request("POST", "/v1/chat/completions", body)
        ids_v = [int(x["token"].split(":")[1]) for x in reply["choices"][0]["logprobs"]["content"]]
        assert ids_v == [i for i in r if i not in h.eos_ids] or ids_v == r
        # texts: equal up to a trailing incomplete UTF-8 sequence (random bytes here), which
        # vLLM's incremental detokenizer withholds
        full = h.decode(r)
        assert full.startswith(text) and set(full[len(text):]) <= {"\ufffd"}
    s = Sampling(temperature=1.0, max_new_tokens=8, seed=5)
    assert v.generate(CHATS, s) == v.generate(CHATS, s)


def test_entries_tie_with_prompt_token_keeps_exactly_k():
    from madopd.models.vllm_server import _entries

    pos = {"5": {"logprob": -1.0, "rank": 1}, "6": {"logprob": -2.0, "rank": 2},
           "9": {"logprob": -2.0, "rank": 2}}  # prompt token 9 ties the 2nd entry
    assert _entries(pos, 2, 0, 0) == {5: -1.0, 6: -2.0}
    assert _entries(pos, None, 0, 0) == {5: -1.0, 6: -2.0, 9: -2.0}
    with pytest.raises(TeacherError, match="sample 3, continuation token 4"):
        _entries(None, 2, 3, 4)


def test_dense_scores_from_full_prompt_logprobs(fake):
    V = len(TOK)
    probs = torch.softmax(torch.linspace(-3, 3, V), -1).log()

    def full(body):
        assert body["prompt_logprobs"] == -1
        plp = [None] + [{str(i): {"logprob": float(probs[i]), "rank": 1} for i in range(V)}
                        for _ in body["prompt"][0][1:]]
        return {"choices": [{"index": 0, "text": "", "prompt_logprobs": plp}]}

    srv = fake([(200, full)])
    s = teacher(srv.url).score([[1, 2, 3]], [[4, 5]])
    assert s.dists.shape == (1, 2, V)
    torch.testing.assert_close(s.dists[0], probs.expand(2, V))
