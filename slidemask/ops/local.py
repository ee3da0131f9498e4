"""Lazy local mask operations: per-pixel (grey, saturation, RGB mean, threshold, HSV range) and
neighbourhood (median, mean, binary morphology by a disk or a square) kernels mapped over
chunked dask arrays.

Every function takes a dask array in the slide's level pixel frame ``(rows, cols[, channels])``
and returns a dask array with the same rows, cols and chunking along them; nothing is
computed. For any chunking the result equals the kernel's reference (OpenCV or
scikit-image) applied to the whole image in memory, bit for bit.

How neighbourhood operations stay exact (:func:`map_exact_overlap`): blocks are extended by
the kernel's declared halo with ``dask.array.map_overlap(boundary="none")``. Interior block
edges get real neighbour pixels; true image edges get no padding, so the kernel sees the real
image border and applies its own border rule, as the whole-image call would. Chunks smaller
than the halo are merged by dask first and the result is rechunked back to the input
chunking. Chained neighbourhood operations are separate ``map_overlap`` layers, each with its
own halo. Memory: a block stays in memory until its neighbours' tasks have run, so peak memory
grows with the number of chunk columns (measured, 40960² uint8 RGB, 2048² chunks, 2 threads:
grey + threshold 173 MiB peak RSS; adding a median 7 on the mask 661 MiB, an opening r=3
639 MiB).

Speed: OpenCV's median for ksize > 5 is slow on grey images (about 200 ms per 2048² uint8
block). Thresholding commutes with the median, so ``median_blur(threshold(gray, below=t), k)``
equals ``threshold(median_blur(gray, k), below=t)`` bit for bit (tested), and the bool median
is a box-count majority vote: 4 ms per 2048² block at ksize 7 (measured on random data).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import dask.array as da
import numpy as np

from slidemask.errors import MaskError
from slidemask.io.tiff import PIXELS_ATTR, tile_buffer
from slidemask.kernels.color import (
    check_gray_input,
    check_hsv_bounds,
    check_hsv_input,
    hsv_in_range,
    rgb_mean_kernel,
    rgb_to_gray,
    saturation_kernel,
)
from slidemask.kernels.filters import (
    check_median_input,
    check_odd_ksize,
    mean_blur_depth,
    mean_blur_kernel,
    median_depth,
)
from slidemask.kernels.filters import median_blur as _median_kernel
from slidemask.kernels.morphology import (
    MorphologyOp,
    SquareOp,
    binary_morphology,
    check_radius,
    morphology_depth,
    square_depth,
    square_morphology_kernel,
)
from slidemask.kernels.threshold import as_real, threshold_mask
from slidemask.ops.chunks import rechunk
from slidemask.ops.literal import as_dask as _as_dask
from slidemask.ops.windows import KernelChain, KernelStep

__all__ = [
    "PixelChain",
    "PixelStep",
    "binary_closing",
    "binary_dilation",
    "binary_erosion",
    "binary_opening",
    "hsv_range",
    "map_exact_overlap",
    "mean_blur",
    "median_blur",
    "rgb_mean",
    "saturation",
    "square_closing",
    "square_dilation",
    "square_erosion",
    "square_opening",
    "threshold",
    "to_gray",
]

Threshold = float | int | da.Array


@dataclass(frozen=True)
class PixelStep:
    """A pointwise numpy kernel with its keyword arguments: ``kernel(tile, **kwargs)``.

    Parameters
    ----------
    kernel : callable
        ``kernel(tile, **kwargs) -> ndarray``: a module-level function (so the step pickles
        to process workers) whose output pixel depends only on the same input pixel.
    kwargs : tuple of (str, object) pairs
        Keyword arguments, sorted by name (hashable, so the step tokenizes deterministically).

    Examples
    --------
    >>> import numpy as np
    >>> from slidemask.kernels.threshold import threshold_mask
    >>> step = PixelStep(threshold_mask, (("below", 5),))
    >>> step(np.array([[1, 9]], dtype=np.uint8))
    array([[ True, False]])
    """

    kernel: Callable[..., np.ndarray]
    kwargs: tuple[tuple[str, Any], ...] = ()

    def __call__(self, tile: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """``kernel(tile, **kwargs)``, written into ``out`` where given (same shape as the
        result, any strides) and returned."""
        if out is None:
            return self.kernel(tile, **dict(self.kwargs))
        if self.kernel in _WRITES_OUT:
            return self.kernel(tile, out=out, **dict(self.kwargs))
        out[...] = self.kernel(tile, **dict(self.kwargs))
        return out


_WRITES_OUT: frozenset[Callable[..., np.ndarray]] = frozenset({rgb_to_gray, threshold_mask})
"""Pointwise kernels that take ``out=``: a tile reader has them write into the tile's place in
its chunk (and the grey plane into a reused buffer) instead of allocating and copying."""


@dataclass(frozen=True)
class PixelChain:
    """Pointwise steps applied in order to one tile (e.g. grey, then threshold).

    Used by :meth:`slidemask.io.Slide.map_pixels` to convert each file tile as it is decoded.

    Parameters
    ----------
    steps : tuple of PixelStep
        Applied first to last; each step's output is the next one's input.

    Examples
    --------
    >>> import numpy as np
    >>> from slidemask.kernels.color import rgb_to_gray
    >>> from slidemask.kernels.threshold import threshold_mask
    >>> chain = PixelChain((PixelStep(rgb_to_gray), PixelStep(threshold_mask, (("below", 100),))))
    >>> chain(np.array([[[0, 0, 0], [255, 255, 255]]], dtype=np.uint8))
    array([[ True, False]])
    """

    steps: tuple[PixelStep, ...]
    writes_out: ClassVar[bool] = True
    """Tile readers may pass ``out=`` (see :data:`slidemask.io.tiff.PixelFunction`)."""

    def __call__(self, tile: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """The steps applied to ``tile``; written into ``out`` where given (the last step's
        shape and dtype, any strides) and returned. With ``out``, a grey step's plane goes
        into this thread's reused buffer (it never leaves the call)."""
        if not self.steps:
            if out is None:
                return tile
            out[...] = tile
            return out
        *inner, last = self.steps
        for i, step in enumerate(inner):
            scratch = None
            if (out is not None and i == 0 and step.kernel is rgb_to_gray and tile.ndim == 3
                    and tile.shape[2] in (3, 4)):
                scratch = tile_buffer(tile.shape[:2], tile.dtype)
            tile = step(tile, out=scratch)
        return last(tile, out=out)

    def __dask_tokenize__(self) -> object:
        return tuple(
            (f"{s.kernel.__module__}.{s.kernel.__qualname__}", repr(s.kwargs)) for s in self.steps
        )


