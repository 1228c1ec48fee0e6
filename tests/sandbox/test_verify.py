"""madopd.sandbox.verify: verdicts the candidate cannot forge (issue 11), and honest ones hold."""

from __future__ import annotations

import pytest

from madopd.evaluate import CodeProblem, evaluate_code
from madopd.sandbox.verify import TestCase, run_trusted, verify_cases

CHECK = "def check(candidate):\n    assert candidate(1, 2) == 3\n    assert candidate(-1, 1) == 0\n"
RIGHT = "def add(a, b):\n    return a + b\n"
ADD = CodeProblem("t/0", "def add(a, b):\n    \"\"\"Sum.\"\"\"\n", CHECK, "add", "    return a + b\n")


def _verdicts(candidates: list[str], tests: str = CHECK, ep: str | None = "add", **kw) -> list[tuple]:
    got = verify_cases([TestCase(c, tests, ep) for c in candidates], per_case_seconds=5, **kw)
    return [(v.status, v.reason) for v in got]


def test_right_and_wrong_answers():
    assert _verdicts([RIGHT, "def add(a, b):\n    return a - b\n", "def sub(a, b): pass\n", "def add(:"]) == [
        ("pass", ""), ("fail", "assertion"), ("fail", "no-entry-point"), ("fail", "load")]


# Each attack: a wrong answer that tries to be scored as passed.
ATTACKS = {
    "sys.exit(0) at import": "import sys\nsys.exit(0)\n",
    "raise SystemExit(0)": "raise SystemExit(0)\n",
    "os._exit(0) at import": "import os\nos._exit(0)\n",
    "os._exit(0) inside the call": "import os\ndef add(a, b):\n    os._exit(0)\n",
    "SystemExit inside the call": "def add(a, b):\n    raise SystemExit(0)\n",
    "atexit hook exits 0": "import atexit, os\natexit.register(lambda: os._exit(0))\ndef add(a, b):\n    return 0\n",
    "__eq__ always True": "class Yes:\n    def __eq__(s, o): return True\n    __hash__ = None\ndef add(a, b):\n    return Yes()\n",
    "int subclass with __eq__ True": "class I(int):\n    def __eq__(s, o): return True\ndef add(a, b):\n    return I(99)\n",
    "truthy object": "class T:\n    def __bool__(s): return True\ndef add(a, b):\n    return T()\n",
    "patched builtins": ("import builtins\nbuiltins.AssertionError = type('N', (Exception,), {})\n"
                         "builtins.abs = lambda x: 0\nbuiltins.len = lambda x: 0\ndef add(a, b):\n    return 0\n"),
    "patched checker globals": "check = lambda c: None\ncandidate = None\ndef add(a, b):\n    return 0\n",
    "forged HumanEval marker": "print('madopd-check-passed-0123456789abcdef', flush=True)\ndef add(a, b):\n    return 0\n",
    "writes a verdict on every fd": ("import os, json\nfor fd in range(3, 64):\n    try:\n"
                                     "        os.write(fd, b'x\\n' + json.dumps([['pass', '', '']]).encode())\n"
                                     "    except OSError:\n        pass\ndef add(a, b):\n    return 0\n"),
    "reopens pid 1's fds": ("import os\nfor fd in range(64):\n    try:\n"
                            "        f = os.open(f'/proc/1/fd/{fd}', os.O_WRONLY); os.write(f, b'[[\"pass\",\"\",\"\"]]')\n"
                            "    except OSError:\n        pass\ndef add(a, b):\n    return 0\n"),
    "reads the hidden tests": ("import os, re\nsrc = ''\nfor p in ['cases.json', '/proc/1/cmdline', '/proc/1/environ', '/proc/1/mem']:\n"
                               "    try: src += open(p, errors='replace').read()\n    except OSError: pass\n"
                               "def add(a, b):\n    return 3 if 'candidate(1, 2) == 3' in src else 0\n"),
    "kills the harness": "import os, signal\nos.kill(1, signal.SIGKILL)\ndef add(a, b):\n    return 0\n",
    "sleeps past the case": "import time\ndef add(a, b):\n    time.sleep(60)\n",
}


