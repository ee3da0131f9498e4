"""Write a lazy mask to a Zarr v3 array on disk, atomically, with provenance.

Layout of one output (``<slide name>.zarr``, a directory): a single Zarr v3 array at the root,
``(rows, cols)`` in the pixels of the level the mask was computed at (the provenance says
which level and its downsample to level 0), ``bool``, zarr chunks equal to the dask chunks,
each chunk compressed by ``blosc`` (LZ4; bit-shuffled first where the chunk is speckled, see
:func:`encode_chunk`). Chunks that are entirely ``False`` are not stored (zarr's fill
value), so background costs nothing. Read it with ``zarr.open_array(path)`` or
:func:`read_mask`.

Why this encoding. Each chunk is ``blosc`` (LZ4, unshuffled unless speckled). Measured on a
2-core machine on four 2048² chunks of the level-0 ``grey < t`` masks of the synthetic
slides (noisy: specks and pinholes, as thresholded real H&E gives; smooth: solid tissue),
mean per chunk on one thread (best of 5; ``Blosc.encode``):

==============================================  =================  ==================
encoding                                        noisy ms, bits/px  smooth ms, bits/px
==============================================  =================  ==================
bool + blosc (lz4 5, no shuffle) (most chunks)  1.65, 0.49         0.81, 0.05
bool + blosc (lz4 5, bitshuffle) (speckled)     2.34, 0.26         3.10, 0.04
bool + blosc (zstd 1, bitshuffle)               5.49, 0.14         4.88, 0.02
==============================================  =================  ==================

Decoding one 2048² chunk's JPEG tiles takes about 16 ms of one core, so bit-shuffling every
chunk cost 4-15 % of a threshold pass for a smaller file only on noisy level-0 masks; tissue
masks compress alike either way. Per chunk, though, the noisiest chunks (tissue riddled with
pinholes) encode faster bit-shuffled, so :func:`encode_chunk` shuffles those alone. blosc is a
Zarr v3 core codec that every reader opens (a reader takes the shuffle from each chunk's own
header, so chunks written either way, and masks written with ``zstd`` by earlier versions,
are read alike).

Atomicity: the array is written under a hidden sibling name ``.<name>.partial-<hex>``; the
provenance attributes and the completion marker (``attributes["slidemask"]["complete"] =
true``) go into ``zarr.json`` after every chunk is written, and only then is the directory
renamed to its final name. An interrupted run therefore never leaves a complete-looking mask
at the final path; a killed process may leave a ``.partial-`` sibling, which
:func:`partial_outputs` lists for clean-up.
"""

from __future__ import annotations

import contextlib
import copy
import itertools
import json
import os
import stat
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import dask
import dask.array as da
import numpy as np
import zarr
from dask.base import tokenize
from dask.delayed import Delayed
from numcodecs import Blosc, Zstd
from zarr.codecs import BloscCodec

from slidemask.errors import SlidemaskError
from slidemask.memory import prepare_process
from slidemask.ops import staged
from slidemask.ops.chunks import map_located, rechunk
from slidemask.ops.scratch import in_use
from slidemask.writers.atomic import (
    check_attrs,
    check_target,
    mark_complete_and_publish,
    package_version,
    partial_outputs,
    remove,
)
from slidemask.writers.atomic import partial_path as new_partial_path

__all__ = [
    "ATTRS_KEY",
    "FORMAT_VERSION",
    "StoredArray",
    "is_complete",
    "other_slide",
    "partial_outputs",
    "provenance_text",
    "read_attrs",
    "read_mask",
    "stored_config_hash",
    "stored_source",
    "write_zarr",
]

ATTRS_KEY = "slidemask"
"""Attribute namespace the writer owns: version, completion marker, completion time."""

FORMAT_VERSION = 1
"""Bumped when the layout of an output changes incompatibly."""

_PARTIAL_INFIX = ".partial-"
CHUNK_COMPRESSOR = BloscCodec(cname="lz4", clevel=5, shuffle="noshuffle")
CHUNK_ENCODER = Blosc(cname="lz4", clevel=5, shuffle=Blosc.NOSHUFFLE)
"""The same encoder zarr's ``CHUNK_COMPRESSOR`` uses for one-byte data (the chunk files are
byte-identical, tested); the OME-Zarr labels writer uses both too."""
_BITSHUFFLED = Blosc(cname="lz4", clevel=5, shuffle=Blosc.BITSHUFFLE)
"""The encoder for speckled one-byte chunks (see :func:`encode_chunk`)."""
_SPECKLED = 1 / 24
"""Changes of value per pixel along sampled rows above which :func:`encode_chunk` bit-shuffles."""
_DECODERS = {"blosc": Blosc(), "zstd": Zstd()}
"""Decoders by codec name: ``zstd`` for arrays written before the switch to Blosc."""


