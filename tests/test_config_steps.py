"""The configurable steps added for tissue recipes: saturation, rgb_mean, mean_blur, square
morphology, global operations, Otsu, sizes in micrometres and resolution by downsample.

Every op equals its whole-image reference for any chunking; every step in a config equals the
public function it names; the staged runner equals the lazy graph."""

from __future__ import annotations

from itertools import pairwise
from pathlib import Path

import cv2
import dask
import dask.array as da
import numpy as np
import pytest
import tifffile
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import ndimage as ndi
from skimage.filters import threshold_otsu

from slidemask.config import STEPS, Config, config_from_yaml, config_hash
from slidemask.errors import ConfigError, MaskError
from slidemask.io import open_slide
from slidemask.kernels.filters import mean_blur_kernel
from slidemask.ops.components import keep_largest, remove_small_objects
from slidemask.ops.holes import contour_fill, fill_holes, keep_largest_holes
from slidemask.ops.local import (
    mean_blur,
    rgb_mean,
    saturation,
    square_closing,
    square_dilation,
    square_erosion,
    square_opening,
    threshold,
    to_gray,
)
from slidemask.ops.resample import image_at
from slidemask.pipeline import build_mask, run_slide, working_resolution
from slidemask.writers.zarr import read_attrs, read_mask


@pytest.fixture(autouse=True)
def _threads_scheduler():
    with dask.config.set(scheduler="threads", num_workers=2):
        yield


@st.composite
def axis_chunks(draw: st.DrawFn, n: int) -> tuple[int, ...]:
    if n > 1 and n <= 10 and draw(st.booleans()):
        return (1,) * n
    cuts = sorted(draw(st.sets(st.integers(1, max(n - 1, 1)), max_size=min(n - 1, 5))))
    return tuple(b - a for a, b in pairwise([0, *cuts, n]))


