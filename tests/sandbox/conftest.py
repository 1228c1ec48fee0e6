"""Shared fixtures of the sandbox suite: the sandbox must be fully available (bwrap, user
namespaces, cgroups, seccomp) — a host without them fails here loudly, it is not skipped."""

from __future__ import annotations

import os
import sys

import pytest

from madopd.sandbox import run_code


@pytest.fixture(scope="session", autouse=True)
def full_isolation():
    if not sys.platform.startswith("linux"):
        pytest.skip("Linux-only sandbox")
    res = run_code("print('ok')")
    assert (res.status, res.isolation) == ("pass", "full"), (
        f"the sandbox cannot isolate on this host (run `bash .ci/setup_sandbox.sh`): {res}")


@pytest.fixture
def host_pids_with():
    """``host_pids_with(marker)``: host processes whose command line contains ``marker``."""
    return _host_pids_with


def _host_pids_with(marker: str) -> list[int]:
    """Host processes whose command line contains ``marker`` (leftovers of a run)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as fh:
                    if marker.encode() in fh.read():
                        found.append(int(entry))
            except OSError:
                pass
    return found
