"""The class "candidate code runs in, or steers, trusted code" (issue 23 item 1).

The trusted harness (pid 1 of the run) and every worker it starts must import nothing that the
candidate can write. These tests do not guess which module names matter: they ask the harness
and a worker which modules they hold after a HumanEval-style case, then plant every one of those
names (plus sitecustomize/usercustomize/.pth/sourceless .pyc/__pycache__) in every writable place
of the sandbox, and try to write into every directory trusted code imports from. A planted module
that runs announces itself on stderr and, when it lands in the harness, writes a forged "pass"
for every case on the verdict channel (the attack of issue 23).
"""

from __future__ import annotations

import textwrap

import pytest

from madopd.sandbox import sandbox_info
from madopd.sandbox.verify import TestCase, verify_cases

# What HumanEval prompts import (the prelude runs in the harness): imported lazily, after the
# candidate has run, which is when a planted file would be picked up.
PRELUDE = ("from typing import List, Tuple, Optional, Any\nimport math, re, string, random, "
           "collections, itertools, functools, heapq, hashlib, copy, fractions, statistics\n"
           "def add(a, b):\n    pass\n")
TESTS = "def check(candidate):\n    assert candidate(1, 2) == 3\n"
WRONG = "def add(a, b):\n    return None\n"

# The tests run in the harness: they report what the harness imported and where from.
PROBE_TESTS = TESTS.replace("def check", textwrap.dedent("""\
    import sys, os, signal
    _mods = sorted(sys.modules)
    _dirs = sorted({os.path.dirname(getattr(m, "__file__", None) or "") for n, m in list(sys.modules.items())
                    if n != "__main__"} - {""})  # __main__ is the harness script, read at start
    sys.stderr.write("HARNESS-PROBE " + repr({"modules": _mods, "path": sys.path, "dirs": _dirs,
        "isolated": sys.flags.isolated, "no_site": sys.flags.no_site, "cwd": os.getcwd(),
        "env": sorted(k for k in os.environ if k.startswith("PYTHON")),
        "sigint": signal.getsignal(signal.SIGINT) is signal.SIG_IGN}) + "\\n")
    sys.stderr.flush()
    def check""")) + "    assert False\n"
PROBE_CANDIDATE = WRONG + textwrap.dedent("""\
    import sys, os
    print("WORKER-PROBE " + repr({"modules": sorted(sys.modules), "path": sys.path,
          "isolated": sys.flags.isolated, "cwd": os.getcwd()}), flush=True)
""")

# A planted module: announces itself; inside the harness it forges every verdict.
PLANT = textwrap.dedent("""\
    import os as _o, sys as _s
    _o.write(2, ("PLANTED-RAN %s in %r\\n" % (__name__, _s.argv[:1])).encode())
    _m = _s.modules.get("__main__")
    if _m is not None and hasattr(_m, "NONCE") and hasattr(_m, "SPEC"):
        _rows = ",".join(['["pass", "", ""]'] * len(_m.SPEC["cases"]))
        _o.write(_m.RESULT_FD, _m.NONCE + b"\\n[" + _rows.encode() + b"]")
        _o._exit(0)
""")


def _probe() -> tuple[dict, dict]:
    (v,) = verify_cases([TestCase(PROBE_CANDIDATE, PROBE_TESTS, "add", PRELUDE)], per_case_seconds=10)
    harness = next(line for line in v.run.stderr.splitlines() if line.startswith("HARNESS-PROBE "))
    worker = next(line for line in v.run.stdout.splitlines() if line.startswith("WORKER-PROBE "))
    return eval(harness.split(" ", 1)[1]), eval(worker.split(" ", 1)[1])


@pytest.fixture(scope="module")
def probe():
    return _probe()


def test_harness_and_worker_start_isolated(probe):
    harness, worker = probe
    assert harness["isolated"] == 1 and worker["isolated"] == 1, (harness["isolated"], worker["isolated"])
    assert harness["no_site"] == 1
    # nothing writable (the private /tmp, /dev/shm, cwd, HOME) is on either sys.path
    for path in (*harness["path"], *worker["path"]):
        assert path and not path.startswith(("/tmp", "/dev/shm")), path
    assert harness["cwd"] == "/", harness["cwd"]  # trusted code never resolves names in /tmp
    assert harness["env"] == []
    assert harness["sigint"], "SIGINT must be ignored by the harness"


