"""metrics.jsonl and the run lock under faults: torn lines, gaps, duplicates, two writers."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from madopd.errors import DataError, RunInUseError
from madopd.integrity import release_run_lock
from madopd.runs import RunStore, load_run


def _store_with(tmp_path, steps, tail=""):
    store = RunStore(tmp_path, {})
    for s in steps:
        store.log_metrics(s, {"loss": float(s)})
    with store.metrics_path.open("a") as f:
        f.write(tail)
    return store


def test_torn_last_line_is_dropped_and_counted_on_resume(tmp_path):
    store = _store_with(tmp_path, range(1, 6), tail='{"step": 6, "lo')
    assert load_run(tmp_path).torn_lines == 1  # readers see it too, and leave it out
    store.truncate_to(4)
    store.log_metrics(5, {"loss": 5.0})
    m = load_run(tmp_path).metrics
    assert [x["step"] for x in m] == [1, 2, 3, 4, 5]
    assert m[-1]["count/run/metrics_torn_lines"] == 1
    assert m[-1]["count/run/metrics_lines_dropped"] == 1  # step 5 came after the checkpoint
    assert "metrics_reconciled" in (tmp_path / "events.jsonl").read_text()


def test_torn_tail_is_cut_before_a_new_writer_appends(tmp_path):
    _store_with(tmp_path, [1], tail='{"step": 2, "lo')
    release_run_lock(tmp_path)  # the writer "died"
    store = RunStore(tmp_path, {})
    store.log_metrics(2, {"loss": 2.0})
    m = load_run(tmp_path).metrics
    assert [x["step"] for x in m] == [1, 2] and m[1]["count/run/metrics_torn_lines"] == 1


def test_a_gap_is_refused(tmp_path):
    """The issue's case: steps 1-6 kept, the checkpoint at 16: resuming would leave 7-16 out."""
    store = _store_with(tmp_path, range(1, 7))
    before = store.metrics_path.read_bytes()
    with pytest.raises(DataError, match=r"metrics.jsonl.*step 16 but steps 7-16 are missing"):
        store.truncate_to(16)
    assert store.metrics_path.read_bytes() == before  # nothing rewritten


def test_garbled_middle_line_and_duplicates_are_refused_with_their_line(tmp_path):
    store = _store_with(tmp_path, [1, 2])
    with store.metrics_path.open("a") as f:
        f.write("\x00\x00garbage\n" + json.dumps({"step": 3}) + "\n")
    with pytest.raises(DataError, match="metrics.jsonl, line 3.*malformed"):
        store.truncate_to(3)
    store.metrics_path.write_text("".join(json.dumps({"step": s}) + "\n" for s in (1, 2, 2, 3)))
    with pytest.raises(DataError, match="line 3.*step 2 appears twice"):
        store.truncate_to(3)


def test_metrics_not_utf8_names_the_line_when_read(tmp_path):
    store = _store_with(tmp_path, [1])
    with store.metrics_path.open("ab") as f:
        f.write(b'{"step": 2, "x": "\xff"}\n')
    with pytest.raises(DataError, match="metrics.jsonl, line 2.*UTF-8"):
        load_run(tmp_path)


_HOLDER = textwrap.dedent("""
    import sys, time
    from madopd.runs import RunStore
    RunStore(sys.argv[1], {"x": 1})
    print("locked", flush=True)
    time.sleep(30)
""")


def test_a_second_writer_gets_the_holders_pid(tmp_path):
    proc = subprocess.Popen([sys.executable, "-c", _HOLDER, str(tmp_path)],
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "locked"
        with pytest.raises(RunInUseError, match=f"PID {proc.pid}"):
            RunStore(tmp_path, {"x": 2})
        assert json.loads((tmp_path / "config.json").read_text()) == {"x": 1}  # not overwritten
        reader = RunStore(tmp_path)  # readers never lock
        assert reader.latest_checkpoint() is None
    finally:
        proc.kill()
        proc.wait(timeout=10)
    # the holder died: its lock is stale, taken over and reported
    store = RunStore(tmp_path, {"x": 3})
    store.log_metrics(1, {})
    assert load_run(tmp_path).metrics[0]["count/run/stale_locks"] == 1
    events = (tmp_path / "events.jsonl").read_text()
    assert f'"pid": {proc.pid}' in events and "stale_lock_taken_over" in events
    assert (tmp_path / ".lock").read_text().strip() == str(__import__("os").getpid())




def test_an_unwritable_lock_file_is_one_error(tmp_path):
    """(Permissions do not stop root, so the lock path is made a folder: refused by name.)"""
    from madopd.errors import DataError

    (tmp_path / ".lock").mkdir()
    with pytest.raises(DataError, match=r"\.lock: is a directory, not a regular file"):
        RunStore(tmp_path, {})
    assert not (tmp_path / "config.json").exists()
