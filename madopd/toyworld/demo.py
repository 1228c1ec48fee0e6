"""`madopd demo`: the paper's main table in miniature, on the toy world, on a laptop.

Rows (paper Table 1): Base, MT-SeqKD, OPD-A, OPD-B, MT-OPD, MAD-OPD, then each teacher answering
blind ("Teacher A (blind)": the single-teacher ceiling, ``ceiling.py``); columns: toy-tools
(agentic: episode success of greedy on-policy episodes through the simulated world) and toy-code
(pass@1 over ``code_samples`` sampled programs per held-out spec, unbiased estimator, verified in
the sandbox), then Overall (their mean). With one task per kind, the paper's "Agentic avg" and
"Code avg" would only repeat toy-tools and toy-code, so the printed table leaves them out. Divergence per task (paper Remark 1): JSD(0.5)
for toy-tools, reverse KL for toy-code. Every run uses ``madopd.distill`` with the toy debate
templates; only the preset's columns differ between rows. Cells: the mean over seeds with a
95 % percentile interval from a bootstrap over evaluation items x training seeds, and the
differences' tests (``madopd.stats``, ``demo_stats.py``); every job stores its per-item outcomes.

Execution: (1) load/build the zoo; (2) warm the debate caches (teacher-forced states do not
depend on the student, so one debate per state serves every MAD-style run and seed); (3) every
(row, task, seed) is a job run in a pool of ``workers`` processes with one torch thread each;
(4) ``results.json``, a run directory per job (``madopd.runs.RunStore``) and ``report.html``.
"""

from __future__ import annotations

import json
import math
import os
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from madopd.errors import ConfigError
from madopd.toyworld.demo_stats import (
    HOLM_NAME,
    ITEM_BOOT_NAME,
    PERM_NAME,
    SEED_TEST_NAME,
    TEST_NAME,
    format_gains,
    gains,
    interval_tables,
)
from madopd.toyworld.progress import Phase, Ticker
from madopd.toyworld.zoo import quiet_worker
from madopd.types import Sampling

TASKS = ("toy-tools", "toy-code")
MAIN_ROWS = ("Base", "MT-SeqKD", "OPD-A", "OPD-B", "MT-OPD", "MAD-OPD")
BLIND_ROWS = ("Teacher A (blind)", "Teacher B (blind)", "Teacher C (blind)")
DIVERGENCE = {"toy-tools": ("jsd", 0.5), "toy-code": ("rkl", 0.5)}  # paper Remark 1
METRIC = {"toy-tools": "episode_success", "toy-code": "pass@1"}
GREEDY_DEBATE = Sampling(greedy=True, max_new_tokens=12)


@dataclass(frozen=True)
class DemoProfile:
    zoo: str = "default"
    seeds: tuple[int, ...] = (0, 1, 2, 3, 4)
    steps: int = 100
    batch_size: int = 32
    lr: float = 2e-3
    code_samples: int = field(default=4, metadata={"help": "samples per held-out spec for pass@k"})
    eval_episodes: int | None = field(default=None, metadata={"help": "None = all held-out episodes"})
    record_every: int = 25
    ablations: bool = field(default=False, metadata={
        "help": "the paper's ablations (toyworld/ablations.py): components, divergences, rounds "
                "R = 0..3, confidence robustness, on the ablation zoo"})
    ablation_zoo: str = field(default="ablations", metadata={
        "help": "zoo profile of the ablation world (teachers trained for 3 debate rounds)"})
    control: bool = field(default=False, metadata={"help": "also run the shared-blind-spot world"})
    control_seeds: tuple[int, ...] | None = field(
        default=None, metadata={"help": "the control world's seeds (None = seeds)"})
    blind_teachers: bool = field(default=True, metadata={
        "help": "rows for each teacher answering blind (no transcript) on the same items"})
    bootstrap: int = field(default=10_000, metadata={"help": "bootstrap resamples (items x seeds)"})

    main: bool = field(default=True, metadata={"help": "run the main table (False: only the extra groups)"})
    multimode: bool = field(default=False, metadata={
        "help": "also run the multi-mode code world: MAD-OPD with JSD / RKL / FKL (issue 13.7)"})
    multimode_zoo: str = field(default="multimode", metadata={"help": "zoo profile of that world"})
    multimode_samples: int = field(default=8, metadata={"help": "samples per held-out spec there"})

    def __post_init__(self):
        if len(self.seeds) < 1 or len(set(self.seeds)) != len(self.seeds):
            raise ConfigError(f"DemoProfile.seeds must be distinct and non-empty, got {self.seeds}")
        if self.control_seeds is not None and not set(self.control_seeds) <= set(self.seeds):
            raise ConfigError(f"DemoProfile.control_seeds {self.control_seeds} must be among seeds {self.seeds}")
        if self.bootstrap < 100:
            raise ConfigError(f"DemoProfile.bootstrap must be >= 100, got {self.bootstrap}")


