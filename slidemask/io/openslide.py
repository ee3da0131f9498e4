"""OpenSlide backend: formats tifffile does not read (or not correctly), DICOM WSI included.

OpenSlide 4 (the ``openslide-bin`` wheel with ``openslide-python``) reads MIRAX (``.mrxs``),
Leica SCN, Ventana BIF, Hamamatsu VMS/VMU, Sakura SVSLIDE, Philips TIFF, DICOM WSI and the
TIFF formats tifffile reads too. :func:`open_openslide` returns the same :class:`Slide` as the
tifffile backend: one chunked dask array per level, ``(rows, cols, 3)`` uint8 RGB, channels
last, OpenSlide's RGBA composited on white as OpenSlide documents (pixels outside the scanned
area read as white).

Exact pixels. ``openslide_read_region`` takes its origin in level-0 pixels and divides by the
level's downsample; where the downsample is not an integer (level sizes rounded down, which
is usual) the level origin falls between pixels and OpenSlide's renderer (cairo / pixman,
bilinear with 7-bit weights) blends neighbours. A region whose origin lands less than 1/256
pixel past a level pixel is copied exactly, so each read starts at the nearest such origin at
or before the chunk and crops (:func:`exact_origin`); for integer downsamples that is the
chunk's origin itself. Tested: identical to tifffile on every level of the shared fixtures
for awkward chunkings.

Parallel reads: the graph holds :class:`OpenSlideLevelReader`, a small picklable description
(path, level, fingerprint, geometry); each process opens its own OpenSlide handle on first use
(cached per path and process; OpenSlide handles are thread-safe and ``read_region`` releases
the GIL), so threads, processes and ``dask.distributed`` workers all read in parallel.

Speed: a region is read straight into a numpy array as OpenSlide's premultiplied ARGB and
turned into RGB on white in one pass (:func:`premultiplied_on_white`), instead of through the
RGBA image openslide-python builds (a conversion pass and two copies more). What remains is
OpenSlide's own rendering: decoding the tiles and painting them into the region, about
20 ns a pixel on a 2048² region of a JPEG slide, against about 5 for tifffile decoding the
same tiles straight into the chunk, so the tifffile backend stays the faster one on the TIFF
files both read.
"""

from __future__ import annotations

import ctypes
import functools
import logging
import math
import os
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import dask.array as da
import numpy as np
from dask.base import tokenize

from slidemask.errors import SlideError, TileError
from slidemask.io.tiff import (
    PIXELS_ATTR,
    LevelGeometry,
    LevelReader,
    PixelFunction,
    Slide,
    level_chunks,
    slide_name,
)

log = logging.getLogger("slidemask")

__all__ = [
    "DICOM_SUFFIX",
    "OPENSLIDE_SUFFIXES",
    "OpenSlideLevelReader",
    "detect_format",
    "dicom_instances",
    "exact_origin",
    "open_openslide",
]

OPENSLIDE_SUFFIXES: tuple[str, ...] = (".mrxs", ".vms", ".vmu", ".svslide", ".dcm")
"""File endings only OpenSlide reads (``auto`` never tries tifffile on them)."""

OPENSLIDE_VENDORS = frozenset({"leica", "philips", "ventana"})
"""tifffile vendors (:func:`slidemask.io.metadata.vendor_of`) that ``auto`` leaves to
OpenSlide: tifffile reads their TIFF pages but not the slide as the scanner laid it out
(Leica SCN images and macro series, Philips sparse levels, Ventana BIF overlapping tiles)."""

DICOM_SUFFIX = ".dcm"

_TOLERANCE = 1.0 / 256  # level-pixel offsets below this are rendered as exact copies
_MAX_PLAUSIBLE_MPP = 100.0  # as slidemask.io.metadata: a 72-dpi default is not a pixel size


def _openslide() -> Any:
    try:
        import openslide
    except ImportError as exc:  # pragma: no cover - a dependency, but say what is missing
        raise SlideError(
            "openslide", f"the OpenSlide backend needs openslide-python and openslide-bin ({exc})"
        ) from exc
    return openslide


def dicom_instances(path: str | os.PathLike[str]) -> list[str]:
    """The ``.dcm`` files directly inside a folder, sorted (empty when none or not a folder).

    Parameters
    ----------
    path : str or os.PathLike
        A folder.

    Returns
    -------
    list of str
        Absolute paths.
    """
    p = Path(path)
    if not p.is_dir():
        return []
    return sorted(
        str(c.absolute()) for c in p.iterdir()
        if c.name.lower().endswith(DICOM_SUFFIX) and not c.name.startswith(".") and c.is_file()
    )


