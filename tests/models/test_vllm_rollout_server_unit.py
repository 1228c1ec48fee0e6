"""VLLMServerRollout against a scripted stdlib HTTP server (default run; no vLLM needed).

Checked: the weight update is the documented call sequence (the safetensors file holds exactly
the student's merged weights, tied tensors included; /collective_rpc reload_weights with that
folder; /reset_prefix_cache); sampling requests carry token-id prompts, seed + i, explicit
neutral penalties and the student's EOS ids, and replies are cut and flagged like HF; a dead
URL, a server without dev mode (404) and a failed reload (500, not retried) are one-line
``RolloutError``s; the config validates the URL. The real server: test_vllm_rollout_server.py.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import torch

from madopd.distill.config import DistillConfig
from madopd.errors import ConfigError, RolloutError
from madopd.types import Sampling, State


class Fake:
    """GET /v1/models lists one model; every POST goes to ``handle(path, body)`` ->
    (status, reply or None for an empty body). Requests are recorded in order."""

    def __init__(self, handle, model="tiny", max_model_len=512):
        self.requests: list[tuple[str, dict | None]] = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def _send(self, status, reply):
                data = b"" if reply is None else json.dumps(reply).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                fake.requests.append((self.path, None))
                self._send(200, {"data": [{"id": model, "max_model_len": max_model_len}]})

            def do_POST(self):
                n = int(self.headers["Content-Length"] or 0)
                body = json.loads(self.rfile.read(n)) if n else {}
                fake.requests.append((self.path, body))
                self._send(*handle(self.path, body))

            def log_message(self, *a):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def posts(self, path):
        return [b for p, b in self.requests if p == path]


@pytest.fixture
def fake():
    made = []

    def make(handle, **kw):
        made.append(Fake(handle, **kw))
        return made[-1]

    yield make
    for f in made:
        f.httpd.shutdown()
        f.httpd.server_close()


def ok_server(reply_ids=lambda body: [5, 6, 7]):
    """A dev-mode vLLM stand-in: reload and reset succeed, completions answer ``reply_ids``."""
    def handle(path, body):
        if path == "/collective_rpc":
            return 200, {"results": [None]}
        if path == "/reset_prefix_cache":
            return 200, {"success": True}
        ids = reply_ids(body)
        return 200, {"choices": [{"index": 0, "text": "", "token_ids": ids,
                                  "logprobs": {"token_logprobs": [-0.5 - j for j in range(len(ids))]}}]}
    return handle


def test_sync_writes_the_merged_weights_and_asks_the_server_to_reload(tiny_dirs, tmp_path, fake):
    from safetensors.torch import load_file

    from madopd.models.hf import HFStudent
    from madopd.models.vllm_rollout import merged_state_dict
    from madopd.models.vllm_rollout_server import VLLMServerRollout

    server = fake(ok_server())
    st = HFStudent(tiny_dirs["student"])
    eng = VLLMServerRollout(st, server.url + "/v1", weights_dir=tmp_path / "w", retries=0)
    assert eng.model == "tiny" and eng.max_context == min(st.max_context, 512)
    assert [p for p, _ in server.requests] == ["/v1/models", "/collective_rpc",
                                               "/reset_prefix_cache"]
    rpc = server.posts("/collective_rpc")[0]
    assert rpc["method"] == "reload_weights"
    assert rpc["kwargs"] == {"weights_path": str((tmp_path / "w").resolve()),
                             "is_checkpoint_format": True}
    with torch.no_grad():
        for p in st.model.parameters():
            p.add_(0.01)
    eng.sync()
    written = load_file(str(tmp_path / "w" / "model.safetensors"))
    want = merged_state_dict(st.model)
    assert st.model.config.tie_word_embeddings and "lm_head.weight" in want
    # a tied lm_head is written too, as a copy (vLLM's CPU backend reloads it apart)
    assert set(written) == set(want)
    assert all(torch.equal(written[k], want[k]) for k in want)
    assert [f.name for f in (tmp_path / "w").iterdir()] == ["model.safetensors"]
    assert eng.counters["weight_syncs"] == 2 and eng.counters["sync_seconds"] > 0


def test_sampling_requests_and_replies_follow_hf_semantics(tiny_dirs, tmp_path, fake):
    from madopd.models._common import render_prompt_ids
    from madopd.models.hf import HFStudent
    from madopd.models.vllm_rollout_server import VLLMServerRollout

    st = HFStudent(tiny_dirs["student"], max_context=40)
    eos = min(st.eos_ids)
    # sample 0 stops at an EOS (and the server's extra tokens after it are dropped);
    # sample 1 runs to max_tokens
    server = fake(ok_server(lambda b: [5, eos, 9] if b.get("seed", 0) % 2 == 1 else [5, 6, 7]))
    eng = VLLMServerRollout(st, server.url, weights_dir=tmp_path / "w", retries=0)
    states = [State(f"s{i}", [{"role": "user", "content": f"q{i}"}]) for i in range(2)]
    out = eng.rollout(states, Sampling(temperature=0.7, top_p=0.9, top_k=0, max_new_tokens=3,
                                       seed=11))
    bodies = sorted(server.posts("/v1/completions"), key=lambda b: b["seed"])
    assert [b["seed"] for b in bodies] == [11, 12]
    for b, s in zip(bodies, states):
        assert b["prompt"] == render_prompt_ids(st.tokenizer, s.messages)
        assert b["model"] == "tiny" and b["max_tokens"] == 3 and b["logprobs"] == 0
        assert b["temperature"] == 0.7 and b["top_p"] == 0.9 and b["top_k"] == -1
        assert b["stop_token_ids"] == sorted(st.eos_ids) and b["ignore_eos"] is False
        assert b["return_token_ids"] is True
        assert (b["min_p"], b["repetition_penalty"], b["presence_penalty"],
                b["frequency_penalty"]) == (0.0, 1.0, 0.0, 0.0)
    assert out.response_ids == [[5, eos], [5, 6, 7]] and out.truncated == [False, True]
    assert out.sampler_logprobs == [[-0.5, -1.5], [-0.5, -1.5, -2.5]]
    assert eng.counters["sequences_generated"] == 2
    # greedy: temperature 0, no seed; a prompt longer than the window is cut and counted
    before = st.counters["truncated_prompts"]
    eng.rollout([State("long", [{"role": "user", "content": "x" * 100}])],
                Sampling(greedy=True, max_new_tokens=3))
    last = server.posts("/v1/completions")[-1]
    assert last["temperature"] == 0.0 and "seed" not in last and len(last["prompt"]) == 40 - 3
    assert st.counters["truncated_prompts"] == before + 1


def test_dead_url_is_one_clear_error_fast(tiny_dirs, tmp_path):
    from madopd.models.hf import HFStudent
    from madopd.models.vllm_rollout_server import VLLMServerRollout
    from madopd.models.vllm_server import free_port

    url = f"http://127.0.0.1:{free_port()}"
    t0 = time.perf_counter()
    with pytest.raises(RolloutError, match=f"rollout server {url}: GET {url}/v1/models failed "
                                           "after 2 attempts: ConnectionRefusedError"):
        VLLMServerRollout(HFStudent(tiny_dirs["student"]), url, weights_dir=tmp_path,
                          retries=1, backoff=0.0, timeout=5)
    assert time.perf_counter() - t0 < 5


@pytest.mark.parametrize("status", [404, 500])
def test_refused_or_failed_reload_is_final(tiny_dirs, tmp_path, fake, status):
    from madopd.models.hf import HFStudent
    from madopd.models.vllm_rollout_server import VLLMServerRollout

    server = fake(lambda path, body: (status, {"detail": "Not Found" if status == 404 else
                                               "RuntimeError: shape mismatch"}))
    hint = "VLLM_SERVER_DEV_MODE=1" if status == 404 else "shape mismatch"
    with pytest.raises(RolloutError, match=f"weight update refused: .*HTTP {status}.*{hint}"):
        VLLMServerRollout(HFStudent(tiny_dirs["student"]), server.url, weights_dir=tmp_path,
                          retries=3, backoff=0.0)
    assert len(server.posts("/collective_rpc")) == 1  # an update is never retried


def test_weights_dir_must_not_hold_other_weights(tiny_dirs, tmp_path, fake):
    from madopd.models.hf import HFStudent
    from madopd.models.vllm_rollout_server import VLLMServerRollout

    (tmp_path / "model-00001-of-00002.safetensors").write_bytes(b"x")
    server = fake(ok_server())
    with pytest.raises(ConfigError, match="other weight files"):
        VLLMServerRollout(HFStudent(tiny_dirs["student"]), server.url, weights_dir=tmp_path)
    assert server.posts("/collective_rpc") == []


def test_server_backend_config_validates():
    cfg = DistillConfig(rollout_backend="vllm_server", rollout_server_url="http://h:8000/v1",
                        rollout_weights_dir="/shared/w")
    assert DistillConfig.from_dict(cfg.to_dict()).rollout_server_url == "http://h:8000/v1"
    with pytest.raises(ConfigError, match="rollout_server_url: required"):
        DistillConfig(rollout_backend="vllm_server")
    for bad in ("h:8000", "ftp://h", "http://", "http://h:99999", "http://h:1/?q=1"):
        with pytest.raises(ConfigError, match="rollout_server_url: expected"):
            DistillConfig(rollout_backend="vllm_server", rollout_server_url=bad)
    with pytest.raises(ConfigError, match="rollout_server_url is set but rollout_backend"):
        DistillConfig(rollout_server_url="http://h:8000")  # unused: refused, not ignored
    with pytest.raises(ConfigError, match="rollout_server_timeout"):
        DistillConfig(rollout_backend="vllm_server", rollout_server_url="http://h:1",
                      rollout_server_timeout=0)
