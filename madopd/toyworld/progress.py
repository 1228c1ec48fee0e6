"""Progress of the toy world's long phases, across worker processes, with an ETA.

The zoo's members, the debate caches and the demo's runs are computed in spawned worker
processes, whose own bars would go to the terminal of whoever started them (in a notebook:
the Jupyter server's log, not the notebook) and overwrite each other. So each worker only
writes how far it is (``Ticker``: a small JSON file ``{"done": n, "total": N}``, rewritten
at most once a second), and the calling process draws one bar per phase (``Phase``:
``tqdm.auto`` on stderr, a widget in a notebook) from the sum of those files, with tqdm's
elapsed time, rate and ETA. Finished jobs print one summary line each through ``Phase.log``
(above the bar, and into the log file of ``madopd demo --log-file``).
"""

from __future__ import annotations

import concurrent.futures as cf
import json
import os
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any


class Ticker:
    """Worker side: count finished units into ``path`` (None: into ``on_update`` only)."""

    def __init__(self, path: str | os.PathLike | None, total: int,
                 on_update: Callable[[int], None] | None = None, every_s: float = 1.0):
        self.path, self.total, self.done = (Path(path) if path else None), total, 0
        self.on_update, self.every_s, self._written = on_update, every_s, 0.0

    def update(self, n: int = 1) -> None:
        self.done += n
        if self.on_update is not None:
            self.on_update(n)
        if self.path is not None and (time.monotonic() - self._written >= self.every_s
                                      or self.done >= self.total):
            self._write()

    def _write(self) -> None:
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text(json.dumps({"done": self.done, "total": self.total}))
        os.replace(tmp, self.path)  # the reader never sees half a file
        self._written = time.monotonic()


def read_progress(path: Path) -> tuple[int, int]:
    """(units finished, units in all) a worker reported; (0, 0) before its first report."""
    try:
        data = json.loads(path.read_text())
        return int(data["done"]), int(data["total"])
    except (OSError, ValueError, KeyError, TypeError):
        return 0, 0


class Phase:
    """Caller side: one bar for a phase of ``total`` units; ``log`` prints a line above it."""

    def __init__(self, desc: str, total: int | None, *, unit: str = "it", enabled: bool = True,
                 log: Callable[[str], None] = print):
        self._log, self.bar = log, None
        if enabled:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, desc=desc, unit=unit, file=sys.stderr,
                            mininterval=1.0, smoothing=0.1, dynamic_ncols=True)

    def log(self, line: str) -> None:
        if self.bar is not None and self._log is print:
            self.bar.write(line, file=sys.stdout)  # keeps the bar below the line
        else:
            self._log(line)

    def set_done(self, n: int) -> None:
        if self.bar is not None and n != self.bar.n:
            self.bar.update(n - self.bar.n)

    def update(self, n: int = 1) -> None:
        if self.bar is not None:
            self.bar.update(n)

    def _poll(self, files: list[Path]) -> None:
        reports = [read_progress(p) for p in files]
        if self.bar is not None and all(total for _, total in reports):
            total = sum(total for _, total in reports)  # known once every worker reported
            if self.bar.total != total:
                self.bar.total = total
                self.bar.refresh()
        self.set_done(sum(done for done, _ in reports))

    def as_completed(self, futures: Iterable[Any], files: list[Path] = ()) -> Iterator[Any]:
        """Yield ``futures`` as they finish; meanwhile the bar shows the units reported in
        ``files`` (without files it is left to the caller's ``update``)."""
        pending = list(futures)
        if not all(isinstance(f, cf.Future) for f in pending):  # inline: already done
            if files:
                self._poll(files)
            yield from pending
            return
        while pending:
            done, _ = cf.wait(pending, timeout=1.0, return_when=cf.FIRST_COMPLETED)
            if files:
                self._poll(files)
            for f in [f for f in pending if f in done]:
                pending.remove(f)
                yield f
        if files:
            self._poll(files)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()

    def __enter__(self) -> Phase:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
