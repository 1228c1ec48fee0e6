"""JSONL task loaders: ToolACE-style multi-turn tool use and code prompts.

Every row is validated line by line before anything else happens, so a malformed row raises
``DataError(path=, line=, field=)`` (1-based line numbers) instead of a stack trace deep in a
library, and an empty file is a clear error.

Tool-use rows::

    {"id": "...", "system": "...?", "conversations": [{"from": "user", "value": "..."}, ...]}

(``messages`` with ``role``/``content`` works too; roles human/gpt/function/observation are
mapped to user/assistant/tool.) Each row becomes an ``Episode``: the opening chat is every
message before the first assistant turn, the reference actions are the assistant turns, and
the messages recorded after each action (tool results, follow-up user turns) are kept in
``episode.meta["recorded"]`` for the ``ReplayEnvironment``.

A replay environment CANNOT react to different actions: whatever the student does, it returns
the recorded observations of the reference action. It is exact for teacher-forced OPAD (the
actions are the references) and only an approximation in full mode, where every action that
differs from the reference is counted as ``replay_mismatch`` (``count/replay_mismatch`` in
step metrics). Use a real simulator (an ``Environment``) for faithful full-mode OPAD.

Code rows: ``{"id": ..., "prompt": "...", "tests"?: str | [str], "entry_point"?: str}``, loaded
through ``datasets.load_dataset("json", ...)`` after validation.
"""

from __future__ import annotations

import random
import re
from pathlib import Path
from typing import Any

from madopd import safe_io
from madopd.errors import DataError
from madopd.tasks.base import Episode
from madopd.tasks.simple import SimpleEpisodicTask, actions_in, normalize_text
from madopd.types import Chat, Message, State

ROLE_ALIASES = {
    "system": "system", "user": "user", "human": "user",
    "assistant": "assistant", "gpt": "assistant", "model": "assistant",
    "tool": "tool", "function": "tool", "observation": "tool", "ipython": "tool",
}


