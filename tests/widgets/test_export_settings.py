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


def test_svg_as_img_keeps_the_chart_as_an_image():
    import base64
    import re

    from madopd.widgets.dashboard import dashboard_payload, render_dashboard_html
    from madopd.widgets.examples import example_run
    from madopd.widgets.export import svg_as_img

    html = render_dashboard_html(dashboard_payload(records=example_run(3)))
    out = svg_as_img(html)
    assert "<svg" not in out and out.count("<img") == html.count("<svg") == 4
    srcs = re.findall(r'src="data:image/svg\+xml;base64,([A-Za-z0-9+/=]+)"', out)
    svg = base64.b64decode(srcs[0]).decode()
    assert svg.startswith("<svg") and "<polyline" in svg and "var(--" not in svg
