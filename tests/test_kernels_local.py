"""Local kernels on numpy tiles, against OpenCV / scikit-image on the same array.

Also checks each neighbourhood kernel's halo contract directly (no dask): the kernel applied to
a window cut out with its declared depth gives the whole-image answer inside the window.
"""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
import skimage.morphology as skm
from hypothesis import given, settings
from hypothesis import strategies as st

from slidemask.errors import MaskError
from slidemask.kernels.color import check_hsv_bounds, hsv_in_range, rgb_to_gray
from slidemask.kernels.filters import median_blur, median_depth
from slidemask.kernels.morphology import (
    binary_morphology,
    disk_footprint,
    morphology_depth,
)
from slidemask.kernels.threshold import threshold_mask

SKIMAGE_OPS = {
    "dilation": skm.dilation,
    "erosion": skm.erosion,
    "opening": skm.opening,
    "closing": skm.closing,
}


@st.composite
def uint8_images(draw: st.DrawFn, channels: int | None = None, max_side: int = 40) -> np.ndarray:
    """Small uint8 images whose values mix extremes, flat areas and noise."""
    rows = draw(st.integers(1, max_side))
    cols = draw(st.integers(1, max_side))
    shape = (rows, cols) if channels is None else (rows, cols, channels)
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    palette = draw(st.sampled_from(["noise", "extremes", "few"]))
    if palette == "noise":
        return rng.integers(0, 256, shape, dtype=np.uint8)
    if palette == "extremes":
        return rng.choice(np.array([0, 1, 127, 128, 254, 255], np.uint8), shape)
    return rng.choice(rng.integers(0, 256, 3, dtype=np.uint8), shape)


@st.composite
def masks(draw: st.DrawFn, max_side: int = 40) -> np.ndarray:
    rows = draw(st.integers(1, max_side))
    cols = draw(st.integers(1, max_side))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    density = draw(st.sampled_from([0.0, 0.05, 0.5, 0.95, 1.0]))
    return rng.random((rows, cols)) < density


# ---- colour -------------------------------------------------------------------------------


@settings(deadline=None, max_examples=40)
@given(uint8_images(channels=3))
def test_rgb_to_gray_matches_cvtcolor(rgb: np.ndarray) -> None:
    np.testing.assert_array_equal(rgb_to_gray(rgb), cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY))


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_rgba_to_gray_drops_alpha(dtype: type) -> None:
    rng = np.random.default_rng(3)
    rgba = rng.integers(0, np.iinfo(dtype).max, (31, 29, 4), dtype=dtype, endpoint=True)
    expected = cv2.cvtColor(np.ascontiguousarray(rgba[..., :3]), cv2.COLOR_RGB2GRAY)
    out = rgb_to_gray(rgba)
    assert out.dtype == dtype
    np.testing.assert_array_equal(out, expected)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_gray_does_not_depend_on_tile_position(dtype: type) -> None:
    # OpenCV runs SIMD over the row body and scalar code on the tail; the integer paths must
    # agree, or tiles would change the answer (the float32 path does not: it is refused).
    rng = np.random.default_rng(4)
    rgb = rng.integers(0, np.iinfo(dtype).max, (64, 257, 3), dtype=dtype, endpoint=True)
    whole = rgb_to_gray(rgb)
    for c0, width in [(0, 1), (5, 3), (7, 17), (31, 33), (100, 157)]:
        tile = np.ascontiguousarray(rgb[:, c0 : c0 + width])
        np.testing.assert_array_equal(rgb_to_gray(tile), whole[:, c0 : c0 + width])
    pixels = np.ascontiguousarray(rgb.reshape(-1, 1, 3))
    np.testing.assert_array_equal(rgb_to_gray(pixels).reshape(whole.shape), whole)


def test_gray_passthrough_and_empty() -> None:
    gray = np.arange(12, dtype=np.uint8).reshape(3, 4)
    assert rgb_to_gray(gray) is gray
    np.testing.assert_array_equal(rgb_to_gray(gray[..., None]), gray)
    empty = rgb_to_gray(np.zeros((0, 5, 3), np.uint8))
    assert empty.shape == (0, 5) and empty.dtype == np.uint8


def test_gray_rejects_bad_input() -> None:
    with pytest.raises(MaskError, match="channels"):
        rgb_to_gray(np.zeros((2, 2, 2), np.uint8))
    with pytest.raises(MaskError, match="float32"):
        rgb_to_gray(np.zeros((2, 2, 3), np.float32))


