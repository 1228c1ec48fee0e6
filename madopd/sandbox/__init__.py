"""Run untrusted (model-written) Python code under bubblewrap, with per-run cgroup caps.

How a run is contained (Linux; the threat model and measurements are in docs/sandbox.md):

* **bubblewrap** (Debian package ``bubblewrap``, the sandbox behind Flatpak) starts the code in
  new user, pid, network, IPC, UTS, mount and cgroup namespaces (``--unshare-all
  --unshare-user``), with ``--die-with-parent`` (when madopd dies, even by SIGKILL, the whole
  sandbox is killed), ``--new-session`` (no terminal to inject into), ``--cap-drop ALL``,
  ``--disable-userns``, no new privileges, and a seccomp filter (``seccomp.py``).
* **The filesystem** is a fresh tmpfs root holding only, read-only: the interpreter's prefix,
  base prefix and site-packages (wherever they live, /tmp included — they are bound at their own
  paths, after the private /tmp is mounted), the system's shared libraries (/usr/lib, /lib*) and
  /etc/ld.so.cache; plus a private writable /tmp (the work dir, also HOME and TMPDIR) and
  /dev/shm, a minimal /dev and a /proc of the run's own pid namespace. The checkout, /home,
  /root, /run and every host socket are absent. Files go in through memfds (``--file FD``), so
  the host never creates a temp dir that a killed madopd could leave behind.
* **Caps**: a per-run cgroup (``cgroup.py``, below madopd's own cgroup; a kill at its memory
  cap is labelled ``memory``) caps the total memory of all the run's processes
  (shared memory, memfd and tmpfs pages included) and the number of processes/threads; rlimits
  (``prlimit``) add CPU seconds per process (SIGXCPU, then SIGKILL one second later), address
  space per process (a clean ``MemoryError``), file size and no core dumps; the host adds a
  wall-clock limit.
* **Uids**: the code runs as uid 1000 inside its own user namespace, mapped to the caller's uid
  with no capabilities. There is no uid pool, so callers cannot collide; processes are found and
  killed through the run's cgroup and pid namespace, never by uid.
* **Environment**: PATH, HOME, TMPDIR, LANG only (``--clearenv``).
* **A result channel** (``channel=True``, used by ``madopd.sandbox.verify``): a pipe whose write
  end only the run's pid 1 holds, with a per-run nonce read once from another pipe. A channel
  program is trusted code, so it runs as ``python -I -S -B``: its sys.path holds nothing the
  sandbox can write (untrusted programs run as ``-E -s -S -B``, their own directory first).
* **Seccomp** also refuses sockets of address families the network namespace does not isolate
  (AF_VSOCK, AF_PACKET, ...) and every syscall newer than the reviewed table (``seccomp.py``).

If bwrap is missing, ``run_code`` raises ``SandboxUnavailable`` naming the package and the install
line. If a protection is unavailable on this host (no user namespaces, no usable cgroups, no
seccomp for this architecture), the run is refused (``status="error"``, ``reason="isolation"``)
unless ``SandboxConfig.require_isolation`` is False; then it runs without it and the result says so
(``RunResult.isolation = "degraded:no-cgroup"``, ``COUNTERS["isolation_degraded"]``).

API (others depend on it)::

    run_code(source, *, limits=Limits(), stdin=None, files=None, config=None, channel=False)
        -> RunResult  # pass == exit 0
    run_many(sources, *, limits=Limits(), workers=2, progress=False, files=None) -> list[RunResult]
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Literal

from madopd.errors import ConfigError, MadopdError
from madopd.sandbox import cgroup
from madopd.sandbox.counters import COUNTERS
from madopd.sandbox.counters import count as _count
from madopd.sandbox.layout import bwrap_path, filesystem_args, python_executable, visible_path
from madopd.sandbox.seccomp import build_filter

SETUP_FAILED_EXIT = 125  # the launcher's exit code when it could not join the run's cgroup
_MARK = "madopd-sandbox:"  # prefix of launcher diagnostics on stderr
_WORK = "/tmp"  # the work dir inside the sandbox (a private tmpfs)
_INNER_UID = 1000


class SandboxUnavailable(MadopdError, RuntimeError):
    """bubblewrap is not installed (or not runnable) on this host."""


@dataclass(frozen=True)
class Limits:
    """Per-run resource limits."""

    cpu_seconds: float = field(default=5.0, metadata={"help": "CPU time per process (RLIMIT_CPU)"})
    wall_seconds: float = field(default=10.0, metadata={"help": "wall clock; the whole run is killed"})
    memory_mb: int = field(default=1024, metadata={
        "help": "memory of the whole run (cgroup: all processes, shm, memfd, tmpfs) and address "
                "space per process (RLIMIT_AS)"})
    max_processes: int = field(default=16, metadata={"help": "processes+threads of the run (cgroup pids)"})
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
    "memory", "cpu", "wall", "killed:SIGNAME", "isolation", "launch". ``isolation`` is "full" or
    "degraded:<missing protections>"; ``channel`` is what the run's pid 1 wrote on the result
    channel (nonce checked; None when absent, forged or not requested)."""

    status: Literal["pass", "fail", "timeout", "error"]
    returncode: int | None
    stdout: str
    stderr: str
    duration: float
    reason: str = ""
    truncated: bool = False
    isolation: str = "full"
    channel: bytes | None = None


