"""The vLLM-server client against a scripted server that lies (issue 23, item 6).

The server is a real socket on 127.0.0.1 (loopback only) that reads each request and writes
the raw bytes a test scripts: a huge Content-Length, an endless chunked body, JSON of another
shape, positive log-probs, token ids out of range, non-string content. Every reply must end
as a TeacherError (so ``on_failure='drop'`` returns None, counted), within seconds, without
reading more than ``max_reply_bytes``.
"""

from __future__ import annotations

import json
import socket
import threading
import time

import pytest
from test_fault_teacher import _read_request

from madopd.errors import TeacherError
from madopd.models.vllm_server import VLLMServerTeacher
from madopd.types import Sampling


class ScriptedServer:
    """Answers every connection with ``respond(conn)`` after reading the request; counts the
    bytes it managed to send (the client's reads)."""

    def __init__(self, respond):
        self.respond = respond
        self.sent = 0
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.stop = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._one, args=(conn,), daemon=True).start()

    def _one(self, conn):
        try:
            conn.settimeout(20)
            _read_request(conn)
            self.respond(self, conn)
        except OSError:
            pass
        finally:
            conn.close()

    def send(self, conn, data: bytes):
        conn.sendall(data)
        self.sent += len(data)

    def close(self):
        self.stop.set()
        self.sock.close()


