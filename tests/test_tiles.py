"""Patch coordinates (slidemask.tiles): exact fractions, grids, edge handling, outputs."""

from __future__ import annotations

import json
import math
import os
import pickle
import re
import shutil
import warnings
from fractions import Fraction
from pathlib import Path
from typing import Any

import dask
import dask.array as da
import h5py
import numpy as np
import pyarrow.csv as pcsv
import pyarrow.parquet as pq
import pytest
import shapely.geometry
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from slidemask import open_slide, read_mask, write_zarr
from slidemask.tiles import (
    EmptyTilesWarning,
    TileGridError,
    TileSpec,
    make_grid,
    open_mask,
    tile_areas,
    tile_grid,
    tiles_complete,
    write_clam_h5,
    write_tile_table,
    write_tiles,
)
from slidemask.tiles.fractions import _ChunkAreas

# ---------------------------------------------------------------- brute-force references


def _reference_areas(
    mask: np.ndarray, ds: int, level0_shape: tuple[int, int], xs: np.ndarray, ys: np.ndarray,
    size: int, value: int | None = None,
) -> np.ndarray:
    """Areas by upsampling the mask to level-0 pixels (np.repeat) and counting."""
    hit = mask != 0 if value is None else mask == value
    up = np.repeat(np.repeat(hit, ds, axis=0), ds, axis=1)[: level0_shape[0], : level0_shape[1]]
    out = np.zeros((len(ys), len(xs)))
    for i, y in enumerate(ys.tolist()):
        for j, x in enumerate(xs.tolist()):
            out[i, j] = np.count_nonzero(up[y : y + size, x : x + size])
    return out


def _exact_overlap(p: int, ds: Fraction, lo: int, hi: int) -> Fraction:
    a, b = p * ds, (p + 1) * ds
    return max(Fraction(0), min(b, Fraction(hi)) - max(a, Fraction(lo)))


def _reference_areas_exact(
    mask: np.ndarray, ds: Fraction, level0_shape: tuple[int, int], xs: np.ndarray,
    ys: np.ndarray, size: int,
) -> np.ndarray:
    """Areas by exact rational integration of each mask pixel's overlap with each patch."""
    out = np.zeros((len(ys), len(xs)))
    rows, cols = np.nonzero(mask)
    for i, y in enumerate(ys.tolist()):
        y1 = min(y + size, level0_shape[0])
        wr = {r: _exact_overlap(r, ds, y, y1) for r in set(rows.tolist())}
        for j, x in enumerate(xs.tolist()):
            x1 = min(x + size, level0_shape[1])
            total = Fraction(0)
            for r, c in zip(rows.tolist(), cols.tolist(), strict=True):
                if wr[r]:
                    total += wr[r] * _exact_overlap(c, ds, x, x1)
            out[i, j] = float(total)
    return out


def _chunking(draw: st.DrawFn, n: int) -> tuple[int, ...]:
    """A random chunking of an axis of length n (chunks of 1 to n, irregular)."""
    sizes: list[int] = []
    left = n
    while left:
        step = draw(st.integers(1, left))
        sizes.append(step)
        left -= step
    return tuple(sizes)


@st.composite
def tiling_cases(draw: st.DrawFn) -> dict[str, object]:
    rows, cols = draw(st.integers(1, 24)), draw(st.integers(1, 24))
    seed = draw(st.integers(0, 2**31 - 1))
    density = draw(st.sampled_from([0.0, 0.3, 0.7, 1.0]))
    mask = np.random.default_rng(seed).random((rows, cols)) < density
    ds = draw(st.integers(1, 4))
    # the slide's level 0 may end inside the last mask pixel (a level rounded up)
    level0 = (rows * ds - draw(st.integers(0, ds - 1)), cols * ds - draw(st.integers(0, ds - 1)))
    size = draw(st.integers(1, 30))
    stride = draw(st.integers(1, 30))
    return {
        "mask": mask,
        "ds": ds,
        "level0": level0,
        "size": size,
        "stride": stride,
        "edge": draw(st.sampled_from(["drop", "flag"])),
        "chunks": (_chunking(draw, rows), _chunking(draw, cols)),
        "min_fraction": draw(st.sampled_from([0.0, 0.25, 0.5, 1.0])),
    }


