"""Student rollouts from a separate vLLM server whose weights follow the training student.

``VLLMServerRollout(student, base_url)`` samples the student's answers from an OpenAI-compatible
vLLM server (another process or machine: ``DistillConfig.rollout_backend="vllm_server"``) and
offers the same rollout half of ``HFStudent`` as the colocated engine (``RolloutEngine``:
prompt fitting, EOS cutting, hit-limit flags and counters are shared code). ``sync()`` pushes
the student's current weights into the running server; the Distiller calls it after every
optimizer step and after a resume.

Weight sync (vLLM 0.32 on CPU). vLLM's weight-transfer endpoints (``/init_weight_transfer_engine``,
``/update_weights``) need NCCL or CUDA IPC, so on CPU the supported route is the in-place reload
that the colocated engine uses, reached over HTTP through vLLM's development endpoints (server
started with ``VLLM_SERVER_DEV_MODE=1``):

1. the trainer writes the (LoRA-merged) weights as ONE safetensors file
   ``<weights_dir>/model.safetensors`` — written to a hidden temporary name and renamed, so the
   server never reads half a file; ``weights_dir`` must be a folder the server sees at the same
   path (a shared disk, or this machine);
2. ``POST /collective_rpc {"method": "reload_weights", "kwargs": {"weights_path": weights_dir,
   "is_checkpoint_format": true}}``: the worker reloads its model in place from that folder
   with the server's own loader (fusing q/k/v and gate/up, then the platform's post-processing);
   an error there (a wrong path, a model of another shape) comes back as HTTP 500 and is final
   (no retry: it would fail again);
3. ``POST /reset_prefix_cache``: keys/values cached under the old weights must not be reused.

The server must be started from a checkpoint (not ``--load-format dummy``: the reload reads
with the server's loader) of the same architecture, e.g. the student's initial folder. The
first ``sync`` happens in the constructor, so a server that refuses updates (no dev mode), a
model of another shape, or a folder the server cannot read fails at once, not at step 1.

Sampling: ``POST /v1/completions`` per prompt (token ids; seed + i per sample, so one request
each, sent concurrently: the server batches them), with ``return_token_ids`` and ``logprobs=0``
(the sampled token's log-prob, raw: vLLM's default ``logprobs_mode``). Every sampling field is
sent explicitly, penalties and ``min_p`` neutral, so the server's generation-config defaults
never apply: the same ``SamplingParams`` as the colocated engine.

Failures: ``timeout`` bounds connecting and each read, ``deadline`` one attempt; sampling
requests are retried ``retries`` times on transient failures (connection refused, timeout,
HTTP 5xx), weight updates never. A final failure raises ``RolloutError`` naming the URL and
route (one line); there is no fallback to HF generate.
"""

from __future__ import annotations

import os
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import torch

from madopd.errors import ConfigError, RolloutError
from madopd.models.vllm_rollout import RolloutEngine, merged_state_dict, sampling_fields
from madopd.models.vllm_server import JSONClient
from madopd.types import Sampling

WEIGHTS_FILE = "model.safetensors"
# sent with every sampling request so that a server's generation_config defaults never apply
NEUTRAL = {"min_p": 0.0, "repetition_penalty": 1.0, "presence_penalty": 0.0,
           "frequency_penalty": 0.0}


def check_server_url(url: Any, field: str = "rollout_server_url") -> str:
    """``http(s)://host[:port][/v1]`` -> the base URL without ``/v1``; ConfigError otherwise."""
    import urllib.parse

    if not isinstance(url, str):
        raise ConfigError(f"{field}: expected an http(s) URL string, got {url!r}")
    parts = urllib.parse.urlsplit(url.strip())
    try:
        port_ok = parts.port is None or 0 < parts.port < 65536
    except ValueError:
        port_ok = False
    if parts.scheme not in ("http", "https") or not parts.hostname or not port_ok \
            or parts.query or parts.fragment:
        raise ConfigError(f"{field}: expected http(s)://host[:port], got {url!r}")
    base = url.strip().rstrip("/")
    return base[:-3] if base.endswith("/v1") else base


