"""Process memory settings for slide runs: glibc malloc's arena limit, and the garbage
collector's view of the objects that live as long as the process.

glibc gives each thread that allocates its own malloc arena (up to eight per core), and a
slide run has many threads besides dask's workers (zarr's I/O and event-loop threads, the
preview's). Memory a thread frees stays in its arena, where the main thread, which assembles
the small whole-slide results (a class map, its pyramid, the GeoJSON), cannot reuse it, so a
run's resident memory grows with every arena. Measured on the 50000² synthetic slide with
``configs/qc.yaml`` (``scripts/bench.py --size 50000 --cases qc``, 2 cores, 2 threads), peak
RSS: 399-485 MiB with glibc's default, 334-360 MiB with three arenas, 324-341 MiB with two, at
the same speed (3.4-4.1 s). The level-0 threshold pass ran 9.1-10.1 s with two arenas against
8.5-9.7 s without a cap (two runs each, within these machines' noise but consistently on the
slower side: the two worker threads then share one arena's lock), so the cap is one arena per
core plus one for the main thread: each dask worker thread keeps an arena of its own, and the
other threads share.

:func:`limit_malloc_arenas` sets it for this process; :func:`slidemask.pipeline.run_slide`,
:func:`slidemask.batch.run_batch` and the ``slidemask`` command call it first. The
``MALLOC_ARENA_MAX`` environment variable, when set, wins: set it (e.g. to 2 for the least
memory, or 64 for glibc's own choice on 8 cores) to choose.

Python's cyclic garbage collector also scans, in each full collection, every object the
imported modules made (about 90 000 for numpy, dask, zarr, tifffile, OpenCV and slidemask):
on a slide run, building the graph triggers one such collection, 0.08-0.13 s, 7 % of
``configs/tissue.yaml`` on a 50000² slide (1.36-1.42 s against 1.46-1.71 s).
:func:`freeze_startup_objects` moves the objects alive at the first slide run into the
collector's permanent generation (:func:`gc.freeze`), so later collections skip them; they
are still freed as usual when nothing refers to them. :func:`slidemask.pipeline.run_slide`
calls it on its first run in a process.
"""

from __future__ import annotations

import gc
import os
import threading

__all__ = ["ARENAS", "freeze_startup_objects", "limit_malloc_arenas"]

ARENAS = (os.cpu_count() or 1) + 1
"""Malloc arenas per process (``M_ARENA_MAX``) for slide runs: one per core (dask's default
worker threads) and one for the main thread."""

_M_ARENA_MAX = -8  # glibc's mallopt parameter (malloc.h)
_LOCK = threading.Lock()
_applied: bool | None = None
_frozen = False


def limit_malloc_arenas(count: int | None = None) -> bool:
    """Cap this process's glibc malloc arenas at ``count``, once, unless the user chose.

    Threads that have already allocated keep their arenas, so this works best before the
    first computation (the callers in slidemask call it first). The ``MALLOC_ARENA_MAX``
    environment variable is set too (when unset), so that worker processes started
    afterwards (dask's ``processes`` scheduler, a local cluster) start with the same cap.

    Parameters
    ----------
    count
        Arenas, >= 1; default :data:`ARENAS`.

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
    count = ARENAS if count is None else count
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


def freeze_startup_objects() -> bool:
    """Move every object alive now into the garbage collector's permanent generation, once
    per process (:func:`gc.freeze`; see the module notes).

    Returns
    -------
    bool
        True on the call that froze them, False on every later call.

    Examples
    --------
    >>> from slidemask.memory import freeze_startup_objects
    >>> isinstance(freeze_startup_objects(), bool)
    True
    """
    global _frozen
    with _LOCK:
        if _frozen:
            return False
        gc.freeze()
        _frozen = True
        return True
