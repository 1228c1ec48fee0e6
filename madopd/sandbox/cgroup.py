"""Per-run cgroups: one cap on a run's total memory (shared memory, memfd and tmpfs included)
and one on its process count, whatever the processes do.

Detected, never assumed (``detect()``):

* **cgroup v1** (our machines): writable ``memory`` and ``pids`` hierarchies under
  /sys/fs/cgroup. Each run gets ``<our own cgroup>/madopd-sandbox/run-<host pid>-<seq>-<random>``
  in both (our own cgroup per controller, from /proc/self/cgroup, so a cap an operator puts on
  madopd also covers its sandboxes), with ``memory.limit_in_bytes`` (+
  ``memory.memsw.limit_in_bytes`` when swap accounting is on, so swap is no way around the cap)
  and ``pids.max``. Where our own group cannot hold children the groups sit at the hierarchy's
  root instead: ``Backend.nested`` is False, ``sandbox_info`` says so and
  ``COUNTERS["cgroup/not_nested"]`` counts it. An empty parent inside our own cgroup is removed
  at exit (never a parent at a hierarchy root, which older madopd versions share).
* **cgroup v2**: a delegated subtree (our own cgroup, from /proc/self/cgroup) whose
  ``cgroup.subtree_control`` enables ``memory`` and ``pids``; groups get ``memory.max``,
  ``memory.swap.max = 0`` and ``pids.max``.
* otherwise ``None``: the sandbox refuses to run unless the config allows the weaker mode, and
  then labels every result ``no-cgroup``.

The launcher puts itself into the group before it execs bubblewrap, so every process of the run
is born inside. After the run the OOM count is read, every process still in the group is
SIGKILLed and the group is removed.

**Ownership.** The creating process holds an exclusive ``flock`` on each of its group
directories for the group's whole life. The kernel drops it when that process dies, however
it dies, and the lock lives on the directory's inode, which every PID namespace sharing the
cgroupfs sees. So a group is stale exactly when its lock can be taken: the sweep at each start
(``stale_cgroups_swept``) never touches a live run of another madopd, whatever PID namespace
it runs in and whatever the PID in the name means there. Groups of older versions hold no lock,
so a group whose name's PID is alive in our namespace is also left alone (the rule before).
"""

from __future__ import annotations

import atexit
import errno
import fcntl
import itertools
import os
import secrets
import signal
import time
from dataclasses import dataclass

from madopd._proc import pid_alive
from madopd.sandbox.counters import count

ROOT = "/sys/fs/cgroup"
PARENT = "madopd-sandbox"
_SEQ = itertools.count()


@dataclass(frozen=True)
class Backend:
    version: int  # 1 or 2
    memory_dir: str  # parent dir of run groups for memory (v2: the same dir for both)
    pids_dir: str
    swap_accounting: bool
    nested: bool = True  # v1: under our own cgroup (False: at the hierarchy root, counted)

    def dirs(self, name: str) -> list[str]:
        if self.version == 2:
            return [os.path.join(self.memory_dir, name)]
        return [os.path.join(self.memory_dir, name), os.path.join(self.pids_dir, name)]


def _write(path: str, value: str) -> None:
    with open(path, "w") as fh:
        fh.write(value)


def _own_v1(controller: str) -> str:
    """Our cgroup in a v1 hierarchy ("/" when /proc/self/cgroup does not name it)."""
    try:
        with open("/proc/self/cgroup") as fh:
            for line in fh:
                _, controllers, path = line.rstrip("\n").split(":", 2)
                if controller in controllers.split(","):
                    return path or "/"
    except (OSError, ValueError):
        pass
    return "/"


def _v1() -> Backend | None:
    mem, pids = os.path.join(ROOT, "memory"), os.path.join(ROOT, "pids")
    if not (os.path.isfile(os.path.join(mem, "memory.limit_in_bytes"))
            and os.path.isfile(os.path.join(pids, "cgroup.procs"))):
        return None
    swap = os.path.isfile(os.path.join(mem, "memory.memsw.limit_in_bytes"))
    own = [os.path.join(h, _own_v1(c).lstrip("/"), PARENT) for h, c in ((mem, "memory"), (pids, "pids"))]
    for parents, nested in ((own, True), ([os.path.join(mem, PARENT), os.path.join(pids, PARENT)], False)):
        try:
            for d in parents:
                os.makedirs(d, exist_ok=True)
        except OSError:
            continue
        if not nested:
            count("cgroup/not_nested")
        return Backend(1, parents[0], parents[1], swap, nested)
    return None


