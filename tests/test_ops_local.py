"""Lazy local operations: any chunking gives the whole-image reference, bit for bit.

References run on the whole numpy array: OpenCV for grey, HSV range and median; numpy for
thresholds; scikit-image 0.26 (default border mode) for binary morphology.
"""

from __future__ import annotations

from itertools import pairwise

import cv2
import dask
import dask.array as da
import numpy as np
import pytest
import skimage.morphology as skm
from hypothesis import given, settings
from hypothesis import strategies as st

import slidemask.ops.local as local
from slidemask.errors import MaskError
from slidemask.ops.local import (
    binary_closing,
    binary_dilation,
    binary_erosion,
    binary_opening,
    hsv_range,
    map_exact_overlap,
    median_blur,
    threshold,
    to_gray,
)

MORPHOLOGY = {
    "dilation": (binary_dilation, skm.dilation),
    "erosion": (binary_erosion, skm.erosion),
    "opening": (binary_opening, skm.opening),
    "closing": (binary_closing, skm.closing),
}


@pytest.fixture(autouse=True)
def _sync_scheduler():
    with dask.config.set(scheduler="sync"):
        yield


# ---- strategies ---------------------------------------------------------------------------


@st.composite
def axis_chunks(draw: st.DrawFn, n: int) -> tuple[int, ...]:
    """An irregular chunking of an axis of length n: one chunk, all 1-pixel, or random cuts
    (which may repeat, giving empty chunks as slicing can leave)."""
    kind = draw(st.sampled_from(["cuts", "cuts", "ones", "single"]))
    if kind == "single" or n == 1:
        return (n,)
    if kind == "ones" and n <= 12:
        return (1,) * n
    cuts = sorted(draw(st.lists(st.integers(1, n - 1), max_size=min(n - 1, 6))))
    if draw(st.integers(0, 9)) != 0:
        cuts = sorted(set(cuts))
    edges = [0, *cuts, n]
    return tuple(b - a for a, b in pairwise(edges))


@st.composite
def images(
    draw: st.DrawFn,
    channels: int | None = None,
    dtype: type = np.uint8,
    max_side: int = 40,
) -> tuple[np.ndarray, tuple[tuple[int, ...], ...]]:
    """A small image (values mixing extremes, flat areas and noise) and a chunking of it."""
    rows = draw(st.integers(1, max_side))
    cols = draw(st.integers(1, max_side))
    shape = (rows, cols) if channels is None else (rows, cols, channels)
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    top = 1.0 if np.issubdtype(dtype, np.floating) else float(np.iinfo(dtype).max)
    palette = draw(st.sampled_from(["noise", "extremes", "few"]))
    if palette == "noise":
        values = rng.random(shape) * top
    elif palette == "extremes":
        values = rng.choice(np.array([0, 1, top / 2, top - 1, top]), shape)
    else:
        values = rng.choice(rng.random(3) * top, shape)
    if not np.issubdtype(dtype, np.floating):
        values = values.round()
    image = values.astype(dtype)
    chunks = tuple(draw(axis_chunks(n)) for n in image.shape)
    if channels is not None and draw(st.booleans()):
        chunks = (*chunks[:2], draw(axis_chunks(channels)))  # a split channel axis too
    return image, chunks


@st.composite
def chunked_masks(
    draw: st.DrawFn, max_side: int = 40
) -> tuple[np.ndarray, tuple[tuple[int, ...], ...]]:
    rows = draw(st.integers(1, max_side))
    cols = draw(st.integers(1, max_side))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    density = draw(st.sampled_from([0.0, 0.05, 0.5, 0.9, 1.0]))
    mask = rng.random((rows, cols)) < density
    return mask, (draw(axis_chunks(rows)), draw(axis_chunks(cols)))


def _check(result: da.Array, expected: np.ndarray, chunks: tuple[tuple[int, ...], ...]) -> None:
    assert isinstance(result, da.Array)
    assert result.chunks[:2] == chunks[:2]
    got = result.compute()
    assert got.dtype == expected.dtype
    np.testing.assert_array_equal(got, expected)


# ---- per-pixel operations -----------------------------------------------------------------


@settings(deadline=None, max_examples=40)
@given(data=images(channels=3))
def test_to_gray_any_chunking(data: tuple[np.ndarray, tuple]) -> None:
    rgb, chunks = data
    expected = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    _check(to_gray(da.from_array(rgb, chunks=chunks)), expected, chunks)


