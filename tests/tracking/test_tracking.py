"""report_to: TensorBoard / trackio / W&B read back with their own readers (issue 24).

The three-step toy runs need the ``tracking`` extra (marker ``tracking``; .ci/extra_tracking.sh);
the pure parts (config validation, the table, the shares, the missing-extra line) run always.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from madopd.distill import DistillConfig
from madopd.errors import ConfigError, MissingExtraError
from madopd.tracking import debate_table, markdown_table, normalize_report_to, token_shares
from madopd.types import DebateMessage, StepRecord, Transcript

HERE = Path(__file__).resolve().parents[1]


def _metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def _scalars(line: dict) -> dict[str, float]:
    return {k: v for k, v in line.items() if k != "step" and not k.startswith("count/tracking/")}


def _close(a, b) -> bool:
    if a is None or (isinstance(a, float) and math.isnan(a)):
        return b is None or (isinstance(b, float) and math.isnan(b))
    return math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-7)


# ------------------------------------------------------------------------ no tracker package
def test_report_to_is_validated():
    assert normalize_report_to("tensorboard, wandb") == ["tensorboard", "wandb"]
    assert normalize_report_to("all") == ["tensorboard", "trackio", "wandb"]
    assert normalize_report_to("none") == [] and normalize_report_to(None) == []
    assert DistillConfig(report_to="trackio").report_to == ["trackio"]
    with pytest.raises(ConfigError, match="report_to.*'mlflow'"):
        DistillConfig(report_to=["mlflow"])
    with pytest.raises(ConfigError, match="twice"):
        DistillConfig(report_to="wandb,wandb")
    with pytest.raises(ConfigError, match="on_tracker_error"):
        DistillConfig(on_tracker_error="ignore")


def _record() -> StepRecord:
    msgs = [DebateMessage(0, 1, "a <<CONFIDENCE=80>>", "a", 80.0, confidence_source="tag"),
            DebateMessage(1, 1, "b", "b", 35.0, confidence_source="forced_tag"),
            DebateMessage(0, 2, "a2 <<CONFIDENCE=90>>", "a2", 90.0, confidence_source="tag"),
            DebateMessage(1, 2, "b2", "b2", None)]
    tr = Transcript("s0", ["t1", "t2"], 2, msgs)
    return StepRecord(
        step=3, loss=0.5, metrics={"loss": 0.5}, teacher_names=["t1", "t2"],
        state_ids=["s0", "s1"], prompts=["<b>q0</b> | x", "q1"], responses=["r0\nend", "r1"],
        response_ids=[[1, 2], [3, 4, 5]], response_tokens=[["r", "0"], ["r", "1", "!"]],
        weights=[[0.75, 0.25], [0.5, 0.5]],
        per_token_divergence=[[[0.1, 0.3], [0.2, 0.4]], [[1.0, 0.0], [2.0, 0.0], [3.0, 0.0]]],
        per_token_loss=[[0.15, 0.25], [0.5, 1.0, 1.5]], transcripts=[tr, None],
        correct=[1.0, 0.0], families=["even", "odd"], skipped=[False, False])


def test_debate_table_one_row_per_sample_with_confidences_and_sources():
    cols, rows, cut = debate_table(_record(), {"s0": "gold0"})
    assert len(rows) == 2 and cut == {}
    row = dict(zip(cols, rows[0]))
    assert row["t1 confidence"] == 90.0 and row["t1 source"] == "tag"
    assert row["t2 confidence"] is None and row["t2 source"] == "missing"
    assert "R1 [35, forced_tag]: b" in row["t2 turns"] and "R2 [90, tag]: a2" in row["t1 turns"]
    assert row["reference"] == "gold0" and row["student_sample"] == "r0\nend"
    assert row["t1 weight"] == 0.75 and math.isclose(row["t2 div mean"], 0.35)
    assert math.isclose(row["loss_mean"], 0.2) and row["loss_max"] == 0.25 and row["tokens"] == 2
    row1 = dict(zip(cols, rows[1]))
    assert row1["t1 source"] == "no debate" and row1["reference"] == ""
    assert row1["t1 div mean"] == 2.0 and row1["loss_p90"] == 1.5


def test_markdown_table_escapes_model_text():
    cols, rows, _ = debate_table(_record())
    md = markdown_table(cols, rows)
    assert "<b>" not in md and "&lt;b&gt;q0&lt;/b&gt; \\| x" in md
    assert "r0<br>end" in md and len(md.splitlines()) == 2 + 2
    cols[1] = "a\u2028b\x85c\u202ed"  # separators and a bidi override: escaped, one line
    assert markdown_table(cols, []).splitlines()[0].count("\\u") == 3


def test_token_shares_weight_each_token():
    # sample 0: 2 tokens at (.75, .25); sample 1: 3 tokens at (.5, .5) -> (3, 2) / 5
    s = token_shares(_record())
    assert math.isclose(s["share/t1"], 3.0 / 5) and math.isclose(s["share/t2"], 2.0 / 5)


def test_a_missing_tracker_package_is_one_line(tiny_dirs, tmp_path, monkeypatch):
    import importlib.util

    from madopd.cli import main

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "wandb" else real(name, *a))
    with pytest.raises(MissingExtraError, match=r"madopd\[tracking\]"):
        from madopd.tracking import check_installed

        check_installed(["tensorboard", "wandb"])
    cfg = _config(tmp_path, tiny_dirs)
    rc = main(["train", "--config", str(cfg), "--report-to", "wandb", "--out",
               str(tmp_path / "run"), "--no-progress"])
    assert rc == 1


def _config(tmp_path: Path, tiny_dirs, **extra) -> Path:
    prompts = [{"id": f"p{i}", "prompt": f"q{i}?", "reference": f"a{i}"} for i in range(4)]
    rows = [{"id": p["id"], "conversations": [{"from": "user", "value": p["prompt"]},
                                              {"from": "assistant", "value": p["reference"]}]}
            for p in prompts]
    data = tmp_path / "tools.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = {"task": f"jsonl-tools:{data}", "student": tiny_dirs["student"],
           "teachers": [tiny_dirs["teacher_a"], tiny_dirs["teacher_c"]], "method": "mad_opd",
           "rounds": 1, "weighting": "confidence", "batch_size": 2, "max_steps": 3,
           "checkpoint_every": 0, "lr": 1e-3, "seed": 0, "record_topk": 2, "record_every": 1,
           "sampling": {"max_new_tokens": 4},
           "debate_sampling": {"max_new_tokens": 6, "temperature": 1.0, "seed": 0},
           "confidence_fallback": "forced_tag", **extra}
    path = tmp_path / "cfg.json"
    path.write_text(json.dumps(cfg))
    return path


def _train(tmp_path: Path, tiny_dirs, trackers: str, **extra) -> Path:
    """A 3-step toy run in a child process (trackio reads $TRACKIO_DIR at import; W&B starts
    a service process): the child's whole group is killed on timeout."""
    run = tmp_path / "run"
    cfg = _config(tmp_path, tiny_dirs, **extra)
    code = textwrap.dedent(f"""
        import sys
        from madopd.cli import main
        sys.exit(main(["train", "--config", {str(cfg)!r}, "--report-to", {trackers!r},
                       "--out", {str(run)!r}, "--no-progress"]))
    """)
    env = {**__import__("os").environ, "TRACKIO_DIR": str(tmp_path / "trackio"),
           "WANDB_DIR": str(tmp_path), "WANDB_CACHE_DIR": str(tmp_path / "wbcache"),
           "WANDB_CONFIG_DIR": str(tmp_path / "wbconfig")}
    proc = subprocess.Popen([sys.executable, "-c", code], env=env, start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        out, _ = proc.communicate(timeout=240)
    except subprocess.TimeoutExpired:
        import os
        import signal

        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise
    assert proc.returncode == 0, out
    return run


# ------------------------------------------------------------------------ the trackers themselves
@pytest.mark.tracking
def test_tensorboard_event_files_hold_the_metrics_and_the_table(tmp_path, tiny_dirs):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = _train(tmp_path, tiny_dirs, "tensorboard")
    acc = EventAccumulator(str(run / "tensorboard"), size_guidance={"scalars": 0, "tensors": 0})
    acc.Reload()
    lines = _metrics(run)
    assert [m["step"] for m in lines] == [1, 2, 3]
    tags = set(acc.Tags()["scalars"])
    for line in lines:
        for key, value in _scalars(line).items():
            assert key in tags, key
            got = {e.step: e.value for e in acc.Scalars(key)}[line["step"]]
            assert _close(value, got), (key, value, got)
    assert {"share/teacher_a", "share/teacher_c", "div/teacher_a", "weight/teacher_c",
            "n_eff"} <= tags
    texts = acc.Tensors("debate/text_summary")
    assert [t.step for t in texts] == [1, 2, 3]
    md = texts[0].tensor_proto.string_val[0].decode()
    assert len(md.splitlines()) == 2 + 2 and "teacher_a confidence" in md  # batch of 2 samples


@pytest.mark.tracking
def test_trackio_local_store_holds_the_metrics_and_the_table(tmp_path, tiny_dirs):
    run = _train(tmp_path, tiny_dirs, "trackio")
    code = ("import json, sys; from trackio.sqlite_storage import SQLiteStorage; "
            "print(json.dumps(SQLiteStorage.get_logs('madopd', sys.argv[1])))")
    env = {**__import__("os").environ, "TRACKIO_DIR": str(tmp_path / "trackio")}
    got = json.loads(subprocess.run([sys.executable, "-c", code, run.name], env=env, check=True,
                                    capture_output=True, text=True, timeout=120).stdout)
    scalars = {}
    tables = {}
    for row in got:
        for key, value in row.items():
            if isinstance(value, dict) and value.get("_type") == "trackio.table":
                tables[row["step"]] = value["_value"]
            elif key not in ("step", "timestamp"):
                scalars[(row["step"], key)] = value
    for line in _metrics(run):
        for key, value in _scalars(line).items():
            assert _close(value, scalars[(line["step"], key)]), key
    assert sorted(tables) == [1, 2, 3] and len(tables[1]) == 2
    assert {"teacher_a confidence", "teacher_c source"} <= set(tables[1][0])


def _wandb_history(run_file: Path) -> list[dict]:
    """History records of a W&B transaction log (LevelDB log framing, W&B's own protobufs)."""
    import struct

    from wandb.proto import wandb_internal_pb2 as pb

    buf, block, i, cur, out = run_file.read_bytes(), 32768, 7, b"", []
    while i + 7 <= len(buf):
        if block - i % block < 7:
            i += block - i % block
            continue
        _crc, n, kind = struct.unpack("<IHB", buf[i:i + 7])
        if n == 0 and kind == 0:
            break
        cur, i = cur + buf[i + 7:i + 7 + n], i + 7 + n
        if kind in (1, 4):  # FULL or LAST
            rec = pb.Record()
            rec.ParseFromString(cur)
            cur = b""
            if rec.WhichOneof("record_type") == "history":
                out.append({item.key or "/".join(item.nested_key): json.loads(item.value_json)
                            for item in rec.history.item})
    return out


@pytest.mark.tracking
def test_wandb_offline_run_holds_the_metrics_and_the_table(tmp_path, tiny_dirs):
    run = _train(tmp_path, tiny_dirs, "wandb")
    (run_dir,) = (run / "wandb").glob("offline-run-*")
    (log,) = run_dir.glob("run-*.wandb")
    history = {h["_step"]: h for h in _wandb_history(log)}
    for line in _metrics(run):
        for key, value in _scalars(line).items():
            assert _close(value, history[line["step"]][key]), key
    for step in (1, 2, 3):
        assert history[step]["debate/nrows"] == 2
        table = json.loads((run_dir / "files" / history[step]["debate/path"]).read_text())
        cols = table["columns"]
        assert "teacher_a confidence" in cols and len(table["data"]) == 2


@pytest.mark.tracking
def test_a_failing_tracker_is_counted_and_the_run_goes_on(tmp_path, tiny_dirs, monkeypatch):
    from madopd import tracking
    from madopd.distill import Distiller
    from madopd.runs import RunStore
    from madopd.tasks import get_task

    cfg = DistillConfig.from_file(_config(tmp_path, tiny_dirs, report_to=["tensorboard"]))
    calls = []

    def broken(self, step, scalars, table):
        calls.append(step)
        raise OSError("disk gone")

    monkeypatch.setattr(tracking._TensorBoard, "log", broken)
    d = Distiller.from_config(cfg, get_task(cfg.task), store=RunStore(tmp_path / "r", {}))
    d.train(2, progress=False)
    lines = _metrics(tmp_path / "r")
    assert calls == [1, 2] and [m["count/tracking/tensorboard_errors"] for m in lines] == [1, 1]
    events = (tmp_path / "r" / "events.jsonl").read_text()
    assert events.count("tracker_error") == 2 and "disk gone" in events
    d2 = Distiller.from_config(cfg.replace(on_tracker_error="disable"), get_task(cfg.task),
                               store=RunStore(tmp_path / "r2", {}))
    calls.clear()
    d2.train(2, progress=False)
    lines = _metrics(tmp_path / "r2")
    assert calls == [1] and lines[0]["count/tracking/tensorboard_disabled"] == 1
    assert "count/tracking/tensorboard_errors" not in lines[1]


@pytest.mark.tracking
def test_under_two_processes_only_the_main_process_logs(tmp_path, tiny_dirs):
    """DDP on gloo, 2 processes: one writer of event files, the values of metrics.jsonl (the
    whole step's), and the table rows of both processes' samples on recorded steps."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from test_distributed import _config as ddp_config
    from test_distributed import _launch

    cfg = ddp_config(tmp_path, tiny_dirs, 2, "ddp.json", checkpoint_every=0, record_every=2)
    run = tmp_path / "run"
    _launch(tmp_path, ["--config", str(cfg), "--report-to", "tensorboard", "--out", str(run)])
    files = list((run / "tensorboard").glob("events.out.tfevents.*"))
    assert len(files) == 1, files  # rank 1 opened no writer
    acc = EventAccumulator(str(files[0]), size_guidance={"scalars": 0, "tensors": 0})
    acc.Reload()
    lines = _metrics(run)
    assert [m["step"] for m in lines] == [1, 2, 3, 4]
    for line in lines:
        for key, value in _scalars(line).items():
            assert _close(value, {e.step: e.value for e in acc.Scalars(key)}[line["step"]]), key
    share_steps = [e.step for e in acc.Scalars("share/teacher_a")]
    assert share_steps == [2, 4]  # from records holding every process's samples only
    texts = acc.Tensors("debate/text_summary")
    assert [t.step for t in texts] == [2, 4]
    md = texts[0].tensor_proto.string_val[0].decode()
    assert len(md.split("\n")) == 2 + 4  # 2 samples per process x 2 processes


@pytest.mark.tracking
def test_tensorboard_after_a_resume_keeps_the_second_attempt(tmp_path):
    """Steps 1-3 logged, then a resume from step 1's checkpoint logs 2-3 again: TensorBoard's
    reader shows the second attempt's values only (metrics.jsonl is truncated the same way)."""
    import dataclasses

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from madopd.tracking import Trackers

    first = Trackers(["tensorboard"], tmp_path, record_every=0)
    for step in (1, 2, 3):
        first.log(dataclasses.replace(_record(), step=step, metrics={"loss": float(step)}))
    first.close()
    second = Trackers(["tensorboard"], tmp_path, record_every=0)
    for step in (2, 3):
        second.log(dataclasses.replace(_record(), step=step, metrics={"loss": 10.0 * step}))
    second.close()
    acc = EventAccumulator(str(tmp_path / "tensorboard"), size_guidance={"scalars": 0})
    acc.Reload()
    assert [(e.step, e.value) for e in acc.Scalars("loss")] == [(1, 1.0), (2, 20.0), (3, 30.0)]
