"""Hostile programs of the kind a model under optimisation pressure writes, one per attack
class (issue 11), each with what must hold. Forged verdicts are in test_verify.py; the slow ones
(parent SIGKILL, concurrent callers, floods) are marked ``slow``."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from pathlib import Path

import pytest

from madopd.sandbox import Limits, cgroup, run_code, sandbox_info

CHECKOUT = Path(__file__).resolve().parents[2]


def test_memory_spread_over_processes_is_capped_in_total():
    # 4 processes x 200 MB (each under the 256 MB per-process RLIMIT_AS): the run's cgroup caps
    # the SUM at 256 MB, so at most one of them holds its memory to the end (the kernel's OOM
    # killer may let one hold and kill it when another grows).
    src = textwrap.dedent("""
        import os, time
        kids = []
        for i in range(4):
            pid = os.fork()
            if pid == 0:
                b = bytearray(200 * 1024 * 1024)
                for j in range(0, len(b), 4096):
                    b[j] = 1
                print("held", i, flush=True)
                time.sleep(5)
                os._exit(0)
            kids.append(pid)
        print([os.waitpid(k, 0)[1] for k in kids], flush=True)
    """)
    res = run_code(src, limits=Limits(memory_mb=256, wall_seconds=20))
    statuses = eval(res.stdout.splitlines()[-1]) if res.stdout.rstrip().endswith("]") else []
    assert statuses.count(0) <= 1, res  # 9 = SIGKILL by the cgroup's OOM killer
    assert res.stdout.count("held") < 4


def test_memfd_and_dev_shm_count_against_the_memory_cap():
    src = textwrap.dedent("""
        import os
        fd = os.memfd_create("x")
        chunk = b"\\1" * (1 << 20)
        for i in range(600):
            os.write(fd, chunk)
        print("wrote 600 MB")
    """)
    res = run_code(src, limits=Limits(memory_mb=256, wall_seconds=20))
    assert "wrote 600 MB" not in res.stdout and res.status != "pass", res
    shm = run_code("open('/dev/shm/x', 'wb').write(b'1' * (600 << 20)); print('ok')",
                   limits=Limits(memory_mb=256, wall_seconds=20))
    assert "ok" not in shm.stdout and shm.status != "pass"


_SHM = textwrap.dedent("""
    import ctypes, sys
    libc = ctypes.CDLL(None, use_errno=True)
    libc.shmat.restype = ctypes.c_void_p
    key, create = {key}, {create}
    sid = libc.shmget(key, 4096, (0o1000 | 0o666) if create else 0)
    if sid < 0:
        print("no segment", ctypes.get_errno()); sys.exit(0)
    addr = libc.shmat(sid, None, 0)
    if create:
        ctypes.memmove(addr, b"secret-from-run-1", 17); print("created")
    else:
        print("read", ctypes.string_at(addr, 17))
