"""Run directories: resolved config, metrics, step records and checkpoints (resumable).

Layout::

    RUN/config.json                      resolved DistillConfig (to_dict)
    RUN/metrics.jsonl                    one JSON line per step: {"step": n, ...metrics}, flushed
    RUN/records/step_000042.json.gz      full StepRecord (transcripts, per-token arrays), gzip JSON
    RUN/checkpoints/step_000100/model/   student in Hugging Face format (adapter under LoRA)
    RUN/checkpoints/step_000100/trainer_state.json  optimiser, scheduler, RNG, data order: JSON
    RUN/checkpoints/step_000100/trainer_state.safetensors  ... and its tensors (no pickle)
    RUN/checkpoints/step_000100/SHA256SUMS  sha256 of every file above (`sha256sum -c` format)
    RUN/checkpoints/latest               text file: the newest complete checkpoint's folder name
    RUN/latest_checkpoint.txt            "checkpoints/step_NNNNNN/model" (what `madopd eval
                                         --model RUN` loads)
    RUN/events.jsonl                     what the store repaired or refused (stale temporaries,
                                         torn lines, dropped lines, corrupt checkpoints), dated
    RUN/.lock                            flock'ed by the one writer; holds its PID

A checkpoint is written into a temporary folder and renamed into place only when complete, and
``latest`` is replaced atomically afterwards: a crash or a full disk while writing leaves the
previous checkpoint (and ``latest``) valid. ``truncate_to(step)`` makes metrics and records
agree with a checkpoint before a resumed run appends to them (no gap, no duplicate).

Faults (``madopd.integrity``): the first write takes the run folder's lock (a second writer
gets ``RunInUseError`` naming the holder's PID) and removes stale temporaries of crashed
writers; every checkpoint carries checksums verified on resume and load; a write that fails
(full disk) raises ``StorageError`` and keeps what was written before. Whatever the store
repairs is written to ``events.jsonl`` and counted (``count/run/...``) in the next metrics line.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gzip
import json
import logging
import os
import re
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from madopd import integrity, nofollow, safe_io
from madopd.errors import DataError, StorageError
from madopd.safe_io import read_json_file  # noqa: F401  (re-exported: callers read it here)
from madopd.types import StepRecord

log = logging.getLogger("madopd.runs")

_CKPT = re.compile(r"^step_(\d{6,})$")
_REC = re.compile(r"^step_(\d{6,})\.json\.gz$")


def _atomic_write_text(path: Path, text: str) -> None:
    nofollow.check(path)  # a link or FIFO in its place is refused, not silently replaced
    nofollow.write_atomic(path, text.encode("utf-8"))


# ----------------------------------------------------------------------------- records <-> JSON

def record_to_dict(record: StepRecord) -> dict[str, Any]:
    from madopd.debate import transcript_to_dict

    d = {f.name: getattr(record, f.name) for f in dataclasses.fields(StepRecord)}
    d["transcripts"] = [None if t is None else transcript_to_dict(t) for t in record.transcripts]
    return d


def record_from_dict(d: dict[str, Any]) -> StepRecord:
    from madopd.debate import transcript_from_dict

    names = {f.name for f in dataclasses.fields(StepRecord)}
    kw = {k: v for k, v in d.items() if k in names}
    kw["transcripts"] = [None if t is None else transcript_from_dict(t)
                         for t in d.get("transcripts", [])]
    return StepRecord(**kw)


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if dataclasses.is_dataclass(obj):
        return dataclasses.asdict(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


class RunStore:
    """Writes one run directory (see the module docstring). Safe to reopen for a resume."""

    def __init__(self, root: str | Path, config: dict[str, Any] | None = None):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        integrity.check_run_folder(self.root)  # planted links and FIFOs: refused up front
        self.records_dir = self.root / "records"
        self.ckpt_dir = self.root / "checkpoints"
        self.metrics_path = self.root / "metrics.jsonl"
        self.pending: dict[str, float] = {}  # counters for the next metrics line
        self._writer = False
        if config is not None:
            self._become_writer()
            with _storage("writing the run's config", self.root / "config.json"):
                _atomic_write_text(self.root / "config.json",
                                   json.dumps(config, indent=2, default=_json_default))

    # ---- the one writer: lock, stale temporaries, events -----------------------------------
    def _become_writer(self) -> None:
        """Take the run folder's lock (once), then clean what crashed writers left behind."""
        if self._writer:
            return
        integrity.check_run_folder(self.root)
        with _storage("taking the run folder's lock", self.root / integrity.LOCK_FILE):
            stale_pid = integrity.acquire_run_lock(self.root)
        self._writer = True
        if stale_pid is not None:
            self.count("count/run/stale_locks")
            self.log_event("stale_lock_taken_over", pid=stale_pid)
        n = integrity.clean_stale_temporaries(self.root)
        if n:
            self.count("count/run/stale_temporaries_removed", n)
            self.log_event("stale_temporaries_removed", count=n)
        if integrity.tail_is_torn(self.metrics_path):
            integrity.drop_torn_tail(self.metrics_path)
            self.count("count/run/metrics_torn_lines")
            self.log_event("metrics_torn_line_dropped")

    def count(self, key: str, n: float = 1) -> None:
        """Add to a counter written with the next metrics line."""
        self.pending[key] = self.pending.get(key, 0) + n

    def log_event(self, kind: str, **fields: Any) -> None:
        """One dated line in ``events.jsonl`` and a warning on the ``madopd.runs`` logger."""
        log.warning("%s: %s %s", self.root, kind, fields)
        line = json.dumps({"time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "event": kind,
                           **fields}, default=str)
        path = nofollow.inside(self.root, "events.jsonl")
        with _storage("writing events.jsonl", path), nofollow.open_file(path, "ab") as f:
            f.write(line.encode("utf-8") + b"\n")

    # ---- metrics and records ------------------------------------------------------------
    def log_metrics(self, step: int, metrics: dict[str, Any]) -> None:
        self._become_writer()
        extra, self.pending = self.pending, {}
        line = json.dumps({"step": int(step), **metrics, **extra}, default=_json_default,
                          allow_nan=True)
        path = nofollow.inside(self.root, "metrics.jsonl")
        with _storage("opening metrics.jsonl", path):
            f = nofollow.open_file(path, "ab")
        try:
            with f:
                size = os.fstat(f.fileno()).st_size
                try:
                    f.write(line.encode("utf-8") + b"\n")
                    f.flush()
                    os.fsync(f.fileno())
                except OSError:  # keep every complete line: cut the partial one off again
                    os.ftruncate(f.fileno(), size)
                    raise
        except OSError as exc:
            self.pending = {**extra, **self.pending}
            raise StorageError(f"file {self.metrics_path}: could not append step {step} "
                               f"({exc.strerror or exc}); the lines of earlier steps are kept"
                               ) from exc

    def log_record(self, record: StepRecord) -> Path:
        self._become_writer()
        nofollow.inside(self.root, "records", "dir")
        self.records_dir.mkdir(exist_ok=True)
        path = self.records_dir / f"step_{record.step:06d}.json.gz"
        tmp = path.with_name(f".{path.name}.tmp")
        try:
            nofollow.check(path)
            with os.fdopen(nofollow.create_exclusive(tmp), "wb") as raw, \
                    gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=5) as gz:
                gz.write(json.dumps(record_to_dict(record), default=_json_default).encode())
            os.replace(tmp, path)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise StorageError(f"file {path}: could not write the step record "
                               f"({exc.strerror or exc}); earlier records are kept") from exc
        return path

    # ---- checkpoints -------------------------------------------------------------------------
    def save_checkpoint(self, step: int, write: Callable[[Path], None]) -> Path:
        """Call ``write(tmp_dir)``; rename tmp_dir to ``step_NNNNNN`` and point ``latest`` at it.

        Every file written gets a line in ``SHA256SUMS`` before the folder is marked COMPLETE.
        Any exception while writing removes the partial folder and propagates (an ``OSError``
        such as a full disk as ``StorageError``); the previous checkpoint and ``latest`` stay
        valid.
        """
        self._become_writer()
        self.ckpt_dir.mkdir(parents=True, exist_ok=True)
        final = nofollow.inside(self.root, f"checkpoints/step_{step:06d}", "dir")
        tmp = self.ckpt_dir / f".tmp-step_{step:06d}-{os.getpid()}"
        if tmp.is_symlink() or not tmp.is_dir():
            tmp.unlink(missing_ok=True)
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            tmp.mkdir()
            write(tmp)
            integrity.write_checksums(tmp)
            (tmp / "COMPLETE").write_text(str(step))
            if final.exists():  # re-saving a step (after a resume): swap, then delete the old one
                old = self.ckpt_dir / f".old-step_{step:06d}-{os.getpid()}"
                os.replace(final, old)
                os.replace(tmp, final)
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.replace(tmp, final)
            _atomic_write_text(self.ckpt_dir / "latest", final.name)
            if (final / "model").is_dir():  # for `madopd eval --model RUN`
                _atomic_write_text(self.root / "latest_checkpoint.txt",
                                   f"checkpoints/{final.name}/model")
        except (OSError, _SafetensorError) as exc:  # safetensors' writer: ENOSPC as its own type
            shutil.rmtree(tmp, ignore_errors=True)
            prev = self.latest_checkpoint()
            kept = f"the previous checkpoint {prev.name} is intact" if prev else \
                "no earlier checkpoint exists"
            where = getattr(exc, "filename", None) or tmp
            why = getattr(exc, "strerror", None) or exc
            raise StorageError(f"file {where}: writing checkpoint {final.name} "
                               f"failed ({why}); {kept}") from exc
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return final

    def checkpoints(self) -> list[tuple[int, Path]]:
        return list_checkpoints(self.root)

    def latest_checkpoint(self) -> Path | None:
        return latest_checkpoint(self.root)

    def prune(self, keep: int | None) -> None:
        """Delete all but the newest ``keep`` checkpoints (never the one ``latest`` names)."""
        if keep is None:
            return
        latest = self.latest_checkpoint()
        ckpts = self.checkpoints()
        for _, path in ckpts[: max(0, len(ckpts) - keep)]:
            if latest is None or path.resolve() != latest.resolve():
                shutil.rmtree(path, ignore_errors=True)

    def truncate_to(self, step: int) -> None:
        """Keep metrics lines and records with step <= ``step`` (before a resumed run appends).

        ``integrity.reconcile_metrics``: a torn last line and the lines after ``step`` are
        dropped (counted, in events.jsonl); a gap or a duplicate step is a DataError.
        """
        self._become_writer()
        if self.metrics_path.exists():
            text, dropped = integrity.reconcile_metrics(self.metrics_path, step)
            if dropped["torn_lines"] or dropped["dropped_after_checkpoint"]:
                self.count("count/run/metrics_torn_lines", dropped["torn_lines"])
                self.count("count/run/metrics_lines_dropped", dropped["dropped_after_checkpoint"])
                self.log_event("metrics_reconciled", checkpoint_step=step, **dropped)
            with _storage("rewriting metrics.jsonl", self.metrics_path):
                _atomic_write_text(self.metrics_path, text)
        if nofollow.inside(self.root, "records", "dir").exists():
            for p in self.records_dir.iterdir():  # unlink removes a link itself, never its target
                m = _REC.match(p.name)
                if (m and int(m.group(1)) > step) or p.name.startswith("."):
                    p.unlink()


