"""Dask arrays over values already in memory: :func:`literal_array` without copying or hashing
them, :func:`as_dask` for the arrays the public functions accept."""

from __future__ import annotations

import itertools
import uuid
from typing import Any

import dask.array as da
import numpy as np
from dask.highlevelgraph import HighLevelGraph

from slidemask.errors import MaskError

__all__ = ["as_dask", "held_array", "literal_array"]


def as_dask(image: Any, name: str) -> da.Array:
    """``image`` as a dask array: a dask array as it is, a numpy array as one chunk.

    Parameters
    ----------
    image : dask.array.Array or numpy.ndarray
        The array a public function was given.
    name : str
        That function's name, for the error message.

    Returns
    -------
    dask.array.Array
        ``image`` itself, or a one-chunk dask array over the numpy array (no copy is kept
        beside it).

    Raises
    ------
    MaskError
        Anything else; the message names the function ``name`` that was called.

    Examples
    --------
    >>> import numpy as np
    >>> as_dask(np.zeros((2, 3), dtype=bool), "fill_holes").chunks
    ((2,), (3,))
    >>> as_dask([[1, 2]], "fill_holes")
    Traceback (most recent call last):
    ...
    slidemask.errors.MaskError: fill_holes expects a dask (or numpy) array, got list
    """
    if isinstance(image, da.Array):
        return image
    if isinstance(image, np.ndarray):
        return da.from_array(image)
    raise MaskError(f"{name} expects a dask (or numpy) array, got {type(image).__name__}")


def literal_array(
    array: np.ndarray, chunks: tuple[tuple[int, ...], ...], prefix: str
) -> da.Array:
    """A dask array whose chunks are views of ``array``, cut by ``chunks``.

    ``da.from_array`` copies a numpy array first (measured 45 ms for a 3125² RGB image) and
    hashes it for its name; here the graph holds the views themselves and the name is
    ``prefix`` plus a random suffix. Object arrays work too (one value per chunk of ones).

    Parameters
    ----------
    array : numpy.ndarray
        Any shape and dtype; not copied (do not modify it while the graph is in use).
    chunks : tuple of tuple of int
        Chunk lengths along every axis, summing to ``array.shape``.
    prefix : str
        Start of the graph key.

    Returns
    -------
    dask.array.Array
        Same shape and dtype as ``array``, chunked by ``chunks``.

    Examples
    --------
    >>> import numpy as np
    >>> lazy = literal_array(np.arange(6).reshape(2, 3), ((1, 1), (2, 1)), "values")
    >>> lazy.chunks
    ((1, 1), (2, 1))
    >>> lazy.sum().compute().item()
    15
    """
    key = f"{prefix}-{uuid.uuid4().hex}"
    starts = [np.concatenate([[0], np.cumsum(c)]).astype(int).tolist() for c in chunks]
    layer: dict[Any, Any] = {}
    for index in itertools.product(*(range(len(c)) for c in chunks)):
        window = tuple(slice(st[i], st[i + 1]) for st, i in zip(starts, index, strict=True))
        layer[(key, *index)] = array[window]
    graph = HighLevelGraph.from_collections(key, layer, dependencies=[])
    out = da.Array(
        graph, key, chunks=chunks, dtype=array.dtype, meta=np.empty((0,) * array.ndim, array.dtype)
    )
    setattr(out, _HELD_ATTR, array)
    return out


_HELD_ATTR = "_slidemask_held"


def held_array(lazy: da.Array) -> np.ndarray | None:
    """The array a :func:`literal_array` result was made from (None for any other array).

    A writer that needs the whole image in memory takes it from here instead of computing
    the chunks and joining them into a copy (a 3125² class map: 9.8 MB per copy).

    Examples
    --------
    >>> import numpy as np
    >>> values = np.arange(6).reshape(2, 3)
    >>> held_array(literal_array(values, ((1, 1), (3,)), "values")) is values
    True
    >>> held_array(literal_array(values, ((1, 1), (3,)), "values") + 1) is None
    True
    """
    return getattr(lazy, _HELD_ATTR, None)