PROFILES = {
    "smoke": DemoProfile(zoo="smoke", seeds=(0, 1), steps=4, batch_size=8, code_samples=2,
                         eval_episodes=20, record_every=2),
    # budget: 20 min cold on 2 idle cores (measured 19 min 2 s, zoos included; README "Time")
    "default": DemoProfile(control=True, control_seeds=(0, 1, 2)),
    "full": DemoProfile(zoo="full", ablations=True, control=True, multimode=True),
    # only the paper's ablations (toyworld/ablations.py), 5 seeds, on their own zoo (3-round
    # teachers). Budget, estimated from the default profile's per-run cost (not measured on an
    # idle machine): ~115 training runs + one zoo of 2 teachers, about 30 min on 2 idle cores
    "ablations": DemoProfile(main=False, ablations=True, blind_teachers=False),
    "ablations-smoke": DemoProfile(zoo="smoke", main=False, ablations=True, blind_teachers=False,
                                   ablation_zoo="ablations-smoke", seeds=(0, 1), steps=4,
                                   batch_size=8, code_samples=2, eval_episodes=20, record_every=2,
                                   bootstrap=200),
    # the main table's rows trained 3x longer (300 steps), 5 seeds, no control world or blind rows:
    # whether the collapse onto one operation at the default 100 steps goes away with training
    # (run with --tasks toy-tools; README "The ceiling on toy-tools")
    "long": DemoProfile(steps=300, blind_teachers=False),
    # only the multi-mode group (madopd/toyworld/multimode.py), with 5 seeds; and its tiny twin for tests
    "multimode": DemoProfile(main=False, multimode=True, seeds=(0, 1, 2, 3, 4)),
    "multimode-smoke": DemoProfile(zoo="smoke", main=False, multimode=True, multimode_zoo="multimode-smoke",
                                   seeds=(0, 1), steps=4, batch_size=8, multimode_samples=2,
                                   record_every=2),
}
MULTIMODE_DIVERGENCES = ("jsd", "rkl", "fkl")


@dataclass(frozen=True)
class Job:
    """One run: a table row on one task with one seed (``world`` = which zoo)."""

    row: str
    task: str
    seed: int
    world: str = "default"
    group: str = "main"  # main | divergence | rounds | ablation | control
    preset: str = "mad_opd"
    teachers: tuple[int, ...] = (0, 1)
    rounds: int = 0
    weighting: str = "uniform"
    divergence: str | None = None  # None = the task's (Remark 1)
    transcript_in_score: bool = True  # False: weights from the debate, teachers score blind
    tau: float = 1.0  # confidence softmax temperature (Eq. 7)
    shuffle_confidence: bool = False  # weights permuted across teachers per state (ablation)
    opad_first_step: bool = False  # train on each episode's first decision point only (no OPAD)

    @property
    def name(self) -> str:
        return f"{self.group}/{self.world}/{self.task}/{self.row}/seed{self.seed}"


def row_jobs(row: str, task: str, seed: int, K: int, label: str | None = None, **kw) -> Job:
    every = tuple(range(K))
    table = {
        "Base": dict(preset="base", teachers=()),
        "MT-SeqKD": dict(preset="mt_seqkd", teachers=every, weighting="fixed"),
        "OPD-A": dict(preset="opd", teachers=(0,)),
        "OPD-B": dict(preset="opd", teachers=(1,)),
        "OPD-C": dict(preset="opd", teachers=(2,)),
        "MT-OPD": dict(preset="mt_opd", teachers=every),
        "MAD-OPD": dict(preset="mad_opd", teachers=every, rounds=2, weighting="confidence"),
        # no training: the teacher itself, blind (no transcript), through the student's evaluation
        **{name: dict(preset="teacher_blind", teachers=(k,)) for k, name in enumerate(BLIND_ROWS)},
    }
    if row not in table:
        raise ConfigError(f"demo row {row!r} is unknown; valid: {sorted(table)}")
    return Job(row=label or row, task=task, seed=seed, **{**table[row], **kw})


def plan(profile: DemoProfile, tasks: tuple[str, ...] = TASKS, K: int = 2) -> list[Job]:
    rows = list(MAIN_ROWS) + (["OPD-C"] if K == 3 else [])
    blind = list(BLIND_ROWS[:K]) if profile.blind_teachers else []
    jobs = ([row_jobs(r, t, s, K) for t in tasks for r in rows + blind for s in profile.seeds]
            if profile.main else [])
    if profile.ablations:
        from madopd.toyworld.ablations import ablation_jobs

        jobs += ablation_jobs(profile.seeds, tasks, K, row_jobs)
    if profile.control:
        for t in tasks:
            for r in ["Base", "OPD-A", "OPD-B", "MT-OPD", "MAD-OPD"] + blind:
                for s in profile.control_seeds or profile.seeds:
                    jobs.append(row_jobs(r, t, s, K, group="control", world="blind"))
    if profile.multimode and "toy-code" in tasks:
        jobs += multimode_jobs(profile, K)
    return jobs


def multimode_jobs(profile: DemoProfile, K: int = 2) -> list[Job]:
    """The multi-mode code world's runs: Base and MAD-OPD under each divergence, every seed
    (same Base student, same steps and batch, same debate cache; only the divergence differs)."""
    jobs = []
    for s in profile.seeds:
        jobs.append(row_jobs("Base", "toy-code", s, K, group="multimode", world="multi"))
        for d in MULTIMODE_DIVERGENCES:
            jobs.append(row_jobs("MAD-OPD", "toy-code", s, K, group="multimode", world="multi",
                                 divergence=d, label=f"MAD-OPD {d}"))
    return jobs


# --------------------------------------------------------------------------- one job

def _protocol(job: Job):
    from madopd.debate import DebateProtocol, DebateTemplates
    from madopd.toyworld.toy_common import TOY_TEMPLATE_FIELDS

    fields = dict(TOY_TEMPLATE_FIELDS)
    if not job.transcript_in_score:
        fields["score"] = fields["score_blind"]  # debate for the weights only
    return DebateProtocol(rounds=job.rounds, templates=DebateTemplates(**fields), sampling=GREEDY_DEBATE)


def job_task_and_protocol(job_fields: dict, zoo_spec: dict, source: str = "config"):
    """The task and debate protocol of a demo run from its config's ``demo_job`` and
    ``demo_zoo`` (what ``run_job`` builds; ``madopd train --config RUN/config.json``)."""
    from madopd.toyworld.zoo import ZooSpec, make_tasks

    try:
        job = Job(**{**job_fields, "teachers": tuple(job_fields["teachers"])})
        spec = ZooSpec(**zoo_spec)
    except (TypeError, KeyError) as e:
        raise ConfigError(f"{source}: demo_job / demo_zoo: {e}") from e
    tools, code = make_tasks(spec)
    task = tools if job.task == "toy-tools" else code
    return task, (_protocol(job) if job.teachers and job.preset != "teacher_blind" else None)


