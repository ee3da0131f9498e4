"""The ``slidemask`` command: thin wrapper over the public API (parse, load, call, report).

Exit status: 0 when everything asked for succeeded, 1 when a slide failed (the others still
run), 2 for a usage or configuration error (nothing was run).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from slidemask.errors import ConfigError, SlidemaskError

# Everything heavy (dask, pydantic, tifffile, OpenCV, zarr, the pipeline) is imported by the
# command that needs it, so ``--help``, ``--version`` and usage errors answer at once.
if TYPE_CHECKING:
    from pydantic import ValidationError

    from slidemask.batch import BatchProgress, TerminalProgress
    from slidemask.config import Config
    from slidemask.distributed import ExecutionConfig

__all__ = ["main"]

log = logging.getLogger("slidemask")

DEMO_SIZE = 8192
"""Default edge of the demo's synthetic slide in pixels (about a minute on 2 cores)."""

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


class _Parser(argparse.ArgumentParser):
    """argparse that returns usage errors to :func:`main` instead of exiting the process."""

    def exit(self, status: int = 0, message: str | None = None) -> None:  # type: ignore[override]
        if message:
            sys.stderr.write(message)
        raise _Exit(status)


class _Exit(Exception):
    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


class _Version(argparse.Action):
    """``--version``: print ``slidemask <version>`` and exit 0.

    Unlike argparse's own ``version`` action, the version is looked up only when asked for,
    so building the parser stays cheap.
    """

    def __init__(self, option_strings: Sequence[str], dest: str = argparse.SUPPRESS,
                 default: str = argparse.SUPPRESS, help: str | None = None) -> None:
        super().__init__(option_strings=option_strings, dest=dest, default=default, nargs=0,
                         help=help)

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: Any, option_string: str | None = None) -> None:
        import slidemask

        sys.stdout.write(f"{parser.prog} {slidemask.__version__}\n")
        parser.exit()


def _verbosity(parser: argparse.ArgumentParser) -> None:
    group = parser.add_mutually_exclusive_group()
    group.add_argument("-v", "--verbose", action="count", default=0,
                       help="more log output, with tracebacks of failed slides")
    group.add_argument("-q", "--quiet", action="store_true", help="only errors on stderr")


