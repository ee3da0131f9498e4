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
"""

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

__all__ = [
    "FORMATS",
    "EmptyTilesWarning",
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