# ---------------------------------------------------------------- exact fractions


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=tiling_cases())
def test_fractions_equal_brute_force_for_any_chunking(case: dict) -> None:
    mask, ds, level0 = case["mask"], case["ds"], case["level0"]
    size, stride, edge = case["size"], case["stride"], case["edge"]
    # the grid, independently: origins j * stride anchored at 0, kept while they fit
    last = level0[1] - size if edge == "drop" else level0[1] - 1
    xs_ref = np.arange(0, max(last + 1, 0), stride)
    ys_ref = np.arange(0, max((level0[0] - size if edge == "drop" else level0[0] - 1) + 1, 0),
                       stride)
    ref = _reference_areas(mask, ds, level0, xs_ref, ys_ref, size) / size**2

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", EmptyTilesWarning)
        table = tile_grid(
            da.from_array(mask, chunks=case["chunks"]), size=size, stride=stride,
            downsample=ds, level0_shape=level0, edge=edge, min_fraction=case["min_fraction"],
        )
    keep_i, keep_j = np.nonzero(ref >= case["min_fraction"])
    np.testing.assert_array_equal(table.x, xs_ref[keep_j])
    np.testing.assert_array_equal(table.y, ys_ref[keep_i])
    # bit for bit: integer weights make every partial sum exact, whatever the chunking
    np.testing.assert_array_equal(table.fraction, ref[keep_i, keep_j])
    np.testing.assert_array_equal(
        table.edge, (table.x + size > level0[1]) | (table.y + size > level0[0])
    )
    if edge == "drop":
        assert not table.edge.any()


@settings(max_examples=60, deadline=None)
@given(
    rows=st.integers(1, 10), cols=st.integers(1, 10), seed=st.integers(0, 2**31 - 1),
    ds=st.sampled_from([Fraction(5, 2), Fraction(7, 3), Fraction(4, 3), Fraction(13, 5),
                        Fraction(1, 2)]),
    size=st.integers(1, 12), stride=st.sampled_from([1.0, 2.5, 3.75, 5.0, 7.125, 9.0]),
    data=st.data(),
)
def test_fractional_downsample_and_stride_match_exact_integration(
    rows: int, cols: int, seed: int, ds: Fraction, size: int, stride: float,
    data: st.DataObject,
) -> None:
    mask = np.random.default_rng(seed).random((rows, cols)) < 0.5
    level0 = (math.floor(rows * ds), math.floor(cols * ds))
    grid = make_grid(size=size, stride=stride, level0_shape=level0, edge="flag")
    chunks = (data.draw(st.integers(1, rows)), data.draw(st.integers(1, cols)))
    areas = tile_areas(da.from_array(mask, chunks=chunks), grid, downsample=float(ds)).compute()
    ref = _reference_areas_exact(mask, ds, level0, grid.xs(), grid.ys(), size)
    np.testing.assert_allclose(areas[0], ref, rtol=0, atol=1e-9 * max(1, size * size))


def test_grid_origins_are_rounded_one_by_one() -> None:
    grid = make_grid(size=3, stride=2.5, level0_shape=(20, 20))
    np.testing.assert_array_equal(grid.xs(), [0, 3, 5, 8, 10, 13, 15])  # floor(k*2.5+0.5)
    assert grid.xs()[-1] + grid.size <= 20


def test_class_map_fractions() -> None:
    rng = np.random.default_rng(3)
    classes = rng.integers(0, 4, size=(30, 40)).astype(np.uint8)
    names = {"tumour": 1, "stroma": 2, "fat": 3}
    table = tile_grid(da.from_array(classes, chunks=(7, 9)), size=8, stride=5, downsample=2,
                      classes=names, min_fraction=0.0)
    grid = table.grid
    total = np.zeros((grid.rows, grid.cols))
    for name, value in names.items():
        ref = _reference_areas(classes, 2, (60, 80), grid.xs(), grid.ys(), 8, value) / 64
        total += ref
        np.testing.assert_array_equal(table[f"fraction_{name}"], ref.ravel())
    np.testing.assert_array_equal(table.fraction, total.ravel())
    assert table.column_names[-3:] == ["fraction_tumour", "fraction_stroma", "fraction_fat"]


def test_class_map_validation() -> None:
    mask = da.zeros((10, 10), dtype=bool, chunks=5)
    with pytest.raises(TileGridError, match="integer"):
        tile_grid(mask, size=4, classes={"a": 1})
    with pytest.raises(TileGridError, match="background"):
        tile_grid(mask.astype(np.uint8), size=4, classes={"a": 0})


# ---------------------------------------------------------------- units and physical grids