@settings(deadline=None, max_examples=15)
@given(data=images(channels=4, dtype=np.uint16))
def test_to_gray_rgba_uint16(data: tuple[np.ndarray, tuple]) -> None:
    rgba, chunks = data
    expected = cv2.cvtColor(np.ascontiguousarray(rgba[..., :3]), cv2.COLOR_RGB2GRAY)
    _check(to_gray(da.from_array(rgba, chunks=chunks)), expected, chunks)


def test_to_gray_single_channel_passthrough() -> None:
    gray = da.from_array(np.arange(20, dtype=np.uint8).reshape(4, 5), chunks=2)
    assert to_gray(gray) is gray
    out = to_gray(gray[..., None])
    assert out.shape == (4, 5)
    np.testing.assert_array_equal(out.compute(), gray.compute())


@st.composite
def bounds(draw: st.DrawFn, lo: float, hi: float) -> tuple[float | None, float | None]:
    value = st.one_of(st.integers(int(lo), int(hi)), st.floats(lo, hi))
    above = draw(st.one_of(st.none(), value))
    below = draw(st.one_of(st.none(), value))
    if above is None and below is None:
        above = draw(value)
    if above is not None and below is not None and above >= below:
        above, below = below, above
        if above == below:
            below = None
    return above, below


def _reference_threshold(x: np.ndarray, above: float | None, below: float | None) -> np.ndarray:
    wide = x.astype(np.float64)
    expected = np.ones(x.shape, bool)
    if above is not None:
        expected &= wide > above
    if below is not None:
        expected &= wide < below
    return expected


@settings(deadline=None, max_examples=50)
@given(data=images(), limits=bounds(0, 255))
def test_threshold_uint8_any_chunking(data: tuple, limits: tuple) -> None:
    image, chunks = data
    above, below = limits
    result = threshold(da.from_array(image, chunks=chunks), above=above, below=below)
    _check(result, _reference_threshold(image, above, below), chunks)


@settings(deadline=None, max_examples=25)
@given(data=images(dtype=np.float32), limits=bounds(-0.5, 1.5))
def test_threshold_float_any_chunking(data: tuple, limits: tuple) -> None:
    image, chunks = data
    above, below = limits
    result = threshold(da.from_array(image, chunks=chunks), above=above, below=below)
    _check(result, _reference_threshold(image, above, below), chunks)


@settings(deadline=None, max_examples=25)
@given(data=images(channels=3))
def test_gray_then_lazy_threshold(data: tuple) -> None:
    rgb, chunks = data
    gray = to_gray(da.from_array(rgb, chunks=chunks))
    # (dask's min() fails on arrays with empty chunks, a dask bug; mean() is fine)
    below, above = gray.mean(), gray.mean() - 40
    mask = threshold(gray, below=below, above=above)
    whole = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    b, a = float(below.compute()), float(above.compute())
    _check(mask, (whole < b) & (whole > a), chunks)


def test_threshold_uint16_and_single_channel_axis() -> None:
    x = np.arange(0, 65536, 257, dtype=np.uint16).reshape(16, 16)
    out = threshold(da.from_array(x[..., None], chunks=(3, 5, 1)), above=30000, below=60000.5)
    assert out.shape == (16, 16)
    np.testing.assert_array_equal(out.compute(), (x > 30000) & (x < 60000.5))


@settings(deadline=None, max_examples=40)
@given(
    data=images(channels=3),
    lower=st.tuples(st.integers(0, 179), st.integers(0, 255), st.integers(0, 255)),
    upper=st.tuples(st.integers(0, 179), st.integers(0, 255), st.integers(0, 255)),
)
def test_hsv_range_any_chunking(data: tuple, lower: tuple, upper: tuple) -> None:
    rgb, chunks = data
    lower, upper = (
        (lower[0], min(lower[1], upper[1]), min(lower[2], upper[2])),
        (upper[0], max(lower[1], upper[1]), max(lower[2], upper[2])),
    )
    hsv = cv2.cvtColor(rgb, cv2.COLOR_RGB2HSV)
    if lower[0] <= upper[0]:
        expected = cv2.inRange(hsv, lower, upper) > 0
    else:
        expected = (cv2.inRange(hsv, lower, (179, upper[1], upper[2])) > 0) | (
            cv2.inRange(hsv, (0, lower[1], lower[2]), upper) > 0
        )
    _check(hsv_range(da.from_array(rgb, chunks=chunks), lower, upper), expected, chunks)


