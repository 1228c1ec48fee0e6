"""Train one toy-zoo member from scratch (teacher or Base student): data, loop, save.

Plain next-token cross-entropy on the completion tokens only (prompt tokens are masked), right
padding (a causal model never attends to later padding, so no attention mask is needed), AdamW
with a short warm-up and a cosine decay to 10 %. Deterministic given the settings' seed.
"""

from __future__ import annotations

import json
import math
import random
import time
from pathlib import Path

import torch

from madopd.models._common import render_prompt_ids
from madopd.models.tiny import DEFAULT_MERGED, TinySpec, build_tiny_model, count_parameters
from madopd.toyworld.toy_common import MERGED_TOKENS, TeacherSkill
from madopd.toyworld.zoo_data import (
    Example,
    make_debate,
    noisy_tool_states,
    student_examples,
    teacher_examples,
)
from madopd.types import State


def merged_tokens() -> tuple[str, ...]:
    return tuple(dict.fromkeys(DEFAULT_MERGED + MERGED_TOKENS))


def _tasks(settings: dict):
    from madopd.toyworld.toy_code import ToyCodeTask
    from madopd.toyworld.toy_tools import ToyToolsTask

    # n_eval=1: the held-out side is fixed by toy_common.is_held_out whatever n_eval is, so
    # asking for one held-out episode costs nothing and changes no training episode
    tools = ToyToolsTask(n_train=settings["tool_episodes"], n_eval=1, seed=0)
    if settings.get("code_world") == "multi":  # a random correct form per answer, evenly
        from madopd.toyworld.toy_code_multi import ToyCodeMultiTask

        return tools, ToyCodeMultiTask(form_seed=settings["seed"] + 7919 * settings.get("index", 9))
    return tools, ToyCodeTask()


def code_only(settings: dict) -> bool:
    """Multi-mode members learn only the code task (the world has no multi-form tools task)."""
    return settings.get("code_world") == "multi"


def training_states(settings: dict, rng: random.Random) -> tuple[dict[str, list[State]], tuple]:
    """Every state one member's training examples are built from, per task, and the tasks.

    Teachers: sloppy-policy tool states (``noisy_tool_states``) + the gold path of every training
    episode, and every training code spec. Base student: the training episodes and code specs.
    All of them come from the tasks' training sides (tests/toyworld/test_zoo.py checks it).
    """
    tools, code = _tasks(settings)
    if code_only(settings):
        return {"toy-tools": [], "toy-code": code.train_states()}, (tools, code)
    if settings["role"] == "student":
        return {"toy-tools": tools.train_states(), "toy-code": code.train_states()}, (tools, code)
    states = noisy_tool_states(tools, settings["noisy_episodes"], rng) + tools.train_states()
    return {"toy-tools": states, "toy-code": code.train_states()}, (tools, code)


def build_examples(settings: dict, rng: random.Random) -> tuple[list[Example], list[Example]]:
    """(tool examples, code examples) for one member."""
    states, (tools, code) = training_states(settings, rng)
    if settings["role"] == "student":
        tool_ex = student_examples(tools, states["toy-tools"], settings["skill"], rng, tools=tools)
        code_ex = []
        for _ in range(8):  # several draws of the random operation per code prompt
            code_ex += student_examples(code, states["toy-code"], settings["skill"], rng)
        return tool_ex, code_ex
    skills = [TeacherSkill(**{**s, "known": {k: tuple(v) for k, v in s["known"].items()},
                              "confident_wrong": tuple(s["confident_wrong"]),
                              "stubborn": tuple(s["stubborn"])}) for s in settings["skills"]]
    k = settings["index"]
    rounds = settings.get("debate_rounds", 2)
    debate = make_debate([s.name for s in skills], rounds)
    tool_ex = [e for st in states["toy-tools"]
               for e in teacher_examples(skills, k, tools, st, rng, debate, rounds)]
    code_ex = []
    for _ in range(6):  # fresh random peers each pass: copying must be learned, not memorised
        code_ex += [e for st in states["toy-code"]
                    for e in teacher_examples(skills, k, code, st, rng, debate, rounds)]
    return tool_ex, code_ex


def _render(chat) -> str:
    # the tiny chat template, inlined: ~100x faster than jinja; checked against it in tokenize()
    return "".join(f"<|{m['role']}|>{m['content']}<|end|>" for m in chat) + "<|assistant|>"


