"""Debate transcript cache: the debate never sees the student's answer (paper §4.1, "blind").

A transcript therefore depends only on the state and on the debate's setup, so it can be
computed once and reused across steps, epochs, methods and training seeds. The key hashes

    (state messages, teacher identities, protocol: rounds + templates + sampling incl. seed,
     failure policy)

Teacher identity = name + checkpoint path + a fingerprint of the weights (a teacher trained
further under the same name does not hit stale entries). Reuse is valid for single-turn
tasks and teacher-forced OPAD; full-rollout OPAD states contain the student's own earlier
actions, so they are new each time (they simply miss). With a *sampled* debate a cache fixes
one debate per state — equivalent to a fixed dataset of debates; clear the cache or change
the debate seed to draw new ones. Sampled debates run one state at a time with a seed derived
from the key, so a transcript never depends on its batch-mates (``_debate_each``), and the
Distiller joins the training seed to the debate seed (``distill.loop.debate_sampling``).

Transcripts with failed turns (teacher errors under 'drop_teacher') are never cached.
Force decoding (teacher scoring) is never cached: it depends on the student's tokens.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path
from typing import Any

from madopd.errors import DataError

try:
    import fcntl
except ImportError:  # Windows: no flock; a single process appends whole lines anyway
    fcntl = None
from madopd.types import State, Transcript


def teacher_identity(teacher: Any) -> dict[str, Any]:
    """Name, checkpoint path and a weight fingerprint (sums of every parameter, float64)."""
    ident: dict[str, Any] = {"name": getattr(teacher, "name", type(teacher).__name__)}
    model = getattr(teacher, "model", None)
    cfg = getattr(model, "config", None)
    ident["path"] = str(getattr(cfg, "_name_or_path", "") or getattr(teacher, "base_url", "")
                        or getattr(teacher, "model_name", ""))
    if model is not None and hasattr(model, "named_parameters"):
        import torch

        h = hashlib.sha256()
        with torch.no_grad():
            for name, p in model.named_parameters():
                x = p.detach().double()
                h.update(f"{name}:{tuple(p.shape)}:{float(x.sum()):.10e}:"
                         f"{float(x.abs().sum()):.10e}".encode())
        ident["weights"] = h.hexdigest()[:16]
    return ident


def protocol_identity(protocol: Any) -> dict[str, Any]:
    """The parts of a DebateProtocol that change transcripts (not the weighting policy)."""
    ident = {"rounds": protocol.rounds,
             "templates": dataclasses.asdict(protocol.templates),
             "sampling": dataclasses.asdict(protocol.sampling),
             "on_teacher_error": protocol.on_teacher_error}
    fallback = getattr(protocol, "confidence_fallback", "none")
    if fallback != "none":  # only then: keys of existing caches stay valid
        ident["confidence_fallback"] = fallback
    return ident


def _digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


class DebateCache:
    """In-memory transcript cache, optionally backed by an append-only JSONL file.

    ``counters``: ``cache_hits``, ``cache_misses``, ``cache_not_stored_failed`` (cumulative);
    ``get_or_run`` also returns the per-call counts.
    """

    def __init__(self, path: str | Path | None = None):
        self.path = Path(path) if path is not None else None
        self._mem: dict[str, dict[str, Any]] = {}
        # id(debate) -> (the debate itself, its key). Holding the object keeps its id from being
        # reused by a later Debate while the entry exists (an id alone went stale after GC).
        self._debate_keys: dict[int, tuple[Any, str]] = {}
        self.counters = {"cache_hits": 0, "cache_misses": 0, "cache_not_stored_failed": 0,
                         "cache_partial_lines": 0}
        if self.path is not None and self.path.exists():
            self._load()

    def __len__(self) -> int:
        return len(self._mem)

    def _load(self) -> None:
        raw = self.path.read_bytes()
        try:
            lines = raw.decode("utf-8").split("\n")
        except UnicodeDecodeError as exc:  # one line naming the file, not a traceback
            raise DataError(f"debate cache is not UTF-8 (byte {exc.start})", path=str(self.path),
                            line=raw.count(b"\n", 0, exc.start) + 1) from None
        for i, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                key, tr = row["key"], row["transcript"]
            except (json.JSONDecodeError, KeyError, TypeError):
                if i == len(lines):  # a write cut short by a crash: counted, not fatal
                    self.counters["cache_partial_lines"] += 1
                    continue
                raise DataError("malformed cache line", path=str(self.path), line=i) from None
            self._mem[key] = tr

    def setup_key(self, debate: Any) -> str:
        """Hash of the debate's teachers and protocol (computed once per Debate object)."""
        held = self._debate_keys.get(id(debate))
        if held is not None and held[0] is debate:
            return held[1]
        key = _digest({"teachers": [teacher_identity(t) for t in debate.teachers],
                       "names": list(debate.names),
                       "protocol": protocol_identity(debate.protocol)})
        self._debate_keys[id(debate)] = (debate, key)
        return key

    def key(self, state: State, debate: Any) -> str:
        return _digest({"setup": self.setup_key(debate), "messages": state.messages})

    def get_or_run(self, debate: Any, states: list[State]) -> tuple[list[Transcript], dict[str, int]]:
        """Transcripts for ``states``: cached ones reused, the rest debated in one batch."""
        from madopd.debate import is_failed, transcript_from_dict, transcript_to_dict

        keys = [self.key(s, debate) for s in states]
        out: list[Transcript | None] = [None] * len(states)
        todo = []
        for i, (s, k) in enumerate(zip(states, keys)):
            if k in self._mem:
                out[i] = dataclasses.replace(transcript_from_dict(self._mem[k]), state_id=s.id)
            else:
                todo.append(i)
        # Identical states in one batch are debated once.
        unique: dict[str, int] = {}
        for i in todo:
            unique.setdefault(keys[i], i)
        fresh = _debate_each(debate, [states[i] for i in unique.values()], list(unique))
        by_key = dict(zip(unique.keys(), fresh))
        not_stored = 0
        new_rows = []
        for k, tr in by_key.items():
            if any(is_failed(m) for m in tr.messages):
                not_stored += 1
                continue
            self._mem[k] = transcript_to_dict(tr)
            new_rows.append({"key": k, "transcript": self._mem[k]})
        for i in todo:
            out[i] = dataclasses.replace(by_key[keys[i]], state_id=states[i].id)
        if new_rows and self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            _append_locked(self.path, "".join(json.dumps(row, ensure_ascii=False) + "\n"
                                              for row in new_rows))
        stats = {"cache_hits": len(states) - len(todo), "cache_misses": len(todo),
                 "cache_not_stored_failed": not_stored}
        for name, value in stats.items():
            self.counters[name] += value
        return out, stats

    @property
    def hit_rate(self) -> float:
        n = self.counters["cache_hits"] + self.counters["cache_misses"]
        return self.counters["cache_hits"] / n if n else 0.0


