"""Slide-wide Otsu threshold equals skimage.filters.threshold_otsu on the whole image."""

from __future__ import annotations

from itertools import pairwise

import dask
import dask.array as da
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from skimage.filters import threshold_otsu

from slidemask.errors import MaskError
from slidemask.ops.otsu import otsu_threshold, threshold_from_histogram


@pytest.fixture(autouse=True)
def _sync_scheduler():
    with dask.config.set(scheduler="sync"):
        yield


@st.composite
def chunking(draw: st.DrawFn, n: int) -> tuple[int, ...]:
    if n > 1 and draw(st.booleans()) and n <= 12:
        return (1,) * n
    cuts = sorted(draw(st.sets(st.integers(1, max(n - 1, 1)), max_size=min(n - 1, 6))))
    return tuple(b - a for a, b in pairwise([0, *cuts, n]))


@st.composite
def grey_images(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray, tuple]:
    dtype = draw(st.sampled_from([np.uint8, np.uint16]))
    h, w = draw(st.integers(1, 48)), draw(st.integers(1, 48))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    top = np.iinfo(dtype).max
    lo = draw(st.integers(0, top))
    span = draw(st.sampled_from([0, 1, 2, 17, 255, 4000]))
    image = np.minimum(lo + rng.integers(0, span + 1, (h, w)), top).astype(dtype)
    if draw(st.booleans()):  # two populations, like tissue on glass
        image[: h // 2] = np.minimum(image[: h // 2].astype(np.int64) + span, top)
    selected = rng.random((h, w)) < draw(st.floats(0.05, 1.0))
    return image, selected, (draw(chunking(h)), draw(chunking(w)))


@settings(deadline=None, max_examples=40)
@given(grey_images())
def test_matches_skimage(data):
    image, selected, chunks = data
    d = da.from_array(image, chunks=chunks)
    got = otsu_threshold(d)
    assert got.shape == () and got.dtype == np.float64
    assert got.compute() == threshold_otsu(image)
    if selected.any():
        m = da.from_array(selected, chunks=5)  # rechunked to the image chunks
        assert otsu_threshold(d, mask=m).compute() == threshold_otsu(image[selected])


def test_large_counts_use_skimage_float32_histogram():
    # Counts above 2**24 are rounded to float32 by scikit-image; the result must still agree.
    hist = np.zeros(256, np.int64)
    hist[[10, 11, 200, 201]] = [2**25 + 1, 3, 2**25 - 7, 5]
    expected = threshold_otsu(hist=(hist[10:202], np.arange(10, 202)))
    assert threshold_from_histogram(hist) == expected


def test_single_value_and_empty_selection():
    image = np.full((5, 6), 37, np.uint8)
    d = da.from_array(image, chunks=2)
    assert otsu_threshold(d).compute() == threshold_otsu(image) == 37
    nothing = da.zeros((5, 6), dtype=bool, chunks=3)
    with pytest.raises(MaskError, match="no pixels"):
        otsu_threshold(d, mask=nothing).compute()


def test_errors():
    with pytest.raises(MaskError, match="uint8 or uint16"):
        otsu_threshold(da.zeros((3, 3), dtype=np.float32, chunks=2))
    with pytest.raises(MaskError, match="shape"):
        otsu_threshold(da.zeros((3, 3), dtype=np.uint8), mask=da.zeros((3, 4), dtype=bool))
    with pytest.raises(MaskError, match="bool"):
        otsu_threshold(da.zeros((3, 3), dtype=np.uint8), mask=da.zeros((3, 3), dtype=np.uint8))
    with pytest.raises(MaskError, match="dask array"):
        otsu_threshold(np.zeros((3, 3), np.uint8))
