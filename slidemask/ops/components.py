"""Connected components of a chunked mask, exact across chunks, and the operations built on them.

Every operation here equals its whole-image counterpart bit for bit, for any chunking, and
stays lazy: dask ``bool`` mask in, dask array (or ``Delayed``) out.

How it works (two passes and one merge)
---------------------------------------
1. Per chunk (:mod:`slidemask.kernels.labels`): label the chunk with OpenCV (raster-ordered,
   canonical labels) and emit a summary: area, bounding box and first pixel of each label that
   touches a chunk face (plus a few interior labels some operations need), and the labels
   along the chunk's four faces.
2. Per chunk, with its neighbours below, right and diagonal: the distinct label pairs that
   touch across each shared face or corner (corners count for 8-connectivity).
3. One merge task: connected components of the graph of reported labels
   (:func:`slidemask.kernels.graph.graph_components`)
   give global components with summed areas, joined boxes and first pixels; the operation
   decides per component (keep, fill, global label) and stores one value per reported label.
4. Per chunk: recompute the chunk's labels and apply that chunk's small lookup table; labels
   not reported in pass 1 lie wholly inside the chunk and are decided locally.

When the engine stores each chunk between the passes (:meth:`TwoPass.pass1_chunk`,
:meth:`TwoPass.apply_stored`), pass 1 already applies those local decisions to the tile it
stores (``remove_small_objects``: interior small objects erased; ``fill_holes``: interior
holes filled; ``keep_largest``: the interior objects that cannot be among the n largest
erased where that is cheap, the others reported), so pass 2 only changes the few components
the chunk reports, found again from one pixel each, without labelling the chunk again.

Memory: the merge holds a few ``int64`` per *reported* label (labels on chunk faces, plus all
labels for :func:`label_stats`), not per pixel; each chunk task holds a few ``int32`` arrays
of its chunk. Faces are consumed by the pair tasks and never reach the merge. :func:`label`
numbers the components it does not report from per-row counts of their first pixels
(:class:`RowNumbering`: 2 bytes per row of each chunk).

Per-chunk measures come from OpenCV's border following (``cv2.findContours``) where a chunk
has few borders, from labelling a band along the chunk's faces where it is riddled with
pinholes (:func:`slidemask.kernels.labels.face_components`), else from labelling; all give the
same numbers (tested). Pass 2 flood-fills the components it changes, from pixels pass 1
recorded, rather than labelling the chunk again.

Each operation is a :class:`TwoPass` plan, and ``plan.run(mask)`` is how every caller runs it
(the public functions, and through them a config): pass 1 computes each chunk once, stores
the tile :meth:`TwoPass.pass1_chunk` gives (the chunk with its own local decisions applied)
to scratch and returns only its record; pass 2 waits for the merge and reads the stored tile
back (:mod:`slidemask.ops.scratch`). The input is never held for the whole slide and never
computed twice, also in chains of global operations. A mask of one chunk is one task.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import dask
import dask.array as da
import numpy as np
from dask.base import tokenize
from dask.delayed import Delayed
from dask.graph_manipulation import bind
from dask.highlevelgraph import HighLevelGraph

from slidemask.errors import MaskError
from slidemask.kernels import labels as kl
from slidemask.kernels.graph import graph_components
from slidemask.ops.chunks import map_located, rechunk
from slidemask.ops.literal import as_dask, literal_array

__all__ = [
    "ComponentTable",
    "area_to_pixels",
    "keep_largest",
    "label",
    "label_stats",
    "label_with_stats",
    "TwoPass",
    "keep_largest_plan",
    "remove_small_objects",
    "remove_small_objects_plan",
]

_MERGE_PREFIX = "slidemask-components-merge-"
_OBJ_META = np.empty((0, 0), dtype=object)
_BIG = np.iinfo(np.int64).max


def area_to_pixels(area_um2: float, mpp: float) -> float:
    """Convert an area in µm² to pixels of an array whose pixels are ``mpp`` µm wide (and high).

    Parameters
    ----------
    area_um2 : float
        Area in square micrometres.
    mpp : float
        Micrometres per pixel of the array (for a mask at a working resolution, its
        ``Resolution.mpp``, not the slide's level-0 mpp).

    Returns
    -------
    float
        ``area_um2 / mpp**2`` pixels, not rounded (areas compare with pixel counts).

    Raises
    ------
    MaskError
        ``mpp`` is not positive, or either is not a number.

    Examples
    --------
    >>> from slidemask import area_to_pixels
    >>> area_to_pixels(10_000, 8.0)  # 0.01 mm² at 8 µm per pixel
    156.25
    """
    try:
        area, scale = float(area_um2), float(mpp)
    except (TypeError, ValueError):
        raise MaskError(
            f"area_to_pixels: area and microns per pixel must be numbers, got {area_um2!r} "
            f"and {mpp!r}"
        ) from None
    if not scale > 0:
        raise MaskError(f"microns per pixel must be positive, got {mpp!r}")
    return area / scale**2


@dataclass(frozen=True)
class ComponentTable(kl.Extents):
    """Global table of connected components, one row per component.

    Rows are in raster order of each component's first pixel, so row ``k`` describes label
    ``k + 1`` of :func:`label` (and of ``skimage.measure.label``). Computed by
    :func:`label_stats`.

    Attributes
    ----------
    area : numpy.ndarray
        Pixel count of each component (``int64``, as all the arrays).
    top, left, bottom, right : numpy.ndarray
        Bounding box in pixels of the labelled array: ``top``/``left`` inclusive,
        ``bottom``/``right`` exclusive.
    first_row, first_col : numpy.ndarray
        The component's first pixel in row-major order.
    label : numpy.ndarray
        Labels 1..N.

    Examples
    --------
    >>> import dask.array as da
    >>> import numpy as np
    >>> from slidemask import label_stats
    >>> mask = np.array([[1, 1, 0, 0, 1],
    ...                  [1, 1, 0, 1, 0],
    ...                  [0, 0, 0, 0, 0],
    ...                  [1, 0, 1, 1, 1]], dtype=bool)
    >>> chunked = da.from_array(mask, chunks=(2, 3))
    >>> table = label_stats(chunked).compute()
    >>> len(table), table.label, table.area
    (4, array([1, 2, 3, 4]), array([4, 2, 1, 3]))
    >>> table.top, table.left, table.bottom, table.right
    (array([0, 0, 3, 3]), array([0, 3, 0, 2]), array([2, 2, 4, 4]), array([2, 5, 1, 5]))
    """


    @property
    def label(self) -> np.ndarray:
        """Labels 1..N (``int64``)."""
        return np.arange(1, len(self.area) + 1, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.area)


# ----------------------------------------------------------------------------------------------
# Validation and graph plumbing
# ----------------------------------------------------------------------------------------------


def check_mask(mask: Any, what: str) -> da.Array:
    """Return ``mask`` if it is a 2-D ``bool`` dask array without empty chunks (a numpy
    array becomes one chunk).

    Empty chunks (possible after slicing) are merged away, since a face-to-face merge needs
    every chunk to have pixels.
    """
    if isinstance(mask, np.ndarray):
        mask = as_dask(mask, what)  # one chunk, as the public functions' docstrings say
    if not isinstance(mask, da.Array):
        raise MaskError(f"{what}: expected a dask array, got {type(mask).__name__}")
    if mask.ndim != 2:
        raise MaskError(f"{what}: expected a 2-D mask (rows, cols), got shape {mask.shape}")
    if mask.dtype != bool:
        raise MaskError(f"{what}: expected a bool mask, got dtype {mask.dtype}")
    if mask.size and any(0 in c for c in mask.chunks):
        mask = rechunk(mask, tuple(tuple(s for s in c if s) for c in mask.chunks))
    return mask


def check_count(n: Any, what: str) -> int:
    if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 0:
        raise MaskError(f"{what}: n must be a non-negative integer, got {n!r}")
    return int(n)


def check_area(area: Any, what: str) -> float:
    try:
        value = float(area)
    except (TypeError, ValueError):
        raise MaskError(f"{what}: area must be a number of pixels, got {area!r}") from None
    if np.isnan(value):
        raise MaskError(f"{what}: area must be a number of pixels, got NaN")
    return value


def _check_connectivity(connectivity: Any, what: str) -> int:
    if connectivity not in (4, 8):
        raise MaskError(f"{what}: connectivity must be 4 or 8, got {connectivity!r}")
    return int(connectivity)


def _one(value: Any) -> np.ndarray:
    out = np.empty((1, 1), dtype=object)
    out[0, 0] = value
    return out


def _pass1_block(
    tile: np.ndarray, *, kernel: Callable[..., kl.Record], kwargs: dict[str, Any],
    location: tuple[int, ...], offset: tuple[int, ...],
) -> np.ndarray:
    return _one(kernel(tile, offset=offset[:2], **kwargs))


Faces = dict[str, kl.Faces]
Edges = dict[str, tuple[np.ndarray, np.ndarray]]


def _vertical_edges(upper: Faces, lower: Faces, layers: dict[str, int]) -> Edges:
    """Pairs across the face between chunk (i, j) and chunk (i + 1, j)."""
    out = {
        name: kl.face_edges(upper[name].bottom, lower[name].top, connectivity=conn)
        for name, conn in layers.items()
    }
    if "fg" in layers and "bg" in layers:
        # A background label on the lower chunk's top row has its first pixel there (at its
        # first occurrence); the owner of that pixel's hole is the object just above it.
        bg_labels, where = np.unique(lower["bg"].top, return_index=True)
        fg_above = upper["fg"].bottom[where]
        ok = (bg_labels > 0) & (fg_above > 0)
        out["owners"] = (bg_labels[ok], fg_above[ok])
    return out


def _horizontal_edges(left: Faces, right: Faces, layers: dict[str, int]) -> Edges:
    """Pairs across the face between chunk (i, j) and chunk (i, j + 1)."""
    return {
        name: kl.face_edges(left[name].right, right[name].left, connectivity=conn)
        for name, conn in layers.items()
    }


def _corner_edges(upper: Faces, lower: Faces, layers: dict[str, int], *, anti: bool) -> Edges:
    """Pairs across a chunk corner (8-connectivity only).

    Diagonal: ``upper`` = chunk (i, j), ``lower`` = chunk (i + 1, j + 1); anti-diagonal:
    ``upper`` = chunk (i, j + 1), ``lower`` = chunk (i + 1, j).
    """
    out = {}
    for name, conn in layers.items():
        la = upper[name].bottom[0 if anti else -1]
        lb = lower[name].top[-1 if anti else 0]
        if conn == 8 and la > 0 and lb > 0:
            out[name] = (np.array([la], kl.LABEL_DTYPE), np.array([lb], kl.LABEL_DTYPE))
    return out


def _row_pair_task(
    row: list[np.ndarray], below: list[np.ndarray] | None, *, layers: dict[str, int]
) -> list[np.ndarray]:
    """:func:`_pair_task` for each chunk of a row of chunks, with the row ``below`` (None for
    the last row)."""
    n = len(row)
    return [
        _pair_task(
            row[j], None if below is None else below[j], row[j + 1] if j + 1 < n else None,
            None if below is None or j + 1 >= n else below[j + 1], layers=layers,
        )
        for j in range(n)
    ]


def _pair_task(
    record: np.ndarray,
    below: np.ndarray | None,
    right: np.ndarray | None,
    below_right: np.ndarray | None,
    *,
    layers: dict[str, int],
) -> np.ndarray:
    """Chunk (i, j)'s summaries plus its pairs with the chunks below, right and diagonal.

    The faces stop here: the merge receives summaries and label pairs only.
    """
    summaries, faces = record[0, 0]
    edges: dict[str, Edges] = {}
    if below is not None:
        edges["v"] = _vertical_edges(faces, below[0, 0][1], layers)
    if right is not None:
        edges["h"] = _horizontal_edges(faces, right[0, 0][1], layers)
    if below_right is not None and below is not None and right is not None:
        edges["d"] = _corner_edges(faces, below_right[0, 0][1], layers, anti=False)
        edges["a"] = _corner_edges(right[0, 0][1], below[0, 0][1], layers, anti=True)
    return _one((summaries, edges))


@dataclass(frozen=True)
class LayerMerge(kl.Extents):
    """Merged components of one labelling ("fg" or "bg"), driver side.

    Nodes are the reported (chunk, local label) pairs, numbered chunk by chunk in row-major
    chunk order; ``base[k]`` is the first node of chunk ``k``. Component arrays are indexed by
    component number (arbitrary order); ``first_node`` is the node holding the first pixel,
    ``node_row`` each node's own first row (in the whole array). ``owner_node`` (background
    with hole owners only): for each node the foreground node just above its first pixel, -1
    where unknown. ``starts`` (when the chunks counted them): per chunk row, per chunk, the
    chunk's :attr:`~slidemask.kernels.labels.LayerSummary.starts`.
    """

    base: np.ndarray
    ids: np.ndarray
    node_comp: np.ndarray
    first_node: np.ndarray
    node_row: np.ndarray
    owner_node: np.ndarray | None = None
    starts: tuple[tuple[np.ndarray, ...], ...] | None = None


@dataclass(frozen=True)
class RowNumbering:
    """How the merge numbered the components of a labelling without a table of them (the
    chunks reported their face components and counted the rest per row).

    For chunk (i, j), row r, the global label of the first component whose first pixel lies
    in that row of that chunk (:attr:`slidemask.kernels.labels.RowNumbers.first`) is
    ``before[i][r] + 1`` plus the components numbered in row r of the chunks to the left:
    their ``starts`` less their reported labels numbered elsewhere (:func:`chunk_lut` adds
    them up). ``before[i]`` (``int64``, per row of chunk row i): the components whose first
    pixel lies in a row above. ``starts[k]``: chunk k's counts (row-major chunk order), as
    pass 1 made them. ``owned`` (``bool``, per node): whether the node holds its component's
    first pixel; ``node_row``: the node's first row in the whole array; ``top[i]``: the first
    row of chunk row i.

    Memory: the chunks' counts (2 bytes per row per chunk, shared with their records), 8
    bytes per row of the array, a few bytes per node.
    """

    before: tuple[np.ndarray, ...]
    starts: tuple[np.ndarray, ...]
    owned: np.ndarray
    node_row: np.ndarray
    top: np.ndarray


@dataclass(frozen=True)
class Merged:
    """Result of the merge task: per layer, one value per node; optionally a table."""

    grid: tuple[int, int]
    base: dict[str, np.ndarray]
    ids: dict[str, np.ndarray]
    values: dict[str, np.ndarray]
    table: ComponentTable | None = None
    seeds: dict[str, list[kl.Seeds | None]] = field(default_factory=dict)
    """Per layer whose chunks made them, each chunk's :class:`~slidemask.kernels.labels.Seeds`
    (row-major chunk order), passed on to pass 2."""
    rows: RowNumbering | None = None
    """For a labelling numbered from per-row counts (layer "fg"), what pass 2 needs to number
    each chunk's unreported components."""


