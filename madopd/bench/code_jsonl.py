"""Function-completion benchmarks: the shared harness and user-provided JSONL problems.

JSONL format (one object per line; blank lines are skipped)::

    {"task_id": "mine/0", "prompt": "def add(a, b):\\n    \\"\\"\\"Sum.\\"\\"\\"\\n",
     "test": "def check(candidate):\\n    assert candidate(1, 2) == 3\\n",
     "entry_point": "add", "canonical_solution": "    return a + b\\n"}

``canonical_solution`` is optional (needed only by ``madopd eval --reference``). Every malformed
row raises ``madopd.errors.DataError`` naming the file, the line and the field.
"""

from __future__ import annotations

import ast
from dataclasses import asdict
from pathlib import Path

from madopd.bench import BenchResult
from madopd.errors import ConfigError, DataError
from madopd.evaluate import CodeProblem, evaluate_code
from madopd.sandbox import Limits
from madopd.tasks.jsonl import read_jsonl_rows
from madopd.types import State

INSTRUCTION = ("Complete the following Python function. Answer with the complete function "
               "in one ```python code block.\n\n```python\n{prompt}```")

_REQUIRED = ("task_id", "prompt", "test", "entry_point")


def _check_row(row: object, path: str, line: int) -> CodeProblem:
    if not isinstance(row, dict):
        raise DataError(f"expected a JSON object, got {type(row).__name__}", path=path, line=line)
    for name in _REQUIRED:
        if name not in row:
            raise DataError("missing required field", path=path, line=line, field=name)
        if not isinstance(row[name], str) or not row[name].strip():
            raise DataError(f"expected a non-empty string, got {row[name]!r:.60}", path=path,
                            line=line, field=name)
    if not row["entry_point"].isidentifier():
        raise DataError(f"expected a Python identifier, got {row['entry_point']!r}", path=path,
                        line=line, field="entry_point")
    try:
        tree = ast.parse(row["test"])
    except SyntaxError as exc:
        raise DataError(f"test code does not parse: {exc.msg} (line {exc.lineno})", path=path,
                        line=line, field="test") from None
    if not any(isinstance(n, ast.FunctionDef) and n.name == "check" for n in tree.body):
        raise DataError("test must define check(candidate) at top level", path=path, line=line,
                        field="test")
    sol = row.get("canonical_solution")
    if sol is not None and not isinstance(sol, str):
        raise DataError(f"expected a string, got {type(sol).__name__}", path=path, line=line,
                        field="canonical_solution")
    meta = {k: v for k, v in row.items() if k not in (*_REQUIRED, "canonical_solution")}
    return CodeProblem(row["task_id"], row["prompt"], row["test"], row["entry_point"], sol, meta)


def load_code_jsonl(path: str | Path) -> list[CodeProblem]:
    """Read and validate a code-problem JSONL file (DataError names file, line, field)."""
    path = str(path)
    problems, seen = [], {}
    for lineno, row in read_jsonl_rows(path, allow_empty=True, missing="file not found"):
        prob = _check_row(row, path, lineno)
        if prob.task_id in seen:
            raise DataError(f"duplicate task_id {prob.task_id!r} (first on line "
                            f"{seen[prob.task_id]})", path=path, line=lineno, field="task_id")
        seen[prob.task_id] = lineno
        problems.append(prob)
    if not problems:
        raise DataError("no problems in file", path=path)
    return problems


class CodeBenchmark:
    """Function-completion problems scored by running their tests in the sandbox."""

    kind = "code"

    def __init__(self, problems: list[CodeProblem], *, name: str = "code",
                 limits: Limits | None = None):
        self.name, self.problems, self.limits = name, problems, limits or Limits()

    def states(self, limit: int | None = None) -> list[State]:
        probs = self.problems if limit is None else self.problems[:limit]
        return [State(id=p.task_id,
                      messages=[{"role": "user", "content": INSTRUCTION.format(prompt=p.prompt)}],
                      reference=self._reference_text(p), family=self.name,
                      meta={"problem": asdict(p)})
                for p in probs]

    @staticmethod
    def _reference_text(p: CodeProblem) -> str | None:
        if p.canonical_solution is None:
            return None
        return f"```python\n{p.prompt}{p.canonical_solution}```"

    def reference(self, state: State) -> str:
        if state.reference is None:
            raise ConfigError(f"{self.name}: problem {state.id!r} has no canonical_solution")
        return state.reference

    def score(self, states: list[State], responses: list[list[str]], *, ks=(1,), workers: int = 2,
              progress: bool = False) -> BenchResult:
        problems = [CodeProblem(**s.meta["problem"]) for s in states]
        res = evaluate_code(problems, responses, ks=list(ks), limits=self.limits,
                            workers=workers, progress=progress)
        summary = {"benchmark": self.name, **res.summary}
        summary["score"] = summary.get("pass@1", summary["best_of_n"])
        return BenchResult(res.records, summary, res.problems)


class CodeJsonlBenchmark(CodeBenchmark):
    """``--benchmark code-jsonl --data FILE``."""

    def __init__(self, data: str | None = None, **_options):
        if not data:
            raise ConfigError("benchmark code-jsonl needs --data FILE (JSONL with task_id, "
                              "prompt, test, entry_point)")
        super().__init__(load_code_jsonl(data), name="code-jsonl")