def _single_channel_chunk(image: da.Array) -> da.Array:
    """Channel axis in one chunk, as per-pixel colour kernels need all channels together."""
    if image.ndim == 3 and image.numblocks[2] != 1:
        return rechunk(image, {2: -1})
    return image


WINDOWS_ATTR = "_slidemask_windows"
"""Attribute of a neighbourhood result: ``(source, steps)``, so the next neighbourhood step
reads one halo window of ``source`` for the whole chain
(:func:`slidemask.ops.scratch.map_windows`)."""

MERGED_ATTR = "_slidemask_merged_from"
"""Attribute of a result that ends in a merge of small chunks into larger ones: the array
before the merge (e.g. :func:`slidemask.ops.artifacts.sharpness`'s float cells, merged to
about 2048 a side). :func:`threshold` then compares the small chunks and merges the ``bool``
result instead, so that a merge task holds a quarter of the bytes of float32 (at 50000² the
QC run's peak fell from 317-330 to 302-317 MiB)."""


def _pointwise(
    image: da.Array,
    kernel: Callable[..., np.ndarray],
    kwargs: dict[str, Any],
    *,
    dtype: Any,
    plane: bool,
) -> da.Array:
    """A per-pixel ``kernel(tile, **kwargs)`` of ``image``: fused with decoding when ``image``
    is a slide level or a pointwise result on one, else mapped over its blocks. ``plane``:
    the kernel drops the channel axis."""
    from slidemask.ops.scratch import READ_ATTR

    source = getattr(image, PIXELS_ATTR, None)
    step = PixelStep(kernel, tuple(sorted(kwargs.items())))
    read = getattr(image, READ_ATTR, None)
    if read is not None:
        # computed per pixel as it is read back from scratch (the optical density or white
        # balance by a lazy glass estimate): this step too, in the same read
        tail = () if plane or image.ndim == 2 else tuple(image.shape[2:])
        return read.then(step, dtype, tail, getattr(kernel, "__name__", "pixels").replace("_", "-"))
    if source is not None:
        slide, level, steps = source
        chain = (*steps, step)
        out = slide.map_pixels(
            level, PixelChain(chain), dtype=dtype,
            channels=None if plane or image.ndim == 2 else image.shape[2],
        )
        setattr(out, PIXELS_ATTR, (slide, level, chain))
        return out
    if plane and image.ndim == 3:
        image = _single_channel_chunk(image)
        return da.map_blocks(
            step, image, drop_axis=2, dtype=dtype, meta=np.empty((0, 0), dtype=dtype)
        )
    meta = np.empty((0,) * image.ndim, dtype=dtype)
    return da.map_blocks(step, image, dtype=dtype, meta=meta)


def _neighbourhood(image: da.Array, step: KernelStep, *, dtype: Any, label: str) -> da.Array:
    """A neighbourhood kernel of a 2-D ``image`` on halo windows read from scratch; a chain of
    such steps shares one store and one window read (see :mod:`slidemask.ops.scratch`)."""
    from slidemask.ops import scratch

    prior = getattr(image, WINDOWS_ATTR, None)
    source, steps = (prior[0], (*prior[1], step)) if prior is not None else (image, (step,))
    chain = KernelChain(tuple(steps))
    out = scratch.map_windows(source, chain, chain.depth, dtype=dtype, label=label)
    setattr(out, WINDOWS_ATTR, (source, steps))
    return out


def map_exact_overlap(
    kernel: Callable[..., np.ndarray],
    image: da.Array,
    depth: int,
    *,
    dtype: np.dtype | type,
    **kernel_kwargs: Any,
) -> da.Array:
    """Apply a neighbourhood ``kernel`` so that the result equals ``kernel(whole image)``.

    Parameters
    ----------
    kernel : callable
        ``kernel(window, **kernel_kwargs) -> array`` of the window's shape, exact for every
        pixel at least ``depth`` pixels inside each window edge and applying its own border
        rule at the window edges that are true image edges.
    image : dask.array.Array
        ``(rows, cols)`` or ``(rows, cols, channels)`` in level pixels; the halo is added
        along rows and columns only (a split channel axis is rechunked to one chunk).
    depth : int
        Halo in pixels of ``image``, from the kernel's ``*_depth`` function.
    dtype : numpy.dtype or type
        Output dtype (passed with ``meta`` so dask never calls the kernel on empty arrays).
    **kernel_kwargs
        Passed to ``kernel``.

    Returns
    -------
    dask.array.Array
        Same shape and chunks as ``image``, of ``dtype``; lazy.

    Notes
    -----
    ``dask.array.map_overlap`` with ``boundary="none"``: a block stays in memory until its
    neighbours' tasks have run (module notes). The public neighbourhood functions use
    :func:`slidemask.ops.scratch.map_windows` on 2-D images instead.

    Examples
    --------
    >>> import cv2
    >>> import dask.array as da
    >>> import numpy as np
    >>> from slidemask.kernels.filters import median_blur, median_depth
    >>> grey = np.random.default_rng(0).integers(0, 256, (8, 8), dtype=np.uint8)
    >>> out = map_exact_overlap(
    ...     median_blur, da.from_array(grey, chunks=3), median_depth(3), dtype=np.uint8, ksize=3
    ... )
    >>> out.chunks
    ((3, 3, 2), (3, 3, 2))
    >>> bool((out.compute() == cv2.medianBlur(grey, 3)).all())
    True
    """
    image = _single_channel_chunk(image)
    meta = np.empty((0,) * image.ndim, dtype=dtype)
    # A halo longer than the axis needs no more data than the whole axis; dask refuses a
    # depth larger than the array, so clamp (the axis then becomes one chunk).
    depths = {ax: (min(depth, image.shape[ax]) if ax < 2 else 0) for ax in range(image.ndim)}
    if not any(depths.values()):
        return da.map_blocks(kernel, image, dtype=dtype, meta=meta, **kernel_kwargs)
    out = da.map_overlap(
        kernel, image, depth=depths, boundary="none", dtype=dtype, meta=meta, **kernel_kwargs
    )
    if out.chunks != image.chunks:
        # dask merged chunks smaller than the halo; give back the caller's chunking.
        out = rechunk(out, image.chunks)
    return out


