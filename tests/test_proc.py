import subprocess
import sys

from madopd._proc import pid_alive


def test_own_pid_is_alive():
    import os
    assert pid_alive(os.getpid())


def test_reaped_child_is_dead():
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()  # reaped: its PID no longer names a process (reuse within the test is unlikely)
    assert not pid_alive(child.pid)


def test_pid_1_is_alive_even_without_permission():
    assert pid_alive(1)  # EPERM for non-root users still means "exists"
