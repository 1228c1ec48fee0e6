"""`madopd demo`: the paper's main table in miniature on the toy world (see madopd/toyworld/demo.py)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


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
                             "a zoo with 3-round teachers, 5 seeds, estimated ~30 min on 2 idle cores; long: the "
                             "main rows at 300 steps, 5 seeds, use with --tasks toy-tools)")
    parser.add_argument("--out", default=None, help="output directory (default: madopd-out/toy/, "
                        "with --world real madopd-out/real/: one world never overwrites the other)")
    add_log_arguments(parser)
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
                             "first; profiles smoke | default | full; crossfamily: a Gemma-3-270M "
                             "teacher on real-calls, madopd models pull gemma3-270m)")
    parser.add_argument("--threads", type=int, default=None,
                        help="--world real: torch threads (default: the profile's, 2; on a "
                             "machine shared with other jobs 1 is often faster)")


def add_log_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quiet", action="store_true",
                        help="no progress bars and no per-run lines, only the result and errors "
                             "(unattended runs; --log-file keeps the lines)")
    parser.add_argument("--log-file", default=None, metavar="PATH",
                        help="append every progress line (phases, one line per finished job, "
                             "the table) to PATH, each with its UTC time")


def make_log(quiet: bool, log_file: str | None):
    """The ``log`` of a long command: each line to stdout (above any progress bar; not with
    ``quiet``) and, with a time stamp, to ``log_file`` (flushed: readable while it runs)."""
    import time

    sink = open(log_file, "a", encoding="utf-8") if log_file else None  # noqa: SIM115

    def log(line: str) -> None:
        if sink is not None:
            stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
            sink.write("".join(f"{stamp} {x}\n" for x in str(line).splitlines() or [""]))
            sink.flush()
        if not quiet:
            from tqdm import tqdm

            tqdm.write(str(line), file=sys.stdout)

    return log


def run(args: argparse.Namespace) -> int:
    from madopd.errors import MadopdError, one_line
    from madopd.toyworld.demo import run_demo

    quiet = getattr(args, "quiet", False)
    log = make_log(quiet, getattr(args, "log_file", None))
    out = args.out or f"madopd-out/{getattr(args, 'world', 'toy')}"
    if args.workers < 1:
        print("madopd demo: --workers must be >= 1", file=sys.stderr)
        return 2
    tasks = tuple(t.strip() for t in args.tasks.split(",") if t.strip())
    if getattr(args, "world", "toy") == "real":
        from madopd.realworld.crossfamily import CROSS_PROFILES, run_crossfamily_demo
        from madopd.realworld.world import run_real_demo

        try:
            if args.profile in CROSS_PROFILES:  # a Gemma teacher (madopd.crosstok)
                run_crossfamily_demo(args.profile, out=out, log=log,
                                     threads=getattr(args, "threads", None))
            else:
                run_real_demo(args.profile, out=out, threads=getattr(args, "threads", None),
                              zoo_root=args.zoo_dir, workers=args.workers)
        except MadopdError as e:
            print(f"madopd demo: {e}", file=sys.stderr)
            return 2
        return 0
    try:
        run_demo(args.profile, out=out, workers=args.workers, zoo_root=args.zoo_dir,
                 tasks=tasks, rebuild_zoo=args.rebuild_zoo, log=log, progress=not quiet)
    except MadopdError as e:
        if getattr(args, "debug", False):
            raise
        print(f"madopd demo: {one_line(e)}", file=sys.stderr)
        return 2
    if quiet:  # the one thing an unattended run prints
        print((Path(out) / "table.txt").read_text(), end="")
        return 0
    runs = f"{out}/runs"
    from madopd.errors import install_hint

    print(f"\nOpen the notebooks on this run: {install_hint('notebooks')} && "
          f"python -m madopd notebooks setup && jupyter lab notebooks/\n"
          f"  then in 04_failure_cases.ipynb set run_dir to a folder under {runs}/ (MAD-OPD rows have "
          f"the debates), or in Python:\n"
          f"  from madopd.runs import load_run; from madopd.widgets import FailureFinder\n"
          f"  FailureFinder(list(load_run('{runs}/<run>').records))")
    return 0


# ------------------------------------------------------------ a demo run's config, re-run

# A demo run's config.json holds DistillConfig's fields and these two of the demo's own:
# demo_job (the Job: row, task, seed, teachers, rounds, templates' variant) and demo_zoo (the
# zoo's spec: which toy task sizes). `madopd train --config RUN/config.json` reads them to
# rebuild what the demo ran (the toy task, the toy debate templates) and writes them again.
DEMO_FIELDS = ("demo_job", "demo_zoo", "demo_eval")  # demo_eval: how the demo scored it


def split_demo_fields(data: dict) -> tuple[dict, dict]:
    """(the DistillConfig fields, the demo's own fields) of a run config mapping."""
    return ({k: v for k, v in data.items() if k not in DEMO_FIELDS},
            {k: v for k, v in data.items() if k in DEMO_FIELDS})


def demo_task_and_protocol(demo: dict, source: str):
    """The toy task and debate protocol a demo run trained with (``source`` names the file)."""
    from madopd.errors import ConfigError
    from madopd.toyworld.demo import job_task_and_protocol

    if not {"demo_job", "demo_zoo"} <= set(demo):
        missing = sorted({"demo_job", "demo_zoo"} - set(demo))
        raise ConfigError(f"{source}: a demo run's config needs both demo_job and demo_zoo; "
                          f"{', '.join(missing)} is missing (a run of an older madopd demo: "
                          "run the demo again to re-run it with madopd train)")
    return job_task_and_protocol(demo["demo_job"], demo["demo_zoo"], source)


def toy_zoo_members(paths: list[str]) -> list[str]:
    """The paths that are toy-zoo members (a ``member.json`` with the settings they were
    trained with): teachers that speak only the toy debate templates."""
    import json

    found = []
    for p in paths:
        try:
            if "settings" in json.loads((Path(p) / "member.json").read_text()):
                found.append(p)
        except (OSError, ValueError, TypeError):
            continue
    return found


def demo_run_config(path: str) -> dict | None:
    """The config of a demo run folder (one with demo_job, demo_zoo and demo_eval), else None."""
    import json

    try:
        data = json.loads((Path(path) / "config.json").read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and set(DEMO_FIELDS) <= set(data) else None


def score_demo_run(run_dir: str, checkpoint: str, config: dict) -> dict:
    """``madopd eval`` on a demo run: the demo's own scoring (madopd.toyworld.demo)."""
    from madopd.toyworld.demo import score_demo_run as score

    return score(run_dir, checkpoint, config)