def test_hsv_range_rgba_and_red_wrap() -> None:
    rgba = np.zeros((2, 4, 4), np.uint8)
    rgba[..., 3] = 255
    # red, rose, orange, green / grey, dark-ish red, blue, crimson
    rgba[0, :, :3] = [[255, 0, 0], [255, 0, 40], [255, 40, 0], [0, 255, 0]]
    rgba[1, :, :3] = [[128, 128, 128], [250, 10, 10], [10, 10, 250], [200, 0, 30]]
    mask = hsv_range(da.from_array(rgba, chunks=(1, 3, 2)), (170, 100, 100), (10, 255, 255))
    np.testing.assert_array_equal(
        mask.compute(), [[True, True, True, False], [False, True, False, True]]
    )


# ---- neighbourhood operations -------------------------------------------------------------


@settings(deadline=None, max_examples=40)
@given(data=images(), ksize=st.sampled_from([3, 5, 7, 11, 21]))
def test_median_blur_any_chunking(data: tuple, ksize: int) -> None:
    image, chunks = data
    result = median_blur(da.from_array(image, chunks=chunks), ksize)
    _check(result, cv2.medianBlur(image, ksize), chunks)


@settings(deadline=None, max_examples=20)
@given(data=images(channels=3), ksize=st.sampled_from([3, 7]))
def test_median_blur_rgb_any_chunking(data: tuple, ksize: int) -> None:
    image, chunks = data
    result = median_blur(da.from_array(image, chunks=chunks), ksize)
    assert result.shape == image.shape
    _check(result, cv2.medianBlur(image, ksize), chunks)


@settings(deadline=None, max_examples=20)
@given(data=images(dtype=np.float32), ksize=st.sampled_from([3, 5]))
def test_median_blur_float32_any_chunking(data: tuple, ksize: int) -> None:
    image, chunks = data
    result = median_blur(da.from_array(image, chunks=chunks), ksize)
    _check(result, cv2.medianBlur(image, ksize), chunks)


@settings(deadline=None, max_examples=30)
@given(data=chunked_masks(), ksize=st.sampled_from([3, 7, 15]))
def test_median_of_mask_any_chunking(data: tuple, ksize: int) -> None:
    mask, chunks = data
    expected = cv2.medianBlur(mask.astype(np.uint8), ksize).astype(bool)
    _check(median_blur(da.from_array(mask, chunks=chunks), ksize), expected, chunks)


@settings(deadline=None, max_examples=20)
@given(data=images(), ksize=st.sampled_from([5, 7, 15]), t=st.integers(0, 255))
def test_threshold_commutes_with_median(data: tuple, ksize: int, t: int) -> None:
    # Threshold decomposition: the median of a thresholded image is the thresholded median,
    # so a cheap majority vote on the mask can replace the slow grey median (see report).
    image, chunks = data
    lazy = da.from_array(image, chunks=chunks)
    for side in ({"below": t}, {"above": t}):
        np.testing.assert_array_equal(
            median_blur(threshold(lazy, **side), ksize).compute(),
            threshold(median_blur(lazy, ksize), **side).compute(),
        )


@settings(deadline=None, max_examples=60)
@given(
    data=chunked_masks(),
    op=st.sampled_from(sorted(MORPHOLOGY)),
    radius=st.integers(0, 6),
)
def test_morphology_any_chunking(data: tuple, op: str, radius: int) -> None:
    mask, chunks = data
    lazy_op, reference = MORPHOLOGY[op]
    sides = [n for n in mask.shape if n >= 2]
    # scipy's reflect padding (behind scikit-image) breaks for radius >= 4 x a side of >= 2
    # pixels; see slidemask.kernels.morphology. mode="ignore" is the same rule, done right.
    mode = "reflect" if not sides or radius < 4 * min(sides) else "ignore"
    expected = reference(mask, footprint=skm.disk(radius), mode=mode)
    _check(lazy_op(da.from_array(mask, chunks=chunks), radius), expected, chunks)