def write_weights(weights: dict[str, torch.Tensor], folder: Path) -> int:
    """Write ``weights`` as ``folder/model.safetensors`` atomically; returns bytes written.

    Tied tensors (one storage under two names: embed_tokens and lm_head of a tied model) are
    written as copies under both names: safetensors refuses shared storage, and the reload
    needs both — dropping lm_head as ``save_pretrained`` does left vLLM's CPU backend with the
    old lm_head (its linear weights are repacked apart from the embeddings; measured: log-probs
    off by 0.85 after one step).
    """
    from safetensors.torch import save_file

    seen: set[int] = set()
    out: dict[str, torch.Tensor] = {}
    for name, t in weights.items():
        t = t.detach().contiguous()
        ptr = t.untyped_storage().data_ptr()
        out[name] = t.clone() if ptr in seen else t
        seen.add(ptr)
    tmp = folder / f".{WEIGHTS_FILE}.tmp"  # hidden: the server's *.safetensors glob skips it
    save_file(out, str(tmp))
    os.replace(tmp, folder / WEIGHTS_FILE)
    return (folder / WEIGHTS_FILE).stat().st_size


class VLLMServerRollout(JSONClient, RolloutEngine):
    """The student's sampler on a vLLM server (see the module docstring).

    Args:
        student: an ``HFStudent`` (tokenizer, EOS ids, truncation policy, counters, weights).
        base_url: the server, ``http://host:port`` (``/v1`` optional).
        model: the served model name; None = the one model ``/v1/models`` lists.
        weights_dir: folder the trainer writes ``model.safetensors`` into and the server reads
            (same path on both sides); None = a temporary folder on this machine (a server on
            the same machine). It must hold no other weight files.
        timeout: seconds to connect and for each read; deadline: seconds per attempt (default
            ``10 * timeout``); retries: extra attempts of a sampling request on transient
            failures (weight updates: none).
        max_concurrency: sampling requests in flight at once.
    """

    error = RolloutError

    def __init__(self, student: Any, base_url: str, *, model: str | None = None,
                 weights_dir: str | Path | None = None, timeout: float = 60.0,
                 deadline: float | None = None, retries: int = 2, backoff: float = 0.5,
                 max_concurrency: int = 32):
        deadline = 10.0 * timeout if deadline is None else deadline
        if not (0 < timeout < float("inf") and 0 < deadline < float("inf") and retries >= 0
                and backoff >= 0 and max_concurrency >= 1):
            raise ConfigError(f"need finite timeout > 0 and deadline > 0, retries >= 0, backoff "
                              f">= 0, max_concurrency >= 1; got {timeout}, {deadline}, "
                              f"{retries}, {backoff}, {max_concurrency}")
        self.base_url = check_server_url(base_url, "base_url")
        self.name = f"rollout server {self.base_url}"
        self.timeout, self.deadline, self.retries, self.backoff = timeout, deadline, retries, backoff
        self.retry_budget, self._budget_lock = None, threading.Lock()
        self.max_concurrency = max_concurrency
        self.counters: dict[str, float] = {
            "weight_syncs": 0, "sync_seconds": 0.0, "write_seconds": 0.0, "start_seconds": 0.0,
            "sequences_generated": 0, "requests": 0, "retries": 0, "failures": 0,
            "deadline_exceeded": 0, "retry_budget_exhausted": 0}
        self.student = student
        t0 = time.perf_counter()
        self.model, max_model_len = self._served_model(model)
        self.max_model_len = max_model_len
        self.max_context = min(student.max_context, max_model_len)
        self._tmp = None
        if weights_dir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="madopd-vllm-weights-")
            weights_dir = self._tmp.name
        self.weights_dir = Path(weights_dir).resolve()
        self._check_weights_dir()
        self.sync()
        self.counters["start_seconds"] = time.perf_counter() - t0

    def _served_model(self, model: str | None) -> tuple[str, int]:
        """(served model name, its max_model_len) from ``/v1/models``."""
        listed = self._request("GET", "/v1/models").get("data") or []
        names = {m.get("id"): m.get("max_model_len") for m in listed if isinstance(m, dict)}
        if model is None:
            if len(names) != 1:
                raise ConfigError(f"{self.name}: serves {sorted(map(str, names))}; name the "
                                  "student's model (rollout_server_model)")
            model = next(iter(names))
        if model not in names:
            raise ConfigError(f"{self.name}: does not serve {model!r} (it serves "
                              f"{sorted(map(str, names))})")
        if not names[model]:
            raise RolloutError(f"{self.name}: /v1/models gives no max_model_len for {model!r}")
        return str(model), int(names[model])

    def _check_weights_dir(self) -> None:
        d = self.weights_dir
        if d.exists() and not d.is_dir():
            raise ConfigError(f"rollout_weights_dir {d}: not a folder")
        d.mkdir(parents=True, exist_ok=True)
        others = sorted(p.name for p in d.iterdir() if p.name != WEIGHTS_FILE and (
            p.suffix in (".safetensors", ".bin", ".pt") or p.name.endswith(".index.json")))
        if others:  # the server's loader would read every weight file of the folder
            raise ConfigError(f"rollout_weights_dir {d}: holds other weight files {others}; "
                              "use an empty folder only for the rollout weights")

    # ------------------------------------------------------------------ weights
    def sync(self) -> float:
        """Write the student's current (merged) weights, have the server reload them in place,
        reset its prefix cache; returns seconds (the write alone: ``counters["write_seconds"]``)."""
        t0 = time.perf_counter()
        write_weights(merged_state_dict(self.student.model), self.weights_dir)
        t1 = time.perf_counter()
        body = {"method": "reload_weights", "timeout": self.deadline,
                "kwargs": {"weights_path": str(self.weights_dir), "is_checkpoint_format": True}}
        try:
            self._request("POST", "/collective_rpc", body, empty_ok=True, retries=0)
            reset = self._request("POST", "/reset_prefix_cache", empty_ok=True, retries=0)
        except RolloutError as e:
            hint = (" (start the server with VLLM_SERVER_DEV_MODE=1: vLLM's development "
                    "endpoints /collective_rpc and /reset_prefix_cache)" if "HTTP 404" in str(e)
                    else "")
            raise RolloutError(f"weight update refused: {e}{hint}") from e
        if reset.get("success") is False:  # blocks still held: nothing of ours is running
            raise RolloutError(f"{self.name}: /reset_prefix_cache answered success=false (other "
                               "requests running on the rollout server?)")
        dt = time.perf_counter() - t0
        self.counters["weight_syncs"] += 1
        self.counters["sync_seconds"] += dt
        self.counters["write_seconds"] += t1 - t0
        return dt

    # ------------------------------------------------------------------ sampling
    def _sample(self, prompts: list[list[int]], sampling: Sampling,
                ) -> list[tuple[list[int], list[float]]]:
        eos = self.student.eos_ids
        config = getattr(getattr(self.student, "model", None), "config", None)
        vocab = max(len(self.student.tokenizer), int(getattr(config, "vocab_size", 0) or 0))

        def one(i: int) -> tuple[list[int], list[float]]:
            body = {"model": self.model, "prompt": prompts[i], "logprobs": 0,
                    "return_token_ids": True, "return_tokens_as_token_ids": True,
                    **NEUTRAL, **sampling_fields(sampling, i, eos)}
            reply = self._request("POST", "/v1/completions", body)
            try:
                choice = reply["choices"][0]
                ids = [int(t) for t in choice["token_ids"]]
                lps = [float(x) for x in choice["logprobs"]["token_logprobs"]]
            except (KeyError, IndexError, TypeError, ValueError) as e:
                raise RolloutError(f"{self.name}: malformed /v1/completions reply (needs vLLM's "
                                   f"return_token_ids): {str(reply)[:300]}") from e
            if len(lps) != len(ids):
                raise RolloutError(f"{self.name}: {len(ids)} token ids but {len(lps)} log-probs")
            # hostile-reply checks (docs/threat-model.md): an id of 2e9 would become a
            # 16 GB one-hot downstream; a log-prob > 0 or NaN is not a probability
            bad_id = next((t for t in ids if not 0 <= t < vocab), None)
            bad_lp = next((x for x in lps if not x <= 0.0), None)
            if bad_id is not None or bad_lp is not None:
                self.counters["malformed_replies"] = self.counters.get("malformed_replies", 0) + 1
                what = (f"token id {bad_id} outside [0, {vocab})" if bad_id is not None else
                        f"log-prob {bad_lp} is not <= 0")
                raise RolloutError(f"{self.name}: malformed /v1/completions reply: {what}")
            return ids, lps

        if not prompts:
            return []
        with ThreadPoolExecutor(max_workers=min(self.max_concurrency, len(prompts))) as ex:
            return list(ex.map(one, range(len(prompts))))

    def close(self) -> None:
        """Remove a temporary weights folder (the server keeps running)."""
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __repr__(self) -> str:
        return (f"VLLMServerRollout(student={self.student.name!r}, base_url={self.base_url!r}, "
                f"model={self.model!r}, syncs={self.counters['weight_syncs']})")
