"""Integrity of run folders: checksums, the writer lock, stale temporaries, metrics reconcile.

Run folders are shared between people and survive crashes, full disks and concurrent jobs, so
everything read back from one is checked before it is trusted (docs/architecture.md, "Runs"):

- ``SHA256SUMS`` in every checkpoint folder (``sha256sum -c`` format) lists each file written
  with it; ``verify_checksums`` names the first file that is missing or changed, and refuses
  pickle-format files nobody listed (nothing read from a run folder executes).
- ``RunLock``: ``fcntl.flock`` on ``RUN/.lock``, which holds the writer's PID. A second writer
  gets ``RunInUseError`` naming that PID. The kernel drops the lock when its holder dies, so a
  lock file left by a dead process is simply taken over (reported, counted).
- ``clean_stale_temporaries``: partial ``.tmp-step_*`` folders of crashed writers (only the
  lock holder cleans, so nobody's write in progress is removed).
- ``reconcile_metrics``: on resume, keeps the metrics lines up to the checkpoint's step, drops
  a torn last line and the lines after the checkpoint (counted), and refuses a gap or a
  duplicate step (a truncated, edited or doubly-written file).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
from collections.abc import Iterable
from pathlib import Path

import torch

from madopd import nofollow
from madopd._proc import pid_alive
from madopd.errors import DataError, RunInUseError
from madopd.safe_io import (
    finite_int,
    read_json_file,  # noqa: F401  (re-exported: callers read it here)
)

CHECKSUMS = "SHA256SUMS"
COMPLETE = "COMPLETE"
LOCK_FILE = ".lock"
# Formats that unpickle on load: never loaded from a run folder unless madopd listed them.
PICKLE_SUFFIXES = (".pt", ".pth", ".bin", ".pkl", ".pickle", ".ckpt")
# what a run folder holds (docs: madopd.runs); each must be a regular file or a real directory
RUN_FILES = ("config.json", "metrics.jsonl", "events.jsonl", LOCK_FILE, "latest_checkpoint.txt",
             "checkpoints/latest")
RUN_DIRS = ("records", "checkpoints")


def check_run_folder(root: Path) -> None:
    """Refuse (DataError naming it) any link or special file where a run folder keeps its
    files and folders, before anything in it is read or written (``madopd.nofollow``)."""
    root = Path(root)
    for rel in RUN_DIRS:
        nofollow.inside(root, rel, "dir")
    for rel in RUN_FILES:
        nofollow.inside(root, rel, "file")


# ----------------------------------------------------------------------------- checksums

def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def _files_under(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and not p.is_symlink())


def write_checksums(folder: Path) -> Path:
    """Hash every file under ``folder`` into ``folder/SHA256SUMS`` (fsynced)."""
    lines = []
    for p in _files_under(folder):
        rel = p.relative_to(folder).as_posix()
        if rel in (CHECKSUMS, COMPLETE):
            continue
        lines.append(f"{sha256_file(p)}  {rel}\n")
    out = folder / CHECKSUMS
    with open(out, "w", encoding="utf-8") as f:
        f.write("".join(lines))
        f.flush()
        os.fsync(f.fileno())
    return out


def read_checksums(folder: Path) -> dict[str, str] | None:
    """{relative path: sha256} of ``folder/SHA256SUMS``; None when the folder has none."""
    path = folder / CHECKSUMS
    if not nofollow.check(path):
        return None
    out: dict[str, str] = {}
    try:
        text = nofollow.read_bytes(path, 64 << 20).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(f"not UTF-8 ({exc.reason})", path=str(path)) from None
    for i, line in enumerate(text.splitlines(), start=1):
        digest, sep, rel = line.partition("  ")
        if not sep or len(digest) != 64 or not rel or rel.startswith("/") or ".." in Path(rel).parts:
            raise DataError("malformed checksum line (expected '<sha256>  <relative path>')",
                            path=str(path), line=i)
        out[rel] = digest
    return out


def verify_checksums(folder: Path, *, required: bool = False) -> bool:
    """Check every file ``SHA256SUMS`` lists; True when verified, False when there is no list
    (a checkpoint of an older madopd; an error with ``required``). Raises DataError naming the
    first missing or changed file, or an unlisted pickle-format file."""
    folder = Path(folder)
    sums = read_checksums(folder)
    if sums is None:
        if required:
            raise DataError(f"no {CHECKSUMS}: cannot verify this checkpoint", path=str(folder))
        return False
    for rel, digest in sums.items():
        p = nofollow.inside(folder, rel)  # a link or FIFO in place of a listed file: refused
        if not p.is_file():
            raise DataError(f"listed in {CHECKSUMS} but missing", path=str(p))
        got = sha256_file(p)
        if got != digest:
            raise DataError(f"checksum mismatch: the file changed after the checkpoint was "
                            f"written (sha256 {got[:12]}…, expected {digest[:12]}…)", path=str(p))
    for p in _files_under(folder):
        rel = p.relative_to(folder).as_posix()
        if rel not in sums and p.suffix in PICKLE_SUFFIXES:
            raise DataError(f"not written with this checkpoint (absent from {CHECKSUMS}); "
                            "pickle-format files from a run folder are never loaded", path=str(p))
    return True


ALLOW_UNVERIFIED_ENV = "MADOPD_ALLOW_UNVERIFIED_CHECKPOINTS"


def run_checkpoint_of(path: Path) -> Path | None:
    """The run checkpoint folder (``step_NNNNNN`` holding ``COMPLETE``) that ``path`` is or
    lies in, if any: such a folder was written with SHA256SUMS, so lacking them is suspect."""
    path = Path(path)
    for p in (path, *path.parents[:2]):
        if p.name.startswith("step_") and (p / COMPLETE).is_file():
            return p
    return None


def require_checksums(path: Path, *, allow: bool | None = None) -> bool:
    """Verify the checkpoint ``path`` lies in; a run checkpoint without SHA256SUMS is refused
    (DataError naming it) unless ``allow`` (default: ``$MADOPD_ALLOW_UNVERIFIED_CHECKPOINTS=1``,
    for ``madopd eval`` of a checkpoint of an older madopd). True when verified."""
    ckpt = checksum_folder_of(path)
    if ckpt is not None:
        return verify_checksums(ckpt)
    run_ckpt = run_checkpoint_of(path)
    if allow is None:
        allow = os.environ.get(ALLOW_UNVERIFIED_ENV) == "1"
    if run_ckpt is not None and not allow:
        raise DataError(f"no {CHECKSUMS}: cannot verify this checkpoint (written by an older "
                        f"madopd, or the file was deleted; set {ALLOW_UNVERIFIED_ENV}=1 to load "
                        "it anyway)", path=str(run_ckpt))
    return False


def checksum_folder_of(path: Path) -> Path | None:
    """The checkpoint folder (holding SHA256SUMS) that ``path`` is or lies in, if any."""
    path = Path(path)
    for p in (path, *path.parents[:2]):
        if (p / CHECKSUMS).is_file():
            return p
    return None


# ----------------------------------------------------------------------------- finiteness

def first_nonfinite(named: Iterable[tuple[str, torch.Tensor]]) -> str | None:
    """Name of the first floating tensor holding NaN/inf (None when all are finite).

    One device sync for all tensors: a flag per tensor, stacked, then read once.
    """
    items = [(n, t) for n, t in named if torch.is_tensor(t) and t.is_floating_point()]
    if not items:
        return None
    flags = torch.stack([torch.isfinite(t.detach()).all().to("cpu") for _, t in items])
    if bool(flags.all()):
        return None
    return items[int((~flags).nonzero()[0])][0]


# ----------------------------------------------------------------------------- the writer lock

_HELD: dict[str, int] = {}  # resolved run folder -> fd of its lock (this process is the writer)


def _read_pid(fd: int) -> int | None:
    with contextlib.suppress(OSError, ValueError):
        os.lseek(fd, 0, os.SEEK_SET)
        text = os.read(fd, 64).decode("ascii", "replace").strip()
        return int(text) if text else None
    return None


def acquire_run_lock(root: Path) -> int | None:
    """Make this process the run folder's one writer; idempotent within a process.

    Returns the PID of a previous holder whose lock was stale (it exited without releasing:
    the kernel dropped its flock), else None. Raises RunInUseError naming a live holder's PID.
    """
    key = str(Path(root).resolve())
    if key in _HELD:
        return None
    try:
        import fcntl
    except ImportError:  # not POSIX: no locking (documented)
        return None
    path = Path(root) / LOCK_FILE
    # no link followed, no FIFO opened, close-on-exec: not inherited by exec'd children
    fd = nofollow.open_fd(path, os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        pid = _read_pid(fd)
        os.close(fd)
        who = f"PID {pid}" if pid is not None else "a process that has not written its PID yet"
        state = "" if pid is None or pid_alive(pid) else \
            " (not running: a child process it forked may still hold the lock)"
        raise RunInUseError(f"run folder {root} is being written by {who}{state} (lock file "
                            f"{path}); wait for it to finish or stop it, then resume") from None
    previous = _read_pid(fd)
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    os.fsync(fd)
    _HELD[key] = fd
    return previous if previous is not None and previous != os.getpid() else None


def release_run_lock(root: Path) -> None:
    fd = _HELD.pop(str(Path(root).resolve()), None)
    if fd is not None:
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
        os.close(fd)  # closing the descriptor releases the flock


# ----------------------------------------------------------------------------- temporaries

def clean_stale_temporaries(root: Path) -> int:
    """Remove partial checkpoint folders and temp files of crashed writers; returns how many.

    Call only as the lock holder: then no other writer has a write in progress.
    """
    root = Path(root)
    n = 0
    ckpts = root / "checkpoints"
    # lstat only: a planted link among the temporaries is unlinked itself, never followed
    if nofollow.inside(root, "checkpoints", "dir").is_dir():
        for p in ckpts.iterdir():
            if p.name.startswith((".tmp-step_", ".old-step_")) or p.name.startswith(".latest.tmp"):
                real_dir = p.is_dir() and not p.is_symlink()
                shutil.rmtree(p, ignore_errors=True) if real_dir else p.unlink(missing_ok=True)
                n += 1
    for d in (root, nofollow.inside(root, "records", "dir")):
        if d.is_dir():
            for p in d.iterdir():
                if p.name.startswith(".") and ".tmp" in p.name and not p.is_dir():
                    p.unlink(missing_ok=True)
                    n += 1
    return n


# ----------------------------------------------------------------------------- metrics

def reconcile_metrics(path: Path, step: int) -> tuple[str, dict[str, int]]:
    """The text of ``metrics.jsonl`` kept for a resume at ``step``, and what was dropped.

    Keeps lines with step <= ``step``; drops a torn last line (cut short by a kill) and the
    lines after the checkpoint. Raises DataError for a malformed line before the end, a
    duplicate step, or a gap (the kept steps must be exactly 1..step: a resumed run must not
    continue a history with holes).
    """
    raw = nofollow.read_bytes(path) if nofollow.check(path) else b""
    lines = raw.split(b"\n")
    torn = 0
    if lines and lines[-1] == b"":
        lines.pop()
    elif lines:  # no final newline: the last write was cut short
        lines.pop()
        torn = 1
    kept: list[str] = []
    seen: dict[int, int] = {}
    after = 0
    for i, bline in enumerate(lines, start=1):
        if not bline.strip():
            continue
        try:
            line = bline.decode("utf-8")
            s = finite_int(json.loads(line)["step"], str(path), "step", line=i)
        except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, ValueError,
                RecursionError):  # DataError is a ValueError: a step of 1e999 or "x" too
            if i == len(lines) and not torn:  # a garbled last line: also a torn write
                torn = 1
                continue
            raise DataError("malformed metrics line before the end of the file: cannot tell "
                            "which steps it held; restore the file or delete that line",
                            path=str(path), line=i, field="step") from None
        if s in seen:
            raise DataError(f"step {s} appears twice (lines {seen[s]} and {i}): two writers "
                            "interleaved; keep one copy of each step", path=str(path), line=i,
                            field="step")
        seen[s] = i
        if s > step:
            after += 1
        else:
            kept.append(line)
    have = sorted(s for s in seen if s <= step)
    if have != list(range(1, step + 1)):
        missing = sorted(set(range(1, step + 1)) - set(have))
        span = f"{missing[0]}-{missing[-1]}" if len(missing) > 1 else str(missing[0])
        raise DataError(f"the checkpoint is at step {step} but steps {span} are missing "
                        f"({len(missing)} of {step}): resuming would leave a permanent gap. "
                        "Restore the file, or resume from an older checkpoint",
                        path=str(path), field="step")
    return "".join(x + "\n" for x in kept), {"torn_lines": torn, "dropped_after_checkpoint": after}


def tail_is_torn(path: Path) -> bool:
    """True when ``path`` is non-empty and does not end with a newline."""
    if not nofollow.check(path):
        return False
    with nofollow.open_file(path, "rb") as f:
        size = f.seek(0, os.SEEK_END)
        if size == 0:
            return False
        f.seek(size - 1)
        return f.read(1) != b"\n"


def drop_torn_tail(path: Path) -> int:
    """Cut a torn last line off ``path`` (in place); returns the bytes removed."""
    data = nofollow.read_bytes(path)
    keep = data.rfind(b"\n") + 1
    with nofollow.open_file(path, "r+b") as f:
        f.truncate(keep)
        f.flush()
        os.fsync(f.fileno())
    return len(data) - keep
