"""Giving freed memory back to the system in model-holding processes.

A stage allocates hundreds of megabytes for one batch (Whisper's encoder attention alone is
batch x heads x 1500^2 floats) and frees them when it returns; glibc keeps much of that in its
per-thread arenas, so a worker's RSS stays at its highest batch instead of its steady state. Fewer
arenas and a trim after each stage keep it near what the models need. No-ops off glibc.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

log = logging.getLogger(__name__)

M_ARENA_MAX = -8  # mallopt parameter (malloc.h)

_libc = None
try:
    _name = ctypes.util.find_library("c")
    _libc = ctypes.CDLL(_name) if _name else None
    if _libc is not None and not hasattr(_libc, "malloc_trim"):
        _libc = None
except OSError:  # pragma: no cover - no libc to load
    _libc = None


def limit_arenas(count: int = 2) -> None:
    """Cap glibc's malloc arenas for threads created from now on (MALLOC_ARENA_MAX, set at run time)."""
    if _libc is not None:
        _libc.mallopt(M_ARENA_MAX, count)


def trim() -> None:
    """Return the free heap memory above what is in use to the system."""
    if _libc is not None:
        _libc.malloc_trim(0)
