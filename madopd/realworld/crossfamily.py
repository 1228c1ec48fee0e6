"""`madopd demo --world real --profile crossfamily`: a teacher of another family.

Teacher: Gemma-3-270M base (262,144-token vocabulary, no chat template: its context is the
state's chat as plain few-shot text, ``chat_template="plain"``). Student: the real world's
16-layer SmolLM2 student (49,152 tokens). Task: real-calls (three solved calls of the same
function, then the request; 32 train / 16 held-out items). The teacher scores the student's
sampled tokens through byte-offset spans (madopd.crosstok): profile ``crossfamily`` uses
``cross_tokenizer="full"`` with JSD(0.5) (Gemma's distribution over the tokens whose strings
match, top 64 + tail, at span starts); ``crossfamily-srkl`` the sampled-token reverse KL on
every span (``cross_tokenizer="sampled"``, ``divergence="srkl"``).

Rows: Base (no training) and OPD-Gemma (on-policy distillation from Gemma), from the same
student start; columns: call accuracy (%) and the per-token NLL of the reference call under
the student (nats). Intervals: ``madopd.stats.bootstrap_table`` (items × seeds, paired), as
the real demo's table. Timings are from shared, loaded CPUs.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from madopd.types import Sampling

GEMMA = "gemma3-270m"
ROWS = ("Base", "OPD-Gemma")


@dataclass(frozen=True)
class CrossProfile:
    # "full": JSD(0.5) against Gemma's distribution over the string-matched tokens (top-k +
    # tail) at span starts; "sampled": the sampled-token reverse KL on every span
    cross_tokenizer: str = "full"
    divergence: str = "jsd"
    # 3 training seeds so the OPD row has a seed-level test against Base (one deterministic
    # run); ~90 CPU-s a seed with the models cached (measured on a loaded machine)
    seeds: tuple[int, ...] = (0, 1, 2)
    steps: int = 6
    batch_size: int = 4
    lr: float = 1e-4
    answer_tokens: int = 24
    threads: int = 2
    bootstrap_reps: int = 2000


CROSS_PROFILES = {"crossfamily": CrossProfile(),
                  "crossfamily-srkl": CrossProfile(cross_tokenizer="sampled", divergence="srkl")}


def _config(profile: CrossProfile, student: str, seed: int):
    from madopd.distill import preset

    return preset("opd", dict(
        student=student, teachers=[GEMMA], teacher_names=["gemma"], device="cpu", cpu=True,
        lr=profile.lr, max_steps=profile.steps, batch_size=profile.batch_size, seed=seed,
        divergence=profile.divergence, beta=0.5, cross_tokenizer=profile.cross_tokenizer,
        sampling=Sampling(temperature=1.0, max_new_tokens=profile.answer_tokens),
        checkpoint_every=0, record_every=0, verify_train=True, warmup_ratio=0.0,
        schedule="constant"))


def _evaluate(student: Any, task: Any, profile: CrossProfile) -> tuple[list, list]:
    from madopd.realworld.world import reference_nll

    states = task.eval_states()
    samples = student.rollout(states, Sampling(greedy=True, max_new_tokens=profile.answer_tokens))
    acc = [float(task.verify(st, t)) for st, t in zip(states, samples.texts)]
    return acc, reference_nll(student, states)


def run_job(row: str, seed: int, profile: CrossProfile, student: str, task: Any,
            teacher: Any) -> dict[str, Any]:
    """Train one row from the student start with one seed; evaluate on the held-out items."""
    from madopd.distill import Distiller
    from madopd.models.hf import HFStudent

    t0, c0 = time.perf_counter(), time.process_time()
    torch.manual_seed(seed)
    s = HFStudent(student, name="student", batch_size=16)
    records = []
    counts: dict[str, float] = {}
    if row != "Base":
        d = Distiller(_config(profile, student, seed), s, [teacher], task)
        records = d.train(progress=False)
        for r in records:
            for k, v in r.metrics.items():
                if k.startswith(("count/crosstok/", "count/srkl", "count/tokens_unscored",
                                 "time/")):
                    counts[k] = round(counts.get(k, 0.0) + float(v), 3)
    t_train = time.perf_counter() - t0
    acc, nll = _evaluate(s, task, profile)
    return {"row": row, "seed": seed, "accuracy": acc, "ref_nll": nll,
            "train_seconds": round(t_train, 1), "seconds": round(time.perf_counter() - t0, 1),
            "cpu_seconds": round(time.process_time() - c0, 1), "counters": counts,
            "losses": [r.loss for r in records]}


def summarize(results: list[dict], ids: list[str], families: list[str], reps: int) -> dict:
    """Per row and metric: mean [95 % interval]; OPD-Gemma - Base with its seed-level p."""
    from madopd.stats import Outcomes, bootstrap_table

    tasks: dict[str, dict[str, Outcomes]] = {}
    for key in ("ref_nll", "accuracy"):
        scale = 100.0 if key == "accuracy" else 1.0
        tasks[key] = {}
        for row in ROWS:
            runs = [r for r in results if r["row"] == row]
            if runs:
                tasks[key][row] = Outcomes([[scale * v for v in r[key]] for r in runs],
                                           tuple(ids), tuple(families),
                                           tuple(r["seed"] for r in runs))
    return bootstrap_table(tasks, [("OPD-Gemma", "Base")], B=reps)


def format_table(table: dict) -> str:
    lines = ["cross-family real demo (Gemma-3-270M teacher -> 16-layer SmolLM2 student "
             "through byte-offset spans): mean [95 % interval]",
             f"{'row':<12} {'ref NLL (nats/token)':>26} {'accuracy (%)':>24}"]
    for row, cols in table["methods"].items():
        n, a = cols["ref_nll"], cols["accuracy"]
        lines.append(f"{row:<12} {n['mean']:>8.3f} [{n['lo']:.3f}, {n['hi']:.3f}]"
                     f" {a['mean']:>8.1f} [{a['lo']:.1f}, {a['hi']:.1f}]")
    for name, d in table["diffs"].items():
        for col, c in d["columns"].items():
            if col == "overall":  # the mean of NLL and accuracy: not a quantity
                continue
            # Base is one deterministic run: Welch then tests the OPD seeds against its value
            p = ("n/a (one run per row)" if c["p_seed"] is None
                 else f"{c['p_seed']:.3g} (runs {'+'.join(str(r) for r in c.get('runs', []))})")
            lines.append(f"{name} {col}: {c['diff']:+.3f} [{c['lo']:+.3f}, {c['hi']:+.3f}], "
                         f"seed-level Welch p {p}")
    return "\n".join(lines)


def run_crossfamily_demo(profile_name: str = "crossfamily", *, out: str | Path,
                         log=print, threads: int | None = None) -> dict[str, Any]:
    from madopd.errors import ConfigError
    from madopd.models.hf import HFTeacher
    from madopd.realworld.calls import RealCallsTask
    from madopd.realworld.table import eval_items
    from madopd.realworld.world import student_path

    if profile_name not in CROSS_PROFILES:
        raise ConfigError(f"cross-family profile {profile_name!r} is unknown; valid: "
                          f"{sorted(CROSS_PROFILES)}")
    profile = CROSS_PROFILES[profile_name]
    if threads is not None:
        if threads < 1:
            raise ConfigError(f"threads: expected >= 1, got {threads}")
        profile = CrossProfile(**{**asdict(profile), "threads": int(threads)})
    torch.set_num_threads(profile.threads)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    t0, c0 = time.perf_counter(), time.process_time()
    student = str(student_path())
    teacher = HFTeacher(GEMMA, name="gemma", chat_template="plain", batch_size=4)
    task = RealCallsTask()
    t_load = time.perf_counter() - t0
    log(f"demo[real/{profile_name}]: models ready in {t_load:.0f} s; {len(ROWS)} rows x "
        f"{len(profile.seeds)} seeds, {profile.steps} steps of batch {profile.batch_size}")
    results = []
    for row in ROWS:
        for seed in profile.seeds if row != "Base" else profile.seeds[:1]:
            res = run_job(row, seed, profile, student, task, teacher)
            results.append(res)
            log(f"  {row:<10} seed {seed}: acc {100 * sum(res['accuracy']) / len(res['accuracy']):5.1f} %, "
                f"ref NLL {sum(res['ref_nll']) / len(res['ref_nll']):.3f} ({res['seconds']:.0f} s "
                f"wall, {res['cpu_seconds']:.0f} s CPU)")
    items = eval_items(task.eval_states())
    table = summarize(results, items["ids"], items["families"], profile.bootstrap_reps)
    summary = {"world": "real", "profile": profile_name, "profile_settings": asdict(profile),
               "teacher": GEMMA, "student": student, "eval_items": items, "table": table,
               "wall_seconds": round(time.perf_counter() - t0, 1),
               "cpu_seconds": round(time.process_time() - c0, 1), "runs": results,
               "note": "Gemma weights 4-bit quantized (GGUF Q4_K_M, de-quantized); loaded CPU"}
    text = format_table(table) + (
        f"\nwall time {summary['wall_seconds']:.0f} s (loading {t_load:.0f} s), process CPU "
        f"{summary['cpu_seconds']:.0f} s on {profile.threads} thread(s); machine loaded")
    (out / "results.json").write_text(json.dumps(summary, indent=1, default=str))
    (out / "table.txt").write_text(text + "\n")
    log(text)
    return summary
