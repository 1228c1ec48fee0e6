"""A teacher served by vLLM's OpenAI-compatible server (standard library HTTP only).

- Debate turns: ``POST /v1/chat/completions`` (the server applies the model's chat template).
  A chat too long for the context is rendered and left-truncated here (the server cannot cut
  a chat) and sent as token ids to ``POST /v1/completions``, counted (``truncation`` policy).
- Force decoding: ``POST /v1/completions`` with the TOKEN IDS of context + continuation as the
  prompt, ``max_tokens=1`` and ``prompt_logprobs=k``. vLLM answers, per prompt position j, a
  dict ``{token_id: {"logprob", "rank", "decoded_token"}}`` for p(·| x_<j) (None at j = 0)
  holding the top-k ids (ranks 1..k) PLUS the prompt token x_j itself when its rank is > k.
  The continuation token R[t] sits at j = len(P)+t, so that dict is the teacher's distribution
  at the position that predicts R[t] — the same alignment as ``HFTeacher.score``.

Top-k conversion keeps exactly the rank <= k entries (a fixed k per position, distinct ids, no
padding) and puts everything else — including the prompt token when it ranks below k — in the
tail bucket ``1 - Σ p``. Padding ragged entries with -inf log-probs would make reverse-KL/JSD
terms infinite wherever the student puts mass on the padded id, so we do not pad.
``top_k=None`` asks for the full vocabulary (``prompt_logprobs=-1``; start the server with
``--max-logprobs -1``) and returns dense log-probs. vLLM writes -inf as -9999.0; both map to
probability 0.

Requests are bounded in total, not per read: ``timeout`` bounds the connection and each read,
``deadline`` the whole attempt (a watchdog shuts the socket down when it passes, so a server
that accepts and stalls, or trickles one byte every few seconds, costs at most ``deadline``
seconds). A reply cut short (the server closes mid-response) is retried like a timeout.
``retries`` are per request; ``retry_budget`` caps the retries of the teacher's lifetime (a
run), after which a failure is final (``counters["retry_budget_exhausted"]``).

Replies are hostile input (docs/threat-model.md, "Servers"): at most ``max_reply_bytes``
are read (a larger ``Content-Length`` is refused before reading, an endless chunked body is cut
at the cap), the JSON is parsed by ``madopd.safe_io`` (depth, duplicate keys) and checked
against the shape each route promises: log-probs are numbers <= 0 (NaN refused), token ids
integers in [0, vocab_size), chat ``content`` a string. Every violation is a ``TeacherError``
(``RolloutError`` for the rollout server), counted in ``counters["malformed_replies"]``, so the
``drop`` policies apply instead of a traceback.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import torch

from madopd import safe_io
from madopd.errors import ConfigError, DataError, TeacherError, ValueRangeError
from madopd.models._common import (
    check_continuations,
    contexts_to_ids,
    fit_context,
    is_greedy,
    load_tokenizer,
    validate_sampling,
    validate_truncation,
)
from madopd.types import Chat, Sampling, Scores, TopKLogprobs

ON_FAILURE = ("raise", "drop")
MAX_REPLY_BYTES = 256 << 20  # default cap of one reply body
_READ_CHUNK = 1 << 20


class _Retryable(Exception):
    """A transient failure (connection, timeout, HTTP 5xx/429): worth another try."""


class JSONClient:
    """Bounded JSON-over-HTTP requests to one server (the module docstring: timeout per read,
    deadline per attempt, retries with backoff, a lifetime retry budget).

    Subclasses set ``name``, ``base_url`` (no trailing ``/v1``), ``timeout``, ``retries``,
    ``backoff``, ``deadline``, ``retry_budget``, ``_budget_lock`` and ``counters`` (with
    ``requests``, ``retries``, ``failures``, ``deadline_exceeded``, ``retry_budget_exhausted``);
    ``error`` is the exception a final failure raises.
    """

    error: type[Exception] = TeacherError
    max_reply_bytes: int = MAX_REPLY_BYTES

    def _malformed(self, route: str, what: str) -> Exception:
        """A reply of the wrong shape or value: final (a server that answers so answers so
        again), counted, as ``self.error`` so the failure policies apply."""
        self.counters["malformed_replies"] = self.counters.get("malformed_replies", 0) + 1
        return self.error(f"{self.name}: malformed reply from {route}: {what}"[:500])

    def _request(self, method: str, route: str, body: dict | None = None, *,
                 empty_ok: bool = False, retries: int | None = None) -> dict:
        """One JSON request with bounded retries on transient failures (``retries``: this
        call's, default ``self.retries``). ``empty_ok``: a 2xx reply with an empty body is
        ``{}`` (vLLM's dev endpoints answer some calls so)."""
        data = None if body is None else json.dumps(body).encode()
        last = ""
        attempts = 0
        for attempt in range((self.retries if retries is None else retries) + 1):
            if attempt:
                if not self._take_retry():
                    last += (f" (retry budget of {self.retry_budget} spent: no further "
                             "attempts)")
                    break
                time.sleep(self.backoff * 2 ** (attempt - 1))
            self.counters["requests"] += 1
            attempts += 1
            try:
                return self._once(method, route, data, empty_ok)
            except _Retryable as e:
                last = str(e)
        self.counters["failures"] += 1
        raise self.error(f"{self.name}: {method} {self.base_url}{route} failed after "
                         f"{attempts} attempts: {last}")

    def _take_retry(self) -> bool:
        """Spend one retry of the lifetime budget (thread-safe); False once it is spent."""
        with self._budget_lock:
            if self.retry_budget is not None and self.counters["retries"] >= self.retry_budget:
                self.counters["retry_budget_exhausted"] += 1
                return False
            self.counters["retries"] += 1
            return True

    def _once(self, method: str, route: str, data: bytes | None, empty_ok: bool = False) -> dict:
        """One attempt, bounded by ``timeout`` per read and ``deadline`` in total."""
        status, raw = self._http(method, route, data)
        if status >= 500 or status == 429:
            raise _Retryable(f"HTTP {status}: {raw[:500].decode(errors='replace')}")
        if status >= 400:
            self.counters["failures"] += 1  # a bad request does not get better by retrying
            raise self.error(f"{self.name}: {method} {route} -> HTTP {status}: "
                             f"{raw[:500].decode(errors='replace')}")
        if empty_ok and not raw.strip():
            return {}
        try:
            reply = safe_io.loads_json(raw, f"{self.base_url}{route}", what="JSON reply",
                                       max_bytes=self.max_reply_bytes)
        except DataError as e:
            if "invalid JSON reply" in str(e) or "not UTF-8" in str(e):  # cut or garbled
                raise _Retryable(f"malformed JSON reply: {raw[:200]!r}") from None
            raise self._malformed(route, str(e)) from None
        if not isinstance(reply, dict):
            raise self._malformed(route, f"expected a JSON object, got {type(reply).__name__}")
        return reply

    def _http(self, method: str, route: str, data: bytes | None) -> tuple[int, bytes]:
        """(status, body). A watchdog shuts the socket down at the deadline, which ends any
        connect, send or read in progress; every failure is ``_Retryable``."""
        url = urllib.parse.urlsplit(self.base_url + route)
        cls = http.client.HTTPSConnection if url.scheme == "https" else http.client.HTTPConnection
        conn = cls(url.hostname, url.port, timeout=min(self.timeout, self.deadline))
        expired = threading.Event()

        def stop() -> None:
            expired.set()
            sock = conn.sock
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

        watchdog = threading.Timer(self.deadline, stop)
        watchdog.daemon = True
        watchdog.start()
        path = url.path + (f"?{url.query}" if url.query else "")
        t0 = time.monotonic()
        try:
            conn.request(method, path, body=data, headers={"Content-Type": "application/json"})
            resp = conn.getresponse()
            raw = self._read_bounded(resp, route)
            if expired.is_set():  # a shut-down socket can read as a clean, short end
                raise OSError("deadline passed")
            return resp.status, raw
        except (OSError, http.client.HTTPException) as e:
            # the socket's own timeout (min(timeout, deadline)) can fire at the deadline too
            if expired.is_set() or time.monotonic() - t0 >= self.deadline:
                self.counters["deadline_exceeded"] += 1
                raise _Retryable(f"no complete reply within the deadline of {self.deadline:g} s "
                                 "(the server stalled or trickled)") from e
            raise _Retryable(f"{type(e).__name__}: {e}") from e
        finally:
            watchdog.cancel()
            conn.close()

    def _read_bounded(self, resp: http.client.HTTPResponse, route: str) -> bytes:
        """The body, at most ``max_reply_bytes``: a larger Content-Length is refused before a
        byte is read, a longer (chunked, endless) body when the cap is passed. A body shorter
        than its Content-Length (the server closed early) is retryable."""
        cap = self.max_reply_bytes
        declared = resp.getheader("Content-Length")
        length = None
        if declared is not None:
            try:
                length = int(declared)
            except ValueError:
                raise self._malformed(route, f"Content-Length {declared[:40]!r}") from None
            if length > cap:
                raise self._malformed(route, f"Content-Length {length} exceeds max_reply_bytes "
                                      f"{cap}")
        parts, total = [], 0
        while True:
            chunk = resp.read(min(_READ_CHUNK, cap + 1 - total))
            if not chunk:
                break
            parts.append(chunk)
            total += len(chunk)
            if total > cap:
                raise self._malformed(route, f"reply longer than max_reply_bytes {cap} (read "
                                      "stopped there)")
        if length is not None and total < length:
            raise http.client.IncompleteRead(b"", length - total)
        return b"".join(parts)



class VLLMServerTeacher(JSONClient):
    """Teacher behind a vLLM (or any OpenAI-compatible, prompt_logprobs-capable) server.

    Args:
        base_url: e.g. ``http://127.0.0.1:8000`` (with or without ``/v1``).
        model: the served model name (``--served-model-name`` or the model path).
        tokenizer: path or object of the SAME tokenizer the server uses (required: contexts are
            rendered to ids here, so scoring matches ``HFTeacher`` token for token).
        timeout: seconds to connect and for each read; deadline: TOTAL seconds of one
            attempt (default ``10 * timeout``); retries/backoff: extra attempts per request on
            transient failures, with exponential backoff ``backoff * 2**attempt`` seconds;
            retry_budget: retries allowed over this object's lifetime (None = unlimited).
        on_failure: ``"raise"`` -> ``TeacherError``; ``"drop"`` -> ``generate``/``score``
            return None for the whole batch (counted in ``counters["dropped_batches"]``).
        max_context: server context length; None asks ``/v1/models`` (``max_model_len``).
        truncation: ``"left"`` | ``"error"``, as in ``HFTeacher``, for scoring contexts
            (``counters["truncated_contexts"]``) and generation prompts
            (``counters["truncated_prompts"]``); "error" raises ``ValueRangeError``.
        max_concurrency: parallel chat requests (the server batches them).
    """

    def __init__(self, base_url: str, model: str, *, tokenizer: Any, name: str | None = None,
                 timeout: float = 30.0, retries: int = 3, backoff: float = 0.5,
                 on_failure: str = "raise", max_context: int | None = None,
                 truncation: str = "left", max_concurrency: int = 8,
                 deadline: float | None = None, retry_budget: int | None = None,
                 max_reply_bytes: int = MAX_REPLY_BYTES, vocab_size: int | None = None):
        if on_failure not in ON_FAILURE:
            raise ConfigError(f"on_failure: expected one of {ON_FAILURE}, got {on_failure!r}")
        deadline = 10.0 * timeout if deadline is None else deadline
        if not (retries >= 0 and 0 < timeout < float("inf") and 0 < deadline < float("inf")
                and backoff >= 0 and max_concurrency >= 1 and max_reply_bytes >= 1
                and (retry_budget is None or retry_budget >= 0)):
            raise ConfigError(f"need retries >= 0, finite timeout > 0 and deadline > 0, "
                              f"backoff >= 0, max_concurrency >= 1, retry_budget >= 0 or None; "
                              f"got {retries}, {timeout}, {deadline}, {backoff}, "
                              f"{max_concurrency}, {retry_budget}")
        url = base_url.rstrip("/")
        self.base_url = url[:-3] if url.endswith("/v1") else url
        self.model = model
        self._tokenizer = load_tokenizer(tokenizer)
        self.max_reply_bytes = int(max_reply_bytes)
        self.vocab_size = int(vocab_size) if vocab_size else _model_vocab(tokenizer,
                                                                          self._tokenizer)
        self.name = name or model.rstrip("/").split("/")[-1]
        self.timeout, self.retries, self.backoff = timeout, retries, backoff
        self.deadline, self.retry_budget = float(deadline), retry_budget
        self._budget_lock = threading.Lock()
        self.on_failure = on_failure
        self.truncation = validate_truncation(truncation)
        self._max_context = max_context
        self.max_concurrency = max_concurrency
        self.counters: dict[str, int] = {"requests": 0, "retries": 0, "failures": 0,
                                         "dropped_batches": 0, "truncated_contexts": 0,
                                         "truncated_prompts": 0, "deadline_exceeded": 0,
                                         "retry_budget_exhausted": 0, "malformed_replies": 0}

    @property
    def tokenizer(self) -> Any:
        return self._tokenizer

    def _guarded(self, fn, *args):
        """Apply the failure policy around one batch."""
        try:
            return fn(*args)
        except TeacherError:
            if self.on_failure == "raise":
                raise
            self.counters["dropped_batches"] += 1
            return None

    @property
    def max_context(self) -> int:
        if self._max_context is None:
            info = self._request("GET", "/v1/models")
            data = info.get("data", [])
            lens = [m.get("max_model_len") for m in data if isinstance(m, dict)
                    and m.get("id") == self.model] if isinstance(data, list) else []
            if lens and (isinstance(lens[0], bool) or not isinstance(lens[0], int)
                         or lens[0] < 2):
                raise self._malformed("/v1/models", f"max_model_len {str(lens[0])[:40]}")
            if not lens or not lens[0]:
                raise TeacherError(f"{self.name}: /v1/models does not list {self.model!r} with a "
                                   f"max_model_len; pass max_context")
            self._max_context = int(lens[0])
        return self._max_context

    # ------------------------------------------------------------------ generation
    def generate(self, chats: list[Chat], sampling: Sampling) -> list[str] | None:
        """One reply per chat via chat completions (None for the batch under on_failure='drop').

        With ``sampling.seed`` the i-th chat uses seed + i: deterministic, yet two identical
        chats in one batch still get independent samples. A chat whose rendered prompt +
        ``max_new_tokens`` exceeds ``max_context`` follows ``truncation`` (see ``_fit_prompts``).
        """
        validate_sampling(sampling)
        return self._guarded(self._generate, chats, sampling)

    def _fit_prompts(self, chats: list[Chat], max_new_tokens: int) -> list[list[int] | None]:
        """Per chat: None when prompt + max_new_tokens fits ``max_context``, else the
        left-truncated prompt ids (``truncation="left"``, counted in
        ``counters["truncated_prompts"]``). ``truncation="error"`` raises ValueRangeError.

        Same policy as ``HFTeacher.generate_ids``. Checked here because the server cannot
        truncate a chat: it answers HTTP 400 when the prompt alone exceeds its context, and
        silently shortens the reply when prompt + max_tokens does.
        """
        prompts = contexts_to_ids(self._tokenizer, chats)  # [B][P_b], our chat template
        out: list[list[int] | None] = []
        for i, p in enumerate(prompts):
            try:
                p2, cut = fit_context(p, max_new_tokens, self.max_context, self.truncation, i)
            except ValueRangeError as e:
                raise ValueRangeError(f"{self.name}: generate (max_new_tokens={max_new_tokens}): "
                                      f"{e}") from e
            self.counters["truncated_prompts"] += int(cut)
            out.append(p2 if cut else None)
        return out

    def _generate(self, chats: list[Chat], sampling: Sampling) -> list[str]:
        fitted = self._fit_prompts(chats, sampling.max_new_tokens)

        def one(i: int) -> str:
            body: dict[str, Any] = {"model": self.model, "max_tokens": sampling.max_new_tokens}
            if fitted[i] is None:  # fits: the server renders the chat with its own template
                route, body["messages"] = "/v1/chat/completions", chats[i]
            else:  # truncated: send the kept token ids (the chat cannot be cut as a chat)
                route, body["prompt"] = "/v1/completions", fitted[i]
            if is_greedy(sampling):
                body["temperature"] = 0.0
            else:
                body.update(temperature=sampling.temperature, top_p=sampling.top_p,
                            top_k=sampling.top_k or -1)
            if sampling.seed is not None:
                body["seed"] = sampling.seed + i
            reply = self._request("POST", route, body)
            try:
                choice = _first_choice(reply)
            except TeacherError as e:
                raise self._malformed(route, str(e)) from None
            text = (choice.get("message") or {}).get("content") if fitted[i] is None and \
                isinstance(choice.get("message"), dict) else choice.get("text")
            if not isinstance(text, str):
                raise self._malformed(route, f"expected the reply text as a string, got "
                                      f"{str(reply)[:200]}")
            return text

        with ThreadPoolExecutor(max_workers=min(self.max_concurrency, max(1, len(chats)))) as ex:
            return list(ex.map(one, range(len(chats))))

    # ------------------------------------------------------------------ force decoding
    def score(self, contexts: list[Chat] | list[list[int]], continuation_ids: list[list[int]], *,
              top_k: int | None = None) -> Scores | None:
        """Force decoding through ``prompt_logprobs`` (see the module docstring for the format).

        Returns TopKLogprobs [B, T, k] (+ tail) or, with ``top_k=None``, dense log-probs
        [B, T, V]; mask [B, T]; truncation flags [B]. None under on_failure='drop'.
        """
        if top_k is not None and int(top_k) < 1:
            raise ConfigError(f"top_k must be >= 1 or None, got {top_k}")
        conts = check_continuations(continuation_ids, len(contexts))
        prompts = contexts_to_ids(self._tokenizer, contexts)
        return self._guarded(self._score, prompts, conts, top_k)

    def _score(self, prompts: list[list[int]], conts: list[list[int]], top_k: int | None) -> Scores:
        fitted, truncated = [], []
        for i, (p, c) in enumerate(zip(prompts, conts)):
            # the server also samples max_tokens=1 token after the prompt: keep one slot for it
            p2, cut = fit_context(p, len(c) + 1, self.max_context, self.truncation, i)
            fitted.append(p2)
            truncated.append(cut)
        self.counters["truncated_contexts"] += sum(truncated)
        body = {"model": self.model, "prompt": [p + c for p, c in zip(fitted, conts)],
                "max_tokens": 1, "temperature": 0.0,
                "prompt_logprobs": -1 if top_k is None else int(top_k)}
        reply = self._request("POST", "/v1/completions", body)
        choices = reply.get("choices")
        if not isinstance(choices, list) or not all(
                isinstance(ch, dict) and _is_int(ch.get("index", 0)) for ch in choices):
            raise self._malformed("/v1/completions", "expected 'choices', a list of objects "
                                  "with integer 'index'")
        choices = sorted(choices, key=lambda ch: ch.get("index", 0))
        if len(choices) != len(fitted):
            raise TeacherError(f"{self.name}: expected {len(fitted)} choices, got {len(choices)}")
        per_sample = []  # [B][T] of {id: logprob}
        for b, (p, c, ch) in enumerate(zip(fitted, conts, choices)):
            plp = ch.get("prompt_logprobs")
            if not isinstance(plp, list) or len(plp) != len(p) + len(c):
                raise TeacherError(f"{self.name}: sample {b}: prompt_logprobs missing or of length "
                                   f"{len(plp) if isinstance(plp, list) else None}, expected {len(p) + len(c)}")
            try:
                per_sample.append([_entries(plp[len(p) + t], top_k, b, t, self.vocab_size)
                                   for t in range(len(c))])
            except TeacherError as e:
                raise self._malformed("/v1/completions", str(e)) from None
        B, T = len(conts), max((len(c) for c in conts), default=0)
        mask = torch.zeros(B, T, dtype=torch.bool)
        for b, c in enumerate(conts):
            mask[b, : len(c)] = True
        dists = _to_dense(per_sample, B, T, len(self._tokenizer)) if top_k is None else \
            _to_topk(per_sample, B, T, top_k)
        return Scores(dists=dists, mask=mask, truncated=truncated)

    def __repr__(self) -> str:
        return f"VLLMServerTeacher(name={self.name!r}, base_url={self.base_url!r}, model={self.model!r})"


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _first_choice(reply: dict) -> dict:
    choices = reply.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise TeacherError(f"expected 'choices', a non-empty list of objects: {str(reply)[:200]}")
    return choices[0]


def _model_vocab(source: Any, tokenizer: Any) -> int:
    """Token ids a server may name: the model's ``vocab_size`` (its embedding rows, often
    padded beyond the tokenizer) when the tokenizer folder holds a config.json, else the
    tokenizer's length (pass ``vocab_size`` for a padded model served by name)."""
    n = len(tokenizer)
    if isinstance(source, (str, Path)) and (Path(source) / "config.json").is_file():
        with contextlib.suppress(DataError):
            cfg = safe_io.read_json_file(Path(source) / "config.json", "model config")
            v = cfg.get("vocab_size") if isinstance(cfg, dict) else None
            if _is_int(v) and v > 0:
                n = max(n, v)
    return n


def _entries(pos: Any, top_k: int | None, b: int, t: int,
             vocab: int | None = None) -> dict[int, float]:
    """{id: logprob} of one position: the ``top_k`` best-ranked entries (all when top_k is None).

    Sorting by (rank, -logprob) and cutting at top_k, rather than filtering rank <= top_k,
    keeps exactly k entries even when the prompt token ties the k-th one (vLLM ranks a prompt
    token as 1 + #strictly-larger, so a tie can give two entries rank k).
    """
    if not isinstance(pos, dict) or not pos:
        raise TeacherError(f"prompt_logprobs for sample {b}, continuation token {t}: expected a "
                           f"dict of token id -> logprob info, got {str(pos)[:100]}")
    rows = []
    where = f"prompt_logprobs for sample {b}, continuation token {t}"
    for key, info in pos.items():
        lp, rank = (info.get("logprob"), info.get("rank")) if isinstance(info, dict) else (info, None)
        tid = int(key) if isinstance(key, str) and key.lstrip("-").isdigit() and len(key) < 12 \
            else None
        if tid is None or tid < 0 or (vocab is not None and tid >= vocab):
            raise TeacherError(f"{where}: token id {str(key)[:20]!r} outside [0, {vocab})")
        if lp is not None and (isinstance(lp, bool) or not isinstance(lp, (int, float))
                               or not lp <= 0.0):  # NaN fails <= too
            raise TeacherError(f"{where}: log-prob {str(lp)[:20]} of id {tid} is not a number "
                               "<= 0")
        if rank is not None and not (_is_int(rank) and rank >= 1):
            raise TeacherError(f"{where}: rank {str(rank)[:20]} of id {tid} is not an integer >= 1")
        lp = float("-inf") if lp is None else float(lp)
        rows.append((float("inf") if rank is None else rank, -lp, tid, lp))
    rows.sort()
    if top_k is not None:
        rows = rows[:top_k]  # the prompt token below the top-k belongs to the tail bucket
    return {tid: lp for _, _, tid, lp in rows}


def _to_topk(per_sample: list[list[dict[int, float]]], B: int, T: int, top_k: int) -> TopKLogprobs:
    sizes = {len(d) for rows in per_sample for d in rows}
    if len(sizes) > 1:
        raise TeacherError(f"the server returned a varying number of top-k entries {sorted(sizes)} "
                           f"(expected exactly k={top_k} per position)")
    k = sizes.pop() if sizes else min(top_k, 1)
    ids = torch.zeros(B, T, k, dtype=torch.long)
    # padded positions (mask False) hold distinct ids 0..k-1 with log p = -log k: harmless
    ids[:] = torch.arange(k)
    lps = torch.full((B, T, k), -float(torch.log(torch.tensor(float(k)))))
    for b, rows in enumerate(per_sample):
        for t, d in enumerate(rows):
            items = sorted(d.items(), key=lambda kv: -kv[1])
            ids[b, t] = torch.tensor([i for i, _ in items])
            lps[b, t] = torch.tensor([lp for _, lp in items])
    lps = lps.clamp_min(-1e4)  # vLLM sends -9999.0 for -inf; keep the tensor finite
    tail = (1.0 - lps.exp().sum(-1)).clamp_min(0.0)
    return TopKLogprobs(ids=ids, logprobs=lps, tail_mass=tail)


def _to_dense(per_sample: list[list[dict[int, float]]], B: int, T: int, vocab: int) -> torch.Tensor:
    width = max([vocab] + [max(d) + 1 for rows in per_sample for d in rows])
    out = torch.full((B, T, width), -1e4)
    out[:, :, 0] = 0.0  # padded positions: a valid (one-hot) distribution
    for b, rows in enumerate(per_sample):
        for t, d in enumerate(rows):
            out[b, t, 0] = -1e4
            out[b, t, list(d)] = torch.tensor(list(d.values())).clamp_min(-1e4)
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def serve_vllm(model_dir: str | Path, *, python: str | Path | None = None, port: int | None = None,
               max_model_len: int = 512, max_logprobs: int = -1, startup_timeout: float = 180.0,
               log_path: str | Path | None = None, extra_args: tuple[str, ...] = (),
               env: dict[str, str] | None = None, port_attempts: int = 3,
               stats: dict[str, int] | None = None) -> Iterator[str]:
    """Start a local vLLM OpenAI-compatible server for ``model_dir``; yield its base URL.

    ``python`` is the interpreter of a venv with vLLM (CPU: ``.ci/setup_vllm.sh``). The flags
    are the CPU ones from docs (fp32, eager, small KV cache); ``max_logprobs=-1`` allows dense
    scoring. The server runs in its own process group, killed (TERM, then KILL) on exit.
    Raises ``TeacherError`` with the log tail if it dies or is not healthy in time
    (``startup_timeout`` seconds per start; loaded machines need more than the ~40 s of an idle one).

    With ``port=None`` a free port is picked; another process can take it before vLLM binds it
    (vLLM binds ~10 s after launch, after its imports), so a start that fails with "Address
    already in use" is retried on a new port, up to ``port_attempts`` starts (counted in
    ``stats["port_retries"]``). Readiness requires ``/health`` = 200 from a server that lists
    ``model_dir`` in ``/v1/models`` while our process is alive, so a foreign server that holds
    the port is never mistaken for ours.
    """
    if port_attempts < 1 or startup_timeout <= 0:
        raise ConfigError(f"need port_attempts >= 1 and startup_timeout > 0, got {port_attempts}, "
                          f"{startup_timeout}")
    stats = {} if stats is None else stats
    stats.setdefault("port_retries", 0)
    python = str(python or sys.executable)
    log_path = Path(log_path) if log_path else Path(model_dir) / "vllm_server.log"
    full_env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1", **(env or {})}
    for attempt in range(port_attempts if port is None else 1):
        use_port = port or free_port()
        cmd = [python, "-m", "vllm.entrypoints.openai.api_server", "--model", str(model_dir),
               "--host", "127.0.0.1", "--port", str(use_port), "--dtype", "float32",
               "--max-model-len", str(max_model_len), "--gpu-memory-utilization", "0.5",
               "--enforce-eager", "--max-logprobs", str(max_logprobs), *extra_args]
        with open(log_path, "ab" if attempt else "wb") as log:
            proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=full_env,
                                    start_new_session=True)
        url = f"http://127.0.0.1:{use_port}"
        try:
            ready = _wait_ready(proc, url, str(model_dir), startup_timeout, log_path)
        except BaseException:
            _stop_group(proc)
            raise
        if ready:
            break
        _stop_group(proc)
        stats["port_retries"] += 1
    else:
        raise TeacherError(f"vLLM server: {port_attempts} starts all found their port taken; "
                           f"log {log_path}:\n{_tail(log_path)}")
    try:
        yield url
    finally:
        _stop_group(proc)


_LOCAL = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never via a proxy


def _get_local(url: str, timeout: float) -> tuple[int, bytes]:
    with _LOCAL.open(url, timeout=timeout) as r:
        return r.status, r.read()


def _wait_ready(proc: subprocess.Popen, url: str, model_dir: str, timeout: float,
                log_path: Path) -> bool:
    """True once our server is ready; False if it exited because its port was taken."""
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            tail = _tail(log_path)
            if "Address already in use" in tail:
                return False
            raise TeacherError(f"vLLM server exited with code {proc.returncode}; log "
                               f"{log_path}:\n{tail}")
        try:
            if _get_local(url + "/health", 5)[0] == 200:
                status, raw = _get_local(url + "/v1/models", 10)
                models = json.loads(raw).get("data", []) if status == 200 else []
                if any(model_dir in (m.get("id"), m.get("root")) for m in models):
                    if proc.poll() is None:
                        return True
                elif models:  # another server holds this port: ours cannot bind it
                    return False
        # http.client.HTTPException: a half-started server (or a non-HTTP peer) can answer garbage
        except (OSError, http.client.HTTPException, json.JSONDecodeError, AttributeError):
            pass  # urllib.error.URLError and timeouts are OSErrors
        if time.monotonic() > deadline:
            raise TeacherError(f"vLLM server not healthy after {timeout:.0f} s; log "
                               f"{log_path}:\n{_tail(log_path)}")
        time.sleep(1.0)


def _tail(path: Path, n: int = 3000) -> str:
    try:
        return Path(path).read_bytes()[-n:].decode(errors="replace")
    except OSError:
        return "(no log)"


def _stop_group(proc: subprocess.Popen) -> None:
    """TERM the server's process group (it forks engine workers); then KILL what is left."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        pass
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)  # stragglers (engine core) of our own group
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=10)
    # SIGKILL is delivered asynchronously: wait until no live member of the group is left, so
    # callers (and tests) never observe a half-stopped server.
    deadline = time.monotonic() + 10
    while _live_group_members(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.05)


def _live_group_members(pgid: int) -> list[int]:
    """Pids in process group ``pgid`` that are not zombies (Linux /proc; [] elsewhere)."""
    live = []
    for entry in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = entry.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if len(fields) > 2 and int(fields[2]) == pgid and fields[0] != "Z":
            live.append(int(entry.parent.name))
    return live
