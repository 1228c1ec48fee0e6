"""Several processes: `madopd train` under `accelerate launch` equals one process with the union
of the processes' batches (madopd/distill/distributed.py, docs/scaling.md).

Why greedy decoding in the end-to-end checks: one process samples its 4 rollouts from one seeded
stream, two processes sample 2 + 2 from two streams, so sampled tokens cannot match. With greedy
student and debate decoding (and prompts of equal length, so no padding differs) every token is
the same, and what is left to compare is exactly the cross-process part: data sharding, the
loss normalisation Σ per-token losses / tokens of ALL processes, the engine's gradient
average (DDP or FSDP2, times the number of processes), the schedule, metric gathering,
rank-0-only writes and resume.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import torch

from madopd.cli import main
from madopd.distill.distributed import (
    CPU_FSDP_VAR,
    check_engine,
    check_launch,
    combine_stats,
    merge_records,
)
from madopd.errors import ConfigError
from madopd.runs import latest_checkpoint, load_run
from madopd.types import StepRecord

# ---------------------------------------------------------------------------------- helpers


def _code_task(tmp_path: Path) -> str:
    """17 prompts of one length -> 15 training states (jsonl-code keeps round(10%) = 2 out).

    15 = 4 + 4 + 4 + 3: at step 4 (the epoch's last) process 0 holds 2 states and process 1
    holds 1, so the processes' token counts differ and averaging per-process means (DDP-style)
    would differ from Σ per-token losses / tokens of all processes.
    """
    path = tmp_path / "code.jsonl"
    path.write_text("".join(json.dumps({"id": f"p{i:02d}", "prompt": f"def f{i:02d}():"}) + "\n"
                            for i in range(17)))
    return f"jsonl-code:{path}"


def _config(tmp_path: Path, tiny_dirs, batch_size: int, name: str, **extra) -> Path:
    cfg = {"task": _code_task(tmp_path), "student": tiny_dirs["student"],
           "teachers": [tiny_dirs["teacher_a"], tiny_dirs["teacher_c"]], "method": "mad_opd",
           "rounds": 1, "weighting": "confidence", "batch_size": batch_size, "max_steps": 4,
           "checkpoint_every": 2, "lr": 1e-2, "seed": 0, "record_topk": 2,
           "schedule": "cosine", "warmup_ratio": 0.34, "device": "cpu",
           "sampling": {"max_new_tokens": 5, "greedy": True},
           "debate_sampling": {"max_new_tokens": 4, "greedy": True}, **extra}
    path = tmp_path / name
    path.write_text(json.dumps(cfg))
    return path


ROOT = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# accelerate's own FSDP configuration (FSDP2, one shard unit per decoder layer); on CPU madopd
# needs MADOPD_CPU_FSDP=1, or accelerate would silently use DDP (distributed.check_engine)
FSDP = ["--use_fsdp", "--fsdp_version", "2", "--fsdp_auto_wrap_policy", "TRANSFORMER_BASED_WRAP",
        "--fsdp_transformer_layer_cls_to_wrap", "Qwen3DecoderLayer"]
_ENGINES = {"ddp": {}, "fsdp": {"launcher": FSDP, "env_extra": {CPU_FSDP_VAR: "1"}}}


# Every process of a launch carries this variable (torchrun starts each rank in a session of its
# own, so the launcher's process group alone misses the ranks): what a timeout kills, and what
# must be gone after a launch.
LAUNCH_VAR = "MADOPD_TEST_LAUNCH"
LAUNCH_TIMEOUT_S = 300


def _launch_env(tmp_path: Path, env_extra: dict | None = None) -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
            "HF_HOME": str(tmp_path / "hf_home"),  # no user accelerate config file applies
            "TOKENIZERS_PARALLELISM": "false", "CUDA_VISIBLE_DEVICES": "",
            # a script's own folder comes first on sys.path: import this checkout's madopd
            "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
            LAUNCH_VAR: uuid.uuid4().hex, **(env_extra or {})}


def _marked(token: str) -> list[int]:
    """PIDs of the live processes whose environment holds LAUNCH_VAR=token (zombies have none)."""
    want = f"{LAUNCH_VAR}={token}".encode()
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                if want in (entry / "environ").read_bytes().split(b"\0"):
                    pids.append(int(entry.name))
            except OSError:  # gone meanwhile, or not ours
                pass
    return pids


def _kill_launch(proc: subprocess.Popen, token: str) -> int:
    """SIGKILL the launcher's process group and every marked process (and its group), until
    none is left; reap the launcher. Returns how many processes were found alive."""
    seen: set[int] = set()
    for _ in range(50):
        pids = _marked(token)
        seen.update(pids)
        for pgid in {proc.pid, *(_pgid(p) for p in pids)} - {None, os.getpgrp()}:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pgid, signal.SIGKILL)
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        if not pids:
            break
        time.sleep(0.1)
    proc.kill()
    proc.wait(30)
    return len(seen)


def _pgid(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except ProcessLookupError:
        return None


def _start(cmd: list[str], env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)


def _finish(proc: subprocess.Popen, env: dict[str, str],
            timeout: float = LAUNCH_TIMEOUT_S) -> subprocess.CompletedProcess:
    """Wait for a launch; on timeout kill all of it and fail; after it, no process may remain."""
    token = env[LAUNCH_VAR]
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        n = _kill_launch(proc, token)
        out, err = proc.communicate()
        raise AssertionError(f"launch timed out after {timeout:.0f} s; killed {n} processes "
                             f"(launcher and ranks):\n{err[-4000:]}") from None
    left = _marked(token)
    if left:
        _kill_launch(proc, token)
        raise AssertionError(f"the launch exited ({proc.returncode}) but left {len(left)} "
                             f"processes behind (killed): {left}\n{err[-4000:]}")
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def _launch(tmp_path: Path, args: list[str], launcher: str | list[str] = "--multi_gpu",
            check: bool = True, env_extra: dict | None = None,
            module: str = "madopd.cli") -> subprocess.CompletedProcess:
    """`accelerate launch <launcher> --num_processes 2 -m madopd.cli train ARGS`.

    ``--multi_gpu`` on a machine (or a config) without CUDA runs 2 processes on the gloo
    backend (DDP); ``FSDP`` shards the student; ``--cpu --num_processes 2`` starts ONE
    process (see test_cpu_flag_...). On timeout the launcher and its ranks are killed and the
    test fails; a launch that leaves a process behind fails too.
    """
    env = _launch_env(tmp_path, env_extra)
    proc = _finish(_start(_launch_cmd(launcher, module, args), env), env)
    if check and proc.returncode != 0:
        raise AssertionError(f"launch failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    return proc


def _launch_cmd(launcher: str | list[str], module: str, args: list[str]) -> list[str]:
    launcher = [launcher] if isinstance(launcher, str) else list(launcher)
    head = ["-m", module, "train", "--no-progress"] if module == "madopd.cli" else [module]
    return [sys.executable, "-m", "accelerate.commands.launch", *launcher, "--num_processes",
            "2", "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
            "--main_process_port", str(_free_port()), *head, *args]


def _result_lines(stdout: str) -> list[dict]:
    return [json.loads(x) for x in stdout.splitlines() if x.startswith('{"run"')]


def _weights(run: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(latest_checkpoint(run) / "model" / "model.safetensors"))


# Work counters depend on each process's own in-memory debate cache (a state that another
# process, or the run before a resume, debated is a miss here) and on how many processes make
# calls. Only hits + misses (= debated states) must agree; see test_..._union_batch for the rest.
CACHE_KEYS = {"count/cache_hits", "count/cache_misses", "cache/hit_rate"}
WORK_PREFIX = ("count/debate/", "count/score_cache/")


def _assert_same_run(single: Path, multi: Path, steps: list[int], records: list[int]) -> None:
    """Float tolerance: at step 1 (same weights) only summation order differs (rel 1e-5).
    Later, Adam amplifies float32 noise of near-zero gradients: ONE process with batch 4 vs
    2 micro-batches of 2 (the same math) differs by 1.1e-5 in weights after 2 steps of
    lr 1e-2 (measured), while an update is ~2e-2 and a wrong cross-process normalisation
    shows up in `loss` and `grad_norm` (the norm of the summed gradient) as a factor of 2."""
    a, b = load_run(single), load_run(multi)
    assert [m["step"] for m in a.metrics] == steps
    assert [m["step"] for m in b.metrics] == steps  # rank 0 alone writes: no duplicated lines
    for ma, mb in zip(a.metrics, b.metrics):
        # count/run/*: what the run store repaired (e.g. the killed run's stale lock), not math
        ma = {k: v for k, v in ma.items() if not k.startswith("count/run/")}
        mb = {k: v for k, v in mb.items() if not k.startswith("count/run/")}
        assert set(ma) - CACHE_KEYS == set(mb) - CACHE_KEYS
        assert ma.get("count/cache_hits", 0) + ma.get("count/cache_misses", 0) == \
            mb.get("count/cache_hits", 0) + mb.get("count/cache_misses", 0)
        for k in ma:
            if k.startswith(("time/", *WORK_PREFIX)) or k in CACHE_KEYS:
                continue
            rel = 1e-5 if ma["step"] == 1 else 1e-4
            assert mb[k] == pytest.approx(ma[k], rel=rel, abs=1e-7), (ma["step"], k)
    assert b.records.steps == records
    for s in records:
        ra, rb = a.records.by_step(s), b.records.by_step(s)
        # both processes' samples, in the single process's order (the union of the batches)
        assert rb.state_ids == ra.state_ids and len(rb.state_ids) == (3 if s % 4 == 0 else 4)
        assert rb.response_ids == ra.response_ids and rb.weights == ra.weights
        assert rb.transcripts == ra.transcripts
        for x, y in zip(ra.per_token_loss, rb.per_token_loss):
            assert y == pytest.approx(x, rel=1e-5 if s == 1 else 1e-4, abs=1e-8)
        assert rb.student_topk["ids"] == ra.student_topk["ids"]
    wa, wb = _weights(single), _weights(multi)
    assert wa.keys() == wb.keys()
    for name in wa:
        torch.testing.assert_close(wb[name], wa[name], rtol=1e-4, atol=5e-5)


# ------------------------------------------------------------------------- end to end (launch)

# FSDP2 (~80 s here, loaded) runs with the slow tests (.ci/extra_demo.sh)
@pytest.mark.parametrize("engine", ["ddp", pytest.param("fsdp", marks=pytest.mark.slow)])
def test_two_processes_equal_one_process_with_the_union_batch(tmp_path, tiny_dirs, capsys,
                                                              engine):
    """2 processes × batch 2 == 1 process × batch 4 under DDP and FSDP2 (the engine averages,
    the loss is scaled by the processes): metrics, records and weights (4 steps; the 4th has
    2 + 1 states; FSDP: the checkpoints hold the gathered full weights, tied embeddings once)."""
    one = tmp_path / "one"
    assert main(["train", "--config", str(_config(tmp_path, tiny_dirs, 4, "c4.json")),
                 "--out", str(one), "--no-progress"]) == 0
    capsys.readouterr()
    two = tmp_path / "two"
    proc = _launch(tmp_path, ["--config", str(_config(tmp_path, tiny_dirs, 2, "c2.json")),
                              "--out", str(two)], **_ENGINES[engine])
    assert f"engine {engine}" in proc.stderr
    results = _result_lines(proc.stdout)
    assert len(results) == 1 and results[0]["processes"] == 2 and results[0]["step"] == 4
    assert sorted(p.name for p in (two / "checkpoints").iterdir()) == [
        "latest", "step_000002", "step_000004"]  # no second writer's leftovers
    _assert_same_run(one, two, [1, 2, 3, 4], [1, 2, 3, 4])
    for ma, mb in zip(load_run(one).metrics, load_run(two).metrics):  # first epoch: no hits
        assert mb["count/debate/turns"] == ma["count/debate/turns"] == 2 * ma["samples/total"]
        assert mb["count/debate/generate_calls"] == 2 * ma["count/debate/generate_calls"]
    assert [m["samples/total"] for m in load_run(two).metrics] == [4, 4, 4, 3]


def test_train_under_accelerate_launch_exits_cleanly(tmp_path, tiny_dirs):
    """`madopd train` under `accelerate launch` (2 gloo processes): both ranks finish, the
    launcher exits 0 well within its timeout and no process of the launch is left (the gloo
    teardown deadlock of distributed.leave_together kept rank 0 alive for ever)."""
    cfg = _config(tmp_path, tiny_dirs, 2, "c.json", max_steps=1, checkpoint_every=1)
    proc = _launch(tmp_path, ["--config", str(cfg), "--out", str(tmp_path / "r")])
    assert proc.returncode == 0 and _result_lines(proc.stdout)[0]["processes"] == 2
    assert "Traceback" not in proc.stderr


def test_leave_together_never_deadlocks(tmp_path):
    """40 gloo sessions in 2 processes, each ended by leave_together after a DDP backward, an
    all-reduce and an object gather, then the DDP wrapper freed (which destroys the group).
    Ended with barrier + destroy_process_group instead (`naive`), this deadlocks within a few
    cycles (measured: every run of 40)."""
    envs = [_launch_env(tmp_path) for _ in (0, 1)]  # one mark each: two separate launches
    script = str(Path(__file__).with_name("multiproc_teardown.py"))
    port = str(_free_port())
    ranks = [_start([sys.executable, script, str(r), port, "40"], envs[r]) for r in (0, 1)]
    done = [_finish(p, env, timeout=120) for p, env in zip(ranks, envs)]
    for r, p in enumerate(done):
        assert p.returncode == 0 and f"rank {r}: 40 cycles ended" in p.stdout, p.stderr[-2000:]


def _state(pid: int) -> str | None:
    """The process's state letter (Z: a zombie, dead), None if it is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return None


def test_a_timed_out_launch_leaves_no_process(tmp_path):
    """Both ranks hang (tests/multiproc_hang.py): the timeout kills the launcher AND the ranks,
    which torchrun starts in sessions of their own (killing the launcher's group, or the
    launcher alone as `subprocess.run(timeout=...)` does, leaves them running)."""
    env = _launch_env(tmp_path)
    script = str(Path(__file__).with_name("multiproc_hang.py"))
    proc = _start(_launch_cmd("--multi_gpu", script, [str(tmp_path)]), env)
    deadline = time.monotonic() + 120
    files = [tmp_path / f"rank{r}.pid" for r in (0, 1)]
    while not all(f.exists() and f.read_text() for f in files):
        assert time.monotonic() < deadline and proc.poll() is None, "the ranks did not start"
        time.sleep(0.2)
    pids = [int(f.read_text()) for f in files]
    assert all(_pgid(p) == p for p in pids)  # each rank leads a session of its own
    with pytest.raises(AssertionError, match=r"timed out after 1 s; killed [34] processes"):
        _finish(proc, env, timeout=1)
    assert proc.returncode is not None and _marked(env[LAUNCH_VAR]) == []
    for pid in pids:
        assert _state(pid) in (None, "Z"), pid


@pytest.mark.slow
@pytest.mark.parametrize("engine", ["ddp", "fsdp"])
def test_two_processes_resume_across_an_epoch_and_sparse_records(tmp_path, tiny_dirs, capsys,
                                                                 engine):
    """Stop after 3 steps, resume under 2 processes to step 5 (the 15 states end an epoch at
    step 4); records every 2nd step: unrecorded steps still carry the gathered metrics.
    FSDP2: the checkpoint's full weights and parameter-keyed Adam moments are gathered by both
    processes and cut into shards again on resume; a wrong moment (or a fresh optimizer)
    shows in step 4-5's loss, grad_norm and weights."""
    extra = {"max_steps": 5, "record_every": 2}
    one = tmp_path / "one"
    c4 = _config(tmp_path, tiny_dirs, 4, "c4.json",
                 debate_cache_path=str(tmp_path / "one.jsonl"), **extra)
    assert main(["train", "--config", str(c4), "--out", str(one), "--no-progress"]) == 0
    capsys.readouterr()
    two = tmp_path / "two"
    c2 = _config(tmp_path, tiny_dirs, 2, "c2.json",  # both processes append to one file
                 debate_cache_path=str(tmp_path / "two.jsonl"), **extra)
    first = _launch(tmp_path, ["--config", str(c2), "--out", str(two), "--steps", "3"],
                    **_ENGINES[engine])
    assert _result_lines(first.stdout)[0]["step"] == 3
    second = _launch(tmp_path, ["--resume", "--out", str(two)], **_ENGINES[engine])
    assert len(_result_lines(second.stdout)) == 1
    assert second.stderr.count("resumed") == 1 and _result_lines(second.stdout)[0]["step"] == 5
    _assert_same_run(one, two, [1, 2, 3, 4, 5], [2, 4])
    rows = [json.loads(x) for x in (tmp_path / "two.jsonl").read_text().splitlines()]
    assert len({r["key"] for r in rows}) == 15  # every training state debated, none lost


@pytest.mark.slow
@pytest.mark.parametrize("engine", ["ddp", "fsdp"])
def test_a_fault_on_one_process_skips_the_step_on_every_process(tmp_path, tiny_dirs, engine):
    """Process 1 alone: a teacher error at step 2 (skip_step) and NaN logits at step 3. Both
    processes skip both steps (counted once), neither updates, nobody hangs (the launch has a
    timeout) and the full weights stay equal on both; steps 1 and 4 update."""
    cfg = _config(tmp_path, tiny_dirs, 2, "c.json", method="mt_opd", rounds=0,
                  weighting="uniform", on_teacher_error="skip_step", checkpoint_every=0)
    script = str(Path(__file__).with_name("multiproc_faults.py"))
    proc = _launch(tmp_path, [str(cfg)], module=script, **_ENGINES[engine])
    rows = [json.loads(x) for x in proc.stdout.splitlines() if x.startswith('{"step"')]
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    for r in rows:  # the processes never drift apart
        assert r["digests"][1] == pytest.approx(r["digests"][0], rel=1e-6)
    d = [r["digests"][0] for r in rows]
    assert [r["skipped"] for r in rows] == [0, 1, 0, 0] and rows[1]["teacher_errors"] == 1
    assert [r["nan_skips"] for r in rows] == [0, 0, 1, 0] and math.isnan(rows[2]["loss"])
    assert d[1] == d[0] and d[2] == d[0]  # no update at all (exactly the same weights)
    assert d[3] != pytest.approx(d[2], rel=1e-6)  # a finite step 4 updates again


@pytest.mark.slow
def test_cpu_flag_with_several_processes_is_refused(tmp_path, tiny_dirs):
    """`accelerate launch --cpu --num_processes 2` starts one process: refused, not trained."""
    proc = _launch(tmp_path, ["--config", str(_config(tmp_path, tiny_dirs, 2, "c.json")),
                              "--out", str(tmp_path / "r")], launcher="--cpu", check=False)
    assert proc.returncode == 1 and "started a single process" in proc.stderr
    assert not (tmp_path / "r" / "metrics.jsonl").exists()


# ----------------------------------------------------------------------- fast, in one process

def test_check_launch_detects_the_single_process_cpu_launch(monkeypatch):
    for k in ("WORLD_SIZE", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.delenv("ACCELERATE_USE_CPU", raising=False)
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    check_launch(1)  # not under accelerate launch --cpu
    monkeypatch.setenv("ACCELERATE_USE_CPU", "True")
    with pytest.raises(ConfigError, match="--multi_gpu"):
        check_launch(1)
    check_launch(2)  # really 2 processes
    monkeypatch.setenv("WORLD_SIZE", "1")
    with pytest.raises(ConfigError):
        check_launch(1)
    monkeypatch.delenv("MASTER_ADDR")
    check_launch(1)  # `accelerate launch --cpu` with one process


def test_fsdp_on_cpu_is_refused_unless_asked_for(monkeypatch):
    """accelerate turns --use_fsdp (and --use_deepspeed) into DDP on CPU: madopd says so
    instead of training DDP; FSDP2 runs with MADOPD_CPU_FSDP=1."""
    from accelerate.utils import DistributedType

    class State:
        distributed_type = DistributedType.MULTI_CPU

    class Acc:
        def __init__(self):
            self.state = State()

        distributed_type = property(lambda self: self.state.distributed_type)
        is_fsdp2 = property(lambda self: self.state.fsdp_plugin.fsdp_version == 2)

    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    monkeypatch.setenv("FSDP_VERSION", "2")
    monkeypatch.delenv(CPU_FSDP_VAR, raising=False)
    with pytest.raises(ConfigError, match="silently wrap the student in DDP"):
        check_engine(Acc())
    monkeypatch.setenv(CPU_FSDP_VAR, "1")
    acc = Acc()
    check_engine(acc)
    assert acc.distributed_type == DistributedType.FSDP and acc.is_fsdp2
    monkeypatch.setenv("FSDP_VERSION", "1")
    with pytest.raises(ConfigError, match="FSDP1"):
        check_engine(Acc())
    monkeypatch.setenv("FSDP_VERSION", "2")
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "false")
    monkeypatch.setenv("ACCELERATE_USE_DEEPSPEED", "true")  # would silently be DDP on CPU
    with pytest.raises(ConfigError, match="DeepSpeed"):
        check_engine(Acc())


def _tiny_record(step: int, ids: list[str], k: int = 2) -> StepRecord:
    n = len(ids)
    lens = [1 + (i % 3) for i in range(n)]
    return StepRecord(
        step=step, loss=0.5, metrics={}, teacher_names=["A", "B"][:k], state_ids=list(ids),
        prompts=[f"p{i}" for i in ids], responses=[f"r{i}" for i in ids],
        response_ids=[[j] * ln for j, ln in enumerate(lens)],
        response_tokens=[["x"] * ln for ln in lens], weights=[[0.5] * k for _ in ids],
        per_token_divergence=[[[0.1] * k] * ln for ln in lens],
        per_token_loss=[[0.1] * ln for ln in lens], transcripts=[None] * n,
        correct=[1.0] * n, families=[None] * n,
        student_topk={"ids": [[[1]] * ln for ln in lens], "logprobs": [[[-0.1]] * ln for ln in lens]},
        teacher_topk=[{"ids": [[[i]] for i in ids], "logprobs": [[[-1.0]] for _ in ids]}] * k,
        skipped=[False] * n)


def test_merge_records_orders_micro_batch_major():
    """Process 0 holds micro-batches [a0 a1 | a2], process 1 [b0 b1 | b2 b3]: one process would
    have seen micro-batch 0 = a0 a1 b0 b1 and micro-batch 1 = a2 b2 b3."""
    r0 = _tiny_record(7, ["a0", "a1", "a2"])
    r1 = _tiny_record(7, ["b0", "b1", "b2", "b3"])
    m = merge_records([r0, r1], [[2, 1], [2, 2]], {"loss": 1.0})
    order = ["a0", "a1", "b0", "b1", "a2", "b2", "b3"]
    assert m.state_ids == order and m.metrics == {"loss": 1.0} and m.step == 7
    idx = {s: (0, i) for i, s in enumerate(r0.state_ids)} | \
        {s: (1, i) for i, s in enumerate(r1.state_ids)}
    src = [r0, r1]
    for field in ("prompts", "response_ids", "per_token_divergence", "per_token_loss",
                  "weights", "skipped"):
        assert getattr(m, field) == [getattr(src[r], field)[i] for r, i in map(idx.get, order)]
    assert m.student_topk["ids"] == [src[r].student_topk["ids"][i] for r, i in map(idx.get, order)]
    assert m.teacher_topk[1]["ids"] == [[[s]] for s in order]
    r1.token_weights = [[[0.5, 0.5]]] * 4
    assert merge_records([r0, r1], [[3], [4]], {}).token_weights is None  # not on every process


def test_stats_of_two_halves_combine_to_the_stats_of_the_whole(tiny_dirs):
    """Metrics from summed per-process statistics == metrics of one process holding both."""
    from distill_helpers import make_cfg, make_task

    from madopd.distill import Distiller

    d = Distiller.from_config(make_cfg(tiny_dirs), make_task())
    g = torch.Generator().manual_seed(1)

    def half(n, seed):
        w = torch.rand(n, d.K, generator=g)
        w[0] = 0.0  # a skipped sample: not live
        w = (w / w.sum(-1, keepdim=True).clamp_min(1e-9)).tolist()
        resp = [[1] * (1 + (i + seed) % 4) for i in range(n)]
        correct = [float(i % 2) if i != 1 else None for i in range(n)]
        parts = [{"div_sum": torch.rand(d.K, generator=g).tolist(), "div_count": float(n + seed)}]
        counters = {"count/x": float(seed), f"count/only{seed}": 1.0, "samples/total": float(n)}
        timings = {"time/step": 0.1 * seed}
        return parts, [object()], w, correct, resp, counters, timings

    h1, h2 = half(3, 1), half(4, 2)
    s1, s2 = d._stats(*h1), d._stats(*h2)
    whole = d._stats(h1[0] + h2[0], h1[1] + h2[1], h1[2] + h2[2], h1[3] + h2[3], h1[4] + h2[4],
                     {k: h1[5].get(k, 0) + h2[5].get(k, 0) for k in {**h1[5], **h2[5]}},
                     {"time/step": 0.2})
    got = d._metrics({"loss": 1.0}, combine_stats([s1, s2]))
    want = d._metrics({"loss": 1.0}, whole)
    assert set(got) == set(want) and {"n_eff", "accuracy/train", "tokens"} <= set(got)
    assert any(k.startswith("div/") for k in got) and any(k.startswith("weight/") for k in got)
    for k in want:
        assert got[k] == pytest.approx(want[k], rel=1e-12), k


def test_cache_appends_from_two_processes_never_interleave(tmp_path):
    """Two forked writers append 200 kB lines to one cache file through the locked append."""
    import multiprocessing as mp

    from madopd.cache import _append_locked

    path = tmp_path / "cache.jsonl"

    def writer(tag: str) -> None:
        for i in range(15):
            _append_locked(path, json.dumps({"key": f"{tag}{i}", "transcript": tag * 200_000})
                           + "\n")

    ctx = mp.get_context("fork")
    procs = [ctx.Process(target=writer, args=(t,)) for t in "ab"]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    rows = [json.loads(x) for x in path.read_text().splitlines()]
    assert sorted(r["key"] for r in rows) == sorted(f"{t}{i}" for t in "ab" for i in range(15))


def test_resume_refuses_another_number_of_processes(tmp_path, tiny_dirs):
    """The sampler position counts per-process batches: a checkpoint of 2 processes cannot be
    continued exactly by 1, so the resume says so instead of skipping or repeating data."""
    from distill_helpers import make_cfg, make_task

    from madopd.distill import Distiller
    from madopd.distill.state_io import read_state, write_state
    from madopd.integrity import write_checksums
    from madopd.runs import RunStore

    cfg = make_cfg(tiny_dirs, "opd", max_steps=1, record_topk=0)
    d = Distiller.from_config(cfg, make_task(), store=RunStore(tmp_path / "run", cfg.to_dict()))
    d.train(1, progress=False)
    ckpt = latest_checkpoint(tmp_path / "run")
    state = read_state(ckpt)
    assert state["num_processes"] == 1
    assert Distiller.from_config(cfg, make_task()).resume(ckpt) == 1  # same count: fine
    state["num_processes"] = 2
    write_state(ckpt, state)
    write_checksums(ckpt)  # a consistent checkpoint of 2 processes, not a corrupt one
    with pytest.raises(ConfigError, match="2 process"):
        Distiller.from_config(cfg, make_task()).resume(ckpt)


def test_resume_refuses_a_checkpoint_of_the_other_engine(tmp_path, tiny_dirs):
    """A sharded (FSDP2) run keys Adam's moments by parameter name, a replicated one by index:
    a checkpoint resumes only under the engine that wrote it, with a message saying so."""
    from distill_helpers import make_cfg, make_task

    from madopd.distill import Distiller
    from madopd.distill.state_io import read_state, write_state
    from madopd.integrity import write_checksums
    from madopd.runs import RunStore

    cfg = make_cfg(tiny_dirs, "opd", max_steps=1, record_topk=0)
    d = Distiller.from_config(cfg, make_task(), store=RunStore(tmp_path / "run", cfg.to_dict()))
    d.train(1, progress=False)
    ckpt = latest_checkpoint(tmp_path / "run")
    state = read_state(ckpt)
    assert state["sharded"] is False
    state["sharded"] = True
    write_state(ckpt, state)
    write_checksums(ckpt)
    with pytest.raises(ConfigError, match=r"FSDP \(sharded\) run, this run is replicated"):
        Distiller.from_config(cfg, make_task()).resume(ckpt)


def test_retie_and_local_checks_without_processes(tiny_dirs):
    """Gathered copies of tied embeddings become one tensor again (so save_pretrained writes
    the key once, as a one-process run does); the finiteness verdict of one process is its
    own when nothing is sharded; a NaN is named."""
    from transformers import AutoModelForCausalLM

    from madopd.distill.sharded import first_nonfinite_everywhere, local, retie

    model = AutoModelForCausalLM.from_pretrained(tiny_dirs["student"])
    assert model.lm_head.weight is model.model.embed_tokens.weight  # tied
    sd = {k: v.clone() for k, v in model.state_dict().items()}
    assert sd["lm_head.weight"] is not sd["model.embed_tokens.weight"]
    sd = retie(model, sd)
    assert sd["lm_head.weight"] is sd["model.embed_tokens.weight"]
    assert len({id(v) for v in sd.values()}) == len(sd) - 1  # only the tied pair is shared

    class One:
        num_processes = 1

    named = list(model.named_parameters())
    assert first_nonfinite_everywhere(One(), named, sharded=True) is None
    bad = dict(named)["model.norm.weight"].detach().clone()
    bad[0] = float("nan")
    assert first_nonfinite_everywhere(One(), [*named, ("x", bad)], sharded=False) == "x"
    assert local(bad) is bad
