"""Fixtures of the fault-injection suite."""

from __future__ import annotations

import pytest


@pytest.fixture
def one_line(capsys):
    """The error a CLI call printed, asserted to be exactly one line (no traceback); progress
    bars of the libraries (model loading) are not errors and are left out."""
    def read() -> str:
        err = capsys.readouterr().err
        assert "Traceback" not in err, err
        lines = [ln for ln in err.splitlines() if ln.startswith("madopd ")]
        assert len(lines) == 1, f"expected one error line on stderr, got {len(lines)}:\n{err}"
        return lines[0]
    return read
