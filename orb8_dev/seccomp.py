"""Install a seccomp filter on this process, as a container runtime's profile does.

``deny(syscalls=[...])`` makes each named syscall fail with ``EPERM`` without
running (``SECCOMP_RET_ERRNO``), the action containerd's and Docker's default
profiles take for calls they refuse; everything else is allowed. Used by
tests to reproduce what a pod under ``seccompProfile: RuntimeDefault`` sees.
"""

from __future__ import annotations

import ctypes
import errno
import os
import platform
from collections.abc import Sequence

from orb8_agent.dataplane.syscall_names import nr_of
from orb8_common.errors import Orb8Error

PR_SET_NO_NEW_PRIVS = 38
PR_SET_SECCOMP = 22
SECCOMP_MODE_FILTER = 2
SECCOMP_RET_ALLOW = 0x7FFF0000
SECCOMP_RET_ERRNO = 0x00050000
# struct seccomp_data: int nr at offset 0, __u32 arch at offset 4
_LD_W_ABS = 0x20  # BPF_LD | BPF_W | BPF_ABS
_JEQ_K = 0x15  # BPF_JMP | BPF_JEQ | BPF_K
_RET_K = 0x06  # BPF_RET | BPF_K
_AUDIT_ARCH = {"x86_64": 0xC000003E, "aarch64": 0xC00000B7}


class SeccompError(Orb8Error):
    """The filter could not be installed."""


class _Insn(ctypes.Structure):
    _fields_ = [
        ("code", ctypes.c_uint16),
        ("jt", ctypes.c_uint8),
        ("jf", ctypes.c_uint8),
        ("k", ctypes.c_uint32),
    ]


class _Prog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.POINTER(_Insn))]


def program(
    *, syscalls: Sequence[str], arch: str, err: int = errno.EPERM
) -> list[tuple[int, int, int, int]]:
    """The classic BPF filter: wrong arch → allow; a listed nr → ERRNO(err); else allow."""
    nrs = [nr_of(name=name) for name in syscalls]
    n = len(nrs)
    insns = [(_LD_W_ABS, 0, 0, 4), (_JEQ_K, 0, n + 1, _AUDIT_ARCH[arch]), (_LD_W_ABS, 0, 0, 0)]
    for i, nr in enumerate(nrs):
        insns.append((_JEQ_K, n - i, 0, nr))  # jump to the ERRNO return
    insns.append((_RET_K, 0, 0, SECCOMP_RET_ALLOW))
    insns.append((_RET_K, 0, 0, SECCOMP_RET_ERRNO | err))
    return insns


def deny(*, syscalls: Sequence[str]) -> None:
    """From now on this thread (and what it starts) gets EPERM for ``syscalls``."""
    arch = platform.machine()
    if arch not in _AUDIT_ARCH:
        raise SeccompError(f"no seccomp arch constant for {arch}")
    insns = program(syscalls=syscalls, arch=arch)
    array = (_Insn * len(insns))(*(_Insn(*i) for i in insns))
    prog = _Prog(len(insns), array)
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        raise SeccompError(f"PR_SET_NO_NEW_PRIVS: {os.strerror(ctypes.get_errno())}")
    if libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.byref(prog), 0, 0) != 0:
        raise SeccompError(f"PR_SET_SECCOMP: {os.strerror(ctypes.get_errno())}")
