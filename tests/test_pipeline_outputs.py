"""run_slide's extra outputs: OME-Zarr labels, GeoJSON, preview, summary; written from the stored
mask, each appearing whole, all in place before the mask itself (which a batch's resume trusts)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import dask
import numpy as np
import pytest
import zarr
from skimage import measure

from slidemask.batch import run_batch
from slidemask.config import config_from_yaml
from slidemask.inputs import extra_paths_for
from slidemask.io import open_slide
from slidemask.pipeline import build_mask, run_slide
from slidemask.writers.preview import open_stored_mask
from slidemask.writers.zarr import is_complete, read_attrs, read_mask

ALL = """
resolution: {level: 1}
chunk_size: 200
masks:
  tissue:
    - saturation
    - threshold: {above: otsu}
    - closing: {radius_um: 4}
    - remove_small_objects: {min_area: 40}
    - fill_holes: {max_hole_area: 100}
output: tissue
outputs: {ome_zarr: true, geojson: true, preview: true, summary: true}
"""


@pytest.fixture(autouse=True)
def _threads_scheduler():
    with dask.config.set(scheduler="threads", num_workers=2):
        yield


def _names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_every_output_from_one_run(tmp_path: Path, synthetic_slide: Path) -> None:
    config = config_from_yaml(ALL)
    result = run_slide(synthetic_slide, config, tmp_path)
    assert result.status == "done", result.error
    assert _names(tmp_path) == ["synthetic.geojson", "synthetic.json", "synthetic.ome.zarr",
                                "synthetic.png", "synthetic.zarr"]
    expected, _ = build_mask(open_slide(synthetic_slide), config)
    expected = expected.compute()
    mask = read_mask(tmp_path / "synthetic.zarr").compute()
    np.testing.assert_array_equal(mask, expected)
    components = int(measure.label(mask, connectivity=2).max())
    assert components > 1

    # OME-Zarr label image: the same pixels, scale in micrometres
    labels, attrs = open_stored_mask(tmp_path / "synthetic.ome.zarr")
    np.testing.assert_array_equal(labels.compute() != 0, mask)
    assert attrs["provenance"]["downsample"] == 2.0

    # GeoJSON: one feature per 8-connected component, coordinates in level-0 pixels
    features = json.loads((tmp_path / "synthetic.geojson").read_text())["features"]
    assert len(features) == components
    assert features[0]["properties"]["classification"]["name"] == "Tissue"
    xs = [x for f in features for ring in _rings(f["geometry"]) for x, _ in ring]
    assert max(xs) > mask.shape[1]  # level-0 frame: twice the level-1 mask

    # summary: area in mm², fraction, components, threshold, resolution, warnings
    summary = json.loads((tmp_path / "synthetic.json").read_text())
    pixels = int(mask.sum())
    assert summary["tissue_pixels"] == pixels
    assert summary["tissue_fraction"] == pytest.approx(pixels / mask.size)
    assert summary["tissue_area_mm2"] == pytest.approx(pixels * 1.0 * 1.0 / 1e6)
    assert summary["components"] == components
    otsu = read_attrs(tmp_path / "synthetic.zarr")["provenance"]["thresholds"]["tissue[1]"]
    assert summary["threshold"] == otsu["above"] and 0 < summary["threshold"] < 255
    assert (summary["level"], summary["factor"], summary["mpp"]) == (1, 1, 1.0)
    assert summary["warnings"] == []
    assert read_attrs(tmp_path / "synthetic.zarr")["summary"] == summary
    assert (tmp_path / "synthetic.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _rings(geometry: dict) -> list:
    if geometry["type"] == "Polygon":
        return geometry["coordinates"]
    return [ring for polygon in geometry["coordinates"] for ring in polygon]


def test_no_outputs_section_writes_only_the_mask(tmp_path: Path, synthetic_slide: Path) -> None:
    config = config_from_yaml(ALL.replace(
        "outputs: {ome_zarr: true, geojson: true, preview: true, summary: true}", ""))
    result = run_slide(synthetic_slide, config, tmp_path)
    assert result.status == "done", result.error
    assert _names(tmp_path) == ["synthetic.zarr"]
    assert "summary" not in read_attrs(tmp_path / "synthetic.zarr")


def test_extra_output_paths() -> None:
    paths = extra_paths_for(Path("out/a.b.zarr"), ["ome_zarr", "geojson", "preview", "summary"])
    assert {k: p.name for k, p in paths.items()} == {
        "ome_zarr": "a.b.ome.zarr", "geojson": "a.b.geojson", "preview": "a.b.png",
        "summary": "a.b.json"}


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def test_quality_warnings_are_logged_and_summarised(tmp_path: Path, synthetic_slide: Path) -> None:
    empty = config_from_yaml(
        "resolution: {level: 2}\nmasks: {t: [gray, {threshold: {below: 1}}]}\n"
        "outputs: {summary: true}\n")
    full = config_from_yaml(
        "resolution: {level: 2}\nmasks: {t: [gray, {threshold: {below: 255}}]}\n")
    # the package logger directly: the CLI's tests may have set it not to propagate
    logger = logging.getLogger("slidemask")
    saved = logger.handlers[:], logger.level
    capture = _Records()
    logger.handlers[:] = [capture]
    logger.setLevel(logging.WARNING)
    try:
        assert run_slide(synthetic_slide, empty, tmp_path / "a").status == "done"
        assert run_slide(synthetic_slide, full, tmp_path / "b").status == "done"
    finally:
        logger.handlers[:], level = saved
        logger.setLevel(level)
    warnings = [r for r in capture.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2
    assert all(str(synthetic_slide) in r.getMessage() for r in warnings)
    assert "empty mask" in warnings[0].getMessage()
    assert "covers 100.0% of the slide" in warnings[1].getMessage()
    summary = json.loads((tmp_path / "a" / "synthetic.json").read_text())
    assert summary["warnings"] and summary["warnings"][0].startswith("empty mask")
    assert summary["tissue_pixels"] == 0 and summary["components"] == 0
    assert summary["threshold"] == 1.0


def test_a_failing_extra_leaves_nothing(
    tmp_path: Path, synthetic_slide: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import slidemask.pipeline as pipeline

    def broken(*args: object, **kwargs: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(pipeline, "write_preview", broken)
    result = run_slide(synthetic_slide, config_from_yaml(ALL), tmp_path)
    assert result.status == "failed" and "disk full" in (result.error or "")
    assert _names(tmp_path) == []  # no mask, no extras, no scratch


def test_complete_mask_implies_its_extras(tmp_path: Path, synthetic_slide: Path) -> None:
    config = config_from_yaml(ALL)
    # a killed run that had moved its extras but not yet its mask: the next run replaces them
    for name in ("synthetic.png", "synthetic.json", "synthetic.geojson"):
        (tmp_path / name).write_text("stale")
    (tmp_path / "synthetic.ome.zarr").mkdir()
    result = run_slide(synthetic_slide, config, tmp_path)
    assert result.status == "done", result.error
    assert json.loads((tmp_path / "synthetic.json").read_text())["tissue_pixels"] > 0
    assert (tmp_path / "synthetic.geojson").read_text().startswith('{"type": "FeatureCollection"')
    # an existing mask is kept unless overwrite, and its extras with it
    before = {p: p.stat().st_mtime_ns for p in tmp_path.iterdir()}
    again = run_slide(synthetic_slide, config, tmp_path)
    assert again.status == "failed" and "output exists" in (again.error or "")
    assert {p: p.stat().st_mtime_ns for p in tmp_path.iterdir()} == before
    replaced = run_slide(synthetic_slide, config, tmp_path, overwrite=True)
    assert replaced.status == "done", replaced.error
    assert _names(tmp_path) == sorted(p.name for p in before)
    assert is_complete(tmp_path / "synthetic.zarr")


def test_a_folder_in_the_way_is_never_replaced(tmp_path: Path, synthetic_slide: Path) -> None:
    mine = tmp_path / "synthetic.ome.zarr"
    mine.mkdir()
    (mine / "notes.txt").write_text("mine")
    result = run_slide(synthetic_slide, config_from_yaml(ALL), tmp_path)
    assert result.status == "failed" and "not a Zarr store" in (result.error or "")
    assert (mine / "notes.txt").read_text() == "mine"
    assert _names(tmp_path) == ["synthetic.ome.zarr"]


def test_batch_resume_with_extras(tmp_path: Path, synthetic_slide: Path) -> None:
    config = config_from_yaml(ALL.replace("level: 1", "level: 2"))
    out = tmp_path / "out"
    first = run_batch([synthetic_slide], config, out)
    assert [r.status for r in first] == ["done"]
    names = _names(out)
    assert {"synthetic.zarr", "synthetic.png", "synthetic.json", "synthetic.geojson",
            "synthetic.ome.zarr", "report.json", "report.csv", "report.html"} == set(names)
    second = run_batch([synthetic_slide], config, out)
    assert [r.status for r in second] == ["skipped"]
    assert _names(out) == names


def test_a_failed_slide_s_error_names_the_slide(tmp_path: Path, synthetic_slide: Path) -> None:
    """Every failure reason starts from the slide, also a step's own error (which names the
    step, not the slide), so a report row or log line says which slide failed."""
    config = config_from_yaml("masks: {t: [gray, {threshold: {below: 300}}]}\n")
    result = run_slide(synthetic_slide, config, tmp_path / "out")
    assert result.status == "failed"
    assert result.error is not None and result.error.startswith(f"{synthetic_slide}: ")
    assert "below=300" in result.error and result.error.count(str(synthetic_slide)) == 1


def test_slides_with_outputs_leave_no_thread_pools_behind(tmp_path: Path,
                                                         synthetic_slide: Path) -> None:
    """The outputs' thread computes (the preview here), so dask makes a thread pool for it; the
    pool goes when the thread is done, or a batch would keep one per slide."""
    import gc
    from concurrent.futures import ThreadPoolExecutor

    from dask import threaded

    config = config_from_yaml(ALL)

    def executors() -> int:
        gc.collect()
        return sum(isinstance(o, ThreadPoolExecutor) for o in gc.get_objects())

    for _ in range(2):
        assert run_slide(synthetic_slide, config, tmp_path, overwrite=True).status == "done"
    before = executors()
    for _ in range(4):
        assert run_slide(synthetic_slide, config, tmp_path, overwrite=True).status == "done"
    assert executors() <= before
    assert all(thread.is_alive() for thread in list(threaded.pools))


CLASSES = """
resolution: {level: 1}
chunk_size: 200
masks:
  tissue: [saturation, {threshold: {above: otsu}}]
  dark: [gray, {threshold: {below: 150}}]
