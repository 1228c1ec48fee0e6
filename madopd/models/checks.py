"""One clear error for a model path that cannot be loaded, before transformers sees it.

transformers treats a path that does not exist as a hub id ("Repo id must be in the form…"),
and reports a truncated ``config.json`` or weights file forty frames deep. ``check_model_path``
says what is wrong with the folder, naming the config field (or CLI flag), the file and the
line; ``model_load_errors`` turns what the library still raises into the same kind of line.
A folder inside a checkpoint that carries ``SHA256SUMS`` is verified first (a changed byte is
named before anything is parsed).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from collections.abc import Iterator
from pathlib import Path

from madopd.errors import ConfigError, DataError, MadopdError

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


def looks_local(path: str) -> bool:
    """True for what can only be a file-system path (not an ``org/name`` hub id)."""
    return (path.startswith(("/", ".", "~")) or path.count("/") > 1 or path.endswith("/")
            or (os.sep != "/" and os.sep in path) or not _HUB_ID.match(path))


def _offline() -> bool:
    return any(os.environ.get(k, "").lower() in ("1", "true", "yes", "on")
               for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def _cached_on_hub(repo_id: str) -> bool:
    try:
        from huggingface_hub import try_to_load_from_cache

        return isinstance(try_to_load_from_cache(repo_id, "config.json"), str)
    except Exception:  # an invalid id, no cache: not cached
        return False


def check_model_path(path: str, field: str) -> None:
    """Raise ConfigError/DataError when ``path`` cannot be a loadable checkpoint (see module)."""
    from madopd import integrity
    from madopd.integrity import read_json_file

    p = Path(path).expanduser()
    if not p.exists():
        from madopd.models.catalogue import is_catalogue_name

        if is_catalogue_name(str(path)):
            return  # resolved, converted and checksum-verified by madopd.models.catalogue
        if looks_local(str(path)):
            raise ConfigError(f"field {field!r}: no such folder {path}")
        if _offline() and not _cached_on_hub(str(path)):
            raise ConfigError(f"field {field!r}: no such folder {path}, and no hub model of "
                              "that name is in the cache (offline)")
        return  # a hub id: transformers resolves it
    if not p.is_dir():
        raise ConfigError(f"field {field!r}: {path} is a file; expected a checkpoint folder")
    for name in ("adapter_config.json", "config.json"):
        if (p / name).is_file():
            read_json_file(p / name, "model config")
            break
    else:
        raise ConfigError(f"field {field!r}: {path} holds no config.json (not a Hugging Face "
                          "checkpoint folder)")
    integrity.require_checksums(p)  # a run checkpoint without SHA256SUMS: refused


@contextlib.contextmanager
def model_load_errors(path: str, field: str) -> Iterator[None]:
    """Re-raise a library's loading failure as one DataError naming ``field`` and ``path``."""
    try:
        yield
    except MadopdError:
        raise
    except (OSError, ValueError, json.JSONDecodeError, EOFError, RuntimeError) as exc:
        name = type(exc).__name__
        if name not in ("SafetensorError", "HFValidationError") and \
                isinstance(exc, RuntimeError) and "safetensors" not in str(exc).lower():
            raise  # a genuine runtime failure, not a bad file
        first = next((ln.strip() for ln in str(exc).splitlines() if ln.strip()), name)
        raise DataError(f"cannot load this model ({name}: {first[:300]})", path=str(path),
                        field=field) from exc
    except Exception as exc:  # safetensors' SafetensorError derives from Exception only
        if type(exc).__name__ != "SafetensorError":
            raise
        raise DataError(f"unreadable weights, the file is truncated or corrupt ({exc})",
                        path=str(path), field=field) from exc
