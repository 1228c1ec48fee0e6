"""Builders of the fault-injection suite: byte surgery, a `madopd train` config."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def run_python(script: str, timeout: float = 60, args=()) -> subprocess.CompletedProcess:
    """``python -c script args`` with this checkout first on the path, in its own process
    group; on timeout the whole group is killed and the test fails (nothing may hang)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(ROOT), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen([sys.executable, "-c", textwrap.dedent(script), *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        pytest.fail(f"hung for {timeout} s (its process group was killed)")
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def flip_byte(path: Path, offset: int | None = None) -> None:
    """Invert one byte in the middle of ``path`` (a disk or copy error)."""
    data = bytearray(path.read_bytes())
    i = len(data) // 2 if offset is None else offset
    data[i] ^= 0xFF
    path.write_bytes(bytes(data))


def truncate(path: Path, keep: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def tools_file(tmp_path: Path) -> Path:
    rows = [{"id": f"e{i}", "conversations": [
        {"from": "user", "value": f"add {i} 1"}, {"from": "assistant", "value": f"[add({i},1)]"},
        {"from": "tool", "value": str(i + 1)}, {"from": "assistant", "value": f"{i + 1}"}]}
        for i in range(6)]
    path = tmp_path / "tools.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def train_config(tmp_path: Path, tiny_dirs, **extra) -> Path:
    """A `madopd train` config file: OPD on the tiny student and one tiny teacher."""
    cfg = {"task": f"jsonl-tools:{tools_file(tmp_path)}", "student": tiny_dirs["student"],
           "teachers": [tiny_dirs["teacher_c"]], "batch_size": 2, "max_steps": 2,
           "checkpoint_every": 1, "lr": 1e-3, "seed": 0, "record_topk": 0, "method": "opd",
           "num_teachers": 1, "rounds": 0, "weighting": "uniform",
           "sampling": {"max_new_tokens": 4}, **extra}
    path = tmp_path / "cfg.json"
    path.write_text(json.dumps(cfg))
    return path
