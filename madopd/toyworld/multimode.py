"""Measurements of the multi-mode code world (issue 13.7): how a model's mass sits on the forms.

A spec of ``toy-code-multi`` has 2-3 correct forms (``tasks/toy_code_multi.FORMS``). For one
model in one context we score every *program* of the spec's constant C (the forms of all five
families, 12 strings + EOS) by force decoding: ``log P(program | context) = Σ_t log p(y_t | y_<t)``
(the sequence probability the divergences act on token by token). From that:

* ``mass``      Σ P over the right family's forms (the chance a sample is a correct listed form);
* ``p_forms``   mean P(form i) of the right family, i = 0, 1(, 2): the p-q picture at the fork;
* ``evenness``  entropy of the forms' probabilities *within the most probable family*,
  normalised by log(n forms) (1 = mass spread evenly over the forms, 0 = one form only);
* ``top_share`` that family's largest form share (1/n = even, 1 = committed).

Samples give the same picture from the other side: ``sample_metrics`` sorts T = 1 samples into
``CLASSES`` (listed form, other passing program, a wrong family's form, hybrid, other failure),
and ``commitment`` = per spec, the largest share of one form among its samples that are forms.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from typing import Any

import torch

from madopd.toyworld.toy_code_multi import CLASSES, FORMS, forms_of
from madopd.types import State


def program_logprobs(model, contexts: list, states: list[State], batch: int = 512) -> list[dict[str, list[float]]]:
    """Per state: family -> [log P(form_i | context)] for every family's forms at the state's C.

    ``model``: an ``HFTeacher`` / ``HFStudent`` (``score`` + ``tokenizer``); ``contexts``: one chat
    (or prompt ids) per state. Each program is scored with the EOS that ends an answer.
    """
    tok = model.tokenizer
    jobs = [(i, fam, f) for i, st in enumerate(states) for fam in FORMS
            for f in forms_of(fam, st.meta["c"])]
    ids = {f: tok(f, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
           for f in {f for _, _, f in jobs}}
    out: list[dict[str, list[float]]] = [defaultdict(list) for _ in states]
    for j in range(0, len(jobs), batch):
        part = jobs[j:j + batch]
        conts = [ids[f] for _, _, f in part]
        sc = model.score([contexts[i] for i, _, _ in part], conts)
        lp = sc.dists  # [B, T, V] log-probs
        for b, ((i, fam, _), c) in enumerate(zip(part, conts)):
            tgt = torch.tensor(c, device=lp.device)
            out[i][fam].append(float(lp[b, :len(c)].gather(-1, tgt[:, None]).sum()))
    return [dict(d) for d in out]


def _entropy_norm(ps: list[float]) -> float:
    z = sum(ps)
    if len(ps) < 2 or z <= 0:
        return float("nan")
    h = -sum(p / z * math.log(p / z) for p in ps if p > 0)
    return h / math.log(len(ps))


def form_summary(states: list[State], logps: list[dict[str, list[float]]]) -> dict[str, Any]:
    """Means over states of mass, evenness, top_share, p_forms per family (see module doc)."""
    acc: dict[str, list[float]] = defaultdict(list)
    per_fam: dict[str, list[list[float]]] = defaultdict(list)
    for st, lp in zip(states, logps):
        probs = {fam: [math.exp(v) for v in vs] for fam, vs in lp.items()}
        right = probs[st.family]
        acc["mass"].append(sum(right))
        acc["listed_mass"].append(sum(sum(v) for v in probs.values()))
        top = max(probs, key=lambda f: sum(probs[f]))
        acc["top_is_right"].append(float(top == st.family))
        e = _entropy_norm(probs[top])
        if e == e:
            acc["evenness"].append(e)
            acc["top_share"].append(max(probs[top]) / sum(probs[top]))
        per_fam[st.family].append(right)
    out: dict[str, Any] = {k: round(sum(v) / len(v), 4) for k, v in acc.items() if v}
    out["p_forms"] = {fam: [round(sum(col) / len(col), 4) for col in zip(*rows)]
                      for fam, rows in sorted(per_fam.items())}
    out["n_states"] = len(states)
    return out


def which_form(state: State, text: str) -> tuple[str, int] | None:
    """(family, form index) when ``text`` is a listed form of any family at the state's C."""
    t = (text or "").strip()
    for fam in FORMS:
        fs = forms_of(fam, state.meta["c"])
        if t in fs:
            return fam, fs.index(t)
    return None