Decision = tuple[dict[str, np.ndarray], ComponentTable | RowNumbering | None]
"""What a merge's decision returns: per layer one value per node, and optionally a table of
every component or (a labelling from per-row counts) a :class:`RowNumbering`."""


def _cat(parts: list[np.ndarray], dtype: Any) -> np.ndarray:
    return np.concatenate(parts).astype(dtype, copy=False) if parts else np.zeros(0, dtype)


def _merge_layer(
    name: str,
    summaries: np.ndarray,
    pair_grids: list[tuple[np.ndarray | None, int, int, int, int]],
) -> tuple[LayerMerge, Callable[[int, np.ndarray], np.ndarray]]:
    nbr, nbc = summaries.shape
    chunks = [summaries[i, j][name] for i in range(nbr) for j in range(nbc)]
    sizes = np.array([len(s.ids) for s in chunks], np.int64)
    base = np.concatenate([[0], np.cumsum(sizes)])
    n_nodes = int(base[-1])

    def nodes(k: int, local: np.ndarray) -> np.ndarray:
        return base[k] + np.searchsorted(chunks[k].ids, local)

    us: list[np.ndarray] = []
    vs: list[np.ndarray] = []
    for grid, di_a, dj_a, di_b, dj_b in pair_grids:
        if grid is None:
            continue
        for i, j in np.ndindex(grid.shape):
            entry: Edges = grid.item(i, j)
            pairs = entry.get(name)
            if pairs is None or len(pairs[0]) == 0:
                continue
            us.append(nodes((i + di_a) * nbc + j + dj_a, pairs[0]))
            vs.append(nodes((i + di_b) * nbc + j + dj_b, pairs[1]))
    u = _cat(us, np.int64)
    v = _cat(vs, np.int64)
    n_comp, node_comp = graph_components(n_nodes, u, v)

    def cat(attr: str) -> np.ndarray:
        return _cat([getattr(s, attr) for s in chunks], np.int64)

    area = np.zeros(n_comp, np.int64)
    np.add.at(area, node_comp, cat("area"))
    boxes = {}
    for attr, ufunc, init in (
        ("top", np.minimum, _BIG), ("left", np.minimum, _BIG),
        ("bottom", np.maximum, -1), ("right", np.maximum, -1),
    ):
        arr = np.full(n_comp, init, np.int64)
        ufunc.at(arr, node_comp, cat(attr))
        boxes[attr] = arr
    first_row, first_col = cat("first_row"), cat("first_col")
    order = np.lexsort((first_col, first_row, node_comp))
    starts = np.ones(n_nodes, bool)
    starts[1:] = node_comp[order][1:] != node_comp[order][:-1]
    first_node = order[starts]
    row_counts = None
    if chunks and all(s.starts is not None for s in chunks):
        row_counts = tuple(tuple(summaries[i, j][name].starts for j in range(nbc))
                           for i in range(nbr))
    merge = LayerMerge(
        base=base, ids=_cat([s.ids for s in chunks], kl.LABEL_DTYPE), node_comp=node_comp,
        area=area, **boxes, first_row=first_row[first_node], first_col=first_col[first_node],
        first_node=first_node, node_row=first_row, starts=row_counts,
    )
    return merge, nodes


