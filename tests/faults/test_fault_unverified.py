"""A checkpoint without SHA256SUMS (issue 23, item 4): refused by default with one line naming
it; loaded only with allow_unverified_checkpoints, counted and written to events.jsonl."""

from __future__ import annotations

import json

from fault_helpers import flip_byte, train_config

from madopd.cli import main
from madopd.integrity import CHECKSUMS, release_run_lock
from madopd.runs import latest_checkpoint, load_run


def test_a_checkpoint_without_sums_is_refused_then_allowed_and_counted(tmp_path, tiny_dirs,
                                                                      one_line, capsys):
    cfg = train_config(tmp_path, tiny_dirs, max_steps=1)
    out = tmp_path / "run"
    assert main(["train", "--config", str(cfg), "--out", str(out), "--no-progress"]) == 0
    release_run_lock(out)
    capsys.readouterr()
    ckpt = latest_checkpoint(out)
    (ckpt / CHECKSUMS).unlink()
    flip_byte(ckpt / "model" / "model.safetensors", 4000)  # unnoticed without the sums
    assert main(["train", "--resume", "--out", str(out), "--set", "max_steps=2",
                 "--no-progress"]) == 1
    line = one_line()
    assert "step_000001: no SHA256SUMS" in line and "allow_unverified_checkpoints" in line
    assert [m["step"] for m in load_run(out).metrics] == [1]  # nothing changed
    release_run_lock(out)
    assert main(["train", "--resume", "--out", str(out), "--set", "max_steps=2",
                 "--set", "allow_unverified_checkpoints=true", "--no-progress"]) == 0
    run = load_run(out)
    assert [m["step"] for m in run.metrics] == [1, 2]
    assert run.metrics[1]["count/run/unverified_checkpoints"] == 1
    events = [json.loads(x) for x in (out / "events.jsonl").read_text().splitlines()]
    assert any(e["event"] == "unverified_checkpoint_loaded" and "step_000001" in e["checkpoint"]
               for e in events)


def test_eval_refuses_a_run_checkpoint_without_sums_unless_allowed(tmp_path, tiny_dirs,
                                                                   monkeypatch):
    import pytest

    from madopd.commands.eval import load_model
    from madopd.errors import DataError
    from madopd.integrity import ALLOW_UNVERIFIED_ENV

    cfg = train_config(tmp_path, tiny_dirs, max_steps=1)
    out = tmp_path / "run"
    assert main(["train", "--config", str(cfg), "--out", str(out), "--no-progress"]) == 0
    release_run_lock(out)
    (latest_checkpoint(out) / CHECKSUMS).unlink()

    class Args:
        model, backend, device = str(out), "transformers", "cpu"

    monkeypatch.delenv(ALLOW_UNVERIFIED_ENV, raising=False)
    with pytest.raises(DataError, match=f"step_000001: no SHA256SUMS.*{ALLOW_UNVERIFIED_ENV}"):
        load_model(Args)
    monkeypatch.setenv(ALLOW_UNVERIFIED_ENV, "1")
    assert load_model(Args) is not None
