"""A smoke demo run, as a newcomer starts it (`madopd demo --profile smoke --log-file ...`):
every long phase shows a bar with an ETA, each finished run one line; its runs' config.json
re-runs as it is with `madopd train`. Plus the fast checks of the same commands."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from madopd.cli import main

ROOT = Path(__file__).resolve().parents[2]
ETA = r"\[\d\d:\d\d<\d\d:\d\d"  # tqdm's [elapsed<remaining


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    """`madopd demo --profile smoke` in a subprocess (its whole group killed on timeout)."""
    tmp = tmp_path_factory.mktemp("smoke")
    cmd = [sys.executable, "-m", "madopd", "demo", "--profile", "smoke", "--out",
           str(tmp / "out"), "--zoo-dir", str(tmp / "zoo"), "--log-file", str(tmp / "log.txt")]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=1800)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise
    assert proc.returncode == 0, err[-3000:]
    return {"dir": tmp / "out", "stdout": out, "stderr": err, "log": tmp / "log.txt"}


@pytest.mark.slow
def test_every_long_phase_shows_progress_with_an_eta(smoke_run):
    err = smoke_run["stderr"].replace("\r", "\n")
    for phase in (r"zoo \(3 members\)", r"zoo report", r"debate caches \(2\)", r"demo runs \(29\)"):
        assert re.search(phase + r".*" + ETA, err), phase
    res = json.loads((smoke_run["dir"] / "results.json").read_text())
    lines = [x for x in smoke_run["stdout"].splitlines() if re.match(r"\s+\[\d+/29\]", x)]
    assert len(lines) == res["runs_executed"] == 29  # one summary line per finished run
    logged = smoke_run["log"].read_text().splitlines()
    assert sum(bool(re.search(r"\[\d+/29\]", x)) for x in logged) == 29
    assert any("zoo: student done in" in x for x in logged) and any("Overall" in x for x in logged)
    assert all(re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ ", x) for x in logged)


@pytest.mark.slow
def test_a_demo_runs_config_re_runs_as_it_is(smoke_run, tmp_path, capsys):
    """`madopd train --config RUN/config.json` on the demo's MAD-OPD toy-tools run (seed 0):
    the same loss at every step (to 1e-6), with the toy task and templates rebuilt from the
    config's demo_job and demo_zoo (no confidence missing), which the new run keeps."""
    run = smoke_run["dir"] / "runs" / "main__default__toy-tools__MAD-OPD__seed0"
    new = tmp_path / "again"
    assert main(["train", "--config", str(run / "config.json"), "--out", str(new),
                 "--no-progress"]) == 0
    capsys.readouterr()

    def losses(folder):
        rows = [json.loads(x) for x in (folder / "metrics.jsonl").read_text().splitlines()]
        return [(m["step"], m["loss"], m.get("count/missing_confidence", 0.0))
                for m in rows if "loss" in m]

    want, got = losses(run), losses(new)
    assert [s for s, _, _ in got] == [s for s, _, _ in want] == [1, 2, 3, 4]
    for (_, a, miss_a), (_, b, miss_b) in zip(want, got):
        assert b == pytest.approx(a, abs=1e-6) and miss_b == miss_a
    again = json.loads((new / "config.json").read_text())
    assert again["demo_job"]["row"] == "MAD-OPD" and again["demo_zoo"]["tool_episodes"] > 0


@pytest.mark.slow
@pytest.mark.parametrize("run", ["main__default__toy-code__MAD-OPD__seed0",
                                 "main__default__toy-tools__MT-OPD__seed1"])
def test_eval_on_a_demo_run_reproduces_the_demos_numbers(smoke_run, tmp_path, capsys, run):
    """`madopd eval --benchmark TASK --model RUN` with its defaults scores the run's checkpoint
    exactly as the demo scored it: the same score, every metric (sandbox verdict counts
    included: the same samples) and the same per-item outcomes."""
    res = json.loads((smoke_run["dir"] / "results.json").read_text())
    demo = next(r for r in res["runs"] if Path(r["run_dir"]).name == run)
    out = tmp_path / "eval"
    assert main(["eval", "--benchmark", demo["job"]["task"], "--model",
                 str(smoke_run["dir"] / "runs" / run), "--out", str(out), "--no-progress"]) == 0
    assert "scored as the demo scores it" in capsys.readouterr().err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["score"] == demo["score"]
    for k, v in demo["eval"].items():
        assert summary[k] == v or (v != v and summary[k] != summary[k]), k
    items = [json.loads(x) for x in (out / "items.jsonl").read_text().splitlines()]
    assert [i["value"] for i in items] == demo["items"]["values"]
    assert [i["id"] for i in items] == demo["items"]["ids"]