def _disc_mask(mask_mpp: float, shape_um: tuple[float, float]) -> np.ndarray:
    """A disc of tissue (radius 300 µm at (500, 600) µm), sampled at pixel centres."""
    rows, cols = (round(s / mask_mpp) for s in shape_um)
    yy, xx = np.mgrid[:rows, :cols]
    yc, xc = (yy + 0.5) * mask_mpp, (xx + 0.5) * mask_mpp
    return ((yc - 500) ** 2 + (xc - 600) ** 2) < 300**2


@pytest.mark.parametrize("units", ["um", "px"])
def test_um_grid_lands_on_the_same_physical_tiles_at_two_pixel_sizes(units: str) -> None:
    shape_um = (1200.0, 1400.0)
    mask = _disc_mask(4.0, shape_um)  # one mask at 4 µm per pixel for both scanners
    tables = []
    for level0_mpp in (0.25, 0.5):
        level0 = (round(shape_um[0] / level0_mpp), round(shape_um[1] / level0_mpp))
        kwargs: dict[str, Any] = (
            {"size": 128.0, "units": "um"} if units == "um" else {"size": 256, "mpp": 0.5}
        )
        tables.append(tile_grid(
            da.from_array(mask, chunks=64), downsample=4.0 / level0_mpp, slide_mpp=level0_mpp,
            level0_shape=level0, min_fraction=0.3, **kwargs,
        ))
    a, b = tables
    assert len(a) == len(b) > 10
    np.testing.assert_array_equal(a.x * 0.25, b.x * 0.5)  # the same µm positions
    np.testing.assert_array_equal(a.y * 0.25, b.y * 0.5)
    assert a.width * 0.25 == b.width * 0.5 == 128.0
    np.testing.assert_array_equal(a.fraction, b.fraction)


def test_um_grid_positions_at_odd_pixel_size_and_different_mask_resolutions() -> None:
    shape_um = (1250.0, 1450.0)  # the last row and column of patches fit at both sizes
    results = []
    for level0_mpp, mask_mpp in ((0.2527, 2.0), (0.5, 4.0)):
        mask = _disc_mask(mask_mpp, shape_um)
        level0 = (math.floor(shape_um[0] / level0_mpp), math.floor(shape_um[1] / level0_mpp))
        table = tile_grid(
            da.from_array(mask, chunks=100), size=100.0, units="um", slide_mpp=level0_mpp,
            downsample=mask_mpp / level0_mpp, level0_shape=level0, min_fraction=0.0,
        )
        # origin k lies within half a level-0 pixel of k * 100 µm
        col = np.rint(table.x * level0_mpp / 100.0)
        assert np.all(np.abs(table.x * level0_mpp - col * 100.0) <= level0_mpp / 2 + 1e-9)
        results.append((col, np.rint(table.y * level0_mpp / 100.0), table.fraction))
    (ca, ra, fa), (cb, rb, fb) = results
    np.testing.assert_array_equal(ca, cb)
    np.testing.assert_array_equal(ra, rb)
    assert np.abs(fa - fb).max() < 0.05  # the same tissue, rasterized at 2 and 4 µm


def test_magnification_picks_size_and_read_level() -> None:
    levels = (1.0, 4.0, 16.0)
    kw: dict[str, Any] = {
        "level0_shape": (10000, 10000), "level0_mpp": 0.25, "level_downsamples": levels
    }
    g20 = make_grid(size=256, magnification=20, **kw)  # 20x = 0.5 µm: 512 level-0 pixels
    assert (g20.size, g20.level, g20.read_size, g20.target_size) == (512, 0, 512, 256)
    g10 = make_grid(size=256, magnification=10, **kw)  # 1 µm: level 1 (downsample 4) exactly
    assert (g10.size, g10.level, g10.read_size) == (1024, 1, 256)
    g5 = make_grid(size=256, magnification=5, **kw)  # 2 µm: level 1 is the nearest below
    assert (g5.size, g5.level, g5.read_size) == (2048, 1, 512)
    assert make_grid(size=256, mpp=0.5, **kw) == g20
    near = make_grid(size=256, mpp=1.0, level0_shape=(100, 100), level0_mpp=0.25,
                     level_downsamples=(1.0, 4.0002))
    assert near.level == 1  # a level downsample a hair above the target still counts