@pytest.mark.parametrize("op", sorted(MORPHOLOGY))
def test_morphology_one_pixel_chunks(op: str) -> None:
    rng = np.random.default_rng(5)
    mask = rng.random((11, 9)) < 0.5
    lazy_op, reference = MORPHOLOGY[op]
    for radius in (1, 2, 3):
        result = lazy_op(da.from_array(mask, chunks=1), radius)
        assert result.chunks == ((1,) * 11, (1,) * 9)
        np.testing.assert_array_equal(result.compute(), reference(mask, footprint=skm.disk(radius)))


def test_median_one_pixel_chunks_and_depth_beyond_image() -> None:
    rng = np.random.default_rng(6)
    image = rng.integers(0, 256, (9, 13), dtype=np.uint8)
    for ksize in (3, 7, 31):  # 31: the halo (15) is longer than both axes
        result = median_blur(da.from_array(image, chunks=1), ksize)
        assert result.chunks == ((1,) * 9, (1,) * 13)
        np.testing.assert_array_equal(result.compute(), cv2.medianBlur(image, ksize))


def test_chained_neighbourhood_ops() -> None:
    rng = np.random.default_rng(7)
    rgb = rng.integers(0, 256, (37, 29, 3), dtype=np.uint8)
    chunks = ((10, 1, 20, 6), (3, 3, 23), (3,))
    gray = to_gray(da.from_array(rgb, chunks=chunks))
    mask = binary_closing(binary_opening(threshold(median_blur(gray, 5), below=140), 2), 3)
    whole = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    expected = skm.closing(skm.opening(cv2.medianBlur(whole, 5) < 140, skm.disk(2)), skm.disk(3))
    _check(mask, expected, chunks)


def test_empty_images() -> None:
    empty_rgb = da.zeros((0, 7, 3), dtype=np.uint8, chunks=(1, 3, 3))
    assert to_gray(empty_rgb).compute().shape == (0, 7)
    assert hsv_range(empty_rgb, (0, 0, 0), (179, 255, 255)).compute().shape == (0, 7)
    empty = da.zeros((5, 0), dtype=np.uint8, chunks=2)
    assert threshold(empty, above=3).compute().shape == (5, 0)
    assert median_blur(empty, 7).compute().shape == (5, 0)
    assert binary_opening(empty > 0, 2).compute().shape == (5, 0)


# ---- laziness -----------------------------------------------------------------------------


def _explode(block: np.ndarray) -> np.ndarray:
    raise AssertionError("computed while building the graph")


def test_building_the_graph_computes_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    rgb = da.zeros((20, 20, 3), dtype=np.uint8, chunks=7).map_blocks(_explode, dtype=np.uint8)
    gray = da.zeros((20, 20), dtype=np.uint8, chunks=7).map_blocks(_explode, dtype=np.uint8)
    mask = da.zeros((20, 20), dtype=bool, chunks=7).map_blocks(_explode, dtype=bool)
    calls: list[tuple[int, ...]] = []

    def spy(kernel):
        def wrapped(tile, *args, **kwargs):
            calls.append(tile.shape)
            return kernel(tile, *args, **kwargs)

        return wrapped

    for name in ("rgb_to_gray", "hsv_in_range", "threshold_mask", "binary_morphology"):
        monkeypatch.setattr(local, name, spy(getattr(local, name)))
    to_gray(rgb)
    hsv_range(rgb, (0, 0, 0), (10, 10, 10))
    threshold(gray, above=gray.mean())
    median_blur(gray, 5)
    for lazy_op, _ in MORPHOLOGY.values():
        lazy_op(mask, 2)
    assert calls == []  # meta was given: no kernel ran on an empty array either


def test_map_exact_overlap_keeps_chunks() -> None:
    x = da.from_array(np.arange(30, dtype=np.uint8).reshape(5, 6), chunks=((1, 4), (2, 2, 2)))
    out = map_exact_overlap(lambda t: t.copy(), x, 3, dtype=np.uint8)
    assert out.chunks == x.chunks
    np.testing.assert_array_equal(out.compute(), x.compute())


# ---- errors -------------------------------------------------------------------------------

