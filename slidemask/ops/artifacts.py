"""Lazy artifact masks for slide quality control, and the labelled class map.

HistoQC (choosehappy/HistoQC) is what labs run to find what to leave out of a slide; its
modules hold each whole thumbnail in memory. These are the same measurements as lazy,
chunked operations that give the whole-image answer for any chunking (pointwise kernels run
as each file tile is decoded; neighbourhood kernels declare their halo and run on halo windows;
the sharpness measure is a block reduction that needs no halo), in the slide's pixel frame
``(rows, cols[, channels])``. Sizes are pixels of the array given; configurations give them
in micrometres (:mod:`slidemask.config.params`).

=================  ================================================  =========================
artifact           measurement                                       HistoQC (defaults)
=================  ================================================  =========================
pen ink            :func:`pen_ink`: HSV bands for blue, green, red;  pen_markings: a pixel
                   neutral and dark (every channel absorbed) for     classifier trained on
                   black                                             example images
blur               :func:`sharpness`: detail per 8 um cell at        ``gaussian(|laplace|,
                   1-2 um per pixel, averaged locally over           σ) <= t`` at 2.5x (4 um)
                   non-glass pixels; then ``threshold: below``
dark tissue, fold  ``gray`` + ``threshold: below 38.25``             grey < 0.15 at 1.25x
flat area, bubble  :func:`flat`: ``|grey - local mean| < 2.55``      same, 10x10 window at
                   in an 80 um window, objects from 0.032 mm²        1.25x, 500 px objects
scan border,       :func:`black` then :func:`straight_bands`:        coverslip_edge: a pixel
coverslip edge     neutral dark runs of 1 mm along rows or columns   classifier
=================  ================================================  =========================

Pen ink, and why red and black are not stain. Coloured inks are far more saturated than
stain in hues stain does not take: blue ink is H 96-122 (hematoxylin is bluer-purple, H >= 125
for 95 % of saturated CMU-1 pixels), green ink H 35-95 (no H&E stain is green); red ink is
crimson to red, H >= 172 or <= 8 with S >= 90 and V >= 100, where eosin is pink-magenta (H
153-170). Black ink absorbs every
channel: the brightest channel is at most 60 (an optical density of at least 0.63 in every
channel, 86 % of HistoQC's black pen example) and it is neutral: channels within 25 of each
other and HSV saturation at most 150 (HistoQC's brown-black ink: 69-113). Dense hematoxylin and
eosin always leave one channel bright (V >= 50 on CMU-1 at 8 um per pixel), and a fold keeps
its stain's hue and grows more saturated as it darkens (S >= 170 at six times the optical
density), so it is not ink however dark. Measured at 2 um per pixel: 0.1 % of CMU-1 and of the
TCGA frozen section fall in some pen band, all in specks that an area filter removes. Ink over
dense tissue takes the tissue's darkness: red over hematoxylin is a dark magenta that no colour
rule can tell from stain (the qc configuration then calls it a fold).

Blur, and why 1-2 um per pixel. A Gaussian blur of σ = 1.5 um, which spoils a 0.5 um per pixel
patch, cuts the mean absolute Laplacian of CMU-1's tissue from 70 to 20 at 2 um per pixel, but
only from 74 to 44 at 4 um (HistoQC's 2.5x) and from 66 to 55 at 8 um: area averaging has
already removed the detail the blur destroys. :func:`sharpness` therefore measures detail at 1-2
um per pixel, reduces it to cells (8 um by default) with a block reduction that needs no
halo, and averages it locally (a triangular kernel with a Gaussian's spread: two box passes,
exact and cheap) over the cells that have detail only, so that tissue next to glass, ink or a
border does not read as blurred.

Blur, and where it is measured. On a slide level, the cells are computed file tile by file
tile, each right after it is decoded (the 2 µm image is never assembled in chunks). Given
``where`` (the cells whose sharpness is wanted, e.g. tissue that is not glass: glass has no
blur by definition, and the qc configuration's outputs read the blur mask nowhere else; see
:mod:`slidemask.ops.relevance`) and the ``margin`` the later steps look across, only the cells
within that margin plus the average's reach are measured, and the file tiles that hold none of
them are not decoded: on a 50000² slide with 31 % tissue, 286 of the 625 tiles of the 2 µm
level. Every wanted cell gets exactly the value of the full computation.
"""

from __future__ import annotations

import functools
import math
import numbers
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import cv2
import dask.array as da
import numpy as np
from dask.base import tokenize
from dask.highlevelgraph import HighLevelGraph

from slidemask.errors import MaskError
from slidemask.io.tiff import PIXELS_ATTR, MappedLevelReader
from slidemask.kernels.artifacts import (
    BLACK_MAX_CHROMA,
    BLACK_MAX_SATURATION,
    BLACK_MAX_VALUE,
    GLASS_GREY,
    PEN_COLORS,
    black_kernel,
    check_cell,
    class_map_kernel,
    flat_depth,
    flat_kernel,
    packed_dtype,
    pen_ink_kernel,
    sharpness_cells_kernel,
    sharpness_ratio_kernel,
    smoothing_depth,
    square_dilate_kernel,
    straight_band_depth,
    straight_band_kernel,
)
from slidemask.kernels.color import check_hsv_input
from slidemask.ops.chunks import map_located, rechunk
from slidemask.ops.literal import as_dask
from slidemask.ops.local import (
    MERGED_ATTR,
    PixelChain,
    _neighbourhood,
    _pointwise,
)
from slidemask.ops.resample import _aligned_axis_chunks, _merge_target
from slidemask.ops.scratch import map_windows, stored_reads, stores
from slidemask.ops.windows import KernelStep

__all__ = [
    "QC_CLASSES",
    "QC_COLORS",
    "QC_PRECEDENCE",
    "black",
    "class_counts",
    "class_map",
    "flat",
    "pen_ink",
    "sharpness",
    "straight_bands",
    "touching_edge",
]

