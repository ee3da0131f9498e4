"""Rechunking without a look for a distributed client that cannot exist.

:meth:`dask.array.Array.rechunk` chooses between its task-based and its peer-to-peer method by
asking ``distributed`` for a default client, importing ``distributed`` to do so (0.5 s measured,
in every process of a batch job). Where ``distributed`` is not imported no client can exist, and
dask's choice is ``"tasks"``; :func:`rechunk` names it so that dask does not import anything.
"""

from __future__ import annotations

import sys
from typing import Any

import dask.array as da

__all__ = ["rechunk"]


def rechunk(arr: da.Array, chunks: Any) -> da.Array:
    """``arr.rechunk(chunks)``: the same graph dask would build, without importing
    ``distributed`` where it is not imported yet.

    Parameters
    ----------
    arr : dask.array.Array
        Any dask array.
    chunks
        Anything :meth:`dask.array.Array.rechunk` takes.

    Returns
    -------
    dask.array.Array
        ``arr`` in ``chunks``; ``arr`` itself when its chunks are those already.
    """
    method = None if "distributed" in sys.modules else "tasks"
    return arr.rechunk(chunks, method=method)