def _config(job: Job, profile: DemoProfile, zoo_paths: dict, run_dir: Path, cache_path: str | None):
    from madopd.distill import preset

    div, beta = DIVERGENCE[job.task]
    base = dict(
        student=str(zoo_paths["student"]), teachers=[str(zoo_paths["teachers"][k]) for k in job.teachers],
        teacher_names=[zoo_paths["names"][k] for k in job.teachers], device="cpu", cpu=True,
        task=job.task, lr=profile.lr, max_steps=profile.steps, batch_size=profile.batch_size,
        seed=job.seed, sampling=Sampling(temperature=1.0, max_new_tokens=12),
        debate_sampling=GREEDY_DEBATE, divergence=job.divergence or div, beta=beta,
        checkpoint_every=0, record_every=profile.record_every, record_topk=5,
        verify_train=job.task == "toy-tools", tau=job.tau,  # code is verified in bulk at evaluation time
        debate_cache=True, debate_cache_path=cache_path, warmup_ratio=0.05, schedule="cosine",
        opad_mode="teacher_forced")
    fields: dict[str, Any] = {"rounds": job.rounds, "weighting": job.weighting}
    if job.preset == "mt_seqkd":
        fields["fixed_weights"] = [1.0 / len(job.teachers)] * len(job.teachers)
    if job.preset == "base":
        fields = {}
    return preset(job.preset, base, **fields)


def evaluate_code(student, task, n_samples: int, seed: int, limit: int | None = None,
                  outcomes: list | None = None) -> dict[str, float]:
    """pass@1 and pass@n over held-out specs: ``n_samples`` samples each (T = 1), sandboxed tests.

    ``outcomes`` (optional list) receives ``{"id", "family", "value"}`` per spec, value = the
    spec's unbiased pass@1 = c / n; the macro mean of these over families is ``pass@1``.
    """
    from collections import defaultdict

    from madopd.evaluate import pass_at_k

    states = task.eval_states()[:limit]
    reps = [s for s in states for _ in range(n_samples)]
    out = student.rollout(reps, Sampling(temperature=1.0, max_new_tokens=12, seed=seed))
    ok = task.verify_batch(reps, out.texts)
    extra = {}
    if hasattr(task, "classify"):  # the multi-mode world: where the student's mass sits
        from madopd.toyworld.multimode import (
            flatten,
            form_summary,
            program_logprobs,
            sample_metrics,
        )

        extra = sample_metrics(task, states, out.texts, ok, n_samples)
        extra.update(flatten(form_summary(states, program_logprobs(
            student, [s.messages for s in states], states)), "modes"))
    per_fam: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for i, st in enumerate(states):
        c = int(sum(ok[i * n_samples:(i + 1) * n_samples]))
        per_fam[st.family].append((pass_at_k(n_samples, c, 1), pass_at_k(n_samples, c, n_samples)))
        if outcomes is not None:
            outcomes.append({"id": st.id, "family": st.family, "value": per_fam[st.family][-1][0]})
    res = {}
    for k, key in ((0, "pass@1"), (1, f"pass@{n_samples}")):
        fam = {f: sum(v[k] for v in vals) / len(vals) for f, vals in per_fam.items()}
        res[key] = sum(fam.values()) / len(fam)  # macro over families
        res.update({f"{key}/{f}": v for f, v in fam.items()})
    res["greedy_accuracy"] = float("nan")
    res.update(extra)
    res.update({f"count/sandbox_{k}": float(v) for k, v in task.counters.items()})
    return res


def operation_calls(outcomes: list[dict]) -> dict[str, float]:
    """The collapse metric of toy-tools (issue 28, Build 3), from evaluated episodes' actions.

    Per episode, the operation of its first operation call (``add 41 17`` -> add; none if it
    never calls one). ``ops/distinct`` = distinct operations over all held-out episodes (1: the
    policy calls one operation whatever the task word, i.e. collapsed; 5 = one per family
    possible); per family, ``ops/distinct/<family>`` and ``ops/right/<family>`` (share of its
    episodes whose operation is the family's own); ``ops/none`` = episodes with no call.
    """
    import re

    op = re.compile(r"^(add|sub|max|min|dst) -?\d{1,4} -?\d{1,4}$")
    by_fam: dict[str, list[str | None]] = {}
    for o in outcomes:
        first = next((m.group(1) for a in o.get("actions", []) if (m := op.match(str(a).strip()))), None)
        by_fam.setdefault(o["family"], []).append(first)
    called = [x for v in by_fam.values() for x in v]
    out = {"ops/distinct": float(len({x for x in called if x is not None})),
           "ops/none": float(sum(x is None for x in called))}
    for fam, ops in by_fam.items():
        out[f"ops/distinct/{fam}"] = float(len({x for x in ops if x is not None}))
        out[f"ops/right/{fam}"] = sum(x == fam for x in ops) / len(ops)
    return out


def demo_eval_settings(job: Job, profile: DemoProfile) -> dict[str, int]:
    """How the demo scores this job (stored in the run's config as ``demo_eval``)."""
    n = profile.multimode_samples if job.group == "multimode" else profile.code_samples
    return {"eval_episodes": profile.eval_episodes, "code_samples": n}