def series_of(file: str) -> str | None:
    """The SeriesInstanceUID of a DICOM instance (its header only), None when unreadable."""
    import pydicom

    try:
        header = pydicom.dcmread(file, stop_before_pixels=True,
                                 specific_tags=[pydicom.tag.Tag(0x0020, 0x000E)])
    except Exception:  # noqa: BLE001 - an unreadable instance is OpenSlide's to report
        return None
    uid = header.get("SeriesInstanceUID")
    return str(uid) if uid else None


def _warn_other_series(folder: str, opened: str | None) -> None:
    """Log the instances of a DICOM folder that belong to another series than the slide
    OpenSlide opened (it reads one series; the others are other slides)."""
    instances = dicom_instances(folder)
    if opened is None or len(instances) < 2:
        return
    others = [os.path.basename(f) for f in instances if series_of(f) not in (opened, None)]
    if others:
        shown = ", ".join(others[:5]) + (f" and {len(others) - 5} more" if len(others) > 5
                                         else "")
        log.warning(
            "%s: holds DICOM instances of more than one series; series %s is read as the "
            "slide, these instances of other series are not read: %s (give each series a "
            "folder of its own)", folder, opened, shown,
        )


def detect_format(path: str) -> str | None:
    """OpenSlide's vendor name for ``path`` (``"aperio"``, ``"dicom"``, ``"mirax"``, ...) or
    None when OpenSlide does not recognise it."""
    try:
        return _openslide().OpenSlide.detect_format(path)  # type: ignore[no-any-return]
    except Exception:  # noqa: BLE001 - unreadable: not this backend's file
        return None


def _instance_file(path: str | os.PathLike[str] | Sequence[str | os.PathLike[str]]) -> str:
    """The file OpenSlide opens: the file itself, or one instance of a DICOM folder or set
    (OpenSlide finds the other instances of the series in the same folder)."""
    if isinstance(path, (str, os.PathLike)):
        p = os.path.abspath(os.fspath(path))
        if os.path.isdir(p):
            instances = dicom_instances(p)
            if not instances:
                raise SlideError(p, "is a directory without DICOM (.dcm) instances")
            return instances[0]
        return p
    files = [os.path.abspath(os.fspath(f)) for f in path]
    if not files:
        raise SlideError("[]", "an empty set of DICOM instances")
    folders = {os.path.dirname(f) for f in files}
    if len(folders) != 1:
        raise SlideError(
            files[0],
            "the DICOM instances of one slide must sit in one folder "
            f"(got {len(folders)} folders)",
        )
    return sorted(files)[0]


def _fingerprint(path: str) -> tuple[int, int]:
    try:
        st = os.stat(path)
    except OSError as exc:
        raise SlideError(path, f"cannot stat file: {exc.strerror or exc}") from exc
    return (st.st_size, st.st_mtime_ns)


@functools.lru_cache(maxsize=65536)
def exact_origin(start: int, downsample: float) -> tuple[int, int]:
    """Where to read so that level pixel ``start`` is copied exactly.

    Parameters
    ----------
    start : int
        First level pixel wanted (row or column).
    downsample : float
        OpenSlide's downsample of the level.

    Returns
    -------
    origin : int
        The level-0 coordinate to pass to ``read_region``.
    first : int
        The level pixel that ``origin`` renders first (``<= start``); crop ``start - first``.

    Examples
    --------
    >>> exact_origin(10, 4.0)
    (40, 10)
    >>> exact_origin(0, 4.016129032258064)
    (0, 0)
    """
    if downsample == int(downsample):
        return start * int(downsample), start
    origin = math.floor(start * downsample)
    while origin > 0:
        value = origin / downsample
        first = math.floor(value)
        if value - first < _TOLERANCE and first <= start:
            return origin, first
        origin -= 1
    return 0, 0


def composite_on_white(rgba: np.ndarray) -> np.ndarray:
    """RGB of an RGBA image (not premultiplied) composited on white, uint8.

    Pixels with alpha 255 are copied; transparent ones become white.

    Examples
    --------
    >>> px = np.array([[[10, 20, 30, 255], [0, 0, 0, 0], [100, 100, 100, 128]]], np.uint8)
    >>> composite_on_white(px).tolist()
    [[[10, 20, 30], [255, 255, 255], [177, 177, 177]]]
    """
    rgb = np.ascontiguousarray(rgba[..., :3])
    alpha = rgba[..., 3]
    if alpha.size == 0 or bool((alpha == 255).all()):
        return rgb
    a = alpha[..., None].astype(np.uint32)
    blended = (rgb.astype(np.uint32) * a + 255 * (255 - a) + 127) // 255
    return blended.astype(np.uint8)


