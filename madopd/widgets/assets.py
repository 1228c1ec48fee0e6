"""Front-end assets: the ES modules and CSS that ship inside the wheel (no CDN, no build step).

Sources live in the top-level ``widgets/`` folder of the repository; ``madopd/widgets/static``
is a symbolic link to it in a source checkout, so there is one copy to edit. Building a wheel
follows the link and ships real files under ``madopd/widgets/static/`` (checked by
``tests/widgets/test_widget_assets.py``), which is where the widgets load them from.

anywidget evaluates ``_esm`` as ONE module from a blob URL, so relative imports cannot be
resolved in the browser. ``bundle(entry)`` therefore concatenates the shared modules
(``divmath.js``, ``common.js``, ``plots.js``) and the entry module, dropping the ``import`` lines and the
``export`` keywords of the dependencies. The sources stay plain ES modules that node can import
directly (``tests/widgets/js/*.test.mjs``).
"""

from __future__ import annotations

import re
import sys
from functools import cache
from pathlib import Path

STATIC = Path(__file__).parent / "static"
SOURCES = Path(__file__).resolve().parents[2] / "widgets"  # only present in a source checkout
SHARED = ("divmath.js", "common.js", "plots.js")
ENTRIES = ("playground.js", "lens.js", "debate.js", "decomposition.js", "failures.js",
           "dashboard.js")
FILES = SHARED + ENTRIES + ("madopd.css",)

_IMPORT = re.compile(r'^import\s+\{[^}]*\}\s+from\s+"\./[a-z_]+\.js";\s*$', re.M)
_EXPORT = re.compile(r"^export\s+(?=(?:async\s+)?(?:function|const|let|class)\b)", re.M)


def read(name: str) -> str:
    path = STATIC / name
    if not path.is_file():
        raise FileNotFoundError(f"madopd widget asset {name!r} missing from {STATIC}")
    return path.read_text(encoding="utf-8")


@cache
def bundle(entry: str) -> str:
    """One self-contained ES module: shared helpers + ``entry`` (which keeps ``export default``)."""
    if entry not in ENTRIES:
        raise ValueError(f"unknown widget entry {entry!r}; expected one of {ENTRIES}")
    parts = [f"// madopd widget bundle: {entry} (generated from widgets/*.js by assets.bundle)"]
    for name in SHARED:
        parts.append(f"// ---- {name}\n" + _EXPORT.sub("", _IMPORT.sub("", read(name))))
    parts.append(f"// ---- {entry}\n" + _IMPORT.sub("", read(entry)))
    return "\n".join(parts)


@cache
def css() -> str:
    return read("madopd.css")


@cache
def plotly_source() -> str:
    """plotly.js as shipped by the installed ``plotly`` python package (the ``notebooks`` extra):
    the charts' library, sent to the browser once per kernel (classes.PlotlyLibrary)."""
    try:
        from importlib.resources import files

        return files("plotly").joinpath("package_data", "plotly.min.js").read_text("utf-8")
    except (ImportError, FileNotFoundError) as exc:
        from madopd.errors import MissingExtraError

        raise MissingExtraError("plotly", "notebooks", "madopd notebook charts") from exc


def missing() -> list[str]:
    """Asset names that cannot be read from ``STATIC`` (a broken link or an incomplete wheel)."""
    return [n for n in FILES if not (STATIC / n).is_file()]


if __name__ == "__main__":
    bad = missing()
    print("missing:", bad) if bad else print("all widget assets present")
    sys.exit(1 if bad else 0)