def sample_metrics(task, states: list[State], texts: list[str], ok: list[float],
                   n_samples: int) -> dict[str, float]:
    """Shares of CLASSES over samples, form-index shares, and per-spec commitment.

    ``ok``: sandbox verdicts (1.0 = pass); samples are ``n_samples`` consecutive ones per state.
    Form shares and commitment count the forms of *any* family (a teacher writing a wrong
    family's program is still choosing among that program's forms): commitment = mean over
    specs with >= 2 such samples of the largest share of one (family, form).
    """
    cls: Counter = Counter()
    form_idx: Counter = Counter()
    commit = []
    for i, st in enumerate(states):
        forms: Counter = Counter()
        for t, o in zip(texts[i * n_samples:(i + 1) * n_samples], ok[i * n_samples:(i + 1) * n_samples]):
            cls[task.classify(st, t, bool(o))] += 1
            w = which_form(st, t)
            if w is not None:
                forms[w] += 1
                form_idx[w[1]] += 1
        if sum(forms.values()) >= 2:
            commit.append(max(forms.values()) / sum(forms.values()))
    n = max(1, sum(cls.values()))
    res = {f"share/{c}": cls[c] / n for c in CLASSES}
    nf = max(1, sum(form_idx.values()))
    res.update({f"form_share/{k}": form_idx[k] / nf for k in range(3)})
    res["commitment"] = sum(commit) / len(commit) if commit else float("nan")
    res["commitment_specs"] = float(len(commit))
    return res


def flatten(summary: dict[str, Any], prefix: str) -> dict[str, float]:
    """``form_summary`` as flat float metrics (``prefix/mass`` ..., ``prefix/p_form/add/0``)."""
    out = {f"{prefix}/{k}": float(v) for k, v in summary.items() if isinstance(v, (int, float))}
    for fam, ps in summary.get("p_forms", {}).items():
        out.update({f"{prefix}/p_form/{fam}/{i}": float(p) for i, p in enumerate(ps)})
    return out


def teacher_modes(teachers, debate, states: list[State], transcripts, n_samples: int = 8,
                  seed: int = 0) -> dict[str, Any]:
    """Is each teacher multi-modal? Per teacher: ``form_summary`` in the blind scoring context
    and in the privileged one (R = 2 transcript), and T = 1 blind samples' classes."""
    from madopd.toyworld.toy_code_multi import ToyCodeMultiTask
    from madopd.types import Sampling

    task = ToyCodeMultiTask()
    out: dict[str, Any] = {}
    for k, t in enumerate(teachers):
        blind = [debate.score_context(s, None, k) for s in states]
        priv = [debate.score_context(s, tr, k) for s, tr in zip(states, transcripts)]
        reps = [c for c in blind for _ in range(n_samples)]
        texts = t.generate(reps, Sampling(temperature=1.0, max_new_tokens=12, seed=seed))
        rep_states = [s for s in states for _ in range(n_samples)]
        ok = task.verify_batch(rep_states, texts)
        out[t.name] = {
            "blind": form_summary(states, program_logprobs(t, blind, states)),
            "privileged": form_summary(states, program_logprobs(t, priv, states)),
            "samples_blind": {kk: round(v, 4) for kk, v in
                              sample_metrics(task, states, texts, ok, n_samples).items()},
        }
    return out


# --------------------------------------------------------------------------- the demo group

# (metric key in a run's eval dict, label, scale to %)
TABLE_METRICS = (
    ("pass@1", "pass@1", 100.0),
    ("share/hybrid", "hybrid %", 100.0),
    ("share/wrong_op", "wrong-op %", 100.0),
    ("share/other_fail", "other fail %", 100.0),
    ("commitment", "commitment", 1.0),
    ("modes/evenness", "evenness", 1.0),
    ("modes/mass", "P(right form)", 1.0),
    ("pass@8", "pass@8", 100.0),
)
COMPARE = (("MAD-OPD rkl", "MAD-OPD fkl"), ("MAD-OPD rkl", "MAD-OPD jsd"), ("MAD-OPD jsd", "MAD-OPD fkl"))


def interval(values: list[float], level: float = 0.95) -> dict[str, Any]:
    """Mean and a Student-t interval over ``values`` (one per training seed): it covers the
    seed-to-seed variation of training (student sampling, batches) with the held-out specs fixed,
    not the sampling of specs. NaN values (a metric with no data in a run) are left out."""
    from scipy import stats

    v = [x for x in values if x == x]
    n = len(v)
    if n == 0:
        return {"mean": float("nan"), "half": float("nan"), "n": 0, "values": values}
    m = sum(v) / n
    if n == 1:
        return {"mean": m, "half": float("nan"), "n": 1, "values": values}
    sd = math.sqrt(sum((x - m) ** 2 for x in v) / (n - 1))
    return {"mean": m, "half": float(stats.t.ppf(0.5 + level / 2, n - 1) * sd / math.sqrt(n)),
            "n": n, "values": values}