def to_gray(rgb: da.Array) -> da.Array:
    """Lazy grey (luma) image, identical to ``cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)``.

    Parameters
    ----------
    rgb : dask.array.Array
        ``(rows, cols, 3)`` RGB or ``(rows, cols, 4)`` RGBA (alpha dropped), uint8 or uint16,
        channels last, in level pixels (a numpy array is taken as one chunk). Float is
        refused: OpenCV's float conversion differs by 1 ulp with the pixel's position in its
        tile. A 2-D or ``(rows, cols, 1)`` image is returned as 2-D.

    Returns
    -------
    dask.array.Array
        ``(rows, cols)``, same dtype: ``0.299 R + 0.587 G + 0.114 B`` (ITU-R BT.601, OpenCV's
        fixed-point rounding). Per-pixel: same row/column chunks, no halo; the channel axis is
        rechunked to one chunk if split. Lazy; on a slide level it runs on each file tile as
        it is decoded.

    Raises
    ------
    MaskError
        Not an RGB(A) or grey image, or not uint8/uint16.

    Examples
    --------
    >>> import dask.array as da
    >>> import numpy as np
    >>> from slidemask import to_gray
    >>> rgb = np.array([[[255, 0, 0], [0, 255, 0]], [[0, 0, 255], [250, 240, 245]]], np.uint8)
    >>> to_gray(da.from_array(rgb, chunks=(1, 1, 3))).compute()
    array([[ 76, 150],
           [ 29, 244]], dtype=uint8)
    """
    rgb = _as_dask(rgb, "to_gray")
    check_gray_input(rgb.shape, rgb.dtype)
    if rgb.ndim == 2:
        return rgb
    if rgb.shape[2] == 1:
        return rgb[..., 0]
    return _pointwise(rgb, rgb_to_gray, {}, dtype=rgb.dtype, plane=True)


def saturation(rgb: da.Array) -> da.Array:
    """Lazy HSV saturation, identical to ``cv2.cvtColor(rgb, cv2.COLOR_RGB2HSV)[..., 1]``.

    The tissue channel of CLAM and PathML: stained tissue is coloured, glass and dust are grey.
    OpenCV's 8-bit scale: ``S = 255 * (max - min) / max`` of R, G, B, rounded (0 where max is 0).

    Parameters
    ----------
    rgb : dask.array.Array
        ``(rows, cols, 3)`` RGB or ``(rows, cols, 4)`` RGBA uint8, channels last, in level
        pixels (a numpy array is taken as one chunk).

    Returns
    -------
    dask.array.Array
        ``(rows, cols)`` uint8 0-255, same row/column chunks; lazy. Per-pixel; each task
        holds one 3-byte-per-pixel HSV block besides its input.

    Raises
    ------
    MaskError
        Not a uint8 RGB(A) image.

    Examples
    --------
    >>> import dask.array as da
    >>> import numpy as np
    >>> from slidemask import saturation
    >>> rgb = np.array([[[255, 0, 0], [250, 240, 245]]], dtype=np.uint8)
    >>> saturation(da.from_array(rgb, chunks=(1, 1, 3))).compute()
    array([[255,  10]], dtype=uint8)
    """
    rgb = _as_dask(rgb, "saturation")
    check_hsv_input(rgb.shape, rgb.dtype)
    return _pointwise(rgb, saturation_kernel, {}, dtype=np.uint8, plane=True)


def rgb_mean(rgb: da.Array) -> da.Array:
    """Lazy unweighted grey ``(R + G + B + 1) // 3`` of a uint8 RGB(A) image.

    ImageJ's default RGB to 8-bit conversion, the grey QuPath's simple tissue detection
    thresholds (:func:`slidemask.kernels.color.rgb_mean_kernel`).

    Parameters
    ----------
    rgb : dask.array.Array
        ``(rows, cols, 3)`` RGB or ``(rows, cols, 4)`` RGBA (alpha ignored) uint8, channels
        last, in level pixels (a numpy array is taken as one chunk).

    Returns
    -------
    dask.array.Array
        ``(rows, cols)`` uint8, same row/column chunks; per-pixel, lazy.

    Raises
    ------
    MaskError
        Not a uint8 RGB(A) image.

    Examples
    --------
    >>> import dask.array as da
    >>> import numpy as np
    >>> from slidemask import rgb_mean
    >>> rgb = np.array([[[255, 0, 0], [250, 240, 245]]], dtype=np.uint8)
    >>> rgb_mean(da.from_array(rgb, chunks=(1, 1, 3))).compute()
    array([[ 85, 245]], dtype=uint8)
    """
    rgb = _as_dask(rgb, "rgb_mean")
    if rgb.ndim != 3 or rgb.shape[2] not in (3, 4) or rgb.dtype != np.uint8:
        raise MaskError(
            "rgb_mean expects a uint8 RGB or RGBA image (rows, cols, 3 or 4), got shape "
            f"{rgb.shape} dtype {rgb.dtype}"
        )
    return _pointwise(rgb, rgb_mean_kernel, {}, dtype=np.uint8, plane=True)