def _build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="slidemask",
        description=(
            "Binary masks (tissue, threshold, colour range) from whole-slide images of any "
            "size, computed in bounded memory and written as Zarr v3."
        ),
        epilog="Exit status: 0 all succeeded, 1 a slide failed, 2 usage or config error.",
    )
    parser.add_argument("--version", action=_Version, help="print the version and exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True,
                                parser_class=_Parser)

    run = sub.add_parser(
        "run",
        help="write one mask per slide from a YAML config",
        description=(
            "Compute the mask a YAML config describes for each input slide and write it to "
            "OUTPUT/<slide name>.zarr (bool, rows x cols in the pixels of the config's "
            "resolution level; provenance in the Zarr attributes) and a run report, "
            "OUTPUT/report.json and report.csv. A slide that fails is reported and the others "
            "still run. A slide whose output is complete and was made from it with the same "
            "config is skipped, so running the same command again after an interruption "
            "resumes it; one made with another config is redone (extra outputs the new config "
            "does not write are removed), and one made from another slide of the same name "
            "fails that slide unless --overwrite."
        ),
        epilog="See configs/*.yaml for examples. OUTPUT/report.html shows the batch (previews, "
               "sortable table, outliers). On a terminal a progress line shows slides done, "
               "failed and remaining with an ETA and the running slide's share of tasks "
               "(SLIDEMASK_PROGRESS=1 or 0 forces it on or off; -q hides it); in a log, a "
               "slide still running logs its share every 30 s. Exit status: 0 all done, "
               "1 a slide failed, "
               "2 usage or config error.",
    )
    run.add_argument("config", metavar="CONFIG", help="YAML mask configuration file")
    run.add_argument(
        "-i", "--input", metavar="PATH", nargs="+", action="extend", required=True,
        help="slide files, folders of slides, glob patterns or manifests (.txt: one path "
             "per line, .csv: a 'path' column); repeatable",
    )
    run.add_argument("-o", "--output", metavar="DIR", default=".",
                     help="output folder, created if missing (default: current folder); it "
                          "also gets report.json and report.csv")
    run.add_argument("--overwrite", action="store_true",
                     help="redo every slide (otherwise a slide whose output is complete and "
                          "made with the same config is skipped)")
    run.add_argument("--mpp", metavar="UM", type=float,
                     help="micrometres per level-0 pixel for slides that do not state their "
                          "pixel size (the config's default_mpp); a slide's own value wins")
    execution = run.add_argument_group(
        "execution", "override the config's execution: section (see configs/slurm.yaml)"
    )
    execution.add_argument(
        "--scheduler", metavar="NAME",
        help="threads (default: this process), processes (a local cluster), "
             "tcp://host:port (a running Dask scheduler), slurm or pbs (dask-jobqueue)",
    )
    execution.add_argument(
        "--workers", metavar="N", type=int,
        help="threads: threads per slide; processes: worker processes (one slide each at a "
             "time); slurm/pbs: worker processes in all",
    )
    execution.add_argument(
        "--threads-per-worker", metavar="N", type=int,
        help="processes, tcp://, slurm/pbs: threads each worker process gives its slide "
             "(default 1: with --workers 1 one slide gets one core)",
    )
    execution.add_argument("--memory-limit", metavar="SIZE",
                           help="processes: memory limit per worker process, e.g. 4GiB")
    _verbosity(run)

    tiles = sub.add_parser(
        "tiles",
        help="write patch coordinates from stored masks (the config's tiles: section)",
        description=(
            "For each input slide, read its stored mask OUTPUT/<slide name>.zarr (written by "
            "`slidemask run` with the same config) and write the patches whose exact tissue "
            "fraction reaches tiles.min_fraction, in the formats tiles.formats lists: "
            "OUTPUT/<name>.tiles.h5 (CLAM), <mag>x_<size>px_<overlap>px_overlap/patches/"
            "<name>_patches.h5 (Trident), <name>.tiles.csv, .parquet, .geojson (QuPath "
            "tiles) and .png (preview), then <name>.tiles.json. Slides whose tiles are up to "
            "date are skipped; masks are never recomputed."
        ),
        epilog="Exit status: 0 all done, 1 a slide failed (e.g. no mask yet), 2 usage or "
               "config error.",
    )
    tiles.add_argument("config", metavar="CONFIG", help="YAML configuration with a tiles: section")
    tiles.add_argument(
        "-i", "--input", metavar="PATH", nargs="+", action="extend", required=True,
        help="slide files, folders of slides, glob patterns or manifests, as for run",
    )
    tiles.add_argument("-o", "--output", metavar="DIR", default=".",
                       help="the folder holding the masks (default: current folder)")
    tiles.add_argument("--overwrite", action="store_true",
                       help="rewrite tiles that are up to date")
    _verbosity(tiles)

    script = sub.add_parser(
        "cluster-script",
        help="print the SLURM/PBS job script a run would submit",
        description="Render the batch job script that `slidemask run CONFIG` would submit "
                    "for the config's execution: section (scheduler slurm or pbs), without "
                    "a scheduler or sbatch/qsub. The scheduler address in the worker command "
                    "is a placeholder; everything else is what a run submits.",
    )
    script.add_argument("config", metavar="CONFIG", help="YAML config with execution.scheduler "
                                                         "slurm or pbs")
    _verbosity(script)

    info = sub.add_parser(
        "info",
        help="describe a slide's pyramid",
        description="Print a slide's levels (rows x cols x channels), dtype, tile size, "
                    "compression, pixel size (µm per pixel) and vendor. Reads no pixel data.",
    )
    info.add_argument("slide", metavar="SLIDE",
                      help="slide file (SVS, NDPI, OME-TIFF, QPTIFF, TIFF; MRXS, a DICOM WSI "
                           "folder and others through OpenSlide)")
    info.add_argument("--json", action="store_true", help="print JSON instead of a table")
    _verbosity(info)

    preview = sub.add_parser(
        "preview",
        help="render a PNG preview of an existing mask output",
        description="Draw the outline of a stored mask (a slidemask .zarr or .ome.zarr output) "
                    "on a thumbnail of its slide and write a PNG. Only thumbnail-sized data "
                    "is read.",
    )
    preview.add_argument("slide", metavar="SLIDE", help="the slide the mask was made from")
    preview.add_argument("mask", metavar="MASK", help="the mask output (.zarr or .ome.zarr)")
    preview.add_argument("-o", "--output", metavar="PNG",
                         help="PNG to write (default: the mask path with .png)")
    preview.add_argument("--max-size", type=int, default=1024, metavar="PX",
                         help="longer side of the preview in pixels (default 1024)")
    _verbosity(preview)

    demo = sub.add_parser(
        "demo",
        help="make a synthetic slide and mask it with the default config",
        description="Write a deterministic synthetic H&E-like pyramidal JPEG BigTIFF (tissue, "
                    "holes, specks, a blue pen stroke), run the built-in default config "
                    "(tissue minus blue/green pen ink, the same as configs/pen.yaml) on it "
                    "with a preview and summary, and print where the outputs are: the mask, "
                    "the preview PNG and report.html.",
    )
    demo.add_argument("--size", type=int, default=DEMO_SIZE, metavar="N",
                      help=f"slide edge in pixels, level 0 (default {DEMO_SIZE}: about a minute "
                           "on 2 cores)")
    demo.add_argument("-o", "--output", metavar="DIR", default="slidemask-demo",
                      help="output folder (default: ./slidemask-demo); existing demo files "
                           "there are replaced")
    _verbosity(demo)
    return parser


