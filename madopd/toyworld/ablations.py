"""The paper's ablations as one profile (issue 28, Build 2): ``madopd demo --profile ablations``.

Four tables, each a group of ``demo.Job``s on the ablation world (a zoo whose teachers are trained
for 3 debate rounds, ``ZooSpec.debate_rounds``, so the round sweep's R = 3 is in their training
distribution; the main table's zoo trains 2), every seed, both tasks:

* ``components`` (paper Fig. 4a): MAD-OPD, and MAD-OPD with one part removed — no debate
  (MT-OPD: R = 0, uniform weights), no debate in the teachers' context (round-1 confidences as
  weights, teachers score blind), no confidence weights (uniform, debate kept), no OPAD
  (toy-tools only: each episode's first decision point alone is trained on, so later turns get no
  step-level states; same steps and batch).
* ``divergence`` (Fig. 4b): MAD-OPD under JSD(0.5), reverse KL, forward KL, nothing else changed.
* ``rounds`` (App. C.6): R = 0 (MT-OPD), 1, 2 (MAD-OPD), 3.
* ``confidence`` (App. C.1 robustness): MAD-OPD at tau = 1, with each state's confidence weights
  shuffled across teachers (so they no longer follow who is confident), and tau = 0.1 / 10.

The same training run (same world, task, seed and every setting) appears in several tables (the
MAD-OPD reference in all four, MT-OPD in two): it is run once and copied (``training_key``,
results.json ``replicated_from``). Statistics: ``demo_stats.interval_tables`` per table, each
variant against the table's reference (``REFERENCE``; the divergence table: every pair), seed-level
Welch t with Holm across the table (docs/statistics.md).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from madopd.toyworld.demo_stats import (
    ABLATION_GROUPS,
    ABLATION_REFERENCE,
    ablation_comparisons,  # noqa: F401  (this module's API)
)

GROUPS, REFERENCE = ABLATION_GROUPS, ABLATION_REFERENCE

TITLES = {
    "components": "Fig. 4a components: MAD-OPD with one part removed",
    "divergence": "Fig. 4b divergences: MAD-OPD, only the divergence changed",
    "rounds": "App. C.6 debate rounds R (teachers trained for 3 rounds)",
    "confidence": "App. C.1 confidence robustness: shuffled weights, tau sweep",
}
# the row each variant is compared with (None: every pair)
WORLD = "ablate"
TAUS = (0.1, 10.0)
ROUNDS = (1, 2, 3)


def ablation_jobs(seeds: tuple[int, ...], tasks: tuple[str, ...], K: int, row_jobs) -> list:
    """Every ablation table's jobs (duplicates of one training run are removed by the demo).

    ``row_jobs``: the demo's job maker (``toyworld.demo.row_jobs``), passed in because the demo
    imports this module (imports run one way: demo -> ablations -> demo_stats)."""

    jobs = []
    for t in tasks:
        for s in seeds:
            def add(row: str, group: str, label: str, t=t, s=s, **kw):
                jobs.append(row_jobs(row, t, s, K, label=label, group=group, world=WORLD, **kw))

            add("MAD-OPD", "components", "MAD-OPD")
            add("MT-OPD", "components", "no debate (MT-OPD)")
            add("MAD-OPD", "components", "no debate in context (round-1 confidence w)",
                transcript_in_score=False, rounds=1)
            add("MAD-OPD", "components", "no confidence w (uniform)", weighting="uniform")
            if t == "toy-tools":
                add("MAD-OPD", "components", "no OPAD (first step only)", opad_first_step=True)
            for d in ("jsd", "rkl", "fkl"):
                add("MAD-OPD", "divergence", f"MAD-OPD {d.upper()}", divergence=d)
            add("MT-OPD", "rounds", "R = 0 (MT-OPD)")
            for r in ROUNDS:
                add("MAD-OPD", "rounds", f"R = {r}" + (" (MAD-OPD)" if r == 2 else ""), rounds=r)
            add("MAD-OPD", "confidence", "MAD-OPD (tau = 1)")
            add("MAD-OPD", "confidence", "shuffled confidences", shuffle_confidence=True)
            for tau in TAUS:
                add("MAD-OPD", "confidence", f"tau = {tau:g}", tau=tau)
    return jobs


def training_key(job, default_divergence: str) -> tuple:
    """What a training run depends on besides the zoo: equal keys are the same experiment."""
    return ("train", job.world, job.task, job.seed, job.preset, job.teachers, job.rounds,
            job.weighting, job.divergence or default_divergence, job.transcript_in_score,
            job.tau, job.shuffle_confidence, job.opad_first_step)


# --------------------------------------------------------------------------- run-time variants

class FirstStepOnly:
    """A multi-turn task whose training episodes keep only their first reference action (the
    'no OPAD' ablation: no step-level states of later turns); evaluation is unchanged."""

    def __init__(self, task: Any):
        self._task = task

    def __getattr__(self, name: str) -> Any:
        return getattr(self._task, name)

    def train_episodes(self):
        return [replace(ep, reference_actions=list(ep.reference_actions or [])[:1])
                for ep in self._task.train_episodes()]


def shuffled_confidence_distiller(seed: int):
    """A ``Distiller`` subclass whose per-state confidence weights are permuted across teachers
    (seeded; counted as ``count/confidence_shuffled``): the weights keep their spread but no
    longer follow which teacher is confident."""
    import torch

    from madopd.distill import Distiller

    class ShuffledConfidenceDistiller(Distiller):
        _shuffle_gen = torch.Generator().manual_seed(seed)

        def _weights(self, transcripts, n, counters):
            w, keep = super()._weights(transcripts, n, counters)
            perm = torch.argsort(torch.rand(w.shape, generator=self._shuffle_gen), dim=-1)
            counters["count/confidence_shuffled"] = counters.get("count/confidence_shuffled", 0) + n
            return torch.gather(w, -1, perm.to(w.device)), keep

    return ShuffledConfidenceDistiller


# --------------------------------------------------------------------------- tables

def family_breakdown(results: list[dict], group: str, metric_prefix: dict[str, str]) -> dict:
    """{row: {task: {family: mean over seeds (%)}}} from each run's per-family metrics (e.g.
    toy-code's ``pass@1/dst``): the divergence table's dst column comes from here."""
    acc: dict[str, dict[str, dict[str, list[float]]]] = {}
    for r in results:
        j = r["job"]
        if j["group"] != group:
            continue
        pre = metric_prefix[j["task"]] + "/"
        for k, v in r.get("eval", {}).items():
            if k.startswith(pre) and "/" not in k[len(pre):]:
                acc.setdefault(j["row"], {}).setdefault(j["task"], {}).setdefault(k[len(pre):], []).append(v)
    return {row: {t: {f: 100.0 * sum(v) / len(v) for f, v in sorted(fams.items())}
                  for t, fams in tasks.items()} for row, tasks in acc.items()}


def ablation_summary(table: dict, intervals: dict, results: list[dict], metric_prefix: dict) -> dict:
    """Per group: title, reference, rows (``demo.summarize``), intervals (Holm-adjusted), the
    per-family breakdown and the CPU seconds its own runs took (copies cost nothing)."""
    out = {}
    for g in GROUPS:
        key = f"{g}/{WORLD}"
        if key not in table:
            continue
        cpu = sum(r.get("cpu_seconds", 0.0) for r in results if r["job"]["group"] == g)
        out[g] = {"title": TITLES[g], "group": g, "world": WORLD, "reference": REFERENCE[g], "rows": table[key],
                  "intervals": intervals.get(key, {}),
                  "families": family_breakdown(results, g, metric_prefix),
                  "cpu_seconds": round(cpu, 1)}
    return out


def format_contrasts(iv: dict, B: int | None) -> str:
    """Every difference of an ablation table with its tests and the Holm-adjusted verdict."""
    from madopd.toyworld.demo_stats import fmt_diff, significance

    lines = []
    for name, d in iv.get("diffs", {}).items():
        for col, c in d["columns"].items():
            lines.append(f"  {name} [{col}]: {fmt_diff(c, B)} ({significance(c)})")
    return "\n".join(lines)


def format_families(fams: dict) -> str:
    """'  MAD-OPD RKL toy-code: add 90.1, dst 0.0, ...' lines."""
    return "\n".join(f"  {row} {task}: " + ", ".join(f"{f} {v:.1f}" for f, v in by_f.items())
                     for row, tasks in fams.items() for task, by_f in tasks.items())