def welch(a: list[float], b: list[float]) -> float:
    """Two-sided Welch t-test p-value (NaN with < 2 values a side or no variance at all)."""
    from scipy import stats

    a, b = [x for x in a if x == x], [x for x in b if x == x]
    if len(a) < 2 or len(b) < 2 or (max(a) == min(a) and max(b) == min(b)):
        return float("nan")
    return float(stats.ttest_ind(a, b, equal_var=False).pvalue)


def multimode_summary(results: list[dict], teacher_modes_report: dict | None = None) -> dict[str, Any]:
    """The multi-mode group's table: per row, each TABLE_METRICS metric's mean and 95 % t
    interval over seeds; Welch p-values for the COMPARE pairs; the p-q picture (mean P(form i)
    per family: teachers' privileged and blind p from the zoo report, each row's student q)."""
    rows: dict[str, dict[str, list[float]]] = {}
    seeds: dict[str, list[int]] = {}
    for r in sorted((r for r in results if r["job"]["group"] == "multimode"),
                    key=lambda r: (r["job"]["row"], r["job"]["seed"])):
        row = rows.setdefault(r["job"]["row"], {})
        seeds.setdefault(r["job"]["row"], []).append(r["job"]["seed"])
        for key, _, scale in TABLE_METRICS:
            row.setdefault(key, []).append(scale * float(r["eval"].get(key, float("nan"))))
        for k, v in r["eval"].items():
            if k.startswith(("modes/p_form/", "form_share/")):
                row.setdefault(k, []).append(float(v))
    order = ["Base"] + [f"MAD-OPD {d}" for d in ("jsd", "rkl", "fkl")]
    table = {name: {k: interval(v) for k, v in rows[name].items()} | {"seeds": seeds[name]}
             for name in sorted(rows, key=lambda n: (order.index(n) if n in order else 99, n))}
    tests = {}
    for a, b in COMPARE:
        if a in rows and b in rows:
            tests[f"{a} vs {b}"] = {key: welch(rows[a][key], rows[b][key]) for key, _, _ in TABLE_METRICS}
    pq: dict[str, Any] = {}
    for name, t in (teacher_modes_report or {}).items():
        if name.startswith("student"):  # the Base student is the table's own Base row
            continue
        for ctx in ("privileged", "blind"):
            if ctx in t:
                pq[f"teacher {name} ({ctx})"] = t[ctx]["p_forms"]
    for name, row in table.items():
        fams = sorted({k.split("/")[2] for k in row if k.startswith("modes/p_form/")})
        pq[f"student {name}"] = {f: [round(row[f"modes/p_form/{f}/{i}"]["mean"], 4)
                                     for i in range(3) if f"modes/p_form/{f}/{i}" in row] for f in fams}
    from madopd.stats import holm

    flat = [(pair, key) for pair, ps in tests.items() for key in ps]  # the group's family
    adj = holm([None if tests[pr][k] != tests[pr][k] else tests[pr][k] for pr, k in flat])
    holm_p = {pair: {} for pair in tests}
    for (pair, key), a in zip(flat, adj):
        holm_p[pair][key] = float("nan") if a is None else a
    return {"table": table, "welch_p": tests, "welch_p_holm": holm_p, "p_forms": pq,
            "interval": "95 % Student-t over training seeds (held-out specs fixed)"}


def _p_list(ps: dict, adj: dict) -> str:
    """'pass@1 0.024 (Holm 0.14), ...' for the metrics with a p-value."""
    def one(key: str, lab: str) -> str:
        a = adj.get(key, float("nan"))
        return f"{lab} {ps[key]:.3g}" + ("" if a != a else f" (Holm {a:.3g})")

    return ", ".join(one(key, lab) for key, lab, _ in TABLE_METRICS if ps[key] == ps[key])


