"""Thin ctypes binding to the system's libbpf.so.1 (libbpf 1.1 API).

Only the calls orb8 needs are declared. Every failure becomes a
:class:`ProbeLoadError` whose message names the errno and a remedy, plus the
last lines libbpf logged (the verifier log ends up there).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import threading
from collections import deque
from pathlib import Path
from typing import Any

from orb8_common.errors import ProbeLoadError

c_void_p = ctypes.c_void_p
c_int = ctypes.c_int
c_uint32 = ctypes.c_uint32
c_size_t = ctypes.c_size_t
c_char_p = ctypes.c_char_p

BPF_ANY = 0
BPF_NOEXIST = 1
BPF_TC_INGRESS = 1
BPF_TC_EGRESS = 2

# errno → what the operator can do about it.
_REMEDIES: dict[int, str] = {
    errno.EPERM: "run as root or grant CAP_BPF, CAP_PERFMON and CAP_NET_ADMIN",
    errno.EACCES: "the verifier or an LSM refused the program; see the log above",
    errno.ENOENT: "the kernel lacks this hook or object; check BTF and that tracefs is mounted",
    errno.EINVAL: "the kernel rejected an argument; the kernel may be too old (need 5.11+)",
    errno.E2BIG: "a map or program is larger than the kernel allows",
    errno.ENOMEM: "raise RLIMIT_MEMLOCK or the cgroup memory limit",
    errno.EEXIST: "another filter uses orb8's tc handle and priority; run `orb8 diagnose`",
    errno.ENODEV: "the network interface disappeared",
    errno.EOPNOTSUPP: "the kernel does not support this operation",
    errno.EBUSY: "the hook is busy; another program holds it exclusively",
}


def remedy_for(*, code: int) -> str:
    return _REMEDIES.get(code, "run `orb8 diagnose` for details")


class _Log:
    """Keeps the tail of libbpf's log so errors can quote the verifier."""

    def __init__(self) -> None:
        self.lines: deque[str] = deque(maxlen=40)
        self.lock = threading.Lock()

    def add(self, text: str) -> None:
        with self.lock:
            for line in text.splitlines():
                line = line.removeprefix("libbpf: ").rstrip()
                if line:
                    self.lines.append(line)

    def tail(self, count: int = 6) -> list[str]:
        with self.lock:
            return list(self.lines)[-count:]

    def clear(self) -> None:
        with self.lock:
            self.lines.clear()


LOG = _Log()

_PRINT_FN = ctypes.CFUNCTYPE(c_int, c_int, c_char_p, c_void_p)
SAMPLE_FN = ctypes.CFUNCTYPE(c_int, c_void_p, c_void_p, c_size_t)


class TcHook(ctypes.Structure):
    _fields_ = [
        ("sz", c_size_t),
        ("ifindex", c_int),
        ("attach_point", c_int),
        ("parent", c_uint32),
    ]


class TcOpts(ctypes.Structure):
    _fields_ = [
        ("sz", c_size_t),
        ("prog_fd", c_int),
        ("flags", c_uint32),
        ("prog_id", c_uint32),
        ("handle", c_uint32),
        ("priority", c_uint32),
    ]


class BatchOpts(ctypes.Structure):
    _fields_ = [("sz", c_size_t), ("elem_flags", ctypes.c_uint64), ("flags", ctypes.c_uint64)]


class TestRunOpts(ctypes.Structure):
    _fields_ = [
        ("sz", c_size_t),
        ("data_in", c_void_p),
        ("data_out", c_void_p),
        ("data_size_in", c_uint32),
        ("data_size_out", c_uint32),
        ("ctx_in", c_void_p),
        ("ctx_out", c_void_p),
        ("ctx_size_in", c_uint32),
        ("ctx_size_out", c_uint32),
        ("retval", c_uint32),
        ("repeat", c_int),
        ("duration", c_uint32),
        ("flags", c_uint32),
        ("cpu", c_uint32),
        ("batch_size", c_uint32),
    ]