def test_overlap_and_stride() -> None:
    g = make_grid(size=256, overlap=32, magnification=20, level0_shape=(5000, 5000),
                  level0_mpp=0.25)
    assert (g.size, g.step, g.target_overlap) == (512, 448.0, 32)
    with pytest.raises(TileGridError, match="not both"):
        make_grid(size=256, overlap=32, stride=100, level0_shape=(5000, 5000))
    with pytest.raises(TileGridError, match="smaller than size"):
        make_grid(size=256, overlap=256, level0_shape=(5000, 5000))
    with pytest.raises(TileGridError, match="pixel size"):
        make_grid(size=100, units="um", level0_shape=(5000, 5000))
    with pytest.raises(TileGridError, match="not both"):
        make_grid(size=256, mpp=0.5, magnification=20, level0_shape=(50, 50), level0_mpp=0.25)


# ---------------------------------------------------------------- edges and empty slides


def test_edge_drop_and_flag() -> None:
    mask = da.ones((10, 10), dtype=bool, chunks=4)  # level 0: 100 x 100 at downsample 10
    dropped = tile_grid(mask, size=30, downsample=10)
    assert len(dropped) == 9 and not dropped.edge.any()
    assert dropped.x.max() + 30 <= 100
    flagged = tile_grid(mask, size=30, downsample=10, edge="flag", min_fraction=0.0)
    assert len(flagged) == 16
    assert flagged.edge.sum() == 7
    at = {(x, y): f for x, y, f in zip(flagged.x, flagged.y, flagged.fraction, strict=True)}
    assert at[(90, 0)] == pytest.approx(1 / 3)  # 10 of 30 columns inside the slide
    assert at[(90, 90)] == pytest.approx(1 / 9)
    # the default threshold drops the flagged ones here: most of each is outside
    assert len(tile_grid(mask, size=30, downsample=10, edge="flag")) == 9


def test_empty_mask_gives_an_empty_table_and_a_warning(tmp_path: Path) -> None:
    mask = da.zeros((64, 64), dtype=bool, chunks=16)
    with pytest.warns(EmptyTilesWarning, match="mask is empty"):
        table = tile_grid(mask, size=8)
    assert len(table) == 0 and table.x.dtype == np.int64
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", EmptyTilesWarning)
        small = tile_grid(mask, size=100)
    assert small.grid.count == 0
    with pytest.warns(EmptyTilesWarning, match="smaller than one patch"):
        tile_grid(mask, size=100)
    with pytest.warns(EmptyTilesWarning, match="no patch reaches"):
        tile_grid(da.from_array(np.eye(64, dtype=bool), chunks=16), size=8)
    out = write_tile_table(table, tmp_path / "empty", ["clam", "csv", "parquet", "geojson",
                                                       "preview"], mask=mask)
    with h5py.File(out["clam"], "r") as f:
        assert f["coords"].shape == (0, 2)
    assert json.loads(out["geojson"].read_text())["features"] == []
    assert pq.read_table(out["parquet"]).num_rows == 0
    assert out["csv"].read_text().strip() == ",".join(table.column_names)


# ---------------------------------------------------------------- outputs


def _clam_dataset_read(path: Path) -> tuple[int, int, int, list[np.ndarray]]:
    """What CLAM's ``Whole_Slide_Bag_FP`` reads (dataset_modules/dataset_h5.py)."""
    with h5py.File(path, "r") as f:
        dset = f["coords"]
        patch_level = f["coords"].attrs["patch_level"]
        patch_size = f["coords"].attrs["patch_size"]
        length = len(dset)
    coords = []
    for idx in range(length):  # __getitem__
        with h5py.File(path, "r") as hdf5_file:
            coords.append(hdf5_file["coords"][idx])
    return patch_level, patch_size, length, coords


def test_clam_h5_reads_as_clam_reads_it(tmp_path: Path, synthetic_slide: Path) -> None:
    slide = open_slide(synthetic_slide)  # 1536 x 2048 at 0.5 µm, levels halving
    from slidemask.ops.local import threshold, to_gray

    mask = threshold(to_gray(slide.levels[2]), below=220)
    table = tile_grid(mask, size=128, mpp=2.0, slide=slide, min_fraction=0.25)
    assert len(table) > 0
    assert table.level == 2 and table.downsample == slide.downsamples[2]
    path = write_clam_h5(table, tmp_path / "synthetic.h5")
    patch_level, patch_size, length, coords = _clam_dataset_read(path)
    assert (patch_level, patch_size, length) == (2, 128, len(table))
    with h5py.File(path, "r") as f:
        dset = f["coords"]
        assert dset.dtype == np.int64 and dset.shape == (len(table), 2)
        assert dset.maxshape == (None, 2)
        attrs = dict(dset.attrs)
    assert set(attrs) == {"patch_size", "patch_level", "downsample", "downsampled_level_dim",
                          "level_dim", "name", "save_path"}
    assert attrs["patch_size"].dtype == np.int64 and attrs["patch_level"].dtype == np.int64
    np.testing.assert_array_equal(attrs["downsample"], [4.0, 4.0])
    assert attrs["downsample"].dtype == np.float64
    level2 = slide.levels[2].shape
    np.testing.assert_array_equal(attrs["level_dim"], [level2[1], level2[0]])  # (w, h)
    np.testing.assert_array_equal(attrs["downsampled_level_dim"], attrs["level_dim"])
    assert attrs["level_dim"].dtype == np.int64
    assert attrs["name"] == "synthetic"
    # read_region(coord, patch_level, (patch_size, patch_size)) covers the patch exactly
    for coord, x, y in zip(coords, table.x, table.y, strict=True):
        assert tuple(coord) == (x, y)
        assert coord[0] / 4 + patch_size <= level2[1] and coord[1] / 4 + patch_size <= level2[0]


