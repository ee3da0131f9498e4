"""Scratch chunks inside a dask graph: the engine behind neighbourhood and global operations.

Every public operation builds an ordinary dask graph, and the graph itself decides where a
value that is needed twice lives: not in memory, but in a scratch folder on disk.

* A **global operation** (:func:`two_pass`: ``fill_holes``, ``remove_small_objects``,
  ``keep_largest``, ``label``...) needs its input twice: pass 1 summarizes every chunk, one
  merge task decides, pass 2 applies the decision per chunk. Sharing the input chunks between
  the passes would make dask hold every chunk of the slide until the merge has run (2.2 GiB
  for a 50000² mask). Here each pass-1 task computes its chunk, writes it to the scratch
  folder and returns only its summary; each pass-2 task waits for the merge, reads its chunk
  back and applies the decision. The input is computed once and never held.
* A **neighbourhood operation** (:func:`map_windows`: median, mean, binary morphology) needs
  each chunk's neighbours. ``map_overlap`` keeps finished chunks in memory until all their
  neighbours have run (661 MiB for a median at 40960²). Here each chunk is written to scratch
  together with its edge strips (as wide as the chain's halo), and each output task waits
  only for the store tasks of the chunks its window touches, then reads the window from disk.
  Consecutive neighbourhood operations share one store and one window read (their halos add).
* Several stored arrays **combined pixel by pixel** (:func:`fold_reads`: the masks of a
  configuration packed into bits, or an expression of them) are read one at a time within a
  task; as a dask expression, every input chunk of a task would be read before it runs.

Scratch files are LZ4-compressed (``bool`` chunks bit-packed first): measured on 2 cores,
about 1 ms to store and 0.7 ms to read a 2048² ``bool`` chunk, against 3.7 ms for writing
the raw bytes. The folder lives under dask's ``temporary-directory`` setting (else the
system's temporary folder); with several machines (dask-jobqueue), point that setting at a
shared file system. It is removed by the writers once they are done (also on error or
Ctrl-C: :func:`release`), and otherwise when the last graph that uses it is garbage-collected
or the process exits.

Where a chunk goes: creating a file costs 0.4-1.3 ms of system time on a local disk whatever
its size (more on a cluster's shared file system), against about 0.1 ms to append the same
bytes to an open file. So the threads of the process that built the graph **append** every
chunk of a folder to one file (``chunks.log``, its index in memory), and small chunks of small
intermediates are **held in memory** instead, compressed as in the file. Measured: the
global steps on a 20000² noisy level-0 mask created 200 scratch files, a tenth of their CPU
time beyond the threshold pass; ``configs/qc.yaml`` stores 267 chunks of arrays at 8 µm per
pixel on a 50000² slide (0.3 against 0.45 s of system time, and 5-10 % of the wall time, held
against files). A chunk is held when its array is at most :data:`HELD_ARRAY_BYTES`
uncompressed (level-0 masks never are), the chunk at most :data:`HELD_CHUNK_BYTES`
compressed, and all held chunks together within the dask setting ``slidemask.scratch-memory``
(a size, default :data:`SCRATCH_MEMORY`; 0 holds none); the others are appended to the
file, so memory stays flat in slide size. Tasks in other processes (dask's ``processes``
scheduler) and on ``dask.distributed`` workers, whose chunks other processes may read, write
one file per chunk (:class:`ScratchFolder`'s notes).
"""

from __future__ import annotations

import contextlib
import contextvars
import os
import shutil
import sys
import tempfile
import threading
import uuid
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import dask
import dask.array as da
import numpy as np
from dask.base import tokenize
from dask.highlevelgraph import HighLevelGraph
from dask.utils import parse_bytes

from slidemask.ops.chunks import map_located

__all__ = ["ScratchFolder", "fold_reads", "held_bytes", "in_use", "map_windows", "release",
           "scratch_in", "scratch_memory", "scratch_root", "stored_reads", "stores"]

_LIVE: weakref.WeakValueDictionary[str, ScratchFolder] = weakref.WeakValueDictionary()
"""Scratch folders by the name of the graph layer that writes them (for :func:`release`)."""

_OBJ_META = np.empty((0, 0), dtype=object)

HELD_ARRAY_BYTES = 2**26
"""Arrays of at most this many bytes (uncompressed) keep their scratch chunks in memory."""

HELD_CHUNK_BYTES = 2**20
"""Chunks of at most this many bytes (compressed) are held in memory: creating a file costs
the same whatever its size, so a large chunk gains little from being held."""

SCRATCH_MEMORY = 2**25
"""Default of the dask setting ``slidemask.scratch-memory``: the most bytes of compressed
scratch chunks held in memory by one process, all arrays together."""

_HELD: dict[str, dict[tuple[int, int], list[bytes | bytearray]]] = {}
"""Chunks held in memory: parts (as :func:`_encode` gives them) by chunk, by folder path."""

_HELD_BYTES = [0]
_HELD_LOCK = threading.Lock()


_ROOT: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "slidemask_scratch", default=None
)
"""The scratch root :func:`scratch_in` chose for this thread (context), if any."""


@contextlib.contextmanager
def scratch_in(folder: str | os.PathLike[str]) -> Iterator[None]:
    """Graphs built inside put their scratch folders in ``folder``, in this thread only.

    Unlike ``dask.config.set({"temporary-directory": ...})``, which changes the setting for
    the whole process, this leaves other threads alone: two slides built at once by the
    threads of one ``dask.distributed`` worker each keep their own scratch (with dask's
    setting, one slide's folder became the other's, and the last one to restore it left the
    worker pointing into a finished slide's output folder).

    Parameters
    ----------
    folder : str or os.PathLike
        The scratch root (created by the first write).

    Examples
    --------
    >>> with scratch_in("/scratch/slide-1"):
    ...     scratch_root()
    '/scratch/slide-1'
    """
    token = _ROOT.set(os.fspath(folder))
    try:
        yield
    finally:
        _ROOT.reset(token)