def score_policy(policy, task, job: Job, max_new_tokens: int, opad_max_steps: int,
                 settings: dict, outcomes: list | None = None) -> tuple[float, dict[str, float]]:
    """The demo's one definition of a job's score (``madopd eval`` on a demo run uses it too):
    toy-tools = episode success of greedy episodes (what Distiller.evaluate does, for a student
    or a blind teacher), toy-code = pass@1 of ``code_samples`` samples per spec (T = 1, seeded
    with the job's seed), macro over families. Returns (score, every metric)."""
    from madopd.distill.evaluation import evaluate_student

    outcomes = [] if outcomes is None else outcomes
    if job.task == "toy-tools":
        ev = evaluate_student(policy, task, Sampling(greedy=True, max_new_tokens=max_new_tokens),
                              limit=settings["eval_episodes"], batch_size=512,
                              max_steps=opad_max_steps, outcomes=outcomes)
        ev.update(operation_calls(outcomes))  # the collapse metric (ops/*)
        score = ev["episode_success"]
    else:
        ev = evaluate_code(policy, task, settings["code_samples"], seed=job.seed,
                           outcomes=outcomes)
        score = ev["pass@1"]
    return float(score), {k: float(v) for k, v in ev.items()}


def score_demo_run(run_dir: str | Path, checkpoint: str, config: dict) -> dict[str, Any]:
    """Score ``checkpoint`` exactly as the demo scored the run whose config is ``config``
    (its demo_job / demo_zoo / demo_eval fields): ``madopd eval --model RUN``."""
    import torch

    from madopd.models.hf import HFStudent

    task, _ = job_task_and_protocol(config["demo_job"], config["demo_zoo"], str(run_dir))
    job = Job(**{**config["demo_job"], "teachers": tuple(config["demo_job"]["teachers"])})
    if job.preset == "teacher_blind":
        raise ConfigError(f"{run_dir}: a blind-teacher row has no student checkpoint to score")
    torch.manual_seed(job.seed)
    policy = HFStudent(checkpoint, name="student", batch_size=512)
    outcomes: list[dict] = []
    score, ev = score_policy(policy, task, job, config["sampling"]["max_new_tokens"],
                             config["opad_max_steps"], config["demo_eval"], outcomes)
    return {"score": score, "eval": ev, "items": _items(outcomes), "job": asdict(job)}


def _items(outcomes: list[dict]) -> dict[str, list]:
    return {"ids": [o["id"] for o in outcomes], "families": [o["family"] for o in outcomes],
            "values": [o["value"] for o in outcomes]}


def run_job(job: Job, profile: DemoProfile, zoo_paths: dict, out_dir: str,
            cache_path: str | None) -> dict[str, Any]:
    """Train (unless Base or a blind teacher) and evaluate one job; a worker process, one thread.

    Returns the score, the evaluation's metrics, per-item outcomes (``items``: ids, families,
    values in [0, 1]; what the bootstrap resamples), timings and the run directory.
    """
    import dataclasses

    import torch

    quiet_worker()
    from madopd.distill import Distiller
    from madopd.models.hf import HFStudent, HFTeacher
    from madopd.runs import RunStore
    from madopd.toyworld.ceiling import BlindTeacherPolicy
    from madopd.toyworld.zoo import ZooSpec, make_tasks

    t0, c0 = time.perf_counter(), time.process_time()
    torch.manual_seed(job.seed)
    tools, code = make_tasks(ZooSpec(**zoo_paths["spec"]))
    task = tools if job.task == "toy-tools" else code
    if job.opad_first_step:
        from madopd.toyworld.ablations import FirstStepOnly

        task = FirstStepOnly(task)
    run_dir = Path(out_dir) / "runs" / job.name.replace("/", "__").replace(" ", "_").replace("(", "").replace(")", "")
    blind = job.preset == "teacher_blind"
    cfg_job = dataclasses.replace(job, preset="base", teachers=()) if blind else job
    cfg = _config(cfg_job, profile, zoo_paths, run_dir, cache_path)
    # demo_job and demo_zoo: what `madopd train --config RUN/config.json` needs to re-run it
    store = RunStore(run_dir, config={**cfg.to_dict(), "demo_job": asdict(job),
                                      "demo_zoo": zoo_paths["spec"],
                                      "demo_eval": demo_eval_settings(job, profile)})
    outcomes: list[dict] = []
    records: list = []
    steps = 1
    if blind:
        k = job.teachers[0]
        policy = BlindTeacherPolicy(HFTeacher(str(zoo_paths["teachers"][k]), name=zoo_paths["names"][k],
                                              batch_size=512), _protocol(job))
    else:
        policy = HFStudent(str(zoo_paths["student"]), name="student", batch_size=512)
        teachers = [HFTeacher(str(zoo_paths["teachers"][k]), name=zoo_paths["names"][k], batch_size=512)
                    for k in job.teachers]
        cls = Distiller
        if job.shuffle_confidence:
            from madopd.toyworld.ablations import shuffled_confidence_distiller

            cls = shuffled_confidence_distiller(job.seed)
        d = cls(cfg, policy, teachers, task, debate_protocol=_protocol(job) if teachers else None,
                store=store)
        records = d.train(progress=False) if job.preset != "base" else []
        steps = max(1, d.step_count)
    t_train = time.perf_counter() - t0
    score, ev = score_policy(policy, task, job, cfg.sampling.max_new_tokens, cfg.opad_max_steps,
                             demo_eval_settings(job, profile), outcomes)
    store.log_metrics(steps, {f"final/{k}": v for k, v in ev.items()})
    timings = {}
    for rec in records:
        for k, v in rec.metrics.items():
            if k.startswith("time/"):
                timings[k] = timings.get(k, 0.0) + v
    return {"job": asdict(job), "score": float(score), "eval": ev, "run_dir": str(run_dir),
            "items": _items(outcomes),
            "train_seconds": round(t_train, 2), "seconds": round(time.perf_counter() - t0, 2),
            "cpu_seconds": round(time.process_time() - c0, 2),
            "timings": {k: round(v, 2) for k, v in timings.items()},
            "final_loss": records[-1].loss if records else None}