def read_jsonl_rows(path: str | Path, *, allow_empty: bool = False,
                    missing: str = "file does not exist") -> list[tuple[int, dict[str, Any]]]:
    """(line number, row) for every non-blank line; DataError on bad JSON or a non-object.

    Read through the bounded readers (``madopd.safe_io``): each line (decompressed, for a
    ``.gz``) at most ``MAX_LINE_BYTES``, the file at most ``MAX_TOTAL_BYTES``, each row at
    most ``MAX_JSON_DEPTH`` deep with no duplicate keys. Bytes that are not UTF-8 and a
    ``.gz`` that is not gzip name the file (and line). An empty file is a DataError unless
    ``allow_empty`` (callers with their own wording for "no rows" check the list themselves).
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(missing, path=str(path))
    rows = []
    for line_no, raw in safe_io.jsonl_lines(path):
        if not raw.strip():
            continue
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise DataError(f"not valid UTF-8 (byte {exc.start} of the line: "
                            f"{raw[exc.start:exc.start + 1]!r}); save the file as UTF-8",
                            path=str(path), line=line_no) from None
        row = safe_io.loads_json(raw, str(path), line=line_no)
        if not isinstance(row, dict):
            raise DataError(f"expected a JSON object, got {type(row).__name__}", path=str(path),
                            line=line_no)
        rows.append((line_no, row))
    if not rows and not allow_empty:
        raise DataError("the dataset is empty (no JSON rows)", path=str(path))
    return rows


def _row_id(row: dict, path: str, line: int) -> str:
    if "id" not in row:
        return f"{Path(path).stem}-{line}"
    if not isinstance(row["id"], (str, int)) or isinstance(row["id"], bool):
        raise DataError("id must be a string or an integer", path=path, line=line, field="id")
    return str(row["id"])


# ---------------------------------------------------------------------------- tool-use episodes

def _parse_turns(row: dict, path: str, line: int) -> list[Message]:
    if "conversations" not in row and "messages" not in row:
        raise DataError("missing: expected 'conversations' (or 'messages'), a list of turns",
                        path=path, line=line, field="conversations")
    key = "conversations" if "conversations" in row else "messages"
    turns = row.get(key)
    if not isinstance(turns, list) or not turns:
        raise DataError("expected a non-empty list of turns", path=path, line=line, field=key)
    out = []
    for i, turn in enumerate(turns):
        where = f"{key}[{i}]"
        if not isinstance(turn, dict):
            raise DataError("expected an object with a role and a content", path=path, line=line,
                            field=where)
        role_key = "from" if "from" in turn else "role"
        text_key = "value" if "value" in turn else "content"
        role = turn.get(role_key)
        if not isinstance(role, str) or role.lower() not in ROLE_ALIASES:
            raise DataError(f"unknown role {role!r}; expected one of {sorted(ROLE_ALIASES)}",
                            path=path, line=line, field=f"{where}.{role_key}")
        text = turn.get(text_key)
        if not isinstance(text, str):
            raise DataError("expected a string", path=path, line=line, field=f"{where}.{text_key}")
        out.append({"role": ROLE_ALIASES[role.lower()], "content": text})
    return out


def episode_from_row(row: dict, path: str = "<row>", line: int = 1) -> Episode:
    """One ToolACE-style row -> Episode (opening chat, reference actions, recorded observations)."""
    ep_id = _row_id(row, path, line)
    system = row.get("system")
    if system is not None and not isinstance(system, str):
        raise DataError("expected a string", path=path, line=line, field="system")
    turns = _parse_turns(row, path, line)
    first = next((i for i, t in enumerate(turns) if t["role"] == "assistant"), None)
    if first is None:
        raise DataError("the conversation has no assistant turn (nothing to learn)", path=path,
                        line=line, field="conversations")
    opening: Chat = ([{"role": "system", "content": system}] if system else []) + turns[:first]
    if not any(m["role"] == "user" for m in opening):
        raise DataError("no user turn before the first assistant turn", path=path, line=line,
                        field="conversations")
    actions, recorded = [], []
    for t in turns[first:]:
        if t["role"] == "assistant":
            actions.append(t["content"])
            recorded.append([])
        elif t["role"] == "system":
            raise DataError("a system turn after the conversation started", path=path, line=line,
                            field="conversations")
        else:
            recorded[-1].append(dict(t))
    return Episode(id=ep_id, messages=opening, reference_actions=actions,
                   family=row.get("family") if isinstance(row.get("family"), str) else None,
                   meta={"recorded": recorded, "source": f"{path}:{line}"})


def load_tool_episodes(path: str | Path) -> list[Episode]:
    """Validate and load every row of a tool-use JSONL file (DataError names file/line/field)."""
    episodes = [episode_from_row(row, str(path), line) for line, row in read_jsonl_rows(path)]
    seen: dict[str, int] = {}
    for ep in episodes:
        if ep.id in seen:
            raise DataError(f"duplicate id {ep.id!r}", path=str(path), line=seen[ep.id], field="id")
        seen[ep.id] = 1
    return episodes


class ReplayEnvironment:
    """Replays an episode's recorded observations (teacher-forced OPAD; see the module notes).

    ``counters["replay_mismatch"]`` counts actions that differ from the reference (the replay
    answered them anyway); ``counters["replay_overrun"]`` counts actions past the recording.
    """

    def __init__(self):
        self.counters = {"replay_mismatch": 0, "replay_overrun": 0}

    def step_messages(self, episode: Episode, history: Chat, action: str) -> tuple[list[Message], bool]:
        refs = episode.reference_actions or []
        recorded = episode.meta.get("recorded") or [[] for _ in refs]
        m = len(actions_in(history, episode))
        if m >= len(refs):
            self.counters["replay_overrun"] += 1
            return [], True
        if normalize_text(action) != normalize_text(refs[m]):
            self.counters["replay_mismatch"] += 1
        return [dict(x) for x in recorded[m]], m == len(refs) - 1

    def step(self, episode: Episode, history: Chat, action: str) -> tuple[str | None, bool]:
        msgs, done = self.step_messages(episode, history, action)
        tool = [m["content"] for m in msgs if m["role"] == "tool"]
        return ("\n".join(tool) if tool else None), done


def split_items(items: list, eval_fraction: float, seed: int) -> tuple[list, list]:
    """Deterministic shuffled split; at least one training item."""
    order = list(range(len(items)))
    random.Random(seed).shuffle(order)
    n_eval = int(round(len(items) * eval_fraction))
    n_eval = min(n_eval, len(items) - 1)
    ev = sorted(order[:n_eval])
    tr = sorted(order[n_eval:])
    return [items[i] for i in tr], [items[i] for i in ev]


class ToolJsonlTask(SimpleEpisodicTask):
    """A multi-turn tool-use task from ToolACE-style JSONL (replayed observations).

    ``eval_path`` gives held-out episodes; otherwise ``eval_fraction`` of the rows are held out
    (seeded). Actions are compared by whitespace-normalised exact match.
    """

    def __init__(self, path: str | Path, eval_path: str | Path | None = None, *,
                 eval_fraction: float = 0.1, seed: int = 0, name: str | None = None):
        episodes = load_tool_episodes(path)
        if eval_path is not None:
            train, ev = episodes, load_tool_episodes(eval_path)
        else:
            train, ev = split_items(episodes, eval_fraction, seed)
        super().__init__(train, ev, environment=ReplayEnvironment(),
                         name=name or f"jsonl-tools:{Path(path).name}", kind="agentic")


# ---------------------------------------------------------------------------- code prompts

def _validate_code_row(row: dict, path: str, line: int) -> None:
    _row_id(row, path, line)
    if not isinstance(row.get("prompt"), str) or not row["prompt"].strip():
        raise DataError("expected a non-empty string", path=path, line=line, field="prompt")
    tests = row.get("tests")
    if tests is not None and not (isinstance(tests, str) or (
            isinstance(tests, list) and all(isinstance(t, str) for t in tests))):
        raise DataError("expected a string or a list of strings", path=path, line=line, field="tests")
    ep = row.get("entry_point")
    if ep is not None and not (isinstance(ep, str) and ep.isidentifier()):
        raise DataError("expected a Python identifier", path=path, line=line, field="entry_point")


def load_code_prompts(path: str | Path) -> list[State]:
    """Validate each row, then load through ``datasets`` -> one State per prompt."""
    path = str(path)
    rows = read_jsonl_rows(path)
    ids = set()
    for line, row in rows:
        _validate_code_row(row, path, line)
        rid = _row_id(row, path, line)
        if rid in ids:
            raise DataError(f"duplicate id {rid!r}", path=path, line=line, field="id")
        ids.add(rid)
    import datasets

    # The rows are already known to be well formed; datasets gives columnar storage + caching.
    # Ids are re-derived from our own parse so that rows without "id" get their line number.
    ds = datasets.load_dataset("json", data_files=path, split="train")
    if len(ds) != len(rows):
        raise DataError(f"datasets read {len(ds)} rows but the file has {len(rows)}", path=path)
    states = []
    for (line, row), rec in zip(rows, ds):
        tests = rec.get("tests")
        states.append(State(
            id=_row_id(row, path, line), messages=[{"role": "user", "content": rec["prompt"]}],
            family=rec.get("family") if isinstance(rec.get("family"), str) else None,
            meta={"tests": [tests] if isinstance(tests, str) else list(tests or []),
                  "entry_point": rec.get("entry_point"), "source": f"{path}:{line}"}))
    return states


_FENCE = re.compile(r"```(?:python|py)?[ \t]*\n(.*?)```", re.DOTALL)


def extract_code(response: str) -> str:
    """The last fenced code block of a response, or the whole response when there is none."""
    blocks = _FENCE.findall(response or "")
    return blocks[-1] if blocks else (response or "")


class CodeJsonlTask:
    """Code prompts from JSONL; ``verify`` runs the response with the row's tests in the sandbox.

    A response passes (1.0) when the row's tests (+ ``check(entry_point)`` if they define
    check) run to the end in ``madopd.sandbox.verify``'s harness against the response's code
    (loaded in a separate worker; exiting early or forging ``__eq__`` fails). Rows without tests score 0 and are counted in
    ``counters["no_tests"]``.
    """

    name: str
    kind = "code"

    def __init__(self, path: str | Path, eval_path: str | Path | None = None, *,
                 eval_fraction: float = 0.1, seed: int = 0, name: str | None = None,
                 limits: Any = None):
        states = load_code_prompts(path)
        if eval_path is not None:
            self._train, self._eval = states, load_code_prompts(eval_path)
        else:
            self._train, self._eval = split_items(states, eval_fraction, seed)
        self.name = name or f"jsonl-code:{Path(path).name}"
        self.limits = limits
        self.counters = {"no_tests": 0, "sandbox_errors": 0}

    def train_states(self) -> list[State]:
        return list(self._train)

    def eval_states(self) -> list[State]:
        return list(self._eval)

    def program(self, state: State, response: str):
        """The verifier case (``madopd.sandbox.verify.TestCase``): the response's code is the
        candidate, the row's tests run in the harness (``check(entry_point)`` when they define
        ``check``); None when the row has no tests."""
        from madopd.sandbox.verify import TestCase

        tests = state.meta.get("tests") or []
        if not tests:
            return None
        return TestCase(candidate=extract_code(response) + "\n", tests="\n\n".join(tests) + "\n",
                        entry_point=state.meta.get("entry_point") or None)

    def verify(self, state: State, response: str) -> float:
        case = self.program(state, response)
        if case is None:
            self.counters["no_tests"] += 1
            return 0.0
        try:
            from madopd.sandbox.verify import verify_cases

            kw = {"limits": self.limits} if self.limits is not None else {}
            verdict = verify_cases([case], workers=1, **kw)[0]
        except Exception:  # must never raise on model output; counted
            self.counters["sandbox_errors"] += 1
            return 0.0
        if verdict.status == "error":
            self.counters["sandbox_errors"] += 1
        return 1.0 if verdict.passed else 0.0
