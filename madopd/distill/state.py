"""Checkpoints of a Distiller: weights (HF format), optimiser, schedule, RNG, data order.

The trainer state (``trainer_state.json`` + ``.safetensors``, no pickle: ``state_io``) holds
everything except the full model weights, which live in ``model/`` in Hugging Face format
(loadable by ``from_pretrained``). Under LoRA the adapter weights are also kept in the trainer
state (``trainable``) so a resume restores exactly the tensors the optimiser updates.

Faults: a checkpoint is written only when every parameter and optimiser tensor is finite
(else ``ValueRangeError``, counted; ``latest`` keeps naming the last finite one). A resume
verifies the checkpoint's SHA256SUMS first; with ``on_corrupt_checkpoint='previous'`` a
corrupt newest checkpoint is skipped (counted) for the newest older one that verifies.
"""

from __future__ import annotations

import contextlib
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from madopd import integrity
from madopd.distill.state_io import (
    LEGACY_STATE,
    STATE_JSON,
    check_state,
    has_state,
    read_state,
    write_state,
)
from madopd.errors import ConfigError, DataError, ValueRangeError

STATE_FILE = STATE_JSON


def _rng_state(d: Any) -> dict[str, Any]:
    out = {"python": random.getstate(), "numpy": np.random.get_state(),
           "torch": torch.get_rng_state(), "distiller": d.rng.getstate()}
    if torch.cuda.is_available():
        out["cuda"] = torch.cuda.get_rng_state_all()
    return out


def _set_rng_state(d: Any, state: dict[str, Any], where: str = "trainer state") -> None:
    """Restore every generator; a value of the wrong type or size is one DataError naming
    the generator (``rng.<name>``), not a TypeError from deep inside numpy or torch."""
    steps = [("python", random.setstate), ("numpy", np.random.set_state),
             ("torch", torch.set_rng_state), ("distiller", d.rng.setstate)]
    if "cuda" in state and torch.cuda.is_available():
        steps.append(("cuda", torch.cuda.set_rng_state_all))
    for key, restore in steps:
        try:
            restore(state[key])
        except (TypeError, ValueError, RuntimeError, KeyError, IndexError) as exc:
            raise DataError(f"cannot restore this generator ({type(exc).__name__}: "
                            f"{str(exc)[:200]})", path=where, field=f"rng.{key}") from None


def save_checkpoint(d: Any) -> Path:
    """Write checkpoints/step_NNNNNN atomically via the Distiller's RunStore.

    Several processes: every process takes part in what needs collectives (the weight check;
    under FSDP the gathering of the full tensors, ``sharded.gather_full_state``) and in the
    finiteness decision, then the main process writes (the replicated optimiser state is the
    same everywhere: same gradients, same steps) while the others wait.
    """
    from madopd.distill.distributed import gather_objects, is_sharded
    from madopd.distill.sharded import gather_full_state

    d.check_in_sync()
    acc = d.accelerator
    sharded = is_sharded(acc)
    model = d.accelerator.unwrap_model(d.student.model)
    if sharded:  # every process gathers; rank 0 keeps full CPU tensors, the others {}
        full, optim = gather_full_state(d.engine, d.optimizer)
        weights = list(full.items())
    else:
        full, optim = None, d.optimizer.state_dict()
        weights = list(model.named_parameters())
    bad = _first_bad(weights, optim) if acc.is_main_process else None
    if acc.num_processes > 1:  # rank 0 decides what it would write; everyone follows
        bad = gather_objects(acc, bad)[0]
    if bad is not None:
        refuse_nonfinite(d, bad)
    if not acc.is_main_process:
        acc.wait_for_everyone()
        d._saved_step = d.step_count
        return d.store.ckpt_dir / f"step_{d.step_count:06d}"
    is_lora = bool(getattr(d.student, "is_lora", False))
    trainable = None
    if is_lora:
        names = [n for n, p in model.named_parameters() if p.requires_grad]
        trainable = ({n: full[n] for n in names} if sharded else
                     {n: p.detach().cpu().clone() for n, p in model.named_parameters()
                      if p.requires_grad})
    state = {
        "step": d.step_count, "nan_streak": d.nan_streak,
        "optimizer": optim, "scheduler": d.scheduler.state_dict(),
        "rng": _rng_state(d), "sampler": d.pool.state_dict(),
        "num_processes": acc.num_processes,  # the sampler's position counts per-process batches
        "sharded": sharded,  # the optimizer state is keyed by parameter name (DCP's format)
        "config": d.config.to_dict(), "teacher_names": list(d.teacher_names),
        "trainable": trainable,
    }

    def write(tmp: Path) -> None:
        d.student.save(tmp / "model", state_dict=full)
        write_state(tmp, state)

    try:
        path = d.store.save_checkpoint(d.step_count, write)
        d.store.prune(d.config.keep_checkpoints)
    finally:
        acc.wait_for_everyone()
    d._saved_step = d.step_count
    return path