def evaluation_key(job: Job, profile: DemoProfile, paths: dict) -> tuple | None:
    """What an evaluation-only job's outcomes depend on; None for a job that trains.

    Base and the blind teachers do not train, so their outcomes are fixed by the evaluated model,
    the held-out items and the evaluation's sampling: greedy toy-tools episodes ignore the seed,
    sampled toy-code programs do not. Jobs with equal keys give equal outcomes (tested), so the
    demo runs the first and copies it to the others (``replicated_from`` in results.json).
    """
    if job.preset not in ("base", "teacher_blind"):
        return None
    p = paths[job.world]
    model = p["student"] if job.preset == "base" else p["teachers"][job.teachers[0]]
    spec = p["spec"]
    items = (job.task, spec["tool_episodes"], spec["eval_episodes"], spec.get("code_world", "single"))
    if job.task == "toy-tools":
        return (job.preset, model, items, profile.eval_episodes, job.rounds, job.transcript_in_score)
    n = profile.multimode_samples if job.group == "multimode" else profile.code_samples
    return (job.preset, model, items, n, job.seed)


def split_replicas(jobs: list[Job], profile: DemoProfile, paths: dict
                   ) -> tuple[list[Job], list[tuple[Job, Job]]]:
    """-> (jobs to run, [(job to copy into, the run job it equals)]), in ``jobs`` order.

    Evaluation-only jobs with equal ``evaluation_key``; and the ablation tables' shared training
    runs (the same run shown in several tables, ``ablations.training_key``)."""
    from madopd.toyworld.ablations import GROUPS, training_key

    first: dict[tuple, Job] = {}
    run, copies = [], []
    for j in jobs:
        key = evaluation_key(j, profile, paths)
        if key is None and j.group in GROUPS:
            key = training_key(j, DIVERGENCE[j.task][0])
        if key is not None and key in first:
            copies.append((j, first[key]))
            continue
        if key is not None:
            first[key] = j
        run.append(j)
    return run, copies


def replicate(result: dict[str, Any], job: Job) -> dict[str, Any]:
    """``result`` (of an equal-key job) as ``job``'s: same outcomes, no time spent."""
    return {**result, "job": asdict(job), "replicated_from": result["job"] | {},
            "train_seconds": 0.0, "seconds": 0.0, "cpu_seconds": 0.0}


# --------------------------------------------------------------------------- caches

def warm_debates(world: str, task_name: str, protocols: list[tuple[int, bool]], zoo_paths: dict,
                 cache_dir: str, shard: int = 0, n_shards: int = 1,
                 progress_file: str | None = None) -> dict[str, Any]:
    """Debate every training state once per protocol (worker process, one thread); the states
    debated so far go to ``progress_file`` (madopd.toyworld.progress)."""
    quiet_worker()
    from madopd.cache import DebateCache, warm_cache
    from madopd.debate import Debate
    from madopd.distill.data import TrainPool
    from madopd.models.hf import HFTeacher
    from madopd.toyworld.zoo import ZooSpec, make_tasks

    t0, c0 = time.perf_counter(), time.process_time()
    tools, code = make_tasks(ZooSpec(**zoo_paths["spec"]))
    task = tools if task_name == "toy-tools" else code
    unique = {json.dumps(s.messages, sort_keys=True): s
              for s in TrainPool(task, opad_mode="teacher_forced", batch_size=1, seed=0).items}
    states = list(unique.values())[shard::n_shards]  # identical states are debated once
    teachers = [HFTeacher(str(p), name=n, batch_size=512)
                for p, n in zip(zoo_paths["teachers"], zoo_paths["names"])]
    stats = {}
    ticker = Ticker(progress_file, len(states) * len(protocols))
    for r, in_score in protocols:
        job = Job(row="cache", task=task_name, seed=0, rounds=r, transcript_in_score=in_score)
        debate = Debate(teachers, _protocol(job))
        cache = DebateCache(cache_file(cache_dir, world, task_name, r, in_score) + f".shard{shard}")
        counts: dict[str, int] = {}
        for i in range(0, max(1, len(states)), _WARM_BATCH):  # warm_cache's own batch size
            chunk = warm_cache(debate, states[i:i + _WARM_BATCH], cache, batch_size=_WARM_BATCH,
                               progress=False)
            counts = {k: counts.get(k, 0) + v for k, v in chunk.items()}
            ticker.update(len(states[i:i + _WARM_BATCH]))
        stats[f"R={r}{'' if in_score else ' blind-score'}"] = counts
    return {"seconds": round(time.perf_counter() - t0, 2), "cpu_seconds": round(time.process_time() - c0, 2),
            "states": len(states), "stats": stats}


_WARM_BATCH = 512  # states per teacher batch of the debate cache


def _merge_shards(cache_dir: Path) -> None:
    """Append every ``*.jsonl.shardN`` to its ``*.jsonl`` (one writer per file, never shared)."""
    for shard in sorted(cache_dir.glob("*.jsonl.shard*")):
        target = shard.with_name(shard.name.rsplit(".shard", 1)[0])
        text = shard.read_text(encoding="utf-8")
        with target.open("a", encoding="utf-8") as f:
            f.write(text if not text or text.endswith("\n") else text + "\n")
        shard.unlink()


def cache_file(cache_dir: str, world: str, task: str, rounds: int, in_score: bool = True) -> str:
    # the protocol's templates are part of the cache key, so each variant has its own file
    return str(Path(cache_dir) / f"{world}-{task}-R{rounds}{'' if in_score else '-blindscore'}.jsonl")


# --------------------------------------------------------------------------- the table

