"""Lazy optical density and white balance relative to the slide's glass, and the glass colour.

:func:`background_estimate` is a slide-wide statistic computed as :mod:`slidemask.ops.otsu`
computes its threshold: every chunk of the colour image is stored to scratch while its
channel histograms are taken (pass 1), one task merges them into the background, and
:func:`optical_density` or :func:`white_balance` of the same image by that background reads
the stored chunks back (pass 2) instead of decoding the slide again or holding chunks in
memory until the estimate is known. On a one-chunk image (a tissue mask at 8 µm per pixel)
nothing is stored. One image with the same options has one estimate while it is in use, so
every step reading the stored copy reads the one that was written.

With a background given as numbers, both are per-pixel steps and run on each file tile as it
is decoded (:meth:`slidemask.io.Slide.map_pixels`).

For any chunking both equal the numpy kernels of :mod:`slidemask.kernels.density` on the
whole image in memory, bit for bit.
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import dask.array as da
import numpy as np
from dask.base import tokenize
from dask.highlevelgraph import HighLevelGraph

from slidemask.errors import MaskError
from slidemask.kernels.density import (
    COMBINES,
    Combine,
    background_from_histograms,
    channel_histograms,
    check_background,
    check_density_input,
    optical_density_kernel,
    white_balance_kernel,
)
from slidemask.ops.chunks import rechunk
from slidemask.ops.literal import as_dask

__all__ = ["background_estimate", "optical_density", "white_balance"]

STORED_ATTR = "_slidemask_stored_background"
"""Attribute of a background estimated while its image was stored to scratch:
``(image name, store grid, folder, gate)``, where ``gate`` is the 0-d dask array whose value
is the background; :func:`optical_density` of that image reads the stored copy."""

_OBJ_META = np.empty((0, 0), dtype=object)


def _colour(image: Any, what: str) -> da.Array:
    """A checked colour image with its channel axis in one chunk (the same array, by name, for
    :func:`background_estimate` and :func:`optical_density` of one input)."""
    image = as_dask(image, what)
    check_density_input(image.shape, image.dtype, what)
    if image.numblocks[2] != 1:
        image = rechunk(image, {2: -1})
    return image


def _check_options(percentile: Any, floor: Any) -> tuple[float, float | None]:
    if isinstance(percentile, bool) or not isinstance(percentile, int | float | np.number):
        raise MaskError(f"background_estimate: percentile must be a number, got {percentile!r}")
    if not 0 < float(percentile) <= 100:
        raise MaskError(
            f"background_estimate: percentile must be in (0, 100], got {percentile!r}"
        )
    if floor is not None:
        if isinstance(floor, bool) or not isinstance(floor, int | float | np.number):
            raise MaskError(f"background_estimate: floor must be a number, got {floor!r}")
        if not np.isfinite(floor) or floor < 0:
            raise MaskError(f"background_estimate: floor must be finite and >= 0, got {floor!r}")
        floor = float(floor)
    return float(percentile), floor


@dataclass(frozen=True)
class _Histograms:
    """Pass-1 task body: the chunk's :func:`channel_histograms`, and the chunk to store."""

    def __call__(self, tile: np.ndarray, offset: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
        return channel_histograms(tile), tile


def _block_record(tile: np.ndarray) -> np.ndarray:
    out = np.empty((1, 1), dtype=object)
    out[0, 0] = channel_histograms(tile)
    return out


@dataclass(frozen=True)
class _Merge:
    """The merge task: summed histograms to the background (kernel arguments attached)."""

    dtype: str
    percentile: float
    floor: float | None

    def __call__(self, rows: list[list[np.ndarray]]) -> np.ndarray:
        total = np.sum([cell[0, 0] for row in rows for cell in row], axis=0, dtype=np.int64)
        return background_from_histograms(
            np.asarray(total), dtype=np.dtype(self.dtype), percentile=self.percentile,
            floor=self.floor,
        )


def background_estimate(
    rgb: da.Array, *, percentile: float = 99.0, floor: float | None = None
) -> da.Array:
    """The colour of the slide's glass, per channel, computed over the whole image, lazily.

    Per channel, the ``percentile``-th percentile (``numpy.percentile(...,
    method="inverted_cdf")``, a value that occurs) of the pixels that are not pure white,
    raised to at least ``floor``. Pure white pixels (every channel within 0.4 % of full scale:
    254 or more for uint8) are the sensor's saturation or the scanner's fill outside the
    scanned area, brighter than the glass; they are left out.

    Parameters
    ----------
    rgb
        ``(rows, cols, 3)`` RGB or ``(rows, cols, 4)`` RGBA (alpha ignored), uint8 or uint16,
        channels last; typically the working image of a slide.
    percentile
        In (0, 100]. 99 finds the glass whenever it covers more than 1 % of the image, and is
        not moved by a little dust.
    floor
        Lowest background value per channel, in the image's own scale; default 200 for uint8
        (51400 for uint16). On an image of tissue only, the percentile is light tissue; the
        floor keeps that tissue measurable against it.

    Returns
    -------
    dask.array.Array
        ``(3,)`` float64 ``(R, G, B)`` in the image's own scale. All full scale when every
        pixel is pure white (blank, overexposed). Computing it raises :class:`MaskError` when
        even the brightest pixels are dark (below a quarter of full scale in every channel:
        a fluorescence image or a failed scan, where optical density means nothing).

    Notes
    -----
    Memory: one histogram per chunk (3 x 256 int64 for uint8, 3 x 65536 for uint16) and a
    tree-free merge of them; on a multi-chunk image every chunk is stored to scratch while it
    is histogrammed, so that :func:`optical_density` by this value reads it back rather than
    computing the image again (see the module notes).

    Examples
    --------
    >>> import numpy as np
    >>> import dask.array as da
    >>> rgb = np.full((40, 60, 3), (240, 236, 244), np.uint8)
    >>> rgb[10:30, 20:50] = (180, 120, 170)                     # tissue on glass
    >>> background_estimate(da.from_array(rgb, chunks=16)).compute()
    array([240., 236., 244.])
    """
    percentile, floor = _check_options(percentile, floor)
    rgb = _colour(rgb, "background_estimate")
    # one estimate per image and options while it is in use: its scratch copy of the image
    # (a folder of its own) is then the one every reader of the stored copy reads; two
    # estimates of one image would share their graph keys but not their folders
    key = tokenize(rgb.name, percentile, floor)
    known = _ESTIMATES.get(key)
    if known is not None:
        return known
    nbr, nbc = rgb.numblocks[:2]
    merge = _Merge(rgb.dtype.str, percentile, floor)
    stored = None
    if (nbr, nbc) != (1, 1):
        from slidemask.ops.scratch import stores

        grid, folder = stores(rgb, "background", summarize=_Histograms())
        stored = (grid, folder)
    else:
        grid = da.map_blocks(
            _block_record, rgb, chunks=((1,) * nbr, (1,) * nbc), drop_axis=2, dtype=object,
            meta=_OBJ_META, name=f"slidemask-background-histograms-{tokenize(rgb.name)}",
        )
    token = tokenize(grid.name, merge)
    gate_name = f"slidemask-background-merge-{token}"
    task = (merge, [[(grid.name, i, j) for j in range(nbc)] for i in range(nbr)])
    graph = HighLevelGraph.from_collections(
        gate_name, {(gate_name,): task}, dependencies=[grid]  # type: ignore[list-item]
    )
    gate = da.Array(graph, gate_name, chunks=(), dtype=np.float64,
                    meta=np.empty((), np.float64))
    name = f"slidemask-background-{token}"
    graph = HighLevelGraph.from_collections(
        name, {(name, 0): (np.asarray, (gate_name,))}, dependencies=[gate]  # type: ignore[list-item]
    )
    value = da.Array(graph, name, chunks=((3,),), dtype=np.float64,
                     meta=np.empty((0,), np.float64))
    if stored is not None:
        setattr(value, STORED_ATTR, (rgb.name, stored[0], stored[1], gate))
    _ESTIMATES[key] = value
    return value


_ESTIMATES: weakref.WeakValueDictionary[str, da.Array] = weakref.WeakValueDictionary()
"""The estimates in use, by image name and options (see :func:`background_estimate`)."""


@dataclass(frozen=True)
class _Density:
    """``optical_density_kernel`` of a tile by a background computed lazily."""

    combine: Combine

    def __call__(self, tile: np.ndarray, background: np.ndarray) -> np.ndarray:
        values = check_background(np.asarray(background, dtype=np.float64).ravel().tolist())
        return optical_density_kernel(tile, background=values, combine=self.combine)


def optical_density(
    rgb: da.Array,
    background: Sequence[float] | da.Array | None = None,
    *,
    combine: Combine = "sum",
    percentile: float = 99.0,
    floor: float | None = None,
) -> da.Array:
    """Lazy optical density of each pixel relative to the glass (absorbance of the stain).

    ``OD_c = max(0, -log10((I_c + 1) / (bg_c + 1)))`` per channel ``c``, then combined (see
    :mod:`slidemask.kernels.density`). Relative to the slide's own glass it does not depend on
    the scanner's white balance, and a gamma only scales it.

    Parameters
    ----------
    rgb
        ``(rows, cols, 3)`` RGB or ``(rows, cols, 4)`` RGBA (alpha ignored), uint8 or uint16.
    background
        The glass colour ``(R, G, B)`` in the image's own scale: numbers (then the step is
        per-pixel and fuses with decoding), a ``(3,)`` dask array (e.g. from
        :func:`background_estimate`), or None to estimate it over the whole image with
        ``percentile`` and ``floor`` (see :func:`background_estimate`; they are used only
        then).
    combine
        ``"sum"`` (default): the total absorbance ``OD_R + OD_G + OD_B``; ``"max"``: the
        largest channel OD; None: the three channel ODs.
    percentile, floor
        Of the estimate when ``background`` is None.

    Returns
    -------
    dask.array.Array
        float32 ``(rows, cols)`` (``(rows, cols, 3)`` for ``combine=None``), >= 0, same
        row/column chunks. Threshold it with :func:`slidemask.threshold` (e.g.
        ``above=0.1``: the pixel absorbs more than about 7 % of the light per channel).

    Raises
    ------
    MaskError
        Not a uint8/uint16 RGB(A) image; a bad ``background``, ``combine``, ``percentile`` or
        ``floor``. Computing an estimated background can raise too (see
        :func:`background_estimate`).

    Examples
    --------
    >>> import numpy as np
    >>> import dask.array as da
    >>> rgb = np.array([[[239, 239, 239], [23, 239, 239]]], np.uint8)  # glass; 10 % red light
    >>> optical_density(da.from_array(rgb), background=(239, 239, 239)).compute()
    array([[0., 1.]], dtype=float32)
    """
    rgb = _colour(rgb, "optical_density")
    if combine not in COMBINES:
        raise MaskError(f"optical_density: combine must be 'sum', 'max' or None, got {combine!r}")
    return _by_glass(rgb, background, percentile, floor, "optical_density",
                     optical_density_kernel, {"combine": combine}, _Density(combine),
                     np.dtype(np.float32), combine is not None)


@dataclass(frozen=True)
class _Balance:
    """``white_balance_kernel`` of a tile by a background computed lazily."""

    def __call__(self, tile: np.ndarray, background: np.ndarray) -> np.ndarray:
        values = np.asarray(background, dtype=np.float64).ravel().tolist()
        return white_balance_kernel(tile, background=values)


def white_balance(
    rgb: da.Array,
    background: Sequence[float] | da.Array | None = None,
    *,
    percentile: float = 99.0,
    floor: float | None = None,
) -> da.Array:
    """Lazy colour image relative to the glass: each channel scaled so that the glass is white.

    ``round(full * (I_c + 1) / (bg_c + 1))`` per channel (:func:`slidemask.kernels.density.
    white_balance_kernel`), the transmittance of :func:`optical_density` on the image's own
    scale. A scanner's per-channel gains cancel, so colour rules tuned on neutral scans hold
    on slides from any scanner (``configs/qc.yaml`` finds pen ink on the balanced image: with
    red 10 % up and blue 10 % down, eosin reads as red ink without it).

    Parameters
    ----------
    rgb
        ``(rows, cols, 3)`` RGB or ``(rows, cols, 4)`` RGBA (alpha dropped), uint8 or uint16.
    background
        The glass colour, as for :func:`optical_density`: numbers, a ``(3,)`` dask array, or
        None to estimate it over the whole image with ``percentile`` and ``floor``.
    percentile, floor
        Of the estimate when ``background`` is None.

    Returns
    -------
    dask.array.Array
        ``(rows, cols, 3)`` of ``rgb``'s dtype, same row/column chunks. Pointwise once the
        glass is known: exact for any chunking.

    Examples
    --------
    >>> import numpy as np
    >>> import dask.array as da
    >>> rgb = np.array([[[250, 239, 215], [125, 119, 107]]], np.uint8)  # warm glass; grey
    >>> white_balance(da.from_array(rgb), background=(250, 239, 215)).compute()
    array([[[255, 255, 255],
            [128, 128, 128]]], dtype=uint8)
    """
    rgb = _colour(rgb, "white_balance")
    return _by_glass(rgb, background, percentile, floor, "white_balance",
                     white_balance_kernel, {}, _Balance(), rgb.dtype, False)


def _by_glass(
    rgb: da.Array,
    background: Sequence[float] | da.Array | None,
    percentile: float,
    floor: float | None,
    what: str,
    kernel: Any,
    kwargs: dict[str, Any],
    apply: Any,
    dtype: np.dtype,
    plane: bool,
) -> da.Array:
    """``kernel`` of each pixel of ``rgb`` and the glass colour: pointwise (fused with
    decoding) when the glass is given, else by the lazy estimate (read from the stored copy
    when the estimate stored ``rgb`` while it counted). ``plane``: one output value per
    pixel, else three channels."""
    if background is None:
        background = background_estimate(rgb, percentile=percentile, floor=floor)
    else:
        _check_options(percentile, floor)
    if not isinstance(background, da.Array):
        from slidemask.ops.local import _pointwise

        values = check_background(background, what)
        if not plane and rgb.shape[2] != 3:
            rgb = rgb[..., :3]
        return _pointwise(rgb, kernel, {"background": values, **kwargs}, dtype=dtype,
                          plane=plane)
    if background.shape != (3,) or background.dtype.kind not in "uif":
        raise MaskError(
            f"{what}: a lazy background must be a (3,) real dask array (R, G, B), got "
            f"shape {background.shape} dtype {background.dtype}"
        )
    tail = () if plane else (3,)
    stored = getattr(background, STORED_ATTR, None)
    if stored is not None and stored[0] == rgb.name:
        from slidemask.ops.scratch import stored_reads

        _, grid, folder, gate = stored
        return stored_reads(folder, grid, rgb, gate=gate, apply=apply, dtype=dtype,
                            label=what.replace("_", "-"), tail=tail, pointwise=True)
    out_index = "ij" if plane else "ijc"
    return da.blockwise(
        apply, out_index, rgb, "ijk", rechunk(background, -1), "b",
        concatenate=True, dtype=dtype,
        new_axes={} if plane else {"c": 3},
        meta=np.empty((0,) * len(out_index), dtype),
    )
