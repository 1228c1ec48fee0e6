"""Offline HTML export of executed notebooks: widgets show their static ``text/html`` fallback.

nbconvert's "lab" template always adds require.js and MathJax from a CDN. This exporter
extends it with those two blocks emptied, so the page loads nothing from the network (Markdown
math then stays as TeX). Execute notebooks with ``store_widget_state=False`` (nbclient): saved
widget state would make viewers try (and fail, offline) to rebuild the live widgets.
"""

from __future__ import annotations

from pathlib import Path

_TEMPLATE = """{%- extends 'lab/index.html.j2' -%}
{%- block html_head_js_requirejs -%}{%- endblock html_head_js_requirejs -%}
{%- block html_head_js_mathjax -%}{%- endblock html_head_js_mathjax -%}
"""


def export_html(notebook, out: str | Path | None = None) -> str:
    """HTML for ``notebook`` (a NotebookNode or a path) with no network dependency."""
    try:
        import nbformat
        from jinja2 import DictLoader
        from nbconvert import HTMLExporter
    except ImportError as exc:
        from madopd.errors import MissingExtraError

        raise MissingExtraError("nbconvert", "notebooks", "offline HTML export") from exc
    nb = nbformat.read(str(notebook), as_version=4) if isinstance(notebook, (str, Path)) \
        else notebook
    exporter = HTMLExporter(template_name="lab",
                            extra_loaders=[DictLoader({"madopd_offline.html.j2": _TEMPLATE})],
                            template_file="madopd_offline.html.j2")
    html, _ = exporter.from_notebook_node(nb)
    if out is not None:
        Path(out).write_text(html, encoding="utf-8")
    return html


WIDGET_MANAGER = "@jupyter-widgets/jupyterlab-manager"


def enable_saved_widget_state(settings_dir: str | Path | None = None) -> Path:
    """Make JupyterLab save widget state into the notebook (its ``saveState`` *user* setting).

    madopd's install already sets the *default* (``madopd.widgets.labsetup``, ``madopd notebooks
    setup``); this writes the user's own setting instead, which overrides any default.

    Without it, a notebook executed in Lab and reopened later (kernel gone) shows "Error
    displaying widget: model not found" for every widget; with it, Lab restores the widgets from
    the saved state and the madopd front ends render again (interactions that need the kernel
    stay inert until it runs). Writes the user setting file under ``settings_dir`` (default
    ``$JUPYTERLAB_SETTINGS_DIR`` or ``~/.jupyter/lab/user-settings``), keeping other settings in
    it; returns its path. Reload JupyterLab afterwards.
    """
    import json
    import os

    if settings_dir is None:
        from jupyter_core.paths import jupyter_config_dir

        settings_dir = os.environ.get("JUPYTERLAB_SETTINGS_DIR") or \
            Path(jupyter_config_dir()) / "lab" / "user-settings"
    path = Path(settings_dir) / WIDGET_MANAGER / "plugin.jupyterlab-settings"
    data = {}
    if path.exists():
        try:
            data = json.loads(path.read_text(encoding="utf-8") or "{}")
        except ValueError as e:
            from madopd.errors import DataError

            raise DataError(f"not JSON ({e}); fix or delete it", path=str(path)) from e
    data["saveState"] = True
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2), encoding="utf-8")
    return path


def svg_as_img(html: str) -> str:
    """``html`` with every inline ``<svg>…</svg>`` replaced by an ``<img>`` of the same SVG.

    JupyterLab sanitises the HTML of untrusted notebooks (a fresh clone is untrusted) and drops
    inline SVG, so the static charts vanish; an ``<img src="data:image/svg+xml;base64,…">`` is
    kept, and an SVG shown as an image cannot run anything. The image gets a white background
    (theme variables do not reach inside it), so it stays readable in the dark theme. Hover
    titles inside the SVG are lost; use it where the page may be untrusted (the gallery).
    """
    import base64
    import re

    def repl(m: re.Match) -> str:
        svg = m.group(0)
        size = re.match(r'<svg[^>]*?width="(\d+)"[^>]*?height="(\d+)"', svg)
        wh = f' width="{size.group(1)}" height="{size.group(2)}"' if size else ""
        # CSS variables do not resolve inside an image: use the light fallbacks
        svg = re.sub(r"var\(--[a-z0-9-]+,\s*([^)]+)\)", r"\1", svg)
        data = base64.b64encode(svg.encode("utf-8")).decode("ascii")
        return (f'<img alt="chart" src="data:image/svg+xml;base64,{data}"{wh} '
                'style="background:#fff;display:block">')

    return re.sub(r"<svg\b.*?</svg>", repl, html, flags=re.S)
