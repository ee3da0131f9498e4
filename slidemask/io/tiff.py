"""Lazy whole-slide TIFF reader: one chunked dask array per pyramid level.

Design (see the module docstring of :class:`LevelReader`): the graph holds a small picklable
description of each level (path, series, level, file fingerprint); each process opens the file
itself on first use and reads tile bytes with ``os.pread``, so reads are lock-free across
threads and graphs run unchanged on ``dask.distributed`` process workers. tifffile's Zarr store
is not used because it cannot be pickled and decodes on one thread.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import struct
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePath
from typing import Any

import dask.array as da
import numpy as np
import tifffile
from dask.base import tokenize

from slidemask.errors import SlideError, TileError
from slidemask.io.metadata import slide_mpp, vendor_of, vendor_properties

DEFAULT_CHUNK_SIZE = 2048
"""Default working chunk edge in pixels: chunks are whole tiles merged to about this size."""

PIXELS_ATTR = "_slidemask_pixels"
"""Attribute of a level array (and of pointwise results on it, see :mod:`slidemask.ops.local`):
``(slide, level, steps)``, so that the next pointwise step is fused with decoding
(:meth:`Slide.map_pixels`)."""


@dataclass(frozen=True)
class LevelGeometry:
    """How one pyramid level is laid out in the file (all sizes in level pixels).

    Attributes
    ----------
    shape : tuple of int
        ``(rows, cols, channels)``.
    dtype : str
        Pixel dtype in native byte order (``numpy.dtype.str``, e.g. ``"|u1"``).
    tiled : bool
        Tiles (True) or strips (False).
    segment_rows, segment_cols : int
        Tile height and width, or rows per strip and the full width (1 row for raw strips).
    raw_rows : bool
        Uncompressed strips: any row range can be read without decoding.
    strip_rows : int
        Rows per strip as stored (tile height for tiled levels).
    compression : str
        tifffile's name of the compression (``"JPEG"``, ``"NONE"``, ...).
    """

    shape: tuple[int, int, int]  # rows, cols, channels
    dtype: str
    tiled: bool
    segment_rows: int  # tile height, or rows per strip
    segment_cols: int  # tile width, or the full width for strips
    raw_rows: bool  # uncompressed strips: any row range can be read without decoding
    strip_rows: int  # rows per strip as stored (tile height for tiled levels)
    compression: str


class LevelReader:
    """Picklable reader of one pyramid level, sliced like an array: ``reader[y0:y1, x0:x1, :]``.

    Pickling keeps only the path, series and level indices and the file's size and
    modification time; the file is (re)opened once per process on first read. A file changed
    since opening is an error rather than silently mixed data.

    Parameters
    ----------
    path : str
        The slide file (absolute).
    series, level : int
        tifffile's series index and the pyramid level in it.
    fingerprint : tuple of int
        The file's ``(size, mtime_ns)`` when it was opened.
    geometry : LevelGeometry
        The level's layout.

    Raises
    ------
    SlideError
        On first read: the file changed or vanished since it was opened.
    TileError
        On a read: a tile or strip cannot be read or decoded (named by its level pixel).

    Examples
    --------
    >>> import os
    >>> import tempfile
    >>> from slidemask import open_slide, write_synthetic_slide
    >>> tmp = tempfile.TemporaryDirectory()
    >>> path = os.path.join(tmp.name, "demo.ome.tif")
    >>> path = write_synthetic_slide(path, 512, tile=128, levels=3)
    >>> slide = open_slide(path)
    >>> reader = slide.readers[2]  # what slide.levels[2] reads through
    >>> reader.shape, reader.dtype
    ((128, 128, 3), dtype('uint8'))
    >>> reader[0:2, 0:3].shape  # level pixels (rows, cols, channels)
    (2, 3, 3)
    >>> tmp.cleanup()
    """

    def __init__(
        self,
        path: str,
        series: int,
        level: int,
        fingerprint: tuple[int, int],
        geometry: LevelGeometry,
        storage_options: dict[str, Any] | None = None,
    ) -> None:
        self.path = path
        self.series = series
        self.level = level
        self.fingerprint = fingerprint
        self.geometry = geometry
        self.storage_options = storage_options
        self.shape = geometry.shape
        self.dtype = np.dtype(geometry.dtype)
        self.ndim = 3

    def __reduce__(self) -> tuple[Any, ...]:
        args = (self.path, self.series, self.level, self.fingerprint, self.geometry)
        return (LevelReader, args + ((self.storage_options,) if self.storage_options else ()))

    def __getitem__(self, key: tuple[slice, ...]) -> np.ndarray:
        rows, cols, chans = (list(key) + [slice(None)] * 3)[:3]
        y0, y1, _ = rows.indices(self.shape[0])
        x0, x1, _ = cols.indices(self.shape[1])
        handle = _handle(
            self.path, self.series, self.level, self.fingerprint, self.storage_options
        )
        out = handle.read(y0, y1, x0, x1)
        return out[:, :, chans]

    def read_mapped(
        self,
        y0: int,
        y1: int,
        x0: int,
        x1: int,
        function: PixelFunction,
        dtype: np.dtype,
        channels: int | None,
    ) -> np.ndarray:
        """``function`` of level pixels ``[y0:y1, x0:x1]``, applied to each file tile as it is
        decoded (see :class:`MappedLevelReader`)."""
        handle = _handle(
            self.path, self.series, self.level, self.fingerprint, self.storage_options
        )
        return handle.read_mapped(y0, y1, x0, x1, function, dtype, channels)


PixelFunction = Callable[[np.ndarray], np.ndarray]
"""A pointwise function of an image tile: ``(rows, cols, channels)`` in, ``(rows, cols)`` or
``(rows, cols, k)`` out, each output pixel depending only on the same input pixel. One whose
``writes_out`` attribute is true (:class:`slidemask.ops.local.PixelChain`) is called as
``function(tile, out=target)`` with the tile's place in the chunk, and writes its result there."""


