"""Batches whose slides or outputs are URLs (object storage), resumable through the marker.

:func:`slidemask.batch.run_batch` hands a batch here when an input or the output folder is a
URL (``s3://``, ``gs://``, ``https://``). The same rules as a local batch apply, with object
storage's limits:

* Each slide's outputs (mask, extras, tiles) are built complete in a local staging folder by
  :func:`slidemask.pipeline.run_slide`, then uploaded to the output prefix; the mask's
  ``zarr.json``, which carries the completion marker, is uploaded **last**
  (:func:`publish`). There is no atomic rename on object storage: an interrupted upload
  leaves objects without a marker, which count as incomplete.
* Resume trusts only the marker: a complete ``<name>.zarr`` with the same config hash is
  ``skipped``; an incomplete one (objects without a marked ``zarr.json``) is removed and
  redone. Anything under the output name that is not a Zarr store is never touched.
* Replacing a complete output (``overwrite``, or another config) first deletes its marker, so
  the old output is incomplete (never mixed and complete) while the new one uploads.
* A slide task run again by ``dask.distributed`` (its worker was lost after the upload, before
  its result came back) finds its output complete with the same config and is ``done``.
* ``report.json``, ``report.csv`` and ``report.html`` are uploaded beside the outputs (the
  page's links and previews are relative to the output prefix).

Options for the stores come from ``config.storage_options`` and the environment
(:mod:`slidemask.storage`); they travel to worker processes inside the config and are never
written to a report, a log line or provenance.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path, PurePath
from typing import Any, cast

from slidemask import storage
from slidemask.config import Config, config_hash
from slidemask.distributed import ExecutionConfig, TaskOutcome, execution_context
from slidemask.errors import ConfigError
from slidemask.inputs import expand_locations, output_paths
from slidemask.report import REPORT_CSV, REPORT_JSON, SlideResult, write_report
from slidemask.storage import URLPath
from slidemask.writers.html_report import REPORT_HTML, write_html_report
from slidemask.writers.zarr import ATTRS_KEY, provenance_text, stored_stats

__all__ = ["expand_remote", "is_remote_run", "publish", "run_remote_batch", "run_remote_slide"]

log = logging.getLogger("slidemask.batch")

MARKER_FILE = "zarr.json"


def is_remote_run(inputs: Sequence[str | os.PathLike[str]], output_dir: object) -> bool:
    """Whether a batch involves object storage (a non-``file://`` URL among its inputs or
    as its output folder)."""
    def remote(value: object) -> bool:
        text = os.fspath(value) if isinstance(value, (str, os.PathLike)) else ""
        return storage.is_url(text) and storage.local_path(text) is None

    return remote(output_dir) or any(remote(item) for item in inputs)


def _standin(location: PurePath) -> Path:
    """A local absolute path standing for a slide location, to name outputs as
    :func:`slidemask.inputs.output_paths` names them (same collision rules)."""
    if isinstance(location, URLPath):
        return Path("/") / "url" / str(location).replace("://", "/", 1)
    return Path(location)


def _signed(text: str) -> bool:
    """Whether a URL is an http(s) URL with a query string (a presigned URL): one object,
    whose ``?`` starts the query and is no glob."""
    return storage.protocol(text) in ("http", "https") and "?" in text


def expand_remote(inputs: Sequence[str | os.PathLike[str]]) -> list[PurePath]:
    """The slides of a remote batch, as :func:`slidemask.inputs.expand_locations` lists them,
    except that a presigned http(s) URL is one slide; URLs come back as :class:`URLPath`
    (credentials kept for opening, never shown)."""
    slides: list[PurePath] = []
    seen: set[str] = set()
    for item in inputs:
        text = storage.url_of(item)
        found = [storage.URLPath(text)] if _signed(text) else expand_locations([item])
        for slide in found:
            key = storage.url_of(slide)
            if key not in seen:
                seen.add(key)
                slides.append(slide)
    return slides


def output_locations(slides: Sequence[PurePath], out: PurePath) -> dict[PurePath, PurePath]:
    """``{slide: <out>/<unique safe name>.zarr}``, as for a local batch."""
    standins = {_standin(s): s for s in slides}
    named = output_paths(list(standins), Path("/out"))
    return {standins[k]: out / v.name for k, v in named.items()}


def _join(base: PurePath | str, name: str) -> str:
    return f"{str(base).rstrip('/')}/{name}"


def _attrs(output: str) -> dict[str, Any]:
    text = storage.read_text(_join(output, MARKER_FILE))
    if text is None:
        return {}
    try:
        meta = json.loads(text)
    except ValueError:
        return {}
    attrs = meta.get("attributes") if isinstance(meta, dict) else None
    return attrs if isinstance(attrs, dict) else {}


def _complete(attrs: dict[str, Any]) -> bool:
    own = attrs.get(ATTRS_KEY)
    return isinstance(own, dict) and own.get("complete") is True


def publish(stage: Path, output: str, overwrite: bool) -> None:
    """Upload a slide's staged outputs beside ``output`` (``<prefix>/<name>.zarr``), the
    mask's ``zarr.json`` (its completion marker) last.

    Parameters
    ----------
    stage
        The local folder :func:`slidemask.pipeline.run_slide` wrote into; its entries are
        ``<name>.zarr`` and the extras beside it.
    output
        The mask's URL (or path).
    overwrite
        Replace a complete output. Its marker is deleted first, so it is incomplete, never
        half old and half new while complete.

    Raises
    ------
    FileExistsError
        A complete output exists and not ``overwrite``.
    """
    marker = _join(output, MARKER_FILE)
    if _complete(_attrs(output)):
        if not overwrite:
            raise FileExistsError(f"{storage.display(output)}: output exists")
        storage.remove_tree(marker)  # the old output stops being complete first
    storage.remove_tree(output)
    name = output.rstrip("/").rsplit("/", 1)[-1]
    parent = output.rstrip("/")[: -len(name)].rstrip("/")
    mask = stage / name
    for entry in sorted(stage.iterdir()):
        if entry != mask:
            if entry.is_dir():
                storage.remove_tree(f"{parent}/{entry.name}")
            storage.upload_tree(entry, f"{parent}/{entry.name}")
    storage.upload_tree(mask, output, last=[MARKER_FILE])


def run_remote_slide(
    path: str, config: Config, output_dir: str, overwrite: bool, output: str
) -> SlideResult:
    """One slide of a remote batch, as a task: build locally, upload, marker last.

    Module level, so worker processes import it by name. Never raises for this slide's
    problems: the result says ``failed`` and why. ``path`` is what opens the slide (a
    :class:`~slidemask.storage.SecretURL` when it carries credentials: log lines and errors
    show it without them).
    """
    from slidemask.pipeline import run_slide

    storage.configure(config.storage_options)
    if not overwrite:
        # A rerun of this task: dask.distributed runs a task again when its worker is lost,
        # also after the upload and before the result came back. The output is then complete
        # with this config; it is this slide's result.
        digest = config_hash(config)
        attrs = _attrs(output)
        if _complete(attrs) and provenance_text(attrs, "config_hash") == digest:
            return SlideResult(path=storage.location(path), output=storage.location(output),
                               status="done", stats=stored_stats(attrs), config_hash=digest)
    name = output.rstrip("/").rsplit("/", 1)[-1]
    _remove_dead_stages()
    stage = Path(tempfile.mkdtemp(prefix=f"{STAGE_PREFIX}{os.getpid()}-"))
    try:
        result = run_slide(path, config, stage, overwrite=False, output=stage / name)
        if result.status == "done":
            try:
                publish(stage, output, overwrite)
            except Exception as exc:  # noqa: BLE001 - one slide's upload must not stop a batch
                reason = f"{storage.display(output)}: upload failed ({type(exc).__name__}: {exc})"
                log.error("slide %s failed: %s", storage.display(path), reason)
                result.status, result.error = "failed", reason
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    result.path = storage.location(path)
    result.output = storage.location(output)
    if result.error:
        result.error = storage.redact(
            result.error.replace(str(stage / name), storage.display(output))
        )
    return result


STAGE_PREFIX = "slidemask-stage-"
"""A slide's local stage: ``<temporary folder>/slidemask-stage-<pid>-<random>``."""


