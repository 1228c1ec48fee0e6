"""Divergence playground: payload, reference values (madopd.divergence), JS == Python simulation."""

import json
import math
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from jsrun import node_json

from madopd.errors import ValueRangeError
from madopd.widgets.playground import (
    playground_payload,
    reference_cases,
    render_playground_html,
    simulate,
)

SNAP = Path(__file__).parent / "snapshots" / "playground_reference.json"
JS_TESTS = Path(__file__).parent / "js"


def test_payload_snapshot():
    p = playground_payload()
    assert p["kind"] == "playground" and p["family"] == "gaussian"
    assert len(p["teacher_probs"]) == 12 and sum(p["teacher_probs"]) == pytest.approx(1.0)
    assert p["kinds"] == ["fkl", "rkl", "jsd"]
    assert p["init"] == [5.5, pytest.approx(math.log(2.5))]
    assert len(p["reference"]) == 3
    json.dumps(p)  # serialisable
    assert len(json.dumps(p)) < 20_000  # compact


def test_bad_inputs_raise_named_errors():
    with pytest.raises(ValueRangeError, match="teacher_probs"):
        playground_payload([0.5, 0.0, 0.5])
    with pytest.raises(ValueRangeError, match="beta"):
        playground_payload(beta=1.0)


def test_reference_snapshot_is_current():
    """The snapshot node --test reads must equal what madopd.divergence computes today."""
    snap = json.loads(SNAP.read_text())
    fresh = reference_cases()
    assert len(snap) == len(fresh)
    for a, b in zip(snap, fresh):
        for kind in ("fkl", "rkl", "jsd", "njsd"):
            assert a["values"][kind] == pytest.approx(b["values"][kind], abs=1e-12)
            assert a["grads"][kind] == pytest.approx(b["grads"][kind], abs=1e-12)


def test_js_matches_payload_reference_values():
    p = playground_payload()
    got = node_json(
        'const D = await import(STATIC + "/divmath.js");'
        "print(DATA.reference.map((c) => D.dense(c.teacher_logits, c.student_logits, c.temperature, c.beta)));",
        p)
    for c, js in zip(p["reference"], got):
        for kind in ("fkl", "rkl", "jsd", "njsd"):
            assert js["values"][kind] == pytest.approx(c["values"][kind], abs=1e-6)
            assert js["grads"][kind] == pytest.approx(c["grads"][kind], abs=1e-6)


def test_node_test_suite_passes():
    node = shutil.which("node")
    assert node, "node is required"
    r = subprocess.run([node, "--test", str(JS_TESTS)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr


@pytest.mark.parametrize("family", ["gaussian", "free"])
def test_js_simulation_equals_python(family):
    p = playground_payload(family=family, beta=0.3, temperature=1.3, with_reference=False)
    got = node_json(
        'const G = await import(STATIC + "/playground.js");'
        "print(['fkl', 'rkl', 'jsd'].map((k) => G.simulate(DATA, k, 60)));", p)
    for kind, js in zip(["fkl", "rkl", "jsd"], got):
        py = simulate(p, kind, 60)
        assert js["theta"] == pytest.approx(py["theta"], abs=1e-9)
        assert js["values"] == pytest.approx(py["values"], abs=1e-9)
        assert js["grad_inf"] == pytest.approx(py["grad_inf"], abs=1e-9)


def test_default_shows_mode_seeking_vs_mass_covering():
    p = playground_payload(with_reference=False)
    fkl, rkl = simulate(p, "fkl", 300), simulate(p, "rkl", 300)
    mu_f, sig_f = fkl["theta"][0], math.exp(fkl["theta"][1])
    mu_r, sig_r = rkl["theta"][0], math.exp(rkl["theta"][1])
    assert 8.0 < mu_r < 10.0 and sig_r < 1.2  # reverse KL sits on the dominant mode (at 9)
    assert 4.5 < mu_f < 7.5 and sig_f > 2.0  # forward KL spreads over both modes
    free = playground_payload(family="free", with_reference=False)
    q = simulate(free, "jsd", 400)["q"]  # with free logits every divergence reaches p
    assert q == pytest.approx(free["teacher_probs"], abs=0.02)


def test_static_render_has_one_panel_per_divergence():
    html = render_playground_html(playground_payload(with_reference=False))
    assert html.count('class="madopd-static-panel"') == 3
    assert len(re.findall(r"<rect ", html)) == 3 * 12 * 2  # teacher outline + student per outcome
    assert "<script" not in html


def test_current_payload_carries_the_dragged_teacher():
    """Notebook 01 refits the teacher the user dragged (issue 29.4), not the initial one."""
    from madopd.widgets import Playground
    from madopd.widgets.playground import simulate

    pg = Playground()
    n = len(pg.payload["teacher_probs"])
    dragged = [0.5 / (n - 1)] * n
    dragged[0] = 0.5  # a drag that moves half the mass onto the first outcome
    pg.teacher_probs = dragged
    cur = pg.current_payload()
    assert cur["teacher_probs"] == dragged and pg.payload["teacher_probs"] != dragged
    assert simulate(cur, "fkl", 50)["theta"] != simulate(pg.payload, "fkl", 50)["theta"]
