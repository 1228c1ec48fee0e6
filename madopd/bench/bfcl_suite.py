"""``--benchmark bfcl``: BFCL v4's single-turn categories (``bfcl.py``: decoding, the checker,
the leaderboard aggregation) and its multi-turn ones (``bfcl_multi_turn.py``: episodes with
calls executed in the sandbox) as one benchmark.

Its own module so the imports run one way: ``bfcl`` <- ``bfcl_multi_turn`` <- ``bfcl_suite``
(the multi-turn half uses the single-turn decoding and checker; this one composes both).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import Any

from madopd.bench import BenchResult, bfcl_lang, bfcl_multi_turn
from madopd.bench.bfcl import (
    INFO,
    NO_CALL_REFERENCE,
    RELEVANCE,
    SUPPORTED,
    _checker,
    _mean,
    bfcl_overall,
    build_chat,
    encode_calls,
    gold_issues,
    judge,
    reference_calls,
    synthetic_call,
)
from madopd.errors import ConfigError, DataError
from madopd.types import State


class BFCLBenchmark:
    """``--benchmark bfcl [--categories a,b] [--limit N per category]``.

    Categories: the single-turn ``SUPPORTED`` ones plus ``bfcl_multi_turn.MULTI_TURN`` (run as
    episodes, calls executed in the sandbox); default: all of them, so ``summary["bfcl"]``
    covers every group BFCL can score offline (agentic = web search/memory stays 0).
    """

    name = "bfcl"
    kind = "tools"

    def __init__(self, categories: list[str] | None = None, max_steps: int = 20, **_options):
        multi = bfcl_multi_turn.MULTI_TURN
        self.categories = list(categories) if categories else [*SUPPORTED, *multi]
        bad = [c for c in self.categories if c not in SUPPORTED and c not in multi]
        if bad:
            raise ConfigError(f"bfcl: unsupported categories {bad}; supported: {SUPPORTED + multi}")
        mt_cats = [c for c in self.categories if c in multi]
        self._mt = bfcl_multi_turn.BFCLMultiTurnBenchmark(mt_cats, max_steps=max_steps) if mt_cats else None
        _checker()

    def _entries(self, category: str) -> list[tuple[dict, dict, dict | None]]:
        utils = _checker()["utils"]
        hinted = utils.load_dataset_entry(category, include_prereq=False,
                                          include_language_specific_hint=True)
        raw = utils.load_dataset_entry(category, include_prereq=False,
                                       include_language_specific_hint=False)
        truth = {} if category in RELEVANCE else {
            e["id"]: e["ground_truth"] for e in utils.load_ground_truth_entry(category)}
        if category not in RELEVANCE and len(truth) != len(raw):
            raise DataError(f"{len(raw)} prompts but {len(truth)} answers", field=category)
        return [(h, r, truth.get(r["id"])) for h, r in zip(hinted, raw)]

    def states(self, limit: int | None = None) -> list[State]:
        """Per category, the first ``limit`` entries (single-turn: the first turn's messages)."""
        out = []
        for cat in self.categories:
            if cat not in SUPPORTED:
                continue
            for hinted, raw, truth in self._entries(cat)[:limit]:
                out.append(State(
                    id=raw["id"], messages=build_chat(hinted["question"][0], hinted["function"]),
                    family=cat,
                    meta={"category": cat, "functions": raw["function"], "ground_truth": truth,
                          "gold_issues": (gold_issues(truth, raw["function"]) + bfcl_lang.gold_issues(
                              bfcl_lang.LANG_CATEGORIES.get(cat, ""), truth, raw["function"]))
                          if truth else []}))
        if self._mt is not None:
            out += self._mt.states(limit)
        return out

    def _is_mt(self, state: State) -> bool:
        return state.meta["category"] not in SUPPORTED

    def reference(self, state: State) -> str:
        cat, truth = state.meta["category"], state.meta["ground_truth"]
        if self._is_mt(state):
            return self._mt.reference(state)
        if cat == "live_relevance":
            return encode_calls(synthetic_call(state.meta["functions"]))
        if "irrelevance" in cat:
            return NO_CALL_REFERENCE
        calls = reference_calls(truth, state.meta["functions"])
        lang = bfcl_lang.LANG_CATEGORIES.get(cat)
        if lang:  # Java/JS: every argument as source text (see bfcl_lang)
            docs = {f["name"]: f["parameters"].get("properties", {}) for f in state.meta["functions"]}
            calls = [{n: {k: bfcl_lang.literal(lang, v, docs[n].get(k, {})) for k, v in a.items()}}
                     for call in calls for n, a in call.items()]
        return encode_calls(calls)

    def interact(self, model: Any, states: list[State], sampling: Any, *, n_samples: int = 1,
                 batch_size: int = 8, workers: int = 2, progress: bool = False) -> list[list[str]]:
        """Single-turn states: plain generation; multi-turn states: sandboxed episodes."""
        from madopd.evaluate import generate_samples

        single = [i for i, s in enumerate(states) if not self._is_mt(s)]
        multi = [i for i, s in enumerate(states) if self._is_mt(s)]
        out: list[list[str]] = [[] for _ in states]
        texts = generate_samples(model, [states[i].messages for i in single], sampling,
                                 n_samples=n_samples, batch_size=batch_size, progress=progress)
        for i, t in zip(single, texts):
            out[i] = t
        if multi:
            eps = self._mt.interact(model, [states[i] for i in multi], sampling,
                                    n_samples=n_samples, batch_size=batch_size, workers=workers,
                                    progress=progress)
            for i, t in zip(multi, eps):
                out[i] = t
        return out

    def score(self, states: list[State], responses: list[list[str]], *, ks=(1,), workers: int = 2,
              progress: bool = False) -> BenchResult:
        if len(states) != len(responses):
            raise ConfigError(f"bfcl.score: {len(states)} states but {len(responses)} response lists")
        records, items, per_cat = [], [], defaultdict(list)
        mt_idx = [i for i, s in enumerate(states) if self._is_mt(s)]
        mt_res = None
        if mt_idx:
            mt_res = self._mt.score([states[i] for i in mt_idx], [responses[i] for i in mt_idx],
                                    workers=workers, progress=progress)
            for r in mt_res.records:
                per_cat[r["category"]].append(float(r["correct"]))
            records += mt_res.records
            items += [{**it, "gold_issues": []} for it in mt_res.items]
        for st, samples in zip(states, responses):
            if self._is_mt(st):
                continue
            cat = st.meta["category"]
            oks = []
            for j, resp in enumerate(samples):
                ok, err = judge(cat, st.meta["functions"], st.meta["ground_truth"], resp)
                oks.append(ok)
                per_cat[cat].append(float(ok))
                records.append({"id": st.id, "category": cat, "sample": j, "correct": ok,
                                "error_type": err,
                                "response": resp if isinstance(resp, str) else repr(resp)})
            items.append({"id": st.id, "category": cat, "n": len(oks), "c": sum(oks),
                          "gold_issues": st.meta.get("gold_issues", [])})
        acc = {c: _mean(v) for c, v in per_cat.items()}
        count = {c: len(v) for c, v in per_cat.items()}
        summary = {
            "benchmark": "bfcl", "items": len(states), "samples": len(records),
            "accuracy": acc, "counts": count, "bfcl": bfcl_overall(acc, count),
            "score": _mean([float(r["correct"]) for r in records]),
            "best_of_n": _mean([float(i["c"] > 0) for i in items]),
            "missing_categories": [c for c in [*SUPPORTED, *bfcl_multi_turn.MULTI_TURN] if c not in acc],
            # Items whose gold answer contradicts its docs fail for every model (kept in the
            # BFCL numbers above); the harness self-check uses the others only.
            "gold_inconsistent": [i["id"] for i in items if i["gold_issues"]],
            "self_check_score": _mean([float(i["c"] == i["n"]) for i in items
                                       if not i["gold_issues"]]),
            "error_types": dict(Counter(r["error_type"] for r in records if not r["correct"])),
            "counters": {**dict(INFO), **(mt_res.summary["counters"] if mt_res else {})},
        }
        return BenchResult(records, summary, items)
