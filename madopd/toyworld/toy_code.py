"""toy-code: write a one-line Python expression in ``x`` from a textual spec (the code task).

A prompt is ``C:<word> <C>`` ("C:most 37" = "the larger of x and 37"); the answer is an expression
(``max(x,37)``). Hidden tests call ``f = lambda x: <answer>`` on inputs on both sides of C; a
response passes only if every test holds. Metric: pass@k with the unbiased estimator.

Generated code never runs in this process. Verification goes through ``madopd.sandbox.verify``
(the verifier every code score uses):

1. **grammar filter** (no execution): the expression may only use digits, ``x``, ``+ - * / % ( ) ,``,
   spaces and the names ``max``, ``min``, ``abs``; anything else is a failure counted in
   ``counters["rejected"]`` (no attribute access, no subscripts, no underscores: a candidate cannot
   reach outside its own lambda).
2. **batched verification**: up to ``batch_size`` candidates share ONE sandbox run and one worker
   process (~20-50 ms saved per candidate); each is ``f = lambda x: <expr>`` in its own namespace,
   and the hidden tests ``f(x) == y`` run in the harness on the plain values the worker returns,
   with a per-candidate time guard (the worker is killed and restarted). Sharing a worker is safe
   because of the grammar filter; ``batch_size=1`` gives every candidate its own sandbox.
3. If a whole batch's harness fails (wall/memory limit), its candidates are re-run one per sandbox
   (``counters["batch_isolated"]``) so one bad candidate fails alone. Every verdict is "pass",
   "wrong", "error", "timeout" or "rejected"; a sandbox violation is a failure, never a crash.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field

from madopd.errors import ConfigError
from madopd.toyworld.toy_common import EVAL_FRACTION, FAMILIES, VAL_HI, VAL_LO, is_held_out
from madopd.types import State

_ALLOWED = re.compile(r"^[0-9x+\-*/%(), a-z]{1,64}$")
_NAMES = re.compile(r"[a-z_]+")
_ALLOWED_NAMES = {"x", "max", "min", "abs"}
_CHECK = """\
def check(candidate):
    for x, y in TESTS:
        assert candidate(x) == y