def scratch_root() -> str:
    """Where scratch folders go: the folder :func:`scratch_in` chose for this thread, else
    dask's ``temporary-directory`` setting, else the system's temporary folder.

    Returns
    -------
    str
        The folder in which :meth:`ScratchFolder.new` makes its folders (read at graph
        construction, so set it around the call that builds the graph).

    Examples
    --------
    >>> import dask
    >>> with dask.config.set({"temporary-directory": "/scratch/me"}):
    ...     scratch_root()
    '/scratch/me'
    """
    own = _ROOT.get()
    if own is not None:
        return own
    configured = dask.config.get("temporary-directory", None)
    return str(configured) if configured else tempfile.gettempdir()


def scratch_memory() -> int:
    """The dask setting ``slidemask.scratch-memory`` in bytes (a number, or a size such as
    ``"64 MiB"``; :data:`SCRATCH_MEMORY` when unset or None).

    Returns
    -------
    int
        The most bytes of compressed scratch chunks this process holds in memory.

    Raises
    ------
    ValueError
        The setting is neither a number of bytes nor a size dask can read.

    Examples
    --------
    >>> import dask
    >>> with dask.config.set({"slidemask.scratch-memory": "64 MiB"}):
    ...     scratch_memory()
    67108864
    """
    value = dask.config.get("slidemask.scratch-memory", None)
    if value is None:
        return SCRATCH_MEMORY
    try:
        size = parse_bytes(value) if isinstance(value, str) else int(value)
    except (TypeError, ValueError):
        size = -1
    if size < 0:
        raise ValueError(
            f"dask setting slidemask.scratch-memory: {value!r} is not a size in bytes "
            "(e.g. 33554432, '32 MiB', or 0 to write every scratch chunk to a file)"
        )
    return size


def held_bytes() -> int:
    """Bytes of scratch chunks held in memory by this process now (module notes).

    Returns
    -------
    int
        The compressed bytes of every held chunk of every live scratch folder; 0 once every
        writer is done.

    Examples
    --------
    >>> held_bytes()
    0
    """
    return _HELD_BYTES[0]


def _remove(path: str) -> None:
    with _HELD_LOCK:
        held = _HELD.pop(path, {})
        _HELD_BYTES[0] -= sum(len(part) for parts in held.values() for part in parts)
        _LOGS.pop(path, None)  # its file is closed when no reader holds it any more
    shutil.rmtree(path, ignore_errors=True)


_CAN_APPEND = hasattr(os, "pwritev") and hasattr(os, "pread")
"""Positioned writes and reads exist (POSIX); elsewhere every chunk is a file."""

LOG_NAME = "chunks.log"
"""The file in a scratch folder to which this process's threads append its chunks."""


class _Log:
    """A scratch folder's chunks appended to one file, and where each one is."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
        self.end = 0
        self.index: dict[tuple[int, int], tuple[int, list[int]]] = {}

    def __del__(self) -> None:
        os.close(self.fd)


_LOGS: dict[str, _Log] = {}
"""The log of each scratch folder that this process's threads write, by folder path."""


def _in_other_process() -> bool:
    """Whether this task runs on a ``dask.distributed`` worker (whose chunks other workers,
    possibly in other processes, may read)."""
    if "distributed" not in sys.modules:
        return False
    from distributed import get_worker

    try:
        get_worker()
    except ValueError:
        return False
    return True


