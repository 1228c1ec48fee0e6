"""Launched by tests/test_distributed.py under ``accelerate launch``: each rank writes its PID
to ``FOLDER/rank<N>.pid`` and then hangs, as a deadlocked rank would (no torch import: the
ranks start fast)."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

if __name__ == "__main__":
    folder = Path(sys.argv[1])
    (folder / f"rank{os.environ.get('RANK', '?')}.pid").write_text(str(os.getpid()))
    time.sleep(3600)
