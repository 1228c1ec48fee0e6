"""User JSONL code problems: loading, validation errors naming file/line/field, scoring."""

from __future__ import annotations

import json

import pytest

from madopd.bench import get_benchmark
from madopd.bench.code_jsonl import load_code_jsonl
from madopd.errors import ConfigError, DataError

GOOD = {"task_id": "u/0", "prompt": 'def inc(x):\n    """Add one."""\n',
        "test": "def check(candidate):\n    assert candidate(1) == 2\n",
        "entry_point": "inc", "canonical_solution": "    return x + 1\n"}


def _write(path, rows):
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n")
    return str(path)


def test_loads_and_scores_reference_and_wrong_answers(tmp_path):
    second = {**GOOD, "task_id": "u/1"}
    second.pop("canonical_solution")
    path = _write(tmp_path / "p.jsonl", [GOOD, "", second])
    bench = get_benchmark("code-jsonl", data=path)
    states = bench.states()
    assert [s.id for s in states] == ["u/0", "u/1"]
    res = bench.score(states[:1], [[bench.reference(states[0]), "    return x\n", "???"]], ks=[1, 3])
    assert [r["passed"] for r in res.records] == [True, False, False]
    assert res.summary["pass@1"] == pytest.approx(1 / 3) and res.summary["pass@3"] == 1.0
    with pytest.raises(ConfigError, match="no canonical_solution"):
        bench.reference(states[1])


@pytest.mark.parametrize("row, field", [
    ({k: v for k, v in GOOD.items() if k != "test"}, "test"),
    ({**GOOD, "prompt": 3}, "prompt"),
    ({**GOOD, "entry_point": "not an id"}, "entry_point"),
    ({**GOOD, "test": "def check(:"}, "test"),
    ({**GOOD, "test": "assert True"}, "test"),
    ({**GOOD, "canonical_solution": 5}, "canonical_solution"),
    ({**GOOD, "task_id": "u/0"}, "task_id"),  # duplicate of line 1
])
def test_malformed_rows_name_file_line_and_field(tmp_path, row, field):
    path = _write(tmp_path / "bad.jsonl", [GOOD, row])
    with pytest.raises(DataError) as info:
        load_code_jsonl(path)
    err = info.value
    assert (err.path, err.line, err.field) == (path, 2, field)
    assert path in str(err) and "line 2" in str(err)


def test_invalid_json_missing_file_and_missing_data_option(tmp_path):
    path = _write(tmp_path / "bad.jsonl", [GOOD, "{not json"])
    with pytest.raises(DataError, match="line 2.*invalid JSON"):
        load_code_jsonl(path)
    with pytest.raises(DataError, match="file not found"):
        load_code_jsonl(tmp_path / "nope.jsonl")
    with pytest.raises(DataError, match="no problems"):
        load_code_jsonl(_write(tmp_path / "empty.jsonl", [""]))
    with pytest.raises(ConfigError, match="--data"):
        get_benchmark("code-jsonl")
    with pytest.raises(ConfigError, match="unknown benchmark"):
        get_benchmark("nope")
