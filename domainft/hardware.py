"""What the host can do, and how a stage process sets itself up for it.

The policies every stage shares:

- :func:`native_bf16`: whether the CPU multiplies bf16 matrices in hardware (AMX-BF16 or
  AVX512-BF16, read from the kernel's CPU flags). ``precision: auto`` computes in bf16 only then;
  elsewhere bf16 is emulated and slower than fp32. ``DOMAINFT_NATIVE_BF16=0`` forces the
  answer to False (everything then runs in fp32 exactly as on a CPU without the units),
  ``=1`` to True.
- :func:`apply_threads`: torch intra-op threads from the cores this process may use, so that
  parallel stages do not oversubscribe a small machine (OpenMP threads beyond the free cores
  stall at every barrier).
- :func:`keep_freed_memory` (called by :func:`apply_threads`): glibc's malloc hands large blocks
  back to the kernel when they are freed, so every training step page-faults its activations and
  full-vocabulary logits in afresh; it keeps them mapped (figures: bench/RESULTS.md, training).
- :func:`auto_precision`: what ``precision: auto`` resolves to on this host, read without torch,
  for the fingerprint stage (``fingerprints/compute.json``), so that moving a repository to a host
  where ``auto`` means another precision reruns the stages that load models.
"""
from __future__ import annotations

import functools
import logging
import os
from pathlib import Path

log = logging.getLogger(__name__)

BF16_FLAGS = ("amx_bf16", "avx512_bf16")  # /proc/cpuinfo names (Linux arch/x86 cpufeatures)
NATIVE_BF16_ENV = "DOMAINFT_NATIVE_BF16"


def cpu_flags(cpuinfo: str | Path = "/proc/cpuinfo") -> set[str]:
    """The ``flags`` of the first CPU in ``cpuinfo`` (empty set when unreadable, e.g. not Linux)."""
    try:
        text = Path(cpuinfo).read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return set(value.split())
    return set()


@functools.lru_cache(maxsize=None)
def _detected(cpuinfo: str) -> bool:
    import torch

    return torch.backends.mkldnn.is_available() and _cpu_has_bf16(cpuinfo)


def _cpu_has_bf16(cpuinfo: str | Path) -> bool:
    return any(f in cpu_flags(cpuinfo) for f in BF16_FLAGS)


def _forced_bf16() -> bool | None:
    """``DOMAINFT_NATIVE_BF16`` read as True / False, or None when unset or not a boolean word."""
    forced = os.environ.get(NATIVE_BF16_ENV, "").strip().lower()
    if forced in ("0", "false", "off", "no"):
        return False
    if forced in ("1", "true", "on", "yes"):
        return True
    return None


def native_bf16(cpuinfo: str | Path = "/proc/cpuinfo") -> bool:
    """True when this CPU has bf16 matrix instructions that oneDNN (through torch) uses.

    ``DOMAINFT_NATIVE_BF16`` = ``0``/``1`` overrides the detection (``0``: behave as a CPU
    without them).
    """
    forced = _forced_bf16()
    return _detected(str(cpuinfo)) if forced is None else forced


NVIDIA_GPUS_DIR = "/proc/driver/nvidia/gpus"  # one entry per GPU the NVIDIA kernel driver sees


def visible_nvidia_gpus(gpus_dir: str | Path = NVIDIA_GPUS_DIR) -> int:
    """NVIDIA GPUs this process may use, without importing torch or CUDA.

    The driver's GPU list, or 0 when ``CUDA_VISIBLE_DEVICES`` is ``""`` or ``-1`` (CUDA then
    hides every device). A torch built without CUDA still runs on the CPU there; the stages record
    the precision they used (``metrics/train.json``, ``metrics/eval.json``).
    """
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None and visible.strip() in ("", "-1"):
        return 0
    try:
        return sum(1 for _ in Path(gpus_dir).iterdir())
    except OSError:
        return 0


