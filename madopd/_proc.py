"""Process helpers shared by layers that must not import each other (the sandbox stays free of
torch; the run-folder lock lives beside torch code)."""

from __future__ import annotations

import os


def pid_alive(pid: int) -> bool:
    """Whether a process with this PID exists. A PID owned by another user (EPERM) is alive:
    the signal-0 probe only failed for lack of permission."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
