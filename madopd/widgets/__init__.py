"""Notebook widgets for madopd: payload builders, static renderers and anywidget front ends.

Pure-Python parts (importable without the notebook extra):
  ``playground_payload`` / ``render_playground_html``   divergence playground (no model)
  ``lens_payload`` / ``render_lens_html``               per-token FKL / RKL / JSD(β) lens
  ``debate_payload`` / ``render_debate_html``           debate board
  ``decomposition_payload`` / ``render_decomposition_html``  per-token loss by teacher
  ``failures_payload`` / ``render_failures_html``       failure-case finder table
  ``dashboard_payload`` / ``render_dashboard_html``     live training dashboard
  ``render_<name>_png(payload) -> bytes``              the same picture as a PNG (colours only,
      same scales as the HTML; pure-Python writer in ``madopd.widgets.png``)
Widgets (need ``pip install 'madopd[notebooks]'``; imported lazily):
  ``Playground``, ``DivergenceLens``, ``DebateBoard``, ``LossDecomposition``, ``FailureFinder``,
  ``LiveDashboard``.
Front-end sources: the repository's top-level ``widgets/`` (shipped in ``madopd/widgets/static``).
Example (synthetic) data for docs and tests: ``madopd.widgets.examples``.
"""

from __future__ import annotations

import importlib

_PURE = {
    "playground_payload": "playground", "render_playground_html": "playground",
    "lens_payload": "lens", "render_lens_html": "lens",
    "debate_payload": "board", "render_debate_html": "board",
    "decomposition_payload": "decomposition", "render_decomposition_html": "decomposition",
    "failures_payload": "failures", "render_failures_html": "failures",
    "dashboard_payload": "dashboard", "render_dashboard_html": "dashboard",
    "render_playground_png": "playground", "render_lens_png": "lens",
    "render_debate_png": "board", "render_decomposition_png": "decomposition",
    "render_failures_png": "failures", "render_dashboard_png": "dashboard",
}
_WIDGETS = ("Playground", "DivergenceLens", "DebateBoard", "LossDecomposition",
            "FailureFinder", "LiveDashboard", "make_probe")

__all__ = [*_PURE, *_WIDGETS]


def __getattr__(name: str):
    if name in _PURE:
        return getattr(importlib.import_module(f"madopd.widgets.{_PURE[name]}"), name)
    if name in _WIDGETS:
        return getattr(importlib.import_module("madopd.widgets.classes"), name)
    raise AttributeError(f"module 'madopd.widgets' has no attribute {name!r}")