def _all_colours(step: int = 3) -> np.ndarray:
    levels = np.arange(0, 256, step, dtype=np.uint8)
    levels = np.union1d(levels, [1, 254, 255]).astype(np.uint8)
    r, g, b = np.meshgrid(levels, levels, levels, indexing="ij")
    return np.stack([r, g, b], axis=-1).reshape(len(levels), -1, 3)


@pytest.mark.parametrize(
    ("lower", "upper"),
    [((0, 0, 0), (179, 255, 255)), ((100, 30, 40), (140, 255, 230)), ((90, 0, 0), (90, 255, 255))],
)
def test_hsv_in_range_matches_inrange(
    lower: tuple[int, int, int], upper: tuple[int, int, int]
) -> None:
    rgb = _all_colours()
    expected = cv2.inRange(cv2.cvtColor(rgb, cv2.COLOR_RGB2HSV), lower, upper) > 0
    np.testing.assert_array_equal(hsv_in_range(rgb, lower=lower, upper=upper), expected)


@pytest.mark.parametrize(
    ("lower", "upper"), [((170, 20, 30), (10, 200, 255)), ((179, 0, 0), (0, 255, 255))]
)
def test_hsv_hue_wraps(lower: tuple[int, int, int], upper: tuple[int, int, int]) -> None:
    rgb = _all_colours()
    h, s, v = np.moveaxis(cv2.cvtColor(rgb, cv2.COLOR_RGB2HSV), -1, 0)
    expected = (
        ((h >= lower[0]) | (h <= upper[0]))
        & (s >= lower[1]) & (s <= upper[1])
        & (v >= lower[2]) & (v <= upper[2])
    )
    out = hsv_in_range(rgb, lower=lower, upper=upper)
    assert out.dtype == np.bool_
    np.testing.assert_array_equal(out, expected)
    rgba = np.concatenate([rgb, np.full(rgb.shape[:2] + (1,), 9, np.uint8)], axis=-1)
    np.testing.assert_array_equal(hsv_in_range(rgba, lower=lower, upper=upper), expected)


def test_hsv_empty_tile() -> None:
    out = hsv_in_range(np.zeros((3, 0, 3), np.uint8), lower=(0, 0, 0), upper=(1, 1, 1))
    assert out.shape == (3, 0) and out.dtype == np.bool_


@pytest.mark.parametrize(
    ("lower", "upper", "match"),
    [
        ((0, 0, 0), (180, 255, 255), "upper hue must be in 0..179"),
        ((-1, 0, 0), (10, 255, 255), "lower hue must be in 0..179"),
        ((0, 0, 0), (10, 256, 255), "upper saturation must be in 0..255"),
        ((0, 50, 0), (10, 40, 255), "lower saturation 50 is above upper saturation 40"),
        ((0, 0, 9), (10, 255, 8), "lower value 9 is above upper value 8"),
        ((0, 0), (10, 255, 255), "triple"),
        ((0, 0, 0.5), (10, 255, 255), "must be an integer"),
    ],
)
def test_hsv_bounds_errors(lower: tuple, upper: tuple, match: str) -> None:
    with pytest.raises(MaskError, match=match):
        check_hsv_bounds(lower, upper)


# ---- threshold ----------------------------------------------------------------------------

finite_or_inf = st.one_of(
    st.floats(-300, 300, allow_nan=False),
    st.integers(-300, 300),
    st.sampled_from([math.inf, -math.inf, 127.5, 128, 0, 255, -0.5, 255.5]),
)


@settings(deadline=None, max_examples=100)
@given(
    above=st.one_of(st.none(), finite_or_inf),
    below=st.one_of(st.none(), finite_or_inf),
    dtype=st.sampled_from([np.uint8, np.int16, np.uint16]),
)
def test_threshold_integer_tiles_exact(
    above: float | None, below: float | None, dtype: type
) -> None:
    info = np.iinfo(dtype)
    x = np.concatenate([np.arange(-300, 300), [info.min, info.max]]).clip(info.min, info.max)
    x = x.astype(dtype).reshape(2, -1)
    if above is None and below is None:
        return
    expected = np.ones(x.shape, bool)
    if above is not None:
        expected &= x.astype(np.float64) > above
    if below is not None:
        expected &= x.astype(np.float64) < below
    np.testing.assert_array_equal(threshold_mask(x, above=above, below=below), expected)