def test_eval_default_fits_the_models_window_or_names_the_flag(tiny_dirs, tmp_path, capsys):
    """The tiny student's window is 512 tokens: the default --max-new-tokens is capped at half
    of it (the old default 512 failed); a value that cannot fit names --max-new-tokens."""
    data = tmp_path / "p.jsonl"
    data.write_text(json.dumps({"task_id": "t0", "prompt": "def f():\n", "entry_point": "f",
                                "test": "def check(f):\n    assert True\n"}) + "\n")
    base = ["eval", "--benchmark", "code-jsonl", "--data", str(data), "--model",
            tiny_dirs["student"], "--no-progress", "--workers", "1"]
    assert main([*base, "--max-new-tokens", "512", "--out", str(tmp_path / "a")]) == 2
    err = capsys.readouterr().err
    assert "--max-new-tokens 512 does not fit" in err and "smaller --max-new-tokens" in err
    assert main([*base, "--out", str(tmp_path / "b")]) == 0  # the default: 256 here
    capsys.readouterr()


# ---------------------------------------------------------------------------- fast checks

def test_toy_zoo_teachers_without_the_demo_fields_are_refused_at_start(tmp_path, capsys):
    """A hand-written config naming toy-zoo members as teachers would debate with the general
    templates: refused before any model is loaded, naming the file and what to do."""
    teacher = tmp_path / "A-123"
    teacher.mkdir()
    (teacher / "member.json").write_text(json.dumps({"settings": {"name": "A"}}))
    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps({"task": "toy-tools", "student": str(teacher), "method": "mad_opd",
                               "teachers": [str(teacher), str(teacher)]}))
    assert main(["train", "--config", str(cfg), "--out", str(tmp_path / "r")]) == 1
    err = capsys.readouterr().err
    assert str(cfg) in err and "toy-zoo members" in err and "demo_job" in err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "r").exists()


def test_a_demo_config_needs_both_demo_fields(tmp_path, capsys):
    cfg = tmp_path / "old.json"
    cfg.write_text(json.dumps({"task": "toy-tools", "student": "x", "method": "opd",
                               "teachers": ["y"], "demo_job": {"row": "OPD-A"}}))
    assert main(["train", "--config", str(cfg), "--out", str(tmp_path / "r")]) == 1
    err = capsys.readouterr().err
    assert str(cfg) in err and "demo_zoo is missing" in err


def test_each_world_writes_to_its_own_default_folder(monkeypatch):
    import madopd.realworld.world
    import madopd.toyworld.demo

    seen = {}
    monkeypatch.setattr(madopd.toyworld.demo, "run_demo",
                        lambda profile, out, **kw: seen.setdefault("toy", out))
    monkeypatch.setattr(madopd.realworld.world, "run_real_demo",
                        lambda profile, out, **kw: seen.setdefault("real", out))
    monkeypatch.setattr(Path, "read_text", lambda self, *a, **k: "table\n")
    assert main(["demo", "--quiet"]) == 0
    assert main(["demo", "--world", "real"]) == 0
    assert seen == {"toy": "madopd-out/toy", "real": "madopd-out/real"}


def test_top_level_help_imports_no_torch():
    """`madopd --help` builds only the top-level parser: no torch (about 2 s) is imported."""
    code = ("import sys\nfrom madopd.cli import main\ntry:\n    main(['--help'])\n"
            "except SystemExit:\n    pass\nprint(sorted(m for m in ('torch', 'transformers', "
            "'numpy') if m in sys.modules))")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0 and "notebooks" in proc.stdout
    assert proc.stdout.strip().splitlines()[-1] == "[]"


def test_install_hints_work_outside_a_checkout(monkeypatch, tmp_path):
    """madopd is not on PyPI: inside a checkout the hint names the checkout, elsewhere the
    packages themselves (never `pip install 'madopd[extra]'`, which pip cannot resolve)."""
    import madopd.errors as errors

    inside = errors.install_hint("real", "gguf")
    assert inside.startswith(f"pip install -e '{ROOT}[real]'") and "pip install gguf" in inside
    monkeypatch.setattr(errors, "__file__", str(tmp_path / "site" / "madopd" / "errors.py"))
    assert errors.install_hint("real", "gguf") == "pip install gguf"
    hint = errors.install_hint("notebooks")
    assert "madopd[" not in hint and "'jupyterlab>=4'" in hint
    assert "madopd[" not in str(errors.MissingExtraError("gguf", "real", "reading GGUF"))
