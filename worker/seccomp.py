"""The sandbox's seccomp filter: system calls a classifier never needs fail with EPERM.

Threat model: code in a teacher file (or a parser bug it exploits) runs as the sandbox's
user, in its namespaces. The kernel is then the attack surface; these calls are its
riskiest doors and nothing in Python, torch, ONNX Runtime or a data loader uses them:
- debugging other processes: ``ptrace``;
- mounts and new namespaces: ``mount``, ``umount2``, ``pivot_root``, the new mount API,
  ``setns``, and ``unshare``/``clone`` with a ``CLONE_NEW*`` flag (``clone3`` hides its
  flags in memory a filter cannot read: it gets ENOSYS, and libc falls back to ``clone``);
- the kernel keyring: ``keyctl``, ``add_key``, ``request_key``;
- ``bpf``, ``perf_event_open``, ``userfaultfd`` (each a source of kernel exploits);
- loading a kernel or modules: ``kexec_load``, ``kexec_file_load``, ``init_module``,
  ``finit_module``, ``delete_module``.
A call from another architecture's table (``int 0x80`` on x86-64, x32) kills the process:
its numbers would slip past the table below.

The program is classic BPF built here (no library needed), handed to bwrap by ``--seccomp
FD``; bwrap installs it last, under no_new_privs, so the command and all it starts run with it.
"""

from __future__ import annotations

import errno
import os
import platform
import struct

# <linux/audit.h>: AUDIT_ARCH_* of the machines workers run on.
_ARCHES = {"x86_64": 0xC000003E, "aarch64": 0xC00000B7}
# <asm/unistd.h>: (x86-64, the generic table of arm64).
_DENIED = {
    "ptrace": (101, 117),
    "mount": (165, 40),
    "umount2": (166, 39),
    "pivot_root": (155, 41),
    "setns": (308, 268),
    "keyctl": (250, 219),
    "add_key": (248, 217),
    "request_key": (249, 218),
    "bpf": (321, 280),
    "perf_event_open": (298, 241),
    "userfaultfd": (323, 282),
    "kexec_load": (246, 104),
    "kexec_file_load": (320, 294),
    "init_module": (175, 105),
    "finit_module": (313, 273),
    "delete_module": (176, 106),
    "open_tree": (428, 428),
    "move_mount": (429, 429),
    "fsopen": (430, 430),
    "fsconfig": (431, 431),
    "fsmount": (432, 432),
    "fspick": (433, 433),
    "mount_setattr": (442, 442),
}
_CLONE, _UNSHARE, _CLONE3 = (56, 220), (272, 97), (435, 435)
X32_SYSCALL_BIT = 0x40000000
# CLONE_NEWNS, NEWCGROUP, NEWUTS, NEWIPC, NEWUSER, NEWPID, NEWNET, and NEWTIME (0x80).
CLONE_NEW_ANY = 0x00020000 | 0x02000000 | 0x04000000 | 0x08000000
CLONE_NEW_ANY |= 0x10000000 | 0x20000000 | 0x40000000 | 0x00000080

# <linux/filter.h> opcodes and <linux/seccomp.h> results.
_LD_ABS, _JEQ, _JGE, _JSET, _RET = 0x20, 0x15, 0x35, 0x45, 0x06
_ALLOW, _KILL_PROCESS, _ERRNO = 0x7FFF0000, 0x80000000, 0x00050000
_NR, _ARCH, _ARG0 = 0, 4, 16  # offsets in struct seccomp_data (args[0]'s low half)


def supported() -> bool:
    return platform.machine() in _ARCHES


def program(machine: str | None = None) -> bytes:
    """The filter for ``machine`` (this host's by default) as ``struct sock_filter[]``."""
    machine = machine or platform.machine()
    column = list(_ARCHES).index(machine)
    denied = sorted({numbers[column] for numbers in _DENIED.values()})
    eperm, enosys = _ERRNO | errno.EPERM, _ERRNO | errno.ENOSYS
    code: list[tuple[int, int, int, int]] = [
        (_LD_ABS, 0, 0, _ARCH),
        (_JEQ, 1, 0, _ARCHES[machine]),
        (_RET, 0, 0, _KILL_PROCESS),
        (_LD_ABS, 0, 0, _NR),
    ]
    if machine == "x86_64":
        code.append((_JGE, len(denied) + 6, 0, X32_SYSCALL_BIT))  # to the kill below
    for i, nr in enumerate(denied):
        code.append((_JEQ, len(denied) - i + 7, 0, nr))  # to "return EPERM"
    code += [
        (_JEQ, 4, 0, _CLONE3[column]),
        (_JEQ, 1, 0, _CLONE[column]),
        (_JEQ, 0, 4, _UNSHARE[column]),
        (_LD_ABS, 0, 0, _ARG0),  # both take their flags first
        (_JSET, 3, 2, CLONE_NEW_ANY),
        (_RET, 0, 0, enosys),
        (_RET, 0, 0, _KILL_PROCESS),  # x32: only reached by the jump above
        (_RET, 0, 0, _ALLOW),
        (_RET, 0, 0, eperm),
    ]
    return b"".join(struct.pack("<HBBI", *insn) for insn in code)


def program_fd() -> int:
    """A file descriptor holding ``program()``, read from its start by bwrap; the caller
    passes it to the child and closes it."""
    fd = os.memfd_create("stillhouse-seccomp", os.MFD_CLOEXEC)
    os.write(fd, program())
    os.lseek(fd, 0, os.SEEK_SET)
    return fd
