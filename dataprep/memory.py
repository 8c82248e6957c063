"""Handing a batch's memory back when the batch is done.

Ray keeps a worker process for the next task, and what a batch allocated stays that
process's memory unless the allocators return it: Arrow's pool (mimalloc) only on its own
next allocations, glibc's heap only at its top. Idle workers held 0.86 GB through the 1 GiB
bench corpus's packing that way, against 0.25-0.37 GB at 100 MiB (measured): the peak grew
with the corpus though no batch did. Handed back, the peak was 2.9 GB against 2.6 GB."""

from __future__ import annotations

import ctypes
import ctypes.util
import functools

import pyarrow as pa

_LIBC = ctypes.CDLL(ctypes.util.find_library("c") or None)
_TRIM = getattr(_LIBC, "malloc_trim", None)  # glibc only; elsewhere Arrow's pool alone


def hands_back_memory(fn):
    """``fn``, then its process's freed memory returned to the system."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        finally:
            pa.default_memory_pool().release_unused()
            if _TRIM is not None:
                _TRIM(0)

    return wrapper
