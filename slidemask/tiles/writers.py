"""Tile outputs: CLAM and Trident h5, CSV, Parquet, QuPath GeoJSON tiles, a PNG preview.

Every file is written under a hidden temporary name beside it (``.<name>.partial-<hex>``,
as :mod:`slidemask.writers.atomic` names them) and moved into place with ``os.replace`` when
complete. :func:`write_tiles` writes the formats a :class:`~slidemask.tiles.spec.TileSpec`
lists, then the manifest ``<stem>.tiles.json`` last, so a complete manifest means complete
tiles (:func:`tiles_complete`: what a resumed batch checks).

Files for ``out_stem = DIR/<name>`` (``<name>``: the slide's name):

============  =========================================================================
``clam``      ``DIR/<name>.tiles.h5``: CLAM ``create_patches_fp.py`` layout (below)
``trident``   ``DIR/<mag>x_<size>px_<overlap>px_overlap/patches/<name>_patches.h5``
``csv``       ``DIR/<name>.tiles.csv``: the table's columns, one row per patch
``parquet``   ``DIR/<name>.tiles.parquet``: the same, zstd; metadata under ``slidemask``
``geojson``   ``DIR/<name>.tiles.geojson``: QuPath tile objects, classified
``preview``   ``DIR/<name>.tiles.png``: thumbnail with the mask outline and the kept tiles
============  =========================================================================

CLAM h5 (what ``wsi_core/WholeSlideImage.py`` ``process_contour`` + ``save_hdf5`` write and
``dataset_modules/dataset_h5.py`` ``Whole_Slide_Bag_FP`` reads): one dataset ``coords``,
int64 ``(N, 2)`` level-0 top-left ``(x, y)``, ``maxshape (None, 2)``, with attributes
``patch_size`` (int64: patch edge in pixels of ``patch_level``), ``patch_level`` (int64),
``downsample`` (float64 ``(2,)``: that level's downsample per axis),
``downsampled_level_dim`` and ``level_dim`` (int64 ``(2,)``: that level's ``(width,
height)``), ``name`` (str) and ``save_path`` (str: the directory). Nothing else sits on
``coords``; slidemask's own description (grid, threshold, fractions' source) is a JSON
string attribute ``slidemask`` on the file's root, which CLAM never reads.

Trident h5 (``trident/IO.py`` ``coords_to_h5``): dataset ``coords`` as above, attributes
``patch_size`` (target pixels), ``patch_size_level0``, ``level0_magnification``,
``target_magnification``, ``overlap`` (target pixels), ``name``, ``savetodir``,
``level0_width``, ``level0_height``. Magnifications are ``10 / mpp``.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import math
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import cv2
import dask.array as da
import numpy as np

from slidemask.ops import staged
from slidemask.tiles.frame import open_mask
from slidemask.tiles.spec import FORMATS, TileSpec
from slidemask.tiles.table import TileTable
from slidemask.tiles.tiling import tile_grid
from slidemask.writers.atomic import package_version, partial_outputs, partial_path, remove

if TYPE_CHECKING:
    from slidemask.io.tiff import Slide

__all__ = [
    "TileOutputs",
    "render_tiles_preview",
    "tile_paths",
    "tiles_complete",
    "MANIFEST_SUFFIX",
    "trident_dir_name",
    "write_clam_h5",
    "write_tile_table",
    "write_tiles",
    "write_tiles_csv",
    "write_tiles_geojson",
    "write_tiles_parquet",
    "write_tiles_preview",
    "write_trident_h5",
]

logger = logging.getLogger(__name__)

TILE_RGB = (30, 144, 255)
"""Kept tiles in the preview: blue, apart from the mask's green outline."""
EDGE_RGB = (255, 140, 0)
"""Edge-flagged tiles in the preview: orange."""
CLASS_COLORS = [(0, 200, 0), (200, 0, 0), (0, 0, 200), (200, 200, 0), (200, 0, 200),
                (0, 200, 200), (128, 64, 0), (255, 128, 128)]

_H5_CHUNK_ROWS = 4096  # CLAM writes one row per HDF5 chunk: 10^6 chunks for 10^6 patches