"""


def check_grammar(expr: str) -> bool:
    """True when ``expr`` only uses the allowed characters and names (nothing is executed)."""
    if not _ALLOWED.match(expr):
        return False
    return set(_NAMES.findall(expr)) <= _ALLOWED_NAMES


def hidden_inputs(c: int) -> list[int]:
    """Inputs on both sides of the constant (tell max from min and add from sub)."""
    return [-20, 0, 3, c - 1, c, c + 1, 50, 120]


@dataclass
class ToyCodeTask:
    """The code task of the toy world (implements ``madopd.tasks.base.Task``).

    Items are (family, C) with C in [10, 99]; ``toy_common.is_held_out`` (a fixed hash of the
    item, the toy world's one split rule) holds out 30 % of them (never in ``train_states``).
    """

    families: tuple[str, ...] = ("add", "sub", "max", "min", "dst")
    batch_size: int = field(default=64, metadata={"help": "candidates per sandboxed script (1 = isolate)"})
    workers: int = field(default=1, metadata={"help": "concurrent sandbox processes"})
    per_candidate_seconds: float = field(default=0.5, metadata={"help": "time guard per candidate"})
    limits: object = None  # madopd.sandbox.Limits; None = Limits(wall_seconds=20)
    name: str = "toy-code"
    kind: str = "code"

    def __post_init__(self):
        for f in self.families:
            if f not in FAMILIES:
                raise ConfigError(f"ToyCodeTask.families: unknown family {f!r}; valid: {sorted(FAMILIES)}")
        if self.batch_size < 1 or self.workers < 1:
            raise ConfigError("ToyCodeTask.batch_size and .workers must be >= 1")
        self.counters: Counter[str] = Counter()
        self._train, self._eval = [], []
        for fam in self.families:
            for c in range(VAL_LO, VAL_HI + 1):
                st = self.make_state(fam, c)
                (self._eval if is_held_out("toy-code", f"{fam}:{c}") else self._train).append(st)

    # ----------------------------------------------------------------- states
    @staticmethod
    def make_state(family: str, c: int) -> State:
        fam = FAMILIES[family]
        tests = [[x, fam.apply(x, c)] for x in hidden_inputs(c)]
        return State(
            id=f"code/{family}/{c}",
            messages=[{"role": "user", "content": f"C:{fam.word} {c}"}],
            reference=fam.code(c), family=family,
            meta={"c": c, "u": (c - VAL_LO) / (VAL_HI - VAL_LO + 1), "trap": c % 10 == 7,
                  "tests": tests})

    @property
    def eval_fraction(self) -> float:
        return EVAL_FRACTION["toy-code"]

    def train_states(self) -> list[State]:
        return list(self._train)

    def eval_states(self) -> list[State]:
        return list(self._eval)

    @staticmethod
    def answer_with(state: State, tool: str) -> str:
        """The answer a policy that uses operation ``tool`` gives in ``state``."""
        return FAMILIES[tool].code(state.meta["c"])

    # ----------------------------------------------------------------- verification
    def verify(self, state: State, response: str) -> float:
        return self.verify_batch([state], [response])[0]

    def verify_batch(self, states: list[State], responses: list[str]) -> list[float]:
        """1.0 / 0.0 per response (see the module docstring for how code is run)."""
        return [1.0 if v == "pass" else 0.0 for v in self.verdicts(states, responses)]

    def verdicts(self, states: list[State], responses: list[str]) -> list[str]:
        if len(states) != len(responses):
            raise ConfigError(f"verify_batch: {len(states)} states but {len(responses)} responses")
        out: list[str | None] = [None] * len(states)
        todo = []
        for i, (st, resp) in enumerate(zip(states, responses)):
            expr = (resp or "").strip()
            if not check_grammar(expr):
                out[i] = "rejected"
                self.counters["rejected"] += 1
            else:
                todo.append((i, expr, st.meta["tests"]))
        chunks = [todo[j:j + self.batch_size] for j in range(0, len(todo), self.batch_size)]
        for chunk, verdicts in zip(chunks, self._run_chunks(chunks)):
            for (i, _, _), v in zip(chunk, verdicts):
                out[i] = v
                self.counters[v] += 1
        return out  # type: ignore[return-value]

    def _limits(self):
        from madopd.sandbox import Limits

        return self.limits or Limits(wall_seconds=20.0, cpu_seconds=10.0, memory_mb=512)

    def _run_chunks(self, chunks: list[list]) -> list[list[str]]:
        from madopd.sandbox.verify import TestCase, verify_cases

        cases = [TestCase(f"f = lambda x: ({expr}\n)\n", f"TESTS = {tests!r}\n{_CHECK}", "f")
                 for chunk in chunks for _, expr, tests in chunk]
        size = max(map(len, chunks), default=1)
        verdicts = verify_cases(cases, limits=self._limits(), per_case_seconds=self.per_candidate_seconds,
                                batch_size=size, shared_worker=True, workers=self.workers) if cases else []
        out, i = [], 0
        for chunk in chunks:
            got = verdicts[i:i + len(chunk)]
            i += len(chunk)
            if any(v.reason.startswith("harness:") for v in got):  # the batch's harness failed
                self.counters["batch_failed"] += 1
                if len(chunk) == 1:
                    out.append(["timeout" if got[0].run.status == "timeout" else "error"])
                    continue
                self.counters["batch_isolated"] += len(chunk)
                out.append([v[0] for v in self._run_chunks([[c] for c in chunk])])
                continue
            out.append([self._word(v) for v in got])
        return out

    @staticmethod
    def _word(v) -> str:
        if v.status == "pass":
            return "pass"
        if v.status == "timeout":
            return "timeout"
        return "wrong" if v.reason == "assertion" else "error"


class ToyCodeBenchmark:
    """toy-code's held-out specs as a ``madopd.bench`` benchmark (``madopd eval``).

    Registered as ``register_benchmark("toy-code", _lazy("madopd.toyworld.toy_code",
    "ToyCodeBenchmark"))``. ``score`` gives pass@k (unbiased, macro over specs) with every sample
    verified in the sandbox like ``ToyCodeTask.verify_batch``.
    """

    name = "toy-code"
    kind = "code"

    def __init__(self, **_options):
        self.task = ToyCodeTask()

    def states(self, limit: int | None = None) -> list[State]:
        return self.task.eval_states()[:limit]

    def reference(self, state: State) -> str:
        return state.reference

    def score(self, states: list[State], responses: list[list[str]], *, ks=(1,), workers: int = 2,
              progress: bool = False):
        from madopd.bench import BenchResult
        from madopd.evaluate import pass_at_k

        if len(states) != len(responses):
            raise ConfigError(f"score: {len(states)} states but {len(responses)} response lists")
        flat_s = [s for s, rs in zip(states, responses) for _ in rs]
        flat_r = [r for rs in responses for r in rs]
        verdicts = self.task.verdicts(flat_s, flat_r)
        records, items, i = [], [], 0
        for s, rs in zip(states, responses):
            v = verdicts[i:i + len(rs)]
            i += len(rs)
            records += [{"state_id": s.id, "response": r, "verdict": x} for r, x in zip(rs, v)]
            items.append({"state_id": s.id, "family": s.family, "n": len(rs),
                          "correct": sum(x == "pass" for x in v)})
        summary = {"benchmark": self.name, "n_states": len(states),
                   **{f"count/{k}": v for k, v in self.task.counters.items()}}
        for k in ks:
            vals = [pass_at_k(it["n"], it["correct"], k) for it in items if it["n"] >= k]
            summary[f"pass@{k}"] = sum(vals) / len(vals) if vals else float("nan")
        summary["score"] = summary.get("pass@1", float("nan"))
        return BenchResult(records, summary, items)