def nonzero_count(block: np.ndarray) -> int:
    """Number of nonzero elements of ``block``, as ``numpy.count_nonzero`` counts them.

    A 2-D one-byte block (a mask chunk) is counted by OpenCV's ``countNonZero``: 0.23 ms
    against numpy's 0.40 ms per 2048² bool chunk on one core of a 2-core machine.
    """
    if (block.ndim == 2 and block.dtype.itemsize == 1 and block.dtype.kind in "biu"
            and block.strides[1] == 1 and 0 < block.size < 2**31):
        import cv2

        return int(cv2.countNonZero(block.view(np.uint8)))
    return int(np.count_nonzero(block))


def encode_chunk(block: np.ndarray) -> bytes:
    """One chunk's bytes as :data:`CHUNK_COMPRESSOR` stores them (blosc, LZ4).

    A one-byte 2-D chunk whose sampled rows (every 64th) change value at more than
    :data:`_SPECKLED` of their pixels (the speckled masks that thresholded level-0 tissue
    gives) is bit-shuffled before LZ4: blosc records the shuffle in each chunk's header, and
    every blosc decoder (zarr's too) reads it from there, so the array's metadata stays the
    same. Measured on the chunks of the 20000² noisy synthetic slide's ``grey < 200`` mask
    (one core, 2-core machine): a chunk of 93 % tissue full of pinholes took 3.4 ms and 1.56
    bits per pixel without shuffling, 1.8 ms and 0.73 bits with it; glass and smooth tissue
    take 0.4-0.9 ms unshuffled against 1.3-1.9 ms shuffled, hence the choice per chunk (over
    all 45 sampled chunks: 78 ms unshuffled, 109 ms shuffled, 68 ms chosen, with 0.03 ms per
    chunk to choose).
    """
    if block.ndim == 2 and block.dtype.itemsize == 1 and block.shape[1] > 1:
        rows = block[::64]
        changes = np.count_nonzero(rows[:, 1:] != rows[:, :-1])
        if changes > _SPECKLED * rows.size:
            return bytes(_BITSHUFFLED.encode(block))
    return bytes(CHUNK_ENCODER.encode(block))


def regular_chunks(arr: da.Array) -> da.Array:
    """Rechunk only the axes whose chunks are not ``(c, c, ..., c, last <= c)``.

    A Zarr array has one chunk shape; dask chunks must match it exactly so that no two
    tasks write into the same zarr chunk.

    Parameters
    ----------
    arr : dask.array.Array
        Any shape and dtype.

    Returns
    -------
    dask.array.Array
        ``arr`` itself when every axis is regular, else ``arr`` rechunked to the first chunk
        length of each irregular axis; lazy.

    Examples
    --------
    >>> import dask.array as da
    >>> regular_chunks(da.zeros((10, 10), chunks=((3, 4, 3), 5))).chunks
    ((3, 3, 3, 1), (5, 5))
    >>> regular_chunks(da.zeros((4, 3), chunks=((4,), (0, 3)))).chunks
    ((4,), (3,))
    """
    target: list[int | tuple[int, ...]] = []
    changed = False
    for sizes in arr.chunks:
        first = sizes[0] if sizes else 0
        regular = all(s == first for s in sizes[:-1]) and (not sizes or sizes[-1] <= first)
        if regular and (first or len(sizes) <= 1):
            target.append(sizes)
        else:
            # the first chunk's length, or the first non-empty one's (a sliced array may start
            # with an empty chunk; an axis of length 0 keeps one chunk)
            target.append(next((s for s in sizes if s), 1))
            changed = True
    return rechunk(arr, tuple(target)) if changed else arr


