"""VLLMServerTeacher: protocol handling against a scripted stdlib HTTP server (default run), and
parity with HFTeacher against a REAL vLLM server (marker ``vllm``; needs .ci/setup_vllm.sh)."""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import torch

from madopd.errors import ConfigError, MissingExtraError, TeacherError, ValueRangeError
from madopd.models import HFTeacher, VLLMOfflineTeacher, VLLMServerTeacher
from madopd.models._common import render_prompt_ids
from madopd.models.tiny import build_tokenizer
from madopd.models.vllm_server import free_port, serve_vllm
from madopd.types import Sampling, TopKLogprobs

TOK = build_tokenizer()


class FakeServer:
    """Answers each POST with the next scripted (status, body) and records the request bodies."""

    def __init__(self, script, models=None):
        self.script, self.requests = list(script), []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # /health and /v1/models, only when a listing was given
                fake.requests.append((self.path, None))
                ok = models is not None and self.path in ("/v1/models", "/health")
                reply = models if self.path == "/v1/models" else {}
                data = json.dumps(reply if ok else {"error": "not found"}).encode()
                self.send_response(200 if ok else 404)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

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

    def make(script, models=None):
        servers.append(FakeServer(script, models))
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


def echo_reply(body):
    """Chat completions answer 'chat:<n messages>', completions 'ids:<n prompt ids>'."""
    if "messages" in body:
        return {"choices": [{"index": 0, "message": {"role": "assistant",
                                                     "content": f"chat:{len(body['messages'])}"}}]}
    return {"choices": [{"index": 0, "text": f"ids:{len(body['prompt'])}"}]}


def test_generate_left_truncates_a_long_chat_like_hf(fake):
    short = [{"role": "user", "content": "hi"}]
    long = [{"role": "system", "content": "s" * 40}, {"role": "user", "content": "q" * 100}]
    n_long = len(render_prompt_ids(TOK, long))
    n_short = len(render_prompt_ids(TOK, short))
    max_new = 8
    # the short chat fits exactly (boundary), the long one does not
    srv = fake([(200, echo_reply)] * 2)
    t = teacher(srv.url, max_context=n_short + max_new, max_concurrency=1)
    out = t.generate([short, long], Sampling(greedy=True, max_new_tokens=max_new))
    room = n_short + max_new - max_new
    assert out == ["chat:1", f"ids:{room}"]
    (r0, b0), (r1, b1) = srv.requests
    assert r0 == "/v1/chat/completions" and b0["messages"] == short
    # HFTeacher's policy: keep the newest prompt tokens, reserve max_new_tokens for the reply
    assert r1 == "/v1/completions" and b1["prompt"] == render_prompt_ids(TOK, long)[-room:]
    assert b1["max_tokens"] == max_new and b1["temperature"] == 0.0
    assert n_long > room and t.counters["truncated_prompts"] == 1
    assert t.counters["truncated_contexts"] == 0


def test_generate_truncation_error_names_sample_and_lengths_before_sending(fake):
    srv = fake([(200, echo_reply)] * 2)
    long = [{"role": "user", "content": "q" * 100}]
    n = len(render_prompt_ids(TOK, long))
    for on_failure in ("raise", "drop"):  # a config/input error, not a server failure
        t = teacher(srv.url, max_context=64, truncation="error", on_failure=on_failure)
        with pytest.raises(ValueRangeError, match=rf"tiny: generate \(max_new_tokens=8\): "
                                                  rf"sample 1: context \({n} tokens\).*> max_context=64"):
            t.generate([[{"role": "user", "content": "a"}], long], Sampling(max_new_tokens=8))
    assert srv.requests == [] and t.counters["truncated_prompts"] == 0


def test_generate_reads_max_context_from_the_server(fake):
    long = [{"role": "user", "content": "q" * 100}]
    listing = {"data": [{"id": "tiny", "max_model_len": 40}]}
    srv = fake([(200, echo_reply)], models=listing)
    t = VLLMServerTeacher(srv.url, "tiny", tokenizer=TOK, backoff=0.0)
    assert t.generate([long], Sampling(max_new_tokens=4)) == ["ids:36"]
    assert [r for r, _ in srv.requests] == ["/v1/models", "/v1/completions"]
    assert srv.requests[1][1]["prompt"] == render_prompt_ids(TOK, long)[-36:]
    # a listing without the served model: a TeacherError, so on_failure applies
    srv2 = fake([], models={"data": [{"id": "other", "max_model_len": 40}]})
    d = VLLMServerTeacher(srv2.url, "tiny", tokenizer=TOK, backoff=0.0, on_failure="drop")
    assert d.generate([long], Sampling(max_new_tokens=4)) is None
    assert d.counters["dropped_batches"] == 1 and len(srv2.requests) == 1


def test_offline_teacher_import_guard():
    try:
        import vllm  # noqa: F401
    except ImportError:
        with pytest.raises(MissingExtraError, match="madopd\\[vllm\\]"):
            VLLMOfflineTeacher("/nonexistent")
    else:
        pytest.skip("vllm is importable here; the guard cannot be exercised")


