"""Prefix-cached force decoding: reuse the key/value cache of a teacher's fixed scoring context.

Why: a teacher scores the student's tokens R under its privileged context P = state +
debate transcript + score cue (``Debate.score_context``). With a cached debate, P is the same
at every step a state is drawn and for every sample of that state, while only R changes; P is
usually far longer than R (the 'general' templates: ~1,700 tokens against 32). Re-encoding P at
every call is most of MAD-OPD's extra cost (issue 14).

How (alignment of docs/architecture.md §3: the logits for R[t] come from position
len(P)+t-1): the cache stores the keys/values of P[:-1] (every layer, [H_kv, len(P)-1, D]).
A hit feeds the suffix P[-1] + R[:-1] (exactly len(R) tokens, whose outputs predict R) on top
of the cached keys/values:

- ragged batches: every row's cached prefix is LEFT-padded to the longest one (Lp) and the pads
  are masked out in the 2-D attention mask [b, Lp + T]; the suffix is right-padded (a pad sits
  after every real token, so causality keeps it out of their attention);
- position ids are explicit, ``len(P_b) - 1 + t``, so the rotary phases equal the uncached
  forward's; the causal mask takes the query offset from the cache (Lp), not from them;
- the stored tensors are never handed to the model: each call builds a fresh ``DynamicCache``
  from padded copies, so scoring cannot mutate the cache (transformers appends in place).

A miss runs the ordinary right-padded forward with ``use_cache=True`` and keeps each row's
first len(P)-1 keys/values (right padding leaves them equal to an unpadded forward's).

The cache is bounded (entries and MiB, least recently used out first) and keyed by the exact
prompt ids after truncation; it is flushed when the model's weights change (a shared model
object that trains, e.g. the student as its own teacher), detected through the parameters'
in-place version counters. Hits, misses, evictions and flushes are counted.
"""

from __future__ import annotations

import inspect
from collections import OrderedDict
from typing import Any

import torch

from madopd.errors import ConfigError

LayerKV = tuple[torch.Tensor, torch.Tensor]  # keys, values: [H_kv, L, D] each


class PrefixKVCache:
    """A bounded LRU of per-context keys/values of one model.

    Args:
        max_entries: contexts kept (>= 1).
        max_mib: memory bound of the stored tensors in MiB (> 0); the least recently used
            contexts are evicted first. A context larger than the bound alone is not stored
            (counted in ``too_large``).
    """

    def __init__(self, max_entries: int = 256, max_mib: float = 1024.0):
        if max_entries < 1:
            raise ConfigError(f"prefix cache: max_entries must be >= 1, got {max_entries}")
        if not max_mib > 0:
            raise ConfigError(f"prefix cache: max_mib must be > 0, got {max_mib}")
        self.max_entries = int(max_entries)
        self.max_bytes = int(max_mib * 2**20)
        self._items: OrderedDict[tuple[int, ...], list[LayerKV]] = OrderedDict()
        self._sizes: dict[tuple[int, ...], int] = {}
        self.bytes = 0
        self._version: Any = None
        self.counters = {"hits": 0, "misses": 0, "evictions": 0, "flushes": 0, "too_large": 0}

    def __len__(self) -> int:
        return len(self._items)

    def check_version(self, model: torch.nn.Module) -> None:
        """Flush everything when the weights changed since the entries were computed.

        ``(id, _version)`` of every parameter: an optimizer step, ``load_state_dict`` or
        ``copy_`` bumps the in-place version counter; a re-created parameter changes its id.
        """
        version = tuple((id(p), p._version) for p in model.parameters())
        if version != self._version:
            if self._items:
                self.counters["flushes"] += 1
            self.clear()
            self._version = version

    def clear(self) -> None:
        self._items.clear()
        self._sizes.clear()
        self.bytes = 0

    def get(self, key: tuple[int, ...]) -> list[LayerKV] | None:
        kv = self._items.get(key)
        if kv is None:
            self.counters["misses"] += 1
            return None
        self._items.move_to_end(key)
        self.counters["hits"] += 1
        return kv

    def put(self, key: tuple[int, ...], kv: list[LayerKV]) -> None:
        size = sum(k.numel() * k.element_size() + v.numel() * v.element_size() for k, v in kv)
        if size > self.max_bytes:
            self.counters["too_large"] += 1
            return
        if key in self._items:
            self.bytes -= self._sizes.pop(key)
            del self._items[key]
        while self._items and (len(self._items) >= self.max_entries
                               or self.bytes + size > self.max_bytes):
            old, _ = self._items.popitem(last=False)
            self.bytes -= self._sizes.pop(old)
            self.counters["evictions"] += 1
        self._items[key] = kv
        self._sizes[key] = size
        self.bytes += size


# ------------------------------------------------------------------------- model plumbing

def cache_kwarg(model: torch.nn.Module) -> str:
    """The forward's cache argument: ``cache`` (transformers >= 5.2x) or ``past_key_values``."""
    params = inspect.signature(model.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


def output_cache(out: Any) -> Any:
    cache = getattr(out, "cache", None)
    return cache if cache is not None else getattr(out, "past_key_values", None)


def layer_tensors(cache: Any) -> list[LayerKV] | None:
    """[(keys [b, H, L, D], values)] per layer, or None when the cache is not a plain full
    attention cache (sliding-window or linear-attention layers cannot be cut to a prefix)."""
    from transformers.cache_utils import DynamicLayer

    layers = getattr(cache, "layers", None)
    if not layers or any(type(layer) is not DynamicLayer for layer in layers):
        return None
    if any(getattr(layer, "keys", None) is None for layer in layers):
        return None
    return [(layer.keys, layer.values) for layer in layers]


def rows_prefix(layers: list[LayerKV], row: int, length: int) -> list[LayerKV]:
    """Row ``row``'s first ``length`` positions, as compact copies (not views of the batch)."""
    return [(k[row, :, :length].clone(), v[row, :, :length].clone()) for k, v in layers]


def build_batch_cache(prefixes: list[list[LayerKV]]) -> tuple[Any, torch.Tensor, int]:
    """Left-pad each row's prefix to the longest -> (a fresh DynamicCache, pad mask [b, Lp], Lp).

    The stored tensors are copied into new zero tensors, so the model's in-place appends never
    reach them.
    """
    from transformers import DynamicCache

    b = len(prefixes)
    lens = [p[0][0].shape[1] for p in prefixes]
    Lp = max(lens)
    cache = DynamicCache()
    for layer in range(len(prefixes[0])):
        k0, v0 = prefixes[0][layer]
        K = k0.new_zeros(b, k0.shape[0], Lp, k0.shape[2])
        V = v0.new_zeros(b, v0.shape[0], Lp, v0.shape[2])
        for r, p in enumerate(prefixes):
            K[r, :, Lp - lens[r]:] = p[layer][0]
            V[r, :, Lp - lens[r]:] = p[layer][1]
        cache.update(K, V, layer)
    mask = torch.zeros(b, Lp, dtype=torch.long)
    for r, n in enumerate(lens):
        mask[r, Lp - n:] = 1
    return cache, mask, Lp


__all__ = ["PrefixKVCache", "build_batch_cache", "cache_kwarg", "layer_tensors", "output_cache",
           "rows_prefix"]