class _ChunkWriter:
    """Encode one block as its Zarr chunk and write the chunk file; return its nonzero count.

    Writes what ``zarr_array[region] = block`` writes for the arrays :func:`write_zarr`
    creates (``bytes`` little-endian then ``blosc`` LZ4, bit-shuffled where
    :func:`encode_chunk` finds the chunk speckled; default chunk keys ``c/i/j``; edge chunks
    padded with the fill value; chunks equal to the fill value not stored), which tests check
    by reading back through zarr. Why not zarr's own ``__setitem__``: measured on a
    2-core machine, it cost 4.3 ms per 2048² bool chunk against 1.0 ms here (most of it in
    zarr's event-loop round trip), 0.33 s of a 2.6 s threshold run on a 20000² slide.
    """

    def __init__(
        self,
        root: str,
        chunks: tuple[int, ...],
        dtype: np.dtype,
        fill_value: Any,
    ) -> None:
        self.root = root
        self.chunks = chunks
        self.dtype = np.dtype(dtype).newbyteorder("<") if np.dtype(dtype).itemsize > 1 else dtype
        self.fill_value = fill_value

    def __reduce__(self) -> tuple[Any, ...]:
        args = (self.root, self.chunks, self.dtype, self.fill_value)
        return (_ChunkWriter, args)

    def __call__(
        self, block: np.ndarray, *, location: tuple[int, ...], offset: tuple[int, ...]
    ) -> np.ndarray:
        """Write the block (chunk ``location``, from :func:`map_located`); return its nonzero
        count."""
        return self._write(block, location)

    def _write(self, block: np.ndarray, location: tuple[int, ...]) -> np.ndarray:
        ones = (1,) * block.ndim
        fill = np.zeros((), dtype=block.dtype) if self.fill_value is None else self.fill_value
        count = nonzero_count(block)
        if count == 0 and (fill == 0 or fill is False):
            return np.zeros(ones, dtype=np.int64)  # an all-fill chunk is not stored
        if block.shape != self.chunks:
            full = np.full(self.chunks, fill, dtype=block.dtype)
            full[tuple(slice(0, n) for n in block.shape)] = block
            block = full
        data = encode_chunk(np.ascontiguousarray(block, dtype=self.dtype))
        path = os.path.join(self.root, "c", *map(str, location))
        _make_below(self.root, os.path.dirname(path))
        with open(path, "wb") as fh:
            fh.write(data)
        return np.full(ones, count, dtype=np.int64)


def _make_below(root: str, folder: str) -> None:
    """Create ``folder`` and its parents up to ``root``, which must exist: a chunk finished
    by a worker thread after its write was abandoned (an error, Ctrl-C, SIGTERM) and the
    partial array removed must not create the array's folder again."""
    if os.path.isdir(folder):
        return
    parts = os.path.relpath(folder, root).split(os.sep)
    current = root
    for part in parts:
        current = os.path.join(current, part)
        try:
            os.mkdir(current)
        except FileExistsError:
            pass
        except FileNotFoundError as exc:
            raise OSError(f"{root}: removed while its chunks were being written") from exc


