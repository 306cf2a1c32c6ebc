"""glibc malloc settings for a worker that streams large bodies.

A streamed body passes through buffers of 64–256 KiB (the event loop's reads, the parser's body
slices, what is queued for a slow socket): too large for Python's small-object allocator, so
each one is a glibc malloc and free. glibc's defaults adapt to that badly: a freed chunk raises
the mmap threshold, later chunks come from the heap, and as soon as twice that size is free at
the top of the heap it is handed back to the kernel. The heap then grows and shrinks on nearly
every read (`brk` twice), and each grown page is faulted in and zeroed again. Measured on 1 MiB
responses at 64 connections: about 12 `brk` calls per response and 3–4 times the CPU per
response, depending on what the heap looked like when the traffic started.

`tune()` fixes both thresholds: chunks under `MMAP_THRESHOLD` always come from the heap, and the
heap is trimmed only when `TRIM_THRESHOLD` bytes are free at its top. The memory kept is what
the worker's peak load used, at most `TRIM_THRESHOLD` more than it now holds. An operator who
sets glibc's own variables (`MALLOC_*_`, `GLIBC_TUNABLES`) keeps them: `tune()` then does
nothing.
"""

import ctypes
import os
from collections.abc import Mapping
from typing import Optional

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 4 << 20
TRIM_THRESHOLD = 32 << 20
_OPERATOR_VARIABLES = ("GLIBC_TUNABLES", "MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TOP_PAD_",
                       "MALLOC_MMAP_MAX_")


def tune(environ: Optional[Mapping[str, str]] = None) -> bool:
    """Apply the thresholds; False when glibc is absent or the operator configured malloc."""
    env = os.environ if environ is None else environ
    if any(name in env for name in _OPERATOR_VARIABLES):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the C library this process runs on
    except (OSError, AttributeError):  # no mallopt: not glibc
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
