"""Process memory settings for slide runs: glibc malloc's arena limit and its thresholds
for returning memory, and the garbage collector's view of the objects that live as long as
the process.

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

:func:`limit_malloc_arenas` sets it for this process. The ``MALLOC_ARENA_MAX`` environment
variable, when set, wins: set it (e.g. to 2 for the least memory, or 64 for glibc's own
choice on 8 cores) to choose.

glibc also hands every block of 128 KiB or more (a threshold it raises, up to 32 MiB, each
time such a block is freed) straight from the kernel with ``mmap`` and gives it back on
``free``, and gives back the free top of a heap above 128 KiB (or twice the raised
threshold). A slide run allocates and frees blocks of 0.25-12 MiB per tile and per chunk (a
decoded tile, a chunk's grey, a kernel's temporaries), so with these defaults each block's
pages are faulted in and zeroed by the kernel again and again: in ``configs/qc.yaml``'s blur
mask at 2 um per pixel on the 50000² slide, 160 000-210 000 page faults and 1.3-1.5 s of
system time per run; on the 20000² noisy slide's fill-holes and small-object pass,
140 000-190 000 faults. How many depends on which block happens to be freed first, so the
same job ran at two speeds. :data:`MMAP_THRESHOLD` and :data:`TRIM_THRESHOLD` (32 MiB each)
keep such blocks in the process for reuse. Measured (2 cores, alternating, three runs each):
the blur mask alone 1.84-2.25 s against 2.35-2.62 s (9 700 faults, 0.6-0.8 s system time);
the noisy fill-holes and small-object pass 4.07-4.52 s against 4.64-5.08 s; the level-0
threshold pass at 50000² 8.4-8.8 s against 9.1-9.5 s; the whole of ``configs/qc.yaml``, where
glibc's threshold rises early on its own, unchanged within the noise; peak RSS 3-6 MiB
higher. The cost: each arena may keep up to :data:`TRIM_THRESHOLD` of freed memory at its
top instead of returning it (at most one arena per core plus one, see above).
:func:`tune_malloc` sets both with the arena cap; ``MALLOC_MMAP_THRESHOLD_``,
``MALLOC_TRIM_THRESHOLD_`` or a ``glibc.malloc`` entry in ``GLIBC_TUNABLES``, when set, win.

:func:`slidemask.pipeline.run_slide`, :func:`slidemask.batch.run_batch`, the ``slidemask``
command and the first computation of a lazy mask by :mod:`slidemask` (its writers,
:func:`slidemask.ops.staged.compute`) call :func:`tune_malloc` first.

Python's cyclic garbage collector also scans, in each full collection, every object the
imported modules made (about 90 000 for numpy, dask, zarr, tifffile, OpenCV and slidemask):
on a slide run, building the graph triggers one such collection, 0.08-0.13 s, 7 % of
``configs/tissue.yaml`` on a 50000² slide (1.36-1.42 s against 1.46-1.71 s).
:func:`freeze_startup_objects` moves the objects alive at the first slide run into the
collector's permanent generation (:func:`gc.freeze`), so later collections skip them; they
are still freed as usual when nothing refers to them, but a reference cycle among them is
no longer collected (:func:`gc.unfreeze` undoes it).

:func:`prepare_process` does both, once per process, before slidemask's first computation:
:func:`slidemask.pipeline.run_slide`, :func:`slidemask.batch.run_batch`, the ``slidemask``
command, the public writers (:func:`slidemask.write_zarr` and the others) and
:func:`slidemask.ops.staged.compute` call it first, so a mask written from the Python API
runs under the same settings as a configuration. The collection it saves happens while a
writer builds and optimizes its graph: the public API's level-0 threshold pass on the 20000²
noisy slide started its first task 0.085-0.099 s after ``write_zarr`` was called, 0.033-0.048
s with the objects frozen (three fresh processes each).
"""

from __future__ import annotations

import gc
import os
import threading
from collections.abc import Callable

__all__ = [
    "ARENAS",
    "MMAP_THRESHOLD",
    "TRIM_THRESHOLD",
    "freeze_startup_objects",
    "limit_malloc_arenas",
    "prepare_process",
    "tune_malloc",
]