class ScratchFolder:
    """A folder of chunk files for one stored intermediate (created on first write).

    The object made in the driving process removes the folder when it is garbage-collected
    (or at exit); copies sent to worker processes never remove anything.

    Parameters
    ----------
    path : str
        The folder; created by the first chunk that is not held in memory.
    owner : bool
        The driving process's copy: it removes the folder when garbage-collected (or at exit),
        and its writes append to ``<path>/chunks.log`` (module notes); copies sent to other
        processes never remove anything, and write one file per chunk.
    hold : bool
        Keep chunks in memory while ``slidemask.scratch-memory`` allows (module notes); only
        the driving process's copy does.

    Notes
    -----
    Written by another process, chunk ``(i, j)`` is the file ``<path>/<i>.<j>``: a header
    of five little-endian uint64 byte counts (the chunk, then its edge strips ``top``,
    ``bottom``, ``left`` and ``right``; 0 for strips not stored), then each part's bytes,
    LZ4-compressed, bool bit-packed first. A strip is read by seeking to it. One file per
    chunk, not five, as creating a file is the costly part of a small write. Each file is
    written under a temporary name and renamed, so a retried task never leaves half a chunk.
    Written by the driving process's threads, the same parts are appended to
    ``<path>/chunks.log``, and a chunk can be read once its index entry is set, after the
    whole write.

    Examples
    --------
    >>> import os
    >>> import tempfile
    >>> import dask
    >>> import numpy as np
    >>> tmp = tempfile.TemporaryDirectory()
    >>> with dask.config.set({"temporary-directory": tmp.name}):
    ...     folder = ScratchFolder.new("demo")  # not held: chunks are appended to one file
    >>> folder.write(0, 0, np.eye(3, dtype=bool), depth=1)
    >>> sorted(os.listdir(folder.path))
    ['chunks.log']
    >>> folder.read(0, 0, (1, 3), np.dtype(bool), ".top").astype(int)
    array([[1, 0, 0]])
    >>> folder.remove()
    >>> os.path.exists(folder.path)
    False
    >>> tmp.cleanup()
    """

    def __init__(self, path: str, *, owner: bool = True, hold: bool = False) -> None:
        self.path = path
        self.owner = owner
        self.hold = hold and owner
        if owner:
            weakref.finalize(self, _remove, path)

    @classmethod
    def new(cls, label: str, *, hold: bool = False) -> ScratchFolder:
        """A new owning folder ``slidemask-scratch-<label>-<hex>`` under :func:`scratch_root`;
        ``hold``: keep chunks in memory while the budget allows (class notes)."""
        name = f"slidemask-scratch-{label}-{uuid.uuid4().hex[:12]}"
        return cls(os.path.join(scratch_root(), name), hold=hold)

    def __reduce__(self) -> tuple[Any, ...]:
        return (_worker_copy, (self.path,))

    def __dask_tokenize__(self) -> object:
        return self.path

    def remove(self) -> None:
        """Remove the folder and its files (nothing if it does not exist)."""
        _remove(self.path)

    def _file(self, i: int, j: int) -> str:
        return os.path.join(self.path, f"{i}.{j}")

    def write(self, i: int, j: int, tile: np.ndarray, *, depth: int = 0) -> None:
        """Store chunk (i, j), and with ``depth`` its four edge strips of that width.

        Parameters
        ----------
        i, j : int
            The chunk's (row, col) index in the chunk grid.
        tile : numpy.ndarray
            The chunk, 2-D, any fixed-size dtype.
        depth : int
            Width in pixels of the edge strips (the halo a window read needs); 0 for none.
        """
        d = depth
        strips = (tile[:d], tile[-d:], tile[:, :d], tile[:, -d:]) if d else ()
        parts = _encode(tile, *strips)
        if self.owner and not _in_other_process():
            if self.hold and self._held(i, j, parts):
                return
            if _CAN_APPEND:
                self._logged(i, j, parts)
                return
        try:
            _save(self._file(i, j), parts)
        except FileNotFoundError:  # the first file (a mkdir per write costs as much as one)
            os.makedirs(self.path, exist_ok=True)
            _save(self._file(i, j), parts)

    def _logged(self, i: int, j: int, parts: list[bytes | bytearray]) -> None:
        """Append chunk (i, j) to this folder's log file (made by the first chunk)."""
        with _HELD_LOCK:
            log = _LOGS.get(self.path)
            if log is None:
                os.makedirs(self.path, exist_ok=True)
                log = _LOGS[self.path] = _Log(os.path.join(self.path, LOG_NAME))
            size = sum(len(part) for part in parts)
            offset = log.end
            log.end += size
        written = os.pwritev(log.fd, parts, offset)
        if written != size:  # a full disk
            raise OSError(f"{log.path}: wrote {written} of {size} bytes of chunk {i}.{j}")
        with _HELD_LOCK:  # readable once written whole (a retried task's copy replaces it)
            log.index[(i, j)] = (offset, [len(part) for part in parts])

    def _held(self, i: int, j: int, parts: list[bytes | bytearray]) -> bool:
        """Hold chunk (i, j) in memory if the budget allows; whether it did."""
        size = sum(len(part) for part in parts)
        if size > HELD_CHUNK_BYTES:
            return False
        budget = scratch_memory()
        with _HELD_LOCK:
            chunks = _HELD.setdefault(self.path, {})
            before = sum(len(part) for part in chunks.get((i, j), ()))
            if _HELD_BYTES[0] - before + size > budget:
                return False
            chunks[(i, j)] = parts
            _HELD_BYTES[0] += size - before
        return True

    def read(
        self, i: int, j: int, shape: tuple[int, ...], dtype: np.dtype, part: str = ""
    ) -> np.ndarray:
        """Chunk (i, j) (or one of its strips) as stored.

        Parameters
        ----------
        i, j : int
            The chunk's (row, col) index in the chunk grid.
        shape : tuple of int
            The stored array's shape (a strip's shape for a strip).
        dtype : numpy.dtype
            The stored array's dtype.
        part : str
            ``""`` for the chunk, or ``".top"``, ``".bottom"``, ``".left"``, ``".right"``.

        Returns
        -------
        numpy.ndarray
            A new array of ``shape`` and ``dtype``.
        """
        index = _PARTS.index(part)
        parts = _HELD.get(self.path, {}).get((i, j))
        if parts is not None:
            if index >= len(parts):
                raise OSError(f"{self._file(i, j)}: no {part or 'chunk'} stored")
            return _decode(parts[index], shape, dtype)
        log = _LOGS.get(self.path)
        entry = None if log is None else log.index.get((i, j))
        if log is not None and entry is not None:
            offset, sizes = entry
            if index >= len(sizes):
                raise OSError(f"{log.path}: no {part or 'chunk'} of chunk {i}.{j} stored")
            data = os.pread(log.fd, sizes[index], offset + sum(sizes[:index]))
            return _decode(data, shape, dtype)
        return _load(self._file(i, j), index, shape, dtype)


def _worker_copy(path: str) -> ScratchFolder:
    return ScratchFolder(path, owner=False)


_PARTS = ("", ".top", ".bottom", ".left", ".right")
"""The parts of a chunk file, in the order of its header."""

_HEADER = np.dtype("<u8")