@settings(deadline=None, max_examples=100)
@given(
    above=st.one_of(st.none(), st.floats(-2, 2), st.integers(-2, 2)),
    below=st.one_of(st.none(), st.floats(-2, 2), st.integers(-2, 2)),
)
def test_threshold_float32_compares_real_values(above: float | None, below: float | None) -> None:
    rng = np.random.default_rng(0)
    x = rng.random(500).astype(np.float32) * 3 - 1.5
    extras = [np.nan, np.inf, -np.inf, 0.1, 0.5, 1.0, -0.0]
    x = np.concatenate([x, np.array(extras, np.float32)])
    for v in (above, below):
        if v is not None and math.isfinite(v):
            near = np.float32(v)
            x = np.concatenate([x, [near, np.nextafter(near, np.float32(3)),
                                    np.nextafter(near, np.float32(-3))]]).astype(np.float32)
    if above is None and below is None:
        return
    wide = x.astype(np.float64)
    expected = np.ones(x.shape, bool)
    with np.errstate(invalid="ignore"):
        if above is not None:
            expected &= wide > above
        if below is not None:
            expected &= wide < below
    np.testing.assert_array_equal(threshold_mask(x, above=above, below=below), expected)


def test_threshold_nan_and_numpy_scalars() -> None:
    x = np.array([[0, 100, 200, 255]], np.uint8)
    assert not threshold_mask(x, above=math.nan).any()
    np.testing.assert_array_equal(threshold_mask(x, above=np.float32(99.5)), x > 99.5)
    np.testing.assert_array_equal(threshold_mask(x, below=np.array(200)), x < 200)
    assert threshold_mask(np.zeros((0, 4), np.uint8), above=3).shape == (0, 4)


def test_threshold_uint8_band_fast_path() -> None:
    x = np.arange(256, dtype=np.uint8).reshape(16, 16)
    for a, b in [(0, 255), (100, 101), (100, 102), (-1, 256), (10.5, 20.5), (254, 300)]:
        np.testing.assert_array_equal(threshold_mask(x, above=a, below=b), (x > a) & (x < b))
    # a non-contiguous tile takes the same path
    t = np.arange(512, dtype=np.uint16).astype(np.uint8).reshape(16, 32)[:, ::2]
    np.testing.assert_array_equal(threshold_mask(t, above=50, below=200), (t > 50) & (t < 200))


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32])
@pytest.mark.parametrize(
    "above, below",
    [(None, 120), (80, None), (80, 120), (-1, None), (None, -1), (None, 1e9), (300.5, None)],
)
def test_threshold_into_a_strided_view_equals_a_new_mask(
    dtype: type, above: float | None, below: float | None
) -> None:
    """``out=`` (a tile's place in a chunk) gets exactly the new mask; nothing else changes."""
    rng = np.random.default_rng(3)
    tile = rng.integers(0, 256, (37, 29)).astype(dtype)
    chunk = np.zeros((64, 64), bool)
    chunk[::2, ::2] = True
    before = chunk.copy()
    place = chunk[5:42, 9:38]
    result = threshold_mask(tile, above=above, below=below, out=place)
    assert result is place
    np.testing.assert_array_equal(place, threshold_mask(tile, above=above, below=below))
    outside = np.ones(chunk.shape, bool)
    outside[5:42, 9:38] = False
    np.testing.assert_array_equal(chunk[outside], before[outside])


@pytest.mark.parametrize("above, below", [(None, 120), (80, None), (None, 0.5), (254.5, None)])
def test_threshold_uint8_one_sided_into_any_view(above: float | None, below: float | None) -> None:
    """The uint8 one-sided comparison (OpenCV's threshold) writes into views with contiguous
    rows and falls back for strided columns, a transposed tile or a missing ``out``."""
    rng = np.random.default_rng(5)
    tile = rng.integers(0, 256, (40, 30)).astype(np.uint8)
    expected = tile > above if above is not None else tile < below
    for source in (tile, np.asfortranarray(tile), tile.T.copy().T):
        np.testing.assert_array_equal(threshold_mask(source, above=above, below=below), expected)
        for place in (np.zeros((50, 70), bool)[3:43, 5:35], np.zeros((50, 70), bool)[3:43, 5:65:2]):
            assert threshold_mask(source, above=above, below=below, out=place) is place
            np.testing.assert_array_equal(place, expected)
            assert place.view(np.uint8).max() <= 1  # valid bool bytes


