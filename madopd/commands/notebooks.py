"""`madopd notebooks [status|setup]`: JupyterLab ready for the madopd notebooks.

``setup`` writes the default-setting drop-in that makes JupyterLab save widget state into the
notebook (see ``madopd.widgets.labsetup``), so a notebook executed, saved and reopened later
renders its widgets instead of "model not found"; ``status`` (the default) says whether the
JupyterLab defaults have it on and where the drop-in was found. Both print how to open the
notebooks.
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", nargs="?", default="status", choices=("status", "setup"),
                        help="status (default): what JupyterLab will do; setup: install the "
                             "defaults")
    parser.add_argument("--config-dir", default=None,
                        help="Jupyter config directory for the drop-in (default: the user's, "
                             "$JUPYTER_CONFIG_DIR or ~/.jupyter)")


def run(args: argparse.Namespace) -> int:
    from madopd.widgets import labsetup

    if args.action == "setup":
        path = labsetup.install_lab_defaults(args.config_dir)
        print(f"wrote {path}: JupyterLab saves widget state into notebooks (reload the Lab page)")
    on, found = labsetup.saves_widget_state()
    where = ", ".join(map(str, found)) or "no madopd drop-in on the Jupyter config path"
    print(f"JupyterLab default saveState: {'on' if on else 'off'} ({where})")
    if not on:
        print("reopened notebooks will show 'model not found' for their widgets: "
              "run `python -m madopd notebooks setup`")
    print("open the notebooks: jupyter lab notebooks/")
    return 0 if on or args.action == "status" else 1
