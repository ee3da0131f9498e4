"""Slide-wide Otsu threshold from a per-chunk histogram reduction.

The result equals ``skimage.filters.threshold_otsu`` on the whole image (or on
``image[mask]``) bit for bit: scikit-image histograms integer images with one bin per integer
value between the image's minimum and maximum (``nbins`` is ignored for integer input), so
the summed per-chunk ``np.bincount`` histogram, trimmed to its first and last non-empty bins,
is exactly the histogram it uses; the threshold is then computed from it by scikit-image itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import dask.array as da
import numpy as np
from dask.base import tokenize
from dask.highlevelgraph import HighLevelGraph

from slidemask.errors import MaskError
from slidemask.ops.chunks import rechunk

__all__ = ["otsu_threshold", "threshold_from_histogram"]

_BINS = {np.dtype(np.uint8): 256, np.dtype(np.uint16): 65536}


def _block_histogram(
    tile: np.ndarray, selected: np.ndarray | None = None, *, nbins: int
) -> np.ndarray:
    values = tile if selected is None else tile[selected]
    hist = np.bincount(values.ravel(), minlength=nbins)
    return hist.astype(np.int64, copy=False).reshape((1,) * tile.ndim + (nbins,))


def threshold_from_histogram(hist: np.ndarray) -> np.float64:
    """Otsu threshold of a full-range integer histogram (bin ``k`` counts value ``k``).

    Equal to ``skimage.filters.threshold_otsu`` of any image with that histogram; an image of a
    single value gives that value (as scikit-image does).

    Parameters
    ----------
    hist : numpy.ndarray
        1-D pixel counts, e.g. 256 bins for uint8 or 65536 for uint16 grey values.

    Returns
    -------
    numpy.float64
        The threshold, in grey values: pixels above it are the bright class.

    Raises
    ------
    MaskError
        The histogram is empty (no pixel selected).

    Examples
    --------
    >>> import numpy as np
    >>> grey = np.array([12, 40, 200, 220, 30, 180], dtype=np.uint8)
    >>> float(threshold_from_histogram(np.bincount(grey, minlength=256)))
    40.0
    """
    hist = np.asarray(hist)
    present = np.flatnonzero(hist)
    if not len(present):
        raise MaskError("otsu_threshold: no pixels to threshold (empty image or empty mask)")
    lo, hi = int(present[0]), int(present[-1])
    if lo == hi:
        return np.float64(lo)
    from skimage.filters import threshold_otsu

    counts = hist[lo : hi + 1].astype(np.int64)
    centers = np.arange(lo, hi + 1)
    return np.float64(threshold_otsu(hist=(counts, centers)))


def _threshold_block(hist: np.ndarray) -> np.ndarray:
    return np.asarray(threshold_from_histogram(hist), dtype=np.float64)


def otsu_threshold(image: da.Array, *, mask: da.Array | None = None) -> da.Array:
    """Otsu's threshold of a whole (chunked) grey image, lazily.

    Parameters
    ----------
    image : dask.array.Array
        ``uint8`` or ``uint16`` grey values, any shape (typically ``(rows, cols)`` in the
        pixels of one level).
    mask : dask.array.Array, optional
        ``bool``, the same shape: only pixels where it is True count, giving exactly
        ``threshold_otsu(image[mask])``.

    Returns
    -------
    dask.array.Array
        0-d ``float64``: the threshold, in the image's grey values. Pixels above it are the
        bright class. Lazy: pass it to :func:`slidemask.threshold` as ``above=`` or
        ``below=`` without computing it.

    Raises
    ------
    MaskError
        Not a dask array, not uint8/uint16, or a bad ``mask``; when computed, no pixel
        selected.

    Notes
    -----
    One histogram per chunk (256 ``int64`` for ``uint8``, 65536 for ``uint16``), summed by a
    tree reduction; memory does not grow with the image. A chunked 2-D image without
    ``mask`` is stored to scratch while it is histogrammed, so that
    ``threshold(image, above=otsu_threshold(image))`` reads that copy back instead of
    computing ``image`` twice or holding its chunks until the histogram is complete.

    Examples
    --------
    >>> import dask.array as da
    >>> import numpy as np
    >>> from slidemask import otsu_threshold
    >>> grey = da.from_array(np.array([[12, 40, 200], [220, 30, 180]], np.uint8), chunks=2)
    >>> t = otsu_threshold(grey)
    >>> t.shape, t.dtype
    ((), dtype('float64'))
    >>> float(t.compute())  # skimage.filters.threshold_otsu gives 40 too
    40.0

    Only the pixels of a mask count (here all but the 40):

    >>> keep = da.from_array(np.array([[True, False, True], [True, True, True]]), chunks=2)
    >>> float(otsu_threshold(grey, mask=keep).compute())
    30.0
    """
    if not isinstance(image, da.Array):
        raise MaskError(f"otsu_threshold: expected a dask array, got {type(image).__name__}")
    nbins = _BINS.get(image.dtype)
    if nbins is None:
        raise MaskError(
            f"otsu_threshold: image dtype must be uint8 or uint16, got {image.dtype}"
        )
    if image.ndim == 0:
        image = image[None]
    args: list[Any] = [image]
    if mask is not None:
        if not isinstance(mask, da.Array) or mask.dtype != bool:
            raise MaskError("otsu_threshold: mask must be a bool dask array")
        if mask.shape != image.shape:
            raise MaskError(
                f"otsu_threshold: mask shape {mask.shape} differs from image shape {image.shape}"
            )
        args.append(rechunk(mask, image.chunks))
    ndim = image.ndim
    if mask is None and ndim == 2 and image.numblocks != (1, 1):
        return _stored_otsu(image, nbins)
    hists = da.map_blocks(
        _block_histogram, *args, nbins=nbins,
        chunks=tuple((1,) * n for n in image.numblocks) + ((nbins,),),
        new_axis=ndim, dtype=np.int64, meta=np.empty((0,) * (ndim + 1), np.int64),
    )
    total = hists.sum(axis=tuple(range(ndim)), dtype=np.int64)
    return total.map_blocks(
        _threshold_block, drop_axis=0, chunks=(), dtype=np.float64,
        meta=np.empty((), np.float64),
    )


STORED_ATTR = "_slidemask_stored"
"""Attribute of an Otsu value computed while its image was stored to scratch:
``(image name, store grid, folder)``; :func:`slidemask.ops.local.threshold` of that image by
that value reads the stored copy instead of computing the image again."""


@dataclass(frozen=True)
class _StoreHistogram:
    nbins: int

    def __call__(self, tile: np.ndarray, offset: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
        return np.bincount(tile.ravel(), minlength=self.nbins).astype(np.int64), tile


def _sum_threshold(rows: list[list[np.ndarray]]) -> np.ndarray:
    total = np.sum([cell[0, 0] for row in rows for cell in row], axis=0, dtype=np.int64)
    return np.asarray(threshold_from_histogram(np.asarray(total)), dtype=np.float64)


def _stored_otsu(image: da.Array, nbins: int) -> da.Array:
    """Otsu of a 2-D image whose chunks are stored to scratch while they are histogrammed,
    so that a threshold by the value reads them back (:data:`STORED_ATTR`) instead of dask
    holding every chunk until the histogram is complete."""
    from slidemask.ops.scratch import stores

    grid, folder = stores(image, "otsu", summarize=_StoreHistogram(nbins))
    name = f"slidemask-otsu-{tokenize(grid.name)}"
    nbr, nbc = grid.numblocks
    task = (_sum_threshold, [[(grid.name, i, j) for j in range(nbc)] for i in range(nbr)])
    graph = HighLevelGraph.from_collections(
        name, {(name,): task}, dependencies=[grid]  # type: ignore[list-item]
    )
    value = da.Array(graph, name, chunks=(), dtype=np.float64, meta=np.empty((), np.float64))
    setattr(value, STORED_ATTR, (image.name, grid, folder))
    return value
