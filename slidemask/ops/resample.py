"""Lazy integer downsampling and the choice of working resolution (pyramid level + factor).

Coordinate frame: every function works in the pixel frame of the array it is given
(rows, cols[, channels]); a result pixel ``(i, j)`` covers the input pixels
``[i*f, (i+1)*f) x [j*f, (j+1)*f)``. For a slide, :class:`Resolution` records how that frame
relates to level 0 (``downsample`` level-0 pixels per result pixel).

Exactness for any chunking: the input is first rechunked so that every chunk boundary is a
multiple of the factor (regular chunks near the input's largest chunk), so no block of ``f x f``
pixels is ever split between chunks and each output pixel is computed by the same code from the
same pixels as in a whole-image call. Small output blocks are then merged to about
:data:`OUTPUT_CHUNK` pixels a side so that later steps do not run thousands of tiny tasks.

Memory: one (rechunked) input chunk plus its small output per task; nothing is computed here.

The ``block_*`` functions are the pure-numpy kernels (usable on a whole in-memory image as the
reference); the ``downsample_*`` functions map them over dask arrays.
"""

from __future__ import annotations

import math
import numbers
import operator
from dataclasses import dataclass
from typing import Any, Protocol

import dask.array as da
import numpy as np

from slidemask.errors import MaskError, SlideError
from slidemask.ops.chunks import rechunk
from slidemask.ops.literal import as_dask

__all__ = [
    "OUTPUT_CHUNK",
    "Resolution",
    "block_max",
    "block_mean",
    "block_nearest",
    "downsample_max",
    "downsample_mean",
    "downsample_nearest",
    "image_at",
    "resample_mask",
    "select_resolution",
]

OUTPUT_CHUNK = 2048
"""Target output chunk edge (pixels) after downsampling; small output blocks are merged to it."""


# ---------------------------------------------------------------------------------------------
# numpy kernels


def _check_factor(factor: Any, name: str) -> int:
    if isinstance(factor, bool):
        raise MaskError(f"{name}: factor must be a positive integer, got {factor!r}")
    try:
        value = operator.index(factor)
    except TypeError:
        raise MaskError(f"{name}: factor must be a positive integer, got {factor!r}") from None
    if value < 1:
        raise MaskError(f"{name}: factor must be a positive integer, got {value}")
    return value


def _check_ndim(shape: tuple[int, ...], name: str) -> None:
    if len(shape) not in (2, 3):
        raise MaskError(
            f"{name}: expects an image (rows, cols) or (rows, cols, channels), got shape {shape}"
        )


def _mean_accumulator(dtype: np.dtype, factor: int) -> np.dtype:
    """Integer type that holds the sum of ``factor**2`` values of ``dtype`` without overflow."""
    count = factor * factor
    info = np.iinfo(dtype)
    if dtype.kind == "u":
        if info.max * count <= np.iinfo(np.uint32).max:
            return np.dtype(np.uint32)
        if info.max * count <= np.iinfo(np.uint64).max:
            return np.dtype(np.uint64)
    elif max(abs(info.min), info.max) * count + count <= np.iinfo(np.int64).max:
        return np.dtype(np.int64)
    raise MaskError(
        f"downsample_mean: the sum of {factor}x{factor} {dtype} values can overflow 64 bits; "
        "use a smaller factor or convert the image to float first"
    )


