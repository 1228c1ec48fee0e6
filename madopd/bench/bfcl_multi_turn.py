"""BFCL v4 multi-turn categories, with every function call executed in ``madopd.sandbox``.

BFCL's multi-turn backends (a file system, a trading bot, a travel API, ...) are local Python
classes, but both its inference loop and its checker run the model's calls with ``eval``. So
here each execution happens in a sandboxed child that imports the installed ``bfcl_eval``
(read-only) and *replays* the episode's call history from the initial configuration (the
backends are deterministic), then runs the new step; the checker runs in the sandbox too.
Before BFCL ``eval``s a model's call, the sandboxed program admits only a call of a public method
of the episode's backend classes with literal arguments (``_SAFE_CALLS``); anything else becomes a
call BFCL reports as an execution error. So no model-written code runs, and the program is
trusted: it returns its result on ``madopd.sandbox.verify``'s channel (never stdout).

The episode loop follows BFCL's prompting handler (``base_handler.inference_multi_turn_
prompting`` with the OSS message layout): system prompt + first turn; each step the model
answers; a reply that does not decode to calls (or decodes to none) ends the turn; otherwise
each call's result is appended as a ``tool`` message and the model goes again; more than
``max_steps`` steps in a turn force-quits the episode (BFCL: MAXIMUM_STEP_LIMIT = 20), which
fails it. Miss-func turns (no user message) announce the held-out functions the BFCL way.

A *response* for scoring is the whole interaction, JSON: ``[[step text, ...] per turn]``
(``interact`` produces it; ``reference`` encodes the ground truth as one step per turn).
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

from madopd.bench import BenchResult
from madopd.bench.bfcl import DecodeError, _checker, bfcl_overall, build_chat, decode_calls
from madopd.errors import ConfigError
from madopd.sandbox import Limits, inner_path
from madopd.sandbox.verify import run_trusted
from madopd.types import Sampling, State

MULTI_TURN = ["multi_turn_base", "multi_turn_miss_func", "multi_turn_miss_param",
              "multi_turn_long_context"]
_MODEL_TAG = "madopd"  # the "model name" BFCL's executor keys its backend instances with


def _site() -> str:
    """Where ``bfcl_eval`` lives, as the sandboxed child sees it."""
    pkg = Path(_checker()["utils"].__file__).resolve().parent  # .../site-packages/bfcl_eval
    return inner_path(str(pkg.parent))


def _nested(value: Any) -> str:
    # BFCL's parse_nested_value: a {name: {args}} value is a nested call, dicts/lists recurse.
    if isinstance(value, dict):
        if value and all(isinstance(v, dict) for v in value.values()):
            (name, args), = list(value.items())[:1]
            return f"{name}(" + ", ".join(f"{k}={_nested(v)}" for k, v in args.items()) + ")"
        return "{" + ", ".join(f"{k!r}: {_nested(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(_nested(v) for v in value) + "]"
    return repr(value)


def to_exec_list(text: str) -> list[str]:
    """Model text -> BFCL's executable call strings (``decode_execute``); DecodeError if none."""
    calls = decode_calls(text)
    return [f"{name}(" + ", ".join(f"{k}={_nested(v)}" for k, v in args.items()) + ")"
            for call in calls for name, args in call.items()]