# ---------------------------------------------------------------- serve_vllm (fake server)
# A stand-in for `python -m vllm.entrypoints.openai.api_server`: same flags, /health and
# /v1/models, one child process (like vLLM's engine core), pids written to $FAKE_VLLM_PIDS.
FAKE_API_SERVER = """
import argparse, json, os, subprocess, sys
from http.server import BaseHTTPRequestHandler, HTTPServer
ap = argparse.ArgumentParser()
ap.add_argument("--model")
ap.add_argument("--port", type=int)
a, _ = ap.parse_known_args()
mode = os.environ.get("FAKE_VLLM_MODE", "ok")
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
with open(os.environ["FAKE_VLLM_PIDS"], "a") as f:
    f.write(f"{os.getpid()} {child.pid}\\n")
if mode == "crash":
    print("engine core failed: boom", flush=True)
    sys.exit(3)

class H(BaseHTTPRequestHandler):
    def do_GET(self):
        listing = {"data": [{"id": a.model, "root": a.model, "max_model_len": 512}]}
        code, body = {"/health": (200, {}), "/v1/models": (200, listing)}.get(self.path, (404, {}))
        code = 503 if mode == "sick" else code
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass

HTTPServer(("127.0.0.1", a.port), H).serve_forever()
"""


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"  # a zombie is dead
    except FileNotFoundError:
        return False


@pytest.fixture
def fake_vllm(tmp_path):
    """(serve kwargs, pid file) for serve_vllm against the stand-in server."""
    pkg = tmp_path / "site" / "vllm" / "entrypoints" / "openai"
    pkg.mkdir(parents=True)
    for d in (pkg, pkg.parent, pkg.parent.parent):
        (d / "__init__.py").write_text("")
    (pkg / "api_server.py").write_text(FAKE_API_SERVER)
    pids = tmp_path / "pids"
    pids.touch()
    env = {"PYTHONPATH": str(tmp_path / "site"), "FAKE_VLLM_PIDS": str(pids)}
    kw = dict(python=sys.executable, env=env, log_path=tmp_path / "server.log", startup_timeout=60)
    yield kw, pids
    for line in pids.read_text().split("\n"):  # safety net: never leave a stand-in running
        for pid in map(int, line.split()):
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)


def _all_pids(pids):
    return [int(x) for x in pids.read_text().split()]


def test_serve_vllm_ready_then_stops_the_whole_group(fake_vllm, tmp_path):
    kw, pids = fake_vllm
    stats = {}
    with serve_vllm(tmp_path / "m", stats=stats, **kw) as url:
        t = VLLMServerTeacher(url, str(tmp_path / "m"), tokenizer=TOK)
        assert t.max_context == 512
        started = _all_pids(pids)
        assert len(started) == 2 and all(_alive(p) for p in started)
    assert not any(_alive(p) for p in started)  # server AND its child (same process group)
    assert stats == {"port_retries": 0}


def test_serve_vllm_retries_when_another_server_holds_the_port(fake_vllm, fake, tmp_path, monkeypatch):
    from madopd.models import vllm_server

    kw, pids = fake_vllm
    foreign = fake([], models={"data": [{"id": "someone-else", "max_model_len": 64}]})
    taken = int(foreign.url.rsplit(":", 1)[1])
    # a port bound but not listening: ours dies with "Address already in use"
    blocker = socket.socket()
    blocker.bind(("127.0.0.1", 0))
    third = free_port()
    ports = [taken, blocker.getsockname()[1], third]
    monkeypatch.setattr(vllm_server, "free_port", lambda: ports.pop(0))
    stats = {}
    try:
        with serve_vllm(tmp_path / "m", stats=stats, **kw) as url:
            assert url == f"http://127.0.0.1:{third}"
            assert VLLMServerTeacher(url, str(tmp_path / "m"), tokenizer=TOK).max_context == 512
    finally:
        blocker.close()
    assert stats["port_retries"] == 2 and ports == []
    assert "Address already in use" in (tmp_path / "server.log").read_text()  # log kept (appended)
    assert not any(_alive(p) for p in _all_pids(pids))
    # a fixed port has no fallback: a clear error
    with pytest.raises(TeacherError, match="port taken"):
        with serve_vllm(tmp_path / "m", port=taken, **kw):
            pass


def test_serve_vllm_reports_crash_and_timeout_with_log_tail(fake_vllm, tmp_path):
    kw, pids = fake_vllm
    with pytest.raises(TeacherError, match="(?s)exited with code 3.*engine core failed: boom"):
        with serve_vllm(tmp_path / "m", **{**kw, "env": {**kw["env"], "FAKE_VLLM_MODE": "crash"}}):
            pass
    with pytest.raises(TeacherError, match="not healthy after 3 s"):
        with serve_vllm(tmp_path / "m", **{**kw, "startup_timeout": 3,
                                           "env": {**kw["env"], "FAKE_VLLM_MODE": "sick"}}):
            pass
    assert not any(_alive(p) for p in _all_pids(pids))


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


@pytest.mark.vllm
def test_vllm_generate_left_truncates_like_hf(vllm_server):
    """A chat longer than the 512-token window: both backends keep the newest 512 - 8 prompt
    tokens and agree greedily (the server alone would answer HTTP 400)."""
    url, model_dir = vllm_server
    v = VLLMServerTeacher(url, model_dir, tokenizer=model_dir)
    h = HFTeacher(model_dir, max_context=512)
    chats = [[{"role": "user", "content": "".join(f"{i}+{i}=? " for i in range(120))}],
             CHATS[0]]
    greedy = Sampling(greedy=True, max_new_tokens=8)
    assert len(render_prompt_ids(h.tokenizer, chats[0])) > 512
    out_v, out_h = v.generate(chats, greedy), h.generate(chats, greedy)
    assert v.counters["truncated_prompts"] == h.counters["truncated_prompts"] == 1
    for a, b in zip(out_v, out_h):  # up to a withheld trailing incomplete UTF-8 sequence
        assert b.startswith(a) and set(b[len(a):]) <= {"\ufffd"}
    with pytest.raises(ValueRangeError, match="sample 0: context"):
        VLLMServerTeacher(url, model_dir, tokenizer=model_dir, truncation="error").generate(chats, greedy)


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