def _remove_dead_stages() -> None:
    """Remove the stages that processes which no longer run left in this machine's temporary
    folder (a job killed by its time limit or for memory never cleans up; a level-0 stage can
    be gigabytes)."""
    root = Path(tempfile.gettempdir())
    for stage in root.glob(f"{STAGE_PREFIX}*-*"):
        pid = stage.name[len(STAGE_PREFIX):].split("-", 1)[0]
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            log.info("removing %s, left by process %s, which no longer runs", stage, pid)
            shutil.rmtree(stage, ignore_errors=True)
        except OSError:  # another user's process (PermissionError): alive
            continue


def _plan(
    slide: PurePath, output: PurePath, digest: str, overwrite: bool
) -> tuple[str, SlideResult | None, bool]:
    """``(action, known result, overwrite)``: ``run`` or ``known``."""
    target = str(output)
    attrs = _attrs(target)
    if _complete(attrs):
        other = provenance_text(attrs, "source", "path")
        if not overwrite and other is not None and other != str(slide):
            # another slide of the same name (see slidemask.batch): not this slide's mask
            reason = (f"{storage.display(target)}: holds the mask of another slide, "
                      f"{storage.display(other)}; slides with the same name write to the same "
                      "output: give this run another output folder, or --overwrite to "
                      "replace it")
            result = SlideResult(path=slide, output=output, status="failed", error=reason,
                                 config_hash=digest)
            return "known", result, False
        if not overwrite and provenance_text(attrs, "config_hash") == digest:
            result = SlideResult(path=slide, output=output, status="skipped",
                                 stats=stored_stats(attrs), config_hash=digest)
            return "known", result, False
        return "run", None, True
    names = storage.list_names(target)
    if names and MARKER_FILE not in names and "c" not in names:
        reason = (f"{storage.display(target)}: exists and is not a slidemask output "
                  "(not a Zarr store); move it away")
        result = SlideResult(path=slide, output=output, status="failed", error=reason,
                             config_hash=digest)
        return "known", result, False
    if names:
        log.info("removing the incomplete output %s (no completion marker)",
                 storage.display(target))
        storage.remove_tree(target)
    return "run", None, False


