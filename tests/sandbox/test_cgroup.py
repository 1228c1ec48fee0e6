"""Per-run cgroups (issue 23 item 7): OOM kills labelled ``memory``, a stale-group sweep that
proves ownership across PID namespaces, v1 groups nested under the caller's cgroup."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time

import pytest

from madopd.sandbox import Limits, cgroup, run_code
from madopd.sandbox.layout import bwrap_path

# Memory the per-process RLIMIT_AS and RLIMIT_FSIZE do not see: several memfds, each under the
# file-size cap, together over the run's cgroup cap. Only the kernel's OOM killer stops it.
MEMFD_HOG = textwrap.dedent("""
    import os
    fds = []
    for i in range(24):
        fds.append(os.memfd_create("x"))
        for j in range(32):
            os.write(fds[-1], b"\\1" * (1 << 20))
    print("wrote", len(fds) * 32, "MB", flush=True)
""")


def test_an_oom_kill_by_the_memory_cap_is_labelled_memory():
    res = run_code(MEMFD_HOG, limits=Limits(memory_mb=128, wall_seconds=30))
    assert "wrote" not in res.stdout
    assert (res.status, res.reason) == ("fail", "memory"), res


def _in_other_pid_namespace(code: str) -> subprocess.CompletedProcess:
    """Run ``code`` with this interpreter in a fresh PID namespace sharing the cgroupfs (another
    madopd on the same host, e.g. in another container)."""
    argv = [bwrap_path(), "--unshare-pid", "--die-with-parent", "--bind", "/", "/", "--proc", "/proc",
            "--dev", "/dev", "--", sys.executable, "-c", code]
    return subprocess.run(argv, capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})


SWEEP = ("from madopd.sandbox import COUNTERS, cgroup\nb = cgroup.detect()\n"  # sweeps once
         "print('pid', __import__('os').getpid(), 'swept', COUNTERS['stale_cgroups_swept'])\n")
ORPHAN = textwrap.dedent("""
    import os, signal
    from madopd.sandbox import cgroup
    g = cgroup.RunGroup(cgroup.detect(), 64 << 20, 4)
    print(" ".join(g.paths), flush=True)
    os.kill(os.getpid(), signal.SIGKILL)
""")


def test_the_sweep_spares_a_live_run_seen_from_another_pid_namespace_and_removes_dead_ones():
    backend = cgroup.detect()
    live = cgroup.RunGroup(backend, 64 << 20, 4)
    sleeper = subprocess.Popen(["/bin/sh", "-c", "exec sleep 60"])
    orphan = subprocess.run([sys.executable, "-c", ORPHAN], capture_output=True, text=True, timeout=60)
    dead_paths = orphan.stdout.split()
    try:
        for procs in live.procs_files:
            with open(procs, "w") as fh:
                fh.write(str(sleeper.pid))
        assert dead_paths and all(os.path.isdir(p) for p in dead_paths), orphan.stderr
        out = _in_other_pid_namespace(SWEEP)
        assert out.returncode == 0 and int(out.stdout.split()[1]) < 10, (out.stdout, out.stderr)
        assert all(os.path.isdir(p) for p in live.paths), "a live run's group was swept"
        assert sleeper.poll() is None, "a live run's process was killed"
        assert not any(os.path.exists(p) for p in dead_paths), "the dead run's group stayed"
        assert int(out.stdout.split()[-1]) >= 1
    finally:
        live.close()
        sleeper.kill()
        sleeper.wait()
        for p in dead_paths:
            cgroup._kill_and_remove(p)


def _own_v1_dir(controller: str) -> str:
    with open("/proc/self/cgroup") as fh:
        for line in fh:
            _, names, path = line.rstrip("\n").split(":", 2)
            if controller in names.split(","):
                return os.path.join(cgroup.ROOT, controller, path.lstrip("/"))
    raise AssertionError(f"no {controller} line in /proc/self/cgroup")


# 4 processes x 200 MB of anonymous memory: within the run's own 1 GB, over the operator's cap.
SPREAD = textwrap.dedent("""
    import os, sys, time
    kids = []
    for i in range(4):
        pid = os.fork()
        if pid == 0:
            b = bytearray(200 << 20)
            for j in range(0, len(b), 4096):
                b[j] = 1
            time.sleep(2)
            os._exit(0)
        kids.append(pid)
    statuses = [os.waitpid(k, 0)[1] for k in kids]
    print(statuses, flush=True)
    sys.exit(1 if any(statuses) else 0)