class _Console(logging.StreamHandler):  # type: ignore[type-arg]
    """Log lines on stderr that hide the progress bar (when one is shown) while they print."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)
        self.bar: TerminalProgress | None = None

    def format(self, record: logging.LogRecord) -> str:
        # URLs without credentials (presigned queries, user:password@), tracebacks included
        from slidemask.storage import redact

        return redact(super().format(record))

    def emit(self, record: logging.LogRecord) -> None:
        # whatever sys.stderr is now (it is replaced by test runners and embedding programs)
        self.stream = sys.stderr
        if self.bar is None:
            super().emit(record)
            return
        with self.bar.suspend():
            super().emit(record)


def _not_run_slide_failure(record: logging.LogRecord) -> bool:
    # run_slide logs its own failures; the batch reports every failure once, wherever the slide
    # ran, so the in-process copy would print the same error twice.
    return not (record.funcName == "run_slide" and record.levelno >= logging.ERROR)


def _setup_logging(verbose: int, quiet: bool) -> _Console:
    # -v shows the traceback of each failed slide (logged at DEBUG)
    level = logging.ERROR if quiet else logging.INFO if verbose == 0 else logging.DEBUG
    handler = _Console()
    handler.setFormatter(logging.Formatter("slidemask: %(message)s"))
    log.handlers[:] = [handler]
    log.setLevel(level)
    log.propagate = False
    # dask.distributed's own INFO lines (cluster start and stop) are noise in a batch log
    noise = logging.ERROR if quiet else logging.INFO if verbose > 1 else logging.WARNING
    logging.getLogger("distributed").setLevel(noise)
    return handler


PROGRESS_ENV = "SLIDEMASK_PROGRESS"
"""Environment variable: ``1`` shows the progress bar even when stderr is not a terminal (for
tests and log viewers that understand carriage returns), ``0`` never shows it; ``-q`` wins."""


def _progress_bar_wanted(quiet: bool) -> bool:
    if quiet:
        return False
    forced = os.environ.get(PROGRESS_ENV, "").strip()
    if forced in ("0", "1"):
        return forced == "1"
    return sys.stderr.isatty()


@contextmanager
def _batch_progress(quiet: bool) -> Iterator[BatchProgress]:
    """What a batch shows while it runs: the progress bar (slides done / failed / remaining,
    ETA, the running slide's tasks) on a terminal, else log lines; the console's log lines
    print above the bar."""
    from slidemask.batch import LogProgress, TerminalProgress

    bar = TerminalProgress(sys.stderr) if _progress_bar_wanted(quiet) else None
    console = next((h for h in log.handlers if isinstance(h, _Console)), None)
    if console is not None:
        console.bar = bar
        console.addFilter(_not_run_slide_failure)
    try:
        yield bar or LogProgress()
    finally:
        if bar is not None:  # also when interrupted: the error goes on a line of its own
            bar.end((), Path())
        if console is not None:
            console.bar = None
            console.removeFilter(_not_run_slide_failure)


def _error(message: str) -> None:
    sys.stderr.write(f"slidemask: error: {message}\n")


def _validation_message(exc: ValidationError) -> str:
    lines = []
    for error in exc.errors():
        where = ".".join(str(part) for part in error.get("loc", ()))
        message = str(error.get("msg", "invalid")).removeprefix("Value error, ")
        lines.append(f"execution{'.' + where if where else ''}: {message}")
    return "; ".join(dict.fromkeys(lines))


def _execution(config: Config, args: argparse.Namespace) -> ExecutionConfig:
    """The config's ``execution:`` with the command line's options on top."""
    from pydantic import ValidationError

    from slidemask.distributed import ExecutionConfig

    overrides: dict[str, Any] = {}
    if args.scheduler is not None:
        overrides["scheduler"] = args.scheduler
    if args.workers is not None:
        overrides["workers"] = args.workers
    if args.threads_per_worker is not None:
        overrides["threads_per_worker"] = args.threads_per_worker
    if args.memory_limit is not None:
        overrides["memory_limit"] = args.memory_limit
    if not overrides:
        return config.execution
    data = {**config.execution.model_dump(exclude_unset=True), **overrides}
    if "workers" in overrides:
        data.pop("jobs", None)  # --workers replaces a job count for slurm/pbs
    try:
        return ExecutionConfig(**data)
    except ValidationError as exc:
        raise ConfigError(
            f"{args.config} with command-line options: {_validation_message(exc)}"
        ) from None


def _cmd_run(args: argparse.Namespace) -> int:
    from slidemask import storage
    from slidemask.batch import run_batch
    from slidemask.config import load_config
    from slidemask.report import REPORT_JSON, status_counts
    from slidemask.writers.html_report import REPORT_HTML

    started = time.perf_counter()
    try:
        config = load_config(args.config)
        execution = _execution(config, args)
        if args.mpp is not None:
            if not (math.isfinite(args.mpp) and 0 < args.mpp <= 1000):
                raise ConfigError(f"--mpp must be a pixel size in micrometres, 0 to 1000; got "
                                  f"{args.mpp}")
            config = config.model_copy(update={"default_mpp": args.mpp})
    except ConfigError as exc:
        _error(str(exc))
        return EXIT_USAGE
    try:
        with _batch_progress(args.quiet) as progress:
            results = run_batch(args.input, config, args.output, overwrite=args.overwrite,
                                execution=execution, progress=progress)
    except ConfigError as exc:
        _error(str(exc))
        return EXIT_USAGE
    counts = status_counts(results)
    # the output folder may be a URL (s3://bucket/prefix): joined as a URL, never as a path
    out = storage.location(args.output) if storage.is_url(args.output) else Path(args.output)
    report, page = out / REPORT_JSON, out / REPORT_HTML
    try:
        shown = page.is_file() if isinstance(page, Path) else storage.exists(str(page))
    except Exception:  # noqa: BLE001 - only whether to mention the page
        shown = False
    if shown:
        log.info("QC report: %s", page)
    print(f"{counts['done']} done, {counts['skipped']} skipped, {counts['failed']} failed in "
          f"{time.perf_counter() - started:.1f} s; report: {report}")
    return EXIT_FAILED if counts["failed"] else EXIT_OK


def _cmd_tiles(args: argparse.Namespace) -> int:
    import dask

    from slidemask.config import load_config
    from slidemask.report import status_counts
    from slidemask.tiles.runner import tile_slides

    started = time.perf_counter()
    try:
        config = load_config(args.config)
        if config.tiles is None:
            raise ConfigError(f"{args.config}: no tiles: section (e.g. tiles: {{size: 256, "
                              "magnification: 20, formats: [clam]})")
        with dask.config.set(scheduler="threads"):
            results = tile_slides(args.input, config.tiles, args.output,
                                  overwrite=args.overwrite)
    except ConfigError as exc:
        _error(str(exc))
        return EXIT_USAGE
    counts = status_counts(results)
    tiles = sum(r.stats.get("tiles") or 0 for r in results)
    print(f"{counts['done']} done, {counts['skipped']} skipped, {counts['failed']} failed "
          f"({tiles} tiles) in {time.perf_counter() - started:.1f} s")
    return EXIT_FAILED if counts["failed"] else EXIT_OK


def _cmd_cluster_script(args: argparse.Namespace) -> int:
    from slidemask.config import load_config
    from slidemask.distributed import JOB_QUEUES, job_script

    try:
        config = load_config(args.config)
    except ConfigError as exc:
        _error(str(exc))
        return EXIT_USAGE
    scheduler = config.execution.scheduler
    if scheduler not in JOB_QUEUES:
        _error(
            f"{args.config}: cluster-script needs execution.scheduler slurm or pbs (with "
            f"cores and memory per job); this config's scheduler is {scheduler!r}, which "
            "submits no job script"
        )
        return EXIT_USAGE
    try:
        script = job_script(config.execution)
    except (ConfigError, ImportError, ValueError) as exc:
        _error(f"{args.config}: cannot render the job script: {exc}")
        return EXIT_USAGE
    sys.stdout.write(script if script.endswith("\n") else script + "\n")
    return EXIT_OK


def _format_mpp(value: float | None) -> str:
    return "unknown" if value is None else f"{value:.4g}"


def _info_table(info: dict[str, Any]) -> str:
    tile = info.get("tile_shape") or ["?", "?"]
    lines = [
        f"slide        {info.get('path')}",
        f"backend      {info.get('backend')}",
        f"vendor       {info.get('vendor')}",
        f"compression  {info.get('compression')}",
        f"dtype        {info.get('dtype')}",
        f"tile size    {tile[0]} x {tile[1]} px (rows x cols)",
        f"mpp          {_format_mpp(info.get('mpp'))} µm per pixel at level 0",
        "",
    ]
    header = ("level", "rows x cols x channels", "downsample", "µm/px", "chunks (rows x cols)")
    rows = [header]
    for lv in info.get("levels", []):
        shape = " x ".join(str(n) for n in lv["shape"])
        chunks = " x ".join(str(n) for n in lv.get("chunks", []))
        rows.append((str(lv["level"]), shape, f"{lv['downsample']:.4g}",
                     _format_mpp(lv.get("mpp")), chunks))
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    for r in rows:
        lines.append("  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip())
    return "\n".join(lines)


def _cmd_info(args: argparse.Namespace) -> int:
    from slidemask.io import open_slide

    try:
        slide = open_slide(args.slide)
    except SlidemaskError as exc:
        _error(str(exc))
        log.debug("traceback for %s", args.slide, exc_info=True)  # shown with -v
        return EXIT_FAILED
    info = slide.info()
    if args.json:
        print(json.dumps(info, indent=2, default=str, ensure_ascii=False))
    else:
        print(_info_table(info))
    return EXIT_OK


def _cmd_preview(args: argparse.Namespace) -> int:
    from slidemask.writers.preview import preview_from_outputs

    if args.max_size < 16:
        _error(f"--max-size must be at least 16 pixels, got {args.max_size}")
        return EXIT_USAGE
    from slidemask.storage import display, is_url

    mask: str | Path = args.mask
    if is_url(args.mask):  # on object storage: the PNG goes to the working folder by default
        name = display(args.mask).rstrip("/").rsplit("/", 1)[-1]
        png = Path(args.output) if args.output else Path(name.split(".")[0] + ".png")
    else:
        mask = Path(args.mask)
        png = (Path(args.output) if args.output
               else mask.with_name(mask.name.split(".")[0] + ".png"))
        if not mask.exists():
            _error(f"{mask}: no such mask output")
            return EXIT_FAILED
    try:
        written = preview_from_outputs(args.slide, mask, png, max_size=args.max_size)
    except (SlidemaskError, ValueError, OSError) as exc:
        _error(str(exc))
        return EXIT_FAILED
    print(written)
    return EXIT_OK


def _cmd_demo(args: argparse.Namespace) -> int:
    from slidemask.batch import run_batch
    from slidemask.config import Outputs, default_config
    from slidemask.inputs import extra_paths_for
    from slidemask.io.synthetic import write_synthetic_slide
    from slidemask.report import REPORT_JSON
    from slidemask.writers.html_report import REPORT_HTML

    if args.size < 64:
        _error(f"--size must be at least 64 pixels, got {args.size}")
        return EXIT_USAGE
    output_dir = Path(args.output)
    output_dir.mkdir(parents=True, exist_ok=True)
    slide_path = output_dir / "synthetic.ome.tif"
    log.info("writing a %d x %d synthetic slide to %s", args.size, args.size, slide_path)
    started = time.perf_counter()
    write_synthetic_slide(slide_path, args.size)
    log.info("slide written in %.1f s; masking it with the default config",
             time.perf_counter() - started)
    # the default config, plus the preview and summary a first look wants
    config = default_config().model_copy(update={"outputs": Outputs(preview=True, summary=True)})
    with _batch_progress(args.quiet) as progress:
        (result,) = run_batch([slide_path], config, output_dir, overwrite=True,
                              progress=progress)
    if result.status != "done" or result.output is None:
        _error(f"demo failed: {result.error}")
        return EXIT_FAILED
    fraction = result.stats.get("fraction")
    extras = extra_paths_for(result.output, ["preview", "summary"])
    print(f"slide   {slide_path}")
    print(f"mask    {result.output}  (tissue minus pen ink; "
          f"{100 * (fraction or 0):.1f} % of the slide, {result.seconds:.1f} s)")
    print(f"preview {extras['preview']}  (the slide with the mask's outline in green)")
    print(f"summary {extras['summary']}")
    print(f"report  {output_dir / REPORT_HTML}  (open in a browser; data in {REPORT_JSON})")
    print(f"config  built-in default (configs/pen.yaml) with preview and summary, hash "
          f"{result.config_hash[:12]}")
    print(f"inspect slidemask info {slide_path}")
    print(f"read    python -c \"import slidemask.writers.zarr as z; "
          f"print(z.read_mask('{result.output}'))\"")
    return EXIT_OK


_COMMANDS = {
    "run": _cmd_run,
    "tiles": _cmd_tiles,
    "cluster-script": _cmd_cluster_script,
    "info": _cmd_info,
    "preview": _cmd_preview,
    "demo": _cmd_demo,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``slidemask`` command line with ``argv`` (default: ``sys.argv[1:]``).

    Returns the exit status instead of exiting, so tests and scripts can call it.
    """
    parser = _build_parser()
    try:
        args = parser.parse_args(list(argv) if argv is not None else None)
    except _Exit as exc:
        return exc.status
    _setup_logging(args.verbose, args.quiet)
    from slidemask.memory import prepare_process

    prepare_process()  # before any computation (slidemask.memory)
    try:
        with _terminate_as_interrupt():
            return _COMMANDS[args.command](args)
    except _Terminated:
        _error("terminated (SIGTERM)")
        return 143
    except KeyboardInterrupt:
        _error("interrupted")
        return 130


class _Terminated(KeyboardInterrupt):
    """SIGTERM (a job scheduler's time limit, ``timeout``, ``kill``), raised like Ctrl-C."""


@contextmanager
def _terminate_as_interrupt() -> Iterator[None]:
    """SIGTERM stops a run as Ctrl-C does: the slides still running are reported as
    interrupted, their scratch removed, and nothing incomplete looks complete (by default
    SIGTERM ended the process at once: no report, scratch left behind). Main thread only."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def terminate(signum: int, frame: Any) -> None:
        raise _Terminated()

    previous = signal.signal(signal.SIGTERM, terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
