"""Per-run cgroups: one cap on a run's total memory (shared memory, memfd and tmpfs included)
and one on its process count, whatever the processes do.

Detected, never assumed (``detect()``):

* **cgroup v1** (our machines): writable ``memory`` and ``pids`` hierarchies under
  /sys/fs/cgroup. Each run gets ``<hierarchy>/madopd-sandbox/run-<host pid>-<seq>-<random>``
  with ``memory.limit_in_bytes`` (+ ``memory.memsw.limit_in_bytes`` when swap accounting is on,
  so swap is no way around the cap) and ``pids.max``.
* **cgroup v2**: a delegated subtree (our own cgroup, from /proc/self/cgroup) whose
  ``cgroup.subtree_control`` enables ``memory`` and ``pids``; groups get ``memory.max``,
  ``memory.swap.max = 0`` and ``pids.max``.
* otherwise ``None``: the sandbox refuses to run unless the config allows the weaker mode, and
  then labels every result ``no-cgroup``.

The launcher puts itself into the group before it execs bubblewrap, so every process of the run
is born inside. After the run every process still in the group is SIGKILLed and the group is
removed. Groups whose host process died (a SIGKILLed madopd) are swept at the next start and
counted (``stale_cgroups_swept``).
"""

from __future__ import annotations

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

    def dirs(self, name: str) -> list[str]:
        if self.version == 2:
            return [os.path.join(self.memory_dir, name)]
        return [os.path.join(self.memory_dir, name), os.path.join(self.pids_dir, name)]


def _write(path: str, value: str) -> None:
    with open(path, "w") as fh:
        fh.write(value)


def _v1() -> Backend | None:
    mem, pids = os.path.join(ROOT, "memory"), os.path.join(ROOT, "pids")
    if not (os.path.isfile(os.path.join(mem, "memory.limit_in_bytes"))
            and os.path.isfile(os.path.join(pids, "cgroup.procs"))):
        return None
    try:
        for d in (mem, pids):
            os.makedirs(os.path.join(d, PARENT), exist_ok=True)
    except OSError:
        return None
    swap = os.path.isfile(os.path.join(mem, "memory.memsw.limit_in_bytes"))
    return Backend(1, os.path.join(mem, PARENT), os.path.join(pids, PARENT), swap)


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
    return _DETECTED[0]


def _procs(path: str) -> list[int]:
    try:
        with open(os.path.join(path, "cgroup.procs")) as fh:
            return [int(p) for p in fh.read().split()]
    except OSError:
        return []


def _kill_and_remove(path: str, rounds: int = 200) -> int:
    killed = 0
    for _ in range(rounds):
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
            time.sleep(0.005)
    raise RuntimeError(f"sandbox cgroup {path} could not be removed: {_procs(path)} survive SIGKILL")


def sweep_stale(backend: Backend) -> int:
    """Remove groups left by host processes that no longer exist; returns how many."""
    swept = 0
    for parent in {backend.memory_dir, backend.pids_dir}:
        for name in os.listdir(parent):
            parts = name.split("-")
            if len(parts) == 4 and parts[0] == "run" and parts[1].isdigit() and not pid_alive(int(parts[1])):
                _kill_and_remove(os.path.join(parent, name))
                swept += 1
    if swept:
        count("stale_cgroups_swept", swept)
    return swept


class RunGroup:
    """The cgroup(s) of one run: created with limits, then killed and removed by ``close``."""

    def __init__(self, backend: Backend, memory_bytes: int, max_pids: int):
        self.backend = backend
        self.name = f"run-{os.getpid()}-{next(_SEQ)}-{secrets.token_hex(4)}"
        self.paths = backend.dirs(self.name)
        for p in self.paths:
            os.mkdir(p)
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
        """SIGKILL whatever is left and remove the group(s); returns how many were killed."""
        return sum(_kill_and_remove(p) for p in reversed(self.paths))