def auto_precision(cpuinfo: str | Path = "/proc/cpuinfo", gpus_dir: str | Path = NVIDIA_GPUS_DIR) -> dict[str, str]:
    """What ``precision: auto`` resolves to here, without torch (the fingerprint stage runs on every
    ``dvc repro`` and stays under 0.2 s).

    Returns:
        ``{"device": "cuda" | "cpu", "auto": "bf16" | "fp32"}``: bf16 on CUDA and on a CPU with
        bf16 matrix flags (or ``DOMAINFT_NATIVE_BF16=1``), fp32 otherwise; the same rule as
        :func:`domainft.modeling.base.pick_dtype`, minus torch's oneDNN check, which every x86
        CPU build of torch passes.
    """
    if visible_nvidia_gpus(gpus_dir):
        return {"device": "cuda", "auto": "bf16"}
    forced = _forced_bf16()
    bf16 = _cpu_has_bf16(cpuinfo) if forced is None else forced
    return {"device": "cpu", "auto": "bf16" if bf16 else "fp32"}


def available_cores() -> int:
    """Cores this process may run on (its CPU affinity; ``os.cpu_count()`` where unknown)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def thread_count(override: int = 0, reserve: int = 0) -> int:
    """Torch intra-op threads for a stage or a server.

    Args:
        override: a params value (e.g. ``train.torch_threads``, ``serve.torch_threads``); > 0 wins.
        reserve: cores left to other work of the same process when neither ``override`` nor
            ``OMP_NUM_THREADS`` is set (the server keeps 1 for its HTTP event loop and
            detokenization: OpenMP threads that outnumber free cores stall at every barrier).

    Returns:
        ``override`` when > 0, else ``OMP_NUM_THREADS`` when set to a positive integer, else
        :func:`available_cores` minus ``reserve``; at least 1, never more than the available
        cores unless overridden.
    """
    if override > 0:
        return override
    env = os.environ.get("OMP_NUM_THREADS", "").strip()
    if env.isdigit() and int(env) > 0:
        return min(int(env), available_cores())
    return max(1, available_cores() - reserve)


MMAP_THRESHOLD = 1 << 30  # bytes: blocks below come from the heap (glibc default: 128 KiB, rising to 32 MiB)
TRIM_THRESHOLD = 2**31 - 1  # bytes of free memory at the heap's top kept mapped (mallopt takes an int)


@functools.lru_cache(maxsize=None)
def keep_freed_memory() -> bool:
    """Keep freed memory of this process mapped for reuse (glibc only; idempotent).

    ``mallopt(M_MMAP_THRESHOLD, 1 GiB)`` and ``mallopt(M_TRIM_THRESHOLD, 2 GiB - 1)``: tensors
    up to 1 GiB are carved from the heap, and freeing them does not unmap the pages, so the next
    step's tensors of the same sizes reuse them without page faults. The peak RSS is unchanged:
    what is kept is what the step already used. The same aim as the allocator PyTorch's CPU
    tuning guide recommends (jemalloc/tcmalloc), without an ``LD_PRELOAD``.

    Returns:
        True when both settings were applied; False on a C library without ``mallopt``
        (macOS, musl), where nothing changes.
    """
    import ctypes
    import platform

    if platform.libc_ver()[0] != "glibc":
        return False
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3  # <malloc.h>
    ok = mallopt(m_mmap_threshold, ctypes.c_int(MMAP_THRESHOLD)) == 1
    ok = mallopt(m_trim_threshold, ctypes.c_int(TRIM_THRESHOLD)) == 1 and ok
    log.info("malloc keeps freed memory mapped: %s", ok)
    return ok


def apply_threads(override: int = 0, reserve: int = 0, *, keep_freed: bool = True) -> int:
    """Set torch's intra-op threads to :func:`thread_count` ``(override, reserve)`` and return the
    number set; also :func:`keep_freed_memory` unless ``keep_freed`` is False (a long-running
    server keeps glibc's default). Both are the CPU setup of a stage process."""
    import torch

    if keep_freed:
        keep_freed_memory()

    n = thread_count(override, reserve)
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    log.info("torch threads: %d (override %d, OMP_NUM_THREADS %s, %d cores available)", n, override,
             os.environ.get("OMP_NUM_THREADS"), available_cores())
    return n