def _v2() -> Backend | None:
    if not os.path.isfile(os.path.join(ROOT, "cgroup.controllers")):
        return None
    try:
        with open("/proc/self/cgroup") as fh:
            own = next(line.split("::", 1)[1].strip() for line in fh if line.startswith("0::"))
        base = os.path.join(ROOT, own.lstrip("/"))
        parent = os.path.join(base, PARENT)
        os.makedirs(parent, exist_ok=True)
        with open(os.path.join(parent, "cgroup.controllers")) as fh:
            have = set(fh.read().split())
        if not {"memory", "pids"} <= have:
            return None
        _write(os.path.join(parent, "cgroup.subtree_control"), "+memory +pids")
    except (OSError, StopIteration):
        return None
    return Backend(2, parent, parent, True)


_DETECTED: list = []


def detect() -> Backend | None:
    """The usable cgroup backend (cached), sweeping stale groups on first use."""
    if not _DETECTED:
        backend = _v1() or _v2()
        _DETECTED.append(backend)
        if backend is not None:
            sweep_stale(backend)
            atexit.register(_remove_parents, backend)
    return _DETECTED[0]


def _removable_parents(backend: Backend) -> list[str]:
    """The v1 parents inside our own (non-root) cgroup. Never the hierarchy-root ones, nor v2's:
    madopd versions before issue 23 share those and create their groups without re-making the
    parent, so removing it between their runs would break them."""
    if backend.version != 1:
        return []
    roots = {os.path.join(ROOT, c, PARENT) for c in ("memory", "pids")}
    return [p for p in {backend.memory_dir, backend.pids_dir} if p not in roots]


def _remove_parents(backend: Backend) -> None:
    """At exit: leave no empty madopd-sandbox directory in the caller's own cgroup (a non-empty
    one, still used by another madopd, stays: rmdir refuses)."""
    for parent in _removable_parents(backend):
        try:
            os.rmdir(parent)
        except OSError:
            pass


def _ensure_parent(backend: Backend, parent: str) -> None:
    """The parent of run groups exists (again), on v2 with memory and pids enabled below it."""
    os.makedirs(parent, exist_ok=True)
    if backend.version == 2:
        with open(os.path.join(parent, "cgroup.subtree_control")) as fh:
            enabled = set(fh.read().split())
        if not {"memory", "pids"} <= enabled:
            _write(os.path.join(parent, "cgroup.subtree_control"), "+memory +pids")


