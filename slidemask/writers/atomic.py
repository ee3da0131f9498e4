"""Atomic outputs: write under a hidden temporary name, publish by renaming when complete.

Every output slidemask writes (Zarr arrays, OME-Zarr groups, previews, summaries, GeoJSON) is
first written to a hidden sibling ``.<name>.partial-<hex>``; only a complete output is moved to
its final name, so an interrupted run never leaves a complete-looking result. An output being
replaced is first moved aside to ``.<name>.replaced-<hex>``, so the old one stays complete
until the new one is. :func:`leftovers` lists what a killed run can leave behind.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import IO, Any, BinaryIO, Literal, TextIO, overload

import dask
import numpy as np

from slidemask._version import package_version

__all__ = [
    "LEFTOVER_KINDS",
    "atomic_write",
    "check_attrs",
    "check_target",
    "jsonable",
    "leftovers",
    "mark_complete_and_publish",
    "looks_like_zarr",
    "package_version",
    "partial_outputs",
    "partial_path",
    "publish",
    "remove",
]

_PARTIAL_INFIX = ".partial-"

LEFTOVER_KINDS = ("partial", "replaced", "scratch")
"""Kinds of hidden temporaries ``.<output name>.<kind>-<hex>``: the writer's partial output,
the old output moved aside while being replaced, and the runner's scratch arrays."""


