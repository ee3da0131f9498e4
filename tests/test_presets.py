"""Presets in configs/ equal an in-memory re-implementation of their source's recipe.

Each reference below is written from the source tool's own code (CLAM's segmentTissue, PathML's
TissueDetectionHE, QuPath's SimpleTissueDetection2, the seed's example 2) with OpenCV, scipy and
scikit-image on the whole downsampled image; the preset's result (the configured, chunked,
out-of-core graph) must agree with it to IoU >= 0.99 on every slide in ../shared/slides and on a
synthetic slide. The references read their parameters from the loaded preset, so a variant of a
preset (finer resolution, smaller areas) is checked against the same recipe.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import dask
import numpy as np
import pytest
import yaml
from scipy import ndimage as ndi
from skimage import measure, morphology

from slidemask.config import Config, load_config, parse_config
from slidemask.errors import MaskError, SlideError
from slidemask.io import open_slide
from slidemask.io.synthetic import write_synthetic_slide
from slidemask.ops.resample import image_at
from slidemask.pipeline import build_mask, working_resolution

from .conftest import REAL_SLIDES

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
SYNTHETIC = "synthetic"
SLIDES = [pytest.param(p, id=p.name) for p in REAL_SLIDES] + [SYNTHETIC]


@pytest.fixture(autouse=True)
def _threads_scheduler():
    with dask.config.set(scheduler="threads", num_workers=2):
        yield


@pytest.fixture(scope="module")
def synthetic_2048(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("presets") / "synthetic.ome.tif"
    return write_synthetic_slide(path, (2048, 2048), tile=256)


def _path(slide: Path | str, synthetic: Path) -> Path:
    return synthetic if slide == SYNTHETIC else Path(slide)


def iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.count_nonzero(a | b)
    return 1.0 if union == 0 else np.count_nonzero(a & b) / union


def _params(config: Config, mask: str, step: str) -> dict[str, Any]:
    """Parameters of the first ``step`` of ``mask``, as given in the preset."""
    for s in config.masks[mask]:
        if s.name == step:
            return s.kwargs()
    raise AssertionError(f"{mask} has no {step} step")


def _saturation(rgb: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(np.ascontiguousarray(rgb[..., :3]), cv2.COLOR_RGB2HSV)[..., 1]


# ---- references ------------------------------------------------------------------------------


def clam_reference(rgb: np.ndarray, config: Config, mpp: float | None) -> np.ndarray:
    """CLAM's WholeSlideImage.segmentTissue and _filter_contours, then its patch test's mask:
    inside a kept tissue contour and not inside (or on) one of its kept holes."""
    mthresh = _params(config, "tissue", "median_blur")["ksize"]
    sthresh = _params(config, "tissue", "threshold")["above"]
    close = _params(config, "tissue", "square_closing")["size"]
    a_t = _params(config, "tissue", "remove_small_objects")["min_area"]
    max_n_holes = _params(config, "tissue", "keep_largest_holes")["n"]
    a_h = _params(config, "tissue", "fill_holes")["max_hole_area"]

    img_med = cv2.medianBlur(_saturation(rgb), mthresh)
    _, img_otsu = cv2.threshold(img_med, sthresh, 255, cv2.THRESH_BINARY)
    img_otsu = cv2.morphologyEx(img_otsu, cv2.MORPH_CLOSE, np.ones((close, close), np.uint8))
    contours, hierarchy = cv2.findContours(img_otsu, cv2.RETR_CCOMP, cv2.CHAIN_APPROX_NONE)
    out = np.zeros(img_otsu.shape, bool)
    if hierarchy is None:
        return out
    hierarchy = np.squeeze(hierarchy, axis=(0,))[:, 2:]
    for cont_idx in np.flatnonzero(hierarchy[:, 1] == -1):
        holes = np.flatnonzero(hierarchy[:, 1] == cont_idx)
        a = cv2.contourArea(contours[cont_idx])
        a -= np.array([cv2.contourArea(contours[h]) for h in holes]).sum()
        if a == 0 or not a_t < a:
            continue
        kept = sorted((contours[h] for h in holes), key=cv2.contourArea, reverse=True)
        kept = [h for h in kept[:max_n_holes] if cv2.contourArea(h) > a_h]
        piece = np.zeros(img_otsu.shape, np.uint8)
        cv2.drawContours(piece, [contours[cont_idx]], -1, 255, cv2.FILLED)
        for hole in kept:
            cv2.drawContours(piece, [hole], -1, 0, cv2.FILLED)
        out |= piece > 0
    return out


def pathml_reference(rgb: np.ndarray, config: Config, mpp: float | None) -> np.ndarray:
    """PathML's TissueDetectionHE.F (saturation, median, Otsu, open, close,
    ForegroundDetection), with the preset's sizes (a square of 19 is 7 x 7 three times)."""
    blur = _params(config, "tissue", "median_blur")["ksize"]
    opening = _params(config, "tissue", "square_opening")["size"]
    closing = _params(config, "tissue", "square_closing")["size"]
    assert opening == closing == 19  # PathML: morph_k_size 7, morph_n_iter 3
    min_region = _params(config, "tissue", "remove_small_objects")["min_area"]
    # holes are cut out from one pixel more than PathML's max_hole_size
    max_hole = _params(config, "large_holes", "remove_small_objects")["min_area"] - 1

    blurred = cv2.medianBlur(_saturation(rgb), blur)
    _, thresholded = cv2.threshold(blurred, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    k = np.ones((7, 7), np.uint8)
    opened = cv2.morphologyEx(thresholded, cv2.MORPH_OPEN, k, iterations=3)
    closed = cv2.morphologyEx(opened, cv2.MORPH_CLOSE, k, iterations=3)
    contours, hierarchy = cv2.findContours(closed.copy(), cv2.RETR_CCOMP, cv2.CHAIN_APPROX_NONE)
    if hierarchy is None:
        return np.zeros(closed.shape, bool)
    hierarchy = np.squeeze(hierarchy, axis=0)
    outside = hierarchy[:, 3] == -1
    size_ok = np.array([cv2.contourArea(c) > min_region for c in contours])
    hole_ok = np.array([cv2.contourArea(c) > max_hole for c in contours])
    parent_ok = np.array([p in np.flatnonzero(size_ok) for p in hierarchy[:, 3]])
    out1 = np.zeros(closed.shape, np.int8)
    out2 = np.zeros(closed.shape, np.int8)
    for i, c in enumerate(contours):
        if outside[i] and size_ok[i]:
            cv2.fillPoly(out1, [c], 255)
        if not outside[i] and hole_ok[i] and parent_ok[i]:
            cv2.fillPoly(out2, [c], 255)
    return (out1 - out2).astype(np.uint8) != 0


def _imagej_smooth(grey: np.ndarray) -> np.ndarray:
    padded = np.pad(grey.astype(np.int32), 1, mode="edge")
    rows, cols = grey.shape
    total = sum(padded[i : i + rows, j : j + cols] for i in range(3) for j in range(3))
    return ((total + 4) // 9).astype(np.uint8)


def qupath_reference(rgb: np.ndarray, config: Config, mpp: float | None) -> np.ndarray:
    """QuPath's SimpleTissueDetection2: ImageJ grey, smooth(), thresholdBelow, 3x3 median,
    4-connected regions kept by filled area, holes of each region under the limit filled."""
    assert mpp is not None
    below = _params(config, "tissue", "threshold")["below"]
    min_area = _params(config, "tissue", "remove_small_objects")["min_area_um2"] / mpp**2
    max_hole = _params(config, "large_holes", "remove_small_objects")["min_area_um2"] / mpp**2

    w = 1.0 / 3.0
    rgb = rgb.astype(np.float64)
    grey = (rgb[..., 0] * w + rgb[..., 1] * w + rgb[..., 2] * w + 0.5).astype(np.uint8)
    binary = np.where(_imagej_smooth(grey) < below, 255, 0).astype(np.uint8)
    binary = cv2.medianBlur(binary, 3) > 0  # RankFilters radius 1: 3x3, edges repeated
    out = np.zeros(binary.shape, bool)
    labels = measure.label(binary, connectivity=1)
    regions = measure.regionprops(labels)
    # a region traced marks its whole filled polygon done: a region inside another's hole
    # (an island) is never traced, and goes with that hole when the hole stays open
    covered = np.zeros(binary.shape, np.int32)
    for region in regions:
        covered[region.slice][region.image_filled & ~region.image] += 1
    for region in regions:
        if covered[labels == region.label].any():
            continue
        if region.area_filled < min_area:
            continue
        filled = region.image_filled
        holes = filled & ~binary[region.slice]
        for hole in measure.regionprops(measure.label(holes, connectivity=1)):
            if hole.area_filled >= max_hole:
                cut = np.zeros(filled.shape, bool)
                cut[hole.slice] = hole.image_filled
                filled = filled & ~cut
        out[region.slice] |= filled
    return out


def _drop_small(mask: np.ndarray, min_pixels: float) -> np.ndarray:
    labels, _ = ndi.label(mask, structure=np.ones((3, 3)))
    sizes = np.bincount(labels.ravel())
    keep = sizes >= min_pixels
    keep[0] = False
    return keep[labels]


def _fill_small_holes(mask: np.ndarray, max_pixels: float) -> np.ndarray:
    labels, _ = ndi.label(~mask)  # 4-connected background
    sizes = np.bincount(labels.ravel())
    border = np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
    fill = sizes <= max_pixels
    fill[border] = False
    fill[0] = False
    return mask | fill[labels]


def _optical_density(rgb: np.ndarray, percentile: float, combine: str) -> np.ndarray:
    """OD relative to the glass, in float64: per channel the percentile of the pixels that are
    not pure white (>= 254 in every channel), at least 200; then summed or the maximum."""
    pixels = rgb[..., :3].reshape(-1, 3)
    glass = np.percentile(pixels[pixels.min(axis=1) < 254], percentile, axis=0,
                          method="inverted_cdf")
    if glass.max() < 64:  # no glass lit from behind: the preset refuses the slide
        raise MaskError("no glass lit from behind")
    glass = np.maximum(glass.astype(np.float64), 200.0)
    od = np.maximum(-np.log10((rgb[..., :3].astype(np.float64) + 1) / (glass + 1)), 0.0)
    return od.sum(axis=2) if combine == "sum" else od.max(axis=2)


def tissue_reference(rgb: np.ndarray, config: Config, mpp: float | None) -> np.ndarray:
    """slidemask's tissue.yaml written out with OpenCV, scipy and scikit-image."""
    assert mpp is not None

    def px(um: float) -> int:
        return int(np.floor(um / mpp + 0.5))

    hsv = cv2.cvtColor(np.ascontiguousarray(rgb[..., :3]), cv2.COLOR_RGB2HSV)
    density = _params(config, "tissue", "optical_density")
    tissue = _optical_density(rgb, density["percentile"], density["combine"])
    tissue = tissue > _params(config, "tissue", "threshold")["above"]
    tissue = morphology.closing(
        tissue, morphology.disk(px(_params(config, "tissue", "closing")["radius_um"]))
    )
    tissue = _drop_small(
        tissue, _params(config, "tissue", "remove_small_objects")["min_area_um2"] / mpp**2
    )
    tissue = _fill_small_holes(
        tissue, _params(config, "tissue", "fill_holes")["max_hole_area_um2"] / mpp**2
    )
    excluded = np.zeros(tissue.shape, bool)
    for name in ("blue_pen", "green_pen", "black"):
        box = _params(config, name, "hsv_range")
        ink = cv2.inRange(hsv, np.array(box["lower"]), np.array(box["upper"])) > 0
        ink = _drop_small(ink, _params(config, name, "remove_small_objects")["min_area_um2"]
                          / mpp**2)
        ink = morphology.dilation(
            ink, morphology.disk(px(_params(config, name, "dilation")["radius_um"]))
        )
        excluded |= ink
    return tissue & ~excluded


REFERENCES: dict[str, Callable[[np.ndarray, Config, float | None], np.ndarray]] = {
    "clam": clam_reference,
    "pathml": pathml_reference,
    "qupath": qupath_reference,
    "tissue": tissue_reference,
}


def _variant(name: str, change: Callable[[dict[str, Any]], None]) -> Config:
    data = yaml.safe_load((CONFIGS / f"{name}.yaml").read_text(encoding="utf-8"))
    data = copy.deepcopy(data)
    change(data)
    return parse_config(data, source=f"{name}.yaml variant")


def _clam_finer(data: dict[str, Any]) -> None:
    # CLAM's areas are far larger than the small test slides: the same recipe at 8x with
    # areas scaled so that pieces and holes are kept and filled
    data["resolution"] = {"downsample": 8}
    for step in data["masks"]["tissue"]:
        if "remove_small_objects" in step:
            step["remove_small_objects"]["min_area"] = 400
        if "fill_holes" in step:
            step["fill_holes"]["max_hole_area"] = 64


def _qupath_brighter(data: dict[str, Any]) -> None:
    # QuPath users raise the threshold for pale stains (220-240 in published scripts)
    for steps in data["masks"].values():
        for step in steps:
            if "threshold" in step:
                step["threshold"]["below"] = 220


CASES: list[Any] = [
    pytest.param("clam", None, id="clam"),
    pytest.param("clam", _clam_finer, id="clam-finer"),
    pytest.param("pathml", None, id="pathml"),
    pytest.param("qupath", None, id="qupath"),
    pytest.param("qupath", _qupath_brighter, id="qupath-220"),
    pytest.param("tissue", None, id="tissue"),
]


@pytest.mark.parametrize("slide", SLIDES)
@pytest.mark.parametrize(("preset", "change"), CASES)
def test_preset_matches_its_recipe(
    preset: str, change: Callable[[dict[str, Any]], None] | None, slide: Path | str,
    synthetic_2048: Path,
) -> None:
    config = load_config(CONFIGS / f"{preset}.yaml") if change is None else _variant(
        preset, change)
    opened = open_slide(_path(slide, synthetic_2048), chunk_size=128)
    if opened.mpp is None and config.resolution.mpp is not None:
        # a recipe in micrometres cannot run on a slide without a pixel size: it says so
        with pytest.raises(SlideError, match="does not state its pixel size"):
            build_mask(opened, config)
        return
    mask, provenance = build_mask(opened, config)
    resolution = working_resolution(opened, config.resolution)
    rgb = image_at(opened, resolution).compute()
    try:
        expected = REFERENCES[preset](rgb, config, resolution.mpp)
    except MaskError as exc:  # tissue.yaml on fluorescence: the slide fails with the reason
        with pytest.raises(MaskError, match=str(exc)):
            mask.compute()
        return
    got = mask.compute()
    assert got.shape == expected.shape == rgb.shape[:2]
    score = iou(got, expected)
    assert score >= 0.99, f"IoU {score:.4f} ({got.sum()} vs {expected.sum()} pixels)"
    assert provenance["downsample"] == pytest.approx(resolution.downsample)


def test_presets_load_and_say_their_sources() -> None:
    for name, source in (("clam", "CLAM"), ("pathml", "PathML"), ("qupath", "QuPath"),
                         ("tissue", "recommended"), ("contour", "seed")):
        text = (CONFIGS / f"{name}.yaml").read_text(encoding="utf-8")
        assert source in text.splitlines()[0] or source in text[:400]
        config = load_config(CONFIGS / f"{name}.yaml")
        assert config.masks


def test_pathml_otsu_is_recorded_and_is_opencvs(synthetic_2048: Path) -> None:
    # the slide-wide Otsu value is recorded; OpenCV's THRESH_OTSU picks the same split here
    config = load_config(CONFIGS / "pathml.yaml")
    opened = open_slide(synthetic_2048)
    mask, provenance = build_mask(opened, config)
    (value,) = dask.compute(provenance["thresholds"]["tissue[2]"]["above"])
    rgb = image_at(opened, working_resolution(opened, config.resolution)).compute()
    blurred = cv2.medianBlur(_saturation(rgb), 17)
    opencv, _ = cv2.threshold(blurred, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    assert abs(float(value) - opencv) <= 1


def test_square_opening_is_pathmls_iterated_kernel() -> None:
    rng = np.random.default_rng(3)
    mask = ndi.binary_dilation(rng.random((90, 110)) > 0.97, iterations=4)
    from slidemask.ops.local import square_closing, square_opening

    k = np.ones((7, 7), np.uint8)
    u8 = mask.astype(np.uint8)
    for ours, op in ((square_opening, cv2.MORPH_OPEN), (square_closing, cv2.MORPH_CLOSE)):
        expected = cv2.morphologyEx(u8, op, k, iterations=3) > 0
        np.testing.assert_array_equal(ours(dask.array.from_array(mask, chunks=23), 19)
                                      .compute(), expected)


# ---- the seed's example 2 ----------------------------------------------------------------------


def _seed_contours(grey: np.ndarray) -> tuple[np.ndarray, Any]:
    _, binary = cv2.threshold(grey, 127, 255, cv2.THRESH_BINARY)
    contours, _ = cv2.findContours(binary, cv2.RETR_TREE, cv2.CHAIN_APPROX_SIMPLE)
    return binary, contours


@pytest.mark.parametrize("slide", SLIDES)
def test_contour_yaml_is_the_seeds_filled_contours(slide: Path | str, synthetic_2048: Path) -> None:
    opened = open_slide(_path(slide, synthetic_2048), chunk_size=512)
    config = load_config(CONFIGS / "contour.yaml")
    mask, _ = build_mask(opened, config)
    got = mask.compute()
    rgb = opened.levels[0].compute()
    grey = cv2.cvtColor(np.ascontiguousarray(rgb[..., :3]), cv2.COLOR_RGB2GRAY)
    binary, contours = _seed_contours(grey)
    # exact: the filled mask is scipy's binary_fill_holes of the threshold
    np.testing.assert_array_equal(got, ndi.binary_fill_holes(binary > 0))
    # the seed's OpenCV code, each contour filled
    filled = np.zeros(grey.shape, np.uint8)
    for contour in contours:
        cv2.drawContours(filled, [contour], -1, 255, cv2.FILLED)
    assert iou(got, filled > 0) >= 0.999
    # the one-call form fills even-odd: hole contours cut their holes out again, giving the
    # threshold itself (documented in contour.yaml and contour_fill)
    together = np.zeros(grey.shape, np.uint8)
    cv2.drawContours(together, contours, -1, 255, cv2.FILLED)
    assert iou(binary > 0, together > 0) >= 0.999