def _planter(names: list[str], trusted_dirs: list[str]) -> str:
    """A wrong answer that plants ``names`` everywhere it can write and reports which trusted
    directories it could write into."""
    return WRONG + textwrap.dedent(f"""\
        import os, sys, importlib.util, marshal
        PLANT = {PLANT!r}
        names = {names!r}
        code = compile(PLANT, "planted.py", "exec")
        pyc = importlib.util.MAGIC_NUMBER + b"\\0" * 12 + marshal.dumps(code)
        tag = sys.implementation.cache_tag
        def put(path, data):
            try:
                os.makedirs(os.path.dirname(path), exist_ok=True)
                with open(path, "wb") as fh:
                    fh.write(data if isinstance(data, bytes) else data.encode())
                return True
            except OSError:
                return False
        for home in ("/tmp", os.getcwd(), os.path.expanduser("~"), os.environ.get("TMPDIR", "/tmp")):
            for n in names + ["sitecustomize", "usercustomize", "__main__"]:
                put(f"{{home}}/{{n}}.py", PLANT)
                put(f"{{home}}/__pycache__/{{n}}.{{tag}}.pyc", pyc)
            put(home + "/zzz-madopd.pth", "import planted_pth\\n")
            put(home + "/planted_pth.py", PLANT)
        for n in names:  # sourceless bytecode and packages in the other writable tmpfs
            put(f"/dev/shm/{{n}}.pyc", pyc)
            put(f"/dev/shm/pkg/{{n}}/__init__.py", PLANT)
        print("PLANTED " + str(len([1 for r, _, fs in os.walk("/tmp") for f in fs])), flush=True)
        wrote = []
        for d in {trusted_dirs!r}:
            for target in (d + "/zz_madopd_probe.py", d + "/__pycache__/zz_madopd_probe.pyc"):
                if put(target, PLANT):
                    wrote.append(target)
        print("WROTE-TRUSTED " + repr(wrote), flush=True)
    """)


def test_planted_modules_never_run_in_trusted_code(probe):
    harness, worker = probe
    names = sorted({m.split(".")[0] for m in harness["modules"] + worker["modules"]} - {"__main__"})
    assert {"typing", "json", "subprocess", "random", "copy", "string"} <= set(names)
    trusted_dirs = sorted(set(harness["dirs"]) | {p for p in harness["path"] + worker["path"] if p})
    cases = [TestCase(_planter(names, trusted_dirs), TESTS, "add", PRELUDE),
             TestCase(WRONG, TESTS, "add", PRELUDE)]  # a batch-mate after the planter
    verdicts = verify_cases(cases, per_case_seconds=10, batch_size=2)
    run = verdicts[0].run
    assert [v.status for v in verdicts] == ["fail", "fail"], [(v.status, v.reason) for v in verdicts]
    assert "PLANTED-RAN" not in run.stderr, run.stderr[-2000:]
    wrote = next(line for line in run.stdout.splitlines() if line.startswith("WROTE-TRUSTED "))
    assert eval(wrote.split(" ", 1)[1]) == [], wrote
    planted = next(line for line in run.stdout.splitlines() if line.startswith("PLANTED "))
    assert int(planted.split()[1]) > 2 * len(names), planted  # the plants were really there


@pytest.mark.bench
def test_humaneval_return_none_with_planted_modules_scores_zero(probe):
    """All 164 HumanEval problems answered ``return None`` plus a plant of every module name the
    harness and worker import (issue 23: 25 of 164 passed this way): 0 of 164 pass."""
    from madopd.bench.humaneval import load_humaneval
    from madopd.evaluate import evaluate_code

    harness, worker = probe
    names = sorted({m.split(".")[0] for m in harness["modules"] + worker["modules"]} - {"__main__"})
    problems = load_humaneval()
    plant = _planter(names, []).replace(WRONG, "", 1)
    completion = "    return None\n" + plant
    result = evaluate_code(problems, [[completion]] * len(problems), raw_completions=True)
    passed = sum(r["passed"] for r in result.records)
    print(f"humaneval return-None + planted modules: {passed} of {len(problems)} pass")
    assert len(problems) == 164 and passed == 0, result.summary


