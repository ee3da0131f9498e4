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
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import dask.array as da
import numpy as np

from slidemask.errors import MaskError
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
    pen_ink_kernel,
    sharpness_cells_kernel,
    smooth_sum_kernel,
    smoothing_depth,
    straight_band_depth,
    straight_band_kernel,
)
from slidemask.kernels.color import check_hsv_input
from slidemask.ops.literal import as_dask
from slidemask.ops.local import _neighbourhood, _pointwise, map_exact_overlap
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
    rgb
        ``(rows, cols, 3)`` RGB or ``(rows, cols, 4)`` RGBA, uint8.
    colors
        Ink colours to find, any of :data:`slidemask.kernels.artifacts.PEN_COLORS`.

    Returns
    -------
    dask.array.Array
        ``(rows, cols)`` bool, same row/column chunks. Pointwise (fused with decoding on a
        slide level); follow it with an area filter and a dilation to cover whole strokes.
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

    ``rgb``: uint8 RGB or RGBA ``(rows, cols, 3 or 4)``; returns ``(rows, cols)`` bool,
    pointwise.
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
    """Block kernel for :func:`slidemask.ops.resample` style reduction (``factor=`` keyword)."""

    glass: int

    def __call__(self, tile: np.ndarray, *, factor: int) -> np.ndarray:
        return sharpness_cells_kernel(tile, factor=factor, glass=self.glass)


@dataclass(frozen=True)
class _Unpack:
    """From packed cells: ``detail * weight`` (``product``) or ``weight``, the weight being
    the cell's non-glass pixels, or 0 for a featureless cell (detail sum below ``floor``)."""

    floor: int
    product: bool
    dtype: str

    def __call__(self, packed: np.ndarray) -> np.ndarray:
        detail = packed >> 16
        weight = np.where(detail >= self.floor, packed & 0xFFFF, 0)
        return (detail * weight if self.product else weight).astype(self.dtype)


@dataclass(frozen=True)
class _Ratio:
    scale: float  # second differences per cell: the detail sum's divisor for a mean

    def __call__(self, num: np.ndarray, den: np.ndarray) -> np.ndarray:
        out = np.zeros(num.shape, dtype=np.float32)
        np.divide(num, den * self.scale, out=out, where=den > 0, casting="unsafe")
        return out


