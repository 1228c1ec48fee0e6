"""The student's format warm-up (issue 22, item 4): naive calls only (no house convention),
cached under its settings hash, verified, a corrupted folder named and rebuilt. A tiny model
stands in for the student (the real warm-up is measured in docs/real-models.md)."""

from __future__ import annotations

import shutil

import pytest

from madopd.errors import ConfigError
from madopd.realworld import warmup as wu
from madopd.realworld.calls import parse_call
from madopd.realworld.house import HouseCallsTask, naive_call


def test_naive_targets_never_carry_a_house_value():
    task = HouseCallsTask()
    data = wu.warmup_examples(task)
    assert len(data) == len(task.train_rows()) == 192
    for (_chat, call), row in zip(data, task.train_rows()):
        got, ref = parse_call(call), parse_call(row["call"])
        assert got is not None and got[0] == ref[0] and got[1].keys() == ref[1].keys()
        assert got != ref, row  # the value is never the house one
        assert task.verify(task.make_state(row), call) == 0.0
    held_out = {r["question"] for r in task.eval_rows()}
    assert not held_out & {chat[-1]["content"] for chat, _ in data}


def test_spec_key_and_bad_settings():
    keep = (0, 1)
    assert wu.WarmupSpec().key(keep) != wu.WarmupSpec(steps=25).key(keep)
    assert wu.WarmupSpec().key(keep) != wu.WarmupSpec().key((0, 2))
    with pytest.raises(ConfigError, match="target"):
        wu.WarmupSpec(target="house")
    with pytest.raises(ConfigError):
        wu.WarmupSpec(lr=0.0)


@pytest.fixture
def student(tiny_dirs, tmp_path):
    d = tmp_path / "student"
    shutil.copytree(tiny_dirs["student"], d)
    return d


def test_warmup_is_cached_verified_and_rebuilt(student, monkeypatch):
    task = HouseCallsTask()
    spec = wu.WarmupSpec(steps=2, batch_size=2)
    calls = []
    real = wu.warm_up

    def counted(*a, **k):
        calls.append(1)
        return real(*a, **k)

    monkeypatch.setattr(wu, "warm_up", counted)
    path, info = wu.warmed_student(spec, student, (0,), task, log=lambda m: None)
    assert path == wu.warmup_dir(spec, student, (0,)) and path.is_dir()
    assert info["cached"] is False and len(info["losses"]) == 2 and info["examples"] == 192
    assert wu.warmed_student(spec, student, (0,), task)[1]["cached"] is True
    assert len(calls) == 1  # the second call found it intact
    weights = next(path.glob("*.safetensors"))
    weights.write_bytes(b"tampered")
    logs = []
    path2, info2 = wu.warmed_student(spec, student, (0,), task, log=logs.append)
    assert path2 == path and len(calls) == 2 and "checksum" in info2["rebuilt"]
    assert any(path.name in m and "rebuilding" in m for m in logs)
    assert not list(path.parent.glob("*.partial-*"))
    # no warm-up: the shrunk student itself, nothing built
    assert wu.warmed_student(wu.WarmupSpec(steps=0), student, (0,), task)[0] == student


def test_tag_target_ends_like_the_teachers_outside_answer():
    task = HouseCallsTask()
    for (_chat, text), row in zip(wu.warmup_examples(task, "naive+tag"), task.train_rows()):
        assert text == naive_call(row) + "\n<<CONFIDENCE=10>>"
    assert wu.WarmupSpec(target="naive+tag").key((0,)) != wu.WarmupSpec().key((0,))


def test_a_warmup_finished_meanwhile_by_another_process_is_used(student, monkeypatch):
    from madopd.integrity import write_checksums

    task = HouseCallsTask()
    spec = wu.WarmupSpec(steps=1, batch_size=1)
    out = wu.warmup_dir(spec, student, (0,))

    def other_process_wins(model, tok, data, spec, progress=None):
        shutil.copytree(student, out)  # the other process renames its copy into place first
        (out / "warmup.json").write_text("{}")
        write_checksums(out)
        return [1.0]

    monkeypatch.setattr(wu, "warm_up", other_process_wins)
    logs = []
    path, info = wu.warmed_student(spec, student, (0,), task, log=logs.append)
    assert path == out and info["cached"] is False and any("meanwhile" in m for m in logs)
    assert not list(out.parent.glob("*.partial-*"))
