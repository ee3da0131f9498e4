"""The command line through ``main([...])``: run, info, demo, exit statuses 0 / 1 / 2."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import tifffile

from slidemask.cli import main
from slidemask.writers.zarr import is_complete, read_attrs, read_mask

CONFIG = """\
resolution: {level: 0}
masks:
  dark:
    - gray: {}
    - threshold: {below: 128}
  blue:
    - hsv_range: {lower: [110, 50, 50], upper: [130, 255, 255]}
output: dark & ~blue
chunk_size: 64
"""


def _rgb(seed: int, shape: tuple[int, int] = (150, 170)) -> np.ndarray:
    rng = np.random.default_rng(seed)
    rgb = rng.integers(0, 256, size=(*shape, 3), dtype=np.uint8)
    rgb[10:40, 20:90] = (30, 40, 200)  # a blue patch: dark, but excluded as "blue"
    return rgb


def _expected(rgb: np.ndarray) -> np.ndarray:
    dark = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY) < 128
    hsv = cv2.cvtColor(rgb, cv2.COLOR_RGB2HSV)
    blue = cv2.inRange(hsv, np.array([110, 50, 50]), np.array([130, 255, 255])) > 0
    return dark & ~blue


@pytest.fixture()
def config(tmp_path: Path) -> Path:
    path = tmp_path / "mask.yaml"
    path.write_text(CONFIG)
    return path


def _slide(tmp_path: Path, name: str, seed: int) -> tuple[Path, np.ndarray]:
    rgb = _rgb(seed)
    path = tmp_path / name
    tifffile.imwrite(path, rgb, tile=(64, 64), photometric="rgb")
    return path, rgb


def test_run_writes_one_mask_per_slide(tmp_path: Path, config: Path, capsys) -> None:
    a, rgb_a = _slide(tmp_path, "a.tif", 1)
    b, rgb_b = _slide(tmp_path, "b.tiff", 2)
    out = tmp_path / "out"
    assert main(["run", str(config), "--input", str(a), str(b), "--output", str(out)]) == 0
    for name, rgb in (("a", rgb_a), ("b", rgb_b)):
        path = out / f"{name}.zarr"
        assert is_complete(path)
        np.testing.assert_array_equal(read_mask(path).compute(), _expected(rgb))
        attrs = read_attrs(path)
        assert attrs["provenance"]["source"]["name"] == name
        assert attrs["provenance"]["output"] == "dark & ~blue"
        assert attrs["stats"]["foreground_pixels"] == int(_expected(rgb).sum())
    assert capsys.readouterr().out.startswith("2 done, 0 skipped, 0 failed in ")
    report = json.loads((out / "report.json").read_text())
    assert [r["status"] for r in report["slides"]] == ["done", "done"]


def test_one_failing_slide_fails_alone(tmp_path: Path, config: Path, capsys) -> None:
    good, rgb = _slide(tmp_path, "good.tif", 3)
    broken = tmp_path / "broken.tif"
    broken.write_bytes(b"this is not a TIFF file at all")
    missing = tmp_path / "missing.svs"
    later, rgb_later = _slide(tmp_path, "later.tif", 4)
    out = tmp_path / "out"
    argv = ["run", str(config), "-i", str(good), str(broken), "-i", str(missing), str(later),
            "-o", str(out)]
    assert main(argv) == 1
    np.testing.assert_array_equal(read_mask(out / "good.zarr").compute(), _expected(rgb))
    np.testing.assert_array_equal(read_mask(out / "later.zarr").compute(), _expected(rgb_later))
    assert not (out / "broken.zarr").exists() and not (out / "missing.zarr").exists()
    assert sorted(p.name for p in out.iterdir()) == [
        "good.zarr", "later.zarr", "report.csv", "report.html", "report.json"]
    captured = capsys.readouterr()
    assert "broken.tif" in captured.err and "not a TIFF" in captured.err
    assert "missing.svs" in captured.err and "file not found" in captured.err
    assert captured.out.startswith("2 done, 0 skipped, 2 failed in ")


def test_existing_output_is_skipped_unless_overwrite(
    tmp_path: Path, config: Path, capsys
) -> None:
    slide, rgb = _slide(tmp_path, "s.tif", 5)
    out = tmp_path / "out"
    argv = ["run", str(config), "-i", str(slide), "-o", str(out)]
    assert main(argv) == 0
    completed = read_attrs(out / "s.zarr")["slidemask"]["completed_at"]
    capsys.readouterr()
    assert main(argv) == 0
    captured = capsys.readouterr()
    assert captured.out.startswith("0 done, 1 skipped, 0 failed in ")
    assert f"skipped {slide}: complete output with this config" in captured.err
    assert main([*argv, "--overwrite"]) == 0
    assert capsys.readouterr().out.startswith("1 done, 0 skipped, 0 failed in ")
    np.testing.assert_array_equal(read_mask(out / "s.zarr").compute(), _expected(rgb))
    assert read_attrs(out / "s.zarr")["slidemask"]["completed_at"] >= completed


def test_output_names_stay_inside_the_output_folder(tmp_path: Path, config: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    first, _ = _slide(folder, "..tif", 6)
    sub = tmp_path / "in2"
    sub.mkdir()
    second, _ = _slide(sub, "..tif", 7)  # same name from another folder: outputs stay distinct
    out = tmp_path / "out"
    assert main(["run", str(config), "-i", str(first), str(second), "-o", str(out)]) == 0
    outputs = list(out.glob("*.zarr"))
    assert len(outputs) == 2
    assert all(p.parent == out and p.name.endswith(".zarr") and is_complete(p) for p in outputs)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in", "in2", "mask.yaml", "out"]


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["frobnicate"],
        ["run"],
        ["run", "CONFIG"],  # --input is required
        ["run", "CONFIG", "-i", "x.tif", "--bogus"],
        ["info"],
        ["demo", "--size", "many"],
        ["cluster-script"],
        ["run", "CONFIG", "-i", "x.tif", "--workers", "two"],
    ],
)
def test_usage_errors_exit_2(argv: list[str], config: Path, capsys) -> None:
    argv = [str(config) if a == "CONFIG" else a for a in argv]
    assert main(argv) == 2
    assert "usage:" in capsys.readouterr().err


def test_config_errors_exit_2(tmp_path: Path, config: Path, capsys) -> None:
    slide, _ = _slide(tmp_path, "s.tif", 8)
    bad = tmp_path / "bad.yaml"
    bad.write_text(CONFIG.replace("below: 128", "belw: 128"))
    out = tmp_path / "out"
    assert main(["run", str(bad), "-i", str(slide), "-o", str(out)]) == 2
    assert "bad.yaml: masks.dark[1].threshold.belw: unknown key" in capsys.readouterr().err
    assert main(["run", str(tmp_path / "none.yaml"), "-i", str(slide), "-o", str(out)]) == 2
    assert "configuration file not found" in capsys.readouterr().err
    # an input pattern that matches nothing is a usage error too: nothing runs
    assert main(["run", str(config), "-i", str(tmp_path / "*.svs"), "-o", str(out)]) == 2
    assert not out.exists()


def test_help_states_units(capsys) -> None:
    assert main(["--help"]) == 0
    assert "run" in capsys.readouterr().out
    assert main(["info", "--help"]) == 0
    assert "µm per pixel" in capsys.readouterr().out
    assert main(["demo", "--help"]) == 0
    assert "pixels" in capsys.readouterr().out


def test_info_shows_the_traceback_of_a_failure_with_v_only(tmp_path: Path, capsys) -> None:
    bad = tmp_path / "text.svs"
    bad.write_text("not a slide")
    assert main(["info", str(bad)]) == 1
    err = capsys.readouterr().err
    assert "text.svs: not a TIFF" in err and "Traceback" not in err
    assert main(["info", "-v", str(bad)]) == 1
    assert "Traceback" in capsys.readouterr().err


def test_info_table_and_json(synthetic_slide: Path, capsys) -> None:
    assert main(["info", str(synthetic_slide)]) == 0
    text = capsys.readouterr().out
    for expected in ("vendor", "ome", "JPEG", "uint8", "256 x 256 px", "0.5 µm per pixel",
                     "1536 x 2048 x 3", "768 x 1024 x 3"):
        assert expected in text, expected
    assert main(["info", "--json", str(synthetic_slide)]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["levels"][0]["shape"] == [1536, 2048, 3]
    assert info["mpp"] == pytest.approx(0.5)
    assert info["tile_shape"] == [256, 256]


def test_info_on_a_bad_slide_fails(tmp_path: Path, capsys) -> None:
    assert main(["info", str(tmp_path / "nothere.svs")]) == 1
    assert "nothere.svs: file not found" in capsys.readouterr().err


def test_demo_writes_slide_and_mask(tmp_path: Path, capsys) -> None:
    out = tmp_path / "demo"
    assert main(["demo", "--size", "600", "--output", str(out), "-q"]) == 0
    text = capsys.readouterr().out
    slide, mask = out / "synthetic.ome.tif", out / "synthetic.zarr"
    assert str(slide) in text and str(mask) in text
    assert is_complete(mask)
    # it shows its result: the preview PNG and the report, with their paths
    preview, page = out / "synthetic.png", out / "report.html"
    assert f"preview {preview}" in text and f"report  {page}" in text
    assert preview.read_bytes().startswith(b"\x89PNG") and page.stat().st_size > 0
    values = read_mask(mask).compute()
    assert values.shape == (600, 600) and 0.05 < values.mean() < 0.95
    # runs again over its own previous output
    assert main(["demo", "--size", "600", "--output", str(out), "-q"]) == 0


def test_execution_flags_override_the_config(tmp_path: Path, config: Path) -> None:
    slide, _ = _slide(tmp_path, "s.tif", 9)
    config.write_text(CONFIG + "execution: {scheduler: processes, workers: 4}\n")
    out = tmp_path / "out"
    # the flags win: this runs in this process, with 3 threads, no cluster started
    assert main(["run", str(config), "-i", str(slide), "-o", str(out), "--scheduler", "threads",
                 "--workers", "3", "-q"]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["scheduler"] == "threads"
    assert report["executor"] == "this process, 3 threads per slide"


@pytest.mark.timeout(120)
def test_threads_per_worker_flag(tmp_path: Path, config: Path) -> None:
    """One worker process given two threads for its slide (the config's default is one)."""
    slide, _ = _slide(tmp_path, "s.tif", 12)
    out = tmp_path / "out"
    assert main(["run", str(config), "-i", str(slide), "-o", str(out), "--scheduler",
                 "processes", "--workers", "1", "--threads-per-worker", "2", "-q"]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["executor"].startswith("LocalCluster, 1 worker processes x 2 threads"), report


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--scheduler", "mpi"], "execution.scheduler: unknown scheduler 'mpi'"),
        (["--scheduler", "slurm"], "execution: scheduler 'slurm' needs cores and memory"),
        (["--scheduler", "tcp://nohost"],
         "execution.scheduler: scheduler address 'tcp://nohost' must look like tcp://host:port"),
        (["--memory-limit", "lots"], "execution.memory_limit: 'lots' is not a memory size"),
        (["--workers", "0"], "execution.workers: Input should be greater than or equal to 1"),
        (["--threads-per-worker", "0"],
         "execution.threads_per_worker: Input should be greater than or equal to 1"),
    ],
)
def test_bad_execution_flags_exit_2(
    tmp_path: Path, config: Path, capsys, flags: list[str], message: str
) -> None:
    slide, _ = _slide(tmp_path, "s.tif", 10)
    out = tmp_path / "out"
    assert main(["run", str(config), "-i", str(slide), "-o", str(out), *flags]) == 2
    err = capsys.readouterr().err
    assert f"mask.yaml with command-line options: {message}" in err
    assert not out.exists()


@pytest.mark.timeout(60)
def test_unreachable_scheduler_exits_2(tmp_path: Path, config: Path, capsys) -> None:
    import socket

    import dask

    slide, _ = _slide(tmp_path, "s.tif", 11)
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with dask.config.set({"distributed.comm.timeouts.connect": "2s"}):
        code = main(["run", str(config), "-i", str(slide), "-o", str(tmp_path / "out"),
                     "--scheduler", f"tcp://127.0.0.1:{port}"])
    assert code == 2
    assert "cannot reach the Dask scheduler" in capsys.readouterr().err


def test_preview_of_an_existing_output(tmp_path: Path, config: Path, capsys) -> None:
    slide, _ = _slide(tmp_path, "prev", 7)
    out = tmp_path / "out"
    assert main(["run", str(config), "--input", str(slide), "--output", str(out), "-q"]) == 0
    png = tmp_path / "p.png"
    code = main(["preview", str(slide), str(out / "prev.zarr"), "-o", str(png), "--max-size", "64"])
    assert code == 0
    image = cv2.imread(str(png))
    assert image is not None and max(image.shape[:2]) <= 64
    assert main(["preview", str(slide), str(out / "missing.zarr")]) == 1
