"""Debate transcript cache: keys, reuse, persistence, failures, hit rate in the loop."""

from __future__ import annotations

import pytest
from distill_helpers import make_cfg

from madopd.cache import DebateCache, warm_cache
from madopd.debate import Debate, DebateProtocol, transcript_to_dict
from madopd.distill import Distiller
from madopd.errors import DataError, TeacherError
from madopd.types import Sampling, State


class EchoTeacher:
    """A deterministic fake teacher: its reply names itself and the last user message."""

    def __init__(self, name, fail=False):
        self.name, self.fail, self.calls = name, fail, 0

    def generate(self, chats, sampling):
        self.calls += len(chats)
        if self.fail:
            raise TeacherError("down")
        return [f"{self.name}:{c[-1]['content'][:12]} <<CONFIDENCE=60>>" for c in chats]


def _states(n, prefix="s"):
    return [State(f"{prefix}{i}", [{"role": "user", "content": f"question {i}"}]) for i in range(n)]


def _debate(*teachers, rounds=2, seed=0, **kw):
    return Debate(list(teachers), DebateProtocol(rounds=rounds, sampling=Sampling(seed=seed), **kw))


def test_second_call_hits_and_returns_the_same_transcripts():
    a, b = EchoTeacher("A"), EchoTeacher("B")
    debate, cache = _debate(a, b), DebateCache()
    first, s1 = cache.get_or_run(debate, _states(3))
    calls = a.calls
    again, s2 = cache.get_or_run(debate, _states(3))
    assert s1 == {"cache_hits": 0, "cache_misses": 3, "cache_not_stored_failed": 0}
    assert s2["cache_hits"] == 3 and a.calls == calls  # no teacher call on a hit
    assert [transcript_to_dict(t) for t in first] == [transcript_to_dict(t) for t in again]
    assert cache.hit_rate == pytest.approx(0.5)


def test_state_id_follows_the_state_but_messages_make_the_key():
    debate, cache = _debate(EchoTeacher("A"), EchoTeacher("B")), DebateCache()
    cache.get_or_run(debate, _states(2, "x"))
    trs, stats = cache.get_or_run(debate, _states(2, "y"))  # same messages, new ids
    assert stats["cache_hits"] == 2 and [t.state_id for t in trs] == ["y0", "y1"]
    dup = _states(1) * 3
    cache2 = DebateCache()
    _, stats = cache2.get_or_run(debate, dup)
    assert stats["cache_misses"] == 3 and len(cache2) == 1  # debated once


@pytest.mark.parametrize("change", ["rounds", "seed", "teacher", "template"])
def test_key_changes_with_the_setup(change):
    base = _debate(EchoTeacher("A"), EchoTeacher("B"))
    other = {
        "rounds": lambda: _debate(EchoTeacher("A"), EchoTeacher("B"), rounds=1),
        "seed": lambda: _debate(EchoTeacher("A"), EchoTeacher("B"), seed=1),
        "teacher": lambda: _debate(EchoTeacher("A"), EchoTeacher("C")),
        "template": lambda: _debate(EchoTeacher("A"), EchoTeacher("B"), templates="code"),
    }[change]()
    cache = DebateCache()
    s = _states(1)[0]
    assert cache.key(s, base) != cache.key(s, other)


def test_key_changes_when_teacher_weights_change(tiny_dirs):
    import torch

    from madopd.models.hf import HFTeacher

    t = HFTeacher(tiny_dirs["teacher_c"])
    cache, s = DebateCache(), _states(1)[0]
    k1 = cache.key(s, Debate([t], DebateProtocol(rounds=1)))
    with torch.no_grad():
        next(t.model.parameters()).add_(0.01)
    assert cache.key(s, Debate([t], DebateProtocol(rounds=1))) != k1


def test_disk_persistence_and_corrupt_lines(tmp_path):
    path = tmp_path / "cache.jsonl"
    debate = _debate(EchoTeacher("A"), EchoTeacher("B"))
    DebateCache(path).get_or_run(debate, _states(2))
    reopened = DebateCache(path)
    assert len(reopened) == 2
    _, stats = reopened.get_or_run(debate, _states(2))
    assert stats["cache_hits"] == 2
    with path.open("a") as f:
        f.write('{"key": "abc", "transcr')  # cut short by a crash: counted, not fatal
    assert DebateCache(path).counters["cache_partial_lines"] == 1
    path.write_text('garbage\n{"key": "k", "transcript": {}}\n')
    with pytest.raises(DataError, match="line 1"):
        DebateCache(path)


