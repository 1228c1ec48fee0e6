"""Checkpoints of a Distiller: weights (HF format), optimiser, schedule, RNG, data order.

``trainer_state.pt`` holds everything except the full model weights, which live in
``model/`` in Hugging Face format (loadable by ``from_pretrained``). Under LoRA the adapter
weights are also kept in ``trainer_state.pt`` (``trainable``) so a resume restores exactly the
tensors the optimiser updates.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from madopd.errors import ConfigError, DataError

STATE_FILE = "trainer_state.pt"


def _rng_state(d: Any) -> dict[str, Any]:
    out = {"python": random.getstate(), "numpy": np.random.get_state(),
           "torch": torch.get_rng_state(), "distiller": d.rng.getstate()}
    if torch.cuda.is_available():
        out["cuda"] = torch.cuda.get_rng_state_all()
    return out


def _set_rng_state(d: Any, state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    d.rng.setstate(state["distiller"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(d: Any) -> Path:
    """Write checkpoints/step_NNNNNN atomically via the Distiller's RunStore.

    Several processes: all check they hold the same weights, the main process writes (the
    optimiser state is the same everywhere: same gradients, same steps), the others wait.
    """
    from madopd.distill.distributed import is_sharded

    d.check_in_sync()
    acc = d.accelerator
    # FSDP: every process takes part in gathering the full weights; only the main one keeps them
    full = acc.get_state_dict(d.engine) if is_sharded(acc) else None
    if not acc.is_main_process:
        acc.wait_for_everyone()
        d._saved_step = d.step_count
        return d.store.ckpt_dir / f"step_{d.step_count:06d}"
    is_lora = bool(getattr(d.student, "is_lora", False))
    model = d.accelerator.unwrap_model(d.student.model)
    state = {
        "step": d.step_count, "nan_streak": d.nan_streak,
        "optimizer": d.optimizer.state_dict(), "scheduler": d.scheduler.state_dict(),
        "rng": _rng_state(d), "sampler": d.pool.state_dict(),
        "num_processes": acc.num_processes,  # the sampler's position counts per-process batches
        "sharded": full is not None,  # the optimizer state is this process's shard only
        "config": d.config.to_dict(), "teacher_names": list(d.teacher_names),
        "trainable": ({n: p.detach().cpu().clone() for n, p in model.named_parameters()
                       if p.requires_grad} if is_lora else None),
    }

    def write(tmp: Path) -> None:
        d.student.save(tmp / "model", state_dict=full)
        torch.save(state, tmp / STATE_FILE)

    try:
        path = d.store.save_checkpoint(d.step_count, write)
        d.store.prune(d.config.keep_checkpoints)
    finally:
        acc.wait_for_everyone()
    d._saved_step = d.step_count
    return path


def _resolve(d: Any, path: Any) -> Path:
    from madopd.runs import latest_checkpoint

    if path is None:
        if d.store is None:
            raise ConfigError("resume() needs a path or a Distiller with a RunStore")
        path = d.store.root
    path = Path(path)
    if (path / STATE_FILE).exists():
        return path
    latest = latest_checkpoint(path)
    if latest is None:
        raise DataError("no complete checkpoint found", path=str(path))
    return latest


def _load_model_weights(model: torch.nn.Module, folder: Path) -> None:
    """Copy HF-format weights (all *.safetensors shards) into ``model`` in place."""
    from safetensors.torch import load_file

    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise DataError("no *.safetensors weights in the checkpoint", path=str(folder))
    sd: dict[str, torch.Tensor] = {}
    for f in files:
        sd.update(load_file(str(f)))
    missing, unexpected = model.load_state_dict(sd, strict=False)
    if unexpected:
        raise DataError(f"checkpoint weights do not fit the student: unexpected {unexpected[:5]}",
                        path=str(folder))
    # Missing keys are allowed only for tied parameters (they share storage with a loaded one).
    params = dict(model.named_parameters(remove_duplicate=False))
    loaded_ptrs = {params[n].data_ptr() for n in sd if n in params}
    bad = [n for n in missing if n not in params or params[n].data_ptr() not in loaded_ptrs]
    if bad:
        raise DataError(f"checkpoint weights miss parameters {bad[:5]}", path=str(folder))


def load_checkpoint(d: Any, path: Any = None) -> int:
    ckpt = _resolve(d, path)
    state = torch.load(ckpt / STATE_FILE, map_location="cpu", weights_only=False)
    saved_procs = state.get("num_processes")  # absent in checkpoints older than this field
    if saved_procs is not None and saved_procs != d.accelerator.num_processes:
        raise ConfigError(
            f"checkpoint {ckpt} was written by a run with {saved_procs} process(es), this run has "
            f"{d.accelerator.num_processes}: the data order (each process takes every "
            f"{saved_procs}-th batch) cannot continue exactly; resume with {saved_procs} "
            "process(es)")
    from madopd.distill.distributed import is_sharded

    if state.get("sharded") or is_sharded(d.accelerator):
        raise ConfigError(f"checkpoint {ckpt}: resuming an FSDP (sharded) run is not supported "
                          "yet (each process's optimizer state is a shard); its model/ folder "
                          "holds the full weights for evaluation or a new run")
    model = d.accelerator.unwrap_model(d.student.model)
    with torch.no_grad():
        if state.get("trainable") is not None:
            params = dict(model.named_parameters())
            for n, t in state["trainable"].items():
                if n not in params:
                    raise DataError(f"checkpoint parameter {n!r} not in the student", path=str(ckpt))
                params[n].copy_(t.to(params[n].device, params[n].dtype))
        else:
            _load_model_weights(model, ckpt / "model")
    d.optimizer.load_state_dict(state["optimizer"])
    d.scheduler.load_state_dict(state["scheduler"])
    _set_rng_state(d, state["rng"])
    d.pool.load_state_dict(state["sampler"])
    d.step_count = int(state["step"])
    d.nan_streak = int(state.get("nan_streak", 0))
    d._saved_step = d.step_count
    if d.store is not None and d.accelerator.is_main_process:
        d.store.truncate_to(d.step_count)
    d.accelerator.wait_for_everyone()
    d.check_in_sync()
    return d.step_count
