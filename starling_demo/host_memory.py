"""The process's host memory: glibc's allocator set up for a long-running server, and freed memory handed back."""
from __future__ import annotations

import contextlib
import ctypes
import gc
import os

import torch

M_MMAP_THRESHOLD = -3  # mallopt's parameter number, from glibc's malloc.h
MAPPED_BYTES = 256 * 1024


def map_large_allocations(threshold: int = MAPPED_BYTES) -> bool:
    """Have glibc give every allocation of `threshold` bytes or more its own mapping, unmapped when it is freed;
    False where that is not possible (not glibc) or the environment sets it (MALLOC_MMAP_THRESHOLD_).

    By default glibc raises that threshold to the largest block freed so far (up to 32 MiB): after one large
    request or batch, blocks of that size come from the heap, and a heap hands back only its top. In the server,
    one attacker's requests and batch jobs then left +31.6 and +49.6 MiB behind them; with this, +5.7 and +12.2 MiB
    (bench_load, two runs each: RESULTS.md, issue 26). Allocations made before the call keep their place.
    """
    if "MALLOC_MMAP_THRESHOLD_" in os.environ:
        return False
    with contextlib.suppress(OSError, AttributeError):  # not glibc (macOS, musl): its own policy stands
        return ctypes.CDLL("libc.so.6").mallopt(M_MMAP_THRESHOLD, threshold) == 1
    return False


def release_freed_memory() -> None:
    """Hand the memory a load or an eviction freed back: host heap pages (glibc keeps them otherwise) and
    CUDA blocks (PyTorch's caching allocator keeps them otherwise).

    Quantising on load frees gigabytes in pieces small enough to live on the heap; without this the process
    keeps them, and the next model loads on top (measured in benchmarks/bench_cold_start.py).
    """
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):  # not glibc (macOS, musl): nothing to do
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    if torch.cuda.is_initialized():
        torch.cuda.empty_cache()
