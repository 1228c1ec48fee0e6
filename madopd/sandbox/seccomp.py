"""A hand-built seccomp-BPF deny list, handed to bubblewrap with ``--seccomp FD``.

Why hand-built: the filter is a short list of syscall numbers; building the classic-BPF program
here needs only ``struct`` (no libseccomp binding, no new dependency) and the whole policy can be
read on one screen. bwrap sets ``PR_SET_NO_NEW_PRIVS`` and loads the program just before it
executes the command, so everything in the sandbox (and every child) runs under it.

The program (x86-64 only; elsewhere ``build_filter`` returns None and the sandbox labels the run
``no-seccomp``, allowed only when the config allows a weaker mode):

1. a foreign architecture (e.g. i386 via ``int 0x80``) or the x32 ABI -> kill / EPERM;
2. a syscall number above ``REVIEWED_UP_TO`` (the last entry of the x86-64 table this list was
   reviewed against, Linux 6.18) -> ``ENOSYS``: a syscall added by a newer kernel is refused
   until someone reviews it, and libc treats ENOSYS as "not on this kernel";
3. ``socket``/``socketpair`` of an address family the network namespace does not isolate ->
   ``EAFNOSUPPORT``: only AF_UNIX, AF_INET, AF_INET6 and AF_NETLINK with NETLINK_ROUTE (glibc's
   getaddrinfo) are allowed; AF_VSOCK (one port space shared with the host and its VMs),
   AF_PACKET, AF_ALG, Bluetooth, ... are not;
4. each denied syscall -> ``EPERM``: debugging other processes, namespaces and mounts (the old and
   the new mount API, ``statmount``/``listmount``, ``open_tree_attr``, ``listns``), kernel
   keyrings, eBPF, perf, kernel modules, kexec, swap, reboot, clocks, io_uring,
   ``memfd_secret``, NUMA page moves of other processes, ...;
5. ``clone`` with any namespace flag -> ``EPERM`` (plain fork/threads are allowed);
   ``clone3`` (its flags live in memory a filter cannot read) -> ``ENOSYS``, so libc falls back
   to ``clone``;
6. everything else is allowed (rlimits and cgroups cap the resources).
"""

from __future__ import annotations

import errno
import platform
import struct

# classic BPF opcodes (linux/filter.h) and seccomp return values (linux/seccomp.h)
_LD_W_ABS = 0x20
_JEQ_K = 0x15
_JGE_K = 0x35
_JSET_K = 0x45
_RET_K = 0x06
_RET_ALLOW = 0x7FFF0000
_RET_ERRNO = 0x00050000
_RET_KILL_PROCESS = 0x80000000
_AUDIT_ARCH_X86_64 = 0xC000003E
_X32_BIT = 0x40000000
# offsets in struct seccomp_data: nr, arch, instruction_pointer, args[6] (low word first on LE)
_OFF_NR, _OFF_ARCH, _OFF_ARG0, _OFF_ARG2 = 0, 4, 16, 32

# CLONE_NEWTIME | NEWNS | NEWCGROUP | NEWUTS | NEWIPC | NEWUSER | NEWPID | NEWNET
CLONE_NAMESPACE_FLAGS = 0x80 | 0x20000 | 0x02000000 | 0x04000000 | 0x08000000 | 0x10000000 \
    | 0x20000000 | 0x40000000

