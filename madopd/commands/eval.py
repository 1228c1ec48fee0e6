"""``madopd eval``: score a checkpoint (or a benchmark's own gold answers) on a benchmark.

Examples::

    madopd eval --benchmark humaneval --model runs/opd-1 --limit 20 --n-samples 5 --k 1,5
    madopd eval --benchmark bfcl --categories simple_python,irrelevance --model ./student
    madopd eval --benchmark code-jsonl --data my_problems.jsonl --model ./student
    madopd eval --benchmark humaneval --backend vllm --base-url http://127.0.0.1:8000 \
        --model Qwen/Qwen3-1.7B --tokenizer ./tok
    madopd eval --benchmark humaneval --reference   # self-check: exit 1 unless perfect

``--model`` accepts a Hugging Face checkpoint folder, a hub id (offline: only if cached), or a
run folder: ``RUN/latest_checkpoint.txt`` (a path, relative to RUN or absolute) wins, else
``RUN/checkpoints/latest`` (a text file naming the checkpoint folder, as ``madopd.runs``
writes it, or a folder/symlink). A folder with ``adapter_config.json`` is loaded as a LoRA
student. Writes ``OUT/records.jsonl`` (one line per sample; model text is untrusted),
``OUT/items.jsonl`` (one line per problem) and ``OUT/summary.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from madopd.errors import ConfigError, MadopdError, ValueRangeError, one_line


def _ints(text: str) -> list[int]:
    try:
        values = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"expected integers >= 1, got {text!r}")
    return values


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from madopd.bench import available_benchmarks

    names = ", ".join(f"{k} ({v})" for k, v in available_benchmarks().items())
    parser.add_argument("--benchmark", required=True, help=f"registered benchmark: {names}")
    parser.add_argument("--model", help="checkpoint folder, run folder, hub id, or the served "
                        "model name with --backend vllm")
    parser.add_argument("--reference", action="store_true",
                        help="score the benchmark's own gold answers (harness self-check)")
    parser.add_argument("--data", help="data file (code-jsonl; optional for humaneval)")
    parser.add_argument("--categories", help="comma-separated subset (bfcl)")
    parser.add_argument("--limit", type=int, help="first N problems (bfcl: N per category)")
    parser.add_argument("--n-samples", type=int, default=1, help="samples per problem")
    parser.add_argument("--k", type=_ints, default=[1], help="pass@k values, e.g. 1,10")
    parser.add_argument("--temperature", type=float, default=None,
                        help="default: greedy for 1 sample, 0.8 otherwise")
    parser.add_argument("--top-p", type=float, default=0.95)
    parser.add_argument("--max-new-tokens", type=int, default=None,
                        help="default: 512, at most half the model's context window")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--backend", choices=["transformers", "vllm"], default="transformers")
    parser.add_argument("--base-url", help="vLLM OpenAI-compatible server (--backend vllm)")
    parser.add_argument("--tokenizer", help="tokenizer path (vllm backend; default: --model)")
    parser.add_argument("--request-timeout", type=float, default=30.0,
                        help="vllm backend: seconds to connect and for each read")
    parser.add_argument("--request-deadline", type=float, default=120.0,
                        help="vllm backend: TOTAL seconds one request attempt may take")
    parser.add_argument("--retries", type=int, default=2,
                        help="vllm backend: extra attempts per request on transient failures")
    parser.add_argument("--retry-budget", type=int, default=32,
                        help="vllm backend: retries allowed over the whole evaluation (the same "
                        "defaults as DistillConfig's teacher_* fields: one trickling server "
                        "costs minutes, not ~20 minutes a request)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--workers", type=int, default=2, help="parallel sandbox runs")
    parser.add_argument("--out", help="output folder (default: runs/eval/<benchmark>-<time>)")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")


def resolve_checkpoint(path: str) -> str:
    """A checkpoint folder from ``path`` (checkpoint folder, run folder or hub id); see module doc."""
    from madopd.models.checks import looks_local

    p = Path(path)
    if not p.exists():
        if looks_local(path):
            raise ConfigError(f"--model: no such checkpoint or run folder: {path}")
        return path  # a hub id: load_model checks it (offline: it must be in the cache)
    if not p.is_dir():
        raise ConfigError(f"--model: {path} is a file; expected a checkpoint or run folder")
    # A run folder also holds config.json (the resolved *training* config), so the run's
    # checkpoint pointers are checked before treating the folder as a model checkpoint.
    # Pointers are read like every run-folder file: no link followed, no FIFO opened, bounded.
    from madopd import nofollow

    pointer = p / "latest_checkpoint.txt"
    if nofollow.check(pointer):
        target = Path(nofollow.read_bytes(pointer, max_bytes=4096).decode("utf-8", "replace").strip())
        target = target if target.is_absolute() else p / target
        if not target.is_dir():
            raise ConfigError(f"--model: {pointer} names {target}, which is not a folder")
        return str(target)
    latest = p / "checkpoints" / "latest"
    if latest.is_symlink():
        raise ConfigError(f"--model: {latest} is a symbolic link: refused (run folders never "
                          "follow links)")
    if latest.is_dir():
        return str(latest)
    if nofollow.check(latest):
        target = p / "checkpoints" / nofollow.read_bytes(latest, max_bytes=4096).decode(
            "utf-8", "replace").strip()
        if not target.is_dir():
            raise ConfigError(f"--model: {latest} names {target.name}, which is not a folder")
        return str(target)
    if (p / "config.json").is_file() or (p / "adapter_config.json").is_file():
        return str(p)
    raise ConfigError(f"--model: {path} has no config.json, latest_checkpoint.txt or "
                      "checkpoints/latest")


def load_model(args: argparse.Namespace):
    """An object with ``generate(chats, Sampling)`` for the chosen backend."""
    from madopd.models.checks import check_model_path, model_load_errors

    if not args.model:
        raise ConfigError("--model is required unless --reference is given")
    if args.backend == "vllm":
        if not args.base_url:
            raise ConfigError("--backend vllm needs --base-url")
        from madopd.models.vllm_server import VLLMServerTeacher

        tok = args.tokenizer or resolve_checkpoint(args.model)
        with model_load_errors(tok, "--tokenizer"):
            return VLLMServerTeacher(args.base_url, args.model, tokenizer=tok,
                                     timeout=args.request_timeout,
                                     deadline=args.request_deadline, retries=args.retries,
                                     retry_budget=args.retry_budget)
    path = resolve_checkpoint(args.model)
    check_model_path(path, "--model")  # config.json parses; checksums of a run's checkpoint
    if (Path(path) / "adapter_config.json").is_file():
        from madopd.models.hf import HFStudent

        with model_load_errors(path, "--model"):
            return HFStudent.load(path, device=args.device)
    from madopd.models.hf import HFTeacher

    with model_load_errors(path, "--model"):
        return HFTeacher(path, device=args.device)


def _write_outputs(out: Path, records: list[dict], items: list[dict], summary: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "records.jsonl", "w") as fh:
        for r in records:
            fh.write(json.dumps(r, default=str) + "\n")
    with open(out / "items.jsonl", "w") as fh:
        for r in items:
            fh.write(json.dumps(r, default=str) + "\n")
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str))


def run(args: argparse.Namespace) -> int:
    try:
        return _run(args)
    except MadopdError as exc:
        if getattr(args, "debug", False):
            raise
        print(f"madopd eval: {one_line(exc)}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace) -> int:
    from madopd.bench import get_benchmark
    from madopd.evaluate import generate_samples
    from madopd.sandbox import COUNTERS
    from madopd.types import Sampling

    if args.n_samples < 1 or (args.limit is not None and args.limit < 1) or args.workers < 1:
        raise ConfigError("--n-samples, --limit and --workers must be >= 1")
    demo = None if args.reference else _demo_run(args)
    if demo is not None:  # before the registry: toy-tools is a demo task, not a benchmark
        return _score_demo_run(args, *demo)
    cats = [c.strip() for c in args.categories.split(",") if c.strip()] if args.categories else None
    bench = get_benchmark(args.benchmark, data=args.data, categories=cats, seed=args.seed)
    states = bench.states(args.limit)
    progress = not args.no_progress
    t0 = time.monotonic()
    if args.reference:
        responses = [[bench.reference(s)] for s in states]
        model_name = "reference"
    else:
        model = load_model(args)
        model_name = getattr(model, "name", str(args.model))
        greedy = args.temperature is None and args.n_samples == 1 or args.temperature == 0
        max_new = _max_new_tokens(args, model)
        sampling = Sampling(temperature=args.temperature or 0.8, top_p=args.top_p,
                            max_new_tokens=max_new, seed=args.seed, greedy=greedy)
        try:
            if hasattr(bench, "interact"):  # multi-turn: the model acts in an environment
                responses = bench.interact(model, states, sampling, n_samples=args.n_samples,
                                           batch_size=args.batch_size, workers=args.workers,
                                           progress=progress)
            else:
                responses = generate_samples(model, [s.messages for s in states], sampling,
                                             n_samples=args.n_samples,
                                             batch_size=args.batch_size, progress=progress)
        except ValueRangeError as e:
            if "max_context" not in str(e):
                raise
            raise ConfigError(f"--max-new-tokens {max_new} does not fit the model's window "
                              f"with these prompts ({e}); pass a smaller --max-new-tokens") from e
    t_gen = time.monotonic() - t0
    res = bench.score(states, responses, ks=args.k, workers=args.workers, progress=progress)
    summary = {**res.summary, "model": model_name, "reference": bool(args.reference),
               "n_samples": 1 if args.reference else args.n_samples, "limit": args.limit,
               "time/generate": round(t_gen, 3), "time/total": round(time.monotonic() - t0, 3),
               "sandbox_counters": dict(COUNTERS)}
    out = Path(args.out) if args.out else Path("runs") / "eval" / (
        f"{args.benchmark}-{time.strftime('%Y%m%d-%H%M%S')}")
    _write_outputs(out, res.records, res.items, summary)
    headline = {k: v for k, v in summary.items()
                if k in ("score", "best_of_n", "self_check_score") or k.startswith("pass@")}
    print(json.dumps({"benchmark": args.benchmark, "model": model_name, "items": len(states),
                      **headline, "out": str(out)}))
    if args.reference:
        score = summary.get("self_check_score", summary.get("score"))
        if score != 1.0:
            print(f"madopd eval --reference: harness self-check FAILED (score {score})",
                  file=sys.stderr)
            for line in explain_failures(res.records, summary.get("gold_inconsistent", [])):
                print(line, file=sys.stderr)
            return 1
    return 0


def _max_new_tokens(args: argparse.Namespace, model) -> int:
    """--max-new-tokens, or 512 capped at half the model's context window (a toy student's
    window is 512 tokens: 512 new tokens would leave no room for the prompt)."""
    if args.max_new_tokens is not None:
        if args.max_new_tokens < 1:
            raise ConfigError("--max-new-tokens must be >= 1")
        return args.max_new_tokens
    window = int(getattr(model, "max_context", 0) or 0)
    return min(512, window // 2) if window >= 2 else 512


def _demo_run(args: argparse.Namespace) -> tuple[str, str, dict] | None:
    """(run folder, checkpoint, config) when --model is a `madopd demo` run on its own task."""
    if args.backend != "transformers" or not args.model or not Path(args.model).is_dir():
        return None
    from madopd.commands.demo import demo_run_config

    config = demo_run_config(args.model)
    if config is None:
        return None
    if args.benchmark != config["demo_job"]["task"]:
        raise ConfigError(f"--model {args.model} is a demo run on {config['demo_job']['task']}; "
                          f"--benchmark {args.benchmark} is another task")
    return args.model, resolve_checkpoint(args.model), config


def _score_demo_run(args: argparse.Namespace, run_dir: str, checkpoint: str,
                    config: dict) -> int:
    """A demo run is scored exactly as the demo scored it (the toy world's ``score_policy``,
    with the run's demo_eval settings): one definition of each score."""
    from madopd.commands.demo import score_demo_run

    print(f"madopd eval: {run_dir} is a demo run: scored as the demo scores it "
          f"({json.dumps(config['demo_eval'])}; --n-samples, --temperature, --limit and "
          "--seed do not apply)", file=sys.stderr)
    res = score_demo_run(run_dir, checkpoint, config)
    out = Path(args.out) if args.out else Path("runs") / "eval" / (
        f"{args.benchmark}-{time.strftime('%Y%m%d-%H%M%S')}")
    items = [{"id": i, "family": f, "value": v} for i, f, v in
             zip(res["items"]["ids"], res["items"]["families"], res["items"]["values"])]
    summary = {"score": res["score"], **res["eval"], "model": checkpoint,
               "scoring": "madopd demo (its score_policy)",
               "demo_eval": config["demo_eval"], "job": res["job"]}
    _write_outputs(out, [], items, summary)
    print(json.dumps({"benchmark": args.benchmark, "model": checkpoint, "items": len(items),
                      "score": res["score"], "out": str(out)}))
    return 0


def explain_failures(records: list[dict], excused: list[str] = (), show: int = 3) -> list[str]:
    """Which gold answers failed and why: per category (or benchmark family), the count per
    reason and the first ``show`` item ids with their error. Records of any benchmark: the
    item id is ``id``/``task_id``/``state_id``; the outcome ``correct``/``passed``/``verdict``."""
    excused = set(excused)
    groups: dict[str, dict[str, list[str]]] = {}
    for r in records:
        rid = str(r.get("id", r.get("task_id", r.get("state_id", "?"))))
        ok = r.get("correct", r.get("passed", r.get("verdict") == "pass"))
        if ok or rid in excused:
            continue
        why = r.get("error_type") or ":".join(str(r[k]) for k in ("status", "reason") if r.get(k)) \
            or str(r.get("verdict", "failed"))
        detail = r.get("detail") or r.get("stderr_tail", "")
        label = f"{rid}" + (f" ({str(detail).strip().splitlines()[-1][:160]})" if str(detail).strip() else "")
        groups.setdefault(str(r.get("category", r.get("family", "all"))), {}).setdefault(why, []).append(label)
    lines = []
    for cat, reasons in sorted(groups.items()):
        total = sum(map(len, reasons.values()))
        lines.append(f"  {cat}: {total} gold answer(s) failed")
        for why, ids in sorted(reasons.items(), key=lambda kv: -len(kv[1])):
            lines.append(f"    {len(ids)} x {why}: " + "; ".join(ids[:show]) + (" ..." if len(ids) > show else ""))
    return lines
