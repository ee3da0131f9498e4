"""Which slides a batch run processes, and where each one's output goes.

:func:`expand_inputs` turns what a user typed after ``--input`` (files, directories, glob
patterns, manifests) into one ordered list of slide paths. :func:`output_paths` maps each slide
to ``<output_dir>/<name>.zarr`` with a name that cannot leave ``output_dir`` and that is unique
within the run, and :func:`extra_paths_for` names the extra outputs beside it
(``<name>.ome.zarr``, ``<name>.geojson``, ``<name>.png``, ``<name>.json``). Nothing here opens a
slide: a missing or unreadable slide is the run's business, reported per slide, so one bad
entry never stops the others from being listed.
"""

from __future__ import annotations

import csv
import glob
import hashlib
import logging
import os
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path, PurePath

from slidemask.errors import ConfigError

log = logging.getLogger("slidemask")

__all__ = [
    "EXTRA_SUFFIXES",
    "MANIFEST_SUFFIXES",
    "SLIDE_SUFFIXES",
    "expand_inputs",
    "expand_locations",
    "extra_paths_for",
    "is_dicom_folder",
    "is_slide_file",
    "output_path_for",
    "output_paths",
    "safe_output_name",
]

SLIDE_SUFFIXES: tuple[str, ...] = (
    ".svs", ".tif", ".tiff", ".ndpi", ".qptiff", ".btf", ".tf8", ".scn", ".bif",
    ".mrxs", ".vms", ".vmu", ".svslide",
)
"""Lower-case file-name endings a directory or glob is searched for (``.ome.tif`` ends in
``.tif``); explicitly named files are taken whatever their ending. A folder holding DICOM
instances (``.dcm``) is one slide (:func:`is_dicom_folder`)."""

MANIFEST_SUFFIXES: tuple[str, ...] = (".txt", ".lst", ".csv")
"""Endings of manifest files: ``.txt``/``.lst`` hold one path per line, ``.csv`` a ``path``
column."""

EXTRA_SUFFIXES: Mapping[str, str] = {
    "ome_zarr": ".ome.zarr",
    "geojson": ".geojson",
    "preview": ".png",
    "summary": ".json",
}
"""File-name ending of each extra output (:class:`slidemask.config.Outputs`), which replaces
the ``.zarr`` of the mask's name."""

_GLOB_CHARS = frozenset("*?[")
# Characters never kept in an output name: path separators, NUL, and the ones Windows and SMB
# shares reject, so the same output tree can be copied anywhere.
_UNSAFE_NAME_CHARS = frozenset('/\\:*?"<>|\x00')
_MAX_NAME_BYTES = 200  # leaves room for "-<hash>" and ".zarr" under the usual 255-byte limit
_FALLBACK_NAME = "slide"


def is_slide_file(path: str | os.PathLike[str]) -> bool:
    """Whether a file name ends in one of :data:`SLIDE_SUFFIXES` (case-insensitive)."""
    return os.fspath(path).lower().endswith(SLIDE_SUFFIXES)


