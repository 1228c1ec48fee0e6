"""The one verifier behind every code score: HumanEval, code JSONL (benchmark and training task)
and toy-code. (BFCL's executors use the same result channel, see ``run_trusted``.)

A verdict must not be forgeable by the code under test. Design (details in docs/sandbox.md):

* **Two processes per sandbox.** The trusted harness (``harness.HARNESS``) is the run's pid 1; it
  starts a worker process that executes the candidate's source. The *tests* (trusted benchmark
  text) and the optional *prelude* (HumanEval's prompt, whose helpers such as ``poly`` the tests
  use) run in the harness. Names the tests need from the candidate are fetched through a pipe
  protocol carrying only plain data, so every value a test compares is a genuine built-in object
  made by the harness: objects whose ``__eq__`` is always True, patched builtins or checkers,
  ``sys.exit``/``os._exit``/``SystemExit``/``atexit`` in the candidate cannot make a failing test
  pass (an early exit is the worker dying: a failure).
* **Nothing the candidate writes reaches trusted code.** The harness runs as ``python -I -S -B``
  (no script directory, no cwd, no user site, no ``PYTHON*`` variables on its path: only the
  read-only interpreter prefix), leaves the writable /tmp for the read-only root before any
  candidate code runs, and starts every worker the same way; it ignores SIGINT (a Python pid 1
  would turn the candidate's SIGINT into ``KeyboardInterrupt``; other signals from inside the
  namespace cannot reach a pid 1 that does not handle them).
* **Batch-mates share nothing** (``batch_size > 1`` without ``shared_worker``): before each later
  case the harness SIGKILLs every other process of the pid namespace (``kill(-1)`` from pid 1)
  and empties /tmp and /dev/shm; if it cannot, the remaining cases fail with reason
  ``isolation``.
* **Hidden tests.** The cases file is deleted before any candidate code runs; the harness is
  non-dumpable (no /proc/1/mem, /proc/1/fd), so the worker cannot read tests or expected values.
* **A channel the candidate cannot write.** The harness writes its verdicts on a pipe whose write
  end only it holds (bwrap ``--as-pid-1``: no other process of the sandbox has it), prefixed by a
  per-run nonce it reads from another pipe at start-up; stdout plays no part in a verdict.

Each case: ``status`` pass / fail / timeout / error and a ``reason`` (assertion, exception, load,
no-entry-point, candidate-exited, protocol, case (time), harness:<run status>:<reason>).
"""

from __future__ import annotations

import ast
import json
from dataclasses import dataclass, replace

from madopd import sandbox as _sandbox
from madopd.errors import ConfigError
from madopd.sandbox import COUNTERS, Limits, RunResult, _count
from madopd.sandbox.harness import HARNESS, WORKER

__all__ = ["TestCase", "Verdict", "verify_cases", "run_trusted", "COUNTERS"]


@dataclass(frozen=True)
class TestCase:
    """One candidate with its tests.

    ``candidate``: untrusted source, executed in the worker. ``tests``: trusted test code, executed
    in the harness; when it defines ``check`` and ``entry_point`` is set, ``check(entry_point)`` is
    called after it. ``prelude``: trusted code run in the harness first (helpers the tests use)."""

    __test__ = False  # not a pytest class

    candidate: str
    tests: str
    entry_point: str | None = None
    prelude: str = ""


@dataclass
class Verdict:
    status: str  # "pass" | "fail" | "timeout" | "error"
    reason: str
    detail: str
    run: RunResult  # the sandbox run that held this case (stdout/stderr of the candidate)

    @property
    def passed(self) -> bool:
        return self.status == "pass"


def _defines_check(tests: str) -> bool:
    try:
        tree = ast.parse(tests)
    except (SyntaxError, ValueError):
        return False
    return any(isinstance(n, ast.FunctionDef) and n.name == "check" for n in tree.body)


def _prelude(text: str) -> str:
    """A prompt that ends at a bare ``def`` line still runs as a prelude once given a body."""
    for glue in ("", "\n    pass\n"):
        try:
            ast.parse(text + glue)
            return text + glue
        except (SyntaxError, ValueError):
            continue
    return ""


