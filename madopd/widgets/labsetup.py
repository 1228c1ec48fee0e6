"""JupyterLab defaults for the madopd notebooks: save widget state, so reopened notebooks render.

Why: JupyterLab picks the widget-view output of a trusted notebook over every other mimetype,
and @jupyter-widgets/jupyterlab-manager's renderer does not fall back when the widget model is
gone: a notebook executed in Lab, saved and reopened later (kernel not running) shows "Error
displaying widget: model not found", although each madopd output also carries ``text/html`` and
``image/png``. With the manager's ``saveState`` setting on, Lab writes the widget state into the
notebook on every save (autosave included); on reopening it rebuilds the widgets from that state
(anywidget's ES module is part of it), so every madopd view renders without a kernel.

How: a *default* setting override, not a user setting: a namespaced drop-in file
``labconfig/default_setting_overrides.d/madopd.json`` in a Jupyter config directory, which
jupyterlab_server merges into the schema defaults (the user's own Settings Editor choice still
wins, so "off" stays off). A regular ``pip install madopd`` puts it into
``{sys.prefix}/etc/jupyter`` (``[tool.setuptools.data-files]``): JupyterLab in the same
environment saves widget state with no user action. An editable install (setuptools ships no
data files then) or a JupyterLab in another environment needs ``madopd notebooks setup``, which
writes the same file into the user's Jupyter config directory (``~/.jupyter``), read by every
JupyterLab that user starts. Reload JupyterLab's page afterwards.
"""

from __future__ import annotations

import json
from pathlib import Path

WIDGET_MANAGER_PLUGIN = "@jupyter-widgets/jupyterlab-manager:plugin"
LAB_DEFAULTS = {WIDGET_MANAGER_PLUGIN: {"saveState": True}}
DROP_IN = Path("labconfig") / "default_setting_overrides.d" / "madopd.json"


def drop_in_path(config_dir: str | Path | None = None) -> Path:
    """Where the drop-in goes under ``config_dir`` (default: the user's Jupyter config dir,
    ``$JUPYTER_CONFIG_DIR`` or ``~/.jupyter``)."""
    if config_dir is None:
        from jupyter_core.paths import jupyter_config_dir

        config_dir = jupyter_config_dir()
    return Path(config_dir) / DROP_IN


def install_lab_defaults(config_dir: str | Path | None = None) -> Path:
    """Write the drop-in (madopd's own file: replaced whole, other files untouched); its path."""
    path = drop_in_path(config_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(LAB_DEFAULTS, indent=2) + "\n", encoding="utf-8")
    return path


def lab_default_overrides() -> dict:
    """The default-setting overrides every JupyterLab started now would read from the Jupyter
    config path (``jupyter --paths``: user, environment, system; their ``.d`` drop-ins merged),
    read the way jupyterlab_server reads them. Empty without jupyter_server."""
    try:
        from jupyter_server.services.config.manager import ConfigManager
    except ImportError:
        return {}
    return ConfigManager(config_dir_name="labconfig").get("default_setting_overrides")


def saves_widget_state() -> tuple[bool, list[Path]]:
    """(whether JupyterLab's default for ``saveState`` is on, the madopd drop-ins found).

    Only defaults are read: a user setting in the Settings Editor overrides them either way.
    """
    from jupyter_core.paths import jupyter_config_path

    found = [Path(d) / DROP_IN for d in jupyter_config_path() if (Path(d) / DROP_IN).is_file()]
    on = bool(lab_default_overrides().get(WIDGET_MANAGER_PLUGIN, {}).get("saveState", False))
    return on, found