class StoredArray:
    """Read-only array-like over an array :func:`write_zarr` wrote, reading chunk files directly.

    ``stored[y0:y1, x0:x1]`` (unit steps) reads and decodes only the chunk files the region
    overlaps; a missing chunk file is the fill value. It is the reading half of
    :class:`_ChunkWriter`, behind :func:`read_mask` for slidemask's own arrays, and equals
    ``zarr.open_array(path)[...]`` (tested). Why not zarr's reader: measured on a 2-core
    machine, reading the 100 chunks of a 20000² bool mask took 0.23 s through zarr (its
    event-loop thread serializes the reads) against 0.12 s here. Picklable.

    Parameters
    ----------
    path : str or os.PathLike
        The Zarr v3 array directory (its ``zarr.json`` is read now).

    Raises
    ------
    SlidemaskError
        The array is not one :func:`write_zarr` writes (another codec, chunk-key encoding
        or data type): use ``zarr.open_array`` for those.

    Examples
    --------
    >>> import os
    >>> import tempfile
    >>> import dask.array as da
    >>> import numpy as np
    >>> from slidemask import write_zarr
    >>> tmp = tempfile.TemporaryDirectory()
    >>> path = write_zarr(da.from_array(np.eye(5, dtype=bool), chunks=2),
    ...                   os.path.join(tmp.name, "eye.zarr"))
    >>> stored = StoredArray(path)
    >>> stored.shape, stored.dtype
    ((5, 5), dtype('bool'))
    >>> stored[1:3, 0:3].astype(int)
    array([[0, 1, 0],
           [0, 0, 1]])
    >>> tmp.cleanup()
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = str(path)
        try:
            with open(os.path.join(self.path, "zarr.json"), encoding="utf-8") as fh:
                meta = json.load(fh)
            grid = meta["chunk_grid"]["configuration"]["chunk_shape"]
            codecs = [c["name"] for c in meta["codecs"]]
            key_encoding = meta["chunk_key_encoding"]
            dtype = np.dtype(meta["data_type"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise SlidemaskError(f"{self.path}: not a readable Zarr v3 array ({exc})") from exc
        if (
            len(codecs) != 2 or codecs[0] != "bytes" or codecs[1] not in _DECODERS
            or key_encoding.get("name") != "default"
            or key_encoding.get("configuration", {}).get("separator", "/") != "/"
            or dtype.kind not in "biuf"
        ):
            raise SlidemaskError(f"{self.path}: not an array written by slidemask's write_zarr")
        self.shape = tuple(int(n) for n in meta["shape"])
        self._decoder = _DECODERS[codecs[1]]
        self.chunks = tuple(int(n) for n in grid)
        self.dtype = dtype
        self.ndim = len(self.shape)
        self.fill_value = meta.get("fill_value") or 0

    def __reduce__(self) -> tuple[Any, ...]:
        return (StoredArray, (self.path,))

    def to_dask(self, name: str) -> da.Array:
        """This array as a lazy dask array chunked like the stored one, named ``name``."""
        return da.from_array(
            self, chunks=self.chunks, asarray=False, lock=False, fancy=False,
            meta=np.empty((0,) * self.ndim, dtype=self.dtype), name=name,
        )

    def _chunk(self, index: tuple[int, ...]) -> np.ndarray | None:
        path = os.path.join(self.path, "c", *map(str, index))
        try:
            with open(path, "rb") as fh:
                data = fh.read()
        except FileNotFoundError:
            return None
        raw = np.frombuffer(self._decoder.decode(data), dtype=self.dtype.newbyteorder("<"))
        return raw.reshape(self.chunks)

    def __getitem__(self, key: Any) -> np.ndarray:
        if not isinstance(key, tuple):
            key = (key,)
        key = key + (slice(None),) * (self.ndim - len(key))
        bounds = []
        for k, n in zip(key, self.shape, strict=True):
            if not isinstance(k, slice):
                raise TypeError(f"StoredArray supports slices only, got {k!r}")
            start, stop, step = k.indices(n)
            if step != 1:
                raise TypeError("StoredArray supports unit-step slices only")
            bounds.append((start, max(start, stop)))
        out = np.empty([b - a for a, b in bounds], dtype=self.dtype)
        if out.size == 0:
            return out
        ranges = [
            range(a // c, (b - 1) // c + 1)
            for (a, b), c in zip(bounds, self.chunks, strict=True)
        ]
        for index in itertools.product(*ranges):
            src, dst = [], []
            for (a, b), c, i in zip(bounds, self.chunks, index, strict=True):
                lo, hi = max(a, i * c), min(b, (i + 1) * c)
                src.append(slice(lo - i * c, hi - i * c))
                dst.append(slice(lo - a, hi - a))
            chunk = self._chunk(index)
            out[tuple(dst)] = self.fill_value if chunk is None else chunk[tuple(src)]
        return out


def _set_path(attrs: dict[str, Any], dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    node = attrs
    for key in keys[:-1]:
        node = node.setdefault(key, {})
    node[keys[-1]] = value


def _finalize(
    inputs: tuple[Any, dict[str, Any], str | None], partial: str, final: str, overwrite: bool
) -> str:
    """Write provenance and the completion marker, then move the array into place.

    Runs as the last task of the graph, after every chunk is stored. ``inputs`` is
    ``(nonzero, attrs, count_into)``: the number of nonzero elements written in each chunk
    (an array), the attributes (values that were dask collections arrive computed) and where
    in them to record their total.
    """
    nonzero, attrs, count_into = inputs
    if count_into is not None:
        attrs = copy.deepcopy(attrs)  # the caller's dict stays as it was
        _set_path(attrs, count_into, int(np.sum(nonzero)))
    partial_path, final_path = Path(partial), Path(final)
    marker = {"format_version": FORMAT_VERSION, "version": package_version()}
    return mark_complete_and_publish(partial_path, final_path, overwrite, attrs, ATTRS_KEY, marker)


def _create(partial: Path, mask: da.Array) -> zarr.Array:
    """The empty array :func:`write_zarr` fills (chunks: the first dask chunk of each axis)."""
    return zarr.create_array(
        store=str(partial),
        shape=mask.shape,
        chunks=tuple(max(1, sizes[0]) if sizes else 1 for sizes in mask.chunks),
        dtype=mask.dtype,
        compressors=CHUNK_COMPRESSOR,
        fill_value=False if mask.dtype == np.bool_ else 0,
        dimension_names=("y", "x") if mask.ndim == 2 else None,
        chunk_key_encoding={"name": "default", "separator": "/"},
        attributes={ATTRS_KEY: {"format_version": FORMAT_VERSION, "complete": False}},
        zarr_format=3,
    )


def write_zarr(
    mask: da.Array,
    path: str | os.PathLike[str],
    *,
    overwrite: bool = False,
    attrs: Mapping[str, Any] | None = None,
    count_into: str | None = None,
    compute: bool = True,
) -> Path | Delayed:
    """Stream a lazy mask into a Zarr v3 array at ``path``, atomically.

    Parameters
    ----------
    mask : dask.array.Array
        Usually ``(rows, cols)`` bool in the pixels of one pyramid level. Stored with its
        own dtype and shape; irregular chunks are rechunked to the first chunk size of each
        axis (Zarr needs a regular grid), otherwise zarr chunks equal dask chunks.
    path : str or os.PathLike
        The output directory to create (e.g. ``out/slide.zarr``); its parent is created.
    overwrite : bool
        Replace an existing output at ``path``. The old output stays in place, complete,
        until the new one is complete. A non-empty directory that is not a Zarr store is
        never replaced.
    attrs : mapping, optional
        JSON-able attributes stored with the array (e.g. ``{"provenance": {...}}``). Values
        may be dask collections (such as a lazily computed threshold): they are computed in
        the same pass as the mask. The key ``"slidemask"`` is reserved for the writer
        (version, completion marker).
    count_into : str, optional
        A dotted key path in ``attrs`` (e.g. ``"stats.foreground_pixels"``) under which to
        record the number of nonzero (True) elements, counted while the chunks are written.
    compute : bool
        If true, write now with the current dask scheduler (choose it with
        ``dask.config.set(scheduler=...)``) and return the final path. If false, return a
        ``Delayed`` whose computation writes every chunk, the attributes and the marker, and
        moves the array into place, returning the final path as a string. The empty array
        is created now under the temporary name.

    Returns
    -------
    pathlib.Path or dask.delayed.Delayed
        The final path, or with ``compute=False`` the delayed write.

    Raises
    ------
    FileExistsError
        ``path`` exists and ``overwrite`` is false (checked now and again when finishing).
    ValueError
        ``mask`` is not a dask array or is 0-d, or ``attrs`` uses the reserved key.

    Notes
    -----
    Memory: one chunk per worker thread at a time, plus what computing the mask needs. If
    computing fails or is interrupted, the temporary array is removed and nothing appears at
    ``path``; either way, with ``compute=True``, the scratch folders of the mask's graph are
    removed afterwards (:func:`slidemask.ops.scratch.release`). With ``compute=False`` they
    stay until ``release`` is called with the mask or the mask is garbage-collected, since
    another computation of the same graph may still read them.

    Examples
    --------
    >>> import os
    >>> import tempfile
    >>> import dask.array as da
    >>> import numpy as np
    >>> from slidemask import is_complete, read_mask, write_zarr
    >>> tmp = tempfile.TemporaryDirectory()
    >>> mask = np.zeros((5, 6), dtype=bool)
    >>> mask[1:3, 1:4] = True
    >>> path = write_zarr(da.from_array(mask, chunks=(2, 4)), os.path.join(tmp.name, "s.zarr"),
    ...                   attrs={"provenance": {"level": 0}},
    ...                   count_into="stats.foreground_pixels")
    >>> path.name, is_complete(path)
    ('s.zarr', True)
    >>> read_mask(path).chunks  # zarr chunks equal the dask chunks
    ((2, 2, 1), (4, 2))
    >>> from slidemask.writers.zarr import read_attrs
    >>> read_attrs(path)["stats"]
    {'foreground_pixels': 6}

    Writing later, e.g. together with other outputs in one ``dask.compute``:

    >>> later = write_zarr(da.from_array(mask, chunks=3), os.path.join(tmp.name, "l.zarr"),
    ...                    compute=False)
    >>> is_complete(os.path.join(tmp.name, "l.zarr"))
    False
    >>> os.path.basename(later.compute())
    'l.zarr'
    >>> tmp.cleanup()
    """
    prepare_process()  # malloc and the garbage collector, once per process
    if not isinstance(mask, da.Array):
        raise ValueError(f"write_zarr expects a dask array, got {type(mask).__name__}")
    if mask.ndim == 0:
        raise ValueError("write_zarr needs an array with at least one axis, got a 0-d array")
    user_attrs = dict(attrs or {})
    if ATTRS_KEY in user_attrs:
        raise ValueError(f"write_zarr: the attribute key {ATTRS_KEY!r} is reserved for the writer")
    check_attrs(user_attrs)
    final = Path(path)
    if not final.name or final.name in {".", ".."}:
        raise ValueError(f"{path}: not a usable output name")
    check_target(final, overwrite)
    final.parent.mkdir(parents=True, exist_ok=True)

    mask = regular_chunks(mask)
    partial = new_partial_path(final)
    target = _create(partial, mask)
    try:
        writer = _ChunkWriter(str(partial), target.chunks, mask.dtype, target.fill_value)
        counts = map_located(
            writer,
            mask,
            chunks=tuple((1,) * len(sizes) for sizes in mask.chunks),
            dtype=np.int64,
            meta=np.empty((0,) * mask.ndim, dtype=np.int64),
            name=f"slidemask-store-{tokenize(mask.name, str(partial))}",
        )
        # One argument holding all: dask optimizes the collections inside one argument
        # together, so chunks shared by the store and a lazy attribute are computed once
        # (as separate arguments each would get its own copy of the graph). The counts
        # arrive as one array, summed there: ``counts.sum()`` would add a reduction tree of
        # about 1.4 tasks per chunk, each the scheduler's work in the driving thread.
        task = dask.delayed(_finalize, pure=False)(
            (counts, user_attrs, count_into), str(partial), str(final), overwrite
        )
    except BaseException:
        remove(partial)
        raise
    if not compute:
        return task
    try:
        with in_use(mask):  # then the mask's scratch copies (global and neighbourhood steps)
            (written,) = staged.compute(task)
    except BaseException:
        remove(partial)
        raise
    return Path(written)


def read_attrs(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The attributes stored in an output's ``zarr.json`` (empty when unreadable or absent).

    Parameters
    ----------
    path : str or os.PathLike
        A Zarr v3 array or group directory.

    Returns
    -------
    dict
        The ``attributes`` of its ``zarr.json`` (reads only that file).
    """
    try:
        if "://" in os.fspath(path):  # on object storage (slidemask.storage)
            from slidemask.storage import read_text

            text = read_text(os.fspath(path).rstrip("/") + "/zarr.json")
            meta = json.loads(text) if text is not None else {}
        else:
            with open(Path(path) / "zarr.json", encoding="utf-8") as fh:
                meta = json.load(fh)
    except (OSError, ValueError):
        return {}
    attrs = meta.get("attributes") if isinstance(meta, dict) else None
    return attrs if isinstance(attrs, dict) else {}