def _atomic(final: str | os.PathLike[str], write: Callable[[Path], object]) -> Path:
    """Run ``write(partial)`` on a hidden sibling of ``final``, then move it into place."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    partial = partial_path(final)
    try:
        write(partial)
        os.replace(partial, final)
    except BaseException:
        remove(partial)
        raise
    return final


def _number(value: float) -> int | float:
    """An integer when ``value`` is one (to 1e-6), else the float (for h5 attributes)."""
    rounded = round(value)
    return int(rounded) if abs(value - rounded) < 1e-6 else float(value)


def _coords_dataset(h5: Any, table: TileTable) -> Any:
    coords = table.coords()
    chunk_rows = max(1, min(len(table), _H5_CHUNK_ROWS))
    dset = h5.create_dataset(
        "coords", shape=coords.shape, maxshape=(None, 2), chunks=(chunk_rows, 2), dtype=np.int64
    )
    if len(coords):
        dset[:] = coords
    return dset


def _root_metadata(table: TileTable) -> str:
    return json.dumps({"version": package_version(), **table.metadata()})


def write_clam_h5(table: TileTable, path: str | os.PathLike[str]) -> Path:
    """Write CLAM's patch file (see the module docstring for the exact layout).

    ``patch_size`` is the patch edge in pixels of the read level (``table.level``), so
    ``wsi.read_region(coord, patch_level, (patch_size, patch_size))`` reads each patch.

    Parameters
    ----------
    table : TileTable
        The tiles (:func:`slidemask.tiles.tile_grid`).
    path : str or os.PathLike
        The ``.h5`` file (replaced atomically).

    Returns
    -------
    pathlib.Path
        ``path``.
    """
    import h5py

    grid = table.grid
    assert grid.level_shape is not None
    rows, cols = grid.level_shape
    final = Path(path)

    def write(partial: Path) -> None:
        with h5py.File(partial, "w") as h5:
            dset = _coords_dataset(h5, table)
            dset.attrs["patch_size"] = np.int64(grid.read_size)
            dset.attrs["patch_level"] = np.int64(grid.level)
            dset.attrs["downsample"] = np.array([grid.level_downsample] * 2, np.float64)
            dset.attrs["downsampled_level_dim"] = np.array([cols, rows], np.int64)
            dset.attrs["level_dim"] = np.array([cols, rows], np.int64)
            dset.attrs["name"] = table.name or final.name.split(".")[0]
            dset.attrs["save_path"] = str(final.parent)
            h5.attrs["slidemask"] = _root_metadata(table)

    return _atomic(final, write)


def trident_dir_name(table: TileTable) -> str:
    """Name Trident's coordinates folder for a table.

    Parameters
    ----------
    table : TileTable
        The tiles (:func:`slidemask.tiles.tile_grid`).

    Returns
    -------
    str
        ``<mag>x_<size>px_<overlap>px_overlap`` (e.g. ``20x_256px_0px_overlap``): target
        magnification (``10 / mpp``, printed with ``%g``), patch edge and overlap in target
        pixels.

    Raises
    ------
    ValueError
        The slide's pixel size is unknown, so there is no magnification.
    """
    mag = table.grid.magnification
    if mag is None:
        raise ValueError(
            "the Trident layout names a magnification, but the slide's pixel size is unknown"
        )
    mag_text = f"{float(_number(mag)):g}"
    return f"{mag_text}x_{table.grid.target_size}px_{table.grid.target_overlap}px_overlap"


def write_trident_h5(table: TileTable, job_dir: str | os.PathLike[str]) -> Path:
    """Write Trident's patch file, as its ``coords_to_h5`` does (see the module docstring).

    Parameters
    ----------
    table : TileTable
        The tiles (:func:`slidemask.tiles.tile_grid`).
    job_dir : str or os.PathLike
        Trident's job folder.

    Returns
    -------
    pathlib.Path
        ``job_dir/<mag>x_<size>px_<overlap>px_overlap/patches/<name>_patches.h5``.
    """
    import h5py

    grid = table.grid
    save_coords = Path(job_dir) / trident_dir_name(table)
    name = table.name or "slide"
    final = save_coords / "patches" / f"{name}_patches.h5"
    level0_mag, target_mag = grid.level0_magnification, grid.magnification
    assert level0_mag is not None and target_mag is not None  # trident_dir_name checked

    def write(partial: Path) -> None:
        with h5py.File(partial, "w") as h5:
            dset = _coords_dataset(h5, table)
            attrs: dict[str, Any] = {
                "patch_size": grid.target_size,
                "patch_size_level0": grid.size,
                "level0_magnification": _number(level0_mag),
                "target_magnification": _number(target_mag),
                "overlap": grid.target_overlap,
                "name": name,
                "savetodir": str(save_coords),
                "level0_width": grid.level0_shape[1],
                "level0_height": grid.level0_shape[0],
            }
            for key, value in attrs.items():
                dset.attrs[key] = value
            h5.attrs["slidemask"] = _root_metadata(table)

    return _atomic(final, write)


def write_tiles_csv(table: TileTable, path: str | os.PathLike[str]) -> Path:
    """Write the table as CSV.

    A header row of the column names, then one row per patch (``edge`` as
    ``true``/``false``; floats with full precision).

    Parameters
    ----------
    table : TileTable
        The tiles (:func:`slidemask.tiles.tile_grid`).
    path : str or os.PathLike
        The ``.csv`` file (replaced atomically).

    Returns
    -------
    pathlib.Path
        ``path``.
    """
    import pyarrow.csv as pcsv

    arrow = table.to_arrow()
    options = pcsv.WriteOptions(include_header=False, quoting_style="none")

    def write(partial: Path) -> None:
        with partial.open("wb") as out:
            out.write((",".join(table.column_names) + "\n").encode())
            pcsv.write_csv(arrow, out, write_options=options)

    return _atomic(path, write)


def write_tiles_parquet(table: TileTable, path: str | os.PathLike[str]) -> Path:
    """Write the table as Parquet (zstd).

    :meth:`TileTable.metadata` goes under the schema metadata key ``slidemask``.

    Parameters
    ----------
    table : TileTable
        The tiles (:func:`slidemask.tiles.tile_grid`).
    path : str or os.PathLike
        The ``.parquet`` file (replaced atomically).

    Returns
    -------
    pathlib.Path
        ``path``.
    """
    import pyarrow.parquet as pq

    arrow = table.to_arrow()
    return _atomic(path, lambda p: pq.write_table(arrow, str(p), compression="zstd"))


def _class_names(table: TileTable) -> list[str]:
    return list(table.class_fractions)


def write_tiles_geojson(
    table: TileTable,
    path: str | os.PathLike[str],
    *,
    classification: str = "Tissue",
    color: Sequence[int] = (0, 200, 0),
) -> Path:
    """Write the kept patches as QuPath tile objects (a GeoJSON FeatureCollection).

    Each feature is a level-0 pixel rectangle ``[x, x + width] x [y, y + height]`` (exterior
    ring counter-clockwise in the (x, y) frame, as :mod:`slidemask.writers.geojson`), with
    properties ``objectType: "tile"``, ``classification`` (``classification`` / ``color``
    for a binary mask; the class with the largest area for a class map) and
    ``measurements`` (``fraction`` and each ``fraction_<class>``).

    Parameters
    ----------
    table : TileTable
        The tiles (:func:`slidemask.tiles.tile_grid`).
    path : str or os.PathLike
        The ``.geojson`` file (replaced atomically).
    classification : str, optional
        QuPath class of every tile of a binary mask.
    color : sequence of int, optional
        Its RGB colour, 0-255 each.

    Returns
    -------
    pathlib.Path
        ``path``.
    """
    names = _class_names(table)
    if names:
        stacked = np.stack([table.class_fractions[c] for c in names], axis=1)
        dominant = np.argmax(stacked, axis=1) if len(table) else np.zeros(0, np.intp)
        labels = [
            json.dumps({"name": c, "color": list(CLASS_COLORS[k % len(CLASS_COLORS)])})
            for k, c in enumerate(names)
        ]
    else:
        labels = [json.dumps({"name": str(classification), "color": [int(c) for c in color]})]
        dominant = np.zeros(len(table), np.intp)
    w, h = table.width, table.height
    columns = [table.fraction, *(table.class_fractions[c] for c in names)]
    keys = ["fraction", *(f"fraction_{c}" for c in names)]

    def write(partial: Path) -> None:
        with partial.open("w", encoding="utf-8") as out:
            out.write('{"type": "FeatureCollection", "features": [')
            xs, ys = table.x.tolist(), table.y.tolist()
            values = [c.tolist() for c in columns]
            for i in range(len(table)):
                x0, y0 = xs[i], ys[i]
                x1, y1 = x0 + w, y0 + h
                measurements = ", ".join(
                    f'"{k}": {v[i]!r}' for k, v in zip(keys, values, strict=True)
                )
                out.write(
                    ("\n" if i == 0 else ",\n")
                    + '{"type": "Feature", "geometry": {"type": "Polygon", "coordinates": '
                    f"[[[{x0}, {y0}], [{x1}, {y0}], [{x1}, {y1}], [{x0}, {y1}], [{x0}, {y0}]]]}}"
                    ', "properties": {"objectType": "tile", "classification": '
                    f"{labels[dominant[i]]}, \"measurements\": {{{measurements}}}}}}}"
                )
            out.write("\n]}\n")

    return _atomic(path, write)


def _mask_thumbnail(
    mask: da.Array | np.ndarray, thumb_shape: tuple[int, int], level0_shape: tuple[int, int],
    mask_downsample: float,
) -> np.ndarray:
    """The mask on the thumbnail grid (uint8 0/1), from a strided read of the mask."""
    rows, cols = thumb_shape
    level0_per_thumb = max(level0_shape[0] / rows, level0_shape[1] / cols)
    stride = max(1, int(level0_per_thumb // mask_downsample))
    small = mask[::stride, ::stride]
    small_np = np.asarray(staged.compute(small)[0]) != 0
    out = np.zeros((rows, cols), np.uint8)
    extent = (
        min(rows, max(1, round(mask.shape[0] * mask_downsample / level0_per_thumb))),
        min(cols, max(1, round(mask.shape[1] * mask_downsample / level0_per_thumb))),
    )
    if small_np.size:
        out[: extent[0], : extent[1]] = cv2.resize(
            small_np.astype(np.uint8), (extent[1], extent[0]), interpolation=cv2.INTER_NEAREST
        )
    return out


def render_tiles_preview(
    table: TileTable,
    *,
    slide: Slide | None = None,
    mask: da.Array | np.ndarray | None = None,
    mask_downsample: float = 1.0,
    max_size: int = 1024,
) -> np.ndarray:
    """The preview as RGB uint8: the thumbnail with the mask outline and the kept tiles.

    With a slide, the base is :func:`slidemask.writers.preview.render_preview` (slide
    thumbnail, mask outline in green); without one, the mask itself (tissue grey on white).
    Kept tiles are drawn in blue, edge-flagged ones in orange: as outlines where a tile
    spans at least 4 preview pixels, else as a translucent fill of their grid cells.

    Parameters
    ----------
    table : TileTable
        The tiles (:func:`slidemask.tiles.tile_grid`).
    slide : Slide, optional
        The slide, for the thumbnail.
    mask : dask.array.Array or numpy.ndarray, optional
        The mask, in its own pixels.
    mask_downsample : float, optional
        Level-0 pixels per mask pixel.
    max_size : int, optional
        The preview's longer side, pixels.

    Returns
    -------
    numpy.ndarray
        ``(rows, cols, 3)`` uint8 RGB.
    """
    h0, w0 = table.grid.level0_shape
    if slide is not None and mask is not None:
        from slidemask.writers.preview import render_preview

        canvas = render_preview(slide, mask, max_size=max_size, mask_downsample=mask_downsample)
    else:
        scale = max_size / max(h0, w0, 1)
        shape = (max(1, round(h0 * scale)), max(1, round(w0 * scale)))
        canvas = np.full((*shape, 3), 255, np.uint8)
        if mask is not None:
            small = _mask_thumbnail(mask, shape, (h0, w0), mask_downsample)
            canvas[small.astype(bool)] = (150, 150, 150)
    rows, cols = canvas.shape[:2]
    sy, sx = rows / max(h0, 1), cols / max(w0, 1)
    size_px = table.width * min(sx, sy)
    if len(table) == 0:
        return canvas
    if size_px >= 4:
        for color, chosen in ((TILE_RGB, ~table.edge), (EDGE_RGB, table.edge)):
            for x, y in zip(table.x[chosen].tolist(), table.y[chosen].tolist(), strict=True):
                p0 = (int(x * sx), int(y * sy))
                p1 = (int((x + table.width) * sx) - 1, int((y + table.height) * sy) - 1)
                cv2.rectangle(canvas, p0, p1, color, 1)
        return canvas
    overlay = canvas.copy()
    for color, chosen in ((TILE_RGB, ~table.edge), (EDGE_RGB, table.edge)):
        x0 = np.clip((table.x[chosen] * sx).astype(np.int64), 0, cols - 1)
        y0 = np.clip((table.y[chosen] * sy).astype(np.int64), 0, rows - 1)
        x1 = np.clip(np.ceil((table.x[chosen] + table.width) * sx).astype(np.int64), 1, cols)
        y1 = np.clip(np.ceil((table.y[chosen] + table.height) * sy).astype(np.int64), 1, rows)
        cover = np.zeros((rows + 1, cols + 1), np.int32)  # 2-D difference array of the cells
        np.add.at(cover, (y0, x0), 1)
        np.add.at(cover, (y0, x1), -1)
        np.add.at(cover, (y1, x0), -1)
        np.add.at(cover, (y1, x1), 1)
        inside = cover.cumsum(0).cumsum(1)[:rows, :cols] > 0
        overlay[inside] = color
    return np.asarray(cv2.addWeighted(overlay, 0.45, canvas, 0.55, 0))


def write_tiles_preview(
    table: TileTable,
    path: str | os.PathLike[str],
    *,
    slide: Slide | None = None,
    mask: da.Array | np.ndarray | None = None,
    mask_downsample: float = 1.0,
    max_size: int = 1024,
) -> Path:
    """Write :func:`render_tiles_preview` as a PNG.

    Parameters
    ----------
    table : TileTable
        The tiles (:func:`slidemask.tiles.tile_grid`).
    path : str or os.PathLike
        The ``.png`` file (replaced atomically).
    slide : Slide, optional
        The slide, for the thumbnail.
    mask : dask.array.Array or numpy.ndarray, optional
        The mask, in its own pixels.
    mask_downsample : float, optional
        Level-0 pixels per mask pixel.
    max_size : int, optional
        The preview's longer side, pixels.

    Returns
    -------
    pathlib.Path
        ``path``.
    """
    image = render_tiles_preview(
        table, slide=slide, mask=mask, mask_downsample=mask_downsample, max_size=max_size
    )
    ok, data = cv2.imencode(".png", cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    if not ok:
        raise OSError(f"{path}: OpenCV could not encode the PNG")
    return _atomic(path, lambda p: p.write_bytes(data.tobytes()))


def _stem_path(out_stem: Path, suffix: str) -> Path:
    return out_stem.parent / f"{out_stem.name}{suffix}"


_SUFFIXES = {
    "clam": ".tiles.h5", "csv": ".tiles.csv", "parquet": ".tiles.parquet",
    "geojson": ".tiles.geojson", "preview": ".tiles.png",
}
MANIFEST_SUFFIX = ".tiles.json"


def tile_paths(
    out_stem: str | os.PathLike[str], formats: Iterable[str], *, table: TileTable | None = None
) -> dict[str, Path]:
    """List the files :func:`write_tiles` writes for ``formats`` at ``out_stem``.

    Parameters
    ----------
    out_stem : str or os.PathLike
        ``DIR/<name>``.
    formats : iterable of str
        Formats from :data:`slidemask.tiles.spec.FORMATS`.
    table : TileTable, optional
        The tiles: the Trident path depends on the grid (magnification and sizes), so it is
        listed only when ``table`` is given.

    Returns
    -------
    dict of str to pathlib.Path
        ``{format: path}``.
    """
    stem = Path(out_stem)
    paths: dict[str, Path] = {}
    for fmt in formats:
        if fmt == "trident":
            if table is not None:
                name = table.name or stem.name
                paths[fmt] = stem.parent / trident_dir_name(table) / "patches" / (
                    f"{name}_patches.h5"
                )
        elif fmt in _SUFFIXES:
            paths[fmt] = _stem_path(stem, _SUFFIXES[fmt])
        else:
            raise ValueError(f"unknown tile format {fmt!r}; known: {', '.join(FORMATS)}")
    return paths


class TileOutputs(dict[str, Path]):
    """The files :func:`write_tiles` wrote: ``{format: path}``.

    ``manifest`` is the path of ``<stem>.tiles.json`` and ``count`` the number of tiles.
    """

    manifest: Path
    count: int


def write_tile_table(
    table: TileTable,
    out_stem: str | os.PathLike[str],
    formats: Sequence[str],
    *,
    slide: Slide | None = None,
    mask: da.Array | np.ndarray | None = None,
    mask_downsample: float = 1.0,
    preview_size: int = 1024,
    manifest: Mapping[str, Any] | None = None,
) -> TileOutputs:
    """Write ``table`` in ``formats`` at ``out_stem``, then the manifest (written last).

    Parameters
    ----------
    table : TileTable
        The tiles (:func:`slidemask.tiles.tile_grid`).
    out_stem : str or os.PathLike
        ``DIR/<name>``: files are ``DIR/<name>.tiles.h5`` etc.
    formats : sequence of str
        Formats from :data:`slidemask.tiles.spec.FORMATS`.
    slide : Slide, optional
        The slide, for the preview's thumbnail.
    mask : dask.array.Array or numpy.ndarray, optional
        The mask, for the preview.
    mask_downsample : float, optional
        Level-0 pixels per mask pixel.
    preview_size : int, optional
        The preview's longer side, pixels.
    manifest : mapping, optional
        Keys added to ``<stem>.tiles.json`` (e.g. the spec and its hash).

    Returns
    -------
    TileOutputs
        ``{format: path}``, with ``.manifest`` and ``.count``.
    """
    stem = Path(out_stem)
    paths = tile_paths(stem, formats, table=table)
    for final in [*paths.values(), _stem_path(stem, MANIFEST_SUFFIX)]:
        for leftover in partial_outputs(final):  # left by a killed run
            remove(leftover)
    out = TileOutputs()
    for fmt in formats:
        if fmt == "clam":
            out[fmt] = write_clam_h5(table, paths[fmt])
        elif fmt == "trident":
            out[fmt] = write_trident_h5(table, stem.parent)
        elif fmt == "csv":
            out[fmt] = write_tiles_csv(table, paths[fmt])
        elif fmt == "parquet":
            out[fmt] = write_tiles_parquet(table, paths[fmt])
        elif fmt == "geojson":
            out[fmt] = write_tiles_geojson(table, paths[fmt])
        elif fmt == "preview":
            out[fmt] = write_tiles_preview(
                table, paths[fmt], slide=slide, mask=mask, mask_downsample=mask_downsample,
                max_size=preview_size,
            )
    record = {
        **(dict(manifest) if manifest else {}),
        **table.metadata(),
        "version": package_version(),
        "outputs": {k: os.path.relpath(v, stem.parent) for k, v in out.items()},
        "completed_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "complete": True,
    }
    text = json.dumps(record, indent=1, allow_nan=False)
    out.manifest = _atomic(_stem_path(stem, MANIFEST_SUFFIX), lambda p: p.write_text(text))
    out.count = len(table)
    return out


def write_tiles(
    mask_path_or_array: str | os.PathLike[str] | da.Array | np.ndarray,
    out_stem: str | os.PathLike[str],
    *,
    slide: Slide | None = None,
    spec: TileSpec,
    downsample: float | None = None,
    extra: Mapping[str, Any] | None = None,
) -> TileOutputs:
    """Tile a mask and write every format ``spec.formats`` lists: one call for a runner.

    Parameters
    ----------
    mask_path_or_array : str, os.PathLike, dask.array.Array or numpy.ndarray
        A stored mask (``<name>.zarr``: downsample, pixel size, level-0 shape and name come
        from its provenance), a :func:`~slidemask.read_mask` result, or a 2-D array (then
        pass ``downsample`` and a ``slide``, or accept level-0 pixels).
    out_stem : str or os.PathLike
        ``DIR/<name>``: files are ``DIR/<name>.tiles.h5`` etc. (see the module docstring).
    slide : Slide, optional
        The slide: read-level choice, CLAM's level dimensions, the preview's thumbnail.
    spec : TileSpec
        The tiling settings and formats.
    downsample : float, optional
        Level-0 pixels per mask pixel, when the mask does not record it.
    extra : mapping, optional
        Keys added to the manifest (a runner's config hash, the mask's path, ...).

    Returns
    -------
    TileOutputs
        ``{format: path}``, with ``.manifest`` and ``.count``. No tiles is not an error:
        the files are written empty and the reason is logged at WARNING.

    Examples
    --------
    >>> import tempfile, numpy as np, h5py
    >>> from slidemask.tiles import TileSpec, write_tiles
    >>> out = tempfile.mkdtemp()
    >>> mask = np.zeros((100, 100), bool); mask[20:80, 10:90] = True
    >>> spec = TileSpec(size=64, formats=["clam", "csv"])
    >>> written = write_tiles(mask, f"{out}/slide", spec=spec, downsample=4.0)
    >>> sorted(written), written.count
    (['clam', 'csv'], 19)
    >>> with h5py.File(written["clam"]) as f:
    ...     print(f["coords"].shape, int(f["coords"].attrs["patch_size"]))
    (19, 2) 64
    """
    mask: Any = mask_path_or_array
    if isinstance(mask, str | os.PathLike):
        mask, frame = open_mask(mask)
    elif isinstance(mask, da.Array):
        mask, frame = open_mask(mask)
    else:
        frame = None
    if isinstance(mask, np.ndarray):
        mask = da.from_array(mask, chunks=2048)
    table = tile_grid(mask, slide=slide, downsample=downsample, warn=False, **spec.grid_args(),
                      **({} if frame is None else _frame_args(frame, slide)))
    mask_downsample = downsample or (frame.downsample if frame else None) or (
        table.grid.level0_shape[1] / mask.shape[1] if mask.shape[1] else 1.0
    )
    if not math.isfinite(mask_downsample) or mask_downsample <= 0:
        mask_downsample = 1.0
    manifest = {"spec": spec.canonical(), "spec_hash": spec.spec_hash(), **(extra or {})}
    return write_tile_table(
        table, out_stem, spec.formats, slide=slide, mask=mask, mask_downsample=mask_downsample,
        preview_size=spec.preview_size, manifest=manifest,
    )


def _frame_args(frame: Any, slide: Slide | None) -> dict[str, Any]:
    """tile_grid's frame arguments from a stored mask (the slide, if given, wins)."""
    if slide is not None:
        return {}
    return {"slide_mpp": frame.level0_mpp, "level0_shape": frame.level0_shape,
            "name": frame.name}


def tiles_complete(
    out_stem: str | os.PathLike[str], spec: TileSpec, *, extra: Mapping[str, Any] | None = None
) -> bool:
    """Tell whether the tiles at ``out_stem`` are complete and made with ``spec``.

    Parameters
    ----------
    out_stem : str or os.PathLike
        ``DIR/<name>``.
    spec : TileSpec
        The settings the tiles must have been made with.
    extra : mapping, optional
        Manifest keys that must hold these values (e.g. the mask's config hash).

    Returns
    -------
    bool
        True when ``<stem>.tiles.json`` records a complete write with ``spec`` (and the
        ``extra`` values) and every file it lists exists: a resumed batch keeps these.
    """
    stem = Path(out_stem)
    try:
        record = json.loads(_stem_path(stem, MANIFEST_SUFFIX).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    if not isinstance(record, dict) or record.get("complete") is not True:
        return False
    if record.get("spec_hash") != spec.spec_hash():
        return False
    if any(record.get(k) != v for k, v in (extra or {}).items()):
        return False
    outputs = record.get("outputs")
    if not isinstance(outputs, dict) or set(outputs) != set(spec.formats):
        return False
    return all((stem.parent / str(p)).is_file() for p in outputs.values())
