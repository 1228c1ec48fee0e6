"""Every bad input: one line on stderr naming the file / line / field, a non-zero exit."""

from __future__ import annotations

import errno
import gzip
import json
import math
import shutil

import pytest
from fault_helpers import train_config, truncate

from madopd.cli import main
from madopd.distill.config import DistillConfig, read_config_file
from madopd.errors import ConfigError, DataError, MadopdError
from madopd.runs import latest_checkpoint, load_run
from madopd.tasks.jsonl import read_jsonl_rows

# ---------------------------------------------------------------- non-finite config numbers


@pytest.mark.parametrize("field,value", [("lr", math.inf), ("lr", math.nan), ("tau", math.inf),
                                         ("weight_decay", -math.inf), ("lora_alpha", math.nan),
                                         ("max_grad_norm", math.inf),
                                         ("teacher_deadline", math.inf)])
def test_nonfinite_scalars_are_rejected_by_name(field, value):
    with pytest.raises(ConfigError, match=f"'{field}' must be a finite number"):
        DistillConfig(**{field: value})


def test_nonfinite_in_lists_and_samplings_and_files(tmp_path):
    with pytest.raises(ConfigError, match=r"'adam_betas\[0\]' must be a finite"):
        DistillConfig(adam_betas=[math.nan, 0.9])
    with pytest.raises(ConfigError, match=r"'sampling.temperature' must be a finite"):
        DistillConfig.from_dict({"sampling": {"temperature": math.inf}})
    with pytest.raises(ConfigError, match=r"'fixed_weights\[1\]'"):
        DistillConfig(fixed_weights=[1.0, math.inf])
    yml = tmp_path / "c.yaml"
    yml.write_text("lr: .inf\n")
    with pytest.raises(ConfigError, match="'lr' must be a finite number, got inf"):
        DistillConfig.from_file(yml)
    with pytest.raises(ConfigError, match="'lr' must be a finite"):
        DistillConfig.from_file(yml.with_name("d.yaml").write_text("{}") and
                                yml.with_name("d.yaml"), ["lr=.nan"])


# ---------------------------------------------------------------- files that are not UTF-8 / gzip

def test_config_file_not_utf8(tmp_path, one_line):
    cfg = tmp_path / "c.yaml"
    cfg.write_bytes(b"lr: 0.1\nstudent: caf\xe9\n")
    with pytest.raises(ConfigError, match=r"c.yaml, line 2: not UTF-8"):
        read_config_file(cfg)
    assert main(["train", "--config", str(cfg)]) == 1
    assert "c.yaml, line 2: not UTF-8" in one_line()


def test_dataset_not_utf8_and_gz_not_gzip(tmp_path):
    bad = tmp_path / "d.jsonl"
    bad.write_bytes(b'{"prompt": "ok"}\n{"prompt": "\xff"}\n')
    with pytest.raises(DataError, match=r"d.jsonl, line 2: not valid UTF-8"):
        read_jsonl_rows(bad)
    fake = tmp_path / "d.jsonl.gz"
    fake.write_bytes(b'{"prompt": "ok"}\n')
    with pytest.raises(DataError, match=r"d.jsonl.gz: not a gzip file"):
        read_jsonl_rows(fake)
    cut = tmp_path / "cut.jsonl.gz"
    cut.write_bytes(gzip.compress(b'{"prompt": "ok"}\n' * 500)[:60])
    with pytest.raises(DataError, match=r"cut.jsonl.gz.*truncated gzip"):
        read_jsonl_rows(cut)
    good = tmp_path / "g.jsonl.gz"
    good.write_bytes(gzip.compress('{"prompt": "é"}\n'.encode()))
    assert read_jsonl_rows(good) == [(1, {"prompt": "é"})]


def test_train_on_a_dataset_not_utf8_is_one_line(tmp_path, tiny_dirs, one_line):
    data = tmp_path / "bad.jsonl"
    data.write_bytes(b'{"id": "a", "conversations": [{"from": "user", "value": "\xfe"}]}\n')
    cfg = train_config(tmp_path, tiny_dirs, task=f"jsonl-tools:{data}")
    assert main(["train", "--config", str(cfg), "--out", str(tmp_path / "r")]) == 1
    line = one_line()
    assert "bad.jsonl, line 1" in line and "UTF-8" in line


# ---------------------------------------------------------------- model paths

def test_missing_student_and_teacher_paths(tmp_path, tiny_dirs, one_line):
    missing = tmp_path / "no" / "such" / "student"
    cfg = train_config(tmp_path, tiny_dirs, student=str(missing))
    assert main(["train", "--config", str(cfg), "--out", str(tmp_path / "r1")]) == 1
    line = one_line()
    assert "field 'student': no such folder" in line and str(missing) in line
    assert "Repo id" not in line
    cfg = train_config(tmp_path, tiny_dirs, teachers=["./teachers/big"])
    assert main(["train", "--config", str(cfg), "--out", str(tmp_path / "r2")]) == 1
    assert "field 'teachers[0]': no such folder ./teachers/big" in one_line()
    cfg = train_config(tmp_path, tiny_dirs, student="org/not-cached")  # a hub id, offline
    assert main(["train", "--config", str(cfg), "--out", str(tmp_path / "r3")]) == 1
    assert "'student': no such folder org/not-cached, and no hub model" in one_line()