def mean_se(values: list[float]) -> tuple[float, float]:
    n = len(values)
    if n == 0:
        return float("nan"), float("nan")
    m = sum(values) / n
    if n == 1:
        return m, float("nan")
    var = sum((v - m) ** 2 for v in values) / (n - 1)
    return m, math.sqrt(var / n)


def summarize(results: list[dict], tasks: tuple[str, ...] = TASKS) -> dict[str, Any]:
    """Group per (group, world, row, task): mean, standard error, per-seed values (in %)."""
    table: dict[str, dict] = {}
    order = {name: i for i, name in enumerate(MAIN_ROWS + ("OPD-C",) + BLIND_ROWS)}
    results = sorted(results, key=lambda r: (order.get(r["job"]["row"], len(order)), r["job"]["row"]))
    for r in results:
        j = r["job"]
        key = f"{j['group']}/{j['world']}"
        row = table.setdefault(key, {}).setdefault(j["row"], {})
        cell = row.setdefault(j["task"], {"values": [], "seeds": []})
        cell["values"].append(100.0 * r["score"])
        cell["seeds"].append(j["seed"])
    for rows in table.values():
        for row in rows.values():
            for t in list(row):
                cell = row[t]
                order = sorted(range(len(cell["seeds"])), key=lambda i: cell["seeds"][i])
                cell["values"] = [cell["values"][i] for i in order]
                cell["seeds"] = [cell["seeds"][i] for i in order]
                cell["mean"], cell["se"] = mean_se(cell["values"])
            # averages per seed: agentic = toy-tools, code = toy-code, overall = their mean
            if all(t in row for t in tasks):
                per_seed = [sum(row[t]["values"][i] for t in tasks) / len(tasks)
                            for i in range(min(len(row[t]["values"]) for t in tasks))]
                m, se = mean_se(per_seed)
                row["overall"] = {"values": per_seed, "mean": m, "se": se}
    return table


def composite_tables(table: dict, tasks: tuple[str, ...] = TASKS) -> dict[str, dict]:
    """Extra tables printed after the main one: the control world. (The ablations have their
    own section: ``toyworld/ablations.py``, ``summary["ablations"]``.)"""
    out: dict[str, dict] = {}
    ctrl = table.get("control/blind")
    if ctrl:
        out["control: shared blind spot (every teacher knows only add/sub)"] = ctrl
    return out


def format_table(rows: dict, title: str, tasks: tuple[str, ...] = TASKS,
                 intervals: dict | None = None) -> str:
    """Mean over seeds with its 95 % bootstrap interval [lo, hi] (items x seeds) when
    ``intervals`` (a ``madopd.stats.bootstrap_table`` result, fractions) has the cell, else mean ± SE."""
    # no "Agentic avg" / "Code avg": one task each, they would repeat toy-tools and toy-code
    cols = [("toy-tools", "toy-tools"), ("toy-code", "toy-code"), ("overall", "Overall")]
    methods = (intervals or {}).get("methods", {})
    w = max([len(r) for r in rows] + [10])
    cw = 19 if methods else 13
    head = f"{'method':<{w}} | " + " | ".join(f"{c:>{cw}}" for _, c in cols)
    lines = [title, head, "-" * len(head)]

    def cell(name, row, key):
        if key not in row:
            return f"{'-':>{cw}}"
        c = row[key]
        iv = methods.get(name, {}).get(key)
        if iv is not None:
            return f"{c['mean']:5.1f} [{100 * iv['lo']:5.1f},{100 * iv['hi']:5.1f}]".rjust(cw)
        se = "  n/a" if c["se"] != c["se"] else f"{c['se']:5.1f}"
        return f"{c['mean']:6.1f} ±{se}".rjust(cw)

    for name, row in rows.items():
        lines.append(f"{name:<{w}} | " + " | ".join(cell(name, row, k) for k, _ in cols))
    return "\n".join(lines)


# --------------------------------------------------------------------------- the command

def zoo_paths_of(zoo) -> dict:
    return {"student": str(zoo.student_path), "teachers": [str(p) for p in zoo.teacher_paths],
            "names": zoo.teacher_names, "spec": asdict(zoo.spec)}


