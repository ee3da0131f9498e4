"""Computing graphs with global steps in stages: every slide-wide decision first, on its own.

A global operation (:mod:`slidemask.ops.components`, :mod:`slidemask.ops.holes`, an Otsu
threshold, the glass estimate of :mod:`slidemask.ops.density`) has one *barrier* task that
waits for a record of every chunk (the merge) and that every output chunk waits for. Computed
as one graph, dask's task ordering (``dask.order``) keeps, for each output task, the set of
input chunks it is connected to, and its bookkeeping of those sets grows with the square of the
chunk count: on a 50000² slide in 2048² chunks, ordering the 5000 tasks of
``remove_small_objects(fill_holes(mask))`` took 88 MiB, and a 100000 × 200000 scan would take
gigabytes, before any pixel is read.

:func:`compute` runs the barriers first, in graphs of their own (pass 1 and the merge; the
barriers that do not wait for one another in one graph), and puts their values into the rest
of the graph as data; the last graph then depends on
no chunk of the slide's first pass. Memory of the ordering is then linear in the chunk count.
Results and the work done are those of one :func:`dask.compute`: each pass-1 task runs once
(its record is consumed by the merge; pass 2 reads what pass 1 stored), and nothing but the
barriers' values crosses from one stage to the next. The writers (:func:`slidemask.write_zarr`,
:func:`slidemask.write_ome_labels`, :func:`slidemask.write_geojson`) and the config runner
compute through it.
"""

from __future__ import annotations

import atexit
import contextlib
import sys
import threading
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, wait
from typing import Any

import dask
from dask._task_spec import DataNode
from dask.core import flatten
from dask.optimization import cull

from slidemask.memory import prepare_process

__all__ = ["BARRIER_PREFIXES", "STORED_MASKS_PREFIX", "compute"]

STORED_MASKS_PREFIX = "slidemask-masks-stored-"
"""Name of the barrier after which a configuration's masks are read back from scratch
(:func:`slidemask.pipeline.build_mask` with several chunked masks)."""

BARRIER_PREFIXES: tuple[str, ...] = (
    "slidemask-components-merge-",
    "slidemask-otsu-",
    "slidemask-background-merge-",
    STORED_MASKS_PREFIX,
)
"""Names of the graph layers that hold a global operation's barrier task (each layer one
key, every chunk's record in, one decision out)."""


def _barriers(dsk: dict[Any, Any]) -> list[Any]:
    return [
        key for key in dsk
        if (key[0] if isinstance(key, tuple) and key else key).__class__ is str
        and (key[0] if isinstance(key, tuple) else key).startswith(BARRIER_PREFIXES)
    ]


def compute(*collections: Any, **kwargs: Any) -> tuple[Any, ...]:
    """:func:`dask.compute` of ``collections``, with the barriers of the global steps computed
    first, in stages (see the module's description): each stage computes every barrier that
    waits for no other barrier still to come.

    Parameters
    ----------
    *collections
        Dask collections (arrays, ``Delayed``); other objects are returned as they are.
    **kwargs
        Passed to :func:`dask.compute` (e.g. ``scheduler=``); the scheduler in effect is used.

    Returns
    -------
    tuple
        One computed value per collection, as :func:`dask.compute` returns them.

    Notes
    -----
    The first call in a process sets glibc's malloc for slide runs (arenas capped, freed
    blocks kept for reuse) unless the user set it, and keeps the objects alive then out of
    the garbage collector's full scans (:func:`slidemask.memory.prepare_process`).

    Examples
    --------
    >>> import tempfile
    >>> import dask
    >>> import dask.array as da
    >>> import numpy as np
    >>> from slidemask import fill_holes
    >>> ring = np.zeros((6, 6), bool)
    >>> ring[1:5, 1:5] = True
    >>> ring[2:4, 2:4] = False
    >>> tmp = tempfile.TemporaryDirectory()
    >>> with dask.config.set({"temporary-directory": tmp.name}):
    ...     (filled,) = compute(fill_holes(da.from_array(ring, chunks=3)))
    >>> int(filled.sum())
    16
    >>> tmp.cleanup()
    """
    targets = [c for c in collections if dask.is_dask_collection(c)]
    if not targets:
        return tuple(collections)
    prepare_process()  # once per process, before the first computation (slidemask.memory)
    with _waiting_for_tasks(_scheduler_kwargs(kwargs, targets)) as kwargs:
        return _compute(collections, targets, kwargs)


