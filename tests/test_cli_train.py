"""`madopd train`: config files, --set, run directories, resume (in process and after SIGKILL)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from madopd.cli import main
from madopd.runs import latest_checkpoint, load_run


def _tools_file(tmp_path: Path) -> Path:
    rows = []
    for i in range(6):
        rows.append({"id": f"e{i}", "conversations": [
            {"from": "user", "value": f"add {i} 1"},
            {"from": "assistant", "value": f"[add({i},1)]"},
            {"from": "tool", "value": str(i + 1)},
            {"from": "assistant", "value": f"{i + 1}"}]})
    path = tmp_path / "tools.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _config(tmp_path: Path, tiny_dirs, **extra) -> Path:
    cfg = {"task": f"jsonl-tools:{_tools_file(tmp_path)}", "student": tiny_dirs["student"],
           "teachers": [tiny_dirs["teacher_c"]], "batch_size": 2, "max_steps": 3,
           "checkpoint_every": 2, "lr": 1e-3, "seed": 0, "record_topk": 2,
           "sampling": {"max_new_tokens": 4}, **extra}
    path = tmp_path / "cfg.json"
    path.write_text(json.dumps(cfg))
    return path


def test_train_then_resume_in_process(tmp_path, tiny_dirs, capsys):
    cfg = _config(tmp_path, tiny_dirs)
    out = tmp_path / "run"
    rc = main(["train", "--config", str(cfg), "--preset", "opd", "--set", "max_steps=2",
               "--set", "sampling.temperature=0.9", "--out", str(out), "--no-progress"])
    assert rc == 0
    run = load_run(out)
    assert [m["step"] for m in run.metrics] == [1, 2] and run.config["method"] == "opd"
    assert run.config["sampling"]["temperature"] == 0.9 and run.config["max_steps"] == 2
    assert latest_checkpoint(out).name == "step_000002"
    assert (latest_checkpoint(out) / "model" / "config.json").exists()  # HF format
    assert (out / "latest_checkpoint.txt").read_text() == "checkpoints/step_000002/model"
    assert len(run.records) == 2 and run.records[1].teacher_names == ["teacher_c"]
    rc = main(["train", "--resume", "--out", str(out), "--set", "max_steps=3", "--no-progress"])
    assert rc == 0
    assert [m["step"] for m in load_run(out).metrics] == [1, 2, 3]
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["step"] == 3


def test_train_reports_config_errors(tmp_path, tiny_dirs, capsys):
    cfg = _config(tmp_path, tiny_dirs)
    assert main(["train", "--config", str(cfg), "--set", "tua=1", "--out", str(tmp_path / "a")]) == 1
    assert "did you mean 'tau'" in capsys.readouterr().err
    bad = _config(tmp_path, tiny_dirs, task=None)
    assert main(["train", "--config", str(bad), "--out", str(tmp_path / "b")]) == 1
    assert "'task' is required" in capsys.readouterr().err
    assert main(["train", "--resume", "--out", str(tmp_path / "nothing")]) == 2
    assert main(["train", "--help-config"]) == 0
    assert "on_policy_fraction" in capsys.readouterr().out


def _weights(ckpt: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(ckpt / "model" / "model.safetensors"))


@pytest.mark.slow
def test_sigkill_then_resume_matches_an_uninterrupted_run(tmp_path, tiny_dirs):
    cfg = _config(tmp_path, tiny_dirs, max_steps=16, checkpoint_every=4,
                  sampling={"max_new_tokens": 12})
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    base = [sys.executable, "-m", "madopd.cli", "train", "--config", str(cfg), "--preset",
            "opd", "--no-progress", "--out"]
    full = tmp_path / "full"
    subprocess.run(base + [str(full)], check=True, env=env, capture_output=True, timeout=600)

    killed = tmp_path / "killed"
    proc = subprocess.Popen(base + [str(killed)], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while latest_checkpoint(killed) is None and time.time() < deadline and proc.poll() is None:
        time.sleep(0.02)
    still_running = proc.poll() is None
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert still_running, "the run finished before it could be killed"
    at_kill = [m["step"] for m in load_run(killed).metrics]
    assert latest_checkpoint(killed) is not None and at_kill[-1] < 16
    subprocess.run([sys.executable, "-m", "madopd.cli", "train", "--resume", "--out", str(killed),
                    "--no-progress"], check=True, env=env, capture_output=True, timeout=600)
    steps = [m["step"] for m in load_run(killed).metrics]
    assert steps == list(range(1, 17))  # no gap, no duplicate
    a, b = _weights(latest_checkpoint(full)), _weights(latest_checkpoint(killed))
    assert latest_checkpoint(killed).name == "step_000016"
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=1e-6, atol=1e-7)
    la = [m["loss"] for m in load_run(full).metrics]
    lb = [m["loss"] for m in load_run(killed).metrics]
    assert la == pytest.approx(lb, rel=1e-6)
