"""Downsampling equals the whole-image reference for any chunking; resolution choice by mpp."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import dask
import dask.array as da
import hypothesis.extra.numpy as hnp
import numpy as np
import pytest
import tifffile
from hypothesis import given, settings
from hypothesis import strategies as st

from slidemask.errors import MaskError, SlideError
from slidemask.io.tiff import Slide, open_slide
from slidemask.ops.resample import (
    OUTPUT_CHUNK,
    Resolution,
    block_max,
    block_mean,
    downsample_max,
    downsample_mean,
    downsample_nearest,
    image_at,
    select_resolution,
)
from tests.conftest import real_slide_params

pytestmark = pytest.mark.filterwarnings("error")


@pytest.fixture(autouse=True)
def _sync_scheduler():
    with dask.config.set(scheduler="sync"):
        yield


@st.composite
def split(draw: st.DrawFn, size: int) -> tuple[int, ...]:
    """Irregular chunk sizes summing to ``size`` (size-1 chunks included)."""
    if size == 0:
        return (0,)
    cuts = draw(st.sets(st.integers(1, size - 1), max_size=min(size - 1, 8))) if size > 1 else set()
    edges = [0, *sorted(cuts), size]
    return tuple(b - a for a, b in zip(edges[:-1], edges[1:], strict=True))


@st.composite
def chunked_images(draw: st.DrawFn, dtypes: list[np.dtype], max_side: int = 40,
                   allow_3d: bool = True) -> tuple[np.ndarray, tuple[tuple[int, ...], ...]]:
    rows = draw(st.integers(1, max_side))
    cols = draw(st.integers(1, max_side))
    shape: tuple[int, ...] = (rows, cols)
    if allow_3d and draw(st.booleans()):
        shape += (draw(st.integers(1, 4)),)
    dtype = draw(st.sampled_from(dtypes))
    if dtype.kind == "f":
        elements = st.floats(-1e4, 1e4, allow_nan=False, allow_subnormal=False, width=32)
    else:
        elements = None
    arr = draw(hnp.arrays(dtype, shape, elements=elements))
    chunks = tuple(draw(split(n)) for n in shape)
    return arr, chunks


def reference_mean(arr: np.ndarray, f: int) -> np.ndarray:
    """Independent reference: reshape-sum of the cropped whole array, rounded half up."""
    rows, cols = arr.shape[0] // f, arr.shape[1] // f
    crop = arr[: rows * f, : cols * f]
    blocks = crop.reshape(rows, f, cols, f, *arr.shape[2:])
    if arr.dtype.kind in "ui":
        total = blocks.astype(np.int64 if arr.dtype.kind == "i" else np.uint64).sum(axis=(1, 3))
        return ((total + f * f // 2) // (f * f)).astype(arr.dtype)
    return (blocks.astype(np.float64).sum(axis=(1, 3)) / (f * f)).astype(arr.dtype)


def reference_max(arr: np.ndarray, f: int) -> np.ndarray:
    rows, cols = -(-arr.shape[0] // f), -(-arr.shape[1] // f)
    out = np.zeros((rows, cols, *arr.shape[2:]), dtype=arr.dtype)
    for i in range(rows):
        for j in range(cols):
            out[i, j] = arr[i * f:(i + 1) * f, j * f:(j + 1) * f].max(axis=(0, 1))
    return out


INT_DTYPES = [np.dtype(t) for t in (np.uint8, np.uint16, np.int16, np.int32)]
MASK_DTYPES = [np.dtype(t) for t in (np.bool_, np.uint8, np.int16, np.float32)]


@settings(deadline=None, max_examples=80)
@given(data=chunked_images(INT_DTYPES), factor=st.integers(1, 7))
def test_mean_integer_equals_reference_any_chunking(data, factor):
    arr, chunks = data
    if arr.shape[0] < factor or arr.shape[1] < factor:
        with pytest.raises(MaskError, match="larger than the image"):
            downsample_mean(da.from_array(arr, chunks=chunks), factor)
        return
    out = downsample_mean(da.from_array(arr, chunks=chunks), factor)
    expected = reference_mean(arr, factor)
    assert out.dtype == arr.dtype and out.shape == expected.shape
    np.testing.assert_array_equal(out.compute(), expected)
    np.testing.assert_array_equal(block_mean(arr, factor=factor), expected)


@settings(deadline=None, max_examples=40)
@given(data=chunked_images([np.dtype(np.float32), np.dtype(np.float64)]), factor=st.integers(1, 5))
def test_mean_float_is_chunking_independent(data, factor):
    arr, chunks = data
    if arr.shape[0] < factor or arr.shape[1] < factor:
        return
    out = downsample_mean(da.from_array(arr, chunks=chunks), factor).compute()
    assert out.dtype == arr.dtype
    np.testing.assert_array_equal(out, block_mean(arr, factor=factor))
    np.testing.assert_allclose(out, reference_mean(arr, factor), rtol=1e-6, atol=1e-3)


@settings(deadline=None, max_examples=60)
@given(data=chunked_images(MASK_DTYPES), factor=st.integers(1, 7))
def test_max_and_nearest_equal_reference_any_chunking(data, factor):
    arr, chunks = data
    dask_arr = da.from_array(arr, chunks=chunks)
    got_max = downsample_max(dask_arr, factor).compute()
    np.testing.assert_array_equal(got_max, reference_max(arr, factor))
    np.testing.assert_array_equal(block_max(arr, factor=factor), reference_max(arr, factor))
    got_nearest = downsample_nearest(dask_arr, factor).compute()
    np.testing.assert_array_equal(got_nearest, arr[::factor, ::factor])
    assert got_max.dtype == got_nearest.dtype == arr.dtype


@settings(deadline=None, max_examples=30)
@given(data=chunked_images([np.dtype(np.bool_)], max_side=60, allow_3d=False),
       a=st.integers(1, 4), b=st.integers(1, 4))
def test_mask_downsampling_composes(data, a, b):
    arr, chunks = data
    x = da.from_array(arr, chunks=chunks)
    np.testing.assert_array_equal(
        downsample_max(downsample_max(x, a), b).compute(), downsample_max(x, a * b).compute()
    )
    np.testing.assert_array_equal(
        downsample_nearest(downsample_nearest(x, a), b).compute(), arr[:: a * b, :: a * b]
    )


def test_mean_rounds_half_up_without_overflow():
    halves = np.array([[0, 1], [0, 1]], dtype=np.uint8)  # mean 0.5
    assert downsample_mean(da.from_array(halves), 2).compute()[0, 0] == 1
    odd = np.array([[1, 2], [1, 2]], dtype=np.uint8)  # mean 1.5
    assert downsample_mean(da.from_array(odd), 2).compute()[0, 0] == 2
    signed = np.array([[-1, -2], [-1, -2]], dtype=np.int16)  # mean -1.5 -> -1 (half up)
    assert downsample_mean(da.from_array(signed), 2).compute()[0, 0] == -1
    full = np.full((300, 300), 65535, dtype=np.uint16)  # sum needs uint64
    assert downsample_mean(da.from_array(full, chunks=77), 300).compute()[0, 0] == 65535
    white = np.full((64, 64, 3), 255, dtype=np.uint8)
    assert (downsample_mean(da.from_array(white, chunks=5), 64).compute() == 255).all()


def test_output_chunks_are_merged_not_tiny():
    tiny = da.zeros((64, 64, 3), dtype=np.uint8, chunks=(1, 1, 1))
    assert downsample_mean(tiny, 2).chunks[:2] == ((32,), (32,))
    big = da.zeros((8192, 8192, 3), dtype=np.uint8, chunks=(512, 512, 3))
    out = downsample_mean(big, 2)
    assert out.chunksize[:2] == (OUTPUT_CHUNK, OUTPUT_CHUNK)
    huge_chunks = da.zeros((20000, 9000), dtype=np.uint8, chunks=(10000, 9000))
    assert downsample_mean(huge_chunks, 2).chunksize == (5000, 4500)


def test_downsampling_is_lazy():
    calls = []

    def record(block: np.ndarray) -> np.ndarray:
        calls.append(block.shape)
        return block

    source = da.ones((100, 100, 3), dtype=np.uint8, chunks=30).map_blocks(
        record, dtype=np.uint8, meta=np.empty((0, 0, 0), np.uint8)
    )
    out = downsample_mean(source, 3)
    mask_out = downsample_max(source[..., 0] > 0, 3)
    assert calls == []
    assert isinstance(out, da.Array) and isinstance(mask_out, da.Array)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda x: downsample_mean(x, 0), "positive integer"),
        (lambda x: downsample_mean(x, 1.5), "positive integer"),
        (lambda x: downsample_mean(x, True), "positive integer"),
        (lambda x: downsample_mean(x > 0, 2), "boolean masks"),
        (lambda x: downsample_mean(x, 11), "larger than the image"),
        (lambda x: downsample_max(x[0], 2), "expects an image"),
        (lambda x: downsample_nearest(x, -1), "positive integer"),
    ],
)
def test_downsample_errors(call, message):
    with pytest.raises(MaskError, match=message):
        call(da.zeros((10, 10), dtype=np.uint8))


def fake_slide(shapes: list[tuple[int, int]], mpp: float | None) -> Slide:
    base = shapes[0]
    return Slide(
        path=Path("fake.svs"),
        name="fake",
        levels=[da.zeros((*s, 3), dtype=np.uint8, chunks=(512, 512, 3)) for s in shapes],
        downsamples=[(base[0] / s[0] + base[1] / s[1]) / 2 for s in shapes],
        mpp=mpp,
        vendor="generic",
        compression="NONE",
        tile_shape=(256, 256),
        properties={},
    )


def test_select_resolution_example_from_the_docs():
    slide = fake_slide([(40000, 30000)], 0.499)
    res = select_resolution(slide, mpp=8)
    assert res == Resolution(level=0, factor=16, mpp=pytest.approx(7.984), downsample=16.0)


@pytest.mark.parametrize(
    ("target", "level", "factor", "mpp"),
    [
        (8.0, 2, 2, 8.0),  # level 2 is 4 µm: x2
        (5.0, 1, 5, 5.0),  # 4 µm x 1 misses 5 by 20 %: level 1 (1 µm) x 5
        (6.0, 1, 6, 6.0),  # 4 µm x 2 (halves round up) misses by 33 %: 1 µm x 6
        (4.4, 2, 1, 4.0),  # 4 µm x 1 is within 10 % of 4.4: kept
        (3.9, 1, 4, 4.0),  # level 2 (4 µm) is coarser than 3.9: level 1, 3.9 -> 4
        (0.1, 0, 1, 0.25),  # finer than the scan: level 0, no upsampling
        (0.25, 0, 1, 0.25),
        (100.0, 2, 25, 100.0),
    ],
)
def test_select_resolution_by_mpp(target, level, factor, mpp):
    slide = fake_slide([(16000, 12000), (4000, 3000), (1000, 750)], 0.25)
    res = select_resolution(slide, mpp=target)
    assert (res.level, res.factor) == (level, factor)
    assert res.mpp == pytest.approx(mpp)
    assert res.downsample == pytest.approx(slide.downsamples[level] * factor)
    assert abs(res.mpp - target) <= 0.1 * target or target < 0.25


@pytest.mark.parametrize(
    ("base", "step", "target", "level", "factor"),
    [
        (0.5, 2, 20.0, 3, 5),  # halvings: 16 µm x 1 and 8 µm x 3 miss 20 by 20 %: 4 µm x 5
        (0.5, 2, 8.0, 4, 1),
        (0.499, 4, 20.0, 1, 10),  # Aperio quarters: 7.98 x 3 misses by 20 %: 1.996 x 10
        (0.499, 4, 8.0, 2, 1),
        (0.2265, 4, 8.0, 2, 2),  # NDPI-like: 3.62 x 2 = 7.25 is within 10 %; 0.906 x 9 not read
        (0.2265, 4, 20.0, 2, 6),  # 14.5 x 1 misses by 27 %; 3.62 x 6 = 21.7 (9 %)
        (0.5, 2, 9.0, 4, 1),  # 8 misses by 11 %, but only 0.5 x 18 (64x the pixels) meets it
        (0.5, 3, 16.0, 2, 4),  # thirds: 13.5 (16 % off); 4.5 x 4 = 18 is nearer; 1.5 is 81x
    ],
)
def test_select_resolution_prefers_a_closer_pixel_size_from_a_finer_level(
    base: float, step: int, target: float, level: int, factor: int
) -> None:
    shapes = [(3**10 // step**i, 3**10 // step**i) if step == 3 else
              (2**16 // step**i, 2**16 // step**i) for i in range(5 if step == 2 else 4)]
    slide = fake_slide(shapes, base)
    res = select_resolution(slide, mpp=target)
    assert (res.level, res.factor) == (level, factor)
    assert res.mpp == pytest.approx(base * step**level * factor)


def test_select_resolution_by_level_and_errors():
    slide = fake_slide([(16000, 12000), (4000, 3000)], 0.25)
    assert select_resolution(slide, level=1) == Resolution(1, 1, 1.0, 4.0)
    with pytest.raises(MaskError, match="exactly one"):
        select_resolution(slide)
    with pytest.raises(MaskError, match="exactly one"):
        select_resolution(slide, mpp=8, level=0)
    with pytest.raises(MaskError, match="levels 0 to 1"):
        select_resolution(slide, level=2)
    with pytest.raises(MaskError, match="positive"):
        select_resolution(slide, mpp=-1.0)
    with pytest.raises(MaskError, match="coarser than the whole slide"):
        select_resolution(slide, mpp=1e6)
    no_mpp = fake_slide([(1000, 1000)], None)
    assert select_resolution(no_mpp, level=0).mpp is None
    with pytest.raises(SlideError, match="level"):
        select_resolution(no_mpp, mpp=8)


@pytest.mark.parametrize(
    ("target", "level", "factor"),
    [
        (1, 0, 1),
        (3, 0, 3),  # level 1 (4) is coarser than 3: level 0, x3
        (4, 1, 1),
        (5.9, 0, 6),  # 4 x 1 misses 5.9 by 32 %: level 0 x 6
        (6, 0, 6),  # 4 x 2 (halves round up) misses by 33 %: level 0 x 6
        (4.3, 1, 1),  # 4 is within 10 % of 4.3
        (16, 2, 1),
        (64, 2, 4),  # CLAM's 64 on downsamples 1, 4, 16: level 2, 4 x 4 blocks
        (100.0, 2, 6),  # 100 / 16 = 6.25 -> 6
    ],
)
def test_select_resolution_by_downsample(target, level, factor):
    slide = fake_slide([(16000, 12000), (4000, 3000), (1000, 750)], 0.25)
    res = select_resolution(slide, downsample=target)
    mpp = pytest.approx(0.25 * 4**level * factor)
    assert res == Resolution(level=level, factor=factor, mpp=mpp,
                             downsample=slide.downsamples[level] * factor)
    no_mpp = fake_slide([(16000, 12000), (4000, 3000), (1000, 750)], None)
    assert select_resolution(no_mpp, downsample=target) == Resolution(
        level, factor, None, slide.downsamples[level] * factor)


def test_select_resolution_by_downsample_takes_a_level_within_rounding():
    slide = fake_slide([(16000, 12000), (4000, 3000)], 0.25)
    slide = dataclasses.replace(slide, downsamples=[1.0, 4.0 * (1 + 1e-12)])
    res = select_resolution(slide, downsample=4)
    assert (res.level, res.factor, res.downsample) == (1, 1, 4.0 * (1 + 1e-12))


def test_select_resolution_by_downsample_errors():
    slide = fake_slide([(16000, 12000), (4000, 3000)], 0.25)
    with pytest.raises(MaskError, match="exactly one"):
        select_resolution(slide, level=0, downsample=4)
    with pytest.raises(MaskError, match="exactly one"):
        select_resolution(slide, mpp=1.0, downsample=4)
    with pytest.raises(MaskError, match=r"downsample 100000 is coarser than the whole slide "
                                        r"fake.svs \(4000 x 3000 pixels at level 1\)"):
        select_resolution(slide, downsample=100000)
    for bad in (0.5, 0, -4, float("nan"), float("inf"), True, "4"):
        with pytest.raises(MaskError, match="downsample must be a number >= 1"):
            select_resolution(slide, downsample=bad)


def test_image_at_synthetic_slide_matches_reference(synthetic_slide):
    slide = open_slide(synthetic_slide, chunk_size=300)  # chunks not multiples of the factor
    res = select_resolution(slide, mpp=8)
    assert (res.level, res.factor, res.mpp, res.downsample) == (2, 4, 8.0, 16.0)
    image = image_at(slide, res)
    level2 = tifffile.imread(synthetic_slide, series=0, level=2)
    np.testing.assert_array_equal(image.compute(), reference_mean(level2, 4))
    assert image_at(slide, Resolution(1, 1, 1.0, 2.0)) is slide.levels[1]


@pytest.mark.parametrize("path", real_slide_params())
def test_image_at_real_slides(path):
    slide = open_slide(path)
    res = (select_resolution(slide, mpp=8) if slide.mpp is not None
           else Resolution(len(slide.levels) - 1, 3, None, slide.downsamples[-1] * 3))
    level = slide.levels[res.level].compute()
    got = image_at(slide, res).compute()
    np.testing.assert_array_equal(got, reference_mean(level, res.factor))
    if slide.mpp is not None:
        assert abs(res.mpp - 8) <= slide.level_mpp(res.level) / 2
