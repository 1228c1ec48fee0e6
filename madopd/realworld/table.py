"""The real world's table: per-run item lists -> the core bootstrap (``madopd.stats``) -> text.

Each row of ``madopd demo --world real`` is evaluated on the same held-out real-calls items, so
a row's metric is an ``Outcomes`` [runs, items] (results.json's per-run ``accuracy`` and
``ref_nll`` lists; items stratified by family), and the table's intervals and tests are the toy
world's: items drawn once for every row (paired), seeds resampled per row. Base is not trained
and evaluates greedily, so its later seeds are copies of seed 0's run (``reused_from_seed``):
they are counted once, not as extra runs, and its interval says it covers items only.
"""

from __future__ import annotations

from typing import Any

# the trained rows, then each zoo teacher answering blind (evaluation only, like Base)
ROWS = ("Base", "OPD-A", "OPD-B", "MT-OPD", "MAD-OPD", "Teacher A (blind)", "Teacher B (blind)")
BLIND_ROWS = ROWS[5:]
# per-item metrics of a run (results.json's per-run lists): key -> (scale for the table, label);
# the NLL first in the contrasts' text: it is the metric that moves after a few CPU steps
METRICS = {"ref_nll": (1.0, "ref NLL"), "accuracy": (100.0, "acc")}
# contrasts reported under the table: (a, b) means a - b on the same held-out items
CONTRASTS = (("MAD-OPD", "MT-OPD"), ("MAD-OPD", "OPD-A"), ("MAD-OPD", "OPD-B"),
             ("MT-OPD", "OPD-A"), ("OPD-A", "Base"), ("OPD-B", "Base"))
ALPHA = 0.05


def eval_items(states: list) -> dict[str, list]:
    """{"ids": [N], "families": [N]} of the held-out states (saved in results.json)."""
    return {"ids": [s.id for s in states], "families": [s.family for s in states]}


STRATA = ("family", "none")  # summarize_real(strata=...): resample items within families, or all


def _strata(ids: list[str], families: list[str | None], mode: str = "family") -> tuple[str, ...]:
    """One stratum per item family when every item has one (``mode="family"``), else one
    stratum for all (no families, or ``mode="none"``: the families count as sampled too)."""
    from madopd.errors import ConfigError, DataError

    if mode not in STRATA:
        raise ConfigError(f"strata: expected one of {STRATA}, got {mode!r}")
    if mode == "none" or all(f is None for f in families):
        return ("all",) * len(ids)
    missing = [i for i, f in zip(ids, families) if f is None]
    if missing:
        raise DataError(f"held-out item {missing[0]!r} has no family while others have one")
    return tuple(map(str, families))


def _distinct_runs(results: list[dict], row: str) -> tuple[list[dict], list[int]]:
    """A row's own runs (seed order) and the seeds that reuse another seed's run (Base).

    A reused run is an identical copy (``reused_from_seed``): counting it again would pretend a
    second, independent run, so the statistics use each distinct run once (checked equal)."""
    from madopd.errors import DataError

    rs = sorted((r for r in results if r["row"] == row), key=lambda r: r["seed"])
    seeds = [r["seed"] for r in rs]
    if len(set(seeds)) != len(seeds):
        raise DataError(f"{row}: a seed appears twice among its runs: {seeds}", field="seed")
    own = {r["seed"]: r for r in rs if "reused_from_seed" not in r}
    for r in rs:
        src = own.get(r.get("reused_from_seed"))
        if "reused_from_seed" in r and (src is None or any(r[k] != src[k] for k in METRICS)):
            raise DataError(f"{row} seed {r['seed']}: reused_from_seed {r['reused_from_seed']} "
                            "names no run with the same per-item values")
    return list(own.values()), [r["seed"] for r in rs if "reused_from_seed" in r]


def _outcomes(runs: list[dict], row: str, key: str, ids: tuple, strata: tuple):
    from madopd.errors import DataError
    from madopd.stats import Outcomes

    for r in runs:
        if len(r[key]) != len(ids):
            raise DataError(f"{row} seed {r['seed']}: {len(r[key])} values of {key!r} for "
                            f"{len(ids)} held-out items", field=key)
    return Outcomes([[METRICS[key][0] * v for v in r[key]] for r in runs], ids, strata,
                    tuple(r["seed"] for r in runs))


