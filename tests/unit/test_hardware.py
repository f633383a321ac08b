"""Hardware policy: native-bf16 detection, the precision it picks, torch threads, freed memory."""
import platform

import pytest
import torch

from domainft import hardware
from domainft.modeling.base import pick_dtype


def _cpuinfo(tmp_path, flags):
    p = tmp_path / "cpuinfo"
    p.write_text(f"processor\t: 0\nmodel name\t: Test CPU\nflags\t\t: {' '.join(flags)}\n\nprocessor\t: 1\n")
    return p


@pytest.mark.parametrize("flags,expected", [
    (["fpu", "avx2", "avx512f"], False),
    (["fpu", "avx512f", "avx512_bf16"], True),
    (["fpu", "amx_tile", "amx_bf16"], True),
    ([], False),
])
def test_native_bf16_reads_the_cpu_flags(tmp_path, monkeypatch, flags, expected):
    monkeypatch.delenv(hardware.NATIVE_BF16_ENV, raising=False)
    assert hardware.native_bf16(_cpuinfo(tmp_path, flags)) is expected


def test_unreadable_cpuinfo_means_no_native_bf16(tmp_path, monkeypatch):
    monkeypatch.delenv(hardware.NATIVE_BF16_ENV, raising=False)
    assert hardware.cpu_flags(tmp_path / "missing") == set()
    assert hardware.native_bf16(tmp_path / "missing") is False


def test_env_forces_detection_off_and_on(tmp_path, monkeypatch):
    amx = _cpuinfo(tmp_path, ["amx_bf16"])
    monkeypatch.setenv(hardware.NATIVE_BF16_ENV, "0")
    assert hardware.native_bf16(amx) is False
    monkeypatch.setenv(hardware.NATIVE_BF16_ENV, "1")
    assert hardware.native_bf16(tmp_path / "missing") is True


def test_auto_precision_on_cpu_follows_the_detection(monkeypatch):
    monkeypatch.setenv(hardware.NATIVE_BF16_ENV, "0")
    assert pick_dtype("auto", "cpu") == torch.float32
    assert pick_dtype("bf16", "cpu") == torch.bfloat16  # an explicit choice is kept
    monkeypatch.setenv(hardware.NATIVE_BF16_ENV, "1")
    assert pick_dtype("auto", "cpu") == torch.bfloat16
    assert pick_dtype("fp32", "cpu") == torch.float32
    assert pick_dtype("auto", "cuda") == torch.bfloat16


def test_auto_precision_without_torch_follows_the_same_rule(tmp_path, monkeypatch):
    """The fingerprint stage's view of ``auto`` (fingerprints/compute.json) must match pick_dtype's."""
    monkeypatch.delenv(hardware.NATIVE_BF16_ENV, raising=False)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    no_gpu = tmp_path / "no-driver"
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    avx2, bf16 = _cpuinfo(tmp_path / "a", ["avx2"]), _cpuinfo(tmp_path / "b", ["avx512f", "avx512_bf16"])
    assert hardware.auto_precision(avx2, no_gpu) == {"device": "cpu", "auto": "fp32"}
    assert hardware.auto_precision(bf16, no_gpu) == {"device": "cpu", "auto": "bf16"}
    assert hardware.native_bf16(avx2) is False and hardware.native_bf16(bf16) is True  # same answers with torch
    monkeypatch.setenv(hardware.NATIVE_BF16_ENV, "0")
    assert hardware.auto_precision(bf16, no_gpu)["auto"] == "fp32" and hardware.native_bf16(bf16) is False
    monkeypatch.setenv(hardware.NATIVE_BF16_ENV, "1")
    assert hardware.auto_precision(avx2, no_gpu)["auto"] == "bf16"
    gpus = tmp_path / "gpus"
    (gpus / "0000:01:00.0").mkdir(parents=True)
    monkeypatch.setenv(hardware.NATIVE_BF16_ENV, "0")
    assert hardware.visible_nvidia_gpus(gpus) == 1
    assert hardware.auto_precision(avx2, gpus) == {"device": "cuda", "auto": "bf16"}
    for hidden in ("", "-1"):
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", hidden)
        assert hardware.visible_nvidia_gpus(gpus) == 0
        assert hardware.auto_precision(avx2, gpus) == {"device": "cpu", "auto": "fp32"}


def test_thread_count_override_then_omp_then_cores(monkeypatch):
    monkeypatch.setattr(hardware, "available_cores", lambda: 8)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert hardware.thread_count() == 8
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert hardware.thread_count() == 3
    monkeypatch.setenv("OMP_NUM_THREADS", "32")
    assert hardware.thread_count() == 8  # never more threads than cores from the environment
    monkeypatch.setenv("OMP_NUM_THREADS", "junk")
    assert hardware.thread_count() == 8
    assert hardware.thread_count(override=5) == 5


def test_thread_count_reserve_only_without_override_or_omp(monkeypatch):
    """The server's policy: all cores but one, unless OMP_NUM_THREADS or serve.torch_threads says."""
    monkeypatch.setattr(hardware, "available_cores", lambda: 8)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert hardware.thread_count(reserve=1) == 7
    monkeypatch.setattr(hardware, "available_cores", lambda: 1)
    assert hardware.thread_count(reserve=1) == 1  # never 0 threads on a 1-core box
    monkeypatch.setattr(hardware, "available_cores", lambda: 8)
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    assert hardware.thread_count(reserve=1) == 2
    assert hardware.thread_count(override=4, reserve=1) == 4


def test_apply_threads_sets_torch(monkeypatch):
    before = torch.get_num_threads()
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    try:
        assert hardware.apply_threads() == 1 and torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


_FAULTS = """
import ctypes, resource, sys
from domainft import hardware
kept = hardware.keep_freed_memory() if sys.argv[1] == "keep" else None
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype, libc.malloc.argtypes, libc.free.argtypes = ctypes.c_void_p, [ctypes.c_size_t], [ctypes.c_void_p]
size = 48 * 2**20  # above glibc's largest dynamic mmap threshold (32 MiB): mmapped by default
def use():
    p = libc.malloc(size)
    ctypes.memset(p, 1, size)  # touch every page
    libc.free(p)
use()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(5):
    use()
print(kept, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_keep_freed_memory_reuses_pages_instead_of_faulting_them_in_again():
    """A 48 MiB block freed and allocated again five times: glibc's default unmaps it on free, so
    every use faults its 12 k pages in afresh; kept mapped, the pages are reused (the speed this
    buys a training step is in bench/RESULTS.md)."""
    import os
    import subprocess
    import sys

    def faults(mode):
        out = subprocess.run([sys.executable, "-c", _FAULTS, mode], capture_output=True, text=True, check=True,
                             env={**os.environ, "OMP_NUM_THREADS": "1"}).stdout.split()
        return out[0], int(out[1])

    pages = 5 * 48 * 2**20 // 4096
    (d_flag, default), (k_flag, kept) = faults("default"), faults("keep")
    assert d_flag == "None" and k_flag == "True"
    assert default > 0.9 * pages and kept < 0.05 * pages, (default, kept)