def _first_bad(weights: list[tuple[str, Any]], optim: dict[str, Any]) -> str | None:
    """The first NaN/inf tensor among the weights and optimiser state about to be written."""
    named = list(weights)
    for i, (key, st) in enumerate(optim.get("state", {}).items()):
        tag = key if isinstance(key, str) else i
        named += [(f"optimizer state {tag}.{k}", v) for k, v in st.items() if torch.is_tensor(v)]
    return integrity.first_nonfinite(named)


def refuse_nonfinite(d: Any, bad: str) -> None:
    """Raise ValueRangeError (counted) because tensor ``bad`` is NaN/inf: such a state is never
    checkpointed, so ``latest`` only ever names a finite one. Raised on every process."""
    latest = d.store.latest_checkpoint() if d.store is not None else None
    if d.store is not None and d.accelerator.is_main_process:
        d.store.count("count/run/nonfinite_checkpoints_refused")
        d.store.log_event("nonfinite_checkpoint_refused", step=d.step_count, tensor=bad)
    kept = f"latest stays at {latest.name}" if latest else "no checkpoint was written before"
    raise ValueRangeError(f"step {d.step_count}: {bad} holds NaN/inf, so this state is not "
                          f"checkpointed ({kept}); lower lr or check the teachers, then resume")


def check_finite_after_step(d: Any, record: Any) -> None:
    """After an optimizer step: when a trainable parameter turned NaN/inf, log the step with
    ``count/nonfinite_params`` and stop with ValueRangeError. The update is already applied,
    so it cannot be skipped like a NaN loss (``max_nan_skips``); ``latest`` keeps naming the
    last finite checkpoint, to resume from with a lower lr."""
    from madopd.distill.distributed import is_sharded
    from madopd.distill.sharded import first_nonfinite_everywhere

    named = [(n, p) for n, p in d.student.model.named_parameters() if p.requires_grad]
    # sharded: local slices on every process + one gather (an op on a DTensor is a collective)
    bad = first_nonfinite_everywhere(d.accelerator, named, is_sharded(d.accelerator))
    if bad is None:
        return
    record.metrics["count/nonfinite_params"] = 1.0
    d._log(record)
    latest = d.store.latest_checkpoint() if d.store is not None else None
    if d.store is not None and d.accelerator.is_main_process:
        d.store.log_event("nonfinite_parameters", step=d.step_count, tensor=bad)
    kept = f"the last finite checkpoint is {latest}" if latest else "no checkpoint was written"
    raise ValueRangeError(f"step {d.step_count}: parameter {bad} is NaN/inf after the optimizer "
                          f"step; the run stops and this state is never checkpointed ({kept}). "
                          "Lower lr or max_grad_norm, then resume")