@dataclass
class SandboxConfig:
    """Process-wide sandbox policy (``configure(...)`` changes the module default)."""

    require_isolation: bool = field(default=True, metadata={
        "help": "False = run even without user namespaces, cgroups or seccomp (labelled "
                "'degraded:...' in every result and counted as isolation_degraded)"})
    python: str | None = field(default=None, metadata={"help": "interpreter; None = sys.executable"})
    max_file_mb: int = field(default=64, metadata={"help": "largest file the code may write (RLIMIT_FSIZE)"})
    tmpfs_mb: int = field(default=256, metadata={"help": "size of the private /tmp and /dev/shm each"})

    def __post_init__(self):
        for name in ("max_file_mb", "tmpfs_mb"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"SandboxConfig.{name} must be > 0, got {getattr(self, name)}")


CONFIG = SandboxConfig()
DEFAULT_LIMITS = Limits()


def configure(**kwargs) -> SandboxConfig:
    """Replace fields of the module-wide ``CONFIG`` (e.g. ``configure(require_isolation=False)``)."""
    global CONFIG
    CONFIG = SandboxConfig(**{**CONFIG.__dict__, **kwargs})
    return CONFIG


# --------------------------------------------------------------------------------------------
# What this host can give (probed once per process and cached)
_PROBE: dict = {}
_PROBE_LOCK = threading.Lock()


def _probe() -> dict:
    """{"bwrap": path, "userns": bool, "userns_error": str, "cgroup": Backend|None, "seccomp": bool}."""
    with _PROBE_LOCK:
        if _PROBE:
            return _PROBE
        bwrap = bwrap_path()
        if bwrap is None:
            raise SandboxUnavailable(
                "madopd.sandbox needs bubblewrap (the `bwrap` program, Debian/Ubuntu package "
                "`bubblewrap`): install it with `apt-get install -y bubblewrap` (or run "
                "`bash .ci/setup_sandbox.sh`)")
        probe = subprocess.run([bwrap, "--unshare-all", "--unshare-user", "--ro-bind", "/", "/",
                                "--", "/bin/true"], capture_output=True, text=True, timeout=30)
        _PROBE.update(bwrap=bwrap, userns=probe.returncode == 0,
                      userns_error=probe.stderr.strip()[-300:], cgroup=cgroup.detect(),
                      seccomp=build_filter() is not None)
        return _PROBE


def _missing(probe: dict) -> list[str]:
    return [name for name, ok in (("no-userns", probe["userns"]), ("no-cgroup", probe["cgroup"]),
                                  ("no-seccomp", probe["seccomp"])) if not ok]


def _memfd(name: str, data: bytes) -> int:
    fd = os.memfd_create(name, os.MFD_CLOEXEC)
    os.write(fd, data) if len(data) < (1 << 16) else _write_all(fd, data)
    os.lseek(fd, 0, os.SEEK_SET)
    return fd


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


