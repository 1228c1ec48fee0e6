"""Front-end assets: sources == shipped copies, bundles load, wheel ships them, widget mimebundles."""

import re
import shutil
import subprocess
import sys
import zipfile

import pytest
from jsrun import node_json

from madopd.widgets import assets


def test_static_assets_are_the_sources_not_copies():
    assert assets.SOURCES.is_dir(), "run from a source checkout"
    assert assets.missing() == []
    # one copy to edit: the package's static folder resolves to the top-level sources
    assert assets.STATIC.resolve() == assets.SOURCES.resolve()


@pytest.mark.parametrize("entry", assets.ENTRIES)
def test_bundle_is_one_module_with_a_render(entry, tmp_path):
    code = assets.bundle(entry)
    assert "import {" not in code  # self-contained: anywidget loads it from a blob URL
    assert not re.search(r"""(import|from)\s*\(?\s*["']https?://""", code)  # no CDN
    assert "cdn" not in code.lower()
    (tmp_path / "b.mjs").write_text(code)
    got = node_json(f'const m = await import({(tmp_path / "b.mjs").as_uri()!r});'
                    "print(typeof m.default.render);")
    assert got == "function"


def test_widgets_offer_a_static_html_fallback():
    from madopd.widgets import DebateBoard, DivergenceLens, Playground
    from madopd.widgets.examples import example_record

    rec = example_record()
    for w in (Playground(), DivergenceLens(rec, 0), DebateBoard(record=rec, sample=0)):
        data, _ = w._repr_mimebundle_()
        assert "application/vnd.jupyter.widget-view+json" in data
        assert data["text/html"].startswith('<div class="madopd-static')
        assert "<script" not in data["text/html"]


@pytest.mark.slow
def test_wheel_ships_the_front_end(tmp_path):
    root = assets.SOURCES.parent
    had_build = (root / "build").exists()
    try:
        subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                        "-q", "-w", str(tmp_path), str(root)], check=True, timeout=300)
    finally:
        if not had_build:  # setuptools leaves build/ in the source tree: remove what we created
            shutil.rmtree(root / "build", ignore_errors=True)
    (whl,) = tmp_path.glob("madopd-*.whl")
    names = set(zipfile.ZipFile(whl).namelist())
    for n in assets.FILES:
        assert f"madopd/widgets/static/{n}" in names


def test_missing_notebook_extra_raises_a_named_error():
    """Without anywidget the pure-Python parts still import; widgets raise MissingExtraError."""
    code = (
        "import sys; sys.modules['anywidget'] = None\n"
        "import madopd.widgets as W\n"
        "assert callable(W.lens_payload) and callable(W.render_debate_html)\n"
        "from madopd.errors import MissingExtraError\n"
        "try:\n    W.Playground\nexcept MissingExtraError as e:\n    print('OK', e.extra)\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "OK notebooks"


def test_plotly_js_comes_from_the_python_package_once_per_kernel():
    """The charts' plotly.js is the installed plotly package's own dist file (offline), held by
    ONE hidden model that every chart widget references (anywidget's "anywidget:<id>")."""
    from importlib.resources import files

    from madopd.widgets import LiveDashboard, LossDecomposition, Playground, classes
    from madopd.widgets.examples import example_record

    rec = example_record()
    widgets = [LiveDashboard(), LossDecomposition(rec, 0), Playground()]
    refs = {w._plotly for w in widgets}
    (lib,) = classes._LIBRARY
    assert refs == {"anywidget:" + lib.model_id}
    shipped = files("plotly").joinpath("package_data", "plotly.min.js").read_text("utf-8")
    assert lib.source == shipped and "window.Plotly = Plotly" in shipped
    for entry in ("dashboard.js", "decomposition.js", "playground.js"):
        assert len(assets.bundle(entry)) < 100_000  # the library is not inlined in each widget