def test_magnification_without_pixel_size_is_a_clear_error(tmp_path: Path) -> None:
    mask = da.ones((100, 100), dtype=bool, chunks=50)
    spec = TileSpec(size=256, magnification=20, formats=["trident"])
    with pytest.raises(TileGridError, match="pixel size"):
        write_tiles(mask, tmp_path / "slideA", spec=spec, downsample=40.0)


def test_trident_layout_with_pixel_size(tmp_path: Path) -> None:
    mask = _stored_mask(tmp_path, np.ones((100, 120), dtype=bool), downsample=40.0)
    spec = TileSpec(size=256, magnification=20, overlap=32, formats=["trident", "clam"])
    out = write_tiles(mask, tmp_path / "out" / "slideA", spec=spec)
    expected = tmp_path / "out" / "20x_256px_32px_overlap" / "patches" / "slideA_patches.h5"
    assert out["trident"] == expected
    with h5py.File(expected, "r") as f:
        attrs = dict(f["coords"].attrs)
        coords = f["coords"][:]
    assert attrs["patch_size"] == 256 and attrs["patch_size_level0"] == 512
    assert attrs["level0_magnification"] == 40 and attrs["target_magnification"] == 20
    assert attrs["overlap"] == 32 and attrs["name"] == "slideA"
    assert (attrs["level0_width"], attrs["level0_height"]) == (4800, 4000)
    assert coords.dtype == np.int64
    assert coords[1, 0] - coords[0, 0] == 512 - 64  # step: (256 - 32) px at 20x


def _stored_mask(tmp_path: Path, mask: np.ndarray, *, downsample: float,
                 name: str = "slideA", level0_mpp: float = 0.25) -> Path:
    rows, cols = mask.shape
    attrs = {"provenance": {
        "downsample": downsample, "mpp": level0_mpp * downsample, "level": 0, "factor": 1,
        "source": {"name": name, "path": f"/slides/{name}.svs",
                   "level0_shape": [round(rows * downsample), round(cols * downsample)],
                   "mpp": level0_mpp},
    }}
    path = tmp_path / f"{name}.zarr"
    write_zarr(da.from_array(mask, chunks=32), path, attrs=attrs)
    return path


def test_stored_mask_supplies_its_frame(tmp_path: Path) -> None:
    disc = _disc_mask(4.0, (1200.0, 1400.0))
    path = _stored_mask(tmp_path, disc, downsample=16.0)
    _, frame = open_mask(path)
    assert (frame.downsample, frame.level0_mpp, frame.name) == (16.0, 0.25, "slideA")
    assert frame.level0_shape == (4800, 5600)
    by_path = tile_grid(path, size=128.0, units="um")
    by_array = tile_grid(read_mask(path), size=128.0, units="um")
    explicit = tile_grid(da.from_array(disc, chunks=50), size=128.0, units="um", downsample=16,
                         slide_mpp=0.25, level0_shape=(4800, 5600))
    for table in (by_path, by_array):
        assert table.name == "slideA"
        np.testing.assert_array_equal(table.x, explicit.x)
        np.testing.assert_array_equal(table.fraction, explicit.fraction)
    assert by_path.width == 512


