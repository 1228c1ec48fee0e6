"""Held-out call accuracy of the untuned SmolLM2 per prompt form (issue 22, item 1; loaded CPU).

The 16 held-out real-calls items, greedy, the reply cut at its first newline, scored by
``RealCallsTask.verify``. Forms:

* ``chat_system_1shot``: the task's chat before issue 22 (system: spec + instruction + one
  example call; user: the request);
* ``chat_system_1shot+<preset>``: that chat + the debate preset's round-1 cue as a user turn
  (what a teacher saw in round 1 of the old real world);
* ``shots_in_system``: three solved examples (spec / request / call blocks) as system text;
* ``shots_as_turns``: the same three examples as earlier user / assistant chat turns;
* ``shots_plain``: the same blocks as plain text, no chat template (text completion).

Shots come from the same function's training rows (``--shots same``) or from three other
functions (``--shots other``). Prints one JSON line per form and a markdown table.
Usage: python benchmarks/real_prompt_forms.py [--threads 1] [--shots same,other]
"""

from __future__ import annotations

import argparse
import json
import time

import torch


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--shots", default="same,other")
    ap.add_argument("--forms", default=None, help="comma-separated subset")
    ap.add_argument("--max-new-tokens", type=int, default=40)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    from madopd.debate import TEMPLATES
    from madopd.models.hf import HFTeacher
    from madopd.realworld import prompts
    from madopd.realworld.calls import RealCallsTask
    from madopd.types import Sampling

    teacher = HFTeacher(a.model, name="T", batch_size=16)
    tok = teacher.tokenizer
    task = RealCallsTask(prompt="system")  # chat_system_1shot: the form before issue 22
    rows = [r for r in task.rows if task.is_held_out(r)]
    train = [r for r in task.rows if not task.is_held_out(r)]
    forms: dict[str, object] = {"chat_system_1shot": lambda r, shots: task.make_state(r).messages}
    for p in TEMPLATES:
        forms[f"chat_system_1shot+{p}"] = (
            lambda r, shots, p=p: task.make_state(r).messages
            + [{"role": "user", "content": TEMPLATES[p].round1.format(name="Ada", round=1,
                                                                       num_teachers=3)}])
    forms["shots_in_system"] = lambda r, shots: prompts.shots_in_system(r, shots)
    forms["shots_as_turns"] = lambda r, shots: prompts.shots_as_turns(r, shots)
    forms["shots_plain"] = lambda r, shots: prompts.plain_text(r, shots)
    if a.forms:
        forms = {k: v for k, v in forms.items() if k in a.forms.split(",")}
    sampling = Sampling(greedy=True, max_new_tokens=a.max_new_tokens)
    table = []
    for shot_kind in a.shots.split(","):
        for name, build in forms.items():
            if name.startswith("chat_system_1shot") and shot_kind != a.shots.split(",")[0]:
                continue  # no shots in these forms: measured once
            ctx = []
            for r in rows:
                shots = prompts.pick_shots(r, train, kind=shot_kind, n=3)
                c = build(r, shots)
                ctx.append(list(tok(c, add_special_tokens=False)["input_ids"]) if isinstance(c, str)
                           else c)
            t0, c0 = time.perf_counter(), time.process_time()
            _, replies, _ = teacher.generate_ids(ctx, sampling)
            texts = [teacher.decode(x).split("\n")[0] for x in replies]
            ok = [task.verify(task.make_state(r), t) for r, t in zip(rows, texts)]
            res = {"form": name, "shots": "-" if name.startswith("chat_system") else shot_kind,
                   "correct": int(sum(ok)), "n": len(ok),
                   "wall_s": round(time.perf_counter() - t0, 1),
                   "cpu_s": round(time.process_time() - c0, 1), "example": texts[0][:120]}
            table.append(res)
            print(json.dumps(res), flush=True)
    print("\n| form | shots | held-out correct | example reply (item 1) |\n|---|---|---|---|")
    for r in table:
        print(f"| `{r['form']}` | {r['shots']} | {r['correct']} / {r['n']} | `{r['example']}` |")


if __name__ == "__main__":
    main()
