"""Computing graphs with global steps in stages: every slide-wide decision first, on its own.

A global operation (:mod:`slidemask.ops.components`, :mod:`slidemask.ops.holes`, an Otsu
threshold, the glass estimate of :mod:`slidemask.ops.density`) has one *barrier* task that
waits for a record of every chunk (the merge) and that every output chunk waits for. Computed
as one graph, dask's task ordering (``dask.order``) keeps, for each output task, the set of
input chunks it is connected to, and its bookkeeping of those sets grows with the square of the
chunk count: on a 50000² slide in 2048² chunks, ordering the 5000 tasks of
``remove_small_objects(fill_holes(mask))`` took 88 MiB, and a 100000 × 200000 scan would take
gigabytes, before any pixel is read.

:func:`compute` runs each barrier first, in a graph of its own (pass 1 and the merge: one
output), and puts its value into the rest of the graph as data; the last graph then depends on
no chunk of the slide's first pass. Memory of the ordering is then linear in the chunk count.
Results and the work done are those of one :func:`dask.compute`: each pass-1 task runs once
(its record is consumed by the merge; pass 2 reads what pass 1 stored), and nothing but the
barriers' values crosses from one stage to the next. The writers (:func:`slidemask.write_zarr`,
:func:`slidemask.write_ome_labels`, :func:`slidemask.write_geojson`) and the config runner
compute through it.
"""

from __future__ import annotations

from typing import Any

import dask
from dask._task_spec import DataNode
from dask.core import flatten
from dask.optimization import cull

__all__ = ["BARRIER_PREFIXES", "compute"]

BARRIER_PREFIXES: tuple[str, ...] = (
    "slidemask-components-merge-",
    "slidemask-otsu-",
    "slidemask-background-merge-",
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
    """:func:`dask.compute` of ``collections``, with the barrier of every global step computed
    first, each in its own graph (see the module's description).

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
    optimized = dask.optimize(*targets)
    dsk: dict[Any, Any] = {}
    for c in optimized:
        dsk.update(c.__dask_graph__())
    barriers = _barriers(dsk)
    if not barriers:
        return dask.compute(*collections, **kwargs)
    ancestry = {key: cull(dsk, [key])[0] for key in barriers}
    # a barrier's graph holds every barrier before it: fewer barriers above, earlier
    order = sorted(barriers, key=lambda key: sum(other in ancestry[key] for other in barriers))
    done: dict[Any, Any] = {}
    for key in order:
        sub, _ = cull({**dsk, **done}, [key])
        done[key] = DataNode(key, _run(sub, key, kwargs))
    keys = list(flatten([c.__dask_keys__() for c in optimized]))
    rest, _ = cull({**dsk, **done}, keys)
    rebuilt = iter(
        rebuild(rest, *args)
        for rebuild, args in (c.__dask_postpersist__() for c in optimized)
    )
    final = [next(rebuilt) if dask.is_dask_collection(c) else c for c in collections]
    return dask.compute(*final, optimize_graph=False, **kwargs)


def _run(graph: dict[Any, Any], key: Any, kwargs: dict[str, Any]) -> Any:
    from dask.delayed import Delayed

    (value,) = dask.compute(Delayed(key, graph), optimize_graph=False, **kwargs)
    return value