def test_failed_turns_are_not_cached():
    debate = _debate(EchoTeacher("A"), EchoTeacher("B", fail=True), on_teacher_error="drop_teacher")
    cache = DebateCache()
    _, stats = cache.get_or_run(debate, _states(2))
    assert stats["cache_not_stored_failed"] == 2 and len(cache) == 0


def test_warm_cache_then_all_hits():
    debate, cache = _debate(EchoTeacher("A"), EchoTeacher("B")), DebateCache()
    totals = warm_cache(debate, _states(5), cache, batch_size=2, progress=False)
    assert totals["cache_misses"] == 5
    _, stats = cache.get_or_run(debate, _states(5))
    assert stats["cache_hits"] == 5


def test_distiller_reports_the_hit_rate(tiny_dirs):
    from madopd.tasks.simple import SimpleTask

    # 4 training prompts, batch 4: step 1 debates them all, step 2 (next epoch) only hits.
    cfg = make_cfg(tiny_dirs, "mad_opd", teachers=("teacher_c", "teacher_c"), rounds=1,
                   batch_size=4, record_topk=0, debate_sampling={"max_new_tokens": 3, "seed": 0})
    task = SimpleTask([(f"q{i}", "a") for i in range(4)], name="four")
    d = Distiller.from_config(cfg, task)
    r1, r2 = d.step(), d.step()
    assert r1.metrics["cache/hit_rate"] == 0.0 and r1.metrics["count/cache_misses"] == 4
    assert r2.metrics["cache/hit_rate"] == 1.0 and r2.metrics["count/cache_hits"] == 4
    first = {sid: transcript_to_dict(t) for sid, t in zip(r1.state_ids, r1.transcripts)}
    assert {sid: transcript_to_dict(t) for sid, t in zip(r2.state_ids, r2.transcripts)} == first


def test_a_sampled_debate_does_not_depend_on_its_batch_mates(tiny_dirs):
    # The key hashes the state and the setup (seed included), so the transcript must be a
    # function of those alone: the same state debated beside other states, in another order,
    # gives the same transcript; another protocol seed gives another one (issue 13, item 5).
    from madopd.debate import Debate, DebateProtocol
    from madopd.models.hf import HFTeacher
    from madopd.types import Sampling

    teachers = [HFTeacher(tiny_dirs["teacher_a"], name="A"), HFTeacher(tiny_dirs["teacher_b"], name="B")]
    states = [State(id=f"s{i}", messages=[{"role": "user", "content": f"question {i}"}])
              for i in range(3)]

    def debate(seed):
        return Debate(teachers, DebateProtocol(rounds=1, sampling=Sampling(
            temperature=1.0, max_new_tokens=6, seed=seed)))

    d = debate(0)
    first, _ = DebateCache().get_or_run(d, [states[0], states[1]])
    again, _ = DebateCache().get_or_run(d, [states[2], states[1], states[0]])
    assert [m.text for m in first[0].messages] == [m.text for m in again[2].messages]
    assert [m.text for m in first[1].messages] == [m.text for m in again[1].messages]
    other, _ = DebateCache().get_or_run(debate(1), [states[0]])
    assert [m.text for m in other[0].messages] != [m.text for m in first[0].messages]


def test_sampled_debates_join_the_training_seed():
    from madopd.distill import DistillConfig
    from madopd.distill.loop import debate_sampling

    def cfg(seed, **s):
        return DistillConfig(student="s", teachers=["a", "b"], seed=seed,
                             debate_sampling={"seed": 0, **s})

    assert debate_sampling(cfg(1)).seed != debate_sampling(cfg(2)).seed
    assert debate_sampling(cfg(1)).seed == debate_sampling(cfg(1)).seed
    assert debate_sampling(cfg(1, greedy=True)).seed == 0  # greedy turns: the seed is unused


def test_setup_key_is_not_fooled_by_a_reused_object_id():
    # CPython reuses the id of a collected object; a key remembered by id alone was then handed
    # to a new Debate with other teachers (seen as a flaky stale key). Forge that collision.
    cache = DebateCache()
    old, new = _debate(EchoTeacher("A"), EchoTeacher("B")), _debate(EchoTeacher("C"), EchoTeacher("D"))
    stale = cache.setup_key(old)
    cache._debate_keys[id(new)] = cache._debate_keys.pop(id(old))
    assert cache.setup_key(new) != stale
    assert cache.setup_key(new) == DebateCache().setup_key(new)