def _check_threshold(name: str, value: object, dtype: np.dtype) -> int | float | da.Array:
    if isinstance(value, da.Array):
        if value.ndim != 0:
            raise MaskError(
                f"threshold: {name} as a dask array must be 0-d (a scalar), got shape {value.shape}"
            )
        if not (np.issubdtype(value.dtype, np.integer) or np.issubdtype(value.dtype, np.floating)):
            raise MaskError(f"threshold: {name} must be a real number, got dtype {value.dtype}")
        return value
    try:
        real = as_real(value)
    except TypeError:
        raise MaskError(
            f"threshold: {name} must be a real number or a 0-d dask array, got {value!r}"
        ) from None
    if isinstance(real, float) and math.isnan(real):
        raise MaskError(f"threshold: {name} is NaN")
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        if not info.min <= real <= info.max:
            raise MaskError(
                f"threshold: {name}={value!r} is outside the {dtype} image's value range "
                f"{info.min}..{info.max} (thresholds are in the image's own scale)"
            )
    return real


def _threshold_block(
    tile: np.ndarray, *lazy: np.ndarray, sides: tuple[str, ...], bounds: dict[str, Any]
) -> np.ndarray:
    # Lazily computed thresholds arrive as 0-d blocks, in the order named by ``sides``.
    values = dict(bounds)
    values.update(zip(sides, lazy, strict=True))
    return threshold_mask(tile, above=values.get("above"), below=values.get("below"))


def threshold(
    image: da.Array,
    *,
    above: Threshold | None = None,
    below: Threshold | None = None,
) -> da.Array:
    """Lazy bool mask ``image > above`` and/or ``image < below`` (both: ``above < x < below``).

    Parameters
    ----------
    image : dask.array.Array
        ``(rows, cols)`` or ``(rows, cols, 1)`` in level pixels, integer or float, compared
        in its own value scale (uint8 0-255, uint16 0-65535, float as stored). For colour,
        use :func:`to_gray` or select a channel (``rgb[..., 0]``) first. A numpy array is
        taken as one chunk.
    above, below : float, int or dask.array.Array, optional
        Strict thresholds: real numbers, or 0-d dask arrays (a threshold computed lazily
        elsewhere, e.g. a slide-wide Otsu value; it stays lazy and is not range-checked).
        Comparisons are exact (``127.5`` on uint8 means ``x >= 128``).

    Returns
    -------
    dask.array.Array
        ``(rows, cols)`` bool, same chunks; lazy. Per-pixel, one byte per pixel per block.

    Raises
    ------
    MaskError
        Neither threshold given; a multi-channel or bool image; a NaN threshold; a number
        outside an integer dtype's range (e.g. ``above=300`` on uint8); ``above >= below``.

    Notes
    -----
    The same values are computed more cheaply where the input allows: a threshold of
    :func:`median_blur` is the median of the threshold (a majority vote), and a threshold of
    :func:`slidemask.ops.artifacts.sharpness`, whose float cells end merged into larger
    chunks, compares the cells before that merge (:data:`MERGED_ATTR`). A threshold of a
    value computed as it is read back from scratch (:func:`slidemask.optical_density` by a
    lazy glass estimate) compares in that read (:data:`slidemask.ops.scratch.READ_ATTR`), so
    several thresholds of one density each compute it, and none holds it for the others.

    Examples
    --------
    >>> import dask.array as da
    >>> import numpy as np
    >>> from slidemask import otsu_threshold, threshold
    >>> grey = da.from_array(np.array([[10, 200, 30], [220, 50, 240]], np.uint8), chunks=1)
    >>> threshold(grey, below=100).compute().astype(int)
    array([[1, 0, 1],
           [0, 1, 0]])
    >>> threshold(grey, above=20, below=220).compute().astype(int)
    array([[0, 1, 1],
           [0, 1, 0]])

    A threshold computed lazily, here the image's own Otsu value (50):

    >>> threshold(grey, above=otsu_threshold(grey)).compute().astype(int)
    array([[0, 1, 0],
           [1, 0, 1]])
    """
    image = _as_dask(image, "threshold")
    if above is None and below is None:
        raise MaskError("threshold: give above=, below= or both")
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[..., 0]
    if image.ndim == 3:
        raise MaskError(
            f"threshold needs a single-channel image, got {image.shape[2]} channels "
            f"(shape {image.shape}); convert with to_gray(rgb) or select a channel, e.g. "
            "rgb[..., 0]"
        )
    if image.ndim != 2:
        raise MaskError(f"threshold expects a (rows, cols) image, got shape {image.shape}")
    dtype = image.dtype
    if dtype == np.bool_ or not (
        np.issubdtype(dtype, np.integer) or np.issubdtype(dtype, np.floating)
    ):
        raise MaskError(f"threshold needs an integer or float image, got {dtype}")

    checked = {
        name: _check_threshold(name, value, dtype)
        for name, value in (("above", above), ("below", below))
        if value is not None
    }
    lo, hi = checked.get("above"), checked.get("below")
    if isinstance(lo, numbers.Real) and isinstance(hi, numbers.Real) and lo >= hi:
        raise MaskError(
            f"threshold: above={above!r} must be below below={below!r} (the mask keeps "
            "above < x < below, which is empty otherwise)"
        )
    sides = tuple(name for name, v in checked.items() if isinstance(v, da.Array))
    bounds = {name: v for name, v in checked.items() if not isinstance(v, da.Array)}
    if not sides:
        majority = _median_of_threshold(image, bounds)
        if majority is not None:
            return majority
        unmerged = getattr(image, MERGED_ATTR, None)
        if unmerged is not None and unmerged.shape == image.shape:
            # pointwise, so the same values either way: compare, then merge the bool mask
            return rechunk(threshold(unmerged, **bounds), image.chunks)
        return _pointwise(image, threshold_mask, bounds, dtype=bool, plane=False)
    if len(sides) == 1:
        lazy = checked[sides[0]]
        assert isinstance(lazy, da.Array)
        stored = _from_stored_copy(image, lazy, sides[0], bounds)
        if stored is not None:
            return stored
    return da.map_blocks(
        _threshold_block,
        image,
        *(checked[name] for name in sides),
        sides=sides,
        bounds=bounds,
        dtype=bool,
        meta=np.empty((0, 0), dtype=bool),
    )