class MappedLevelReader:
    """A :class:`LevelReader` whose pixels pass through a pointwise function tile by tile.

    ``reader[y0:y1, x0:x1]`` equals ``function(level[y0:y1, x0:x1])`` for a pointwise
    ``function``, but each file tile is decoded and mapped while it is still in the CPU cache,
    and the decoded RGB region is never assembled. Picklable when ``function`` is.

    Parameters
    ----------
    reader : LevelReader
        The level.
    function : callable
        Pointwise: ``(rows, cols, channels)`` in, ``(rows, cols)`` or ``(rows, cols, k)``
        of ``dtype`` out.
    dtype : numpy.dtype
        The output dtype.
    channels : int or None
        The output's channel count, or None for a 2-D output.

    Examples
    --------
    >>> import os
    >>> import tempfile
    >>> from slidemask import open_slide, write_synthetic_slide
    >>> tmp = tempfile.TemporaryDirectory()
    >>> path = os.path.join(tmp.name, "demo.ome.tif")
    >>> path = write_synthetic_slide(path, 512, tile=128, levels=3)
    >>> slide = open_slide(path)
    >>> import numpy as np
    >>> from slidemask.kernels.color import rgb_to_gray
    >>> grey = MappedLevelReader(slide.readers[2], rgb_to_gray, np.dtype(np.uint8), None)
    >>> bool((grey[0:64, 0:64] == rgb_to_gray(slide.readers[2][0:64, 0:64])).all())
    True
    >>> tmp.cleanup()
    """

    def __init__(
        self,
        reader: LevelReader,
        function: PixelFunction,
        dtype: np.dtype,
        channels: int | None,
    ) -> None:
        self.reader = reader
        self.function = function
        self.dtype = np.dtype(dtype)
        self.channels = channels
        rows, cols = reader.shape[:2]
        self.shape: tuple[int, ...] = (rows, cols) if channels is None else (rows, cols, channels)
        self.ndim = len(self.shape)

    def __reduce__(self) -> tuple[Any, ...]:
        return (MappedLevelReader, (self.reader, self.function, self.dtype, self.channels))

    def __getitem__(self, key: tuple[slice, ...]) -> np.ndarray:
        rows, cols = (list(key) + [slice(None)] * 2)[:2]
        y0, y1, _ = rows.indices(self.shape[0])
        x0, x1, _ = cols.indices(self.shape[1])
        out = self.reader.read_mapped(y0, y1, x0, x1, self.function, self.dtype, self.channels)
        return out if len(key) <= 2 else out[(slice(None), slice(None), *key[2:])]


def _pread(fd: int, count: int, offset: int) -> bytes:
    """Read ``count`` bytes at ``offset`` (thread-safe; one place for tests to observe reads)."""
    return os.pread(fd, count, offset)


@dataclass
class _PageCodec:
    offsets: np.ndarray
    counts: np.ndarray
    decode: Any
    jpegtables: bytes | None
    jpegheader: bytes | None
    separate_samples: int
    contig_samples: int
    segments_y: int
    segments_x: int
    jpeg: dict[str, Any] | None = None
    """For an 8-bit JPEG tile: keyword arguments of ``imagecodecs.jpeg_decode`` (colour
    spaces and tile shape), to decode into a reused buffer; None otherwise."""


_BUFFERS = threading.local()
_BUFFERS_KEPT = 8
"""Buffers kept per thread (by shape and dtype): a few tile and edge-tile shapes per slide."""


def tile_buffer(shape: tuple[int, ...], dtype: Any = np.uint8) -> np.ndarray:
    """This thread's buffer of ``shape`` and ``dtype``, reused from tile to tile.

    Decoding a tile into a new array costs about a fifth of the decode itself (fresh pages
    from the kernel for each 768 KiB tile; measured 1.99 s against 1.62 s for 1600 512² JPEG
    tiles on one thread), so the tile readers, which copy each tile out at once, decode into
    this; :class:`slidemask.ops.local.PixelChain` keeps a tile's grey plane in one too. The
    contents are valid until the thread's next call for the same shape and dtype.
    """
    buffers: dict[tuple[Any, ...], np.ndarray] | None = getattr(_BUFFERS, "tiles", None)
    if buffers is None:
        buffers = _BUFFERS.tiles = {}
    key = (shape, np.dtype(dtype).str)
    buffer = buffers.get(key)
    if buffer is None:
        if len(buffers) >= _BUFFERS_KEPT:
            buffers.clear()
        buffer = buffers[key] = np.empty(shape, dtype)
    return buffer