def is_sampled(protocol: Any) -> bool:
    """True when the debate's turns are sampled (not argmax), so they depend on an RNG stream."""
    s = protocol.sampling
    return not s.greedy and s.temperature > 0


def _debate_each(debate: Any, states: list[State], keys: list[str]) -> list[Transcript]:
    """Transcripts for ``states`` that depend only on what their cache keys hash.

    Greedy turns are a function of the state: one batch. Sampled turns share one RNG stream
    per batch, so a state's transcript would depend on its batch-mates and the key would lie
    (issue 13, item 5). They are debated one state at a time, each with a seed derived from
    its key (which holds the protocol's seed): the same state gives the same transcript in
    any batch, and another protocol seed gives another one. Slower, and counted nowhere
    because nothing is lost; use greedy turns where speed matters.
    """
    if not states:
        return []
    if not is_sampled(debate.protocol):
        return debate.run(states)
    from madopd.opad import derive_seed

    base = debate.protocol
    out = []
    try:
        for state, key in zip(states, keys):
            seed = derive_seed("debate", key)
            debate.protocol = dataclasses.replace(
                base, sampling=dataclasses.replace(base.sampling, seed=seed))
            out.extend(debate.run([state]))
    finally:
        debate.protocol = base
    return out


def _append_locked(path: Path, text: str) -> None:
    """Append whole lines under an exclusive lock: several training processes (``accelerate
    launch``) may share one cache file, and their lines must never interleave."""
    data = text.encode("utf-8")
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        if fcntl is not None:
            fcntl.flock(fd, fcntl.LOCK_EX)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
    finally:
        os.close(fd)  # releases the lock


def warm_cache(debate: Any, states: list[State], cache: DebateCache, batch_size: int = 64,
               progress: bool = True) -> dict[str, int]:
    """Debate every state not yet cached, in batches, with a progress bar (terminal or notebook)."""
    from tqdm.auto import tqdm

    totals = {"cache_hits": 0, "cache_misses": 0, "cache_not_stored_failed": 0}
    bar = tqdm(total=len(states), desc="debate cache", disable=not progress)
    for s in range(0, len(states), max(1, batch_size)):
        batch = states[s:s + batch_size]
        _, stats = cache.get_or_run(debate, batch)
        for k, v in stats.items():
            totals[k] += v
        bar.update(len(batch))
    bar.close()
    return totals
