"""FSDP2 checkpoints and finiteness checks: full tensors, gathered by every process together.

Under FSDP2 (``accelerate launch --use_fsdp --fsdp_version 2``) every parameter of the student
and every Adam moment is a ``DTensor`` of which each process holds one slice. Any operation on
a DTensor (``isfinite``, ``.cpu()``, ``state_dict()``'s gathers) is a collective: all processes
must run it, in the same order. The FSDP hang of issue 14 was exactly that: the checkpoint's
finiteness check ran ``torch.isfinite(p).all()`` on the sharded parameters and Adam moments in
the main process only (the others had gone on to the barrier), so rank 0 waited in a
collective rank 1 never joined (torch 2.13 raises "Replicate to Partial(product) conversion is
not supported" there instead of waiting, after rank 1's barrier has already been consumed).

So, under sharding:

- the finiteness checks look at each process's **local** slice and combine one flag per
  process (``first_nonfinite_everywhere``); every process then takes the same branch;
- a checkpoint gathers the full weights and the full optimizer state with
  ``torch.distributed.checkpoint``'s state-dict API on **every** process (``full_state_dict``
  + ``cpu_offload``: only rank 0 keeps the CPU tensors), and rank 0 writes them in the files a
  one-process run writes (``model/`` in Hugging Face format, the trainer state), except that
  the optimizer state is keyed by parameter name (DCP's format), not by index;
- a resume reads the full tensors on every process and keeps its own slice
  (``set_model_state_dict`` / ``set_optimizer_state_dict`` with ``full_state_dict``: each
  process cuts its shard locally, no communication).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch

from madopd import integrity


def local(t: Any) -> Any:
    """This process's slice of a DTensor (any other value unchanged)."""
    return t.to_local() if hasattr(t, "to_local") and hasattr(t, "placements") else t


def first_nonfinite_everywhere(accelerator: Any, named: Iterable[tuple[str, Any]],
                               sharded: bool) -> str | None:
    """Name of the first NaN/inf tensor on ANY process (the same answer on every process).

    Sharded: each process checks its local slices, then one gather of the names. Replicated
    (one process, DDP): the tensors are the same everywhere, so the local answer is global.
    """
    from madopd.distill.distributed import gather_objects

    bad = integrity.first_nonfinite((n, local(t)) for n, t in named)
    if not sharded or accelerator.num_processes == 1:
        return bad
    return next((b for b in gather_objects(accelerator, bad) if b is not None), None)


def _options(**kw: Any):
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    return StateDictOptions(full_state_dict=True, **kw)


def inner_optimizer(optimizer: Any) -> torch.optim.Optimizer:
    """accelerate's ``AcceleratedOptimizer`` wraps the torch optimizer the DCP API needs."""
    return getattr(optimizer, "optimizer", optimizer)


def gather_full_state(engine: torch.nn.Module, optimizer: Any
                      ) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(full model state dict, full optimizer state dict keyed by parameter name) on rank 0,
    ({}, {}) elsewhere. Call on EVERY process (all-gathers)."""
    from torch.distributed.checkpoint.state_dict import (
        get_model_state_dict,
        get_optimizer_state_dict,
    )

    model_sd = get_model_state_dict(engine, options=_options(cpu_offload=True))
    optim_sd = get_optimizer_state_dict(engine, inner_optimizer(optimizer),
                                        options=_options(cpu_offload=True))
    return retie(engine, model_sd), optim_sd


def retie(module: torch.nn.Module, sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Names of one parameter (tied embeddings) point at one tensor again.

    The gather returns a separate CPU copy per name, and ``save_pretrained`` drops tied
    duplicates only when they share storage; without this the sharded run's ``model/`` would
    hold an extra ``lm_head.weight`` that a one-process run's does not.
    """
    first: dict[int, str] = {}
    for name, p in module.named_parameters(remove_duplicate=False):
        if id(p) in first and name in sd and first[id(p)] in sd:
            sd[name] = sd[first[id(p)]]
        first.setdefault(id(p), name)
    return sd


def load_full_state(engine: torch.nn.Module, optimizer: Any, model_sd: dict[str, torch.Tensor],
                    optim_sd: dict[str, Any] | None) -> list[str]:
    """Every process: keep this process's slice of the full tensors. Returns the model keys
    the state dict lacked (the caller allows only tied parameters)."""
    from torch.distributed.checkpoint.state_dict import (
        set_model_state_dict,
        set_optimizer_state_dict,
    )

    keys = set_model_state_dict(engine, model_sd, options=_options(strict=False))
    if keys.unexpected_keys:
        raise KeyError(f"unexpected {sorted(keys.unexpected_keys)[:5]}")
    if optim_sd is not None:
        set_optimizer_state_dict(engine, inner_optimizer(optimizer), optim_sd,
                                 options=_options())
    return list(keys.missing_keys)
