"""real-calls: single-turn function calling with real text (BFCL "simple"-style), for real models.

48 prompts we wrote ourselves (``madopd/realworld/data/real_calls.jsonl``; 8 functions x 6 argument
sets): a system message with one function's JSON spec and one example call of it (another
training row's values: a 135M model does not follow a format from a description alone), a
user request, and the reference call ``name(arg=value, ...)``. The first 4 argument sets of every function train, the last 2 are
held out (16 eval states, every function seen in training with other values).

``verify`` parses the first ``name(...)`` call in the reply with Python's ``ast`` (nothing is
executed) and scores 1.0 when the function name and every keyword argument's literal value
equal the reference (numbers compare by value: 20 == 20.0), else 0.0. Model output never
raises here.
"""

from __future__ import annotations

import ast
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from madopd.tasks.jsonl import read_jsonl_rows
from madopd.types import State

DATA = Path(__file__).resolve().parent / "data" / "real_calls.jsonl"
SYSTEM = ("You can call this function:\n{spec}\n"
          "Answer the user with the call only, written as {name}(arg=value, ...) with every "
          "argument named, strings in double quotes. Example of the format: {example}")
_CALL = re.compile(r"[A-Za-z_][A-Za-z0-9_.]*\s*\(")


def parse_call(text: str) -> tuple[str, dict[str, Any]] | None:
    """The first parseable ``name(k=v, ...)`` in ``text`` -> (name, literal kwargs), else None."""
    for m in _CALL.finditer(text or ""):
        start, depth = m.end() - 1, 0
        for j in range(start, min(len(text), start + 2000)):
            depth += {"(": 1, ")": -1}.get(text[j], 0)
            if depth == 0:
                try:
                    node = ast.parse(text[m.start():j + 1].strip(), mode="eval").body
                    if not isinstance(node, ast.Call) or node.args:
                        break
                    kwargs = {kw.arg: ast.literal_eval(kw.value) for kw in node.keywords}
                    return ast.unparse(node.func), kwargs
                except (SyntaxError, ValueError, TypeError, RecursionError, MemoryError):
                    break
    return None


@dataclass
class RealCallsTask:
    """The real world's task (``kind = "tool_use"``: the debate uses the tool_use templates)."""

    path: str | Path = DATA
    n_train_per_family: int = 4
    name: str = "real-calls"
    kind: str = "tool_use"
    rows: list[dict] = field(default_factory=list, repr=False)

    def __post_init__(self):
        self.rows = [r for _, r in read_jsonl_rows(self.path)]

    def example_for(self, row: dict) -> str:
        """Another training row's call of the same function (a format example, other values)."""
        same = [r for r in self.rows if r["family"] == row["family"]][: self.n_train_per_family]
        other = [r for r in same if r["id"] != row["id"]]
        return other[0]["call"] if other else ""

    def make_state(self, row: dict) -> State:
        fn = row["function"]
        system = SYSTEM.format(spec=json.dumps(fn), name=fn["name"], example=self.example_for(row))
        return State(id=row["id"], messages=[{"role": "system", "content": system},
                                             {"role": "user", "content": row["question"]}],
                     reference=row["call"], family=row["family"])

    def _split(self, train: bool) -> list[State]:
        out, seen = [], {}
        for r in self.rows:
            i = seen[r["family"]] = seen.get(r["family"], 0) + 1
            if (i <= self.n_train_per_family) == train:
                out.append(self.make_state(r))
        return out

    def train_states(self) -> list[State]:
        return self._split(True)

    def eval_states(self) -> list[State]:
        return self._split(False)

    def verify(self, state: State, response: str) -> float:
        got, ref = parse_call(response), parse_call(state.reference or "")
        if got is None or ref is None:
            return 0.0
        return float(got == ref)