def test_candidate_interrupts_do_not_reach_the_harness():
    """SIGINT from the candidate (the only signal a pid-1 Python would act on) changes nothing:
    a right answer that also signals the harness still passes, a wrong one still fails."""
    noisy = textwrap.dedent("""\
        import os, signal, threading, time
        def nag():
            for _ in range(400):
                for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGUSR1, signal.SIGPIPE):
                    try:
                        os.kill(1, sig)
                    except OSError:
                        pass
                time.sleep(0.002)
        threading.Thread(target=nag, daemon=True).start()
        def add(a, b):
            time.sleep(0.3)
            return {}
    """)
    tests = "def check(candidate):\n" + "".join(f"    assert candidate({i}, 1) == {i + 1}\n" for i in range(3))
    got = verify_cases([TestCase(noisy.format("a + b"), tests, "add"),
                        TestCase(noisy.format("0"), tests, "add")], per_case_seconds=10)
    assert [(v.status, v.reason) for v in got] == [("pass", ""), ("fail", "assertion")]


# ------------------------------------------------------------------------- batch-mates
# Case 1 leaves a daemon that waits for case 2's worker, stops it, takes over its pipes through
# /proc/<pid>/fd and answers every call with 3 (issue 23 item 2).
HIJACKER = WRONG + textwrap.dedent("""\
    import json, os, signal, time
    if os.fork() == 0:
        os.setsid()
        if os.fork() == 0:
            seen = set(os.listdir("/proc"))
            end = time.time() + 8
            while time.time() < end:
                for p in set(os.listdir("/proc")) - seen:
                    if not p.isdigit():
                        continue
                    try:
                        argv = open(f"/proc/{p}/cmdline", "rb").read().split(b"\\0")
                    except OSError:
                        continue
                    if b"-c" not in argv:
                        continue
                    os.kill(int(p), signal.SIGSTOP)
                    req = os.open(f"/proc/{p}/fd/{int(argv[-3])}", os.O_RDONLY)
                    resp = os.open(f"/proc/{p}/fd/{int(argv[-2])}", os.O_WRONLY)
                    for line in os.fdopen(req, "rb"):
                        op = json.loads(line)["op"]
                        out = {"load": {"ok": 1}, "get": {"v": {"h": 1}}}.get(op, {"v": 3})
                        os.write(resp, (json.dumps(out) + "\\n").encode())
                    os._exit(0)
                time.sleep(0.001)
        os._exit(0)
    os.wait()
""")


def test_a_daemon_left_by_one_case_cannot_answer_for_the_next():
    cases = [TestCase(HIJACKER, TESTS, "add"), TestCase(WRONG, TESTS, "add")] * 2
    got = verify_cases(cases, per_case_seconds=5, batch_size=4)
    assert [v.status for v in got] == ["fail"] * 4, [(v.status, v.reason) for v in got]


def test_batch_mates_share_no_process_and_no_file():
    """What case 1 leaves (a setsid daemon, files in /tmp and /dev/shm) is gone for case 2."""
    leave = WRONG + textwrap.dedent("""\
        import os, time
        if os.fork() == 0:
            os.setsid()
            time.sleep(30)
            os._exit(0)
        for d in ("/tmp", "/dev/shm"):
            os.makedirs(d + "/left/sub", exist_ok=True)
            open(d + "/left/sub/f", "w").write("x")
            os.chmod(d + "/left/sub", 0o500)  # a directory the wipe must unlock first
            open(d + "/left.txt", "w").write("x")
    """)
    count = textwrap.dedent("""\
        import os
        def add(a, b):
            others = [p for p in os.listdir("/proc") if p.isdigit() and int(p) not in (1, os.getpid())]
            files = sorted(os.listdir("/tmp")) + sorted(os.listdir("/dev/shm"))
            return [others, files]
    """)
    # an interpreter under /tmp is bound there: the directory leading to it is the only entry
    binds = sandbox_info()["binds"]
    roots = [binds[i + 2] for i, a in enumerate(binds) if a == "--ro-bind" and binds[i + 2].startswith("/tmp/")]
    fresh = sorted({r.split("/")[2] for r in roots})
    tests = f"def check(candidate):\n    assert candidate(0, 0) == [[], {fresh!r}], candidate(0, 0)\n"
    got = verify_cases([TestCase(leave, tests, "add"), TestCase(count, tests, "add")],
                       per_case_seconds=5, batch_size=2)
    assert (got[1].status, got[1].reason) == ("pass", ""), got[1].detail
