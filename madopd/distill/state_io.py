"""Trainer state on disk without pickle: JSON for the structure, safetensors for the tensors.

``trainer_state.pt`` (``torch.save``) was a pickle: loading one from a shared run folder ran
whatever code it named. A state is now two files that only hold data:

- ``trainer_state.json``: the nested structure (dicts, lists, numbers, strings), with tags for
  what JSON lacks: ``{"$tensor": key}`` (in the safetensors file), ``{"$tuple": [...]}``,
  ``{"$ndarray": [...], "dtype", "shape"}`` (numpy's RNG key) and ``{"$dict": [[k, v], ...]}``
  for mappings whose keys are not strings (the optimiser's per-parameter state is keyed by int).
- ``trainer_state.safetensors``: every tensor, exactly (RNG byte states, fp32 moments, LoRA
  weights); safetensors parses a header and raw bytes, nothing executes.

Python floats are written with ``repr`` precision (JSON round-trips them exactly, NaN/inf
included), so the RNG states and schedules resume bit-identically. Only the types listed in
``_pack`` are accepted: anything else is a TypeError at save time, not a surprise at load time.

Checkpoints of older versions (``trainer_state.pt``) are read with
``torch.load(weights_only=True)`` and an explicit allow-list of the numpy types their RNG state
holds; a pickle that names anything else is refused without running it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from madopd import nofollow, safe_io
from madopd.errors import DataError

STATE_JSON = "trainer_state.json"
STATE_TENSORS = "trainer_state.safetensors"
LEGACY_STATE = "trainer_state.pt"
_TAGS = ("$tensor", "$tuple", "$ndarray", "$dict")
# what load_checkpoint reads: field -> type (checked before any of it is used)
_FIELDS = {"optimizer": dict, "scheduler": dict, "rng": dict, "sampler": dict}
RNG_KEYS = ("python", "numpy", "torch", "distiller")


def _pack(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(obj, torch.Tensor):
        key = f"t{len(tensors)}"
        tensors[key] = obj.detach().to("cpu").contiguous().clone()  # no shared storage
        return {"$tensor": key}
    if isinstance(obj, np.ndarray):
        return {"$ndarray": obj.tolist(), "dtype": obj.dtype.str, "shape": list(obj.shape)}
    if isinstance(obj, tuple):
        return {"$tuple": [_pack(x, tensors) for x in obj]}
    if isinstance(obj, list):
        return [_pack(x, tensors) for x in obj]
    if isinstance(obj, dict):
        if all(isinstance(k, str) and k not in _TAGS for k in obj):
            return {k: _pack(v, tensors) for k, v in obj.items()}
        return {"$dict": [[_pack(k, tensors), _pack(v, tensors)] for k, v in obj.items()]}
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    if isinstance(obj, (np.integer, np.floating, np.bool_)):
        return obj.item()
    raise TypeError(f"trainer state: cannot store a {type(obj).__name__} without pickle")


def _unpack(obj: Any, tensors: dict[str, torch.Tensor], where: str) -> Any:
    if isinstance(obj, list):
        return [_unpack(x, tensors, where) for x in obj]
    if not isinstance(obj, dict):
        return obj
    if "$tensor" in obj:
        key = obj["$tensor"]
        if key not in tensors:
            raise DataError(f"names tensor {key!r}, absent from {STATE_TENSORS}", path=where)
        return tensors[key]
    if "$tuple" in obj:
        return tuple(_unpack(x, tensors, where) for x in obj["$tuple"])
    if "$ndarray" in obj:
        dtype = np.dtype(obj["dtype"])
        if dtype.kind not in "biuf" or dtype.itemsize > 8:  # RNG keys are uint32
            raise DataError(f"$ndarray of dtype {dtype.str!r} (expected a number type)",
                            path=where)
        return np.asarray(obj["$ndarray"], dtype=dtype).reshape(obj["shape"])
    if "$dict" in obj:
        return {_unpack(k, tensors, where): _unpack(v, tensors, where) for k, v in obj["$dict"]}
    return {k: _unpack(v, tensors, where) for k, v in obj.items()}


def write_state(folder: Path, state: dict[str, Any]) -> None:
    """Write ``state`` as trainer_state.json + trainer_state.safetensors in ``folder``."""
    from safetensors.torch import save_file

    tensors: dict[str, torch.Tensor] = {}
    tree = _pack(state, tensors)
    save_file(tensors, str(folder / STATE_TENSORS))
    (folder / STATE_JSON).write_text(json.dumps(tree, allow_nan=True), encoding="utf-8")


def has_state(folder: Path) -> bool:
    return (folder / STATE_JSON).is_file() or (folder / LEGACY_STATE).is_file()


def read_state(folder: Path) -> dict[str, Any]:
    """The state ``write_state`` wrote (or a legacy ``trainer_state.pt``, pickle-free)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file


    folder = Path(folder)
    jpath, tpath = folder / STATE_JSON, folder / STATE_TENSORS
    if not nofollow.check(jpath):
        if nofollow.check(folder / LEGACY_STATE):
            return _read_legacy(folder / LEGACY_STATE)
        raise DataError(f"no {STATE_JSON} in the checkpoint", path=str(folder))
    tree = safe_io.read_json_file(jpath, "trainer state", follow=False)
    try:
        if nofollow.check(tpath):
            safe_io.safetensors_header(tpath)  # lengths and shapes agree with the file
            tensors = load_file(str(tpath))
        else:
            tensors = {}
    except (SafetensorError, OSError, ValueError) as exc:
        raise DataError(f"unreadable tensors ({exc}); the file is truncated or corrupt",
                        path=str(tpath)) from None
    try:
        state = _unpack(tree, tensors, str(jpath))
    except (TypeError, ValueError, KeyError, AttributeError) as exc:
        if isinstance(exc, DataError):
            raise
        raise DataError(f"malformed tagged value ({type(exc).__name__}: {exc})"[:300],
                        path=str(jpath)) from None
    if not isinstance(state, dict) or "step" not in state:
        raise DataError("not a trainer state (no 'step')", path=str(jpath), field="step")
    return state