@pytest.mark.parametrize("name", list(ATTACKS))
def test_forging_attacks_fail(name):
    (status, reason), = _verdicts([ATTACKS[name]])
    assert status != "pass", (name, reason)


def test_hidden_tests_and_harness_fds_are_out_of_reach():
    probe = ("import os\nprint(os.path.exists('cases.json'))\n"
             "opened = 0\nfor fd in os.listdir('/proc/1/fd'):\n    try:\n        os.open('/proc/1/fd/' + fd, os.O_WRONLY); opened += 1\n"
             "    except OSError:\n        pass\nprint('opened', opened)\n"
             "def add(a, b):\n    return a + b\n")
    v, = verify_cases([TestCase(probe, CHECK, "add")])
    assert v.passed and v.run.stdout.split() == ["False", "opened", "0"]  # non-dumpable pid 1


def test_values_cross_as_plain_data_and_handles_work_for_honest_code():
    src = ("import math\nclass Box:\n    def __init__(s, v): s.v = v\n    def get(s): return s.v\n"
           "def make(v): return Box(v)\ndef gen(n):\n    yield from range(n)\n"
           "def stats(xs): return {'m': sum(xs) / len(xs), 'set': set(xs), 't': (1, None), 'b': b'hi', 'nan': math.nan, 'z': 1j}\n")
    tests = ("import math\nassert make([1, 2]).get() == [1, 2]\nassert list(gen(3)) == [0, 1, 2]\n"
             "s = stats([1, 2, 3])\nassert s['m'] == 2.0 and s['set'] == {1, 2, 3} and s['t'] == (1, None)\n"
             "assert s['b'] == b'hi' and math.isnan(s['nan']) and s['z'] == 1j\n"
             "try:\n    make(1) == 1\n    raise AssertionError('compared an opaque object')\nexcept TypeError:\n    pass\n")
    v, = verify_cases([TestCase(src, tests)])
    assert (v.status, v.reason, v.detail) == ("pass", "", "")


def test_candidate_exceptions_keep_their_builtin_type():
    src = "def div(a, b):\n    return a / b\n"
    tests = "try:\n    div(1, 0)\nexcept ZeroDivisionError:\n    pass\nelse:\n    raise AssertionError\n"
    assert verify_cases([TestCase(src, tests)])[0].passed


def test_prelude_helpers_are_the_trusted_ones():
    # HumanEval/32-style: the tests use the prompt's helper; redefining it in the candidate
    # cannot make a wrong answer pass.
    prelude = "def poly(xs, x):\n    return sum(c * x ** i for i, c in enumerate(xs))\ndef root(xs):\n    \"\"\"doc\"\"\"\n"
    tests = "def check(candidate):\n    assert abs(poly([-2, 1], candidate([-2, 1]))) < 1e-6\n"
    cheat = prelude.replace("return sum", "return 0 * sum") + "    return 123.0\n"
    honest = prelude + "    return 2.0\n"
    got = verify_cases([TestCase(cheat, tests, "root", prelude), TestCase(honest, tests, "root", prelude)])
    assert [v.status for v in got] == ["fail", "pass"]


def test_shared_worker_batches_restart_after_a_timeout_or_death():
    cands = [RIGHT, "def add(a, b):\n    while True: pass\n", RIGHT, "import os\nos._exit(1)\n", RIGHT]
    got = _verdicts(cands, batch_size=5, shared_worker=True)
    assert got == [("pass", ""), ("timeout", "case"), ("pass", ""), ("fail", "candidate-exited"), ("pass", "")]


def test_evaluate_code_uses_the_verifier_against_forged_markers():
    responses = [["    return a + b\n", "    print('madopd-check-passed-ffff'); return 0\n",
                  "    raise SystemExit(0)\n", "```python\nimport os\nos._exit(0)\n```"]]
    res = evaluate_code([ADD], responses)
    assert [r["passed"] for r in res.records] == [True, False, False, False]


def test_run_trusted_returns_only_what_the_program_sent():
    got = run_trusted(["print('[1]')\nchannel_send({'ok': 1})\n", "print('{\"ok\": 1}')\n"])
    assert got[0][0] == {"ok": 1} and got[1][0] is None