def _encode(*arrays: np.ndarray) -> list[bytes | bytearray]:
    """``arrays`` (a chunk, then its strips, in :data:`_PARTS` order) LZ4-compressed, ``bool``
    arrays bit-packed first."""
    import imagecodecs

    parts = []
    for array in arrays:
        array = np.ascontiguousarray(array)
        if array.dtype == np.bool_:
            array = np.packbits(array, axis=-1)
        # the array itself, not its bytes: the same output, 15-30 % faster (measured)
        parts.append(imagecodecs.lz4_encode(array))  # type: ignore[arg-type]
    return parts


def _save(path: str, parts: list[bytes | bytearray]) -> None:
    """Write encoded ``parts`` (:func:`_encode`) as one file."""
    sizes = np.zeros(len(_PARTS), _HEADER)
    sizes[: len(parts)] = [len(part) for part in parts]
    tmp = f"{path}.{uuid.uuid4().hex[:8]}.tmp"
    with open(tmp, "wb") as fh:
        fh.write(sizes.tobytes())
        for part in parts:
            fh.write(part)
    os.replace(tmp, path)  # a retried task never leaves half a chunk


def _load(path: str, index: int, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    """Part ``index`` (of :data:`_PARTS`) of the chunk file ``path``."""
    with open(path, "rb") as fh:
        header = fh.read(len(_PARTS) * _HEADER.itemsize)
        if len(header) != len(_PARTS) * _HEADER.itemsize:
            raise OSError(f"{path}: scratch chunk file of {len(header)} bytes, no header")
        sizes = np.frombuffer(header, _HEADER)
        if not sizes[index]:
            raise OSError(f"{path}: no {_PARTS[index] or 'chunk'} stored")
        fh.seek(int(sizes[:index].sum()), os.SEEK_CUR)
        data = fh.read(int(sizes[index]))
    try:
        return _decode(data, shape, dtype)
    except OSError as exc:
        raise OSError(f"{path}: {exc}") from None


def _decode(data: bytes | bytearray, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    """One part as :func:`_encode` gave it, back as an array of ``shape`` and ``dtype``."""
    import imagecodecs

    packed = dtype == np.bool_
    stored_shape = shape[:-1] + ((shape[-1] + 7) // 8,) if packed else shape
    out = np.empty(stored_shape, np.uint8 if packed else dtype)
    # decoded straight into the array, whose size is known: without it LZ4 guesses a size,
    # allocating 64 MiB for each chunk, and fails on incompressible chunks of more than
    # 8 MiB (a noisy image)
    got = imagecodecs.lz4_decode(data, out=out.reshape(-1).view(np.uint8))  # type: ignore[arg-type]
    if len(got) != out.nbytes:  # a short chunk decodes into the start of out without error
        raise OSError(f"scratch chunk of {len(got)} bytes, expected {out.nbytes}")
    if packed:
        return np.unpackbits(out, axis=-1, count=shape[-1]).view(np.bool_)
    return out


def release(*collections: Any) -> None:
    """Remove the scratch folders that the graphs of ``collections`` write, except those a
    computation inside :func:`in_use` (another writer, in another thread) still reads.

    The writers call this when they are done (also on error or Ctrl-C); a later computation
    of the same graph writes the folders again.

    Parameters
    ----------
    *collections : dask collection
        Results of slidemask's operations (dask arrays); other objects are ignored.

    Examples
    --------
    >>> import os
    >>> import tempfile
    >>> import dask
    >>> import dask.array as da
    >>> import numpy as np
    >>> from slidemask import median_blur
    >>> tmp = tempfile.TemporaryDirectory()
    >>> grey = da.from_array(np.zeros((4, 4), dtype=np.uint8), chunks=2)
    >>> with dask.config.set({"temporary-directory": tmp.name, "slidemask.scratch-memory": 0}):
    ...     smooth = median_blur(grey, 3)
    ...     int(smooth.sum().compute())  # nothing held in memory: every chunk is a file
    0
    >>> len(os.listdir(tmp.name))  # the scratch copy of ``grey`` with its edge strips
    1
    >>> release(smooth)
    >>> os.listdir(tmp.name)
    []
    >>> tmp.cleanup()
    """
    with _HELD_LOCK:
        idle = [f for f in _folders_of(collections) if not _USERS.get(f.path)]
    for folder in idle:
        folder.remove()


def _folders_of(collections: tuple[Any, ...]) -> list[ScratchFolder]:
    """The live scratch folders that the graphs of ``collections`` write."""
    found: dict[str, ScratchFolder] = {}
    for collection in collections:
        graph = getattr(collection, "__dask_graph__", lambda: None)()
        layers = getattr(graph, "layers", {})
        for name in layers:
            folder = _LIVE.get(name) if isinstance(name, str) else None
            if folder is not None:
                found[folder.path] = folder
    return list(found.values())


_USERS: dict[str, int] = {}
"""Computations inside :func:`in_use` now reading each scratch folder (by path)."""


@contextlib.contextmanager
def in_use(*collections: Any) -> Iterator[None]:
    """Compute ``collections`` inside: :func:`release` leaves their scratch folders alone until
    the block ends, and at its end they are released (when no other block still uses them).

    Two writers in two threads whose masks share a step (the same input and operation: one
    scratch folder) would otherwise remove it under each other's reads.

    Parameters
    ----------
    *collections : dask collection
        Results of slidemask's operations (dask arrays); other objects are ignored.

    Examples
    --------
    >>> import dask.array as da
    >>> import numpy as np
    >>> from slidemask import fill_holes
    >>> mask = fill_holes(da.from_array(np.eye(4, dtype=bool), chunks=2))
    >>> with in_use(mask):
    ...     int(mask.sum().compute())
    4
    >>> held_bytes()
    0
    """
    folders = _folders_of(collections)
    with _HELD_LOCK:
        for folder in folders:
            _USERS[folder.path] = _USERS.get(folder.path, 0) + 1
    try:
        yield
    finally:
        idle = []
        with _HELD_LOCK:
            for folder in folders:
                _USERS[folder.path] -= 1
                if not _USERS[folder.path]:
                    del _USERS[folder.path]
                    idle.append(folder)
        for folder in idle:  # as release() would, without walking the graphs again
            folder.remove()


# ----------------------------------------------------------------------------------------------
# Storing chunks
# ----------------------------------------------------------------------------------------------


class _Store:
    """Task: store a chunk (and strips); return ``summarize(tile, offset)`` in a 1x1 object
    array, or None when there is nothing to summarize."""

    def __init__(
        self,
        folder: ScratchFolder,
        depth: int,
        summarize: Callable[[np.ndarray, tuple[int, int]], tuple[Any, np.ndarray]] | None,
    ) -> None:
        self.folder = folder
        self.depth = depth
        self.summarize = summarize

    def __call__(
        self, tile: np.ndarray, *, location: tuple[int, ...], offset: tuple[int, ...]
    ) -> np.ndarray:
        i, j = location[:2]
        out = np.empty((1, 1), dtype=object)
        if self.summarize is not None:
            out[0, 0], tile = self.summarize(tile, offset[:2])  # type: ignore[arg-type]
        self.folder.write(i, j, tile, depth=self.depth)
        return out


def stores(
    value: da.Array,
    label: str,
    *,
    depth: int = 0,
    summarize: Callable[[np.ndarray, tuple[int, int]], tuple[Any, np.ndarray]] | None = None,
) -> tuple[da.Array, ScratchFolder]:
    """The lazy store of every chunk of a 2-D ``value``, and the folder the chunks go to.

    Pass 1 of a global operation: each task computes one chunk of ``value``, writes it to
    scratch and returns only a small record, so no chunk is held in memory for pass 2
    (:func:`stored_reads`).

    Parameters
    ----------
    value : dask.array.Array
        2-D, in the pixels of its level; or with trailing axes (channels), each one chunk,
        stored whole per (row, col) chunk (``depth`` 0 only).
    label : str
        Names the graph layer and the folder (``slidemask-scratch-<label>-<hex>``).
    depth : int
        Also store each chunk's edge strips of this width (for :func:`map_windows`).
    summarize : callable, optional
        ``summarize(tile, offset) -> (record, tile_to_store)``, run in the task that stores
        the chunk (``offset``: the chunk's first (row, col) in pixels of ``value``); what it
        returns as the tile is stored.

    Returns
    -------
    grid : dask.array.Array
        Object array with one element per chunk (shape ``value.numblocks``):
        ``summarize``'s record, else None.
    folder : ScratchFolder
        Where the chunks go (under :func:`scratch_root`); removed by :func:`release` or when
        the last graph using it is garbage-collected.

    Examples
    --------
    >>> import tempfile
    >>> import dask
    >>> import dask.array as da
    >>> import numpy as np
    >>> def chunk_sum(tile, offset):
    ...     return (offset, int(tile.sum())), tile
    >>> tmp = tempfile.TemporaryDirectory()
    >>> value = da.from_array(np.arange(16, dtype=np.uint8).reshape(4, 4), chunks=2)
    >>> with dask.config.set({"temporary-directory": tmp.name}):
    ...     grid, folder = stores(value, "demo", summarize=chunk_sum)
    >>> grid.compute().tolist()
    [[((0, 0), 10), ((0, 2), 18)], [((2, 0), 42), ((2, 2), 50)]]
    >>> tmp.cleanup()
    """
    nbr, nbc = value.numblocks[:2]
    name = f"slidemask-{label}-store-{tokenize(value.name, depth, summarize)}"
    # the same store built twice (two masks that start with the same steps) has the same
    # graph key: it gets the same folder, or the graphs of both, computed together, would
    # read from a folder that the one store task they share never wrote
    folder = _LIVE.get(name)
    if folder is None or os.path.dirname(folder.path) != scratch_root():
        # (the setting read now too: a bad value fails here, not in a task)
        folder = ScratchFolder.new(
            label, hold=value.nbytes <= HELD_ARRAY_BYTES and scratch_memory() > 0
        )
    trailing = tuple(range(2, value.ndim))
    grid = map_located(
        _Store(folder, depth, summarize), value,
        chunks=((1,) * nbr, (1,) * nbc), dtype=object, meta=_OBJ_META, name=name,
        **({"drop_axis": trailing} if trailing else {}),
    )
    _LIVE[name] = folder
    return grid, folder


class _Read:
    """Task: chunk (i, j) read back, optionally passed through ``apply(tile, gate_value)``."""

    def __init__(
        self,
        folder: ScratchFolder,
        chunks: tuple[tuple[int, ...], ...],
        dtype: np.dtype,
        apply: Callable[[np.ndarray, Any], np.ndarray] | None,
        tail: tuple[int, ...] = (),
    ) -> None:
        self.folder = folder
        self.chunks = chunks
        self.dtype = dtype
        self.apply = apply
        self.tail = tail

    def __call__(self, i: int, j: int, gate: Any) -> np.ndarray:
        shape = (self.chunks[0][i], self.chunks[1][j], *self.tail)
        tile = self.folder.read(i, j, shape, self.dtype)
        return tile if self.apply is None else self.apply(tile, gate)


def stored_reads(
    folder: ScratchFolder,
    store_grid: da.Array,
    like: da.Array,
    *,
    gate: Any = None,
    apply: Callable[[np.ndarray, Any], np.ndarray] | None = None,
    dtype: Any = None,
    label: str,
    tail: tuple[int, ...] = (),
    pointwise: bool = False,
) -> da.Array:
    """Read the chunks that ``store_grid`` wrote (a dask array of ``like``'s chunks).

    Pass 2 of a global operation: each task waits for its own store task, or, with ``gate``,
    for the decision that the merge of pass 1 made, reads its chunk back and applies it.

    Parameters
    ----------
    folder : ScratchFolder
        The folder :func:`stores` returned.
    store_grid : dask.array.Array
        The grid :func:`stores` returned.
    like : dask.array.Array
        The stored array: its chunks, trailing axes (channels) and dtype describe the files.
    gate : dask.array.Array, optional
        One element per chunk (e.g. per-chunk lookup tables) or 0-d (e.g. a threshold),
        computed from ``store_grid`` (so it runs after every store it needs): each read
        waits for its element instead of its store task, and passes it to
        ``apply(tile, gate_element)``.
    apply : callable, optional
        ``apply(tile, element) -> ndarray`` of the tile's rows and cols; ``element`` is the
        gate's, else the chunk's record in ``store_grid``.
    dtype : numpy.dtype, optional
        Output dtype (default ``like.dtype``).
    label : str
        Names the graph layer.
    tail : tuple of int
        Trailing axes of ``apply``'s output (e.g. ``(3,)`` for channels), each one chunk;
        none by default.
    pointwise : bool
        ``apply`` computes each output pixel from the same pixel of the tile: a per-pixel
        step of the result is then computed in the same read (:data:`READ_ATTR`).

    Returns
    -------
    dask.array.Array
        ``(rows, cols, *tail)`` with ``like``'s row and column chunks; lazy.

    Examples
    --------
    >>> import tempfile
    >>> import dask
    >>> import dask.array as da
    >>> import numpy as np
    >>> tmp = tempfile.TemporaryDirectory()
    >>> value = da.from_array(np.arange(16, dtype=np.uint8).reshape(4, 4), chunks=2)
    >>> with dask.config.set({"temporary-directory": tmp.name}):
    ...     grid, folder = stores(value, "demo")
    >>> back = stored_reads(folder, grid, value, label="demo")
    >>> back.chunks == value.chunks, bool((back.compute() == value.compute()).all())
    (True, True)
    >>> tmp.cleanup()
    """
    nbr, nbc = like.numblocks[:2]
    out_dtype = np.dtype(like.dtype if dtype is None else dtype)
    reader = _Read(folder, like.chunks[:2], np.dtype(like.dtype), apply, tuple(like.shape[2:]))
    waits = store_grid if gate is None else gate
    name = f"slidemask-{label}-{tokenize(store_grid.name, waits.name, apply, str(out_dtype))}"
    def wait(i: int, j: int) -> tuple[Any, ...]:
        return (waits.name,) if waits.ndim == 0 else (waits.name, i, j)

    zeros = (0,) * len(tail)
    dsk: dict[Any, Any] = {
        (name, i, j, *zeros): (reader, i, j, wait(i, j))
        for i in range(nbr) for j in range(nbc)
    }
    graph = HighLevelGraph.from_collections(name, dsk, dependencies=[waits])  # type: ignore[list-item]
    out = da.Array(graph, name, chunks=like.chunks[:2] + tuple((n,) for n in tail),
                   dtype=out_dtype, meta=np.empty((0,) * (2 + len(tail)), out_dtype))
    if pointwise and apply is not None:
        setattr(out, READ_ATTR, StoredRead(folder, store_grid, like, gate, apply))
    setattr(out, _SOURCE_ATTR, _Source(reader, waits))
    return out


_SOURCE_ATTR = "_slidemask_read_source"
"""Attribute of every :func:`stored_reads` result: its :class:`_Source` (:func:`fold_reads`)."""


@dataclass(frozen=True)
class _Source:
    """What a :func:`stored_reads` result's task for chunk (i, j) calls, and waits for."""

    reader: _Read
    waits: da.Array

    def wait(self, i: int, j: int) -> tuple[Any, ...]:
        return (self.waits.name,) if self.waits.ndim == 0 else (self.waits.name, i, j)


class _Fold:
    """Task: ``fold(acc, k, tile_k)`` over the stored arrays' chunk (i, j), read one at a time
    (``acc`` is None for the first)."""

    def __init__(
        self, readers: tuple[_Read, ...], fold: Callable[[Any, int, np.ndarray], Any],
        finish: Callable[[Any], np.ndarray] | None,
    ) -> None:
        self.readers, self.fold, self.finish = readers, fold, finish

    def __call__(self, i: int, j: int, *gates: Any) -> Any:
        acc = None
        for k, (reader, gate) in enumerate(zip(self.readers, gates, strict=True)):
            acc = self.fold(acc, k, reader(i, j, gate))  # the tile is dropped before the next
        return acc if self.finish is None else self.finish(acc)


def fold_reads(
    arrays: list[da.Array],
    fold: Callable[[Any, int, np.ndarray], Any],
    *,
    dtype: Any,
    label: str,
    finish: Callable[[Any], np.ndarray] | None = None,
    token: Any = None,
) -> da.Array | None:
    """One task per chunk that reads the chunk of each of ``arrays`` in turn and folds it in.

    Several arrays read back from scratch and combined pixel by pixel (a dask expression over
    them) hold every input chunk of a task at once: dask computes a task's inputs before it
    runs. Folded, a task holds the accumulator and one input chunk (the eight masks of
    ``configs/qc.yaml`` packed into bits: two chunks' worth of memory instead of eight).

    Parameters
    ----------
    arrays : list of dask.array.Array
        2-D :func:`stored_reads` results with the same chunks.
    fold : callable
        ``fold(acc, k, tile) -> acc``: ``tile`` is the chunk of ``arrays[k]``, ``acc`` what the
        previous call returned (None for ``k == 0``). The last result, through ``finish``
        when given, is the chunk of the output, of the chunk's rows and cols.
    dtype : numpy.dtype
        The output's dtype.
    label : str
        Names the graph layer.
    finish : callable, optional
        ``finish(acc) -> tile``, applied to the last result.
    token : optional
        What, besides the arrays, ``fold`` and ``finish`` depend on (e.g. a lookup table),
        for the layer's name; by default ``fold`` and ``finish`` themselves are tokenized.

    Returns
    -------
    dask.array.Array or None
        The folded array, lazy; None when an array is not a :func:`stored_reads` result or
        the chunks differ (the caller then combines the arrays with dask).
    """
    sources = [getattr(a, _SOURCE_ATTR, None) for a in arrays]
    if not arrays or any(s is None for s in sources) \
            or any(a.ndim != 2 or a.chunks != arrays[0].chunks for a in arrays):
        return None
    sources_ = [s for s in sources if s is not None]
    task = _Fold(tuple(s.reader for s in sources_), fold, finish)
    out_dtype = np.dtype(dtype)
    what = (fold, finish) if token is None else token
    name = f"slidemask-{label}-{tokenize(*(a.name for a in arrays), what, str(out_dtype))}"
    nbr, nbc = arrays[0].numblocks
    dsk: dict[Any, Any] = {
        (name, i, j): (task, i, j, *(s.wait(i, j) for s in sources_))
        for i in range(nbr) for j in range(nbc)
    }
    waits = list({s.waits.name: s.waits for s in sources_}.values())
    graph = HighLevelGraph.from_collections(name, dsk, dependencies=waits)  # type: ignore[arg-type]
    return da.Array(graph, name, chunks=arrays[0].chunks, dtype=out_dtype,
                    meta=np.empty((0, 0), out_dtype))


READ_ATTR = "_slidemask_stored_read"
"""Attribute of a :func:`stored_reads` result whose ``apply`` is per pixel (``pointwise``:
the optical density or white balance of the stored image by a lazy glass estimate): its
:class:`StoredRead`, so that a per-pixel step of it is computed in the same read
(:meth:`StoredRead.then`)."""


@dataclass(frozen=True)
class StoredRead:
    """How a per-pixel :func:`stored_reads` result was read: what reads it again."""

    folder: ScratchFolder
    store_grid: da.Array
    like: da.Array
    gate: Any
    apply: Callable[[np.ndarray, Any], np.ndarray]

    def then(
        self, kernel: Callable[[np.ndarray], np.ndarray], dtype: Any, tail: tuple[int, ...],
        label: str,
    ) -> da.Array:
        """``kernel(apply(tile, element))`` of each chunk, in one read task, with output
        trailing axes ``tail``. The per-pixel step is computed where the value it reads is,
        which then never waits in memory for its other readers (three masks threshold one
        optical density; two pen masks read one white balance). Each reader computes
        ``apply`` again: per pixel, cheap beside holding its result."""
        return stored_reads(self.folder, self.store_grid, self.like, gate=self.gate,
                            apply=_Then(self.apply, kernel), dtype=dtype, label=label,
                            tail=tail, pointwise=True)


@dataclass(frozen=True)
class _Then:
    first: Callable[[np.ndarray, Any], np.ndarray]
    kernel: Callable[[np.ndarray], np.ndarray]

    def __call__(self, tile: np.ndarray, element: Any) -> np.ndarray:
        return self.kernel(self.first(tile, element))


# ----------------------------------------------------------------------------------------------
# Halo windows
# ----------------------------------------------------------------------------------------------


class _Window:
    """Task: chunk (i, j)'s window (grown by ``depth``, clipped to the image) assembled from
    the stored chunks and strips, passed through ``chain``, cropped back to the chunk."""

    def __init__(
        self,
        folder: ScratchFolder,
        chunks: tuple[tuple[int, ...], ...],
        dtype: np.dtype,
        depth: int,
        chain: Callable[[np.ndarray], np.ndarray],
        out_dtype: np.dtype,
    ) -> None:
        self.folder = folder
        self.chunks = chunks
        self.starts = tuple(np.concatenate([[0], np.cumsum(c)]).astype(int) for c in chunks)
        self.dtype = dtype
        self.depth = depth
        self.chain = chain
        self.out_dtype = out_dtype

    def __call__(self, i: int, j: int, *_waits: Any) -> np.ndarray:
        d = self.depth
        rs, cs = self.starts
        y0, y1, x0, x1 = int(rs[i]), int(rs[i + 1]), int(cs[j]), int(cs[j + 1])
        wy0, wy1 = max(0, y0 - d), min(int(rs[-1]), y1 + d)
        wx0, wx1 = max(0, x0 - d), min(int(cs[-1]), x1 + d)
        window = np.empty((wy1 - wy0, wx1 - wx0), dtype=self.dtype)
        for a in _overlapping(rs, wy0, wy1):
            for b in _overlapping(cs, wx0, wx1):
                ay0, ay1, bx0, bx1 = int(rs[a]), int(rs[a + 1]), int(cs[b]), int(cs[b + 1])
                py0, py1 = max(ay0, wy0), min(ay1, wy1)
                px0, px1 = max(bx0, wx0), min(bx1, wx1)
                part = self._part(a, b, py0 - ay0, py1 - ay0, px0 - bx0, px1 - bx0)
                window[py0 - wy0 : py1 - wy0, px0 - wx0 : px1 - wx0] = part
        out = self.chain(window)
        return np.ascontiguousarray(out[y0 - wy0 : y1 - wy0, x0 - wx0 : x1 - wx0]).astype(
            self.out_dtype, copy=False
        )

    def _part(self, a: int, b: int, r0: int, r1: int, c0: int, c1: int) -> np.ndarray:
        """Rows r0:r1, cols c0:c1 of chunk (a, b): from an edge strip when it lies in one."""
        h, w = self.chunks[0][a], self.chunks[1][b]
        d = self.depth
        if d and d < h and r1 <= d:
            return self.folder.read(a, b, (d, w), self.dtype, ".top")[r0:r1, c0:c1]
        if d and d < h and r0 >= h - d:
            strip = self.folder.read(a, b, (d, w), self.dtype, ".bottom")
            return strip[r0 - (h - d) : r1 - (h - d), c0:c1]
        if d and d < w and c1 <= d:
            return self.folder.read(a, b, (h, d), self.dtype, ".left")[r0:r1, c0:c1]
        if d and d < w and c0 >= w - d:
            strip = self.folder.read(a, b, (h, d), self.dtype, ".right")
            return strip[r0:r1, c0 - (w - d) : c1 - (w - d)]
        return self.folder.read(a, b, (h, w), self.dtype)[r0:r1, c0:c1]


def _overlapping(starts: np.ndarray, lo: int, hi: int) -> range:
    """Indices of the chunks (first offsets ``starts``, total last) that ``[lo, hi)`` touches,
    clipped to the array."""
    lo, hi = max(lo, 0), min(hi, int(starts[-1]))
    first = int(np.searchsorted(starts, lo, side="right")) - 1
    last = int(np.searchsorted(starts, hi, side="left")) - 1
    return range(max(first, 0), max(last, first) + 1)


def map_windows(
    value: da.Array,
    chain: Callable[[np.ndarray], np.ndarray],
    depth: int,
    *,
    dtype: Any,
    label: str,
) -> da.Array:
    """``chain`` applied to halo windows of a 2-D ``value``, equal to ``chain(whole value)``.

    A single-chunk ``value`` is mapped directly; otherwise ``value`` is stored to scratch
    (with edge strips of width ``depth``) and each output chunk reads its window back
    (module notes): it waits only for the store tasks of the chunks its window touches, so
    memory does not grow with the slide's width.

    Parameters
    ----------
    value : dask.array.Array
        2-D, in the pixels of its level.
    chain : callable
        ``chain(window) -> array`` of the window's shape, exact ``depth`` pixels inside each
        window edge and applying its own border rule at true image edges (the contract of
        every kernel in :mod:`slidemask.kernels`). Picklable for process workers.
    depth : int
        The chain's halo in pixels of ``value``.
    dtype : numpy.dtype or type
        Output dtype.
    label : str
        Names the graph layers and the scratch folder.

    Returns
    -------
    dask.array.Array
        ``value``'s shape and chunks, of ``dtype``; lazy.

    Examples
    --------
    >>> import functools
    >>> import tempfile
    >>> import cv2
    >>> import dask
    >>> import dask.array as da
    >>> import numpy as np
    >>> from slidemask.kernels.filters import median_blur
    >>> tmp = tempfile.TemporaryDirectory()
    >>> grey = np.random.default_rng(0).integers(0, 256, (8, 8), dtype=np.uint8)
    >>> with dask.config.set({"temporary-directory": tmp.name}):
    ...     out = map_windows(da.from_array(grey, chunks=3),
    ...                       functools.partial(median_blur, ksize=3), 1,
    ...                       dtype=np.uint8, label="median")
    >>> bool((out.compute() == cv2.medianBlur(grey, 3)).all())
    True
    >>> release(out)
    >>> tmp.cleanup()
    """
    out_dtype = np.dtype(dtype)
    meta = np.empty((0, 0), out_dtype)
    if value.numblocks == (1, 1) or depth == 0 or value.size == 0:
        return da.map_blocks(chain, value, dtype=out_dtype, meta=meta)
    grid, folder = stores(value, label, depth=depth)
    task = _Window(folder, value.chunks, np.dtype(value.dtype), depth, chain, out_dtype)
    rs, cs = task.starts
    nbr, nbc = value.numblocks
    name = f"slidemask-{label}-{tokenize(grid.name, chain, depth, str(out_dtype))}"
    dsk: dict[Any, Any] = {}
    for i in range(nbr):
        rows = _overlapping(rs, int(rs[i]) - depth, int(rs[i + 1]) + depth)
        for j in range(nbc):
            cols = _overlapping(cs, int(cs[j]) - depth, int(cs[j + 1]) + depth)
            waits = [(grid.name, a, b) for a in rows for b in cols]
            dsk[(name, i, j)] = (task, i, j, *waits)
    graph = HighLevelGraph.from_collections(name, dsk, dependencies=[grid])  # type: ignore[list-item]
    return da.Array(graph, name, chunks=value.chunks, dtype=out_dtype, meta=meta)

