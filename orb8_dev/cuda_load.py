"""Hold GPU memory and keep the SMs busy, through the driver API alone.

``python -m orb8_dev.cuda_load --mib 512 --seconds 60 [--cgroup DIR]``

The GPU check needs a real GPU process that NVML lists, with a known memory
footprint and some utilization, inside a pod-shaped cgroup. The CUDA driver
(libcuda.so.1) ships with the NVIDIA driver, so this needs no toolkit: a
PTX kernel that spins on %globaltimer is JIT-compiled by the driver.
Prints ``ready <pid>`` once the memory is held and the kernel runs.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import sys
import time

# spin: loops until %globaltimer passes the deadline, so nothing folds the loop.
# gpu_now: stores %globaltimer, whose epoch is the driver's, not the host's.
SPIN_PTX = b"""
.version 6.0
.target sm_50
.address_size 64
.visible .entry spin(.param .u64 until_ns)
{
  .reg .u64 %t<3>;
  .reg .pred %p;
  ld.param.u64 %t1, [until_ns];
LOOP:
  mov.u64 %t2, %globaltimer;
  setp.lt.u64 %p, %t2, %t1;
  @%p bra LOOP;
  ret;
}
.visible .entry gpu_now(.param .u64 out)
{
  .reg .u64 %t<3>;
  ld.param.u64 %t1, [out];
  mov.u64 %t2, %globaltimer;
  st.global.u64 [%t1], %t2;
  ret;
}
"""


class CudaError(RuntimeError):
    pass


def _check(lib: ctypes.CDLL, rc: int, what: str) -> None:
    if rc == 0:
        return
    name = ctypes.c_char_p()
    lib.cuGetErrorName(rc, ctypes.byref(name))
    raise CudaError(f"{what}: {name.value.decode() if name.value else rc}")


def hold(*, mib: int, seconds: float, device: int = 0) -> None:
    lib = ctypes.CDLL("libcuda.so.1")
    _check(lib, lib.cuInit(0), "cuInit")
    dev = ctypes.c_int()
    _check(lib, lib.cuDeviceGet(ctypes.byref(dev), device), "cuDeviceGet")
    ctx = ctypes.c_void_p()
    _check(lib, lib.cuCtxCreate_v2(ctypes.byref(ctx), 0, dev), "cuCtxCreate")
    ptr = ctypes.c_uint64()
    _check(lib, lib.cuMemAlloc_v2(ctypes.byref(ptr), ctypes.c_size_t(mib << 20)), "cuMemAlloc")
    _check(lib, lib.cuMemsetD8_v2(ptr, 1, ctypes.c_size_t(mib << 20)), "cuMemset")
    module = ctypes.c_void_p()
    _check(lib, lib.cuModuleLoadData(ctypes.byref(module), SPIN_PTX), "cuModuleLoadData")
    spin, now_fn = ctypes.c_void_p(), ctypes.c_void_p()
    _check(lib, lib.cuModuleGetFunction(ctypes.byref(spin), module, b"spin"), "spin")
    _check(lib, lib.cuModuleGetFunction(ctypes.byref(now_fn), module, b"gpu_now"), "gpu_now")
    print(f"ready {os.getpid()}", flush=True)
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        # Short launches (200 ms each) keep the context responsive to the end.
        until = ctypes.c_uint64(_gpu_time_ns(lib, now_fn, ptr) + 200_000_000)
        _launch(lib, spin, until)
    lib.cuMemFree_v2(ptr)
    lib.cuCtxDestroy_v2(ctx)


def _launch(lib: ctypes.CDLL, func: ctypes.c_void_p, arg: ctypes.c_uint64) -> None:
    params = (ctypes.c_void_p * 1)(ctypes.cast(ctypes.byref(arg), ctypes.c_void_p))
    _check(lib, lib.cuLaunchKernel(func, 8, 1, 1, 32, 1, 1, 0, None, params, None), "launch")
    _check(lib, lib.cuCtxSynchronize(), "cuCtxSynchronize")


def _gpu_time_ns(lib: ctypes.CDLL, now_fn: ctypes.c_void_p, scratch: ctypes.c_uint64) -> int:
    _launch(lib, now_fn, ctypes.c_uint64(scratch.value))
    value = ctypes.c_uint64()
    _check(lib, lib.cuMemcpyDtoH_v2(ctypes.byref(value), scratch, ctypes.c_size_t(8)), "copy")
    return value.value


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m orb8_dev.cuda_load", description=__doc__)
    ap.add_argument("--mib", type=int, default=256)
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--device", type=int, default=0)
    ap.add_argument("--cgroup", help="cgroup v2 directory to move into first")
    args = ap.parse_args(argv)
    if args.cgroup:
        with open(os.path.join(args.cgroup, "cgroup.procs"), "w") as f:
            f.write(str(os.getpid()))
    try:
        hold(mib=args.mib, seconds=args.seconds, device=args.device)
    except (OSError, CudaError) as exc:
        print(f"cuda_load: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