def test_threshold_bounds_cache_keeps_types_apart() -> None:
    """The bounds cache tells ``1``, ``1.0`` and ``True`` apart (equal hashes): a bool is
    still refused after an int of the same value was used."""
    x = np.array([[0.5, 1.0, 1.5]], np.float32)
    np.testing.assert_array_equal(threshold_mask(x, below=1), x < 1)
    np.testing.assert_array_equal(threshold_mask(x, below=1.0), x < 1.0)
    with pytest.raises(TypeError, match="real number"):
        threshold_mask(x, below=True)
    np.testing.assert_array_equal(threshold_mask(x, below=np.array(1.25)), x < 1.25)


def test_gray_into_buffers_and_views() -> None:
    rng = np.random.default_rng(4)
    rgb = rng.integers(0, 256, (33, 41, 3)).astype(np.uint8)
    expected = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    buffer = np.empty((33, 41), np.uint8)
    assert rgb_to_gray(rgb, out=buffer) is buffer
    np.testing.assert_array_equal(buffer, expected)
    big = np.zeros((50, 60), np.uint8)
    view = big[3:36, 7:48]
    assert rgb_to_gray(rgb, out=view) is view
    np.testing.assert_array_equal(view, expected)
    assert big[:3].sum() == 0 and big[36:].sum() == 0
    wide = np.empty((33, 41), np.uint16)  # another dtype: converted on the copy
    np.testing.assert_array_equal(rgb_to_gray(rgb, out=wide), expected)
    single = np.empty((33, 41), np.uint8)
    np.testing.assert_array_equal(rgb_to_gray(rgb[..., :1], out=single), rgb[..., 0])


# ---- median -------------------------------------------------------------------------------


@settings(deadline=None, max_examples=40)
@given(image=uint8_images(channels=None), ksize=st.sampled_from([3, 5, 7, 9, 15]))
def test_median_matches_cv2(image: np.ndarray, ksize: int) -> None:
    np.testing.assert_array_equal(median_blur(image, ksize=ksize), cv2.medianBlur(image, ksize))


@pytest.mark.parametrize("dtype", [np.uint16, np.int16, np.float32])
@pytest.mark.parametrize("ksize", [3, 5])
def test_median_wide_dtypes(dtype: type, ksize: int) -> None:
    rng = np.random.default_rng(7)
    x = (rng.random((21, 18, 3)) * 1000 - (500 if dtype == np.int16 else 0)).astype(dtype)
    np.testing.assert_array_equal(median_blur(x, ksize=ksize), cv2.medianBlur(x, ksize))


@settings(deadline=None, max_examples=40)
@given(mask=masks(), ksize=st.sampled_from([3, 5, 7, 9, 15, 257]))
def test_median_of_bool_is_opencv_median_of_01(mask: np.ndarray, ksize: int) -> None:
    out = median_blur(mask, ksize=ksize)
    assert out.dtype == np.bool_
    np.testing.assert_array_equal(out, cv2.medianBlur(mask.astype(np.uint8), ksize).astype(bool))


def test_median_single_channel_and_empty() -> None:
    rng = np.random.default_rng(8)
    x = rng.integers(0, 256, (9, 8, 1), dtype=np.uint8)
    out = median_blur(x, ksize=9)
    assert out.shape == (9, 8, 1)
    np.testing.assert_array_equal(out[..., 0], cv2.medianBlur(x, 9))
    assert median_blur(np.zeros((0, 3), np.uint8), ksize=3).shape == (0, 3)


@pytest.mark.parametrize(
    ("shape", "dtype", "ksize", "match"),
    [
        ((5, 5), np.uint8, 4, "odd integer >= 3"),
        ((5, 5), np.uint8, 1, "odd integer >= 3"),
        ((5, 5), np.uint16, 7, "needs a uint8"),
        ((5, 5), np.float64, 3, "float64"),
        ((5, 5, 2), np.uint8, 7, "1, 3 or 4 channels"),
        ((5, 5, 5), np.uint8, 3, "1 to 4 channels"),
    ],
)
def test_median_errors(shape: tuple[int, ...], dtype: type, ksize: int, match: str) -> None:
    with pytest.raises(MaskError, match=match):
        median_blur(np.zeros(shape, dtype), ksize=ksize)
    with pytest.raises(MaskError, match="odd integer"):
        median_depth(2)


# ---- morphology ---------------------------------------------------------------------------


@pytest.mark.parametrize("radius", range(0, 13))
def test_disk_footprint_is_skimage_disk(radius: int) -> None:
    np.testing.assert_array_equal(disk_footprint(radius), skm.disk(radius))