def sharpness(
    grey: da.Array,
    cell: int,
    sigma: float,
    *,
    glass: int = GLASS_GREY,
    min_detail: float = 2.0,
) -> da.Array:
    """Lazy local sharpness of a grey image, one value per ``cell x cell`` block.

    The blur measure of HistoQC's ``BlurDetectionModule`` (``gaussian(|laplace(grey)|, σ)``,
    low where the image is blurred), computed so that it is cheap at 1-2 um per pixel and exact
    for any chunking:

    1. per cell, the mean absolute second difference along rows plus along columns, from the
       cell's own pixels only (:func:`slidemask.kernels.artifacts.sharpness_cells_kernel`, a
       block reduction: no halo), and the cell's number of non-glass pixels (grey < ``glass``);
    2. the local average of the cells' values (two passes of a box, a triangular kernel with
       the spread of a Gaussian of σ = ``sigma / cell`` cells; exact integer sums), weighted
       by their non-glass pixels, leaving out featureless cells (mean detail
       below ``min_detail``: glass, ink, scan borders, bubbles), which have nothing to blur:
       they neither count nor dilute the tissue next to them.

    Parameters
    ----------
    grey
        ``(rows, cols)`` uint8 grey (:func:`slidemask.to_gray`), at the resolution where blur is
        judged (1-2 um per pixel, see the module notes).
    cell
        Cell edge in pixels of ``grey`` (>= 3). The result has one pixel per cell.
    sigma
        Spread (σ) of the average in pixels of ``grey`` (HistoQC's Gaussian: 7 pixels at 4 um
        = 28 um).
    glass
        Grey level from which a pixel counts as glass.
    min_detail
        Mean detail (grey levels) below which a cell is featureless and left out.

    Returns
    -------
    dask.array.Array
        ``(rows // cell, cols // cell)`` float32 in grey levels per pixel (sharp H&E tissue at
        2 um per pixel, 8 um cells, σ 16 um: 15-50; blurred by σ = 1.5 um: about 9-13), 0 where
        no cell with detail lies within reach of the average (featureless: as blurred as it
        gets). Cell ``(i, j)`` covers ``grey`` pixels ``[i*cell, (i+1)*cell) x [j*cell,
        (j+1)*cell)``; partial cells at the bottom/right are
        dropped. Memory: one chunk of ``grey`` per task, then halo windows of the cell grid.
    """
    from slidemask.ops.resample import _downsample

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
    cells_sigma = float(sigma) / c if isinstance(sigma, int | float) else sigma
    depth = smoothing_depth(cells_sigma)  # validates sigma
    if grey.shape[0] < c or grey.shape[1] < c:
        raise MaskError(
            f"sharpness: cell {c} is larger than the image ({grey.shape[0]} x {grey.shape[1]})"
        )
    packed = _downsample(grey, c, _Cells(int(glass)), "sharpness-cells", crop=True,
                         out_dtype=np.dtype(np.int64))
    if isinstance(min_detail, bool) or not isinstance(min_detail, int | float) \
            or not min_detail >= 0:
        raise MaskError(f"sharpness: min_detail must be a number >= 0, got {min_detail!r}")
    floor = math.ceil(float(min_detail) * 2 * c * (c - 2))  # on the cell's detail sum
    # detail * weight <= 2 c (c - 2) 510 c^2: int32 up to cells of 32 pixels (half the memory)
    wide = np.dtype(np.int32 if 2 * c * (c - 2) * 510 * c * c < 2**31 else np.int64)
    num_in = da.map_blocks(_Unpack(floor, True, wide.str), packed, dtype=wide,
                           meta=np.empty((0, 0), wide))
    den_in = da.map_blocks(_Unpack(floor, False, "<i4"), packed, dtype=np.int32,
                           meta=np.empty((0, 0), np.int32))
    # The cell grid is cell**2 times smaller than the image: its few chunks are smoothed with
    # dask's own overlap (neighbours held in memory) rather than through scratch files.
    num = map_exact_overlap(smooth_sum_kernel, num_in, depth, dtype=np.float64,
                            sigma=cells_sigma)
    den = map_exact_overlap(smooth_sum_kernel, den_in, depth, dtype=np.float64,
                            sigma=cells_sigma)
    return da.map_blocks(_Ratio(float(2 * c * (c - 2))), num, den, dtype=np.float32,
                         meta=np.empty((0, 0), np.float32))


def flat(grey: da.Array, ksize: int, max_diff: float = 2.55) -> da.Array:
    """Lazy bool mask of flat pixels: ``|grey - mean of its ksize x ksize square| < max_diff``.

    HistoQC's smoothness test for air bubbles and flat areas (``detectSmoothness``: 10 x 10
    window at 1.25x, threshold 0.01 of the grey range, i.e. 2.55 on 0-255). Glass is flat too:
    combine with a tissue mask (``flat & tissue``) and drop small objects.

    Parameters
    ----------
    grey
        ``(rows, cols)`` uint8 or uint16 grey.
    ksize
        Odd window edge in pixels, >= 3 (edges replicated). Halo ``ksize // 2``.
    max_diff
        Grey levels (strict); compared exactly, without rounding the mean.

    Returns
    -------
    dask.array.Array
        ``(rows, cols)`` bool, same chunks.
    """
    grey = as_dask(grey, "flat")
    if grey.ndim != 2 or grey.dtype not in (np.dtype(np.uint8), np.dtype(np.uint16)):
        raise MaskError(
            f"flat expects 2-D uint8 or uint16 grey, got shape {grey.shape} dtype {grey.dtype}"
        )
    depth = flat_depth(ksize)
    if isinstance(max_diff, bool) or not isinstance(max_diff, int | float) or max_diff <= 0:
        raise MaskError(f"flat: max_diff must be a positive number, got {max_diff!r}")
    step = KernelStep(flat_kernel, depth, {"ksize": int(ksize), "max_diff": float(max_diff)})
    return _neighbourhood(grey, step, dtype=bool, label="flat")