_SAFE_CALLS = r'''
import ast, importlib, inspect
from bfcl_eval.eval_checker.multi_turn_eval.multi_turn_utils import CLASS_FILE_PATH_MAPPING
REJECTED = "madopd_rejected_call()"  # BFCL's eval raises NameError: an execution error

def backend_methods(classes):
    names = set()
    for cls in classes:
        obj = getattr(importlib.import_module(CLASS_FILE_PATH_MAPPING[cls]), cls)
        names |= {n for n, _ in inspect.getmembers(obj, inspect.isfunction) if not n.startswith("_")}
    return names

def _literal(node, allowed):
    if isinstance(node, ast.Constant):
        return True
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        return isinstance(node.operand, ast.Constant)
    if isinstance(node, (ast.List, ast.Tuple, ast.Set)):
        return all(_literal(e, allowed) for e in node.elts)
    if isinstance(node, ast.Dict):
        return all(k is not None and _literal(k, allowed) and _literal(v, allowed)
                   for k, v in zip(node.keys, node.values))
    return isinstance(node, ast.Call) and _call_ok(node, allowed)

def _call_ok(node, allowed):
    return (isinstance(node.func, ast.Name) and node.func.id in allowed
            and all(not isinstance(a, ast.Starred) and _literal(a, allowed) for a in node.args)
            and all(k.arg is not None and _literal(k.value, allowed) for k in node.keywords))

def safe(call, allowed):
    try:
        tree = ast.parse(call, mode="eval")
    except (SyntaxError, ValueError, RecursionError):
        return REJECTED
    return call if isinstance(tree.body, ast.Call) and _call_ok(tree.body, allowed) else REJECTED
'''

_EXEC_SRC = r'''
import json, sys
sys.path.insert(0, SITE)
exec(SAFE_CALLS)
spec = json.load(open("spec.json"))
from bfcl_eval.eval_checker.multi_turn_eval.multi_turn_utils import execute_multi_turn_func_call
allowed = backend_methods(spec["involved_classes"])
out = []
for step in spec["steps"]:
    out, _ = execute_multi_turn_func_call([safe(c, allowed) for c in step], spec["initial_config"],
                                          spec["involved_classes"], MODEL, spec["id"],
                                          long_context=spec["long_context"])
channel_send([str(x) for x in out])
'''

_CHECK_SRC = r'''
import json, sys
sys.path.insert(0, SITE)
exec(SAFE_CALLS)
spec = json.load(open("spec.json"))
from bfcl_eval.eval_checker.multi_turn_eval.multi_turn_checker import multi_turn_checker
allowed = backend_methods(spec["entry"]["involved_classes"])
decoded = [[[safe(c, allowed) for c in step] for step in turn] for turn in spec["decoded"]]
res = multi_turn_checker(decoded, spec["ground_truth"], spec["entry"], spec["category"], MODEL)
channel_send({"valid": bool(res["valid"]), "error_type": str(res.get("error_type", "")),
              "error": str(res.get("error_message", ""))[:300]})
'''


def _program(template: str) -> str:
    return (f"SITE = {_site()!r}\nMODEL = {_MODEL_TAG!r}\nSAFE_CALLS = {_SAFE_CALLS!r}\n" + template)