def list_checkpoints(root: str | Path) -> list[tuple[int, Path]]:
    """Complete checkpoints (with their COMPLETE marker), oldest first. A ``step_*`` entry
    that is a link (or not a directory) is refused with a DataError naming it."""
    d = nofollow.inside(Path(root), "checkpoints", "dir")
    if not d.is_dir():
        return []
    out = []
    for p in d.iterdir():
        m = _CKPT.match(p.name)
        if m and nofollow.check(p, "dir") and nofollow.check(p / integrity.COMPLETE):
            out.append((int(m.group(1)), p))
    return sorted(out)


def latest_checkpoint(root: str | Path) -> Path | None:
    """The checkpoint ``latest`` names (falling back to the newest complete one, if any).
    ``latest`` must hold the bare name of a ``step_NNNNNN`` folder of this run: a path, a
    ``..`` or a link is refused (DataError naming it)."""
    root = Path(root)
    pointer = nofollow.inside(root, "checkpoints/latest")
    if pointer.exists():
        name = nofollow.read_bytes(pointer, 4096).decode("utf-8", "replace").strip()
        if not _CKPT.match(name):
            raise DataError(f"names {name[:80]!r}, not a checkpoint folder of this run "
                            "(expected step_NNNNNN)", path=str(pointer))
        p = nofollow.inside(root, f"checkpoints/{name}", "dir")
        if nofollow.check(p / integrity.COMPLETE):
            return p
    ckpts = list_checkpoints(root)
    return ckpts[-1][1] if ckpts else None