# x86-64 syscall numbers (arch/x86/entry/syscalls/syscall_64.tbl)
DENIED_X86_64 = {
    "ptrace": 101, "process_vm_readv": 310, "process_vm_writev": 311, "kcmp": 312,
    "mount": 165, "umount2": 166, "pivot_root": 155, "chroot": 161, "unshare": 272,
    "setns": 308, "open_tree": 428, "move_mount": 429, "fsopen": 430, "fsconfig": 431,
    "fsmount": 432, "fspick": 433, "mount_setattr": 442,
    "keyctl": 250, "add_key": 248, "request_key": 249,
    "bpf": 321, "perf_event_open": 298, "userfaultfd": 323,
    "init_module": 175, "finit_module": 313, "delete_module": 176,
    "kexec_load": 246, "kexec_file_load": 320, "reboot": 169, "swapon": 167, "swapoff": 168,
    "acct": 163, "syslog": 103, "iopl": 172, "ioperm": 173, "quotactl": 179,
    "open_by_handle_at": 304, "name_to_handle_at": 303, "lookup_dcookie": 212,
    "io_uring_setup": 425, "io_uring_enter": 426, "io_uring_register": 427,
    "vhangup": 153, "settimeofday": 164, "uselib": 134,
    # reviewed against the 6.18 table (issue 23): mount introspection and the newest mount call,
    # secret memory, other processes' memory and pages, clocks, quotas, fanotify, LSM attributes,
    # namespace listing, and the long-removed module/sysctl calls (ENOSYS anyway; EPERM is clearer)
    "statmount": 457, "listmount": 458, "open_tree_attr": 467, "listns": 470,
    "memfd_secret": 447, "pidfd_getfd": 438, "process_madvise": 440, "process_mrelease": 448,
    "migrate_pages": 256, "move_pages": 279, "quotactl_fd": 443, "fanotify_init": 300,
    "clock_settime": 227, "clock_adjtime": 305, "adjtimex": 159, "lsm_set_self_attr": 460,
    "create_module": 174, "get_kernel_syms": 177, "query_module": 178, "nfsservctl": 180,
    "sysfs": 139, "ustat": 136, "_sysctl": 156,
}
REVIEWED_UP_TO = 470  # listns, the last x86-64 syscall of Linux 6.18; higher numbers -> ENOSYS
_CLONE, _CLONE3 = 56, 435
_SOCKET, _SOCKETPAIR = 41, 53
AF_UNIX, AF_INET, AF_INET6, AF_NETLINK = 1, 2, 10, 16
NETLINK_ROUTE = 0


def _ins(code: int, k: int, jt: int = 0, jf: int = 0) -> bytes:
    return struct.pack("=HBBI", code, jt, jf, k)


def _socket_block() -> list[bytes]:
    """socket/socketpair: allow the namespaced families, EAFNOSUPPORT for the rest (the program
    counter stands on the syscall-number check; every path of the block returns)."""
    allow, refuse = _ins(_RET_K, _RET_ALLOW), _ins(_RET_K, _RET_ERRNO | errno.EAFNOSUPPORT)
    return [
        _ins(_LD_W_ABS, _OFF_ARG0),  # the domain (an int: the low 32 bits)
        _ins(_JEQ_K, AF_UNIX, jt=6),
        _ins(_JEQ_K, AF_INET, jt=5),
        _ins(_JEQ_K, AF_INET6, jt=4),
        _ins(_JEQ_K, AF_NETLINK, jf=2),
        _ins(_LD_W_ABS, _OFF_ARG2),  # the netlink protocol
        _ins(_JEQ_K, NETLINK_ROUTE, jt=1),
        refuse,
        allow,
    ]


def build_filter(machine: str | None = None) -> bytes | None:
    """The BPF program (``struct sock_filter[]`` bytes) for this machine, or None if unsupported."""
    if (machine or platform.machine()) not in ("x86_64", "amd64", "AMD64"):
        return None
    eperm = _RET_ERRNO | errno.EPERM
    enosys = _RET_ERRNO | errno.ENOSYS
    sockets = _socket_block()
    prog = [
        _ins(_LD_W_ABS, _OFF_ARCH),
        _ins(_JEQ_K, _AUDIT_ARCH_X86_64, jt=1),
        _ins(_RET_K, _RET_KILL_PROCESS),
        _ins(_LD_W_ABS, _OFF_NR),
        _ins(_JGE_K, _X32_BIT, jf=1),
        _ins(_RET_K, eperm),
        _ins(_JGE_K, REVIEWED_UP_TO + 1, jf=1),
        _ins(_RET_K, enosys),
        _ins(_JEQ_K, _SOCKET, jt=1),
        _ins(_JEQ_K, _SOCKETPAIR, jf=len(sockets)),
        *sockets,
    ]
    for nr in sorted(DENIED_X86_64.values()):
        prog += [_ins(_JEQ_K, nr, jf=1), _ins(_RET_K, eperm)]
    prog += [
        _ins(_JEQ_K, _CLONE3, jf=1), _ins(_RET_K, enosys),
        _ins(_JEQ_K, _CLONE, jf=3),
        _ins(_LD_W_ABS, _OFF_ARG0),  # clone's flags (low 32 bits)
        _ins(_JSET_K, CLONE_NAMESPACE_FLAGS, jf=1),
        _ins(_RET_K, eperm),
        _ins(_RET_K, _RET_ALLOW),
    ]
    return b"".join(prog)
