"""The toy zoo: skill specs, training text = debate formats, cache keys, checksums, resume."""

from __future__ import annotations

import random
from dataclasses import replace

import pytest

from madopd.errors import ConfigError
from madopd.toyworld.toy_code import ToyCodeTask
from madopd.toyworld.toy_common import (
    CONF_ADOPT,
    CONF_KNOW,
    CONF_UNSURE,
    FAMILIES,
    TeacherSkill,
    revise,
    world_skills,
)
from madopd.toyworld.toy_tools import ToyToolsTask
from madopd.toyworld.zoo import (
    PROFILES,
    ZooSpec,
    load_zoo,
    member_settings,
    profile_spec,
    verify_member,
)
from madopd.toyworld.zoo_data import make_debate, oracle_transcript, teacher_examples

TINY = replace(PROFILES["smoke"], teacher_steps=2, student_steps=2, tool_episodes=30,
               noisy_episodes=10, eval_episodes=5, batch_size=4)


@pytest.fixture(scope="module")
def tasks():
    return ToyToolsTask(n_train=60, n_eval=20), ToyCodeTask()


def test_revise_rule():
    assert revise(("a", CONF_KNOW), [("b", CONF_KNOW)], stubborn=False) == ("a", CONF_KNOW)
    assert revise(("a", CONF_UNSURE), [("b", 60), ("c", 90)], stubborn=False) == ("c", CONF_ADOPT)
    assert revise(("a", CONF_UNSURE), [("b", 40)], stubborn=False) == ("a", CONF_UNSURE)
    assert revise(("a", CONF_UNSURE), [("b", CONF_KNOW)], stubborn=True) == ("a", CONF_UNSURE)
    assert revise(("a", None), [("b", None)], stubborn=False) == ("a", CONF_UNSURE)


def test_skills_are_complementary_and_knobs_validate():
    a, b = world_skills()
    for fam in ("add", "sub"):
        assert a.knows(fam, 0.3) and not b.knows(fam, 0.3)
    for fam in ("max", "min"):
        assert b.knows(fam, 0.3) and not a.knows(fam, 0.3)
    assert a.knows("dst", 0.2) != b.knows("dst", 0.2)  # each knows its own half
    assert a.belief("add", 0.1, trap=True) == (FAMILIES["add"].wrong, True)  # confidently wrong
    blind = world_skills("blind")
    assert not any(s.knows("max", u / 10) for s in blind for u in range(10))
    over = world_skills(calibration="overconfident")[0]
    assert over.confidence(False) == CONF_KNOW
    assert len(world_skills(n_teachers=3)) == 3
    with pytest.raises(ConfigError, match="calibration"):
        TeacherSkill("X", calibration="sometimes")
    with pytest.raises(ConfigError, match="overlap"):
        world_skills(overlap=2.0)
    with pytest.raises(ConfigError, match="valid"):
        profile_spec("huge")


def test_oracle_debate_settles_complementary_items_but_not_traps_or_dst(tasks):
    tools, code = tasks
    skills = world_skills()
    for st in code.eval_states():
        tr = oracle_transcript(skills, code, st, 2)
        final = tr.final_answers()
        if st.family in ("add", "sub", "max", "min"):
            trap = st.family == "add" and st.meta["trap"]
            assert final[0] == final[1]
            assert (final[0] == st.reference) != trap
        else:  # dst: stubborn, the halves disagree until confidence arbitrates
            assert final[0] != final[1]
            confs = tr.final_confidences()
            right = [k for k in range(2) if final[k] == st.reference]
            assert right and confs[right[0]] > min(confs)
    blind = world_skills("blind")
    st = next(s for s in code.eval_states() if s.family == "max")
    assert all(a != st.reference for a in oracle_transcript(blind, code, st, 2).final_answers())


def test_training_chats_are_exactly_the_debate_formats(tasks):
    tools, _ = tasks
    skills = world_skills()
    debate = make_debate([s.name for s in skills])
    st = tools.train_states()[2]  # the operation step
    ex = teacher_examples(skills, 1, tools, st, random.Random(0), debate)
    assert [e.kind for e in ex] == ["r1", "r2", "s1", "s2", "blind"]
    assert ex[0].chat == debate.prompt(st, None, 1, 1)
    assert ex[4].chat == debate.score_context(st, None, 1)
    assert ex[0].target.endswith(">>") and "<<CONFIDENCE=" in ex[0].target
    assert "<<CONFIDENCE=" not in ex[2].target  # score modes predict <|end|>, not a tag
    assert ex[1].chat[-1]["content"].startswith("#2") and "<<CONFIDENCE=" in ex[1].chat[-1]["content"]
    assert all(m == ex[1].chat[i] for i, m in enumerate(st.messages))  # the state comes first


def test_inline_rendering_matches_chat_template(tasks):
    from madopd.models._common import render_prompt_ids
    from madopd.models.tiny import build_tokenizer
    from madopd.toyworld.zoo_train import merged_tokens, tokenize

    tools, code = tasks
    tok = build_tokenizer(merged_tokens())
    skills = world_skills()
    debate = make_debate([s.name for s in skills])
    ex = [e for st in tools.train_states()[:8] + code.train_states()[:4]
          for e in teacher_examples(skills, 0, tools if st.id.startswith("tools") else code, st,
                                    random.Random(1), debate)]
    seqs = tokenize(tok, ex, check=len(ex))
    for e, (ids, n) in zip(ex, seqs):
        assert ids[:n] == render_prompt_ids(tok, e.chat)
        assert ids[-1] == tok.eos_token_id


def test_member_keys_depend_on_what_shapes_them():
    spec = ZooSpec()
    a = member_settings(spec, "A")
    assert member_settings(spec, "A") == a
    assert member_settings(replace(spec, world="blind"), "A") != a
    assert member_settings(replace(spec, world="blind"), "student") == member_settings(spec, "student")
    with pytest.raises(ConfigError, match="valid"):
        member_settings(spec, "Z")


@pytest.mark.slow
def test_build_corrupt_and_interrupted_cache(tmp_path):
    logs: list[str] = []
    zoo = load_zoo(TINY, root=tmp_path, workers=1, progress=False, log=logs.append)
    assert all(verify_member(p) is None for p in [*zoo.teacher_paths, zoo.student_path])
    assert "calibration" in zoo.report and set(zoo.report["teachers"]) == {"A", "B"}
    # corrupt one weight file: detected by checksum, rebuilt with a message
    weights = next(zoo.teacher_paths[0].glob("*.safetensors"))
    weights.write_bytes(weights.read_bytes()[:-10] + b"0123456789")
    logs.clear()
    zoo2 = load_zoo(TINY, root=tmp_path, workers=1, progress=False, log=logs.append)
    assert any("corrupted" in m and "checksum" in m for m in logs)
    assert verify_member(zoo2.teacher_paths[0]) is None
    # an interrupted build leaves a .partial dir: it is removed and nothing half-built is used
    stale = zoo.teacher_paths[0].with_name(zoo.teacher_paths[0].name + ".partial-1")
    stale.mkdir()
    (stale / "model.safetensors").write_bytes(b"half")
    logs.clear()
    load_zoo(TINY, root=tmp_path, workers=1, progress=False, log=logs.append)
    assert not stale.exists() and any("unfinished" in m for m in logs)