def jsonable(
    value: Any, where: str = "attrs", *, default: Callable[[Any], Any] | None = None
) -> Any:
    """``value`` as plain JSON types, for Zarr attributes, summaries and reports.

    Parameters
    ----------
    value : object
        Nested mappings, lists, tuples and sets of ``None``, bool, int, float, str, numpy
        scalars and arrays (as lists) and paths (as str). Mapping keys become str.
    where : str
        Where ``value`` sits, for the error message (``attrs.provenance.mpp``).
    default : callable, optional
        Called on any other object for its JSON form (``str``, say), as in
        :func:`json.dumps`; ``None`` raises instead.

    Returns
    -------
    object
        JSON types only: NaN becomes ``None`` and infinities the strings ``"inf"`` and
        ``"-inf"`` (JSON has neither), so ``json.dumps(..., allow_nan=False)`` accepts it.

    Raises
    ------
    TypeError
        An object of another type and no ``default``; the message names ``where``.

    Examples
    --------
    >>> import numpy as np
    >>> jsonable({"mpp": np.float32(0.5), "shape": (3, 4), "t": float("nan"), 1: np.arange(2)})
    {'mpp': 0.5, 'shape': [3, 4], 't': None, '1': [0, 1]}
    >>> jsonable({"x": object()})
    Traceback (most recent call last):
    ...
    TypeError: attrs.x: object has no JSON form
    >>> jsonable({"x": 1 + 2j}, default=str)
    {'x': '(1+2j)'}
    """
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, (int, np.integer)) and not isinstance(value, np.bool_):
        return int(value)
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, (float, np.floating)):
        number = float(value)
        if not math.isfinite(number):
            return None if math.isnan(number) else str(number)
        return number
    if isinstance(value, np.ndarray):
        return jsonable(value.tolist(), where, default=default)
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, Mapping):
        return {str(k): jsonable(v, f"{where}.{k}", default=default) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [jsonable(v, f"{where}[{i}]", default=default) for i, v in enumerate(value)]
    if default is not None:
        return jsonable(default(value), where)
    raise TypeError(f"{where}: {type(value).__name__} has no JSON form")


def check_attrs(attrs: Mapping[str, Any]) -> None:
    """Fail now, not after hours of computing, on attributes that cannot be stored.

    Parameters
    ----------
    attrs : mapping
        Attributes for a Zarr node; dask collections in them (computed later) are allowed.

    Raises
    ------
    ValueError
        A value has no JSON form.
    """

    def placeholder(value: Any) -> Any:
        if dask.is_dask_collection(value):
            return None
        if isinstance(value, Mapping):
            return {k: placeholder(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [placeholder(v) for v in value]
        return value

    try:
        json.dumps(jsonable(placeholder(attrs)), allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"attrs cannot be stored as JSON: {exc}") from exc


def partial_path(final: Path) -> Path:
    """A new hidden sibling name ``.<name>.partial-<hex>`` of ``final`` to write into."""
    return final.parent / f".{final.name}{_PARTIAL_INFIX}{uuid.uuid4().hex}"


@overload
def atomic_write(
    path: str | os.PathLike[str], *, binary: Literal[False] = ...
) -> AbstractContextManager[TextIO]: ...
@overload
def atomic_write(
    path: str | os.PathLike[str], *, binary: Literal[True]
) -> AbstractContextManager[BinaryIO]: ...
def atomic_write(
    path: str | os.PathLike[str], *, binary: bool = False
) -> AbstractContextManager[IO[Any]]:
    """Write one file all at once or not at all::

        with atomic_write(path) as fh:
            fh.write(text)

    The ``with`` block writes into a hidden sibling ``.<name>.partial-<hex>`` (UTF-8 text
    with newlines as written, or bytes when ``binary``); when it ends, the file is flushed,
    fsynced and renamed over ``path`` (``os.replace``: an existing file is replaced, and a
    reader sees the old file or the new one, never part of one). If the block raises, the
    partial file is removed and ``path`` is left as it was. The file gets the permissions
    ``open`` gives (0o666 less the umask). The folder must exist.

    Parameters
    ----------
    path : str or os.PathLike
        The final file.
    binary : bool
        Open the partial file for bytes instead of UTF-8 text.

    Returns
    -------
    contextlib.AbstractContextManager
        Yields the open partial file.

    Examples
    --------
    >>> import os
    >>> import tempfile
    >>> tmp = tempfile.TemporaryDirectory()
    >>> path = os.path.join(tmp.name, "report.json")
    >>> with atomic_write(path) as fh:
    ...     _ = fh.write("{}")
    >>> os.listdir(tmp.name)
    ['report.json']
    >>> tmp.cleanup()
    """
    return _atomic_write(Path(path), binary)


@contextmanager
def _atomic_write(final: Path, binary: bool) -> Iterator[IO[Any]]:
    partial = partial_path(final)
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    try:
        with (
            os.fdopen(fd, "wb") if binary else os.fdopen(fd, "w", encoding="utf-8", newline="")
        ) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(partial, final)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise


def partial_outputs(path: str | os.PathLike[str]) -> list[Path]:
    """Leftover temporary siblings of ``path`` from interrupted writes (never complete).

    Another process may still be writing one of them; remove them only when no other run
    writes the same output.

    Parameters
    ----------
    path : str or os.PathLike
        An output's final path.

    Returns
    -------
    list of pathlib.Path
        The ``.<name>.partial-<hex>`` siblings, sorted.

    Examples
    --------
    >>> import tempfile
    >>> from pathlib import Path
    >>> tmp = tempfile.TemporaryDirectory()
    >>> final = Path(tmp.name) / "s.zarr"
    >>> partial_path(final).mkdir()  # what a killed writer leaves
    >>> [p.name[:16] for p in partial_outputs(final)]
    ['.s.zarr.partial-']
    >>> tmp.cleanup()
    """
    final = Path(path)
    prefix = f".{final.name}{_PARTIAL_INFIX}"
    if not final.parent.is_dir():
        return []
    return sorted(p for p in final.parent.iterdir() if p.name.startswith(prefix))


def looks_like_zarr(path: Path) -> bool:
    """True when ``path`` holds a Zarr v3 (``zarr.json``) or v2 (``.zarray``/``.zgroup``) node."""
    return (
        (path / "zarr.json").is_file()
        or (path / ".zarray").is_file()
        or (path / ".zgroup").is_file()
    )


def check_target(final: Path, overwrite: bool) -> None:
    """Refuse an output target that exists (without ``overwrite``) or is not a Zarr store.

    A non-empty folder that is not a Zarr store is never replaced, even with ``overwrite``.

    Parameters
    ----------
    final : pathlib.Path
        The output's final path.
    overwrite : bool
        Whether an existing output may be replaced.

    Raises
    ------
    FileExistsError
        Either case; the message names ``final``.
    """
    if not (final.exists() or final.is_symlink()):
        return
    if not overwrite:
        raise FileExistsError(
            f"{final}: output exists; pass overwrite=True (CLI: --overwrite) to replace it"
        )
    if (
        final.is_dir()
        and not final.is_symlink()
        and any(final.iterdir())
        and not looks_like_zarr(final)
    ):
        # overwrite=True must never delete a directory that is not a previous output
        raise FileExistsError(
            f"{final}: exists and is not a Zarr store; refusing to replace it even with "
            "overwrite=True"
        )


def remove(path: Path) -> None:
    """Delete a file or a folder tree, ignoring what is already gone."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def publish(partial: Path, final: Path, overwrite: bool) -> None:
    """Move a complete ``partial`` output to ``final``.

    An existing output is replaced only if ``overwrite``, and stays complete at ``final``
    until the new one takes its place (it is renamed aside first, then removed).

    Parameters
    ----------
    partial : pathlib.Path
        The complete output under its temporary name (a sibling of ``final``).
    final : pathlib.Path
        Where it goes.
    overwrite : bool
        Replace an existing output (only a file or a Zarr store).

    Raises
    ------
    FileExistsError
        See :func:`check_target`.

    Examples
    --------
    >>> import os
    >>> import tempfile
    >>> from pathlib import Path
    >>> tmp = tempfile.TemporaryDirectory()
    >>> final = Path(tmp.name) / "s.txt"
    >>> partial = partial_path(final)
    >>> _ = partial.write_text("done")
    >>> publish(partial, final, overwrite=False)
    >>> os.listdir(tmp.name), final.read_text()
    (['s.txt'], 'done')
    >>> tmp.cleanup()
    """
    check_target(final, overwrite)
    if final.exists() or final.is_symlink():
        aside = final.parent / f".{final.name}.replaced-{uuid.uuid4().hex}"
        os.replace(final, aside)
        os.replace(partial, final)
        remove(aside)
    else:
        os.replace(partial, final)


def mark_complete_and_publish(
    partial: Path,
    final: Path,
    overwrite: bool,
    attrs: Mapping[str, Any],
    key: str,
    marker: Mapping[str, Any],
) -> str:
    """Mark the Zarr node at ``partial`` complete, with its attributes, and publish it.

    ``attrs`` plus ``{key: marker + complete}`` go into its ``zarr.json`` in one write, after
    all its chunks, then :func:`publish` moves it to ``final``.

    Parameters
    ----------
    partial, final : pathlib.Path
        The Zarr v3 node written under its temporary name, and where it goes.
    overwrite : bool
        Replace an existing output at ``final``.
    attrs : mapping
        JSON-able attributes (computed values only).
    key : str
        The writer's attribute namespace (``"slidemask"``).
    marker : mapping
        The writer's own facts (format and package version); ``completed_at`` and
        ``complete: true`` are added.

    Returns
    -------
    str
        ``final``.

    Raises
    ------
    FileExistsError, TypeError, ValueError
        ``final`` cannot be replaced, or ``attrs`` has no JSON form. On any failure the
        partial output is removed and the error re-raised.
    """
    import datetime as dt

    import zarr

    try:
        node = zarr.open(partial, mode="r+", zarr_format=3)
        payload = jsonable(attrs)
        payload[key] = {
            **marker,
            "completed_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "complete": True,
        }
        json.dumps(payload, allow_nan=False)  # fail here, not halfway through zarr.json
        node.update_attributes(payload)
        publish(partial, final, overwrite)
    except BaseException:
        remove(partial)
        raise
    return str(final)


def leftovers(output: Path) -> list[Path]:
    """Temporary siblings of ``output`` that a killed run can leave behind (never complete).

    Parameters
    ----------
    output : pathlib.Path
        An output's final path.

    Returns
    -------
    list of pathlib.Path
        The ``.<name>.<kind>-<hex>`` siblings of every :data:`LEFTOVER_KINDS`, sorted.

    Examples
    --------
    >>> import tempfile
    >>> from pathlib import Path
    >>> tmp = tempfile.TemporaryDirectory()
    >>> output = Path(tmp.name) / "s.zarr"
    >>> (Path(tmp.name) / ".s.zarr.scratch-0123abcd").mkdir()
    >>> [p.name for p in leftovers(output)]
    ['.s.zarr.scratch-0123abcd']
    >>> tmp.cleanup()
    """
    if not output.parent.is_dir():
        return []
    pattern = re.compile(rf"^\.{re.escape(output.name)}\.(?:{'|'.join(LEFTOVER_KINDS)})-[0-9a-f]+$")
    return sorted(p for p in output.parent.iterdir() if pattern.match(p.name))
