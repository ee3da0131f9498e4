"""Per-pixel colour kernels: RGB to grey, HSV saturation, the unweighted RGB mean, and HSV
colour-range masks.

Every function takes one tile as a numpy array with channels last, ``(rows, cols, channels)``,
and returns a 2-D ``(rows, cols)`` array in the tile's own pixel frame. They are pointwise (no
halo), so tiles can be cut anywhere. Conversions are OpenCV's, so a tiled result equals the
whole-image OpenCV result bit for bit.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from slidemask.errors import MaskError
from slidemask.kernels.bands import in_row_bands

GRAY_DTYPES: tuple[np.dtype, ...] = (np.dtype(np.uint8), np.dtype(np.uint16))
"""Pixel types converted to grey. OpenCV also converts float32, but its float result differs
by 1 ulp between the SIMD body and the scalar tail of a row (measured with OpenCV 5.0), so it
depends on where a pixel falls in its tile and cannot be chunking-exact; the integer paths
use fixed-point arithmetic and give every pixel the same value wherever it is (tested)."""

HUE_MAX = 179
"""Largest 8-bit OpenCV hue: hue is degrees / 2, so 0-179."""


def check_gray_input(shape: tuple[int, ...], dtype: np.dtype) -> None:
    """Raise :class:`MaskError` unless an image of this shape and dtype can be converted to grey.

    Accepted: 2-D, ``(rows, cols, 1)`` (any dtype, passed through), and ``(rows, cols, 3)`` RGB or
    ``(rows, cols, 4)`` RGBA in uint8 or uint16.
    """
    if len(shape) == 2 or (len(shape) == 3 and shape[2] == 1):
        return
    if len(shape) != 3 or shape[2] not in (3, 4):
        raise MaskError(
            f"to_gray expects a 2-D image or (rows, cols, channels) with 1, 3 (RGB) or 4 (RGBA) "
            f"channels, got shape {tuple(shape)}"
        )
    if np.dtype(dtype) not in GRAY_DTYPES:
        raise MaskError(
            f"to_gray supports uint8 and uint16 colour images, got {np.dtype(dtype)} (OpenCV's "
            "float conversion is not exact per pixel across tiles; convert to uint8 or uint16)"
        )


def rgb_to_gray(tile: np.ndarray, *, out: np.ndarray | None = None) -> np.ndarray:
    """Grey (luma) of an RGB or RGBA tile, identical to ``cv2.cvtColor(tile, COLOR_RGB2GRAY)``.

    Parameters
    ----------
    tile
        ``(rows, cols, 3)`` RGB or ``(rows, cols, 4)`` RGBA (alpha ignored), uint8 or uint16;
        a 2-D or ``(rows, cols, 1)`` tile is returned as 2-D without conversion.
    out
        Optional ``(rows, cols)`` array of the tile's dtype to write the grey into (any
        strides), e.g. a reused buffer.

    Returns
    -------
    numpy.ndarray
        ``(rows, cols)``, same dtype as ``tile``: ``0.299 R + 0.587 G + 0.114 B`` (ITU-R BT.601)
        with OpenCV's fixed-point rounding; ``out`` where given, else one new plane (or a view
        of a one-channel ``tile``).
    """
    check_gray_input(tile.shape, tile.dtype)
    if tile.ndim == 2 or tile.shape[2] == 1:
        plane = tile if tile.ndim == 2 else tile[..., 0]
        if out is None:
            return plane
        out[...] = plane
        return out
    if tile.shape[0] == 0 or tile.shape[1] == 0:
        return np.empty(tile.shape[:2], dtype=tile.dtype) if out is None else out
    # RGBA2GRAY reads the alpha plane in place instead of copying an RGB slice first;
    # it gives the same result as RGB2GRAY on the first three channels (tested).
    code = cv2.COLOR_RGB2GRAY if tile.shape[2] == 3 else cv2.COLOR_RGBA2GRAY
    if out is None:
        return cv2.cvtColor(np.ascontiguousarray(tile), code)
    # OpenCV writes into a dst of the right shape and type whose rows are contiguous (such as
    # the tile's place in its chunk), else returns a new image
    in_place = out.ndim == 2 and out.strides[1] == out.itemsize
    grey = cv2.cvtColor(np.ascontiguousarray(tile), code, dst=out if in_place else None)
    if grey is not out:
        out[...] = grey
    return out


def check_hsv_bounds(
    lower: Sequence[int], upper: Sequence[int]
) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
    """Validate an OpenCV 8-bit HSV range and return it as two tuples of Python ints.

    Hue is 0-179 (degrees / 2), saturation and value 0-255; all bounds are inclusive.
    ``lower[0] > upper[0]`` is a hue range that wraps through red (``H >= lower[0]`` or
    ``H <= upper[0]``); saturation and value bounds must satisfy ``lower <= upper``.
    """
    bounds = []
    for name, triple in (("lower", lower), ("upper", upper)):
        try:
            values = tuple(triple)
        except TypeError:
            raise MaskError(
                f"hsv_range: {name} must be a (hue, saturation, value) triple, got {triple!r}"
            ) from None
        if len(values) != 3:
            raise MaskError(
                f"hsv_range: {name} must be a (hue, saturation, value) triple, got {triple!r}"
            )
        ints = []
        for channel, v, top in zip(
            ("hue", "saturation", "value"), values, (HUE_MAX, 255, 255), strict=True
        ):
            if isinstance(v, bool | np.bool_) or not isinstance(v, int | np.integer):
                raise MaskError(f"hsv_range: {name} {channel} must be an integer, got {v!r}")
            if not 0 <= v <= top:
                raise MaskError(
                    f"hsv_range: {name} {channel} must be in 0..{top} "
                    f"(OpenCV 8-bit HSV{', hue = degrees / 2' if top == HUE_MAX else ''}), "
                    f"got {int(v)}"
                )
            ints.append(int(v))
        bounds.append((ints[0], ints[1], ints[2]))
    lo, hi = bounds
    for i, channel in ((1, "saturation"), (2, "value")):
        if lo[i] > hi[i]:
            raise MaskError(
                f"hsv_range: lower {channel} {lo[i]} is above upper {channel} {hi[i]}; "
                "only hue may wrap around"
            )
    return lo, hi


def check_hsv_input(shape: tuple[int, ...], dtype: np.dtype) -> None:
    """Raise :class:`MaskError` unless the image is ``(rows, cols, 3 or 4)`` uint8."""
    if len(shape) != 3 or shape[2] not in (3, 4):
        raise MaskError(
            f"hsv_range expects an RGB or RGBA image (rows, cols, 3 or 4), got shape {tuple(shape)}"
        )
    if np.dtype(dtype) != np.uint8:
        raise MaskError(
            f"hsv_range expects uint8 RGB (OpenCV 8-bit HSV scale), got {np.dtype(dtype)}"
        )


def hsv_in_range(
    tile: np.ndarray, *, lower: tuple[int, int, int], upper: tuple[int, int, int]
) -> np.ndarray:
    """Mask of pixels whose OpenCV HSV colour lies in ``[lower, upper]`` (inclusive).

    Identical to ``cv2.inRange(cv2.cvtColor(tile, cv2.COLOR_RGB2HSV), lower, upper) > 0`` when
    ``lower[0] <= upper[0]``; when ``lower[0] > upper[0]`` the hue range wraps
    (``H >= lower[0]`` or ``H <= upper[0]``, saturation and value still in their ranges).

    Parameters
    ----------
    tile
        ``(rows, cols, 3)`` RGB or ``(rows, cols, 4)`` RGBA uint8 (alpha ignored).
    lower, upper
        ``(hue 0-179, saturation 0-255, value 0-255)``; see :func:`check_hsv_bounds`.

    Returns
    -------
    numpy.ndarray
        ``(rows, cols)`` bool. Converts a band of rows at a time
        (:func:`slidemask.kernels.bands.in_row_bands`), so its HSV temporary stays small.
    """
    check_hsv_input(tile.shape, tile.dtype)
    lower, upper = check_hsv_bounds(lower, upper)
    rows, cols = tile.shape[:2]
    if rows == 0 or cols == 0:
        return np.zeros((rows, cols), dtype=bool)
    return in_row_bands(_hsv_in_range, tile, lower=lower, upper=upper)


def _hsv_in_range(
    tile: np.ndarray, *, lower: tuple[int, int, int], upper: tuple[int, int, int]
) -> np.ndarray:
    return in_hsv_range(rgb_to_hsv(tile), lower=lower, upper=upper)


def rgb_to_hsv(tile: np.ndarray) -> np.ndarray:
    """``cv2.cvtColor(rgb, cv2.COLOR_RGB2HSV)`` of a ``(rows, cols, 3 or 4)`` uint8 RGB(A)
    tile (alpha ignored): ``(rows, cols, 3)`` uint8, hue 0-179, saturation and value 0-255."""
    rgb = np.ascontiguousarray(tile)
    if rgb.shape[2] == 4:
        rgb = cv2.cvtColor(rgb, cv2.COLOR_RGBA2RGB)
    return cv2.cvtColor(rgb, cv2.COLOR_RGB2HSV)


def in_hsv_range(
    hsv: np.ndarray, *, lower: tuple[int, int, int], upper: tuple[int, int, int]
) -> np.ndarray:
    """:func:`hsv_in_range` of a tile already converted by :func:`rgb_to_hsv`: ``(rows, cols)``
    bool. ``lower`` and ``upper`` must have passed :func:`check_hsv_bounds`."""
    rows, cols = hsv.shape[:2]
    if rows == 0 or cols == 0:
        return np.zeros((rows, cols), dtype=bool)
    hsv = np.ascontiguousarray(hsv)
    if lower[0] <= upper[0]:
        mask = cv2.inRange(hsv, lower, upper)
    else:
        mask = cv2.inRange(hsv, lower, (HUE_MAX, upper[1], upper[2]))
        np.bitwise_or(mask, cv2.inRange(hsv, (0, lower[1], lower[2]), upper), out=mask)
    # inRange writes 0/255; numpy bools must hold 0/1, so mask to the low bit before viewing.
    np.bitwise_and(mask, 1, out=mask)
    return mask.reshape(rows, cols).view(bool)


def saturation_kernel(tile: np.ndarray) -> np.ndarray:
    """S channel of ``cv2.cvtColor(tile, cv2.COLOR_RGB2HSV)``: ``(rows, cols)`` uint8, 0-255.

    ``tile`` is ``(rows, cols, 3)`` RGB or ``(rows, cols, 4)`` RGBA (alpha ignored), uint8.
    """
    rows, cols = tile.shape[:2]
    if rows == 0 or cols == 0:
        return np.zeros((rows, cols), dtype=np.uint8)
    return hsv_saturation(rgb_to_hsv(tile))


def hsv_saturation(hsv: np.ndarray) -> np.ndarray:
    """:func:`saturation_kernel` of a tile already converted by :func:`rgb_to_hsv`."""
    return np.ascontiguousarray(hsv[..., 1])


def rgb_mean_kernel(tile: np.ndarray) -> np.ndarray:
    """``(R + G + B) / 3`` rounded to the nearest integer (no ties occur), uint8 ``(rows, cols)``.

    ImageJ's default RGB to 8-bit conversion (``r/3 + g/3 + b/3 + 0.5`` truncated, which is
    ``(r + g + b + 1) // 3`` for every RGB triple), the grey QuPath's simple tissue detection
    thresholds. ``tile`` is ``(rows, cols, 3 or 4)`` uint8 (alpha ignored).
    """
    total = tile[..., 0].astype(np.uint16)
    total += tile[..., 1]
    total += tile[..., 2]
    total += 1
    total //= 3
    return total.astype(np.uint8)
