"""Run untrusted (model-written) Python code in a contained child process.

How a run is contained (Linux; measured on the project's machines, see tests/test_sandbox.py):

* **A launcher, not preexec_fn.** The host starts a fresh, single-threaded ``python -I -S -c
  <launcher>`` (as the host's user) that sets everything up and then ``execve``s the
  interpreter on the user's code. A ``preexec_fn`` would run Python code between fork and exec
  of a multi-threaded host (torch, tokenizers), which can deadlock.
* **A throw-away uid** (when the host is root): each concurrent run leases its own unused uid
  (``SandboxConfig.uid_base`` + slot, locked with ``flock`` so separate host processes never
  share one). The child cannot write anywhere root owns (/work, /root, site-packages), and
  ``RLIMIT_NPROC`` — which counts processes *per real uid* and is ignored for root — becomes an
  exact per-run process budget. After the run every process of that uid is killed (found in
  /proc), which also catches children that escaped the process group with ``setsid``.
* **Namespaces** (root, or a user namespace otherwise): a new network namespace (only a
  downed loopback: every connect fails); a private mount namespace in which the run's temp
  dir is bind-mounted over every world-writable directory (/tmp, /var/tmp, /dev/shm,
  /run/lock), so files the code writes "elsewhere" land in its temp dir, deleted afterwards;
  and a new pid namespace with a fresh /proc: host processes (and their command lines) are
  invisible, and when the code exits its namespace's init exits, which kills every process
  the code left behind.
  When the interpreter lives under a directory the throw-away uid cannot traverse (pyenv in
  /root), its prefix is bind-mounted read-only inside the temp dir instead.
* **rlimits**: RLIMIT_CPU (soft = cpu_seconds, SIGXCPU), RLIMIT_AS (memory), RLIMIT_NPROC,
  RLIMIT_FSIZE, RLIMIT_CORE = 0; plus a wall-clock timeout that kills the process group and
  every process of the uid.
* **A minimal environment**: PATH, HOME and TMPDIR = the temp dir, LANG; nothing inherited, so
  host secrets (API keys) are invisible. The interpreter runs with ``-E -s -S -B``.

If a protection cannot be set up (no root and no user namespaces), the run returns
``status="error"``, ``reason="isolation"`` — unless ``SandboxConfig.require_isolation`` is False,
in which case it runs with what could be applied and ``COUNTERS["isolation_degraded"]`` counts
it. Nothing degrades silently.

API (others depend on it)::

    run_code(source, *, limits=Limits(), stdin=None, files=None) -> RunResult  # pass == exit 0
    run_many(sources, *, limits=Limits(), workers=2, progress=False) -> list[RunResult]
"""

from __future__ import annotations

import fcntl
import json
import math
import os
import pwd
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Literal

from madopd.errors import ConfigError

# Every degraded or notable event, counted (never silent): isolation_degraded, truncated_output,
# leftover_processes_killed, timeouts, ...
COUNTERS: Counter[str] = Counter()
_COUNTER_LOCK = threading.Lock()

SETUP_FAILED_EXIT = 125  # launcher exit code when a required protection could not be set up
_MARK = "madopd-sandbox:"  # prefix of launcher diagnostics on stderr


def _count(key: str, n: int = 1) -> None:
    with _COUNTER_LOCK:
        COUNTERS[key] += n