def summarize_real(results: list[dict], ids: list[str], families: list[str | None], *,
                   reps: int = 2000, seed: int = 0, level: float = 0.95,
                   strata: str = "none") -> dict[str, Any]:
    """The table from per-run results (``run_real_job`` dicts): ``madopd.stats.bootstrap_table``.

    Per metric, each row is an ``Outcomes`` [distinct runs, items] (items stratified by family);
    the same item draws for every row (paired), seeds resampled per row: the toy world's
    bootstrap. Every contrast gets its difference, interval, the seed-level Welch p (the decision,
    Holm-adjusted across contrasts x metrics: ``p_seed_holm``), with >= 3 runs in all the exact
    seed permutation p (``None`` otherwise; Holm too) and its smallest possible value, and the
    bootstrap's p (descriptive). Values in the table's units (accuracy %, NLL nats/token).

    strata: "family" (items resampled within their family: the held-out split takes a fixed
    number per family) or "none" (all items one pool: families count as sampled too, wider).
    With n_f items in the smallest family the stratified bootstrap sees (n_f - 1) / n_f of the
    within-family variance (1/2 at the real-calls split's 2 per family); the text says so.
    """
    from madopd.stats import (
        PERM_NAME,
        bootstrap_table,
        bootstrap_test_name,
        covers,
        permutation_min_p,
    )

    ids_t = tuple(map(str, ids))
    strata_t = _strata(list(ids_t), list(families), strata)
    n_strata = len(set(strata_t))
    smallest = min(strata_t.count(f) for f in set(strata_t))
    rows: dict[str, Any] = {}
    outcomes: dict[str, dict[str, Any]] = {k: {} for k in METRICS}
    for row in ROWS:
        runs, reused = _distinct_runs(results, row)
        if not runs:
            continue
        for key in METRICS:
            outcomes[key][row] = _outcomes(runs, row, key, ids_t, strata_t)
        all_runs = [r for r in results if r["row"] == row]
        rows[row] = {"seeds": sorted(r["seed"] for r in all_runs), "runs": len(runs),
                     "run_seeds": [r["seed"] for r in runs],
                     "reused_seeds": reused, "covers": covers(len(runs), len(ids_t), n_strata,
                                                              "held-out items"),
                     "seconds": round(sum(r["seconds"] for r in all_runs), 1),
                     "cpu_seconds": round(sum(r.get("cpu_seconds", 0.0) for r in all_runs), 1)}
    pairs = [(a, b) for a, b in CONTRASTS if a in rows and b in rows]
    contrasts: dict[str, Any] = {
        f"{a} - {b}": {"a": a, "b": b, "runs": [rows[a]["runs"], rows[b]["runs"]],
                       "permutation_min_p": permutation_min_p(rows[a]["runs"], rows[b]["runs"])}
        for a, b in pairs}
    for key in METRICS:  # same seed, same shapes: every metric sees the same resamples
        bt = bootstrap_table({"real-calls": outcomes[key]}, pairs, B=reps, level=level, seed=seed)
        for row, cell in bt["methods"].items():
            rows[row][key] = cell["real-calls"]
        for name, d in bt["diffs"].items():
            c = dict(d["columns"]["real-calls"])
            if sum(contrasts[name]["runs"]) < 3:  # 1 + 1 runs: the permutation test says nothing
                c["p_permutation_seeds"] = None
            contrasts[name][key] = c
    from madopd.stats import HOLM_NAME, SEED_TEST_NAME, holm_adjust

    family = holm_adjust([contrasts[n][k] for n in contrasts for k in METRICS])  # the table's family
    n_runs = max((r["runs"] for r in rows.values()), default=0)
    return {"rows": rows, "contrasts": contrasts, "B": reps, "level": level, "seed": seed,
            "n_items": len(ids_t), "n_strata": n_strata, "strata": strata,
            "smallest_stratum": smallest, "test": bootstrap_test_name(n_strata > 1),
            "permutation_test": PERM_NAME, "seed_test": SEED_TEST_NAME, "adjustment": HOLM_NAME,
            "family_size": family,
            "covers": covers(n_runs, len(ids_t), n_strata, "held-out items")}


def _ci(c: dict, fmt: str, key: str = "mean") -> str:
    return f"{c[key]:{fmt}} [{c['lo']:{fmt}}, {c['hi']:{fmt}}]"


