"""Several processes (``accelerate launch`` / ``torchrun``): the engine and the two reductions.

The student is wrapped by accelerate (``Accelerator.prepare``): DDP, or FSDP through
accelerate's own configuration (``accelerate launch --use_fsdp --fsdp_version 2 ...``). The
engine averages gradients over processes inside ``backward``; the step only adds:

1. ``sum_floats([kept tokens, skip])`` after phase 1: the global loss denominator N (each
   process's loss is its share of Σ/N, multiplied by the number of processes so the engine's
   average is the sum: one process holding the union of the batches) and whether any process
   must skip the step (a teacher error under ``skip_step``);
2. ``sum_floats([loss, skip])`` after phase 2: the global loss and skip decision;
3. ``gather_objects`` of each process's step record pieces -> one record for the whole batch.

A process that cannot compute a micro-batch's loss (a teacher error, no response token) still
joins the engine's collectives with a zero-weighted backward (``Collective.join_backward``),
so every process runs the same forwards and backwards and nobody waits forever.

``Collective`` is the step's one interface to all of this (sums, gathers, backward, the
accumulation context); for one process every method is the identity or the plain call.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import torch

from madopd.errors import ConfigError
from madopd.types import StepRecord

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


# The last barrier's work handle of each process, held until the interpreter exits (see
# leave_together): it must outlive the process group.
_LAST_BARRIER: list[Any] = []


def leave_together(accelerator: Any) -> None:
    """End a multi-process run: a barrier, then destroy the process group, without deadlock.

    Why not just ``wait_for_everyone(); end_training()``: a gloo worker thread destroys each
    finished work object after the caller's ``wait`` has returned, and a work that holds
    tensors with a Python object (a barrier holds its prior works: all-reduces of Python
    tensors) needs the GIL to free them. ``ProcessGroupGloo``'s destructor joins the worker
    threads while the main thread holds the GIL; it runs when the last reference to the group
    goes, i.e. when DDP's reducer is freed (after ``end_training``, at the caller's return or
    at interpreter exit). If the worker has not freed that work yet, both wait for ever
    (py-spy: main thread in ``~ProcessGroupGloo`` -> ``thread::join``, worker in
    ``decref_pyobject`` -> ``gil_scoped_acquire``; ~1 launch in 10 here, under load).

    Holding the barrier's work handle in this thread keeps the worker's reference from being
    the last: the worker drops it without the GIL and the join returns; the handle (and the
    tensors it holds) is freed by this thread later, with the GIL. Then the group is
    destroyed and accelerate's references to the prepared objects are dropped, so the caller
    can free the wrapped model at a point of its choosing (``gc.collect()``).
    """
    if accelerator.num_processes == 1:
        return
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        work = dist.barrier(async_op=True)
        if work is not None:
            work.wait()
            _LAST_BARRIER.append(work)
    accelerator.end_training()  # destroy_process_group: the group's own registry references
    accelerator.free_memory()  # accelerate's lists of prepared models and optimizers


def gather_objects(accelerator: Any, obj: Any) -> list[Any]:
    """[obj of rank 0, obj of rank 1, ...] on every process (pickled; keep it small)."""
    if accelerator.num_processes == 1:
        return [obj]
    from accelerate.utils import gather_object

    return gather_object([obj])


def is_sharded(accelerator: Any) -> bool:
    """The student's parameters are sharded over processes (FSDP): each holds a slice."""
    from accelerate.utils import DistributedType

    # check_engine records the decision: accelerate's state may report its own device-based
    # type again after prepare on CPU
    flag = getattr(accelerator, "madopd_sharded", None)
    return flag if flag is not None else accelerator.distributed_type == DistributedType.FSDP


CPU_FSDP_VAR = "MADOPD_CPU_FSDP"


