"""The seccomp filter (issue 23 item 7): reviewed against the 6.18 syscall table, address
families the network namespace does not isolate refused, future syscalls refused.

Two ways: a small classic-BPF interpreter runs the exact program on crafted ``seccomp_data``
(every branch, independent of the host kernel), and live calls inside the sandbox."""

from __future__ import annotations

import errno
import struct
import textwrap

import pytest

from madopd.sandbox import run_code
from madopd.sandbox.seccomp import DENIED_X86_64, REVIEWED_UP_TO, build_filter

ALLOW, KILL_PROCESS, ERRNO = 0x7FFF0000, 0x80000000, 0x00050000
ARCH_X86_64, ARCH_I386 = 0xC000003E, 0x40000003


def run_bpf(nr: int, args=(0,) * 6, arch: int = ARCH_X86_64) -> int:
    """Evaluate the filter on one syscall: the classic-BPF subset the builder emits."""
    args = [a & (2**64 - 1) for a in args] + [0] * (6 - len(args))
    data = struct.pack("<iIQ6Q", nr, arch, 0, *args)
    prog = build_filter("x86_64")
    ins = [struct.unpack("=HBBI", prog[i:i + 8]) for i in range(0, len(prog), 8)]
    pc, acc = 0, 0
    for _ in range(10_000):
        code, jt, jf, k = ins[pc]
        if code == 0x20:  # LD W ABS
            acc = struct.unpack_from("<I", data, k)[0]
            pc += 1
        elif code == 0x06:  # RET K
            return k
        elif code in (0x15, 0x35, 0x45):  # JEQ, JGE, JSET
            hit = {0x15: acc == k, 0x35: acc >= k, 0x45: bool(acc & k)}[code]
            pc += 1 + (jt if hit else jf)
        else:
            raise AssertionError(f"unexpected opcode {code:#x}")
    raise AssertionError("the program does not terminate")


NEW_IN_REVIEW = {"statmount": 457, "listmount": 458, "open_tree_attr": 467, "listns": 470,
                 "memfd_secret": 447, "pidfd_getfd": 438, "process_madvise": 440,
                 "process_mrelease": 448, "quotactl_fd": 443, "move_pages": 279,
                 "migrate_pages": 256, "clock_settime": 227, "clock_adjtime": 305,
                 "fanotify_init": 300, "lsm_set_self_attr": 460}
# every mount-API and namespace call, whatever its age
MOUNTS = {"mount": 165, "umount2": 166, "pivot_root": 155, "open_tree": 428, "move_mount": 429,
          "fsopen": 430, "fsconfig": 431, "fsmount": 432, "fspick": 433, "mount_setattr": 442,
          "setns": 308, "unshare": 272}


@pytest.mark.parametrize("name", sorted({**NEW_IN_REVIEW, **MOUNTS}))
def test_reviewed_calls_are_denied(name):
    nr = {**NEW_IN_REVIEW, **MOUNTS}[name]
    assert DENIED_X86_64[name] == nr
    assert run_bpf(nr) == ERRNO | errno.EPERM


def test_syscalls_newer_than_the_review_are_refused_and_ordinary_ones_allowed():
    assert run_bpf(REVIEWED_UP_TO + 1) == ERRNO | errno.ENOSYS
    assert run_bpf(511) == ERRNO | errno.ENOSYS
    for nr in (0, 1, 2, 9, 39, 57, 59, 60, 231, 257, 318, 332, 434, 439, 462, 468):
        assert run_bpf(nr) == ALLOW, nr  # read write open mmap getpid fork execve exit ...
    assert run_bpf(0x40000000 | 1) == ERRNO | errno.EPERM  # x32
    assert run_bpf(1, arch=ARCH_I386) == KILL_PROCESS
    assert run_bpf(56, args=(0x10000000 | 17,)) == ERRNO | errno.EPERM  # clone(CLONE_NEWUSER)
    assert run_bpf(56, args=(0x01200011,)) == ALLOW  # fork's clone flags
    assert run_bpf(435) == ERRNO | errno.ENOSYS  # clone3


@pytest.mark.parametrize("call", [41, 53])
def test_only_namespaced_address_families_can_open_sockets(call):
    refused = ERRNO | errno.EAFNOSUPPORT
    for family in (1, 2, 10):  # AF_UNIX, AF_INET, AF_INET6
        assert run_bpf(call, args=(family, 1, 0)) == ALLOW, family
    assert run_bpf(call, args=(16, 3, 0)) == ALLOW  # AF_NETLINK / NETLINK_ROUTE (getaddrinfo)
    assert run_bpf(call, args=(16, 3, 9)) == refused  # NETLINK_AUDIT
    for family in (40, 17, 38, 31, 0, 3, 4, 5, 9, 15, 44, 45, 46, 255, 2**32 + 40):
        assert run_bpf(call, args=(family, 1, 0)) == refused, family  # VSOCK, PACKET, ALG, ...


def test_live_vsock_and_new_calls_are_refused_inside_the_sandbox():
    src = textwrap.dedent(f"""
        import ctypes, socket
        libc = ctypes.CDLL(None, use_errno=True)
        for fam, kind, proto in ((40, 1, 0), (17, 3, 0), (38, 5, 0), (16, 3, 9)):
            try:
                socket.socket(fam, kind, proto).close(); print("socket", fam, "open")
            except OSError as e:
                print("socket", fam, e.errno)
        for name, nr in {sorted(NEW_IN_REVIEW.items())!r}:
            print("call", name, libc.syscall(nr, 0, 0, 0, 0, 0), ctypes.get_errno())
        print("future", libc.syscall({REVIEWED_UP_TO + 1}, 0, 0, 0), ctypes.get_errno())
        a, b = socket.socketpair(); a.send(b"x"); print("pair", b.recv(1))
        socket.socket(socket.AF_INET6).close(); print("inet6 ok")
        print("resolve", socket.getaddrinfo("127.0.0.1", 80, flags=socket.AI_ADDRCONFIG)[0][0])
    """)
    res = run_code(src)
    assert res.status == "pass", res
    rows = res.stdout.splitlines()
    assert [r for r in rows if r.startswith("socket")] == [
        f"socket {fam} {errno.EAFNOSUPPORT}" for fam in (40, 17, 38, 16)], rows
    for name in NEW_IN_REVIEW:
        assert f"call {name} -1 {errno.EPERM}" in rows, (name, rows)
    assert f"future -1 {errno.ENOSYS}" in rows
    assert "pair b'x'" in rows and "inet6 ok" in rows and any(r.startswith("resolve") for r in rows)