@pytest.mark.parametrize("victim", ["config.json", "model.safetensors"])
def test_truncated_student_files(tmp_path, tiny_dirs, one_line, victim):
    student = tmp_path / "student"
    shutil.copytree(tiny_dirs["student"], student)
    truncate(student / victim)
    cfg = train_config(tmp_path, tiny_dirs, student=str(student))
    assert main(["train", "--config", str(cfg), "--out", str(tmp_path / "r")]) == 1
    line = one_line()
    assert f"student/{victim}" in line or (str(student) in line and "'student'" in line)
    if victim == "config.json":
        assert ", line " in line and "truncated" in line


def test_eval_on_a_run_folder_that_does_not_exist(tmp_path, one_line):
    row = {"task_id": "p", "prompt": "def f():\n", "test": "def check(candidate):\n    pass\n",
           "entry_point": "f"}
    (tmp_path / "x.jsonl").write_text(json.dumps(row) + "\n")
    for model in (str(tmp_path / "runs" / "opd-1"), "./runs/opd-1", "runs/opd-1"):
        rc = main(["eval", "--benchmark", "code-jsonl", "--data", str(tmp_path / "x.jsonl"),
                   "--model", model])
        assert rc != 0
        line = one_line()
        assert "opd-1" in line, line


def test_eval_reads_a_run_and_verifies_it(tmp_path, tiny_dirs, one_line):
    cfg = train_config(tmp_path, tiny_dirs, max_steps=1)
    out = tmp_path / "run"
    assert main(["train", "--config", str(cfg), "--out", str(out), "--no-progress"]) == 0
    from madopd.commands.eval import load_model

    class Args:
        model, backend, device = str(out), "transformers", "cpu"

    assert load_model(Args) is not None
    w = latest_checkpoint(out) / "model" / "model.safetensors"
    w.write_bytes(w.read_bytes()[:-7] + b"1234567")
    with pytest.raises(DataError, match="model.safetensors.*checksum mismatch"):
        load_model(Args)


# ---------------------------------------------------------------- run folder files on resume

def test_resume_with_a_truncated_run_config(tmp_path, tiny_dirs, one_line, capsys):
    cfg = train_config(tmp_path, tiny_dirs, max_steps=1)
    out = tmp_path / "run"
    assert main(["train", "--config", str(cfg), "--out", str(out), "--no-progress"]) == 0
    capsys.readouterr()
    truncate(out / "config.json")
    assert main(["train", "--resume", "--out", str(out)]) == 1
    line = one_line()
    assert "run/config.json" in line and "truncated" in line


def test_resume_with_a_truncated_trainer_state(tmp_path, tiny_dirs, one_line, capsys):
    cfg = train_config(tmp_path, tiny_dirs, max_steps=1)
    out = tmp_path / "run"
    assert main(["train", "--config", str(cfg), "--out", str(out), "--no-progress"]) == 0
    capsys.readouterr()
    truncate(latest_checkpoint(out) / "trainer_state.safetensors")
    assert main(["train", "--resume", "--out", str(out), "--set", "max_steps=2"]) == 1
    assert "trainer_state.safetensors: checksum mismatch" in one_line()
    assert [m["step"] for m in load_run(out).metrics] == [1]  # nothing lost


def test_full_disk_during_a_cli_checkpoint(tmp_path, tiny_dirs, one_line, capsys, monkeypatch):
    import madopd.distill.state as state

    real = state.write_state
    calls = {"n": 0}

    def second_fills_the_disk(folder, st):
        calls["n"] += 1
        if calls["n"] == 2:
            raise OSError(errno.ENOSPC, "No space left on device", str(folder / "x"))
        return real(folder, st)

    monkeypatch.setattr(state, "write_state", second_fills_the_disk)
    cfg = train_config(tmp_path, tiny_dirs, max_steps=2)
    out = tmp_path / "run"
    assert main(["train", "--config", str(cfg), "--out", str(out), "--no-progress"]) == 1
    line = one_line()
    assert "StorageError" in line and "No space left" in line and "step_000001 is intact" in line
    assert latest_checkpoint(out).name == "step_000001"
    assert [m["step"] for m in load_run(out).metrics] == [1, 2]
    capsys.readouterr()
    monkeypatch.undo()
    assert main(["train", "--resume", "--out", str(out), "--no-progress"]) == 0
    assert [m["step"] for m in load_run(out).metrics] == [1, 2]


def test_debug_shows_the_traceback(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_bytes(b"\xff")
    with pytest.raises(MadopdError):
        main(["--debug", "train", "--config", str(cfg)])
    with pytest.raises(MadopdError):
        main(["train", "--debug", "--config", str(cfg)])


def test_errors_with_newlines_print_as_one_line(capsys):
    from madopd.errors import TeacherError, one_line

    assert one_line(TeacherError("server died\n  log tail:\nline a\n")) == \
        "TeacherError: server died | log tail: | line a"
    assert json.dumps(one_line(ValueError()))  # no message: the type alone


def test_debate_cache_not_utf8(tmp_path):
    from madopd.cache import DebateCache

    path = tmp_path / "cache.jsonl"
    path.write_bytes(b'{"key": "a"}\n\xff\xfe\n')
    with pytest.raises(DataError, match=r"cache.jsonl, line 2: debate cache is not UTF-8"):
        DebateCache(path)
