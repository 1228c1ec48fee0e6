"""The real demo's wiring on the zoo (issue 22, items 4/5), without models: the subsets keep
every function's share, the rows' configs name the right zoo teachers, the profiles are valid."""

from __future__ import annotations

from pathlib import Path

from madopd.realworld.house import HouseCallsTask
from madopd.realworld.table import BLIND_ROWS, ROWS
from madopd.realworld.world import REAL_PROFILES, RealProfile, _config, _Subset


class _FakeZoo:
    names = ["Ada", "Ben"]

    def member_paths(self):
        return [Path("/zoo/teacher-0-time"), Path("/zoo/teacher-1-names")]


def test_subsets_spread_over_every_function():
    task = HouseCallsTask()
    sub = _Subset(task, 8, 16)
    assert len({s.family for s in sub.eval_states()}) == 8 == len({s.family for s in sub.train_states()})
    assert len(sub.eval_states()) == 16
    assert _Subset(task, None, None).eval_states() == task.eval_states()


def test_row_configs_name_the_zoo_teachers():
    prof = RealProfile()
    zoo = _FakeZoo()
    mad = _config("MAD-OPD", prof, "/student", 0, "/c.jsonl", zoo)
    assert mad.teachers == ["/zoo/teacher-0-time", "/zoo/teacher-1-names"] and mad.rounds == 1
    assert mad.teacher_names == ["Ada", "Ben"] and mad.weighting == "confidence"
    assert _config("MT-OPD", prof, "/student", 0, "/c.jsonl", zoo).rounds == 0
    assert _config("OPD-A", prof, "/student", 0, "/c.jsonl", zoo).num_teachers == 1
    assert set(ROWS) >= {"Base", "OPD-A", "OPD-B", "MT-OPD", "MAD-OPD", *BLIND_ROWS}


def test_profiles():
    assert set(REAL_PROFILES) >= {"smoke", "default"}
    assert len(REAL_PROFILES["default"].seeds) >= 3
    assert REAL_PROFILES["default"].eval_states is None  # all 64 held-out items


def test_every_profile_warms_the_student_up_and_records_it():
    import json
    from dataclasses import asdict

    for name, prof in REAL_PROFILES.items():
        assert prof.warmup.steps > 0, name  # Base = the warm-up: the student writes calls
        settings = json.loads(json.dumps(asdict(prof)))  # results.json's profile_settings
        assert settings["warmup"]["target"] == "naive"
    # smoke's shorter warm-up has its own cache key
    from madopd.realworld.world import STUDENT_LAYERS

    assert (REAL_PROFILES["smoke"].warmup.key(STUDENT_LAYERS)
            != REAL_PROFILES["default"].warmup.key(STUDENT_LAYERS))