def is_dicom_folder(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a folder with DICOM instances (``*.dcm``) directly inside: a DICOM
    WSI slide, opened as one pyramid (:func:`slidemask.io.open_slide`)."""
    try:
        with os.scandir(path) as entries:
            return any(
                e.name.lower().endswith(".dcm") and not e.name.startswith(".") and e.is_file()
                for e in entries
            )
    except OSError:
        return False


def expand_inputs(
    items: Sequence[str | os.PathLike[str]], *, recursive: bool = False
) -> list[Path]:
    """Expand command-line inputs into an ordered list of absolute slide paths.

    Parameters
    ----------
    items
        Each item is tried in this order:

        * an existing **directory**: its slide files (:data:`SLIDE_SUFFIXES`, hidden files
          skipped), sorted by path; sub-directories only when ``recursive`` is true. Entries
          named like slides that are not files (a link to a missing file; without
          ``recursive``, a folder) are kept too, so that the run reports them as failed;
        * an existing **manifest** (:data:`MANIFEST_SUFFIXES`): ``.txt``/``.lst`` list one path
          per line (blank lines and lines starting with ``#`` ignored), ``.csv`` has a column
          named ``path``; relative entries are relative to the manifest's folder and entries are
          taken literally (no glob expansion);
        * any other existing **file**: taken as a slide, whatever its ending;
        * a **glob pattern** (contains ``*``, ``?`` or ``[``; ``**`` matches across folders):
          the matching slide files, sorted;
        * anything else is a slide path that does not exist. It is kept, so the run reports it
          as failed ("file not found") instead of dropping it silently.

        ``~`` is expanded in items and manifest entries.
    recursive
        Search directories recursively.

    Returns
    -------
    list of Path
        Absolute, lexically normalised paths (symbolic links are not resolved, so a linked
        slide keeps its link's name); the first occurrence of a duplicate wins.

    Raises
    ------
    ConfigError
        A directory without slide files, a glob matching no slide file, a manifest that is
        missing, unreadable, empty or (CSV) has no ``path`` column. The message names the item.
    """
    seen: set[Path] = set()
    out: list[Path] = []
    for item in items:
        for path in _expand_item(os.fspath(item), recursive=recursive):
            if path not in seen:
                seen.add(path)
                out.append(path)
    return out


def expand_locations(
    items: Sequence[str | os.PathLike[str]], *, recursive: bool = False
) -> list[PurePath]:
    """:func:`expand_inputs`, where items may also be URLs (``s3://``, ``gs://``, ...).

    A URL ending in ``/`` or naming a prefix lists the slide files under it like a folder
    (``recursive``: below it too); a URL with ``*``, ``?`` or ``[`` is a glob; any other URL
    is one slide. ``file://`` URLs are local paths. Remote items come back as
    :class:`slidemask.storage.URLPath` (``str()`` is the URL), local ones as :class:`Path`.

    Raises
    ------
    ConfigError
        As :func:`expand_inputs`; also a prefix or glob without slide files, or a listing
        that fails (the message names the URL, never credentials).
    """
    from slidemask import storage

    seen: set[PurePath] = set()
    out: list[PurePath] = []
    for item in items:
        text = os.fspath(item)
        found: list[PurePath]
        if storage.is_url(text) and storage.local_path(text) is None:
            found = list(_expand_url(text, recursive=recursive))
        else:
            local = storage.local_path(text) if storage.is_url(text) else None
            found = list(_expand_item(local if local is not None else text, recursive=recursive))
        for path in found:
            if path not in seen:
                seen.add(path)
                out.append(path)
    return out


def _expand_url(url: str, *, recursive: bool) -> list[PurePath]:
    from slidemask import storage

    shown = storage.display(url)
    scheme, rest = url.split("://", 1)
    if scheme.lower() in {"http", "https"}:
        if "?" in rest or "#" in rest:
            # a query (a presigned URL's signature) or fragment: one file, never a pattern
            return [storage.URLPath(url)]
    try:
        if _GLOB_CHARS & set(rest):
            names = storage.glob_urls(url)
            kind = "pattern"
        elif url.endswith("/") or storage.is_dir(url):
            names = storage.list_files(url, recursive=recursive)
            kind = "prefix"
        else:
            return [storage.URLPath(url)]
    except Exception as exc:  # noqa: BLE001 - storage errors name the URL, not credentials
        raise ConfigError(f"input {shown!r} cannot be listed: {type(exc).__name__}") from exc
    slides: list[PurePath] = [
        storage.URLPath(n) for n in names
        if is_slide_file(n) and not n.rsplit("/", 1)[-1].startswith(".")
    ]
    if not slides:
        raise ConfigError(
            f"input {kind} {shown!r} holds no slide files (looked for {', '.join(SLIDE_SUFFIXES)})"
        )
    return slides


def _absolute(path: str | os.PathLike[str], base: Path | None = None) -> Path:
    p = Path(os.path.expanduser(os.fspath(path)))
    if not p.is_absolute():
        p = (base if base is not None else Path.cwd()) / p
    return Path(os.path.normpath(p))


def _expand_item(item: str, *, recursive: bool) -> list[Path]:
    if not item.strip():
        raise ConfigError("input: an empty string is not a slide path, directory or pattern")
    path = _absolute(item)
    if path.is_dir():
        if is_dicom_folder(path):
            _warn_unread_beside_dicom(path)
            return [path]  # a DICOM WSI: its instances are one slide
        return _scan_directory(path, item, recursive=recursive)
    if path.is_file():
        if path.name.lower().endswith(MANIFEST_SUFFIXES):
            return _read_manifest(path)
        return [path]
    if _GLOB_CHARS & set(item):
        return _expand_glob(item)
    if path.name.lower().endswith(MANIFEST_SUFFIXES):
        raise ConfigError(f"input manifest {item!r} does not exist")
    return [path]


def _warn_unread_beside_dicom(folder: Path) -> None:
    """Log the slide files in a DICOM WSI folder: the folder is one slide, they are not read."""
    try:
        others = sorted(p.name for p in folder.iterdir()
                        if not p.name.startswith(".") and is_slide_file(p.name) and p.is_file()
                        and not p.name.lower().endswith(".dcm"))
    except OSError:
        return
    if others:
        shown = ", ".join(others[:5]) + (f" and {len(others) - 5} more" if len(others) > 5 else "")
        log.warning(
            "%s holds DICOM instances (.dcm) and is read as one DICOM slide; the other slide "
            "files in it are not read: %s (give them as inputs of their own)", folder, shown,
        )


def _scan_directory(directory: Path, item: str, *, recursive: bool) -> list[Path]:
    walker: Iterable[Path] = directory.rglob("*") if recursive else directory.iterdir()
    found = sorted(
        p for p in walker
        if not p.name.startswith(".")
        and (
            (p.is_dir() and is_dicom_folder(p))  # a DICOM WSI folder is one slide
            # a slide's name on what is not a file (a link to a missing file; without
            # recursive, a folder): kept, so the run reports it instead of dropping it
            or (is_slide_file(p.name) and not (recursive and p.is_dir()))
        )
    )
    for folder in found:
        if folder.is_dir():
            _warn_unread_beside_dicom(folder)
    if not found:
        where = "or its sub-folders " if recursive else ""
        raise ConfigError(
            f"input directory {item!r} {where}holds no slide files "
            f"(looked for {', '.join(SLIDE_SUFFIXES)})"
        )
    return found


def _expand_glob(pattern: str) -> list[Path]:
    matches = sorted(glob.glob(os.path.expanduser(pattern), recursive=True))
    files = [m for m in matches if os.path.isfile(m)]
    slides = [_absolute(m) for m in files if is_slide_file(m)]
    # DICOM instances (*.dcm) are parts of one slide: their folder, once
    dicom = {_absolute(os.path.dirname(m) or ".") for m in files if m.lower().endswith(".dcm")}
    slides += sorted(d for d in dicom if is_dicom_folder(d))
    if not slides:
        detail = (
            f"it matched {len(files)} file(s), none ending in {', '.join(SLIDE_SUFFIXES)}"
            if files else "it matched nothing"
        )
        raise ConfigError(f"input pattern {pattern!r} names no slide files: {detail}")
    return slides


def _read_manifest(manifest: Path) -> list[Path]:
    try:
        # utf-8-sig: spreadsheet programs often save CSV with a byte-order mark
        text = manifest.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"input manifest {str(manifest)!r} cannot be read: {exc}") from exc
    if manifest.suffix.lower() == ".csv":
        entries = _csv_entries(manifest, text)
    else:
        entries = [
            s for s in (line.strip() for line in text.splitlines())
            if s and not s.startswith("#")
        ]
    if not entries:
        raise ConfigError(f"input manifest {str(manifest)!r} lists no slides")
    return [_absolute(entry, manifest.parent) for entry in entries]


def _csv_entries(manifest: Path, text: str) -> list[str]:
    reader = csv.DictReader(text.splitlines())
    columns = {name.strip(): name for name in (reader.fieldnames or []) if name is not None}
    if "path" not in columns:
        raise ConfigError(
            f"input manifest {str(manifest)!r} has no 'path' column "
            f"(columns: {sorted(columns) or 'none'})"
        )
    key = columns["path"]
    return [value.strip() for row in reader if (value := row.get(key)) and value.strip()]


def safe_output_name(name: str) -> str:
    """Make a slide name safe as one file name inside an output directory.

    Unicode letters are kept (NFC-normalised); path separators, NUL, control characters and
    the characters Windows rejects become ``_``; leading dots become ``_`` (no hidden files, no
    ``.``/``..``); trailing dots and spaces are dropped; the result is cut to 200 UTF-8 bytes.
    An empty result becomes ``"slide"``.
    """
    name = unicodedata.normalize("NFC", name)
    chars = [
        "_" if c in _UNSAFE_NAME_CHARS or unicodedata.category(c) in {"Cc", "Cf", "Zl", "Zp"}
        else c
        for c in name
    ]
    safe = "".join(chars).strip().rstrip(". ")
    stripped = safe.lstrip(".")
    safe = "_" * (len(safe) - len(stripped)) + stripped
    encoded = safe.encode("utf-8")
    if len(encoded) > _MAX_NAME_BYTES:
        safe = encoded[:_MAX_NAME_BYTES].decode("utf-8", errors="ignore").rstrip(". ")
    safe = safe or _FALLBACK_NAME
    if safe.lower() in _RESERVED_NAMES:
        # the run report is <output>/report.json and .csv: a slide's summary must not replace it
        safe = f"{safe}_slide"
    return safe


_RESERVED_NAMES = frozenset({"report"})


def _check_suffix(suffix: str) -> None:
    if not suffix.startswith(".") or _UNSAFE_NAME_CHARS & set(suffix) or ".." in suffix:
        raise ConfigError(f"output suffix {suffix!r} must look like '.zarr'")


def output_path_for(
    slide_path: str | os.PathLike[str],
    output_dir: str | os.PathLike[str],
    suffix: str = ".zarr",
) -> Path:
    """``<output_dir>/<safe slide name><suffix>`` for one slide, always directly in output_dir.

    The name is :func:`slidemask.io.slide_name` made safe by :func:`safe_output_name`. Two
    slides with the same name map to the same path here; use :func:`output_paths` for a batch.
    """
    from slidemask.io import slide_name  # here: slidemask.io imports dask.array and tifffile

    _check_suffix(suffix)
    out = Path(output_dir) / (safe_output_name(slide_name(slide_path)) + suffix)
    # Belt and braces: the name has no separator and cannot be "." or "..".
    if out.parent != Path(output_dir):
        raise ConfigError(f"output name for {os.fspath(slide_path)!r} escapes {output_dir!r}")
    return out


def extra_paths_for(
    target: str | os.PathLike[str], extras: Iterable[str]
) -> dict[str, Path]:
    """Where each extra output of the mask ``<name>.zarr`` goes, beside it.

    Parameters
    ----------
    target
        The mask's path, ``<folder>/<name>.zarr`` (a name without ``.zarr`` is used whole).
    extras
        Keys of :data:`EXTRA_SUFFIXES`: ``"ome_zarr"``, ``"geojson"``, ``"preview"``,
        ``"summary"``.

    Returns
    -------
    dict
        ``{key: <folder>/<name><ending>}`` in the order of ``extras``: ``<name>.ome.zarr``,
        ``<name>.geojson``, ``<name>.png``, ``<name>.json``.

    Raises
    ------
    ValueError
        A key that is not an extra output; the message lists the known ones.
    """
    target = Path(target)
    stem = target.name.removesuffix(".zarr")
    paths: dict[str, Path] = {}
    for key in extras:
        if key not in EXTRA_SUFFIXES:
            raise ValueError(
                f"unknown extra output {key!r}; known: {', '.join(EXTRA_SUFFIXES)}"
            )
        paths[key] = target.parent / f"{stem}{EXTRA_SUFFIXES[key]}"
    return paths


def _path_hash(path: Path, length: int) -> str:
    return hashlib.sha256(os.fsencode(path)).hexdigest()[:length]


def output_paths(
    slides: Iterable[str | os.PathLike[str]],
    output_dir: str | os.PathLike[str],
    suffix: str = ".zarr",
) -> dict[Path, Path]:
    """Map each slide to a unique output path directly inside ``output_dir``.

    Slides whose safe names differ only by case (so they would collide on macOS/Windows file
    systems) or not at all each get ``-<8 hex digits>`` appended: the start of the SHA-256 of
    the slide's absolute path. The choice depends only on the set of slides, not their order,
    so a rerun with the same inputs maps every slide to the same output. Adding a slide whose
    name collides with an existing one renames that one's output too (a rerun then redoes it).

    Returns
    -------
    dict
        ``{absolute slide path: output path}`` in input order (duplicates collapsed).
    """
    from slidemask.io import slide_name

    _check_suffix(suffix)
    out_dir = Path(output_dir)
    paths = list(dict.fromkeys(_absolute(s) for s in slides))
    base = {p: safe_output_name(slide_name(p)) for p in paths}
    groups: dict[str, list[Path]] = {}
    for p in paths:
        groups.setdefault(base[p].casefold(), []).append(p)
    hashed = {p for p in paths if len(groups[base[p].casefold()]) > 1}
    names = {p: f"{base[p]}-{_path_hash(p, 8)}" if p in hashed else base[p] for p in paths}
    # A hashed name could equal another slide's plain name (plain names are unique among
    # themselves): lengthen the hashed ones involved until every name is unique.
    for length in (16, 64):
        taken: dict[str, int] = {}
        for name in names.values():
            taken[name.casefold()] = taken.get(name.casefold(), 0) + 1
        clashes = [p for p in hashed if taken[names[p].casefold()] > 1]
        if not clashes:
            break
        for p in clashes:
            names[p] = f"{base[p]}-{_path_hash(p, length)}"
    return {p: out_dir / (names[p] + suffix) for p in paths}