def run_remote_batch(
    inputs: Sequence[str | os.PathLike[str]],
    config: Config,
    output_dir: str | os.PathLike[str],
    *,
    overwrite: bool,
    execution: ExecutionConfig,
    progress: Any,
) -> list[SlideResult]:
    """:func:`slidemask.batch.run_batch` for slides or outputs on object storage (see the
    module docstring); same arguments, results and report."""
    started_at = datetime.now(UTC)
    storage.configure(config.storage_options)
    slides = expand_remote(inputs)
    if not slides:
        raise ConfigError("no input slides")
    out = storage.location(output_dir)
    outputs = output_locations(slides, out)
    digest = config_hash(config)
    total = len(slides)
    progress.begin(total, cast(Path, out), digest)
    results: list[SlideResult | None] = [None] * total
    finished = 0

    def record(index: int, result: SlideResult) -> None:
        nonlocal finished
        results[index] = result
        finished += 1
        progress.slide_finished(result, finished, total)

    plans = []
    for index, slide in enumerate(slides):
        try:
            plan = _plan(slide, outputs[slide], digest, overwrite)
        except Exception as exc:  # noqa: BLE001 - storage trouble with this output only
            error = storage.redact(f"{outputs[slide]}: cannot look it up ({exc})")
            plan = ("known", SlideResult(path=slide, output=outputs[slide], status="failed",
                                         error=error, config_hash=digest), False)
        plans.append(plan)
        if plan[1] is not None:
            record(index, plan[1])
    to_run = [i for i, plan in enumerate(plans) if plan[0] == "run"]
    extra: dict[str, Any] = {
        "output_dir": str(out),
        "inputs": [storage.display(os.fspath(item)) for item in inputs],
        "overwrite": overwrite,
        "scheduler": execution.scheduler,
        "executor": None,
        "dashboard": None,
    }

    def on_done(outcome: TaskOutcome[Any]) -> None:
        index = to_run[outcome.index]
        value = outcome.value
        if outcome.ok and isinstance(value, SlideResult):
            record(index, value)
            return
        error = outcome.error or f"the task returned {type(value).__name__}"
        record(index, SlideResult(path=slides[index], output=outputs[slides[index]],
                                  status="failed",
                                  error=storage.redact(f"{slides[index]}: {error}"),
                                  seconds=outcome.seconds, config_hash=digest))

    try:
        if to_run:
            arguments = [
                (storage.url_of(slides[i]), config, str(out), plans[i][2],
                 str(outputs[slides[i]]))
                for i in to_run
            ]
            labels = [slides[i].name for i in to_run]
            with execution_context(execution) as executor:
                extra["executor"] = executor.description
                extra["dashboard"] = executor.dashboard_link
                progress.executing(len(to_run), executor.description, executor.dashboard_link)
                executor.map(run_remote_slide, arguments, labels=labels, on_done=on_done)
    except KeyboardInterrupt:
        _report(results, slides, outputs, digest, out, started_at, extra, "interrupted")
        raise
    final = _report(results, slides, outputs, digest, out, started_at, extra, None)
    progress.end(final, cast(Path, out / REPORT_JSON))
    return final


def _report(
    results: list[SlideResult | None],
    slides: list[PurePath],
    outputs: dict[PurePath, PurePath],
    digest: str,
    out: PurePath,
    started_at: datetime,
    extra: dict[str, Any],
    unfinished: str | None,
) -> list[SlideResult]:
    final = [
        r if r is not None else SlideResult(
            path=s, output=outputs[s], status="failed",
            error=f"{s}: {unfinished or 'not run'}", config_hash=digest,
        )
        for r, s in zip(results, slides, strict=True)
    ]
    if isinstance(out, Path):
        json_path, _ = write_report(final, out, started=started_at, config_hash=digest,
                                    extra=extra)
        _html(json_path, out)
        return final
    with tempfile.TemporaryDirectory(prefix="slidemask-report-") as tmp:
        json_path, _ = write_report(final, tmp, started=started_at, config_hash=digest,
                                    extra=extra)
        names = [REPORT_JSON, REPORT_CSV]
        if _html(json_path, out):
            names.append(REPORT_HTML)
        for name in names:
            storage.put_file(Path(tmp) / name, _join(out, name))
    return final


def _html(report_json: Path, out: PurePath) -> bool:
    """Write ``report.html`` beside ``report_json`` for the output folder ``out`` (a prefix
    on object storage: its links are relative to it); a failure is logged, never raised (the
    page must not cost the run its report)."""
    try:
        write_html_report(report_json, output_dir=str(out))
    except Exception as exc:  # noqa: BLE001 - the page is a view of the report, not the report
        log.error("could not write the HTML report for %s: %s: %s",
                  storage.display(str(out)), type(exc).__name__, exc)
        log.debug("traceback", exc_info=True)
        return False
    return True