def merge_summaries(
    summaries: np.ndarray,
    vertical: np.ndarray | None,
    horizontal: np.ndarray | None,
    diagonal: np.ndarray | None,
    anti: np.ndarray | None,
    *,
    layers: dict[str, int],
    shape: tuple[int, int],
    decide: Callable[..., Decision],
) -> Merged:
    """The merge task: join chunk summaries into global components and let ``decide`` judge.

    ``decide(layers: dict[str, LayerMerge], shape)`` returns one value per node for the layers
    pass 2 reads, and optionally a :class:`ComponentTable` or a :class:`RowNumbering`.
    """
    pair_grids = [
        (vertical, 0, 0, 1, 0), (horizontal, 0, 0, 0, 1),
        (diagonal, 0, 0, 1, 1), (anti, 0, 1, 1, 0),
    ]
    merges: dict[str, LayerMerge] = {}
    finders = {}
    for name in layers:
        merges[name], finders[name] = _merge_layer(name, summaries, pair_grids)
    if "fg" in layers and "bg" in layers:
        merges["bg"] = _resolve_owners(
            summaries, vertical, merges["bg"], finders["bg"], merges["fg"], finders["fg"]
        )
    values, extra = decide(merges, shape)
    table = extra if isinstance(extra, ComponentTable) else None
    rows = extra if isinstance(extra, RowNumbering) else None
    seeds: dict[str, list[kl.Seeds | None]] = {}
    for name in values:
        per_chunk: list[kl.Seeds | None] = [
            summaries.item(i, j)[name].seeds for i, j in np.ndindex(summaries.shape)
        ]
        if any(s is not None for s in per_chunk):
            seeds[name] = per_chunk
    return Merged(
        grid=summaries.shape,
        base={k: merges[k].base for k in values},
        ids={k: merges[k].ids for k in values},
        values=values,
        table=table,
        seeds=seeds,
        rows=rows,
    )


def merge_blocks(blocks: list[list[np.ndarray]], **kwargs: Any) -> Merged:
    """The merge task: :func:`merge_summaries` on the pair tasks' results, row by row (each
    chunk's a 1 x 1 object array)."""
    nbr, nbc = len(blocks), len(blocks[0])
    items = [[blocks[i][j][0, 0] for j in range(nbc)] for i in range(nbr)]

    def grid(rows: int, cols: int, key: str | None) -> np.ndarray | None:
        if rows <= 0 or cols <= 0:
            return None
        out = np.empty((rows, cols), dtype=object)
        for i, j in np.ndindex(rows, cols):
            out[i, j] = items[i][j][0] if key is None else items[i][j][1][key]
        return out

    summaries = grid(nbr, nbc, None)
    assert summaries is not None
    return merge_summaries(
        summaries, grid(nbr - 1, nbc, "v"), grid(nbr, nbc - 1, "h"),
        grid(nbr - 1, nbc - 1, "d"), grid(nbr - 1, nbc - 1, "a"), **kwargs,
    )


