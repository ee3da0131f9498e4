"""Many slides in one run: resume, failure isolation, progress, and the run report.

:func:`run_batch` is what ``slidemask run`` calls. It expands the inputs
(:func:`slidemask.inputs.expand_inputs`), gives each slide one output directly inside the
output folder (:func:`slidemask.inputs.output_paths`), decides per slide whether to run it,
runs the rest through the configured executor (:mod:`slidemask.distributed`: this process, a
LocalCluster, a Dask scheduler, SLURM or PBS) and writes ``report.json``, ``report.csv`` and
``report.html`` (:mod:`slidemask.writers.html_report`: the batch to look at, with the previews).

Resume rules, per slide, checked in this process before anything runs:

* hidden temporaries of its output left by a killed run (``.<name>.partial-*``,
  ``.<name>.scratch-*``, ``.<name>.replaced-*``) are removed;
* a **complete** output (it carries the writer's completion marker) made with the **same
  config hash** is ``skipped``: nothing is recomputed and its statistics are read from the
  stored attributes; ``overwrite=True`` redoes it anyway;
* a complete output made with another config is redone; the old one stays in place, complete,
  until the new one is (the writer swaps them);
* an **incomplete** output (a Zarr store or an empty folder without the marker) is removed and
  redone;
* anything else at the output path (a file, a folder that is not a Zarr store) is never
  touched: that slide fails and says why.

Only one run may write into an output folder at a time: leftovers of another live run would
look like leftovers of a killed one.

Slides are only ever opened for reading (by :func:`slidemask.pipeline.run_slide`), and only
paths inside the output folder are written or removed.
"""

from __future__ import annotations

import contextvars
import logging
import os
import shutil
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, TextIO

from dask.callbacks import Callback

from slidemask.config import Config, config_hash
from slidemask.distributed import (
    ExecutionConfig,
    TaskOutcome,
    execution_context,
    worker_event_sender,
)
from slidemask.errors import ConfigError
from slidemask.inputs import expand_inputs, extra_paths_for, output_paths
from slidemask.memory import prepare_process
from slidemask.pipeline import run_slide
from slidemask.report import REPORT_JSON, SlideResult, write_report
from slidemask.tiles.runner import tiles_count, tiles_up_to_date
from slidemask.tiles.spec import TileSpec
from slidemask.writers.atomic import leftovers, looks_like_zarr
from slidemask.writers.html_report import write_html_report
from slidemask.writers.zarr import (
    is_complete,
    other_slide,
    read_attrs,
    slide_changed,
    stored_config_hash,
    stored_stats,
)

__all__ = [
    "BatchProgress",
    "LogProgress",
    "TerminalProgress",
    "run_batch",
]

log = logging.getLogger("slidemask.batch")

PROGRESS_TOPIC = "slidemask-progress"
"""Topic of the events a slide task on a ``dask.distributed`` worker sends to the batch:
``{"slide": path, "event": "started"}`` and ``{"slide": path, "event": "tasks", "done": n,
"total": n}`` (at most :data:`WORKER_EVENT_INTERVAL` apart, and when a graph completes)."""

WORKER_EVENT_INTERVAL = 0.5
"""Seconds between two task-count events of one slide on a worker."""

# Set while run_batch runs tasks; a task running in this process (the threads scheduler) tells
# the progress display that its slide started. Worker processes see the default, None.
_SLIDE_STARTED: contextvars.ContextVar[Callable[[Path], None] | None] = contextvars.ContextVar(
    "slidemask_slide_started", default=None
)


# --- progress -----------------------------------------------------------------------------------


