"""Per-pixel optical density relative to the glass, and the glass colour from channel histograms.

Optical density (absorbance) of channel ``c`` of a transmitted-light image, relative to the
slide's background (the glass) ``bg_c``::

    OD_c = max(0, -log10((I_c + 1) / (bg_c + 1)))

It measures how much light the stain absorbs, not the colour the scanner made of it: a
per-channel gain (white balance) multiplies ``I_c`` and ``bg_c`` alike and cancels (up to the
``+ 1`` and clipping at full scale), and a gamma ``I -> I**g`` scales every OD by ``g``.
Pixels brighter than the background have OD 0, not a negative value that would cancel another
channel's absorbance in a sum.

Every kernel takes one tile, channels last ``(rows, cols, channels)``, RGB or RGBA (alpha
ignored), uint8 or uint16. The OD of a pixel is a lookup in a per-channel table computed from
the background alone (:func:`od_table`), and the sum or maximum of three float32 values in a
fixed order: no transcendental function is evaluated per pixel, so a pixel's value does not
depend on the tile it sits in (exact under any chunking).

The background estimate (:func:`background_from_histograms`) reads per-channel histograms that
tiles contribute independently (:func:`channel_histograms`), so it is the same whatever the
tiling.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import Literal

import cv2
import numpy as np

from slidemask.errors import MaskError
from slidemask.kernels.bands import BAND_PIXELS

__all__ = [
    "COMBINES",
    "DARK_FIELD_FRACTION",
    "EXACT_COUNT",
    "FLOOR_FRACTION",
    "Combine",
    "background_from_histograms",
    "channel_histograms",
    "check_background",
    "check_density_input",
    "default_floor",
    "full_scale",
    "od_table",
    "optical_density_kernel",
    "white_balance_kernel",
    "white_level",
]

Combine = Literal["sum", "max"] | None
"""How channel ODs become one value per pixel: their ``"sum"`` (total absorbance), their
``"max"``, or None (keep the three channels)."""

COMBINES: tuple[Combine, ...] = ("sum", "max", None)

DENSITY_DTYPES: tuple[np.dtype, ...] = (np.dtype(np.uint8), np.dtype(np.uint16))

FLOOR_FRACTION = 200 / 255
"""Default lowest background value per channel, as a fraction of full scale (200 for uint8).
An image with (almost) no glass, a field of tissue, gives an estimate that is light tissue;
raising it to this level keeps that tissue dense against it. Glass is brighter on every
scanner we have seen (238-253 here)."""

DARK_FIELD_FRACTION = 0.25
"""An estimate whose brightest channel is below this fraction of full scale (64 for uint8)
is not glass under transmitted light: the image is fluorescence (dark background) or a failed
scan, and OD has no meaning there."""


def full_scale(dtype: np.dtype) -> int:
    """The largest value of an integer image dtype (255 for uint8)."""
    return int(np.iinfo(dtype).max)


def white_level(dtype: np.dtype) -> int:
    """Pixels with every channel at or above this are pure white: saturated sensor or the
    scanner's fill outside the scanned area, not glass (254 for uint8, 65024 for uint16)."""
    top = full_scale(dtype)
    return top - top // 128


def default_floor(dtype: np.dtype) -> float:
    """:data:`FLOOR_FRACTION` of full scale: 200 for uint8, 51400 for uint16."""
    return FLOOR_FRACTION * full_scale(dtype)


def check_density_input(shape: tuple[int, ...], dtype: np.dtype, what: str) -> None:
    """Raise :class:`MaskError` unless the image is ``(rows, cols, 3 or 4)`` uint8 or uint16."""
    if len(shape) != 3 or shape[2] not in (3, 4):
        raise MaskError(
            f"{what} expects a colour image (rows, cols, 3) RGB or (rows, cols, 4) RGBA, "
            f"got shape {tuple(shape)}"
        )
    if np.dtype(dtype) not in DENSITY_DTYPES:
        raise MaskError(f"{what} supports uint8 and uint16 images, got {np.dtype(dtype)}")


def check_background(background: Sequence[float], what: str = "optical_density") -> tuple[
    float, float, float
]:
    """Three finite, non-negative per-channel background values as Python floats."""
    try:
        values = tuple(float(v) for v in background)
    except (TypeError, ValueError):
        raise MaskError(
            f"{what}: background must be three numbers (R, G, B), got {background!r}"
        ) from None
    if len(values) != 3 or any(not math.isfinite(v) or v < 0 for v in values):
        raise MaskError(
            f"{what}: background must be three finite numbers >= 0 (R, G, B) in the image's "
            f"own scale, got {background!r}"
        )
    return values[0], values[1], values[2]


@functools.lru_cache(maxsize=64)
def _table(background: tuple[float, float, float], dtype: str) -> np.ndarray:
    levels = np.arange(full_scale(np.dtype(dtype)) + 1, dtype=np.float64)
    bg = np.asarray(background, dtype=np.float64)[:, None]
    table = np.maximum(-np.log10((levels[None, :] + 1.0) / (bg + 1.0)), 0.0)
    out = table.astype(np.float32)
    out.setflags(write=False)
    return out


