"""Process memory settings for slide runs: glibc malloc's arena limit.

glibc gives each thread that allocates its own malloc arena (up to eight per core). Memory a
dask worker thread frees stays in that thread's arena, where the main thread, which assembles
the small whole-slide results (a class map, its pyramid, the GeoJSON), cannot reuse it, so a
run's resident memory grows with every arena. Capping the arenas at two gave, on the 50000²
synthetic slide with ``configs/qc.yaml`` (``scripts/bench.py --size 50000 --cases qc``, 2
threads), a peak RSS of 324-332 MiB against 399-485 MiB, at the same speed (3.4-4.1 s either
way); the threshold and global cases ran at the same speed too. The cap is what many
long-running Python services set with ``MALLOC_ARENA_MAX=2``.

:func:`limit_malloc_arenas` sets it for this process; :func:`slidemask.pipeline.run_slide`,
:func:`slidemask.batch.run_batch` and the ``slidemask`` command call it first. The
``MALLOC_ARENA_MAX`` environment variable, when set, wins: set it (to any value, e.g. 8) to
keep glibc's own choice.
"""

from __future__ import annotations

import os
import threading

__all__ = ["ARENAS", "limit_malloc_arenas"]

ARENAS = 2
"""Malloc arenas per process (``M_ARENA_MAX``) for slide runs."""

_M_ARENA_MAX = -8  # glibc's mallopt parameter (malloc.h)
_LOCK = threading.Lock()
_applied: bool | None = None


def limit_malloc_arenas(count: int = ARENAS) -> bool:
    """Cap this process's glibc malloc arenas at ``count``, once, unless the user chose.

    Threads that have already allocated keep their arenas, so this works best before the
    first computation (the callers in slidemask call it first). The ``MALLOC_ARENA_MAX``
    environment variable is set too (when unset), so that worker processes started
    afterwards (dask's ``processes`` scheduler, a local cluster) start with the same cap.

    Parameters
    ----------
    count
        Arenas, >= 1.

    Returns
    -------
    bool
        True when the cap is in force (set now or earlier by this function); False on
        platforms without glibc, or when ``MALLOC_ARENA_MAX`` was set before the first call.

    Examples
    --------
    >>> from slidemask.memory import limit_malloc_arenas
    >>> isinstance(limit_malloc_arenas(), bool)
    True
    """
    global _applied
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise ValueError(f"limit_malloc_arenas: count must be an integer >= 1, got {count!r}")
    with _LOCK:
        if _applied is None:
            _applied = _apply(count)
        return _applied


def _apply(count: int) -> bool:
    if "MALLOC_ARENA_MAX" in os.environ:
        return False  # the user's (or a parent process's) choice
    try:
        libc_version = os.confstr("CS_GNU_LIBC_VERSION") or ""
    except (AttributeError, ValueError, OSError):  # not a glibc system
        return False
    if not libc_version.startswith("glibc"):
        return False
    import ctypes

    try:
        libc = ctypes.CDLL(None)
        done = bool(libc.mallopt(_M_ARENA_MAX, count))
    except (OSError, AttributeError):  # pragma: no cover - a libc without mallopt
        return False
    if done:
        os.environ["MALLOC_ARENA_MAX"] = str(count)
    return done
