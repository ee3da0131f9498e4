"""The staged runner (scratch Zarr + halo windows) equals the lazy graph, bit for bit."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from slidemask.config import config_from_yaml
from slidemask.io import open_slide
from slidemask.pipeline import _reorder, build_mask, run_slide
from slidemask.writers.zarr import read_mask

CONFIG = """
resolution: {level: 0}
chunk_size: 256
masks:
  tissue:
    - gray: {}
    - median_blur: {ksize: 7}
    - threshold: {below: 220}
    - closing: {radius: 4}
    - opening: {radius: 2}
  pen:
    - hsv_range: {lower: [100, 80, 30], upper: [130, 255, 255]}
    - dilation: {radius: 3}
  dark:
    - gray: {}
    - threshold: {below: 60}
output: "(tissue | dark) & ~pen"
"""


@pytest.fixture(params=["scratch-zarr", "in-memory", "whole-image"])
def stage_kind(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run the staged tests with scratch Zarr arrays, with in-memory intermediates, and with
    the whole working image in one chunk (the default for small images)."""
    import slidemask.pipeline as pipeline

    if request.param != "whole-image":
        monkeypatch.setattr(pipeline, "WHOLE_IMAGE_PIXELS", 0)
    monkeypatch.setattr(
        pipeline, "IN_MEMORY_PIXELS", 0 if request.param == "scratch-zarr" else 2**40
    )
    return str(request.param)


def test_staged_run_equals_lazy_graph(
    tmp_path: Path, synthetic_slide: Path, stage_kind: str
) -> None:
    config = config_from_yaml(CONFIG)
    expected, _ = build_mask(open_slide(synthetic_slide, chunk_size=256), config)
    result = run_slide(synthetic_slide, config, tmp_path)
    assert result.status == "done", result.error
    np.testing.assert_array_equal(read_mask(result.output).compute(), expected.compute())
    assert not [p for p in tmp_path.iterdir() if "scratch" in p.name]  # scratch removed


GLOBAL_CONFIG = """
resolution: {level: 1}
chunk_size: 96
masks:
  t:
    - gray
    - threshold: {below: 215}
    - fill_holes: {max_hole_area: 40}
    - remove_small_objects: {min_area: 30, connectivity: 4}
    - keep_largest_holes: {n: 2}
    - keep_largest: {n: 3}
    - contour_fill: {}
  u:
    - gray
    - threshold: {below: 200}
    - fill_holes: {}
output: "t | u"
"""


def test_staged_global_steps_equal_lazy_graph(
    tmp_path: Path, synthetic_slide: Path, stage_kind: str
) -> None:
    """Global steps summarized while their input is stored (pass 1 fused with the store, one
    read for pass 2) give exactly the lazy two-pass graph."""
    config = config_from_yaml(GLOBAL_CONFIG)
    expected, _ = build_mask(open_slide(synthetic_slide, chunk_size=96), config)
    result = run_slide(synthetic_slide, config, tmp_path)
    assert result.status == "done", result.error
    got = read_mask(result.output).compute()
    np.testing.assert_array_equal(got, expected.compute())
    assert 0 < got.mean() < 1


