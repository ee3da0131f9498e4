"""Artifact kernels for slide quality control: pen ink, neutral black, sharpness (blur), flat
areas (bubbles), straight dark bands (scan borders, coverslip edges) and the class map.

Pure numpy / OpenCV functions of one tile; no dask. Each declares how far it looks:

* pointwise (no halo): :func:`pen_ink_kernel`, :func:`black_kernel`, :func:`class_map_kernel`;
* a block reduction (no halo, blocks anchored at the image origin):
  :func:`sharpness_cells_kernel` reduces each ``cell x cell`` block to one value, using only
  the block's own pixels, so any chunking whose boundaries are multiples of ``cell`` gives the
  whole-image answer;
* neighbourhood kernels with a declared halo: :func:`smooth_sum_kernel`
  (:func:`smoothing_depth`), :func:`flat_kernel` (:func:`flat_depth`) and
  :func:`straight_band_kernel` (:func:`straight_band_depth`). Each applies its own border
  rule at the window edges, and its arithmetic is exact (integers, or integer-valued floats
  below 2**53), so a pixel's value does not depend on where it sits in its tile.

Colours are OpenCV's 8-bit HSV (H 0-179 = degrees / 2, S and V 0-255) of uint8 RGB. Defaults
come from HistoQC (choosehappy/HistoQC, ``config.ini`` and its modules) where it has them and
from the HistoQC pen examples and the shared H&E slides where it does not; see
:mod:`slidemask.ops.artifacts` for the reasoning and the measurements.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import cv2
import numpy as np

from slidemask.errors import MaskError
from slidemask.kernels.bands import BAND_PIXELS, in_row_bands
from slidemask.kernels.color import in_hsv_range, rgb_to_hsv

__all__ = [
    "BLACK_MAX_CHROMA",
    "BLACK_MAX_SATURATION",
    "BLACK_MAX_VALUE",
    "GLASS_GREY",
    "MAX_CELL",
    "PEN_BANDS",
    "PEN_COLORS",
    "black_kernel",
    "check_cell",
    "class_map_kernel",
    "flat_depth",
    "flat_kernel",
    "pen_ink_kernel",
    "packed_dtype",
    "sharpness_cells_kernel",
    "sharpness_ratio_kernel",
    "smooth_sum_kernel",
    "square_dilate_kernel",
    "smoothing_depth",
    "smoothing_width",
    "straight_band_depth",
    "straight_band_kernel",
    "unpack_cells",
]

PEN_BANDS: dict[str, tuple[tuple[int, int, int], tuple[int, int, int]]] = {
    # HistoQC's blue pen example (29, 68, 188) is H 111; hematoxylin is bluer-purple (H >= 125
    # for 95 % of saturated CMU-1 pixels), so blue stops at 122.
    "blue": ((96, 90, 40), (122, 255, 255)),
    # HistoQC's green pen is teal (H 84-89, S 49-193); no H&E stain is green.
    "green": ((35, 60, 30), (95, 255, 255)),
    # Red ink is crimson to red (HistoQC's example: H 166-178, S 91-230, V 165-224; over
    # tissue it darkens to V ~100). Eosin is pink-magenta (H 153-170), so red ink is H >= 172
    # or <= 8 with S >= 90 and V >= 100: 0.08 % of CMU-1 and 0.1 % of the TCGA frozen section
    # at 2 um per pixel (0.004 % and 0.05 % at 8 um), specks that an area filter removes.
    "red": ((172, 90, 100), (8, 255, 255)),
}
"""OpenCV HSV bands (inclusive; a lower hue above the upper one wraps through red) of
coloured pen inks."""

PEN_COLORS = ("blue", "green", "red", "black")
"""Ink colours :func:`pen_ink_kernel` knows: the :data:`PEN_BANDS` plus ``black``."""

BLACK_MAX_VALUE = 60
"""Black ink absorbs every channel: HSV value (the brightest channel) at most 60, i.e. an
optical density of at least log10(255 / 60) = 0.63 in every channel (86 % of HistoQC's black
pen stroke). Dense hematoxylin and eosin keep one channel bright (V >= 50 on CMU-1 at 8 um)."""

BLACK_MAX_CHROMA = 25
"""Black ink is neutral: max - min channel at most 25 (95 % of HistoQC's black pen pixels are
<= 22)."""

BLACK_MAX_SATURATION = 150
"""...and not saturated: HSV saturation (``255 * (max - min) / max``) at most 150 (HistoQC's
brown-black ink: 69-113). Very dark pixels have a small spread whatever their hue; a fold keeps
its stain's hue and becomes more saturated as it darkens (S >= 170 at six times the optical
density), so folds are not ink."""

GLASS_GREY = 215
"""Grey level (OpenCV luma, 0-255) from which a pixel counts as glass in the sharpness
average: glass (about 235-245) has no detail to lose, and averaging it in would make every
tissue edge look blurred."""


def _empty_mask(tile: np.ndarray) -> np.ndarray:
    return np.zeros(tile.shape[:2], dtype=bool)


def black_kernel(
    tile: np.ndarray,
    *,
    max_value: int,
    max_chroma: int,
    max_saturation: int = BLACK_MAX_SATURATION,
) -> np.ndarray:
    """Neutral dark pixels of a uint8 RGB(A) tile: ``max(R, G, B) <= max_value``, spread
    ``max - min <= max_chroma`` and saturation ``255 * (max - min) <= max_saturation * max``
    (integers, exact). ``(rows, cols)`` bool; pointwise."""
    return in_row_bands(_black, tile, max_value=max_value, max_chroma=max_chroma,
                     max_saturation=max_saturation)


def _black(tile: np.ndarray, *, max_value: int, max_chroma: int, max_saturation: int
           ) -> np.ndarray:
    if tile.shape[0] == 0 or tile.shape[1] == 0:
        return _empty_mask(tile)
    r, g, b = cv2.split(np.ascontiguousarray(tile[:, :, :3]))
    hi = cv2.max(cv2.max(r, g), b)
    spread = cv2.subtract(hi, cv2.min(cv2.min(r, g), b))
    out = np.asarray(hi <= max_value)
    out &= np.asarray(spread) <= max_chroma
    dark = np.flatnonzero(out)  # few pixels: the saturation test in integers on those only
    if dark.size:
        h = hi.ravel()[dark].astype(np.int32)
        keep = 255 * spread.ravel()[dark].astype(np.int32) <= max_saturation * h
        out.ravel()[dark[~keep]] = False
    return out


def pen_ink_kernel(
    tile: np.ndarray,
    *,
    colors: tuple[str, ...],
    max_value: int = BLACK_MAX_VALUE,
    max_chroma: int = BLACK_MAX_CHROMA,
    max_saturation: int = BLACK_MAX_SATURATION,
) -> np.ndarray:
    """Pixels of pen ink in any of ``colors`` (see :data:`PEN_COLORS`): ``(rows, cols)`` bool.

    Coloured inks are the HSV bands of :data:`PEN_BANDS`; ``black`` is :func:`black_kernel`
    with ``max_value``, ``max_chroma`` and ``max_saturation``. Pointwise; uint8 RGB or RGBA
    (alpha ignored).
    """
    return in_row_bands(_pen_ink, tile, colors=colors, max_value=max_value,
                     max_chroma=max_chroma, max_saturation=max_saturation)


def _pen_ink(tile: np.ndarray, *, colors: tuple[str, ...], max_value: int, max_chroma: int,
             max_saturation: int) -> np.ndarray:
    if tile.shape[0] == 0 or tile.shape[1] == 0:
        return _empty_mask(tile)
    out = np.zeros(tile.shape[:2], dtype=bool)
    bands = [PEN_BANDS[c] for c in colors if c in PEN_BANDS]
    if bands:
        hsv = rgb_to_hsv(tile)
        for lower, upper in bands:
            out |= in_hsv_range(hsv, lower=lower, upper=upper)
    if "black" in colors:
        out |= _black(tile, max_value=max_value, max_chroma=max_chroma,
                      max_saturation=max_saturation)
    return out


# --------------------------------------------------------------------------------------------
# sharpness: a block reduction, then a normalized local average


def check_cell(cell: Any) -> int:
    """``cell`` as an int; raise :class:`MaskError` unless it is an integer from 3 (a second
    difference needs three pixels inside the cell) to :data:`MAX_CELL`."""
    if isinstance(cell, bool) or not isinstance(cell, int | np.integer) \
            or not 3 <= cell <= MAX_CELL:
        raise MaskError(
            f"sharpness: cell must be an integer of 3-{MAX_CELL} pixels, got {cell!r}"
        )
    return int(cell)


MAX_CELL = 64
"""Largest cell edge, pixels: a cell's three packed sums still fit one int64."""