def premultiplied_on_white(argb: np.ndarray) -> np.ndarray:
    """RGB of OpenSlide's premultiplied ARGB pixels composited on white, uint8.

    ``openslide_read_region`` fills native-endian ``uint32`` pixels ``0xAARRGGBB`` with the
    colour premultiplied by alpha, so the composite on white is exactly ``c + 255 - a`` per
    channel: opaque pixels are copied, transparent ones become white.

    Parameters
    ----------
    argb : numpy.ndarray
        ``(rows, cols)`` uint32 pixels as OpenSlide writes them (a view is fine).

    Returns
    -------
    numpy.ndarray
        ``(rows, cols, 3)`` uint8 RGB, contiguous.

    Examples
    --------
    >>> px = np.array([[0xFF0A141E, 0x00000000, 0x80323232]], np.uint32)
    >>> premultiplied_on_white(px).tolist()
    [[[10, 20, 30], [255, 255, 255], [177, 177, 177]]]
    """
    import cv2

    rows, cols = argb.shape
    if rows == 0 or cols == 0:
        return np.zeros((rows, cols, 3), dtype=np.uint8)
    opaque = bool((argb >= np.uint32(0xFF000000)).all())
    if sys.byteorder == "little":  # bytes B, G, R, A
        quads = argb.view(np.uint8).reshape(rows, cols, 4)
        rgb = cv2.cvtColor(quads, cv2.COLOR_BGRA2RGB)
    else:  # pragma: no cover - bytes A, R, G, B
        quads = argb.view(np.uint8).reshape(rows, cols, 4)
        rgb = np.ascontiguousarray(quads[..., 1:])
    if opaque:
        return rgb
    # c <= a for premultiplied colour, so c + (255 - a) never exceeds 255
    rest = (255 - (argb >> np.uint32(24))).astype(np.uint8)
    rgb += rest[..., None]
    return rgb


def _region_argb(handle: Any, x: int, y: int, level: int, cols: int, rows: int) -> np.ndarray:
    """``openslide_read_region`` into a ``(rows, cols)`` uint32 array: OpenSlide's own
    premultiplied ARGB, without the RGBA image openslide-python builds from it (a conversion
    pass and a copy per region). ctypes releases the GIL for the call."""
    from openslide import lowlevel

    out = np.empty((rows, cols), dtype=np.uint32)
    if rows and cols:
        buffer = out.ctypes.data_as(ctypes.POINTER(ctypes.c_uint32))
        lowlevel._read_region(handle._osr, buffer, x, y, level, cols, rows)
    return out


@functools.cache
def _direct_reads() -> bool:
    """Whether this openslide-python exposes the call :func:`_region_argb` makes (its private
    ``lowlevel._read_region``); otherwise regions go through ``OpenSlide.read_region``."""
    try:
        from openslide import lowlevel
    except ImportError:  # pragma: no cover - reported when a slide is opened
        return False
    return callable(getattr(lowlevel, "_read_region", None))

_HANDLES: dict[tuple[int, str], Any] = {}
_HANDLES_LOCK = threading.Lock()


def _handle(path: str, fingerprint: tuple[int, int]) -> Any:
    # keyed by process id too: a forked child must not share its parent's handle
    key = (os.getpid(), path)
    handle = _HANDLES.get(key)
    if handle is not None:
        return handle
    with _HANDLES_LOCK:
        handle = _HANDLES.get(key)
        if handle is None:
            if _fingerprint(path) != fingerprint:
                raise SlideError(path, "the file changed on disk since it was opened")
            handle = _open(path)
            _HANDLES[key] = handle
    return handle


def _open(path: str) -> Any:
    openslide = _openslide()
    try:
        return openslide.OpenSlide(path)
    except openslide.OpenSlideUnsupportedFormatError as exc:
        raise SlideError(path, "not a slide format OpenSlide reads") from exc
    except Exception as exc:  # noqa: BLE001 - OpenSlideError, OSError: damaged for the user
        raise SlideError(path, f"OpenSlide cannot open it ({type(exc).__name__}: {exc})") from exc


