"""The toy demo table's intervals and tests: per-job item outcomes -> ``madopd.stats.bootstrap_table``.

The statistics (bootstrap, tests, their names, ``fmt_p``) live in the core ``madopd.stats``;
this module only turns the demo's job results into ``Outcomes`` and reads/prints its gains.

Per table (group/world): every row's jobs give ``Outcomes`` [seeds, items] per task (values in
[0, 1]; shown in %). Comparisons: MAD-OPD minus each single-teacher OPD, minus MT-OPD, minus
each blind teacher. ``gains`` then reads, per column, the difference to the best single-teacher
OPD (chosen by its point estimate, so the comparison is with the strongest baseline, a
selection that favours the baseline), to MT-OPD, and whether MAD-OPD beats EVERY blind teacher.

Decisions are seed-level (the unit of replication is the training run): "significant" means the
Welch t-test on the per-seed scores has a Holm-adjusted p < 0.05, Holm across the table's whole
family (every comparison x column, ``madopd.stats.adjust_table``). The exact seed permutation p
(raw and Holm) is printed beside it; the item bootstrap (runs fixed) is reported as what it is,
the uncertainty over evaluation items for these runs, never as significance.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from madopd.errors import DataError
from madopd.stats import (
    HOLM_NAME,
    ITEM_BOOT_NAME,
    PERM_NAME,
    SEED_TEST_NAME,
    TEST_NAME,
    Outcomes,
    adjust_table,
    bootstrap_table,
    fmt_p,
)

__all__ = ["HOLM_NAME", "ITEM_BOOT_NAME", "PERM_NAME", "SEED_TEST_NAME", "TEST_NAME", "comparisons",
           "fmt_diff", "fmt_p", "format_gains", "gains", "interval_tables", "outcomes_by_table",
           "significance", "significant"]

METHOD = "MAD-OPD"
OPD_ROWS = ("OPD-A", "OPD-B", "OPD-C")
ALPHA = 0.05


def outcomes_by_table(results: list[dict]) -> dict[str, dict[str, dict[str, Outcomes]]]:
    """{"group/world": {task: {row: Outcomes}}} from run_job results that carry ``items``."""
    cells: dict[tuple, list[tuple[int, dict]]] = {}
    for r in results:
        if "items" not in r:
            continue
        j = r["job"]
        cells.setdefault((f"{j['group']}/{j['world']}", j["task"], j["row"]), []).append((j["seed"], r["items"]))
    out: dict[str, dict[str, dict[str, Outcomes]]] = {}
    for (table, task, row), runs in cells.items():
        runs.sort(key=lambda x: x[0])
        ids, fams = runs[0][1]["ids"], runs[0][1]["families"]
        for seed, it in runs:
            if it["ids"] != ids:
                raise DataError(f"{table} {task} {row}: seed {seed} was evaluated on other items "
                                f"than seed {runs[0][0]}")
        values = np.array([it["values"] for _, it in runs], dtype=np.float64)
        out.setdefault(table, {}).setdefault(task, {})[row] = Outcomes(
            values, tuple(map(str, ids)), tuple(map(str, fams)), tuple(s for s, _ in runs))
    return out


def comparisons(rows: list[str]) -> list[tuple[str, str]]:
    others = [r for r in rows if r in OPD_ROWS or r == "MT-OPD" or r.endswith("(blind)")]
    return [(METHOD, r) for r in others] if METHOD in rows else []


# the ablation tables' comparison families (toyworld/ablations.py builds the jobs; the pairs
# live here so the statistics never import the job code)
ABLATION_GROUPS = ("components", "divergence", "rounds", "confidence")
ABLATION_REFERENCE = {"components": "MAD-OPD", "divergence": None, "rounds": "R = 2 (MAD-OPD)",
                      "confidence": "MAD-OPD (tau = 1)"}


def ablation_comparisons(group: str, rows: list[str]) -> list[tuple[str, str]]:
    """(a, b) pairs of one ablation table: each variant minus the reference, or every pair."""
    ref = ABLATION_REFERENCE.get(group)
    if ref is None:
        return [(a, b) for i, a in enumerate(rows) for b in rows[i + 1:]]
    return [(r, ref) for r in rows if r != ref] if ref in rows else []



def interval_tables(results: list[dict], *, B: int = 10_000, seed: int = 0) -> dict[str, Any]:
    """{"group/world": bootstrap_table(...)} for every table whose rows carry item outcomes, each
    Holm-adjusted across its own family of comparisons (``adjust_table``)."""
    out = {}
    for table, tasks in outcomes_by_table(results).items():
        rows = sorted({r for ms in tasks.values() for r in ms})
        group = table.split("/")[0]
        pairs = ablation_comparisons(group, rows) if group in ABLATION_GROUPS else comparisons(rows)
        # the overall column needs every task of a row with the same seeds: tables are complete
        out[table] = adjust_table(bootstrap_table(tasks, pairs, B=B, seed=seed))
    return out


def _diff(iv: dict, b: str, col: str) -> dict | None:
    d = iv["diffs"].get(f"{METHOD} - {b}")
    return None if d is None else d["columns"].get(col)


def gains(iv: dict) -> dict[str, Any]:
    """Per column: the difference to the best single-teacher OPD, to MT-OPD, to each blind
    teacher, with intervals and p-values (fractions, not %), and ``beats_every_blind_teacher``."""
    methods = iv.get("methods", {})
    if METHOD not in methods:
        return {}
    out: dict[str, Any] = {}
    for col in methods[METHOD]:
        cands = [(methods[r][col]["mean"], r) for r in OPD_ROWS if r in methods and col in methods[r]]
        g: dict[str, Any] = {}
        if cands:
            best = max(cands)[1]
            g["best_opd"] = {"row": best, **_diff(iv, best, col)}
        if "MT-OPD" in methods and col in methods["MT-OPD"]:
            g["mt_opd"] = _diff(iv, "MT-OPD", col)
        blind = {r: _diff(iv, r, col) for r in methods if r.endswith("(blind)") and col in methods[r]}
        if blind:
            g["blind"] = blind
            g["beats_every_blind_teacher"] = all(v["diff"] > 0 and significant(v) for v in blind.values())
        out[col] = g
    return out


def significant(d: dict) -> bool:
    """The decision: the seed-level Welch p, Holm-adjusted over the table, below ALPHA (the raw
    p where no adjustment was made: a lone comparison)."""
    p = d.get("p_seed_holm", d.get("p_seed"))
    return p is not None and p < ALPHA


def significance(d: dict) -> str:
    return ("significant at 0.05 (seed-level, Holm-adjusted)" if significant(d)
            else "not significant at 0.05 (seed-level, Holm-adjusted)")


def _p_or_na(p: float | None, B: int | None = None) -> str:
    return "n/a" if p is None else fmt_p(p, B)


def fmt_diff(d: dict, B: int | None = None) -> str:
    """'+12.3 [4.5, 20.1], seed t p = 0.002 (Holm 0.02), seed permutation p = 0.008 (Holm 0.08),
    items-only bootstrap p = 0.0001' (differences in %)."""
    return (f"{100 * d['diff']:+.1f} [{100 * d['lo']:+.1f}, {100 * d['hi']:+.1f}], seed t "
            f"{_p_or_na(d.get('p_seed'))} (Holm {_p_or_na(d.get('p_seed_holm'))}), seed permutation "
            f"{_p_or_na(d.get('p_permutation_seeds'))} (Holm {_p_or_na(d.get('p_permutation_seeds_holm'))}),"
            f" items-only bootstrap {_p_or_na(d.get('p_items'), B)}")


