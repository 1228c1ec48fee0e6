"""madopd.sandbox basics: results, limits, files, counters, configuration, degraded modes."""

from __future__ import annotations

import pytest

from madopd import sandbox
from madopd.errors import ConfigError
from madopd.sandbox import Limits, RunResult, SandboxConfig, run_code, run_many


def test_pass_fail_stdin_files_and_result_fields():
    ok = run_code("import sys, helper\nfrom sub import deep\nprint(helper.X + deep.Y + sys.stdin.read())",
                  stdin="!", files={"helper.py": "X = 'hi'", "sub/deep.py": "Y = '-'"})
    assert isinstance(ok, RunResult)
    assert (ok.status, ok.returncode, ok.stdout, ok.reason, ok.isolation) == ("pass", 0, "hi-!\n", "", "full")
    assert ok.duration > 0 and ok.channel is None
    bad = run_code("raise ValueError('boom')")
    assert (bad.status, bad.reason, bad.returncode) == ("fail", "exception", 1)
    assert "ValueError: boom" in bad.stderr
    code = run_code("import sys; sys.exit(3)")
    assert (code.status, code.reason, code.returncode) == ("fail", "exit", 3)


def test_infinite_loop_hits_cpu_limit_and_sleep_hits_wall_clock():
    # reason "cpu" is the proof that the CPU limit came first: on a loaded 2-core host one CPU
    # second took 5.6 s of wall time, so the wall clock here is generous
    spin = run_code("while True: pass", limits=Limits(cpu_seconds=1, wall_seconds=30))
    assert (spin.status, spin.reason) == ("timeout", "cpu")
    sleep = run_code("import time; time.sleep(60)", limits=Limits(wall_seconds=1))
    assert (sleep.status, sleep.reason) == ("timeout", "wall")
    assert sleep.duration < 5


def test_big_allocation_is_a_memory_failure():
    res = run_code("x = bytearray(10 * 1024**3)\nprint('allocated')", limits=Limits(memory_mb=512))
    assert (res.status, res.reason) == ("fail", "memory")
    assert "allocated" not in res.stdout


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


def test_missing_protection_is_refused_unless_allowed_and_then_labelled(monkeypatch):
    probe = {**sandbox._probe(), "cgroup": None}
    monkeypatch.setattr(sandbox, "_probe", lambda: probe)
    strict = run_code("print('x')")
    assert (strict.status, strict.reason, strict.isolation) == ("error", "isolation", "degraded:no-cgroup")
    assert "no-cgroup" in strict.stderr and "require_isolation" in strict.stderr
    before = sandbox.COUNTERS["isolation_degraded"], sandbox.COUNTERS["degraded/no-cgroup"]
    lax = run_code("print('x')", config=SandboxConfig(require_isolation=False))
    assert (lax.status, lax.stdout, lax.isolation) == ("pass", "x\n", "degraded:no-cgroup")
    assert (sandbox.COUNTERS["isolation_degraded"], sandbox.COUNTERS["degraded/no-cgroup"]) == (
        before[0] + 1, before[1] + 1)


def test_missing_bwrap_is_one_clear_error(monkeypatch):
    monkeypatch.setattr(sandbox, "_PROBE", {})
    monkeypatch.setattr(sandbox, "bwrap_path", lambda: None)
    with pytest.raises(sandbox.SandboxUnavailable, match=r"bubblewrap.*apt-get install -y bubblewrap"):
        run_code("pass")


def test_bad_arguments_raise_config_errors():
    with pytest.raises(ConfigError, match="cpu_seconds"):
        Limits(cpu_seconds=0)
    with pytest.raises(ConfigError, match="relative"):
        run_code("pass", files={"../x.py": ""})
    with pytest.raises(ConfigError, match="relative"):
        run_code("pass", files={"/etc/x.py": ""})
    with pytest.raises(ConfigError, match="workers"):
        run_many(["pass"], workers=0)
    with pytest.raises(ConfigError, match="tmpfs_mb"):
        SandboxConfig(tmpfs_mb=0)
    with pytest.raises(ConfigError, match="not visible inside the sandbox"):
        sandbox.inner_path("/etc")