""")
CAPPED_CALLER = textwrap.dedent("""
    import os, sys
    with open(os.path.join(sys.argv[1], "cgroup.procs"), "w") as fh:
        fh.write(str(os.getpid()))
    from madopd.sandbox import Limits, run_code, sandbox_info
    res = run_code(sys.argv[2], limits=Limits(memory_mb=1024, wall_seconds=30))
    print(res.status, res.reason, sandbox_info()["cgroup_nested"])
""")


def test_v1_run_groups_nest_under_the_callers_cgroup_so_its_memory_cap_covers_them():
    """An operator caps madopd's cgroup at 320 MB; a run allowed 1 GB by its Limits still cannot
    pass that cap (on main the run groups sat at the hierarchy root and it passed)."""
    backend = cgroup.detect()
    if backend.version != 1:
        pytest.skip("cgroup v2 groups are always below the caller's own cgroup")
    assert backend.nested and backend.memory_dir == os.path.join(_own_v1_dir("memory"), cgroup.PARENT)
    operator = os.path.join(_own_v1_dir("memory"), f"operator-cap-{os.getpid()}")
    os.mkdir(operator)
    try:
        for name in ("memory.limit_in_bytes", "memory.memsw.limit_in_bytes"):
            if os.path.exists(os.path.join(operator, name)):
                with open(os.path.join(operator, name), "w") as fh:
                    fh.write(str(320 << 20))
        out = subprocess.run([sys.executable, "-c", CAPPED_CALLER, operator, SPREAD],
                             capture_output=True, text=True, timeout=120)
        assert out.stdout.split() == ["fail", "memory", "True"], (out.stdout, out.stderr[-2000:])
    finally:
        for _ in range(100):
            try:
                os.rmdir(operator)
                break
            except FileNotFoundError:
                break
            except OSError:
                time.sleep(0.05)  # the caller's exit is still being accounted


def test_a_group_is_locked_by_its_creator_for_its_whole_life():
    backend = cgroup.detect()
    group = cgroup.RunGroup(backend, 64 << 20, 4)
    try:
        assert all(cgroup._lock(p) is None for p in group.paths)  # another open file: refused
    finally:
        group.close()
    assert not any(os.path.exists(p) for p in group.paths)
    assert group.close() == 0  # idempotent


def test_exit_cleanup_never_removes_a_parent_that_older_versions_share():
    """Older madopd versions keep their groups in <hierarchy root>/madopd-sandbox (v1) or
    <own>/madopd-sandbox (v2) and make that parent only once: it must survive our exit."""
    shared = cgroup.Backend(1, os.path.join(cgroup.ROOT, "memory", cgroup.PARENT),
                            os.path.join(cgroup.ROOT, "pids", cgroup.PARENT), True, False)
    assert cgroup._removable_parents(shared) == []
    mixed = cgroup.Backend(1, os.path.join(cgroup.ROOT, "memory", "me", cgroup.PARENT),
                           os.path.join(cgroup.ROOT, "pids", cgroup.PARENT), True, True)
    assert cgroup._removable_parents(mixed) == [os.path.join(cgroup.ROOT, "memory", "me", cgroup.PARENT)]
    assert cgroup._removable_parents(cgroup.Backend(2, "/x/madopd-sandbox", "/x/madopd-sandbox", True)) == []


def test_a_lockless_group_of_an_older_version_with_a_live_pid_is_spared():
    """madopd before issue 23 held no lock: its live groups (named after a PID alive in our
    namespace) must survive our sweep, as they did under the old rule."""
    backend = cgroup.detect()
    old_style = [os.path.join(d, f"run-{os.getpid()}-999999-0ldv3rs1") for d in {backend.memory_dir, backend.pids_dir}]
    for p in old_style:
        os.mkdir(p)
    try:
        cgroup.sweep_stale(backend)
        assert all(os.path.isdir(p) for p in old_style)
    finally:
        for p in old_style:
            os.rmdir(p)