def _resolve_owners(
    summaries: np.ndarray,
    vertical: np.ndarray | None,
    bg: LayerMerge,
    bg_nodes: Callable[[int, np.ndarray], np.ndarray],
    fg: LayerMerge,
    fg_nodes: Callable[[int, np.ndarray], np.ndarray],
) -> LayerMerge:
    nbr, nbc = summaries.shape
    owner_node = np.full(len(bg.node_comp), -1, np.int64)
    for k in range(nbr * nbc):
        own = summaries[k // nbc, k % nbc]["bg"].owner
        fg_ids = summaries[k // nbc, k % nbc]["fg"].ids
        sel = np.flatnonzero(own > 0)
        if not len(sel):
            continue
        pos = np.searchsorted(fg_ids, own[sel])
        found = pos < len(fg_ids)
        found[found] = fg_ids[pos[found]] == own[sel][found]
        owner_node[bg.base[k] + sel[found]] = fg.base[k] + pos[found]
    if vertical is not None:
        for i, j in np.ndindex(vertical.shape):
            bg_labels, fg_labels = vertical[i, j]["owners"]
            if len(bg_labels):
                owner_node[bg_nodes((i + 1) * nbc + j, bg_labels)] = fg_nodes(
                    i * nbc + j, fg_labels
                )
    return LayerMerge(**{**bg.__dict__, "owner_node": owner_node})


def chunk_lut(merged: Merged, i: int, j: int) -> kl.ChunkLut:
    """Chunk (i, j)'s lookup table: per layer, its reported local labels and their values."""
    k = i * merged.grid[1] + j
    out: kl.ChunkLut = {}
    for name, values in merged.values.items():
        lo, hi = merged.base[name][k], merged.base[name][k + 1]
        out[name] = (merged.ids[name][lo:hi], values[lo:hi])
        if name in merged.seeds:
            out[f"{name}-seeds"] = merged.seeds[name][k]
    rows = merged.rows
    if rows is not None:
        base = merged.base["fg"]
        first = rows.before[i] + 1
        for left in range(i * merged.grid[1], k):  # the components numbered to the left
            first += rows.starts[left]
            lo, hi = base[left], base[left + 1]
            np.subtract.at(first, rows.node_row[lo:hi][~rows.owned[lo:hi]] - rows.top[i], 1)
        lo, hi = base[k], base[k + 1]
        out["fg-rows"] = kl.RowNumbers(first=first, starts=rows.starts[k],
                                       owned=rows.owned[lo:hi])
    return out


def _lut_at(merged: Merged, i: int, j: int) -> np.ndarray:
    return _one(chunk_lut(merged, i, j))


def _luts(merged: Delayed, numblocks: tuple[int, int], name: str) -> da.Array:
    """The chunks' lookup tables from the merge, lazily: an object array with one element per
    chunk, each a task that depends on the merge alone (made by ``map_blocks`` over
    ``da.zeros``, each would also wait for a task making a 1 x 1 array of zeros: 100 more
    tasks to schedule per 100 chunks and global step)."""
    nbr, nbc = numblocks
    dsk: dict[Any, Any] = {
        (name, i, j): (_lut_at, merged.key, i, j) for i in range(nbr) for j in range(nbc)
    }
    graph = HighLevelGraph.from_collections(name, dsk, dependencies=[merged])  # type: ignore[list-item]
    return da.Array(graph, name, chunks=((1,) * nbr, (1,) * nbc), dtype=object, meta=_OBJ_META)


def _pass2_block(
    tile: np.ndarray, lut: np.ndarray, *, kernel: Callable[..., np.ndarray],
    kwargs: dict[str, Any],
) -> np.ndarray:
    return kernel(tile, lut[0, 0], **kwargs)


def _inner_merges(mask: da.Array) -> list[Delayed]:
    graph = mask.__dask_graph__()
    return [
        Delayed(name, graph) for name in getattr(graph, "layers", {})
        if isinstance(name, str) and name.startswith(_MERGE_PREFIX)
    ]


def build_merge(
    mask: da.Array,
    *,
    op: str,
    summarize: Callable[..., kl.Record],
    summarize_kwargs: dict[str, Any],
    layers: dict[str, int],
    decide: Callable[..., Decision],
    token: str,
) -> Delayed:
    """Pass 1, the pair tasks and the merge task, as one lazy ``Delayed`` of :class:`Merged`."""
    records = _pass1(mask, summarize, summarize_kwargs, name=f"slidemask-{op}-summary-{token}")
    return merge_records(records, op=op, layers=layers, decide=decide, shape=mask.shape,
                         token=token)


def _pass1(
    mask: da.Array, summarize: Callable[..., kl.Record], kwargs: dict[str, Any], *, name: str
) -> da.Array:
    """Pass 1, lazily: an object array with one record per chunk of ``mask``."""
    nbr, nbc = mask.numblocks
    return map_located(
        _pass1_block, mask, kernel=summarize, kwargs=kwargs,
        chunks=((1,) * nbr, (1,) * nbc), dtype=object, meta=_OBJ_META, name=name,
    )


def merge_records(
    records: da.Array,
    *,
    op: str,
    layers: dict[str, int],
    decide: Callable[..., Decision],
    shape: tuple[int, ...],
    token: str,
) -> Delayed:
    """The pair tasks and the merge task on pass-1 ``records`` (one per chunk of a mask of
    ``shape``), as one lazy ``Delayed`` of :class:`Merged`."""
    nbr, nbc = records.numblocks
    # One task per row of chunks pairs each chunk with its neighbours below, right and
    # diagonal (a task per chunk measured slower: the scheduler's work per task, in the
    # driving thread, competes with the chunk tasks for the GIL). It is a plain
    # (non-blockwise) layer so that dask cannot fuse pass 1 into it and run pass 1 once per
    # neighbour.
    name = f"slidemask-{op}-pairs-{token}"
    pair = partial(_row_pair_task, layers=layers)
    rname = records.name

    def row(i: int) -> list[tuple[str, int, int]] | None:
        return [(rname, i, j) for j in range(nbc)] if i < nbr else None

    dsk: dict[Any, Any] = {(name, i): (pair, row(i), row(i + 1)) for i in range(nbr)}
    graph = HighLevelGraph.from_collections(
        name, dsk, dependencies=[records]  # type: ignore[list-item]
    )
    pairs = da.Array(graph, name, chunks=((1,) * nbr,), dtype=object,
                     meta=np.empty((0,), dtype=object))
    merge_key = f"{_MERGE_PREFIX}{op}-{token}"
    merge = partial(merge_blocks, layers=layers, shape=tuple(shape), decide=decide)
    task = (merge, [(name, i) for i in range(nbr)])
    graph = HighLevelGraph.from_collections(
        merge_key, {merge_key: task}, dependencies=[pairs]  # type: ignore[list-item]
    )
    return Delayed(merge_key, graph)


def apply_merge(
    mask: da.Array,
    merged: Delayed | Merged,
    *,
    op: str,
    apply: Callable[..., np.ndarray],
    apply_kwargs: dict[str, Any],
    dtype: Any,
    token: str,
) -> da.Array:
    """Pass 2: recompute each chunk (after the merge) and apply its lookup table.

    With ``merged`` already computed, the lookup tables are plain values in the graph and
    ``mask`` is read as it is (nothing to wait for).
    """
    nbr, nbc = mask.numblocks
    if isinstance(merged, Merged):
        table = np.empty((nbr, nbc), dtype=object)
        for i, j in np.ndindex(nbr, nbc):
            table[i, j] = chunk_lut(merged, i, j)
        luts = literal_array(table, ((1,) * nbr, (1,) * nbc), f"slidemask-{op}-lut-{token}")
        again = mask
    else:
        luts = _luts(merged, (nbr, nbc), f"slidemask-{op}-lut-{token}")
        again = bind(mask, merged, omit=_inner_merges(mask), seed=token)
    dtype = np.dtype(dtype)
    return da.map_blocks(
        _pass2_block, again, luts, kernel=apply, kwargs=apply_kwargs,
        chunks=mask.chunks, dtype=dtype, meta=np.empty((0, 0), dtype),
        name=f"slidemask-{op}-{token}",
    )


@dataclass(frozen=True)
class TwoPass:
    """One global operation as its chunk functions: pass 1, the merge's decision, pass 2.

    The public operations are ``plan.run(mask)``. The engine runs a plan as: per chunk,
    :meth:`pass1_chunk` (the record, and the tile to store, with the chunk's own decisions
    applied where :attr:`decides_locally`); one :meth:`merge` of the records; per chunk,
    :meth:`apply_stored` of the stored tile with :func:`chunk_lut` of the merge.
    :meth:`summarize_chunk` and ``apply`` are the same passes without local decisions, both on
    the input tile (``run(mask, merged=...)`` with a merge of :meth:`summarize_chunk` records).
    """

    op: str
    params: tuple[Any, ...]
    summarize: Callable[..., kl.Record]
    summarize_kwargs: dict[str, Any]
    layers: dict[str, int]
    decide: Callable[..., Decision]
    apply: Callable[..., np.ndarray]
    apply_kwargs: dict[str, Any]
    dtype: Any = bool
    local: Callable[..., tuple[kl.Record, np.ndarray]] | None = None
    """Pass 1 that also returns the tile to store (:meth:`pass1_chunk`); None: the tile is
    stored unchanged and the record is :meth:`summarize_chunk`'s."""
    local_kwargs: dict[str, Any] = field(default_factory=dict)
    finish: Callable[..., np.ndarray] | None = None
    """Pass 2 on the stored tile (:meth:`apply_stored`); None: ``apply``."""
    finish_kwargs: dict[str, Any] = field(default_factory=dict)
    decides_locally: bool = False
    """Whether the tile :meth:`pass1_chunk` stores already has the chunk's own decisions
    applied (interior components removed or filled); False: it is the input tile itself."""

    def token(self, mask: da.Array) -> str:
        return tokenize(mask.name, self.op, self.params)

    def summarize_chunk(self, tile: np.ndarray, offset: tuple[int, ...]) -> kl.Record:
        """Pass 1 on one chunk whose first pixel is at ``offset`` (row, col) in the mask."""
        return self.summarize(tile, offset=offset, **self.summarize_kwargs)

    def pass1_chunk(
        self, tile: np.ndarray, offset: tuple[int, ...]
    ) -> tuple[kl.Record, np.ndarray]:
        """Pass 1 for an engine that stores each chunk: the record (as :meth:`summarize_chunk`
        gives, for :meth:`merge`) and the tile to store, which pass 2 reads back
        (:meth:`apply_stored`).

        Where :attr:`decides_locally`, the stored tile already has every decision that is the
        chunk's alone applied (``remove_small_objects``: small objects not touching a chunk
        face removed; ``fill_holes``: holes not touching one filled; ``keep_largest``: small
        interior objects outside the chunk's n largest removed), so pass 2 only changes the
        few components the chunk reports; otherwise it is ``tile`` itself, unchanged. Either way
        ``tile`` is never written, and the records differ from :meth:`summarize_chunk`'s only
        in what pass 2 needs (seeds on the faces; areas above a limit may be lower bounds), so
        the two must not be mixed within one run. For any chunking, :meth:`apply_stored` of
        each chunk with :func:`chunk_lut` of the merged records equals the whole-image
        operation bit for bit.
        """
        if self.local is None:
            return self.summarize_chunk(tile, offset), tile
        return self.local(tile, offset=tuple(offset), **self.local_kwargs)

    def apply_stored(self, stored: np.ndarray, lut: kl.ChunkLut) -> np.ndarray:
        """Pass 2 on the tile :meth:`pass1_chunk` stored, with the chunk's lookup table
        (:func:`chunk_lut` of the merge of :meth:`pass1_chunk` records). ``stored`` is not
        written; the result is a new array of :attr:`dtype`."""
        if self.finish is None:
            return self.apply(stored, lut, **self.apply_kwargs)
        return self.finish(stored, lut, **self.finish_kwargs)

    def whole(self, image: np.ndarray) -> np.ndarray:
        """The operation on a whole image in memory (one chunk): pass 1 (with its local
        decisions), merge, pass 2 (:meth:`pass1_chunk`, :meth:`apply_stored`)."""
        record, stored = self.pass1_chunk(image, (0, 0))
        pairs = _pair_task(_one(record), None, None, None, layers=self.layers)
        merged = merge_blocks(
            [[pairs]], layers=self.layers, shape=image.shape, decide=self.decide
        )
        return self.apply_stored(stored, chunk_lut(merged, 0, 0))

    def summaries(self, mask: da.Array) -> da.Array:
        """Pass 1, lazily: an object array with one record per chunk of ``mask`` (which must
        be a 2-D ``bool`` dask array without empty chunks)."""
        name = f"slidemask-{self.op}-summary-{self.token(mask)}"
        return _pass1(mask, self.summarize, self.summarize_kwargs, name=name)

    def merge(self, records: da.Array | np.ndarray, mask: da.Array) -> Delayed:
        """The lazy :class:`Merged` of pass-1 ``records`` of ``mask``'s chunks (a dask array,
        as :meth:`summaries` gives, or those records computed)."""
        token = self.token(mask)
        if isinstance(records, np.ndarray):
            grid = tuple((1,) * n for n in records.shape)
            records = literal_array(records, grid, f"slidemask-records-{token}")
        if records.numblocks != mask.numblocks:
            raise MaskError(
                f"{self.op}: records for {records.numblocks} chunks, mask has {mask.numblocks}"
            )
        return merge_records(records, op=self.op, layers=self.layers, decide=self.decide,
                             shape=mask.shape, token=token)

    def _apply_gate(self, stored: np.ndarray, lut: np.ndarray) -> np.ndarray:
        return self.apply_stored(stored, lut[0, 0])

    def run(self, mask: da.Array, *, merged: Delayed | Merged | None = None) -> da.Array:
        """The operation on ``mask``, lazily; pass 1 and the merge too unless ``merged`` (of
        this mask's chunks) is given. A mask of one chunk is done in one task (pass 1, the
        merge and pass 2 together: nothing crosses a chunk face). Otherwise each pass-1 task
        stores the tile :meth:`pass1_chunk` gives to scratch and pass 2 reads it back
        (:func:`run_stored`): the input is computed once and never held."""
        token = self.token(mask)
        if merged is None and mask.numblocks == (1, 1):
            dtype = np.dtype(self.dtype)
            return da.map_blocks(
                self.whole, mask, dtype=dtype, meta=np.empty((0, 0), dtype),
                name=f"slidemask-{self.op}-whole-{token}",
            )
        if merged is None:
            return self.run_stored(mask)[0]
        return apply_merge(
            mask, merged, op=self.op, apply=self.apply, apply_kwargs=self.apply_kwargs,
            dtype=self.dtype, token=token,
        )

    def run_stored(self, mask: da.Array) -> tuple[da.Array, Delayed]:
        """The operation through scratch storage (:mod:`slidemask.ops.scratch`), and its lazy
        :class:`Merged` (for a table computed alongside: compute both together)."""
        from slidemask.ops.scratch import stored_reads, stores

        token = self.token(mask)
        grid, folder = stores(mask, self.op, summarize=self.pass1_chunk)
        merged = merge_records(grid, op=self.op, layers=self.layers, decide=self.decide,
                               shape=mask.shape, token=token)
        nbr, nbc = mask.numblocks
        luts = _luts(merged, (nbr, nbc), f"slidemask-{self.op}-lut-{token}")
        out = stored_reads(folder, grid, mask, gate=luts, apply=self._apply_gate,
                           dtype=self.dtype, label=self.op)
        return out, merged


# ----------------------------------------------------------------------------------------------
# Decisions (run inside the merge task)
# ----------------------------------------------------------------------------------------------


def _decide_min_area(
    merges: dict[str, LayerMerge], shape: tuple[int, int], *, min_area: float
) -> tuple[dict[str, np.ndarray], None]:
    fg = merges["fg"]
    return {"fg": (fg.area >= min_area)[fg.node_comp]}, None


def _decide_largest(
    merges: dict[str, LayerMerge], shape: tuple[int, int], *, n: int
) -> tuple[dict[str, np.ndarray], None]:
    fg = merges["fg"]
    rank = kl.rank_in_groups(np.zeros(len(fg.area), np.int64), fg.area, fg.first_row, fg.first_col)
    return {"fg": (rank < n)[fg.node_comp]}, None


def _decide_labels(
    merges: dict[str, LayerMerge], shape: tuple[int, int], *, max_label: int
) -> tuple[dict[str, np.ndarray], ComponentTable]:
    fg = merges["fg"]
    if len(fg.area) > max_label:
        raise MaskError(
            f"label: {len(fg.area)} components do not fit the output dtype "
            f"(at most {max_label}); pass dtype=np.int64"
        )
    order = np.lexsort((fg.first_col, fg.first_row))
    number = np.empty(len(order), np.int64)
    number[order] = np.arange(1, len(order) + 1)
    table = ComponentTable(
        area=fg.area[order], top=fg.top[order], left=fg.left[order],
        bottom=fg.bottom[order], right=fg.right[order],
        first_row=fg.first_row[order], first_col=fg.first_col[order],
    )
    return {"fg": number[fg.node_comp]}, table


def _decide_label_rows(
    merges: dict[str, LayerMerge], shape: tuple[int, int], *, max_label: int
) -> tuple[dict[str, np.ndarray], RowNumbering]:
    """Number every component 1..N in raster order of first pixel, from the face components
    the chunks reported and their per-row counts of first pixels (no table of components).

    Components whose first pixel lies in one row of one chunk have consecutive labels, in the
    order of their local labels; before them come those starting in the rows above and those
    starting in the same row in chunks to the left. A row of a chunk counts its local labels
    less the reported ones whose component starts elsewhere (``owned`` False). A reported
    component that starts in a chunk gets the label of its place among the local labels of
    its row there (its local label less the chunk's labels in the rows above, less the
    reported labels before it in that row that are numbered elsewhere); its other pieces get
    the same. Memory: the chunks' counts (one per row per chunk, kept as they came) and a
    few arrays per node; one chunk row's counts at a time as ``int64``.
    """
    fg = merges["fg"]
    if fg.starts is None:
        raise ValueError("label: the chunks did not count their components per row")
    nbr, nbc = len(fg.starts), len(fg.starts[0])
    n_nodes = len(fg.node_comp)
    owned = np.zeros(n_nodes, bool)
    owned[fg.first_node] = True
    node_chunk = np.repeat(np.arange(nbr * nbc), np.diff(fg.base))
    # per node: the reported labels numbered elsewhere before it in its row of its chunk
    # (nodes are in chunk order, then local label order, which is raster order)
    elsewhere = np.zeros(n_nodes + 1, np.int64)
    np.cumsum(~owned, out=elsewhere[1:])
    group = np.ones(n_nodes, bool)
    group[1:] = (node_chunk[1:] != node_chunk[:-1]) | (fg.node_row[1:] != fg.node_row[:-1])
    group_start = np.maximum.accumulate(np.where(group, np.arange(n_nodes), 0))
    elsewhere_before = elsewhere[:-1] - elsewhere[group_start]
    comp_label = np.zeros(len(fg.area), np.int64)
    before: list[np.ndarray] = []
    top = np.zeros(nbr, np.int64)
    total = 0
    row0 = 0
    for i in range(nbr):
        top[i] = row0
        counts = np.stack([c.astype(np.int64) for c in fg.starts[i]])  # (chunk col, row)
        lo, hi = int(fg.base[i * nbc]), int(fg.base[(i + 1) * nbc])
        col = node_chunk[lo:hi] - i * nbc
        row = fg.node_row[lo:hi] - row0
        own = owned[lo:hi]
        numbered = counts.copy()
        np.subtract.at(numbered, (col[~own], row[~own]), 1)
        to_left = np.zeros_like(numbered)
        np.cumsum(numbered[:-1], axis=0, out=to_left[1:])
        per_row = to_left[-1] + numbered[-1]
        above = np.full(counts.shape[1], total, np.int64)
        above[1:] += np.cumsum(per_row[:-1])
        total += int(per_row.sum())
        above_in_chunk = np.zeros_like(counts)  # local labels in the chunk's rows above
        np.cumsum(counts[:, :-1], axis=1, out=above_in_chunk[:, 1:])
        sel = np.flatnonzero(own)
        c, r = col[sel], row[sel]
        rank = (fg.ids[lo:hi][sel].astype(np.int64) - 1 - above_in_chunk[c, r]
                - elsewhere_before[lo + sel])
        comp_label[fg.node_comp[lo + sel]] = above[r] + to_left[c, r] + 1 + rank
        before.append(above)
        row0 += counts.shape[1]
    if total > max_label:
        raise MaskError(
            f"label: {total} components do not fit the output dtype "
            f"(at most {max_label}); pass dtype=np.int64"
        )
    rows = RowNumbering(
        before=tuple(before), starts=tuple(c for chunk_row in fg.starts for c in chunk_row),
        owned=owned, node_row=fg.node_row, top=top,
    )
    return {"fg": comp_label[fg.node_comp]}, rows


# ----------------------------------------------------------------------------------------------
# Public operations
# ----------------------------------------------------------------------------------------------


def remove_small_objects_plan(min_area: float, *, connectivity: int = 8) -> TwoPass | None:
    """:func:`remove_small_objects` as a :class:`TwoPass`; None when it keeps every object."""
    what = "remove_small_objects"
    min_area = check_area(min_area, what)
    connectivity = _check_connectivity(connectivity, what)
    if min_area <= 1:
        return None
    return TwoPass(
        op="small-objects", params=(min_area, connectivity), summarize=kl.object_summary,
        summarize_kwargs={"connectivity": connectivity, "include": "faces", "min_area": min_area},
        layers={"fg": connectivity}, decide=partial(_decide_min_area, min_area=min_area),
        apply=kl.filter_objects,
        apply_kwargs={"connectivity": connectivity, "min_area": min_area},
        local=kl.objects_pass1,
        local_kwargs={"connectivity": connectivity, "min_area": min_area},
        finish=kl.drop_stored, finish_kwargs={"connectivity": connectivity},
        decides_locally=True,
    )


def remove_small_objects(mask: da.Array, min_area: float, *, connectivity: int = 8) -> da.Array:
    """Drop connected components with fewer than ``min_area`` pixels.

    Equal to ``skimage.morphology.remove_small_objects(mask, max_size=ceil(min_area) - 1,
    connectivity=2 for 8 / 1 for 4)`` on the whole image (the deprecated ``min_size=min_area``:
    components strictly smaller than ``min_area`` go), for any chunking.

    Parameters
    ----------
    mask : dask.array.Array
        2-D ``bool`` ``(rows, cols)`` in the pixels of its level (a numpy array is taken as
        one chunk).
    min_area : float
        Area in pixels of ``mask`` (convert µm² with :func:`area_to_pixels`). ``<= 1`` keeps all.
    connectivity : {4, 8}
        Which pixels are neighbours when forming components (default 8).

    Returns
    -------
    dask.array.Array
        ``bool``, same shape and chunks (empty chunks, which slicing can leave, merged
        away); lazy.

    Raises
    ------
    MaskError
        Not a 2-D bool mask, a bad ``min_area`` or ``connectivity``.

    Notes
    -----
    Two passes and one merge (module notes): pass 1 stores each chunk to scratch while it
    summarizes the components touching its faces, the merge holds a few ``int64`` per such
    component, pass 2 reads each chunk back. ``mask`` is computed once and no chunk is held
    between the passes.

    Examples
    --------
    >>> import dask.array as da
    >>> import numpy as np
    >>> from slidemask import remove_small_objects
    >>> mask = np.array([[1, 1, 0, 0, 1],
    ...                  [1, 1, 0, 1, 0],
    ...                  [0, 0, 0, 0, 0],
    ...                  [1, 0, 1, 1, 1]], dtype=bool)
    >>> chunked = da.from_array(mask, chunks=(2, 3))
    >>> remove_small_objects(chunked, 3).compute().astype(int)  # areas 4, 2, 1, 3
    array([[1, 1, 0, 0, 0],
           [1, 1, 0, 0, 0],
           [0, 0, 0, 0, 0],
           [0, 0, 1, 1, 1]])
    """
    mask = check_mask(mask, "remove_small_objects")
    plan = remove_small_objects_plan(min_area, connectivity=connectivity)
    return mask if plan is None or mask.size == 0 else plan.run(mask)


def keep_largest_plan(n: int, *, connectivity: int = 8) -> TwoPass | None:
    """:func:`keep_largest` as a :class:`TwoPass`; None for ``n = 0`` (nothing is kept)."""
    what = "keep_largest"
    n = check_count(n, what)
    connectivity = _check_connectivity(connectivity, what)
    if n == 0:
        return None
    return TwoPass(
        op="keep-largest", params=(n, connectivity), summarize=kl.object_summary,
        summarize_kwargs={"connectivity": connectivity, "include": n},
        layers={"fg": connectivity}, decide=partial(_decide_largest, n=n),
        apply=kl.filter_objects, apply_kwargs={"connectivity": connectivity, "min_area": None},
        local=kl.largest_pass1, local_kwargs={"connectivity": connectivity, "n": n},
        finish=kl.keep_stored, finish_kwargs={"connectivity": connectivity},
        decides_locally=True,
    )


def keep_largest(mask: da.Array, n: int, *, connectivity: int = 8) -> da.Array:
    """Keep the ``n`` largest connected components (by pixel count) and drop the rest.

    Ties in area go to the component whose first pixel comes first in row-major order.

    Parameters
    ----------
    mask : dask.array.Array
        2-D ``bool`` ``(rows, cols)`` in the pixels of its level (a numpy array is taken as
        one chunk).
    n : int
        Components to keep, >= 0 (0 keeps nothing).
    connectivity : {4, 8}
        Which pixels are neighbours when forming components (default 8).

    Returns
    -------
    dask.array.Array
        ``bool``, same shape and chunks (empty chunks, which slicing can leave, merged
        away); lazy. Memory as :func:`remove_small_objects`.

    Raises
    ------
    MaskError
        Not a 2-D bool mask, a bad ``n`` or ``connectivity``.

    Examples
    --------
    >>> import dask.array as da
    >>> import numpy as np
    >>> from slidemask import keep_largest
    >>> mask = np.array([[1, 1, 0, 0, 1],
    ...                  [1, 1, 0, 1, 0],
    ...                  [0, 0, 0, 0, 0],
    ...                  [1, 0, 1, 1, 1]], dtype=bool)
    >>> chunked = da.from_array(mask, chunks=(2, 3))
    >>> keep_largest(chunked, 2).compute().astype(int)  # areas 4, 2, 1, 3: keeps 4 and 3
    array([[1, 1, 0, 0, 0],
           [1, 1, 0, 0, 0],
           [0, 0, 0, 0, 0],
           [0, 0, 1, 1, 1]])
    """
    mask = check_mask(mask, "keep_largest")
    plan = keep_largest_plan(n, connectivity=connectivity)
    if plan is None or mask.size == 0:
        return da.zeros_like(mask, dtype=bool)
    return plan.run(mask)


def label_merge(mask: da.Array, connectivity: int, dtype: np.dtype) -> Delayed:
    """Lazy :class:`Merged` numbering every component (values: global labels; with a table).

    ``mask`` must have passed :func:`check_mask`.
    """
    token = tokenize(mask.name, "label", connectivity, dtype.str)
    return build_merge(
        mask, op="label", summarize=kl.object_summary,
        summarize_kwargs={"connectivity": connectivity, "include": "all"},
        layers={"fg": connectivity},
        decide=partial(_decide_labels, max_label=int(np.iinfo(dtype).max)), token=token,
    )


def label_plan(connectivity: int, dtype: np.dtype) -> TwoPass:
    """:func:`label` as a :class:`TwoPass` (``connectivity`` checked, ``dtype`` int32/int64).

    Pass 1 reports each chunk's face components and counts the others per row of the chunk
    (:func:`~slidemask.kernels.labels.label_summary`); the merge numbers
    the face components and tells each chunk where its rows' numbers begin
    (:func:`_decide_label_rows`); pass 2 numbers the rest
    (:func:`~slidemask.kernels.labels.relabel`). The merge's memory grows with the face
    components and the rows times the chunk columns, not with the number of components.
    """
    return TwoPass(
        op="label", params=(connectivity, dtype.str), summarize=kl.label_summary,
        summarize_kwargs={"connectivity": connectivity},
        layers={"fg": connectivity},
        decide=partial(_decide_label_rows, max_label=int(np.iinfo(dtype).max)),
        apply=kl.relabel, apply_kwargs={"connectivity": connectivity, "dtype": dtype},
        dtype=dtype,
    )


def label_table_plan(connectivity: int, dtype: np.dtype) -> TwoPass:
    """:func:`label` as a :class:`TwoPass` whose merge also makes the :class:`ComponentTable`
    (:func:`label_with_stats`): pass 1 reports every component, so the merge holds a few
    ``int64`` per component of the whole array."""
    return TwoPass(
        op="label-table", params=(connectivity, dtype.str), summarize=kl.object_summary,
        summarize_kwargs={"connectivity": connectivity, "include": "all"},
        layers={"fg": connectivity},
        decide=partial(_decide_labels, max_label=int(np.iinfo(dtype).max)),
        apply=kl.relabel, apply_kwargs={"connectivity": connectivity, "dtype": dtype},
        dtype=dtype,
    )


def _label_dtype(dtype: Any, what: str) -> np.dtype:
    try:
        dt = np.dtype(dtype)
    except TypeError:
        raise MaskError(f"{what}: dtype must be int32 or int64, got {dtype!r}") from None
    if dt not in (np.dtype(np.int32), np.dtype(np.int64)):
        raise MaskError(f"{what}: dtype must be int32 or int64, got {dt}")
    return dt


def label(mask: da.Array, *, connectivity: int = 8, dtype: Any = np.int32) -> da.Array:
    """Label connected components: 0 for background, 1..N in raster order of first pixel.

    Equal to ``skimage.measure.label(mask, connectivity=2 for 8 / 1 for 4)`` on the whole
    image, for any chunking.

    Parameters
    ----------
    mask : dask.array.Array
        2-D ``bool`` ``(rows, cols)`` in the pixels of its level (a numpy array is taken as
        one chunk).
    connectivity : {4, 8}
        Which pixels are neighbours when forming components (default 8).
    dtype : {numpy.int32, numpy.int64}
        Label dtype: ``int32`` (default, like scikit-image) or ``int64``.

    Returns
    -------
    dask.array.Array
        ``(rows, cols)`` of ``dtype``, same chunks (empty chunks, which slicing can leave,
        merged away); lazy.

    Raises
    ------
    MaskError
        Not a 2-D bool mask, a bad ``connectivity`` or ``dtype``; at compute time, more
        components than ``dtype`` holds.

    Notes
    -----
    Two passes and one merge (module notes). Pass 1 reports the components touching a chunk
    face and, for the others, only how many start (have their first pixel) in each row of
    the chunk; the merge numbers the face components and gives each chunk the first label of
    each of its rows; pass 2 numbers the chunk's other components in order. The merge holds
    a few numbers per face component and per row of each chunk (2 bytes a row), not per
    component: masks with 10^5 specks per chunk are fine.

    Examples
    --------
    >>> import dask.array as da
    >>> import numpy as np
    >>> from slidemask import label
    >>> mask = np.array([[1, 1, 0, 0, 1],
    ...                  [1, 1, 0, 1, 0],
    ...                  [0, 0, 0, 0, 0],
    ...                  [1, 0, 1, 1, 1]], dtype=bool)
    >>> chunked = da.from_array(mask, chunks=(2, 3))
    >>> label(chunked).compute()
    array([[1, 1, 0, 0, 2],
           [1, 1, 0, 2, 0],
           [0, 0, 0, 0, 0],
           [3, 0, 4, 4, 4]], dtype=int32)
    >>> label(chunked, connectivity=4).compute()  # the diagonal pair splits
    array([[1, 1, 0, 0, 2],
           [1, 1, 0, 3, 0],
           [0, 0, 0, 0, 0],
           [4, 0, 5, 5, 5]], dtype=int32)
    """
    what = "label"
    mask = check_mask(mask, what)
    connectivity = _check_connectivity(connectivity, what)
    dt = _label_dtype(dtype, what)
    if mask.size == 0:
        return da.zeros(mask.shape, dtype=dt, chunks=mask.chunks)
    return label_plan(connectivity, dt).run(mask)


def _table_of(merged: Merged) -> ComponentTable:
    assert merged.table is not None
    return merged.table


def label_stats(mask: da.Array, *, connectivity: int = 8) -> Delayed:
    """Lazy :class:`ComponentTable` of the mask's components (area, bounding box, first pixel).

    Rows are in the order of :func:`label`'s numbering.

    Parameters
    ----------
    mask : dask.array.Array
        2-D ``bool`` ``(rows, cols)`` in the pixels of its level (a numpy array is taken as
        one chunk).
    connectivity : {4, 8}
        Which pixels are neighbours when forming components (default 8).

    Returns
    -------
    dask.delayed.Delayed
        Computes to a :class:`ComponentTable` (areas in pixels, boxes in pixels of ``mask``).

    Raises
    ------
    MaskError
        Not a 2-D bool mask, or a bad ``connectivity``.

    Notes
    -----
    Computes ``mask`` once (pass 1 only); the table holds seven ``int64`` per component.

    Examples
    --------
    >>> import dask.array as da
    >>> import numpy as np
    >>> from slidemask import label_stats
    >>> mask = np.array([[1, 1, 0, 0, 1],
    ...                  [1, 1, 0, 1, 0],
    ...                  [0, 0, 0, 0, 0],
    ...                  [1, 0, 1, 1, 1]], dtype=bool)
    >>> chunked = da.from_array(mask, chunks=(2, 3))
    >>> table = label_stats(chunked).compute()
    >>> table.area, table.first_row, table.first_col
    (array([4, 2, 1, 3]), array([0, 0, 3, 3]), array([0, 4, 0, 2]))
    """
    what = "label_stats"
    mask = check_mask(mask, what)
    connectivity = _check_connectivity(connectivity, what)
    if mask.size == 0:
        z = np.zeros(0, np.int64)
        return dask.delayed(ComponentTable(
            area=z, top=z, left=z, bottom=z, right=z, first_row=z, first_col=z
        ))
    merged = label_merge(mask, connectivity, np.dtype(np.int64))
    return dask.delayed(_table_of, pure=True)(merged)


def label_with_stats(
    mask: da.Array, *, connectivity: int = 8, dtype: Any = np.int32
) -> tuple[da.Array, Delayed]:
    """:func:`label` and :func:`label_stats` sharing one merge (compute them together)."""
    what = "label"
    mask = check_mask(mask, what)
    connectivity = _check_connectivity(connectivity, what)
    dt = _label_dtype(dtype, what)
    if mask.size == 0:
        return label(mask, connectivity=connectivity, dtype=dt), label_stats(mask)
    plan = label_table_plan(connectivity, dt)
    if mask.numblocks == (1, 1):
        merged = label_merge(mask, connectivity, dt)
        labels = plan.run(mask, merged=merged)
    else:
        labels, merged = plan.run_stored(mask)
    return labels, dask.delayed(_table_of, pure=True)(merged)
