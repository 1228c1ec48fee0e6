"""`madopd train`: distil a student with a config file.

    madopd train --config run.yaml [--set key=value ...] [--out DIR] [--resume] [--steps N]

The config is a YAML/JSON mapping of ``DistillConfig`` fields (``madopd train --help-config``
lists them); ``--preset NAME`` starts from one of the paper methods (the file and ``--set``
override it). The config's ``task`` field names the task: ``jsonl-code:PATH``,
``jsonl-tools:PATH`` or a registered name (``madopd.tasks.get_task``). ``--resume`` continues
the run in ``--out`` from its latest checkpoint: the step counter, optimiser, schedule, RNG and
data order continue, and metrics logged after that checkpoint are dropped first.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import sys
import time
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="YAML or JSON file of DistillConfig fields")
    parser.add_argument("--preset", help="start from a paper method: base, mt_seqkd, opd, "
                        "mt_opd, mad_opd")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="KEY=VALUE", help="override a field (repeatable; "
                        "sampling.temperature=0.7 reaches nested fields)")
    parser.add_argument("--out", help="run directory (default: runs/<method>-<time>)")
    parser.add_argument("--resume", action="store_true",
                        help="continue the run in --out from its latest checkpoint")
    parser.add_argument("--steps", type=int, default=None,
                        help="train at most this many steps now (default: up to max_steps)")
    parser.add_argument("--report-to", metavar="TRACKERS", help="log to experiment trackers: "
                        "tensorboard,trackio,wandb (offline by default; sets report_to)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--help-config", action="store_true",
                        help="list every config field with its default and help, then exit")


def _help_config() -> str:
    from madopd.distill.config import DistillConfig

    lines = []
    for f in dataclasses.fields(DistillConfig):
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        lines.append(f"{f.name} = {json.dumps(default, default=str)}\n    {f.metadata['help']}")
    return "\n".join(lines)


def _load_config(args):
    """(DistillConfig, the demo's own fields, the file they came from): a demo run's
    config.json carries demo_job and demo_zoo beside the DistillConfig fields."""
    from madopd.commands.demo import split_demo_fields
    from madopd.distill.config import (
        DistillConfig,
        apply_overrides,
        preset,
        read_config_file,
    )

    if getattr(args, "report_to", None) is not None:
        args.overrides = [*args.overrides, f"report_to={args.report_to}"]
    out = Path(args.out) if args.out else None
    if args.resume:
        if out is None or not (out / "config.json").is_file():
            raise _usage("--resume needs --out pointing at an existing run (with config.json)")
        from madopd.runs import read_json_file

        data, demo = split_demo_fields(read_json_file(out / "config.json", "run config"))
        return (DistillConfig.from_dict(apply_overrides(data, args.overrides)), demo,
                str(out / "config.json"))
    if not args.config and not args.preset:
        raise _usage("give --config FILE and/or --preset NAME")
    data, demo = split_demo_fields(read_config_file(args.config) if args.config else {})
    data = apply_overrides(data, args.overrides)
    if args.preset:
        return preset(args.preset, **data), demo, args.config or "--preset"
    return DistillConfig.from_dict(data), demo, args.config


def _task_and_protocol(cfg, demo: dict, source: str):
    """The task and debate protocol to train with. A demo run's config rebuilds the demo's toy
    task and templates; any other config with toy-zoo teachers is refused at start: those
    teachers were trained on the toy debate templates only, and the general ones would leave
    every confidence missing and the weights uniform (counted, but a different method)."""
    from madopd.commands.demo import demo_task_and_protocol, toy_zoo_members
    from madopd.errors import ConfigError
    from madopd.tasks import get_task

    if demo:
        return demo_task_and_protocol(demo, source)
    toy = toy_zoo_members(cfg.teachers) if cfg.method != "base" else []
    if toy:
        raise ConfigError(
            f"{source}: teachers {toy} are toy-zoo members, trained to debate with the toy "
            "templates only; this config has no demo_job/demo_zoo, so they would debate and "
            "score with the general templates (every confidence missing, uniform weights). "
            "Start from a demo run's config.json (madopd-out/toy/runs/<run>/config.json), which "
            "carries both fields")
    return get_task(cfg.task), None


class _UsageError(Exception):
    pass


def _usage(msg: str) -> _UsageError:
    return _UsageError(msg)


def run(args: argparse.Namespace) -> int:
    from madopd.errors import MadopdError, one_line

    if args.help_config:
        print(_help_config())
        return 0
    try:
        return _train(args)
    except _UsageError as exc:
        print(f"madopd train: {exc}", file=sys.stderr)
        return 2
    except MadopdError as exc:
        if getattr(args, "debug", False):
            raise
        print(f"madopd train: {one_line(exc)}", file=sys.stderr)
        return 1


def _train(args) -> int:
    from madopd.distill import Distiller
    from madopd.distill.distributed import gather_objects, leave_together
    from madopd.errors import ConfigError
    from madopd.runs import RunStore

    cfg, demo, source = _load_config(args)
    if not cfg.task:
        raise ConfigError("field 'task' is required for `madopd train` (e.g. "
                          "task: jsonl-tools:data/train.jsonl)")
    out = Path(args.out) if args.out else Path("runs") / f"{cfg.method}-{time.strftime('%Y%m%d-%H%M%S')}"
    if not args.resume and (out / "metrics.jsonl").exists():
        raise _usage(f"{out} already holds a run; use --resume or another --out")
    task, protocol = _task_and_protocol(cfg, demo, source)
    # Under `accelerate launch` / `torchrun` every process runs this; only the main one writes
    # the run folder and prints, and all use the main process's folder name (the default one
    # holds the time, which may differ between processes by a second).
    d = Distiller.from_config(cfg, task, debate_protocol=protocol)
    acc = d.accelerator
    main = acc.is_main_process
    out = Path(gather_objects(acc, str(out))[0])
    store = d.store = RunStore(out, {**cfg.to_dict(), **demo} if main else None)
    if args.resume:
        if store.latest_checkpoint() is None:
            if main:
                store.truncate_to(0)
                print(f"madopd train: no checkpoint in {out} yet; starting from step 0",
                      file=sys.stderr)
            acc.wait_for_everyone()
        else:
            step = d.resume()
            if main:
                print(f"madopd train: resumed {out} at step {step}", file=sys.stderr)
    n = max(0, cfg.max_steps - d.step_count)
    if args.steps is not None:
        n = min(n, args.steps)
    records = d.train(n, progress=not args.no_progress)
    last = records[-1].metrics if records else {}
    if main:
        print(json.dumps({"run": str(out), "step": d.step_count, "loss": last.get("loss"),
                          "checkpoint": str(store.latest_checkpoint()),
                          "processes": acc.num_processes}))
    if acc.num_processes > 1:
        # leave together and free the DDP/FSDP wrapper (its reducer holds the last reference
        # to the gloo group) here, in this order, not at interpreter exit: see leave_together
        leave_together(acc)
        del d, store, acc, records
        gc.collect()
    return 0
