"""map_located: a chunk function told its chunk's index and first element, for any chunking."""

from __future__ import annotations

import pickle
from typing import Any

import dask
import dask.array as da
import numpy as np
from dask.base import tokenize
from hypothesis import given, settings
from hypothesis import strategies as st

from slidemask.ops.chunks import map_located


def _place(
    block: np.ndarray, *, location: tuple[int, ...], offset: tuple[int, ...]
) -> np.ndarray:
    out = np.empty((1, 1), dtype=object)
    out[0, 0] = (location, offset, block.shape)
    return out


def _sizes(total: int) -> st.SearchStrategy[tuple[int, ...]]:
    return st.lists(st.integers(1, total), min_size=1, max_size=5).map(
        lambda cuts: _split(total, cuts)
    )


def _split(total: int, cuts: list[int]) -> tuple[int, ...]:
    edges = sorted({0, total, *cuts})
    return tuple(b - a for a, b in zip(edges, edges[1:], strict=False))


@settings(max_examples=40, deadline=None)
@given(st.data())
def test_location_and_offset_match_block_info(data: Any) -> None:
    rows, cols = data.draw(st.integers(1, 40)), data.draw(st.integers(1, 40))
    chunks = (data.draw(_sizes(rows)), data.draw(_sizes(cols)))
    arr = da.zeros((rows, cols), dtype=np.uint8, chunks=chunks)
    placed = map_located(_place, arr, chunks=tuple((1,) * len(c) for c in chunks),
                         dtype=object, meta=np.empty((0, 0), object))
    with dask.config.set(scheduler="sync"):
        got = placed.compute()
    starts = [np.cumsum((0, *c))[:-1] for c in chunks]
    for i, j in np.ndindex(got.shape):
        location, offset, shape = got[i, j]
        assert location == (i, j)
        assert offset == (starts[0][i], starts[1][j])
        assert shape == (chunks[0][i], chunks[1][j])


def test_new_and_dropped_axes() -> None:
    rgb = da.zeros((10, 7, 3), dtype=np.uint8, chunks=(4, 3, 3))

    def first(block: np.ndarray, *, location: tuple[int, ...],
              offset: tuple[int, ...]) -> np.ndarray:
        assert location[2] == 0 and offset[2] == 0  # the dropped axis: one chunk
        return np.full((1, 1), offset[0] * 100 + offset[1])

    grid = map_located(first, rgb, chunks=((1,) * 3, (1,) * 3), drop_axis=2, dtype=int,
                       meta=np.empty((0, 0), int))
    assert grid.compute(scheduler="sync").tolist() == [[0, 3, 6], [400, 403, 406],
                                                       [800, 803, 806]]

    def stacked(block: np.ndarray, *, location: tuple[int, ...],
                offset: tuple[int, ...]) -> np.ndarray:
        return np.full((2, 1, 1), location[0] * 10 + location[1])

    grey = da.zeros((10, 7), dtype=np.uint8, chunks=(4, 3))
    parts = map_located(stacked, grey, new_axis=0, chunks=((2,), (1,) * 3, (1,) * 3),
                        dtype=int, meta=np.empty((0, 0, 0), int))
    assert parts.compute(scheduler="sync")[1].tolist() == [[0, 1, 2], [10, 11, 12],
                                                           [20, 21, 22]]


def test_names_are_deterministic_and_tasks_pickle() -> None:
    arr = da.zeros((9, 9), dtype=np.uint8, chunks=4)
    make = lambda: map_located(  # noqa: E731
        _place, arr, chunks=((1,) * 3, (1,) * 3), dtype=object, meta=np.empty((0, 0), object)
    )
    assert make().name == make().name
    graph = dict(make().__dask_graph__())
    assert pickle.loads(pickle.dumps(graph))  # picklable for the distributed scheduler
    assert tokenize(make()) == tokenize(make())