def _median_of_threshold(image: da.Array, bounds: dict[str, Any]) -> da.Array | None:
    """A one-sided constant threshold of ``median_blur(grey, k)`` as the same threshold's
    majority vote, ``median_blur(threshold(grey), k)``: identical (a median is a rank, so
    ``median(x) < t`` exactly when most of the window is below ``t``) and about 50 times
    cheaper than OpenCV's 8-bit median above ksize 5. None when the rewrite does not apply."""
    prior = getattr(image, WINDOWS_ATTR, None)
    if prior is None or len(bounds) != 1 or not np.issubdtype(image.dtype, np.integer):
        return None
    source, steps = prior
    if len(steps) != 1 or steps[0].fn is not _median_kernel or source.ndim != 2:
        return None
    return median_blur(threshold(source, **bounds), steps[0].kwargs["ksize"])


def _from_stored_copy(
    image: da.Array, value: da.Array, side: str, bounds: dict[str, Any]
) -> da.Array | None:
    """A threshold of ``image`` by a value computed from a stored copy of ``image`` (Otsu:
    :func:`slidemask.ops.otsu.otsu_threshold`) reads that copy back instead of computing
    ``image`` again, and never holds it in memory. None when ``value`` is not such a value."""
    from slidemask.ops.otsu import STORED_ATTR
    from slidemask.ops.scratch import stored_reads

    stored = getattr(value, STORED_ATTR, None)
    if stored is None or stored[0] != image.name:
        return None
    _, grid, folder = stored
    apply = _StoredThreshold(side, tuple(sorted(bounds.items())))
    return stored_reads(folder, grid, image, gate=value, apply=apply, dtype=bool,
                        label="threshold")


@dataclass(frozen=True)
class _StoredThreshold:
    side: str
    bounds: tuple[tuple[str, Any], ...]

    def __call__(self, tile: np.ndarray, value: Any) -> np.ndarray:
        return threshold_mask(tile, **dict(self.bounds), **{self.side: value})


def hsv_range(
    rgb: da.Array, lower: Sequence[int], upper: Sequence[int]
) -> da.Array:
    """Lazy bool mask of pixels whose OpenCV HSV colour lies in ``[lower, upper]``.

    Identical to ``cv2.inRange(cv2.cvtColor(rgb, cv2.COLOR_RGB2HSV), lower, upper) > 0`` on the
    whole image. If ``lower[0] > upper[0]`` the hue range wraps through red: e.g. lower hue
    170, upper hue 10 keeps ``H >= 170 or H <= 10`` (saturation, value still ranges).

    Parameters
    ----------
    rgb : dask.array.Array
        ``(rows, cols, 3)`` RGB or ``(rows, cols, 4)`` RGBA (alpha dropped), uint8, in level
        pixels (a numpy array is taken as one chunk).
    lower, upper : sequence of int
        ``(hue 0-179 = degrees / 2, saturation 0-255, value 0-255)``, inclusive integers.

    Returns
    -------
    dask.array.Array
        ``(rows, cols)`` bool, same row/column chunks; lazy. Per pixel; each task holds one
        3-byte-per-pixel HSV block besides its input.

    Raises
    ------
    MaskError
        Not a uint8 RGB(A) image, or bounds that are not three integers in OpenCV's ranges.

    Examples
    --------
    Blue pen ink (hue 100-128 is blue in OpenCV's half-degree scale):

    >>> import dask.array as da
    >>> import numpy as np
    >>> from slidemask import hsv_range
    >>> rgb = np.array([[[255, 0, 0], [0, 0, 255], [250, 240, 245]]], dtype=np.uint8)
    >>> pen = hsv_range(da.from_array(rgb, chunks=(1, 2, 3)), [100, 80, 30], [128, 255, 255])
    >>> pen.compute().astype(int)
    array([[0, 1, 0]])
    """
    rgb = _as_dask(rgb, "hsv_range")
    check_hsv_input(rgb.shape, rgb.dtype)
    lo, hi = check_hsv_bounds(lower, upper)
    return _pointwise(rgb, hsv_in_range, {"lower": lo, "upper": hi}, dtype=bool, plane=True)


def median_blur(image: da.Array, ksize: int) -> da.Array:
    """Lazy median filter, identical to ``cv2.medianBlur(image, ksize)`` on the whole image.

    Parameters
    ----------
    image : dask.array.Array
        ``(rows, cols)`` or ``(rows, cols, channels)`` in level pixels (channels filtered
        independently; a numpy array is taken as one chunk). ksize 3 or 5: uint8, uint16,
        int16, float32 or bool with 1-4 channels; larger ksize: uint8 or bool, 1, 3 or 4
        channels (OpenCV's limits). Bool is filtered as 0/1, a majority vote.
    ksize : int
        Odd square aperture edge in pixels of ``image``, >= 3. Halo: ``ksize // 2`` pixels.

    Returns
    -------
    dask.array.Array
        Same shape, dtype and chunks (a ``(rows, cols, 1)`` input stays 3-D); lazy. Image
        edges are replicated, as OpenCV does.

    Raises
    ------
    MaskError
        An even or too small ``ksize``, or a dtype / channel count OpenCV cannot filter at
        that ``ksize``.

    Notes
    -----
    A 2-D chunked image is stored to scratch with edge strips and each output chunk reads
    its halo window back (:func:`slidemask.ops.scratch.map_windows`), so each task holds one
    window and memory does not grow with the slide's width; consecutive neighbourhood steps
    share one window read.

    Examples
    --------
    >>> import dask.array as da
    >>> import numpy as np
    >>> from slidemask import median_blur
    >>> grey = np.zeros((6, 6), dtype=np.uint8)
    >>> grey[:3, :3] = 9
    >>> grey[2, 3] = 255  # an isolated bright pixel, removed by the median
    >>> median_blur(da.from_array(grey, chunks=3), 3).compute()
    array([[9, 9, 9, 0, 0, 0],
           [9, 9, 9, 0, 0, 0],
           [9, 9, 9, 0, 0, 0],
           [0, 0, 0, 0, 0, 0],
           [0, 0, 0, 0, 0, 0],
           [0, 0, 0, 0, 0, 0]], dtype=uint8)
    """
    image = _as_dask(image, "median_blur")
    check_median_input(image.shape, image.dtype, ksize)
    if image.ndim == 2:
        step = KernelStep(_median_kernel, median_depth(ksize), {"ksize": int(ksize)})
        return _neighbourhood(image, step, dtype=image.dtype, label="median")
    image = _single_channel_chunk(image)
    return map_exact_overlap(
        _median_kernel, image, median_depth(ksize), dtype=image.dtype, ksize=int(ksize)
    )


