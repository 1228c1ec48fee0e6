"""Step-time breakdown of OPD vs MT-OPD vs MAD-OPD on the same tiny models (CPU).

    python benchmarks/bench_step.py [--steps 6] [--rounds 3] [--batch 8]
    OMP_WAIT_POLICY=PASSIVE $VLLM_VENV/bin/python benchmarks/bench_step.py --rollouts --threads 2

Prints the median time per phase (rollout, debate, score, loss, update) of each method, and
the step time as a ratio against the OPD step measured in the same process. MAD-OPD runs
with the debate computed online (cache off) and with a warm cache (every transcript
precomputed by ``warm_cache``). Every method runs with the teachers' scoring-context cache on
(``score_cache_entries``, the default: keys/values of state + transcript + cue reused across
steps) and, for MT-OPD and warm MAD-OPD, also with it off (``no score cache``). A first epoch
of untimed steps fills the score caches, so the timed steps are the steady state of a
multi-epoch run. The claim checked: with warm caches a MAD-OPD step costs at most 1.5x an
MT-OPD step under the same settings. Methods are interleaved round by round so that load
from other processes affects them alike.

``--rollouts`` (issue 14, items 1 and 4) times the rollout phase on its three backends from one
process: HF ``generate``, the colocated vLLM engine (``madopd.models.vllm_rollout``) and a vLLM
server started here (``madopd.models.vllm_rollout_server``; another process on the same cores),
same prompts, same sampling, interleaved rounds, on the toy student and at SmolLM2-135M size
(the pulled model, else a random model of its shape), with the weight-sync time per step. Run it
with ``OMP_WAIT_POLICY=PASSIVE`` (as .ci/run does): spinning OpenMP threads on shared cores
made both backends 10-30x slower in one measurement here, vLLM's many small kernels more so.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch


def build_models(root: Path) -> dict[str, str]:
    from madopd.models.tiny import TinySpec, build_tiny_model
    from madopd.toyworld.toy_common import MERGED_TOKENS

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


def make_task(n_states: int):
    from madopd.tasks.simple import SimpleTask

    train = [(f"What is {a} plus {b}? Answer with the number.", str(a + b))
             for a in range(10) for b in range(10)][:n_states]
    return SimpleTask(train, train[:8], name="bench-add")


def make_protocol(method, args, templates):
    from madopd.debate import DebateProtocol
    from madopd.types import Sampling

    if templates == "toy":
        from madopd.toyworld.toy_common import toy_templates

        templates = toy_templates()
    return DebateProtocol(rounds=2 if method == "mad_opd" else 0, templates=templates,
                          sampling=Sampling(max_new_tokens=args.debate_tokens, seed=0,
                                            temperature=0.7, top_p=0.8, top_k=20))


def make_distiller(paths, method, cache, args, task, templates, score_cache=True):
    from madopd.distill import Distiller, preset

    cfg = preset(method, student=paths["student"], teachers=[paths["teacher_a"], paths["teacher_b"]],
                 batch_size=args.batch, rounds=2 if method == "mad_opd" else 0,
                 sampling={"max_new_tokens": args.tokens},
                 debate_sampling={"max_new_tokens": args.debate_tokens, "seed": 0},
                 debate_cache=cache, lr=1e-4, record_topk=0, verify_train=False, seed=0,
                 score_cache_entries=256 if score_cache else 0)
    return Distiller.from_config(cfg, task,
                                 debate_protocol=make_protocol(method, args, templates))


PHASES = ("rollout", "debate", "score", "loss", "update", "step")


WARM = "MAD-OPD warm cache"
BASE = "MT-OPD"


def run_suite(paths, args, templates):
    """Median seconds per phase for each method (interleaved rounds) + cache statistics."""
    from madopd.cache import warm_cache

    task = make_task(args.states)
    runs = {
        "OPD": make_distiller(paths, "opd", False, args, task, templates),
        BASE: make_distiller(paths, "mt_opd", False, args, task, templates),
        f"{BASE} no score cache": make_distiller(paths, "mt_opd", False, args, task, templates,
                                                 score_cache=False),
        "MAD-OPD online": make_distiller(paths, "mad_opd", False, args, task, templates),
        WARM: make_distiller(paths, "mad_opd", True, args, task, templates),
        f"{WARM} no score cache": make_distiller(paths, "mad_opd", True, args, task, templates,
                                                 score_cache=False),
    }
    t0 = time.perf_counter()
    for name in (WARM, f"{WARM} no score cache"):
        d = runs[name]
        warm_cache(d.debate, d.pool.items, d.cache, batch_size=50, progress=False)
    warm_s = time.perf_counter() - t0
    epoch = -(-len(runs["OPD"].pool.items) // args.batch)
    for d in runs.values():  # one untimed epoch: allocations, first calls, score caches filled
        for _ in range(epoch):
            d.step()
    times = {name: {p: [] for p in PHASES} for name in runs}
    hits = {name: [0.0, 0.0] for name in runs}  # [debate cache hit rate terms]
    score_hits = {name: [0.0, 0.0] for name in runs}
    for _ in range(args.rounds):
        for name, d in runs.items():
            for _ in range(args.steps):
                m = d.step().metrics
                for p in PHASES:
                    times[name][p].append(m[f"time/{p}"])
                hits[name][0] += m.get("count/cache_hits", 0)
                hits[name][1] += m.get("count/cache_hits", 0) + m.get("count/cache_misses", 0)
                score_hits[name][0] += m.get("count/score_cache/hits", 0)
                score_hits[name][1] += m.get("count/score_cache/hits", 0) + \
                    m.get("count/score_cache/misses", 0)
    warm = runs[WARM]
    from madopd.models._common import render_prompt_ids

    ctx = [len(render_prompt_ids(warm.student.tokenizer, warm.debate.score_context(s, tr, 0)))
           for s, tr in zip(warm.pool.items[:1], warm.cache.get_or_run(warm.debate, warm.pool.items[:1])[0])]
    med = {n: {p: statistics.median(v) for p, v in t.items()} for n, t in times.items()}
    rate = {n: (hits[n][0] / hits[n][1] if hits[n][1] else float("nan"),
                score_hits[n][0] / score_hits[n][1] if score_hits[n][1] else float("nan"))
            for n in runs}
    return med, rate, warm_s, len(warm.pool.items), ctx[0]


def report(title, med, rate, warm_s, n_items, ctx_tokens, args) -> float:
    opd = med["OPD"]["step"]
    print(f"\n== {title} (MAD-OPD score context of one state: {ctx_tokens} tokens; "
          f"{n_items} states) ==")
    print(f"{'method':<32}" + "".join(f"{p:>9}" for p in PHASES) + f"{'x OPD':>8}"
          f"{'debate hit':>11}{'score hit':>10}")
    for name, m in med.items():
        print(f"{name:<32}" + "".join(f"{m[p]:9.3f}" for p in PHASES) + f"{m['step'] / opd:8.2f}"
              f"{rate[name][0]:11.2f}{rate[name][1]:10.2f}")
    ratio = med[WARM]["step"] / med[BASE]["step"]
    off = med[f"{WARM} no score cache"]["step"] / med[f"{BASE} no score cache"]["step"]
    vs_off = med[WARM]["step"] / med[f"{BASE} no score cache"]["step"]
    online = med["MAD-OPD online"]["step"] / med[BASE]["step"]
    print(f"(debate cache warmed for {n_items} prompts in {warm_s:.1f} s)")
    print(f"MAD-OPD / MT-OPD step, same settings: warm caches {ratio:.2f}x "
          f"-> {'within' if ratio <= 1.5 else 'ABOVE'} the 1.5x target; "
          f"both without the score cache {off:.2f}x; warm MAD-OPD vs MT-OPD without it "
          f"{vs_off:.2f}x; online debate {online:.2f}x")
    return ratio


# ---- rollout backends: HF generate vs a colocated vLLM engine (needs the vLLM venv) ----------

SMOLLM2_SHAPE = dict(hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                     num_attention_heads=9, num_key_value_heads=3, head_dim=64,
                     vocab_size=49152, max_position_embeddings=2048, tie_word_embeddings=True)


def smollm2_folder(root: Path) -> tuple[str, str]:
    """The pulled SmolLM2-135M-Instruct, else a random Llama of its exact shape (same compute;
    random weights never emit EOS, so every reply runs to max tokens)."""
    from madopd.models.catalogue import CHECKSUMS, folder_of

    real = folder_of("smollm2-135m-instruct")
    if (real / CHECKSUMS).is_file():
        return str(real), "real SmolLM2-135M-Instruct (4-bit weights de-quantized to fp32)"
    from transformers import LlamaConfig, LlamaForCausalLM

    from madopd.models.tiny import build_tokenizer

    out = root / "smollm2-shape"
    torch.manual_seed(0)
    LlamaForCausalLM(LlamaConfig(**SMOLLM2_SHAPE)).save_pretrained(out)
    build_tokenizer().save_pretrained(out)  # byte ids < 49152; the model's vocab stays 49,152
    return str(out), "random Llama of SmolLM2-135M's shape (model not pulled)"


def time_rollouts(student_dir: str, label: str, args, tmp: Path) -> dict[str, float]:
    """Median seconds per batch rollout, HF vs colocated vLLM vs a vLLM server (unless
    ``--no-server``), interleaved rounds, same prompts and sampling (seed per round); prints
    tokens/s and the weight sync per step separately. Returns HF / backend per vLLM backend."""
    from madopd.models.hf import HFStudent
    from madopd.models.vllm_rollout import VLLMColocatedRollout
    from madopd.models.vllm_rollout_server import VLLMServerRollout
    from madopd.models.vllm_server import serve_vllm

    student = HFStudent(student_dir, name="student")
    t0 = time.perf_counter()
    engine = VLLMColocatedRollout(student, max_model_len=1024)
    starts = {"vLLM colocated": time.perf_counter() - t0}
    backends = {"HF generate": student.rollout, "vLLM colocated": engine.rollout}
    syncs = {"vLLM colocated": engine.sync}
    with contextlib.ExitStack() as stack:
        if not args.no_server:
            t0 = time.perf_counter()
            # the server process: same interpreter (the vLLM venv), dev mode for weight updates
            url = stack.enter_context(serve_vllm(
                student_dir, max_model_len=1024, env={"VLLM_SERVER_DEV_MODE": "1"},
                log_path=tmp / f"server-{len(os.listdir(tmp))}.log", startup_timeout=900))
            server = VLLMServerRollout(student, url, weights_dir=tmp / "weights", timeout=600)
            starts["vLLM server"] = time.perf_counter() - t0
            backends["vLLM server"], syncs["vLLM server"] = server.rollout, server.sync
        secs, toks = time_backends(backends, args)
        sync = {k: statistics.median(f() for _ in range(3)) for k, f in syncs.items()}
        if not args.no_server:  # the server's sync: writing the safetensors file, then reload
            c = server.counters
            print(f"vLLM server sync: {c['write_seconds'] / c['weight_syncs']:.3f} s of "
                  f"{c['sync_seconds'] / c['weight_syncs']:.3f} s writing the weights file "
                  f"(mean of {c['weight_syncs']:.0f} syncs)")
    engine.close()
    med = {k: statistics.median(v) for k, v in secs.items()}
    n_params = sum(p.numel() for p in student.model.parameters()) / 1e6
    print(f"\n== rollouts: {label} ({n_params:.1f}M "
          f"params), batch {args.batch} x {args.tokens} new tokens, T=1, {args.rounds} rounds, "
          f"torch threads {torch.get_num_threads()}, OMP_WAIT_POLICY="
          f"{os.environ.get('OMP_WAIT_POLICY', 'unset')}, load average "
          f"{os.getloadavg()[0]:.1f} ==")
    hf = med["HF generate"]
    ratios = {}
    for k in secs:
        tps = toks[k] / sum(secs[k])
        line = f"{k:<16} {med[k]:8.3f} s/batch  {tps:8.1f} tokens/s"
        if k in syncs:
            ratios[k] = hf / med[k]
            line += (f"  HF/this {ratios[k]:5.2f}x  sync {sync[k]:.3f} s/step  rollout+sync "
                     f"HF/this {hf / (med[k] + sync[k]):5.2f}x  start {starts[k]:.1f} s")
        print(line)
    best = max(ratios.values())
    print(f"best HF / vLLM time per batch {best:.2f}x (target >= 2x: "
          f"{'met' if best >= 2 else 'NOT met'})")
    return ratios


def time_backends(backends: dict, args) -> tuple[dict[str, list[float]], dict[str, int]]:
    """Interleaved rounds (round 0 an untimed warm-up of each): seconds per call, tokens."""
    from madopd.types import Sampling

    states = make_task(args.batch).train_states()[: args.batch]
    secs: dict[str, list[float]] = {k: [] for k in backends}
    toks: dict[str, int] = {k: 0 for k in backends}
    for r in range(args.rounds + 1):
        s = Sampling(temperature=1.0, max_new_tokens=args.tokens, seed=r)
        for name, fn in backends.items():
            t = time.perf_counter()
            out = fn(states, s)
            if r:
                secs[name].append(time.perf_counter() - t)
                toks[name] += sum(len(x) for x in out.response_ids)
    return secs, toks


def rollout_main(args) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        paths = build_models(Path(tmp))
        logs = Path(tmp) / "logs"
        logs.mkdir()
        time_rollouts(paths["student"], "toy student", args, logs)
        if not args.no_smollm2:
            folder, label = smollm2_folder(Path(tmp))
            time_rollouts(folder, label, args, logs)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=3, help="timed steps per method and round")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved measurement rounds")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--states", type=int, default=24,
                    help="training states (an untimed first epoch fills the score caches)")
    ap.add_argument("--tokens", type=int, default=32, help="student max_new_tokens")
    ap.add_argument("--debate-tokens", type=int, default=32, help="debate max_new_tokens")
    ap.add_argument("--templates", choices=["both", "general", "toy"], default="both",
                    help="debate templates: the long English 'general' preset, the toy world's "
                         "compact ones, or both")
    ap.add_argument("--rollouts", action="store_true",
                    help="instead: rollout backends, HF generate vs colocated vLLM vs a vLLM "
                         "server (run with the "
                         "vLLM venv's python, .ci/setup_vllm.sh), on the toy student and at "
                         "SmolLM2-135M size")
    ap.add_argument("--no-smollm2", action="store_true", help="--rollouts: toy student only")
    ap.add_argument("--no-server", action="store_true",
                    help="--rollouts: without the vLLM server backend (a separate process on "
                         "this machine, VLLM_SERVER_DEV_MODE=1, weights synced through a folder)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (both backends)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.rollouts:
        print("timings on a shared machine are labelled loaded unless it was idle")
        rollout_main(args)
        return
    torch.manual_seed(0)
    print("timings on a shared machine are labelled loaded unless it was idle")
    print(f"batch {args.batch}, student tokens {args.tokens}, debate tokens "
          f"{args.debate_tokens}, {args.rounds}x{args.steps} steps per method; median s/step")
    with tempfile.TemporaryDirectory() as tmp:
        paths = build_models(Path(tmp))
        for t in (["toy", "general"] if args.templates == "both" else [args.templates]):
            title = {"toy": "toy-world compact templates", "general": "'general' templates"}[t]
            report(title, *run_suite(paths, args, t), args)


if __name__ == "__main__":
    main()