def straight_bands(mask: da.Array, length: int, width: int = 0) -> da.Array:
    """Lazy: the pixels of ``mask`` on straight runs of at least ``length`` pixels along rows
    or columns (scan borders, coverslip edges), tolerating a tilt of about
    ``atan(2 * width / length)``.

    See :func:`slidemask.kernels.artifacts.straight_band_kernel`. ``mask``: 2-D bool; same
    shape and chunks out; halo ``width + 2 * (length // 2)``.
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

    ``mask & ~fill_holes(~mask)``: the components that do not touch the edge are exactly the
    holes of the complement (:func:`slidemask.ops.holes.fill_holes`, exact and out of core:
    two passes over chunk summaries). ``mask``: 2-D bool; same shape and chunks out.
    """
    from slidemask.ops.holes import fill_holes

    mask = as_dask(mask, "touching_edge")
    if mask.ndim != 2 or mask.dtype != np.bool_:
        raise MaskError(
            f"touching_edge expects a 2-D bool mask, got shape {mask.shape} dtype {mask.dtype}"
        )
    return mask & ~fill_holes(~mask)


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
    used = list(out.values())
    if any(not 1 <= v <= 255 for v in used) or len(set(used)) != len(used):
        raise MaskError(f"class_map: label values must be distinct integers 1-255, got {out}")
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
    masks
        Class name -> 2-D bool dask array, all the same shape (e.g. ``{"tissue": ...,
        "pen": ..., "blur": blur & tissue}``).
    precedence
        Every key of ``masks`` once, highest precedence first. Default: the order of
        :data:`QC_PRECEDENCE` (for the built-in class names).
    values
        Label value per class (1-255); default the class's index in :data:`QC_CLASSES`
        (0 background, 1 tissue, 2 pen, 3 blur, 4 fold, 5 bubble, 6 border).

    Returns
    -------
    dask.array.Array
        ``(rows, cols)`` uint8, chunked like the first mask in ``precedence``. Pointwise.
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
    aligned = [a if a.chunks == first.chunks else a.rechunk(first.chunks) for a in arrays]
    return da.map_blocks(
        class_map_kernel, *aligned, values=tuple(label[n] for n in order), dtype=np.uint8,
        meta=np.empty((0, 0), np.uint8),
    )


def _count_block(classes: np.ndarray, *tissue: np.ndarray) -> np.ndarray:
    key = classes.astype(np.int64)
    if tissue:
        key = key + 256 * np.asarray(tissue[0], dtype=np.int64)
    return np.bincount(key.ravel(), minlength=512).astype(np.int64)[None, None, :]


def class_counts(classes: da.Array, tissue: da.Array | None = None) -> da.Array:
    """Lazy pixel counts per label value of a uint8 class map: ``(2, 256)`` int64, row 0 the
    pixels outside ``tissue`` (a bool mask of the same shape; all pixels when None), row 1
    those inside. One small histogram per chunk, summed."""
    classes = as_dask(classes, "class_counts")
    if classes.ndim != 2 or classes.dtype != np.uint8:
        raise MaskError(f"class_counts expects a 2-D uint8 class map, got {classes.dtype}")
    args: list[Any] = [classes]
    if tissue is not None:
        if tissue.shape != classes.shape:
            raise MaskError("class_counts: tissue must have the class map's shape")
        args.append(tissue.rechunk(classes.chunks))
    hists = da.map_blocks(
        _count_block, *args, chunks=((1,) * classes.numblocks[0], (1,) * classes.numblocks[1],
                                     (512,)),
        new_axis=2, dtype=np.int64, meta=np.empty((0, 0, 0), np.int64),
    )
    return hists.sum(axis=(0, 1)).reshape(2, 256)
