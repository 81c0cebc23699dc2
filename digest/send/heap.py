"""Giving freed memory back to the system between batches (glibc's `malloc_trim`).

A run allocates score matrices of megabytes for each batch of subscribers and frees them before
the next. glibc's malloc serves blocks that large from its heap once one of them has been freed,
and keeps freed heap memory while anything lives above it; so a process of a long run would hold
its largest batch's garbage to the end. Two ways out were measured (10,000 subscribers, the
ranking of a whole run in one process, CPU of the ranking only):

- mapping every block of 1 MB or more on its own (`mallopt(M_MMAP_THRESHOLD)`, as this package
  did before): each matrix is new pages of zeros, faulted in and unmapped again: 2.6-3.0 s of
  system CPU;
- the heap as glibc keeps it, trimmed once a batch (`malloc_trim`, which also returns the free
  pages below the top of the heap): 1.0 s. Without either, 0.6 s, but the memory stays.

`trim` is called by each process once a batch is done with; elsewhere than glibc it does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
from collections.abc import Callable


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    name = ctypes.util.find_library("c")
    try:
        return ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError, TypeError):
        return None


def trim() -> bool:
    """Return this process's free heap memory to the system (True if glibc did so)."""
    malloc_trim = _malloc_trim()
    return bool(malloc_trim(0)) if malloc_trim is not None else False