# --------------------------------------------------------------------------------------------
def _bwrap_argv(probe: dict, cfg: SandboxConfig, limits: Limits, files: dict[str, int],
                seccomp_fd: int | None, as_pid_1: bool) -> list[str]:
    """The bwrap command line (options only; the program follows ``--``)."""
    argv = [probe["bwrap"], "--unshare-all", "--die-with-parent", "--new-session",
            "--cap-drop", "ALL", "--hostname", "sandbox"]
    if probe["userns"]:
        argv += ["--unshare-user", "--disable-userns", "--uid", str(_INNER_UID), "--gid", str(_INNER_UID)]
    if limits.network:
        argv.append("--share-net")
    if as_pid_1:
        argv.append("--as-pid-1")
    size = str(cfg.tmpfs_mb << 20)
    argv += ["--proc", "/proc", "--dev", "/dev", "--size", size, "--tmpfs", "/dev/shm",
             "--size", size, "--tmpfs", _WORK]
    argv += filesystem_args(cfg.python)  # read-only interpreter, packages, libraries
    made = set()
    for rel, fd in files.items():
        parts = rel.split("/")[:-1]
        for i in range(1, len(parts) + 1):
            sub = "/".join(parts[:i])
            if sub not in made:
                made.add(sub)
                argv += ["--dir", f"{_WORK}/{sub}"]
        argv += ["--file", str(fd), f"{_WORK}/{rel}"]
    argv += ["--remount-ro", "/"]  # bwrap's root tmpfs (mount points): /tmp and /dev/shm stay writable
    if seccomp_fd is not None:
        argv += ["--seccomp", str(seccomp_fd)]
    argv += ["--chdir", _WORK, "--clearenv"]
    for key, value in (("PATH", "/usr/local/bin:/usr/bin:/bin"), ("HOME", _WORK),
                       ("TMPDIR", _WORK), ("LANG", "C.UTF-8")):
        argv += ["--setenv", key, value]
    return argv