def tokenize(tok, examples: list[Example], check: int = 64) -> list[tuple[list[int], int]]:
    """(prompt ids + completion ids + EOS, prompt length) per example, as the backends render it.

    The first ``check`` prompts are also rendered through the real chat template path
    (``render_prompt_ids``, what HFTeacher/HFStudent use); any difference is an error.
    """
    if not examples:  # a code-only member has no tool examples
        return []
    prompts = tok([_render(ex.chat) for ex in examples], add_special_tokens=False)["input_ids"]
    targets = tok([ex.target for ex in examples], add_special_tokens=False)["input_ids"]
    for ex, p in zip(examples[:check], prompts[:check]):
        if render_prompt_ids(tok, ex.chat) != p:
            raise RuntimeError(f"zoo: inlined chat rendering differs from the chat template for {ex.chat!r}")
    return [(p + c + [tok.eos_token_id], len(p)) for p, c in zip(prompts, targets)]


def _batch(seqs: list[tuple[list[int], int]], pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    L = max(len(s) for s, _ in seqs)
    ids = torch.full((len(seqs), L), pad, dtype=torch.long)  # [B, L]
    labels = torch.full((len(seqs), L), -100, dtype=torch.long)  # [B, L]
    for b, (s, n_prompt) in enumerate(seqs):
        ids[b, :len(s)] = torch.tensor(s)
        labels[b, n_prompt:len(s)] = torch.tensor(s[n_prompt:])
    return ids, labels


def train_member(settings: dict, out_dir: Path, *, ticker=None, progress: bool = False) -> dict:
    """Train one member (next-token loss on its chats) and save it to ``out_dir``.

    Progress: ``ticker`` (``madopd.toyworld.progress.Ticker``) counts the steps for the caller's
    bar; without one, ``progress=True`` draws a bar of its own (tqdm.auto, stderr).
    """
    t0, c0 = time.perf_counter(), time.process_time()
    seed = settings["seed"] + 1000 * settings.get("index", 9)
    rng = random.Random(seed)
    spec = TinySpec(hidden_size=settings["hidden"], num_layers=settings["layers"],
                    intermediate_size=settings["intermediate"], merged_tokens=merged_tokens(),
                    seed=seed)
    model, tok = build_tiny_model(out_dir, spec)
    tool_ex, code_ex = build_examples(settings, rng)
    tool_seqs, code_seqs = tokenize(tok, tool_ex), tokenize(tok, code_ex)
    t_data = time.perf_counter() - t0

    steps, bs = settings["steps"], settings["batch_size"]
    by_len = sorted(tool_seqs, key=lambda x: len(x[0]))
    n_buckets = max(1, min(8, len(by_len) // (4 * bs)))
    buckets = [by_len[i * len(by_len) // n_buckets:(i + 1) * len(by_len) // n_buckets]
               for i in range(n_buckets)]
    n_code = bs // 3 if tool_seqs else bs  # a third of every batch is code: both tasks train every step
    opt = torch.optim.AdamW(model.parameters(), lr=settings["lr"], weight_decay=0.01,
                            betas=(0.9, 0.98))
    warm = max(1, steps // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / warm) * (
        0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, s / steps)))))
    torch.manual_seed(seed)
    model.train()
    bar = None
    if progress and ticker is None:
        from tqdm.auto import tqdm

        bar = tqdm(total=steps, desc=f"zoo {settings.get('name', 'student')}", mininterval=2)
    losses = []
    for _ in range(steps):
        # two micro-batches (tools, code), each padded to its own longest sequence; the tool
        # part comes from one length bucket, which keeps padding (wasted compute) small
        parts = []
        if tool_seqs:  # (draw order as before: cached members stay reproducible)
            bucket = rng.choice(buckets)
            parts.append([rng.choice(bucket) for _ in range(bs - n_code)])
        parts.append([rng.choice(code_seqs) for _ in range(n_code)])
        opt.zero_grad(set_to_none=True)
        loss = 0.0
        for seqs in parts:
            ids, labels = _batch(seqs, tok.pad_token_id)
            part = model(input_ids=ids, labels=labels).loss * (len(seqs) / bs)
            part.backward()
            loss += float(part.detach())
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        losses.append(loss)
        if ticker is not None:
            ticker.update(1)
        if bar is not None:
            bar.update(1)
            if len(losses) % 25 == 0:
                bar.set_postfix(loss=f"{sum(losses[-25:]) / 25:.3f}")
    if bar is not None:
        bar.close()
    model.save_pretrained(out_dir)
    info = {"settings": settings, "params": count_parameters(model), "examples": len(tool_seqs) + len(code_seqs),
            "data_seconds": round(t_data, 1), "seconds": round(time.perf_counter() - t0, 1),
            "cpu_seconds": round(time.process_time() - c0, 1),
            "final_loss": sum(losses[-20:]) / max(1, len(losses[-20:])),
            "loss_curve": [round(sum(losses[i:i + 25]) / len(losses[i:i + 25]), 4)
                           for i in range(0, len(losses), 25)]}
    (out_dir / "member.json").write_text(json.dumps(info, indent=1))
    return info
