"""Confidence-tag rate of a real catalogue model with each debate template preset (loaded CPU).

One round, K = 1 (round-1 turns only), greedy, on the first state of each real-calls function
(8 prompts); per preset: the share of turns with a readable tag, then the share with a
confidence from any stated source under ``confidence_fallback='forced_tag'``. Prints JSON.
Usage: python benchmarks/bench_real_confidence.py [--model smollm2-135m-instruct] [--n 8]
       [--chat-template plain] [--presets general,compact]
"""

from __future__ import annotations

import argparse
import json
import time

import torch


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--n", type=int, default=8)
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--chat-template", default=None,
                    help="'plain' for base models without one (gemma3-270m)")
    ap.add_argument("--presets", default=None, help="comma-separated subset of the presets")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    from madopd.debate import TEMPLATES, Debate, DebateProtocol
    from madopd.models.hf import HFTeacher
    from madopd.realworld.calls import RealCallsTask
    from madopd.types import Sampling

    teacher = HFTeacher(a.model, name="T1", chat_template=a.chat_template)
    task = RealCallsTask()
    by_family: dict[str, object] = {}
    for s in task.train_states():
        by_family.setdefault(s.family, s)
    states = list(by_family.values())[: a.n]
    out = {"model": a.model, "n_prompts": len(states), "max_new_tokens": a.max_new_tokens,
           "note": "4-bit quantized weights; loaded shared CPU", "presets": {}}
    for preset in (a.presets.split(",") if a.presets else TEMPLATES):
        proto = DebateProtocol(rounds=1, templates=preset, confidence_fallback="forced_tag",
                               sampling=Sampling(greedy=True, max_new_tokens=a.max_new_tokens))
        d = Debate([teacher], proto)
        t0 = time.perf_counter()
        trs = d.run(states)
        c = d.counters
        n = c["debate/turns"]
        out["presets"][preset] = {
            "turns": n, "tag_rate": c["debate/confidence_from_tag"] / n,
            "forced_tag_rate": c["debate/confidence_from_forced_tag"] / n,
            "with_confidence_rate": (n - c["debate/confidence_missing"]) / n,
            "seconds_loaded": round(time.perf_counter() - t0, 1),
            "example": trs[0].messages[0].text[:300],
            "confidences": [m.confidence for tr in trs for m in tr.messages]}
        print(preset, json.dumps(out["presets"][preset]), flush=True)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
