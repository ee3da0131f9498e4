"""PNG previews (thumbnail + outline) and the per-slide summary with its QC warnings."""

from __future__ import annotations

import json

import cv2
import dask
import dask.array as da
import numpy as np
import pytest
import zarr

from slidemask.errors import MaskError, SlidemaskError
from slidemask.io.tiff import open_slide
from slidemask.ops.resample import image_at, select_resolution
from slidemask.writers.ome_zarr import write_ome_labels
from slidemask.writers.preview import (
    OUTLINE_RGB,
    mask_downsample_from_attrs,
    preview_from_outputs,
    render_preview,
    write_preview,
)
from slidemask.writers.summary import (
    mask_summary,
    qc_warnings,
    shared_delayed,
    summary_record,
    write_summary_json,
)
from slidemask.writers.zarr import write_zarr
from tests.conftest import real_slide_params


@pytest.fixture(autouse=True)
def _threads():
    with dask.config.set(scheduler="threads"):
        yield


def outline_pixels(image: np.ndarray) -> np.ndarray:
    return np.all(image == np.array(OUTLINE_RGB, dtype=np.uint8), axis=2)


def tissue_mask(slide_path):
    slide = open_slide(slide_path)
    res = select_resolution(slide, mpp=8)
    mask = image_at(slide, res).min(axis=2) < 200
    return slide, res, mask


@pytest.mark.parametrize(("max_size", "shape"), [(600, (450, 600)), (512, (384, 512)),
                                                 (4096, (1536, 2048))])
def test_preview_size_and_outline(synthetic_slide, max_size, shape):
    slide, res, mask = tissue_mask(synthetic_slide)
    image = render_preview(slide, mask, max_size=max_size, mask_downsample=res.downsample)
    assert image.shape == (*shape, 3) and image.dtype == np.uint8
    drawn = outline_pixels(image)
    assert drawn.any()
    # the outline follows the mask border: every drawn pixel is within 3 px of a border
    small = cv2.resize(mask.compute().astype(np.uint8), shape[::-1],
                       interpolation=cv2.INTER_NEAREST_EXACT)
    border = cv2.morphologyEx(small, cv2.MORPH_GRADIENT, np.ones((3, 3), np.uint8))
    near = cv2.dilate(border, np.ones((7, 7), np.uint8)).astype(bool)
    assert (drawn & ~near).sum() <= 0.01 * drawn.sum()


def test_outline_is_placed_in_slide_coordinates(synthetic_slide):
    slide = open_slide(synthetic_slide)  # 1536 x 2048 level 0
    mask = np.zeros((768, 1024), dtype=bool)  # downsample 2
    mask[200:400, 300:700] = True  # level-0 rows 400-800, cols 600-1400
    image = render_preview(slide, da.from_array(mask, chunks=100), max_size=512,
                           mask_downsample=2.0)  # thumbnail 384 x 512: 4 level-0 px per px
    rows, cols = np.nonzero(outline_pixels(image))
    assert abs(rows.min() - 100) <= 2 and abs(rows.max() - 200) <= 2
    assert abs(cols.min() - 150) <= 2 and abs(cols.max() - 350) <= 2


def test_empty_mask_gives_plain_thumbnail(synthetic_slide):
    slide = open_slide(synthetic_slide)
    image = render_preview(slide, np.zeros((96, 128), bool), max_size=256, mask_downsample=16)
    assert image.shape == (192, 256, 3) and not outline_pixels(image).any()


def test_write_preview_png(synthetic_slide, tmp_path):
    slide, res, mask = tissue_mask(synthetic_slide)
    path = write_preview(slide, mask, tmp_path / "sub" / "p.png", max_size=300,
                         mask_downsample=res.downsample)
    png = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
    expected = render_preview(slide, mask, max_size=300, mask_downsample=res.downsample)
    np.testing.assert_array_equal(png, expected)
    assert sorted(p.name for p in path.parent.iterdir()) == ["p.png"]


def test_preview_from_plain_and_ome_outputs(synthetic_slide, tmp_path):
    slide, res, mask = tissue_mask(synthetic_slide)
    expected = render_preview(slide, mask, max_size=400, mask_downsample=res.downsample)
    plain = write_zarr(mask, tmp_path / "plain.zarr",
                       attrs={"provenance": {"downsample": res.downsample, "level": res.level}})
    ome = write_ome_labels(mask, tmp_path / "m.ome.zarr", mpp=res.mpp)
    for output in (plain, ome):
        png = preview_from_outputs(synthetic_slide, output, tmp_path / f"{output.name}.png",
                                   max_size=400)
        np.testing.assert_array_equal(
            cv2.cvtColor(cv2.imread(str(png)), cv2.COLOR_BGR2RGB), expected
        )
    with pytest.raises(SlidemaskError, match="no such"):
        preview_from_outputs(synthetic_slide, tmp_path / "missing.zarr", tmp_path / "x.png")
    zarr.open_group(tmp_path / "group.zarr", mode="w")
    with pytest.raises(SlidemaskError, match="label image"):
        preview_from_outputs(synthetic_slide, tmp_path / "group.zarr", tmp_path / "x.png")
    # a mask made from another slide (its provenance records another level-0 size)
    rows, cols = slide.levels[0].shape[:2]
    other = write_zarr(mask, tmp_path / "other.zarr", attrs={"provenance": {
        "downsample": res.downsample,
        "source": {"path": "/slides/other.svs", "level0_shape": [rows + 1, cols]}}})
    with pytest.raises(SlidemaskError, match="made from a slide of .*other.svs"):
        preview_from_outputs(synthetic_slide, other, tmp_path / "x.png")