def verify_cases(cases: list[TestCase], *, limits: Limits | None = None,
                 per_case_seconds: float | None = None, batch_size: int = 1,
                 shared_worker: bool = False, workers: int = 2,
                 progress: bool = False) -> list[Verdict]:
    """Verdicts for ``cases`` (same order). ``batch_size`` cases share one sandbox run, each with
    a fresh worker in an emptied sandbox (no process or file of an earlier case survives); with
    ``shared_worker`` they also share one worker process and nothing is cleared between them
    (faster; safe only when candidates cannot reach each other, e.g. toy-code's grammar-filtered
    expressions)."""
    if batch_size < 1 or workers < 1:
        raise ConfigError("verify_cases: batch_size and workers must be >= 1")
    limits = limits or Limits()
    per_case = float(per_case_seconds or limits.wall_seconds)
    batches = [cases[i:i + batch_size] for i in range(0, len(cases), batch_size)]
    files = []
    for batch in batches:
        spec = {"worker": WORKER, "per_case_seconds": per_case, "shared_worker": shared_worker,
                "cases": [{"candidate": c.candidate, "tests": c.tests, "entry_point": c.entry_point,
                           "prelude": _prelude(c.prelude) if c.prelude else "",
                           "call_check": bool(c.entry_point) and _defines_check(c.tests)}
                          for c in batch]}
        files.append({"cases.json": json.dumps(spec)})
    longest = max(map(len, batches), default=1)
    # The per-case timer must decide a slow case (verdict "timeout"): a CPU rlimit at or below
    # it races the timer on an idle machine and kills the worker first ("candidate-exited").
    run_limits = replace(limits, wall_seconds=per_case * longest + 5.0,
                         cpu_seconds=max(limits.cpu_seconds, per_case * longest + 2.0))
    runs = _sandbox.run_many([HARNESS] * len(batches), limits=run_limits, workers=workers,
                    progress=progress, files=files, channel=True)
    out: list[Verdict] = []
    for batch, run in zip(batches, runs):
        rows = _parse(run.channel, len(batch))
        if rows is None:
            _count("verify/harness_failed")
            status = "timeout" if run.status == "timeout" else "error"
            rows = [(status, f"harness:{run.status}:{run.reason}", run.stderr[-300:])] * len(batch)
        for status, reason, detail in rows:
            _count(f"verify/{status}")
            out.append(Verdict(status, reason, detail, run))
    return out


def _parse(channel: bytes | None, n: int) -> list[tuple[str, str, str]] | None:
    if channel is None:
        return None
    try:
        rows = json.loads(channel)
    except ValueError:
        return None
    ok = {"pass", "fail", "timeout"}
    if (not isinstance(rows, list) or len(rows) != n
            or not all(isinstance(r, list) and len(r) == 3 and r[0] in ok for r in rows)):
        return None
    return [(str(a), str(b), str(c)) for a, b, c in rows]


# The trusted-program form of the channel: a program that runs no untrusted code itself (BFCL's
# executors, whose model calls are validated to plain backend-method calls before BFCL evaluates
# them) writes its JSON result with ``channel_send(obj)``; stdout is ignored.
CHANNEL_PRELUDE = r'''
import json as _json, os as _os, sys as _sys
def channel_send(obj):
    i = _sys.argv.index("--madopd-channel")
    fd, nfd = int(_sys.argv[i + 1]), int(_sys.argv[i + 2])
    nonce = b""
    while True:
        c = _os.read(nfd, 64)
        if not c:
            break
        nonce += c
    data = nonce + b"\n" + _json.dumps(obj).encode()
    while data:
        data = data[_os.write(fd, data):]
'''


def run_trusted(sources: list[str], *, files: list[dict[str, str]] | None = None,
                limits: Limits | None = None, workers: int = 2,
                progress: bool = False) -> list[tuple[object | None, RunResult]]:
    """Run trusted programs (prefixed with ``CHANNEL_PRELUDE``) and return what each sent with
    ``channel_send`` (None when it sent nothing valid) with its RunResult."""
    runs = _sandbox.run_many([CHANNEL_PRELUDE + s for s in sources], limits=limits or Limits(),
                    workers=workers, progress=progress, files=files, channel=True)
    out = []
    for run in runs:
        value = None
        if run.channel is not None:
            try:
                value = json.loads(run.channel)
            except ValueError:
                _count("channel/bad_json")
        out.append((value, run))
    return out