output: "%s"
classes: {masks: {tissue: tissue, fold: dark}, precedence: [fold, tissue]}
outputs: {ome_zarr: true, geojson: true, summary: true}
"""


@pytest.mark.parametrize("output", ["tissue", "tissue & ~dark"])
def test_the_summary_counts_the_masks_components_with_a_class_map(
    tmp_path: Path, synthetic_slide: Path, output: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Where the output mask is one class's pixels (``tissue & ~dark`` here) its components
    are that class's GeoJSON features, not labelled again; otherwise the mask is labelled:
    the same count."""
    import slidemask.pipeline

    def not_labelled(*args: object, **kwargs: object) -> None:
        raise AssertionError("the mask was labelled again")

    if output != "tissue":
        monkeypatch.setattr(slidemask.pipeline, "label_stats", not_labelled)
    result = run_slide(synthetic_slide, config_from_yaml(CLASSES % output), tmp_path)
    assert result.status == "done", result.error
    mask = read_mask(tmp_path / "synthetic.zarr").compute()
    classes = zarr.open_array(tmp_path / "synthetic.ome.zarr" / "labels" / "classes" / "0",
                              mode="r")[:]
    assert (mask == (classes == 1)).all() == (output != "tissue")
    summary = json.loads((tmp_path / "synthetic.json").read_text())
    components = int(measure.label(mask, connectivity=2).max())
    assert components > 1 and summary["components"] == components