class _Lib:
    """The loaded library with argument and return types declared."""

    def __init__(self) -> None:
        name = os.environ.get("ORB8_LIBBPF", "libbpf.so.1")
        try:
            self.so = ctypes.CDLL(name, use_errno=True)
        except OSError as err:
            raise ProbeLoadError(
                f"cannot load {name}: {err}; install libbpf 1.x (Debian: apt-get install libbpf1)"
            ) from err
        self.libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        self._declare()
        self._print_cb = _PRINT_FN(self._on_print)
        self.so.libbpf_set_print(self._print_cb)

    def _on_print(self, level: int, fmt: bytes | None, args: int | None) -> int:
        buf = ctypes.create_string_buffer(1024)
        # va_list is passed through as an opaque pointer to vsnprintf
        self.libc.vsnprintf(buf, 1024, fmt, c_void_p(args))
        LOG.add(buf.value.decode(errors="replace"))
        return 0

    def _declare(self) -> None:
        so = self.so
        sigs: dict[str, tuple[Any, list[Any]]] = {
            "libbpf_set_print": (c_void_p, [_PRINT_FN]),
            "bpf_object__open_file": (c_void_p, [c_char_p, c_void_p]),
            "bpf_object__load": (c_int, [c_void_p]),
            "bpf_object__close": (None, [c_void_p]),
            "bpf_object__find_map_by_name": (c_void_p, [c_void_p, c_char_p]),
            "bpf_object__find_program_by_name": (c_void_p, [c_void_p, c_char_p]),
            "bpf_map__fd": (c_int, [c_void_p]),
            "bpf_map__value_size": (c_uint32, [c_void_p]),
            "bpf_map__key_size": (c_uint32, [c_void_p]),
            "bpf_map__max_entries": (c_uint32, [c_void_p]),
            "bpf_map__set_max_entries": (c_int, [c_void_p, c_uint32]),
            "bpf_map__set_pin_path": (c_int, [c_void_p, c_char_p]),
            "bpf_map__set_initial_value": (c_int, [c_void_p, c_void_p, c_size_t]),
            "bpf_map__initial_value": (c_void_p, [c_void_p, ctypes.POINTER(c_size_t)]),
            "bpf_program__fd": (c_int, [c_void_p]),
            "bpf_program__set_autoload": (c_int, [c_void_p, ctypes.c_bool]),
            "bpf_program__attach": (c_void_p, [c_void_p]),
            "bpf_program__attach_raw_tracepoint": (c_void_p, [c_void_p, c_char_p]),
            "bpf_program__attach_tracepoint": (c_void_p, [c_void_p, c_char_p, c_char_p]),
            "bpf_program__attach_cgroup": (c_void_p, [c_void_p, c_int]),
            "bpf_link__destroy": (c_int, [c_void_p]),
            "bpf_link__pin": (c_int, [c_void_p, c_char_p]),
            "bpf_tc_hook_create": (c_int, [ctypes.POINTER(TcHook)]),
            "bpf_tc_hook_destroy": (c_int, [ctypes.POINTER(TcHook)]),
            "bpf_tc_attach": (c_int, [ctypes.POINTER(TcHook), ctypes.POINTER(TcOpts)]),
            "bpf_tc_detach": (c_int, [ctypes.POINTER(TcHook), ctypes.POINTER(TcOpts)]),
            "bpf_tc_query": (c_int, [ctypes.POINTER(TcHook), ctypes.POINTER(TcOpts)]),
            "bpf_map_lookup_batch": (
                c_int,
                [c_int, c_void_p, c_void_p, c_void_p, c_void_p, ctypes.POINTER(c_uint32), c_void_p],
            ),
            "bpf_map_lookup_and_delete_batch": (
                c_int,
                [c_int, c_void_p, c_void_p, c_void_p, c_void_p, ctypes.POINTER(c_uint32), c_void_p],
            ),
            "bpf_map_update_elem": (c_int, [c_int, c_void_p, c_void_p, ctypes.c_uint64]),
            "bpf_map_update_batch": (
                c_int,
                [c_int, c_void_p, c_void_p, ctypes.POINTER(c_uint32), c_void_p],
            ),
            "bpf_map_delete_elem": (c_int, [c_int, c_void_p]),
            "bpf_map_lookup_elem": (c_int, [c_int, c_void_p, c_void_p]),
            "bpf_map_get_next_key": (c_int, [c_int, c_void_p, c_void_p]),
            "ring_buffer__new": (c_void_p, [c_int, SAMPLE_FN, c_void_p, c_void_p]),
            "ring_buffer__poll": (c_int, [c_void_p, c_int]),
            "ring_buffer__consume": (c_int, [c_void_p]),
            "ring_buffer__epoll_fd": (c_int, [c_void_p]),
            "ring_buffer__free": (None, [c_void_p]),
            "bpf_prog_get_next_id": (c_int, [c_uint32, ctypes.POINTER(c_uint32)]),
            "libbpf_num_possible_cpus": (c_int, []),
            "bpf_prog_test_run_opts": (c_int, [c_int, ctypes.POINTER(TestRunOpts)]),
        }
        for fname, (restype, argtypes) in sigs.items():
            func = getattr(so, fname)
            func.restype = restype
            func.argtypes = argtypes
        self.libc.vsnprintf.restype = c_int
        self.libc.vsnprintf.argtypes = [c_char_p, c_size_t, c_char_p, c_void_p]