def test_csv_parquet_and_geojson(tmp_path: Path) -> None:
    classes = np.zeros((40, 60), np.uint8)
    classes[5:30, 5:25] = 1
    classes[10:35, 25:55] = 2
    table = tile_grid(da.from_array(classes, chunks=16), size=40, downsample=4,
                      classes={"tumour": 1, "stroma": 2}, edge="flag", min_fraction=0.2)
    out = write_tile_table(table, tmp_path / "s", ["csv", "parquet", "geojson"])
    csv = pcsv.read_csv(out["csv"])
    assert csv.column_names == table.column_names
    np.testing.assert_array_equal(csv["x"].to_numpy(), table.x)
    np.testing.assert_array_equal(csv["fraction_stroma"].to_numpy(), table["fraction_stroma"])
    parquet = pq.read_table(out["parquet"])
    assert parquet.column_names == table.column_names
    np.testing.assert_array_equal(parquet["fraction"].to_numpy(), table.fraction)
    np.testing.assert_array_equal(parquet["edge"].to_numpy(), table.edge)
    meta = json.loads(parquet.schema.metadata[b"slidemask"])
    assert meta["grid"]["size"] == 40 and meta["classes"] == {"tumour": 1, "stroma": 2}

    features = json.loads(out["geojson"].read_text())["features"]
    assert len(features) == len(table)
    for feature, x, y, ft, fs in zip(features, table.x, table.y, table["fraction_tumour"],
                                     table["fraction_stroma"], strict=True):
        shape = shapely.geometry.shape(feature["geometry"])
        assert shape.is_valid and shape.area == 40 * 40
        assert shape.bounds == (x, y, x + 40, y + 40)
        assert shape.exterior.is_ccw
        props = feature["properties"]
        assert props["objectType"] == "tile"
        assert props["classification"]["name"] == ("tumour" if ft >= fs else "stroma")
        assert props["measurements"]["fraction_tumour"] == ft


def test_preview_png(tmp_path: Path, synthetic_slide: Path) -> None:
    import cv2

    slide = open_slide(synthetic_slide)
    from slidemask.ops.local import threshold, to_gray

    mask = threshold(to_gray(slide.levels[1]), below=220)
    spec = TileSpec(size=64, units="um", formats=["preview"], preview_size=256)
    out = write_tiles(mask, tmp_path / "synthetic", slide=slide, spec=spec, downsample=2.0)
    image = cv2.imread(str(out["preview"]))
    assert image is not None and max(image.shape[:2]) == 256
    fine = TileSpec(size=4, formats=["preview"], preview_size=256, min_fraction=0.0)
    out = write_tiles(mask, tmp_path / "fine", spec=fine, downsample=2.0)
    assert cv2.imread(str(out["preview"])) is not None  # many tiny tiles: a filled overlay


def test_write_tiles_manifest_and_resume_check(tmp_path: Path) -> None:
    path = _stored_mask(tmp_path, _disc_mask(4.0, (1200.0, 1400.0)), downsample=16.0)
    spec = TileSpec.model_validate(
        {"size": 256, "magnification": 20, "formats": ["clam", "csv"], "edge": "flag"}
    )
    stem = tmp_path / "out" / "slideA"
    assert not tiles_complete(stem, spec)
    out = write_tiles(path, stem, spec=spec, extra={"config_hash": "abc"})
    assert set(out) == {"clam", "csv"} and out.count > 0
    assert out["clam"] == tmp_path / "out" / "slideA.tiles.h5"
    record = json.loads(out.manifest.read_text())
    assert record["complete"] and record["count"] == out.count
    assert tiles_complete(stem, spec, extra={"config_hash": "abc"})
    assert not tiles_complete(stem, spec, extra={"config_hash": "other"})
    assert not tiles_complete(stem, spec.model_copy(update={"min_fraction": 0.9}))
    out["csv"].unlink()
    assert not tiles_complete(stem, spec)
    assert not list((tmp_path / "out").glob(".*partial*"))


def test_spec_validation() -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="not both"):
        TileSpec.model_validate({"size": 256, "mpp": 0.5, "magnification": 20})
    with pytest.raises(ValidationError, match="extra"):
        TileSpec.model_validate({"size": 256, "sise": 3})
    with pytest.raises(ValidationError):
        TileSpec.model_validate({"size": 256, "formats": ["tiff"]})
    assert TileSpec(size=256).spec_hash() == TileSpec.model_validate({"size": 256.0}).spec_hash()


def test_chunk_task_pickles_and_runs_on_processes() -> None:
    mask = np.random.default_rng(0).random((40, 40)) < 0.5
    grid = make_grid(size=7, stride=5, level0_shape=(80, 80))
    lazy = tile_areas(da.from_array(mask, chunks=13), grid, downsample=2.0)
    task = _ChunkAreas(grid, 2.0, ((0, 1),), ((0, 1),), None)
    assert pickle.loads(pickle.dumps(task)).grid == grid
    with dask.config.set(scheduler="processes", num_workers=2):
        on_processes = lazy.compute()
    np.testing.assert_array_equal(on_processes, lazy.compute(scheduler="sync"))