def run_demo(profile_name: str = "default", *, out: str | Path = "madopd-out",
             workers: int = 2, zoo_root: str | None = None, tasks: tuple[str, ...] = TASKS,
             rebuild_zoo: bool = False, log=print, progress: bool = True) -> dict[str, Any]:
    """Run a demo profile into ``out``; ``progress``: one bar with an ETA per long phase (zoo
    training, debate caches, the runs; stderr or a notebook widget), ``log``: phase lines and
    one summary line per finished run."""
    from madopd.toyworld.zoo import load_zoo, profile_spec

    if profile_name not in PROFILES:
        raise ConfigError(f"demo profile {profile_name!r} is unknown; valid: {sorted(PROFILES)}")
    for t in tasks:
        if t not in TASKS:
            raise ConfigError(f"demo task {t!r} is unknown; valid: {list(TASKS)}")
    profile = PROFILES[profile_name]
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    worlds = {}
    if profile.ablations:
        from madopd.toyworld.ablations import WORLD

        worlds[WORLD] = load_zoo(profile_spec(profile.ablation_zoo), root=zoo_root, workers=workers,
                                 force=rebuild_zoo, log=log)
    if profile.main:
        worlds["default"] = load_zoo(profile_spec(profile.zoo), root=zoo_root, workers=workers,
                                     force=rebuild_zoo, log=log, progress=progress)
    if profile.multimode and "toy-code" in tasks:
        worlds["multi"] = load_zoo(profile_spec(profile.multimode_zoo), root=zoo_root,
                                   workers=workers, force=rebuild_zoo, log=log, progress=progress)
    if profile.control:
        worlds["blind"] = load_zoo(profile_spec(profile.zoo, world="blind"), root=zoo_root,
                                   workers=workers, force=rebuild_zoo, log=log, progress=progress)
    t_zoo = time.perf_counter() - t0
    if not worlds:
        raise ConfigError(f"demo profile {profile_name!r} runs nothing on tasks {list(tasks)}")
    K = next(iter(worlds.values())).spec.n_teachers
    jobs = plan(profile, tasks, K)
    paths = {w: zoo_paths_of(z) for w, z in worlds.items()}
    jobs, copies = split_replicas(jobs, profile, paths)
    if copies:
        log(f"demo: {len(copies)} runs equal another run (an evaluation with the same model, items "
            f"and sampling seed, or one ablation run shown in several tables); they are copied "
            f"from it, not rerun (results.json: replicated_from)")
    cache_dir = out / "debate-cache"
    cache_dir.mkdir(exist_ok=True)
    need = sorted({(j.world, j.task, j.rounds, j.transcript_in_score) for j in jobs if j.rounds > 0})
    log(f"demo[{profile_name}]: zoo ready in {t_zoo:.0f} s; warming {len(need)} debate caches, "
        f"then {len(jobs)} runs on {workers} processes")
    t1 = time.perf_counter()
    warm = {}
    by_wt: dict[tuple, list[tuple[int, bool]]] = {}
    for w, t, r, in_score in need:
        by_wt.setdefault((w, t), []).append((r, in_score))
    results: list[dict] = []

    def submit(pool, j: Job):
        cache = cache_file(str(cache_dir), j.world, j.task, j.rounds, j.transcript_in_score) \
            if j.rounds else None
        return pool.submit(run_job, j, profile, paths[j.world], str(out), cache)

    with _pool(workers) as pool:
        # debate caches first; runs without a debate start meanwhile; debate runs wait for them
        # each cache is debated in `workers` shards (one file each, merged below)
        shards = [(w, t, rs, i) for (w, t), rs in by_wt.items() for i in range(workers)]
        files = [cache_dir / f".progress-{w}-{t}-{i}" for w, t, _, i in shards]
        futs = {pool.submit(warm_debates, w, t, rs, paths[w], str(cache_dir), i, workers, str(f)):
                (w, t, i) for (w, t, rs, i), f in zip(shards, files)}
        ordered = _longest_first(jobs)
        run_futs = [submit(pool, j) for j in ordered if j.rounds == 0]
        with Phase(f"debate caches ({len(need)})", None, unit="state",
                   enabled=progress and bool(futs), log=log) as phase:
            for f in phase.as_completed(list(futs), files):
                key = futs[f]
                warm["/".join(map(str, key))] = res = f.result()
                phase.log(f"  debate cache {key[0]}/{key[1]} shard {key[2] + 1}/{workers}: "
                          f"{res['states']} states in {res['seconds']:.0f} s")
        for f in files:
            f.unlink(missing_ok=True)
        _merge_shards(cache_dir)
        t_warm = time.perf_counter() - t1
        log(f"demo: debate caches ready after {t_warm:.0f} s")
        run_futs += [submit(pool, j) for j in ordered if j.rounds > 0]
        with Phase(f"demo runs ({len(jobs)})", len(jobs), unit="run", enabled=progress,
                   log=log) as phase:
            for i, f in enumerate(phase.as_completed(run_futs), 1):
                res = f.result()
                results.append(res)
                phase.update(1)
                j = res["job"]
                phase.log(f"  [{i}/{len(jobs)}] {j['group']}/{j['world']} {j['task']:<9} "
                          f"{j['row']:<24} seed {j['seed']}: {100 * res['score']:5.1f} "
                          f"({res['seconds']:.0f} s)")
    by_job = {(r["job"]["group"], r["job"]["world"], r["job"]["task"], r["job"]["row"],
               r["job"]["seed"]): r for r in results}
    results += [replicate(by_job[(src.group, src.world, src.task, src.row, src.seed)], j)
                for j, src in copies]
    table = summarize(results, tasks)
    main = table.get("main/default", {})
    intervals = interval_tables(results, B=profile.bootstrap)
    extra = composite_tables(table, tasks)
    control_key = next((k for k in extra if k.startswith("control")), None)
    summary = {
        "profile": profile_name, "profile_settings": asdict(profile),
        "wall_seconds": round(time.perf_counter() - t0, 1), "zoo_seconds": round(t_zoo, 1),
        "debate_cache_seconds": round(t_warm, 1), "workers": workers,
        "runs_replicated": len(copies), "runs_executed": len(jobs),
        # CPU seconds (one thread each): what the work costs on an idle machine, whatever the load
        "cpu_seconds": {"runs": round(sum(r.get("cpu_seconds", 0.0) for r in results), 1),
                        "debate_cache": round(sum(w.get("cpu_seconds", 0.0) for w in warm.values()), 1)},
        "metrics": {t: METRIC[t] for t in tasks},
        "divergences": {t: DIVERGENCE[t][0] for t in tasks},
        "tests": {"primary": SEED_TEST_NAME, "secondary": PERM_NAME, "adjustment": HOLM_NAME,
                  "alpha": 0.05, "decision": "significant = Holm-adjusted seed-level Welch p < alpha",
                  "items_only": ITEM_BOOT_NAME,
                  "interval": f"95 % percentile interval, paired bootstrap over items x seeds "
                              f"(descriptive: {TEST_NAME}), B = {profile.bootstrap}"},
        "table": main, "intervals": intervals.get("main/default", {}),
        "gain": gains(intervals.get("main/default", {})),
        "extra": extra, "groups": table, "group_intervals": intervals,
        "extra_intervals": {control_key: intervals["control/blind"]} if control_key in extra and
        "control/blind" in intervals else {},
        "zoo": {w: {"spec": asdict(z.spec), "report": z.report} for w, z in worlds.items()},
        "debate_cache": warm, "runs": results,
    }
    summary["extra_gain"] = {k: gains(v) for k, v in summary["extra_intervals"].items()}
    from madopd.toyworld.demo_stats import collapse_summary

    summary["collapse"] = collapse_summary(results)
    if profile.ablations:
        from madopd.toyworld.ablations import ablation_summary

        summary["ablations"] = ablation_summary(
            table, intervals, results, {"toy-tools": "episode_success", "toy-code": "pass@1"})
    if "multi" in worlds:
        from madopd.toyworld.multimode import multimode_summary

        summary["multimode"] = multimode_summary(results, worlds["multi"].report.get("modes"))
    (out / "results.json").write_text(json.dumps(summary, indent=1, default=str))
    text = summary_text(summary, tasks)
    (out / "table.txt").write_text(text + "\n")
    from madopd.toyworld.report import write_report

    write_report(summary, out / "report.html")
    log(text)
    log(f"wrote {out / 'results.json'}, {out / 'table.txt'}, {out / 'report.html'}, runs in {out / 'runs'}")
    return summary


