"""Patch coordinates: from a mask to the tiles a model reads.

:func:`tile_grid` lays a grid of square patches over a slide (sizes in level-0 pixels,
pixels at a target mpp or magnification, or micrometres; grids anchored at level-0 ``(0,
0)``) and keeps those whose exact tissue fraction, integrated from the mask, reaches
``min_fraction``. :func:`write_tiles` writes the result as CLAM / Trident h5, CSV, Parquet,
QuPath GeoJSON and a preview.

Modules: :mod:`~slidemask.tiles.grid` (geometry, numpy), :mod:`~slidemask.tiles.fractions`
(exact areas, chunk by chunk with dask), :mod:`~slidemask.tiles.table` (the table),
:mod:`~slidemask.tiles.tiling` (``tile_grid``), :mod:`~slidemask.tiles.frame` (a stored
mask's downsample and pixel size), :mod:`~slidemask.tiles.spec` (settings),
:mod:`~slidemask.tiles.writers` (files).

Names load on first use (PEP 562), as in :mod:`slidemask`: the config imports
:class:`~slidemask.tiles.spec.TileSpec` without importing dask, OpenCV or h5py.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the real imports, for type checkers and IDEs
    from slidemask.tiles.fractions import chunk_areas, tile_areas
    from slidemask.tiles.frame import MaskFrame, open_mask
    from slidemask.tiles.grid import TileGrid, TileGridError, make_grid
    from slidemask.tiles.spec import FORMATS, TileSpec
    from slidemask.tiles.table import TileTable
    from slidemask.tiles.tiling import EmptyTilesWarning, select_tiles, tile_grid
    from slidemask.tiles.writers import (
        TileOutputs,
        render_tiles_preview,
        tile_paths,
        tiles_complete,
        write_clam_h5,
        write_tile_table,
        write_tiles,
        write_tiles_csv,
        write_tiles_geojson,
        write_tiles_parquet,
        write_tiles_preview,
        write_trident_h5,
    )

_SOURCES: dict[str, tuple[str, ...]] = {
    "slidemask.tiles.fractions": ("chunk_areas", "tile_areas"),
    "slidemask.tiles.frame": ("MaskFrame", "open_mask"),
    "slidemask.tiles.grid": ("TileGrid", "TileGridError", "make_grid"),
    "slidemask.tiles.spec": ("FORMATS", "TileSpec"),
    "slidemask.tiles.table": ("TileTable",),
    "slidemask.tiles.tiling": ("EmptyTilesWarning", "select_tiles", "tile_grid"),
    "slidemask.tiles.writers": (
        "TileOutputs",
        "render_tiles_preview",
        "tile_paths",
        "tiles_complete",
        "write_clam_h5",
        "write_tile_table",
        "write_tiles",
        "write_tiles_csv",
        "write_tiles_geojson",
        "write_tiles_parquet",
        "write_tiles_preview",
        "write_trident_h5",
    ),
}
_LAZY: dict[str, str] = {name: module for module, names in _SOURCES.items() for name in names}

__all__ = [
    "EmptyTilesWarning",
    "FORMATS",
    "MaskFrame",
    "TileGrid",
    "TileGridError",
    "TileOutputs",
    "TileSpec",
    "TileTable",
    "chunk_areas",
    "make_grid",
    "open_mask",
    "render_tiles_preview",
    "select_tiles",
    "tile_areas",
    "tile_grid",
    "tile_paths",
    "tiles_complete",
    "write_clam_h5",
    "write_tile_table",
    "write_tiles",
    "write_tiles_csv",
    "write_tiles_geojson",
    "write_tiles_parquet",
    "write_tiles_preview",
    "write_trident_h5",
]


def __getattr__(name: str) -> Any:
    """Import a public name's submodule on first access (PEP 562) and cache the name here."""
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
