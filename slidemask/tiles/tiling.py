"""``tile_grid``: from a mask to the patches a model reads, with exact tissue fractions."""

from __future__ import annotations

import logging
import math
import os
import warnings
from collections.abc import Mapping
from typing import TYPE_CHECKING

import dask.array as da
import numpy as np

from slidemask.ops import staged
from slidemask.tiles.fractions import tile_areas
from slidemask.tiles.frame import MaskFrame, open_mask
from slidemask.tiles.grid import Edge, TileGrid, TileGridError, Units, make_grid
from slidemask.tiles.table import TileTable

if TYPE_CHECKING:
    from slidemask.io.tiff import Slide

__all__ = ["EmptyTilesWarning", "FRACTION_TOLERANCE", "select_tiles", "tile_grid"]

logger = logging.getLogger(__name__)

FRACTION_TOLERANCE = 1e-9
"""A patch is kept when ``fraction >= min_fraction - FRACTION_TOLERANCE``: a fractional
downsample gives areas exact only to float64 rounding, and a patch whose exact fraction equals
the threshold must not fall on either side by chance."""


class EmptyTilesWarning(UserWarning):
    """No patch was kept: no tissue, or none reaches ``min_fraction``, or no patch fits."""


def _check_classes(classes: Mapping[str, int] | None, mask: da.Array) -> dict[str, int]:
    if classes is None:
        return {}
    if not isinstance(classes, Mapping) or not classes:
        raise TileGridError(
            f"tile_grid: classes must be a non-empty mapping {{name: value}}, got {classes!r}"
        )
    if mask.dtype.kind not in "ui":
        raise TileGridError(
            f"tile_grid: a class map must be an integer array (uint8), got {mask.dtype}"
        )
    out: dict[str, int] = {}
    for name, value in classes.items():
        if not isinstance(name, str) or not name.isidentifier():
            raise TileGridError(f"tile_grid: class name {name!r} must be an identifier")
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or value <= 0:
            raise TileGridError(
                f"tile_grid: classes[{name!r}] must be a positive integer pixel value "
                f"(0 is background), got {value!r}"
            )
        out[name] = int(value)
    if len(set(out.values())) != len(out):
        raise TileGridError(f"tile_grid: two classes share a pixel value: {out}")
    return out


def select_tiles(
    areas: np.ndarray,
    grid: TileGrid,
    *,
    min_fraction: float = 0.5,
    classes: Mapping[str, int] | None = None,
    name: str | None = None,
    warn: bool = True,
) -> TileTable:
    """Keep the patches whose tissue fraction reaches ``min_fraction``.

    Parameters
    ----------
    areas : numpy.ndarray
        The computed result of :func:`slidemask.tiles.fractions.tile_areas`: ``(classes or
        1, rows, cols)`` level-0 pixels squared.
    grid : TileGrid
        The grid ``areas`` was measured on.
    min_fraction : float, optional
        Least fraction kept (0-1).
    classes : mapping of str to int, optional
        ``{name: value}`` of a class map, in the order of ``areas``' first axis.
    name : str, optional
        The slide's name, for messages and file metadata.
    warn : bool, optional
        Also emit :class:`EmptyTilesWarning` when nothing is kept (the reason is logged at
        WARNING on ``slidemask.tiles.tiling`` either way).

    Returns
    -------
    TileTable
        The kept patches, row-major.
    """
    classes = dict(classes or {})
    total = areas.sum(axis=0) if areas.shape[0] > 1 else areas[0]
    fraction = total / float(grid.size * grid.size)
    keep = fraction >= min_fraction - FRACTION_TOLERANCE
    rows, cols = np.nonzero(keep)
    ys, xs = grid.ys(), grid.xs()
    x, y = xs[cols], ys[rows]
    h0, w0 = grid.level0_shape
    table = TileTable(
        x=x,
        y=y,
        fraction=fraction[rows, cols],
        edge=(x + grid.size > w0) | (y + grid.size > h0),
        grid=grid,
        min_fraction=float(min_fraction),
        class_fractions={
            c: areas[k][rows, cols] / float(grid.size * grid.size)
            for k, c in enumerate(classes)
        },
        name=name,
        classes=classes,
    )
    if len(table) == 0:
        where = f"{name}: " if name else ""
        if grid.count == 0:
            why = (f"the slide ({h0} x {w0} level-0 pixels) is smaller than one patch "
                   f"({grid.size} level-0 pixels)")
        elif not fraction.any():
            why = "the mask is empty (no tissue)"
        else:
            why = (f"no patch reaches min_fraction {min_fraction:g} (the largest fraction is "
                   f"{float(fraction.max()):.4g})")
        message = f"{where}no tiles: {why}"
        logger.warning(message)
        if warn:
            warnings.warn(message, EmptyTilesWarning, stacklevel=3)
    return table


