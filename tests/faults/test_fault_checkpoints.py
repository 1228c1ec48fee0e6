"""Checkpoints under faults: no pickle executes, changed bytes are named, NaN is never saved."""

from __future__ import annotations

import json
import os
import random

import numpy as np
import pytest
import torch
from distill_helpers import make_cfg, make_task
from fault_helpers import flip_byte, truncate

from madopd.distill import Distiller
from madopd.distill.state_io import LEGACY_STATE, STATE_JSON, STATE_TENSORS, read_state, write_state
from madopd.errors import DataError, StorageError, ValueRangeError
from madopd.integrity import CHECKSUMS, verify_checksums, write_checksums
from madopd.runs import RunStore, latest_checkpoint, load_run


def _cfg(tiny_dirs, **kw):
    kw = {"batch_size": 2, "record_topk": 0, "max_steps": 2, "checkpoint_every": 1, **kw}
    return make_cfg(tiny_dirs, "opd", teachers=("teacher_c",), **kw)


def _trained(tiny_dirs, root, steps=2, **kw):
    cfg = _cfg(tiny_dirs, **kw)
    d = Distiller.from_config(cfg, make_task(), store=RunStore(root, cfg.to_dict()))
    d.train(steps, progress=False)
    return cfg, d


class _Payload:
    """Unpickling this creates ``marker``: the proof that a pickle ran code."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


# ---------------------------------------------------------------- trainer state without pickle

def test_state_round_trips_rng_and_optimizer_exactly(tmp_path):
    random.seed(3)
    np.random.seed(4)
    torch.manual_seed(5)
    p = torch.nn.Parameter(torch.randn(3, 2))
    opt = torch.optim.AdamW([p], lr=1e-3)
    p.grad = torch.randn(3, 2)
    opt.step()
    state = {"step": 7, "python": random.getstate(), "numpy": np.random.get_state(),
             "torch": torch.get_rng_state(), "optimizer": opt.state_dict(),
             "floats": [0.1, float("nan"), float("inf"), 1e-300], "keys": {"$tensor": 1}}
    write_state(tmp_path, state)
    got = read_state(tmp_path)
    assert got["python"] == state["python"]  # tuples come back as tuples: setstate accepts them
    random.setstate(got["python"])
    assert random.random() == (random.setstate(state["python"]) or random.random())
    np.random.set_state(got["numpy"])
    a = np.random.rand(4)
    np.random.set_state(state["numpy"])
    assert np.array_equal(a, np.random.rand(4))
    assert torch.equal(got["torch"], state["torch"])
    assert set(got["optimizer"]["state"]) == {0}  # int keys survive
    for k, v in state["optimizer"]["state"][0].items():
        assert torch.equal(got["optimizer"]["state"][0][k], v)
    assert got["optimizer"]["param_groups"][0]["betas"] == (0.9, 0.999)
    assert got["floats"][0] == 0.1 and np.isnan(got["floats"][1]) and got["floats"][3] == 1e-300
    assert got["keys"] == {"$tensor": 1}  # a user key that looks like a tag is escaped
    with pytest.raises(TypeError, match="without pickle"):
        write_state(tmp_path, {"step": 1, "fn": print})


def test_crafted_pickle_in_a_run_folder_does_not_execute(tiny_dirs, tmp_path):
    # The payload is real: torch.load without weights_only runs it (the hole this closes).
    probe = tmp_path / "probe"
    torch.save({"step": 1, "x": _Payload(probe)}, tmp_path / "probe.pt")
    torch.load(tmp_path / "probe.pt", weights_only=False)
    assert probe.exists()

    cfg, d = _trained(tiny_dirs, tmp_path / "run", steps=1)
    ckpt = latest_checkpoint(tmp_path / "run")
    marker = tmp_path / "PWNED"
    # 1. a legacy-format checkpoint whose trainer_state.pt is the payload
    for name in (STATE_JSON, STATE_TENSORS, CHECKSUMS):
        (ckpt / name).unlink()
    torch.save({"step": 1, "x": _Payload(marker)}, ckpt / LEGACY_STATE)
    # refused without SHA256SUMS by default; allowed, the pickle is still never run
    with pytest.raises(DataError, match="no SHA256SUMS"):
        Distiller.from_config(cfg, make_task()).resume(ckpt)
    fresh = Distiller.from_config(cfg.replace(allow_unverified_checkpoints=True), make_task())
    with pytest.raises(DataError, match=f"{LEGACY_STATE}.*refused"):
        fresh.resume(ckpt)
    assert not marker.exists()
    # 2. a planted pickle next to a verified checkpoint is refused by the checksum check
    _, d2 = _trained(tiny_dirs, tmp_path / "run2", steps=1)
    ckpt2 = latest_checkpoint(tmp_path / "run2")
    torch.save(_Payload(marker), ckpt2 / "model" / "pytorch_model.bin")
    with pytest.raises(DataError, match="pytorch_model.bin.*never loaded"):
        Distiller.from_config(cfg, make_task()).resume(ckpt2)
    from madopd.commands.eval import load_model

    class Args:
        model, backend, device = str(tmp_path / "run2"), "transformers", "cpu"

    with pytest.raises(DataError, match="pytorch_model.bin"):
        load_model(Args)
    assert not marker.exists()


def test_legacy_pickled_state_still_resumes(tiny_dirs, tmp_path):
    """Checkpoints written before this format load through weights_only=True + allow-list."""
    cfg, d = _trained(tiny_dirs, tmp_path / "run", steps=1)
    ckpt = latest_checkpoint(tmp_path / "run")
    state = read_state(ckpt)
    for name in (STATE_JSON, STATE_TENSORS, CHECKSUMS):
        (ckpt / name).unlink()
    torch.save(state, ckpt / LEGACY_STATE)  # numpy RNG arrays and tuples, as old files hold
    cfg = cfg.replace(allow_unverified_checkpoints=True)  # no SHA256SUMS: allowed explicitly
    assert Distiller.from_config(cfg, make_task()).resume(ckpt) == 1


# ---------------------------------------------------------------- checksums

@pytest.mark.parametrize("victim", ["model/model.safetensors", STATE_TENSORS, STATE_JSON,
                                    "model/config.json"])
def test_a_flipped_byte_is_named_on_resume(tiny_dirs, tmp_path, victim):
    cfg, d = _trained(tiny_dirs, tmp_path, steps=2)
    latest = latest_checkpoint(tmp_path)
    flip_byte(latest / victim)
    fresh = Distiller.from_config(cfg, make_task(), store=RunStore(tmp_path))
    with pytest.raises(DataError, match=f"{victim}.*checksum mismatch.*on_corrupt_checkpoint"):
        fresh.resume()
    assert [m["step"] for m in load_run(tmp_path).metrics] == [1, 2]  # nothing lost


def test_corrupt_latest_falls_back_to_the_previous_checkpoint_when_asked(tiny_dirs, tmp_path):
    cfg, d = _trained(tiny_dirs, tmp_path, steps=2)
    want = {n: p.detach().clone() for n, p in d.student.model.named_parameters()}
    flip_byte(latest_checkpoint(tmp_path) / "model" / "model.safetensors")
    cfg2 = cfg.replace(on_corrupt_checkpoint="previous", max_steps=2)
    fresh = Distiller.from_config(cfg2, make_task(), store=RunStore(tmp_path))
    assert fresh.resume() == 1
    fresh.train(progress=False)
    got = dict(fresh.student.model.named_parameters())
    for n in want:  # the step redone from checkpoint 1 gives the same weights again
        torch.testing.assert_close(got[n].detach(), want[n], rtol=1e-6, atol=1e-7)
    run = load_run(tmp_path)
    assert [m["step"] for m in run.metrics] == [1, 2]
    assert run.metrics[1]["count/run/corrupt_checkpoints_skipped"] == 1
    assert run.metrics[1]["count/run/metrics_lines_dropped"] == 1
    events = [json.loads(x) for x in (tmp_path / "events.jsonl").read_text().splitlines()]
    assert any(e["event"] == "corrupt_checkpoint_skipped" and "step_000002" in e["checkpoint"]
               for e in events)


@pytest.mark.parametrize("victim", ["model/model.safetensors", STATE_TENSORS, STATE_JSON])
def test_truncated_files_without_checksums_are_named(tiny_dirs, tmp_path, victim):
    """An older checkpoint (no SHA256SUMS, allowed explicitly) with a truncated file: one
    error naming it."""
    cfg, d = _trained(tiny_dirs, tmp_path, steps=1, allow_unverified_checkpoints=True)
    ckpt = latest_checkpoint(tmp_path)
    (ckpt / CHECKSUMS).unlink()
    truncate(ckpt / victim)
    with pytest.raises(DataError, match=victim.split("/")[-1]):
        Distiller.from_config(cfg, make_task()).resume(ckpt)


def test_checksum_file_itself(tmp_path):
    (tmp_path / "a").write_text("x")
    write_checksums(tmp_path)
    assert verify_checksums(tmp_path)
    (tmp_path / CHECKSUMS).write_text("zz  a\n")
    with pytest.raises(DataError, match=f"{CHECKSUMS}.*line 1"):
        verify_checksums(tmp_path)
    (tmp_path / CHECKSUMS).write_text(f"{'0' * 64}  ../etc/passwd\n")
    with pytest.raises(DataError, match="malformed"):
        verify_checksums(tmp_path)
    (tmp_path / CHECKSUMS).unlink()
    assert verify_checksums(tmp_path) is False
    with pytest.raises(DataError, match="cannot verify"):
        verify_checksums(tmp_path, required=True)


# ---------------------------------------------------------------- full disk, stale temporaries

def test_full_disk_during_checkpoint_is_one_error_and_keeps_everything(tiny_dirs, tmp_path,
                                                                       monkeypatch):
    import errno

    import madopd.distill.state as state

    cfg, d = _trained(tiny_dirs, tmp_path, steps=1)
    d.step()

    def no_space(folder, st):
        (folder / STATE_JSON).write_text("{")
        raise OSError(errno.ENOSPC, "No space left on device", str(folder / STATE_JSON))

    monkeypatch.setattr(state, "write_state", no_space)
    with pytest.raises(StorageError, match=r"trainer_state.json.*step_000002.*No space left.*"
                                           r"step_000001 is intact"):
        d.save_checkpoint()
    monkeypatch.undo()
    assert latest_checkpoint(tmp_path).name == "step_000001"
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["latest", "step_000001"]
    assert [m["step"] for m in load_run(tmp_path).metrics] == [1, 2]


def test_full_disk_while_logging_metrics_keeps_the_complete_lines(tmp_path, monkeypatch):
    import errno

    import madopd.nofollow

    store = RunStore(tmp_path, {})
    store.log_metrics(1, {"loss": 1.0})
    real_open = madopd.nofollow.open_file

    class HalfWriter:  # the disk fills 5 bytes into the line
        def __init__(self, f):
            self.f = f

        def __getattr__(self, name):
            return getattr(self.f, name)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

        def write(self, data):
            self.f.write(data[:5])
            self.f.flush()
            raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(madopd.nofollow, "open_file", lambda p, how="rb": HalfWriter(
        real_open(p, how)))
    with pytest.raises(StorageError, match="metrics.jsonl.*step 2.*earlier steps are kept"):
        store.log_metrics(2, {"loss": 0.5})
    monkeypatch.undo()
    assert store.metrics_path.read_text() == '{"step": 1, "loss": 1.0}\n'


def test_stale_temporary_checkpoints_are_cleaned_and_counted(tmp_path):
    store = RunStore(tmp_path / "a", {})
    store.save_checkpoint(1, lambda d: (d / "w.txt").write_text("one"))
    ck = tmp_path / "a" / "checkpoints"
    for name in (".tmp-step_000002-123", ".tmp-step_000003-456", ".old-step_000001-9"):
        (ck / name).mkdir()
        (ck / name / "partial").write_text("x")
    (tmp_path / "a" / ".metrics.jsonl.tmp-77").write_text("x")
    from madopd.integrity import release_run_lock

    release_run_lock(tmp_path / "a")  # as if the writer had crashed
    store2 = RunStore(tmp_path / "a", {})
    assert sorted(p.name for p in ck.iterdir()) == ["latest", "step_000001"]
    store2.log_metrics(1, {"loss": 1.0})
    assert load_run(tmp_path / "a").metrics[0]["count/run/stale_temporaries_removed"] == 4
    assert "stale_temporaries_removed" in (tmp_path / "a" / "events.jsonl").read_text()


# ---------------------------------------------------------------- non-finite weights

def test_nonfinite_parameters_are_never_checkpointed(tiny_dirs, tmp_path):
    cfg = _cfg(tiny_dirs, max_steps=4)
    d = Distiller.from_config(cfg, make_task(), store=RunStore(tmp_path, cfg.to_dict()))
    real_step = d.optimizer.step
    calls = {"n": 0}

    def poisoning_step(*a, **k):  # the 2nd update overflows (as lr: .inf once made it)
        out = real_step(*a, **k)
        calls["n"] += 1
        if calls["n"] == 2:
            with torch.no_grad():
                next(iter(d.params)).fill_(float("inf"))
        return out

    d.optimizer.step = poisoning_step
    with pytest.raises(ValueRangeError, match="step 2: parameter .* NaN/inf.*step_000001"):
        d.train(progress=False)
    assert latest_checkpoint(tmp_path).name == "step_000001"
    assert not (tmp_path / "checkpoints" / "step_000002").exists()
    run = load_run(tmp_path)
    assert [m["step"] for m in run.metrics] == [1, 2]
    assert run.metrics[1]["count/nonfinite_params"] == 1
    # a direct save of the poisoned state is refused too (and counted)
    with pytest.raises(ValueRangeError, match="not checkpointed.*latest stays at step_000001"):
        d.save_checkpoint()
    assert latest_checkpoint(tmp_path).name == "step_000001"
    assert "nonfinite_checkpoint_refused" in (tmp_path / "events.jsonl").read_text()
    assert os.listdir(tmp_path / "checkpoints") == ["latest", "step_000001"] or \
        sorted(os.listdir(tmp_path / "checkpoints")) == ["latest", "step_000001"]