def _verified_state(d: Any, ckpt: Path) -> dict[str, Any]:
    """Checksums first (a changed byte is named before anything is parsed), then the state.

    A checkpoint without SHA256SUMS is refused unless ``allow_unverified_checkpoints``; an
    allowed one is counted (``count/run/unverified_checkpoints``) and logged in events.jsonl.
    """
    allow = bool(getattr(d.config, "allow_unverified_checkpoints", False))
    try:
        verified = integrity.verify_checksums(ckpt, required=not allow)
    except DataError as exc:
        if integrity.CHECKSUMS in str(exc) and "no " in str(exc) and not allow:
            raise DataError(f"{exc} (it was written by an older madopd, or the file was "
                            "deleted; set allow_unverified_checkpoints=true to load it "
                            "anyway)") from None
        raise
    if not verified and d.store is not None:
        d.store.count("count/run/unverified_checkpoints")
        d.store.log_event("unverified_checkpoint_loaded", checkpoint=str(ckpt),
                          reason=f"no {integrity.CHECKSUMS}; allow_unverified_checkpoints")
    where = ckpt / (STATE_JSON if (ckpt / STATE_JSON).exists() else LEGACY_STATE)
    return check_state(read_state(ckpt), str(where))


def _resolve(d: Any, path: Any) -> tuple[Path, dict[str, Any]]:
    """The checkpoint to resume and its verified state (see the module docstring)."""
    from madopd.runs import latest_checkpoint, list_checkpoints

    if path is None:
        if d.store is None:
            raise ConfigError("resume() needs a path or a Distiller with a RunStore")
        path = d.store.root
    path = Path(path)
    if has_state(path):  # an explicit checkpoint folder: it is this one or nothing
        return path, _verified_state(d, path)
    latest = latest_checkpoint(path)
    if latest is None:
        raise DataError("no complete checkpoint found", path=str(path))
    ckpts = list_checkpoints(path)
    latest_step = next((s for s, p in ckpts if p == latest), None)
    older = [p for s, p in reversed(ckpts) if latest_step is not None and s < latest_step]
    policy = getattr(d.config, "on_corrupt_checkpoint", "raise")
    for ckpt in [latest, *older]:
        try:
            return ckpt, _verified_state(d, ckpt)
        except DataError as exc:
            if policy != "previous":
                raise DataError(f"{exc} (set on_corrupt_checkpoint='previous' to resume from "
                                "the newest older checkpoint that verifies)") from None
            if d.store is not None:
                d.store.count("count/run/corrupt_checkpoints_skipped")
                d.store.log_event("corrupt_checkpoint_skipped", checkpoint=ckpt.name,
                                  error=str(exc))
    raise DataError("no checkpoint verifies (every one is corrupt)", path=str(path))