def format_multimode(summary: dict[str, Any]) -> str:
    """Plain-text tables of ``multimode_summary`` (what the demo prints and table.txt keeps)."""
    table = summary["table"]
    if not table:
        return "multi-mode code world: no runs"
    n = max(len(r["seeds"]) for r in table.values())
    w = max(len(k) for k in table) + 1
    lines = [f"multi-mode code world (toy-code-multi, MAD-OPD K=2 R=2): mean ± 95 % t-interval "
             f"over {n} training seeds (held-out specs fixed)",
             f"{'method':<{w}}| " + " | ".join(f"{lab:>15}" for _, lab, _ in TABLE_METRICS)]
    lines.append("-" * len(lines[-1]))
    for name, row in table.items():
        cells = []
        for key, _, scale in TABLE_METRICS:
            c = row.get(key)
            if not c or c["mean"] != c["mean"]:
                cells.append(f"{'-':>15}")
                continue
            nd = 1 if scale == 100.0 else 3
            half = "n/a" if c["half"] != c["half"] else f"{c['half']:.{nd}f}"
            cells.append(f"{c['mean']:.{nd}f} ± {half}".rjust(15))
        lines.append(f"{name:<{w}}| " + " | ".join(cells))
    for pair, ps in summary["welch_p"].items():
        lines.append(f"Welch two-sided p (Holm-adjusted over the group's comparisons), {pair}: "
                     + _p_list(ps, summary.get("welch_p_holm", {}).get(pair, {})))
    lines.append("mean P(form i | spec) of the right family (form 0 = canonical), per family:")
    for who, fams in summary["p_forms"].items():
        lines.append(f"  {who:<28} " + "  ".join(
            f"{f} [{', '.join(f'{p:.2f}' for p in ps)}]" for f, ps in fams.items()))
    return "\n".join(lines)


MECHANISM = (
    "The teachers were trained to spread their mass evenly over a spec's 2-3 correct forms, so "
    "p is multi-modal at the fork (the first token or two; the zoo report's evenness). Over "
    "whole programs, forward KL, KL(p‖q), charges q for every form p likes that q misses (mode "
    "covering), and a student that cannot condition its later tokens on its own fork then "
    "writes hybrids, which fail; reverse KL, KL(q‖p), charges q only where it puts mass p lacks, "
    "so it may commit to one form (mode seeking, Lemma 2). MAD-OPD applies the divergence per "
    "token, the teacher force-decoding the student's own prefix: at the fork every divergence "
    "is minimised by q = p when q can represent p there, and after the fork p is sharp on the "
    "sampled form's continuation, so the three can differ only where q cannot match p spec by "
    "spec: the student's capacity (it generalises from training specs to held-out ones) or "
    "teachers that conflict (a family one of them does not know). The "
    "privileged p (with the debate transcript) is less even than the blind p: a teacher that "
    "adopts a peer's answer copies the peer's form, so p follows the debate's greedy form, "
    "which the student, who never sees the transcript, can only learn per spec.")


def multimode_html(summary: dict[str, Any] | None) -> str:
    """The report's section for the multi-mode group (every model-free string escaped)."""
    from madopd.widgets.style import esc  # report.esc's twin; report imports this module

    if not summary or not summary.get("table"):
        return ""
    out = ["<h2>multi-mode code world: JSD vs reverse KL vs forward KL</h2>",
           f"<p class=small>{esc(MECHANISM)}</p>",
           f"<table><caption>{esc(summary['interval'])}</caption><tr><th>method</th>"]
    out += [f"<th>{esc(lab)}</th>" for _, lab, _ in TABLE_METRICS] + ["</tr>"]
    for name, row in summary["table"].items():
        out.append(f"<tr><td>{esc(name)}</td>")
        for key, _, scale in TABLE_METRICS:
            c = row.get(key)
            nd = 1 if scale == 100.0 else 3
            txt = "–" if not c or c["mean"] != c["mean"] else (
                f"{c['mean']:.{nd}f} ± " + ("n/a" if c["half"] != c["half"] else f"{c['half']:.{nd}f}"))
            out.append(f"<td>{esc(txt)}</td>")
        out.append("</tr>")
    out.append("</table>")
    for pair, ps in summary.get("welch_p", {}).items():
        out.append(f"<p class=small>Welch two-sided p (Holm-adjusted over the group's comparisons), "
                   f"{esc(pair)}: " + esc(_p_list(ps, summary.get("welch_p_holm", {}).get(pair, {}))) + "</p>")
    out.append("<table><caption>mean P(form i | spec) of the right family: teachers' p (privileged "
               "= with the debate transcript) vs each student's q</caption><tr><th>model</th>")
    fams = sorted({f for v in summary["p_forms"].values() for f in v})
    out += [f"<th>{esc(f)}</th>" for f in fams] + ["</tr>"]
    for who, by_f in summary["p_forms"].items():
        out.append(f"<tr><td>{esc(who)}</td>" + "".join(
            f"<td>{esc(' / '.join(f'{p:.2f}' for p in by_f.get(f, [])))}</td>" for f in fams) + "</tr>")
    out.append("</table>")
    return "".join(out)