""")


def test_sysv_shared_memory_does_not_outlive_the_run_or_reach_the_host():
    key = int(uuid.uuid4().int % 2**30) + 1
    first = run_code(_SHM.format(key=key, create=True))
    assert first.stdout.strip() == "created", first
    second = run_code(_SHM.format(key=key, create=False))
    assert second.stdout.startswith("no segment"), second  # a fresh IPC namespace per run
    with open("/proc/sysvipc/shm") as fh:
        assert not any(line.split()[0] == str(key) for line in fh.readlines()[1:])


def test_host_unix_sockets_are_unreachable(tmp_path):
    path = tmp_path / "host.sock"
    abstract = "\0madopd-test-" + uuid.uuid4().hex
    servers = []
    for addr in (str(path), abstract):
        s = socket.socket(socket.AF_UNIX)
        s.bind(addr)
        s.listen(1)
        servers.append(s)
    src = textwrap.dedent(f"""
        import socket
        for addr in [{str(path)!r}, {abstract!r}, "/run/systemd/private", "/var/run/docker.sock"]:
            s = socket.socket(socket.AF_UNIX)
            try:
                s.connect(addr); print("CONNECTED", repr(addr))
            except OSError as e:
                print("refused", type(e).__name__)
    """)
    try:
        res = run_code(src)
    finally:
        for s in servers:
            s.close()
    assert res.status == "pass", res
    assert "CONNECTED" not in res.stdout and res.stdout.count("refused") == 4


def test_checkout_git_home_and_host_filesystem_are_invisible():
    """Only the bound roots (interpreter prefixes, site-packages, system libraries) and the
    empty directories leading to them exist. A virtual environment inside the checkout (or
    under /home, /tmp) is bound, so its ancestors appear as empty mount points, nothing more."""
    roots = _bound_roots()
    probes = [str(CHECKOUT / "pyproject.toml"), str(CHECKOUT / ".git"), str(CHECKOUT / "madopd"),
              str(CHECKOUT / "tests"), "/etc/passwd", "/etc/shadow", "/root/.bash_history", "/home",
              "/work", "/run", "/var", "/sys/fs/cgroup", str(Path.home()), str(CHECKOUT)]
    src = textwrap.dedent(f"""
        import os
        for p in {probes!r}:
            print(p, os.path.exists(p))
        try:
            import madopd; print("IMPORTED madopd")
        except ImportError:
            print("no madopd")
        print(repr({{p: sorted(os.listdir(p)) if os.path.isdir(p) else None for p in {probes!r}}}))
        print(sorted(os.listdir("/")))
    """)
    res = run_code(src)
    assert res.status == "pass", res
    lines = res.stdout.splitlines()
    visible = [line.rsplit(" ", 1)[0] for line in lines[:len(probes)] if line.endswith("True")]
    for path in visible:  # a bound root, inside one, or an empty directory leading to one
        assert any(_under(path, r) or _under(r, path) for r in roots), (path, roots)
    listings = eval(lines[-2])
    for path, names in listings.items():
        if names is not None and not any(_under(path, r) for r in roots):
            # a mount-point directory: it holds only the next step towards a bound root
            steps = {Path(r).relative_to(path).parts[0] for r in roots if _under(r, path) and r != path}
            assert set(names) <= steps, (path, names, steps)
    assert not any(p.startswith(str(CHECKOUT / "madopd")) or p == str(CHECKOUT / "pyproject.toml")
                   for p in visible)
    assert "no madopd" in res.stdout
    tops = {Path(r).parts[1] for r in roots}
    assert set(eval(lines[-1])) <= {"dev", "etc", "lib", "lib32", "lib64", "proc", "tmp", "usr"} | tops


def _under(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


def _bound_roots() -> list[str]:
    """The host paths the sandbox binds (read-only), from ``sandbox_info``."""
    binds = sandbox_info()["binds"]
    return [binds[i + 2] for i, arg in enumerate(binds) if arg in ("--ro-bind", "--ro-bind-try")]


def test_readonly_everywhere_but_the_private_tmp(tmp_path):
    target = os.path.join(os.path.dirname(os.__file__), f"madopd-pwn-{uuid.uuid4().hex}")
    src = textwrap.dedent(f"""
        for p in [{target!r}, "/usr/lib/pwn", "/etc/pwn", "/tmp/mine", "/dev/shm/mine"]:
            try:
                open(p, "w").write("x"); print("wrote", p)
            except OSError as e:
                print("denied", p, e.errno)
    """)
    res = run_code(src)
    assert res.status == "pass", res
    assert res.stdout.count("denied") == 3 and "wrote /tmp/mine" in res.stdout
    assert not os.path.exists(target) and not os.path.exists("/tmp/mine")
    assert not os.path.exists("/dev/shm/mine")


def test_host_processes_are_invisible_and_the_parent_cannot_be_snooped():
    src = textwrap.dedent(f"""
        import os
        pids = sorted(int(p) for p in os.listdir("/proc") if p.isdigit())
        print(pids)
        print(os.path.exists("/proc/{os.getpid()}/environ"))
        print(open("/proc/1/cmdline", "rb").read()[:40])
    """)
    res = run_code(src)
    assert res.status == "pass", res
    pids, host_visible, _ = res.stdout.splitlines()
    assert len(eval(pids)) <= 3 and host_visible == "False"  # bwrap's init, the code, maybe a zombie


def test_environment_secrets_are_invisible(monkeypatch):
    secret = f"sk-fake-{uuid.uuid4().hex}"
    monkeypatch.setenv("MADOPD_FAKE_API_KEY", secret)
    res = run_code("import os; print(sorted(os.environ)); print(open('/proc/1/environ','rb').read())")
    assert res.status == "pass", res
    assert secret not in res.stdout
    assert set(eval(res.stdout.splitlines()[0])) <= {"PATH", "HOME", "TMPDIR", "LANG", "PWD", "LC_CTYPE"}


def test_network_is_cut_unless_allowed():
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(4)
    port = server.getsockname()[1]
    accepted = []

    def accept():
        server.settimeout(8)
        try:
            conn, _ = server.accept()
            accepted.append(True)
            conn.close()
        except OSError:
            pass

    src = f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=3)\nprint('connected')"
    thread = threading.Thread(target=accept)
    thread.start()
    try:
        cut = run_code(src)
        assert (cut.status, cut.reason) == ("fail", "exception") and not accepted
        dns = run_code("import socket; socket.create_connection(('pypi.org', 443), timeout=3)")
        assert dns.status == "fail"
        allowed = run_code(src, limits=Limits(network=True))
        assert allowed.status == "pass", allowed.stderr
        thread.join(10)
        assert accepted == [True]
    finally:
        server.close()
        thread.join(10)


def test_seccomp_denies_ptrace_namespaces_mounts_keyrings_bpf_perf():
    src = textwrap.dedent("""
        import ctypes, os
        libc = ctypes.CDLL(None, use_errno=True)
        calls = {"ptrace": (101, 0, 0, 0, 0), "unshare": (272, 0x10000000), "setns": (308, 0, 0),
                 "mount": (165, 0, 0, 0, 0, 0), "keyctl": (250, 0, 0), "bpf": (321, 0, 0, 0),
                 "perf_event_open": (298, 0, 0, 0, 0, 0), "process_vm_readv": (310, 1, 0, 0, 0, 0, 0),
                 "clone_newuser": (56, 0x10000000 | 17, 0, 0, 0, 0), "clone3": (435, 0, 0),
                 "io_uring_setup": (425, 1, 0)}
        for name, args in calls.items():
            r = libc.syscall(*args)
            print(name, r, ctypes.get_errno())
        print("getpid ok", libc.syscall(39) == os.getpid())
    """)
    res = run_code(src)
    assert res.status == "pass", res
    rows = dict((line.split()[0], line.split()[1:]) for line in res.stdout.splitlines())
    for name in ("ptrace", "unshare", "setns", "mount", "keyctl", "bpf", "perf_event_open",
                 "process_vm_readv", "clone_newuser", "io_uring_setup"):
        assert rows[name] == ["-1", "1"], (name, rows[name])  # EPERM
    assert rows["clone3"] == ["-1", "38"]  # ENOSYS: libc falls back to clone
    assert rows["getpid"] == ["ok", "True"]


def test_fork_bomb_is_capped_by_the_pids_cgroup_and_cleaned_up(host_pids_with):
    marker = "bomb-" + uuid.uuid4().hex
    src = textwrap.dedent(f"""
        import os, sys, time
        n = 0
        for _ in range(10000):
            try:
                if os.fork() == 0:
                    os.execv(sys.executable, [sys.executable, "-S", "-c", "import time; time.sleep(60)", {marker!r}])
                n += 1
            except OSError:
                break
        print("forked", n, flush=True)
        time.sleep(60)
    """)
    res = run_code(src, limits=Limits(max_processes=12, wall_seconds=4))
    assert (res.status, res.reason) == ("timeout", "wall")
    assert 1 <= int(res.stdout.split()[1]) < 12
    assert host_pids_with(marker) == []


def test_daemons_left_by_a_passing_run_are_killed(host_pids_with):
    marker = "daemon-" + uuid.uuid4().hex
    src = textwrap.dedent(f"""
        import os, sys
        if os.fork() == 0:
            os.setsid()
            os.execv(sys.executable, [sys.executable, "-S", "-c", "import time; time.sleep(60)", {marker!r}])
        print("bye")
    """)
    res = run_code(src)
    assert res.status == "pass" and res.stdout == "bye\n"
    time.sleep(0.2)
    assert host_pids_with(marker) == []


def test_a_sigxcpu_ignorer_is_killed_and_the_launcher_survives():
    src = "import signal\nsignal.signal(signal.SIGXCPU, signal.SIG_IGN)\nwhile True: pass"
    res = run_code(src, limits=Limits(cpu_seconds=1, wall_seconds=60))
    # the hard limit (soft + 1 s of CPU) SIGKILLs it long before the wall clock (60 s: on a
    # loaded 2-core host 2 CPU seconds took over 10 s of wall time)
    assert res.status in ("timeout", "fail") and res.reason in ("cpu", "killed:SIGKILL"), res


def test_signals_cannot_reach_the_host():
    src = f"import os, signal\ntry:\n    os.kill({os.getpid()}, signal.SIGKILL)\nexcept OSError as e:\n    print(type(e).__name__)"
    res = run_code(src)
    assert res.status == "pass" and res.stdout.strip() == "ProcessLookupError"


def test_an_environment_under_tmp_is_visible_read_only(tmp_path):
    venv = Path("/tmp") / f"madopd-venv-{uuid.uuid4().hex[:8]}"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    try:
        site = next(venv.glob("lib/python*/site-packages"))
        (site / "madopd_probe_pkg.py").write_text("VALUE = 42\n")
        from madopd.sandbox import SandboxConfig

        cfg = SandboxConfig(python=str(venv / "bin" / "python"))
        src = f"import sys\nsys.path.insert(0, {str(site)!r})\nimport madopd_probe_pkg\nprint(sys.prefix, madopd_probe_pkg.VALUE)"
        res = run_code(src, config=cfg)
        assert res.status == "pass", res
        assert res.stdout.split()[-1] == "42"
    finally:
        subprocess.run(["rm", "-rf", str(venv)], check=True)


@pytest.mark.slow
def test_output_flood_is_drained_and_truncated():
    res = run_code("import os\nb = b'x' * (1 << 20)\nfor _ in range(300):\n    os.write(1, b)",
                   limits=Limits(wall_seconds=30))
    assert res.status == "pass" and res.truncated and len(res.stdout) == 65536


_PARENT = textwrap.dedent("""
    import sys
    from madopd.sandbox import Limits, run_code
    import os
    marker = os.environ["MADOPD_TEST_MARKER"]
    src = ("import os, sys, time\\n"
           "for _ in range(3):\\n"
           "    if os.fork() == 0:\\n"
           "        os.setsid()\\n"
           f"        os.execv(sys.executable, [sys.executable, '-S', '-c', 'import time; time.sleep(120)', {marker!r}])\\n"
           "time.sleep(120)\\n")
    run_code(src, limits=Limits(wall_seconds=100))
