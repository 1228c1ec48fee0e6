"""`madopd demo`: the paper's main table in miniature on the toy world (see madopd/toyworld/demo.py)."""

from __future__ import annotations

import argparse
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from madopd.toyworld.demo import PROFILES, TASKS

    parser.add_argument("--profile", default="default",
                        help=f"one of {', '.join(PROFILES)} (smoke: CI, < 2 min; default: the main "
                             "table, 5 seeds, blind-teacher rows and the shared-blind-spot control "
                             "world, budget 20 min cold on 2 idle cores, ~12.5 min with the zoos "
                             "cached; full: adds the paper's ablations "
                             "and the multi-mode code world; multimode: only that world, MAD-OPD "
                             "with JSD / RKL / FKL, 5 seeds; ablations: only the paper's ablations "
                             "(components, divergences, rounds R = 0..3, confidence robustness) on "
                             "a zoo with 3-round teachers, 5 seeds, estimated ~30 min on 2 idle cores)")
    parser.add_argument("--out", default="madopd-out", help="output directory (default: madopd-out/)")
    parser.add_argument("--workers", type=int, default=2, help="processes, one torch thread each")
    parser.add_argument("--tasks", default=",".join(TASKS), help=f"comma-separated subset of {', '.join(TASKS)}")
    parser.add_argument("--zoo-dir", default=None, help="zoo cache root (default $MADOPD_ZOO_DIR or "
                                                        "~/.cache/madopd/zoo)")
    parser.add_argument("--rebuild-zoo", action="store_true", help="retrain the zoo even if cached")
    parser.add_argument("--world", default="toy", choices=("toy", "real"),
                        help="toy (default): the self-trained toy world; real: the real zoo's "
                             "SmolLM2 teachers (built and cached on first use, under "
                             "$MADOPD_MODELS_DIR/real-zoo unless --zoo-dir) and a shrunk SmolLM2 "
                             "student on house-calls (madopd models pull smollm2-135m-instruct "
                             "first; profiles smoke | default | full)")
    parser.add_argument("--threads", type=int, default=None,
                        help="--world real: torch threads (default: the profile's, 2; on a "
                             "machine shared with other jobs 1 is often faster)")


def run(args: argparse.Namespace) -> int:
    from madopd.errors import MadopdError, one_line
    from madopd.toyworld.demo import run_demo

    if args.workers < 1:
        print("madopd demo: --workers must be >= 1", file=sys.stderr)
        return 2
    tasks = tuple(t.strip() for t in args.tasks.split(",") if t.strip())
    if getattr(args, "world", "toy") == "real":
        from madopd.realworld.world import run_real_demo

        try:
            run_real_demo(args.profile, out=args.out, threads=getattr(args, "threads", None),
                          zoo_root=args.zoo_dir, workers=args.workers)
        except MadopdError as e:
            print(f"madopd demo: {e}", file=sys.stderr)
            return 2
        return 0
    try:
        run_demo(args.profile, out=args.out, workers=args.workers, zoo_root=args.zoo_dir,
                 tasks=tasks, rebuild_zoo=args.rebuild_zoo)
    except MadopdError as e:
        if getattr(args, "debug", False):
            raise
        print(f"madopd demo: {one_line(e)}", file=sys.stderr)
        return 2
    runs = f"{args.out}/runs"
    print(f"\nOpen the notebooks on this run: pip install 'madopd[notebooks]' && "
          f"python -m madopd notebooks setup && jupyter lab notebooks/\n"
          f"  then in 04_failure_cases.ipynb set run_dir to a folder under {runs}/ (MAD-OPD rows have "
          f"the debates), or in Python:\n"
          f"  from madopd.runs import load_run; from madopd.widgets import FailureFinder\n"
          f"  FailureFinder(list(load_run('{runs}/<run>').records))")
    return 0