def _field_bits(cell: int) -> tuple[int, int, int]:
    """Bits of a ``cell``-pixel cell's weight, contrast and detail sums (their largest
    values: ``cell**2``; ``2 cell (cell - 1) 255``; ``2 cell (cell - 2) 510``)."""
    return ((cell * cell).bit_length(), (2 * cell * (cell - 1) * 255).bit_length(),
            (2 * cell * (cell - 2) * 510).bit_length())


def packed_dtype(cell: int) -> np.dtype:
    """The integer type of :func:`sharpness_cells_kernel`'s packed cells: int32 when the
    three sums of a ``cell``-pixel cell fit (cells of up to 4 pixels, the usual 8 um at
    2 um per pixel: half the memory), else int64."""
    c = check_cell(cell)
    return np.dtype(np.int32 if sum(_field_bits(c)) <= 31 else np.int64)


def unpack_cells(packed: np.ndarray, cell: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(detail, contrast, weight)`` of :func:`sharpness_cells_kernel`'s packed cells, each
    an integer array of ``packed``'s shape and type."""
    weight_bits, contrast_bits, _ = _field_bits(check_cell(cell))
    weight = packed & ((1 << weight_bits) - 1)
    contrast = (packed >> weight_bits) & ((1 << contrast_bits) - 1)
    return packed >> (weight_bits + contrast_bits), contrast, weight


def sharpness_cells_kernel(tile: np.ndarray, *, factor: int, glass: int) -> np.ndarray:
    """Per ``factor x factor`` cell of a uint8 grey tile: its detail, its contrast and its
    non-glass pixels.

    The detail of a cell is the sum over the cell of ``|I(x-1) - 2 I(x) + I(x+1)|`` along
    rows and along columns (the modified Laplacian of Nayar's "sum-modified-Laplacian" focus
    measure, which Pertuz et al. 2012 rank among the best and HistoQC's blur module cites),
    taking only the second differences whose three pixels lie inside the cell: ``2 * cell *
    (cell - 2)`` of them. Its contrast is the sum of ``|I(x+1) - I(x)|`` along rows and
    columns, again inside the cell: ``2 * cell * (cell - 1)`` first differences. Using no
    pixel outside the cell makes the kernel a block reduction: exact for any chunking whose
    boundaries are multiples of ``factor`` (no halo), and cheap enough to run at 1-2 um per
    pixel.

    Parameters
    ----------
    tile
        ``(rows, cols)`` uint8 grey. A partial cell at the bottom or right edge is dropped.
    factor
        Cell edge in pixels, 3 to :data:`MAX_CELL`.
    glass
        Pixels with grey ``>= glass`` count as glass (not in the returned weight).

    Returns
    -------
    numpy.ndarray
        ``(rows // factor, cols // factor)`` of :func:`packed_dtype` (int32 for cells of up
        to 4 pixels, else int64): the detail sum, the contrast sum and the weight (the number
        of non-glass pixels) packed into one integer; :func:`unpack_cells` takes them apart.
    """
    c = check_cell(factor)
    if tile.dtype != np.uint8 or tile.ndim != 2:
        raise MaskError(f"sharpness expects 2-D uint8 grey, got shape {tile.shape} {tile.dtype}")
    rows, cols = tile.shape[0] // c * c, tile.shape[1] // c * c
    if rows == 0 or cols == 0:
        return np.zeros((rows // c, cols // c), dtype=packed_dtype(c))
    band = max(c, _BAND_PIXELS // cols // c * c)
    if rows <= band:
        return _cells(tile[:rows, :cols], c, glass)
    # a band of whole cell rows at a time: its temporaries stay in the CPU cache (a 2048²
    # tile at once is 4 times slower); each cell uses its own rows only
    out = np.empty((rows // c, cols // c), dtype=packed_dtype(c))
    for top in range(0, rows, band):
        out[top // c : (top + band) // c] = _cells(tile[top : min(rows, top + band), :cols], c,
                                                   glass)
    return out


_BAND_PIXELS = BAND_PIXELS
"""Pixels of grey per band of :func:`sharpness_cells_kernel` and :func:`flat_kernel` (a 512²
file tile at once, 128 rows of a 2048-pixel chunk)."""


def _cells(tile: np.ndarray, c: int, glass: int) -> np.ndarray:
    """:func:`sharpness_cells_kernel` of a tile of whole cells.

    Differences along columns come from the ``c`` row views ``tile[k::c]`` of each cell row
    (OpenCV arithmetic on whole rows, a ``c``-th of the pixels each); differences along rows
    the same way on the transposed tile. Every sum is an integer, so the result is exact;
    2-3 times faster than filtering the whole tile and masking the differences that cross a
    cell edge (0.7-0.9 ms against 1.8-2.5 ms per 512² tile on one core)."""
    grey = np.ascontiguousarray(tile)
    wide = grey.astype(np.int16)
    contrast_v, detail_v = _along_columns(wide, c)  # (rows / c, cols): per cell row, column
    contrast_h, detail_h = _along_columns(cv2.transpose(wide), c)  # (cols / c, rows)
    contrast = _cell_sums(contrast_v, contrast_h, c)
    detail = _cell_sums(detail_v, detail_h, c)
    not_glass = cv2.threshold(grey, glass - 1, 1, cv2.THRESH_BINARY_INV)[1]  # grey < glass
    weight: np.ndarray = cv2.transpose(_row_groups(cv2.transpose(_row_groups(not_glass, c)), c))
    weight_bits, contrast_bits, _ = _field_bits(c)
    dtype = packed_dtype(c)
    if dtype != np.int32:
        detail, contrast = detail.astype(dtype), contrast.astype(dtype)
    packed: np.ndarray = (detail << (weight_bits + contrast_bits)) | (contrast << weight_bits)
    return packed | weight


def _along_columns(wide: np.ndarray, c: int) -> tuple[np.ndarray, np.ndarray]:
    """Sums of ``|I(y+1) - I(y)|`` (contrast) and ``|I(y-1) - 2 I(y) + I(y+1)|`` (detail) down
    each column inside each group of ``c`` rows: ``(rows / c, cols)`` int16 each (at most
    ``255 (c - 1)`` and ``510 (c - 2)``)."""
    rows = [wide[k::c] for k in range(c)]
    steps = [cv2.subtract(rows[k + 1], rows[k]) for k in range(c - 1)]
    contrast = cv2.absdiff(rows[1], rows[0])
    for k in range(1, c - 1):
        cv2.add(contrast, cv2.absdiff(rows[k + 1], rows[k]), dst=contrast)
    detail = cv2.absdiff(steps[1], steps[0])
    for k in range(2, c - 1):
        cv2.add(detail, cv2.absdiff(steps[k], steps[k - 1]), dst=detail)
    return contrast, detail


def _row_groups(values: np.ndarray, c: int) -> np.ndarray:
    """Sum of each group of ``c`` consecutive rows: ``(rows / c, cols)`` int32."""
    out = values[0::c].astype(np.int32)
    for k in range(1, c):
        np.add(out, values[k::c], out=out)
    return out


def _cell_sums(vertical: np.ndarray, horizontal: np.ndarray, c: int) -> np.ndarray:
    """Per cell: ``vertical`` (per cell row and column) summed over the cell's ``c`` columns,
    plus ``horizontal`` (per cell column and row, transposed) over its ``c`` rows."""
    return cv2.transpose(_row_groups(cv2.transpose(vertical), c)) + _row_groups(
        cv2.transpose(horizontal), c
    )


def sharpness_ratio_kernel(
    packed: np.ndarray, *, floor: int, sigma: float, cell: int, relative: bool = True
) -> np.ndarray:
    """Local sharpness from the packed cells of :func:`sharpness_cells_kernel`.

    A cell's weight is its non-glass pixels, or 0 when its detail sum is below ``floor``
    (featureless: glass, ink, borders, bubbles). With ``relative`` the result is
    ``smooth(detail * weight) / smooth(contrast * weight)``, scaled to the ratio of the mean
    second difference to the mean first difference (unitless; the same for any contrast or
    stain density); otherwise ``smooth(detail * weight) / (smooth(weight) * 2 * cell * (cell
    - 2))``, the weighted mean detail per second difference in grey levels. ``smooth`` is
    :func:`smooth_sum_kernel`; 0 where no weighted cell is in reach.

    Parameters
    ----------
    packed
        ``(rows, cols)`` packed cells (int32 or int64).
    floor
        Detail sum (grey levels, over the cell's ``2 * cell * (cell - 2)`` second
        differences) below which a cell is featureless.
    sigma
        Spread of the average, in cells.
    cell
        Cell edge in pixels of the grey image.
    relative
        Detail relative to contrast (True), or in grey levels (False).

    Returns
    -------
    numpy.ndarray
        ``(rows, cols)`` float32. Neighbourhood kernel with halo :func:`smoothing_depth`
        (``sigma``); pixels outside the image count as weight 0. Exact: every sum is an
        integer held exactly in float64 (:func:`smooth_sum_kernel`), then divided once.
    """
    check_cell(cell)
    if not packed.any():  # no weighted cell in reach (e.g. cells not measured): all 0
        return np.zeros(packed.shape, dtype=np.float32)
    detail, contrast, weight = unpack_cells(packed, cell)
    weight = np.where(detail < floor, 0, weight)
    # products of integers below 2**53: exact in float64, which the sums are taken in
    num = smooth_sum_kernel(np.multiply(detail, weight, dtype=np.float64), sigma=sigma)
    if relative:  # per difference: a cell has 2c(c-1) first and 2c(c-2) second differences
        den = smooth_sum_kernel(np.multiply(contrast, weight, dtype=np.float64), sigma=sigma)
        den *= float(cell - 2)
        num *= float(cell - 1)
    else:
        den = smooth_sum_kernel(weight, sigma=sigma) * float(2 * cell * (cell - 2))
    del detail, contrast, weight
    # integers exact in float64 (small multiples of exact sums): one rounding, in the divide
    out = np.zeros(num.shape, dtype=np.float32)
    np.divide(num, den, out=out, where=den > 0, casting="unsafe")
    return out


def square_dilate_kernel(mask: np.ndarray, *, reach: int) -> np.ndarray:
    """``mask`` grown by a ``(2 reach + 1)``-pixel square (Chebyshev distance ``<= reach``);
    pixels outside the image never grow it. 2-D bool in and out; halo ``reach``."""
    if reach < 0:
        raise MaskError(f"square dilation: reach must be >= 0 pixels, got {reach}")
    src = np.ascontiguousarray(mask, dtype=bool)
    if reach == 0 or src.size == 0:
        return src.copy()
    size = 2 * int(reach) + 1
    grown = cv2.dilate(src.view(np.uint8), np.ones((size, size), np.uint8))
    return np.asarray(grown).view(bool)


def smoothing_width(sigma: float) -> int:
    """Edge of the box that :func:`smooth_sum_kernel` applies twice: the odd width whose two
    passes have the variance of a Gaussian of ``sigma`` (``2 (w² - 1) / 12 = sigma²``)."""
    if not (isinstance(sigma, int | float) and math.isfinite(sigma) and sigma > 0):
        raise MaskError(f"sharpness: sigma must be a positive number of pixels, got {sigma!r}")
    exact = math.sqrt(6.0 * float(sigma) ** 2 + 1.0)
    return 2 * max(0, math.floor((exact - 1) / 2 + 0.5)) + 1


def smoothing_depth(sigma: float) -> int:
    """Halo in pixels that :func:`smooth_sum_kernel` needs: two half boxes."""
    return 2 * (smoothing_width(sigma) // 2)


def smooth_sum_kernel(tile: np.ndarray, *, sigma: float) -> np.ndarray:
    """Sum of ``tile`` over two passes of a ``w x w`` box (:func:`smoothing_width`): a
    triangular kernel with the spread of a Gaussian of ``sigma``, zero outside the image.

    ``tile``: 2-D array of integers (any int or float dtype holding integer values). Returns
    float64 of the same shape. Every partial sum is an integer below 2**53 (checked), so
    float64 holds them exactly and neither the order of summation nor the pixel's position in
    its tile can change the result. Pixels outside the image count as 0, so
    ``smooth_sum(a * w) / smooth_sum(w)`` is the weighted mean of ``a`` over the image's own
    pixels (normalized convolution). A box costs a few additions per pixel whatever its size
    (running sums), five times less than the sampled Gaussian it stands for. Halo:
    :func:`smoothing_depth`.
    """
    if tile.size == 0:
        return np.zeros(tile.shape, dtype=np.float64)
    width = smoothing_width(float(sigma))
    data = np.ascontiguousarray(tile, dtype=np.float64)
    if float(np.max(np.abs(data))) * float(width) ** 4 >= 2.0**53:
        raise MaskError(
            "sharpness: values too large for an exact sum (use a smaller cell or sigma)"
        )
    if width == 1:
        return data
    once = cv2.boxFilter(data, cv2.CV_64F, (width, width), normalize=False,
                         borderType=cv2.BORDER_CONSTANT)
    return np.asarray(cv2.boxFilter(once, cv2.CV_64F, (width, width), normalize=False,
                                    borderType=cv2.BORDER_CONSTANT))


# --------------------------------------------------------------------------------------------
# flat areas


def flat_depth(ksize: int) -> int:
    """Halo in pixels that :func:`flat_kernel` needs: ``ksize // 2``."""
    if isinstance(ksize, bool) or not isinstance(ksize, int | np.integer) or ksize < 3 \
            or ksize % 2 == 0:
        raise MaskError(f"flat: ksize must be an odd integer >= 3 pixels, got {ksize!r}")
    return int(ksize) // 2


def flat_kernel(tile: np.ndarray, *, ksize: int, max_diff: float) -> np.ndarray:
    """Pixels that differ from the mean of their ``ksize x ksize`` square by less than
    ``max_diff`` grey levels (HistoQC's ``BubbleRegionByRegion.detectSmoothness``:
    ``|image - local mean| < threshold``), edges replicated.

    Exact: compares the integer ``|n * x - sum|`` with ``n * max_diff`` (``n = ksize**2``),
    so no mean is rounded; ``d < t`` is ``d < ceil(t)`` for an integer ``d``, so the comparison
    stays in integers (int32 where ``n * x`` fits, else int64). ``tile``: 2-D uint8 or uint16.
    Halo: :func:`flat_depth`.
    """
    reach = flat_depth(ksize)
    if tile.size == 0:
        return np.zeros(tile.shape, dtype=bool)
    rows, cols = tile.shape
    step = max(1, _BAND_PIXELS // cols)
    if rows <= step + 2 * reach:
        return _flat(tile, ksize, max_diff)
    # in bands of rows, each with its window's reach of real rows above and below (the edge
    # rule applies only at the tile's own edges): the same result, with int32 temporaries of
    # a band instead of four times the tile
    out = np.empty(tile.shape, dtype=bool)
    for y in range(0, rows, step):
        lo, hi = max(0, y - reach), min(rows, y + step + reach)
        out[y : y + step] = _flat(tile[lo:hi], ksize, max_diff)[y - lo : y - lo + step]
    return out


def _flat(tile: np.ndarray, ksize: int, max_diff: float) -> np.ndarray:
    src = np.ascontiguousarray(tile)
    n = int(ksize) * int(ksize)
    total = cv2.boxFilter(src, cv2.CV_32S, (int(ksize), int(ksize)), normalize=False,
                          borderType=cv2.BORDER_REPLICATE)
    limit = math.ceil(float(max_diff) * n)
    if n * int(np.iinfo(src.dtype).max) < 2**31:
        diff = cv2.absdiff(src.astype(np.int32) * np.int32(n), total)
        return np.asarray(diff < limit)
    diff = np.abs(src.astype(np.int64) * n - np.asarray(total, dtype=np.int64))
    return np.asarray(diff < limit)


# --------------------------------------------------------------------------------------------
# straight dark bands


def straight_band_depth(length: int, width: int) -> int:
    """Halo that :func:`straight_band_kernel` needs: ``width + 2 * (length // 2)``."""
    if isinstance(length, bool) or not isinstance(length, int | np.integer) or length < 3:
        raise MaskError(f"straight_bands: length must be an integer >= 3 pixels, got {length!r}")
    if isinstance(width, bool) or not isinstance(width, int | np.integer) or width < 0:
        raise MaskError(f"straight_bands: width must be an integer >= 0 pixels, got {width!r}")
    return int(width) + 2 * (int(length) // 2)


def straight_band_kernel(tile: np.ndarray, *, length: int, width: int) -> np.ndarray:
    """The pixels of ``tile`` (a 2-D bool mask) on straight runs along rows or columns.

    A pixel is kept when it is set and lies on a horizontal (or vertical) run of at least
    ``2 * (length // 2) + 1`` pixels of the mask grown by ``width`` pixels across the run:
    the opening by a line of the mask dilated across it, so that a band tilted by up to about
    ``atan(2 * width / length)`` still counts. Scan borders and coverslip edges are such bands;
    ink strokes, folds and debris are curved or short. Border rule: pixels outside the image
    never erode or dilate (OpenCV's default). Halo: :func:`straight_band_depth`.
    """
    straight_band_depth(length, width)
    if tile.size == 0:
        return np.zeros(tile.shape, dtype=bool)
    src = np.ascontiguousarray(tile, dtype=bool).view(np.uint8)
    out = np.zeros(src.shape, dtype=np.uint8)
    if not src.any():
        return out.view(bool)
    line = 2 * (int(length) // 2) + 1
    across = 2 * int(width) + 1
    for axis, along, grow in ((1, (1, line), (across, 1)), (0, (line, 1), (1, across))):
        grown = cv2.dilate(src, np.ones(grow, np.uint8)) if width else src
        # A pixel survives the opening only on a run of at least line // 2 + 1 set pixels
        # (that short where the run meets the tile's edge, beyond which nothing erodes; the
        # whole row when it is shorter): with no row (column) holding that many, nothing
        # survives and the opening is skipped.
        shortest = min(line // 2 + 1, src.shape[axis])
        if int(np.count_nonzero(grown, axis=axis).max()) < shortest:
            continue
        opened = cv2.morphologyEx(grown, cv2.MORPH_OPEN, np.ones(along, np.uint8))
        np.bitwise_or(out, opened, out=out)
    np.bitwise_and(out, src, out=out)
    return out.view(bool)


# --------------------------------------------------------------------------------------------
# class map


def class_map_kernel(*masks: np.ndarray, values: Sequence[int]) -> np.ndarray:
    """One uint8 label per pixel: ``values[i]`` where ``masks[i]`` is the first mask (in the
    order given, highest precedence first) that is set, 0 where none is. Pointwise."""
    if len(masks) != len(values):
        raise MaskError("class_map: one value per mask")
    if not masks:
        raise MaskError("class_map: no masks")
    out = np.zeros(masks[0].shape, dtype=np.uint8)
    for mask, value in zip(reversed(masks), reversed(tuple(values)), strict=True):
        out[np.asarray(mask, dtype=bool)] = value
    return out
