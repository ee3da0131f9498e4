"""The run report: one record per slide, written as ``report.json`` and ``report.csv``.

A :class:`SlideResult` is what one slide task returns (it is picklable, so it travels back from
``dask.distributed`` workers). :func:`write_report` writes both files atomically, so a reader
never sees a half-written report, even when the run is killed while writing it.
"""

from __future__ import annotations

import csv
import io
import json
import os
import socket
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path, PurePath
from typing import Any, Literal, get_args

from slidemask._version import package_version
from slidemask.writers.atomic import atomic_write, jsonable

__all__ = [
    "REPORT_CSV",
    "REPORT_JSON",
    "STATUSES",
    "SlideResult",
    "Status",
    "status_counts",
    "write_report",
]

Status = Literal["done", "skipped", "failed"]
STATUSES: tuple[str, ...] = get_args(Status)

REPORT_JSON = "report.json"
REPORT_CSV = "report.csv"
REPORT_FORMAT = 1
"""Version of the report layout; bumped when a field changes meaning or disappears."""

_CSV_COLUMNS = ("path", "output", "status", "error", "seconds", "config_hash")


def _as_location(value: str | os.PathLike[str]) -> PurePath:
    """A path as :class:`Path`; a URL (a slide or output on object storage) as
    :class:`slidemask.storage.URLPath`, whose ``str()`` is the URL."""
    if isinstance(value, PurePath):
        return value
    text = os.fspath(value)
    if "://" in text:
        from slidemask.storage import URLPath

        return URLPath(text)
    return Path(text)


@dataclass
class SlideResult:
    """The outcome of one slide in a batch run.

    Attributes
    ----------
    path
        The slide file as given (absolute after :func:`slidemask.inputs.expand_inputs`).
    output
        Where its mask was (or would have been) written; ``None`` when no output was decided.
    status
        ``"done"`` (written now), ``"skipped"`` (a complete output with the same config hash
        already existed) or ``"failed"``.
    error
        Why it failed, one line naming the cause (``"file not found"``, the reader's message,
        ``"KilledWorker: ..."``); ``None`` unless failed. URLs in it are shown without
        credentials (:func:`slidemask.storage.redact`).
    seconds
        Wall-clock seconds spent on this slide, including opening and writing.
    stats
        Mask statistics (for example foreground pixels, fraction, levels); nested dicts allowed,
        values JSON-able or numpy scalars.
    config_hash
        Hash of the mask configuration the output was (or would be) made with.
    """

    path: PurePath
    output: PurePath | None
    status: Status
    error: str | None = None
    seconds: float = 0.0
    stats: dict[str, Any] = field(default_factory=dict)
    config_hash: str = ""

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}, got {self.status!r}")
        self.path = _as_location(self.path)
        if self.output is not None:
            self.output = _as_location(self.output)
        if self.error:  # a library's message may quote a URL with its credentials
            from slidemask.storage import redact

            self.error = redact(self.error)

    def to_dict(self) -> dict[str, Any]:
        """The record as plain JSON types (paths as strings, numpy scalars as Python numbers).

        URLs are shown without credentials (:func:`slidemask.storage.display`), in the paths
        and in the error text."""
        from slidemask.storage import display, redact

        return {
            "path": display(str(self.path)),
            "output": None if self.output is None else display(str(self.output)),
            "status": self.status,
            "error": None if self.error is None else redact(self.error),
            "seconds": round(float(self.seconds), 3),
            "config_hash": self.config_hash,
            "stats": jsonable(self.stats, "stats", default=str),
        }


def status_counts(results: Iterable[SlideResult]) -> dict[str, int]:
    """``{"done": n, "skipped": n, "failed": n, "total": n}``."""
    counts = dict.fromkeys(STATUSES, 0)
    for r in results:
        counts[r.status] += 1
    counts["total"] = sum(counts.values())
    return counts


def write_report(
    results: Iterable[SlideResult],
    output_dir: str | os.PathLike[str],
    *,
    started: datetime | None = None,
    finished: datetime | None = None,
    config_hash: str | None = None,
    extra: Mapping[str, Any] | None = None,
) -> tuple[Path, Path]:
    """Write ``<output_dir>/report.json`` and ``<output_dir>/report.csv``, each atomically.

    Parameters
    ----------
    results
        One record per slide, in the order the report should list them.
    output_dir
        The run's output directory (created if missing).
    started, finished
        When the run began and ended (``finished`` defaults to now); written as ISO 8601 in UTC.
    config_hash
        The run's configuration hash; defaults to the one all results share (``None`` if they
        differ or there are none).
    extra
        More run-level fields for ``report.json`` (for example the scheduler, the command line).

    Returns
    -------
    tuple of Path
        The JSON and CSV paths.

    Notes
    -----
    ``report.json`` holds ``format``, ``slidemask_version``, ``started``, ``finished``,
    ``seconds``, ``host``, ``python``, ``config_hash``, ``counts`` (per status and ``total``),
    any ``extra`` fields and ``slides`` (the records). ``report.csv`` holds one row per slide:
    path, output, status, error, seconds, config_hash, then each statistic, nested keys joined
    with ``.``; lists are JSON in their cell.
    """
    results = list(results)
    out_dir = Path(output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    finished = _aware(finished or datetime.now(UTC))
    started = None if started is None else _aware(started)
    if config_hash is None:
        hashes = {r.config_hash for r in results}
        config_hash = hashes.pop() if len(hashes) == 1 else None
    run: dict[str, Any] = {
        "format": REPORT_FORMAT,
        "slidemask_version": package_version(),
        "started": None if started is None else _iso(started),
        "finished": _iso(finished),
        "seconds": None if started is None else round((finished - started).total_seconds(), 3),
        "host": socket.gethostname(),
        "python": sys.version.split()[0],
        "config_hash": config_hash,
        "counts": status_counts(results),
    }
    run.update(_redacted(jsonable(dict(extra or {}), "extra", default=str)))
    run["slides"] = [r.to_dict() for r in results]
    json_path = out_dir / REPORT_JSON
    csv_path = out_dir / REPORT_CSV
    with atomic_write(json_path) as fh:
        fh.write(json.dumps(run, indent=2, ensure_ascii=False, allow_nan=False) + "\n")
    with atomic_write(csv_path) as fh:
        fh.write(_csv_text(results))
    return json_path, csv_path


def _redacted(value: Any) -> Any:
    """``value`` (JSON types) with every URL in its strings shown without credentials."""
    from slidemask.storage import redact

    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {k: _redacted(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_redacted(v) for v in value]
    return value


def _aware(t: datetime) -> datetime:
    # naive times are taken as local time, as datetime.now() gives them
    return t.astimezone() if t.tzinfo is None else t


def _iso(t: datetime) -> str:
    return t.astimezone(UTC).isoformat(timespec="seconds")


def _flatten(stats: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in stats.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(_flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def _csv_cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, list):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


def _csv_text(results: list[SlideResult]) -> str:
    rows: list[dict[str, Any]] = []
    stat_columns: dict[str, None] = {}  # first-seen order
    for r in results:
        record = r.to_dict()
        row = {c: record[c] for c in _CSV_COLUMNS}
        for key, value in _flatten(record["stats"]).items():
            # A statistic named like a fixed column must not overwrite it.
            column = f"stats.{key}" if key in _CSV_COLUMNS else key
            stat_columns.setdefault(column, None)
            row[column] = value
        rows.append(row)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=[*_CSV_COLUMNS, *stat_columns], lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: _csv_cell(v) for k, v in row.items()})
    return buffer.getvalue()