QC_CLASSES: tuple[str, ...] = ("background", "tissue", "pen", "blur", "fold", "bubble", "border")
"""The quality-control classes; a class's label value is its index (0 background ... 6 border)."""

QC_PRECEDENCE: tuple[str, ...] = ("border", "pen", "fold", "bubble", "blur", "tissue")
"""Which class a pixel takes when several apply: the first of these.

Why this order: a scan border or coverslip edge is not tissue at all, and dark enough to look
like black ink and like a fold, so it comes first. Ink lies on top of whatever it covers, and
its strokes are dark, flat and without detail, so it comes before fold, bubble and blur. A
fold is dark and a bubble is flat; both have less detail than sharp tissue, so the blur
measure flags them too and they come before blur. Tissue is what is left; background is 0."""

QC_COLORS: dict[str, tuple[int, int, int, int]] = {
    "background": (0, 0, 0, 0),
    "tissue": (0, 200, 0, 110),
    "pen": (0, 90, 255, 200),
    "blur": (255, 200, 0, 200),
    "fold": (170, 0, 170, 200),
    "bubble": (0, 220, 220, 200),
    "border": (255, 40, 40, 200),
}
"""Display colour (R, G, B, alpha) of each class: OME-Zarr ``image-label.colors``, GeoJSON and
preview."""


def pen_ink(rgb: da.Array, colors: Sequence[str] = PEN_COLORS) -> da.Array:
    """Lazy bool mask of pen ink of the given ``colors`` (``blue``, ``green``, ``red``,
    ``black``; see the module notes for the colour bands).

    Parameters
    ----------
    rgb : dask.array.Array
        ``(rows, cols, 3)`` RGB or ``(rows, cols, 4)`` RGBA, uint8 (0-255 per channel; alpha
        ignored), in the pixels of its level, any chunking (a numpy array is taken as one
        chunk).
    colors : sequence of str
        Ink colours to find, any of :data:`slidemask.kernels.artifacts.PEN_COLORS` (default:
        all four).

    Returns
    -------
    dask.array.Array
        ``(rows, cols)`` bool, same row/column chunks. Pointwise (fused with decoding on a
        slide level); follow it with an area filter and a dilation to cover whole strokes.

    Raises
    ------
    MaskError
        ``rgb`` is not uint8 RGB(A), or ``colors`` is empty or names an unknown colour.

    Examples
    --------
    Blue ink, black ink, eosin pink and glass:

    >>> import dask.array as da
    >>> import numpy as np
    >>> from slidemask import pen_ink
    >>> rgb = np.array([[[29, 68, 188], [20, 20, 20], [230, 140, 200], [250, 250, 250]]],
    ...                dtype=np.uint8)
    >>> pen_ink(da.from_array(rgb, chunks=(1, 2, 3))).compute().tolist()
    [[True, True, False, False]]
    >>> pen_ink(da.from_array(rgb, chunks=(1, 2, 3)), colors=["blue"]).compute().tolist()
    [[True, False, False, False]]
    """
    rgb = as_dask(rgb, "pen_ink")
    check_hsv_input(rgb.shape, rgb.dtype)
    wanted = tuple(dict.fromkeys(str(c) for c in colors))
    unknown = [c for c in wanted if c not in PEN_COLORS]
    if unknown or not wanted:
        raise MaskError(
            f"pen_ink: colors must be some of {', '.join(PEN_COLORS)}, got {list(colors)!r}"
        )
    return _pointwise(rgb, pen_ink_kernel, {"colors": wanted}, dtype=bool, plane=True)


def black(
    rgb: da.Array,
    *,
    max_value: int = BLACK_MAX_VALUE,
    max_chroma: int = BLACK_MAX_CHROMA,
    max_saturation: int = BLACK_MAX_SATURATION,
) -> da.Array:
    """Lazy bool mask of neutral dark pixels: brightest channel ``<= max_value``, channel
    spread ``<= max_chroma`` and HSV saturation ``<= max_saturation`` (black ink, scan
    borders, opaque debris; not a dark fold, which keeps its stain's hue).

    Parameters
    ----------
    rgb : dask.array.Array
        ``(rows, cols, 3)`` RGB or ``(rows, cols, 4)`` RGBA, uint8 (alpha ignored), in the
        pixels of its level, any chunking (a numpy array is taken as one chunk).
    max_value : int
        Largest brightest channel (HSV value), grey levels 0-255; default
        :data:`slidemask.kernels.artifacts.BLACK_MAX_VALUE` (60).
    max_chroma : int
        Largest spread ``max - min`` of the three channels, grey levels 0-255; default
        :data:`slidemask.kernels.artifacts.BLACK_MAX_CHROMA` (25).
    max_saturation : int
        Largest HSV saturation ``255 * (max - min) / max``, 0-255; default
        :data:`slidemask.kernels.artifacts.BLACK_MAX_SATURATION` (150).

    Returns
    -------
    dask.array.Array
        ``(rows, cols)`` bool, same row/column chunks; pointwise.

    Raises
    ------
    MaskError
        ``rgb`` is not uint8 RGB(A), or a limit is not an integer 0-255.

    Examples
    --------
    Black ink, a dark purple fold, mid grey and glass:

    >>> import dask.array as da
    >>> import numpy as np
    >>> from slidemask import black
    >>> rgb = np.array([[[20, 20, 20], [90, 20, 90], [120, 120, 120], [250, 250, 250]]],
    ...                dtype=np.uint8)
    >>> black(da.from_array(rgb, chunks=(1, 2, 3))).compute().tolist()
    [[True, False, False, False]]
    """
    rgb = as_dask(rgb, "black")
    check_hsv_input(rgb.shape, rgb.dtype)
    limits = (("max_value", max_value), ("max_chroma", max_chroma),
              ("max_saturation", max_saturation))
    for name, value in limits:
        if isinstance(value, bool) or not isinstance(value, int | np.integer) \
                or not 0 <= value <= 255:
            raise MaskError(f"black: {name} must be an integer 0-255, got {value!r}")
    kwargs = {name: int(value) for name, value in limits}
    return _pointwise(rgb, black_kernel, kwargs, dtype=bool, plane=True)


