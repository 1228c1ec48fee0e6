"""Fixtures for the vLLM teacher tests: a REAL vLLM OpenAI server on a tiny local checkpoint.

Reuse from other tests under tests/models (e.g. a full debate through vLLM):

    @pytest.mark.vllm
    def test_x(vllm_server):
        base_url, model_dir = vllm_server
        teacher = VLLMServerTeacher(base_url, model_dir, tokenizer=model_dir)

Outside tests/models, call ``madopd.models.vllm_server.serve_vllm(model_dir, python=...)``
(a context manager) the same way this fixture does.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def vllm_python() -> Path:
    """Interpreter of the vLLM venv: $MADOPD_VLLM_PYTHON or <repo>/.venv-vllm/bin/python."""
    return Path(os.environ.get("MADOPD_VLLM_PYTHON", REPO / ".venv-vllm" / "bin" / "python"))


@pytest.fixture(scope="session")
def vllm_model_dir(tmp_path_factory):
    """Tiny Qwen3 (head_dim 32, vLLM's minimum) with a wide init so greedy replies vary."""
    from madopd.models.tiny import TinySpec, build_tiny_model

    path = tmp_path_factory.mktemp("vllm_model")
    build_tiny_model(path, TinySpec(seed=7, extra={"initializer_range": 0.3}))
    return str(path)


@pytest.fixture(scope="session")
def vllm_server(vllm_model_dir, tmp_path_factory):
    """Yield (base_url, model_dir) of a running vLLM server; stopped by process group at the end."""
    from madopd.models.vllm_server import serve_vllm

    python = vllm_python()
    if not python.exists():
        pytest.skip(f"no vLLM interpreter at {python}: run .ci/setup_vllm.sh or set MADOPD_VLLM_PYTHON")
    log = tmp_path_factory.mktemp("vllm_log") / "server.log"
    with serve_vllm(vllm_model_dir, python=python, log_path=log, startup_timeout=240) as url:
        yield url, vllm_model_dir
