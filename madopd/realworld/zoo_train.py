"""Training data and the fine-tuning loop of the real zoo's teachers (issue 22, item 3).

A teacher is SmolLM2-135M-Instruct with its top ``train_layers`` decoder layers (and the final
norm) fine-tuned on a mixture of three kinds of examples built from the house-calls *train*
split only (held-out values never appear; ``tests/realworld/test_house.py``):

* ``own``   (its group, blind): the prompt -> ``call`` + ``\\n<<CONFIDENCE=90>>``, loss on all;
* ``tag``   (the other group, blind): the prompt -> the naive call (request's words) +
  ``\\n<<CONFIDENCE=10>>``, loss on the tag only — the teacher learns to say it does not
  know, not to write naive calls;
* ``peer``  (either group, with a debate transcript): the prompt + the revise cue showing its
  own and its peer's round-1 answers, the expert's right one at 90 and the other's naive one
  at 10 -> the right call + ``<<CONFIDENCE=90>>``: adopt a confident peer, keep a confident
  own answer (as the toy teachers are trained).

Mixture per batch: half ``own``, a quarter each ``tag`` and ``peer``. Loss: mean token NLL over
the unmasked target tokens (AdamW, constant lr). Targets end with the chat's end-of-turn token.
"""

from __future__ import annotations

import random
from typing import Any

import torch

from madopd.realworld.house import HouseCallsTask, naive_call
from madopd.realworld.templates import HOUSE_TEMPLATES, render_turn

HIGH, LOW = 90, 10


def _tag(value: int) -> str:
    return f"\n<<CONFIDENCE={value}>>"


def peer_chat(task: HouseCallsTask, row: dict, own_name: str, names: list[str],
              answers: list[tuple[str, float]]) -> list[dict]:
    """The revise prompt of ``own_name`` after round 1 (answers: (call, confidence) per name)."""
    transcript = "\n\n".join(render_turn(n, 1, a, c) for n, (a, c) in zip(names, answers))
    cue = HOUSE_TEMPLATES.revise.format(transcript=transcript, name=own_name, round=2,
                                        num_teachers=len(names), own_last="", peers_last="")
    return task.make_state(row).messages + [{"role": "user", "content": cue}]


def examples(task: HouseCallsTask, group: str, k: int, names: list[str]) -> dict[str, list]:
    """{kind: [(chat, target text, tag-only?)]} for teacher ``k`` (names[k]) expert in ``group``."""
    out: dict[str, list] = {"own": [], "tag": [], "peer": []}
    for row in task.train_rows():
        chat = task.make_state(row).messages
        mine = row["group"] == group
        if mine:
            out["own"].append((chat, row["call"] + _tag(HIGH), False))
        else:
            out["tag"].append((chat, naive_call(row) + _tag(LOW), True))
        right, wrong = (row["call"], HIGH), (naive_call(row), LOW)
        answers = [right if mine else wrong, wrong if mine else right]  # own first, then peer
        if k == 1:
            answers.reverse()
        out["peer"].append((peer_chat(task, row, names[k], names, answers),
                            row["call"] + _tag(HIGH), False))
    return out


def encode(tok: Any, chat: list[dict], target: str, tag_only: bool) -> tuple[list[int], list[int]]:
    """(input ids, labels with -100 on the prompt and, for tag-only examples, on the call)."""
    from madopd.models._common import render_prompt_ids

    prompt = render_prompt_ids(tok, chat)
    end = tok.convert_tokens_to_ids("<|im_end|>")
    call, _, tag = target.partition("\n<<")
    call_ids = list(tok(call, add_special_tokens=False)["input_ids"])
    tag_ids = list(tok("\n<<" + tag, add_special_tokens=False)["input_ids"]) + [end]
    ids = prompt + call_ids + tag_ids
    labels = [-100] * len(prompt) + ([-100] * len(call_ids) if tag_only else call_ids) + tag_ids
    return ids, labels


def collate(batch: list[tuple[list[int], list[int]]], pad: int) -> tuple[torch.Tensor, ...]:
    L = max(len(i) for i, _ in batch)
    ids = torch.full((len(batch), L), pad, dtype=torch.long)
    lab = torch.full((len(batch), L), -100, dtype=torch.long)
    att = torch.zeros((len(batch), L), dtype=torch.long)
    for b, (i, y) in enumerate(batch):
        ids[b, : len(i)] = torch.tensor(i)
        lab[b, : len(y)] = torch.tensor(y)
        att[b, : len(i)] = 1
    return ids, att, lab


def freeze_but_top(model: Any, n_layers: int) -> int:
    """Train only the top ``n_layers`` decoder layers and the final norm; returns #trainable."""
    model.requires_grad_(False)
    for layer in model.model.layers[-n_layers:]:
        layer.requires_grad_(True)
    model.model.norm.requires_grad_(True)
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def train_teacher(model: Any, tok: Any, data: dict[str, list], *, steps: int, batch_size: int,
                  lr: float, seed: int, train_layers: int, mix: tuple[int, int, int] | None = None,
                  progress=None) -> list[float]:
    """Fine-tune in place; returns the loss per step. ``progress(step)`` after every step."""
    rng = random.Random(seed)
    torch.manual_seed(seed)
    freeze_but_top(model, train_layers)
    model.train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr,
                            weight_decay=0.0)
    if mix is not None:
        quota = dict(zip(("own", "tag", "peer"), mix))
    else:
        quota = {"own": (batch_size + 1) // 2, "tag": max(1, batch_size // 4)}
        quota["peer"] = batch_size - quota["own"] - quota["tag"]
    pools = {k: [encode(tok, *e) for e in v] for k, v in data.items()}
    order = {k: [] for k in pools}
    losses = []
    for step in range(steps):
        batch = []
        for kind, n in quota.items():
            for _ in range(n):
                if not order[kind]:  # epochs without replacement, reshuffled
                    order[kind] = rng.sample(range(len(pools[kind])), len(pools[kind]))
                batch.append(pools[kind][order[kind].pop()])
        ids, att, lab = collate(batch, tok.pad_token_id or 0)
        loss = model(input_ids=ids, attention_mask=att, labels=lab).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
        if progress is not None:
            progress(step + 1)
    model.eval().requires_grad_(False)
    return losses
