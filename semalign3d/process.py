"""Process-wide settings for long CPU runs (the command line, the tests and the benchmarks).

PyTorch's CPU kernels allocate and free large temporaries at every optimiser step. glibc's
default thresholds return such blocks to the system and fault them back in on the next step,
which made fresh processes run CPU alignments 10-30x slower than a warmed-up one. Keeping freed
memory mapped removes that; it changes no result.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
from collections.abc import Iterator
from contextlib import contextmanager

import torch

#: glibc ``mallopt`` parameters and the ``MALLOC_*_`` variables that set them at start-up
_SETTINGS = (  # (mallopt id, environment variable, value)
    (-1, "MALLOC_TRIM_THRESHOLD_", 1_000_000_000),  # M_TRIM_THRESHOLD
    (-2, "MALLOC_TOP_PAD_", 100_000_000),  # M_TOP_PAD
    (-3, "MALLOC_MMAP_THRESHOLD_", 1_000_000_000),  # M_MMAP_THRESHOLD
)


def keep_freed_memory() -> bool:
    """Keep freed memory mapped in this process (glibc ``mallopt``, which overrides any
    ``MALLOC_*_`` values it was started with) and in the processes it starts (``MALLOC_*_``
    variables, unless already set: a user's own values reach e.g. papermill's kernels).

    Returns:
        Whether this process's allocator took the settings (False off glibc).
    """
    for _, name, value in _SETTINGS:
        os.environ.setdefault(name, str(value))
    path = ctypes.util.find_library("c")
    if path is None:
        return False
    try:
        mallopt = ctypes.CDLL(path).mallopt
    except (OSError, AttributeError):  # musl, macOS: no mallopt
        return False
    return all(mallopt(param, value) == 1 for param, _, value in _SETTINGS)


@contextmanager
def single_thread() -> Iterator[None]:
    """Run CPU tensor work on one thread inside the block.

    Multi-threaded CPU kernels are not bitwise reproducible (their blocking depends on the
    thread count and on memory alignment), and the prior's refinement and the alignment amplify
    the last bit through argmax choices: an aeroplane prior built on 2 threads instead of 1
    differed by 3e-5 of its size yet moved the category's PCK@0.1 by 8 points. One thread makes
    a result independent of the machine's core count and a resumed run equal an uninterrupted
    one.
    """
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)