def od_table(background: Sequence[float], dtype: np.dtype) -> np.ndarray:
    """Per-channel OD lookup table: ``table[c, v]`` is the OD of value ``v`` in channel ``c``.

    Parameters
    ----------
    background
        ``(bg_R, bg_G, bg_B)`` in the image's own scale.
    dtype
        uint8 or uint16: the table has 256 or 65536 columns.

    Returns
    -------
    numpy.ndarray
        ``(3, levels)`` float32, read-only (cached per background and dtype), computed in
        float64 and rounded once.
    """
    return _table(check_background(background), np.dtype(dtype).str)


def optical_density_kernel(
    tile: np.ndarray,
    *,
    background: Sequence[float],
    combine: Combine = "sum",
    band_pixels: int = BAND_PIXELS,
) -> np.ndarray:
    """Optical density of each pixel relative to ``background`` (see the module notes).

    Parameters
    ----------
    tile
        ``(rows, cols, 3)`` RGB or ``(rows, cols, 4)`` RGBA (alpha ignored), uint8 or uint16.
    background
        Glass colour ``(R, G, B)`` in the tile's own scale.
    combine
        ``"sum"``: ``OD_R + OD_G + OD_B`` (added in that order); ``"max"``: the largest channel
        OD; None: the three channel ODs.
    band_pixels
        The tile is computed in bands of rows of about this many pixels (at least one row),
        so that the float32 temporaries stay small beside the output: it bounds the working
        memory, not the result, which is the same for any value.

    Returns
    -------
    numpy.ndarray
        float32, ``(rows, cols)`` (or ``(rows, cols, 3)`` for ``combine=None``), >= 0, in OD
        units (1 = the pixel lets 10 % of the background's light through).
    """
    check_density_input(tile.shape, tile.dtype, "optical_density")
    if combine not in COMBINES:
        raise MaskError(f"optical_density: combine must be 'sum', 'max' or None, got {combine!r}")
    table = od_table(background, tile.dtype)
    rows, cols = tile.shape[:2]
    out = np.empty((rows, cols) if combine is not None else (rows, cols, 3), dtype=np.float32)
    reduce = np.maximum if combine == "max" else np.add
    # OpenCV's per-channel lookup for uint8 (a third faster than numpy's take per channel)
    lookup = _channel_lookup(table) if tile.dtype == np.uint8 else None
    # in bands of rows, so that the float32 temporaries stay small beside the output
    step = max(1, band_pixels // max(cols, 1))
    for y in range(0, rows, step):
        band, part = tile[y : y + step], out[y : y + step]
        if lookup is not None and band.shape[1]:
            looked = cv2.LUT(np.ascontiguousarray(band[..., :3]), lookup)
            channels = [looked[..., c] for c in range(3)]
        else:
            channels = [np.take(table[c], band[..., c]) for c in range(3)]
        if combine is None:
            for c in range(3):
                part[..., c] = channels[c]
            continue
        np.copyto(part, channels[0])
        for c in (1, 2):
            reduce(part, channels[c], out=part)
    return out


def _channel_lookup(table: np.ndarray) -> np.ndarray:
    """A ``(3, 256)`` per-channel table as ``cv2.LUT`` takes it for a 3-channel uint8 image:
    ``(256, 1, 3)``, contiguous."""
    return np.ascontiguousarray(table.T.reshape(256, 1, 3))


@functools.lru_cache(maxsize=64)
def _balance_table(background: tuple[float, float, float], dtype: str) -> np.ndarray:
    full = full_scale(np.dtype(dtype))
    levels = np.arange(full + 1, dtype=np.float64)
    bg = np.asarray(background, dtype=np.float64)[:, None]
    table = np.clip(np.rint(full * (levels[None, :] + 1.0) / (bg + 1.0)), 0, full)
    out = table.astype(np.dtype(dtype))
    out.setflags(write=False)
    return out


def white_balance_kernel(tile: np.ndarray, *, background: Sequence[float]) -> np.ndarray:
    """Each channel relative to the glass: ``round(full * (I_c + 1) / (bg_c + 1))``, clipped.

    The transmittance ``10**-OD_c`` (see the module notes) on the image's own scale: the
    glass becomes white and a stain keeps the hue and saturation it has under a neutral
    light, whatever the scanner's per-channel gains (a von Kries white balance by the slide's
    own glass). Colour rules tuned on neutral scans (the pen-ink bands) then hold on others.

    Parameters
    ----------
    tile
        ``(rows, cols, 3)`` RGB or ``(rows, cols, 4)`` RGBA (alpha dropped), uint8 or uint16.
    background
        Glass colour ``(R, G, B)`` in the tile's own scale.

    Returns
    -------
    numpy.ndarray
        ``(rows, cols, 3)`` of the tile's dtype. Pointwise (a lookup per channel).
    """
    check_density_input(tile.shape, tile.dtype, "white_balance")
    table = _balance_table(check_background(background, "white_balance"), tile.dtype.str)
    if tile.dtype == np.uint8 and tile.shape[0] and tile.shape[1]:
        # OpenCV's per-channel lookup: 8 times faster than numpy's take, channel by channel
        lookup = _channel_lookup(table)
        return np.asarray(cv2.LUT(np.ascontiguousarray(tile[..., :3]), lookup))
    out = np.empty((*tile.shape[:2], 3), dtype=tile.dtype)
    for c in range(3):
        np.take(table[c], tile[..., c], out=out[..., c])
    return out


EXACT_COUNT = 2**24
"""Pixels per :func:`channel_histograms` band: the largest count float32 holds exactly."""


def channel_histograms(tile: np.ndarray, *, exact_count: int = EXACT_COUNT) -> np.ndarray:
    """Histograms of R, G and B over the tile's pixels that are not pure white.

    Parameters
    ----------
    tile
        ``(rows, cols, 3 or 4)`` uint8 or uint16.
    exact_count
        The tile is counted in bands of rows of at most this many pixels (at least one row):
        OpenCV counts in float32, exact up to :data:`EXACT_COUNT` per bin, so a band of at
        most that many pixels is counted exactly. Any value up to it gives the same result.

    Returns
    -------
    numpy.ndarray
        ``(3, levels)`` int64 (256 or 65536 levels): ``hist[c, v]`` counts the pixels with
        value ``v`` in channel ``c`` among those with some channel below
        :func:`white_level`. Histograms of tiles add up to the whole image's.
    """
    check_density_input(tile.shape, tile.dtype, "background_estimate")
    levels = full_scale(tile.dtype) + 1
    hist = np.zeros((3, levels), dtype=np.int64)
    rows, cols = tile.shape[:2]
    if rows == 0 or cols == 0:
        return hist
    # OpenCV counts in float32, exact up to 2**24 per bin: take bands of at most that many
    # pixels (a 1250² working image is one band; 10x faster than numpy's bincount here).
    band = max(1, exact_count // cols)
    for y in range(0, rows, band):
        part = tile[y : y + band]
        lowest = cv2.min(cv2.min(part[..., 0], part[..., 1]), part[..., 2])
        keep = (lowest < white_level(tile.dtype)).view(np.uint8)
        for c in range(3):
            counts = cv2.calcHist([part], [c], keep, [levels], [0, levels])
            hist[c] += counts.ravel().astype(np.int64)
    return hist


def _histogram_percentile(counts: np.ndarray, percentile: float) -> int:
    """``np.percentile(values, percentile, method="inverted_cdf")`` of the values counted by
    ``counts`` (bin ``v`` counts value ``v``), with numpy's own index arithmetic."""
    n = int(counts.sum())
    virtual = n * (percentile / 100.0) - 1.0
    below = math.floor(virtual)
    index = below if virtual == below else below + 1
    index = min(max(index, 0), n - 1)
    cumulative = np.cumsum(counts)
    return int(np.searchsorted(cumulative, index, side="right"))


def background_from_histograms(
    hist: np.ndarray, *, dtype: np.dtype, percentile: float, floor: float | None
) -> np.ndarray:
    """The glass colour from summed :func:`channel_histograms`.

    Parameters
    ----------
    hist
        ``(3, levels)`` counts of the non-white pixels of the whole image.
    dtype
        The image's dtype (uint8 or uint16).
    percentile
        Per channel, the ``percentile``-th percentile of the non-white pixels
        (``method="inverted_cdf"``: a value that occurs in the image).
    floor
        Channels of the estimate below ``floor`` are raised to it (None:
        :func:`default_floor`).

    Returns
    -------
    numpy.ndarray
        ``(3,)`` float64 background ``(R, G, B)`` in the image's own scale. Full scale in
        every channel when every pixel is pure white (or there is none).

    Raises
    ------
    MaskError
        The brightest channel of the percentile is below :data:`DARK_FIELD_FRACTION` of full
        scale: the image has no bright background (fluorescence, or a failed scan).
    """
    top = full_scale(dtype)
    floor = default_floor(dtype) if floor is None else float(floor)
    if not hist.any():
        return np.full(3, float(top))
    estimate = np.array(
        [_histogram_percentile(hist[c], percentile) for c in range(3)], dtype=np.float64
    )
    if estimate.max() < DARK_FIELD_FRACTION * top:
        values = ", ".join(str(int(v)) for v in estimate)
        raise MaskError(
            f"background_estimate: the brightest pixels ({percentile:g}th percentile "
            f"{values} of {top}) are dark: the image has no glass lit from behind, so optical "
            "density means nothing here (a fluorescence image? threshold a nuclear channel "
            "instead)"
        )
    return np.maximum(estimate, floor)