def summary_text(summary: dict, tasks: tuple[str, ...] = TASKS) -> str:
    """table.txt: the main table with intervals, the named tests, the extra tables, times."""
    settings = summary.get("profile_settings", {})
    seeds = settings.get("seeds", ())
    B = summary.get("intervals", {}).get("B")
    if not settings.get("main", True):
        text = f"toy world, profile {summary.get('profile')}: no main table (profile.main = False)"
    else:
        text = format_table(summary["table"], f"toy world, profile {summary.get('profile')}: mean over "
                            f"{len(seeds)} training seeds [95 % interval, bootstrap over items x "
                            f"seeds] (%, toy-tools = episode success, toy-code = pass@1)", tasks,
                            summary.get("intervals"))
    if summary.get("gain"):
        text += "\n" + tests_legend(summary["intervals"], B) + "\n" + format_gains(summary["gain"], B)
    if summary.get("collapse", {}).get("main/default"):
        from madopd.toyworld.demo_stats import format_collapse

        text += ("\ncollapse (toy-tools, first operation call of each held-out episode):\n"
                 + format_collapse(summary["collapse"]["main/default"]))
    for key, rows in summary.get("extra", {}).items():
        iv = summary.get("extra_intervals", {}).get(key)
        text += "\n\n" + format_table(rows, key if iv else key + " (mean ± SE over seeds)", tasks, iv)
        if summary.get("extra_gain", {}).get(key):
            text += "\n" + tests_legend(iv, B) + "\n" + format_gains(summary["extra_gain"][key], B)
    for ab in summary.get("ablations", {}).values():
        from madopd.toyworld.ablations import format_contrasts, format_families

        iv = ab["intervals"]
        text += ("\n\n" + format_table(ab["rows"], f"{ab['title']} ({len(seeds)} seeds; its own runs "
                                      f"{ab['cpu_seconds']:.0f} CPU s)", tasks, iv)
                 + "\n" + tests_legend(iv, B or iv.get("B")) + "\n" + format_contrasts(iv, iv.get("B")))
        if ab["families"]:
            text += "\nper family (%, mean over seeds):\n" + format_families(ab["families"])
        coll = summary.get("collapse", {}).get(f"{ab['group']}/{ab['world']}")
        if coll:
            from madopd.toyworld.demo_stats import format_collapse

            text += "\ncollapse (toy-tools):\n" + format_collapse(coll)
    if "multimode" in summary:
        from madopd.toyworld.multimode import format_multimode

        text += "\n\n" + format_multimode(summary["multimode"])
    if "wall_seconds" in summary:
        text += (f"\n\nwall time {summary['wall_seconds']:.0f} s (zoo {summary.get('zoo_seconds', 0):.0f} s, "
                 f"debate caches {summary.get('debate_cache_seconds', 0):.0f} s)")
        if summary.get("runs_replicated"):
            text += (f"; {summary['runs_executed']} runs executed, {summary['runs_replicated']} "
                     "runs copied from an equal run (evaluations: same model, items, seed; "
                     "ablations: the same run in several tables)")
    return text


def tests_legend(iv: dict, B: int | None) -> str:
    """The line under a table naming every test and the family Holm adjusts over."""
    return (f"differences [95 % interval: bootstrap over items x seeds, B = {B}, descriptive]; "
            f"decision: {SEED_TEST_NAME}, {HOLM_NAME} (m = {iv.get('family_size', '?')}), "
            f"significant = adjusted p < 0.05; also: {PERM_NAME} (raw, Holm); {ITEM_BOOT_NAME}")


def _longest_first(jobs: list[Job]) -> list[Job]:
    cost = {"base": 0, "teacher_blind": 0, "opd": 1, "mt_seqkd": 1, "mt_opd": 2, "mad_opd": 3}
    return sorted(jobs, key=lambda j: (j.task != "toy-tools", -cost[j.preset]))


class _pool:
    """A spawn process pool (or inline execution when workers == 1, for tests and debugging)."""

    def __init__(self, workers: int):
        self.workers = workers

    def __enter__(self):
        if self.workers <= 1:
            return _Inline()
        import multiprocessing as mp

        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        self.pool = ProcessPoolExecutor(self.workers, mp_context=mp.get_context("spawn"))
        return self.pool

    def __exit__(self, *exc):
        if self.workers > 1:
            self.pool.shutdown(cancel_futures=True)
        return False


class _Inline:
    class _Done:
        def __init__(self, value):
            self.value = value

        def result(self):
            return self.value

    def submit(self, fn, *args, **kw):
        return self._Done(fn(*args, **kw))

