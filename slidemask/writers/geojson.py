"""GeoJSON output: one QuPath annotation per 8-connected component of a mask.

Geometry: each component is a Polygon (with interior rings for its holes), or a MultiPolygon
where the component's pixels meet only at corners (8-connected, but a valid polygon cannot be
joined at a single vertex). Vertices lie on pixel edges in level-0 pixels: pixel (row r, col
c) of the mask covers ``[c, c + 1] x [r, r + 1]`` times ``downsample``, so a feature's area is
its pixel count times ``downsample ** 2`` and it contains exactly its pixels' centres.
Coordinates are ``[x, y] = [column, row]`` (QuPath's image frame: y grows downwards);
exterior rings are counter-clockwise in that (x, y) frame as RFC 7946 asks.

Properties follow QuPath's schema: ``objectType = "annotation"`` and
``classification = {"name": ..., "color": [r, g, b]}``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import dask
import dask.array as da
import numpy as np

from slidemask.errors import MaskError
from slidemask.kernels import labels as kl
from slidemask.kernels.polygons import join_pieces_all, label_polygons
from slidemask.memory import prepare_process
from slidemask.ops import staged
from slidemask.ops.chunks import rechunk
from slidemask.ops.components import check_mask, chunk_lut, label_merge
from slidemask.ops.literal import held_array, literal_array
from slidemask.writers.atomic import atomic_write
from slidemask.writers.zarr import stored_copy

if TYPE_CHECKING:  # shapely itself is imported where used: only GeoJSON output needs it
    from shapely.geometry.base import BaseGeometry

__all__ = ["qupath_name", "write_class_geojson", "write_geojson"]


TRACE_TILE = 512
"""Edge in pixels of the pieces a chunk is traced in: the tracer works on the piece
upsampled twice (16 times its pixels as bytes), which for a 512² piece stays in the CPU cache
and in memory the allocator reuses; a 2048² chunk at once took three times as long in a fresh
process. The pieces of a component are joined as the pieces of different chunks are."""


def _block_polygons(
    tile: np.ndarray, lut: kl.ChunkLut, offset: tuple[int, int]
) -> dict[int, list[BaseGeometry]]:
    out: dict[int, list[BaseGeometry]] = {}
    if not tile.any():  # a class absent from this chunk: nothing to label or trace
        return out
    labels, count = kl.label_tile(tile, connectivity=8, compact=True)
    lookup = np.zeros(count + 1, np.int64)
    ids, values = lut["fg"]
    lookup[ids] = values
    if count == 0:
        return out
    rows, cols = labels.shape
    for r in range(0, rows, TRACE_TILE):
        for c in range(0, cols, TRACE_TILE):
            piece = labels[r : r + TRACE_TILE, c : c + TRACE_TILE]
            traced = label_polygons(piece, (offset[0] + r, offset[1] + c), lookup)
            for label, polygons in traced.items():
                out.setdefault(label, []).extend(polygons)
    return out


def _feature(geometry: BaseGeometry, downsample: float, properties: str) -> str:
    import shapely

    if downsample != 1.0:
        geometry = shapely.transform(geometry, lambda xy: xy * downsample)
    geometry = shapely.orient_polygons(geometry, exterior_cw=False)
    return (
        '{"type": "Feature", "geometry": ' + shapely.to_geojson(geometry)
        + ', "properties": ' + properties + "}"
    )


def _check_color(color: Sequence[int]) -> list[int]:
    try:
        rgb = [int(c) for c in color]
    except (TypeError, ValueError):
        rgb = []
    if len(rgb) != 3 or not all(0 <= c <= 255 for c in rgb):
        raise MaskError(f"write_geojson: color must be three integers 0-255, got {color!r}")
    return rgb


def write_geojson(
    mask: da.Array,
    path: str | Path,
    *,
    downsample: float = 1.0,
    classification: str = "Tissue",
    color: Sequence[int] = (0, 200, 0),
) -> int:
    """Write the mask's 8-connected components as a GeoJSON FeatureCollection.

    Parameters
    ----------
    mask : dask.array.Array
        2-D ``bool``, in the pixels of any pyramid level or working resolution.
    path : str or pathlib.Path
        Output file, replaced atomically (:func:`slidemask.writers.atomic.atomic_write`): an
        interrupted write leaves the old file, or none.
    downsample : float
        Level-0 pixels per mask pixel (``Resolution.downsample``); coordinates are
        multiplied by it, so they are level-0 pixel edges ``[x, y] = [col, row]``.
    classification : str
        QuPath class name of every annotation.
    color : sequence of int
        QuPath RGB colour (0-255 each) of every annotation.

    Returns
    -------
    int
        Number of features written (the number of 8-connected components).

    Raises
    ------
    MaskError
        Not a 2-D bool mask, a non-positive ``downsample`` or a bad ``color``.

    Notes
    -----
    This writer computes. It runs the labelling merge once (reading ``mask`` once), then reads
    ``mask`` again one row of chunks at a time, tracing each chunk's pieces and joining the
    pieces of a component (a coverage union) as soon as its last chunk row is done, so
    it holds the polygons of the components crossing the current chunk row, not of the slide.
    Features are written in raster order of first pixel within each chunk row.

    Examples
    --------
    >>> import json
    >>> import os
    >>> import tempfile
    >>> import dask.array as da
    >>> import numpy as np
    >>> import shapely.geometry
    >>> from slidemask import write_geojson
    >>> tmp = tempfile.TemporaryDirectory()
    >>> mask = np.zeros((5, 6), dtype=bool)
    >>> mask[1:3, 1:4] = True  # 6 pixels
    >>> mask[4, 5] = True  # 1 pixel
    >>> path = os.path.join(tmp.name, "s.geojson")
    >>> write_geojson(da.from_array(mask, chunks=(2, 4)), path, downsample=16.0)
    2
    >>> with open(path) as fh:
    ...     features = json.load(fh)["features"]
    >>> features[0]["properties"]
    {'objectType': 'annotation', 'classification': {'name': 'Tissue', 'color': [0, 200, 0]}}
    >>> polygon = shapely.geometry.shape(features[0]["geometry"])
    >>> polygon.bounds, polygon.area  # level-0 pixels: 6 mask pixels of 16 x 16
    ((16.0, 16.0, 64.0, 48.0), 1536.0)
    >>> tmp.cleanup()
    """
    prepare_process()  # malloc and the garbage collector, once per process
    what = "write_geojson"
    mask = check_mask(mask, what)
    if not (np.isfinite(downsample) and downsample > 0):
        raise MaskError(f"{what}: downsample must be a positive number, got {downsample!r}")
    properties = json.dumps({
        "objectType": "annotation",
        "classification": {"name": str(classification), "color": _check_color(color)},
    })
    count = 0
    with atomic_write(path) as out:
        out.write('{"type": "FeatureCollection", "features": [')
        if mask.size:
            with stored_copy(mask) as stored:  # read twice: computed once
                count = _write_features(stored, out, float(downsample), properties)
        out.write("\n]}\n")
    return count


TRACE_CHUNK = 2048
"""Chunk edge in which a class map is labelled and traced, in memory or stored alike, so the
file is the same either way (the order of the features follows the chunk rows). Each task
labels its chunk for one class as ``uint16`` where it has fewer than 65535 components
(``label_tile(..., compact=True)``), else ``int32``. On a 3125² class map (a 50000² slide at
8 µm per pixel, ``configs/qc.yaml``), 1024² chunks traced in 0.46-0.56 s against 0.38-0.40 s
for 2048², with peaks within the noise of each other once the labels are ``uint16``; with
``int32`` labels 2048² chunks peaked 20-30 MiB higher."""

IN_MEMORY_PIXELS = 2**24
"""A class map of at most this many pixels (4096², one byte each) is computed into memory
once and every class is traced in the same tasks (one labelling merge for all classes, one
pass of polygon tracing); a larger one is stored to scratch and traced class by class,
streaming its features. The features and their order are the same either way."""



def qupath_name(name: str) -> str:
    """A mask's or class's name as a QuPath classification: its first letter capitalized, as
    QuPath's built-in classes are (``tissue`` -> ``Tissue``), the rest as given.

    Examples
    --------
    >>> qupath_name("tissue"), qupath_name("blue_pen"), qupath_name("myMask")
    ('Tissue', 'Blue_pen', 'MyMask')
    """
    return name[:1].upper() + name[1:]


def write_class_geojson(
    classes: da.Array,
    path: str | Path,
    values: Mapping[str, int],
    *,
    downsample: float = 1.0,
    colors: Mapping[str, Sequence[int]] | None = None,
    in_memory_pixels: int = IN_MEMORY_PIXELS,
    trace_chunk: int = TRACE_CHUNK,
) -> dict[str, int]:
    """Write a class map's regions as QuPath annotations, one classification per class.

    Parameters
    ----------
    classes : dask.array.Array
        2-D ``uint8`` class map (:func:`slidemask.ops.artifacts.class_map`).
    path : str or pathlib.Path
        Output file, replaced atomically.
    values : mapping of str to int
        Class name -> label value; each class's 8-connected components become annotations
        classified with that name, its first letter capitalized as QuPath's own classes are
        (:func:`qupath_name`: ``tissue`` is QuPath's ``Tissue``); background, 0, is not
        written.
    downsample : float
        Level-0 pixels per class-map pixel; coordinates are level-0 pixel edges, as
        :func:`write_geojson` writes them.
    colors : mapping of str to sequence of int, optional
        QuPath RGB colour per class (default :data:`slidemask.ops.artifacts.QC_COLORS`).
    in_memory_pixels : int
        A class map of at most this many pixels is computed into memory, a larger one stored
        to scratch (default :data:`IN_MEMORY_PIXELS`; see the notes). It bounds the memory
        used, not the output: the file is the same for any value.
    trace_chunk : int
        Edge in pixels of the chunks each class is labelled and traced in (default
        :data:`TRACE_CHUNK`); it bounds the memory of each task. The order of the features
        follows its chunk rows; their shapes do not depend on it.

    Returns
    -------
    dict of str to int
        Features written per class, in the order of ``values``.

    Notes
    -----
    Computes. A class map of at most ``in_memory_pixels`` pixels is computed into memory
    once and every class traced in the same tasks; a larger one is stored once (a scratch
    copy) and each class traced as :func:`write_geojson` traces a mask (one labelling merge
    and one read per class), its features streamed. The features are the same either way.

    Examples
    --------
    >>> import json
    >>> import os
    >>> import tempfile
    >>> import dask.array as da
    >>> import numpy as np
    >>> tmp = tempfile.TemporaryDirectory()
    >>> classes = np.zeros((8, 10), np.uint8)
    >>> classes[1:4, 1:4] = 1                # tissue, with one pen pixel inside
    >>> classes[2, 2] = classes[5:7, 6:9] = 2  # pen
    >>> path = os.path.join(tmp.name, "classes.geojson")
    >>> write_class_geojson(da.from_array(classes, chunks=4), path, {"tissue": 1, "pen": 2},
    ...                     downsample=16)  # 16 level-0 pixels per class-map pixel
    {'tissue': 1, 'pen': 2}
    >>> with open(path) as fh:
    ...     features = json.load(fh)["features"]
    >>> [f["properties"]["classification"]["name"] for f in features]
    ['Tissue', 'Pen', 'Pen']
    >>> features[0]["geometry"]["coordinates"][0]  # level-0 pixel edges
    [[16.0, 16.0], [64.0, 16.0], [64.0, 64.0], [16.0, 64.0], [16.0, 16.0]]
    >>> len(features[0]["geometry"]["coordinates"])  # the outline and the pen pixel's hole
    2
    >>> tmp.cleanup()
    """
    prepare_process()  # malloc and the garbage collector, once per process
    from slidemask.ops.artifacts import QC_COLORS

    what = "write_class_geojson"
    if not isinstance(classes, da.Array) or classes.ndim != 2 or classes.dtype != np.uint8:
        raise MaskError(f"{what}: expects a 2-D uint8 dask class map")
    if not (np.isfinite(downsample) and downsample > 0):
        raise MaskError(f"{what}: downsample must be a positive number, got {downsample!r}")
    palette: dict[str, Sequence[int]] = {k: v[:3] for k, v in QC_COLORS.items()}
    palette.update(colors or {})
    properties = {
        name: json.dumps({
            "objectType": "annotation",
            "classification": {
                "name": qupath_name(str(name)),
                "color": _check_color(palette.get(name, (128, 128, 128))),
            },
        })
        for name in values
    }
    counts: dict[str, int] = {}
    with atomic_write(path) as out:
        out.write('{"type": "FeatureCollection", "features": [')
        if classes.size and classes.shape[0] * classes.shape[1] <= in_memory_pixels:
            # one pass over the class map, then every class traced in the same tasks
            whole = held_array(classes)  # already in memory: not copied again
            if whole is None:
                whole = np.asarray(staged.compute(classes)[0])
            chunks = da.core.normalize_chunks(trace_chunk, whole.shape)
            counts = _write_all_classes(
                literal_array(whole, chunks, "slidemask-traced-classes"), values, properties,
                out, float(downsample),
            )
        elif classes.size:
            with stored_copy(rechunk(classes, trace_chunk)) as stored:
                written = 0
                for name, value in values.items():
                    counts[name] = _write_features(
                        stored == np.uint8(value), out, float(downsample), properties[name],
                        first=written == 0,
                    )
                    written += counts[name]
        out.write("\n]}\n")
    return counts


def _write_all_classes(
    classes: da.Array, values: Mapping[str, int], properties: Mapping[str, str], out: Any,
    downsample: float,
) -> dict[str, int]:
    """Trace every class of an in-memory class map at once; write the features class after
    class, each in the order :func:`_write_features` gives."""
    names = list(values)
    masks = [check_mask(classes == np.uint8(values[n]), "write_class_geojson") for n in names]
    merges = staged.compute(*[label_merge(m, 8, np.dtype(np.int64)) for m in masks])
    starts = _chunk_starts(classes)
    tasks = []
    for mask, merged in zip(masks, merges, strict=True):
        blocks = mask.to_delayed()
        tasks.append([_row_tasks(blocks, merged, i, starts) for i in range(mask.numblocks[0])])
    (pieces_by_class,) = staged.compute(dask.delayed(tasks))
    counts: dict[str, int] = {}
    written = 0
    for name, merged, rows in zip(names, merges, pieces_by_class, strict=True):
        pending: dict[int, list[BaseGeometry]] = {}
        count = 0
        for i, row in enumerate(rows):
            for geometry in _finished(pending, row, merged, starts[0][i + 1]):
                out.write(("\n" if written == 0 else ",\n")
                          + _feature(geometry, downsample, properties[name]))
                count += 1
                written += 1
        _check_closed(pending)
        counts[name] = count
    return counts


def _write_features(
    mask: da.Array, out: Any, downsample: float, properties: str, *, first: bool = True
) -> int:
    (merged,) = staged.compute(label_merge(mask, 8, np.dtype(np.int64)))
    starts = _chunk_starts(mask)
    blocks = mask.to_delayed()
    pending: dict[int, list[BaseGeometry]] = {}
    count = 0
    for i in range(mask.numblocks[0]):
        row = staged.compute(*_row_tasks(blocks, merged, i, starts))
        for geometry in _finished(pending, row, merged, starts[0][i + 1]):
            start = "\n" if count == 0 and first else ",\n"
            out.write(start + _feature(geometry, downsample, properties))
            count += 1
    _check_closed(pending)
    return count


def _chunk_starts(mask: da.Array) -> tuple[np.ndarray, np.ndarray]:
    """First row of each chunk row (and the end) and first column of each chunk column."""
    return (np.concatenate([[0], np.cumsum(mask.chunks[0])]),
            np.concatenate([[0], np.cumsum(mask.chunks[1])]))


def _row_tasks(
    blocks: np.ndarray, merged: Any, i: int, starts: tuple[np.ndarray, np.ndarray]
) -> list[Any]:
    """The polygon pieces of chunk row ``i``, lazily: one task per chunk."""
    rows, cols = starts
    return [
        dask.delayed(_block_polygons)(
            blocks[i, j], chunk_lut(merged, i, j), (int(rows[i]), int(cols[j]))
        )
        for j in range(blocks.shape[1])
    ]


def _finished(
    pending: dict[int, list[BaseGeometry]], row: Any, merged: Any, row_end: int
) -> list[BaseGeometry]:
    """Add a chunk row's pieces to ``pending``; take out and join, in label order, the
    components that end above ``row_end`` (no later chunk row holds a piece of them)."""
    table = merged.table
    assert table is not None
    for pieces in row:
        for label, polygons in pieces.items():
            pending.setdefault(label, []).extend(polygons)
    done = sorted(k for k in pending if table.bottom[k - 1] <= row_end)
    return join_pieces_all([pending.pop(label) for label in done])


def _check_closed(pending: dict[int, list[BaseGeometry]]) -> None:
    if pending:  # pragma: no cover - would be a bug in the merge
        raise MaskError(f"write_geojson: internal error: {len(pending)} components left open")