def check_state(state: Any, where: str) -> dict[str, Any]:
    """Refuse (DataError naming file and field) a Distiller's trainer state whose fields
    load_checkpoint needs are missing or of the wrong type: a step of 1e999 or -1, no ``rng``, ..."""
    if not isinstance(state, dict) or "step" not in state:
        raise DataError("not a trainer state (no 'step')", path=where, field="step")
    safe_io.finite_int(state["step"], where, "step")
    for name, kind in _FIELDS.items():
        if not isinstance(state.get(name), kind):
            got = "missing" if name not in state else f"a {type(state[name]).__name__}"
            raise DataError(f"expected a {kind.__name__}, got {got}", path=where, field=name)
    for key in RNG_KEYS:
        if key not in state["rng"]:
            raise DataError("missing", path=where, field=f"rng.{key}")
    opt = state["optimizer"]
    if not isinstance(opt.get("state"), dict) or not isinstance(opt.get("param_groups"), list):
        raise DataError("expected 'state' (a mapping) and 'param_groups' (a list)", path=where,
                        field="optimizer")
    if "nan_streak" in state:
        safe_io.finite_int(state["nan_streak"], where, "nan_streak")
    return state


def _read_legacy(path: Path) -> dict[str, Any]:
    """``torch.load(weights_only=True)`` with exactly the numpy types an old RNG state holds."""
    import pickle

    allowed = [np.ndarray, np.dtype, type(np.dtype(np.uint32))]
    try:
        allowed.append(np._core.multiarray._reconstruct)
    except AttributeError:  # numpy < 2
        allowed.append(np.core.multiarray._reconstruct)
    try:
        with torch.serialization.safe_globals(allowed):
            state = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DataError(f"refused: a legacy pickled trainer state that is truncated or names "
                        f"code outside the allow-list (it was not run): {first[:200]}",
                        path=str(path)) from None
    return state
