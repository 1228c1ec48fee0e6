"""vLLM-server teacher against hostile servers: stall, trickle, close mid-response.

Each server is a real socket on 127.0.0.1 started by the test; every test is bounded in time
by the teacher's own deadline (asserted with a loose upper bound, for a loaded machine).
"""

from __future__ import annotations

import json
import socket
import threading
import time

import pytest

from madopd.errors import TeacherError
from madopd.models.vllm_server import VLLMServerTeacher
from madopd.types import Sampling

_OK = json.dumps({"choices": [{"message": {"content": "fine"}}]}).encode()


def _read_request(conn) -> None:
    """Read the whole request (headers and body): closing with unread bytes would send a
    reset, which can destroy the reply before the client reads it."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            return
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                   if line.lower().startswith(b"content-length:")), 0)
    while len(body) < length:
        chunk = conn.recv(65536)
        if not chunk:
            return
        body += chunk


class HostileServer:
    """Accepts connections; ``modes`` (consumed one per connection, the last one repeats):
    'stall' (read the request, never answer), 'trickle' (one byte every ``gap`` s), 'cut'
    (headers promise more bytes than are sent, then close) or 'ok'."""

    def __init__(self, modes, gap=0.3):
        self.modes, self.gap = list(modes), gap
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.connections = 0
        self.stop = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            mode = self.modes.pop(0) if len(self.modes) > 1 else self.modes[0]
            self.connections += 1
            threading.Thread(target=self._one, args=(conn, mode), daemon=True).start()

    def _one(self, conn, mode):
        try:
            conn.settimeout(40)
            _read_request(conn)
            head = (f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                    f"Content-Length: {len(_OK)}\r\n\r\n").encode()
            if mode == "stall":
                self.stop.wait(40)
            elif mode == "trickle":
                for b in head + _OK:
                    if self.stop.wait(self.gap):
                        break
                    conn.sendall(bytes([b]))
            elif mode == "cut":
                conn.sendall(head + _OK[:10])
            else:
                conn.sendall(head + _OK)
        except OSError:
            pass
        finally:
            conn.close()

    def close(self):
        self.stop.set()
        self.sock.close()


@pytest.fixture
def server():
    made = []

    def make(modes, gap=0.3):
        made.append(HostileServer(modes, gap))
        return made[-1]
    yield make
    for s in made:
        s.close()


def _teacher(tiny_dirs, url, **kw):
    kw = {"timeout": 30.0, "deadline": 1.0, "retries": 0, "backoff": 0.0, **kw}
    return VLLMServerTeacher(url, "m", tokenizer=tiny_dirs["student"], max_context=512, **kw)


CHAT = [[{"role": "user", "content": "hi"}]]


@pytest.mark.parametrize("mode", ["stall", "trickle"])
def test_a_stalling_or_trickling_server_costs_at_most_the_deadline(tiny_dirs, server, mode):
    srv = server([mode])
    t = _teacher(tiny_dirs, srv.url, retries=1)  # 2 attempts of at most 1 s; reads of 30 s
    t0 = time.monotonic()
    with pytest.raises(TeacherError, match="failed after 2 attempts.*deadline of 1 s"):
        t.generate(CHAT, Sampling(greedy=True))
    elapsed = time.monotonic() - t0
    # without the deadline: 60 s for a stall (two 30 s reads), forever for a trickle
    assert 1.9 < elapsed < 15.0, elapsed
    assert t.counters["deadline_exceeded"] == 2, t.counters
    assert srv.connections == 2


def test_a_reply_cut_mid_response_is_retried(tiny_dirs, server):
    srv = server(["cut", "ok"])
    t = _teacher(tiny_dirs, srv.url, retries=2)
    assert t.generate(CHAT, Sampling(greedy=True)) == ["fine"]
    assert t.counters["retries"] == 1 and srv.connections == 2


def test_the_retry_budget_is_spent_once_for_the_whole_run(tiny_dirs, server):
    srv = server(["cut"])
    t = _teacher(tiny_dirs, srv.url, retries=3, retry_budget=2)
    with pytest.raises(TeacherError, match="failed after 3 attempts.*retry budget of 2 spent"):
        t.generate(CHAT, Sampling(greedy=True))
    with pytest.raises(TeacherError, match="failed after 1 attempts.*retry budget"):
        t.generate(CHAT, Sampling(greedy=True))
    assert t.counters["retries"] == 2 and t.counters["retry_budget_exhausted"] == 2
    assert srv.connections == 4


def test_deadline_and_budget_come_from_the_config_and_the_eval_cli(tiny_dirs, monkeypatch):
    from madopd.distill import DistillConfig
    from madopd.distill.loading import load_teachers

    cfg = DistillConfig(student=tiny_dirs["student"], teachers=["served-model"],
                        teacher_backend="vllm_server", teacher_base_urls=["http://127.0.0.1:9"],
                        teacher_tokenizers=[tiny_dirs["student"]], teacher_timeout=2.0, teacher_deadline=7.0, teacher_retries=1,
                        teacher_retry_budget=4)
    (t,) = load_teachers(cfg)
    assert (t.timeout, t.deadline, t.retries, t.retry_budget) == (2.0, 7.0, 1, 4)

    import argparse

    from madopd.commands import eval as ev

    parser = argparse.ArgumentParser()
    ev.add_arguments(parser)
    args = parser.parse_args(["--benchmark", "humaneval", "--backend", "vllm", "--base-url",
                              "http://127.0.0.1:9", "--model", "m", "--tokenizer",
                              tiny_dirs["student"], "--request-timeout", "3",
                              "--request-deadline", "9", "--retries", "2", "--retry-budget", "5"])
    m = ev.load_model(args)
    assert (m.timeout, m.deadline, m.retries, m.retry_budget) == (3.0, 9.0, 2, 5)


def test_a_served_teacher_never_borrows_the_students_tokenizer(tiny_dirs):
    # A served model name is not a folder: its tokenizer must be named, or the vocabulary check
    # would compare the student with itself.
    from madopd.distill import DistillConfig
    from madopd.distill.loading import load_teachers
    from madopd.errors import ConfigError

    kw = dict(student=tiny_dirs["student"], teachers=["served-model"],
              teacher_backend="vllm_server", teacher_base_urls=["http://127.0.0.1:9"])
    with pytest.raises(ConfigError, match=r"teachers\[0\].*teacher_tokenizers"):
        load_teachers(DistillConfig(**kw))
    with pytest.raises(ConfigError, match="teacher_tokenizers has 2 entries for 1 teachers"):
        DistillConfig(**kw, teacher_tokenizers=["a", "b"])
    (t,) = load_teachers(DistillConfig(**kw, teacher_tokenizers=[tiny_dirs["teacher_a"]]))
    assert t.tokenizer.name_or_path == tiny_dirs["teacher_a"]