@st.composite
def images(draw: st.DrawFn, channels: int | None, dtype: type = np.uint8,
           max_side: int = 40) -> tuple[np.ndarray, da.Array]:
    rows = draw(st.integers(1, max_side))
    cols = draw(st.integers(1, max_side))
    shape = (rows, cols) if channels is None else (rows, cols, channels)
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    if dtype is bool:
        density = draw(st.sampled_from([0.2, 0.5, 0.8]))
        array = rng.random(shape) < density
    else:
        top = int(np.iinfo(dtype).max)
        levels = draw(st.sampled_from([2, 8, top + 1]))
        array = (rng.integers(0, levels, shape) * (top // max(levels - 1, 1))).astype(dtype)
    chunks = (draw(axis_chunks(rows)), draw(axis_chunks(cols)))
    if channels is not None:
        chunks += ((channels,),)
    return array, da.from_array(array, chunks=chunks)


# ---- the new ops, exact for any chunking ----------------------------------------------------


@settings(deadline=None, max_examples=40)
@given(data=images(channels=3))
def test_saturation_is_opencvs(data: tuple[np.ndarray, da.Array]) -> None:
    rgb, lazy = data
    expected = cv2.cvtColor(rgb, cv2.COLOR_RGB2HSV)[..., 1]
    np.testing.assert_array_equal(saturation(lazy).compute(), expected)


@settings(deadline=None, max_examples=40)
@given(data=images(channels=4))
def test_rgb_mean_is_imagejs(data: tuple[np.ndarray, da.Array]) -> None:
    rgb, lazy = data
    w = 1.0 / 3.0
    f = rgb.astype(np.float64)
    expected = (f[..., 0] * w + f[..., 1] * w + f[..., 2] * w + 0.5).astype(np.uint8)
    np.testing.assert_array_equal(rgb_mean(lazy).compute(), expected)


def _mean_reference(grey: np.ndarray, ksize: int) -> np.ndarray:
    r = ksize // 2
    padded = np.pad(grey.astype(np.int64), r, mode="edge")
    rows, cols = grey.shape
    total = sum(padded[i : i + rows, j : j + cols] for i in range(ksize) for j in range(ksize))
    return ((total + ksize * ksize // 2) // (ksize * ksize)).astype(grey.dtype)


@settings(deadline=None, max_examples=40)
@given(data=images(channels=None), ksize=st.sampled_from([3, 5, 7]))
def test_mean_blur_any_chunking(data: tuple[np.ndarray, da.Array], ksize: int) -> None:
    grey, lazy = data
    expected = _mean_reference(grey, ksize)
    np.testing.assert_array_equal(mean_blur(lazy, ksize).compute(), expected)
    if ksize == 3:  # ImageJ's smooth() and OpenCV's replicate-border box filter
        np.testing.assert_array_equal(
            expected, cv2.blur(grey, (3, 3), borderType=cv2.BORDER_REPLICATE))


def test_mean_blur_uint16_and_errors() -> None:
    grey = np.random.default_rng(0).integers(0, 65536, (30, 41)).astype(np.uint16)
    got = mean_blur(da.from_array(grey, chunks=7), 5).compute()
    np.testing.assert_array_equal(got, _mean_reference(grey, 5))
    assert mean_blur_kernel(np.zeros((0, 3), np.uint8), ksize=3).shape == (0, 3)
    with pytest.raises(MaskError, match="odd integer"):
        mean_blur(da.zeros((4, 4), dtype=np.uint8), 4)
    with pytest.raises(MaskError, match="2-D uint8 or uint16"):
        mean_blur(da.zeros((4, 4, 3), dtype=np.uint8), 3)


_CV2 = {square_dilation: cv2.MORPH_DILATE, square_erosion: cv2.MORPH_ERODE,
        square_opening: cv2.MORPH_OPEN, square_closing: cv2.MORPH_CLOSE}


@settings(deadline=None, max_examples=60)
@given(data=images(channels=None, dtype=bool), size=st.integers(1, 6),
       op=st.sampled_from(sorted(_CV2, key=lambda f: f.__name__)))
def test_square_morphology_is_opencvs(data: tuple[np.ndarray, da.Array], size: int, op) -> None:
    mask, lazy = data
    kernel = np.ones((size, size), np.uint8)
    expected = cv2.morphologyEx(mask.astype(np.uint8), _CV2[op], kernel) > 0
    np.testing.assert_array_equal(op(lazy, size).compute(), expected)


def test_square_morphology_errors() -> None:
    with pytest.raises(MaskError, match="size must be a positive"):
        square_closing(da.zeros((4, 4), dtype=bool), 0)
    with pytest.raises(MaskError, match="2-D bool mask"):
        square_closing(da.zeros((4, 4), dtype=np.uint8), 3)
    with pytest.raises(MaskError, match="RGB or RGBA"):
        saturation(da.zeros((4, 4), dtype=np.uint8))
    with pytest.raises(MaskError, match="uint8 RGB"):
        rgb_mean(da.zeros((4, 4, 3), dtype=np.uint16))


@settings(deadline=None, max_examples=30)
@given(data=images(channels=None, dtype=bool))
def test_contour_fill_is_binary_fill_holes(data: tuple[np.ndarray, da.Array]) -> None:
    mask, lazy = data
    np.testing.assert_array_equal(contour_fill(lazy).compute(), ndi.binary_fill_holes(mask))


# ---- configuration: parameters, units, errors ---------------------------------------------


def _error(text: str) -> str:
    with pytest.raises(ConfigError) as info:
        config_from_yaml(text, source="c.yaml")
    return str(info.value)


MASK = "masks:\n  t:\n    - gray\n    - threshold: {below: 200}\n"


@pytest.mark.parametrize(
    ("step", "expected"),
    [
        ("closing: {radius: 2, radius_um: 3}", "closing: give exactly one of radius, radius_um"),
        ("closing: {}", "closing: give exactly one of radius, radius_um"),
        ("closing: {radius_um: -1}", "closing.radius_um: Input should be greater than or equal"),
        ("fill_holes: {max_hole_area: 3, max_hole_area_um2: 4}",
         "fill_holes: give at most one of max_hole_area, max_hole_area_um2"),
        ("remove_small_objects: {connectivity: 8}",
         "remove_small_objects: give exactly one of min_area, min_area_um2"),
        ("remove_small_objects: {min_area: 5, connectivity: 6}",
         "remove_small_objects.connectivity: Input should be 4 or 8"),
        ("keep_largest: {n: 0}", "keep_largest.n: Input should be greater than or equal to 1"),
        ("keep_largest_holes: {n: -1}", "keep_largest_holes.n: Input should be greater than"),
        ("square_closing: {size: 0}", "square_closing.size: Input should be greater than"),
        ("mean_blur: {ksize: 4}", "mean_blur.ksize: ksize must be an odd number"),
        ("contour_fill: {max_hole_area: 3}", "contour_fill.max_hole_area: unknown key"),
    ],
)
def test_step_parameter_errors(step: str, expected: str) -> None:
    message = _error(MASK + f"    - {step}\n")
    assert f"c.yaml: masks.t[2].{expected}" in message, message


def test_step_kinds_chain() -> None:
    assert "masks.t[2]: mean_blur needs a single-channel (grey) image but gets a bool mask" \
        in _error(MASK + "    - mean_blur: {ksize: 3}\n")
    assert "masks.t[0]: fill_holes needs a bool mask but gets the slide's colour image" in _error(
        "masks:\n  t:\n    - fill_holes: {}\n")
    assert "masks.t[0]: threshold needs a single-channel (grey) image but gets the slide's " \
        "colour image (add `- gray: {}` before it)" in _error(
            "masks:\n  t:\n    - threshold: {above: otsu}\n")
    config = config_from_yaml("masks:\n  t: [saturation, {threshold: {above: 9}}]\n")
    assert [s.name for s in config.masks["t"]] == ["saturation", "threshold"]
    assert "masks.t.steps[1]: closing needs a bool mask" in _error(
        "masks:\n  t:\n    resolution: {mpp: 2}\n    steps: [gray, {closing: {radius: 1}}]\n")


def test_class_values_errors_name_the_classes() -> None:
    head = "masks:\n  t: [gray, {threshold: {below: 9}}]\nclasses:\n  masks: {tissue: t, pen: t}\n"
    assert "classes.values: label values must be distinct integers 1-255: pen is 300" in _error(
        head + "  values: {tissue: 1, pen: 300}\n")
    assert "classes.values: label values must be distinct integers 1-255: pen and tissue are " \
        "both 1" in _error(head + "  values: {tissue: 1, pen: 1}\n")


def test_threshold_otsu_parameters() -> None:
    message = _error("masks:\n  t:\n    - gray\n    - threshold: {above: otsus}\n")
    assert "masks.t[1].threshold.above: Input should be a valid number (got 'otsus')" in message
    message = _error("masks:\n  t:\n    - gray\n    - threshold: {above: otsu, below: otsu}\n")
    assert "only one side can be otsu" in message
    config = config_from_yaml("masks:\n  t:\n    - gray\n    - threshold: {below: otsu}\n")
    step = config.masks["t"][1]
    assert step.params.otsu and step.kwargs() == {"above": None, "below": "otsu"}
    band = config_from_yaml("masks:\n  t: [gray, {threshold: {above: 10, below: otsu}}]\n")
    assert band.masks["t"][1].canonical() == {"threshold": {"above": 10.0, "below": "otsu"}}


def test_outputs_section() -> None:
    assert "outputs.zarr: the plain Zarr mask is always written" in _error(
        MASK + "outputs: {zarr: false}\n")
    message = _error(MASK + "outputs: {png: true}\n")
    assert "outputs.png: unknown key (allowed: zarr, ome_zarr, geojson, preview, summary)" in (
        message)
    config = config_from_yaml(MASK + "outputs: {preview: true, geojson: true}\n")
    assert config.outputs.extras == ["geojson", "preview"]
    plain = config_from_yaml(MASK)
    assert plain.outputs.extras == []
    # outputs are part of what a finished slide must have: they change the hash
    assert config_hash(config) != config_hash(plain)
    assert config_hash(plain) == config_hash(config_from_yaml(MASK + "outputs: {zarr: true}\n"))


def test_older_configs_keep_their_canonical_form() -> None:
    # keys added later are hashed only when used: an older config's hash does not change
    config = config_from_yaml(
        "masks:\n  t: [gray, {threshold: {below: 220}}, {closing: {radius: 4}}]\n")
    assert config.canonical() == {
        "resolution": {"level": 0, "mpp": None},
        "masks": {"t": [{"gray": {}}, {"threshold": {"above": None, "below": 220.0}},
                        {"closing": {"radius": 4}}]},
        "output": "t",
        "chunk_size": 2048,
    }


def test_micrometres_become_pixels() -> None:
    config = config_from_yaml(
        "masks:\n  t:\n    - gray\n    - threshold: {below: 200}\n"
        "    - closing: {radius_um: 10}\n    - remove_small_objects: {min_area_um2: 100}\n"
        "    - fill_holes: {max_hole_area_um2: 50}\n    - fill_holes: {}\n"
        "    - dilation: {radius_um: 5}\n"
    )
    steps = config.masks["t"]
    assert steps[2].arguments(4.0) == {"radius": 3}  # 2.5 rounds half up
    assert steps[3].arguments(2.0) == {"min_area": 25.0, "connectivity": 8}
    assert steps[4].arguments(0.5) == {"max_hole_area": 200.0}
    assert steps[5].arguments(None) == {"max_hole_area": None}
    assert steps[6].arguments(8.0) == {"radius": 1}
    with pytest.raises(MaskError, match="min_area_um2: the slide does not state its pixel size"
                       r".*--mpp UM.*default_mpp"):
        steps[3].arguments(None)


def test_registry_scopes() -> None:
    global_steps = {n for n, s in STEPS.items() if s.scope == "global"}
    assert global_steps == {"fill_holes", "contour_fill", "holes", "remove_small_objects",
                            "keep_largest", "keep_largest_holes", "optical_density",
                            "touching_edge", "white_balance"}
    assert STEPS["square_opening"].scope == STEPS["mean_blur"].scope == "neighbourhood"


# ---- the configured pipeline ----------------------------------------------------------------


def _nompp_slide(tmp_path: Path) -> Path:
    rng = np.random.default_rng(5)
    rgb = np.full((300, 260, 3), 235, np.uint8)
    rgb[40:200, 30:220] = rng.integers(90, 160, (160, 190, 3))
    path = tmp_path / "nompp.tif"
    tifffile.imwrite(path, rgb, tile=(64, 64), photometric="rgb")
    return path


def test_micrometres_on_a_slide_without_pixel_size_name_the_key(tmp_path: Path) -> None:
    config = config_from_yaml(
        "resolution: {downsample: 2}\nmasks:\n  t:\n    - gray\n    - threshold: {below: 200}\n"
        "    - remove_small_objects: {min_area_um2: 100}\n"
    )
    path = _nompp_slide(tmp_path)
    with pytest.raises(MaskError, match=r"nompp\.tif: masks\.t\[2\]\.remove_small_objects: "
                                        r"min_area_um2: the slide does not state its pixel size"):
        build_mask(open_slide(path), config)
    result = run_slide(path, config, tmp_path / "out")
    assert result.status == "failed" and "min_area_um2" in (result.error or "")
    # in pixels the same recipe runs
    pixels = config_from_yaml(
        "resolution: {downsample: 2}\nmasks:\n  t:\n    - gray\n    - threshold: {below: 200}\n"
        "    - remove_small_objects: {min_area: 25}\n"
    )
    mask, provenance = build_mask(open_slide(path), pixels)
    assert mask.shape == (150, 130) and provenance["mpp"] is None
    assert provenance["downsample"] == 2.0


def test_resolution_by_downsample(synthetic_slide: Path) -> None:
    slide = open_slide(synthetic_slide)  # 1536 x 2048, levels at 1, 2, 4, ...
    # 3: level 1 (2) by 2 would give 4, a third off: level 0 by 3
    for target, level, factor in ((1, 0, 1), (3, 0, 3), (4, 2, 1), (64, len(slide.levels) - 1,
                                                                     None)):
        config = config_from_yaml(f"resolution: {{downsample: {target}}}\n" + MASK)
        resolution = working_resolution(slide, config.resolution)
        assert resolution.level == level
        if factor is not None:
            assert resolution.factor == factor
        assert resolution.downsample == pytest.approx(
            slide.downsamples[resolution.level] * resolution.factor)
        assert resolution.mpp == pytest.approx(0.5 * resolution.downsample)
    config = config_from_yaml("resolution: {downsample: 100000}\n" + MASK)
    with pytest.raises(MaskError, match="coarser than the whole slide"):
        working_resolution(slide, config.resolution)


def test_steps_equal_the_public_functions(synthetic_slide: Path) -> None:
    config = config_from_yaml(
        "resolution: {level: 1}\nchunk_size: 128\nmasks:\n  t:\n"
        "    - rgb_mean\n    - mean_blur: {ksize: 3}\n    - threshold: {below: 220}\n"
        "    - square_closing: {size: 4}\n    - remove_small_objects: {min_area_um2: 400}\n"
        "    - keep_largest_holes: {n: 1}\n    - fill_holes: {max_hole_area: 50}\n"
        "    - keep_largest: {n: 3, connectivity: 4}\n"
        "  s:\n    - saturation\n    - threshold: {above: otsu}\n    - contour_fill\n"
        "output: t | s\n"
    )
    slide = open_slide(synthetic_slide, chunk_size=128)
    mask, provenance = build_mask(slide, config)
    rgb = slide.levels[1]
    t = threshold(mean_blur(rgb_mean(rgb), 3), below=220)
    t = remove_small_objects(square_closing(t, 4), 400 / 1.0**2)  # level 1: 1 µm per pixel
    t = keep_largest(fill_holes(keep_largest_holes(t, 1), max_hole_area=50), 3, connectivity=4)
    grey = saturation(rgb)
    level = threshold_otsu(grey.compute())
    s = fill_holes(threshold(grey, above=level))
    got, expected, recorded = dask.compute(mask, t | s, provenance["thresholds"])
    np.testing.assert_array_equal(got, expected)
    assert 0.01 < got.mean() < 0.99
    assert recorded["s[1]"] == {"above": level, "below": None}
    assert recorded["t[2]"] == {"above": None, "below": 220.0}


GLOBAL_CONFIG = """
resolution: {level: 1}
chunk_size: 96
masks:
  tissue:
    - saturation
    - median_blur: {ksize: 5}
    - threshold: {above: otsu}
    - square_opening: {size: 3}
    - closing: {radius_um: 3}
    - remove_small_objects: {min_area: 30}
    - keep_largest_holes: {n: 1}
    - fill_holes: {max_hole_area_um2: 400}
    - dilation: {radius: 1}
  dark:
    - gray
    - mean_blur: {ksize: 3}
    - threshold: {below: otsu}
    - contour_fill
  band:
    - gray
    - threshold: {above: 60, below: otsu}
output: "(tissue & ~band) | dark"
"""


def test_staged_run_equals_lazy_graph_with_global_steps_and_otsu(
    tmp_path: Path, synthetic_slide: Path
) -> None:
    config = config_from_yaml(GLOBAL_CONFIG)
    slide = open_slide(synthetic_slide, chunk_size=96)
    expected, lazy_provenance = build_mask(slide, config)
    expected, lazy_thresholds = dask.compute(expected, lazy_provenance["thresholds"])
    result = run_slide(synthetic_slide, config, tmp_path)
    assert result.status == "done", result.error
    np.testing.assert_array_equal(read_mask(result.output).compute(), expected)
    assert 0.01 < expected.mean() < 0.99
    stored = read_attrs(result.output)["provenance"]["thresholds"]
    assert stored == {k: {s: None if v is None else float(v) for s, v in b.items()}
                      for k, b in lazy_thresholds.items()}
    # the recorded values are scikit-image's Otsu of each step's input
    rgb = slide.levels[1].compute()
    grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    sat = cv2.medianBlur(cv2.cvtColor(rgb, cv2.COLOR_RGB2HSV)[..., 1], 5)
    assert stored["tissue[2]"]["above"] == threshold_otsu(sat)
    assert stored["dark[2]"]["below"] == threshold_otsu(_mean_reference(grey, 3))
    assert stored["band[1]"] == {"above": 60.0, "below": threshold_otsu(grey)}
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_otsu_below_keeps_the_dark_class(synthetic_slide: Path) -> None:
    slide = open_slide(synthetic_slide, chunk_size=200)
    below = config_from_yaml("resolution: {level: 2}\nmasks: {t: [gray, {threshold: "
                             "{below: otsu}}]}\n")
    above = config_from_yaml("resolution: {level: 2}\nmasks: {t: [gray, {threshold: "
                             "{above: otsu}}]}\n")
    low, _ = build_mask(slide, below)
    high, _ = build_mask(slide, above)
    grey = to_gray(slide.levels[2]).compute()
    t = threshold_otsu(grey)
    low, high = dask.compute(low, high)
    np.testing.assert_array_equal(low, grey <= t)
    np.testing.assert_array_equal(high, grey > t)


def test_config_type_is_exported() -> None:
    assert isinstance(config_from_yaml(MASK), Config)
    assert image_at  # the reference tests use it with working_resolution
