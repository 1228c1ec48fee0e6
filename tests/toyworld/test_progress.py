"""Progress of the long phases: bars with an ETA fed by worker files, one line per finished job,
--quiet and --log-file (madopd/toyworld/progress.py, commands/demo.py)."""

from __future__ import annotations

import re
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

from madopd.toyworld.progress import Phase, Ticker, read_progress

# tqdm's "[elapsed<remaining, rate]": the ETA is the part after '<'
ETA = re.compile(r"\[\d\d:\d\d<\d\d:\d\d")


def test_phase_sums_the_workers_files_and_shows_an_eta(tmp_path, capsys):
    """Two workers report 5 units each through files; the bar learns the total from them,
    counts to 10/10 with an ETA, and each finished job prints its line above the bar."""
    files = [tmp_path / f"w{i}.progress" for i in range(2)]

    def worker(i: int) -> str:
        ticker = Ticker(files[i], 5, every_s=0.0)
        for _ in range(5):
            time.sleep(0.25)
            ticker.update(1)
        return f"job {i}"

    with ThreadPoolExecutor(2) as pool, Phase("caches", None, unit="state") as phase:
        futs = [pool.submit(worker, i) for i in range(2)]
        done = [f.result() for f in phase.as_completed(futs, files)]
        for d in done:
            phase.log(f"{d} finished")
    assert sorted(done) == ["job 0", "job 1"]
    out, err = capsys.readouterr()
    assert "job 0 finished" in out and "job 1 finished" in out
    assert "caches" in err and "10/10" in err and ETA.search(err)
    assert read_progress(files[0]) == (5, 5) and read_progress(tmp_path / "none") == (0, 0)


def test_zoo_training_shows_one_bar_and_a_line_per_member(tmp_path, capsys, monkeypatch):
    """The zoo's members: one bar over all members' steps with an ETA, a summary line per
    member; progress=False draws nothing. (Training itself is stubbed here: 3 steps that
    tick like zoo_train.train_member; the spawned path runs in the smoke demo test.)"""
    import madopd.toyworld.zoo_train as zoo_train
    from madopd.toyworld.zoo import PROFILES, build_members

    def fake_train(settings, out_dir, *, ticker=None, progress=False):
        out_dir.mkdir(parents=True)
        (out_dir / "model.safetensors").write_bytes(b"w")
        for _ in range(settings["steps"]):
            time.sleep(0.2)
            ticker.update(1)
        return {"seconds": 0.6, "cpu_seconds": 0.0, "final_loss": 1.0}

    monkeypatch.setattr(zoo_train, "train_member", fake_train)
    tiny = replace(PROFILES["smoke"], teacher_steps=3, student_steps=3)
    logs: list[str] = []
    build_members(tiny, ["A", "student"], root=tmp_path / "a", workers=1, log=logs.append)
    err = capsys.readouterr().err
    assert "zoo (2 members)" in err and "6/6" in err and ETA.search(err)
    assert [m.split(" done in")[0] for m in logs if " done in " in m] == ["zoo: A", "zoo: student"]
    assert all("CPU-s" in m for m in logs if " done in " in m)
    build_members(tiny, ["A"], root=tmp_path / "b", workers=1, progress=False, log=logs.append)
    assert "zoo (" not in capsys.readouterr().err


def test_quiet_and_log_file(tmp_path, capsys):
    """--log-file: every line with its UTC time, written as it comes; --quiet: nothing on the
    terminal (the command prints only the result)."""
    from madopd.commands.demo import make_log

    path = tmp_path / "log.txt"
    log = make_log(quiet=True, log_file=str(path))
    log("demo: zoo ready")
    log("table\nrow")
    assert capsys.readouterr().out == ""
    lines = path.read_text().splitlines()
    assert [x.split(" ", 1)[1] for x in lines] == ["demo: zoo ready", "table", "row"]
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", x.split(" ")[0]) for x in lines)
    make_log(quiet=False, log_file=None)("[1/2] run done")
    assert capsys.readouterr().out == "[1/2] run done\n"