class BatchProgress:
    """Receives a batch's events, always in the process that called :func:`run_batch`.

    Every method does nothing here; subclass and override what you need. Slides are numbered
    by how many have finished (``finished`` of ``total``), whatever their order.
    """

    def begin(self, total: int, output_dir: Path, config_hash: str) -> None:
        """The inputs are expanded: ``total`` slides, written into ``output_dir``."""

    def executing(self, count: int, description: str, dashboard_link: str | None) -> None:
        """``count`` slides are about to run on the executor described by ``description``."""

    def slide_started(self, path: Path) -> None:
        """A slide started computing (in this process, or on a ``dask.distributed`` worker)."""

    def slide_tasks(self, done: int, total: int, path: Path | None = None) -> None:
        """Tasks of a running slide's current dask graph: ``done`` of ``total`` (a slide's
        run computes a few graphs in turn: the mask's write, then its extras).

        ``path`` names the slide; None means the slide that started last in this process.
        Reported for slides computed in this process and, through worker events, for slides
        on ``dask.distributed`` workers (at most every :data:`WORKER_EVENT_INTERVAL` s).
        """

    def slide_finished(self, result: SlideResult, finished: int, total: int) -> None:
        """A slide is done, skipped or failed; ``finished`` counts this one."""

    def end(self, results: Sequence[SlideResult], report: Path) -> None:
        """The run is over and the report is written to ``report``."""


def _share(result: SlideResult) -> str:
    fraction = result.stats.get("fraction")
    if isinstance(fraction, int | float):
        return f", {100 * fraction:.1f} % foreground"
    return ""


def _failure_text(result: SlideResult) -> str:
    error = result.error or "unknown error"
    # run_slide's reasons usually start with the slide's path already
    return error if str(result.path) in error else f"{result.path}: {error}"


class LogProgress(BatchProgress):
    """Concise log lines on the ``slidemask.batch`` logger, one per slide start and finish,
    and for a slide computing longer than ``interval`` seconds a line at most every
    ``interval`` seconds with the share of its current graph's tasks done (a batch job's
    log, not a terminal, shows that a large slide is moving).

    Finished slides are logged at INFO (``done``, ``skipped``) or ERROR (``FAILED`` with the
    reason), so a logger at ERROR level (``-q``) shows only failures.
    """

    def __init__(self, *, interval: float = 30.0) -> None:
        self.log_interval = interval
        self._lock = threading.RLock()
        self._logged: dict[str, tuple[float, float]] = {}  # path: started, last line

    def slide_tasks(self, done: int, total: int, path: Path | None = None) -> None:
        now = time.perf_counter()
        with self._lock:
            key = str(path) if path is not None else next(reversed(self._logged), None)
            if key is None or key not in self._logged or not total:
                return
            started, last = self._logged[key]
            if now - last < self.log_interval:
                return
            self._logged[key] = (started, now)
        log.info("running %s: %d %% of its current step's tasks, %s so far",
                 key, int(100 * done / total), _clock(now - started))

    def begin(self, total: int, output_dir: Path, config_hash: str) -> None:
        log.info("%d slide(s) -> %s (config hash %s)", total, output_dir, config_hash[:12])

    def executing(self, count: int, description: str, dashboard_link: str | None) -> None:
        log.info("running %d slide(s) on %s", count, description)
        if dashboard_link:
            log.info("dashboard: %s", dashboard_link)

    def slide_started(self, path: Path) -> None:
        now = time.perf_counter()
        with self._lock:
            self._logged.pop(str(path), None)
            self._logged[str(path)] = (now, now)
        log.info("start   %s", path)

    def slide_finished(self, result: SlideResult, finished: int, total: int) -> None:
        with self._lock:
            self._logged.pop(str(result.path), None)
        width = len(str(total))
        where = f"[{finished:>{width}}/{total}]"
        if result.status == "failed":
            log.error("%s FAILED  %s (%.1f s)", where, _failure_text(result), result.seconds)
        elif result.status == "skipped":
            log.info("%s skipped %s: complete output with this config at %s",
                     where, result.path, result.output)
        else:
            log.info("%s done    %s in %.1f s%s -> %s",
                     where, result.path, result.seconds, _share(result), result.output)


