"""Per-slide mask summary (area, fraction, components, resolution) and QC warnings.

:func:`mask_summary` builds the summary lazily: the pixel count (the only heavy part) and the
values derived from it are ``Delayed`` values, so the caller computes them in the same pass as
the mask write, e.g. ``path, summary = dask.compute(write_task, summary)``, and every mask
chunk is computed once for both. Then :func:`qc_warnings` and :func:`summary_record` work on
the computed dict.

Why ``Delayed`` built by :func:`shared_delayed`: with dask >= 2025, turning a dask array into
a ``Delayed`` (``dask.delayed(f)(array)``, ``da.store(..., compute=False)``) optimizes the
array graph on the spot, fusing and renaming the mask's tasks; two such results computed in
one ``dask.compute`` call then share nothing and the mask is computed twice (measured: 32
chunk computations instead of 16 for a write plus a summary). :func:`shared_delayed` keeps the
collection's own task keys, so results built from the same mask share its tasks.
"""

from __future__ import annotations

import json
import numbers
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import dask
import dask.array as da
import numpy as np
from dask.base import tokenize
from dask.delayed import Delayed
from dask.highlevelgraph import HighLevelGraph

from slidemask.errors import MaskError
from slidemask.writers.atomic import atomic_write, jsonable

__all__ = [
    "FULL_FRACTION",
    "class_areas",
    "mask_summary",
    "qc_warnings",
    "summary_record",
    "shared_delayed",
    "write_summary_json",
]

FULL_FRACTION = 0.95
"""A mask covering more than this fraction of the slide is flagged (background taken as tissue)."""


def shared_delayed(collection: Any) -> Any:
    """A ``Delayed`` of a dask collection's value whose graph keeps the collection's task keys.

    Computing several results made this way in one ``dask.compute`` call computes their
    common tasks (the mask) once. The price: the collection's graph is not fused (a few
    more, smaller tasks).

    Parameters
    ----------
    collection : object
        A dask collection (e.g. a lazy sum of a mask); anything else is returned unchanged,
        as are ``Delayed`` objects.

    Returns
    -------
    dask.delayed.Delayed or object
        The collection's computed value, lazily; or ``collection`` itself.

    Examples
    --------
    >>> import dask.array as da
    >>> total = shared_delayed(da.ones((4, 4), chunks=2).sum())
    >>> type(total).__name__, float(total.compute())
    ('Delayed', 16.0)
    >>> shared_delayed(3)
    3
    """
    if not dask.is_dask_collection(collection) or isinstance(collection, Delayed):
        return collection
    name = f"slidemask-shared-{tokenize(collection)}"
    finalize, extra = collection.__dask_postcompute__()
    layer: dict[Any, Any] = {name: (finalize, collection.__dask_keys__(), *extra)}
    graph = HighLevelGraph.from_collections(name, layer, dependencies=[collection])
    return Delayed(name, graph)


