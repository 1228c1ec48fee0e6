"""The real zoo's cache (issue 22, item 8): detected, verified, a corrupted or half-built
member named and rebuilt, the report measured again; a missing model is one line with the
``madopd models pull`` hint. Training is replaced by a stub that writes a small member (the
real training is measured in docs/real-models.md), so this runs in the default suite."""

from __future__ import annotations

import json

import pytest

from madopd.realworld import zoo as rz


@pytest.fixture
def fake(monkeypatch, tmp_path):
    calls = []

    def train(spec_dict, k, out, position, progress):
        from pathlib import Path

        from madopd.integrity import write_checksums

        calls.append(k)
        d = Path(out)
        d.mkdir(parents=True)
        (d / "model.safetensors").write_bytes(bytes([k]) * 64)
        info = {"name": rz.NAMES[k], "group": rz.RealZooSpec(**spec_dict).groups()[k],
                "train_cpu_seconds": 1.0}
        (d / "member.json").write_text(json.dumps(info))
        write_checksums(d)
        return info

    monkeypatch.setattr(rz, "_train_member", train)
    return calls, tmp_path


def test_build_is_cached_and_resumable(fake):
    calls, root = fake
    spec = rz.RealZooSpec()
    info = rz.build_members(spec, root, workers=1, progress=False, log=lambda m: None)
    assert calls == [0, 1] and info["built"] == rz.member_names(spec)
    assert rz.build_members(spec, root, workers=1, progress=False)["built"] == []
    assert calls == [0, 1]  # the second build found both members intact
    # a half-built member of a dead build is removed; the missing member alone is trained
    folder = rz.zoo_dir(spec, root)
    name = rz.member_names(spec)[1]
    (folder / name).rename(folder / f"{name}.partial-999999")
    info = rz.build_members(spec, root, workers=1, progress=False, log=lambda m: None)
    assert info["built"] == [name] and calls == [0, 1, 1]
    assert not list(folder.glob("*.partial-*"))


def test_corrupted_member_is_named_and_rebuilt(fake):
    calls, root = fake
    spec = rz.RealZooSpec()
    rz.build_members(spec, root, workers=1, progress=False, log=lambda m: None)
    folder = rz.zoo_dir(spec, root)
    (folder / "report.json").write_text("{}")
    name = rz.member_names(spec)[0]
    (folder / name / "model.safetensors").write_bytes(b"tampered")
    assert "model.safetensors" in rz.verify_member(folder / name)
    logs = []
    info = rz.build_members(spec, root, workers=1, progress=False, log=logs.append)
    assert info["built"] == [name] and "checksum mismatch" in info["rebuilt"][name]
    assert any(name in m and "rebuilding" in m for m in logs)
    assert rz.verify_member(folder / name) is None
    assert not (folder / "report.json").exists()  # measured again with the new member
    (folder / name / "SHA256SUMS").unlink()
    assert "SHA256SUMS" in rz.verify_member(folder / name)


def test_settings_change_the_key_and_bad_settings_are_one_error():
    assert rz.RealZooSpec().key() != rz.RealZooSpec(steps=21).key()
    assert rz.RealZooSpec(world="blind").groups() == ["time", "time"]
    from madopd.errors import ConfigError

    with pytest.raises(ConfigError, match="world"):
        rz.RealZooSpec(world="nope")
    with pytest.raises(ConfigError, match="unknown"):
        rz.profile_spec("nope")
    with pytest.raises(ConfigError, match="mix"):
        rz.RealZooSpec(mix=(3, 2, 2))  # must sum to batch_size 6
    assert rz.RealZooSpec(mix=(3, 2, 1)).key() != rz.RealZooSpec().key()
    assert rz.RealZooSpec().key() == "1b1eb6516aa0"  # the measured zoo's cache key stays put


def test_missing_catalogue_model_gives_the_pull_hint(monkeypatch, tmp_path):
    from madopd.models import catalogue
    from madopd.models.catalogue import ModelCacheError

    monkeypatch.setenv("MADOPD_MODELS_DIR", str(tmp_path))
    monkeypatch.setattr(catalogue, "package_dir", lambda entry: None)
    with pytest.raises(ModelCacheError) as e:
        rz._train_member(rz.RealZooSpec().__dict__, 0, str(tmp_path / "m"), 0, False)
    msg = str(e.value)
    assert "\n" not in msg and "madopd models pull smollm2-135m-instruct" in msg


def test_auroc_matches_brute_force():
    import itertools
    import random

    from madopd.realworld.zoo_eval import auroc

    rng = random.Random(0)
    for _ in range(50):
        n = rng.randint(2, 12)
        s = [rng.choice([0.0, 10.0, 50.0, 90.0]) for _ in range(n)]
        y = [float(rng.random() < 0.5) for _ in range(n)]
        pairs = [(a, b) for a, b in itertools.product(range(n), range(n)) if y[a] == 1 and y[b] == 0]
        want = None if not pairs else sum(1.0 if s[a] > s[b] else 0.5 if s[a] == s[b] else 0.0
                                           for a, b in pairs) / len(pairs)
        assert auroc(s, y) == want


def test_zoo_targets_name_what_is_missed():
    from madopd.realworld.zoo_eval import format_zoo_report, zoo_targets

    def teacher(**kw):
        t = {"group": "time", "blind_in": 0.625, "blind_out": 0.03, "tag_rate": 1.0, "auroc": 0.84,
             "peer_group_with_transcript": 0.53, "peer_blind": 0.8125}
        return {**t, **kw}

    report = {"n_items": 64, "teachers": {"Ada": teacher(),
                                          "Ben": teacher(group="names", auroc=None,
                                                         peer_group_with_transcript=0.65)}}
    met = zoo_targets(report)
    assert met["Ada"] == {"tag rate": True, "AUROC": True, "blind in": True,
                          "peer w/ transcript": False}  # 0.53 < 0.8 * 0.8125
    assert met["Ben"]["AUROC"] is False and met["Ben"]["peer w/ transcript"] is True
    text = format_zoo_report(report)
    assert "missed Ada: peer w/ transcript; Ben: AUROC" in text
    report["teachers"]["Ada"]["peer_group_with_transcript"] = 0.65
    report["teachers"]["Ben"]["auroc"] = 0.7
    assert text != format_zoo_report(report) and "all met" in format_zoo_report(report)


def test_default_zoo_is_the_measured_variant():
    assert rz.PROFILES["default"] == rz.RealZooSpec(steps=30, mix=(3, 2, 1))
    assert rz.PROFILES["blind"].groups() == ["time", "time"]
    assert rz.PROFILES["blind"].key() != rz.PROFILES["default"].key()
