"""`madopd` command line: demo | train | eval | zoo | showcase | models | notebooks.

Each subcommand lives in ``madopd/commands/<name>.py`` with two functions:
``add_arguments(parser)`` and ``run(args) -> int`` (the exit code). Imports are lazy so
``madopd --help`` stays fast and a missing optional extra only affects its own command.

Errors: a ``MadopdError`` (bad input: it names the file, line and field) or an ``OSError`` of
the machine (full disk, permissions) is printed as ONE line with a non-zero exit; ``--debug``
(before or after the subcommand) shows the full traceback instead.
"""

from __future__ import annotations

import argparse
import importlib
import sys

COMMANDS = {
    "demo": "the toy-world main table in miniature (Base, MT-SeqKD, OPD, MT-OPD, MAD-OPD)",
    "train": "distil a student with a config file (--config FILE, --set key=value)",
    "eval": "evaluate a checkpoint or run directory on a benchmark",
    "zoo": "build or inspect the toy world's cached teachers and student",
    "showcase": "a one-minute tour of the divergences on a toy distribution",
    "models": "real pretrained checkpoints that install offline: list | pull NAME",
    "notebooks": "JupyterLab ready for the notebooks (saved widget state): status | setup",
    "doctor": "check a config before a long run: tokenizers, templates, windows, zero loss, ...",
}


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser; only ``command``'s module is imported (None: every command's, for tools
    that want the whole tree). ``madopd --help`` imports none: no torch, well under a second."""
    parser = argparse.ArgumentParser(prog="madopd", description=__doc__.splitlines()[0])
    parser.add_argument("--debug", action="store_true",
                        help="show the full traceback of an error instead of one line")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, help_text in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                       help="show the full traceback of an error instead of one line")
        if command is not None and name != command:
            continue  # not asked for: its options are never parsed in this call
        try:
            module = importlib.import_module(f"madopd.commands.{name}")
        except ModuleNotFoundError as exc:  # a command not built yet in this checkout
            if exc.name != f"madopd.commands.{name}":
                raise
            p.set_defaults(_missing=name)
            continue
        module.add_arguments(p)
        p.set_defaults(_module=module)
    return parser


def _command_of(argv: list[str]) -> str:
    """The subcommand named in ``argv`` ("" when none is: then only the top level is built)."""
    return next((a for a in argv if not a.startswith("-")), "") if argv else ""


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser(_command_of(argv)).parse_args(argv)
    if getattr(args, "_missing", None):
        print(f"madopd {args._missing}: not available in this build", file=sys.stderr)
        return 2
    from madopd.errors import MadopdError, one_line

    try:
        return int(args._module.run(args) or 0)
    except (MadopdError, OSError) as exc:  # a command that does not print its own errors
        if args.debug:
            raise
        print(f"madopd {args.command}: {one_line(exc)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        if args.debug:
            raise
        print(f"madopd {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
