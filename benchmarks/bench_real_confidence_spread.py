"""How informative each labelled confidence source is on the real world's debate turns.

The real world's protocol (3 SmolLM2 personas, ``tool_use`` cues, one greedy round) debates a
fixed prompt set (every 4th real-calls train state: 8 prompts, one per function) once with
``confidence_fallback='none'``; then every turn is read by each source of
``madopd.confidence`` on the *same* turns: ``forced_tag``, ``forced_ask``, ``answer_logprob``.
Per source: the share of turns with a value, the numeric mass of the forced reads (mean, and
the share below 0.5), the values' spread (min, max, SD), and the spread of the weights they
give (Eq. 7, softmax(c/100/tau) over the 3 teachers of a state, tau = 1 as in the real world):
mean max weight (1/3 = uniform) and mean n_eff = 1/sum(w^2) (3 = uniform). Process CPU
seconds per source are printed too (wall time on a loaded machine says little). Prints JSON.
Usage: python benchmarks/bench_real_confidence_spread.py [--tokens 48] [--threads 2]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import statistics
import time

import torch


def weight_stats(values: list[list[float | None]], tau: float = 1.0) -> dict:
    """[states][K] confidences -> mean max weight and mean n_eff over states with all K values."""
    maxes, neffs = [], []
    for row in values:
        if any(v is None for v in row):
            continue
        z = [v / 100.0 / tau for v in row]
        m = max(z)
        e = [math.exp(x - m) for x in z]
        w = [x / sum(e) for x in e]
        maxes.append(max(w))
        neffs.append(1.0 / sum(x * x for x in w))
    if not maxes:
        return {"states": 0}
    return {"states": len(maxes), "mean_max_weight": statistics.fmean(maxes),
            "mean_n_eff": statistics.fmean(neffs)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokens", type=int, default=48)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--tau", type=float, default=1.0)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    from transformers import AutoModelForCausalLM

    from madopd.confidence import answer_logprob_confidence, forced_confidences, forced_ids
    from madopd.debate import Debate
    from madopd.models.catalogue import resolve_model_path
    from madopd.models.hf import HFTeacher
    from madopd.realworld.calls import RealCallsTask
    from madopd.realworld.world import PERSONAS, TEACHER, RealProfile, _protocol

    folder = resolve_model_path(TEACHER)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    teachers = [HFTeacher(model, folder, name=n, batch_size=16) for n in PERSONAS]
    proto = dataclasses.replace(_protocol(1, RealProfile(debate_tokens=a.tokens)),
                                confidence_fallback="none")
    debate = Debate(teachers, proto, names=list(PERSONAS))
    states = RealCallsTask().train_states()[::4]
    t0, c0 = time.perf_counter(), time.process_time()
    trs = debate.run(states)
    out = {"model": TEACHER, "n_prompts": len(states), "turns": 3 * len(states),
           "debate_tokens": a.tokens, "tau": a.tau,
           "debate_seconds": {"wall_loaded": round(time.perf_counter() - t0, 1),
                              "cpu": round(time.process_time() - c0, 1)},
           "tags_written": debate.counters["debate/confidence_from_tag"],
           "note": "4-bit quantized weights; loaded shared CPU", "sources": {}}
    chats = [[debate.prompt(s, None, k, 1) for k in range(3)] for s in states]  # [B][K]
    replies = [[tr.messages[k].text for k in range(3)] for tr in trs]
    for source in ("forced_tag", "forced_ask", "answer_logprob"):
        t0, c0 = time.perf_counter(), time.process_time()
        vals: list[list[float | None]] = [[None] * 3 for _ in states]
        masses = []
        for k, teacher in enumerate(teachers):
            if source == "answer_logprob":
                for b in range(len(states)):
                    vals[b][k] = answer_logprob_confidence(teacher, chats[b][k], replies[b][k])
                continue
            reads = forced_confidences(teacher, [forced_ids(teacher, chats[b][k], replies[b][k],
                                                            source) for b in range(len(states))])
            for b, (v, m) in enumerate(reads):
                vals[b][k] = v
                masses.append(m)
        flat = [v for row in vals for v in row if v is not None]
        res = {"with_value": len(flat) / (3 * len(states)),
               "min": min(flat), "max": max(flat), "sd": statistics.pstdev(flat),
               "values": [[None if v is None else round(v, 1) for v in row] for row in vals],
               "weights": weight_stats(vals, a.tau),
               "seconds": {"wall_loaded": round(time.perf_counter() - t0, 1),
                           "cpu": round(time.process_time() - c0, 1)}}
        if masses:
            res["mean_numeric_mass"] = statistics.fmean(masses)
            res["low_mass_share"] = sum(m < 0.5 for m in masses) / len(masses)
        out["sources"][source] = res
        print(source, json.dumps({k: v for k, v in res.items() if k != "values"}), flush=True)
    out["example_turn"] = replies[0][0][:300]
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