# ----------------------------------------------------------------------------- reading runs

class LazyRecords(Sequence):
    """Step records on disk, parsed on access (``run.records[i]``, ``run.records.steps``)."""

    def __init__(self, paths: list[Path]):
        self.paths = paths
        self.steps = [int(_REC.match(p.name).group(1)) for p in paths]

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        path = self.paths[i]
        try:
            raw = safe_io.read_gz_bounded(path, opener=lambda p: gzip.GzipFile(
                fileobj=nofollow.open_file(p, "rb"), mode="rb"))
            return record_from_dict(safe_io.loads_json(raw, str(path), what="step record"))
        except (OSError, TypeError) as exc:
            raise DataError(f"unreadable step record ({exc})", path=str(path)) from None

    def by_step(self, step: int) -> StepRecord:
        return self[self.steps.index(step)]


@dataclass
class Run:
    """A run directory read back: config dict, metrics (one dict per line), records, checkpoints."""

    path: Path
    config: dict[str, Any]
    metrics: list[dict[str, Any]]
    records: LazyRecords
    checkpoints: list[tuple[int, Path]]
    torn_lines: int = 0  # a last metrics line cut short by a kill (left out of ``metrics``)


def _read_utf8_lines(path: Path) -> list[str]:
    raw = nofollow.read_bytes(path)
    try:
        return raw.decode("utf-8").splitlines()
    except UnicodeDecodeError as exc:
        raise DataError(f"not UTF-8 (byte {exc.start})", path=str(path),
                        line=raw.count(b"\n", 0, exc.start) + 1) from None


