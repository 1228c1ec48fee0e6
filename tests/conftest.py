"""Shared fixtures: tiny models built inside the test session (no downloads, < 1 s each)."""

from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
torch.set_num_threads(max(1, min(2, torch.get_num_threads())))


@pytest.fixture(scope="session")
def tiny_dirs(tmp_path_factory):
    """Three tiny Qwen3 checkpoints that share one tokenizer: {'student', 'teacher_a', 'teacher_b'}.

    Teachers are wider than the student; all have random weights (different seeds).
    """
    from madopd.models.tiny import TinySpec, build_tiny_model

    root = tmp_path_factory.mktemp("tiny")
    specs = {
        "student": TinySpec(hidden_size=64, num_layers=1, num_heads=2, num_kv_heads=1,
                            intermediate_size=128, seed=0),
        "teacher_a": TinySpec(hidden_size=96, num_layers=2, num_heads=2, num_kv_heads=1,
                              intermediate_size=192, seed=1),
        "teacher_b": TinySpec(hidden_size=96, num_layers=2, num_heads=2, num_kv_heads=1,
                              intermediate_size=192, seed=2),
        "teacher_c": TinySpec(hidden_size=64, num_layers=1, num_heads=2, num_kv_heads=1,
                              intermediate_size=128, seed=3),
    }
    out = {}
    for name, spec in specs.items():
        build_tiny_model(root / name, spec)
        out[name] = str(root / name)
    return out
