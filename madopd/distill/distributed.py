"""Several processes (``accelerate launch`` / ``torchrun``): the collectives of one step.

The student is not DDP-wrapped (its ``generate`` and ``logits_to_keep`` forward must stay
reachable, and DDP would hang when one process skips a backward under a NaN/teacher-error
policy). Instead one step makes the same collectives, in the same order, on every process:

1. ``sum_floats([kept tokens, skip])`` after phase 1: the global loss denominator N and
   whether any process must skip the step (a teacher error under ``skip_step``);
2. ``sum_floats([loss, skip])`` after phase 2: the global loss and skip decision;
3. ``allreduce_grads`` (only when the step is not skipped, a decision every process shares):
   gradients summed over processes. Each process's loss is already its share of Σ/N, so the
   sum is exactly the gradient of one process holding the union of the batches;
4. ``gather_objects`` of each process's step record pieces -> one record for the whole batch.

Single-process runs never call these (every helper is the identity when ``world == 1``).
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import torch

from madopd.errors import ConfigError
from madopd.types import StepRecord

BUCKET_NUMEL = 2**24  # elements per gradient all-reduce (64 MiB of fp32): bounds extra memory

_WORLD_VARS = ("WORLD_SIZE", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE")
_RANK_VARS = ("RANK", "PMI_RANK", "OMPI_COMM_WORLD_RANK", "MV2_COMM_WORLD_RANK")


def _env_int(names: tuple[str, ...], default: int) -> int:
    for n in names:
        if os.environ.get(n, "").strip():
            return int(os.environ[n])
    return default


def env_rank() -> int:
    """This process's rank from the launcher's environment (0 when not launched)."""
    return _env_int(_RANK_VARS, 0)


def env_local_rank() -> int:
    return _env_int(("LOCAL_RANK", "MPI_LOCALRANKID", "OMPI_COMM_WORLD_LOCAL_RANK"), 0)


def is_main_process() -> bool:
    """Rank 0 (usable before any Accelerator exists, e.g. to create the run folder once)."""
    return env_rank() == 0


def check_launch(num_processes: int) -> None:
    """Refuse the silent single-process run of ``accelerate launch --cpu --num_processes N``.

    Without ``--mpirun_hostfile`` accelerate's CPU launcher starts ONE process (it only sets
    MASTER_ADDR/PORT), so training would silently use 1/N of the intended batch.
    """
    asked_multi = os.environ.get("ACCELERATE_USE_CPU", "").lower() in ("true", "1") and \
        "MASTER_ADDR" in os.environ
    if num_processes == 1 and asked_multi and _env_int(_WORLD_VARS, 1) == 1:
        raise ConfigError(
            "`accelerate launch --cpu --num_processes N` started a single process (accelerate "
            "runs several CPU processes only through mpirun, --mpirun_hostfile). For N CPU "
            "processes use `accelerate launch --multi_gpu --num_processes N ...` (on a machine "
            "without GPUs it runs N processes with the gloo backend) or `torchrun "
            "--nproc_per_node N -m madopd.cli train ...`; see docs/scaling.md. Unset MASTER_ADDR "
            "to run one process on purpose.")


def sum_floats(accelerator: Any, values: list[float]) -> list[float]:
    """Element-wise sum of a few floats over processes (one all-reduce, float64)."""
    if accelerator.num_processes == 1:
        return [float(v) for v in values]
    t = torch.tensor(values, dtype=torch.float64, device=accelerator.device)
    return [float(v) for v in accelerator.reduce(t, "sum").cpu()]


def allreduce_grads(accelerator: Any, params: list[torch.nn.Parameter],
                    bucket_numel: int = BUCKET_NUMEL) -> None:
    """Sum ``p.grad`` over processes in place, in flat buckets (few collectives, bounded memory).

    A parameter without a gradient on this process joins with zeros: every process must take
    part in the same all-reduces in the same order.
    """
    if accelerator.num_processes == 1:
        return
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    bucket: list[torch.Tensor] = []
    size = 0
    for p in params:
        g = p.grad
        if bucket and (size + g.numel() > bucket_numel or g.dtype != bucket[0].dtype
                       or g.device != bucket[0].device):
            _reduce_bucket(bucket)
            bucket, size = [], 0
        bucket.append(g)
        size += g.numel()
    if bucket:
        _reduce_bucket(bucket)


def _reduce_bucket(grads: list[torch.Tensor]) -> None:
    import torch.distributed as dist

    flat = torch.cat([g.reshape(-1) for g in grads])  # [Σ numel]
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    offset = 0
    for g in grads:
        g.copy_(flat[offset: offset + g.numel()].view_as(g))
        offset += g.numel()


def gather_objects(accelerator: Any, obj: Any) -> list[Any]:
    """[obj of rank 0, obj of rank 1, ...] on every process (pickled; keep it small)."""
    if accelerator.num_processes == 1:
        return [obj]
    import torch.distributed as dist

    out: list[Any] = [None] * accelerator.num_processes
    dist.all_gather_object(out, obj)
    return out


def params_checksum(params: list[torch.nn.Parameter]) -> list[float]:
    """[Σ p, Σ p², Σ p·i] in float64: processes that drifted apart almost surely differ."""
    s = s2 = si = 0.0
    with torch.no_grad():
        for p in params:
            x = p.detach().double().reshape(-1)
            idx = torch.arange(x.numel(), dtype=torch.float64, device=x.device)
            s += float(x.sum())
            s2 += float((x * x).sum())
            si += float((x * idx).sum() / max(1, x.numel()))
    return [s, s2, si]


# ----------------------------------------------------------------------------- step records

def combine_stats(stats: list[dict[str, Any]]) -> dict[str, Any]:
    """Add up the per-process sufficient statistics of ``RecordsMixin._stats``.

    Sums everywhere except timings (the slowest process sets the pace: max) and ``div_sum``
    (None where a process computed no divergence, e.g. NLL micro-batches).
    """
    out: dict[str, Any] = {}
    for key in ("n", "tokens", "correct_sum", "verified", "live", "neff_sum", "div_count"):
        out[key] = sum(s[key] for s in stats)
    out["w_sum"] = [sum(col) for col in zip(*(s["w_sum"] for s in stats))]
    divs = [s["div_sum"] for s in stats if s["div_sum"] is not None]
    out["div_sum"] = [sum(col) for col in zip(*divs)] if divs else None
    counters: dict[str, float] = {}
    timings: dict[str, float] = {}
    for s in stats:
        for k, v in s["counters"].items():
            counters[k] = counters.get(k, 0.0) + v
        for k, v in s["timings"].items():
            timings[k] = max(timings.get(k, v), v)
    out["counters"], out["timings"] = counters, timings
    return out


_SCALAR_FIELDS = ("step", "loss", "metrics", "teacher_names")


def merge_records(records: list[StepRecord], sizes: list[list[int]],
                  metrics: dict[str, float]) -> StepRecord:
    """One record for the whole step: per-sample lists of all processes, micro-batch-major.

    ``sizes[r]`` = samples per micro-batch on process r. The order (micro-batch i of process 0,
    micro-batch i of process 1, ...) equals one process whose micro-batch i is the union of the
    processes' micro-batches i, which is how ``GroupedSampler`` shards the data.
    """
    spans: list[tuple[int, int, int]] = []  # (process, start, stop)
    starts = [0] * len(records)
    for i in range(max(len(s) for s in sizes)):
        for r, s in enumerate(sizes):
            if i < len(s):
                spans.append((r, starts[r], starts[r] + s[i]))
                starts[r] += s[i]

    def cat(lists: list[list[Any]]) -> list[Any]:
        return [x for r, a, b in spans for x in lists[r][a:b]]

    def cat_topk(views: list[dict[str, list] | None]) -> dict[str, list] | None:
        if any(v is None for v in views):
            return None
        return {key: cat([v[key] for v in views]) for key in views[0]}

    first = records[0]
    fields: dict[str, Any] = {"step": first.step, "loss": first.loss, "metrics": metrics,
                              "teacher_names": list(first.teacher_names)}
    for f in dataclasses.fields(StepRecord):
        if f.name in _SCALAR_FIELDS:
            continue
        vals = [getattr(rec, f.name) for rec in records]
        if any(v is None for v in vals):
            fields[f.name] = None
        elif f.name == "student_topk":
            fields[f.name] = cat_topk(vals)
        elif f.name == "teacher_topk":
            fields[f.name] = [cat_topk([v[k] for v in vals]) for k in range(len(vals[0]))]
        else:  # a per-sample list [B]
            fields[f.name] = cat(vals)
    return StepRecord(**fields)
