"""The example configs in docs/examples/ (README: "madopd train"): each one runs.

Fast: as written, with the tiny test models in place of SmolLM2 (--set student/teachers):
the file, its task and every field work. Real (marker ``real``): exactly as written, with
the catalogue's SmolLM2-135M-Instruct, one step.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from madopd.cli import main

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((ROOT / "docs" / "examples").glob("*.yaml"))


def test_there_are_examples():
    assert {p.name for p in EXAMPLES} >= {"opd.yaml", "mad_opd.yaml"}


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.stem)
def test_example_config_runs_with_tiny_models(example, tiny_dirs, tmp_path, capsys,
                                              monkeypatch):
    from madopd.distill.config import read_config_file

    monkeypatch.chdir(ROOT)  # the examples name their prompts relative to the checkout
    n_teachers = len(read_config_file(str(example))["teachers"])
    teachers = [tiny_dirs["teacher_a"], tiny_dirs["teacher_c"]][:n_teachers]
    out = tmp_path / "run"
    assert main(["train", "--config", str(example), "--out", str(out), "--no-progress",
                 "--set", f"student={tiny_dirs['student']}",
                 "--set", f"teachers=[{', '.join(teachers)}]"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["step"] == 2 and result["loss"] is not None
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "loss" in r] == [1, 2]


def _smollm2_cached() -> bool:
    from madopd.models.catalogue import cache_root

    return (cache_root() / "smollm2-135m-instruct" / "config.json").is_file()


@pytest.mark.real
@pytest.mark.skipif(not _smollm2_cached(), reason="needs: madopd models pull smollm2-135m-instruct")
@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.stem)
def test_example_config_runs_as_written(example, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    out = tmp_path / "run"
    assert main(["train", "--config", str(example), "--out", str(out), "--no-progress",
                 "--steps", "1"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["step"] == 1