# ---------------------------------------------------------------- config, batch and CLI


_TILED_CONFIG = """\
resolution: {level: 1}
masks:
  tissue:
    - gray: {}
    - threshold: {below: 220}
tiles: {size: 64, units: um, min_fraction: 0.05, formats: [clam, csv, parquet]}
"""


def test_config_tiles_section_is_outside_the_mask_hash(tmp_path: Path) -> None:
    from slidemask.config import config_hash, load_config
    from slidemask.errors import ConfigError

    with_tiles = tmp_path / "tiled.yaml"
    with_tiles.write_text(_TILED_CONFIG)
    without = tmp_path / "plain.yaml"
    without.write_text(_TILED_CONFIG.split("tiles:")[0])
    config = load_config(with_tiles)
    assert config.tiles == TileSpec(size=64, units="um", min_fraction=0.05,
                                    formats=["clam", "csv", "parquet"])
    assert config_hash(config) == config_hash(load_config(without))
    bad = tmp_path / "bad.yaml"
    bad.write_text(_TILED_CONFIG.replace("min_fraction", "min_fractoin"))
    with pytest.raises(ConfigError, match="tiles.min_fractoin"):
        load_config(bad)


def test_batch_writes_tiles_beside_masks_and_resumes_them(
    tmp_path: Path, synthetic_slide: Path
) -> None:
    from slidemask.batch import run_batch
    from slidemask.config import load_config

    config_path = tmp_path / "tiled.yaml"
    config_path.write_text(_TILED_CONFIG)
    config = load_config(config_path)
    assert config.tiles is not None
    out = tmp_path / "out"
    with dask.config.set(scheduler="threads"):
        (first,) = run_batch([synthetic_slide], config, out)
    assert first.status == "done", first.error
    assert first.stats["tiles"] > 0
    stem = out / "synthetic"
    for suffix in (".tiles.h5", ".tiles.csv", ".tiles.parquet", ".tiles.json"):
        assert (out / f"synthetic{suffix}").is_file()
    _, patch_size, length, _ = _clam_dataset_read(out / "synthetic.tiles.h5")
    assert (patch_size, length) == (128, first.stats["tiles"])  # 64 µm at 0.5 µm, level 0
    report = json.loads((out / "report.json").read_text())
    assert report["slides"][0]["stats"]["tiles"] == first.stats["tiles"]
    mask_meta = (out / "synthetic.zarr" / "zarr.json").stat().st_mtime_ns

    with dask.config.set(scheduler="threads"):
        (again,) = run_batch([synthetic_slide], config, out)
    assert again.status == "skipped" and again.stats["tiles"] == first.stats["tiles"]

    (out / "synthetic.tiles.csv").unlink()  # as a kill between the mask and its tiles would
    with dask.config.set(scheduler="threads"):
        (resumed,) = run_batch([synthetic_slide], config, out)
    assert resumed.status == "done" and resumed.stats["tiles"] == first.stats["tiles"]
    assert (out / "synthetic.zarr" / "zarr.json").stat().st_mtime_ns == mask_meta  # kept
    assert tiles_complete(stem, config.tiles, extra={"config_hash": first.config_hash})

    finer = config.model_copy(update={"tiles": config.tiles.model_copy(update={"size": 32.0})})
    with dask.config.set(scheduler="threads"):
        (retiled,) = run_batch([synthetic_slide], finer, out)
    assert retiled.status == "done" and retiled.stats["tiles"] > first.stats["tiles"]
    assert (out / "synthetic.zarr" / "zarr.json").stat().st_mtime_ns == mask_meta


