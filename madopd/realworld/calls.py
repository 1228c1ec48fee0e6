"""real-calls: single-turn function calling with real text (BFCL "simple"-style), for real models.

48 prompts we wrote ourselves (``madopd/realworld/data/real_calls.jsonl``; 8 functions x 6 argument
sets) and the reference call ``name(arg=value, ...)``. The first 4 argument sets of every
function train, the last 2 are held out (16 eval states, every function seen in training with
other values).

The prompt (``prompt="turns"``, the default) shows three solved calls of the same function
(other training rows) as earlier user / assistant chat turns, then the request
(``madopd.realworld.prompts.shots_as_turns``): the untuned SmolLM2-135M-Instruct gets 13/16
held-out items with it, and 0/16 with the earlier ``prompt="system"`` form (spec, instruction
and one example in a system message) — every form measured in docs/real-models.md.

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

from madopd.errors import ConfigError
from madopd.realworld.prompts import pick_shots, shots_as_turns
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
    prompt: str = "turns"  # "turns" (3 solved calls as chat turns) | "system" (the old form)
    rows: list[dict] = field(default_factory=list, repr=False)

    def __post_init__(self):
        if self.prompt not in ("turns", "system"):
            raise ConfigError(f"RealCallsTask.prompt: expected 'turns' or 'system', got {self.prompt!r}")
        self.rows = [r for _, r in read_jsonl_rows(self.path)]

    def example_for(self, row: dict) -> str:
        """Another training row's call of the same function (a format example, other values)."""
        same = [r for r in self.rows if r["family"] == row["family"]][: self.n_train_per_family]
        other = [r for r in same if r["id"] != row["id"]]
        return other[0]["call"] if other else ""

    def make_state(self, row: dict) -> State:
        if self.prompt == "turns":
            train = [r for r in self.rows if not self.is_held_out(r)]
            messages = shots_as_turns(row, pick_shots(row, train, kind="same", n=3))
        else:
            fn = row["function"]
            system = SYSTEM.format(spec=json.dumps(fn), name=fn["name"], example=self.example_for(row))
            messages = [{"role": "system", "content": system},
                        {"role": "user", "content": row["question"]}]
        return State(id=row["id"], messages=messages, reference=row["call"], family=row["family"])

    def is_held_out(self, row: dict) -> bool:
        """The split rule: a row after the first ``n_train_per_family`` rows of its function."""
        same = [r["id"] for r in self.rows if r["family"] == row["family"]]
        return same.index(row["id"]) >= self.n_train_per_family

    def _split(self, train: bool) -> list[State]:
        return [self.make_state(r) for r in self.rows if self.is_held_out(r) != train]

    def train_states(self) -> list[State]:
        return self._split(True)

    def eval_states(self) -> list[State]:
        return self._split(False)

    def verify(self, state: State, response: str) -> float:
        got, ref = parse_call(response), parse_call(state.reference or "")
        if got is None or ref is None:
            return 0.0
        return float(got == ref)