_LIB: _Lib | None = None
_LIB_LOCK = threading.Lock()


def lib() -> Any:
    """The libbpf handle, loaded on first use."""
    global _LIB
    with _LIB_LOCK:
        if _LIB is None:
            _LIB = _Lib()
        return _LIB.so


def error(*, what: str, code: int) -> ProbeLoadError:
    """A ProbeLoadError for a negative libbpf return or errno."""
    code = abs(code)
    name = errno.errorcode.get(code, str(code))
    msg = f"{what}: {name} ({os.strerror(code)}); {remedy_for(code=code)}"
    tail = LOG.tail(3)
    if tail:
        msg += " | libbpf: " + " / ".join(tail)
    err = ProbeLoadError(msg)
    err.errno = code  # type: ignore[attr-defined]
    return err


def check(*, rc: int, what: str) -> int:
    """Raise for a negative libbpf return code."""
    if rc < 0:
        raise error(what=what, code=rc)
    return rc


def check_ptr(*, ptr: int | None, what: str) -> int:
    """Raise for a NULL pointer return, using errno."""
    if not ptr:
        raise error(what=what, code=ctypes.get_errno() or errno.EINVAL)
    return ptr


class BpfObject:
    """One opened (and later loaded) .bpf.o file."""

    def __init__(self, *, path: Path) -> None:
        if not path.is_file():
            raise ProbeLoadError(
                f"BPF object {path} is missing; build it with `make bpf` or reinstall orb8"
            )
        self.path = path
        self._lib = lib()
        LOG.clear()
        self._obj: int | None = check_ptr(
            ptr=self._lib.bpf_object__open_file(str(path).encode(), None), what=f"open {path.name}"
        )
        self.loaded = False

    def _handle(self) -> int:
        if self._obj is None:
            raise ProbeLoadError(f"{self.path.name} is already closed")
        return self._obj

    def map_ptr(self, *, name: str) -> int:
        return check_ptr(
            ptr=self._lib.bpf_object__find_map_by_name(self._handle(), name.encode()),
            what=f"map {name} in {self.path.name}",
        )

    def prog_ptr(self, *, name: str) -> int:
        return check_ptr(
            ptr=self._lib.bpf_object__find_program_by_name(self._handle(), name.encode()),
            what=f"program {name} in {self.path.name}",
        )

    def set_rodata(self, *, data: ctypes.Structure) -> None:
        """Set the object's const volatile settings (the whole .rodata image)."""
        ptr = self.map_ptr(name=".rodata")
        size = c_size_t(0)
        self._lib.bpf_map__initial_value(ptr, ctypes.byref(size))
        if size.value != ctypes.sizeof(data):
            raise ProbeLoadError(
                f"{self.path.name}: .rodata is {size.value} bytes, expected "
                f"{ctypes.sizeof(data)}; the object and orb8 versions differ"
            )
        check(
            rc=self._lib.bpf_map__set_initial_value(ptr, ctypes.byref(data), ctypes.sizeof(data)),
            what=f"set settings of {self.path.name}",
        )

    def set_pin_path(self, *, map_name: str, path: Path) -> None:
        """Pin ``map_name`` at ``path`` on load, reusing a compatible map already pinned there."""
        check(
            rc=self._lib.bpf_map__set_pin_path(self.map_ptr(name=map_name), str(path).encode()),
            what=f"pin path of map {map_name}",
        )

    def set_autoload(self, *, prog: str, enabled: bool) -> None:
        check(
            rc=self._lib.bpf_program__set_autoload(self.prog_ptr(name=prog), enabled),
            what="set autoload",
        )

    def load(self) -> None:
        LOG.clear()
        check(rc=self._lib.bpf_object__load(self._handle()), what=f"load {self.path.name}")
        self.loaded = True

    def map_fd(self, *, name: str) -> int:
        return check(rc=self._lib.bpf_map__fd(self.map_ptr(name=name)), what=f"fd of map {name}")

    def prog_fd(self, *, name: str) -> int:
        return check(
            rc=self._lib.bpf_program__fd(self.prog_ptr(name=name)), what=f"fd of program {name}"
        )

    def attach(self, *, prog: str) -> Link:
        """Attach a tracing program where its SEC() name says."""
        ptr = check_ptr(
            ptr=self._lib.bpf_program__attach(self.prog_ptr(name=prog)), what=f"attach {prog}"
        )
        return Link(ptr=ptr)

    def attach_cgroup(self, *, prog: str, cgroup_fd: int) -> Link:
        """Attach a cgroup program to the cgroup v2 directory open at ``cgroup_fd``
        (a bpf_link: it lives as long as the returned Link, or the process)."""
        ptr = check_ptr(
            ptr=self._lib.bpf_program__attach_cgroup(self.prog_ptr(name=prog), cgroup_fd),
            what=f"attach {prog} to a cgroup",
        )
        return Link(ptr=ptr)

    def close(self) -> None:
        if self._obj is not None:
            self._lib.bpf_object__close(self._obj)
            self._obj = None


