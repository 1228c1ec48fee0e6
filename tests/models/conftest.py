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

import contextlib
import os
import signal
import threading
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def vllm_python() -> Path:
    """Interpreter of the vLLM venv: $MADOPD_VLLM_PYTHON or <repo>/.venv-vllm/bin/python."""
    return Path(os.environ.get("MADOPD_VLLM_PYTHON", REPO / ".venv-vllm" / "bin" / "python"))


def env_seconds(name: str, default: float) -> float:
    """A positive number of seconds from the environment (slow/loaded CI machines raise it)."""
    raw = os.environ.get(name)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise pytest.UsageError(f"${name}: expected a number of seconds > 0, got {raw!r}")
    return value


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
        why = f"no vLLM interpreter at {python}: run .ci/setup_vllm.sh or set MADOPD_VLLM_PYTHON"
        if os.environ.get("MADOPD_VLLM_REQUIRED") == "1":  # CI: a missing venv must not pass
            pytest.fail(why)
        pytest.skip(why)
    log = tmp_path_factory.mktemp("vllm_log") / "server.log"
    with _term_as_interrupt(), serve_vllm(
            vllm_model_dir, python=python, log_path=log,
            startup_timeout=env_seconds("MADOPD_VLLM_STARTUP_TIMEOUT", 300)) as url:
        yield url, vllm_model_dir


@pytest.fixture(scope="module")
def vllm_dev_server(tmp_path_factory):
    """Yield (base_url, model_dir) of a vLLM server in development mode
    (``VLLM_SERVER_DEV_MODE=1``: /collective_rpc, /reset_prefix_cache) on its OWN copy of the
    tiny student, for rollout tests that push new weights into it (module scope: stopped when
    the module is done, so it never serves the other tests changed weights)."""
    from madopd.models.tiny import TinySpec, build_tiny_model
    from madopd.models.vllm_server import serve_vllm

    python = vllm_python()
    if not python.exists():
        skip_or_fail(f"no vLLM interpreter at {python}: run .ci/setup_vllm.sh or set "
                     "MADOPD_VLLM_PYTHON", "MADOPD_VLLM_REQUIRED")
    path = tmp_path_factory.mktemp("vllm_dev_model")
    build_tiny_model(path, TinySpec(seed=7, extra={"initializer_range": 0.3}))
    log = tmp_path_factory.mktemp("vllm_dev_log") / "server.log"
    with _term_as_interrupt(), serve_vllm(
            path, python=python, log_path=log, env={"VLLM_SERVER_DEV_MODE": "1"},
            startup_timeout=env_seconds("MADOPD_VLLM_STARTUP_TIMEOUT", 300)) as url:
        yield url, str(path)


REAL_MODEL = "smollm2-135m-instruct"


def real_model_folder() -> str | None:
    """SmolLM2-135M-Instruct's verified cache folder, or None when it has not been pulled.

    Never converts or installs here: pulling is `python -m madopd models pull` (CI:
    .ci/extra_vllm.sh does it through .ci/setup_real.sh), so a test run does not spend 30-110 s
    de-quantizing by surprise."""
    from madopd.models.catalogue import CHECKSUMS, folder_of, verify_folder

    folder = folder_of(REAL_MODEL)
    if not (folder / CHECKSUMS).is_file() or verify_folder(folder):
        return None
    return str(folder)


def skip_or_fail(why: str, required_env: str) -> None:
    """Skip (counted by pytest -rs), or fail when ``$required_env`` is 1 (CI: a missing
    prerequisite must not pass as green)."""
    if os.environ.get(required_env) == "1":
        pytest.fail(why)
    pytest.skip(why)


@pytest.fixture(scope="session")
def vllm_real_server(tmp_path_factory):
    """Yield (base_url, folder) of a vLLM server on the REAL SmolLM2-135M-Instruct (fp32).

    Skipped when the venv or the model is missing; ``MADOPD_VLLM_REAL_REQUIRED=1`` (set by
    .ci/extra_vllm.sh) turns a missing model into a failure. Context 2048: enough for a
    one-round debate with the `general` templates."""
    from madopd.models.vllm_server import serve_vllm

    python = vllm_python()
    if not python.exists():
        skip_or_fail(f"no vLLM interpreter at {python}: run .ci/setup_vllm.sh or set "
                     "MADOPD_VLLM_PYTHON", "MADOPD_VLLM_REQUIRED")
    folder = real_model_folder()
    if folder is None:
        skip_or_fail(f"{REAL_MODEL} is not pulled: python -m madopd models pull {REAL_MODEL} "
                     "(needs .ci/setup_real.sh's packages)", "MADOPD_VLLM_REAL_REQUIRED")
    log = tmp_path_factory.mktemp("vllm_real_log") / "server.log"
    with _term_as_interrupt(), serve_vllm(
            folder, python=python, log_path=log, max_model_len=2048,
            startup_timeout=env_seconds("MADOPD_VLLM_STARTUP_TIMEOUT", 300)) as url:
        yield url, folder


@contextlib.contextmanager
def _term_as_interrupt():
    """SIGTERM -> KeyboardInterrupt while the server runs: pytest then tears the fixture down
    and stops the server. SIGTERM's default action would end pytest at once and leave the
    server (its own process group) running."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum, frame):
        # once: a second TERM (e.g. `timeout` forwarding one) must not abort the teardown
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
