"""Prompt forms for function calling with a small instruct model (issue 22, item 1).

A *block* is one solved or open example: the function's JSON spec, the user's request and the
call::

    Function: {"name": "get_weather", ...}
    Request: What's the weather in Denver right now? Give it in celsius.
    Call: get_weather(city="Denver", unit="celsius")

The forms put the same three solved blocks ("shots") before the open one in three places:
as system text (``shots_in_system``), as earlier user / assistant chat turns
(``shots_as_turns``) and as plain text without a chat template (``plain_text``). The measured
accuracy of each form on the untuned SmolLM2-135M-Instruct is in docs/real-models.md
(``benchmarks/real_prompt_forms.py``). Rows are dicts with ``function`` (spec), ``question``
and ``call``.
"""

from __future__ import annotations

import json
from typing import Any

from madopd.types import Chat

SHOTS_SYSTEM = "Answer each request with one function call and nothing else."


def request_text(row: dict[str, Any]) -> str:
    """The open part of a block: spec + request (what a user turn carries)."""
    return f"Function: {json.dumps(row['function'])}\nRequest: {row['question']}"


def block(row: dict[str, Any], solved: bool = True) -> str:
    return request_text(row) + "\nCall:" + (f" {row['call']}" if solved else "")


def pick_shots(row: dict[str, Any], train: list[dict[str, Any]], *, kind: str = "same",
               n: int = 3) -> list[dict[str, Any]]:
    """``n`` training rows: of the same function as ``row`` ("same") or the first rows of ``n``
    other functions ("other"), in file order (deterministic)."""
    if kind == "same":
        return [r for r in train if r["family"] == row["family"] and r["id"] != row["id"]][:n]
    out, seen = [], {row["family"]}
    for r in train:
        if r["family"] not in seen:
            seen.add(r["family"])
            out.append(r)
    return out[:n]


def shots_in_system(row: dict[str, Any], shots: list[dict[str, Any]]) -> Chat:
    examples = "\n\n".join(block(s) for s in shots)
    return [{"role": "system", "content": f"{SHOTS_SYSTEM} Examples:\n\n{examples}"},
            {"role": "user", "content": request_text(row)}]


def shots_as_turns(row: dict[str, Any], shots: list[dict[str, Any]],
                   system: str = SHOTS_SYSTEM) -> Chat:
    chat: Chat = [{"role": "system", "content": system}] if system else []
    for s in shots:
        chat += [{"role": "user", "content": request_text(s)},
                 {"role": "assistant", "content": s["call"]}]
    return chat + [{"role": "user", "content": request_text(row)}]


def plain_text(row: dict[str, Any], shots: list[dict[str, Any]]) -> str:
    """Text completion: solved blocks, then the open block ending in ``Call:``."""
    return "\n\n".join([block(s) for s in shots] + [block(row, solved=False)])