def _scheduler_kwargs(kwargs: dict[str, Any], collections: Sequence[Any]) -> dict[str, Any]:
    """``kwargs`` for :func:`dask.compute` of ``collections`` with the scheduler dask would
    choose named as its function where dask's choice is a local one and ``distributed`` is not
    imported (then no client can exist).

    To choose, dask imports ``distributed`` on a process's first compute wherever it is
    installed, to look for a client (0.6–0.8 s measured); a slidemask job that uses no
    client need not pay that.

    Parameters
    ----------
    kwargs
        Keyword arguments meant for :func:`dask.compute`.
    collections
        The dask collections to compute: their default scheduler applies when nothing is
        configured.

    Returns
    -------
    dict
        ``kwargs``, with ``scheduler=`` a function where that was resolved here.
    """
    if "distributed" in sys.modules:
        return kwargs
    from dask.base import named_schedulers

    scheduler = kwargs.get("scheduler")
    if scheduler is None:
        scheduler = dask.config.get("scheduler", None)
    if scheduler is None:
        defaults = {getattr(c, "__dask_scheduler__", None) for c in collections}
        if len(defaults) == 1 and callable(chosen := defaults.pop()):
            return {**kwargs, "scheduler": chosen}
        return kwargs
    if isinstance(scheduler, str) and scheduler.lower() in named_schedulers:
        return {**kwargs, "scheduler": named_schedulers[scheduler.lower()]}
    return kwargs