def mask_summary(
    mask: da.Array,
    *,
    mpp: float | None,
    downsample: float,
    threshold: float | None = None,
    level: int,
    components: int | None = None,
) -> dict[str, Any]:
    """The summary of one mask, lazily.

    Parameters
    ----------
    mask : dask.array.Array or numpy.ndarray
        ``(rows, cols)`` bool or integer mask (non-zero = tissue).
    mpp : float or None
        Micrometres per *mask* pixel (the effective mpp the mask was computed at,
        ``Resolution.mpp``), or None when the slide does not state its pixel size.
    downsample : float
        Level-0 pixels per mask pixel (``Resolution.downsample``), recorded.
    threshold : float, optional
        The threshold used (may be lazy, e.g. Otsu's; pass dask arrays through
        :func:`shared_delayed` to share tasks with a write), recorded.
    level : int
        The pyramid level the mask was computed from, recorded.
    components : int, optional
        Number of connected components (may be lazy, as ``threshold``), recorded.

    Returns
    -------
    dict
        Keys ``tissue_pixels`` (lazy int), ``total_pixels``, ``tissue_fraction`` (lazy
        float, 0-1), ``tissue_area_mm2`` (lazy float, ``pixels * mpp**2 / 1e6``; None without
        mpp), ``components``, ``threshold``, ``level``, ``mpp``, ``downsample``, ``shape``
        (rows, cols of the mask). Nothing is computed; ``dask.compute(summary)`` computes it,
        in the same pass as a write of the same mask.

    Raises
    ------
    MaskError
        Not a 2-D mask, or a bad ``mpp``.

    Examples
    --------
    >>> import dask
    >>> import dask.array as da
    >>> import numpy as np
    >>> mask = np.zeros((100, 100), dtype=bool)
    >>> mask[:50, :40] = True
    >>> summary = mask_summary(da.from_array(mask, chunks=50), mpp=8.0, downsample=16.0, level=2)
    >>> (summary,) = dask.compute(summary)
    >>> summary["tissue_pixels"], summary["tissue_fraction"], summary["tissue_area_mm2"]
    (2000, 0.2, 0.128)
    """
    if isinstance(mask, np.ndarray):
        mask = da.from_array(mask)
    if not isinstance(mask, da.Array) or mask.ndim != 2:
        raise MaskError(
            f"mask_summary expects a 2-D (rows, cols) mask, got {type(mask).__name__} "
            f"with shape {getattr(mask, 'shape', None)}"
        )
    if mpp is not None and (
        isinstance(mpp, bool) or not isinstance(mpp, numbers.Real) or not mpp > 0
    ):
        raise MaskError(f"mask_summary: mpp must be a positive number or None, got {mpp!r}")
    inside = mask if mask.dtype == np.bool_ else mask != 0
    # see the module docstring: shared keys let a write and this count share the mask's tasks
    pixels = dask.delayed(int, pure=True)(shared_delayed(inside.sum(dtype=np.int64)))
    total = int(mask.shape[0]) * int(mask.shape[1])
    return {
        "tissue_pixels": pixels,
        "total_pixels": total,
        "tissue_fraction": dask.delayed(_ratio, pure=True)(pixels, total),
        "tissue_area_mm2": None if mpp is None else dask.delayed(_area_mm2, pure=True)(
            pixels, float(mpp)
        ),
        "components": shared_delayed(components),
        "threshold": shared_delayed(threshold),
        "level": level,
        "mpp": None if mpp is None else float(mpp),
        "downsample": float(downsample),
        "shape": [int(mask.shape[0]), int(mask.shape[1])],
    }


def _ratio(pixels: int, total: int) -> float:
    return pixels / total if total else 0.0


def _area_mm2(pixels: int, mpp: float) -> float:
    return pixels * mpp * mpp / 1e6  # µm² per pixel -> mm²


def _require_computed(summary: dict[str, Any], where: str) -> None:
    lazy = [key for key, value in summary.items() if dask.is_dask_collection(value)]
    if lazy:
        raise MaskError(
            f"{where}: the summary is not computed yet ({', '.join(lazy)} lazy); "
            "compute it first, e.g. (summary,) = dask.compute(summary)"
        )


def class_areas(
    counts: np.ndarray,
    values: Mapping[str, int],
    mpp: float | None,
    *,
    tissue_known: bool = True,
) -> dict[str, dict[str, Any]]:
    """Area and share of tissue of each class of a class map, for the summary JSON.

    Parameters
    ----------
    counts : numpy.ndarray
        ``(2, 256)`` pixel counts per label value (:func:`slidemask.ops.artifacts.class_counts`):
        row 0 outside the tissue, row 1 inside it.
    values : mapping of str to int
        Class name -> label value.
    mpp : float or None
        Micrometres per class-map pixel (areas are None when unknown).
    tissue_known : bool
        Whether row 1 holds a tissue mask (else ``fraction_of_tissue`` is None).

    Returns
    -------
    dict
        ``{name: {"pixels", "area_mm2", "fraction_of_tissue"}}`` by label value, background
        first:
        ``fraction_of_tissue`` is the share of the tissue mask's pixels that took the class,
        so for an artifact class the share of tissue it costs, and for ``tissue`` the share
        kept.

    Examples
    --------
    >>> counts = np.zeros((2, 256), dtype=np.int64)
    >>> counts[0, 0], counts[1, 1], counts[1, 2], counts[0, 2] = 60, 30, 10, 5
    >>> areas = class_areas(counts, {"tissue": 1, "pen": 2}, mpp=100.0)
    >>> areas["pen"]
    {'pixels': 15, 'area_mm2': 0.15, 'fraction_of_tissue': 0.25}
    """
    counts = np.asarray(counts, dtype=np.int64).reshape(2, -1)
    tissue_total = int(counts[1].sum())
    out: dict[str, dict[str, Any]] = {}
    for name, value in [("background", 0), *sorted(values.items(), key=lambda kv: kv[1])]:
        pixels = int(counts[:, value].sum())
        inside = int(counts[1, value])
        out[name] = {
            "pixels": pixels,
            "area_mm2": None if mpp is None else pixels * float(mpp) ** 2 / 1e6,
            "fraction_of_tissue": (
                inside / tissue_total if tissue_known and tissue_total else None
            ),
        }
    return out


