"""The sandbox's filesystem view: which host paths are bound (read-only) and where.

Only what the interpreter needs to start and import its packages is visible:

* the interpreter's prefix, exec prefix, base prefix(es) and site-packages directories (a venv
  and the Python it was made from), bound at their own host paths, so paths inside the sandbox
  equal paths outside and a venv under /tmp works (the binds come after the private /tmp);
* the shared libraries of the system (/usr/lib, /usr/lib64, /lib*, or their usrmerge symlinks)
  and /etc/ld.so.cache;
* nothing else: no checkout, no /home or /root beyond the bound prefix, no /run (host sockets),
  no /etc beyond the loader cache, no /var.

A prefix that is ``/`` or that contains the project checkout would expose it: refused with a
ConfigError (point ``SandboxConfig.python`` at an interpreter installed elsewhere).
"""

from __future__ import annotations

import functools
import os
import shutil
import site
import sys
import sysconfig
from pathlib import Path

from madopd.errors import ConfigError

_SYSTEM_LIBS = ("/usr/lib", "/usr/lib64", "/usr/lib32", "/lib", "/lib64", "/lib32")
_CHECKOUT = str(Path(__file__).resolve().parents[2])  # the directory holding the madopd package


def bwrap_path() -> str | None:
    return shutil.which("bwrap", path="/usr/bin:/bin:/usr/local/bin:/usr/sbin")


def python_executable(python: str | None) -> str:
    """The interpreter the sandbox runs (its path is valid inside: the prefix is bound there)."""
    return os.path.abspath(python or sys.executable)


def _under(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


@functools.lru_cache(maxsize=8)
def _binds(python: str | None) -> tuple[str, ...]:
    exe = python_executable(python)
    if python is None:
        roots = {sys.prefix, sys.exec_prefix, sys.base_prefix, sys.base_exec_prefix,
                 *site.getsitepackages(), sysconfig.get_paths()["purelib"],
                 sysconfig.get_paths()["platlib"]}
        user = site.getusersitepackages()
        if isinstance(user, str) and os.path.isdir(user):
            roots.add(user)
    else:
        roots = set()
    # the interpreter binary and every hop of its symlink chain (venv -> base python)
    hop = exe
    for _ in range(16):
        roots.add(str(Path(hop).parent.parent))  # <prefix>/bin/python -> <prefix>
        if not os.path.islink(hop):
            break
        hop = os.path.join(os.path.dirname(hop), os.readlink(hop))
    real = {os.path.realpath(r) for r in roots if r and os.path.isdir(r)}
    for r in real:
        if r == "/":
            raise ConfigError(f"the interpreter {exe} has prefix '/': binding it would expose "
                              "the whole host; set SandboxConfig.python to one installed elsewhere")
        if _under(_CHECKOUT, r) and r not in ("/usr", "/usr/local"):
            raise ConfigError(f"the interpreter prefix {r} contains the project checkout "
                              f"{_CHECKOUT}; use a Python or venv installed outside it")
    # drop entries inside another entry (ro-bind of the parent covers them)
    keep = sorted(r for r in real if not any(o != r and _under(r, o) for o in real))
    return tuple(keep)


@functools.lru_cache(maxsize=8)
def filesystem_args(python: str | None) -> list[str]:
    """bwrap options that build the read-only view (after /tmp and /dev/shm are mounted)."""
    args: list[str] = []
    for lib in _SYSTEM_LIBS:
        if os.path.islink(lib):
            args += ["--symlink", os.readlink(lib), lib]
        elif os.path.isdir(lib):
            args += ["--ro-bind", lib, lib]
    args += ["--ro-bind-try", "/etc/ld.so.cache", "/etc/ld.so.cache"]
    for path in sorted(_binds(python), key=lambda p: p.count("/")):
        if not any(_under(path, lib) for lib in _SYSTEM_LIBS if os.path.isdir(lib) and not os.path.islink(lib)):
            args += ["--ro-bind", path, path]
    exe = python_executable(python)
    if not any(_under(os.path.realpath(exe), b) for b in _binds(python)):
        raise ConfigError(f"the interpreter {exe} is not under any bound prefix; set SandboxConfig.python")
    return args


def visible_path(host_path: str, python: str | None) -> str:
    """``host_path`` as the sandbox sees it (the same path), or ConfigError if it is not bound."""
    real = os.path.realpath(host_path)
    roots = [*_binds(python), *(lib for lib in _SYSTEM_LIBS if os.path.isdir(lib))]
    if not any(_under(real, r) for r in roots):
        raise ConfigError(f"{host_path} is not visible inside the sandbox (only the interpreter's "
                          f"prefix and site-packages are bound: {list(_binds(python))})")
    return real