def is_complete(path: str | os.PathLike[str]) -> bool:
    """True when ``path`` is an output whose writer finished (it carries the completion marker).

    Reads only ``zarr.json``. Temporary ``.partial-`` directories are never complete.

    Parameters
    ----------
    path : str or os.PathLike
        An output of :func:`write_zarr` or :func:`slidemask.write_ome_labels`, or anything.

    Returns
    -------
    bool
        Whether ``zarr.json`` carries ``attributes["slidemask"]["complete"] = true``.

    Examples
    --------
    >>> import os
    >>> import tempfile
    >>> import dask.array as da
    >>> from slidemask import is_complete, write_zarr
    >>> tmp = tempfile.TemporaryDirectory()
    >>> path = os.path.join(tmp.name, "s.zarr")
    >>> is_complete(path)
    False
    >>> _ = write_zarr(da.zeros((4, 4), dtype=bool, chunks=2), path)
    >>> is_complete(path)
    True
    >>> tmp.cleanup()
    """
    if _PARTIAL_INFIX in Path(path).name:
        return False
    own = read_attrs(path).get(ATTRS_KEY)
    return isinstance(own, dict) and own.get("complete") is True


def stored_config_hash(path: str | os.PathLike[str]) -> str | None:
    """The config hash recorded in a complete output's provenance, or None.

    The pipeline stores it as ``attributes["provenance"]["config_hash"]``; a run can skip a
    slide whose complete output carries the hash of the config it is about to run.

    Parameters
    ----------
    path : str or os.PathLike
        An output directory.

    Returns
    -------
    str or None
        None when the output is incomplete, absent or records no hash.
    """
    return provenance_text(read_attrs(path), "config_hash") if is_complete(path) else None