def _read_weights(folder: Path, want: dict[str, torch.Tensor] | None = None,
                  ) -> dict[str, torch.Tensor]:
    """HF-format weights of a checkpoint (all *.safetensors shards) as one state dict; with
    ``want``, a tensor shaped unlike ``want``'s of that name is a DataError naming its file."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from madopd import safe_io

    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise DataError("no *.safetensors weights in the checkpoint", path=str(folder))
    sd: dict[str, torch.Tensor] = {}
    for f in files:
        try:
            safe_io.safetensors_header(f)
            part = load_file(str(f))
        except (SafetensorError, OSError) as exc:
            raise DataError(f"unreadable weights ({exc}); the file is truncated or corrupt",
                            path=str(f)) from None
        if want is not None:
            _check_shapes(want, part, f)
        sd.update(part)
    return sd


def _check_missing(model: torch.nn.Module, sd: dict[str, torch.Tensor], missing: list[str],
                   folder: Path) -> None:
    """Missing keys are allowed only for tied parameters (they share storage with a loaded
    one; FSDP2 keeps the tie: one parameter under two names)."""
    from madopd.distill.sharded import local

    params = dict(model.named_parameters(remove_duplicate=False))
    loaded = {local(params[n]).data_ptr() for n in sd if n in params}
    bad = [n for n in missing if n not in params or local(params[n]).data_ptr() not in loaded]
    if bad:
        raise DataError(f"checkpoint weights miss parameters {bad[:5]}", path=str(folder))


def _load_model_weights(model: torch.nn.Module, folder: Path) -> None:
    """Copy HF-format weights into ``model`` in place."""
    _check_model_config(model, folder)
    sd = _read_weights(folder, dict(model.state_dict()))
    missing, unexpected = model.load_state_dict(sd, strict=False)
    if unexpected:
        raise DataError(f"checkpoint weights do not fit the student: unexpected {unexpected[:5]}",
                        path=str(folder))
    _check_missing(model, sd, missing, folder)


# the fields of a model's config.json that fix its tensors' shapes
_ARCH_FIELDS = ("model_type", "vocab_size", "hidden_size", "num_hidden_layers",
                "num_attention_heads", "num_key_value_heads", "intermediate_size", "head_dim",
                "tie_word_embeddings")


def _check_model_config(model: torch.nn.Module, folder: Path) -> None:
    """The checkpoint's config.json must describe the student's architecture: a mismatch is
    one DataError naming the file and the first differing field."""
    from madopd import nofollow
    from madopd.safe_io import read_json_file

    path = folder / "config.json"
    mine = getattr(model, "config", None)
    if mine is None or not nofollow.check(path):
        return
    theirs = read_json_file(path, "model config", follow=False)
    if not isinstance(theirs, dict):
        raise DataError("expected a JSON object", path=str(path))
    mine = mine.to_dict() if hasattr(mine, "to_dict") else dict(mine)
    for key in _ARCH_FIELDS:
        if key in theirs and key in mine and theirs[key] != mine[key]:
            raise DataError(f"the checkpoint's model has {key}={theirs[key]!r}, the student "
                            f"{mine[key]!r}: not a checkpoint of this student", path=str(path),
                            field=key)


def _check_shapes(want: dict[str, torch.Tensor], got: dict[str, torch.Tensor],
                  where: Path) -> None:
    """Every tensor in ``got`` that ``want`` names has the same shape (DataError naming it)."""
    for name, t in got.items():
        if name in want and tuple(want[name].shape) != tuple(t.shape):
            raise DataError(f"tensor {name!r} has shape {tuple(t.shape)}, the student's "
                            f"{tuple(want[name].shape)}", path=str(where), field=name)


def _check_optimizer(optimizer: Any, saved: dict[str, Any], where: Path) -> None:
    """The saved optimiser state fits ``optimizer``: same groups, integer parameter keys in
    range, moment tensors shaped like their parameters (else Adam fails at the next step)."""
    params = [p for g in optimizer.param_groups for p in g["params"]]
    groups = saved["param_groups"]
    if len(groups) != len(optimizer.param_groups) or any(
            not isinstance(g, dict) or len(g.get("params", ())) != len(o["params"])
            for g, o in zip(groups, optimizer.param_groups)):
        raise DataError("optimizer state has other parameter groups than the student's",
                        path=str(where), field="optimizer.param_groups")
    for key, st in saved["state"].items():
        if isinstance(key, bool) or not isinstance(key, int) or not 0 <= key < len(params) \
                or not isinstance(st, dict):
            raise DataError(f"optimizer state for parameter {key!r}: no such parameter",
                            path=str(where), field="optimizer.state")
        for name, v in st.items():
            if torch.is_tensor(v) and v.dim() > 0 and v.shape != params[key].shape:
                raise DataError(f"optimizer state {key}.{name} has shape {tuple(v.shape)}, its "
                                f"parameter {tuple(params[key].shape)}", path=str(where),
                                field=f"optimizer.state.{key}.{name}")


def _load_sharded(d: Any, ckpt: Path, state: dict[str, Any]) -> None:
    """FSDP2: every process reads the full tensors and keeps its slice (``sharded.py``)."""
    from madopd.distill.sharded import load_full_state

    model = d.accelerator.unwrap_model(d.student.model)
    sd = state["trainable"] if state.get("trainable") is not None else _read_weights(ckpt / "model")
    try:
        missing = load_full_state(d.engine, d.optimizer, sd, state["optimizer"])
    except (KeyError, ValueError, RuntimeError) as exc:
        raise DataError(f"checkpoint state does not fit the sharded student: {exc}",
                        path=str(ckpt)) from None
    if state.get("trainable") is None:
        _check_missing(model, sd, missing, ckpt / "model")


@contextlib.contextmanager
def _state_errors(ckpt: Path, field: str):
    """A state a library cannot load (wrong keys or types) as one DataError naming it."""
    try:
        yield
    except (KeyError, ValueError, TypeError, AttributeError, IndexError) as exc:
        if isinstance(exc, DataError):
            raise
        raise DataError(f"does not fit this run ({type(exc).__name__}: {exc})"[:300],
                        path=str(ckpt / STATE_JSON), field=field) from None


def load_checkpoint(d: Any, path: Any = None) -> int:
    ckpt, state = _resolve(d, path)
    saved_procs = state.get("num_processes")  # absent in checkpoints older than this field
    if saved_procs is not None and saved_procs != d.accelerator.num_processes:
        raise ConfigError(
            f"checkpoint {ckpt} was written by a run with {saved_procs} process(es), this run has "
            f"{d.accelerator.num_processes}: the data order (each process takes every "
            f"{saved_procs}-th batch) cannot continue exactly; resume with {saved_procs} "
            "process(es)")
    from madopd.distill.distributed import is_sharded

    sharded = is_sharded(d.accelerator)
    if bool(state.get("sharded")) != sharded:
        kind = {True: "FSDP (sharded)", False: "replicated (one process or DDP)"}
        raise ConfigError(f"checkpoint {ckpt} was written by a {kind[bool(state.get('sharded'))]}"
                          f" run, this run is {kind[sharded]}: the optimizer state is keyed "
                          "differently; resume with the same engine (its model/ folder holds "
                          "the full weights for evaluation or a new run)")
    if sharded:
        _load_sharded(d, ckpt, state)
    else:
        model = d.accelerator.unwrap_model(d.student.model)
        with torch.no_grad():
            if state.get("trainable") is not None:
                params = dict(model.named_parameters())
                if not isinstance(state["trainable"], dict):
                    raise DataError("expected a mapping of tensors", path=str(ckpt),
                                    field="trainable")
                for n, t in state["trainable"].items():
                    if n not in params or not torch.is_tensor(t):
                        raise DataError(f"checkpoint parameter {n!r} not in the student",
                                        path=str(ckpt))
                _check_shapes(params, state["trainable"], ckpt / STATE_JSON)
                for n, t in state["trainable"].items():
                    params[n].copy_(t.to(params[n].device, params[n].dtype))
            else:
                _load_model_weights(model, ckpt / "model")
        _check_optimizer(d.optimizer, state["optimizer"], ckpt / STATE_JSON)
        try:
            d.optimizer.load_state_dict(state["optimizer"])
        except (KeyError, ValueError, TypeError) as exc:
            raise DataError(f"optimizer state does not fit ({type(exc).__name__}: {exc})"[:300],
                            path=str(ckpt / STATE_JSON), field="optimizer") from None
    with _state_errors(ckpt, "scheduler"):
        d.scheduler.load_state_dict(state["scheduler"])
    _set_rng_state(d, state["rng"], str(ckpt / STATE_JSON))
    with _state_errors(ckpt, "sampler"):
        d.pool.load_state_dict(state["sampler"])
    d.step_count = int(state["step"])
    d.nan_streak = int(state.get("nan_streak", 0))
    d._saved_step = d.step_count
    if d.store is not None and d.accelerator.is_main_process:
        d.store.truncate_to(d.step_count)
    d.accelerator.wait_for_everyone()
    d.check_in_sync()
    return d.step_count
