"""Launched twice by tests/test_distributed.py (ranks 0 and 1): many short gloo sessions, each
ended by ``distributed.leave_together``; every one must end, none may deadlock.

``python multiproc_teardown.py RANK PORT CYCLES [naive]``. Each cycle: a group on a shared
TCPStore, a DDP-wrapped layer's backward (the reducer holds a reference to the group), an
all-reduce of a Python tensor and an object gather (what `madopd train` does last), then the
ending, then the DDP wrapper is freed, which destroys the group and joins its gloo workers.
``naive`` ends with ``barrier(); destroy_process_group()`` instead (accelerate's
``wait_for_everyone(); end_training()``): with torch 2.13 it deadlocks within a few cycles
(the gloo worker frees the barrier's work, which needs the GIL, while the main thread joins
it holding the GIL).
"""

from __future__ import annotations

import gc
import sys

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from madopd.distill.distributed import leave_together


class _Accelerator:
    """What leave_together uses of accelerate's Accelerator."""

    num_processes = 2

    def end_training(self) -> None:
        dist.destroy_process_group()

    def free_memory(self) -> None:
        pass


def cycle(store, i: int, rank: int, naive: bool) -> None:
    dist.init_process_group("gloo", store=dist.PrefixStore(f"cycle{i}", store), rank=rank,
                            world_size=2)
    model = DistributedDataParallel(torch.nn.Linear(8, 8))
    model(torch.randn(2, 8)).sum().backward()
    total = torch.tensor([1.0, float(rank)], dtype=torch.float64)
    dist.all_reduce(total)
    assert total.tolist() == [2.0, 1.0]
    gathered = [None, None]
    dist.all_gather_object(gathered, {"rank": rank})
    if naive:
        dist.barrier()
        dist.destroy_process_group()
    else:
        leave_together(_Accelerator())
    del model  # the reducer's group reference: ~ProcessGroupGloo joins the workers here
    gc.collect()


def main(rank: int, port: int, cycles: int, naive: bool) -> None:
    torch.set_num_threads(1)
    store = dist.TCPStore("127.0.0.1", port, 2, rank == 0, use_libuv=False)
    for i in range(cycles):
        cycle(store, i, rank, naive)
    print(f"rank {rank}: {cycles} cycles ended", flush=True)


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4:] == ["naive"])
