"""Inputs built to crash a parser or a loader (issue 23, item 5 and item 8's duplicate keys):
each one is one MadopdError line naming the file (and line or field), never a traceback or an
allocation of gigabytes."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest
import torch
from distill_helpers import make_cfg, make_task
from fault_helpers import run_python

from madopd.distill import DistillConfig, Distiller, read_config_file
from madopd.errors import ConfigError, DataError, MadopdError, one_line
from madopd.integrity import write_checksums
from madopd.runs import RunStore, latest_checkpoint, read_json_file
from madopd.tasks.jsonl import read_jsonl_rows

DEEP = 100_000


def _deep_json(n: int = DEEP) -> str:
    return "[" * n + "]" * n


def _trained(tiny_dirs, root, **kw):
    cfg = make_cfg(tiny_dirs, "opd", teachers=("teacher_c",), batch_size=2, record_topk=0,
                   max_steps=1, checkpoint_every=1, **kw)
    d = Distiller.from_config(cfg, make_task(), store=RunStore(root, cfg.to_dict()))
    d.train(1, progress=False)
    return cfg, latest_checkpoint(root)


def _resume_error(cfg, ckpt) -> str:
    with pytest.raises(MadopdError) as info:
        Distiller.from_config(cfg, make_task()).resume(ckpt)
    line = one_line(info.value)
    assert "\n" not in line
    return line


# ---------------------------------------------------------------- JSON nested 100,000 deep

def test_deep_json_anywhere_is_one_line(tmp_path):
    path = tmp_path / "config.json"
    path.write_text(_deep_json())
    with pytest.raises(DataError, match=r"config.json: .*nested 100000 levels deep"):
        read_json_file(path, "run config")
    with pytest.raises(ConfigError, match=r"config.json: .*nested 100000 levels deep"):
        read_config_file(path)
    data = tmp_path / "d.jsonl"
    data.write_text('{"a": 1}\n{"x": ' + _deep_json() + "}\n")
    with pytest.raises(DataError, match=r"d.jsonl, line 2: JSON nested 100001 levels deep"):
        read_jsonl_rows(data)


def test_deep_trainer_state_is_one_line(tiny_dirs, tmp_path):
    cfg, ckpt = _trained(tiny_dirs, tmp_path / "run")
    (ckpt / "trainer_state.json").write_text('{"step": 1, "x": ' + _deep_json() + "}")
    write_checksums(ckpt)  # the planter rewrites the sums too: the parser must still hold
    line = _resume_error(cfg, ckpt)
    assert "trainer_state.json" in line and "nested" in line


# ---------------------------------------------------------------- numbers out of range

def test_a_metrics_step_of_1e999_is_one_line(tmp_path):
    store = RunStore(tmp_path, {})
    store.log_metrics(1, {"loss": 1.0})
    with open(tmp_path / "metrics.jsonl", "a") as f:
        f.write('{"step": 1e999, "loss": 2.0}\n{"step": 3, "loss": 1.0}\n')
    with pytest.raises(DataError, match=r"metrics.jsonl, line 2, field 'step'"):
        store.truncate_to(1)


@pytest.mark.parametrize("text", ["lr: 1e300\n", "lr: 3.0e+38\n", "max_steps: 1e999\n",
                                  "seed: 1e30\n", "max_steps: 100000000000000000000\n"])
def test_config_numbers_are_range_checked(tmp_path, text):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=text.split(":")[0]):
        DistillConfig.from_file(path)


def test_lr_that_overflows_float32_is_refused():
    with pytest.raises(ConfigError, match="'lr' must fit a float32"):
        DistillConfig(lr=1e300)
    with pytest.raises(ConfigError, match="'lr' must be <= 1.0"):
        DistillConfig(lr=1e30)
    assert DistillConfig(lr=1.0).lr == 1.0


# ---------------------------------------------------------------- trainer states

def _edit_state(ckpt: Path, edit) -> None:
    state = json.loads((ckpt / "trainer_state.json").read_text())
    edit(state)
    (ckpt / "trainer_state.json").write_text(json.dumps(state))
    write_checksums(ckpt)


@pytest.mark.parametrize("edit,field", [
    (lambda s: s.pop("rng"), "field 'rng'"),
    (lambda s: s["rng"].pop("numpy"), "field 'rng.numpy'"),
    (lambda s: s.update(step=1e999), "field 'step'"),
    (lambda s: s.update(step=-3), "field 'step'"),
    (lambda s: s.update(optimizer=[]), "field 'optimizer'"),
    (lambda s: s["rng"].update(python="x"), "field 'rng.python'"),
])
def test_a_malformed_trainer_state_is_one_line(tiny_dirs, tmp_path, edit, field):
    cfg, ckpt = _trained(tiny_dirs, tmp_path / "run")
    _edit_state(ckpt, edit)
    line = _resume_error(cfg, ckpt)
    assert line.startswith("DataError") and "trainer_state.json" in line and field in line, line


def test_a_wrongly_shaped_tensor_is_one_line(tiny_dirs, tmp_path):
    from safetensors.torch import load_file, save_file

    cfg, ckpt = _trained(tiny_dirs, tmp_path / "run")
    path = ckpt / "model" / "model.safetensors"
    sd = load_file(str(path))
    name = next(n for n, t in sd.items() if t.dim() == 2)
    sd[name] = torch.zeros(sd[name].shape[0] + 1, sd[name].shape[1])
    save_file(sd, str(path), metadata={"format": "pt"})
    write_checksums(ckpt)
    line = _resume_error(cfg, ckpt)
    assert line.startswith("DataError") and "model.safetensors" in line and name in line, line


def test_a_wrongly_shaped_optimizer_moment_is_one_line(tiny_dirs, tmp_path):
    from safetensors.torch import load_file, save_file

    cfg, ckpt = _trained(tiny_dirs, tmp_path / "run")
    path = ckpt / "trainer_state.safetensors"
    ts = load_file(str(path))
    key = next(k for k, t in ts.items() if t.dim() == 2)
    ts[key] = torch.zeros(3, 3)
    save_file(ts, str(path))
    write_checksums(ckpt)
    line = _resume_error(cfg, ckpt)
    assert line.startswith("DataError") and "optimizer state" in line, line


def test_a_mismatched_model_config_is_one_line(tiny_dirs, tmp_path):
    cfg, ckpt = _trained(tiny_dirs, tmp_path / "run")
    path = ckpt / "model" / "config.json"
    mc = json.loads(path.read_text())
    mc["num_hidden_layers"] = mc["num_hidden_layers"] + 1
    path.write_text(json.dumps(mc))
    write_checksums(ckpt)
    line = _resume_error(cfg, ckpt)
    assert "config.json" in line and "num_hidden_layers" in line, line


# ---------------------------------------------------------------- a real full disk in safetensors

def test_a_full_disk_inside_safetensors_writer_is_a_storage_error(tmp_path):
    """RLIMIT_FSIZE makes the kernel refuse the write (EFBIG) inside safetensors' Rust writer,
    which raises SafetensorError, not an OSError; the previous checkpoint stays latest."""
    res = run_python(f"""
        import resource, signal, sys, torch
        from safetensors.torch import save_file
        from madopd.errors import StorageError
        from madopd.runs import RunStore
        store = RunStore({str(tmp_path)!r}, {{}})
        store.save_checkpoint(1, lambda tmp: save_file({{"w": torch.zeros(4)}},
                                                       str(tmp / "w.safetensors")))
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 16, 1 << 16))
        try:
            store.save_checkpoint(2, lambda tmp: save_file({{"w": torch.zeros(1 << 20)}},
                                                           str(tmp / "w.safetensors")))
        except StorageError as exc:
            print("StorageError", exc)
            sys.exit(0 if store.latest_checkpoint().name == "step_000001" else 4)
        sys.exit(5)
    """, timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr[-2000:]
    assert "step_000002 failed" in res.stdout and "File too large" in res.stdout


# ---------------------------------------------------------------- YAML bombs and duplicate keys

BILLION_LAUGHS = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{c}: &{c} [{', '.join(['*' + p] * 10)}]\n" for p, c in zip("abcdefgh", "bcdefghi"))


def test_billion_laughs_is_one_line(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(BILLION_LAUGHS)
    assert path.stat().st_size < 1024
    with pytest.raises(ConfigError, match=r"c.yaml.*expands to more than"):
        DistillConfig.from_file(path)


@pytest.mark.parametrize("text", ["teachers: &a [*a]\n", "sampling: &s {x: *s}\n"])
def test_a_recursive_anchor_is_one_line(tmp_path, text):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=r"c.yaml, line 1: recursive YAML anchor"):
        DistillConfig.from_file(path)


def test_deep_yaml_is_one_line(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("lr: " + "[" * 5000 + "]" * 5000 + "\n")
    with pytest.raises(ConfigError, match=r"c.yaml.*nested"):
        DistillConfig.from_file(path)


def test_duplicate_keys_are_refused_with_their_line(tmp_path):
    y = tmp_path / "c.yaml"
    y.write_text("lr: 0.1\nseed: 1\nlr: 0.2\n")
    with pytest.raises(ConfigError, match=r"c.yaml, line 3, field 'lr': duplicate key 'lr' "
                                          r"\(first on line 1\)"):
        DistillConfig.from_file(y)
    j = tmp_path / "c.json"
    j.write_text('{"lr": 0.1, "lr": 0.2}')
    with pytest.raises(ConfigError, match=r"c.json, field 'lr': duplicate key"):
        DistillConfig.from_file(j)
    d = tmp_path / "d.jsonl"
    d.write_text('{"id": 1}\n{"id": 2, "id": 3}\n')
    with pytest.raises(DataError, match=r"d.jsonl, line 2, field 'id': duplicate key"):
        read_jsonl_rows(d)
    # anchors, aliases and merge keys that expand to little are still fine
    y.write_text("base: &b {temperature: 0.5}\nsampling:\n  <<: *b\n  top_p: 0.9\n")
    from madopd.safe_io import loads_yaml
    assert loads_yaml(y.read_text(), str(y))["sampling"] == {"temperature": 0.5, "top_p": 0.9}


def test_a_set_override_bomb_is_one_line():
    from madopd.distill import apply_overrides

    with pytest.raises(ConfigError, match="expands to more than"):
        apply_overrides({}, ["teachers=" + BILLION_LAUGHS.replace("\n", "\n")])


# ---------------------------------------------------------------- gzip bomb

def test_a_gzip_bomb_is_one_line_and_reads_only_to_the_cap(tmp_path):
    """A line of 128 MiB of zeros in a 128 KiB .gz: refused at the 64 MiB line cap."""
    path = tmp_path / "bomb.jsonl.gz"
    block = b"0" * (1 << 20)
    with gzip.open(path, "wb", compresslevel=9) as f:
        f.write(b'{"id": 1}\n{"x": "')
        for _ in range(128):
            f.write(block)
        f.write(b'"}\n')
    assert path.stat().st_size < 1 << 20
    with pytest.raises(DataError, match=r"bomb.jsonl.gz, line 2: line longer than"):
        read_jsonl_rows(path)



# ---------------------------------------------------------------- the depth scan itself

def _depth(obj) -> int:
    """Brute-force reference: nesting of lists and dicts (0 for a scalar)."""
    if isinstance(obj, list):
        return 1 + max((_depth(x) for x in obj), default=0)
    if isinstance(obj, dict):
        return 1 + max((_depth(v) for v in obj.values()), default=0)
    return 0


def _random_json(rng, depth: int):
    tricky = ['[', ']]]', '{"a": [', '\\"[', 'q\\\\', '}{', '"', 'plain']
    if depth == 0 or rng.random() < 0.2:
        return rng.choice([rng.choice(tricky), 1, 2.5, None, True])
    if rng.random() < 0.5:
        return [_random_json(rng, depth - 1) for _ in range(rng.randint(0, 3))]
    return {rng.choice(tricky) + str(i): _random_json(rng, depth - 1)
            for i in range(rng.randint(0, 3))}


def test_json_depth_equals_the_brute_force_depth():
    import random

    from madopd.safe_io import json_depth, loads_json

    rng = random.Random(0)
    for _ in range(500):
        obj = _random_json(rng, rng.randint(0, 12))
        raw = json.dumps(obj).encode()
        assert json_depth(raw) == _depth(obj), raw
        assert json_depth(raw, chunk=7) == _depth(obj)  # the chunked running sum
    assert loads_json(b"[" * 64 + b"]" * 64, "x") is not None  # at the limit: fine
    with pytest.raises(DataError, match="nested 65 levels deep"):
        loads_json(b"[" * 65 + b"]" * 65, "x")
