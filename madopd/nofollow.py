"""Run-folder paths opened without following links (docs/threat-model.md, "Run folders").

A run folder is shared and may hold files planted by someone else: ``.lock`` as a symlink
to a file the writer would truncate, ``records/`` as a symlink to a directory whose files a
resume would delete, ``metrics.jsonl`` as a FIFO that blocks the first read forever. Every
path inside a run folder is therefore checked with ``lstat`` component by component from the
run's root (the root itself is the user's choice and may be a link), opened with
``O_NOFOLLOW | O_NONBLOCK`` and ``fstat``-checked to be a regular file before a byte is read
or written. A link or a non-regular file is refused with one ``DataError`` line naming it.

Residual risk (documented there): someone who can write the run folder *while* the writer
runs can still swap a checked directory for a link between the check and the use.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import stat
from pathlib import Path

from madopd.errors import DataError

_NOFOLLOW = os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISLNK, "symbolic link"), (stat.S_ISFIFO, "FIFO"),
                       (stat.S_ISSOCK, "socket"), (stat.S_ISCHR, "character device"),
                       (stat.S_ISBLK, "block device"), (stat.S_ISDIR, "directory"),
                       (stat.S_ISREG, "regular file")):
        if test(mode):
            return name
    return "special file"


def refuse(path: Path, mode: int, want: str) -> DataError:
    return DataError(f"is a {_kind(mode)}, not a {want}: refused (run folders never follow "
                     "links or open special files; remove it)", path=str(path))


def check(path: Path, want: str = "file") -> bool:
    """True when ``path`` exists as a regular file (``want='file'``) or a real directory
    (``'dir'``), False when it does not exist; DataError for a link or anything else."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return False
    ok = stat.S_ISDIR(st.st_mode) if want == "dir" else stat.S_ISREG(st.st_mode)
    if not ok:
        raise refuse(path, st.st_mode, "directory" if want == "dir" else "regular file")
    return True


def inside(root: Path, rel: str, want: str = "file") -> Path:
    """``root/rel`` after checking every component below ``root`` (directories for the
    intermediate ones, ``want`` for the last); missing components are allowed."""
    root = Path(root)
    parts = Path(rel).parts
    if Path(rel).is_absolute() or ".." in parts:
        raise DataError(f"path {rel!r} leaves the run folder: refused", path=str(root))
    path = root
    for i, part in enumerate(parts):
        path = path / part
        if not check(path, "dir" if i < len(parts) - 1 else want):
            break
    return root / rel


def open_fd(path: Path, flags: int, mode: int = 0o644) -> int:
    """``os.open`` without following a final link and without blocking on a FIFO; the
    descriptor is refused (closed, DataError) unless it names a regular file."""
    try:
        fd = os.open(path, flags | _NOFOLLOW, mode)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENXIO):  # a final link; a FIFO, no reader
            with contextlib.suppress(FileNotFoundError):
                raise refuse(path, os.lstat(path).st_mode, "regular file") from None
        raise
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise refuse(path, st.st_mode, "regular file")
    fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~os.O_NONBLOCK)
    return fd


def open_file(path: Path, how: str = "rb"):
    """A binary file object for ``how`` in 'rb', 'ab', 'r+b' (``open_fd`` rules)."""
    flags = {"rb": os.O_RDONLY, "ab": os.O_WRONLY | os.O_APPEND | os.O_CREAT,
             "r+b": os.O_RDWR}[how]
    return os.fdopen(open_fd(path, flags), how)


def read_bytes(path: Path, max_bytes: int | None = None) -> bytes:
    """The bytes of a regular file (no link followed); DataError beyond ``max_bytes``."""
    with open_file(path, "rb") as f:
        data = f.read() if max_bytes is None else f.read(max_bytes + 1)
    if max_bytes is not None and len(data) > max_bytes:
        raise DataError(f"larger than the limit of {max_bytes} bytes", path=str(path))
    return data


def create_exclusive(path: Path) -> int:
    """A new file's descriptor (O_EXCL: never an existing file or link); a leftover of the
    same name (our own temporary from a crash) is unlinked first, which never follows it."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                   0o644)


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to a fresh temporary beside ``path``, fsync, rename over ``path``
    (a rename replaces a link itself, never its target)."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    fd = create_exclusive(tmp)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