def stored_source(path: str | os.PathLike[str]) -> str | None:
    """The slide a complete output was made from, as its provenance records it, or None.

    The pipeline stores it as ``attributes["provenance"]["source"]["path"]``: the slide's
    absolute path, or its URL. Two slides with the same name (``a/x.svs``, ``b/x.tif``) write
    to the same output in one folder; a run that would skip a slide because the output is
    complete checks this first.

    Parameters
    ----------
    path : str or os.PathLike
        An output directory.

    Returns
    -------
    str or None
        None when the output is incomplete, absent or records no source.

    Examples
    --------
    >>> import os
    >>> import tempfile
    >>> import dask.array as da
    >>> import numpy as np
    >>> tmp = tempfile.TemporaryDirectory()
    >>> out = write_zarr(da.zeros((4, 4), dtype=bool), os.path.join(tmp.name, "s.zarr"),
    ...                  attrs={"provenance": {"source": {"path": "/slides/s.svs"}}})
    >>> stored_source(out)
    '/slides/s.svs'
    >>> tmp.cleanup()
    """
    return provenance_text(read_attrs(path), "source", "path") if is_complete(path) else None


def provenance_text(attrs: Mapping[str, Any], *keys: str) -> str | None:
    """The text at ``attrs["provenance"][keys[0]][keys[1]]...``, or None where a level is
    missing or the value is not a string (the attributes of an output, however written).

    Examples
    --------
    >>> provenance_text({"provenance": {"source": {"path": "/s.svs"}}}, "source", "path")
    '/s.svs'
    >>> provenance_text({"provenance": {"source": None}}, "source", "path") is None
    True
    """
    value: Any = attrs.get("provenance")
    for key in keys:
        value = value.get(key) if isinstance(value, Mapping) else None
    return value if isinstance(value, str) else None