def mean_blur(image: da.Array, ksize: int) -> da.Array:
    """Lazy ``ksize`` x ``ksize`` mean filter of a grey image.

    The exact integer mean ``(sum + n // 2) // n`` (``n = ksize**2``) with edges replicated
    (:func:`slidemask.kernels.filters.mean_blur_kernel`); for ``ksize = 3`` ImageJ's
    ``smooth()``, as QuPath's simple tissue detection applies it.

    Parameters
    ----------
    image : dask.array.Array
        ``(rows, cols)`` uint8 or uint16 in level pixels (a numpy array is taken as one chunk).
    ksize : int
        Odd aperture edge in pixels of ``image``, >= 3; halo ``ksize // 2``.

    Returns
    -------
    dask.array.Array
        Same shape, dtype and chunks; equal to the kernel on the whole image; lazy. Memory as
        :func:`median_blur` (halo windows read from scratch).

    Raises
    ------
    MaskError
        An even or too small ``ksize``, or not a 2-D uint8/uint16 image.

    Examples
    --------
    >>> import dask.array as da
    >>> import numpy as np
    >>> from slidemask import mean_blur
    >>> grey = np.arange(16, dtype=np.uint8).reshape(4, 4) * 10
    >>> mean_blur(da.from_array(grey, chunks=2), 3).compute()
    array([[ 17,  23,  33,  40],
           [ 43,  50,  60,  67],
           [ 83,  90, 100, 107],
           [110, 117, 127, 133]], dtype=uint8)
    """
    image = _as_dask(image, "mean_blur")
    ksize = check_odd_ksize(ksize, "mean_blur")
    if image.ndim != 2 or image.dtype not in (np.dtype(np.uint8), np.dtype(np.uint16)):
        raise MaskError(
            f"mean_blur expects a 2-D uint8 or uint16 grey image, got shape {image.shape} "
            f"dtype {image.dtype}"
        )
    step = KernelStep(mean_blur_kernel, mean_blur_depth(ksize), {"ksize": ksize})
    return _neighbourhood(image, step, dtype=image.dtype, label="mean")


MAX_RADIUS = 16383
"""Largest disk radius (pixels) of the morphology operations: the disk's footprint, one byte
per pixel, stays within 1 GiB."""


def _morphology(mask: da.Array, op: MorphologyOp, radius: int) -> da.Array:
    mask = _as_dask(mask, f"binary_{op}")
    check_radius(radius)
    if mask.dtype != np.bool_ or mask.ndim != 2:
        raise MaskError(
            f"binary_{op} expects a 2-D bool mask, got shape {mask.shape} dtype {mask.dtype}; "
            "make one with threshold() or `image != 0`"
        )
    if radius > MAX_RADIUS:
        raise MaskError(
            f"binary_{op}: radius {radius} pixels is too large (at most {MAX_RADIUS}: its "
            f"disk would take {(2 * radius + 1) ** 2 / 2**30:.3g} GiB); the mask is "
            f"{mask.shape[0]} x {mask.shape[1]} pixels"
        )
    step = KernelStep(
        binary_morphology, morphology_depth(op, radius), {"op": op, "radius": int(radius)}
    )
    return _neighbourhood(mask, step, dtype=bool, label=op)


def binary_dilation(mask: da.Array, radius: int) -> da.Array:
    """Lazy dilation of a 2-D bool mask by a disk of ``radius`` pixels.

    Identical to ``skimage.morphology.dilation(mask, footprint=disk(radius))`` (scikit-image
    0.26, default border mode) on the whole image; where an image side is under ``radius / 4``
    pixels, identical to its ``mode="ignore"`` (the default mode is then wrong: see
    :mod:`slidemask.kernels.morphology`).

    Parameters
    ----------
    mask : dask.array.Array
        ``(rows, cols)`` bool, in the pixels of its level (a numpy array is taken as one
        chunk).
    radius : int
        Disk radius in pixels of ``mask``, >= 0; 0 returns a copy. Halo: ``radius`` pixels.

    Returns
    -------
    dask.array.Array
        ``(rows, cols)`` bool, same chunks; lazy. Memory as :func:`median_blur` (halo
        windows read from scratch; consecutive morphology steps share one window read).

    Raises
    ------
    MaskError
        Not a 2-D bool mask; a negative or non-integer radius, or one over
        :data:`MAX_RADIUS`.

    Examples
    --------
    >>> import dask.array as da
    >>> import numpy as np
    >>> from slidemask import binary_dilation
    >>> mask = np.zeros((5, 5), dtype=bool)
    >>> mask[2, 2] = True
    >>> binary_dilation(da.from_array(mask, chunks=2), 1).compute().astype(int)
    array([[0, 0, 0, 0, 0],
           [0, 0, 1, 0, 0],
           [0, 1, 1, 1, 0],
           [0, 0, 1, 0, 0],
           [0, 0, 0, 0, 0]])
    """
    return _morphology(mask, "dilation", radius)


