"""The same OPD step in madopd and in TRL's DistillationTrainer, alternating rounds (CPU).

    python benchmarks/bench_peer.py [--size toy|smollm2] [--rounds 8] [--batch 4] [--tokens 16]

TRL is an optional install (``pip install torch==2.13.0 trl``; TRL 1.16 keeps the system's
transformers 5.x). Both sides get identical models (the same folders), prompts (one chat
template, so the same prompt ids), batch, completion length, sampling (temperature 1, no
top-k/top-p), divergence (reverse KL over the full vocabulary: TRL's ``beta=1.0``, madopd's
``rkl``), fp32, AdamW at a constant lr, clipping at 1.0, no gradient checkpointing (TRL's
default would turn it on), one optimizer step per generation. The method is fully on-policy
in both (TRL 1.16's DistillationTrainer has no ``lmbda``: it always samples the student).

Timing: TRL's own ``Trainer.train`` runs; a callback times each TRL step (``on_step_begin`` ->
``on_step_end``: generation, both forwards, loss, backward, clip, optimizer step) and then
runs and times one madopd ``Distiller.step`` in the same process, so the two alternate
round by round under the same machine load. ``GenerationMixin.generate`` is wrapped to give
the share of each step spent in Hugging Face ``generate`` (the limit on both). The first
``--warmup`` rounds are not timed. Peak memory: each side runs alone in a child process
(``--only``) and samples its resident set every 2 ms during the timed steps; the number is
the peak above the resident set before the first step (the loaded models).

madopd's teacher keeps its default scoring-context cache (keys/values of each prompt reused
across steps); with 24 distinct prompts and 8 rounds x batch 4 it is mostly warm after the
first epoch. ``--no-score-cache`` turns it off for a like-for-like scoring cost.

``--rollout-backend vllm_colocated`` (issue 14): madopd's rollouts come from its colocated vLLM
engine (weights synced after every step, inside madopd's timed step), TRL keeps its default
HF generation. Needs vLLM and TRL in one venv (the vLLM venv of .ci/setup_vllm.sh plus
``pip install trl``); vLLM's CPU build binds the OpenMP threads of the whole process, so both
sides run under its thread setting.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

MADOPD_PHASES = ("rollout", "score", "loss", "update")  # madopd's per-step timings (seconds)
PROMPTS = [f"Write a Python function that returns {a} times {b}." for a in range(2, 8)
           for b in range(3, 7)]  # 24 prompts


def build_models(size: str, root: Path) -> dict[str, str]:
    """{'student', 'teacher'} folders: tiny Qwen3 pair, or SmolLM2-135M-Instruct twice."""
    if size == "smollm2":
        from madopd.models.catalogue import resolve_model_path

        path = str(resolve_model_path("smollm2-135m-instruct"))
        return {"student": path, "teacher": path}
    from madopd.models.tiny import TinySpec, build_tiny_model

    specs = {"student": TinySpec(hidden_size=64, num_layers=2, num_heads=2, num_kv_heads=1,
                                 intermediate_size=128, max_positions=2048, seed=0),
             "teacher": TinySpec(hidden_size=128, num_layers=2, num_heads=4, num_kv_heads=2,
                                 intermediate_size=256, max_positions=2048, seed=1)}
    for name, spec in specs.items():
        build_tiny_model(root / name, spec)
    return {name: str(root / name) for name in specs}


class GenerateTimer:
    """Seconds spent inside ``GenerationMixin.generate`` since the last ``reset``."""

    def __init__(self):
        from transformers.generation.utils import GenerationMixin

        self.total = 0.0
        real = GenerationMixin.generate
        timer = self

        def generate(self_model, *a, **k):
            t0 = time.perf_counter()
            try:
                return real(self_model, *a, **k)
            finally:
                timer.total += time.perf_counter() - t0

        GenerationMixin.generate = generate

    def reset(self) -> None:
        self.total = 0.0


class PeakRSS:
    """Peak resident set (bytes) above the level at ``start``, sampled every 2 ms."""

    def __init__(self):
        self.base = self.peak = 0
        self._stop = threading.Event()

    @staticmethod
    def now() -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    def start(self) -> None:
        self.base = self.peak = self.now()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.002):
            self.peak = max(self.peak, self.now())

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return self.peak - self.base


def make_madopd(paths: dict[str, str], args):
    from madopd.distill import Distiller, preset
    from madopd.tasks.simple import SimpleTask

    task = SimpleTask([(p, "") for p in PROMPTS], [(p, "") for p in PROMPTS[:4]],
                      name="bench-peer")
    cfg = preset("opd", student=paths["student"], teachers=[paths["teacher"]],
                 batch_size=args.batch, divergence="rkl", lr=1e-5, max_grad_norm=1.0,
                 weight_decay=0.0, schedule="constant", warmup_ratio=0.0,
                 sampling={"max_new_tokens": args.tokens, "temperature": 1.0, "top_p": 1.0,
                           "top_k": 0},
                 record_topk=0, verify_train=False, seed=0, device="cpu",
                 max_steps=10**6, score_cache_entries=0 if args.no_score_cache else 256,
                 rollout_backend=args.rollout_backend)
    return Distiller.from_config(cfg, task)


def make_trl(paths: dict[str, str], args, out: Path, callbacks):
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DistillationConfig, DistillationTrainer

    tok = AutoTokenizer.from_pretrained(paths["student"])
    data = Dataset.from_list([{"prompt": [{"role": "user", "content": p}]}
                              for p in PROMPTS * 100])
    cfg = DistillationConfig(
        output_dir=str(out), per_device_train_batch_size=args.batch,
        gradient_accumulation_steps=1, max_steps=args.warmup + args.rounds, learning_rate=1e-5,
        lr_scheduler_type="constant", warmup_steps=0, weight_decay=0.0, max_grad_norm=1.0,
        optim="adamw_torch", beta=1.0, temperature=1.0, top_p=1.0, top_k=0,
        max_completion_length=args.tokens, gradient_checkpointing=False, bf16=False,
        fp16=False, use_cpu=True, report_to="none", logging_steps=10**6, save_strategy="no",
        disable_tqdm=True, dataloader_num_workers=0, seed=0, use_vllm=False)
    student = AutoModelForCausalLM.from_pretrained(paths["student"], dtype=torch.float32)
    teacher = AutoModelForCausalLM.from_pretrained(paths["teacher"], dtype=torch.float32)
    return DistillationTrainer(model=student, teacher_model=teacher, args=cfg,
                               train_dataset=data, processing_class=tok, callbacks=callbacks)


def run_alternating(paths, args, work: Path) -> dict:
    """TRL steps and madopd steps, one of each per round, in this process."""
    from transformers import TrainerCallback

    gen = GenerateTimer()
    d = make_madopd(paths, args)
    rows: list[dict] = []

    class Alternate(TrainerCallback):
        def on_step_begin(self, a, state, control, **kw):
            gen.reset()
            self.t0 = time.perf_counter()

        def on_step_end(self, a, state, control, **kw):
            row = {"trl": time.perf_counter() - self.t0, "trl_gen": gen.total}
            gen.reset()
            t0 = time.perf_counter()
            m = d.step().metrics
            # madopd's rollout phase (HF generate or vLLM) + the weight sync vLLM adds
            row.update(madopd=time.perf_counter() - t0, madopd_gen=gen.total,
                       madopd_rollout=m["time/rollout"] + m.get("rollout/sync_seconds", 0.0),
                       madopd_phases={k: m.get(f"time/{k}", 0.0) for k in MADOPD_PHASES})
            rows.append(row)
            print(f"round {len(rows)}: TRL {row['trl']:.3f} s  madopd {row['madopd']:.3f} s",
                  file=sys.stderr, flush=True)

    trainer = make_trl(paths, args, work / "trl", [Alternate()])
    trainer.train()
    return {"rows": rows[args.warmup:]}


def run_only(paths, args, work: Path) -> dict:
    """One side alone (for its peak memory): warm-up steps, then timed steps under PeakRSS."""
    from transformers import TrainerCallback

    rss = PeakRSS()
    if args.only == "madopd":
        d = make_madopd(paths, args)
        for _ in range(args.warmup):
            d.step()
        rss.start()
        for _ in range(args.rounds):
            d.step()
        return {"peak_bytes": rss.stop(), "base_bytes": rss.base}

    class Watch(TrainerCallback):
        def on_step_begin(self, a, state, control, **kw):
            if state.global_step == args.warmup:
                rss.start()

    make_trl(paths, args, work / "trl", [Watch()]).train()
    return {"peak_bytes": rss.stop(), "base_bytes": rss.base}


def summary(rows: list[dict]) -> dict:
    ratio = [r["madopd"] / r["trl"] for r in rows]
    med = statistics.median
    return {"rounds": len(rows), "trl_s": med(r["trl"] for r in rows),
            "madopd_s": med(r["madopd"] for r in rows),
            "ratio_median": med(ratio), "ratio_min": min(ratio), "ratio_max": max(ratio),
            "trl_generate_share": med(r["trl_gen"] / r["trl"] for r in rows),
            "madopd_generate_share": med(r["madopd_gen"] / r["madopd"] for r in rows),
            "madopd_rollout_share": med(r["madopd_rollout"] / r["madopd"] for r in rows),
            "trl_generate_s": med(r["trl_gen"] for r in rows),
            **{f"madopd_{k}_s": med(r["madopd_phases"][k] for r in rows) for k in MADOPD_PHASES}}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", choices=("toy", "smollm2"), default="toy")
    ap.add_argument("--rounds", type=int, default=8, help="timed rounds (one step of each)")
    ap.add_argument("--warmup", type=int, default=2, help="untimed rounds first")
    ap.add_argument("--batch", type=int, default=4, help="prompts per step")
    ap.add_argument("--tokens", type=int, default=16, help="max new tokens per completion")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    ap.add_argument("--no-score-cache", action="store_true",
                    help="madopd's teacher re-encodes every prompt (TRL has no such cache)")
    ap.add_argument("--no-memory", action="store_true", help="skip the two memory children")
    ap.add_argument("--rollout-backend", choices=("hf", "vllm_colocated"), default="hf",
                    help="madopd's student rollouts: HF generate (like TRL's default) or the "
                         "colocated vLLM engine (run in the vLLM venv with TRL installed; the "
                         "weight sync after each step is part of madopd's step)")
    ap.add_argument("--only", choices=("madopd", "trl"), help=argparse.SUPPRESS)
    ap.add_argument("--models", help=argparse.SUPPRESS)  # JSON of folders, for --only
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        import trl
    except ImportError:
        print("bench_peer: TRL is not installed (pip install torch==2.13.0 trl)",
              file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        paths = json.loads(args.models) if args.models else build_models(args.size, work)
        if args.only:
            print(json.dumps(run_only(paths, args, work)))
            return 0
        result = {"size": args.size, "batch": args.batch, "tokens": args.tokens,
                  "trl": trl.__version__, "trainer": "DistillationTrainer",
                  "score_cache": not args.no_score_cache, "note": "CPU, loaded box",
                  "madopd_rollout_backend": args.rollout_backend,
                  "load_average": os.getloadavg()[0],
                  **summary(run_alternating(paths, args, work)["rows"])}
        if not args.no_memory:
            mem = {}
            for side in ("madopd", "trl"):
                cmd = [sys.executable, __file__, "--only", side, "--models", json.dumps(paths),
                       "--rounds", str(min(args.rounds, 4)), "--warmup", "1",
                       "--batch", str(args.batch), "--tokens", str(args.tokens),
                       "--threads", str(args.threads), "--rollout-backend", args.rollout_backend]
                cmd += ["--no-score-cache"] if args.no_score_cache else []
                out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
                mem[side] = json.loads(out.strip().splitlines()[-1])
            result["peak_mib_madopd"] = mem["madopd"]["peak_bytes"] / 2**20
            result["peak_mib_trl"] = mem["trl"]["peak_bytes"] / 2**20
            result["peak_memory_ratio"] = (mem["madopd"]["peak_bytes"]
                                           / max(1, mem["trl"]["peak_bytes"]))
    print(json.dumps(result))
    print(f"madopd / TRL DistillationTrainer step: {result['ratio_median']:.2f} "
          f"(range {result['ratio_min']:.2f}-{result['ratio_max']:.2f}, {result['rounds']} "
          f"rounds); rollout share: madopd ({args.rollout_backend}, + sync) "
          f"{result['madopd_rollout_share']:.0%}, TRL (HF generate) "
          f"{result['trl_generate_share']:.0%}; Amdahl bound on TRL / madopd with free "
          f"rollouts: {1 / max(1e-9, 1 - result['trl_generate_share']):.2f}x"
          + (f"; peak memory ratio {result['peak_memory_ratio']:.2f}"
             if "peak_memory_ratio" in result else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
