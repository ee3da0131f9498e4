"""Exact tissue area inside every patch of a grid, chunk by chunk.

Mask pixel ``(r, c)`` covers level-0 pixels ``[c * d, (c + 1) * d) x [r * d, (r + 1) * d)``
(``d``: the mask's downsample). A patch ``[x, x + s) x [y, y + s)`` in general cuts mask
pixels at its edges, so each mask pixel is weighted by the area it shares with the patch.
That area is separable: the overlap length of the rows times that of the columns. So for a
chunk ``M`` (mask rows ``R``, cols ``C``) and the patches over it, the areas are

    A = Wr @ M @ Wc.T      (Wr: patches x R overlap lengths, Wc: patches x C)

in level-0 pixels squared. ``Wr`` is piecewise constant along the rows (a run of rows that
every patch weighs alike), and ``Wc`` along the columns, so the chunk is reduced to one
integer sum per (run of rows, run of columns): ``cv2.reduce`` per run of rows on the uint8
view of the mask (about 0.05 ns per pixel, never a float copy of the chunk), then
``np.add.reduceat`` over the runs of columns; two small matrix products with the run weights
give the areas. The runs of a chunk row (or column) are computed once and shared by its
chunks. With an integer downsample and integer patch origins every weight and sum is an
integer held exactly in float64, so the areas are exact and identical for any chunking; with
a fractional downsample they are exact to float64 rounding.

The per-chunk results (``patches over the chunk`` x ``patches over the chunk``) are summed
per patch in one final task. Memory: one chunk per worker thread, plus about 8 bytes per
candidate patch and class for the result.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import cv2
import dask.array as da
import numpy as np
from dask.base import tokenize
from dask.highlevelgraph import HighLevelGraph

from slidemask.ops.chunks import map_located
from slidemask.tiles.grid import TileGrid, axis_origins, axis_weights

__all__ = ["Runs", "axis_runs", "chunk_areas", "tile_areas"]


class Runs(NamedTuple):
    """One axis of a chunk, cut into maximal runs of pixels that every patch weighs alike.

    Parameters
    ----------
    starts : numpy.ndarray
        First pixel of each run; the runs partition the axis (run ``k`` is ``[starts[k],
        starts[k + 1])``, the last ends at ``length``).
    length : int
        Pixels along the axis.
    used : numpy.ndarray
        A bool per run: some patch weighs it.
    weights : numpy.ndarray
        ``(patches, used runs)`` float64: the weight of each used run's pixels.
    """

    starts: np.ndarray
    length: int
    used: np.ndarray
    weights: np.ndarray


def axis_runs(weights: np.ndarray) -> Runs:
    """Cut an axis into runs of pixels with equal weight columns.

    Parameters
    ----------
    weights : numpy.ndarray
        ``(patches, pixels)`` overlap lengths (:func:`slidemask.tiles.grid.axis_weights`).

    Returns
    -------
    Runs
        The maximal runs of equal columns of ``weights``.
    """
    count, length = weights.shape
    if length == 0 or count == 0:
        return Runs(np.zeros(1 if length else 0, np.intp), length,
                    np.zeros(1 if length else 0, bool), np.zeros((count, 0)))
    change = np.any(weights[:, 1:] != weights[:, :-1], axis=0)
    starts = np.concatenate([[0], np.flatnonzero(change) + 1])
    columns = weights[:, starts]
    used = np.any(columns != 0, axis=0)
    return Runs(starts, length, used, np.ascontiguousarray(columns[:, used]))


def _weighted(indicator: np.ndarray, rows: Runs, cols: Runs) -> np.ndarray:
    """``Wr @ indicator @ Wc.T`` for a uint8 0/1 ``indicator``, from per-run integer sums.

    One ``cv2.reduce`` per used run of rows gives that run's column sums; ``np.add.reduceat``
    then sums them per run of columns, leaving a ``(row runs, column runs)`` integer table
    that the small run-weight matrices turn into patch areas.
    """
    out_shape = (rows.weights.shape[0], cols.weights.shape[0])
    if not rows.used.any() or not cols.used.any():
        return np.zeros(out_shape)
    ends = np.append(rows.starts[1:], rows.length)
    used = np.flatnonzero(rows.used)
    sums = np.empty((used.size, indicator.shape[1]), np.int32)
    for k, run in enumerate(used.tolist()):
        a, b = int(rows.starts[run]), int(ends[run])
        sums[k] = cv2.reduce(indicator[a:b], 0, cv2.REDUCE_SUM, dtype=cv2.CV_32S)[0]
    if not sums.any():
        return np.zeros(out_shape)
    table = np.add.reduceat(sums, cols.starts, axis=1, dtype=np.int64)[:, cols.used]
    # integers in float64: exact while the areas stay below 2**53 level-0 pixels squared
    return rows.weights @ table.astype(np.float64) @ cols.weights.T


def chunk_areas(
    block: np.ndarray,
    row_weights: np.ndarray,
    col_weights: np.ndarray,
    values: Sequence[int] | None = None,
) -> np.ndarray:
    """Weighted mask area of each patch over one chunk: ``Wr @ (block == v) @ Wc.T``.

    Parameters
    ----------
    block : numpy.ndarray
        ``(R, C)`` mask chunk: ``bool`` or integer (nonzero = inside), or a class map.
    row_weights, col_weights : numpy.ndarray
        ``(n_rows, R)`` and ``(n_cols, C)`` float64 overlap lengths of the patch rows and
        columns with the chunk's rows and columns (:func:`slidemask.tiles.grid.axis_weights`).
    values : sequence of int, optional
        Class values: one area per value (pixels equal to it). None: one area, of the
        nonzero pixels.

    Returns
    -------
    numpy.ndarray
        ``(len(values) or 1, n_rows, n_cols)`` float64 areas in level-0 pixels squared.
    """
    return _areas(block, axis_runs(row_weights), axis_runs(col_weights), values)


def _areas(
    block: np.ndarray, rows: Runs, cols: Runs, values: Sequence[int] | None
) -> np.ndarray:
    shape = (1 if values is None else len(values), rows.weights.shape[0], cols.weights.shape[0])
    out = np.zeros(shape)
    if 0 in out.shape or block.size == 0:
        return out
    if values is None:
        indicators: list[np.ndarray] = [
            block.view(np.uint8) if block.dtype == np.bool_ else (block != 0).view(np.uint8)
        ]
    else:
        indicators = [(block == v).view(np.uint8) for v in values]
    for k, indicator in enumerate(indicators):
        out[k] = _weighted(np.ascontiguousarray(indicator), rows, cols)
    return out


class _ChunkAreas:
    """Picklable per-chunk task of :func:`tile_areas` (for process and distributed workers)."""

    def __init__(
        self,
        grid: TileGrid,
        downsample: float,
        row_ranges: tuple[tuple[int, int], ...],
        col_ranges: tuple[tuple[int, int], ...],
        values: tuple[int, ...] | None,
    ) -> None:
        self.grid = grid
        self.downsample = downsample
        self.row_ranges = row_ranges
        self.col_ranges = col_ranges
        self.values = values
        self._cache: dict[tuple[int, int], Runs] = {}

    def __reduce__(self) -> tuple[Any, ...]:
        args = (self.grid, self.downsample, self.row_ranges, self.col_ranges, self.values)
        return (_ChunkAreas, args)

    def _runs(self, axis: int, index: int, start: int, stop: int) -> Runs:
        """The runs of chunk row (axis 0) or column (axis 1) ``index``, computed once per
        process: every chunk of a chunk row shares its row runs."""
        key = (axis, index)
        runs = self._cache.get(key)
        if runs is None:
            k0, k1 = (self.row_ranges if axis == 0 else self.col_ranges)[index]
            g = self.grid
            weights = axis_weights(axis_origins(k1 - k0, g.step, k0), g.size,
                                   g.level0_shape[axis], self.downsample, start, stop)
            runs = self._cache[key] = axis_runs(weights)  # a race only computes it twice
        return runs

    def __call__(
        self, block: np.ndarray, *, location: tuple[int, ...], offset: tuple[int, ...]
    ) -> np.ndarray:
        (ci, cj), (r0, c0) = location, offset
        r1, c1 = r0 + block.shape[0], c0 + block.shape[1]
        return _areas(block, self._runs(0, ci, r0, r1), self._runs(1, cj, c0, c1), self.values)


def _patch_ranges(
    origins: np.ndarray, size: int, extent: int, downsample: float, chunks: tuple[int, ...]
) -> tuple[tuple[int, int], ...]:
    """For each chunk along an axis, the patches ``[k0, k1)`` that overlap it."""
    out = []
    start = 0
    for n in chunks:
        lo = start * downsample
        hi = min((start + n) * downsample, float(extent))
        if hi <= lo:
            out.append((0, 0))
        else:
            k0 = int(np.searchsorted(origins, lo - size, side="right"))
            k1 = int(np.searchsorted(origins, hi, side="left"))
            out.append((k0, max(k0, k1)))
        start += n
    return tuple(out)


def _assemble(
    parts: list[np.ndarray],
    row_ranges: tuple[tuple[int, int], ...],
    col_ranges: tuple[tuple[int, int], ...],
    shape: tuple[int, int, int],
) -> np.ndarray:
    out = np.zeros(shape)
    ncols = len(col_ranges)
    for index, part in enumerate(parts):
        (i0, i1), (j0, j1) = row_ranges[index // ncols], col_ranges[index % ncols]
        if part.size:
            out[:, i0:i1, j0:j1] += part
    return out


def tile_areas(
    mask: da.Array,
    grid: TileGrid,
    *,
    downsample: float = 1.0,
    values: Sequence[int] | None = None,
) -> da.Array:
    """Lazy mask area inside every patch of ``grid``, in level-0 pixels squared.

    Parameters
    ----------
    mask : dask.array.Array
        2-D, in the mask's own pixels (``bool``, integer nonzero = inside, or an integer
        class map with ``values``), any chunking.
    grid : TileGrid
        The patches (:func:`slidemask.tiles.grid.make_grid`), level-0 pixels.
    downsample : float, optional
        Level-0 pixels per mask pixel.
    values : sequence of int, optional
        Class values to measure separately; None measures the nonzero pixels.

    Returns
    -------
    dask.array.Array
        ``(len(values) or 1, grid.rows, grid.cols)`` float64, one chunk. Divide by
        ``grid.size ** 2`` for fractions. Mask pixels beyond the slide's level-0 extent
        (``grid.level0_shape``) do not count.

    Examples
    --------
    >>> import dask.array as da
    >>> from slidemask.tiles import make_grid, tile_areas
    >>> mask = da.ones((10, 10), dtype=bool, chunks=4)
    >>> grid = make_grid(size=8, level0_shape=(20, 20))  # mask at downsample 2
    >>> tile_areas(mask, grid, downsample=2.0).compute()[0]
    array([[64., 64.],
           [64., 64.]])
    """
    ys, xs = grid.ys(), grid.xs()
    rows0, cols0 = grid.level0_shape
    row_ranges = _patch_ranges(ys, grid.size, rows0, downsample, mask.chunks[0])
    col_ranges = _patch_ranges(xs, grid.size, cols0, downsample, mask.chunks[1])
    kinds = 1 if values is None else len(values)
    vals = None if values is None else tuple(int(v) for v in values)
    task = _ChunkAreas(grid, float(downsample), row_ranges, col_ranges, vals)
    parts = map_located(
        task,
        mask,
        new_axis=0,
        chunks=((kinds,), tuple(b - a for a, b in row_ranges), tuple(b - a for a, b in col_ranges)),
        dtype=np.float64,
        meta=np.empty((0, 0, 0), np.float64),
        name=f"slidemask-tile-parts-{tokenize(mask.name, grid, downsample, vals)}",
    )
    shape = (kinds, grid.rows, grid.cols)
    # One task that sums every chunk's part into its place. Written as a graph layer: going
    # through parts.to_delayed() and dask.delayed costs 0.3 s of graph work on 625 chunks.
    name = f"slidemask-tile-areas-{tokenize(parts.name)}"
    keys = [(parts.name, 0, i, j) for i in range(len(row_ranges)) for j in range(len(col_ranges))]
    layer: dict[Any, Any] = {(name, 0, 0, 0): (_assemble, keys, row_ranges, col_ranges, shape)}
    graph = HighLevelGraph.from_collections(name, layer, dependencies=[parts])  # type: ignore[list-item]
    return da.Array(graph, name, chunks=tuple((n,) for n in shape), dtype=np.float64,
                    meta=np.empty((0, 0, 0), np.float64))