@contextlib.contextmanager
def _waiting_for_tasks(kwargs: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Under dask's threaded scheduler (the default) and without a ``pool`` of the caller's,
    compute on a pool that remembers the tasks it runs for this call, and wait for those
    still running before an error or Ctrl-C propagates. dask raises a task's error at once
    while other tasks run on; waiting for them means nothing writes a scratch or output file
    after the caller's clean-up. The pool is the one dask itself would use."""
    from dask.base import get_scheduler
    from dask.threaded import get as threaded_get

    scheduler = kwargs.get("scheduler")
    chosen = scheduler if callable(scheduler) else get_scheduler(scheduler=scheduler)
    if "pool" in kwargs or chosen is not threaded_get:
        yield kwargs
        return
    workers = kwargs.get("num_workers") or dask.config.get("num_workers", None)
    own = _pool(None if workers is None else int(workers))
    if own is None:
        yield kwargs
        return
    pool = _Tracked(own)
    try:
        yield {**kwargs, "pool": pool}
    except BaseException:
        pool.finish()
        raise


class _Tracked:
    """A thread pool's ``submit`` that remembers the futures not yet done (what dask's
    threaded scheduler needs of a pool: ``submit`` and ``_max_workers``)."""

    def __init__(self, pool: Any) -> None:
        self._pool = pool
        self._max_workers = pool._max_workers
        self._pending: set[Future[Any]] = set()
        self._lock = threading.Lock()

    def submit(self, fn: Any, /, *args: Any, **kwargs: Any) -> Future[Any]:
        future = self._pool.submit(fn, *args, **kwargs)
        with self._lock:
            self._pending.add(future)
        future.add_done_callback(self._forget)
        return future

    def _forget(self, future: Future[Any]) -> None:
        with self._lock:
            self._pending.discard(future)

    def finish(self) -> None:
        """Cancel the tasks not started; wait for the running ones."""
        with self._lock:
            pending = list(self._pending)
        for future in pending:
            future.cancel()
        wait(pending)


def release_thread_pools() -> None:
    """Shut down the thread pools dask keeps for the calling thread, and drop their exit hooks.

    dask's threaded scheduler keeps a pool for each thread other than the main one that
    computes, with an exit hook that holds it, until a computation in another thread finds the
    thread gone; the hooks are never dropped. A short-lived thread that computes, such as the
    outputs' thread of :func:`slidemask.pipeline.run_slide` (previews, a class map's GeoJSON),
    calls this as its last work, so that a batch does not keep a pool per slide (measured: 30
    slides with a preview left 32 executors behind, held by 31 exit hooks). Nothing in the main
    thread, or where this dask keeps its pools elsewhere.

    Examples
    --------
    >>> import threading
    >>> worker = threading.Thread(target=release_thread_pools)
    >>> worker.start(); worker.join()
    """
    from dask import threaded

    thread = threading.current_thread()
    if thread is threading.main_thread():
        return
    try:
        lock, pools = threaded.pools_lock, threaded.pools
    except AttributeError:  # another dask
        return
    with lock:
        owned = pools.pop(thread, {})
    for pool in owned.values():
        pool.shutdown(wait=True)
        atexit.unregister(pool.shutdown)


def _pool(workers: int | None) -> Any:
    """The pool dask's threaded scheduler would use for this call (its default pool from the
    main thread, else the calling thread's pool for ``workers``): the same threads, so no
    more threads (and C heaps) than dask alone; None where this dask keeps its pools
    elsewhere."""
    from dask import threaded

    try:
        lock, pools, main = threaded.pools_lock, threaded.pools, threaded.main_thread
        executor, cores = threaded.ContextAwareThreadPoolExecutor, threaded.CPU_COUNT
        threaded.default_pool  # noqa: B018 - present in the dask this follows
    except AttributeError:  # another dask: compute as dask does, without the wait
        return None
    thread = threading.current_thread()
    with lock:
        if workers is None and thread is main:
            if threaded.default_pool is None:
                threaded.default_pool = executor(cores)
                atexit.register(threaded.default_pool.shutdown)
            return threaded.default_pool
        if workers is None:
            workers = cores
        pool = pools[thread].get(workers)
        if pool is None:
            pool = pools[thread][workers] = executor(workers)
            atexit.register(pool.shutdown)
        return pool


def _compute(
    collections: tuple[Any, ...], targets: list[Any], kwargs: dict[str, Any]
) -> tuple[Any, ...]:
    optimized = dask.optimize(*targets)
    dsk: dict[Any, Any] = {}
    for c in optimized:
        dsk.update(c.__dask_graph__())
    barriers = _barriers(dsk)
    if not barriers:
        return dask.compute(*collections, **kwargs)
    ancestry = {key: cull(dsk, [key])[0] for key in barriers}
    done: dict[Any, Any] = {}
    pending = barriers
    while pending:
        # every barrier none of whose ancestors is still pending, in one graph: independent
        # global steps (the masks of a QC config) share their stage and its reads of the slide
        ready = [key for key in pending
                 if not any(other in ancestry[key] for other in pending if other != key)]
        sub, _ = cull({**dsk, **done}, ready)
        for key, value in zip(ready, _run(sub, ready, kwargs), strict=True):
            done[key] = DataNode(key, value)
        pending = [key for key in pending if key not in done]
    keys = list(flatten([c.__dask_keys__() for c in optimized]))
    rest, _ = cull({**dsk, **done}, keys)
    rebuilt = iter(
        rebuild(rest, *args)
        for rebuild, args in (c.__dask_postpersist__() for c in optimized)
    )
    final = [next(rebuilt) if dask.is_dask_collection(c) else c for c in collections]
    return dask.compute(*final, optimize_graph=False, **kwargs)


def _run(graph: dict[Any, Any], keys: list[Any], kwargs: dict[str, Any]) -> tuple[Any, ...]:
    from dask.delayed import Delayed

    return dask.compute(*(Delayed(key, graph) for key in keys), optimize_graph=False, **kwargs)