def binary_erosion(mask: da.Array, radius: int) -> da.Array:
    """Lazy erosion of a 2-D bool mask by a disk of ``radius`` pixels.

    Identical to ``skimage.morphology.erosion(mask, footprint=disk(radius))`` (scikit-image
    0.26, default border mode: pixels outside the image never erode the mask); where an image
    side is under ``radius / 4`` pixels, identical to its ``mode="ignore"`` (the default mode
    is then wrong: see :mod:`slidemask.kernels.morphology`).

    Parameters
    ----------
    mask : dask.array.Array
        ``(rows, cols)`` bool, in the pixels of its level (a numpy array is taken as one
        chunk).
    radius : int
        Disk radius in pixels of ``mask``, >= 0. Halo: ``radius`` pixels.

    Returns
    -------
    dask.array.Array
        ``(rows, cols)`` bool, same chunks; lazy. Memory as :func:`binary_dilation`.

    Raises
    ------
    MaskError
        Not a 2-D bool mask; a negative or non-integer radius, or one over
        :data:`MAX_RADIUS`.

    Examples
    --------
    >>> import dask.array as da
    >>> import numpy as np
    >>> from slidemask import binary_erosion
    >>> mask = np.zeros((5, 5), dtype=bool)
    >>> mask[1:4, 1:4] = True
    >>> binary_erosion(da.from_array(mask, chunks=2), 1).compute().astype(int)
    array([[0, 0, 0, 0, 0],
           [0, 0, 0, 0, 0],
           [0, 0, 1, 0, 0],
           [0, 0, 0, 0, 0],
           [0, 0, 0, 0, 0]])
    """
    return _morphology(mask, "erosion", radius)


def binary_opening(mask: da.Array, radius: int) -> da.Array:
    """Lazy opening (erosion, then dilation) of a 2-D bool mask by a disk of ``radius`` pixels.

    Identical to ``skimage.morphology.opening(mask, footprint=disk(radius))`` (scikit-image
    0.26, default border mode); where an image side is under
    ``radius / 4`` pixels, identical to its ``mode="ignore"`` (the default mode is then wrong:
    see :mod:`slidemask.kernels.morphology`). Removes foreground specks narrower than the disk.

    Parameters
    ----------
    mask : dask.array.Array
        ``(rows, cols)`` bool, in the pixels of its level (a numpy array is taken as one
        chunk).
    radius : int
        Disk radius in pixels of ``mask``, >= 0. Halo: ``2 * radius`` pixels.

    Returns
    -------
    dask.array.Array
        ``(rows, cols)`` bool, same chunks; lazy. Memory as :func:`binary_dilation`.

    Raises
    ------
    MaskError
        Not a 2-D bool mask; a negative or non-integer radius, or one over
        :data:`MAX_RADIUS`.

    Examples
    --------
    >>> import dask.array as da
    >>> import numpy as np
    >>> from slidemask import binary_opening
    >>> from skimage.morphology import disk
    >>> mask = np.zeros((7, 7), dtype=bool)
    >>> mask[:5, :5] = disk(2)
    >>> mask[6, 6] = True  # a one-pixel speck
    >>> binary_opening(da.from_array(mask, chunks=4), 1).compute().astype(int)
    array([[0, 0, 1, 0, 0, 0, 0],
           [0, 1, 1, 1, 0, 0, 0],
           [1, 1, 1, 1, 1, 0, 0],
           [0, 1, 1, 1, 0, 0, 0],
           [0, 0, 1, 0, 0, 0, 0],
           [0, 0, 0, 0, 0, 0, 0],
           [0, 0, 0, 0, 0, 0, 0]])
    """
    return _morphology(mask, "opening", radius)


def binary_closing(mask: da.Array, radius: int) -> da.Array:
    """Lazy closing (dilation, then erosion) of a 2-D bool mask by a disk of ``radius`` pixels.

    Identical to ``skimage.morphology.closing(mask, footprint=disk(radius))`` (scikit-image
    0.26, default border mode); where an image side is under
    ``radius / 4`` pixels, identical to its ``mode="ignore"`` (the default mode is then wrong:
    see :mod:`slidemask.kernels.morphology`). Fills background gaps narrower than the disk.

    Parameters
    ----------
    mask : dask.array.Array
        ``(rows, cols)`` bool, in the pixels of its level (a numpy array is taken as one
        chunk).
    radius : int
        Disk radius in pixels of ``mask``, >= 0. Halo: ``2 * radius`` pixels.

    Returns
    -------
    dask.array.Array
        ``(rows, cols)`` bool, same chunks; lazy. Memory as :func:`binary_dilation`.

    Raises
    ------
    MaskError
        Not a 2-D bool mask; a negative or non-integer radius, or one over
        :data:`MAX_RADIUS`.

    Examples
    --------
    >>> import dask.array as da
    >>> import numpy as np
    >>> from slidemask import binary_closing
    >>> mask = np.zeros((7, 9), dtype=bool)
    >>> mask[2:5, 2:7] = True
    >>> mask[3, 4] = False  # a one-pixel gap
    >>> binary_closing(da.from_array(mask, chunks=4), 1).compute().astype(int)
    array([[0, 0, 0, 0, 0, 0, 0, 0, 0],
           [0, 0, 0, 0, 0, 0, 0, 0, 0],
           [0, 0, 1, 1, 1, 1, 1, 0, 0],
           [0, 0, 1, 1, 1, 1, 1, 0, 0],
           [0, 0, 1, 1, 1, 1, 1, 0, 0],
           [0, 0, 0, 0, 0, 0, 0, 0, 0],
           [0, 0, 0, 0, 0, 0, 0, 0, 0]])
    """
    return _morphology(mask, "closing", radius)


def _square(mask: da.Array, op: SquareOp, size: int) -> da.Array:
    what = f"square_{op}"
    mask = _as_dask(mask, what)
    if isinstance(size, bool) or not isinstance(size, int | np.integer) or size < 1:
        raise MaskError(f"{what}: size must be a positive number of pixels, got {size!r}")
    if mask.dtype != np.bool_ or mask.ndim != 2:
        raise MaskError(
            f"{what} expects a 2-D bool mask, got shape {mask.shape} dtype {mask.dtype}"
        )
    step = KernelStep(
        square_morphology_kernel, square_depth(op, int(size)), {"op": op, "size": int(size)}
    )
    return _neighbourhood(mask, step, dtype=bool, label=f"square-{op}")