GRAY = da.zeros((4, 4), dtype=np.uint8, chunks=2)
RGB = da.zeros((4, 4, 3), dtype=np.uint8, chunks=2)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({}, "give above=, below= or both"),
        ({"above": 300}, r"above=300 is outside the uint8 image's value range 0\.\.255"),
        ({"below": -1}, "outside the uint8"),
        ({"above": 200, "below": 100}, "must be below"),
        ({"above": 100, "below": 100}, "must be below"),
        ({"above": float("nan")}, "NaN"),
        ({"above": "10"}, "real number"),
        ({"above": True}, "real number"),
        ({"above": da.zeros(3)}, "0-d"),
    ],
)
def test_threshold_errors(kwargs: dict, match: str) -> None:
    with pytest.raises(MaskError, match=match):
        threshold(GRAY, **kwargs)


def test_threshold_error_on_colour_and_no_range_check_on_float() -> None:
    with pytest.raises(MaskError, match=r"single-channel.*to_gray.*rgb\[\.\.\., 0\]"):
        threshold(RGB, above=10)
    with pytest.raises(MaskError, match="integer or float"):
        threshold(GRAY > 0, above=0)
    floats = da.zeros((4, 4), dtype=np.float32, chunks=2)
    assert not threshold(floats, above=128).compute().any()  # not checked: scale unknown
    lazy = da.from_array(np.array(300.0))
    assert not threshold(GRAY, above=lazy).compute().any()  # lazy: not range-checked


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: to_gray(da.zeros((4, 4, 2), np.uint8)), "1, 3 .RGB. or 4 .RGBA. channels"),
        (lambda: to_gray(da.zeros((4, 4, 3), np.float32)), "uint8 and uint16"),
        (lambda: hsv_range(GRAY, (0, 0, 0), (1, 1, 1)), "RGB or RGBA"),
        (lambda: hsv_range(RGB.astype(np.uint16), (0, 0, 0), (1, 1, 1)), "uint8"),
        (lambda: hsv_range(RGB, (0, 0, 0), (180, 255, 255)), "upper hue must be in 0..179"),
        (lambda: hsv_range(RGB, (0, 0, 300), (10, 255, 255)), "lower value must be in 0..255"),
        (lambda: median_blur(GRAY, 4), "odd integer >= 3"),
        (lambda: median_blur(GRAY.astype(np.uint16), 7), "ksize 7 > 5 needs a uint8"),
        (lambda: binary_dilation(GRAY, 2), "2-D bool mask"),
        (lambda: binary_opening(GRAY > 0, -1), "radius must be an integer >= 0"),
        (lambda: binary_closing(GRAY > 0, 1.5), "radius must be an integer >= 0"),
        (lambda: to_gray([[1, 2]]), "dask"),
    ],
)
def test_errors(call, match: str) -> None:
    with pytest.raises(MaskError, match=match):
        call()


def test_pixel_chain_into_equals_the_chain_and_keeps_no_buffer() -> None:
    """A chain written into ``out`` (as tile readers call it) equals its plain result; its grey
    plane lives in a reused buffer that never reaches a result."""
    from slidemask.kernels.color import rgb_to_gray
    from slidemask.kernels.threshold import threshold_mask
    from slidemask.ops.local import PixelChain, PixelStep

    rng = np.random.default_rng(6)
    tiles = [rng.integers(0, 256, (24, 31, 3)).astype(np.uint8) for _ in range(3)]
    grey = PixelChain((PixelStep(rgb_to_gray),))
    mask = PixelChain((PixelStep(rgb_to_gray), PixelStep(threshold_mask, (("below", 128),))))
    plain = [grey(t) for t in tiles]
    assert not any(np.shares_memory(a, b) for a in plain for b in plain if a is not b)
    chunk = np.zeros((48, 62), bool)
    for k, (tile, (y, x)) in enumerate(zip(tiles, [(0, 0), (0, 31), (24, 0)], strict=True)):
        place = chunk[y : y + 24, x : x + 31]
        assert mask(tile, out=place) is place
        np.testing.assert_array_equal(place, plain[k] < 128)
    assert not chunk[24:, 31:].any()
    greys = np.zeros((24, 62), np.uint8)
    for k in range(2):
        grey(tiles[k], out=greys[:, 31 * k : 31 * (k + 1)])
    np.testing.assert_array_equal(greys, np.hstack(plain[:2]))
    np.testing.assert_array_equal(PixelChain(())(tiles[0]), tiles[0])