def qc_warnings(summary: dict[str, Any]) -> list[str]:
    """Quality warnings for a computed summary: an empty mask, or one covering > 95 %.

    Parameters
    ----------
    summary : dict
        A computed :func:`mask_summary` (or the pipeline's summary with the same keys).

    Returns
    -------
    list of str
        One sentence per problem, naming the level, µm per pixel and threshold; empty when
        the mask looks plausible.

    Raises
    ------
    MaskError
        The summary is still lazy.

    Examples
    --------
    >>> summary = {"tissue_pixels": 0, "tissue_fraction": 0.0, "level": 2, "mpp": 8.0,
    ...            "threshold": 220}
    >>> (warning,) = qc_warnings(summary)
    >>> warning.split(";")[0]
    'empty mask: no tissue found (level 2, 8 µm/pixel, threshold 220)'
    >>> qc_warnings({**summary, "tissue_pixels": 2000, "tissue_fraction": 0.2})
    []
    """
    _require_computed(summary, "qc_warnings")
    where = f"level {summary.get('level')}"
    if summary.get("mpp") is not None:
        where += f", {summary['mpp']:.4g} µm/pixel"
    threshold = summary.get("threshold")
    if threshold is None:
        tried = ""
    elif isinstance(threshold, int | float | np.number) and not isinstance(threshold, bool):
        tried = f", threshold {float(threshold):.4g}"
    else:
        tried = f", threshold {threshold}"
    warnings = []
    pixels = int(summary["tissue_pixels"])
    fraction = float(summary["tissue_fraction"])
    if pixels == 0:
        warnings.append(
            f"empty mask: no tissue found ({where}{tried}); check the threshold, the "
            "exclusions and that the slide holds tissue"
        )
    elif fraction > FULL_FRACTION:
        warnings.append(
            f"mask covers {fraction:.1%} of the slide (more than {FULL_FRACTION:.0%}; "
            f"{where}{tried}): the background was probably taken as tissue; check the "
            "threshold and exclude scan borders"
        )
    return warnings


def summary_record(summary: dict[str, Any]) -> dict[str, Any]:
    """A computed summary as plain JSON types, with ``warnings`` (see :func:`qc_warnings`).

    Parameters
    ----------
    summary : dict
        A computed :func:`mask_summary`.

    Returns
    -------
    dict
        JSON types only (:func:`slidemask.writers.atomic.jsonable`), plus ``warnings``.

    Raises
    ------
    MaskError
        The summary is still lazy.

    Examples
    --------
    >>> summary = {"tissue_pixels": 2000, "tissue_fraction": 0.2, "level": 2, "mpp": 8.0}
    >>> summary_record(summary)
    {'tissue_pixels': 2000, 'tissue_fraction': 0.2, 'level': 2, 'mpp': 8.0, 'warnings': []}
    """
    _require_computed(summary, "summary_record")
    record: dict[str, Any] = jsonable(summary, "summary")
    record["warnings"] = qc_warnings(summary)
    return record


def write_summary_json(summary: dict[str, Any], path: str | os.PathLike[str]) -> Path:
    """Write :func:`summary_record` of a computed summary as JSON (replaced atomically).

    Parameters
    ----------
    summary : dict
        A computed :func:`mask_summary`.
    path : str or os.PathLike
        The JSON file (``<slide name>.json``); its folder is created.

    Returns
    -------
    pathlib.Path
        ``path``.

    Examples
    --------
    >>> import json
    >>> import os
    >>> import tempfile
    >>> tmp = tempfile.TemporaryDirectory()
    >>> summary = {"tissue_pixels": 2000, "tissue_fraction": 0.2, "level": 2, "mpp": 8.0}
    >>> path = write_summary_json(summary, os.path.join(tmp.name, "s.json"))
    >>> with open(path) as fh:
    ...     json.load(fh)["warnings"]
    []
    >>> tmp.cleanup()
    """
    record = summary_record(summary)
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(final) as fh:
        fh.write(json.dumps(record, indent=2, allow_nan=False) + "\n")
    return final
