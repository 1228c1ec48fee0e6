"""`madopd doctor CONFIG`: check a set-up before a long run (madopd.doctor).

    madopd doctor run.yaml [--set key=value ...] [--preset NAME] [--out DIR] [--json]

Prints a ✓/✗ table (a one-line fix under each ✗; – = not applicable to this config) or, with
``--json``, one JSON object ``{"ok": bool, "checks": [{name, ok, detail, fix, seconds}]}``.
Exit code 0 when no check failed, 1 otherwise.
"""

from __future__ import annotations

import argparse
import dataclasses
import json


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", help="YAML or JSON file of DistillConfig fields (with 'task')")
    parser.add_argument("--preset", help="start from a paper method: mt_seqkd, opd, mt_opd, mad_opd")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="KEY=VALUE", help="override a field (repeatable)")
    parser.add_argument("--out", default="runs",
                        help="where the run will be written (for the disk-space check)")
    parser.add_argument("--json", action="store_true", help="machine-readable output")


def run(args: argparse.Namespace) -> int:
    from madopd.distill.config import DistillConfig, apply_overrides, preset, read_config_file
    from madopd.doctor import format_checks, run_doctor
    from madopd.errors import ConfigError

    data = apply_overrides(read_config_file(args.config), args.overrides)
    cfg = preset(args.preset, **data) if args.preset else DistillConfig.from_dict(data)
    if not cfg.task:
        raise ConfigError("field 'task' is required for `madopd doctor` (the prompts to check)")
    checks = run_doctor(cfg, out_dir=args.out)
    ok = not any(c.ok is False for c in checks)
    if args.json:
        print(json.dumps({"ok": ok, "checks": [dataclasses.asdict(c) for c in checks]},
                         ensure_ascii=False))
    else:
        print(format_checks(checks))
    return 0 if ok else 1