def _skimage_default_is_sound(shape: tuple[int, ...], radius: int) -> bool:
    """False where scipy's reflect padding breaks down (see slidemask.kernels.morphology)."""
    sides = [n for n in shape if n >= 2]
    return not sides or radius < 4 * min(sides)


@settings(deadline=None, max_examples=60)
@given(
    mask=masks(),
    op=st.sampled_from(sorted(SKIMAGE_OPS)),
    radius=st.integers(0, 12),
)
def test_morphology_matches_skimage(mask: np.ndarray, op: str, radius: int) -> None:
    out = binary_morphology(mask, op=op, radius=radius)
    assert out.dtype == np.bool_
    footprint = skm.disk(radius)
    np.testing.assert_array_equal(out, SKIMAGE_OPS[op](mask, footprint=footprint, mode="ignore"))
    if _skimage_default_is_sound(mask.shape, radius):
        np.testing.assert_array_equal(out, SKIMAGE_OPS[op](mask, footprint=footprint))


def test_morphology_tiny_image_huge_radius_follows_reflect_rule() -> None:
    # Reflect padding only repeats real pixels, so an all-True mask stays all True under
    # erosion; scipy (behind scikit-image's default mode) returns [[False, True]] here.
    mask = np.ones((1, 2), bool)
    for op in SKIMAGE_OPS:
        np.testing.assert_array_equal(binary_morphology(mask, op=op, radius=8), mask)


def test_morphology_depths_and_errors() -> None:
    assert morphology_depth("dilation", 3) == 3
    assert morphology_depth("erosion", 3) == 3
    assert morphology_depth("opening", 3) == 6
    assert morphology_depth("closing", 0) == 0
    assert median_depth(7) == 3
    with pytest.raises(MaskError, match="known: dilation, erosion, opening, closing"):
        morphology_depth("tophat", 1)  # type: ignore[arg-type]
    with pytest.raises(MaskError, match="radius"):
        morphology_depth("dilation", -1)
    with pytest.raises(MaskError, match="2-D bool"):
        binary_morphology(np.zeros((3, 3), np.uint8), op="dilation", radius=1)
    empty = binary_morphology(np.zeros((0, 3), bool), op="closing", radius=2)
    assert empty.shape == (0, 3)


# ---- the halo contract, without dask -------------------------------------------------------


@st.composite
def windows(draw: st.DrawFn, shape: tuple[int, int]) -> tuple[slice, slice]:
    rows, cols = shape
    r0 = draw(st.integers(0, rows - 1))
    c0 = draw(st.integers(0, cols - 1))
    return slice(r0, draw(st.integers(r0 + 1, rows))), slice(c0, draw(st.integers(c0 + 1, cols)))


def _window_result(kernel, image: np.ndarray, core: tuple[slice, slice], depth: int) -> np.ndarray:
    """Run ``kernel`` on ``core`` grown by ``depth`` (clipped at the image edges), crop back."""
    grown = tuple(
        slice(max(s.start - depth, 0), min(s.stop + depth, n))
        for s, n in zip(core, image.shape, strict=True)
    )
    out = kernel(image[grown])
    crop = tuple(
        slice(s.start - g.start, s.stop - g.start) for s, g in zip(core, grown, strict=True)
    )
    return out[crop]


@settings(deadline=None, max_examples=60)
@given(data=st.data(), image=uint8_images(channels=None), ksize=st.sampled_from([3, 5, 9]))
def test_median_halo_contract(data: st.DataObject, image: np.ndarray, ksize: int) -> None:
    core = data.draw(windows(image.shape))
    whole = cv2.medianBlur(image, ksize)
    got = _window_result(lambda t: median_blur(t, ksize=ksize), image, core, median_depth(ksize))
    np.testing.assert_array_equal(got, whole[core])


@settings(deadline=None, max_examples=60)
@given(
    data=st.data(),
    mask=masks(),
    op=st.sampled_from(sorted(SKIMAGE_OPS)),
    radius=st.integers(1, 5),
)
def test_morphology_halo_contract(
    data: st.DataObject, mask: np.ndarray, op: str, radius: int
) -> None:
    core = data.draw(windows(mask.shape))
    whole = SKIMAGE_OPS[op](mask, footprint=skm.disk(radius), mode="ignore")
    got = _window_result(
        lambda t: binary_morphology(t, op=op, radius=radius),
        mask,
        core,
        morphology_depth(op, radius),
    )
    np.testing.assert_array_equal(got, whole[core])
