"""Tasks: the protocols (``base``), generic in-memory tasks (``simple``), JSONL loaders
(``jsonl``) and a small registry used by ``madopd train`` (config field ``task``).

``get_task("jsonl-code:PATH")``, ``get_task("jsonl-tools:PATH")`` or a registered name. Toy
and real-world tasks register themselves here lazily as ``"module:attribute"`` factories so that importing
``madopd.tasks`` stays cheap.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from madopd.errors import ConfigError

# name -> factory (a callable, or "module:attribute" imported on first use)
TASKS: dict[str, Callable[..., Any] | str] = {
    "jsonl-code": "madopd.tasks.jsonl:CodeJsonlTask",
    "jsonl-tools": "madopd.tasks.jsonl:ToolJsonlTask",
    "toy-tools": "madopd.toyworld.toy_tools:ToyToolsTask",
    "toy-code": "madopd.toyworld.toy_code:ToyCodeTask",
    "real-calls": "madopd.realworld.calls:RealCallsTask",
    "house-calls": "madopd.realworld.house:HouseCallsTask",
}


def register_task(name: str, factory: Callable[..., Any] | str) -> None:
    """Register a task factory (``factory(**kw)``, or ``factory(path, **kw)`` for ``name:PATH``)."""
    TASKS[name] = factory


def _resolve(factory: Callable[..., Any] | str) -> Callable[..., Any]:
    if callable(factory):
        return factory
    module, _, attr = factory.partition(":")
    return getattr(importlib.import_module(module), attr)


def get_task(name: str, **kw: Any) -> Any:
    """Build a task by name: ``"jsonl-code:PATH"``, ``"jsonl-tools:PATH"`` or a registered name."""
    base, sep, arg = name.partition(":")
    if base not in TASKS:
        raise ConfigError(f"unknown task {name!r}; known: {sorted(TASKS)} (PATH-taking ones as "
                          "'jsonl-code:PATH')")
    factory = _resolve(TASKS[base])
    return factory(arg, **kw) if sep else factory(**kw)