@dataclass
class _LevelHandle:
    """Per-process open state of one level: file descriptor and tifffile decode closures."""

    path: str
    level: int
    geometry: LevelGeometry
    fd: int
    tiff: tifffile.TiffFile
    pages: list[_PageCodec] = field(default_factory=list)
    byteorder: str = "<"
    row_bytes: int = 0
    remote: Any = None  # slidemask.storage.RangeReader of a slide on object storage

    def _bytes(self, count: int, offset: int) -> bytes:
        if self.remote is None:
            return _pread(self.fd, count, offset)
        return self.remote.pread(count, offset)  # type: ignore[no-any-return]

    def _prefetch(self, y0: int, y1: int, x0: int, x1: int) -> None:
        """Fetch the byte ranges of every segment of a region at once (object storage: a
        few concurrent range requests per chunk instead of one request per tile)."""
        geo = self.geometry
        ranges: list[tuple[int, int]] = []
        for page in self.pages:
            if geo.raw_rows:
                rps = geo.strip_rows
                for strip in range(y0 // rps, (y1 - 1) // rps + 1):
                    start = max(y0, strip * rps)
                    stop = min(y1, (strip + 1) * rps)
                    offset = int(page.offsets[strip]) + (start - strip * rps) * self.row_bytes
                    ranges.append((offset, (stop - start) * self.row_bytes))
                continue
            sh, sw = geo.segment_rows, geo.segment_cols
            for sample in range(page.separate_samples):
                for ty in range(y0 // sh, (y1 - 1) // sh + 1):
                    for tx in range(x0 // sw, (x1 - 1) // sw + 1):
                        index = (sample * page.segments_y + ty) * page.segments_x + tx
                        ranges.append((int(page.offsets[index]), int(page.counts[index])))
        try:
            self.remote.prefetch(ranges)
        except Exception as exc:  # noqa: BLE001 - re-raised with the region named
            raise TileError(self.path, self.level, y0, x0, f"{type(exc).__name__}: {exc}") from exc

    def read(self, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        if self.remote is not None and y1 > y0 and x1 > x0:
            self._prefetch(y0, y1, x0, x1)
            try:
                return self._read(y0, y1, x0, x1)
            finally:
                self.remote.release()
        return self._read(y0, y1, x0, x1)

    def _read(self, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        geo = self.geometry
        out = np.zeros((y1 - y0, x1 - x0, geo.shape[2]), dtype=np.dtype(geo.dtype))
        if out.size == 0:
            return out
        channel = 0
        for page in self.pages:
            width = page.separate_samples * page.contig_samples
            target = out[:, :, channel : channel + width]
            if geo.raw_rows:
                self._read_raw(page, target, y0, y1, x0, x1)
            else:
                self._read_segments(page, target, y0, y1, x0, x1)
            channel += width
        return out

    def read_mapped(
        self,
        y0: int,
        y1: int,
        x0: int,
        x1: int,
        function: PixelFunction,
        dtype: np.dtype,
        channels: int | None,
    ) -> np.ndarray:
        """``function(self.read(y0, y1, x0, x1))``, applied tile by tile where the level is
        tiled or stripped with interleaved samples in one page (the usual RGB slide)."""
        geo = self.geometry
        shape = (y1 - y0, x1 - x0) if channels is None else (y1 - y0, x1 - x0, channels)
        if len(self.pages) != 1 or geo.raw_rows or self.pages[0].separate_samples != 1:
            return np.asarray(function(self.read(y0, y1, x0, x1))).astype(dtype, copy=False)
        if self.remote is not None and y1 > y0 and x1 > x0:
            self._prefetch(y0, y1, x0, x1)
            try:
                return self._read_mapped(y0, y1, x0, x1, function, dtype, shape)
            finally:
                self.remote.release()
        return self._read_mapped(y0, y1, x0, x1, function, dtype, shape)

    def _read_mapped(
        self,
        y0: int,
        y1: int,
        x0: int,
        x1: int,
        function: PixelFunction,
        dtype: np.dtype,
        shape: tuple[int, ...],
    ) -> np.ndarray:
        geo = self.geometry
        # every pixel is written below (a tile's pixels, or the fill where a tile is missing
        # or short), so the chunk is not zeroed first: 0.4 ms per 2048² bool chunk
        out = np.empty(shape, dtype=dtype)
        if out.size == 0:
            return out
        page = self.pages[0]
        sh, sw = geo.segment_rows, geo.segment_cols
        fill: np.ndarray | None = None  # the function of a zero pixel: what sparse tiles read as
        writes_out = bool(getattr(function, "writes_out", False))
        for ty in range(y0 // sh, (y1 - 1) // sh + 1):
            for tx in range(x0 // sw, (x1 - 1) // sw + 1):
                ty0, tx0 = ty * sh, tx * sw
                tile = self._decode(page, ty * page.segments_x + tx, ty0, tx0)
                ry0, rx0 = max(y0, ty0), max(x0, tx0)
                ey1, ex1 = min(y1, ty0 + sh, geo.shape[0]), min(x1, tx0 + sw, geo.shape[1])
                if tile is None or tile.shape[0] < ey1 - ty0 or tile.shape[1] < ex1 - tx0:
                    # a sparse tile, or one shorter than the grid: zero pixels, as read()
                    if fill is None:
                        zero = np.zeros((1, 1, geo.shape[2]), dtype=np.dtype(geo.dtype))
                        fill = np.asarray(function(zero))[0, 0]
                    out[ry0 - y0 : ey1 - y0, rx0 - x0 : ex1 - x0] = fill
                    if tile is None:
                        continue
                ry1 = min(ey1, ty0 + tile.shape[0])
                rx1 = min(ex1, tx0 + tile.shape[1])
                if ry0 >= ry1 or rx0 >= rx1:
                    continue
                block = tile[ry0 - ty0 : ry1 - ty0, rx0 - tx0 : rx1 - tx0]
                target = out[ry0 - y0 : ry1 - y0, rx0 - x0 : rx1 - x0]
                if writes_out:
                    function(block, out=target)  # type: ignore[call-arg]
                else:
                    target[...] = function(block)
        return out

    def _read_raw(
        self, page: _PageCodec, target: np.ndarray, y0: int, y1: int, x0: int, x1: int
    ) -> np.ndarray:
        rps = self.geometry.strip_rows
        dtype = np.dtype(self.geometry.dtype).newbyteorder(self.byteorder)  # type: ignore[arg-type]
        width = self.geometry.shape[1]
        y = y0
        while y < y1:
            strip = y // rps
            stop = min(y1, (strip + 1) * rps)
            offset = int(page.offsets[strip]) + (y - strip * rps) * self.row_bytes
            count = (stop - y) * self.row_bytes
            try:
                data = self._bytes(count, offset)
                if len(data) != count:
                    raise OSError(f"short read ({len(data)} of {count} bytes)")
                rows = np.frombuffer(data, dtype=dtype).reshape(stop - y, width, -1)
            except Exception as exc:  # noqa: BLE001 - re-raised with the tile named
                raise TileError(
                    self.path, self.level, y, 0, f"{type(exc).__name__}: {exc}"
                ) from exc
            target[y - y0 : stop - y0] = rows[:, x0:x1]
            y = stop
        return target

    def _read_segments(
        self, page: _PageCodec, target: np.ndarray, y0: int, y1: int, x0: int, x1: int
    ) -> np.ndarray:
        geo = self.geometry
        sh, sw = geo.segment_rows, geo.segment_cols
        for sample in range(page.separate_samples):
            for ty in range(y0 // sh, (y1 - 1) // sh + 1):
                for tx in range(x0 // sw, (x1 - 1) // sw + 1):
                    index = (sample * page.segments_y + ty) * page.segments_x + tx
                    tile = self._decode(page, index, ty * sh, tx * sw)
                    if tile is None:
                        continue  # an empty (sparse) segment reads as zeros
                    ty0, tx0 = ty * sh, tx * sw
                    ry0, ry1 = max(y0, ty0), min(y1, ty0 + tile.shape[0])
                    rx0, rx1 = max(x0, tx0), min(x1, tx0 + tile.shape[1])
                    if ry0 >= ry1 or rx0 >= rx1:
                        continue
                    block = tile[ry0 - ty0 : ry1 - ty0, rx0 - tx0 : rx1 - tx0]
                    if page.separate_samples > 1:
                        target[ry0 - y0 : ry1 - y0, rx0 - x0 : rx1 - x0, sample] = block[..., 0]
                    else:
                        target[ry0 - y0 : ry1 - y0, rx0 - x0 : rx1 - x0] = block
        return target

    def _decode(self, page: _PageCodec, index: int, row: int, col: int) -> np.ndarray | None:
        """Segment ``index`` of ``page``, decoded, as ``(rows, cols, contig samples)``; None
        for an empty (sparse) segment. An 8-bit JPEG tile is decoded into this thread's
        reused buffer, valid until the thread's next decode: callers copy it out at once."""
        count = int(page.counts[index])
        try:
            data = self._bytes(count, int(page.offsets[index])) if count else None
            if data is not None and len(data) != count:
                raise OSError(f"short read ({len(data)} of {count} bytes)")
            if data is not None and page.jpeg is not None:
                import imagecodecs

                shape = page.jpeg["shape"]
                with contextlib.suppress(Exception):  # any trouble: tifffile's own decode
                    decoded = imagecodecs.jpeg_decode(
                        data, tables=page.jpegtables, header=page.jpegheader,
                        colorspace=page.jpeg["colorspace"],
                        outcolorspace=page.jpeg["outcolorspace"], shape=shape[:2],
                        out=tile_buffer(shape),
                    )
                    return decoded.reshape(shape)
            kwargs: dict[str, Any] = {"_fullsize": self.geometry.tiled}
            if page.jpegtables is not None or page.jpegheader is not None:
                kwargs["jpegtables"] = page.jpegtables
                kwargs["jpegheader"] = page.jpegheader
            decoded, _, _ = page.decode(data, index, **kwargs)
        except Exception as exc:  # noqa: BLE001 - re-raised with the tile named
            raise TileError(
                self.path, self.level, row, col, f"{type(exc).__name__}: {exc}"
            ) from exc
        if decoded is None:
            return None
        # normalized segment shape: (depth, rows, cols, contig samples)
        return np.asarray(decoded).reshape(decoded.shape[-3:])


_HANDLES: dict[tuple[str, int, int, tuple[int, int]], _LevelHandle] = {}
_HANDLES_LOCK = threading.Lock()


def _handle(
    path: str,
    series: int,
    level: int,
    fingerprint: tuple[int, int],
    storage_options: dict[str, Any] | None = None,
) -> _LevelHandle:
    # the fingerprint is part of the key: a file rewritten at the same path (another size or
    # date) gets a new handle, never the old file's cached layout
    key = (path, series, level, fingerprint)
    handle = _HANDLES.get(key)
    if handle is not None:
        return handle
    with _HANDLES_LOCK:
        handle = _HANDLES.get(key)
        if handle is None:
            for stale in [k for k in _HANDLES if k[:3] == key[:3]]:
                _HANDLES.pop(stale)
            if _fingerprint(path, storage_options) != fingerprint:
                raise SlideError(
                    _shown(path), "the file changed on disk since it was opened"
                )
            handle = _open_level_handle(path, series, level, storage_options)
            _HANDLES[key] = handle
    return handle


def _shown(path: str) -> str:
    """``path`` as errors show it: a URL without credentials (see slidemask.storage)."""
    if "://" not in path:
        return path
    from slidemask.storage import display

    return display(path)


def _fingerprint(path: str, storage_options: dict[str, Any] | None = None) -> tuple[int, int]:
    if "://" in path:
        from slidemask.storage import fingerprint

        try:
            return fingerprint(path, storage_options)
        except FileNotFoundError as exc:
            raise SlideError(_shown(path), "file not found") from exc
        except Exception as exc:  # noqa: BLE001 - any storage failure: cannot read the slide
            raise SlideError(
                _shown(path), f"cannot look it up ({type(exc).__name__}: {exc})"
            ) from exc
    try:
        st = os.stat(path)
    except OSError as exc:
        raise SlideError(path, f"cannot stat file: {exc.strerror or exc}") from exc
    return (st.st_size, st.st_mtime_ns)


def _open_level_handle(
    path: str, series: int, level: int, storage_options: dict[str, Any] | None = None
) -> _LevelHandle:
    tf = _open_tiff(path, storage_options)
    remote = None
    try:
        lv = tf.series[series].levels[level]
        geometry, codecs = _describe_level(path, tf, lv, level)
        if "://" in path:
            from slidemask.storage import RangeReader

            fd, remote = -1, RangeReader(path, storage_options)
        else:
            fd = os.open(path, os.O_RDONLY)
    except BaseException:
        if remote is None and "://" not in path:
            tf.close()
        raise
    row_bytes = 0
    if geometry.raw_rows:
        row_bytes = geometry.shape[1] * codecs[0].contig_samples * np.dtype(geometry.dtype).itemsize
    return _LevelHandle(
        path=path,
        level=level,
        geometry=geometry,
        fd=fd,
        tiff=tf,
        pages=codecs,
        byteorder=tf.byteorder,
        row_bytes=row_bytes,
        remote=remote,
    )


class _TiffWarnings(logging.Filter):
    """tifffile's warnings (its ``tifffile`` logger), caught in this thread inside
    :meth:`catch` so that they become part of slidemask's message instead of bare lines on
    the console (``invalid offset to first page ...`` for a truncated file); elsewhere they
    pass unchanged."""

    def __init__(self) -> None:
        super().__init__()
        self._local = threading.local()

    def filter(self, record: logging.LogRecord) -> bool:
        caught: list[str] | None = getattr(self._local, "caught", None)
        if caught is None:
            return True
        caught.append(record.getMessage())
        return False

    @contextlib.contextmanager
    def catch(self) -> Any:
        previous = getattr(self._local, "caught", None)
        caught: list[str] = []
        self._local.caught = caught
        try:
            yield caught
        finally:
            self._local.caught = previous


log = logging.getLogger("slidemask")

_TIFF_WARNINGS = _TiffWarnings()
logging.getLogger("tifffile").addFilter(_TIFF_WARNINGS)


def _warn_damaged(path: str, caught: list[str]) -> None:
    """Log what tifffile found wrong in a file that still opened (a file cut short loses the
    pyramid levels or images whose directories were at its end), naming the file."""
    if not caught:
        return
    size = ""
    with contextlib.suppress(OSError):
        size = f" ({os.path.getsize(path)} bytes)"
    log.warning(
        "%s%s may be truncated or damaged, levels or images may be missing (tifffile: %s); "
        "copy it again", _shown(path), size, "; ".join(dict.fromkeys(caught)),
    )


def _no_series_reason(path: str, caught: list[str]) -> str:
    """Why a TIFF that opened holds no image: tifffile's own words, and a truncation named."""
    reason = "the TIFF holds no image series"
    if caught:
        reason += f" (tifffile: {'; '.join(dict.fromkeys(caught))})"
    if any("invalid offset" in message for message in caught):
        with contextlib.suppress(OSError):
            reason += (f"; the file ({os.path.getsize(path)} bytes) looks truncated or damaged: "
                       "copy it again")
    return reason


def _open_tiff(path: str, storage_options: dict[str, Any] | None = None) -> tifffile.TiffFile:
    if "://" in path:
        return _open_remote_tiff(path, storage_options)
    p = Path(path)
    if not p.exists():
        raise SlideError(path, "file not found")
    if p.is_dir():
        raise SlideError(path, "is a directory, not a slide file")
    try:
        return tifffile.TiffFile(path)
    except tifffile.TiffFileError as exc:
        raise SlideError(path, f"not a TIFF file or damaged TIFF header ({exc})") from exc
    except (ValueError, struct.error, OSError, IndexError, KeyError) as exc:
        raise SlideError(path, f"unreadable TIFF ({type(exc).__name__}: {exc})") from exc


_REMOTE_TIFFS: dict[tuple[int, str, tuple[int, int]], tifffile.TiffFile] = {}
_REMOTE_LOCK = threading.Lock()


def _open_remote_tiff(url: str, storage_options: dict[str, Any] | None) -> tifffile.TiffFile:
    """Parse a TIFF on object storage once per process: only its directory structure is
    fetched (in cached 16 KiB blocks), never tile data. The parsed file is kept (never closed
    by callers) so that each level's reader does not fetch the structure again."""
    key = (os.getpid(), url, _fingerprint(url, storage_options))  # a changed object: parse anew
    with _REMOTE_LOCK:
        cached = _REMOTE_TIFFS.get(key)
        if cached is None:
            cached = _REMOTE_TIFFS[key] = _parse_remote_tiff(url, storage_options)
    return cached


def _parse_remote_tiff(url: str, storage_options: dict[str, Any] | None) -> tifffile.TiffFile:
    from slidemask.storage import open_binary

    shown = _shown(url)
    try:
        fh = open_binary(url, storage_options)
    except FileNotFoundError as exc:
        raise SlideError(shown, "file not found") from exc
    except Exception as exc:  # noqa: BLE001 - any storage failure: cannot read the slide
        raise SlideError(shown, f"cannot open ({type(exc).__name__}: {exc})") from exc
    try:
        return tifffile.TiffFile(fh, name=url.rsplit("/", 1)[-1])
    except tifffile.TiffFileError as exc:
        fh.close()
        raise SlideError(shown, f"not a TIFF file or damaged TIFF header ({exc})") from exc
    except Exception as exc:  # noqa: BLE001 - storage or parse failure
        fh.close()
        raise SlideError(shown, f"unreadable TIFF ({type(exc).__name__}: {exc})") from exc


def _describe_level(
    path: str, tf: tifffile.TiffFile, lv: tifffile.TiffPageSeries, level: int
) -> tuple[LevelGeometry, list[_PageCodec]]:
    axes = lv.axes
    other = [a for a in axes if a not in "YXS"]
    if "Y" not in axes or "X" not in axes or any(a != "C" for a in other):
        raise SlideError(
            path,
            f"unsupported layout at level {level}: axes {axes!r} shape {lv.shape} "
            "(slidemask reads 2-D images with channels; Z stacks and time series are not "
            "supported)",
        )
    pages = [p for p in lv.pages if p is not None]
    if not pages:
        raise SlideError(path, f"level {level} has no image data")
    keyframe: Any = pages[0].keyframe
    if keyframe.dtype is None:
        raise SlideError(
            path,
            f"unsupported pixel type at level {level} "
            f"({keyframe.bitspersample}-bit, sample format {keyframe.sampleformat})",
        )
    try:
        compression = keyframe.compression
        if compression != 1:
            tifffile.TIFF.DECOMPRESSORS[compression]
    except KeyError as exc:
        raise SlideError(
            path, f"compression {keyframe.compression!r} cannot be decoded: {exc}"
        ) from exc
    nsep, depth, rows, cols, ncontig = keyframe.shaped
    if depth != 1:
        raise SlideError(
            path, f"unsupported layout at level {level}: volumetric tiles (depth {depth})"
        )
    if keyframe.is_tiled:
        seg_rows, seg_cols = keyframe.tilelength, keyframe.tilewidth
    else:
        seg_rows, seg_cols = min(keyframe.rowsperstrip or rows, rows), cols
    raw_rows = (
        not keyframe.is_tiled
        and keyframe.compression == 1
        and keyframe.predictor == 1
        and keyframe.fillorder == 1
        and keyframe.bitspersample % 8 == 0
        and nsep == 1
    )
    file_size = int(tf.filehandle.size)
    codecs = []
    for page in pages:
        offsets = np.asarray(page.dataoffsets, dtype=np.int64)
        counts = np.asarray(page.databytecounts, dtype=np.int64)
        if offsets.size and int((offsets + counts).max()) > file_size:
            raise SlideError(
                path,
                f"truncated file: level {level} tile data ends at byte "
                f"{int((offsets + counts).max())} but the file has {file_size} bytes",
            )
        jpeg = keyframe.compression in {6, 7, 34892, 33007}
        fast_jpeg = None
        if (keyframe.compression == 7 and keyframe.bitspersample == 8 and keyframe.is_tiled
                and nsep == 1 and np.dtype(keyframe.dtype) == np.uint8):
            colorspace, outcolorspace = tifffile.tifffile.jpeg_decode_colorspace(
                keyframe.photometric, keyframe.planarconfig, keyframe.extrasamples,
                keyframe.is_jfif,
            )
            fast_jpeg = {"colorspace": colorspace, "outcolorspace": outcolorspace,
                         "shape": (seg_rows, seg_cols, ncontig)}
        codecs.append(
            _PageCodec(
                offsets=offsets,
                counts=counts,
                decode=keyframe.decode,
                jpegtables=page.jpegtables if jpeg else None,
                jpegheader=keyframe.jpegheader if jpeg else None,
                separate_samples=nsep,
                contig_samples=ncontig,
                segments_y=math.ceil(rows / seg_rows),
                segments_x=math.ceil(cols / seg_cols),
                jpeg=fast_jpeg,
            )
        )
    channels = len(pages) * nsep * ncontig
    compression_name = getattr(keyframe.compression, "name", str(keyframe.compression))
    geometry = LevelGeometry(
        shape=(rows, cols, channels),
        dtype=np.dtype(keyframe.dtype).newbyteorder("=").str,
        tiled=bool(keyframe.is_tiled),
        segment_rows=1 if raw_rows else seg_rows,
        segment_cols=seg_cols,
        raw_rows=raw_rows,
        strip_rows=seg_rows,
        compression=compression_name,
    )
    return geometry, codecs


def level_chunks(geometry: LevelGeometry, chunk_size: int) -> tuple[int, int]:
    """Chunk shape (rows, cols): whole tiles/strips merged to about ``chunk_size`` pixels a side.

    Strips span the full width, so stripped levels get full-width chunks of about
    ``chunk_size**2`` pixels (never less than one strip).

    Parameters
    ----------
    geometry : LevelGeometry
        The level's layout.
    chunk_size : int
        Target chunk edge in level pixels.

    Returns
    -------
    tuple of int
        ``(rows, cols)`` of the level's chunks, in level pixels, at most the level's shape.

    Examples
    --------
    >>> geometry = LevelGeometry(shape=(5000, 6000, 3), dtype="|u1", tiled=True,
    ...                          segment_rows=240, segment_cols=240, raw_rows=False,
    ...                          strip_rows=240, compression="JPEG")
    >>> level_chunks(geometry, 2048)  # 9 tiles of 240 a side: the nearest to 2048
    (2160, 2160)
    """
    rows, cols, _ = geometry.shape
    if geometry.tiled:
        cy = max(1, round(chunk_size / geometry.segment_rows)) * geometry.segment_rows
        cx = max(1, round(chunk_size / geometry.segment_cols)) * geometry.segment_cols
    else:
        step = geometry.segment_rows
        cy = max(step, (chunk_size * chunk_size // max(cols, 1)) // step * step)
        cx = cols
    return (max(1, min(cy, rows)), max(1, min(cx, cols)))


@dataclass(frozen=True)
class Slide:
    """A whole-slide image opened lazily; no pixel data is read until a level is computed.

    Made by :func:`open_slide`.

    Attributes
    ----------
    path : pathlib.PurePath
        The slide file (a :class:`slidemask.storage.URLPath` for a slide on object storage).
    name : str
        The file name without its extension (used to name outputs).
    levels : list of dask.array.Array
        One per pyramid level, shape ``(rows, cols, channels)`` in that level's pixels,
        channels last, dtype as stored; chunks are whole tiles/strips merged to about
        ``chunk_size``.
    downsamples : list of float
        Level-0 pixels per pixel of each level (1.0 for level 0).
    mpp : float or None
        Micrometres per level-0 pixel, or None when the file does not say.
    vendor : str
        The format tifffile recognised ("aperio", "ome", "hamamatsu", "qptiff", "generic",
        ...).
    compression : str
        Compression of level 0 (e.g. "JPEG", "APERIO_JP2000_RGB", "LZW", "NONE").
    tile_shape : tuple of int
        ``(rows, cols)`` of one level-0 tile or strip.
    properties : dict
        Vendor facts (magnification, software, ...).
    readers : list of LevelReader
        The picklable per-level readers behind ``levels`` (see :meth:`map_pixels`).
    backend : str
        The reader behind the levels: ``"tifffile"`` or ``"openslide"``.

    Examples
    --------
    >>> import os
    >>> import tempfile
    >>> from slidemask import open_slide, write_synthetic_slide
    >>> tmp = tempfile.TemporaryDirectory()
    >>> path = os.path.join(tmp.name, "demo.ome.tif")
    >>> path = write_synthetic_slide(path, 512, tile=128, levels=3)
    >>> slide = open_slide(path)
    >>> slide.name, slide.vendor, slide.mpp, slide.downsamples
    ('demo', 'ome', 0.5, [1.0, 2.0, 4.0])
    >>> [level.shape for level in slide.levels]
    [(512, 512, 3), (256, 256, 3), (128, 128, 3)]
    >>> tmp.cleanup()
    """

    path: PurePath
    name: str
    levels: list[da.Array]
    downsamples: list[float]
    mpp: float | None
    vendor: str
    compression: str
    tile_shape: tuple[int, int]
    properties: dict[str, Any]
    readers: list[LevelReader] = field(default_factory=list, repr=False, compare=False)
    backend: str = "tifffile"

    def map_pixels(
        self,
        level: int,
        function: PixelFunction,
        *,
        dtype: Any,
        channels: int | None = None,
        token: object = None,
    ) -> da.Array:
        """Lazy ``function`` of ``levels[level]``, evaluated on each file tile as it is decoded.

        Equal to ``levels[level].map_blocks(function, ...)`` for a pointwise ``function`` (each
        output pixel depends on the same input pixel only), with the same row/column chunks,
        but faster and lighter: a decoded tile is converted while it is in the CPU cache and
        the level's RGB chunk is never assembled.

        Parameters
        ----------
        level : int
            Pyramid level index.
        function : callable
            Picklable pointwise function of a ``(rows, cols, channels)`` tile of the level's
            dtype, returning ``(rows, cols)`` (``channels=None``) or ``(rows, cols,
            channels)`` of ``dtype``.
        dtype : numpy.dtype or type
            The output dtype.
        channels : int, optional
            The output's channel count, or None for a 2-D output.
        token : object, optional
            A deterministic description of ``function`` for the graph key (default: dask's
            tokenization of ``function``).

        Returns
        -------
        dask.array.Array
            ``(rows, cols)`` or ``(rows, cols, channels)`` in the level's pixels, of
            ``dtype``, with the level's row/column chunks; lazy.

        Raises
        ------
        ValueError
            This Slide was not made by :func:`open_slide` (it has no tile readers).

        Examples
        --------
        >>> import os
        >>> import tempfile
        >>> from slidemask import open_slide, write_synthetic_slide
        >>> tmp = tempfile.TemporaryDirectory()
        >>> path = os.path.join(tmp.name, "demo.ome.tif")
        >>> path = write_synthetic_slide(path, 512, tile=128, levels=3)
        >>> slide = open_slide(path)
        >>> import numpy as np
        >>> from slidemask.kernels.color import rgb_to_gray
        >>> grey = slide.map_pixels(2, rgb_to_gray, dtype=np.uint8)
        >>> grey.shape, grey.chunks == slide.levels[2].chunks[:2]
        ((128, 128), True)
        >>> bool((grey.compute() == rgb_to_gray(slide.levels[2].compute())).all())
        True
        >>> tmp.cleanup()
        """
        if not self.readers:
            raise ValueError("this Slide was not made by open_slide: it has no tile readers")
        reader = self.readers[level]
        mapped = MappedLevelReader(reader, function, np.dtype(dtype), channels)
        rows, cols = self.levels[level].chunks[:2]
        chunks: tuple[tuple[int, ...], ...] = (rows, cols)
        if channels is not None:
            chunks += ((channels,),)
        name = tokenize(
            reader.path, reader.fingerprint, level, chunks, function if token is None else token
        )
        return da.from_array(
            mapped,
            chunks=chunks,
            asarray=False,
            lock=False,
            fancy=False,
            meta=np.empty((0,) * len(chunks), dtype=mapped.dtype),
            name=f"slidemask-pixels-{name}",
        )

    def level_mpp(self, level: int) -> float | None:
        """Micrometres per pixel at ``level`` (None when the slide has no mpp).

        Parameters
        ----------
        level : int
            Pyramid level index.

        Returns
        -------
        float or None
            ``mpp * downsamples[level]``.
        """
        return None if self.mpp is None else self.mpp * self.downsamples[level]

    def level_for_mpp(self, mpp: float) -> int:
        """The coarsest level whose pixels are not coarser than ``mpp`` µm (level 0 if none is).

        Parameters
        ----------
        mpp : float
            Target micrometres per pixel.

        Returns
        -------
        int
            A level index.

        Raises
        ------
        SlideError
            The slide does not state its pixel size.
        """
        if self.mpp is None:
            raise SlideError(
                self.path,
                "the slide does not state its pixel size (mpp); state it "
                "(dataclasses.replace(slide, mpp=UM)) or choose a level instead of a target mpp",
            )
        best = 0
        for level in range(len(self.levels)):
            level_mpp = self.level_mpp(level)
            if level_mpp is not None and level_mpp <= mpp * (1 + 1e-9):
                best = level
        return best

    def info(self) -> dict[str, Any]:
        """JSON-able summary: levels, shapes, dtype, chunks, tile size, compression, mpp, vendor.

        Returns
        -------
        dict
            What ``slidemask info SLIDE --json`` prints.
        """
        return {
            "path": str(self.path),
            "backend": self.backend,
            "vendor": self.vendor,
            "mpp": self.mpp,
            "compression": self.compression,
            "tile_shape": list(self.tile_shape),
            "dtype": str(self.levels[0].dtype),
            "levels": [
                {
                    "level": i,
                    "shape": list(arr.shape),
                    "downsample": self.downsamples[i],
                    "mpp": self.level_mpp(i),
                    "chunks": [arr.chunksize[0], arr.chunksize[1]],
                }
                for i, arr in enumerate(self.levels)
            ],
            "properties": self.properties,
        }


BACKENDS = ("auto", "tifffile", "openslide")
"""Values of ``open_slide(..., backend=)``."""

SlideSource = str | os.PathLike[str] | Sequence[str | os.PathLike[str]]
"""What :func:`open_slide` opens: a file, a DICOM folder, or the ``.dcm`` files of one slide."""


def open_slide(
    path: SlideSource,
    *,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    backend: str = "auto",
    storage_options: dict[str, Any] | None = None,
) -> Slide:
    """Open a whole-slide image lazily: TIFF formats with tifffile, the rest with OpenSlide.

    Reads only the file's structure, never pixel data. The returned levels can be
    computed with any dask scheduler, ``dask.distributed`` process workers included.

    Parameters
    ----------
    path : str, os.PathLike or sequence of them
        The slide file (opened read-only), a DICOM WSI folder, or the ``.dcm`` instances of
        one slide.
    chunk_size : int
        Target chunk edge in level pixels; chunks are whole tiles (or strips).
    backend : {"auto", "tifffile", "openslide"}
        ``auto`` reads SVS, NDPI, OME-TIFF, QPTIFF and plain or BigTIFF with tifffile and
        everything else OpenSlide reads with OpenSlide (:mod:`slidemask.io.openslide`: MIRAX,
        Leica SCN, Ventana BIF, Hamamatsu VMS/VMU, Sakura SVSLIDE, Philips TIFF, DICOM WSI).
        Both backends give identical pixels where both read a file; ``Slide.backend`` says
        which one was used.
    storage_options : dict, optional
        For a URL (``s3://``, ``gs://``, ``https://``; read with tifffile through fsspec,
        tiles by byte-range requests): fsspec options, over the configured defaults
        (:func:`slidemask.storage.configure`) and the file system's environment.

    Returns
    -------
    Slide
        One lazy ``(rows, cols, channels)`` dask array per pyramid level (dtype as stored,
        channels last), the level-0 pixel size in µm and the vendor facts. Each task opens
        the file itself and reads only the tiles of its chunk, so memory is a chunk per
        worker thread.

    Raises
    ------
    SlideError
        Missing file, not a TIFF, truncated file, undecodable compression or an unsupported
        layout; the message names the path and the reason.
    ValueError
        ``chunk_size`` is not positive.

    Examples
    --------
    >>> import os
    >>> import tempfile
    >>> from slidemask import open_slide, write_synthetic_slide
    >>> tmp = tempfile.TemporaryDirectory()
    >>> path = os.path.join(tmp.name, "demo.ome.tif")
    >>> path = write_synthetic_slide(path, 512, tile=128, levels=3)
    >>> slide = open_slide(path)
    >>> level0 = slide.levels[0]  # a lazy dask array; nothing read yet
    >>> level0.shape, level0.dtype, level0.chunksize
    ((512, 512, 3), dtype('uint8'), (512, 512, 3))
    >>> open_slide(path, chunk_size=256).levels[0].chunksize  # whole 128-pixel tiles
    (256, 256, 3)
    >>> slide.level_mpp(2), slide.level_for_mpp(1.5)
    (2.0, 1)
    >>> tmp.cleanup()
    """
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive number of pixels, got {chunk_size}")
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; known: {', '.join(BACKENDS)}")
    remote: str | None = None
    options: dict[str, Any] | None = None
    if isinstance(path, (str, os.PathLike)) and "://" in os.fspath(path):
        from slidemask.storage import local_path
        from slidemask.storage import storage_options as merged_options

        url = os.fspath(path)
        local = local_path(url)
        if local is not None:
            path = local
        else:
            if backend == "openslide" or _openslide_only(url):
                raise SlideError(
                    _shown(url), "OpenSlide reads local files only: copy the slide locally"
                )
            remote, options = url, merged_options(url, storage_options) or None
    if backend == "openslide" or (
        backend == "auto" and remote is None and _openslide_only(path)
    ):
        from slidemask.io.openslide import open_openslide

        return open_openslide(path, chunk_size=chunk_size)
    if not isinstance(path, (str, os.PathLike)):
        raise SlideError(str(list(path)), "tifffile opens one file; use backend='openslide'")
    if remote is not None:
        path_str = remote
        fingerprint = _fingerprint(remote, options)
    else:
        path_str = os.path.abspath(os.fspath(path))
        fingerprint = _fingerprint(path_str) if os.path.exists(path_str) else (0, 0)
    try:
        with _TIFF_WARNINGS.catch() as caught:
            tf = _open_tiff(path_str, options)
    except SlideError:
        if (
            backend == "auto" and remote is None
            and os.path.isfile(path_str) and _openslide_reads(path_str)
        ):
            from slidemask.io.openslide import open_openslide

            return open_openslide(path_str, chunk_size=chunk_size)
        raise
    try:
        with _TIFF_WARNINGS.catch() as parsing:
            has_series = bool(tf.series)
        if not has_series:
            raise SlideError(path_str, _no_series_reason(path_str, caught + parsing))
        with _TIFF_WARNINGS.catch() as listing:
            series = tf.series[0]
            series_levels = list(series.levels)
        _warn_damaged(path_str, caught + parsing + listing)
        vendor = vendor_of(tf)
        if backend == "auto" and vendor in _OPENSLIDE_VENDORS and _openslide_reads(path_str):
            from slidemask.io.openslide import open_openslide

            return open_openslide(path_str, chunk_size=chunk_size)
        first_page: Any = series.levels[0].pages[0]
        mpp = slide_mpp(tf, vendor, first_page.keyframe)
        properties = vendor_properties(tf, vendor, first_page.keyframe)
        key0: Any = first_page.keyframe
        tile_shape = (
            (int(key0.tilelength), int(key0.tilewidth))
            if key0.is_tiled
            else (
                int(min(key0.rowsperstrip or key0.imagelength, key0.imagelength)),
                int(key0.imagewidth),
            )
        )
        levels: list[da.Array] = []
        readers: list[LevelReader] = []
        shapes: list[tuple[int, int, int]] = []
        geometries: list[LevelGeometry] = []
        for index, lv in enumerate(series_levels):
            geometry, _ = _describe_level(path_str, tf, lv, index)
            geometries.append(geometry)
            shapes.append(geometry.shape)
            reader = LevelReader(path_str, 0, index, fingerprint, geometry, options)
            readers.append(reader)
            chunks = level_chunks(geometry, chunk_size)
            token = f"{path_str}-{fingerprint}-{index}-{chunks}"
            levels.append(
                da.from_array(
                    reader,
                    chunks=(chunks[0], chunks[1], geometry.shape[2]),
                    asarray=False,
                    lock=False,
                    fancy=False,
                    meta=np.empty((0, 0, 0), dtype=reader.dtype),
                    name=f"slidemask-read-{tokenize(token)}",
                )
            )
    except SlideError:
        raise
    except Exception as exc:  # noqa: BLE001 - any parse failure is a damaged file for the user
        raise SlideError(
            _shown(path_str), f"cannot read TIFF structure ({type(exc).__name__}: {exc})"
        ) from exc
    finally:
        if remote is None:  # a remote structure stays parsed for the level readers
            tf.close()
    base = shapes[0]
    downsamples = [((base[0] / s[0]) + (base[1] / s[1])) / 2 for s in shapes]
    geo0 = geometries[0]
    slide = Slide(
        path=_slide_path(path_str),
        name=slide_name(path_str),
        levels=levels,
        downsamples=downsamples,
        mpp=mpp,
        vendor=vendor,
        compression=geo0.compression,
        tile_shape=tile_shape,
        properties=properties,
        readers=readers,
    )
    for index, level in enumerate(levels):
        # pointwise steps on this level run on each file tile as it is decoded
        setattr(level, PIXELS_ATTR, (slide, index, ()))
    return slide


# tifffile vendors whose slides tifffile reads page by page but not as the scanner laid them
# out (Leica SCN images and macro series, Philips sparse levels, Ventana BIF overlapping tiles)
_OPENSLIDE_VENDORS = frozenset({"leica", "philips", "ventana"})


def _openslide_only(path: SlideSource) -> bool:
    """Whether ``auto`` goes straight to OpenSlide: a DICOM folder or instance set, or a
    format only OpenSlide reads (by its file ending)."""
    if not isinstance(path, (str, os.PathLike)):
        return True
    from slidemask.io.openslide import OPENSLIDE_SUFFIXES

    text = os.fspath(path)
    return os.path.isdir(text) or text.lower().endswith(OPENSLIDE_SUFFIXES)


def _slide_path(path: str) -> PurePath:
    if "://" in path:
        from slidemask.storage import URLPath

        return URLPath(path)
    return Path(path)


def _openslide_reads(path: str) -> bool:
    from slidemask.io.openslide import detect_format

    return detect_format(path) is not None


_SLIDE_SUFFIXES = (
    ".ome.tiff",
    ".ome.tif",
    ".ome.btf",
    ".tiff",
    ".tif",
    ".svs",
    ".ndpi",
    ".qptiff",
    ".btf",
    ".tf8",
    ".scn",
    ".bif",
    ".mrxs",
    ".vms",
    ".vmu",
    ".svslide",
    ".dcm",
)


def slide_name(path: str | os.PathLike[str]) -> str:
    """The slide's file name without its image suffix (``a.ome.tif`` -> ``a``); names outputs.

    Parameters
    ----------
    path : str or os.PathLike
        The slide file (need not exist).

    Returns
    -------
    str
        The file name less one known slide suffix (case-insensitive), else less its last
        suffix.

    Examples
    --------
    >>> slide_name("scans/CMU-1.svs"), slide_name("x.ome.tif"), slide_name("scan.v2.tiff")
    ('CMU-1', 'x', 'scan.v2')
    """
    from slidemask.storage import display

    name = Path(display(path)).name  # a URL's query (a presigned URL's signature) is no name
    lower = name.lower()
    for suffix in _SLIDE_SUFFIXES:
        if lower.endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)]
    return Path(name).stem or name