class OpenSlideLevelReader(LevelReader):
    """Picklable reader of one OpenSlide level, sliced like an array: ``reader[y0:y1, x0:x1]``.

    Pickling keeps the path, level, downsample, fingerprint and geometry; each process opens
    the slide once on first read. Reads are exact copies of the level's pixels (see
    :func:`exact_origin`), RGB composited on white.

    Parameters
    ----------
    path : str
        The file OpenSlide opens (for DICOM: one instance of the series).
    level : int
        OpenSlide level.
    downsample : float
        OpenSlide's downsample of the level.
    fingerprint : tuple of int
        The file's ``(size, mtime_ns)`` when it was opened.
    geometry : LevelGeometry
        The level's shape and tile size.

    Raises
    ------
    SlideError
        On first read: the file changed or vanished since it was opened.
    TileError
        On a read: OpenSlide failed on the region (named by its first level pixel).
    """

    def __init__(
        self,
        path: str,
        level: int,
        downsample: float,
        fingerprint: tuple[int, int],
        geometry: LevelGeometry,
    ) -> None:
        super().__init__(path, 0, level, fingerprint, geometry)
        self.downsample = downsample

    def __reduce__(self) -> tuple[Any, ...]:
        args = (self.path, self.level, self.downsample, self.fingerprint, self.geometry)
        return (OpenSlideLevelReader, args)

    def read(self, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        """Level pixels ``[y0:y1, x0:x1]`` as ``(rows, cols, 3)`` uint8 RGB."""
        if y1 <= y0 or x1 <= x0:
            return np.zeros((max(0, y1 - y0), max(0, x1 - x0), 3), dtype=np.uint8)
        handle = _handle(self.path, self.fingerprint)
        oy, fy = exact_origin(y0, self.downsample)
        ox, fx = exact_origin(x0, self.downsample)
        try:
            if _direct_reads():
                argb = _region_argb(handle, ox, oy, self.level, x1 - fx, y1 - fy)
            else:  # an openslide-python without lowlevel._read_region
                image = handle.read_region((ox, oy), self.level, (x1 - fx, y1 - fy))
                return composite_on_white(np.asarray(image)[y0 - fy :, x0 - fx :])
        except Exception as exc:  # noqa: BLE001 - re-raised with the region named
            raise TileError(
                self.path, self.level, y0, x0, f"{type(exc).__name__}: {exc}"
            ) from exc
        return premultiplied_on_white(argb[y0 - fy :, x0 - fx :])

    def __getitem__(self, key: tuple[slice, ...]) -> np.ndarray:
        rows, cols, chans = (list(key) + [slice(None)] * 3)[:3]
        y0, y1, _ = rows.indices(self.shape[0])
        x0, x1, _ = cols.indices(self.shape[1])
        return self.read(y0, y1, x0, x1)[:, :, chans]

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
        """``function`` of the region (OpenSlide decodes whole regions, not tile by tile)."""
        return np.asarray(function(self.read(y0, y1, x0, x1))).astype(dtype, copy=False)


def _mpp(properties: Any) -> float | None:
    try:
        x = float(properties["openslide.mpp-x"])
        y = float(properties.get("openslide.mpp-y", x))
    except (KeyError, TypeError, ValueError):
        return None
    mpp = (x + y) / 2
    return mpp if 0.0 < mpp < _MAX_PLAUSIBLE_MPP else None


def _properties(properties: Any, vendor: str) -> dict[str, Any]:
    props: dict[str, Any] = {"openslide_vendor": vendor}
    power = properties.get("openslide.objective-power")
    if power is not None:
        try:
            props["magnification"] = float(power)
        except ValueError:
            props["magnification"] = str(power)
    for key in ("openslide.comment",):
        value = properties.get(key)
        if value:
            props["description"] = str(value).splitlines()[0][:120]
    return props


_TRANSFER_SYNTAXES = {
    "1.2.840.10008.1.2": "none (implicit VR little endian)",
    "1.2.840.10008.1.2.1": "none (explicit VR little endian)",
    "1.2.840.10008.1.2.4.50": "JPEG (baseline)",
    "1.2.840.10008.1.2.4.51": "JPEG (extended)",
    "1.2.840.10008.1.2.4.57": "JPEG lossless",
    "1.2.840.10008.1.2.4.70": "JPEG lossless",
    "1.2.840.10008.1.2.4.80": "JPEG-LS lossless",
    "1.2.840.10008.1.2.4.81": "JPEG-LS",
    "1.2.840.10008.1.2.4.90": "JPEG 2000 lossless",
    "1.2.840.10008.1.2.4.91": "JPEG 2000",
    "1.2.840.10008.1.2.5": "RLE lossless",
}
"""Names of the DICOM transfer syntaxes whole-slide images use (DICOM PS3.5, section 10)."""


def _compression(properties: Any, vendor: str) -> str:
    tiff = properties.get("tiff.Compression")
    if tiff:
        return str(tiff)
    uid = properties.get("dicom.TransferSyntaxUID")
    if uid:
        name = _TRANSFER_SYNTAXES.get(str(uid))
        return f"{name} ({uid})" if name else str(uid)
    return "unknown" if vendor != "mirax" else "JPEG"


def open_openslide(
    path: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    *,
    chunk_size: int,
) -> Slide:
    """Open a slide with OpenSlide, lazily, as a :class:`~slidemask.io.tiff.Slide`.

    Parameters
    ----------
    path : str, os.PathLike or sequence of them
        A slide file, a DICOM WSI folder, or the ``.dcm`` instances of one slide (in one
        folder).
    chunk_size : int
        Target chunk edge in level pixels; chunks are whole OpenSlide tiles merged to about
        this size.

    Returns
    -------
    Slide
        ``backend="openslide"``; levels ``(rows, cols, 3)`` uint8 RGB; ``mpp`` from
        OpenSlide's ``openslide.mpp-x``/``-y`` (DICOM: the pixel spacing), None when absent or
        implausible; ``vendor`` OpenSlide's vendor name.

    Raises
    ------
    SlideError
        Missing file, a format OpenSlide does not read, or a damaged file.
    """
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive number of pixels, got {chunk_size}")
    shown = os.fspath(path) if isinstance(path, (str, os.PathLike)) else os.fspath(path[0])
    if isinstance(path, (str, os.PathLike)) and not os.path.exists(os.fspath(path)):
        raise SlideError(os.path.abspath(shown), "file not found")
    file = _instance_file(path)
    if not os.path.exists(file):
        raise SlideError(file, "file not found")
    fingerprint = _fingerprint(file)
    osr = _open(file)
    try:
        props = osr.properties
        if isinstance(path, (str, os.PathLike)) and os.path.isdir(path):
            _warn_other_series(os.path.abspath(os.fspath(path)),
                               props.get("dicom.SeriesInstanceUID"))
        vendor = str(props.get("openslide.vendor") or detect_format(file) or "unknown")
        levels: list[da.Array] = []
        readers: list[LevelReader] = []
        for level in range(osr.level_count):
            cols, rows = osr.level_dimensions[level]
            tile_rows = int(props.get(f"openslide.level[{level}].tile-height", 0) or 0) or 256
            tile_cols = int(props.get(f"openslide.level[{level}].tile-width", 0) or 0) or 256
            geometry = LevelGeometry(
                shape=(int(rows), int(cols), 3),
                dtype="|u1",
                tiled=True,
                segment_rows=tile_rows,
                segment_cols=tile_cols,
                raw_rows=False,
                strip_rows=tile_rows,
                compression=_compression(props, vendor),
            )
            downsample = float(osr.level_downsamples[level])
            reader = OpenSlideLevelReader(file, level, downsample, fingerprint, geometry)
            readers.append(reader)
            chunks = level_chunks(geometry, chunk_size)
            token = tokenize("openslide", file, fingerprint, level, chunks)
            levels.append(
                da.from_array(
                    reader,
                    chunks=(chunks[0], chunks[1], 3),
                    asarray=False,
                    lock=False,
                    fancy=False,
                    meta=np.empty((0, 0, 0), dtype=np.uint8),
                    name=f"slidemask-openslide-{token}",
                )
            )
        mpp = _mpp(props)
        properties = _properties(props, vendor)
        downsamples = [float(d) for d in osr.level_downsamples]
    finally:
        osr.close()
    if not levels:
        raise SlideError(file, "OpenSlide found no pyramid level")
    name_of = shown if isinstance(path, (str, os.PathLike)) else os.path.dirname(file)
    geo0 = readers[0].geometry
    slide = Slide(
        path=Path(os.path.abspath(name_of)),
        name=slide_name(os.path.abspath(name_of)),
        levels=levels,
        downsamples=downsamples,
        mpp=mpp,
        vendor=vendor,
        compression=geo0.compression,
        tile_shape=(geo0.segment_rows, geo0.segment_cols),
        properties=properties,
        readers=readers,
        backend="openslide",
    )
    for index, level_array in enumerate(levels):
        # pointwise steps run on each region as it is read (OpenSlideLevelReader.read_mapped)
        setattr(level_array, PIXELS_ATTR, (slide, index, ()))
    return slide
