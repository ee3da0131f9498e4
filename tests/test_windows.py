"""Halo windows read back from scratch equal the whole-image kernels, for any chunking."""

from __future__ import annotations

import pickle
from pathlib import Path

import cv2
import dask.array as da
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from slidemask.kernels.filters import median_blur as median_kernel
from slidemask.kernels.filters import median_depth
from slidemask.kernels.morphology import binary_morphology, morphology_depth
from slidemask.ops.scratch import map_windows
from slidemask.ops.windows import KernelChain, KernelStep


def _chunking(draw: st.DrawFn, n: int) -> tuple[int, ...]:
    sizes = []
    left = n
    while left:
        size = draw(st.integers(1, left))
        sizes.append(size)
        left -= size
    return tuple(sizes)


@st.composite
def mask_and_chunks(draw: st.DrawFn) -> tuple[np.ndarray, tuple[tuple[int, ...], tuple[int, ...]]]:
    rows = draw(st.integers(1, 40))
    cols = draw(st.integers(1, 40))
    seed = draw(st.integers(0, 2**31))
    density = draw(st.floats(0.05, 0.95))
    mask = np.random.default_rng(seed).random((rows, cols)) < density
    return mask, (_chunking(draw, rows), _chunking(draw, cols))


@settings(deadline=None, max_examples=60)
@given(mask_and_chunks(), st.integers(0, 4), st.sampled_from([3, 5, 7]))
def test_median_then_closing_from_scratch(data, radius, ksize) -> None:  # type: ignore[no-untyped-def]
    mask, chunks = data
    chain = KernelChain((
        KernelStep(median_kernel, median_depth(ksize), {"ksize": ksize}),
        KernelStep(
            binary_morphology,
            morphology_depth("closing", radius),
            {"op": "closing", "radius": radius},
        ),
    ))
    source = da.from_array(mask, chunks=chunks)
    got = map_windows(source, chain, chain.depth, dtype=bool, label="t").compute(
        scheduler="sync"
    )
    expected_median = cv2.medianBlur(mask.astype(np.uint8), ksize).astype(bool)
    # the whole-image kernel is itself proven equal to scikit-image in test_kernels_local.py
    expected = binary_morphology(expected_median, op="closing", radius=radius)
    np.testing.assert_array_equal(got, expected)


def test_windows_pickle(tmp_path: Path) -> None:
    image = np.arange(600, dtype=np.uint8).reshape(20, 30)
    chain = KernelChain((KernelStep(median_kernel, 1, {"ksize": 3}),))
    arr = map_windows(da.from_array(image, chunks=(6, 7)), chain, 1, dtype=np.uint8, label="t")
    clone = pickle.loads(pickle.dumps(arr))
    np.testing.assert_array_equal(clone.compute(), cv2.medianBlur(image, 3))


def test_incompressible_chunks_round_trip_through_scratch(tmp_path: Path) -> None:
    """Noise does not compress: its stored chunks (9 MB each here) read back exactly (LZ4
    once failed on them when left to guess the decoded size)."""
    import dask

    from slidemask import median_blur

    grey = np.random.default_rng(0).integers(0, 256, (6000, 6000), np.uint8)
    with dask.config.set({"temporary-directory": str(tmp_path), "scheduler": "threads"}):
        got = median_blur(da.from_array(grey, chunks=3000), 3).compute()
    np.testing.assert_array_equal(got, cv2.medianBlur(grey, 3))


def test_a_short_scratch_chunk_is_an_error(tmp_path: Path) -> None:
    """A stored chunk that decodes to fewer bytes than its array is refused, not padded."""
    import dask
    import pytest

    from slidemask.ops.scratch import ScratchFolder

    tile = np.arange(1000, dtype=np.uint8).reshape(10, 100)
    with dask.config.set({"temporary-directory": str(tmp_path)}):
        folder = ScratchFolder.new("short")
        folder.write(0, 0, tile)
        np.testing.assert_array_equal(folder.read(0, 0, (10, 100), tile.dtype), tile)
        with pytest.raises(OSError, match="expected 2000"):
            folder.read(0, 0, (20, 100), tile.dtype)
