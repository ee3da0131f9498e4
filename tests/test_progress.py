"""Progress while a batch runs: slides done / failed / remaining with an ETA, each running
slide's share of tasks, on threads and on a distributed cluster; quiet with -q and off a
terminal (SLIDEMASK_PROGRESS=1 stands in for a terminal here)."""

from __future__ import annotations

import io
import logging
import re
import threading
from pathlib import Path

import pytest

from slidemask.batch import BatchProgress, TerminalProgress, run_batch
from slidemask.cli import main
from slidemask.config import config_from_yaml
from slidemask.distributed import ExecutionConfig
from slidemask.io.synthetic import write_synthetic_slide
from slidemask.report import SlideResult

CONFIG = """\
masks:
  tissue:
    - gray: {}
    - median_blur: {ksize: 5}
    - threshold: {below: 220}
chunk_size: 128
"""


@pytest.fixture(scope="module")
def slides(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    folder = tmp_path_factory.mktemp("slides")
    return [write_synthetic_slide(folder / f"p{i}.ome.tif", (384, 512), tile=128, seed=i)
            for i in range(2)]


@pytest.fixture()
def config_file(tmp_path: Path) -> Path:
    path = tmp_path / "mask.yaml"
    path.write_text(CONFIG)
    return path


def test_line_counts_remaining_and_estimates_the_time_left(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    now = [0.0]
    monkeypatch.setattr("slidemask.batch.time.perf_counter", lambda: now[0])
    bar = TerminalProgress(io.StringIO(), interval=0)
    bar.begin(4, Path("out"), "0" * 64)
    bar.slide_finished(SlideResult(Path("/a/w.svs"), None, "skipped"), 1, 4)
    now[0] = 10.0
    bar.executing(3, "this process", None)  # skipped slides do not count for the estimate
    assert bar.eta() is None  # nothing computed yet
    now[0] = 40.0
    bar.slide_finished(SlideResult(Path("/a/x.svs"), None, "done"), 2, 4)
    assert bar.eta() == pytest.approx(60.0)  # one slide in 30 s, two remaining
    bar.slide_started(Path("/a/y.svs"))
    bar.slide_started(Path("/b/z.svs"))
    bar.slide_tasks(1, 4, Path("/a/y.svs"))
    bar.slide_tasks(3, 4, Path("/b/z.svs"))
    line = bar.line(200)
    assert "2/4 slides [##########----------]  50%  1 done, 1 skipped, 0 failed, 2 remaining" \
        in line
    assert "ETA 1:00" in line and line.endswith("| z.svs  75% +1 running")
    bar.slide_tasks(2, 4)  # no path: the slide that started last in this process
    assert bar.line(200).endswith("| z.svs  50% +1 running")
    bar.slide_finished(SlideResult(Path("/b/z.svs"), None, "failed"), 3, 4)
    assert bar.line(200).endswith("| y.svs  25%")
    assert len(bar.line(80)) <= 79  # a narrow terminal: a shorter bar, then cut
    bar.slide_started(Path("/c/" + "a-very-long-slide-name-" * 3 + "end.ome.tif"))
    bar.slide_tasks(1, 2)
    narrow = bar.line(80)
    # the running slide's share is kept: the counts per status and the name's start go
    assert len(narrow) <= 79 and narrow.endswith("end.ome.tif  50% +1 running"), narrow
    assert "done," not in narrow and narrow.startswith("3/4 slides [")


def test_terminal_progress_through_the_cli(
    slides: list[Path], tmp_path: Path, config_file: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SLIDEMASK_PROGRESS", "1")  # stderr is not a terminal under pytest
    argv = ["run", str(config_file), "-i", *map(str, slides), str(tmp_path / "gone.svs"),
            "-o", str(tmp_path / "out")]
    assert main(argv) == 1
    err = capsys.readouterr().err
    frames = [f for f in re.split(r"\r\x1b\[K", err) if f.startswith(("0/3", "1/3", "2/3",
                                                                         "3/3"))]
    assert any(re.match(r"0/3 slides .* 0 failed, 3 remaining", f) for f in frames)
    # per-chunk progress of a running slide, and an estimate once a slide is done
    assert any(re.search(r"\| p0\.ome\.tif +\d+%", f) for f in frames)
    assert any(re.match(r"1/3 slides .*2 remaining .*ETA \d+:\d\d", f) for f in frames)
    assert any(f.startswith("3/3 slides") and "2 done, 0 skipped, 1 failed, 0 remaining" in f
               for f in frames)
    assert err.endswith("\r\x1b[Kslidemask: QC report: "  # the bar is gone at the end
                        f"{tmp_path / 'out' / 'report.html'}\n")
    assert "slidemask: [3/3] FAILED" in err  # log lines still print, above the bar

    # -q: no bar, only the failure
    assert main([*argv, "-q"]) == 1
    err = capsys.readouterr().err
    assert "\r" not in err and "\x1b" not in err and len(err.splitlines()) == 1
    # SLIDEMASK_PROGRESS=0, or no terminal: log lines only
    monkeypatch.setenv("SLIDEMASK_PROGRESS", "0")
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "\r" not in err and "remaining" not in err


class _Recorder(BatchProgress):
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.started: list[str] = []
        self.tasks: list[tuple[str | None, int, int]] = []
        self.threads: set[int] = set()

    def slide_started(self, path: Path) -> None:
        with self.lock:
            self.started.append(path.name)

    def slide_tasks(self, done: int, total: int, path: Path | None = None) -> None:
        with self.lock:
            self.tasks.append((None if path is None else path.name, done, total))
            self.threads.add(threading.get_ident())


@pytest.mark.timeout(120)
def test_progress_from_distributed_workers(slides: list[Path], tmp_path: Path) -> None:
    recorder = _Recorder()
    execution = ExecutionConfig.model_validate(
        {"scheduler": "processes", "workers": 1, "memory_limit": "1GiB"})
    results = run_batch(slides, config_from_yaml(CONFIG), tmp_path / "out",
                        execution=execution, progress=recorder)
    assert [r.status for r in results] == ["done", "done"]
    # each slide says it started, from its worker, and reports its tasks by name
    assert sorted(recorder.started) == ["p0.ome.tif", "p1.ome.tif"]
    assert recorder.tasks and {name for name, _, _ in recorder.tasks} <= {"p0.ome.tif",
                                                                          "p1.ome.tif"}
    assert all(0 <= done <= total for _, done, total in recorder.tasks)
    assert any(done == total > 0 for _, done, total in recorder.tasks)  # a graph completed
    assert threading.get_ident() not in recorder.threads  # delivered by the client's loop


def test_log_progress_reports_a_long_slide_in_the_log(
    slides: list[Path], tmp_path: Path, config_file: Path, caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Off a terminal (a batch job's log), a slide computing longer than the interval gets
    lines with the share of its tasks done."""
    from slidemask.batch import LogProgress, run_batch
    from slidemask.config import load_config

    monkeypatch.setattr(logging.getLogger("slidemask"), "propagate", True)  # the CLI's tests

    with caplog.at_level(logging.INFO, logger="slidemask"):
        results = run_batch([str(slides[0])], load_config(config_file), tmp_path / "out",
                            progress=LogProgress(interval=0.0))
    assert results[0].status == "done"
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("running ")]
    assert any(slides[0].name in line and "% of its current step's tasks" in line
               for line in lines), lines
