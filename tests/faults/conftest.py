"""Fixtures of the fault-injection suite."""

from __future__ import annotations

import pytest


@pytest.fixture
def one_line(capsys):
    """stderr of a CLI call, asserted to be exactly one line; returns it."""
    def read() -> str:
        err = capsys.readouterr().err
        lines = [ln for ln in err.splitlines() if ln.strip()]
        assert len(lines) == 1, f"expected one line on stderr, got {len(lines)}:\n{err}"
        return lines[0]
    return read