def test_whole_image_masks_share_one_hsv_conversion(
    tmp_path: Path, synthetic_slide: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """In whole-image mode the masks that start in HSV read one conversion; same result."""
    import slidemask.pipeline as pipeline

    conversions: list[tuple[int, ...]] = []
    original = pipeline.rgb_to_hsv

    def counting(array: np.ndarray) -> np.ndarray:
        conversions.append(array.shape)
        return original(array)

    monkeypatch.setattr(pipeline, "rgb_to_hsv", counting)
    config = config_from_yaml(
        "resolution: {level: 1}\nchunk_size: 128\nmasks:\n"
        "  s: [saturation, {threshold: {above: 20}}, {remove_small_objects: {min_area: 20}}]\n"
        "  b: [{hsv_range: {lower: [100, 10, 30], upper: [170, 255, 255]}}]\n"
        "  r: [{hsv_range: {lower: [170, 5, 0], upper: [10, 255, 250]}}]\n"
        "output: s & ~(b | r)\n"
    )
    expected, _ = build_mask(open_slide(synthetic_slide, chunk_size=128), config)
    result = run_slide(synthetic_slide, config, tmp_path)
    assert result.status == "done", result.error
    stored = read_mask(result.output)
    assert len(conversions) == 1 and stored.chunks == expected.chunks
    np.testing.assert_array_equal(stored.compute(), expected.compute())


def test_median_threshold_rewrite_is_exact(synthetic_slide: Path) -> None:
    import cv2

    rgb = open_slide(synthetic_slide).levels[1].compute()
    grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    for params in ("{below: 221}", "{above: 17.5}"):
        config = config_from_yaml(
            f"masks: {{m: [gray, {{median_blur: {{ksize: 9}}}}, {{threshold: {params}}}]}}\n"
            "resolution: {level: 1}\nchunk_size: 300"
        )
        names = [step.name for _, step in _reorder(config.masks["m"])]
        assert names == ["gray", "threshold", "median_blur"]
        got, _ = build_mask(open_slide(synthetic_slide, chunk_size=300), config)
        median = cv2.medianBlur(grey, 9)
        expected = median < 221 if "below" in params else median > 17.5
        np.testing.assert_array_equal(got.compute(), expected)


def test_band_threshold_is_not_reordered() -> None:
    config = config_from_yaml(
        "masks: {m: [gray, {median_blur: {ksize: 7}}, {threshold: {above: 10, below: 200}}]}"
    )
    assert [s.name for _, s in _reorder(config.masks["m"])] == ["gray", "median_blur", "threshold"]


@pytest.mark.parametrize("chunk_size", [64, 200])
def test_staged_run_any_chunking(
    tmp_path: Path, synthetic_slide: Path, chunk_size: int, stage_kind: str
) -> None:
    text = CONFIG.replace("chunk_size: 256", f"chunk_size: {chunk_size}").replace(
        "level: 0", "level: 1"
    )
    config = config_from_yaml(text)
    expected, _ = build_mask(open_slide(synthetic_slide, chunk_size=512), config)
    result = run_slide(synthetic_slide, config, tmp_path)
    assert result.status == "done", result.error
    np.testing.assert_array_equal(read_mask(result.output).compute(), expected.compute())


def test_staged_build_stores_global_inputs_and_resolves_otsu_first(
    tmp_path: Path, synthetic_slide: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import slidemask.pipeline as pipeline
    from slidemask.pipeline import _build, _Stage

    monkeypatch.setattr(pipeline, "WHOLE_IMAGE_PIXELS", 0)  # stage this small image

    stored: list[str] = []

    class Recording(_Stage):
        def store(self, value, name):  # type: ignore[no-untyped-def]
            stored.append(name)
            return super().store(value, name)

        def keep(self, value, name="image", *, then=None, store=True):  # type: ignore[no-untyped-def]
            if then is not None:  # stored (or not) while pass 1 of the global step runs
                stored.append(name if store else f"{name} (not stored)")
            return super().keep(value, name, then=then, store=store)

    config = config_from_yaml(
        "resolution: {level: 1}\nchunk_size: 256\nmasks:\n  t:\n    - saturation\n"
        "    - median_blur: {ksize: 5}\n    - threshold: {above: otsu}\n"
        "    - closing: {radius: 2}\n    - remove_small_objects: {min_area: 50}\n"
        "    - fill_holes: {}\n"
    )
    slide = open_slide(synthetic_slide, chunk_size=256)
    mask, provenance = _build(slide, config, Recording(tmp_path / "scratch"))
    # window source, Otsu input, window source, then each global step's input: the second
    # of two global steps reads the first one's pass 2 twice instead of storing it
    assert stored == ["t-1", "t-2", "t-3", "t-4", "t-5 (not stored)"]
    # the threshold is a number before the mask's graph is built: no histogram in the graph
    assert isinstance(provenance["thresholds"]["t[2]"]["above"], float)
    assert not any("histogram" in str(name) for name in mask.dask.layers)
    expected, _ = build_mask(slide, config)
    np.testing.assert_array_equal(mask.compute(), expected.compute())


@pytest.mark.parametrize(
    "steps",
    [
        "[gray, {threshold: {below: 220}}]",
        "[{hsv_range: {lower: [120, 20, 50], upper: [179, 255, 235]}}]",
        "[saturation, {threshold: {above: 20, below: 200}}, fill_holes]",
        "[rgb_mean, {threshold: {below: 200}}, {closing: {radius: 3}}]",
        "[gray, {median_blur: {ksize: 5}}, {threshold: {below: 220}}]",
        "[gray, {threshold: {below: otsu}}]",
    ],
)
@pytest.mark.parametrize("chunk_size", [100, 256, 1000])
def test_pointwise_steps_fuse_with_decoding(
    tmp_path: Path,
    synthetic_slide: Path,
    steps: str,
    chunk_size: int,
    stage_kind: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A single mask's leading pointwise steps run tile by tile as the level is decoded
    (``Slide.map_pixels``); the result equals the lazy graph bit for bit."""
    from slidemask.io.tiff import Slide
    from slidemask.pipeline import _build, _Stage

    calls: list[int] = []
    original = Slide.map_pixels

    def recording(self: Slide, level: int, *args: Any, **kwargs: Any) -> Any:
        calls.append(level)
        return original(self, level, *args, **kwargs)

    monkeypatch.setattr(Slide, "map_pixels", recording)
    config = config_from_yaml(
        f"resolution: {{level: 1}}\nchunk_size: {chunk_size}\nmasks:\n  t: {steps}\n"
    )
    slide = open_slide(synthetic_slide, chunk_size=chunk_size)
    mask, _ = _build(slide, config, _Stage(tmp_path / "scratch"))
    # the leading pointwise steps (grey before an Otsu) were fused, unless the whole image
    # was decoded into memory first
    assert calls == ([] if stage_kind == "whole-image" else [1])
    expected, _ = build_mask(slide, config)
    np.testing.assert_array_equal(mask.compute(), expected.compute())
    result = run_slide(synthetic_slide, config, tmp_path / "out")
    assert result.status == "done", result.error
    np.testing.assert_array_equal(read_mask(result.output).compute(), expected.compute())
    assert result.stats["foreground_pixels"] == int(expected.sum().compute())
