"""Step-time breakdown of OPD vs MT-OPD vs MAD-OPD on the same tiny models (CPU).

    python benchmarks/bench_step.py [--steps 6] [--rounds 3] [--batch 8]

Prints the median time per phase (rollout, debate, score, loss, update) of each method, and
the step time as a ratio against the OPD step measured in the same process. MAD-OPD runs
twice: with the debate computed online (cache off) and with a warm cache (every transcript
precomputed by ``warm_cache``). The claim checked: with a warm cache a MAD-OPD step costs at
most 1.5x an MT-OPD step (the remaining extra cost is force decoding with the longer,
transcript-holding context). Methods are interleaved round by round so that load from other
processes affects them alike.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch


def build_models(root: Path) -> dict[str, str]:
    from madopd.models.tiny import TinySpec, build_tiny_model
    from madopd.tasks.toy_common import MERGED_TOKENS

    m = tuple(MERGED_TOKENS)
    specs = {
        "student": TinySpec(hidden_size=64, num_layers=2, num_heads=2, num_kv_heads=1,
                            intermediate_size=128, max_positions=2048, merged_tokens=m, seed=0),
        "teacher_a": TinySpec(hidden_size=128, num_layers=2, num_heads=4, num_kv_heads=2,
                              intermediate_size=256, max_positions=2048, merged_tokens=m, seed=1),
        "teacher_b": TinySpec(hidden_size=128, num_layers=2, num_heads=4, num_kv_heads=2,
                              intermediate_size=256, max_positions=2048, merged_tokens=m, seed=2),
    }
    out = {}
    for name, spec in specs.items():
        build_tiny_model(root / name, spec)
        out[name] = str(root / name)
    return out


def make_task():
    from madopd.tasks.simple import SimpleTask

    train = [(f"What is {a} plus {b}? Answer with the number.", str(a + b))
             for a in range(10) for b in range(10)]
    return SimpleTask(train, train[:8], name="bench-add")


def make_protocol(method, args, templates):
    from madopd.debate import DebateProtocol
    from madopd.types import Sampling

    if templates == "toy":
        from madopd.tasks.toy_common import toy_templates

        templates = toy_templates()
    return DebateProtocol(rounds=2 if method == "mad_opd" else 0, templates=templates,
                          sampling=Sampling(max_new_tokens=args.debate_tokens, seed=0,
                                            temperature=0.7, top_p=0.8, top_k=20))


def make_distiller(paths, method, cache, args, task, templates):
    from madopd.distill import Distiller, preset

    cfg = preset(method, student=paths["student"], teachers=[paths["teacher_a"], paths["teacher_b"]],
                 batch_size=args.batch, rounds=2 if method == "mad_opd" else 0,
                 sampling={"max_new_tokens": args.tokens},
                 debate_sampling={"max_new_tokens": args.debate_tokens, "seed": 0},
                 debate_cache=cache, lr=1e-4, record_topk=0, verify_train=False, seed=0)
    return Distiller.from_config(cfg, task,
                                 debate_protocol=make_protocol(method, args, templates))


PHASES = ("rollout", "debate", "score", "loss", "update", "step")


def run_suite(paths, args, templates):
    """Median seconds per phase for each method (interleaved rounds) + the warm-cache hit rate."""
    from madopd.cache import warm_cache

    task = make_task()
    runs = {
        "OPD": make_distiller(paths, "opd", False, args, task, templates),
        "MT-OPD": make_distiller(paths, "mt_opd", False, args, task, templates),
        "MAD-OPD online": make_distiller(paths, "mad_opd", False, args, task, templates),
        "MAD-OPD warm cache": make_distiller(paths, "mad_opd", True, args, task, templates),
    }
    warm = runs["MAD-OPD warm cache"]
    t0 = time.perf_counter()
    warm_cache(warm.debate, warm.pool.items, warm.cache, batch_size=50, progress=False)
    warm_s = time.perf_counter() - t0
    times = {name: {p: [] for p in PHASES} for name in runs}
    hits = misses = 0
    for d in runs.values():  # warm-up step (allocations, first-call overheads)
        d.step()
    for _ in range(args.rounds):
        for name, d in runs.items():
            for _ in range(args.steps):
                m = d.step().metrics
                for p in PHASES:
                    times[name][p].append(m[f"time/{p}"])
                if name == "MAD-OPD warm cache":
                    hits += m.get("count/cache_hits", 0)
                    misses += m.get("count/cache_misses", 0)
    ctx = [len(warm.student.tokenizer.apply_chat_template(
        warm.debate.score_context(s, tr, 0), tokenize=False, add_generation_prompt=True))
        for s, tr in zip(warm.pool.items[:1], warm.cache.get_or_run(warm.debate, warm.pool.items[:1])[0])]
    med = {n: {p: statistics.median(v) for p, v in t.items()} for n, t in times.items()}
    return med, hits / max(1, hits + misses), warm_s, len(warm.pool.items), ctx[0]


def report(title, med, hit, warm_s, n_items, ctx_chars, args) -> float:
    opd = med["OPD"]["step"]
    print(f"\n== {title} (score context of one state: {ctx_chars} chars) ==")
    print(f"{'method':<20}" + "".join(f"{p:>9}" for p in PHASES) + f"{'x OPD':>8}")
    for name, m in med.items():
        print(f"{name:<20}" + "".join(f"{m[p]:9.3f}" for p in PHASES) + f"{m['step'] / opd:8.2f}")
    ratio = med["MAD-OPD warm cache"]["step"] / med["MT-OPD"]["step"]
    online = med["MAD-OPD online"]["step"] / med["MT-OPD"]["step"]
    print(f"timed-step cache hit rate {hit:.2f} (warmed {n_items} prompts in {warm_s:.1f} s); "
          f"MAD-OPD / MT-OPD step: warm cache {ratio:.2f}x, online {online:.2f}x "
          f"-> {'within' if ratio <= 1.5 else 'ABOVE'} the 1.5x target")
    return ratio


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=3, help="timed steps per method and round")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved measurement rounds")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--tokens", type=int, default=32, help="student max_new_tokens")
    ap.add_argument("--debate-tokens", type=int, default=32, help="debate max_new_tokens")
    ap.add_argument("--templates", choices=["both", "general", "toy"], default="both",
                    help="debate templates: the long English 'general' preset, the toy world's "
                         "compact ones, or both")
    args = ap.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    print(f"batch {args.batch}, student tokens {args.tokens}, debate tokens "
          f"{args.debate_tokens}, {args.rounds}x{args.steps} steps per method; median s/step")
    with tempfile.TemporaryDirectory() as tmp:
        paths = build_models(Path(tmp))
        for t in (["toy", "general"] if args.templates == "both" else [args.templates]):
            title = {"toy": "toy-world compact templates", "general": "'general' templates"}[t]
            report(title, *run_suite(paths, args, t), args)


if __name__ == "__main__":
    main()