def format_gains(g: dict, B: int | None = None, method: str = METHOD) -> str:
    """Plain-text lines: per column, the best OPD, MT-OPD and the blind-teacher verdict."""
    lines = []
    for col, v in g.items():
        parts = []
        if "best_opd" in v:
            parts.append(f"minus the best single-teacher OPD ({v['best_opd']['row']}) "
                         f"{fmt_diff(v['best_opd'], B)} ({significance(v['best_opd'])})")
        if v.get("mt_opd"):
            parts.append(f"minus MT-OPD {fmt_diff(v['mt_opd'], B)} ({significance(v['mt_opd'])})")
        for r, d in v.get("blind", {}).items():
            parts.append(f"minus {r} {fmt_diff(d, B)} ({significance(d)})")
        if "beats_every_blind_teacher" in v:
            parts.append("beats every blind teacher (seed-level, Holm-adjusted)"
                         if v["beats_every_blind_teacher"]
                         else "does NOT beat every blind teacher significantly (seed-level, Holm-adjusted)")
        lines.append(f"  {col}: {method}\n    " + ";\n    ".join(parts))
    return "\n".join(lines)


def collapse_summary(results: list[dict]) -> dict[str, dict[str, dict[str, Any]]]:
    """{"group/world": {row: {"distinct": [per seed], "right": {family: mean share}}}} from the
    toy-tools runs' ``ops/`` metrics (``demo.operation_calls``): how many operations a policy
    calls over the held-out episodes (1 = collapsed onto one operation whatever the task)."""
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for r in sorted(results, key=lambda r: r["job"]["seed"]):
        j, ev = r["job"], r.get("eval", {})
        if j["task"] != "toy-tools" or "ops/distinct" not in ev:
            continue
        cell = out.setdefault(f"{j['group']}/{j['world']}", {}).setdefault(j["row"], {"distinct": [], "right": {}})
        cell["distinct"].append(int(ev["ops/distinct"]))
        for k, v in ev.items():
            if k.startswith("ops/right/"):
                cell["right"].setdefault(k.split("/", 2)[2], []).append(v)
    for rows in out.values():
        for cell in rows.values():
            cell["right"] = {f: 100.0 * sum(v) / len(v) for f, v in sorted(cell["right"].items())}
    return out


def format_collapse(rows: dict[str, dict[str, Any]], max_ops: int = 2) -> str:
    """Lines per row: distinct operations per seed, the families' right-operation shares, and
    the label 'COLLAPSED' when the median seed calls at most ``max_ops`` operations."""
    lines = []
    for row, c in rows.items():
        d = sorted(c["distinct"])
        collapsed = d[len(d) // 2] <= max_ops
        lines.append(f"  {row}: distinct operations per seed {c['distinct']}; right operation % "
                     + ", ".join(f"{f} {v:.0f}" for f, v in c["right"].items())
                     + (f"  <- COLLAPSED (median seed calls <= {max_ops} operations)" if collapsed else ""))
    return "\n".join(lines)
