"""Where a stored mask sits on its slide: downsample, pixel size, level-0 shape, name.

A mask written by the pipeline carries ``provenance`` attributes (see
:mod:`slidemask.writers.zarr`): ``downsample`` (level-0 pixels per mask pixel), ``mpp`` (µm
per mask pixel) and ``source`` (``name``, ``level0_shape``, ``mpp`` of level 0).
:func:`open_mask` reads them for :func:`slidemask.tiles.tile_grid`, from a path or from the
dask array :func:`slidemask.read_mask` returned.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dask.array as da

from slidemask.writers.zarr import StoredArray, read_attrs, read_mask

__all__ = ["MaskFrame", "frame_from_attrs", "open_mask", "stored_path"]


@dataclass(frozen=True)
class MaskFrame:
    """How a mask's pixels map onto its slide (None where unknown).

    Parameters
    ----------
    downsample : float or None
        Level-0 pixels per mask pixel.
    level0_mpp : float or None
        Micrometres per level-0 pixel.
    level0_shape : tuple of int or None
        ``(rows, cols)`` of the slide's level 0, pixels.
    name : str or None
        The slide's name (outputs are named after it).
    slide_path : str or None
        The slide the mask was computed from.
    """

    downsample: float | None = None
    level0_mpp: float | None = None
    level0_shape: tuple[int, int] | None = None
    name: str | None = None
    slide_path: str | None = None


def _number(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if number > 0 and number != float("inf") else None


def frame_from_attrs(attrs: dict[str, Any]) -> MaskFrame:
    """Read a mask's frame from its stored attributes.

    Parameters
    ----------
    attrs : dict
        The attributes of a stored mask (:func:`slidemask.writers.zarr.read_attrs`).

    Returns
    -------
    MaskFrame
        What ``attrs["provenance"]`` records (empty when there is none).
    """
    prov = attrs.get("provenance") if isinstance(attrs, dict) else None
    if not isinstance(prov, dict):
        return MaskFrame()
    source_attr = prov.get("source")
    source: dict[str, Any] = source_attr if isinstance(source_attr, dict) else {}
    downsample = _number(prov.get("downsample"))
    level0_mpp = _number(source.get("mpp"))
    mask_mpp = _number(prov.get("mpp"))
    if level0_mpp is None and mask_mpp is not None and downsample is not None:
        level0_mpp = mask_mpp / downsample
    shape = source.get("level0_shape")
    level0_shape = None
    if isinstance(shape, list | tuple) and len(shape) >= 2:
        try:
            level0_shape = (int(shape[0]), int(shape[1]))
        except (TypeError, ValueError):
            level0_shape = None
    name = source.get("name")
    path = source.get("path")
    return MaskFrame(
        downsample=downsample,
        level0_mpp=level0_mpp,
        level0_shape=level0_shape,
        name=name if isinstance(name, str) else None,
        slide_path=path if isinstance(path, str) else None,
    )


def stored_path(mask: da.Array) -> Path | None:
    """Find the stored output behind a dask array that ``read_mask`` returned.

    Parameters
    ----------
    mask : dask.array.Array
        Any dask array.

    Returns
    -------
    pathlib.Path or None
        The output directory when ``mask`` is :func:`~slidemask.read_mask`'s result as it
        was returned (not sliced or computed on), else None.
    """
    layer = mask.dask.layers.get(f"original-{mask.name}") if mask.name else None
    if layer is None:
        return None
    for value in layer.values():
        value = getattr(value, "value", value)  # dask may wrap it in a data node
        if isinstance(value, StoredArray):
            return Path(value.path)
    return None


def open_mask(source: str | os.PathLike[str] | da.Array) -> tuple[da.Array, MaskFrame]:
    """Open a mask with its :class:`MaskFrame`.

    Parameters
    ----------
    source : str, os.PathLike or dask.array.Array
        The path of a complete mask output (``<name>.zarr``), a dask array from
        :func:`~slidemask.read_mask` (its frame is read from the same output), or any other
        dask array (an empty frame: pass ``downsample`` and friends yourself).

    Returns
    -------
    tuple of (dask.array.Array, MaskFrame)
        The lazy mask and its frame.
    """
    if isinstance(source, da.Array):
        path = stored_path(source)
        if path is None:
            return source, MaskFrame()
        return source, _with_name(frame_from_attrs(read_attrs(path)), path)
    path = Path(source)
    return read_mask(path), _with_name(frame_from_attrs(read_attrs(path)), path)


def _with_name(frame: MaskFrame, path: Path) -> MaskFrame:
    if frame.name is not None:
        return frame
    name = path.name[:-5] if path.name.endswith(".zarr") else path.name
    return MaskFrame(frame.downsample, frame.level0_mpp, frame.level0_shape, name,
                     frame.slide_path)
