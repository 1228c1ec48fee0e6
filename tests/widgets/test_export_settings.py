"""enable_saved_widget_state: Lab's saveState user setting, merged into what is there."""

import json

import pytest

from madopd.errors import DataError
from madopd.widgets.export import WIDGET_MANAGER, enable_saved_widget_state


def test_writes_and_merges(tmp_path):
    path = enable_saved_widget_state(tmp_path)
    assert path == tmp_path / WIDGET_MANAGER / "plugin.jupyterlab-settings"
    assert json.loads(path.read_text()) == {"saveState": True}
    path.write_text(json.dumps({"other": 1, "saveState": False}))
    enable_saved_widget_state(tmp_path)
    assert json.loads(path.read_text()) == {"other": 1, "saveState": True}


def test_env_dir_and_bad_file(tmp_path, monkeypatch):
    monkeypatch.setenv("JUPYTERLAB_SETTINGS_DIR", str(tmp_path))
    path = enable_saved_widget_state()
    assert path.parent.parent.parent == tmp_path
    path.write_text("{not json")
    with pytest.raises(DataError, match="plugin.jupyterlab-settings"):
        enable_saved_widget_state()
    assert path.read_text() == "{not json"  # nothing overwritten
