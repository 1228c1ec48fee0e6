"""Prefix-cached scoring (madopd/models/prefix_cache.py) equals uncached scoring.

Ragged batches (contexts and continuations of different lengths, so both the left-padded
cached prefixes and the right-padded suffixes are exercised), several states, repeated calls
(second call all hits), a batch mixing hits and misses, LRU bounds, and a flush when the
weights change.
"""

from __future__ import annotations

import pytest
import torch

from madopd.models.hf import HFTeacher
from madopd.models.prefix_cache import PrefixKVCache


def _chats(n: int, seed: int = 0) -> list[list[dict]]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(n):
        words = " ".join(["debate"] * int(torch.randint(1, 30, (1,), generator=g)))
        out.append([{"role": "system", "content": f"teacher {i}"},
                    {"role": "user", "content": f"state {i}: {words}"}])
    return out


def _conts(n: int, seed: int) -> list[list[int]]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(3, 250, (int(torch.randint(1, 9, (1,), generator=g)),),
                          generator=g).tolist() for _ in range(n)]


@pytest.fixture(scope="module")
def pair(tiny_dirs):
    plain = HFTeacher(tiny_dirs["teacher_a"], batch_size=3)
    cached = HFTeacher(tiny_dirs["teacher_a"], batch_size=3)
    cached.enable_prefix_cache(max_entries=64, max_mib=64)
    return plain, cached


def _check(plain, cached, chats, conts):
    a = plain.score(chats, conts)
    b = cached.score(chats, conts)
    assert torch.equal(a.mask, b.mask)
    m = a.mask[..., None]
    assert torch.isfinite(b.dists[a.mask]).all()
    torch.testing.assert_close(torch.where(m, b.dists, 0.0), torch.where(m, a.dists, 0.0),
                               rtol=0, atol=1e-5)


def test_cached_scoring_equals_uncached_over_repeated_ragged_steps(pair):
    plain, cached = pair
    cached.prefix_cache.clear()
    before = dict(cached.prefix_cache.counters)
    chats = _chats(7)  # 7 states, chunks of 3: ragged chunks of 3, 3, 1
    for step in range(3):  # new continuations every step (on-policy), same contexts
        _check(plain, cached, chats, _conts(7, seed=step))
    c = cached.prefix_cache.counters
    assert c["misses"] - before["misses"] == 7 and c["hits"] - before["hits"] == 14
    assert len(cached.prefix_cache) == 7


def test_a_batch_mixing_hits_and_misses_and_duplicate_states(pair):
    plain, cached = pair
    cached.prefix_cache.clear()
    chats = _chats(5, seed=1)
    _check(plain, cached, chats[:2], _conts(2, 5))
    # samples of one state twice in a batch, two cached states, three new ones
    mixed = [chats[0], chats[3], chats[0], chats[1], chats[4], chats[2]]
    _check(plain, cached, mixed, _conts(6, 6))
    _check(plain, cached, mixed, _conts(6, 7))


def test_top_k_and_one_token_contexts(pair):
    plain, cached = pair
    conts = _conts(3, 9)
    ctx = [[5], [7, 8, 9, 10], [11, 12]]  # a 1-token context has no prefix to cache
    for _ in range(2):
        a = plain.score(ctx, conts, top_k=4)
        b = cached.score(ctx, conts, top_k=4)
        assert torch.equal(a.dists.ids[a.mask], b.dists.ids[a.mask])
        torch.testing.assert_close(b.dists.logprobs[a.mask], a.dists.logprobs[a.mask],
                                   rtol=0, atol=1e-5)


def test_weight_change_flushes_the_cache(tiny_dirs):
    t = HFTeacher(tiny_dirs["teacher_c"])
    t.enable_prefix_cache(8, 16)
    chats, conts = _chats(2, 3), _conts(2, 3)
    t.score(chats, conts)
    with torch.no_grad():
        next(t.model.parameters()).mul_(1.5)  # in place, as an optimizer step
    fresh = HFTeacher(t.model, t.tokenizer)
    got = t.score(chats, conts)
    assert t.prefix_cache.counters["flushes"] == 1 and t.prefix_cache.counters["hits"] == 0
    torch.testing.assert_close(got.dists, fresh.score(chats, conts).dists, rtol=0, atol=1e-5)


def test_lru_bounds_entries_and_memory():
    c = PrefixKVCache(max_entries=2, max_mib=1)
    kv = [(torch.zeros(1, 10, 4), torch.zeros(1, 10, 4))]  # 320 bytes
    for key in [(1,), (2,), (3,)]:
        c.put(key, kv)
    assert len(c) == 2 and c.get((1,)) is None and c.counters["evictions"] == 1
    assert c.get((2,)) is not None  # (2,) is now the most recent
    c.put((4,), kv)
    assert c.get((3,)) is None and c.get((2,)) is not None
    big = [(torch.zeros(2**18), torch.zeros(2**18))]  # 2 MiB > 1 MiB
    c.put((5,), big)
    assert c.counters["too_large"] == 1 and c.get((5,)) is None
    small = PrefixKVCache(max_entries=10, max_mib=700 / 2**20)  # room for 2 entries of 320 B
    for key in [(1,), (2,), (3,)]:
        small.put(key, kv)
    assert len(small) == 2 and small.bytes == 640
    with pytest.raises(Exception, match="max_entries"):
        PrefixKVCache(0)
