"""`madopd showcase` runs, prints every section, and shows the behaviours it claims."""

from __future__ import annotations

import re

from madopd.cli import main


def test_showcase_runs_and_shows_mode_seeking(capsys):
    assert main(["showcase", "--steps", "150"]) == 0
    out = capsys.readouterr().out
    for heading in ("1. One teacher", "2. Logit-gradient norm", "3. A top-k teacher",
                    "4. A unimodal student"):
        assert heading in out
    # reverse KL ends on one mode (all its mass on tokens 0-11), forward KL covers both
    rkl = re.search(r"RKL\s+μ = .*?tokens 0-11\s+([\d.]+)%", out)
    fkl = re.search(r"FKL\s+μ = .*?on 12-23\s+([\d.]+)%", out)
    assert rkl and float(rkl.group(1)) > 99.0
    assert fkl and float(fkl.group(1)) > 20.0
    # the gradient table: the JSD column never exceeds Lemma 1's bound of 2
    rows = re.findall(r"^\s+(\de[+-]\d+)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)$", out, re.M)
    assert len(rows) == 6 and all(float(r[3]) <= 2.0 for r in rows)
    assert float(rows[-1][2]) > 10 * float(rows[0][2])  # reverse KL keeps growing
