"""`madopd notebooks setup|status` and the JupyterLab default it installs (saveState on)."""

import json
from pathlib import Path

import pytest

from madopd.cli import main
from madopd.widgets import labsetup

REPO = Path(__file__).resolve().parents[2]


def test_drop_in_is_the_committed_data_file(tmp_path):
    """pip's data file and the command's file are the same settings (one source of truth)."""
    committed = REPO / "jupyter-config" / labsetup.DROP_IN
    path = labsetup.install_lab_defaults(tmp_path)
    assert path == tmp_path / labsetup.DROP_IN
    assert json.loads(path.read_text()) == json.loads(committed.read_text()) == labsetup.LAB_DEFAULTS
    pyproject = (REPO / "pyproject.toml").read_text()
    assert '"etc/jupyter/labconfig/default_setting_overrides.d" = ' \
           '["jupyter-config/labconfig/default_setting_overrides.d/madopd.json"]' in pyproject


def _lab_setting(tmp_path) -> bool:
    """saveState as jupyterlab_server computes it for the widget manager (schema default after
    the overrides, then the user's settings file)."""
    settings_utils = pytest.importorskip("jupyterlab_server.settings_utils")
    from jupyter_core.paths import jupyter_path

    empty = tmp_path / "app"
    empty.mkdir(exist_ok=True)
    out, _ = settings_utils.get_settings(str(empty), str(empty), str(tmp_path / "user"),
                                         schema_name=labsetup.WIDGET_MANAGER_PLUGIN,
                                         labextensions_path=jupyter_path("labextensions"))
    return out["settings"].get("saveState", out["schema"]["properties"]["saveState"]["default"])


def test_lab_reads_the_default_and_the_user_choice_wins(tmp_path, monkeypatch):
    pytest.importorskip("jupyterlab_widgets")
    monkeypatch.setenv("JUPYTER_CONFIG_DIR", str(tmp_path / "cfg"))
    before_on, before_found = labsetup.saves_widget_state()
    if before_found:
        pytest.skip(f"a madopd drop-in is installed system-wide: {before_found}")
    assert _lab_setting(tmp_path) is before_on is False  # Lab's own default: off
    labsetup.install_lab_defaults()  # into $JUPYTER_CONFIG_DIR, as `madopd notebooks setup`
    assert labsetup.saves_widget_state() == (True, [tmp_path / "cfg" / labsetup.DROP_IN])
    assert _lab_setting(tmp_path) is True
    user = tmp_path / "user" / "@jupyter-widgets" / "jupyterlab-manager" / "plugin.jupyterlab-settings"
    user.parent.mkdir(parents=True)
    user.write_text(json.dumps({"saveState": False}))
    assert _lab_setting(tmp_path) is False  # a user's "off" in the Settings Editor stays off


def test_cli_status_and_setup(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("JUPYTER_CONFIG_DIR", str(tmp_path))
    if labsetup.saves_widget_state()[1]:
        pytest.skip("a madopd drop-in is installed system-wide")
    assert main(["notebooks"]) == 0
    out = capsys.readouterr().out
    assert "saveState: off" in out and "madopd notebooks setup" in out
    assert main(["notebooks", "setup"]) == 0
    out = capsys.readouterr().out
    assert f"wrote {tmp_path / labsetup.DROP_IN}" in out and "saveState: on" in out
    other = tmp_path / "elsewhere"
    assert main(["notebooks", "setup", "--config-dir", str(other)]) == 0
    assert (other / labsetup.DROP_IN).is_file()