def check_engine(accelerator: Any) -> None:
    """Refuse engine setups that would silently not do what was asked; enable FSDP on CPU.

    accelerate prepares FSDP only on accelerators: with ``--use_fsdp`` on a CPU-only machine
    it silently wraps the model in DDP. madopd stops there, unless ``MADOPD_CPU_FSDP=1``,
    which sets accelerate's state to FSDP with the plugin read from the same launch
    configuration, so accelerate's own FSDP2 preparation runs on the gloo backend (how the
    FSDP path is tested on CPU). FSDP1 (whose inner module cannot generate without gathering
    its flat parameters) and DeepSpeed (see below) are refused.
    """
    from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin

    wants_fsdp = os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true"
    if accelerator.distributed_type == DistributedType.MULTI_CPU and wants_fsdp:
        if os.environ.get(CPU_FSDP_VAR, "") != "1":
            raise ConfigError(
                "`--use_fsdp` on a machine without GPUs: accelerate would silently wrap the "
                f"student in DDP instead. Launch without --use_fsdp (DDP), or set {CPU_FSDP_VAR}=1 "
                "to shard it with FSDP2 on the gloo backend")
        accelerator.state.distributed_type = DistributedType.FSDP
        accelerator.state.fsdp_plugin = FullyShardedDataParallelPlugin()
    wants_ds = os.environ.get("ACCELERATE_USE_DEEPSPEED", "false").lower() == "true"
    if accelerator.distributed_type == DistributedType.DEEPSPEED or wants_ds:
        # on CPU (Accelerator(cpu=True)) --use_deepspeed silently becomes DDP, like --use_fsdp;
        # deepspeed 0.19.8 installs with torch 2.13 and prepares on CPU, but accelerate 1.15
        # then reports num_processes=1 and process_index=0 on EVERY process (measured, 2 gloo
        # processes): each would draw rank 0's batches and scale its loss for one process
        raise ConfigError("DeepSpeed: not supported (on CPU accelerate reports one process "
                          "under DeepSpeed, so data sharding and the loss scale would be wrong; "
                          "not tested on GPUs); use DDP or FSDP2 (accelerate launch --use_fsdp "
                          "--fsdp_version 2)")
    sharded = accelerator.distributed_type == DistributedType.FSDP
    if sharded and not accelerator.is_fsdp2:
        raise ConfigError("FSDP1 is not supported: the student generates its rollouts with its "
                          "own module, which FSDP1 leaves flattened; use --fsdp_version 2")
    accelerator.madopd_sharded = sharded


class Collective:
    """The cross-process bookkeeping of a training step behind one small interface.

    Args: accelerator (accelerate's), engine (the prepared student), student (for its
    ``pad_id``: the token of a join backward). One process: sums and gathers return their
    input, ``join_backward`` does nothing, ``backward`` is ``accelerator.backward``.
    """

    def __init__(self, accelerator: Any, engine: Any, student: Any):
        self.accelerator, self.engine, self.student = accelerator, engine, student

    @property
    def processes(self) -> int:
        return self.accelerator.num_processes

    @property
    def rank(self) -> int | None:
        """This process's index, or None for one process (seeds only take a rank then)."""
        return self.accelerator.process_index if self.processes > 1 else None

    def sum(self, values: list[float]) -> list[float]:
        """Element-wise sums over processes (one all-reduce)."""
        return sum_floats(self.accelerator, values)

    def gather(self, obj: Any) -> list[Any]:
        """Every process's ``obj``, in rank order."""
        return gather_objects(self.accelerator, obj)

    def accumulate(self, last: bool):
        """Accumulate locally on all but the last micro-batch (the engine's ``no_sync``)."""
        import contextlib

        return contextlib.nullcontext() if last else self.accelerator.no_sync(self.engine)

    def backward(self, loss: torch.Tensor) -> None:
        """``loss`` is this process's share of Σ/N; the engine averages gradients over the
        processes, so × processes makes the update the sum (= one process, union batch)."""
        if not loss.requires_grad:  # no response token: nothing was forwarded with gradients
            self.join_backward()
            return
        self.accelerator.backward(loss * self.processes)

    def join_backward(self) -> None:
        """A zero-weighted forward + backward on one token: this process contributes nothing
        but takes part in the engine's gradient collectives like the others (several
        processes only; a non-finite student makes these zeros NaN, which the NaN policy of
        the update then skips on every process alike)."""
        if self.processes == 1:
            return
        ids = torch.full((1, 1), int(self.student.pad_id), dtype=torch.long,
                         device=self.accelerator.device)
        out = self.engine(input_ids=ids, use_cache=False)
        self.accelerator.backward(out.logits.float().sum() * 0.0)


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
    """Add up the per-process sufficient statistics of ``records.StepRecorder.stats``.

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