def _contrast_text(d: dict, B: int) -> str:
    """'ref NLL -0.12 [-0.30, +0.05], seed t p = 0.2 (Holm p = 1: not significant at 0.05), seed
    permutation p = 0.33, bootstrap p = 0.21 (descriptive);
    acc ...' plus what the tests cannot show with this few runs."""
    from madopd.stats import fmt_p

    parts = []
    for key, (_, label) in METRICS.items():
        c = d[key]
        perm = ("" if c["p_permutation_seeds"] is None
                else f", seed permutation {fmt_p(c['p_permutation_seeds'])}")
        unit = " pp" if key == "accuracy" else ""
        seed = ("seed t n/a (one run each)" if c.get("p_seed") is None else
                f"seed t {fmt_p(c['p_seed'])} (Holm {fmt_p(c['p_seed_holm'])}: "
                f"{'significant' if c['p_seed_holm'] < ALPHA else 'not significant'} at {ALPHA})")
        parts.append(f"{label} {_ci(c, '+.3f' if key == 'ref_nll' else '+.1f', 'diff')}{unit}, "
                     f"{seed}{perm}, bootstrap {fmt_p(c['p_bootstrap'], B)} (descriptive)")
    na, nb = d["runs"]
    if na + nb < 3:
        parts.append("one run per row: the bootstrap test covers items only, no seed permutation test")
    elif d["permutation_min_p"] >= ALPHA:
        parts.append(f"{na} + {nb} runs: the seed permutation test's smallest possible p is "
                     f"{d['permutation_min_p']:.3g}, too few seeds to reach {ALPHA}")
    return ";\n      ".join(parts)


def format_real_table(summary: dict, title: str | None = None) -> str:
    """The table (mean [95 % interval]), what the intervals cover, and every contrast with its
    difference, interval and named tests' p-values, as text (a ``summarize_real`` /
    ``world.resummarize`` result; ``title`` defaults to the summary's ``title``)."""
    rows = summary["rows"]
    head = (f"{'method':<8} | {'real-calls acc % [95% CI]':>26} | {'ref NLL nats/tok [95% CI]':>26}"
            f" | {'runs':>6} | {'wall s':>7} | {'CPU s':>7}")
    lines = [title or summary.get("title", "real world"), head, "-" * len(head)]
    for row, c in rows.items():
        runs = f"{c['runs']} of {len(c['seeds'])}" if c["reused_seeds"] else str(c["runs"])
        lines.append(f"{row:<8} | {_ci(c['accuracy'], '5.1f'):>26} | {_ci(c['ref_nll'], '6.3f'):>26}"
                     f" | {runs:>6} | {c['seconds']:7.0f} | {c['cpu_seconds']:7.0f}")
    n_runs = max((c["runs"] for c in rows.values()), default=0)
    lines.append(f"intervals: {100 * summary['level']:g} % percentile, {summary['covers']}, B = "
                 f"{summary['B']}; the same item draws for every row (paired)"
                 + (", seeds resampled per row" if n_runs > 1 else ""))
    if 1 < n_runs < 5:  # the bootstrap's seed part: only n_runs values per row to draw from
        lines.append(f"  ({n_runs} runs per row: the seed resampling draws from {n_runs} values, a "
                     "crude picture of training randomness; the seed permutation test is exact)")
    n_f = summary.get("smallest_stratum", 0)
    if summary.get("n_strata", 1) > 1 and n_f < 10:  # the naive bootstrap's small-stratum bias
        lines.append(f"  (smallest family {n_f} items: resampling within families sees "
                     f"{n_f - 1}/{n_f} of the within-family variance, so the item part of the "
                     "intervals is too narrow by up to "
                     f"{(n_f / (n_f - 1)) ** 0.5 if n_f > 1 else float('inf'):.2f}x; "
                     "strata='none' pools the families: wider)")
    for row, c in rows.items():
        if c["reused_seeds"]:
            lines.append(f"{row}: seed {', '.join(map(str, c['reused_seeds']))} reuses seed "
                         f"{', '.join(map(str, c['run_seeds']))}'s run (no training, greedy "
                         f"evaluation: identical copies), counted once: its interval is a {c['covers']}")
    if summary["contrasts"]:
        lines.append(f"contrasts a - b on the same items (NLL: negative = a better); decision: "
                     f"{summary.get('seed_test', 'seed t-test')}, {summary.get('adjustment', 'Holm')} "
                     f"(m = {summary.get('family_size', '?')}); seed permutation = "
                     f"{summary['permutation_test']}; bootstrap = {summary['test']}, descriptive "
                     "(it rejects a true null too often with few runs: docs/statistics.md):")
    for name, d in summary["contrasts"].items():
        lines.append(f"  {name}: {_contrast_text(d, summary['B'])}")
    return "\n".join(lines)
