"""madopd.sandbox: each escape attempt is contained and reported, and the host survives."""

from __future__ import annotations

import ast
import os
import socket
import sys
import threading
import uuid

import pytest

from madopd import sandbox
from madopd.errors import ConfigError
from madopd.sandbox import Limits, RunResult, SandboxConfig, run_code, run_many

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux-only sandbox")


@pytest.fixture(scope="module", autouse=True)
def isolation_available():
    res = run_code("print('ok')")
    if res.status == "error" and res.reason == "isolation":
        pytest.skip(f"this host cannot isolate (no root, no user namespaces): {res.stderr.strip()}")
    assert res.status == "pass", res


def _uid_can_leak() -> bool:
    return os.geteuid() == 0 and sandbox.CONFIG.drop_uid


def test_pass_fail_stdin_files_and_result_fields():
    ok = run_code("import sys, helper\nprint(helper.X + sys.stdin.read())",
                  stdin="!", files={"helper.py": "X = 'hi'"})
    assert isinstance(ok, RunResult)
    assert (ok.status, ok.returncode, ok.stdout, ok.reason) == ("pass", 0, "hi!\n", "")
    assert ok.duration > 0
    bad = run_code("raise ValueError('boom')")
    assert (bad.status, bad.reason, bad.returncode) == ("fail", "exception", 1)
    assert "ValueError: boom" in bad.stderr
    code = run_code("import sys; sys.exit(3)")
    assert (code.status, code.reason, code.returncode) == ("fail", "exit", 3)


def test_infinite_loop_hits_cpu_limit_and_sleep_hits_wall_clock():
    spin = run_code("while True: pass", limits=Limits(cpu_seconds=1, wall_seconds=10))
    assert (spin.status, spin.reason) == ("timeout", "cpu")
    assert spin.duration < 5
    sleep = run_code("import time; time.sleep(60)", limits=Limits(wall_seconds=1))
    assert (sleep.status, sleep.reason) == ("timeout", "wall")
    assert sleep.duration < 5


def test_big_allocation_is_a_memory_failure():
    res = run_code("x = bytearray(10 * 1024**3)\nprint('allocated')", limits=Limits(memory_mb=512))
    assert (res.status, res.reason) == ("fail", "memory")
    assert "allocated" not in res.stdout


@pytest.mark.skipif(os.geteuid() != 0, reason="RLIMIT_NPROC per run needs a throw-away uid (root)")
def test_many_children_are_capped_and_all_killed_afterwards():
    # A BOUNDED spawn attempt (50 sleepers, some escaping the group with setsid), never a fork bomb.
    src = """
import os, sys, time
n = 0
for i in range(50):
    try:
        pid = os.fork()
    except OSError:
        break
    if pid == 0:
        if i % 2:
            os.setsid()
        time.sleep(120)
        os._exit(0)
    n += 1
print("spawned", n, flush=True)
time.sleep(120)
"""
    res = run_code(src, limits=Limits(max_processes=8, wall_seconds=2))
    assert (res.status, res.reason) == ("timeout", "wall")
    spawned = int(res.stdout.split()[1])
    assert 1 <= spawned < 8  # the parent counts as one of the 8
    for uid in range(sandbox.CONFIG.uid_base, sandbox.CONFIG.uid_base + sandbox.CONFIG.uid_slots):
        assert sandbox.pids_of_uid(uid) == [], f"processes of uid {uid} survived"


@pytest.mark.skipif(os.geteuid() != 0, reason="uid bookkeeping is root-only")
def test_daemon_left_behind_by_a_passing_run_is_killed():
    src = ("import os, sys, time\n"
           "if os.fork() == 0:\n"
           "    os.setsid(); time.sleep(60); os._exit(0)\n"
           "print('bye', len([p for p in os.listdir('/proc') if p.isdigit()]))")
    res = run_code(src)
    assert res.status == "pass" and res.stdout.startswith("bye")
    assert all(sandbox.pids_of_uid(u) == [] for u in range(61000, 61000 + 64))


def test_host_processes_are_invisible():
    src = f"""
import ast
import os
pids = sorted(int(p) for p in os.listdir("/proc") if p.isdigit())
print(pids, os.getpid(), os.path.exists("/proc/{os.getpid()}/cmdline"))
"""
    res = run_code(src)
    assert res.status == "pass", res.stderr
    pids, mine, host_visible = res.stdout.rsplit(" ", 2)
    assert host_visible.strip() == "False"
    assert len(ast.literal_eval(pids)) <= 3  # init, the code, maybe a zombie: no host process