def other_slide(path: str | os.PathLike[str], slide: str | os.PathLike[str]) -> str | None:
    """The slide a complete output was made from, when it is not ``slide``.

    Parameters
    ----------
    path : str or os.PathLike
        An output directory.
    slide : str or os.PathLike
        The slide about to be given this output (an absolute path, as the batch runner and
        :func:`slidemask.run_slide` record it).

    Returns
    -------
    str or None
        The recorded slide when it differs from ``slide``; None when it is the same slide,
        or the output is incomplete or records no source (:func:`stored_source`).
    """
    stored = stored_source(path)
    if stored is None or os.path.normpath(stored) == os.path.normpath(os.fspath(slide)):
        return None
    return stored


def file_version(path: str | os.PathLike[str]) -> str | None:
    """A local slide file's size and modification time as text, ``"<bytes>-<mtime in ns>"``;
    None for a URL, a folder (a DICOM slide) or a file that cannot be read.

    :func:`slidemask.build_mask` records it as ``provenance["source"]["version"]``, and a run
    that would skip a slide because its output is complete compares it first
    (:func:`slide_changed`). A copy that does not keep modification times (``cp`` without
    ``-p``) counts as changed: the slide is then made again, never skipped with a stale mask.

    Examples
    --------
    >>> import os
    >>> import tempfile
    >>> tmp = tempfile.TemporaryDirectory()
    >>> path = os.path.join(tmp.name, "s.svs")
    >>> with open(path, "wb") as fh:
    ...     _ = fh.write(b"12345")
    >>> file_version(path).startswith("5-")
    True
    >>> file_version(tmp.name) is None, file_version("s3://bucket/s.svs") is None
    (True, True)
    >>> tmp.cleanup()
    """
    text = os.fspath(path)
    if "://" in text:
        return None
    try:
        st = os.stat(text)
    except OSError:
        return None
    if not stat.S_ISREG(st.st_mode):
        return None
    return f"{st.st_size}-{st.st_mtime_ns}"


def slide_changed(path: str | os.PathLike[str], slide: str | os.PathLike[str]) -> str | None:
    """Why a complete output is out of date with its slide file, or None when it is not.

    Parameters
    ----------
    path : str or os.PathLike
        An output directory.
    slide : str or os.PathLike
        The slide file the output was made from.

    Returns
    -------
    str or None
        A reason (the file's size or modification time differs from what the output
        records, :func:`file_version`); None when they agree, or the output is incomplete,
        records no version (older outputs, URLs, DICOM folders), or the file cannot be read.
    """
    stored = provenance_text(read_attrs(path), "source", "version") if is_complete(path) \
        else None
    current = file_version(slide)
    if stored is None or current is None or stored == current:
        return None
    return f"{slide} changed since its mask was made ({_shown(stored)}; now {_shown(current)})"


def _shown(version: str) -> str:
    """A :func:`file_version` for people: ``"1234 bytes, modified 2026-01-31 12:00:00.000 UTC"``."""
    import datetime

    size, _, mtime = version.partition("-")
    try:
        when = datetime.datetime.fromtimestamp(int(mtime) / 1e9, datetime.UTC)
    except (ValueError, OverflowError, OSError):
        return version
    return f"{size} bytes, modified {when:%Y-%m-%d %H:%M:%S.%f}"[:-3] + " UTC"


