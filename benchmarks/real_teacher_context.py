"""Does the debate transcript make the real teachers better or worse targets?

For every debated train state of a `madopd demo --world real` run, each SmolLM2 persona scores
the reference call (teacher-forced, nats/token) twice: with the blind score context (state +
score cue, what MT-OPD's teachers see) and with the debate's privileged score context (state +
transcript + cue, what MAD-OPD's teachers see). The transcripts are read from the run's debate
cache (data only: a cache miss is debated again and counted, never guessed).

    python benchmarks/real_teacher_context.py madopd-out/real        # after madopd demo --world real

Prints per persona: mean NLL blind, mean NLL with the transcript, on how many states the
transcript made it worse; writes ``teacher_context_nll.json`` into the run folder.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch


def reference_ids(tok, states) -> list[list[int]]:
    return [list(tok(s.reference, add_special_tokens=False)["input_ids"]) + [tok.eos_token_id]
            for s in states]


def mean_nll(teacher, contexts, conts) -> list[float]:
    """Per-state mean NLL (nats/token) of ``conts`` after ``contexts`` under ``teacher``."""
    sc = teacher.score(contexts, conts)
    return [float(-sc.dists[b, :len(c)].gather(-1, torch.tensor(c).view(-1, 1)).squeeze(-1)
                  .double().mean()) for b, c in enumerate(conts)]


def main(argv: list[str] | None = None) -> dict:
    from transformers import AutoModelForCausalLM

    from madopd.cache import DebateCache
    from madopd.debate import Debate
    from madopd.models.catalogue import resolve_model_path
    from madopd.realworld import world as rw
    from madopd.realworld.calls import RealCallsTask

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", help="the real world's output folder (holds debate-cache.jsonl)")
    ap.add_argument("--profile", default="default", help="the profile that run used")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    run = Path(args.run)
    profile = rw.REAL_PROFILES[args.profile]
    folder = resolve_model_path(rw.TEACHER)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    model.requires_grad_(False)
    teachers = rw.make_teachers(model)
    states = rw._Subset(RealCallsTask(), profile.train_states, profile.eval_states).train_states()
    debate = Debate(teachers, rw._protocol(1, profile))
    transcripts, cache_stats = DebateCache(run / "debate-cache.jsonl").get_or_run(debate, states)
    conts = reference_ids(teachers[0].tokenizer, states)
    out = {"states": len(states), "cache": cache_stats, "personas": {}}
    for k, teacher in enumerate(teachers):
        blind = mean_nll(teacher, [debate.score_context(s, None, k) for s in states], conts)
        priv = mean_nll(teacher, [debate.score_context(s, tr, k) for s, tr in zip(states, transcripts)],
                        conts)
        out["personas"][teacher.name] = {
            "nll_blind": sum(blind) / len(blind), "nll_with_transcript": sum(priv) / len(priv),
            "states_worse_with_transcript": sum(p > b for p, b in zip(priv, blind))}
    out["seconds"] = round(time.perf_counter() - t0, 1)
    for name, r in out["personas"].items():
        print(f"{name[:40]:<40} blind {r['nll_blind']:.3f}  with transcript "
              f"{r['nll_with_transcript']:.3f}  worse on {r['states_worse_with_transcript']}"
              f"/{len(states)} states")
    print(f"debate cache: {cache_stats}; {out['seconds']} s")
    (run / "teacher_context_nll.json").write_text(json.dumps(out, indent=1))
    return out


if __name__ == "__main__":
    main()