class BFCLMultiTurnBenchmark:
    """``--benchmark bfcl-multi-turn [--categories ...] [--limit N per category]``."""

    name = "bfcl-multi-turn"
    kind = "tools"

    def __init__(self, categories: list[str] | None = None, max_steps: int = 20,
                 limits: Limits | None = None, **_options):
        self.categories = list(categories) if categories else list(MULTI_TURN)
        bad = [c for c in self.categories if c not in MULTI_TURN]
        if bad:
            raise ConfigError(f"bfcl-multi-turn: unsupported categories {bad}; supported: {MULTI_TURN}")
        if max_steps < 1:
            raise ConfigError(f"bfcl-multi-turn: max_steps must be >= 1, got {max_steps}")
        self.max_steps = max_steps
        self.limits = limits or Limits(cpu_seconds=20, wall_seconds=60, memory_mb=2048)
        self.counters: Counter[str] = Counter()
        _checker()

    # ------------------------------------------------------------------ data
    def states(self, limit: int | None = None) -> list[State]:
        utils = _checker()["utils"]
        out = []
        for cat in self.categories:
            entries = utils.load_dataset_entry(cat, include_prereq=False,
                                               include_language_specific_hint=True)
            truth = {e["id"]: e["ground_truth"] for e in utils.load_ground_truth_entry(cat)}
            for e in entries[:limit]:
                out.append(State(
                    id=e["id"], messages=build_chat(e["question"][0], e["function"]), family=cat,
                    meta={"category": cat, "entry": e, "ground_truth": truth[e["id"]]}))
        return out

    def reference(self, state: State) -> str:
        """The ground truth, one step per turn, as BFCL call strings (marked ``exec:``: gold
        calls may use positional arguments, which the model-side decoder does not accept)."""
        return json.dumps([[{"exec": turn}] if turn else [] for turn in state.meta["ground_truth"]])

    # ------------------------------------------------------------------ execution
    def _execute(self, jobs: list[tuple[dict, list[list[str]]]], workers: int) -> list[list[str]]:
        """Results of the last step of each (entry, steps) replay, run in the sandbox."""
        srcs, files = [], []
        for entry, steps in jobs:
            spec = {"steps": steps, "initial_config": entry.get("initial_config", {}),
                    "involved_classes": entry["involved_classes"], "id": entry["id"],
                    "long_context": "long_context" in entry["id"]}
            srcs.append(_program(_EXEC_SRC))
            files.append({"spec.json": json.dumps(spec)})
        results = run_trusted(srcs, limits=self.limits, workers=workers, files=files)
        out = []
        for (parsed, res), (_, steps) in zip(results, jobs):
            if res.status != "pass" or not isinstance(parsed, list):
                self.counters["execution_failed"] += 1
                parsed = [f"Error during execution: sandbox {res.status}:{res.reason}"] * len(steps[-1])
            out.append(parsed)
        return out

    # ------------------------------------------------------------------ the episode loop
    def interact(self, model: Any, states: list[State], sampling: Sampling, *, n_samples: int = 1,
                 batch_size: int = 8, workers: int = 2, progress: bool = False) -> list[list[str]]:
        """Run every episode with ``model`` (``generate(chats, Sampling)``); returns the JSON
        transcripts ``[state][sample]`` that ``score`` takes."""
        prompts = _checker()["prompts"]
        eps = []
        for si, st in enumerate(states):
            for _ in range(n_samples):
                eps.append({"si": si, "entry": st.meta["entry"], "turn": 0, "step": 0,
                            "chat": [dict(m) for m in st.messages], "history": [],
                            "turns": [[]], "done": False, "forced": False})
        bar = None
        if progress:
            from tqdm.auto import tqdm
            bar = tqdm(total=len(eps), desc="episodes", unit="ep")
        seed = sampling.seed
        while True:
            active = [e for e in eps if not e["done"]]
            if not active:
                break
            texts: list[str] = []
            for b in range(0, len(active), batch_size):
                chunk = active[b:b + batch_size]
                samp = sampling if seed is None else Sampling(**{**sampling.__dict__, "seed": seed})
                seed = None if seed is None else seed + 1
                texts += model.generate([e["chat"] for e in chunk], samp)
            to_run = []
            for e, text in zip(active, texts):
                e["chat"].append({"role": "assistant", "content": text})
                e["turns"][-1].append(text)
                try:
                    calls = to_exec_list(text)
                except DecodeError:
                    calls = []
                if not calls:
                    self._next_turn(e, prompts)
                    if e["done"] and bar is not None:
                        bar.update(1)
                    continue
                e["history"].append(calls)
                to_run.append(e)
            if to_run:
                results = self._execute([(e["entry"], e["history"]) for e in to_run], workers)
                for e, res in zip(to_run, results):
                    for call, out in zip(e["history"][-1], res):
                        e["chat"].append({"role": "tool", "name": call, "content": str(out)})
                    e["step"] += 1
                    if e["step"] > self.max_steps:  # BFCL: force quit fails the episode
                        e["forced"], e["done"] = True, True
                        self.counters["force_quit"] += 1
                        if bar is not None:
                            bar.update(1)
        if bar is not None:
            bar.close()
        out: list[list[str]] = [[] for _ in states]
        for e in eps:
            out[e["si"]].append(json.dumps(e["turns"]))
        return out

    def _next_turn(self, e: dict, prompts: Any) -> None:
        entry = e["entry"]
        e["turn"] += 1
        e["step"] = 0
        if e["turn"] >= len(entry["question"]):
            e["done"] = True
            return
        msgs = [dict(m) for m in entry["question"][e["turn"]]]
        held = entry.get("missed_function", {}).get(str(e["turn"]))
        if held:  # BFCL: the held-out functions arrive as a user message on an empty turn
            msgs = [{"role": "user", "content": prompts.DEFAULT_USER_PROMPT_FOR_ADDITIONAL_FUNCTION_PROMPTING
                     .format(functions=held)}]
        e["chat"].extend(msgs)
        e["turns"].append([])

    # ------------------------------------------------------------------ scoring
    def _decode_transcript(self, response: str) -> list[list[list[str]]] | None:
        try:
            turns = json.loads(response)
        except (TypeError, ValueError):
            return None
        if not isinstance(turns, list) or not all(isinstance(t, list) for t in turns):
            return None
        decoded = []
        for turn in turns:
            steps = []
            for step in turn:
                if isinstance(step, dict) and isinstance(step.get("exec"), list):
                    steps.append([str(c) for c in step["exec"]])  # gold calls (reference)
                    continue
                try:
                    calls = to_exec_list(step) if isinstance(step, str) else []
                except DecodeError:
                    calls = []
                if calls:  # BFCL ignores steps that do not decode
                    steps.append(calls)
            decoded.append(steps)
        return decoded

    def score(self, states: list[State], responses: list[list[str]], *, ks=(1,), workers: int = 2,
              progress: bool = False) -> BenchResult:
        if len(states) != len(responses):
            raise ConfigError(f"{self.name}.score: {len(states)} states but {len(responses)} lists")
        jobs, index, pre = [], [], {}
        for i, (st, samples) in enumerate(zip(states, responses)):
            gt = st.meta["ground_truth"]
            for j, resp in enumerate(samples):
                decoded = self._decode_transcript(resp)
                if decoded is None:
                    pre[(i, j)] = (False, "multi_turn:unparsable_transcript")
                elif len(decoded) != len(gt):
                    pre[(i, j)] = (False, "multi_turn:force_terminated")
                else:
                    entry = {k: v for k, v in st.meta["entry"].items() if k != "function"}
                    spec = {"decoded": decoded, "ground_truth": gt, "entry": entry,
                            "category": st.meta["category"]}
                    jobs.append((_program(_CHECK_SRC), {"spec.json": json.dumps(spec)}))
                    index.append((i, j))
        results = run_trusted([s for s, _ in jobs], limits=self.limits, workers=workers,
                              files=[f for _, f in jobs], progress=progress)
        for (i, j), (verdict, res) in zip(index, results):
            if res.status != "pass" or not isinstance(verdict, dict) or "valid" not in verdict:
                self.counters["checker_failed"] += 1
                tail = res.stderr.strip().splitlines()[-1:] if res.stderr.strip() else []
                pre[(i, j)] = (False, f"checker:{res.status}:{res.reason}"
                               + (f" ({tail[0][:200]})" if tail else ""))
            else:
                pre[(i, j)] = (verdict["valid"], "" if verdict["valid"] else verdict["error_type"])
        records, items, per_cat = [], [], {}
        for i, (st, samples) in enumerate(zip(states, responses)):
            cat = st.meta["category"]
            oks = []
            for j, resp in enumerate(samples):
                ok, err = pre[(i, j)]
                oks.append(ok)
                per_cat.setdefault(cat, []).append(float(ok))
                records.append({"id": st.id, "category": cat, "sample": j, "correct": ok,
                                "error_type": err, "response": resp if isinstance(resp, str) else repr(resp)})
            items.append({"id": st.id, "category": cat, "n": len(oks), "c": sum(oks)})
        acc = {c: sum(v) / len(v) for c, v in per_cat.items()}
        summary = {
            "benchmark": self.name, "items": len(states), "samples": len(records),
            "accuracy": acc, "counts": {c: len(v) for c, v in per_cat.items()},
            "multi_turn": bfcl_overall(acc, {})["multi_turn"] if acc else 0.0,
            "score": (sum(r["correct"] for r in records) / len(records)) if records else 0.0,
            "best_of_n": (sum(it["c"] > 0 for it in items) / len(items)) if items else 0.0,
            "error_types": dict(Counter(r["error_type"] for r in records if not r["correct"])),
            "counters": dict(self.counters),
        }
        return BenchResult(records, summary, items)
