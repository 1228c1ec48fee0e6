"""`madopd zoo build|info`: build or inspect the toy world's cached teachers and student."""

from __future__ import annotations

import argparse
import json
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from madopd.commands.demo import add_log_arguments
    from madopd.toyworld.zoo import PROFILES

    sub = parser.add_subparsers(dest="zoo_command", required=True)
    for name, help_text in (("build", "train (or repair) the zoo and print its held-out report"),
                            ("info", "print the held-out report of a built zoo (builds it if missing)")):
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.add_argument("--profile", default="default", help=f"one of {', '.join(PROFILES)}")
        p.add_argument("--world", default="default", help="'default' (complementary teachers) or "
                                                          "'blind' (a shared blind spot)")
        p.add_argument("--calibration", default="calibrated",
                       help="calibrated | overconfident | underconfident")
        p.add_argument("--overlap", type=float, default=0.0, help="share of out-of-domain items known")
        p.add_argument("--teachers", type=int, default=2, help="K = 2 or 3")
        p.add_argument("--zoo-dir", default=None, help="cache root (default $MADOPD_ZOO_DIR or "
                                                       "~/.cache/madopd/zoo)")
        p.add_argument("--workers", type=int, default=2, help="training processes (1 thread each)")
        p.add_argument("--json", action="store_true", help="print the report as JSON")
        add_log_arguments(p)
        if name == "build":
            p.add_argument("--force", action="store_true", help="retrain even if cached")


def run(args: argparse.Namespace) -> int:
    from madopd.commands.demo import make_log
    from madopd.errors import MadopdError, one_line
    from madopd.toyworld.zoo import load_zoo, profile_spec
    from madopd.toyworld.zoo_eval import format_report

    try:
        spec = profile_spec(args.profile, world=args.world, calibration=args.calibration,
                            overlap=args.overlap, n_teachers=args.teachers)
        zoo = load_zoo(spec, root=args.zoo_dir, workers=args.workers,
                       force=getattr(args, "force", False), progress=not args.quiet,
                       log=make_log(args.quiet, args.log_file))
    except MadopdError as e:
        if getattr(args, "debug", False):
            raise
        print(f"madopd zoo: {one_line(e)}", file=sys.stderr)
        return 2
    print(f"zoo: {spec.world} world, {spec.calibration}, overlap {spec.overlap}, K={spec.n_teachers} "
          f"({args.profile}): teachers {', '.join(map(str, zoo.teacher_paths))}; "
          f"student {zoo.student_path}")
    print(json.dumps(zoo.report, indent=1) if args.json else format_report(zoo.report))
    return 0