def stored_stats(attrs: dict[str, Any]) -> dict[str, Any]:
    """The statistics of a complete output, as :func:`slidemask.run_slide` reports them.

    Parameters
    ----------
    attrs : dict
        The output's attributes (:func:`read_attrs`): its ``stats`` and ``provenance``.

    Returns
    -------
    dict
        The stored ``stats`` plus ``fraction`` (foreground share of the mask's pixels, or None)
        and the ``level``, ``factor``, ``mpp`` (µm per pixel) and ``downsample`` of the
        provenance.
    """
    stats = attrs.get("stats")
    stored: dict[str, Any] = dict(stats) if isinstance(stats, dict) else {}
    provenance = attrs.get("provenance")
    provenance = provenance if isinstance(provenance, dict) else {}
    total = stored.get("total_pixels") or 0
    foreground = stored.get("foreground_pixels", 0)
    return {
        **stored,
        "fraction": foreground / total if total and isinstance(foreground, int) else None,
        **{k: provenance.get(k) for k in ("level", "factor", "mpp", "downsample")},
    }


@contextlib.contextmanager
def stored_copy(mask: da.Array) -> Iterator[da.Array]:
    """``mask`` written to a scratch Zarr array and read back, for writers that read it several
    times (each read of a lazy mask with global steps would run its passes again); removed on
    exit. A mask that is already a plain read of stored chunks is yielded as it is."""
    from slidemask.ops.scratch import ScratchFolder

    if len(getattr(mask.dask, "layers", mask.dask)) <= 2:  # a read: cheap to read again
        yield mask
        return
    folder = ScratchFolder.new("copy")
    try:
        path = Path(folder.path) / "mask.zarr"
        write_zarr(mask, path)
        yield read_mask(path)
    finally:
        folder.remove()


def read_mask(path: str | os.PathLike[str]) -> da.Array:
    """Open a complete output lazily as a dask array chunked like the stored zarr array.

    Arrays in the layout :func:`write_zarr` writes are read through :class:`StoredArray`
    (chunk files read directly, about twice as fast as zarr's reader); others through zarr.

    Parameters
    ----------
    path : str or os.PathLike
        An output of :func:`write_zarr` (``<slide name>.zarr``).

    Returns
    -------
    dask.array.Array
        The stored array (usually ``(rows, cols)`` bool in the pixels of the working
        resolution recorded in its provenance), one task per stored chunk; lazy.

    Raises
    ------
    SlidemaskError
        ``path`` is missing, not a Zarr array, or lacks the completion marker (an
        interrupted write).

    Examples
    --------
    >>> import os
    >>> import tempfile
    >>> import dask.array as da
    >>> import numpy as np
    >>> from slidemask import read_mask, write_zarr
    >>> tmp = tempfile.TemporaryDirectory()
    >>> path = write_zarr(da.from_array(np.eye(3, dtype=bool), chunks=2),
    ...                   os.path.join(tmp.name, "s.zarr"))
    >>> stored = read_mask(path)
    >>> stored.chunks
    ((2, 1), (2, 1))
    >>> stored.compute().astype(int)
    array([[1, 0, 0],
           [0, 1, 0],
           [0, 0, 1]])
    >>> tmp.cleanup()
    """
    if "://" in os.fspath(path):
        return _read_remote_mask(os.fspath(path))
    p = Path(path)
    if not p.exists():
        raise SlidemaskError(f"{p}: no such output")
    if not is_complete(p):
        raise SlidemaskError(
            f"{p}: not a complete slidemask output (no completion marker: the write was "
            "interrupted or this is not a slidemask mask)"
        )
    try:
        stored = StoredArray(p)  # the layout write_zarr writes: read its chunk files directly
    except SlidemaskError:
        pass
    else:
        return stored.to_dask(f"slidemask-read-{uuid.uuid4().hex}")
    try:
        array = zarr.open_array(p, mode="r")
    except Exception as exc:  # noqa: BLE001 - zarr raises several types for a bad store
        raise SlidemaskError(
            f"{p}: cannot open as a Zarr array ({type(exc).__name__}: {exc})"
        ) from exc
    return da.from_zarr(array)


def _read_remote_mask(url: str) -> da.Array:
    """A complete output on object storage, read lazily through zarr's fsspec store."""
    from slidemask.storage import display, storage_options

    if not is_complete(url):
        raise SlidemaskError(
            f"{display(url)}: not a complete slidemask output (no completion marker)"
        )
    try:
        array = zarr.open_array(url, mode="r", storage_options=storage_options(url))
    except Exception as exc:  # noqa: BLE001 - zarr and fsspec raise several types
        raise SlidemaskError(
            f"{display(url)}: cannot open as a Zarr array ({type(exc).__name__}: {exc})"
        ) from exc
    return da.from_zarr(array)