try:  # safetensors reports a failed write (a full disk) as its own type, not an OSError
    from safetensors import SafetensorError as _SafetensorError
except ImportError:  # pragma: no cover - safetensors comes with transformers
    class _SafetensorError(Exception):
        pass


class _storage(contextlib.AbstractContextManager):
    """Re-raise an OSError while writing ``path`` as one StorageError line."""

    def __init__(self, doing: str, path: Path):
        self.doing, self.path = doing, path

    def __exit__(self, typ, exc, tb):
        if isinstance(exc, OSError) and not isinstance(exc, StorageError):
            raise StorageError(f"file {self.path}: {self.doing} failed "
                               f"({exc.strerror or exc})") from exc
        return False


def load_run(path: str | Path) -> Run:
    root = Path(path)
    cfg_path = root / "config.json"
    integrity.check_run_folder(root)
    if not cfg_path.is_file():
        raise DataError("not a run directory (config.json is missing)", path=str(root))
    config = read_json_file(cfg_path, "run config", follow=False)
    metrics = []
    torn = 0
    mpath = root / "metrics.jsonl"
    if mpath.exists():
        lines = _read_utf8_lines(mpath)
        for i, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                metrics.append(json.loads(line))
            except (json.JSONDecodeError, RecursionError):
                if i == len(lines):  # the last line of a killed run may be cut short
                    torn = 1
                    continue
                raise DataError("malformed metrics line", path=str(mpath), line=i) from None
    rec_dir = root / "records"
    paths = sorted((p for p in rec_dir.iterdir() if _REC.match(p.name)),
                   key=lambda p: int(_REC.match(p.name).group(1))) if rec_dir.is_dir() else []
    return Run(root, config, metrics, LazyRecords(paths), list_checkpoints(root), torn)
