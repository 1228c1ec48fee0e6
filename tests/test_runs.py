"""Run directories: metrics/records round trip, atomic checkpoints, exact resume."""

from __future__ import annotations

import errno
import json

import pytest
import torch
from distill_helpers import make_cfg, make_task

from madopd.distill import Distiller
from madopd.errors import DataError
from madopd.runs import RunStore, latest_checkpoint, load_run, record_from_dict, record_to_dict
from madopd.types import DebateMessage, StepRecord, Transcript


def _record(step: int) -> StepRecord:
    tr = Transcript("s0", ["A", "B"], 1, [DebateMessage(0, 1, "x <<CONFIDENCE=70>>", "x", 70.0),
                                          DebateMessage(1, 1, "y", "y", None)])
    return StepRecord(step=step, loss=0.5, metrics={"loss": 0.5}, teacher_names=["A", "B"],
                      state_ids=["s0"], prompts=["<|user|>hi<|end|>"], responses=["<b>"],
                      response_ids=[[1, 2]], response_tokens=[["<", "b>"]],
                      weights=[[0.6, 0.4]], per_token_divergence=[[[0.1, None], [0.2, 0.3]]],
                      per_token_loss=[[0.1, 0.24]], transcripts=[tr], correct=[1.0],
                      families=["add"], skipped=[False])


def test_record_round_trip_and_lazy_reader(tmp_path):
    store = RunStore(tmp_path / "run", {"lr": 1e-3})
    for s in (1, 2, 3):
        store.log_metrics(s, {"loss": 1.0 / s})
        store.log_record(_record(s))
    run = load_run(tmp_path / "run")
    assert run.config == {"lr": 1e-3}
    assert [m["step"] for m in run.metrics] == [1, 2, 3]
    assert len(run.records) == 3 and run.records.steps == [1, 2, 3]
    rec = run.records.by_step(2)
    assert rec == _record(2)  # transcripts and per-token arrays come back exactly
    assert record_from_dict(record_to_dict(rec)) == rec


def test_truncate_drops_lines_after_the_checkpoint(tmp_path):
    store = RunStore(tmp_path, {})
    for s in range(1, 6):
        store.log_metrics(s, {"loss": s})
        store.log_record(_record(s))
    with store.metrics_path.open("a") as f:
        f.write('{"step": 6, "lo')  # a line cut short by a kill
    store.truncate_to(3)
    run = load_run(tmp_path)
    assert [m["step"] for m in run.metrics] == [1, 2, 3] and run.records.steps == [1, 2, 3]


def test_checkpoint_write_failure_keeps_the_previous_one(tmp_path):
    store = RunStore(tmp_path, {})
    store.save_checkpoint(1, lambda d: (d / "w.txt").write_text("one"))

    def full_disk(d):
        (d / "w.txt").write_text("partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(OSError, match="No space"):
        store.save_checkpoint(2, full_disk)
    latest = latest_checkpoint(tmp_path)
    assert latest.name == "step_000001" and (latest / "w.txt").read_text() == "one"
    assert [p.name for p in (tmp_path / "checkpoints").iterdir()] == ["step_000001", "latest"] or \
        sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["latest", "step_000001"]


def test_load_run_errors(tmp_path):
    with pytest.raises(DataError, match="config.json"):
        load_run(tmp_path)
    RunStore(tmp_path, {})
    (tmp_path / "metrics.jsonl").write_text('{"step": 1}\nnot json\n{"step": 3}\n')
    with pytest.raises(DataError, match="line 2"):
        load_run(tmp_path)


# ---------------------------------------------------------------- Distiller checkpoints

def _cfg(tiny_dirs, **kw):
    # Small teachers and batches: this file runs 9 distillation steps.
    return make_cfg(tiny_dirs, "mad_opd", teachers=("teacher_c", "teacher_c"), rounds=1,
                    checkpoint_every=2, max_steps=3, record_topk=0, batch_size=2,
                    debate_sampling={"max_new_tokens": 4, "seed": 0}, **kw)


def _task():
    return make_task()


def _weights(d):
    return {n: p.detach().clone() for n, p in d.student.model.state_dict().items()}


def test_resume_equals_an_uninterrupted_run(tiny_dirs, tmp_path):
    cfg = _cfg(tiny_dirs)
    full = Distiller.from_config(cfg, _task(), store=RunStore(tmp_path / "full", cfg.to_dict()))
    full.train(progress=False)
    want = _weights(full)

    # "killed" run: 3 steps (checkpoint at 2, step 3 logged but lost), then resumed to 3.
    store = RunStore(tmp_path / "killed", cfg.to_dict())
    killed = Distiller.from_config(cfg, _task(), store=store)
    for _ in range(3):
        rec = killed._step()
        killed._log(rec)
        if rec.step == 2:
            killed.save_checkpoint()
    del killed
    resumed = Distiller.from_config(cfg, _task(), store=RunStore(tmp_path / "killed"))
    assert resumed.resume() == 2
    resumed.train(progress=False)
    assert resumed.step_count == 3
    got = _weights(resumed)
    for name in want:
        torch.testing.assert_close(got[name], want[name], rtol=1e-6, atol=1e-7)
    steps = [m["step"] for m in load_run(tmp_path / "killed").metrics]
    assert steps == [1, 2, 3]
    a = load_run(tmp_path / "full").metrics
    b = load_run(tmp_path / "killed").metrics
    assert [m["loss"] for m in a] == pytest.approx([m["loss"] for m in b], rel=1e-6)


def test_full_disk_during_distiller_checkpoint(tiny_dirs, tmp_path, monkeypatch):
    cfg = _cfg(tiny_dirs)
    store = RunStore(tmp_path, cfg.to_dict())
    d = Distiller.from_config(cfg, _task(), store=store)
    d.step()
    first = d.save_checkpoint()
    d.step()

    import madopd.distill.state as state

    def no_space(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(state, "write_state", no_space)
    with pytest.raises(OSError, match="step_000001 is intact"):
        d.save_checkpoint()
    monkeypatch.undo()
    assert latest_checkpoint(tmp_path) == first
    assert not [p for p in (tmp_path / "checkpoints").iterdir() if p.name.startswith(".")]
    fresh = Distiller.from_config(cfg, _task(), store=RunStore(tmp_path))
    assert fresh.resume() == 1
    assert json.loads((tmp_path / "config.json").read_text())["rounds"] == 1


def test_lora_checkpoint_resumes_the_adapter(tiny_dirs, tmp_path):
    cfg = make_cfg(tiny_dirs, "opd", teachers=("teacher_c",), lora_r=4, batch_size=2,
                   record_topk=0, lr=1e-2, max_steps=3, checkpoint_every=2)
    a = Distiller.from_config(cfg, _task(), store=RunStore(tmp_path / "a", cfg.to_dict()))
    assert a.student.is_lora
    a.train(progress=False)  # checkpoints at 2 and 3
    want = {n: p.detach().clone() for n, p in a.student.model.named_parameters() if p.requires_grad}
    b = Distiller.from_config(cfg, _task(), store=RunStore(tmp_path / "a"))
    assert b.resume(tmp_path / "a" / "checkpoints" / "step_000002") == 2
    b.train(progress=False)
    got = {n: p.detach() for n, p in b.student.model.named_parameters() if p.requires_grad}
    assert want.keys() == got.keys() and want
    for n in want:
        torch.testing.assert_close(got[n], want[n], rtol=1e-6, atol=1e-7)
    assert (tmp_path / "a" / "checkpoints" / "step_000003" / "model" / "adapter_config.json").exists()