@pytest.mark.parametrize("path", real_slide_params())
def test_preview_real_slides(path, tmp_path):
    slide = open_slide(path)
    level = len(slide.levels) - 1
    mask = slide.levels[level][..., 0] < 200
    png = write_preview(slide, mask, tmp_path / "p.png", max_size=256,
                        mask_downsample=slide.downsamples[level])
    image = cv2.imread(str(png))
    assert max(image.shape[:2]) <= 256


def test_downsample_from_attrs():
    assert mask_downsample_from_attrs({"downsample": 4}) == 4.0
    assert mask_downsample_from_attrs({"provenance": {"downsample": 16.0}}) == 16.0
    assert mask_downsample_from_attrs({"slidemask": {"complete": True}}) is None
    assert mask_downsample_from_attrs({"downsample": "x"}) is None


def test_preview_argument_errors(synthetic_slide):
    slide = open_slide(synthetic_slide)
    with pytest.raises(MaskError, match="max_size"):
        render_preview(slide, np.zeros((4, 4), bool), max_size=4, mask_downsample=1)
    with pytest.raises(MaskError, match="mask_downsample"):
        render_preview(slide, np.zeros((4, 4), bool), mask_downsample=0)
    with pytest.raises(MaskError, match="rows, cols"):
        render_preview(slide, np.zeros((4, 4, 3), bool), mask_downsample=1)


def test_summary_is_lazy_and_correct():
    mask = np.zeros((300, 400), dtype=bool)
    mask[:100, :200] = True  # 20000 pixels
    summary = mask_summary(da.from_array(mask, chunks=(64, 90)), mpp=8.0, downsample=16.0,
                           threshold=8, level=2, components=1)
    assert dask.is_dask_collection(summary["tissue_pixels"])
    with pytest.raises(MaskError, match="not computed"):
        qc_warnings(summary)
    (computed,) = dask.compute(summary)
    assert computed["tissue_pixels"] == 20000
    assert computed["tissue_fraction"] == pytest.approx(20000 / 120000)
    assert computed["tissue_area_mm2"] == pytest.approx(20000 * 64 / 1e6)  # 8 µm pixels
    assert qc_warnings(computed) == []
    record = summary_record(computed)
    assert record["warnings"] == [] and record["level"] == 2 and record["threshold"] == 8
    json.dumps(record, allow_nan=False)


def test_summary_without_mpp_and_lazy_inputs():
    values = da.from_array(np.arange(100, dtype=np.float64).reshape(10, 10), chunks=3)
    mask = values > 49
    summary = mask_summary(mask, mpp=None, downsample=1.0, threshold=values.mean(), level=0,
                           components=(mask.sum() > 0).astype(int))
    (computed,) = dask.compute(summary)
    assert computed["tissue_area_mm2"] is None and computed["tissue_pixels"] == 50
    assert computed["threshold"] == pytest.approx(49.5) and computed["components"] == 1
    assert summary_record(computed)["components"] == 1


@pytest.mark.parametrize(
    ("fill", "warning"),
    [(0.0, "empty mask: no tissue found"), (0.97, "mask covers 97.0% of the slide"), (0.5, None)],
)
def test_qc_warnings(fill, warning):
    mask = np.zeros((100, 100), dtype=np.uint8)
    mask.ravel()[: int(fill * mask.size)] = 3  # non-zero counts as mask
    (computed,) = dask.compute(mask_summary(mask, mpp=2.0, downsample=4.0, threshold=7.5,
                                            level=1))
    warnings = qc_warnings(computed)
    if warning is None:
        assert warnings == []
    else:
        assert len(warnings) == 1 and warnings[0].startswith(warning)
        assert "level 1" in warnings[0] and "threshold 7.5" in warnings[0]


def test_summary_computed_with_write_shares_the_mask(tmp_path):
    calls = []

    def produce(block: np.ndarray) -> np.ndarray:
        calls.append(1)
        return block > 0.25

    values = da.from_array(np.random.default_rng(0).random((600, 700)), chunks=(200, 350))
    mask = values.map_blocks(produce, dtype=bool, meta=np.empty((0, 0), bool))
    summary = mask_summary(mask, mpp=1.0, downsample=1.0, level=0)
    task = write_ome_labels(mask, tmp_path / "m.ome.zarr", mpp=1.0, compute=False,
                            attrs={"summary": summary})
    (written,) = dask.compute(task)
    assert len(calls) == 6  # 3 x 2 chunks, each computed once for the pyramid and the summary
    stored = zarr.open_group(written, mode="r").attrs["summary"]
    assert stored["tissue_pixels"] == int((values.compute() > 0.25).sum())


def test_write_summary_json(tmp_path):
    (computed,) = dask.compute(mask_summary(np.ones((10, 10), bool), mpp=None, downsample=2.0,
                                            level=0))
    path = write_summary_json(computed, tmp_path / "s.json")
    record = json.loads(path.read_text())
    assert record["tissue_fraction"] == 1.0 and record["warnings"][0].startswith("mask covers")
    assert shared_delayed(3) == 3
