"""report.json and report.csv hold every slide's status, error, time, statistics and hash."""

from __future__ import annotations

import csv
import json
import os
import pickle
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from slidemask._version import package_version
from slidemask.report import (
    SlideResult,
    status_counts,
    write_report,
)


@pytest.fixture
def results(tmp_path: Path) -> list[SlideResult]:
    out = tmp_path / "out"
    return [
        SlideResult(
            Path("/data/a.svs"), out / "a.zarr", "done", seconds=12.3456,
            stats={"foreground_pixels": np.int64(1234), "fraction": np.float32(0.25),
                   "level": {"index": 2, "shape": (100, 200)}},
            config_hash="abc",
        ),
        SlideResult(Path("/data/b.svs"), out / "b.zarr", "skipped", seconds=0.01,
                    stats={"foreground_pixels": 7}, config_hash="abc"),
        SlideResult(Path("/data/gone.svs"), out / "gone.zarr", "failed",
                    error="file not found", seconds=0.0, config_hash="abc"),
        SlideResult("/data/c, \"quoted\".svs", None, "failed",
                    error="SlideError: level 0, tile at (0, 512): truncated",
                    seconds=1.5, stats={"fraction": float("nan"), "path": "x"},
                    config_hash="abc"),
    ]


def test_status_is_checked():
    with pytest.raises(ValueError, match="status"):
        SlideResult(Path("a.svs"), None, "ok")  # type: ignore[arg-type]


def test_slide_result_pickles():
    # it travels back from dask.distributed worker processes
    r = SlideResult(Path("a.svs"), Path("a.zarr"), "done", stats={"n": 1}, config_hash="h")
    assert pickle.loads(pickle.dumps(r)) == r


def test_counts(results: list[SlideResult]):
    assert status_counts(results) == {"done": 1, "skipped": 1, "failed": 2, "total": 4}


def test_report_json(results: list[SlideResult], tmp_path: Path):
    started = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    finished = started + timedelta(seconds=90)
    json_path, csv_path = write_report(
        results, tmp_path / "out", started=started, finished=finished,
        extra={"scheduler": "processes", "workers": 2},
    )
    assert json_path == tmp_path / "out" / "report.json"
    assert csv_path == tmp_path / "out" / "report.csv"
    report = json.loads(json_path.read_text(encoding="utf-8"))
    assert report["started"] == "2026-01-02T03:04:05+00:00"
    assert report["finished"] == "2026-01-02T03:05:35+00:00"
    assert report["seconds"] == 90
    assert report["slidemask_version"] == package_version() != ""
    assert report["config_hash"] == "abc"
    assert report["counts"] == {"done": 1, "skipped": 1, "failed": 2, "total": 4}
    assert report["scheduler"] == "processes" and report["workers"] == 2
    slides = report["slides"]
    assert [s["status"] for s in slides] == ["done", "skipped", "failed", "failed"]
    assert slides[0] == {
        "path": "/data/a.svs",
        "output": str(tmp_path / "out" / "a.zarr"),
        "status": "done",
        "error": None,
        "seconds": 12.346,
        "config_hash": "abc",
        "stats": {"foreground_pixels": 1234, "fraction": 0.25,
                  "level": {"index": 2, "shape": [100, 200]}},
    }
    assert slides[2]["error"] == "file not found"
    assert slides[3]["output"] is None
    assert slides[3]["stats"]["fraction"] is None  # NaN is not JSON


def test_report_csv(results: list[SlideResult], tmp_path: Path):
    _, csv_path = write_report(results, tmp_path)
    with open(csv_path, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
        fh.seek(0)
        header = next(csv.reader(fh))
    assert header == ["path", "output", "status", "error", "seconds", "config_hash",
                      "foreground_pixels", "fraction", "level.index", "level.shape", "stats.path"]
    assert len(rows) == 4
    assert rows[0]["foreground_pixels"] == "1234"
    assert rows[0]["level.shape"] == "[100, 200]"
    assert rows[0]["seconds"] == "12.346"
    assert rows[1]["status"] == "skipped" and rows[1]["fraction"] == ""
    assert rows[2]["error"] == "file not found"
    assert rows[3]["path"] == '/data/c, "quoted".svs'
    assert rows[3]["output"] == "" and rows[3]["stats.path"] == "x"


def test_config_hash_defaults(tmp_path: Path):
    mixed = [SlideResult(Path("a.svs"), None, "done", config_hash="h1"),
             SlideResult(Path("b.svs"), None, "done", config_hash="h2")]
    json_path, _ = write_report(mixed, tmp_path)
    assert json.loads(json_path.read_text())["config_hash"] is None
    json_path, _ = write_report(mixed, tmp_path, config_hash="h1")
    assert json.loads(json_path.read_text())["config_hash"] == "h1"


def test_naive_start_time_is_local(tmp_path: Path):
    started = datetime.now() - timedelta(seconds=5)  # naive, local
    json_path, _ = write_report([], tmp_path, started=started)
    report = json.loads(json_path.read_text())
    assert report["started"].endswith("+00:00")
    assert 4 <= report["seconds"] < 60


def test_empty_run(tmp_path: Path):
    json_path, csv_path = write_report([], tmp_path / "new")
    report = json.loads(json_path.read_text())
    assert report["counts"]["total"] == 0 and report["slides"] == []
    assert csv_path.read_text().splitlines() == ["path,output,status,error,seconds,config_hash"]


def test_rewrite_is_atomic_and_leaves_no_temporaries(results: list[SlideResult], tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch):
    write_report(results[:1], tmp_path)
    before = (tmp_path / "report.json").read_bytes()

    def broken_replace(src: str, dst: str) -> None:
        raise OSError("disk gone")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk gone"):
        write_report(results, tmp_path)
    monkeypatch.undo()
    assert (tmp_path / "report.json").read_bytes() == before  # old report intact
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.csv", "report.json"]
    write_report(results, tmp_path)
    assert json.loads((tmp_path / "report.json").read_text())["counts"]["total"] == 4