def _json_reply(payload) -> bytes:
    body = json.dumps(payload).encode()
    return (f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode() + body


@pytest.fixture
def serve():
    made = []

    def make(respond):
        made.append(ScriptedServer(respond if callable(respond) else
                                   (lambda srv, conn: srv.send(conn, respond))))
        return made[-1]
    yield make
    for s in made:
        s.close()


def _teacher(tiny_dirs, url, **kw):
    kw = {"timeout": 10.0, "deadline": 20.0, "retries": 0, "backoff": 0.0,
          "max_reply_bytes": 1 << 20, **kw}
    return VLLMServerTeacher(url, "m", tokenizer=tiny_dirs["student"], max_context=512, **kw)


CHAT = [[{"role": "user", "content": "hi"}]]
S = Sampling(max_new_tokens=4, temperature=0.0)
PROMPT, CONT = [[5, 6, 7]], [[8, 9]]


def _plp(entry_for_t) -> dict:
    """A /v1/completions reply for PROMPT + CONT whose continuation positions hold
    ``entry_for_t(t)``; the prompt positions are well formed."""
    ok = {"8": {"logprob": -0.1, "rank": 1}, "3": {"logprob": -2.5, "rank": 2}}
    plp = [None, ok, ok] + [entry_for_t(t) for t in range(2)]
    return {"choices": [{"index": 0, "text": "x", "prompt_logprobs": plp}]}


def test_a_well_formed_reply_still_scores(tiny_dirs, serve):
    srv = serve(_json_reply(_plp(lambda t: {"8": {"logprob": -0.1, "rank": 1},
                                            "3": {"logprob": -2.5, "rank": 2}})))
    scores = _teacher(tiny_dirs, srv.url).score(PROMPT, CONT, top_k=2)
    assert scores.dists.ids.shape == (1, 2, 2)


def test_a_huge_content_length_is_refused_before_reading(tiny_dirs, serve):
    head = (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
            b"Content-Length: 17179869184\r\n\r\n")  # 16 GiB promised
    srv = serve(lambda s, conn: (s.send(conn, head + b"{" * 4096), time.sleep(3)))
    t = _teacher(tiny_dirs, srv.url)
    t0 = time.monotonic()
    with pytest.raises(TeacherError, match="Content-Length 17179869184 exceeds max_reply_bytes"):
        t.generate(CHAT, S)
    assert time.monotonic() - t0 < 10
    assert t.counters["malformed_replies"] == 1


def test_an_endless_chunked_body_is_cut_at_the_cap(tiny_dirs, serve):
    def endless(srv, conn):
        srv.send(conn, b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                       b"Transfer-Encoding: chunked\r\n\r\n")
        chunk = b"[" * 65536
        while not srv.stop.is_set():
            srv.send(conn, b"%x\r\n%s\r\n" % (len(chunk), chunk))

    srv = serve(endless)
    t = _teacher(tiny_dirs, srv.url, deadline=60.0)
    t0 = time.monotonic()
    with pytest.raises(TeacherError, match="longer than max_reply_bytes 1048576"):
        t.generate(CHAT, S)
    assert time.monotonic() - t0 < 30  # the cap, not the 60 s deadline, ended it
    # what the server could push is bounded by the cap plus the socket buffers, not by time
    assert srv.sent < 64 << 20


@pytest.mark.parametrize("payload", [
    [1, 2, 3],                                          # not an object
    {"choices": "nope"},                                # choices not a list
    {"choices": []},                                    # no choice
    {"choices": [None]},                                # a choice that is not an object
    {"choices": [{"message": "text"}]},                 # message not an object
    {"choices": [{"message": {"content": 42}}]},        # non-string content
    {"choices": [{"message": {"content": ["a", "b"]}}]},
    {"choices": [{"message": {"content": None}}]},
    {"choices": [{"message": {"content": {"$x": 1}}}]},
])
def test_chat_replies_of_another_shape_are_teacher_errors(tiny_dirs, serve, payload):
    srv = serve(_json_reply(payload))
    with pytest.raises(TeacherError, match="malformed reply"):
        _teacher(tiny_dirs, srv.url).generate(CHAT, S)
    dropped = _teacher(tiny_dirs, srv.url, on_failure="drop")
    assert dropped.generate(CHAT, S) is None
    assert dropped.counters["dropped_batches"] == 1 and dropped.counters["malformed_replies"] == 1


BAD_SCORES = {
    "positive logprob": lambda t: {"8": {"logprob": 445.0, "rank": 1}, "3": {"logprob": -1.0,
                                                                             "rank": 2}},
    "nan logprob": lambda t: {"8": {"logprob": float("nan"), "rank": 1},
                              "3": {"logprob": -1.0, "rank": 2}},
    "string logprob": lambda t: {"8": {"logprob": "-1", "rank": 1}, "3": {"logprob": -1.0,
                                                                          "rank": 2}},
    "id beyond vocab": lambda t: {"2000000000": {"logprob": -0.1, "rank": 1},
                                  "3": {"logprob": -2.0, "rank": 2}},
    "negative id": lambda t: {"-1": {"logprob": -0.1, "rank": 1}, "3": {"logprob": -2.0,
                                                                        "rank": 2}},
    "id not a number": lambda t: {"x": {"logprob": -0.1, "rank": 1}, "3": {"logprob": -2.0,
                                                                           "rank": 2}},
    "rank not an int": lambda t: {"8": {"logprob": -0.1, "rank": "1"}, "3": {"logprob": -2.0,
                                                                             "rank": 2}},
    "entry a list": lambda t: [1, 2],
}


@pytest.mark.parametrize("case", sorted(BAD_SCORES))
def test_score_replies_with_bad_values_are_teacher_errors(tiny_dirs, serve, case):
    srv = serve(_json_reply(_plp(BAD_SCORES[case])))
    with pytest.raises(TeacherError):
        _teacher(tiny_dirs, srv.url).score(PROMPT, CONT, top_k=2)
    dropped = _teacher(tiny_dirs, srv.url, on_failure="drop")
    assert dropped.score(PROMPT, CONT, top_k=2) is None
    assert dropped.counters["dropped_batches"] == 1


@pytest.mark.parametrize("payload", [
    {"choices": {"a": 1}}, {"choices": [[1]]}, {"choices": [{"index": "0"}]},
    {"choices": [{"index": 0, "prompt_logprobs": "x"}]},
])
def test_score_replies_of_another_shape_are_teacher_errors(tiny_dirs, serve, payload):
    srv = serve(_json_reply(payload))
    dropped = _teacher(tiny_dirs, srv.url, on_failure="drop")
    assert dropped.score(PROMPT, CONT, top_k=2) is None
    assert dropped.counters["dropped_batches"] == 1


def test_models_listing_of_another_shape_is_a_teacher_error(tiny_dirs, serve):
    for payload in ({"data": "x"}, {"data": [{"id": "m", "max_model_len": "big"}]}, []):
        srv = serve(_json_reply(payload))
        t = VLLMServerTeacher(srv.url, "m", tokenizer=tiny_dirs["student"], timeout=10.0,
                              deadline=20.0, retries=0)
        with pytest.raises(TeacherError):
            t.max_context  # noqa: B018 - the property asks the server


def test_default_deadlines_bound_one_request(tiny_dirs):
    """The defaults (config and client) bound one request, retries included, to minutes."""
    from madopd.distill import DistillConfig

    cfg = DistillConfig()
    worst = (cfg.teacher_retries + 1) * cfg.teacher_deadline + 0.5 * (2 ** cfg.teacher_retries)
    assert worst <= 6.5 * 60 and cfg.teacher_retry_budget is not None
    assert cfg.teacher_max_reply_mib * 2**20 == 256 << 20