def square_dilation(mask: da.Array, size: int) -> da.Array:
    """Lazy ``cv2.dilate(mask, np.ones((size, size)))`` of a 2-D bool mask.

    OpenCV's square kernel, as CLAM and PathML apply it
    (:func:`slidemask.kernels.morphology.square_morphology_kernel`).

    Parameters
    ----------
    mask : dask.array.Array
        ``(rows, cols)`` bool, in the pixels of its level (a numpy array is taken as one
        chunk).
    size : int
        Square edge in pixels of ``mask``, >= 1. Halo: ``size // 2`` pixels.

    Returns
    -------
    dask.array.Array
        ``(rows, cols)`` bool, same chunks; lazy. Memory as :func:`binary_dilation`.

    Raises
    ------
    MaskError
        Not a 2-D bool mask, or ``size`` not a positive integer.

    Examples
    --------
    >>> import dask.array as da
    >>> import numpy as np
    >>> from slidemask import square_dilation
    >>> mask = np.zeros((5, 5), dtype=bool)
    >>> mask[2, 2] = True
    >>> square_dilation(da.from_array(mask, chunks=2), 3).compute().astype(int)
    array([[0, 0, 0, 0, 0],
           [0, 1, 1, 1, 0],
           [0, 1, 1, 1, 0],
           [0, 1, 1, 1, 0],
           [0, 0, 0, 0, 0]])
    """
    return _square(mask, "dilation", size)


def square_erosion(mask: da.Array, size: int) -> da.Array:
    """Lazy ``cv2.erode(mask, np.ones((size, size)))`` of a 2-D bool mask.

    Parameters
    ----------
    mask : dask.array.Array
        ``(rows, cols)`` bool, in the pixels of its level (a numpy array is taken as one
        chunk).
    size : int
        Square edge in pixels of ``mask``, >= 1. Halo: ``size // 2`` pixels.

    Returns
    -------
    dask.array.Array
        ``(rows, cols)`` bool, same chunks; lazy. Memory as :func:`binary_dilation`.

    Raises
    ------
    MaskError
        Not a 2-D bool mask, or ``size`` not a positive integer.

    Examples
    --------
    >>> import dask.array as da
    >>> import numpy as np
    >>> from slidemask import square_erosion
    >>> mask = np.zeros((5, 5), dtype=bool)
    >>> mask[1:4, 1:4] = True
    >>> square_erosion(da.from_array(mask, chunks=2), 3).compute().astype(int)
    array([[0, 0, 0, 0, 0],
           [0, 0, 0, 0, 0],
           [0, 0, 1, 0, 0],
           [0, 0, 0, 0, 0],
           [0, 0, 0, 0, 0]])
    """
    return _square(mask, "erosion", size)


def square_opening(mask: da.Array, size: int) -> da.Array:
    """Lazy ``cv2.morphologyEx(mask, MORPH_OPEN, np.ones((size, size)))`` of a 2-D bool mask.

    Parameters
    ----------
    mask : dask.array.Array
        ``(rows, cols)`` bool, in the pixels of its level (a numpy array is taken as one
        chunk).
    size : int
        Square edge in pixels of ``mask``, >= 1. Halo: ``2 * (size // 2)`` pixels.

    Returns
    -------
    dask.array.Array
        ``(rows, cols)`` bool, same chunks; lazy. Memory as :func:`binary_dilation`.

    Raises
    ------
    MaskError
        Not a 2-D bool mask, or ``size`` not a positive integer.

    Notes
    -----
    ``k`` iterations of a ``k0`` x ``k0`` square equal one square of ``size = (k0 - 1) * k
    + 1`` (OpenCV itself grows the kernel so): PathML's 7 x 7 kernel applied 3 times is
    ``size 19``.

    Examples
    --------
    >>> import dask.array as da
    >>> import numpy as np
    >>> from slidemask import square_opening
    >>> mask = np.zeros((6, 6), dtype=bool)
    >>> mask[:3, :3] = True
    >>> mask[4, 4] = True  # a one-pixel speck
    >>> square_opening(da.from_array(mask, chunks=4), 3).compute().astype(int)
    array([[1, 1, 1, 0, 0, 0],
           [1, 1, 1, 0, 0, 0],
           [1, 1, 1, 0, 0, 0],
           [0, 0, 0, 0, 0, 0],
           [0, 0, 0, 0, 0, 0],
           [0, 0, 0, 0, 0, 0]])
    """
    return _square(mask, "opening", size)


def square_closing(mask: da.Array, size: int) -> da.Array:
    """Lazy ``cv2.morphologyEx(mask, MORPH_CLOSE, np.ones((size, size)))`` of a 2-D bool mask.

    Parameters
    ----------
    mask : dask.array.Array
        ``(rows, cols)`` bool, in the pixels of its level (a numpy array is taken as one
        chunk).
    size : int
        Square edge in pixels of ``mask``, >= 1 (see :func:`square_opening` for
        iterations). Halo: ``2 * (size // 2)`` pixels.

    Returns
    -------
    dask.array.Array
        ``(rows, cols)`` bool, same chunks; lazy. Memory as :func:`binary_dilation`.

    Raises
    ------
    MaskError
        Not a 2-D bool mask, or ``size`` not a positive integer.

    Examples
    --------
    >>> import dask.array as da
    >>> import numpy as np
    >>> from slidemask import square_closing
    >>> mask = np.zeros((7, 9), dtype=bool)
    >>> mask[2:5, 2:7] = True
    >>> mask[3, 4] = False  # a one-pixel gap
    >>> square_closing(da.from_array(mask, chunks=4), 3).compute().astype(int)
    array([[0, 0, 0, 0, 0, 0, 0, 0, 0],
           [0, 0, 0, 0, 0, 0, 0, 0, 0],
           [0, 0, 1, 1, 1, 1, 1, 0, 0],
           [0, 0, 1, 1, 1, 1, 1, 0, 0],
           [0, 0, 1, 1, 1, 1, 1, 0, 0],
           [0, 0, 0, 0, 0, 0, 0, 0, 0],
           [0, 0, 0, 0, 0, 0, 0, 0, 0]])
    """
    return _square(mask, "closing", size)
