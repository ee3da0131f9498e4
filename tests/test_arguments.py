"""Public functions given what their docstrings allow, or what they must refuse: numpy arrays
taken as one chunk, numpy scalars as numbers, an empty first chunk, and out-of-range values
refused with a MaskError that names the argument (not a numpy or OpenCV error at compute)."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest
import scipy.ndimage as ndi

import slidemask as sm
from slidemask.errors import MaskError


def _ring() -> np.ndarray:
    ring = np.zeros((7, 8), bool)
    ring[1:6, 1:6] = True
    ring[3, 3] = False
    return ring


@pytest.mark.parametrize(
    "op",
    [
        lambda m: sm.fill_holes(m),
        lambda m: sm.fill_holes(m, max_hole_area=4),
        lambda m: sm.remove_small_objects(m, 3),
        lambda m: sm.keep_largest(m, 1),
        lambda m: sm.label(m),
        lambda m: sm.keep_largest_holes(m, 1),
        lambda m: sm.contour_fill(m),
    ],
)
def test_component_operations_take_a_numpy_array_as_one_chunk(op) -> None:
    ring = _ring()
    np.testing.assert_array_equal(op(ring).compute(), op(da.from_array(ring, chunks=3)).compute())


def test_fill_holes_refuses_a_negative_limit() -> None:
    with pytest.raises(MaskError, match="max_hole_area must be >= 0"):
        sm.fill_holes(da.from_array(_ring(), chunks=3), max_hole_area=-1)
    filled = sm.fill_holes(da.from_array(_ring(), chunks=3), max_hole_area=0).compute()
    np.testing.assert_array_equal(filled, _ring())  # 0: no hole is small enough


def test_a_mask_whose_first_chunk_is_empty_is_written(tmp_path) -> None:
    mask = np.zeros((4, 3), bool)
    mask[1, 2] = True
    lazy = da.from_array(mask, chunks=((4,), (0, 3)))
    np.testing.assert_array_equal(
        sm.read_mask(sm.write_zarr(lazy, tmp_path / "m.zarr")).compute(), mask
    )
    np.testing.assert_array_equal(sm.fill_holes(lazy).compute(), ndi.binary_fill_holes(mask))


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), 0, -1.0, "2", True])
def test_flat_refuses_a_max_diff_that_is_not_a_finite_positive_number(bad) -> None:
    grey = da.ones((6, 6), dtype=np.uint8, chunks=3)
    with pytest.raises(MaskError, match="max_diff must be a finite positive number"):
        sm.flat(grey, 3, bad)


def test_numpy_scalars_are_numbers() -> None:
    grey = da.from_array(np.random.default_rng(0).integers(0, 256, (32, 32), np.uint8),
                         chunks=16)
    np.testing.assert_array_equal(sm.flat(grey, 3, np.float32(2.5)).compute(),
                                  sm.flat(grey, 3, 2.5).compute())
    np.testing.assert_array_equal(sm.sharpness(grey, 4, np.float32(8)).compute(),
                                  sm.sharpness(grey, 4, 8.0).compute())
    np.testing.assert_array_equal(
        sm.sharpness(grey, 4, 8.0, min_detail=np.float32(1)).compute(),
        sm.sharpness(grey, 4, 8.0, min_detail=1.0).compute(),
    )


@pytest.mark.parametrize("bad", [float("inf"), float("nan"), -1, None])
def test_sharpness_refuses_a_min_detail_that_is_not_a_finite_number(bad) -> None:
    grey = da.zeros((16, 16), dtype=np.uint8, chunks=8)
    with pytest.raises(MaskError, match="min_detail must be a finite number >= 0"):
        sm.sharpness(grey, 4, 8.0, min_detail=bad)


def test_class_counts_takes_a_numpy_tissue_mask_and_refuses_another_dtype() -> None:
    classes = np.array([[0, 1, 2], [1, 1, 0]], np.uint8)
    tissue = classes > 0
    expected = sm.class_counts(da.from_array(classes, chunks=1),
                               da.from_array(tissue, chunks=1)).compute()
    np.testing.assert_array_equal(sm.class_counts(classes, tissue).compute(), expected)
    with pytest.raises(MaskError, match="tissue must be a bool mask"):
        sm.class_counts(classes, tissue.astype(np.uint8))


def test_label_and_area_arguments_are_checked() -> None:
    mask = da.zeros((4, 4), dtype=bool, chunks=2)
    with pytest.raises(MaskError, match="dtype must be int32 or int64, got 'bogus'"):
        sm.label(mask, dtype="bogus")
    for area, mpp in ((10.0, "x"), ("a", 0.5), (None, 0.5)):
        with pytest.raises(MaskError, match="must be numbers"):
            sm.area_to_pixels(area, mpp)
    assert sm.area_to_pixels(np.float32(100), np.float32(0.5)) == 400.0


def test_a_huge_morphology_radius_is_refused_naming_it() -> None:
    import dask.array as da

    from slidemask import binary_closing

    with pytest.raises(MaskError, match="radius 1000000000 pixels is too large"):
        binary_closing(da.zeros((10, 10), dtype=bool), 10**9)
