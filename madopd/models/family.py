"""Students from a real teacher's family: same tokenizer and chat template, fewer parameters.

Distillation here needs a student that shares the teacher's vocabulary (``check_same_vocab``)
and no smaller SmolLM2 installs offline, so the student is derived from the teacher:

* ``shrink_layers``: keep a subset of the teacher's decoder layers (DistilBERT's
  initialisation: every other layer by default), with embeddings, final norm and head copied.
  A pretrained start that still writes text.
* ``narrow_random``: the same architecture with fewer layers / a smaller width, random init —
  the "from scratch" control.

Both save a Hugging Face folder with the teacher's tokenizer (and chat template) and a
``madopd_family.json`` that records how it was made.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import torch

from madopd.errors import ConfigError


def _load(teacher: str | Path) -> tuple[Any, Any, str]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from madopd.models.catalogue import resolve_model_path

    path = str(resolve_model_path(str(teacher)))
    return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32), \
        AutoTokenizer.from_pretrained(path), path


def _save(model: Any, tok: Any, out: str | Path, info: dict) -> Path:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    info["parameters"] = sum(p.numel() for p in model.parameters())
    (out / "madopd_family.json").write_text(json.dumps(info, indent=1))
    return out


def shrink_layers(teacher: str | Path, out: str | Path, *, keep: list[int] | None = None,
                  every: int = 2) -> Path:
    """A student with the teacher's layers ``keep`` (default: 0, every, 2·every, ...)."""
    model, tok, path = _load(teacher)
    layers = model.model.layers
    n = len(layers)
    keep = list(range(0, n, every)) if keep is None else list(keep)
    if not keep or sorted(set(keep)) != keep or keep[0] < 0 or keep[-1] >= n:
        raise ConfigError(f"keep: expected increasing layer indices in [0, {n}), got {keep}")
    model.model.layers = torch.nn.ModuleList([copy.deepcopy(layers[i]) for i in keep])
    for j, layer in enumerate(model.model.layers):  # KV-cache slots follow the new order
        if hasattr(layer, "self_attn") and hasattr(layer.self_attn, "layer_idx"):
            layer.self_attn.layer_idx = j
    model.config.num_hidden_layers = len(keep)
    if getattr(model.config, "layer_types", None):
        model.config.layer_types = [model.config.layer_types[i] for i in keep]
    return _save(model, tok, out, {"from": path, "method": "shrink_layers", "kept_layers": keep})


def narrow_random(teacher: str | Path, out: str | Path, *, num_layers: int = 6,
                  hidden_size: int = 192, intermediate_size: int = 512, num_heads: int = 3,
                  num_kv_heads: int = 1, seed: int = 0) -> Path:
    """Same architecture and tokenizer, smaller sizes, random init (head_dim = hidden / heads)."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    from madopd.models.catalogue import resolve_model_path

    path = str(resolve_model_path(str(teacher)))
    cfg = AutoConfig.from_pretrained(path)
    if hidden_size % num_heads or num_heads % num_kv_heads:
        raise ConfigError(f"hidden_size {hidden_size} / num_heads {num_heads} / num_kv_heads "
                          f"{num_kv_heads}: heads must divide the width and KV heads the heads")
    cfg.num_hidden_layers, cfg.hidden_size = num_layers, hidden_size
    cfg.intermediate_size, cfg.num_attention_heads = intermediate_size, num_heads
    cfg.num_key_value_heads, cfg.head_dim = num_kv_heads, hidden_size // num_heads
    if getattr(cfg, "layer_types", None):
        cfg.layer_types = cfg.layer_types[:num_layers]
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32)
    return _save(model, AutoTokenizer.from_pretrained(path), out,
                 {"from": path, "method": "narrow_random", "seed": seed,
                  "sizes": {"layers": num_layers, "hidden": hidden_size,
                            "intermediate": intermediate_size, "heads": num_heads,
                            "kv_heads": num_kv_heads}})