def _rlimit_argv(cfg: SandboxConfig, limits: Limits) -> list[str]:
    cpu = max(1, int(-(-limits.cpu_seconds // 1)))
    mem = int(limits.memory_mb) << 20
    return ["prlimit", f"--cpu={cpu}:{cpu + 1}", f"--as={mem}:{mem}",
            f"--fsize={cfg.max_file_mb << 20}", "--core=0", "--"]


# The launcher: joins the run's cgroups (so every later process is born inside), then execs
# prlimit -> bwrap. A shell, not Python: ~1 ms, and no Python between fork and exec in the host.
_JOIN = ('while [ "$1" != "--" ]; do echo $$ > "$1" || { echo "' + _MARK + ' cannot join '
         'cgroup $1" >&2; exit 125; }; shift; done; shift; exec "$@"')


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


def _fd_reader(fd: int, limit: int, out: list) -> None:
    with os.fdopen(fd, "rb", buffering=0) as fh:
        _reader(fh, limit, out)


def _classify(rc: int | None, stderr: str, wall_killed: bool, setup_failed: bool,
              oom: bool) -> tuple[str, str]:
    if setup_failed:
        return "error", "isolation"
    if wall_killed:
        return "timeout", "wall"
    if rc == 0:
        return "pass", ""
    if oom or "MemoryError" in stderr:
        return "fail", "memory"
    sig = rc - 128 if rc is not None and 128 < rc < 128 + 65 else (-rc if rc is not None and rc < 0 else 0)
    if sig:
        if sig == signal.SIGXCPU:
            return "timeout", "cpu"
        try:
            return "fail", f"killed:{signal.Signals(sig).name}"
        except ValueError:
            return "fail", f"killed:{sig}"
    if "Traceback (most recent call last)" in stderr:
        return "fail", "exception"
    return "fail", "exit"


def run_code(source: str, *, limits: Limits = DEFAULT_LIMITS, stdin: str | None = None,
             files: dict[str, str] | None = None, config: SandboxConfig | None = None,
             channel: bool = False) -> RunResult:
    """Run ``source`` as ``/tmp/main.py`` inside the sandbox; pass == exit code 0.

    ``files`` are extra text files written next to it (relative paths, no ``..``).
    ``config`` overrides the module-wide ``CONFIG`` for this call. ``channel=True`` makes the
    program pid 1 of its namespace and hands it ``--madopd-channel RESULT_FD NONCE_FD``
    (see ``madopd.sandbox.verify``); what it writes after the nonce is ``RunResult.channel``.
    """
    cfg = config or CONFIG
    start = time.monotonic()
    texts = {"main.py": source, **(files or {})}
    for rel in texts:
        if os.path.isabs(rel) or ".." in rel.split("/") or not rel or rel.endswith("/"):
            raise ConfigError(f"run_code(files=...): path must be relative without '..', got {rel!r}")
    probe = _probe()
    missing = _missing(probe)
    isolation = "full" if not missing else "degraded:" + "+".join(missing)
    if missing and cfg.require_isolation:
        msg = (f"{_MARK} refusing to run without {', '.join(missing)} (set SandboxConfig."
               f"require_isolation=False to allow a labelled weaker mode)"
               + (f"; bwrap said: {probe['userns_error']}" if not probe["userns"] else ""))
        _count("status/error")
        return RunResult("error", None, "", msg, time.monotonic() - start, reason="isolation",
                         isolation=isolation)
    if missing:
        _count("isolation_degraded")
        for m in missing:
            _count(f"degraded/{m}")
    fds: list[int] = []
    try:
        return _run(texts, stdin, limits, cfg, probe, channel, fds, start, isolation)
    finally:
        for fd in fds:
            try:
                os.close(fd)
            except OSError:
                pass


def _run(texts, stdin, limits, cfg, probe, channel, fds, start, isolation) -> RunResult:
    file_fds = {}
    for rel, text in texts.items():
        file_fds[rel] = _memfd("madopd-file", text.encode())
        fds.append(file_fds[rel])
    stdin_fd = _memfd("madopd-stdin", (stdin or "").encode())
    fds.append(stdin_fd)
    filt = build_filter() if probe["seccomp"] else None
    seccomp_fd = _memfd("madopd-seccomp", filt) if filt is not None else None
    if seccomp_fd is not None:
        fds.append(seccomp_fd)
    # A channel program is trusted (the verifier's harness, BFCL's executors): -I keeps /tmp (its
    # script dir, the candidate's writable work dir) off sys.path and ignores PYTHON* variables.
    flags = ["-I", "-S", "-B"] if channel else ["-E", "-s", "-S", "-B"]
    prog = [python_executable(cfg.python), *flags, "main.py"]
    nonce, res_r = None, None
    if channel:
        nonce = secrets.token_hex(16)
        res_r, res_w = os.pipe()
        non_r, non_w = os.pipe()
        fds += [res_w, non_r]  # closed in the host right after the launch
        os.write(non_w, nonce.encode())
        os.close(non_w)
        prog += ["--madopd-channel", str(res_w), str(non_r)]
    group = None
    if probe["cgroup"] is not None:
        extra = 2  # bwrap's monitor, and its init (or, with channel=True, the verifier's harness)
        group = cgroup.RunGroup(probe["cgroup"], int(limits.memory_mb) << 20,
                                int(limits.max_processes) + extra)
    argv = (["/bin/sh", "-c", _JOIN, "sh", *(group.procs_files if group else []), "--"]
            + _rlimit_argv(cfg, limits)
            + _bwrap_argv(probe, cfg, limits, file_fds, seccomp_fd, as_pid_1=channel) + ["--"] + prog)
    try:
        return _supervise(argv, stdin_fd, fds, limits, group, res_r, nonce, start, isolation)
    finally:
        if group is not None:
            left = group.close()
            if left:
                _count("leftover_processes_killed", left)


def _supervise(argv, stdin_fd, fds, limits, group, res_r, nonce, start, isolation) -> RunResult:
    pass_fds = [fd for fd in fds if fd != stdin_fd]
    for fd in pass_fds:
        os.set_inheritable(fd, True)
    try:
        proc = subprocess.Popen(argv, stdin=stdin_fd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"},
                                cwd="/", start_new_session=True, pass_fds=pass_fds)
    except OSError as exc:
        if res_r is not None:
            os.close(res_r)
        return RunResult("error", None, "", f"{_MARK} launch failed: {exc}",
                         time.monotonic() - start, reason="launch", isolation=isolation)
    for fd in list(fds):  # the sandbox holds its copies now; the host's go at once
        os.close(fd)
        fds.remove(fd)
    outs: list[list] = [[], [], []]
    readers = [threading.Thread(target=_reader, args=(s, limits.max_output_bytes, o), daemon=True)
               for s, o in ((proc.stdout, outs[0]), (proc.stderr, outs[1]))]
    if res_r is not None:
        readers.append(threading.Thread(target=_fd_reader, args=(res_r, 1 << 24, outs[2]), daemon=True))
    for t in readers:
        t.start()
    wall_killed = False
    try:
        proc.wait(timeout=limits.wall_seconds)
    except subprocess.TimeoutExpired:
        wall_killed = True
        _count("timeouts_wall")
    _kill_group(proc.pid)  # bwrap's monitor: --die-with-parent takes the namespace with it
    oom = group is not None and group.oom_kills() > 0  # before close(): the count goes with it
    if group is not None:
        group_killed = group.close()  # anything that is still running, whatever its session
        if group_killed and not wall_killed:
            _count("leftover_processes_killed", group_killed)
    proc.wait()
    for t in readers:
        t.join(timeout=5)
    out_b, out_trunc = outs[0] if outs[0] else (b"", False)
    err_b, err_trunc = outs[1] if outs[1] else (b"", False)
    stderr = err_b.decode("utf-8", "replace")
    rc = proc.returncode
    setup_failed = (rc == SETUP_FAILED_EXIT and _MARK in stderr) or (rc == 1 and stderr.startswith("bwrap:"))
    truncated = bool(out_trunc or err_trunc)
    if truncated:
        _count("truncated_output")
    status, reason = _classify(rc, stderr, wall_killed, setup_failed, oom)
    _count(f"status/{status}")
    return RunResult(status, rc, out_b.decode("utf-8", "replace"), stderr, time.monotonic() - start,
                     reason=reason, truncated=truncated, isolation=isolation,
                     channel=_read_channel(outs[2], nonce) if res_r is not None else None)


def _read_channel(out: list, nonce: str) -> bytes | None:
    data = out[0] if out else b""
    head, sep, body = data.partition(b"\n")
    if not data:
        _count("channel/missing")
        return None
    if not sep or head != nonce.encode() or (out and out[1]):
        _count("channel/forged_or_truncated")
        return None
    return body


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def run_many(sources: list[str], *, limits: Limits = DEFAULT_LIMITS, workers: int = 2,
             progress: bool = False, config: SandboxConfig | None = None,
             files: list[dict[str, str] | None] | None = None, channel: bool = False) -> list[RunResult]:
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
        res = run_code(sources[i], limits=limits, config=config, channel=channel,
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
    """Where a host path under the interpreter's prefix or site-packages appears inside the
    sandbox (bound read-only at the same path). ConfigError when the sandbox cannot see it."""
    return visible_path(host_path, (config or CONFIG).python)


def sandbox_info(config: SandboxConfig | None = None) -> dict:
    """What isolation this host can give (for logs and run summaries)."""
    cfg = config or CONFIG
    probe = _probe()
    backend = probe["cgroup"]
    return {"bwrap": probe["bwrap"], "userns": probe["userns"],
            "cgroup": f"v{backend.version}" if backend else None, "seccomp": probe["seccomp"],
            "cgroup_nested": backend.nested if backend else None,
            "missing": _missing(probe), "require_isolation": cfg.require_isolation,
            "python": python_executable(cfg.python), "binds": filesystem_args(cfg.python),
            "counters": dict(COUNTERS)}