class TerminalProgress(LogProgress):
    """A one-line progress bar on a terminal, above which log lines scroll.

    The line shows slides finished of the total, the counts per status and of slides
    remaining, the elapsed time, an estimate of the time left (``ETA``: the time per slide
    computed so far, once one has finished, times the slides remaining) and the running
    slide's name with the share of its current dask graph's tasks done (``+N`` more slides
    when several run at once on a cluster).
    Log handlers writing to the same terminal must call :meth:`suspend` around each write
    (the CLI's handler does), so log lines never mix with the bar.
    """

    def __init__(self, stream: TextIO | None = None, *, interval: float = 0.1) -> None:
        super().__init__()  # its lock guards this bar's state too
        self.stream = stream if stream is not None else sys.stderr
        self.interval = interval
        self._shown = False
        self._last_line = ""
        self._last_draw = 0.0
        self._started = time.perf_counter()
        self._total = 0
        self._finished = 0
        self._counts = {"done": 0, "skipped": 0, "failed": 0}
        # running slides, by path, in start order: name, tasks done, tasks in the graph
        self._running: dict[str, tuple[str, int, int]] = {}
        self._executing_since: float | None = None
        self._finished_before_executing = 0

    def begin(self, total: int, output_dir: Path, config_hash: str) -> None:
        with self._lock:
            self._total = total
            self._started = time.perf_counter()
        super().begin(total, output_dir, config_hash)
        self._draw(force=True)

    def executing(self, count: int, description: str, dashboard_link: str | None) -> None:
        with self._lock:
            self._executing_since = time.perf_counter()
            self._finished_before_executing = self._finished
        super().executing(count, description, dashboard_link)
        self._draw(force=True)

    def slide_started(self, path: Path) -> None:
        with self._lock:
            self._running.pop(str(path), None)
            self._running[str(path)] = (path.name, 0, 0)
        super().slide_started(path)
        self._draw(force=True)

    def slide_tasks(self, done: int, total: int, path: Path | None = None) -> None:
        with self._lock:
            key = str(path) if path is not None else next(reversed(self._running), None)
            if key is None or key not in self._running:
                return
            self._running[key] = (self._running[key][0], done, total)
        self._draw(force=done >= total > 0)  # a finished graph is always shown

    def slide_finished(self, result: SlideResult, finished: int, total: int) -> None:
        with self._lock:
            self._finished = finished
            self._counts[result.status] += 1
            self._running.pop(str(result.path), None)
        super().slide_finished(result, finished, total)
        self._draw(force=True)

    def eta(self) -> float | None:
        """Seconds left, estimated from the slides computed so far; None before the first."""
        with self._lock:
            if self._executing_since is None:
                return None
            computed = self._finished - self._finished_before_executing
            remaining = self._total - self._finished
            if computed <= 0 or remaining <= 0:
                return None if remaining > 0 else 0.0
            spent = time.perf_counter() - self._executing_since
            return spent / computed * remaining

    def end(self, results: Sequence[SlideResult], report: Path) -> None:
        with self._lock:
            self._clear()
            self._shown = False
            self._total = 0  # nothing more is drawn

    @contextmanager
    def suspend(self) -> Iterator[None]:
        """Hide the bar while something else writes a line, then draw it again below."""
        with self._lock:
            shown = self._shown
            if shown:
                self._clear()
            try:
                yield
            finally:
                if shown:
                    self._draw(force=True)

    def line(self, width: int) -> str:
        """The progress line, at most ``width - 1`` characters."""
        with self._lock:
            total = max(self._total, 1)
            fraction = self._finished / total
            bar_width = 20 if width >= 120 else 10
            filled = int(bar_width * fraction)
            elapsed = time.perf_counter() - self._started
            counts = self._counts
            bar = "#" * filled + "-" * (bar_width - filled)
            eta = self.eta()
            head = f"{self._finished}/{self._total} slides [{bar}] {int(100 * fraction):3d}%"
            statuses = (
                f"  {counts['done']} done, {counts['skipped']} skipped,"
                f" {counts['failed']} failed, {self._total - self._finished} remaining"
            )
            clock = f"  {_clock(elapsed)}{'' if eta is None else ' ETA ' + _clock(eta)}"
            name = tail = ""
            if self._running:
                name, done, tasks = next(reversed(self._running.values()))
                others = len(self._running) - 1
                tail = (f" {int(100 * done / tasks):3d}%" if tasks else "") + (
                    f" +{others} running" if others else "")
                # on a narrow terminal the running slide's share stays: the counts per status
                # go first, then the start of its name
                room = width - 1 - len(head + clock + " | " + tail)
                if len(statuses) + len(name) > room:
                    statuses = ""
                    if len(name) > room:
                        name = "..." + name[len(name) - max(room - 3, 4):]
            running = f" | {name}{tail}" if self._running else ""
            text = head + statuses + clock + running
        return text[: max(width - 1, 10)]

    def _clear(self) -> None:
        self.stream.write("\r\x1b[K")
        self.stream.flush()

    def _draw(self, force: bool = False) -> None:
        with self._lock:
            if self._total == 0:
                return
            now = time.perf_counter()
            if not force and now - self._last_draw < self.interval:
                return
            self._last_draw = now
            width = shutil.get_terminal_size((100, 20)).columns
            line = self.line(width)
            if self._shown and line == self._last_line:
                return
            self.stream.write("\r\x1b[K" + line)
            self.stream.flush()
            self._shown = True
            self._last_line = line