def block_mean(tile: np.ndarray, *, factor: int) -> np.ndarray:
    """Area average of each ``factor x factor`` block of ``tile`` (numpy, whole or one block).

    Parameters
    ----------
    tile : numpy.ndarray
        ``(rows, cols)`` or ``(rows, cols, channels)``, integer or float (bool is refused:
        use :func:`block_max` for masks).
    factor : int
        Block edge in pixels of ``tile``, >= 1.

    Returns
    -------
    numpy.ndarray
        ``rows // factor`` x ``cols // factor`` pixels (channels kept): rows and columns that
        do not fill a whole block at the bottom/right edge are dropped. Integer images keep
        their dtype, each output pixel being the exact rounded mean ``(sum + f*f // 2) //
        (f*f)`` (round half up) with the sum in uint32/uint64 (int64 for signed types). Float
        images keep their dtype; the sum is taken in float64 in a fixed order (rows of the
        block first, then columns) so that the result does not depend on the shape of the
        array the block sits in.

    Raises
    ------
    MaskError
        A bad factor, a bool or non-numeric dtype, or not an image.

    Examples
    --------
    >>> import numpy as np
    >>> block_mean(np.arange(20, dtype=np.uint8).reshape(4, 5), factor=2)
    array([[ 3,  5],
           [13, 15]], dtype=uint8)
    """
    f = _check_factor(factor, "downsample_mean")
    _check_ndim(tile.shape, "downsample_mean")
    if tile.dtype == np.bool_ or tile.dtype.kind not in "uif":
        raise MaskError(
            f"downsample_mean: needs an integer or float image, got {tile.dtype}; "
            "use downsample_max or downsample_nearest for boolean masks"
        )
    rows, cols = tile.shape[0] // f * f, tile.shape[1] // f * f
    rest = tile.shape[2:]
    out_shape = (rows // f, cols // f, *rest)
    if rows == 0 or cols == 0:
        return np.zeros(out_shape, dtype=tile.dtype)
    if f == 1:
        return np.array(tile, copy=True)
    acc_dtype = _mean_accumulator(tile.dtype, f) if tile.dtype.kind in "ui" else np.float64
    # Two passes of elementwise adds: exact for integers and a fixed summation order for floats.
    by_rows = np.zeros((rows // f, cols, *rest), dtype=acc_dtype)
    for a in range(f):
        by_rows += tile[a:rows:f, :cols]
    total = np.zeros(out_shape, dtype=acc_dtype)
    for b in range(f):
        total += by_rows[:, b:cols:f]
    count = f * f
    if tile.dtype.kind in "ui":
        total += count // 2
        total //= count
        return total.astype(tile.dtype)
    total /= count
    return total.astype(tile.dtype)


def block_nearest(tile: np.ndarray, *, factor: int) -> np.ndarray:
    """Every ``factor``-th pixel from the top-left one: ``tile[::f, ::f]`` (numpy).

    Parameters
    ----------
    tile : numpy.ndarray
        ``(rows, cols)`` or ``(rows, cols, channels)``, any dtype (bool masks included).
    factor : int
        Step in pixels of ``tile``, >= 1.

    Returns
    -------
    numpy.ndarray
        ``ceil(rows / f)`` x ``ceil(cols / f)`` (a partial block at the bottom/right edge is
        kept), dtype unchanged; output pixel ``(i, j)`` is input pixel ``(i*f, j*f)``, so its
        centre coincides with an input pixel centre. A copy.

    Examples
    --------
    >>> import numpy as np
    >>> block_nearest(np.arange(20, dtype=np.uint8).reshape(4, 5), factor=2)
    array([[ 0,  2,  4],
           [10, 12, 14]], dtype=uint8)
    """
    f = _check_factor(factor, "downsample_nearest")
    _check_ndim(tile.shape, "downsample_nearest")
    return np.array(tile[::f, ::f], copy=True)


def _lowest(dtype: np.dtype) -> Any:
    if dtype == np.bool_:
        return False
    if dtype.kind in "ui":
        return np.iinfo(dtype).min
    if dtype.kind == "f":
        return -np.inf
    raise MaskError(f"downsample_max: unsupported dtype {dtype}")


def block_max(tile: np.ndarray, *, factor: int) -> np.ndarray:
    """Maximum of each ``factor x factor`` block (numpy); for bool masks: any pixel set.

    Parameters
    ----------
    tile : numpy.ndarray
        ``(rows, cols)`` or ``(rows, cols, channels)``, bool, integer or float.
    factor : int
        Block edge in pixels of ``tile``, >= 1.

    Returns
    -------
    numpy.ndarray
        ``ceil(rows / f)`` x ``ceil(cols / f)``, dtype unchanged: a partial block at the
        bottom/right edge takes the maximum of the pixels it has, so no foreground pixel is
        lost at any scale.

    Examples
    --------
    >>> import numpy as np
    >>> mask = np.zeros((5, 5), dtype=bool)
    >>> mask[0, 1] = mask[4, 4] = True
    >>> block_max(mask, factor=2).astype(int)
    array([[1, 0, 0],
           [0, 0, 0],
           [0, 0, 1]])
    """
    f = _check_factor(factor, "downsample_max")
    _check_ndim(tile.shape, "downsample_max")
    rows, cols = tile.shape[:2]
    rest = tile.shape[2:]
    out_rows, out_cols = -(-rows // f), -(-cols // f)
    if tile.size == 0 or f == 1:
        return np.array(tile[::f, ::f], copy=True)
    if rows % f or cols % f:
        padded = np.full((out_rows * f, out_cols * f, *rest), _lowest(tile.dtype), tile.dtype)
        padded[:rows, :cols] = tile
    else:
        padded = tile
    blocks = padded.reshape(out_rows, f, out_cols, f, *rest)
    if tile.dtype == np.bool_:
        return np.asarray(blocks.any(axis=(1, 3)))
    return np.asarray(blocks.max(axis=(1, 3)))


# ---------------------------------------------------------------------------------------------
# dask graphs


def _aligned_axis_chunks(chunks: tuple[int, ...], size: int, factor: int) -> tuple[int, ...]:
    """Regular chunks of a multiple of ``factor`` near the largest input chunk, over ``size``."""
    step = factor * max(1, math.floor(max(chunks) / factor + 0.5))
    step = min(step, size) if size else step
    full, last = divmod(size, step)
    return (step,) * full + ((last,) if last else ())


def _merge_target(block: int, out_size: int) -> int:
    """Output chunk edge: whole output blocks merged up to about :data:`OUTPUT_CHUNK`."""
    merged = block * max(1, OUTPUT_CHUNK // max(block, 1))
    return max(1, min(merged, out_size))


def _downsample(
    image: da.Array, factor: int, kernel: Any, name: str, *, crop: bool, out_dtype: np.dtype
) -> da.Array:
    rows, cols = image.shape[:2]
    if crop:
        rows, cols = rows // factor * factor, cols // factor * factor
        image = image[:rows, :cols]
    row_chunks = _aligned_axis_chunks(image.chunks[0], rows, factor)
    col_chunks = _aligned_axis_chunks(image.chunks[1], cols, factor)
    new_chunks: tuple[Any, ...] = (row_chunks, col_chunks)
    if image.ndim == 3:
        new_chunks += (image.shape[2],)
    if image.chunks[:2] != (row_chunks, col_chunks) or (
        image.ndim == 3 and image.numblocks[2] != 1
    ):
        image = rechunk(image, new_chunks)
    out_chunks: tuple[tuple[int, ...], ...] = (
        tuple(-(-c // factor) for c in row_chunks),
        tuple(-(-c // factor) for c in col_chunks),
    )
    if image.ndim == 3:
        out_chunks += (image.chunks[2],)
    out = da.map_blocks(
        kernel,
        image,
        factor=factor,
        chunks=out_chunks,
        dtype=out_dtype,
        meta=np.empty((0,) * image.ndim, dtype=out_dtype),
        token=f"slidemask-{name}-{factor}",
    )
    target = (
        _merge_target(max(out_chunks[0]), out.shape[0]),
        _merge_target(max(out_chunks[1]), out.shape[1]),
    )
    if max(out_chunks[0]) < target[0] or max(out_chunks[1]) < target[1]:
        out = rechunk(out, {0: target[0], 1: target[1]})
    return out


def downsample_mean(image: da.Array, factor: int) -> da.Array:
    """Lazy area average of ``image`` over ``factor x factor`` pixel blocks (channels kept).

    Parameters
    ----------
    image : dask.array.Array
        ``(rows, cols)`` or ``(rows, cols, channels)`` in the pixels of its level, integer or
        float, any chunking (a numpy array is taken as one chunk).
    factor : int
        Block edge in pixels of ``image``, >= 1; 1 returns ``image`` unchanged.

    Returns
    -------
    dask.array.Array
        ``rows // factor`` x ``cols // factor`` pixels: the partial blocks at the bottom and
        right edges are dropped (so every output pixel is a full-block mean and output pixel
        ``(i, j)`` covers input ``[i*f, (i+1)*f) x [j*f, (j+1)*f)``). Same dtype; integers
        are rounded half up exactly (see :func:`block_mean`). Bit for bit equal to
        :func:`block_mean` on the whole array, for any input chunking. Output chunks are
        about :data:`OUTPUT_CHUNK` (or the input chunk / factor when larger) pixels a side.
        Lazy; each task holds one (rechunked) input chunk and its output.

    Raises
    ------
    MaskError
        A bad factor, a bool or non-numeric dtype, or a factor larger than the image.

    Examples
    --------
    >>> import dask.array as da
    >>> import numpy as np
    >>> from slidemask import downsample_mean
    >>> image = da.from_array(np.arange(20, dtype=np.uint8).reshape(4, 5), chunks=3)
    >>> downsample_mean(image, 2).compute()  # the fifth column is dropped
    array([[ 3,  5],
           [13, 15]], dtype=uint8)
    """
    f = _check_factor(factor, "downsample_mean")
    image = as_dask(image, "downsample_mean")
    _check_ndim(image.shape, "downsample_mean")
    if image.dtype == np.bool_ or image.dtype.kind not in "uif":
        raise MaskError(
            f"downsample_mean: needs an integer or float image, got {image.dtype}; "
            "use downsample_max or downsample_nearest for boolean masks"
        )
    if image.dtype.kind in "ui":
        _mean_accumulator(image.dtype, f)
    if image.shape[0] // f == 0 or image.shape[1] // f == 0:
        raise MaskError(
            f"downsample_mean: factor {f} is larger than the image ({image.shape[0]} x "
            f"{image.shape[1]} pixels); the result would be empty"
        )
    if f == 1:
        return image
    return _downsample(image, f, block_mean, "mean", crop=True, out_dtype=image.dtype)


def downsample_nearest(mask: da.Array, factor: int) -> da.Array:
    """Lazy ``mask[::factor, ::factor]`` (top-left pixel of each block), any dtype.

    Parameters
    ----------
    mask : dask.array.Array
        ``(rows, cols)`` or ``(rows, cols, channels)``, any dtype (a numpy array is taken as
        one chunk).
    factor : int
        Step in pixels of ``mask``, >= 1.

    Returns
    -------
    dask.array.Array
        ``ceil(rows / f)`` x ``ceil(cols / f)``, same dtype; equal to :func:`block_nearest` on
        the whole array for any chunking; output chunks merged to about
        :data:`OUTPUT_CHUNK`. Applying it twice with factors a and b equals applying it once
        with a*b.

    Raises
    ------
    MaskError
        A bad factor, or not an image.

    Examples
    --------
    >>> import dask.array as da
    >>> import numpy as np
    >>> mask = np.zeros((5, 5), dtype=bool)
    >>> mask[0, 1] = mask[4, 4] = True
    >>> downsample_nearest(da.from_array(mask, chunks=3), 2).compute().astype(int)
    array([[0, 0, 0],
           [0, 0, 0],
           [0, 0, 1]])
    """
    f = _check_factor(factor, "downsample_nearest")
    mask = as_dask(mask, "downsample_nearest")
    _check_ndim(mask.shape, "downsample_nearest")
    if f == 1 or mask.size == 0:
        return mask[::f, ::f]
    return _downsample(mask, f, block_nearest, "nearest", crop=False, out_dtype=mask.dtype)


def downsample_max(mask: da.Array, factor: int) -> da.Array:
    """Lazy block maximum (for bool masks: any pixel set), partial edge blocks kept.

    Parameters
    ----------
    mask : dask.array.Array
        ``(rows, cols)`` or ``(rows, cols, channels)``, bool, integer or float (a numpy array
        is taken as one chunk).
    factor : int
        Block edge in pixels of ``mask``, >= 1.

    Returns
    -------
    dask.array.Array
        ``ceil(rows / f)`` x ``ceil(cols / f)``, same dtype; equal to :func:`block_max` on
        the whole array for any chunking. Applying it twice with factors a and b equals
        applying it once with a*b, so a pyramid built by repeated halving matches direct
        downsampling.

    Raises
    ------
    MaskError
        A bad factor, an unsupported dtype, or not an image.

    Examples
    --------
    >>> import dask.array as da
    >>> import numpy as np
    >>> mask = np.zeros((5, 5), dtype=bool)
    >>> mask[0, 1] = mask[4, 4] = True
    >>> downsample_max(da.from_array(mask, chunks=3), 2).compute().astype(int)
    array([[1, 0, 0],
           [0, 0, 0],
           [0, 0, 1]])
    """
    f = _check_factor(factor, "downsample_max")
    mask = as_dask(mask, "downsample_max")
    _check_ndim(mask.shape, "downsample_max")
    _lowest(mask.dtype)
    if f == 1 or mask.size == 0:
        return mask[::f, ::f]
    return _downsample(mask, f, block_max, "max", crop=False, out_dtype=mask.dtype)


def _near_integer(x: float) -> int | None:
    n = round(x)
    return n if n >= 1 and abs(x - n) <= 1e-6 * max(1.0, x) else None


def resample_mask(
    mask: da.Array,
    scale: float,
    shape: tuple[int, int],
    *,
    chunks: Any = None,
) -> da.Array:
    """Lazy: a 2-D mask moved to another pixel grid of the same slide (same origin).

    Parameters
    ----------
    mask : dask.array.Array
        ``(rows, cols)`` mask (bool or integer labels) in its own pixels, any chunking (a
        numpy array is taken as one chunk).
    scale : float
        Size of an output pixel in mask pixels: the output's level-0 downsample divided by the
        mask's (e.g. 4.0 for a mask at 2 µm per pixel moved to 8 µm).
    shape : tuple of int
        ``(rows, cols)`` of the output; the resampled mask is cropped to it, or padded with
        0 / False where it does not reach (a mask cut to whole cells at its own resolution).
    chunks : optional
        Output chunks, anything :meth:`dask.array.Array.rechunk` takes (default: as
        :func:`downsample_max` and friends leave them).

    Returns
    -------
    dask.array.Array
        Output pixel ``(i, j)`` covers mask pixels ``[i*scale, (i+1)*scale) x [j*scale,
        (j+1)*scale)``. An integer ``scale >= 2`` takes the block maximum
        (:func:`downsample_max`: set when any mask pixel it covers is set, so no flagged area
        is lost); ``scale == 1`` keeps the mask; ``1 / scale`` an integer repeats each mask
        pixel; any other scale takes the mask pixel under the output pixel's centre (nearest).
        Equal for any chunking of ``mask``. Shape ``shape``, dtype of ``mask``.

    Raises
    ------
    MaskError
        ``mask`` is not 2-D, or ``scale`` is not a finite positive number.

    Examples
    --------
    A mask at 2 µm per pixel moved to 4 µm (block maximum) and to 1 µm (each pixel repeated):

    >>> import dask.array as da
    >>> import numpy as np
    >>> from slidemask import resample_mask
    >>> mask = np.zeros((4, 6), dtype=bool)
    >>> mask[0, 1] = mask[3, 5] = True
    >>> resample_mask(da.from_array(mask, chunks=2), 2.0, (2, 3)).compute().astype(int)
    array([[1, 0, 0],
           [0, 0, 1]])
    >>> finer = resample_mask(da.from_array(mask, chunks=2), 0.5, (8, 12))
    >>> finer.shape, int(finer.sum().compute())
    ((8, 12), 8)
    """
    mask = as_dask(mask, "resample_mask")
    if mask.ndim != 2:
        raise MaskError(f"resample_mask expects a 2-D mask, got shape {mask.shape}")
    if not (isinstance(scale, numbers.Real) and math.isfinite(scale) and scale > 0):
        raise MaskError(f"resample_mask: scale must be a positive number, got {scale!r}")
    rows, cols = (int(n) for n in shape)
    factor, inverse = _near_integer(float(scale)), _near_integer(1.0 / float(scale))
    if factor is not None:
        out = downsample_max(mask, factor) if factor > 1 else mask
    elif inverse is not None:
        out = da.repeat(da.repeat(mask, inverse, axis=0), inverse, axis=1)
    else:
        index = [
            np.minimum(((np.arange(n) + 0.5) * float(scale)).astype(np.int64), size - 1)
            for n, size in ((min(rows, math.ceil(mask.shape[0] / scale)), mask.shape[0]),
                            (min(cols, math.ceil(mask.shape[1] / scale)), mask.shape[1]))
        ]
        out = mask[index[0], :][:, index[1]]
    out = out[:rows, :cols]
    pad = (rows - out.shape[0], cols - out.shape[1])
    if pad[0] or pad[1]:
        out = da.pad(out, ((0, pad[0]), (0, pad[1])), mode="constant",
                     constant_values=np.zeros((), mask.dtype).item())
    return out if chunks is None else rechunk(out, chunks)


# ---------------------------------------------------------------------------------------------
# resolution choice


class _SlideLike(Protocol):
    @property
    def path(self) -> Any: ...

    @property
    def levels(self) -> list[da.Array]: ...

    @property
    def downsamples(self) -> list[float]: ...

    @property
    def mpp(self) -> float | None: ...

    def level_mpp(self, level: int) -> float | None: ...

    def level_for_mpp(self, mpp: float) -> int: ...


@dataclass(frozen=True)
class Resolution:
    """Where a mask is computed: a pyramid level, then an integer area-average downsample.

    Made by :func:`select_resolution`; :func:`image_at` reads the slide image at it.

    Attributes
    ----------
    level : int
        Pyramid level read from the slide.
    factor : int
        Extra integer downsample applied to that level (1 = the level as stored).
    mpp : float or None
        Effective micrometres per result pixel (``level mpp * factor``), None when the
        slide does not state its pixel size.
    downsample : float
        Level-0 pixels per result pixel (``level downsample * factor``).

    Examples
    --------
    >>> from slidemask import Resolution
    >>> Resolution(level=2, factor=4, mpp=8.0, downsample=16.0).to_dict()
    {'level': 2, 'factor': 4, 'mpp': 8.0, 'downsample': 16.0}
    """

    level: int
    factor: int
    mpp: float | None
    downsample: float

    def to_dict(self) -> dict[str, Any]:
        """JSON-able record (for output attributes and summaries).

        Returns
        -------
        dict
            ``level``, ``factor``, ``mpp`` and ``downsample``.
        """
        return {"level": self.level, "factor": self.factor, "mpp": self.mpp,
                "downsample": self.downsample}


def select_resolution(
    slide: _SlideLike,
    *,
    mpp: float | None = None,
    level: int | None = None,
    downsample: float | None = None,
) -> Resolution:
    """The working resolution for a target pixel size (µm), a pyramid level or a downsample.

    Parameters
    ----------
    slide : Slide
        An open slide (:func:`slidemask.open_slide`), or anything with its ``path``,
        ``levels``, ``downsamples``, ``mpp``, ``level_mpp`` and ``level_for_mpp``.
    mpp : float, optional
        Target micrometres per result pixel.
    level : int, optional
        Pyramid level index, used as stored.
    downsample : float, optional
        Target level-0 pixels per result pixel (>= 1). Give exactly one of ``mpp``,
        ``level`` and ``downsample``.

    Returns
    -------
    Resolution
        The level, the integer factor, the effective µm per result pixel (None when the
        slide does not state its pixel size) and the level-0 downsample. Reads no pixels.

    Raises
    ------
    SlideError
        ``mpp`` is asked for but the slide does not state its pixel size (the message says
        to choose a ``level`` instead).
    MaskError
        Not exactly one given, a level out of range, a non-positive mpp, a downsample below
        1, or a target so coarse that the image would have no pixels.

    Notes
    -----
    ``level=N``: that level as stored (factor 1).

    ``mpp=X`` (micrometres per pixel): the coarsest level whose pixels are not coarser than
    X (``slide.level_for_mpp``), then the integer factor ``floor(X / level_mpp + 0.5)``
    (nearest integer, halves up, at least 1): e.g. level mpp 0.499 and target 8 give factor
    16 and 7.984 µm. When that misses X by more than 10 % (:data:`SIZE_TOLERANCE`), finer
    levels are tried, coarsest first, up to 4 times finer along each side (16 times the
    pixels, :data:`MAX_FINER_PIXELS`): the first within 10 % is used, else the nearest of
    them (the coarser on ties). E.g. 20 µm on a pyramid of halvings from 0.5 µm: level 16 µm
    would give 16 µm, level 8 µm 24 µm; level 4 µm by a factor 5 gives 20 µm and is used (on
    quarters from 0.499 µm, 1.996 µm by 10). 9 µm on the halvings stays at 8 µm (11 % off),
    as only level 0.5 µm (64 times the pixels) meets it. 8 µm on an NDPI-like pyramid of
    quarters from 0.226 µm stays at 3.62 µm by 2 (7.25 µm, within 10 %). A target
    finer than level 0 gives level 0 at factor 1 (no upsampling); ``Resolution.mpp`` always
    states the pixel size actually used.

    ``downsample=D`` (level-0 pixels per result pixel, e.g. CLAM's 64): the same choice by
    downsample, so the slide need not state its pixel size: the coarsest level whose
    downsample is at most D, then the factor ``floor(D / level downsample + 0.5)`` (at least
    1), finer levels tried as for ``mpp`` when that misses D by more than 10 %. E.g. 64 on
    a pyramid with downsamples 1, 4, 16 reads level 2 and averages 4 x 4 blocks.
    ``Resolution.mpp`` is None when the slide does not state its pixel size.

    Examples
    --------
    A three-level synthetic slide at 0.5 µm per level-0 pixel:

    >>> import os
    >>> import tempfile
    >>> from slidemask import open_slide, select_resolution, write_synthetic_slide
    >>> tmp = tempfile.TemporaryDirectory()
    >>> path = write_synthetic_slide(os.path.join(tmp.name, "s.tif"), 512, tile=128, levels=3)
    >>> slide = open_slide(path)
    >>> slide.downsamples
    [1.0, 2.0, 4.0]
    >>> select_resolution(slide, mpp=8)
    Resolution(level=2, factor=4, mpp=8.0, downsample=16.0)
    >>> select_resolution(slide, level=1)
    Resolution(level=1, factor=1, mpp=1.0, downsample=2.0)
    >>> select_resolution(slide, downsample=64)
    Resolution(level=2, factor=16, mpp=32.0, downsample=64.0)
    >>> tmp.cleanup()
    """
    if sum(value is not None for value in (mpp, level, downsample)) != 1:
        raise MaskError(
            "resolution: give exactly one of mpp (micrometres per pixel), level "
            "(pyramid level index) or downsample (level-0 pixels per pixel), got "
            f"mpp={mpp!r}, level={level!r}, downsample={downsample!r}"
        )
    if downsample is not None:
        return _by_downsample(slide, downsample)
    n_levels = len(slide.levels)
    if level is not None:
        if isinstance(level, bool) or not isinstance(level, int | np.integer):
            raise MaskError(f"resolution: level must be an integer, got {level!r}")
        if not 0 <= level < n_levels:
            raise MaskError(
                f"resolution: level {level} does not exist in {slide.path} "
                f"(levels 0 to {n_levels - 1})"
            )
        return Resolution(
            level=int(level), factor=1, mpp=slide.level_mpp(int(level)),
            downsample=float(slide.downsamples[int(level)]),
        )
    assert mpp is not None
    if isinstance(mpp, bool) or not isinstance(mpp, numbers.Real) or not math.isfinite(mpp) \
            or mpp <= 0:
        raise MaskError(f"resolution: mpp must be a positive number of micrometres, got {mpp!r}")
    if slide.mpp is None:
        raise SlideError(
            slide.path,
            f"the slide does not state its pixel size, so resolution mpp {mpp} cannot be used; "
            "state it in micrometres per pixel (slidemask run --mpp UM, default_mpp: UM in the "
            "config, or dataclasses.replace(slide, mpp=UM) in Python) or choose a pyramid level "
            "instead (resolution: {level: N})",
        )
    level_mpps = [slide.level_mpp(i) for i in range(n_levels)]
    assert all(m is not None for m in level_mpps)
    chosen, factor = _nearest(float(mpp), slide.level_for_mpp(float(mpp)), level_mpps)  # type: ignore[arg-type]
    level_mpp = level_mpps[chosen]
    assert level_mpp is not None
    rows, cols = slide.levels[chosen].shape[:2]
    if rows // factor == 0 or cols // factor == 0:
        raise MaskError(
            f"resolution: mpp {mpp} is coarser than the whole slide {slide.path} "
            f"({rows} x {cols} pixels at level {chosen}, {level_mpp:g} µm/pixel)"
        )
    return Resolution(
        level=chosen, factor=factor, mpp=level_mpp * factor,
        downsample=float(slide.downsamples[chosen]) * factor,
    )


SIZE_TOLERANCE = 0.1
"""A working pixel within this fraction of the target size (µm or downsample) is taken as it
is; a coarser miss makes :func:`select_resolution` look at finer levels."""

MAX_FINER_PIXELS = 16
"""A finer level is read for a closer pixel size only if it has at most this many times the
pixels of the coarsest level that could serve (a level up to 4 times finer along each side)."""


def _nearest(target: float, coarsest: int, sizes: list[float]) -> tuple[int, int]:
    """The level and integer factor whose pixel size (``sizes[level] * factor``) meets
    ``target``: ``coarsest`` with the nearest factor when that is within
    :data:`SIZE_TOLERANCE`; else the coarsest finer level that is, among those with at most
    :data:`MAX_FINER_PIXELS` times its pixels; else, of those, the one nearest the target
    (coarser on ties)."""

    def factor_of(level: int) -> int:
        return max(1, math.floor(target / sizes[level] + 0.5))

    def miss(level: int) -> float:
        return abs(sizes[level] * factor_of(level) - target) / target

    best = coarsest
    for level in range(coarsest, -1, -1):
        if (sizes[coarsest] / sizes[level]) ** 2 > MAX_FINER_PIXELS * (1 + 1e-6):
            break
        if miss(level) <= SIZE_TOLERANCE:
            return level, factor_of(level)
        if miss(level) < miss(best) - 1e-12:
            best = level
    return best, factor_of(best)


def _by_downsample(slide: _SlideLike, downsample: float) -> Resolution:
    if (
        isinstance(downsample, bool) or not isinstance(downsample, numbers.Real)
        or not math.isfinite(downsample) or downsample < 1
    ):
        raise MaskError(
            "resolution: downsample must be a number >= 1 (level-0 pixels per pixel), got "
            f"{downsample!r}"
        )
    target = float(downsample)
    # a level whose downsample is the target but for rounding (4.000000001) still qualifies
    candidates = [i for i, d in enumerate(slide.downsamples) if d <= target * (1 + 1e-9)]
    level = max(candidates, key=lambda i: slide.downsamples[i]) if candidates else 0
    level, factor = _nearest(target, level, [float(d) for d in slide.downsamples])
    level_downsample = float(slide.downsamples[level])
    rows, cols = slide.levels[level].shape[:2]
    if rows // factor == 0 or cols // factor == 0:
        raise MaskError(
            f"resolution: downsample {target:g} is coarser than the whole slide {slide.path} "
            f"({rows} x {cols} pixels at level {level})"
        )
    level_mpp = slide.level_mpp(level)
    return Resolution(
        level=level, factor=factor, mpp=None if level_mpp is None else level_mpp * factor,
        downsample=level_downsample * factor,
    )


def image_at(slide: _SlideLike, resolution: Resolution) -> da.Array:
    """The slide image at ``resolution``: the level's dask array, area-averaged by the factor.

    Parameters
    ----------
    slide : Slide
        An open slide (:func:`slidemask.open_slide`).
    resolution : Resolution
        From :func:`select_resolution`.

    Returns
    -------
    dask.array.Array
        ``(level rows // factor, level cols // factor, channels)`` in the pixels of the
        resolution, the slide's dtype; lazy (see :func:`downsample_mean` for exactness,
        edges and memory).

    Raises
    ------
    MaskError
        The resolution's level does not exist in the slide.

    Examples
    --------
    >>> import os
    >>> import tempfile
    >>> from slidemask import image_at, open_slide, select_resolution, write_synthetic_slide
    >>> tmp = tempfile.TemporaryDirectory()
    >>> path = write_synthetic_slide(os.path.join(tmp.name, "s.tif"), 512, tile=128, levels=3)
    >>> slide = open_slide(path)
    >>> image = image_at(slide, select_resolution(slide, mpp=8))  # level 2, factor 4
    >>> image.shape, image.dtype
    ((32, 32, 3), dtype('uint8'))
    >>> tmp.cleanup()
    """
    if not 0 <= resolution.level < len(slide.levels):
        raise MaskError(
            f"resolution: level {resolution.level} does not exist in {slide.path} "
            f"(levels 0 to {len(slide.levels) - 1})"
        )
    image = slide.levels[resolution.level]
    if resolution.factor > 1:
        image = downsample_mean(image, resolution.factor)
    return image