@dataclass(frozen=True)
class _Cells:
    """:func:`slidemask.kernels.artifacts.sharpness_cells_kernel` of a grey chunk, keeping only
    the cells marked in ``needed`` (the others 0: featureless) when it is given."""

    cell: int
    glass: int

    def __call__(self, tile: np.ndarray, needed: np.ndarray | None = None) -> np.ndarray:
        if needed is not None and not needed.any():
            return np.zeros((tile.shape[0] // self.cell, tile.shape[1] // self.cell),
                            packed_dtype(self.cell))
        cells = sharpness_cells_kernel(tile, factor=self.cell, glass=self.glass)
        if needed is not None:
            cells[~needed] = 0
        return cells


@dataclass(frozen=True)
class _SlideCells:
    """The packed cells of a slide level's grey, read file tile by file tile.

    ``grey`` maps the level to grey as each file tile is decoded
    (:class:`slidemask.io.tiff.MappedLevelReader`); the cells of a region are computed one
    file tile at a time, right after the tile is decoded and converted (while it is in the CPU
    cache), and a tile none of whose cells is needed is not read at all. Sliced like an array
    of cells (``reader[r0:r1, c0:c1]``), for :func:`dask.array.from_array`.
    """

    grey: MappedLevelReader
    cell: int
    glass: int
    tile: tuple[int, int]  # file tile (or strip) rows and columns
    shape: tuple[int, int]  # the cell grid
    ndim: int = 2

    @property
    def dtype(self) -> np.dtype:
        """The packed cells' type (:func:`slidemask.kernels.artifacts.packed_dtype`)."""
        return packed_dtype(self.cell)

    def __getitem__(self, key: tuple[slice, ...]) -> np.ndarray:
        (r0, r1, _), (c0, c1, _) = (k.indices(n) for k, n in zip(key, self.shape, strict=True))
        return self.cells(r0, r1, c0, c1)

    def cells(
        self, r0: int, r1: int, c0: int, c1: int, needed: np.ndarray | None = None
    ) -> np.ndarray:
        """Packed cells ``[r0, r1) x [c0, c1)``; with ``needed`` (a bool block of that shape)
        only the needed ones, the others 0, reading only the file tiles they lie in."""
        c = self.cell
        out = np.zeros((r1 - r0, c1 - c0), dtype=packed_dtype(c))
        for y0, y1 in _spans(r0 * c, r1 * c, self.tile[0], c):
            for x0, x1 in _spans(c0 * c, c1 * c, self.tile[1], c):
                rows = slice(y0 // c - r0, y1 // c - r0)
                cols = slice(x0 // c - c0, x1 // c - c0)
                if needed is not None and not needed[rows, cols].any():
                    continue  # nothing wanted here: the tile is not decoded
                out[rows, cols] = sharpness_cells_kernel(
                    self.grey[y0:y1, x0:x1], factor=c, glass=self.glass
                )
        if needed is not None:
            out[~needed] = 0
        return out


def _spans(start: int, stop: int, tile: int, cell: int) -> list[tuple[int, int]]:
    """``[start, stop)`` (multiples of ``cell``) cut at the file tiles' edges, each piece
    widened to whole cells (a piece then reads at most the two tiles a cell straddles)."""
    spans: list[tuple[int, int]] = []
    edge = start
    while edge < stop:
        end = min(stop, (edge // tile + 1) * tile)
        lo, hi = edge // cell * cell, -(-end // cell) * cell
        if not spans or hi > spans[-1][1]:
            spans.append((max(lo, spans[-1][1]) if spans else lo, hi))
        edge = end
    return spans


def _gated_block(
    needed: np.ndarray, *, reader: _SlideCells, location: tuple[int, ...],
    offset: tuple[int, ...],
) -> np.ndarray:
    """The packed cells of one block of the cell grid (at ``offset``, from
    :func:`map_located`)."""
    r0, c0 = offset[:2]
    return reader.cells(r0, r0 + needed.shape[0], c0, c0 + needed.shape[1], needed)


def _block_chunks(chunks: tuple[int, ...], size: int, cell: int) -> tuple[int, ...]:
    """Cell-grid chunks of ``size`` cells from pixel chunks: the pixel chunks made multiples
    of ``cell`` (:func:`slidemask.ops.resample._aligned_axis_chunks`), divided by it."""
    return tuple(n // cell for n in _aligned_axis_chunks(chunks, size * cell, cell))


def _merged(chunks: tuple[int, ...], size: int) -> int:
    """Chunk edge for the smoothing: whole blocks merged up to about :data:`_SMOOTH_CHUNK`."""
    block = max(chunks)
    return max(1, min(size, block * max(1, _SMOOTH_CHUNK // max(block, 1))))


_SMOOTH_CHUNK = 512
"""Cells per side of a chunk of the smoothing, at least (float64 temporaries: about 15 MiB a
task; the halo is a few cells)."""


def _slide_source(grey: da.Array) -> tuple[Any, int, tuple[Any, ...]] | None:
    """``(slide, level, pointwise steps)`` when ``grey`` is a pointwise map of a whole slide
    level (:meth:`slidemask.io.Slide.map_pixels` through the public pointwise steps)."""
    source = getattr(grey, PIXELS_ATTR, None)
    if source is None:
        return None
    slide, level, steps = source
    readers = getattr(slide, "readers", None)
    if not readers or not steps or grey.shape != tuple(slide.levels[level].shape[:2]):
        return None
    return slide, level, steps


def _packed_cells(
    grey: da.Array, c: int, glass: int, needed: da.Array | None
) -> da.Array:
    """The packed cells of ``grey`` (see :func:`sharpness`), only the ``needed`` ones (the
    others 0) when given."""
    rows, cols = grey.shape[0] // c, grey.shape[1] // c
    chunks = (_block_chunks(grey.chunks[0], rows, c), _block_chunks(grey.chunks[1], cols, c))
    dtype = packed_dtype(c)
    meta = np.empty((0, 0), dtype)
    source = _slide_source(grey)
    if source is not None:
        slide, level, steps = source
        reader = slide.readers[level]
        mapped = MappedLevelReader(reader, PixelChain(tuple(steps)), np.dtype(np.uint8), None)
        geometry = reader.geometry
        cells = _SlideCells(mapped, c, int(glass), (geometry.segment_rows, geometry.segment_cols),
                            (rows, cols))
        token = tokenize(reader.path, reader.fingerprint, level, tuple(steps), c, glass, chunks)
        if needed is None:
            return da.from_array(cells, chunks=chunks, asarray=False, lock=False, fancy=False,
                                 meta=meta, name=f"slidemask-sharpness-cells-{token}")
        return map_located(_gated_block, _on_disk(needed, chunks, "sharpness-needed"),
                           reader=cells, dtype=dtype,
                           meta=meta, token=f"slidemask-sharpness-cells-{token}")
    grey = grey[: rows * c, : cols * c]
    pixel_chunks = tuple(tuple(n * c for n in axis) for axis in chunks)
    if grey.chunks != pixel_chunks:
        grey = rechunk(grey, pixel_chunks)
    kernel = _Cells(c, int(glass))
    args = [grey] if needed is None else [grey, _on_disk(needed, chunks, "sharpness-needed")]
    return da.map_blocks(kernel, *args, chunks=chunks, dtype=dtype, meta=meta,
                         token=f"slidemask-sharpness-cells-{c}-{glass}")


def _on_disk(
    mask: da.Array, chunks: tuple[tuple[int, ...], ...], label: str,
    after: da.Array | None = None,
) -> da.Array:
    """``mask`` in ``chunks``, stored to scratch as it is computed and read back by each task
    that uses it. The cells' gate (and the kept region applied at the end) of every tile is
    ready long before the tile's turn comes; held in memory, the gates, with the masks they
    are made from, grew with the slide's area (tens of MiB on a 50000-pixel scan). With
    ``after`` (an array of ``chunks``), each chunk is read only once the chunk of ``after`` at
    its place is computed: a read has no other input, and dask would run them all first."""
    mask = rechunk(mask, chunks)
    if mask.numblocks == (1, 1):
        return mask
    grid, folder = stores(mask, label)
    if after is None:
        return stored_reads(folder, grid, mask, label=label)
    name = f"slidemask-{label}-after-{tokenize(grid.name, after.name)}"
    nbr, nbc = mask.numblocks
    dsk: dict[Any, Any] = {(name, i, j): (_both_done, (grid.name, i, j), (after.name, i, j))
                           for i in range(nbr) for j in range(nbc)}
    graph = HighLevelGraph.from_collections(name, dsk, dependencies=[grid, after])  # type: ignore[list-item]
    ready = da.Array(graph, name, chunks=((1,) * nbr, (1,) * nbc), dtype=object,
                     meta=np.empty((0, 0), object))
    return stored_reads(folder, grid, mask, gate=ready, label=label)


def _both_done(stored: Any, computed: Any) -> np.ndarray:
    """A gate element: nothing, once a chunk is stored and its partner is computed."""
    return np.empty((1, 1), dtype=object)


def _square_dilation(mask: da.Array, reach: int, label: str) -> da.Array:
    """``mask`` grown by a square of ``2 reach + 1`` pixels (Chebyshev distance), exact for any
    chunking; in windows read back from scratch (:func:`map_windows`: map_overlap held about
    two rows of chunks of a slide-wide mask for their neighbours)."""
    if reach == 0:
        return mask
    kernel = functools.partial(square_dilate_kernel, reach=reach)
    return map_windows(mask, kernel, reach, dtype=bool, label=label)


def _check_where(where: Any, shape: tuple[int, int], margin: Any) -> tuple[da.Array, int]:
    where = as_dask(where, "sharpness")
    if where.ndim != 2 or where.dtype != np.bool_ or where.shape != shape:
        raise MaskError(
            f"sharpness: where must be a 2-D bool mask of the cell grid's shape {shape}, got "
            f"{where.shape} {where.dtype}"
        )
    if isinstance(margin, bool) or not isinstance(margin, int | np.integer) or margin < 0:
        raise MaskError(f"sharpness: margin must be an integer >= 0 cells, got {margin!r}")
    return where, int(margin)


def sharpness(
    grey: da.Array,
    cell: int,
    sigma: float,
    *,
    glass: int = GLASS_GREY,
    min_detail: float = 2.0,
    relative: bool = True,
    where: da.Array | None = None,
    margin: int = 0,
) -> da.Array:
    """Lazy local sharpness of a grey image, one value per ``cell x cell`` block.

    The blur measure of HistoQC's ``BlurDetectionModule`` (``gaussian(|laplace(grey)|, σ)``,
    low where the image is blurred), made independent of the stain's strength, cheap at 1-2 um
    per pixel, and exact for any chunking:

    1. per cell, the sums of the absolute second differences (detail) and of the absolute
       first differences (contrast) along rows and columns, from the cell's own pixels only
       (:func:`slidemask.kernels.artifacts.sharpness_cells_kernel`, a block reduction: no
       halo), and the cell's number of non-glass pixels (grey < ``glass``);
    2. the local average of the cells' values (two passes of a box, a triangular kernel with
       the spread of a Gaussian of σ = ``sigma / cell`` cells; exact integer sums), weighted
       by their non-glass pixels, leaving out featureless cells (mean detail
       below ``min_detail``: glass, ink, scan borders, bubbles), which have nothing to blur:
       they neither count nor dilute the tissue next to them;
    3. with ``relative`` (the default), the averaged detail per second difference divided by
       the averaged contrast per first difference. A blur removes the finest detail first,
       so it lowers the second differences more than the first ones, while a paler stain
       or a flatter scanner scales both alike: the ratio tells blur from faint staining,
       where detail alone (``relative=False``, in grey levels) reads pale tissue as blurred.

    Parameters
    ----------
    grey : dask.array.Array
        ``(rows, cols)`` uint8 grey (:func:`slidemask.to_gray`), at the resolution where blur is
        judged (1-2 um per pixel, see the module notes). On a slide level (``to_gray`` of
        ``slide.levels[k]``) the cells are computed file tile by file tile as each is decoded.
    cell : int
        Cell edge in pixels of ``grey`` (>= 3). The result has one pixel per cell.
    sigma : float
        Spread (σ) of the average in pixels of ``grey`` (HistoQC's Gaussian: 7 pixels at 4 um
        = 28 um).
    glass : int
        Grey level 0-256 from which a pixel counts as glass (256: none does); default
        :data:`slidemask.kernels.artifacts.GLASS_GREY` (215).
    min_detail : float
        Mean detail (grey levels) below which a cell is featureless and left out.
    relative : bool
        Detail relative to contrast, unitless (True); or detail in grey levels (False).
    where : dask.array.Array, optional
        Optional ``(rows // cell, cols // cell)`` bool mask of the cells whose sharpness is
        wanted (e.g. the tissue that is not glass, where blur is judged). Cells within
        ``margin`` cells of it (Chebyshev distance) get the value they get without ``where``;
        every other cell is 0. Only the cells within ``margin`` plus the average's reach
        (:func:`slidemask.kernels.artifacts.smoothing_depth`) are measured: on a slide level,
        the file tiles holding none of them are not decoded.
    margin : int
        Cells (>= 0) around ``where`` that are wanted too: the reach of what follows (an
        opening by a disk of radius r looks 2 r cells away), so that it sees exact values.

    Returns
    -------
    dask.array.Array
        ``(rows // cell, cols // cell)`` float32. Relative: sharp tissue at 2 um per pixel
        (8 um cells, σ 16 um) reads 1.24-1.55 (1st-90th percentile, median 1.47, on H&E and
        a frozen section at any stain strength; white noise reads √3); blurred by a Gaussian of
        σ = 1 um median 1.19-1.24, 1.5 um 1.00-1.07, 2 um 0.85-0.94. In grey levels:
        sharp H&E 15-50, blurred by σ = 1.5 um 9-13, but pale tissue reads low too. 0 where
        no cell with detail lies within reach of the average (featureless: as blurred as it
        gets). Cell ``(i, j)`` covers ``grey`` pixels ``[i*cell, (i+1)*cell) x [j*cell,
        (j+1)*cell)``; partial cells at the bottom/right are dropped. Memory: one chunk of
        ``grey`` (on a slide level: one file tile) per task, then halo windows of the cell
        grid, read back from scratch (:func:`slidemask.ops.scratch.map_windows`): the cells,
        and the gates that ``where`` makes, are stored as they are computed, so no part of
        the grid waits in memory for its neighbours.

    Raises
    ------
    MaskError
        ``grey`` is not 2-D uint8, or is smaller than one cell; ``cell``, ``sigma``,
        ``glass``, ``min_detail``, ``relative``, ``where`` or ``margin`` is out of range.

    Examples
    --------
    A checkerboard of detail on the left half of a 24 x 24 image, glass on the right, in
    cells of 4 pixels averaged with σ = 4 pixels:

    >>> import dask.array as da
    >>> import numpy as np
    >>> from slidemask import sharpness
    >>> yy, xx = np.mgrid[:24, :24]
    >>> grey = np.full((24, 24), 240, dtype=np.uint8)
    >>> grey[:, :12] = np.where((yy[:, :12] + xx[:, :12]) % 2, 80, 160)
    >>> cells = sharpness(da.from_array(grey, chunks=8), 4, 4.0)
    >>> cells.shape, cells.dtype
    ((6, 6), dtype('float32'))
    >>> cells[0].compute().tolist()  # glass near the tissue takes the tissue's average
    [2.0, 2.0, 2.0, 2.0, 2.0, 0.0]
    >>> sharpness(da.from_array(grey, chunks=8), 4, 2.0, relative=False)[0].compute().tolist()
    [160.0, 160.0, 160.0, 0.0, 0.0, 0.0]
    """
    grey = as_dask(grey, "sharpness")
    c = check_cell(cell)
    if grey.ndim != 2 or grey.dtype != np.uint8:
        raise MaskError(
            f"sharpness expects 2-D uint8 grey (rows, cols), got shape {grey.shape} dtype "
            f"{grey.dtype}; convert with to_gray(rgb)"
        )
    if isinstance(glass, bool) or not isinstance(glass, int | np.integer) \
            or not 0 <= glass <= 256:
        raise MaskError(f"sharpness: glass must be an integer grey level 0-256, got {glass!r}")
    cells_sigma = float(sigma) / c if _real(sigma) is not None else sigma
    depth = smoothing_depth(cells_sigma)  # validates sigma
    if grey.shape[0] < c or grey.shape[1] < c:
        raise MaskError(
            f"sharpness: cell {c} is larger than the image ({grey.shape[0]} x {grey.shape[1]})"
        )
    detail = _real(min_detail)
    if detail is None or not 0 <= detail < math.inf:
        raise MaskError(f"sharpness: min_detail must be a finite number >= 0, got {min_detail!r}")
    if not isinstance(relative, bool | np.bool_):
        raise MaskError(f"sharpness: relative must be True or False, got {relative!r}")
    shape = (grey.shape[0] // c, grey.shape[1] // c)
    kept = needed = None
    if where is not None:
        where, reach = _check_where(where, shape, margin)
        kept = _square_dilation(where, reach, "sharpness-margin")
        # a kept cell's average reads the cells within `depth` of it: those are measured
        needed = _square_dilation(kept, depth, "sharpness-reach")
    packed = _packed_cells(grey, c, int(glass), needed)
    merged = (_merged(packed.chunks[0], shape[0]), _merged(packed.chunks[1], shape[1]))
    if max(packed.chunks[0]) < merged[0] or max(packed.chunks[1]) < merged[1]:
        packed = rechunk(packed, merged)
    floor = math.ceil(float(min_detail) * 2 * c * (c - 2))  # on the cell's detail sum
    # the cells are stored as they are measured and each window read back (map_windows): in
    # map_overlap, dask kept nearly every cell of the slide until its neighbours had run, as
    # the cells of all tiles become ready at once (33 MiB of a 50000-pixel scan's 39)
    ratio = functools.partial(sharpness_ratio_kernel, floor=floor, sigma=cells_sigma, cell=c,
                              relative=bool(relative))
    out = map_windows(packed, ratio, depth, dtype=np.float32, label="sharpness")
    if kept is not None:
        out = da.where(_on_disk(kept, out.chunks, "sharpness-kept", after=out), out,
                       np.float32(0))
    # the cell grid's chunks as a downsampled image has them (about OUTPUT_CHUNK a side), so
    # that the mask made from it is chunked like the other masks of its resolution
    target = (_merge_target(max(out.chunks[0]), shape[0]), _merge_target(max(out.chunks[1]),
                                                                          shape[1]))
    if max(out.chunks[0]) < target[0] or max(out.chunks[1]) < target[1]:
        joined = rechunk(out, target)
        setattr(joined, MERGED_ATTR, out)  # a threshold compares before the merge
        return joined
    return out



def _real(value: Any) -> float | None:
    """``value`` as a float when it is a real number (Python's or numpy's, not bool), else
    None (NaN stays NaN: the callers' range checks refuse it)."""
    if isinstance(value, bool | np.bool_) or not isinstance(value, numbers.Real):
        return None
    return float(value)


def flat(grey: da.Array, ksize: int, max_diff: float = 2.55) -> da.Array:
    """Lazy bool mask of flat pixels: ``|grey - mean of its ksize x ksize square| < max_diff``.

    HistoQC's smoothness test for air bubbles and flat areas (``detectSmoothness``: 10 x 10
    window at 1.25x, threshold 0.01 of the grey range, i.e. 2.55 on 0-255). Glass is flat too:
    combine with a tissue mask (``flat & tissue``) and drop small objects.

    Parameters
    ----------
    grey : dask.array.Array
        ``(rows, cols)`` uint8 or uint16 grey, any chunking (a numpy array is taken as one
        chunk).
    ksize : int
        Odd window edge in pixels of ``grey``, >= 3 (edges replicated). Halo ``ksize // 2``.
    max_diff : float
        Grey levels (strict), > 0; compared exactly, without rounding the mean.

    Returns
    -------
    dask.array.Array
        ``(rows, cols)`` bool, same chunks.

    Raises
    ------
    MaskError
        ``grey`` is not 2-D uint8 or uint16, ``ksize`` is not an odd integer >= 3, or
        ``max_diff`` is not a positive number.

    Examples
    --------
    A flat grey with one dark pixel: the pixels whose 3 x 3 window holds it are not flat.

    >>> import dask.array as da
    >>> import numpy as np
    >>> from slidemask import flat
    >>> grey = np.full((5, 6), 200, dtype=np.uint8)
    >>> grey[2, 3] = 100
    >>> flat(da.from_array(grey, chunks=3), 3).compute().astype(int)
    array([[1, 1, 1, 1, 1, 1],
           [1, 1, 0, 0, 0, 1],
           [1, 1, 0, 0, 0, 1],
           [1, 1, 0, 0, 0, 1],
           [1, 1, 1, 1, 1, 1]])
    """
    grey = as_dask(grey, "flat")
    if grey.ndim != 2 or grey.dtype not in (np.dtype(np.uint8), np.dtype(np.uint16)):
        raise MaskError(
            f"flat expects 2-D uint8 or uint16 grey, got shape {grey.shape} dtype {grey.dtype}"
        )
    depth = flat_depth(ksize)
    diff = _real(max_diff)
    if diff is None or not 0 < diff < math.inf:
        raise MaskError(f"flat: max_diff must be a finite positive number, got {max_diff!r}")
    step = KernelStep(flat_kernel, depth, {"ksize": int(ksize), "max_diff": float(max_diff)})
    return _neighbourhood(grey, step, dtype=bool, label="flat")


def straight_bands(mask: da.Array, length: int, width: int = 0) -> da.Array:
    """Lazy: the pixels of ``mask`` on straight runs of at least ``length`` pixels along rows
    or columns (scan borders, coverslip edges), tolerating a tilt of about
    ``atan(2 * width / length)``.

    See :func:`slidemask.kernels.artifacts.straight_band_kernel`.

    Parameters
    ----------
    mask : dask.array.Array
        ``(rows, cols)`` bool mask (e.g. :func:`black`), any chunking (a numpy array is taken
        as one chunk).
    length : int
        Shortest run in pixels of ``mask``, >= 3 (an even length counts as ``length + 1``:
        the line is ``2 * (length // 2) + 1`` pixels).
    width : int
        Pixels of ``mask`` (>= 0) by which the mask is grown across a run before the run is
        measured, so that a tilted band still counts.

    Returns
    -------
    dask.array.Array
        ``(rows, cols)`` bool, same shape and chunks; halo ``width + 2 * (length // 2)``.

    Raises
    ------
    MaskError
        ``mask`` is not 2-D bool, ``length`` is not an integer >= 3, or ``width`` is not an
        integer >= 0.

    Examples
    --------
    A full row (a scan border) and a 2 x 2 speck; only the row is a band of 9 pixels:

    >>> import dask.array as da
    >>> import numpy as np
    >>> from slidemask import straight_bands
    >>> mask = np.zeros((8, 12), dtype=bool)
    >>> mask[0, :] = True
    >>> mask[4:6, 4:6] = True
    >>> bands = straight_bands(da.from_array(mask, chunks=4), 9).compute()
    >>> bool(bands[0].all()), int(bands.sum())
    (True, 12)
    """
    mask = as_dask(mask, "straight_bands")
    if mask.ndim != 2 or mask.dtype != np.bool_:
        raise MaskError(
            f"straight_bands expects a 2-D bool mask, got shape {mask.shape} dtype {mask.dtype}"
        )
    depth = straight_band_depth(length, width)
    step = KernelStep(straight_band_kernel, depth, {"length": int(length), "width": int(width)})
    return _neighbourhood(mask, step, dtype=bool, label="straight-bands")


def touching_edge(mask: da.Array) -> da.Array:
    """Lazy: the 4-connected components of ``mask`` that touch the image's edge (scan
    borders do; ink strokes and folds inside the slide do not).

    ``~fill_holes(~mask)``: the components that do not touch the edge are exactly the holes
    of the complement (:func:`slidemask.ops.holes.fill_holes`, exact and out of core: two
    passes over chunk summaries), and what the filled complement leaves out is the rest of
    ``mask``. ``mask`` is read once: its second pass reads the copy the first one stored (as
    ``mask & ~fill_holes(~mask)``, ``mask`` was computed again, which for a scan border's
    straight dark bands meant decoding the slide level a second time).

    Parameters
    ----------
    mask : dask.array.Array
        ``(rows, cols)`` bool mask, any chunking (a numpy array is taken as one chunk).

    Returns
    -------
    dask.array.Array
        ``(rows, cols)`` bool, same shape and chunks: the pixels of ``mask`` whose component
        touches the first or last row or column.

    Raises
    ------
    MaskError
        ``mask`` is not 2-D bool.

    Examples
    --------
    A band along the top edge and a 2 x 2 speck inside; only the band touches the edge:

    >>> import dask.array as da
    >>> import numpy as np
    >>> from slidemask import touching_edge
    >>> mask = np.zeros((8, 12), dtype=bool)
    >>> mask[0, :] = True
    >>> mask[4:6, 4:6] = True
    >>> edge = touching_edge(da.from_array(mask, chunks=4)).compute()
    >>> bool(edge[0].all()), bool(edge[4:6, 4:6].any())
    (True, False)
    """
    from slidemask.ops.holes import fill_holes

    mask = as_dask(mask, "touching_edge")
    if mask.ndim != 2 or mask.dtype != np.bool_:
        raise MaskError(
            f"touching_edge expects a 2-D bool mask, got shape {mask.shape} dtype {mask.dtype}"
        )
    return ~fill_holes(~mask)


def class_values(
    names: Sequence[str], values: Mapping[str, int] | None = None
) -> dict[str, int]:
    """Label value of each class name: ``values`` where given, else its index in
    :data:`QC_CLASSES`. Raises :class:`MaskError` for a name with neither, or values that are
    not distinct integers 1-255."""
    out: dict[str, int] = {}
    for name in names:
        if values is not None and name in values:
            out[name] = int(values[name])
        elif name in QC_CLASSES[1:]:
            out[name] = QC_CLASSES.index(name)
        else:
            raise MaskError(
                f"class_map: class {name!r} needs a label value (values={{{name!r}: N}}); "
                f"the built-in classes are {', '.join(QC_CLASSES[1:])}"
            )
    problems = [f"{name} is {value}" for name, value in out.items() if not 1 <= value <= 255]
    by_value: dict[int, list[str]] = {}
    for name, value in out.items():
        by_value.setdefault(value, []).append(name)
    problems += [f"{' and '.join(names)} are {'both' if len(names) == 2 else 'all'} {value}"
                 for value, names in by_value.items() if len(names) > 1]
    if problems:
        raise MaskError(
            f"class_map: label values must be distinct integers 1-255: {'; '.join(problems)}"
        )
    return out


def class_map(
    masks: Mapping[str, da.Array],
    precedence: Sequence[str] | None = None,
    *,
    values: Mapping[str, int] | None = None,
) -> da.Array:
    """Lazy uint8 class map: each pixel takes the label of the first class in ``precedence``
    whose mask is set there, 0 (background) where none is.

    Parameters
    ----------
    masks : mapping of str to dask.array.Array
        Class name -> 2-D bool dask array, all the same shape (e.g. ``{"tissue": ...,
        "pen": ..., "blur": blur & tissue}``), in the same pixel frame.
    precedence : sequence of str, optional
        Every key of ``masks`` once, highest precedence first. Default: the order of
        :data:`QC_PRECEDENCE` (for the built-in class names).
    values : mapping of str to int, optional
        Label value per class (1-255); default the class's index in :data:`QC_CLASSES`
        (0 background, 1 tissue, 2 pen, 3 blur, 4 fold, 5 bubble, 6 border).

    Returns
    -------
    dask.array.Array
        ``(rows, cols)`` uint8, chunked like the first mask in ``precedence``. Pointwise.

    Raises
    ------
    MaskError
        No masks; a class outside the built-in ones without ``precedence`` or a value;
        ``precedence`` that does not name every class once; label values that are not
        distinct integers 1-255; a mask that is not 2-D bool of the first mask's shape.

    Examples
    --------
    Pen ink (label 2) over tissue (label 1): pen comes first in :data:`QC_PRECEDENCE`.

    >>> import dask.array as da
    >>> import numpy as np
    >>> from slidemask import class_map
    >>> tissue = np.zeros((4, 4), dtype=bool)
    >>> tissue[1:, :3] = True
    >>> pen = np.zeros((4, 4), dtype=bool)
    >>> pen[1, 1:] = True
    >>> masks = {"tissue": da.from_array(tissue, chunks=2), "pen": da.from_array(pen, chunks=2)}
    >>> class_map(masks).compute().tolist()
    [[0, 0, 0, 0], [1, 2, 2, 2], [1, 1, 1, 0], [1, 1, 1, 0]]
    >>> class_map(masks, ["tissue", "pen"], values={"tissue": 1, "pen": 9}).compute()[1].tolist()
    [1, 1, 1, 9]
    """
    if not masks:
        raise MaskError("class_map: no masks given")
    if precedence is None:
        unknown = [n for n in masks if n not in QC_PRECEDENCE]
        if unknown:
            raise MaskError(
                f"class_map: give precedence= for classes outside the built-in order "
                f"({', '.join(unknown)})"
            )
        order = [n for n in QC_PRECEDENCE if n in masks]
    else:
        order = [str(n) for n in precedence]
        if sorted(order) != sorted(masks) or len(set(order)) != len(order):
            raise MaskError(
                f"class_map: precedence must name every class once; classes: "
                f"{', '.join(masks)}; precedence: {', '.join(order)}"
            )
    label = class_values(order, values)
    arrays = [as_dask(masks[n], "class_map") for n in order]
    first = arrays[0]
    for name, array in zip(order, arrays, strict=True):
        if array.ndim != 2 or array.dtype != np.bool_ or array.shape != first.shape:
            raise MaskError(
                f"class_map: mask {name!r} must be 2-D bool of shape {first.shape}, got "
                f"{array.shape} {array.dtype}"
            )
    aligned = [a if a.chunks == first.chunks else rechunk(a, first.chunks) for a in arrays]
    return da.map_blocks(
        class_map_kernel, *aligned, values=tuple(label[n] for n in order), dtype=np.uint8,
        meta=np.empty((0, 0), np.uint8),
    )


def _count_block(classes: np.ndarray, *tissue: np.ndarray) -> np.ndarray:
    """``(1, 1, 512)`` pixel counts of one block: label values outside, then inside, tissue."""
    inside = np.asarray(tissue[0], dtype=bool) if tissue else None
    if classes.size < 2**24:  # OpenCV counts in float32: exact below 2**24 pixels
        image = np.ascontiguousarray(classes)
        total = cv2.calcHist([image], [0], None, [256], [0, 256]).ravel().astype(np.int64)
        within = np.zeros(256, np.int64)
        if inside is not None:
            hist = cv2.calcHist([image], [0], np.ascontiguousarray(inside).view(np.uint8), [256],
                                [0, 256])
            within = np.asarray(hist).ravel().astype(np.int64)
        return np.concatenate([total - within, within])[None, None, :]
    key = classes.astype(np.int64)
    if inside is not None:
        key = key + 256 * inside.astype(np.int64)
    return np.bincount(key.ravel(), minlength=512).astype(np.int64)[None, None, :]


def class_counts(classes: da.Array, tissue: da.Array | None = None) -> da.Array:
    """Lazy pixel counts per label value of a uint8 class map: ``(2, 256)`` int64, row 0 the
    pixels outside ``tissue`` (a bool mask of the same shape; all pixels when None), row 1
    those inside. One small histogram per chunk, summed.

    Parameters
    ----------
    classes : dask.array.Array
        ``(rows, cols)`` uint8 class map (:func:`class_map`), any chunking (a numpy array is
        taken as one chunk).
    tissue : dask.array.Array, optional
        ``(rows, cols)`` bool mask in the pixel frame of ``classes`` (rechunked to its
        chunks); None counts every pixel as outside.

    Returns
    -------
    dask.array.Array
        ``(2, 256)`` int64: ``[0, v]`` the pixels of label value ``v`` outside ``tissue``,
        ``[1, v]`` those inside (all 0 without ``tissue``). Pixels of ``classes``; multiply by
        the pixel area for square micrometres. Memory: one chunk and a 512-bin histogram per
        task.

    Raises
    ------
    MaskError
        ``classes`` is not a 2-D uint8 class map, or ``tissue`` is not a bool mask of its
        shape.

    Examples
    --------
    >>> import dask.array as da
    >>> import numpy as np
    >>> from slidemask import class_counts
    >>> classes = np.array([[0, 0, 0, 0], [1, 2, 2, 2], [1, 1, 1, 0], [1, 1, 1, 0]],
    ...                    dtype=np.uint8)
    >>> tissue = classes > 0
    >>> tissue[1, 3] = False
    >>> counts = class_counts(da.from_array(classes, chunks=2), da.from_array(tissue, chunks=2))
    >>> counts.shape, counts.dtype
    ((2, 256), dtype('int64'))
    >>> counts[:, :3].compute().tolist()  # labels 0, 1, 2: outside, then inside tissue
    [[6, 0, 1], [0, 7, 2]]
    """
    classes = as_dask(classes, "class_counts")
    if classes.ndim != 2 or classes.dtype != np.uint8:
        raise MaskError(f"class_counts expects a 2-D uint8 class map, got {classes.dtype}")
    args: list[Any] = [classes]
    if tissue is not None:
        tissue = as_dask(tissue, "class_counts")
        if tissue.shape != classes.shape or tissue.dtype != bool:
            raise MaskError(
                f"class_counts: tissue must be a bool mask of the class map's shape "
                f"{classes.shape}, got {tissue.dtype} of shape {tissue.shape}"
            )
        args.append(rechunk(tissue, classes.chunks))
    hists = da.map_blocks(
        _count_block, *args, chunks=((1,) * classes.numblocks[0], (1,) * classes.numblocks[1],
                                     (512,)),
        new_axis=2, dtype=np.int64, meta=np.empty((0, 0, 0), np.int64),
    )
    return hists.sum(axis=(0, 1)).reshape(2, 256)