ARENAS = (os.cpu_count() or 1) + 1
"""Malloc arenas per process (``M_ARENA_MAX``) for slide runs: one per core (dask's default
worker threads) and one for the main thread."""

MMAP_THRESHOLD = 32 * 2**20
"""Bytes from which a block is mapped from the kernel and given back when freed (glibc's
``M_MMAP_THRESHOLD``; its largest allowed value on 64-bit systems)."""

TRIM_THRESHOLD = 32 * 2**20
"""Free bytes at the top of a heap above which glibc gives them back (``M_TRIM_THRESHOLD``)."""

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD, _M_ARENA_MAX = -1, -3, -8  # mallopt parameters (malloc.h)
_THRESHOLD_VARIABLES = {"MALLOC_MMAP_THRESHOLD_": MMAP_THRESHOLD,
                        "MALLOC_TRIM_THRESHOLD_": TRIM_THRESHOLD}
_LOCK = threading.Lock()
_settings: dict[str, bool] = {}  # each setting's outcome, once applied in this process
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
    count = ARENAS if count is None else count
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise ValueError(f"limit_malloc_arenas: count must be an integer >= 1, got {count!r}")
    return _once("arenas", lambda: _apply(count))


def tune_malloc() -> bool:
    """Set this process's glibc malloc for slide runs, once: the arena cap
    (:func:`limit_malloc_arenas`) and the thresholds :data:`MMAP_THRESHOLD` and
    :data:`TRIM_THRESHOLD` (see the module notes), unless the user chose them.

    The matching environment variables (``MALLOC_MMAP_THRESHOLD_``,
    ``MALLOC_TRIM_THRESHOLD_``) are set too, so that worker processes started afterwards
    allocate alike.

    Returns
    -------
    bool
        True when the thresholds are in force (set now or earlier by this function); False
        on platforms without glibc, or when the user set them before the first call.

    Examples
    --------
    >>> from slidemask.memory import tune_malloc
    >>> isinstance(tune_malloc(), bool)
    True
    """
    limit_malloc_arenas()
    return _once("thresholds", _apply_thresholds)


def _once(name: str, apply: Callable[[], bool]) -> bool:
    """``apply()`` on the first call for ``name`` in this process; its result ever after."""
    with _LOCK:
        if name not in _settings:
            _settings[name] = apply()
        return _settings[name]


def _mallopt(param: int, value: int) -> bool:
    """glibc's ``mallopt(param, value)``; False where the C library is not glibc."""
    try:
        libc_version = os.confstr("CS_GNU_LIBC_VERSION") or ""
    except (AttributeError, ValueError, OSError):  # not a glibc system
        return False
    if not libc_version.startswith("glibc"):
        return False
    import ctypes

    try:
        return bool(ctypes.CDLL(None).mallopt(param, value))
    except (OSError, AttributeError):  # pragma: no cover - a libc without mallopt
        return False


def _apply(count: int) -> bool:
    if "MALLOC_ARENA_MAX" in os.environ:
        return False  # the user's (or a parent process's) choice
    done = _mallopt(_M_ARENA_MAX, count)
    if done:
        os.environ["MALLOC_ARENA_MAX"] = str(count)
    return done


def _apply_thresholds() -> bool:
    if any(name in os.environ for name in _THRESHOLD_VARIABLES) or "glibc.malloc." in (
        os.environ.get("GLIBC_TUNABLES") or ""
    ):
        return False  # the user's (or a parent process's) choice
    done = _mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD) and _mallopt(
        _M_TRIM_THRESHOLD, TRIM_THRESHOLD
    )
    if done:
        os.environ.update({name: str(value) for name, value in _THRESHOLD_VARIABLES.items()})
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


def prepare_process() -> None:
    """Settle this process for slide runs, once: glibc's malloc (:func:`tune_malloc`) and the
    objects alive now out of the garbage collector's full scans
    (:func:`freeze_startup_objects`); see the module notes.

    slidemask's entry points call this before their first computation; calling it again costs
    two dictionary lookups.

    Examples
    --------
    >>> from slidemask.memory import prepare_process
    >>> prepare_process()
    """
    tune_malloc()
    freeze_startup_objects()