def test_writes_outside_the_temp_dir_are_blocked_or_contained(tmp_path):
    name = f"madopd-escape-{uuid.uuid4().hex}"
    protected = tmp_path / name  # a root-owned directory the host can write to
    src = f"""
import ast
import os
results = []
for path in [{str(protected)!r}, "/tmp/{name}", "/dev/shm/{name}", os.path.expanduser("~/{name}")]:
    try:
        with open(path, "w") as fh:
            fh.write("x")
        results.append("wrote")
    except OSError:
        results.append("denied")
print(" ".join(results))
"""
    res = run_code(src)
    assert res.status == "pass", res.stderr
    outcomes = res.stdout.split()
    if _uid_can_leak():
        assert outcomes[0] == "denied"
    # Whatever the child managed to write went to its own temp dir, which is gone now.
    assert not protected.exists()
    assert not os.path.exists(f"/tmp/{name}")
    assert not os.path.exists(f"/dev/shm/{name}")
    assert not os.path.exists(os.path.expanduser(f"~/{name}"))


def test_host_secrets_are_invisible(monkeypatch):
    secret = f"sk-fake-{uuid.uuid4().hex}"
    monkeypatch.setenv("MADOPD_FAKE_API_KEY", secret)
    src = f"""
import ast
import os
print(sorted(os.environ))
try:
    print(open("/proc/{os.getpid()}/environ", "rb").read())
except OSError as e:
    print("environ denied", type(e).__name__)
"""
    res = run_code(src)
    assert res.status == "pass", res.stderr
    assert secret not in res.stdout
    assert "MADOPD_FAKE_API_KEY" not in res.stdout
    assert set(ast.literal_eval(res.stdout.splitlines()[0])) <= {"PATH", "HOME", "TMPDIR", "LANG", "LD_LIBRARY_PATH"}
    if _uid_can_leak():
        assert "environ denied" in res.stdout


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
        assert (cut.status, cut.reason) == ("fail", "exception")
        assert "connected" not in cut.stdout
        assert not accepted
        allowed = run_code(src, limits=Limits(network=True))
        assert allowed.status == "pass", allowed.stderr
        thread.join(10)
        assert accepted == [True]
    finally:
        server.close()
        thread.join(10)


def test_output_is_truncated_and_counted():
    before = sandbox.COUNTERS["truncated_output"]
    res = run_code("print('x' * 100000)", limits=Limits(max_output_bytes=1000))
    assert res.status == "pass" and res.truncated and len(res.stdout) == 1000
    assert sandbox.COUNTERS["truncated_output"] == before + 1


def test_run_many_keeps_order_and_isolates_runs():
    srcs = [f"print({i} * {i})" if i % 3 else "raise SystemExit(1)" for i in range(7)]
    results = run_many(srcs, workers=3)
    assert [r.status for r in results] == ["fail" if i % 3 == 0 else "pass" for i in range(7)]
    assert [r.stdout for r in results if r.status == "pass"] == [f"{i * i}\n" for i in range(7) if i % 3]


def test_isolation_failure_is_an_error_unless_allowed_and_then_counted(monkeypatch):
    # Force a mount failure: a bogus interpreter prefix to bind-mount.
    real = sandbox._python_layout

    def broken(cfg, drop):
        exe, _, env = real(cfg, drop)
        return exe, ["/nonexistent-madopd-prefix", "/tmp/.python"], env

    monkeypatch.setattr(sandbox, "_python_layout", broken)
    strict = run_code("print('x')")
    assert (strict.status, strict.reason) == ("error", "isolation")
    assert "mount setup failed" in strict.stderr
    before = sandbox.COUNTERS["isolation_degraded"]
    lax = run_code("print('x')", config=SandboxConfig(require_isolation=False))
    assert sandbox.COUNTERS["isolation_degraded"] == before + 1
    assert "degraded" in lax.stderr


def test_bad_arguments_raise_config_errors():
    with pytest.raises(ConfigError, match="cpu_seconds"):
        Limits(cpu_seconds=0)
    with pytest.raises(ConfigError, match="relative"):
        run_code("pass", files={"../x.py": ""})
    with pytest.raises(ConfigError, match="workers"):
        run_many(["pass"], workers=0)
    with pytest.raises(ConfigError, match="uid_base"):
        SandboxConfig(uid_base=10)
