"""Batch runs: the run report, resume, faults, schedulers, kill -9 and rerun, job scripts.

Slides are small synthetic pyramids (512 x 768, 128-pixel JPEG tiles, about 0.1 s to write and
0.3 s to mask); outputs are compared chunk file by chunk file, ignoring only the completion
time stamp.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import tifffile

from slidemask.batch import BatchProgress, TerminalProgress, run_batch
from slidemask.cli import main
from slidemask.config import config_from_yaml, config_hash, load_config
from slidemask.errors import ConfigError
from slidemask.io.synthetic import write_synthetic_slide
from slidemask.report import SlideResult
from slidemask.writers.zarr import ATTRS_KEY, is_complete, partial_outputs, read_attrs, read_mask

REPO = Path(__file__).resolve().parents[1]

CONFIG = """\
masks:
  tissue:
    - gray: {}
    - median_blur: {ksize: 5}
    - threshold: {below: 220}
    - closing: {radius: 2}
chunk_size: 128
"""

SHAPE = (512, 768)


@pytest.fixture(scope="module")
def slides(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Four synthetic slides, read-only (a run must never need to write them)."""
    folder = tmp_path_factory.mktemp("slides")
    paths = [write_synthetic_slide(folder / f"s{i}.ome.tif", SHAPE, tile=128, seed=i)
             for i in range(4)]
    for p in paths:
        p.chmod(0o444)
    return paths


@pytest.fixture()
def config_file(tmp_path: Path) -> Path:
    path = tmp_path / "mask.yaml"
    path.write_text(CONFIG)
    return path


def _snapshot(out: Path) -> dict[str, bytes]:
    """Every file of every output under ``out``; zarr.json without the completion time."""
    files: dict[str, bytes] = {}
    for store in sorted(out.glob("*.zarr")):
        for f in sorted(store.rglob("*")):
            if not f.is_file():
                continue
            data = f.read_bytes()
            if f.name == "zarr.json":
                meta = json.loads(data)
                meta.get("attributes", {}).get(ATTRS_KEY, {}).pop("completed_at", None)
                data = json.dumps(meta, sort_keys=True).encode()
            files[str(f.relative_to(out))] = data
    return files


def _report(out: Path) -> dict:
    return json.loads((out / "report.json").read_text(encoding="utf-8"))


# --- the run report ---------------------------------------------------------------------------


def test_report_json_and_csv(slides: list[Path], tmp_path: Path) -> None:
    config = config_from_yaml(CONFIG)
    out = tmp_path / "out"
    missing = tmp_path / "gone.svs"
    results = run_batch([slides[0], missing, slides[1]], config, out)
    assert [r.status for r in results] == ["done", "failed", "done"]
    assert [r.path for r in results] == [slides[0], missing, slides[1]]
    digest = config_hash(config)

    report = _report(out)
    assert report["counts"] == {"done": 2, "skipped": 0, "failed": 1, "total": 3}
    assert report["config_hash"] == digest and report["scheduler"] == "threads"
    assert report["output_dir"] == str(out)
    records = report["slides"]
    assert [r["path"] for r in records] == [str(slides[0]), str(missing), str(slides[1])]
    for record, slide in zip((records[0], records[2]), slides[:2], strict=True):
        output = out / f"{slide.name.removesuffix('.ome.tif')}.zarr"
        assert record["output"] == str(output) and is_complete(output)
        assert record["status"] == "done" and record["error"] is None
        assert record["config_hash"] == digest and record["seconds"] > 0
        stats = read_attrs(output)["stats"]
        assert record["stats"]["foreground_pixels"] == stats["foreground_pixels"] > 0
        assert record["stats"]["total_pixels"] == SHAPE[0] * SHAPE[1]
        assert record["stats"]["fraction"] == pytest.approx(
            stats["foreground_pixels"] / (SHAPE[0] * SHAPE[1]))
        assert record["stats"]["level"] == 0 and record["stats"]["mpp"] == pytest.approx(0.5)
    assert records[1]["status"] == "failed"
    assert records[1]["error"] == f"{missing}: file not found"

    rows = list(csv.DictReader(io.StringIO((out / "report.csv").read_text(encoding="utf-8"))))
    assert [row["status"] for row in rows] == ["done", "failed", "done"]
    assert rows[1]["error"] == f"{missing}: file not found" and rows[1]["fraction"] == ""
    assert int(rows[0]["foreground_pixels"]) == records[0]["stats"]["foreground_pixels"]
    assert rows[2]["config_hash"] == digest