def test_cli_tiles_command(tmp_path: Path, synthetic_slide: Path,
                           capsys: pytest.CaptureFixture[str]) -> None:
    from slidemask.cli import main

    config_path = tmp_path / "tiled.yaml"
    config_path.write_text(_TILED_CONFIG.split("tiles:")[0])
    out = tmp_path / "out"
    assert main(["run", str(config_path), "-i", str(synthetic_slide), "-o", str(out), "-q"]) == 0
    assert not (out / "synthetic.tiles.json").exists()
    args = ["tiles", str(config_path), "-i", str(synthetic_slide), "-o", str(out), "-q"]
    assert main(args) == 2  # no tiles: section
    config_path.write_text(_TILED_CONFIG.replace("[clam, csv, parquet]", "[geojson, preview]"))
    assert main(args) == 0
    assert "1 done" in capsys.readouterr().out
    assert json.loads((out / "synthetic.tiles.geojson").read_text())["features"]
    assert (out / "synthetic.tiles.png").is_file()
    assert main(args) == 0
    assert "1 skipped" in capsys.readouterr().out
    missing = ["tiles", str(config_path), "-i", str(synthetic_slide), "-o",
               str(tmp_path / "empty"), "-q"]
    assert main(missing) == 1
    # a slide named like the one the mask was made from gets no tiles from that mask
    other = tmp_path / "elsewhere" / synthetic_slide.name
    other.parent.mkdir()
    shutil.copyfile(synthetic_slide, other)
    capsys.readouterr()
    assert main(["tiles", str(config_path), "-i", str(other), "-o", str(out)]) == 1
    assert "was made from another slide" in capsys.readouterr().err
    # nor from a mask of the slide file as it was before it was replaced
    stat = synthetic_slide.stat()
    try:
        os.utime(synthetic_slide, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
        assert main(args) == 1
        assert "changed since its mask was made" in capsys.readouterr().err
    finally:
        os.utime(synthetic_slide, ns=(stat.st_atime_ns, stat.st_mtime_ns))


@pytest.mark.parametrize("module", ["grid", "fractions", "tiling", "spec", "writers"])
def test_docstring_examples(module: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import doctest
    import importlib

    monkeypatch.setenv("TMPDIR", str(tmp_path))  # write_tiles' example writes a temp folder
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    result = doctest.testmod(importlib.import_module(f"slidemask.tiles.{module}"))
    assert result.failed == 0 and result.attempted > 0


_CLASS_TILES_CONFIG = """\
masks:
  tissue: [gray, {threshold: {below: 220}}]
  dark: [gray, {threshold: {below: 150}}]
output: tissue
classes:
  masks: {tissue: tissue, dark: dark}
  precedence: [dark, tissue]
  values: {dark: 7}
outputs: {ome_zarr: true}
chunk_size: 256
"""


def test_tiles_by_class_from_a_config_read_the_class_map(
    tmp_path: Path, synthetic_slide: Path
) -> None:
    """``tiles: {classes: ...}`` in a config tiles the class map written beside the mask
    (``<name>.ome.zarr/labels/classes``), not the bool mask: the same table as tiling that
    class map with ``tile_grid``."""
    from slidemask.batch import run_batch
    from slidemask.config import config_from_yaml
    from slidemask.tiles.runner import class_map_of

    config = config_from_yaml(
        _CLASS_TILES_CONFIG
        + "tiles: {size: 64, classes: {dark: 7}, min_fraction: 0.2, formats: [csv]}\n"
    )
    (result,) = run_batch([synthetic_slide], config, tmp_path / "out")
    assert result.status == "done", result.error
    table = pcsv.read_csv(tmp_path / "out" / "synthetic.tiles.csv").to_pydict()
    classes = class_map_of(tmp_path / "out" / "synthetic.zarr")
    assert classes.dtype == np.uint8 and 7 in np.unique(classes.compute())
    expected = tile_grid(classes, slide=open_slide(synthetic_slide), size=64,
                         classes={"dark": 7}, min_fraction=0.2,
                         downsample=_mask_downsample(tmp_path))
    assert len(table["x"]) == len(expected) > 0
    assert table["x"] == expected["x"].tolist() and table["y"] == expected["y"].tolist()
    assert table["fraction_dark"] == pytest.approx(expected["fraction_dark"].tolist())


def _mask_downsample(tmp_path: Path) -> float:
    from slidemask.writers.zarr import read_attrs

    return float(read_attrs(tmp_path / "out" / "synthetic.zarr")["provenance"]["downsample"])


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ("outputs: {ome_zarr: false}\n", "classes: tiles by class read the class map"),
        ("", "classes.dark: 3 is not a label value of the class map (dark 7, tissue 1)"),
    ],
)
def test_tiles_by_class_need_the_class_map(extra: str, message: str) -> None:
    from slidemask.config import config_from_yaml
    from slidemask.errors import ConfigError

    text = _CLASS_TILES_CONFIG.replace("outputs: {ome_zarr: true}\n", extra or
                                       "outputs: {ome_zarr: true}\n")
    dark = 3 if not extra else 7
    with pytest.raises(ConfigError, match=re.escape(message)):
        config_from_yaml(text + f"tiles: {{size: 64, classes: {{dark: {dark}}}}}\n")