""")


@pytest.mark.slow
def test_sigkill_of_the_parent_leaves_no_process_and_no_temp_dir(tmp_path, host_pids_with):
    marker = "orphan-" + uuid.uuid4().hex
    tmp_before = set(os.listdir("/tmp"))
    env = {**os.environ, "TMPDIR": str(tmp_path), "MADOPD_TEST_MARKER": marker}
    parent = subprocess.Popen([sys.executable, "-c", _PARENT], cwd=CHECKOUT, env=env)
    deadline = time.monotonic() + 30
    while len(host_pids_with(marker)) < 3 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert len(host_pids_with(marker)) == 3, "the sandboxed children never started"
    parent.kill()
    parent.wait()
    deadline = time.monotonic() + 10
    while host_pids_with(marker) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert host_pids_with(marker) == []  # --die-with-parent took the whole namespace down
    assert list(tmp_path.iterdir()) == [] and set(os.listdir("/tmp")) - tmp_before <= {
        p for p in os.listdir("/tmp") if not p.startswith("madopd")}
    backend = cgroup.detect()
    stale = [n for n in os.listdir(backend.pids_dir) if n.startswith(f"run-{parent.pid}-")]
    assert len(stale) == 1  # its cgroup stays until the next start sweeps it ...
    assert cgroup.sweep_stale(backend) >= 1
    assert not [n for n in os.listdir(backend.pids_dir) if n.startswith(f"run-{parent.pid}-")]


_CALLER = textwrap.dedent("""
    import sys
    from madopd.sandbox import Limits, run_code
    tag, seconds = sys.argv[1], float(sys.argv[2])
    res = run_code(f"import time; time.sleep({seconds}); print({tag!r})", limits=Limits(wall_seconds=20))
    assert (res.status, res.stdout) == ("pass", tag + "\\n"), res
    print("ok", tag)
""")


@pytest.mark.slow
def test_concurrent_callers_with_different_tmpdirs_do_not_interfere(tmp_path):
    procs = []
    for i, seconds in enumerate((3.0, 0.1, 0.1, 0.1)):
        d = tmp_path / f"t{i}"
        d.mkdir()
        procs.append(subprocess.Popen([sys.executable, "-c", _CALLER, f"caller{i}", str(seconds)],
                                      cwd=CHECKOUT, env={**os.environ, "TMPDIR": str(d)},
                                      stdout=subprocess.PIPE, text=True))
        time.sleep(0.3 if i == 0 else 0)
    outs = [p.communicate(timeout=60)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0, 0], outs
    assert all(f"ok caller{i}" in o for i, o in enumerate(outs))