def test_inputs_are_never_written(slides: list[Path], tmp_path: Path) -> None:
    before = {p: (p.read_bytes(), p.stat().st_mtime_ns, p.stat().st_mode) for p in slides}
    results = run_batch([str(slides[0].parent)], config_from_yaml(CONFIG), tmp_path / "out")
    assert [r.status for r in results] == ["done"] * 4
    assert {p: (p.read_bytes(), p.stat().st_mtime_ns, p.stat().st_mode) for p in slides} == before
    assert sorted(p.name for p in slides[0].parent.iterdir()) == [p.name for p in slides]


def test_execution_is_not_part_of_the_config_hash() -> None:
    plain = config_from_yaml(CONFIG)
    cluster = config_from_yaml(
        CONFIG + "execution: {scheduler: processes, workers: 2, memory_limit: 2GiB}\n"
    )
    assert cluster.execution.scheduler == "processes" and cluster.execution.workers == 2
    assert config_hash(plain) == config_hash(cluster)
    assert "execution" not in cluster.canonical()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ("execution: {worker: 2}\n", "execution.worker: unknown key (allowed: scheduler,"),
        ("execution: {scheduler: mpi}\n", "execution.scheduler: unknown scheduler 'mpi'"),
        ("execution: {scheduler: slurm}\n", "execution: scheduler 'slurm' needs cores and memory"),
    ],
)
def test_execution_errors_name_the_key(extra: str, message: str) -> None:
    with pytest.raises(Exception, match="x.yaml: " + message.replace("(", r"\(")):
        config_from_yaml(CONFIG + extra, source="x.yaml")


# --- resume -----------------------------------------------------------------------------------


def _marker_times(out: Path) -> dict[str, str]:
    return {p.name: read_attrs(p)[ATTRS_KEY]["completed_at"] + str(p.stat().st_ino)
            for p in sorted(out.glob("*.zarr"))}


