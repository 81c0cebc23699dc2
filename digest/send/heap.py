"""A run's memory: freed memory given back to the system between batches (glibc's
`malloc_trim`), and fewer passes of Python's garbage collector (`fewer_collections`).

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

import contextlib
import ctypes
import ctypes.util
import functools
import gc
from collections.abc import Callable, Iterator

#: Allocations of objects the garbage collector tracks between two passes over the youngest of
#: them, during a run (CPython's default: 700).
YOUNG_THRESHOLD = 10_000


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


@contextlib.contextmanager
def fewer_collections(threshold: int = YOUNG_THRESHOLD) -> Iterator[None]:
    """The garbage collector's youngest generation collected after `threshold` allocations
    instead of CPython's 700, in this process and the workers it forks meanwhile. A run makes
    millions of small objects that live for a batch (profiles, rankings, messages' parts); at
    700 the collector walked the survivors again and again before they died (10,000
    subscribers, three alternated runs: the parent's collector time 2.9-3.1 -> 1.6-2.1 CPU s,
    the workers' 0.65-0.80 -> 0.38-0.43 s). Cycles still go, a little later: memory moves by at
    most that many objects."""
    before = gc.get_threshold()
    gc.set_threshold(threshold, *before[1:])
    try:
        yield
    finally:
        gc.set_threshold(*before)