def tile_grid(
    mask: da.Array | np.ndarray | str | os.PathLike[str],
    *,
    size: float,
    units: Units = "px",
    mpp: float | None = None,
    magnification: float | None = None,
    stride: float | None = None,
    overlap: float = 0,
    min_fraction: float = 0.5,
    classes: Mapping[str, int] | None = None,
    edge: Edge = "drop",
    downsample: float | None = None,
    slide: Slide | None = None,
    slide_mpp: float | None = None,
    level0_shape: tuple[int, int] | None = None,
    name: str | None = None,
    warn: bool = True,
) -> TileTable:
    """The patches of a regular grid whose exact tissue fraction reaches ``min_fraction``.

    Patches are squares in level-0 pixels on a grid anchored at level-0 ``(0, 0)`` (see
    :mod:`slidemask.tiles.grid`); each one's tissue fraction is the exact area of the mask
    inside it (mask pixels cut by the patch's edges weighted by the area they share with it)
    divided by the patch's area.

    Parameters
    ----------
    mask : dask.array.Array, numpy.ndarray, str or os.PathLike
        The mask, in its own pixels: a 2-D dask or numpy array (``bool``, integer nonzero =
        tissue, or a uint8 class map with ``classes``), the path of a stored mask
        (``<name>.zarr``), or the result of :func:`~slidemask.read_mask`. A stored mask
        supplies ``downsample``, the slide's pixel size, level-0 shape and name from its
        provenance; explicit arguments win.
    size : float
        Patch edge in ``units``.
    units : {"px", "um"}
        ``"px"``: pixels at ``mpp`` / ``magnification`` when one is given (``size=256,
        magnification=20``: 256 pixels at 0.5 µm), else level-0 pixels. ``"um"``:
        micrometres.
    mpp, magnification : float, optional
        The resolution the model reads, µm per pixel or magnification, with the usual
        convention ``mpp = 10 / magnification`` (40x = 0.25 µm/px, 20x = 0.5, 10x = 1.0).
        It picks the read level (the coarsest level whose downsample is at most the
        target's) and, with ``units="px"``, the size of a pixel.
    stride, overlap : float, optional
        Distance between patch origins, or overlap of neighbours, in ``units``; at most one
        (default: ``stride = size``, no overlap). Fractional strides in level-0 pixels are
        allowed: each origin is rounded on its own, so µm grids land on the same physical
        positions at any pixel size.
    min_fraction : float, optional
        Keep patches whose tissue fraction is at least this (0-1; 0 keeps every patch).
    classes : mapping of str to int, optional
        ``{name: pixel value}`` for a class map: the table gets ``fraction_<name>`` per
        class, and ``fraction`` is their sum (the pixels of any listed class).
    edge : {"drop", "flag"}
        ``"drop"``: only patches wholly inside the slide; ``"flag"``: also patches that
        start inside and run past its right or bottom edge, with ``edge=True``. Their
        fraction is over the whole patch (outside the slide is background).
    downsample : float, optional
        Level-0 pixels per mask pixel (default: the stored mask's provenance, else the
        slide's level-0 width over the mask's, else 1).
    slide : Slide, optional
        The slide (from :func:`~slidemask.open_slide`): level-0 pixel size, shape, pyramid
        downsamples (for the read level) and name.
    slide_mpp : float, optional
        Micrometres per level-0 pixel when neither the slide nor the provenance says.
    level0_shape : tuple of int, optional
        ``(rows, cols)`` of level 0 (default: slide, provenance, else the mask's extent).
    name : str, optional
        The slide's name for file metadata (default: slide or provenance).
    warn : bool, optional
        Emit :class:`EmptyTilesWarning` when no patch is kept (the reason is logged at
        WARNING either way; runners that report the count pass False).

    Returns
    -------
    TileTable
        Kept patches, row-major; columns ``x, y, width, height`` (level-0 pixels),
        ``level, downsample`` (the read level), ``fraction``, ``edge`` and
        ``fraction_<class>``. Empty, with an :class:`EmptyTilesWarning`, when nothing is
        kept.

    Raises
    ------
    TileGridError
        Invalid arguments, or a size in µm / at a magnification when the slide's pixel
        size is unknown.

    Notes
    -----
    This function computes (with the current dask scheduler): it reads the mask once,
    chunk by chunk. Memory: one mask chunk per worker thread plus 8 bytes per candidate
    patch and class, plus the table (about 25 bytes per kept patch). Use
    :func:`slidemask.tiles.fractions.tile_areas` for the lazy areas.

    Examples
    --------
    A disc of tissue in a mask at 4 µm per pixel (downsample 16 on a 0.25 µm slide), cut
    into 128 µm patches:

    >>> import numpy as np
    >>> from slidemask.tiles import tile_grid
    >>> yy, xx = np.mgrid[:300, :300]
    >>> disc = (yy - 150) ** 2 + (xx - 150) ** 2 < 100**2
    >>> table = tile_grid(disc, size=128, units="um", downsample=16, slide_mpp=0.25)
    >>> len(table), table.width, int(table.x[0]), int(table.y[0])
    (30, 512, 1536, 1024)
    >>> round(float(table.fraction.min()), 4)
    0.5713
    """
    frame = MaskFrame()
    if isinstance(mask, str | os.PathLike) or isinstance(mask, da.Array):
        mask, frame = open_mask(mask)
    elif isinstance(mask, np.ndarray):
        mask = da.from_array(mask, chunks=2048)
    else:
        raise TileGridError(
            f"tile_grid: mask must be a dask/numpy array or a path, got {type(mask).__name__}"
        )
    assert isinstance(mask, da.Array)
    if mask.ndim != 2:
        raise TileGridError(f"tile_grid: expects a 2-D mask (rows, cols), got {mask.shape}")
    if mask.dtype != np.bool_ and mask.dtype.kind not in "ui":
        raise TileGridError(f"tile_grid: expects a bool or integer mask, got {mask.dtype}")
    values = _check_classes(classes, mask)
    try:
        min_frac = float(min_fraction)
    except (TypeError, ValueError):
        min_frac = math.nan
    if not 0.0 <= min_frac <= 1.0:
        raise TileGridError(f"tile_grid: min_fraction must be in [0, 1], got {min_fraction!r}")

    if downsample is None:
        downsample = frame.downsample
    if downsample is None and slide is not None and mask.shape[1]:
        downsample = int(slide.levels[0].shape[1]) / mask.shape[1]
    ds = float(downsample) if downsample is not None else 1.0
    if not (math.isfinite(ds) and ds > 0):
        raise TileGridError(f"tile_grid: downsample must be a positive number, got {downsample!r}")
    if level0_shape is None:
        if slide is not None:
            level0_shape = (int(slide.levels[0].shape[0]), int(slide.levels[0].shape[1]))
        elif frame.level0_shape is not None:
            level0_shape = frame.level0_shape
        else:
            level0_shape = (math.floor(mask.shape[0] * ds + 0.5),
                            math.floor(mask.shape[1] * ds + 0.5))
    if slide_mpp is None:
        slide_mpp = slide.mpp if slide is not None and slide.mpp else frame.level0_mpp
    if name is None:
        name = slide.name if slide is not None else frame.name
    grid = make_grid(
        size=size, level0_shape=level0_shape, units=units, mpp=mpp,
        magnification=magnification, stride=stride, overlap=overlap, edge=edge,
        level0_mpp=slide_mpp,
        level_downsamples=slide.downsamples if slide is not None else (1.0,),
        level_shapes=(
            [(int(lv.shape[0]), int(lv.shape[1])) for lv in slide.levels]
            if slide is not None else None
        ),
    )
    (areas,) = staged.compute(
        tile_areas(mask, grid, downsample=ds, values=list(values.values()) if values else None)
    )
    return select_tiles(areas, grid, min_fraction=min_frac, classes=values, name=name,
                        warn=warn)