class Link:
    """A bpf_link; destroying it detaches the program."""

    def __init__(self, *, ptr: int) -> None:
        self._ptr: int | None = ptr

    def destroy(self) -> None:
        if self._ptr is not None:
            lib().bpf_link__destroy(self._ptr)
            self._ptr = None


def prog_ids() -> list[int]:
    """IDs of every BPF program loaded in the kernel."""
    ids: list[int] = []
    cur = c_uint32(0)
    nxt = c_uint32(0)
    while lib().bpf_prog_get_next_id(cur.value, ctypes.byref(nxt)) == 0:
        ids.append(nxt.value)
        cur.value = nxt.value
    return ids


def test_run(*, prog_fd: int, packet: bytes, repeat: int) -> tuple[int, int]:
    """Run a tc program on ``packet`` ``repeat`` times in the kernel
    (BPF_PROG_TEST_RUN); returns (return value, average ns per run)."""
    buf = ctypes.create_string_buffer(packet, len(packet))
    out = ctypes.create_string_buffer(len(packet) + 256)
    opts = TestRunOpts(
        sz=ctypes.sizeof(TestRunOpts),
        data_in=ctypes.cast(buf, c_void_p),
        data_size_in=len(packet),
        data_out=ctypes.cast(out, c_void_p),
        data_size_out=len(packet) + 256,
        repeat=repeat,
    )
    check(rc=lib().bpf_prog_test_run_opts(prog_fd, ctypes.byref(opts)), what="test-run a program")
    return int(opts.retval), int(opts.duration)