def test_resume_skips_complete_outputs_with_the_same_config(
    slides: list[Path], tmp_path: Path, config_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    argv = ["run", str(config_file), "-i", *map(str, slides[:3]), "-o", str(out)]
    assert main(argv) == 0
    first = _report(out)
    stamps = _marker_times(out)
    snapshot = _snapshot(out)
    capsys.readouterr()

    # the same command again: nothing is recomputed, stats come from the stored attributes
    assert main(argv) == 0
    assert capsys.readouterr().out.startswith("0 done, 3 skipped, 0 failed in ")
    again = _report(out)
    assert [r["status"] for r in again["slides"]] == ["skipped"] * 3
    for old, new in zip(first["slides"], again["slides"], strict=True):
        assert new["stats"] == old["stats"] and new["output"] == old["output"]
    assert _marker_times(out) == stamps and _snapshot(out) == snapshot

    # how it runs is not what it computes: another scheduler still skips
    assert main([*argv, "--workers", "1"]) == 0
    assert _report(out)["counts"]["skipped"] == 3

    # --overwrite redoes everything, with identical results
    assert main([*argv, "--overwrite"]) == 0
    assert [r["status"] for r in _report(out)["slides"]] == ["done"] * 3
    assert _snapshot(out) == snapshot and _marker_times(out) != stamps

    # a changed config redoes everything and the outputs carry the new hash
    config_file.write_text(CONFIG.replace("below: 220", "below: 200"))
    assert main(argv) == 0
    changed = _report(out)
    assert [r["status"] for r in changed["slides"]] == ["done"] * 3
    new_hash = config_hash(load_config(config_file))
    assert changed["config_hash"] == new_hash != first["config_hash"]
    assert all(read_attrs(p)["provenance"]["config_hash"] == new_hash for p in out.glob("*.zarr"))
    assert _snapshot(out) != snapshot


def test_a_slide_replaced_since_its_mask_was_made_is_made_again(
    slides: list[Path], tmp_path: Path, config_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A complete mask records its slide file's size and modification time: a slide file
    replaced since is made again, not skipped with the old mask; one that now fails, also with
    --overwrite (which keeps the old mask until a new one is complete), fails on every rerun
    instead of being skipped as done."""
    slide = tmp_path / "in" / "x.ome.tif"
    slide.parent.mkdir()
    shutil.copyfile(slides[0], slide)
    out = tmp_path / "out"
    argv = ["run", str(config_file), "-i", str(slide), "-o", str(out)]
    assert main(argv) == 0
    recorded = read_attrs(out / "x.zarr")["provenance"]["source"]["version"]
    assert recorded == f"{slide.stat().st_size}-{slide.stat().st_mtime_ns}"
    assert main(argv) == 0 and _report(out)["counts"]["skipped"] == 1

    shutil.copyfile(slides[1], slide)
    stat = slide.stat()
    os.utime(slide, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # whatever the clock
    assert main(argv) == 0
    (row,) = _report(out)["slides"]
    assert row["status"] == "done"
    expected = tmp_path / "expected"
    assert main(["run", str(config_file), "-i", str(slides[1]), "-o", str(expected)]) == 0
    np.testing.assert_array_equal(read_mask(out / "x.zarr").compute(),
                                  read_mask(expected / f"{slides[1].name[:-8]}.zarr").compute())

    slide.write_bytes(b"not a TIFF any more")
    for extra in ([], ["--overwrite"], []):
        capsys.readouterr()
        assert main([*argv, *extra]) == 1
        (row,) = _report(out)["slides"]
        assert row["status"] == "failed" and str(slide) in row["error"]


def test_a_folder_reports_links_to_missing_slides_and_slide_named_folders(
    slides: list[Path], tmp_path: Path, config_file: Path
) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copyfile(slides[0], folder / "a.ome.tif")
    (folder / "gone.svs").symlink_to(tmp_path / "nowhere.svs")
    (folder / "odd.tif").mkdir()
    out = tmp_path / "out"
    assert main(["run", str(config_file), "-i", str(folder), "-o", str(out), "-q"]) == 1
    rows = {Path(r["path"]).name: r for r in _report(out)["slides"]}
    assert rows["a.ome.tif"]["status"] == "done"
    for name in ("gone.svs", "odd.tif"):
        assert rows[name]["status"] == "failed" and name in rows[name]["error"]
    assert sorted(p.name for p in out.glob("*.zarr")) == ["a.zarr"]


def test_an_input_that_finds_no_slide_fails_alone_among_others(
    slides: list[Path], tmp_path: Path, config_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    out = tmp_path / "out"
    argv = ["run", str(config_file), "-o", str(out), "-q", "-i", str(slides[0]), str(empty),
            str(tmp_path / "none-*.svs")]
    assert main(argv) == 1
    rows = _report(out)["slides"]
    assert [r["status"] for r in rows] == ["done", "failed", "failed"]
    assert "holds no slide files" in rows[1]["error"] and str(empty) in rows[1]["error"]
    assert "none-*.svs" in rows[2]["error"]
    # alone, it is a usage error, as before
    assert main(["run", str(config_file), "-o", str(out), "-i", str(empty)]) == 2


def test_a_slide_named_like_another_is_not_given_its_mask(
    slides: list[Path], tmp_path: Path, config_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Two slides with the same name (a/x, b/x) in two runs into one folder: the second is
    neither skipped as done with the first one's mask nor written over it unasked."""
    first, second = tmp_path / "a" / "x.ome.tif", tmp_path / "b" / "x.ome.tif"
    for source, target in ((slides[0], first), (slides[1], second)):
        target.parent.mkdir()
        shutil.copyfile(source, target)
    out = tmp_path / "out"
    assert main(["run", str(config_file), "-i", str(first), "-o", str(out)]) == 0
    snapshot = _snapshot(out)
    capsys.readouterr()
    assert main(["run", str(config_file), "-i", str(second), "-o", str(out)]) == 1
    (row,) = _report(out)["slides"]
    assert row["status"] == "failed" and "holds the mask of another slide" in row["error"]
    assert str(first) in row["error"] and "--overwrite" in row["error"]
    assert _snapshot(out) == snapshot
    assert read_attrs(out / "x.zarr")["provenance"]["source"]["path"] == str(first)
    # asked to: replaced, and the first slide is then the other one
    assert main(["run", str(config_file), "-i", str(second), "-o", str(out), "--overwrite"]) == 0
    assert read_attrs(out / "x.zarr")["provenance"]["source"]["path"] == str(second)
    assert main(["run", str(config_file), "-i", str(first), "-o", str(out)]) == 1
    # the same slide run again is still skipped
    assert main(["run", str(config_file), "-i", str(second), "-o", str(out)]) == 0
    assert _report(out)["slides"][0]["status"] == "skipped"


def test_a_rerun_without_an_extra_output_removes_the_old_one(
    slides: list[Path], tmp_path: Path, config_file: Path
) -> None:
    """A summary or preview left by an earlier config would describe the old mask (the QC
    report shows the old preview): a run that writes a new mask without them removes them."""
    out = tmp_path / "out"
    argv = ["run", str(config_file), "-i", str(slides[0]), "-o", str(out)]
    config_file.write_text(CONFIG + "outputs: {summary: true, preview: true, geojson: true}\n")
    assert main(argv) == 0
    extras = [out / f"s0{suffix}" for suffix in (".json", ".png", ".geojson")]
    assert all(p.is_file() for p in extras)
    assert "s0.png" in (out / "report.html").read_text()
    (out / "s0.notes.txt").write_text("mine")  # not an output's name: kept
    config_file.write_text(CONFIG.replace("below: 220", "below: 200")
                           + "outputs: {summary: true}\n")
    assert main(argv) == 0
    assert extras[0].is_file() and not extras[1].exists() and not extras[2].exists()
    summary = json.loads(extras[0].read_text())
    assert summary["tissue_pixels"] == read_attrs(out / "s0.zarr")["stats"][
        "foreground_pixels"]
    assert (out / "s0.notes.txt").read_text() == "mine"
    assert "s0.png" not in (out / "report.html").read_text()
    # an extra deleted since is written again by the same command (the slide is redone)
    assert main(argv) == 0
    assert _report(out)["slides"][0]["status"] == "skipped"
    extras[0].unlink()
    assert main(argv) == 0
    assert _report(out)["slides"][0]["status"] == "done" and extras[0].is_file()


@pytest.mark.parametrize("where", ["file", "under a file"])
def test_an_output_folder_that_cannot_be_one_is_a_usage_error(
    slides: list[Path], tmp_path: Path, config_file: Path, where: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    (tmp_path / "taken").write_text("")
    out = tmp_path / "taken" if where == "file" else tmp_path / "taken" / "sub"
    assert main(["run", str(config_file), "-i", str(slides[0]), "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert "output folder" in err and str(out) in err and "Traceback" not in err


def test_incomplete_outputs_are_removed_and_redone(
    slides: list[Path], tmp_path: Path, config_file: Path
) -> None:
    clean = tmp_path / "clean"
    assert main(["run", str(config_file), "-i", *map(str, slides), "-o", str(clean), "-q"]) == 0
    out = tmp_path / "out"
    shutil.copytree(clean, out)
    s0, s1, s2, s3 = (out / f"s{i}.zarr" for i in range(4))
    # s0: complete, plus a partial sibling a killed run left behind
    # and the staged runner's scratch folder and an old output the writer had moved aside
    for name in (".s0.zarr.partial-0123456789abcdef", ".s0.zarr.scratch-0123456789ab",
                 ".s0.zarr.replaced-0123456789abcdef"):
        shutil.copytree(s0, out / name)
    keep = out / ".s0.zarr.notes"  # hidden, but not one of the run's temporaries
    keep.write_text("mine")
    # s1: a store without the completion marker (and with a damaged chunk)
    meta = json.loads((s1 / "zarr.json").read_text())
    meta["attributes"][ATTRS_KEY]["complete"] = False
    (s1 / "zarr.json").write_text(json.dumps(meta))
    chunk = next(p for p in sorted(s1.rglob("*")) if p.is_file() and p.name != "zarr.json")
    chunk.write_bytes(b"half")
    # s2: an empty folder; s3: only a leftover partial, no output at all
    shutil.rmtree(s2)
    s2.mkdir()
    shutil.copytree(s3, out / ".s3.zarr.partial-feedfacefeedface")
    shutil.rmtree(s3)

    assert main(["run", str(config_file), "-i", *map(str, slides), "-o", str(out), "-q"]) == 0
    assert [r["status"] for r in _report(out)["slides"]] == ["skipped", "done", "done", "done"]
    assert _snapshot(out) == _snapshot(clean)
    assert all(not partial_outputs(p) for p in (s0, s1, s2, s3))
    assert keep.read_text() == "mine"
    keep.unlink()
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in clean.iterdir())


def test_what_is_not_an_output_is_never_removed(
    slides: list[Path], tmp_path: Path, config_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    (out / "s0.zarr").mkdir(parents=True)
    (out / "s0.zarr" / "notes.txt").write_text("mine")
    (out / "s1.zarr").write_text("a file")
    argv = ["run", str(config_file), "-i", *map(str, slides[:3]), "-o", str(out)]
    for extra in ([], ["--overwrite"]):
        assert main([*argv, *extra]) == 1
        assert [r["status"] for r in _report(out)["slides"]] == ["failed", "failed", "done"]
        err = capsys.readouterr().err
        assert "s0.zarr: exists and is not a slidemask output" in err
        assert (out / "s0.zarr" / "notes.txt").read_text() == "mine"
        assert (out / "s1.zarr").read_text() == "a file"


# --- faults -----------------------------------------------------------------------------------


def _truncated(source: Path, target: Path) -> Path:
    data = source.read_bytes()
    target.write_bytes(data[: int(len(data) * 0.6)])
    return target


def _corrupt_tile(source: Path, target: Path) -> Path:
    data = bytearray(source.read_bytes())
    with tifffile.TiffFile(source) as tif:
        page = tif.pages[0]
        offset, count = page.dataoffsets[5], page.databytecounts[5]
    data[offset : offset + count] = bytes(count)  # a JPEG tile of zeros cannot decode
    target.write_bytes(bytes(data))
    return target


def test_missing_truncated_and_corrupt_slides_fail_alone(
    slides: list[Path], tmp_path: Path, config_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad"
    bad.mkdir()
    truncated = _truncated(slides[1], bad / "truncated.ome.tif")
    corrupt = _corrupt_tile(slides[2], bad / "corrupt.ome.tif")
    missing = bad / "missing.svs"
    out = tmp_path / "out"
    argv = ["run", str(config_file), "-i", str(slides[0]), str(truncated), str(missing),
            str(corrupt), str(slides[3]), "-o", str(out)]
    assert main(argv) == 1
    captured = capsys.readouterr()
    assert captured.out.startswith("2 done, 0 skipped, 3 failed in ")
    records = _report(out)["slides"]
    assert [r["status"] for r in records] == ["done", "failed", "failed", "failed", "done"]
    errors = [r["error"] for r in records]
    assert errors[1].startswith(f"{truncated}: truncated file")
    assert errors[2] == f"{missing}: file not found"
    assert errors[3].startswith(f"{corrupt}: level 0, tile at level pixel")
    assert "Jpeg" in errors[3]
    for error in errors[1:4]:
        assert f"FAILED  {error}" in captured.err  # logged once each, naming the slide
        assert captured.err.count(error) == 1
    # the failed ones left nothing behind; the others are complete
    assert sorted(p.name for p in out.iterdir()) == [
        "report.csv", "report.html", "report.json", "s0.zarr", "s3.zarr"]
    assert is_complete(out / "s0.zarr") and is_complete(out / "s3.zarr")


def test_interrupted_run_still_writes_a_report(slides: list[Path], tmp_path: Path) -> None:
    class StopAfterFirst(BatchProgress):
        def slide_finished(self, result: SlideResult, finished: int, total: int) -> None:
            raise KeyboardInterrupt

    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        run_batch(slides[:3], config_from_yaml(CONFIG), out, progress=StopAfterFirst())
    records = _report(out)["slides"]
    assert [r["status"] for r in records] == ["done", "failed", "failed"]
    assert records[1]["error"] == f"{slides[1]}: interrupted"
    assert not (out / "s1.zarr").exists()


def test_a_rerun_of_a_slide_task_whose_output_was_written_is_done(
    slides: list[Path], tmp_path: Path
) -> None:
    """dask.distributed reruns a task whose worker was lost, also when the task had finished
    its work (killed between writing the mask and sending its result): the rerun must count
    the complete output made with the same config as done."""
    from slidemask.batch import _slide_task

    config = config_from_yaml(CONFIG)
    out = tmp_path / "out"
    arguments = (str(slides[0]), config, str(out), False, str(out / "s0.zarr"))
    first = _slide_task(*arguments)
    assert first.status == "done"
    rerun = _slide_task(*arguments)  # what the scheduler runs after the worker's death
    assert rerun.status == "done", rerun.error
    assert rerun.stats["foreground_pixels"] == first.stats["foreground_pixels"]


# --- schedulers -------------------------------------------------------------------------------


@pytest.mark.timeout(120)
def test_processes_give_the_same_outputs_as_threads(
    slides: list[Path], tmp_path: Path, config_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    threads, processes = tmp_path / "threads", tmp_path / "processes"
    base = ["run", str(config_file), "-i", *map(str, slides)]
    assert main([*base, "-o", str(threads), "--workers", "2"]) == 0
    assert main([*base, "-o", str(processes), "--scheduler", "processes", "--workers", "2",
                 "--memory-limit", "1GiB"]) == 0
    err = capsys.readouterr().err
    assert "LocalCluster, 2 worker processes" in err and "memory limit 1GiB" in err
    assert _snapshot(processes) == _snapshot(threads)
    assert len(_snapshot(threads)) > 4
    report = _report(processes)
    assert report["scheduler"] == "processes" and report["counts"]["done"] == 4
    assert report["dashboard"] is None or report["dashboard"].startswith("http://127.0.0.1:")
    assert _report(threads)["executor"] == "this process, 2 threads per slide"


def _cli(*args: str) -> list[str]:
    code = f"from slidemask.cli import main; raise SystemExit(main({list(args)!r}))"
    return [sys.executable, "-c", code]


@pytest.mark.timeout(120)
def test_kill_9_then_rerun_gives_the_uninterrupted_outputs(
    slides: list[Path], tmp_path: Path, config_file: Path
) -> None:
    inputs = [str(p) for p in slides]
    clean = tmp_path / "clean"
    assert main(["run", str(config_file), "-i", *inputs, "-o", str(clean), "-q"]) == 0

    out = tmp_path / "out"
    command = _cli("run", str(config_file), "-i", *inputs, "-o", str(out), "-q")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)}
    proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        # kill while a later slide is being written: once one output is complete and another
        # one's temporary folder exists (or after a deadline, whatever state that is)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None:
            finals = list(out.glob("*.zarr")) if out.is_dir() else []
            partials = list(out.glob(".*.partial-*")) if out.is_dir() else []
            if finals and partials:
                break
            time.sleep(0.01)
        assert proc.poll() is None, "the run finished before it could be killed"
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL

    # nothing half-written looks finished: everything at a final name is complete
    finals = sorted(out.glob("*.zarr"))
    assert 1 <= len(finals) < len(slides)
    assert all(is_complete(p) for p in finals)
    assert not (out / "report.json").exists()

    rerun = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert rerun.returncode == 0, rerun.stderr
    statuses = [r["status"] for r in _report(out)["slides"]]
    assert statuses.count("skipped") == len(finals) and statuses.count("done") == 4 - len(finals)
    assert _snapshot(out) == _snapshot(clean)
    assert not list(out.glob(".*"))  # no partial folders, no temporary report files


def test_sigterm_stops_a_run_as_ctrl_c_does(
    slides: list[Path], tmp_path: Path, config_file: Path
) -> None:
    """SIGTERM (a job's time limit, ``timeout``) writes the report with the unfinished slides
    interrupted, removes their scratch, exits 143; a rerun completes the batch."""
    inputs = [str(p) for p in slides]
    out = tmp_path / "out"
    command = _cli("run", str(config_file), "-i", *inputs, "-o", str(out), "-q")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)}
    proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60  # once a slide is running, or after a deadline
        while time.monotonic() < deadline and proc.poll() is None:
            if out.is_dir() and list(out.glob(".*")):
                break
            time.sleep(0.01)
        assert proc.poll() is None, "the run finished before it could be stopped"
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
        proc.wait(timeout=30)
    assert proc.returncode == 143, err
    assert "terminated (SIGTERM)" in err
    records = _report(out)["slides"]
    assert any(r["error"] and r["error"].endswith("interrupted") for r in records)
    assert all(is_complete(out / f"{Path(r['path']).name.split('.')[0]}.zarr")
               for r in records if r["status"] == "done")
    # nothing unfinished looks finished; a hidden folder a worker thread was still writing
    # into when the signal came may remain, and the next run removes it
    finals = [p for p in out.glob("*.zarr")]
    assert all(is_complete(p) for p in finals)
    assert subprocess.run(command, env=env, timeout=120).returncode == 0
    assert {r["status"] for r in _report(out)["slides"]} <= {"done", "skipped"}
    assert not list(out.glob(".*")), "scratch or partial folders left after the rerun"


# --- progress and logs ------------------------------------------------------------------------


def test_log_lines_off_a_terminal(
    slides: list[Path], tmp_path: Path, config_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    missing = tmp_path / "nope.svs"
    argv = ["run", str(config_file), "-i", str(slides[0]), str(missing), "-o", str(out)]
    assert main(argv) == 1
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    assert all(line.startswith("slidemask: ") for line in lines)
    assert "\r" not in captured.err and "\x1b" not in captured.err
    assert sum("start" in line for line in lines) == 2
    done = next(line for line in lines if "done" in line)
    assert done.startswith(f"slidemask: [1/2] done    {slides[0]} in ")
    assert "% foreground" in done and done.endswith(str(out / "s0.zarr"))
    assert f"slidemask: [2/2] FAILED  {missing}: file not found (" in captured.err
    assert len(captured.out.splitlines()) == 1
    assert captured.out.startswith("1 done, 0 skipped, 1 failed in ")
    assert captured.out.rstrip().endswith(f"report: {out / 'report.json'}")

    # -q: only the errors and the summary line
    assert main([*argv, "-q"]) == 1
    captured = capsys.readouterr()
    assert len(captured.err.splitlines()) == 1
    assert captured.err.startswith(f"slidemask: [2/2] FAILED  {missing}: file not found (")
    assert captured.out.startswith("0 done, 1 skipped, 1 failed in ")

    # -v: debug lines too (the failed slide's traceback)
    assert main([*argv, "-v"]) == 1
    assert "Traceback" in capsys.readouterr().err


def test_terminal_progress_line() -> None:
    stream = io.StringIO()
    bar = TerminalProgress(stream, interval=0)
    bar.begin(4, Path("out"), "0" * 64)
    bar.slide_finished(SlideResult(Path("/a/x.svs"), None, "skipped"), 1, 4)
    bar.slide_started(Path("/a/y.svs"))
    bar.slide_tasks(5, 10)
    line = bar.line(200)
    assert line.startswith("1/4 slides [#####---------------]  25%  0 done, 1 skipped, 0 failed")
    assert line.endswith("| y.svs  50%")
    assert len(bar.line(30)) == 29
    with bar.suspend():
        stream.write("a log line\n")
    bar.end([], Path("out/report.json"))
    text = stream.getvalue()
    assert "\r\x1b[K" in text and "a log line\n" in text
    assert text.endswith("\r\x1b[K")  # the bar is gone at the end


# --- job scripts ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("scheduler", "expected"),
    [
        ("slurm", ["#SBATCH --cpus-per-task=8", "#SBATCH --mem=30G", "#SBATCH -t 02:15:00",
                   "#SBATCH -p gpu-short", "#SBATCH -A lab-42", "--nworkers 4", "--nthreads 2"]),
        ("pbs", ["#PBS -l select=1:ncpus=8:mem=", "#PBS -l walltime=02:15:00",
                 "#PBS -q gpu-short", "#PBS -A lab-42", "--nworkers 4", "--nthreads 2"]),
    ],
)
def test_cluster_script_renders_the_resources(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], scheduler: str, expected: list[str]
) -> None:
    config = tmp_path / "cluster.yaml"
    config.write_text(
        CONFIG + f"execution:\n  scheduler: {scheduler}\n  cores: 8\n  memory: 32GB\n"
        "  walltime: '02:15:00'\n  queue: gpu-short\n  account: lab-42\n"
        "  threads_per_worker: 2\n"
    )
    assert main(["cluster-script", str(config)]) == 0
    script = capsys.readouterr().out
    assert script.startswith("#!")
    for text in expected:
        assert text in script, text


def test_cluster_script_of_the_shipped_slurm_example(capsys: pytest.CaptureFixture[str]) -> None:
    config = load_config(REPO / "configs" / "slurm.yaml")
    assert config.execution.scheduler == "slurm" and config.execution.jobs == 4
    assert main(["cluster-script", str(REPO / "configs" / "slurm.yaml")]) == 0
    script = capsys.readouterr().out
    for text in ("#SBATCH --cpus-per-task=16", "#SBATCH -t 04:00:00", "#SBATCH -p short",
                 "#SBATCH -A path-lab", "#SBATCH --constraint=avx2", "--nworkers 8",
                 "module load python/3.11"):
        assert text in script, text


def test_cluster_script_needs_a_job_queue(config_file: Path, capsys) -> None:
    assert main(["cluster-script", str(config_file)]) == 2
    err = capsys.readouterr().err
    assert "cluster-script needs execution.scheduler slurm or pbs" in err and "'threads'" in err
    assert main(["cluster-script", str(config_file.parent / "none.yaml")]) == 2
    assert "configuration file not found" in capsys.readouterr().err


def test_execution_may_be_given_as_a_mapping(slides: list[Path], tmp_path: Path) -> None:
    """``run_batch(..., execution={...})``: the keys of a config's ``execution:`` section."""
    config = config_from_yaml(CONFIG)
    (result,) = run_batch(slides[:1], config, tmp_path / "a", execution={"workers": 1})
    assert result.status == "done"
    with pytest.raises(ConfigError, match="execution.scheduler"):
        run_batch(slides[:1], config, tmp_path / "b", execution={"scheduler": "lots"})
    with pytest.raises(ConfigError, match="execution: expected an ExecutionConfig"):
        run_batch(slides[:1], config, tmp_path / "c", execution=["threads"])  # type: ignore[arg-type]
