"""One engine: a configured mask is the same public API calls, with the same graph, and equals
the whole-image result for any chunking."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import dask
import dask.array as da
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import slidemask as sm
from slidemask.config import config_from_yaml
from slidemask.io import open_slide
from slidemask.ops import staged as sm_staged
from slidemask.pipeline import build_mask, run_slide
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


@pytest.fixture(params=["chunked", "whole-image"])
def mode(request: pytest.FixtureRequest) -> Iterator[str]:
    """Run with the working image chunked, and as one chunk (the default for small images)."""
    limit = 0 if request.param == "chunked" else 2**25
    with dask.config.set({"slidemask.whole-image-pixels": limit}):
        yield str(request.param)


def _whole(array: da.Array) -> da.Array:
    """``array`` computed and made one chunk: the steps then run on the whole image."""
    value = array.compute()
    return da.from_array(value, chunks=value.shape)


def test_run_slide_equals_whole_image_calls(
    tmp_path: Path, synthetic_slide: Path, mode: str
) -> None:
    config = config_from_yaml(CONFIG)
    rgb = _whole(open_slide(synthetic_slide).levels[0])
    grey = sm.to_gray(rgb)
    tissue = sm.binary_opening(
        sm.binary_closing(sm.threshold(sm.median_blur(grey, 7), below=220), 4), 2
    )
    pen = sm.binary_dilation(sm.hsv_range(rgb, [100, 80, 30], [130, 255, 255]), 3)
    expected = ((tissue | sm.threshold(grey, below=60)) & ~pen).compute()
    result = run_slide(synthetic_slide, config, tmp_path)
    assert result.status == "done", result.error
    np.testing.assert_array_equal(read_mask(result.output).compute(), expected)
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


def test_global_steps_equal_whole_image(tmp_path: Path, synthetic_slide: Path, mode: str) -> None:
    config = config_from_yaml(GLOBAL_CONFIG)
    grey = sm.to_gray(_whole(open_slide(synthetic_slide).levels[1]))
    t = sm.fill_holes(sm.threshold(grey, below=215), max_hole_area=40)
    t = sm.keep_largest(sm.keep_largest_holes(sm.remove_small_objects(t, 30, connectivity=4), 2), 3)
    expected = (sm.contour_fill(t) | sm.fill_holes(sm.threshold(grey, below=200))).compute()
    result = run_slide(synthetic_slide, config, tmp_path)
    assert result.status == "done", result.error
    got = read_mask(result.output).compute()
    np.testing.assert_array_equal(got, expected)
    assert 0 < got.mean() < 1


# --- the configuration is the API --------------------------------------------------------------

START = st.sampled_from(["gray", "saturation", "rgb_mean"])
THRESHOLD = st.sampled_from(
    ["{below: 215}", "{above: 40}", "{above: 30, below: 230}", "{above: otsu}", "{below: otsu}"]
)
MASK_STEP = st.sampled_from([
    ("closing: {radius: 2}", lambda m: sm.binary_closing(m, 2)),
    ("opening: {radius: 1}", lambda m: sm.binary_opening(m, 1)),
    ("dilation: {radius: 3}", lambda m: sm.binary_dilation(m, 3)),
    ("square_closing: {size: 5}", lambda m: sm.square_closing(m, 5)),
    ("median_blur: {ksize: 5}", lambda m: sm.median_blur(m, 5)),
    ("fill_holes: {}", sm.fill_holes),
    ("fill_holes: {max_hole_area: 30}", lambda m: sm.fill_holes(m, max_hole_area=30)),
    ("remove_small_objects: {min_area: 25}", lambda m: sm.remove_small_objects(m, 25)),
    ("keep_largest: {n: 2}", lambda m: sm.keep_largest(m, 2)),
])
STARTS: dict[str, Callable[[da.Array], da.Array]] = {
    "gray": sm.to_gray, "saturation": sm.saturation, "rgb_mean": sm.rgb_mean,
}


def _threshold(grey: da.Array, params: str) -> da.Array:
    bounds = config_from_yaml(f"masks: {{m: [gray, {{threshold: {params}}}]}}").masks["m"][1]
    kwargs = bounds.arguments(None)
    if "otsu" not in params:
        return sm.threshold(grey, **kwargs)
    t = sm.otsu_threshold(grey)
    return sm.threshold(grey, above=t) if "above" in params else ~sm.threshold(grey, above=t)


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    start=START,
    median=st.sampled_from([None, 3, 7]),
    limit=THRESHOLD,
    steps=st.lists(MASK_STEP, max_size=3),
    chunk_size=st.integers(64, 300),
)
def test_config_is_the_api(
    synthetic_slide: Path,
    start: str,
    median: int | None,
    limit: str,
    steps: list[tuple[str, Callable[[da.Array], da.Array]]],
    chunk_size: int,
) -> None:
    """A chain of steps from YAML builds the very graph the same public calls build, and both
    equal the steps on the whole image in memory, for any chunking."""
    lines = [start] + ([f"{{median_blur: {{ksize: {median}}}}}"] if median else [])
    lines += [f"{{threshold: {limit}}}"] + [f"{{{text}}}" for text, _ in steps]
    config = config_from_yaml(
        f"resolution: {{level: 1}}\nchunk_size: {chunk_size}\nmasks:\n  m: [{', '.join(lines)}]\n"
    )

    def calls(rgb: da.Array) -> da.Array:
        value = STARTS[start](rgb)
        if median:
            value = sm.median_blur(value, median)
        value = _threshold(value, limit)
        for _, step in steps:
            value = step(value)
        return value

    with dask.config.set({"slidemask.whole-image-pixels": 0}):
        slide = open_slide(synthetic_slide, chunk_size=chunk_size)
        configured, _ = build_mask(slide, config)
        api = calls(slide.levels[1])
        assert configured.name == api.name  # the same graph
        got = configured.compute()
    expected = calls(_whole(slide.levels[1])).compute()
    np.testing.assert_array_equal(got, expected)


# --- what the engine does with the calls --------------------------------------------------------


def _layers(array: da.Array) -> list[str]:
    return [str(name) for name in array.dask.layers]


def test_pointwise_steps_fuse_with_decoding(synthetic_slide: Path) -> None:
    slide = open_slide(synthetic_slide, chunk_size=200)
    mask = sm.threshold(sm.to_gray(slide.levels[1]), below=220)
    layers = [name for name in _layers(mask) if not name.startswith("original-")]
    assert len(layers) == 1 and layers[0].startswith("slidemask-pixels-")  # one pass per tile
    expected = sm.threshold(sm.to_gray(_whole(slide.levels[1])), below=220)
    np.testing.assert_array_equal(mask.compute(), expected.compute())
    assert mask.chunks == slide.levels[1].chunks[:2]


def test_neighbourhood_chain_reads_one_window(synthetic_slide: Path) -> None:
    slide = open_slide(synthetic_slide, chunk_size=128)
    grey = sm.to_gray(slide.levels[1])
    mask = sm.binary_opening(sm.binary_closing(sm.threshold(grey, below=220), 3), 2)
    assert sum("-store-" in name for name in _layers(mask)) == 1  # one scratch copy
    ref = sm.binary_opening(sm.binary_closing(sm.threshold(_whole(grey), below=220), 3), 2)
    np.testing.assert_array_equal(mask.compute(), ref.compute())


@pytest.mark.parametrize("bounds", [{"below": 221}, {"above": 17.5}])
def test_median_then_threshold_is_the_majority_vote(synthetic_slide: Path, bounds: Any) -> None:
    import cv2

    slide = open_slide(synthetic_slide, chunk_size=150)
    grey = sm.to_gray(slide.levels[1])
    got = sm.threshold(sm.median_blur(grey, 9), **bounds)
    assert got.name == sm.median_blur(sm.threshold(grey, **bounds), 9).name
    median = cv2.medianBlur(grey.compute(), 9)
    expected = median < 221 if "below" in bounds else median > 17.5
    np.testing.assert_array_equal(got.compute(), expected)


def test_band_threshold_of_a_median_stays_a_median(synthetic_slide: Path) -> None:
    slide = open_slide(synthetic_slide, chunk_size=150)
    grey = sm.to_gray(slide.levels[1])
    got = sm.threshold(sm.median_blur(grey, 5), above=10, below=200)
    assert got.name != sm.median_blur(sm.threshold(grey, above=10, below=200), 5).name


def test_otsu_reads_its_stored_copy(synthetic_slide: Path) -> None:
    from skimage.filters import threshold_otsu

    slide = open_slide(synthetic_slide, chunk_size=128)
    grey = sm.to_gray(slide.levels[1])
    value = sm.otsu_threshold(grey)
    mask = sm.threshold(grey, above=value)
    # the grey image is computed once (while stored); the threshold reads the stored copy
    assert sum(name.startswith("slidemask-pixels-") for name in _layers(mask)) == 1
    assert any(name.startswith("slidemask-threshold-") for name in _layers(mask))
    whole = grey.compute()
    got, t = dask.compute(mask, value)
    assert float(t) == threshold_otsu(whole)
    np.testing.assert_array_equal(got, whole > t)


def test_several_masks_share_one_decode(synthetic_slide: Path) -> None:
    config = config_from_yaml(CONFIG.replace("level: 0", "level: 1"))
    with dask.config.set({"slidemask.whole-image-pixels": 0}):
        mask, _ = build_mask(open_slide(synthetic_slide, chunk_size=256), config)
    assert sum(name.startswith("slidemask-read-") for name in _layers(mask)) == 1
    assert not any(name.startswith("slidemask-pixels-") for name in _layers(mask))


def test_several_chunked_masks_are_stored_before_they_are_combined(
    synthetic_slide: Path,
) -> None:
    """Each mask of a chunked multi-mask build is stored to scratch, and one barrier waits
    for every store: the output's chunks then read their masks back, so no mask's chunks wait
    in memory for another mask's (peak memory per chunk, not per slide)."""
    config = config_from_yaml(CONFIG.replace("level: 0", "level: 1"))
    slide = open_slide(synthetic_slide, chunk_size=128)
    with dask.config.set({"slidemask.whole-image-pixels": 0}):
        mask, _ = build_mask(slide, config)
    layers = _layers(mask)
    assert sum(name.startswith("slidemask-masks-stored-") for name in layers) == 1
    assert sum(name.startswith("slidemask-mask-") and "-store-" in name for name in layers) == 3
    with dask.config.set({"slidemask.whole-image-pixels": 2**25}):
        whole, _ = build_mask(slide, config)
    assert not any(name.startswith("slidemask-masks-stored-") for name in _layers(whole))
    expected = whole.compute()
    np.testing.assert_array_equal(mask.compute(), expected)  # plain dask
    (staged,) = sm_staged.compute(mask)  # the barrier first, on its own
    np.testing.assert_array_equal(staged, expected)


def test_dask_compute_of_several_outputs_shares_work(synthetic_slide: Path) -> None:
    slide = open_slide(synthetic_slide, chunk_size=128)
    mask = sm.threshold(sm.to_gray(slide.levels[1]), below=215)
    filled = sm.fill_holes(mask)
    clean = sm.remove_small_objects(filled, 20)
    a, b = dask.compute(filled, clean)
    whole = _whole(mask)
    np.testing.assert_array_equal(a, sm.fill_holes(whole).compute())
    np.testing.assert_array_equal(b, sm.remove_small_objects(sm.fill_holes(whole), 20).compute())
    held = clean.persist()
    np.testing.assert_array_equal(held.compute(), b)