def _lock(path: str) -> int | None:
    """An fd holding an exclusive flock on the directory ``path``; None when another process
    holds it (or the directory is gone)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        os.close(fd)
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
            return None
        raise
    return fd


def _procs(path: str) -> list[int]:
    try:
        with open(os.path.join(path, "cgroup.procs")) as fh:
            return [int(p) for p in fh.read().split()]
    except OSError:
        return []


def _kill_and_remove(path: str, seconds: float = 10.0) -> int:
    killed, end = 0, time.monotonic() + seconds
    if os.path.exists(os.path.join(path, "cgroup.kill")):  # v2, Linux 5.14+: every pid namespace
        try:
            _write(os.path.join(path, "cgroup.kill"), "1")
        except OSError:
            pass
    while True:  # an OOM victim on a loaded host may take seconds to exit
        pids = _procs(path)
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
                killed += 1
            except ProcessLookupError:
                pass
        try:
            os.rmdir(path)
            return killed
        except FileNotFoundError:
            return killed
        except OSError:  # EBUSY: tasks still exiting
            if time.monotonic() > end:
                break
            time.sleep(0.005)
    raise RuntimeError(f"sandbox cgroup {path} could not be removed: {_procs(path)} survive SIGKILL")


def _named_owner_alive(name: str) -> bool:
    """``run-<pid>-...``: whether that PID is alive *in our namespace* (a second guard, for
    groups of madopd versions before issue 23, which hold no lock; a PID reused by another
    process only delays a sweep)."""
    parts = name.split("-")
    return len(parts) == 4 and parts[1].isdigit() and pid_alive(int(parts[1]))


def sweep_stale(backend: Backend) -> int:
    """Remove groups whose creator is dead (their flock is free); returns how many. A group whose
    processes cannot be killed from here (another PID namespace) is left and counted."""
    swept = 0
    for parent in {backend.memory_dir, backend.pids_dir}:
        try:
            names = os.listdir(parent)
        except FileNotFoundError:
            continue
        for name in names:
            if not name.startswith("run-"):
                continue
            path = os.path.join(parent, name)
            if _named_owner_alive(name):
                continue  # older versions hold no lock: their PID in our namespace still counts
            fd = _lock(path)
            if fd is None:
                continue  # its creator is alive (in whatever PID namespace) or it is gone
            try:
                _kill_and_remove(path)
                swept += 1
            except RuntimeError:
                count("stale_cgroups_unremovable")
            finally:
                os.close(fd)
    if swept:
        count("stale_cgroups_swept", swept)
    return swept


class RunGroup:
    """The cgroup(s) of one run: created with limits, then killed and removed by ``close``."""

    def __init__(self, backend: Backend, memory_bytes: int, max_pids: int):
        self.backend = backend
        self.paths, self._locks = self._create(backend)
        try:
            if backend.version == 1:
                mem, pids = self.paths
                _write(os.path.join(mem, "memory.limit_in_bytes"), str(memory_bytes))
                if backend.swap_accounting:
                    _write(os.path.join(mem, "memory.memsw.limit_in_bytes"), str(memory_bytes))
                _write(os.path.join(pids, "pids.max"), str(max_pids))
            else:
                (g,) = self.paths
                _write(os.path.join(g, "memory.max"), str(memory_bytes))
                if os.path.exists(os.path.join(g, "memory.swap.max")):
                    _write(os.path.join(g, "memory.swap.max"), "0")
                _write(os.path.join(g, "pids.max"), str(max_pids))
        except OSError:
            self.close()
            raise

    @staticmethod
    def _create(backend: Backend) -> tuple[list[str], list[int]]:
        """Make and lock a fresh group; the parents are made again if another madopd's exit
        removed them, and a name a sweeper locked first is given up for another."""
        for _ in range(5):
            paths = backend.dirs(f"run-{os.getpid()}-{next(_SEQ)}-{secrets.token_hex(4)}")
            made, locks = [], []
            try:
                for p in paths:
                    _ensure_parent(backend, os.path.dirname(p))
                    os.mkdir(p)
                    made.append(p)
                    fd = _lock(p)
                    if fd is None:
                        raise FileNotFoundError(p)
                    locks.append(fd)
                return paths, locks
            except FileNotFoundError:
                for fd in locks:
                    os.close(fd)
                for p in reversed(made):
                    try:
                        os.rmdir(p)
                    except OSError:
                        pass
        raise OSError(f"could not create a sandbox cgroup under {backend.memory_dir}")

    @property
    def procs_files(self) -> list[str]:
        return [os.path.join(p, "cgroup.procs") for p in self.paths]

    def oom_kills(self) -> int:
        """How many processes the kernel killed for the memory cap (0 if the kernel cannot say)."""
        mem = self.paths[0]
        fname = "memory.oom_control" if self.backend.version == 1 else "memory.events"
        try:
            with open(os.path.join(mem, fname)) as fh:
                for line in fh:
                    key, _, value = line.partition(" ")
                    if key == "oom_kill":
                        return int(value)
        except OSError:
            pass
        return 0

    def memory_failures(self) -> int:
        """v1 ``memory.failcnt`` (allocations refused at the cap); 0 on v2."""
        if self.backend.version != 1:
            return 0
        try:
            with open(os.path.join(self.paths[0], "memory.failcnt")) as fh:
                return int(fh.read().strip() or 0)
        except OSError:
            return 0

    def close(self) -> int:
        """SIGKILL whatever is left and remove the group(s); returns how many were killed.
        (Read ``oom_kills`` first: the counters go with the group.) Idempotent."""
        killed = sum(_kill_and_remove(p) for p in reversed(self.paths))
        for fd in self._locks:
            os.close(fd)
        self._locks = []
        return killed
