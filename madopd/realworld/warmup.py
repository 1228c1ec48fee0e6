"""The student's format warm-up (issue 22, item 4): the call syntax only, part of Base.

The 16-layer shrunk student (``madopd.realworld.world.student_path``) writes no call at all
(0 % held-out, reference NLL ~9.7 nats/token), so on-policy distillation has nothing to grade:
every sampled token is prose. The warm-up is a short supervised fine-tune on the house-calls
*train* rows with the **naive** call as target (``madopd.realworld.house.naive_call``: the
function and argument names right, the value in the request's own words, e.g.
``set_timer(duration="45 minutes")``), followed by the chat's end-of-turn token. It teaches:

* the syntax ``name(arg=value)`` and to stop after it;
* which function and argument the request names (both are in the prompt's spec);

and it does NOT teach any house convention: every naive value differs from the house value
(``tests/realworld/test_warmup.py`` checks it row by row), so the warmed student scores ~0 on
the held-out items, and every trained row (OPD-A, OPD-B, MT-OPD, MAD-OPD) has to learn the
conventions from its teachers. Every row, Base included, starts from the same warmed weights.

Cached like the real zoo: ``$MADOPD_MODELS_DIR/<student>-warmup-<key>/`` with ``key`` = hash of
``WarmupSpec``, the kept layers and ``WARMUP_FORMAT``; ``SHA256SUMS`` over every file; a
folder that fails the check is named, deleted and rebuilt; a build writes into
``.partial-<pid>`` and is renamed into place when complete.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from madopd.errors import ConfigError

WARMUP_FORMAT = 1
TARGETS = ("naive", "naive+tag")


@dataclass(frozen=True)
class WarmupSpec:
    """Everything that shapes the warmed student (its hash is the cache key). ``steps=0``: no
    warm-up (the shrunk student as it is)."""

    steps: int = 24
    batch_size: int = 8
    lr: float = 1e-4
    seed: int = 0
    # "naive": the call with the request's own values, then end of turn; "naive+tag": the same
    # call then ``\n<<CONFIDENCE=10>>`` (the answer the zoo teachers give outside their group,
    # so the student's answer has the teachers' shape and OPD does not grade an end-of-turn
    # the teachers never write)
    target: str = "naive"

    def __post_init__(self):
        if self.target not in TARGETS:
            raise ConfigError(f"WarmupSpec.target: expected one of {TARGETS}, got {self.target!r}")
        if self.steps < 0 or self.batch_size < 1 or not self.lr > 0:
            raise ConfigError(f"WarmupSpec: steps >= 0, batch_size >= 1, lr > 0 expected, got "
                              f"{self.steps}, {self.batch_size}, {self.lr}")

    def key(self, keep: tuple[int, ...]) -> str:
        blob = json.dumps({"format": WARMUP_FORMAT, "keep": list(keep), **asdict(self)},
                          sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:12]


def warmup_examples(task: Any, target: str = "naive") -> list[tuple[list[dict], str]]:
    """(chat, target text) for every train row of the house-calls ``task`` (no held-out row):
    the naive call, with ``target="naive+tag"`` followed by ``\n<<CONFIDENCE=10>>``."""
    from madopd.realworld.house import naive_call

    tail = "\n<<CONFIDENCE=10>>" if target == "naive+tag" else ""
    return [(task.make_state(r).messages, naive_call(r) + tail) for r in task.train_rows()]


def _encode(tok: Any, chat: list[dict], call: str) -> tuple[list[int], list[int]]:
    from madopd.models._common import render_prompt_ids

    prompt = render_prompt_ids(tok, chat)
    target = list(tok(call, add_special_tokens=False)["input_ids"]) + [tok.eos_token_id]
    return prompt + target, [-100] * len(prompt) + target


def warm_up(model: Any, tok: Any, data: list[tuple[list[dict], str]], spec: WarmupSpec,
            progress=None) -> list[float]:
    """Fine-tune every parameter in place on ``data`` (epochs without replacement, AdamW,
    constant lr; loss: mean NLL of the call and end-of-turn tokens); returns the loss per step."""
    from madopd.realworld.zoo_train import collate

    rng = random.Random(spec.seed)
    torch.manual_seed(spec.seed)
    pool = [_encode(tok, c, t) for c, t in data]
    model.train().requires_grad_(True)
    opt = torch.optim.AdamW(model.parameters(), lr=spec.lr, weight_decay=0.0)
    order: list[int] = []
    losses = []
    for step in range(spec.steps):
        batch = []
        for _ in range(spec.batch_size):
            if not order:
                order = rng.sample(range(len(pool)), len(pool))
            batch.append(pool[order.pop()])
        ids, att, lab = collate(batch, tok.pad_token_id or 0)
        loss = model(input_ids=ids, attention_mask=att, labels=lab).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(round(float(loss.detach()), 4))
        if progress is not None:
            progress(step + 1)
    model.eval().requires_grad_(False)
    return losses


def warmup_dir(spec: WarmupSpec, student: Path, keep: tuple[int, ...]) -> Path:
    return student.parent / f"{student.name}-warmup-{spec.key(keep)}"


def warmed_student(spec: WarmupSpec, student: Path, keep: tuple[int, ...], task: Any, *,
                   log=print) -> tuple[Path, dict[str, Any]]:
    """The warmed student's folder (built when missing or corrupted) and its ``warmup.json``
    (spec, losses, train seconds, ``rebuilt``: why an existing folder was rebuilt, or None)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from madopd.integrity import write_checksums
    from madopd.realworld.zoo import verify_member

    if spec.steps == 0:
        return student, {"spec": asdict(spec), "steps": 0, "rebuilt": None}
    out = warmup_dir(spec, student, keep)
    rebuilt = None
    if out.exists():
        problem = verify_member(out)
        if problem is None:
            return out, dict(json.loads((out / "warmup.json").read_text()), rebuilt=None,
                             cached=True)
        log(f"student warm-up: {out.name} is corrupted ({problem}); rebuilding it")
        rebuilt = problem
        shutil.rmtree(out)
    for stale in out.parent.glob(f"{out.name}.partial-*"):
        shutil.rmtree(stale, ignore_errors=True)
    t0, c0 = time.perf_counter(), time.process_time()
    tok = AutoTokenizer.from_pretrained(student)
    model = AutoModelForCausalLM.from_pretrained(student, dtype=torch.float32)
    data = warmup_examples(task, spec.target)
    log(f"student warm-up {out.name}: {spec.steps} steps of batch {spec.batch_size} on "
        f"{len(data)} naive calls (syntax only)")
    losses = warm_up(model, tok, data, spec)
    partial = out.parent / f"{out.name}.partial-{os.getpid()}"
    model.save_pretrained(partial)
    tok.save_pretrained(partial)
    info = {"spec": asdict(spec), "from": str(student), "examples": len(data),
            "teaches": "call syntax, function and argument names; values in the request's own "
                       "words (no house convention); shared by every row",
            "losses": losses, "train_seconds": round(time.perf_counter() - t0, 1),
            "train_cpu_seconds": round(time.process_time() - c0, 1),
            "threads": torch.get_num_threads()}
    (partial / "warmup.json").write_text(json.dumps(info, indent=1))
    write_checksums(partial)
    try:
        partial.rename(out)
    except OSError:  # another process finished the same warm-up first: use its intact copy
        shutil.rmtree(partial, ignore_errors=True)
        problem = verify_member(out)
        if problem is not None:
            raise
        log(f"student warm-up: {out.name} was built by another process meanwhile; using it")
    return out, dict(info, rebuilt=rebuilt, cached=False)