def _clock(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


class _TaskCounter(Callback):  # type: ignore[misc]
    """Reports the local dask scheduler's finished tasks to :meth:`BatchProgress.slide_tasks`.

    Only graphs computed from the thread that created the counter are counted (dask's local
    schedulers call callbacks in the thread that called ``compute``): a preview drawn in a
    helper thread, or another task on the same worker, does not mix its counts in.
    """

    def __init__(self, progress: BatchProgress, path: Path | None = None) -> None:
        super().__init__()
        self._progress = progress
        self._path = path
        self._thread = threading.get_ident()

    def _start_state(self, dsk: Any, state: dict[str, Any]) -> None:
        self._report(state)

    def _posttask(self, key: Any, result: Any, dsk: Any, state: dict[str, Any], worker_id: Any
                  ) -> None:
        self._report(state)

    def _report(self, state: dict[str, Any]) -> None:
        if threading.get_ident() != self._thread:
            return
        done = len(state["finished"])
        total = done + sum(len(state[k]) for k in ("ready", "waiting", "running"))
        self._progress.slide_tasks(done, total, self._path)


class _WorkerEvents(BatchProgress):
    """On a ``dask.distributed`` worker: a slide's progress sent to the batch as events
    (:data:`PROGRESS_TOPIC`), task counts at most every :data:`WORKER_EVENT_INTERVAL` s."""

    def __init__(self, send: Callable[[Any], None]) -> None:
        self._send = send
        self._last = 0.0

    def slide_started(self, path: Path) -> None:
        self._send({"slide": str(path), "event": "started"})

    def slide_tasks(self, done: int, total: int, path: Path | None = None) -> None:
        now = time.monotonic()
        if done < total and now - self._last < WORKER_EVENT_INTERVAL:
            return
        self._last = now
        self._send({"slide": str(path), "event": "tasks", "done": done, "total": total})


def _relay_events(progress: BatchProgress, finished: set[str]) -> Callable[[Any], None]:
    """The batch's handler of worker events: forwards them to ``progress``, dropping late
    ones of slides already finished (events and results travel separately)."""

    def handle(message: Any) -> None:
        if not isinstance(message, dict) or message.get("slide") in finished:
            return
        path = Path(str(message.get("slide")))
        if message.get("event") == "started":
            progress.slide_started(path)
        elif message.get("event") == "tasks":
            progress.slide_tasks(int(message.get("done", 0)), int(message.get("total", 0)), path)

    return handle


# --- the batch ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Plan:
    """What to do with one slide: run it (writer ``overwrite``), or its result is known."""

    path: Path
    output: Path
    action: Literal["run", "known"]
    overwrite: bool = False
    result: SlideResult | None = None


def _slide_task(
    path: str, config: Config, output_dir: str, overwrite: bool, output: str
) -> SlideResult:
    """One slide, as a task: module level, so worker processes import it by name.

    dask.distributed runs a task again when its worker is lost, also after the mask was
    written and before the result came back: without ``overwrite``, a complete output made
    with this config is then this slide's result (``done``, its stored statistics).
    """
    digest = config_hash(config)
    if (not overwrite and stored_config_hash(output) == digest
            and other_slide(Path(output), Path(path)) is None
            and slide_changed(Path(output), Path(path)) is None):
        stats = _done_stats(Path(output), digest, config.tiles)
        if stats is not None:
            return SlideResult(path=Path(path), output=Path(output), status="done",
                               stats=stats, config_hash=digest)
    started = _SLIDE_STARTED.get()
    if started is not None:
        started(Path(path))
        return run_slide(path, config, output_dir, overwrite=overwrite, output=output)
    _quiet_in_worker()
    send = worker_event_sender(PROGRESS_TOPIC)
    if send is None:
        return run_slide(path, config, output_dir, overwrite=overwrite, output=output)
    events = _WorkerEvents(send)
    events.slide_started(Path(path))
    with _TaskCounter(events, Path(path)):
        return run_slide(path, config, output_dir, overwrite=overwrite, output=output)


def _quiet_in_worker() -> None:
    # In a worker process nobody configured the "slidemask" logger, so Python's last-resort
    # handler would print run_slide's failure messages on the worker's stderr, a second copy of
    # what the batch reports. A NullHandler stops that; handlers the worker's owner configured
    # on the root logger still receive every record.
    package = logging.getLogger("slidemask")
    if not package.handlers:
        package.addHandler(logging.NullHandler())


def _done_stats(output: Path, digest: str, tiles: TileSpec | None) -> dict[str, Any] | None:
    """The stored statistics of a complete output made with config hash ``digest`` (checked
    by the caller), with its tile count; None when ``tiles`` are asked for and are missing
    or were made with other settings (the slide's tiles are then still to write)."""
    if tiles is not None and not tiles_up_to_date(output, tiles, digest):
        return None
    stats = stored_stats(read_attrs(output))
    if tiles is not None:
        stats["tiles"] = tiles_count(output)
    return stats


def _remove_tree(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def _plan(
    path: Path, output: Path, digest: str, overwrite: bool, tiles: TileSpec | None = None,
    extras: Sequence[str] = (),
) -> _Plan:
    """Decide, before anything runs, whether and how a slide is (re)done.

    With ``tiles``, a complete mask under this config whose tiles are missing or were made
    with other settings is run again without ``overwrite``: run_slide keeps the mask and
    writes the tiles only. A complete mask under this config one of whose ``extras`` (keys of
    :data:`slidemask.inputs.EXTRA_SUFFIXES`) is missing (deleted since) is redone.
    """

    def fail(reason: str) -> _Plan:
        result = SlideResult(path=path, output=output, status="failed", error=reason,
                             config_hash=digest)
        return _Plan(path, output, "known", result=result)

    if output == path or path.is_relative_to(output):
        return fail(f"{path}: its output {output} would replace the slide itself")
    for leftover in leftovers(output):
        log.debug("removing %s, left by an interrupted run", leftover)
        _remove_tree(leftover)
    if not output.exists() and not output.is_symlink():
        return _Plan(path, output, "run")
    if not output.is_dir():
        return fail(
            f"{output}: exists and is not a slidemask output (not a folder); move it away"
        )
    if is_complete(output):
        other = other_slide(output, path)
        if other is not None and not overwrite:
            # two slides named alike (a/x.svs, b/x.tif) in runs into one folder: neither
            # skipped as done with the other's mask, nor the other's mask replaced unasked
            return fail(
                f"{output}: holds the mask of another slide, {other}; slides with the same "
                "name write to the same output: give this run another output folder, or "
                "--overwrite to replace it"
            )
        if not overwrite and stored_config_hash(output) == digest:
            changed = slide_changed(output, path)
            if changed:  # replaced or rewritten since: its mask is stale
                log.info("redoing %s: %s", output, changed)
                return _Plan(path, output, "run", overwrite=True)
            missing = [p.name for p in extra_paths_for(output, extras).values()
                       if not p.exists() and not p.is_symlink()]
            if missing:  # deleted since: the slide is redone, the mask stays until then
                log.info("redoing %s: %s missing", output, ", ".join(missing))
                return _Plan(path, output, "run", overwrite=True)
            stats = _done_stats(output, digest, tiles)
            if stats is None:
                log.debug("writing the tiles of %s (missing or made with other settings)",
                          output)
                return _Plan(path, output, "run")
            result = SlideResult(path=path, output=output, status="skipped",
                                 stats=stats, config_hash=digest)
            return _Plan(path, output, "known", result=result)
        why = "--overwrite" if overwrite else "the config changed"
        log.debug("redoing %s (%s); the old output stays until the new one is complete",
                  output, why)
        return _Plan(path, output, "run", overwrite=True)
    if looks_like_zarr(output) or not any(output.iterdir()):
        log.info("removing the incomplete output %s (no completion marker)", output)
        _remove_tree(output)
        return _Plan(path, output, "run")
    return fail(
        f"{output}: exists and is not a slidemask output (a folder that is not a Zarr store); "
        "move it away"
    )


def _execution(
    execution: ExecutionConfig | Mapping[str, Any] | None, config: Config
) -> ExecutionConfig:
    """``execution`` as an ExecutionConfig (a mapping is validated as the config's
    ``execution:`` section is; a ConfigError names the key), else ``config.execution``."""
    if execution is None:
        return config.execution
    if isinstance(execution, ExecutionConfig):
        return execution
    if not isinstance(execution, Mapping):
        raise ConfigError(
            f"execution: expected an ExecutionConfig or a mapping of its keys, got "
            f"{type(execution).__name__}"
        )
    from pydantic import ValidationError

    try:
        return ExecutionConfig.model_validate(dict(execution))
    except ValidationError as exc:
        problems = "; ".join(
            f"execution.{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()
        )
        raise ConfigError(problems) from None


def _check_output_folder(folder: Path, given: str | os.PathLike[str]) -> None:
    """Create the output folder; a ConfigError (a usage error) when it cannot be one."""
    if folder.exists() and not folder.is_dir():
        raise ConfigError(f"output folder {os.fspath(given)!r} exists and is not a folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(
            f"output folder {os.fspath(given)!r} cannot be created: "
            f"{exc.strerror or type(exc).__name__}"
        ) from exc


def _outcome_result(outcome: TaskOutcome[Any], plan: _Plan, digest: str) -> SlideResult:
    value = outcome.value
    if outcome.ok and isinstance(value, SlideResult):
        return value
    error = outcome.error or f"the task returned {type(value).__name__}, not a SlideResult"
    return SlideResult(path=plan.path, output=plan.output, status="failed",
                       error=f"{plan.path}: {error}", seconds=outcome.seconds,
                       config_hash=digest)


def run_batch(
    inputs: Sequence[str | os.PathLike[str]],
    config: Config,
    output_dir: str | os.PathLike[str],
    *,
    overwrite: bool = False,
    execution: ExecutionConfig | Mapping[str, Any] | None = None,
    progress: BatchProgress | None = None,
) -> list[SlideResult]:
    """Mask every slide named by ``inputs`` into ``output_dir`` and write the run report.

    Parameters
    ----------
    inputs
        Slide files, folders, glob patterns or manifests
        (:func:`slidemask.inputs.expand_inputs`).
    config
        The mask configuration; its hash decides which existing outputs are reused.
    output_dir
        Folder for one ``<slide name>.zarr`` per slide plus ``report.json``, ``report.csv``
        and ``report.html``; created if missing. All three are rewritten by every run,
        a resumed one too, and list every slide.
    overwrite
        Redo every slide, even those with a complete output made with this config.
    execution
        Where slides run: an :class:`~slidemask.distributed.ExecutionConfig` or a mapping of
        its keys (``{"scheduler": "processes", "workers": 2}``, as a config's ``execution:``
        section); default ``config.execution``. A cluster is started only when at least one
        slide needs computing, and shut down before returning.
    progress
        Receives start/finish events in this process; default :class:`LogProgress`.

    Returns
    -------
    list of SlideResult
        One per slide in input order: ``done``, ``skipped`` or ``failed`` with the reason.
        A slide failing (missing, truncated, corrupt, its worker killed too often) never
        stops the others.

    Raises
    ------
    ConfigError
        An input item names nothing (see :func:`slidemask.inputs.expand_inputs`), there are
        no inputs, or the executor cannot start (e.g. an unreachable scheduler address).
        Nothing has been computed then.
    KeyboardInterrupt
        Re-raised after writing a report in which the unfinished slides are ``failed``
        ("interrupted").

    Notes
    -----
    Memory: this process holds one small record per slide; each slide's pixels stream
    through its own task (see :func:`slidemask.pipeline.run_slide`). glibc's malloc is set
    for slide runs here and in the workers started from here (arenas capped, freed blocks
    kept for reuse) unless the user set it, and the objects alive at the start are kept out of
    the garbage collector's full scans (:func:`slidemask.memory.prepare_process`).

    Examples
    --------
    >>> import os
    >>> import tempfile
    >>> from slidemask import run_batch, write_synthetic_slide
    >>> from slidemask.config import config_from_yaml
    >>> tmp = tempfile.TemporaryDirectory()
    >>> slide = write_synthetic_slide(os.path.join(tmp.name, "a.tif"), 512, tile=128, levels=3)
    >>> config = config_from_yaml('''
    ... resolution: {mpp: 8}
    ... masks:
    ...   tissue: [{gray: {}}, {threshold: {below: 220}}]
    ... ''')
    >>> out = os.path.join(tmp.name, "out")
    >>> [(r.path.name, r.status, r.output.name) for r in run_batch([slide], config, out)]
    [('a.tif', 'done', 'a.zarr')]

    Run again, the complete output made with the same configuration is kept:

    >>> [r.status for r in run_batch([slide], config, out)]
    ['skipped']
    >>> tmp.cleanup()
    """
    prepare_process()  # before any thread or worker process starts (slidemask.memory)
    started_at = datetime.now(UTC)
    execution = _execution(execution, config)
    progress = progress if progress is not None else LogProgress()
    from slidemask.remote import is_remote_run, run_remote_batch

    if is_remote_run(inputs, output_dir):  # object storage: no rename; the marker goes last
        return run_remote_batch(inputs, config, output_dir, overwrite=overwrite,
                                execution=execution, progress=progress)
    slides, found_nothing = _expand(inputs)
    if not slides:
        raise ConfigError("no input slides")
    out_dir = Path(os.path.abspath(output_dir))
    _check_output_folder(out_dir, output_dir)
    outputs = output_paths(slides, out_dir)
    digest = config_hash(config)
    total = len(slides) + len(found_nothing)
    progress.begin(total, out_dir, digest)

    results: list[SlideResult | None] = [None] * total
    finished = 0

    def record(index: int, result: SlideResult) -> None:
        nonlocal finished
        results[index] = result
        finished += 1
        progress.slide_finished(result, finished, total)

    plans = [_plan(slide, outputs[slide], digest, overwrite, config.tiles, config.outputs.extras)
             for slide in slides]
    for item, reason in found_nothing:  # reported as failed, among the slides that run
        log.error("%s", reason)
        path = Path(os.path.abspath(os.path.expanduser(item)))
        plans.append(_Plan(path, out_dir, "known", result=SlideResult(
            path=path, output=None, status="failed", error=reason, config_hash=digest)))
    to_run = [i for i, plan in enumerate(plans) if plan.action == "run"]
    for i, plan in enumerate(plans):
        if plan.result is not None:
            record(i, plan.result)

    extra: dict[str, Any] = {
        "output_dir": str(out_dir),
        "inputs": [os.fspath(item) for item in inputs],
        "overwrite": overwrite,
        "scheduler": execution.scheduler,
        "executor": None,  # set when a slide runs: no cluster is started when all are skipped
        "dashboard": None,
    }
    try:
        if to_run:
            _execute(plans, to_run, config, out_dir, execution, progress, record, extra)
    except KeyboardInterrupt:
        _finish_report(results, plans, digest, out_dir, started_at, extra, "interrupted")
        raise
    final = _finish_report(results, plans, digest, out_dir, started_at, extra, None)
    progress.end(final, out_dir / REPORT_JSON)
    return final


def _expand(inputs: Sequence[str | os.PathLike[str]]) -> tuple[list[Path], list[tuple[str, str]]]:
    """The slides of ``inputs`` (:func:`slidemask.inputs.expand_inputs`), and among several
    inputs, each one that finds none (a folder without slide files, a pattern that matches
    none) with the reason: it fails on its own, and the other inputs' slides still run. With
    one input, or when no input finds a slide, the ``ConfigError`` is raised."""
    if len(inputs) < 2:
        return expand_inputs(inputs), []
    slides: list[Path] = []
    seen: set[Path] = set()
    found_nothing: list[tuple[str, str]] = []
    for item in inputs:
        try:
            found = expand_inputs([item])
        except ConfigError as exc:
            found_nothing.append((os.fspath(item), str(exc)))
            continue
        slides += [slide for slide in found if slide not in seen]
        seen.update(found)
    if not slides and found_nothing:
        raise ConfigError(found_nothing[0][1])
    return slides, found_nothing


def _execute(
    plans: list[_Plan],
    to_run: list[int],
    config: Config,
    out_dir: Path,
    execution: ExecutionConfig,
    progress: BatchProgress,
    record: Callable[[int, SlideResult], None],
    extra: dict[str, Any],
) -> None:
    digest = config_hash(config)
    arguments = [
        (str(plans[i].path), config, str(out_dir), plans[i].overwrite, str(plans[i].output))
        for i in to_run
    ]
    labels = [plans[i].path.name for i in to_run]
    finished: set[str] = set()

    def on_done(outcome: TaskOutcome[Any]) -> None:
        index = to_run[outcome.index]
        finished.add(str(plans[index].path))
        record(index, _outcome_result(outcome, plans[index], digest))

    with execution_context(execution) as executor:
        extra["executor"] = executor.description
        extra["dashboard"] = executor.dashboard_link
        progress.executing(len(to_run), executor.description, executor.dashboard_link)
        token = _SLIDE_STARTED.set(progress.slide_started)
        try:
            with (
                _TaskCounter(progress),
                executor.subscribe(PROGRESS_TOPIC, _relay_events(progress, finished)),
            ):
                executor.map(_slide_task, arguments, labels=labels, on_done=on_done)
        finally:
            _SLIDE_STARTED.reset(token)


def _finish_report(
    results: list[SlideResult | None],
    plans: list[_Plan],
    digest: str,
    out_dir: Path,
    started_at: datetime,
    extra: dict[str, Any],
    unfinished_reason: str | None,
) -> list[SlideResult]:
    final: list[SlideResult] = []
    for result, plan in zip(results, plans, strict=True):
        if result is None:
            # only reachable when interrupted: say so instead of dropping the slide
            result = SlideResult(path=plan.path, output=plan.output, status="failed",
                                 error=f"{plan.path}: {unfinished_reason or 'not run'}",
                                 config_hash=digest)
        final.append(result)
    json_path, _ = write_report(final, out_dir, started=started_at, config_hash=digest,
                                extra=extra)
    try:
        write_html_report(json_path)
    except Exception as exc:  # noqa: BLE001 - the page must not cost the run its report
        log.error("could not write the HTML report beside %s: %s: %s",
                  json_path, type(exc).__name__, exc)
        log.debug("traceback", exc_info=True)
    return final