@dataclass(frozen=True)
class Limits:
    """Per-run resource limits."""

    cpu_seconds: float = field(default=5.0, metadata={"help": "CPU time per process (RLIMIT_CPU)"})
    wall_seconds: float = field(default=10.0, metadata={"help": "wall clock; the whole run is killed"})
    memory_mb: int = field(default=1024, metadata={"help": "address space per process (RLIMIT_AS)"})
    max_processes: int = field(default=16, metadata={"help": "processes+threads of the run (RLIMIT_NPROC)"})
    max_output_bytes: int = field(default=65536, metadata={"help": "kept per stream; the rest is counted"})
    network: bool = field(default=False, metadata={"help": "True = share the host network"})

    def __post_init__(self):
        for name in ("cpu_seconds", "wall_seconds", "memory_mb", "max_processes", "max_output_bytes"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or value <= 0:
                raise ConfigError(f"Limits.{name} must be > 0, got {value!r}")


@dataclass
class RunResult:
    """Outcome of one run. ``reason`` refines the status: "" (pass), "exit", "exception",
    "memory", "cpu", "wall", "killed:SIGNAME", "isolation", "launch"."""

    status: Literal["pass", "fail", "timeout", "error"]
    returncode: int | None
    stdout: str
    stderr: str
    duration: float
    reason: str = ""
    truncated: bool = False


@dataclass
class SandboxConfig:
    """Process-wide sandbox policy (``configure(...)`` changes the module default)."""

    drop_uid: bool = field(default=True, metadata={"help": "as root, run as a throw-away uid"})
    uid_base: int = field(default=61000, metadata={"help": "first throw-away uid (no passwd entry needed)"})
    uid_slots: int = field(default=64, metadata={"help": "how many throw-away uids may be leased"})
    require_isolation: bool = field(default=True, metadata={
        "help": "False = run even when namespaces/uid drop fail (counted as isolation_degraded)"})
    python: str | None = field(default=None, metadata={"help": "interpreter; None = sys.executable"})
    max_file_mb: int = field(default=64, metadata={"help": "largest file the code may write (RLIMIT_FSIZE)"})
    lock_dir: str = field(default_factory=tempfile.gettempdir, metadata={"help": "uid lease locks"})

    def __post_init__(self):
        if self.uid_base < 1000 or self.uid_base + self.uid_slots > 65534:
            raise ConfigError(f"SandboxConfig.uid_base/uid_slots must stay within 1000..65533, "
                              f"got {self.uid_base}+{self.uid_slots}")
        if self.max_file_mb <= 0:
            raise ConfigError(f"SandboxConfig.max_file_mb must be > 0, got {self.max_file_mb}")


CONFIG = SandboxConfig()
DEFAULT_LIMITS = Limits()


def configure(**kwargs) -> SandboxConfig:
    """Replace fields of the module-wide ``CONFIG`` (e.g. ``configure(require_isolation=False)``)."""
    global CONFIG
    CONFIG = SandboxConfig(**{**CONFIG.__dict__, **kwargs})
    return CONFIG


# --------------------------------------------------------------------------------------------
# The launcher: runs as a fresh process, sets up isolation, then execs the interpreter.
# It receives one JSON argument (see _launch_spec). Kept dependency-free (stdlib + ctypes).
_LAUNCHER = r'''
import ctypes, json, os, resource, signal, sys
spec = json.loads(sys.argv[1])
MARK = "madopd-sandbox:"
def fail(msg):
    os.write(2, (MARK + " " + msg + "\n").encode()); os._exit(125)
def warn(msg):
    os.write(2, (MARK + " degraded: " + msg + "\n").encode())
libc = ctypes.CDLL(None, use_errno=True)
libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_void_p]
CLONE_NEWNS, CLONE_NEWUSER, CLONE_NEWNET, CLONE_NEWPID = 0x00020000, 0x10000000, 0x40000000, 0x20000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = (
    1, 2, 4, 8, 32, 4096, 16384, 1 << 18)
def mount(src, dst, flags, fstype=None):
    if libc.mount(src.encode() if src else None, dst.encode(),
                  fstype.encode() if fstype else None, flags, None) != 0:
        raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()), dst)
work = spec["workdir"]
stdin_fd = os.open(spec["stdin"] or os.devnull, os.O_RDONLY)  # host path: open before mounts
os.dup2(stdin_fd, 0)
strict = spec["strict"]
is_root = os.geteuid() == 0
flags = (CLONE_NEWNS | CLONE_NEWPID | (0 if spec["network"] else CLONE_NEWNET)
         | (0 if is_root else CLONE_NEWUSER))
uid, gid = os.getuid(), os.getgid()
if libc.unshare(flags) != 0:
    err = os.strerror(ctypes.get_errno())
    if strict: fail("unshare(namespaces) failed: " + err)
    warn("no namespaces (" + err + ")"); flags = 0
elif not is_root:  # inside a new user namespace: map ourselves to root there
    try:
        open("/proc/self/setgroups", "w").write("deny")
        open("/proc/self/uid_map", "w").write("0 %d 1" % uid)
        open("/proc/self/gid_map", "w").write("0 %d 1" % gid)
    except OSError as e:
        if strict: fail("user namespace mapping failed: %s" % e)
        warn("user namespace mapping failed")
mounted = False
if flags & CLONE_NEWNS:
    try:
        mount(None, "/", MS_REC | MS_PRIVATE)
        # Sources are opened first: a shadow mount may hide their host paths.
        work_fd = os.open(work, os.O_PATH | os.O_DIRECTORY)
        py_fd = os.open(spec["python_mount"][0], os.O_PATH | os.O_DIRECTORY) if spec["python_mount"] else None
        # world-writable dirs -> this run's temp dir
        for d in spec["shadow_dirs"]:
            mount("/proc/self/fd/%d" % work_fd, d, MS_BIND | MS_NOSUID | MS_NODEV)
        if py_fd is not None:  # interpreter prefix, read-only, reachable by the sandbox uid
            dst = spec["python_mount"][1]
            mount("/proc/self/fd/%d" % py_fd, dst, MS_BIND | MS_REC)
            mount(None, dst, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID)
            os.close(py_fd)
        os.close(work_fd)
        mounted = True
    except OSError as e:
        if strict: fail("mount setup failed: %s" % e)
        warn("mount setup failed: %s" % e)
env = spec["env"]

def run_user_code():
    if mounted:
        os.chdir(spec["inside"])
    else:  # degraded: the code sees the host's /tmp; point it at its own temp dir at least
        os.chdir(work); env.update(HOME=work, TMPDIR=work)
    for name, soft, hard in spec["rlimits"]:
        try:
            resource.setrlimit(getattr(resource, name), (soft, hard))
        except (ValueError, OSError) as e:
            fail("setrlimit %s failed: %s" % (name, e))
    if spec["uid"] is not None:
        try:
            os.setgroups([]); os.setgid(spec["uid"]); os.setuid(spec["uid"])
        except OSError as e:
            fail("dropping to uid %d failed: %s" % (spec["uid"], e))
        if os.getuid() != spec["uid"] or os.geteuid() != spec["uid"]:
            fail("uid drop did not hold")
    os.execve(spec["argv"][0], spec["argv"], env)

# In a new pid namespace the first child is its init (pid 1): it mounts a fresh /proc (host
# processes and their command lines become invisible), runs the code as pid 2 (init ignores
# default-action signals such as SIGXCPU, the code must not be init), and when the code exits
# init exits too, which makes the kernel kill everything left in the namespace.
rfd, wfd = os.pipe()
init = os.fork()
if init == 0:
    os.close(rfd)
    if flags & CLONE_NEWPID and mounted:
        try:
            mount("proc", "/proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, "proc")
        except OSError as e:
            if strict: fail("mounting /proc failed: %s" % e)
            warn("mounting /proc failed: %s" % e)
    child = os.fork()
    if child == 0:
        os.close(wfd)
        run_user_code()
    status = None
    while status is None:  # reap orphans until the code itself exits
        try:
            pid, st = os.wait()
        except ChildProcessError:
            break
        if pid == child:
            status = st
    os.write(wfd, str(status if status is not None else 1 << 8).encode())
    os._exit(0)
os.close(wfd)
os.waitpid(init, 0)
data = os.read(rfd, 64)
if not data:
    os._exit(124)  # init itself was killed (host timeout): the host knows why
status = int(data)
if os.WIFEXITED(status):
    os._exit(os.WEXITSTATUS(status))
sig = os.WTERMSIG(status)  # relay "killed by signal N" so the host sees returncode -N
resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
signal.signal(sig, signal.SIG_DFL)
os.kill(os.getpid(), sig)
os._exit(128 + sig)
'''

_SHADOW_DIRS = ("/tmp", "/var/tmp", "/dev/shm", "/run/lock")
_INNER_TMP = "/tmp"  # where the run's temp dir appears inside the mount namespace


# --------------------------------------------------------------------------------------------
# uid leases (cross-process safe) and cleanup
def _uid_in_use(uid: int) -> bool:
    """A uid with a passwd entry belongs to someone: never lease it (we kill all its processes)."""
    try:
        pwd.getpwuid(uid)
        return True
    except KeyError:
        return False


class _UidLease:
    """Holds an flock on ``<lock_dir>/madopd-sandbox-uid-<uid>.lock`` while a run uses ``uid``."""

    _local_lock = threading.Lock()

    def __init__(self, cfg: SandboxConfig):
        self.uid, self._fh = None, None
        with self._local_lock:
            for uid in range(cfg.uid_base, cfg.uid_base + cfg.uid_slots):
                if _uid_in_use(uid):
                    continue
                path = os.path.join(cfg.lock_dir, f"madopd-sandbox-uid-{uid}.lock")
                fh = open(path, "a+")
                try:
                    fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    fh.close()
                    continue
                self.uid, self._fh = uid, fh
                return
        raise ConfigError(f"all {cfg.uid_slots} sandbox uids are busy; raise SandboxConfig.uid_slots")

    def release(self) -> None:
        if self._fh is not None:
            fcntl.flock(self._fh, fcntl.LOCK_UN)
            self._fh.close()
            self._fh = None


def pids_of_uid(uid: int) -> list[int]:
    """Live (non-zombie) processes whose real uid is ``uid`` (read from /proc)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/status") as fh:
                fields = dict(line.split(":", 1) for line in fh if ":" in line)
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
        state = fields.get("State", "").split()
        uids = fields.get("Uid", "").split()
        if uids and int(uids[0]) == uid and (not state or state[0] not in ("Z", "X")):
            found.append(int(entry))
    return found


def _kill_uid(uid: int, rounds: int = 50) -> int:
    """SIGKILL every process of ``uid`` until none is left; returns how many were killed."""
    killed = 0
    for _ in range(rounds):
        pids = pids_of_uid(uid)
        if not pids:
            return killed
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
                killed += 1
            except ProcessLookupError:
                pass
        time.sleep(0.01)
    raise RuntimeError(f"processes of sandbox uid {uid} survive SIGKILL: {pids_of_uid(uid)}")


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


# --------------------------------------------------------------------------------------------
def _reachable_by_others(path: str) -> bool:
    """Whether a uid with no rights but 'other' can traverse to ``path`` and read/exec it."""
    path = os.path.realpath(path)
    parts = path.split(os.sep)
    for i in range(2, len(parts)):
        if not os.stat(os.sep.join(parts[:i])).st_mode & stat.S_IXOTH:
            return False
    return bool(os.stat(path).st_mode & stat.S_IROTH)


def _python_layout(cfg: SandboxConfig, drop: bool) -> tuple[str, list[str] | None, dict[str, str]]:
    """(interpreter path inside the sandbox, optional [src, dst] bind mount, extra env)."""
    exe = os.path.realpath(cfg.python or sys.executable)
    shadowed = any(exe.startswith(d + os.sep) for d in _SHADOW_DIRS)  # hidden by a shadow mount
    if not shadowed and (not drop or _reachable_by_others(exe)):
        return exe, None, {}
    prefix = os.path.realpath(sys.base_prefix if cfg.python is None else os.path.dirname(os.path.dirname(exe)))
    if not exe.startswith(prefix + os.sep):
        raise ConfigError(f"interpreter {exe} is not under its prefix {prefix}; set SandboxConfig.python")
    inner = os.path.join(_INNER_TMP, ".python")
    env = {"LD_LIBRARY_PATH": os.path.join(inner, "lib")}  # libpython next to the prefix
    return os.path.join(inner, os.path.relpath(exe, prefix)), [prefix, inner], env


def _reader(stream, limit: int, out: list) -> None:
    """Keep the first ``limit`` bytes, drain and count the rest (the child never blocks)."""
    kept, total = bytearray(), 0
    while True:
        chunk = stream.read(65536)
        if not chunk:
            break
        total += len(chunk)
        if len(kept) < limit:
            kept += chunk[: limit - len(kept)]
    out.extend([bytes(kept), total > limit])


def _classify(rc: int | None, stderr: str, wall_killed: bool, setup_failed: bool) -> tuple[str, str]:
    if setup_failed:
        return "error", "isolation"
    if wall_killed:
        return "timeout", "wall"
    if rc == 0:
        return "pass", ""
    if rc is not None and rc < 0:
        sig = -rc
        if sig in (signal.SIGXCPU, signal.SIGKILL) and "MemoryError" not in stderr:
            # RLIMIT_CPU: SIGXCPU at the soft limit, SIGKILL at the hard limit.
            return ("timeout", "cpu") if sig == signal.SIGXCPU else ("fail", "killed:SIGKILL")
        return "fail", f"killed:{signal.Signals(sig).name}"
    if "MemoryError" in stderr:
        return "fail", "memory"
    if "Traceback (most recent call last)" in stderr:
        return "fail", "exception"
    return "fail", "exit"


def run_code(source: str, *, limits: Limits = DEFAULT_LIMITS, stdin: str | None = None,
             files: dict[str, str] | None = None, config: SandboxConfig | None = None) -> RunResult:
    """Run ``source`` as ``main.py`` in a fresh temp dir; pass == exit code 0.

    ``files`` are extra text files written next to it (relative paths, no ``..``).
    ``config`` overrides the module-wide ``CONFIG`` for this call.
    """
    cfg = config or CONFIG
    start = time.monotonic()
    is_root = os.geteuid() == 0
    drop = is_root and cfg.drop_uid
    lease = _UidLease(cfg) if drop else None
    workdir = tempfile.mkdtemp(prefix="madopd-sbx-")
    try:
        return _run_in(workdir, source, limits, stdin, files or {}, cfg, lease, start)
    finally:
        try:
            if lease is not None:
                n = _kill_uid(lease.uid)
                if n:
                    _count("leftover_processes_killed", n)
        finally:
            if lease is not None:
                lease.release()
            shutil.rmtree(workdir, ignore_errors=True)


def _run_in(workdir, source, limits, stdin, files, cfg, lease, start) -> RunResult:
    uid = lease.uid if lease is not None else None
    exe, python_mount, extra_env = _python_layout(cfg, uid is not None)
    code_dir = workdir
    for rel, text in {"main.py": source, **files}.items():
        if os.path.isabs(rel) or ".." in rel.split("/"):
            raise ConfigError(f"run_code(files=...): path must be relative without '..', got {rel!r}")
        path = os.path.join(code_dir, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as fh:
            fh.write(text)
    stdin_path = None
    if stdin is not None:
        stdin_path = os.path.join(workdir, ".stdin")
        with open(stdin_path, "w") as fh:
            fh.write(stdin)
    if python_mount is not None:
        os.mkdir(os.path.join(workdir, ".python"), 0o755)
    if uid is not None:  # the run's uid owns its temp dir (and nothing else)
        for root, dirs, fnames in os.walk(workdir):
            for name in [*dirs, *fnames]:
                if name != ".python":
                    os.chown(os.path.join(root, name), uid, uid)
        os.chown(workdir, uid, uid)
        os.chmod(workdir, 0o700)
    shadow = [d for d in _SHADOW_DIRS if os.path.isdir(d)]
    inside = _INNER_TMP  # the temp dir as the code sees it (bind-mounted over /tmp)
    cpu = max(1, math.ceil(limits.cpu_seconds))
    mem = int(limits.memory_mb) * 1024 * 1024
    rlimits = [("RLIMIT_CPU", cpu, cpu + 1), ("RLIMIT_AS", mem, mem),
               ("RLIMIT_FSIZE", cfg.max_file_mb << 20, cfg.max_file_mb << 20), ("RLIMIT_CORE", 0, 0)]
    if uid is not None:  # per real uid: exact only for a throw-away uid (root ignores it)
        rlimits.append(("RLIMIT_NPROC", int(limits.max_processes), int(limits.max_processes)))
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": inside, "TMPDIR": inside,
           "LANG": "C.UTF-8", **extra_env}
    spec = {
        "workdir": workdir, "inside": inside, "strict": cfg.require_isolation,
        "network": bool(limits.network), "shadow_dirs": shadow, "python_mount": python_mount,
        "rlimits": rlimits, "uid": uid,
        "stdin": stdin_path,
        "argv": [exe, "-E", "-s", "-S", "-B", "main.py"], "env": env,
    }
    try:
        proc = subprocess.Popen(
            [sys.executable, "-I", "-S", "-c", _LAUNCHER, json.dumps(spec)],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}, cwd=workdir,
            start_new_session=True, close_fds=True)
    except OSError as exc:
        return RunResult("error", None, "", f"{_MARK} launch failed: {exc}", time.monotonic() - start,
                         reason="launch")
    outs: list[list] = [[], []]
    readers = [threading.Thread(target=_reader, args=(s, limits.max_output_bytes, o), daemon=True)
               for s, o in ((proc.stdout, outs[0]), (proc.stderr, outs[1]))]
    for t in readers:
        t.start()
    wall_killed = False
    try:
        proc.wait(timeout=limits.wall_seconds)
    except subprocess.TimeoutExpired:
        wall_killed = True
        _count("timeouts_wall")
        _kill_group(proc.pid)
        if uid is not None:
            _kill_uid(uid)
        proc.wait()
    _kill_group(proc.pid)  # background children left in the group (pipes close only then)
    if uid is not None:
        leftover = _kill_uid(uid)  # incl. children that left the group with setsid
        if leftover:
            _count("leftover_processes_killed", leftover)
    for t in readers:
        t.join(timeout=5)
    out_b, out_trunc = outs[0] if outs[0] else (b"", False)
    err_b, err_trunc = outs[1] if outs[1] else (b"", False)
    stderr = err_b.decode("utf-8", "replace")
    setup_failed = proc.returncode == SETUP_FAILED_EXIT and _MARK in stderr
    if f"{_MARK} degraded" in stderr:
        _count("isolation_degraded")
    truncated = bool(out_trunc or err_trunc)
    if truncated:
        _count("truncated_output")
    status, reason = _classify(proc.returncode, stderr, wall_killed, setup_failed)
    _count(f"status/{status}")
    return RunResult(status, proc.returncode, out_b.decode("utf-8", "replace"), stderr,
                     time.monotonic() - start, reason=reason, truncated=truncated)


def run_many(sources: list[str], *, limits: Limits = DEFAULT_LIMITS, workers: int = 2,
             progress: bool = False, config: SandboxConfig | None = None,
             files: list[dict[str, str] | None] | None = None) -> list[RunResult]:
    """``run_code`` over many sources with ``workers`` concurrent runs; results keep the order.

    ``files[i]`` (optional) are extra files for source i, as in ``run_code``.
    """
    if workers < 1:
        raise ConfigError(f"run_many(workers=...) must be >= 1, got {workers}")
    if files is not None and len(files) != len(sources):
        raise ConfigError(f"run_many: {len(sources)} sources but {len(files)} files entries")
    bar = None
    if progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=len(sources), desc="sandbox", unit="run")

    def one(i: int) -> RunResult:
        res = run_code(sources[i], limits=limits, config=config,
                       files=files[i] if files is not None else None)
        if bar is not None:
            bar.update(1)
        return res

    try:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            return list(pool.map(one, range(len(sources))))
    finally:
        if bar is not None:
            bar.close()


def inner_path(host_path: str, config: SandboxConfig | None = None) -> str:
    """Where a host path under the interpreter's prefix appears inside the sandbox (read-only).

    Other host paths are seen unchanged (subject to the sandbox uid's permissions).
    """
    cfg = config or CONFIG
    drop = os.geteuid() == 0 and cfg.drop_uid
    _, mount, _ = _python_layout(cfg, drop)
    real = os.path.realpath(host_path)
    if mount is not None and (real == mount[0] or real.startswith(mount[0] + os.sep)):
        return os.path.join(mount[1], os.path.relpath(real, mount[0]))
    return real


def sandbox_info(config: SandboxConfig | None = None) -> dict:
    """What isolation this host can give (for logs and run summaries)."""
    cfg = config or CONFIG
    drop = os.geteuid() == 0 and cfg.drop_uid
    exe, mount, _ = _python_layout(cfg, drop)
    return {"root": os.geteuid() == 0, "drop_uid": drop, "python": exe,
            "python_mount": mount, "require_isolation": cfg.require_isolation,
            "counters": dict(COUNTERS)}
