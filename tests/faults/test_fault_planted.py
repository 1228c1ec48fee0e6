"""Run folders planted with links and FIFOs (issue 23, item 3): refused by name, nothing
outside the run folder written, truncated or deleted, nothing hangs.

Every scenario runs in a child process in its own process group with a timeout (a FIFO that
blocked a read would otherwise hang the suite); the whole group is killed on timeout.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from fault_helpers import run_python

from madopd import integrity
from madopd.runs import RunStore


def _snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (dotfiles included) with its bytes."""
    return {str(p.relative_to(folder)): p.read_bytes()
            for p in sorted(folder.rglob("*")) if p.is_file() and not p.is_symlink()}


def _make_run(run: Path) -> None:
    """A run with metrics for steps 1-2 and complete checkpoints 1 and 2 (no model needed)."""
    store = RunStore(run, {"method": "opd"})
    for step in (1, 2):
        store.log_metrics(step, {"loss": 1.0 / step})
        store.save_checkpoint(step, lambda tmp: (tmp / "weights.bin.txt").write_text("w"))
    store.log_event("made")
    integrity.release_run_lock(run)


# what a resume does to a run folder, through the public API of RunStore; one child process
# takes every planted run in turn (one import of torch instead of one per scenario)
_RESUME = """
    import json, sys
    from madopd.errors import MadopdError, one_line
    from madopd.runs import RunStore, load_run
    for run in sys.argv[1:]:
        try:
            load_run(run)
            store = RunStore(run)
            ckpt = store.latest_checkpoint()
            store.truncate_to(1)
            store.log_event("resumed", checkpoint=str(ckpt))
            store.log_metrics(2, {"loss": 0.5})
            store.save_checkpoint(2, lambda tmp: (tmp / "weights.bin.txt").write_text("again"))
            store.prune(1)
            result = "ok"
        except MadopdError as exc:
            result = one_line(exc)
        print(json.dumps([run, result]), flush=True)
"""


def _plant_outside(outside: Path) -> None:
    outside.mkdir()
    (outside / "precious.txt").write_text("the user's file\n" * 3)
    (outside / ".dotfile").write_text("hidden\n")
    (outside / "step_000009.json.gz").write_bytes(b"not ours")
    (outside / "notes.jsonl").write_text('{"a": 1}\n{"b": 2}\n')


def _plant(run: Path, outside: Path, victim: str) -> str:
    """Replace ``victim`` in ``run`` with a link to (or FIFO beside) ``outside``; returns the
    name the refusal must carry."""
    if victim == "records":
        (run / "records").mkdir(exist_ok=True)
        os.rename(run / "records", outside / "old_records")
        os.symlink(outside, run / "records")
        return "records"
    if victim == "checkpoints":
        os.rename(run / "checkpoints", outside / "checkpoints_copy")
        os.symlink(outside / "checkpoints_copy", run / "checkpoints")
        return "checkpoints"
    if victim == "latest->outside-name":
        (run / "checkpoints" / "latest").write_text("../../outside")
        return "latest"
    if victim == "step-link":
        os.symlink(outside, run / "checkpoints" / "step_000003")
        return "step_000003"
    name, kind = victim.split(":")
    path = run / name
    if path.exists() or path.is_symlink():
        path.unlink()
    if kind == "fifo":
        os.mkfifo(path)
    else:
        os.symlink(outside / ("notes.jsonl" if name.endswith("jsonl") else "precious.txt"), path)
    return name


VICTIMS = [".lock:link", ".lock:fifo", "metrics.jsonl:link", "metrics.jsonl:fifo",
           "events.jsonl:link", "events.jsonl:fifo", "config.json:link", "config.json:fifo",
           "checkpoints/latest:link", "checkpoints/latest:fifo", "latest_checkpoint.txt:link",
           "records", "checkpoints", "latest->outside-name", "step-link", "none"]


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    """{victim: (refusal line or "ok", name it must carry, outside before, outside after)}."""
    base = tmp_path_factory.mktemp("planted")
    runs, setup = [], {}
    for i, victim in enumerate(VICTIMS):
        run, outside = base / f"run{i}", base / f"outside{i}"
        _make_run(run)
        _plant_outside(outside)
        name = "" if victim == "none" else _plant(run, outside, victim)
        setup[str(run)] = (victim, name, outside, _snapshot(outside))
        runs.append(str(run))
    res = run_python(_RESUME + "", timeout=180, args=runs)
    assert res.returncode == 0 and "Traceback" not in res.stderr, res.stderr[-3000:]
    out = {}
    for line in res.stdout.splitlines():
        run, result = json.loads(line)
        victim, name, outside, before = setup[run]
        out[victim] = (result, name, before, _snapshot(outside))
    return out


@pytest.mark.parametrize("victim", VICTIMS)
def test_a_planted_link_or_fifo_is_refused_and_nothing_outside_changes(planted, victim):
    result, name, before, after = planted[victim]
    if victim == "none":  # the same script on an unplanted run succeeds
        assert result == "ok"
    else:
        why = ("not a checkpoint folder of this run" if victim == "latest->outside-name" else
               "is a FIFO" if victim.endswith(":fifo") else "is a symbolic link")
        assert result.startswith("DataError") and name in result and why in result, result
        assert "\n" not in result
    assert after == before  # byte-identical, nothing deleted or added


def test_a_planted_fifo_metrics_file_does_not_hang_train_resume(tmp_path, tiny_dirs):
    """The CLI: `madopd train --resume` on a run whose metrics.jsonl is a FIFO ends with one
    error line (it hung forever before)."""
    from fault_helpers import train_config

    from madopd.cli import main

    cfg = train_config(tmp_path, tiny_dirs, max_steps=1)
    out = tmp_path / "run"
    assert main(["train", "--config", str(cfg), "--out", str(out), "--no-progress"]) == 0
    integrity.release_run_lock(out)
    (out / "metrics.jsonl").unlink()
    os.mkfifo(out / "metrics.jsonl")
    res = run_python(f"""
        import sys
        from madopd.cli import main
        sys.exit(main(["train", "--resume", "--out", {str(out)!r}, "--no-progress"]))
    """, timeout=300)
    assert res.returncode == 1, res.stderr[-2000:]
    err = [ln for ln in res.stderr.splitlines() if ln.startswith("madopd ")]
    assert len(err) == 1 and "metrics.jsonl" in err[0] and "FIFO" in err[0], res.stderr


def test_latest_must_name_a_checkpoint_of_the_run(tmp_path):
    from madopd.errors import DataError
    from madopd.runs import latest_checkpoint

    run = tmp_path / "run"
    _make_run(run)
    assert latest_checkpoint(run).name == "step_000002"
    for bad in ("/etc", "../step_000001", "step_000001/../../x", "step_1"):
        (run / "checkpoints" / "latest").write_text(bad)
        with pytest.raises(DataError, match="latest: names"):
            latest_checkpoint(run)
