"""Artifact masks and the class map: exact for any chunking, and right on planted artifacts.

Planted artifacts: real H&E tissue from ``shared/slides`` (CMU-1-Small-Region.svs, mirrored
into a 2 x 2 mosaic so that there is room for every artifact, 0.499 um per pixel as the file
states) with a Gaussian-blurred region, a fold (a band whose optical density is multiplied, as
a tissue layer folded over itself), a flat bubble-like patch, pen strokes in four colours
(ink multiplies the light it lets through) and black scan borders. Written as a tiled JPEG TIFF
with the same pixel size, run through ``configs/qc.yaml``; every class of the class map must
reach IoU >= 0.9 against its planted region, and tissue away from the planted regions must
stay tissue.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path

import cv2
import dask
import dask.array as da
import numpy as np
import pytest
import tifffile
import zarr
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy import ndimage

from slidemask.config import config_hash, load_config
from slidemask.errors import ConfigError, MaskError
from slidemask.kernels.artifacts import (
    class_map_kernel,
    flat_kernel,
    pen_ink_kernel,
    sharpness_cells_kernel,
    smooth_sum_kernel,
    straight_band_kernel,
    unpack_cells,
)
from slidemask.ops.artifacts import (
    QC_CLASSES,
    QC_COLORS,
    black,
    class_counts,
    class_map,
    flat,
    pen_ink,
    sharpness,
    straight_bands,
    touching_edge,
)
from slidemask.ops.local import threshold
from slidemask.ops.resample import resample_mask
from slidemask.pipeline import run_slide
from tests.test_tissue_invariance import TRANSFORMS

SLIDES = Path(__file__).parents[2] / "shared" / "slides"
CMU = SLIDES / "CMU-1-Small-Region.svs"
QC_YAML = Path(__file__).parents[1] / "configs" / "qc.yaml"
CMU_MPP = 0.499
CELL = 16  # level-0 pixels per 8 um class-map pixel on CMU-1 (factor 16: 7.984 um)
FOLD_LAYERS = 7

INKS = {  # transmitted fraction of light per channel (HistoQC's pen examples' colours)
    "blue": np.array([29, 68, 188]) / 255,
    "green": np.array([31, 140, 115]) / 255,
    "red": np.array([206, 34, 57]) / 255,
    "black": np.array([22, 20, 18]) / 255,
}


@pytest.fixture(autouse=True)
def _threads():
    with dask.config.set(scheduler="threads"):
        yield


# ---- exact for any chunking --------------------------------------------------------------------


def _chunks(draw: st.DrawFn, n: int) -> tuple[int, ...]:
    sizes: list[int] = []
    while sum(sizes) < n:
        sizes.append(draw(st.integers(1, max(1, n // 2 + 1))))
    sizes[-1] -= sum(sizes) - n
    return tuple(s for s in sizes if s)


@st.composite
def grey_and_chunks(draw: st.DrawFn, cell: int = 1) -> tuple[np.ndarray, tuple, tuple]:
    rows = draw(st.integers(max(3, cell), 90))
    cols = draw(st.integers(max(3, cell), 90))
    seed = draw(st.integers(0, 2**16))
    rng = np.random.default_rng(seed)
    kind = draw(st.sampled_from(["noise", "blobs", "flat"]))
    grey: np.ndarray
    if kind == "noise":
        grey = rng.integers(0, 256, (rows, cols), dtype=np.uint8)
    elif kind == "flat":
        grey = np.full((rows, cols), 200, np.uint8)
        grey[rows // 3 :, cols // 2 :] = rng.integers(0, 256, (rows - rows // 3, cols - cols // 2))
    else:
        grey = cv2.GaussianBlur(rng.integers(0, 256, (rows, cols)).astype(np.uint8), (0, 0), 2)
    return grey, _chunks(draw, rows), _chunks(draw, cols)


SETTINGS = settings(deadline=None, max_examples=25, suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(grey_and_chunks(), st.integers(1, 4).map(lambda k: 2 * k + 1), st.floats(0.5, 6))
def test_flat_is_exact_for_any_chunking(data, ksize, max_diff) -> None:
    grey, rows, cols = data
    whole = flat_kernel(grey, ksize=ksize, max_diff=max_diff)
    got = flat(da.from_array(grey, chunks=(rows, cols)), ksize, max_diff).compute()
    np.testing.assert_array_equal(got, whole)


@pytest.mark.parametrize(("shape", "ksize"), [((700, 500), 11), ((90, 3000), 21), ((613, 1024), 3)])
def test_flat_on_a_large_tile_equals_the_window_definition(shape, ksize) -> None:
    """Large tiles are computed in bands of rows; each pixel still compares with the exact
    mean of its window, the edges replicated."""
    rng = np.random.default_rng(11)
    grey = cv2.GaussianBlur(rng.integers(0, 256, shape, dtype=np.uint8), (0, 0), 1.5)
    r = ksize // 2
    padded = np.pad(grey.astype(np.int64), r, mode="edge")
    sums = np.zeros((shape[0] + 2 * r + 1, shape[1] + 2 * r + 1), np.int64)
    sums[1:, 1:] = padded.cumsum(0).cumsum(1)
    window = (sums[ksize:, ksize:] - sums[:-ksize, ksize:] - sums[ksize:, :-ksize]
              + sums[:-ksize, :-ksize])
    expected = np.abs(grey.astype(np.int64) * ksize * ksize - window) < 2.55 * ksize * ksize
    np.testing.assert_array_equal(flat_kernel(grey, ksize=ksize, max_diff=2.55), expected)


def test_colour_tests_on_a_large_tile_equal_them_row_by_row() -> None:
    """Pen ink (and its black test) and HSV ranges run in bands of rows on a large tile: each
    pixel as alone."""
    rng = np.random.default_rng(12)
    rgb = rng.integers(0, 256, (300, 1500, 3), dtype=np.uint8)
    rgb[::4] //= 5  # dark rows: black ink candidates
    colors = ("blue", "green", "red", "black")
    whole = pen_ink_kernel(rgb, colors=colors)
    rows = np.concatenate([pen_ink_kernel(rgb[i : i + 1], colors=colors) for i in range(300)])
    np.testing.assert_array_equal(whole, rows)
    assert whole.any() and not whole.all()
    from slidemask.kernels.color import hsv_in_range

    for lower, upper in (((100, 80, 30), (128, 255, 255)), ((170, 20, 20), (10, 255, 255))):
        whole = hsv_in_range(rgb, lower=lower, upper=upper)
        rows = np.concatenate([hsv_in_range(rgb[i : i + 1], lower=lower, upper=upper)
                               for i in range(300)])
        np.testing.assert_array_equal(whole, rows)
        assert whole.any() and not whole.all()


@SETTINGS
@given(grey_and_chunks(), st.integers(3, 30), st.integers(0, 3), st.integers(0, 255))
def test_straight_bands_are_exact_for_any_chunking(data, length, width, level) -> None:
    grey, rows, cols = data
    mask = grey < level
    whole = straight_band_kernel(mask, length=length, width=width)
    got = straight_bands(da.from_array(mask, chunks=(rows, cols)), length, width).compute()
    np.testing.assert_array_equal(got, whole)


@SETTINGS
@given(grey_and_chunks(), st.integers(40, 220))
def test_touching_edge_is_exact_for_any_chunking(data, level) -> None:
    """The 4-connected components of the mask that touch the image's edge, by scipy's
    labelling of the whole mask."""
    grey, rows, cols = data
    mask = grey < level
    labels, _ = ndimage.label(mask)  # 4-connected
    edge = np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
    expected = np.isin(labels, edge[edge > 0])
    got = touching_edge(da.from_array(mask, chunks=(rows, cols))).compute()
    np.testing.assert_array_equal(got, expected)


def _sharpness_reference(
    grey: np.ndarray, cell: int, sigma: float, glass: int, min_detail: float,
    relative: bool = True,
) -> np.ndarray:
    """The whole-image kernels, composed in memory."""
    packed = sharpness_cells_kernel(grey, factor=cell, glass=glass)
    detail, contrast, weight = (f.astype(np.int64) for f in unpack_cells(packed, cell))
    weight = np.where(detail >= math.ceil(min_detail * 2 * cell * (cell - 2)), weight, 0)
    num = smooth_sum_kernel(detail * weight, sigma=sigma / cell)
    if relative:
        num *= cell - 1
        den = smooth_sum_kernel(contrast * weight, sigma=sigma / cell) * (cell - 2)
    else:
        den = smooth_sum_kernel(weight, sigma=sigma / cell) * (2 * cell * (cell - 2))
    out = np.zeros(num.shape, np.float32)
    np.divide(num, den, out=out, where=den > 0, casting="unsafe")
    return out


@SETTINGS
@given(st.integers(3, 6).flatmap(lambda c: st.tuples(st.just(c), grey_and_chunks(cell=c))),
       st.floats(2.0, 20.0), st.sampled_from([0, 120, 215, 256]), st.sampled_from([0, 2.0, 9]),
       st.booleans())
def test_sharpness_is_exact_for_any_chunking(cell_and_data, sigma, glass, min_detail,
                                             relative) -> None:
    cell, (grey, rows, cols) = cell_and_data
    whole = _sharpness_reference(grey, cell, sigma, glass, min_detail, relative)
    got = sharpness(da.from_array(grey, chunks=(rows, cols)), cell, sigma, glass=glass,
                    min_detail=min_detail, relative=relative).compute()
    assert got.shape == (grey.shape[0] // cell, grey.shape[1] // cell)
    np.testing.assert_array_equal(got, whole)


def test_a_threshold_of_sharpness_compares_before_the_merge() -> None:
    """sharpness merges its float cells into larger chunks; a threshold of it compares the
    cells before that merge and merges the bool mask (a quarter of the bytes), same values
    and chunks."""
    from slidemask.ops.local import MERGED_ATTR

    rng = np.random.default_rng(5)
    grey = cv2.blur((rng.random((1800, 1650)) * 255).astype(np.uint8), (2, 2))
    cells = sharpness(da.from_array(grey, chunks=300), 3, 6.0)
    unmerged = getattr(cells, MERGED_ATTR)
    assert max(unmerged.chunks[0]) < max(cells.chunks[0])  # the merge this is about
    values = cells.compute()
    for bounds in ({"below": 1.2}, {"above": 1.5}, {"above": 1.0, "below": 1.6}):
        mask = threshold(cells, **bounds)
        assert mask.chunks == cells.chunks
        assert cells.name not in mask.dask.layers  # no float merge in the mask's graph
        expected = np.ones(values.shape, bool)
        if "above" in bounds:
            expected &= values > bounds["above"]
        if "below" in bounds:
            expected &= values < bounds["below"]
        np.testing.assert_array_equal(mask.compute(), expected)


def _kept(where: np.ndarray, margin: int) -> np.ndarray:
    """``where`` grown by ``margin`` cells (Chebyshev), in plain numpy."""
    padded = np.pad(where, margin)
    out = np.zeros_like(where)
    for dy in range(2 * margin + 1):
        for dx in range(2 * margin + 1):
            out |= padded[dy : dy + where.shape[0], dx : dx + where.shape[1]]
    return out


@SETTINGS
@given(st.integers(3, 6).flatmap(lambda c: st.tuples(st.just(c), grey_and_chunks(cell=c))),
       st.floats(2.0, 20.0), st.integers(0, 3), st.integers(0, 2**16))
def test_sharpness_where_is_exact_within_margin(cell_and_data, sigma, margin, seed) -> None:
    cell, (grey, rows, cols) = cell_and_data
    shape = (grey.shape[0] // cell, grey.shape[1] // cell)
    where = np.random.default_rng(seed).random(shape) < 0.05
    expected = np.where(_kept(where, margin), _sharpness_reference(grey, cell, sigma, 215, 2.0),
                        np.float32(0))
    got = sharpness(da.from_array(grey, chunks=(rows, cols)), cell, sigma,
                    where=da.from_array(where, chunks=(max(1, shape[0] // 2), 3)),
                    margin=margin).compute()
    np.testing.assert_array_equal(got, expected)


@pytest.fixture(scope="module")
def pyramid(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small pyramid with 64-pixel tiles (not a multiple of every cell edge)."""
    from slidemask.io.synthetic import write_synthetic_slide

    path = tmp_path_factory.mktemp("pyramid") / "p.ome.tif"
    return write_synthetic_slide(path, (700, 900), tile=64, levels=2, seed=4)


@settings(deadline=None, max_examples=12, suppress_health_check=[
    HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(st.integers(3, 6), st.sampled_from([64, 128, 192, 512]), st.integers(0, 1),
       st.integers(0, 2), st.booleans(), st.integers(0, 2**16))
def test_sharpness_on_a_slide_level_reads_tile_by_tile(
    pyramid: Path, cell: int, chunk: int, level: int, margin: int, gated: bool, seed: int
) -> None:
    from slidemask import open_slide, to_gray
    from slidemask.kernels.color import rgb_to_gray

    slide = open_slide(pyramid, chunk_size=chunk)
    grey = rgb_to_gray(np.asarray(slide.levels[level].compute()))
    shape = (grey.shape[0] // cell, grey.shape[1] // cell)
    lazy = to_gray(slide.levels[level])
    expected = _sharpness_reference(grey, cell, 9.0, 215, 2.0)
    where = None
    if gated:
        where = np.zeros(shape, bool)
        where[np.random.default_rng(seed).integers(0, shape[0], 3),
              np.random.default_rng(seed + 1).integers(0, shape[1], 3)] = True
        expected = np.where(_kept(where, margin), expected, np.float32(0))
    got = sharpness(lazy, cell, 9.0, where=where, margin=margin)
    assert "slidemask-sharpness-cells" in "".join(map(str, got.dask.layers))
    np.testing.assert_array_equal(got.compute(), expected)


def test_sharpness_skips_the_tiles_it_does_not_need(pyramid: Path, monkeypatch) -> None:
    from slidemask import open_slide, to_gray
    from slidemask.io import tiff

    slide = open_slide(pyramid, chunk_size=256)
    decoded = []
    original = tiff._LevelHandle._decode

    def counting(self, page, index, row, col):
        decoded.append((self.level, index))
        return original(self, page, index, row, col)

    monkeypatch.setattr(tiff._LevelHandle, "_decode", counting)
    where = np.zeros((700 // 4, 900 // 4), bool)
    where[2, 2] = True  # one cell near the top-left corner: only the first file tile
    got = sharpness(to_gray(slide.levels[0]), 4, 8.0, where=where, margin=1).compute()
    assert set(decoded) == {(0, 0)}
    assert got[5:, :].max() == 0 and got[:, 5:].max() == 0


@pytest.mark.parametrize(("cell", "grid"), [
    (3, (10, 12)), (4, (10, 12)), (5, (10, 12)), (8, (10, 12)), (17, (4, 3)), (64, (2, 3)),
    (4, (150, 512)),  # 600 x 2048 pixels: computed in bands of 128 rows
])
def test_sharpness_cells_use_only_their_own_pixels(cell: int, grid: tuple[int, int]) -> None:
    rng = np.random.default_rng(3)
    rows, cols = grid
    grey = rng.integers(0, 256, (rows * cell + 2, cols * cell + 1), dtype=np.uint8)
    grey[:cell, :cell] = 255  # one cell of glass
    cells = sharpness_cells_kernel(grey, factor=cell, glass=230)
    assert cells.shape == grid  # the partial cells at the bottom and right are dropped
    detail, contrast, weight = unpack_cells(cells, cell)
    # reference: the in-cell differences, summed per cell, by plain numpy
    g = grey[: rows * cell, : cols * cell].astype(np.int64).reshape(rows, cell, cols, cell)
    dx = np.abs(2 * g[:, :, :, 1:-1] - g[:, :, :, :-2] - g[:, :, :, 2:]).sum(axis=(1, 3))
    dy = np.abs(2 * g[:, 1:-1] - g[:, :-2] - g[:, 2:]).sum(axis=(1, 3))
    ex = np.abs(g[:, :, :, 1:] - g[:, :, :, :-1]).sum(axis=(1, 3))
    ey = np.abs(g[:, 1:] - g[:, :-1]).sum(axis=(1, 3))
    np.testing.assert_array_equal(detail, dx + dy)
    np.testing.assert_array_equal(contrast, ex + ey)
    np.testing.assert_array_equal(weight, (g < 230).sum(axis=(1, 3)))
    for glass, expected in ((0, 0), (256, cell * cell)):  # nothing, or everything, not glass
        assert (unpack_cells(sharpness_cells_kernel(grey, factor=cell, glass=glass), cell)[2]
                == expected).all()
    assert cells.dtype == (np.int32 if cell <= 4 else np.int64)


@SETTINGS
@given(grey_and_chunks(), st.integers(1, 4).map(lambda k: 2 * k + 1), st.floats(0.1, 6))
def test_flat_kernel_is_the_exact_integer_test(data, ksize, max_diff) -> None:
    grey = data[0]
    half = ksize // 2
    padded = np.pad(grey.astype(np.int64), half, mode="edge")
    total = sum(padded[dy : dy + grey.shape[0], dx : dx + grey.shape[1]]
                for dy in range(ksize) for dx in range(ksize))
    expected = np.abs(grey.astype(np.int64) * ksize**2 - total) < max_diff * ksize**2
    np.testing.assert_array_equal(flat_kernel(grey, ksize=ksize, max_diff=max_diff), expected)


@SETTINGS
@given(grey_and_chunks(), st.integers(3, 30), st.integers(0, 3),
       st.sampled_from([40, 128, 230, 250, 256]))
def test_straight_band_kernel_is_the_opening_of_lines(data, length, width, level) -> None:
    mask = data[0] < level  # from almost empty to almost full
    src = mask.view(np.uint8)
    line, across = 2 * (length // 2) + 1, 2 * width + 1
    expected = np.zeros_like(src)
    for along, grow in (((1, line), (across, 1)), ((line, 1), (1, across))):
        grown = cv2.dilate(src, np.ones(grow, np.uint8)) if width else src
        expected |= cv2.morphologyEx(grown, cv2.MORPH_OPEN, np.ones(along, np.uint8))
    expected &= src
    np.testing.assert_array_equal(straight_band_kernel(mask, length=length, width=width),
                                  expected.view(bool))


@SETTINGS
@given(grey_and_chunks(), st.booleans())
def test_class_counts_for_any_chunking(data, with_tissue) -> None:
    grey, rows, cols = data
    classes = (grey % 7).astype(np.uint8)
    tissue = grey > 100
    counts = class_counts(da.from_array(classes, chunks=(rows, cols)),
                          da.from_array(tissue, chunks=(7, 5)) if with_tissue else None)
    expected = np.zeros((2, 256), np.int64)
    inside = tissue if with_tissue else np.zeros_like(tissue)
    expected[0] = np.bincount(classes[~inside], minlength=256)
    expected[1] = np.bincount(classes[inside], minlength=256)
    np.testing.assert_array_equal(counts.compute(), expected)


@SETTINGS
@given(grey_and_chunks())
def test_pen_ink_and_black_are_exact_for_any_chunking(data) -> None:
    grey, rows, cols = data
    rng = np.random.default_rng(int(grey.sum()))
    rgb = rng.integers(0, 256, (*grey.shape, 3), dtype=np.uint8)
    lazy = da.from_array(rgb, chunks=(rows, cols, 3))
    colors = ("blue", "green", "red", "black")
    np.testing.assert_array_equal(pen_ink(lazy).compute(), pen_ink_kernel(rgb, colors=colors))
    hi, lo = rgb.max(axis=2).astype(int), rgb.min(axis=2).astype(int)
    expected = (hi <= 60) & (hi - lo <= 25) & (255 * (hi - lo) <= 150 * hi)
    np.testing.assert_array_equal(black(lazy).compute(), expected)


def test_pen_colours() -> None:
    swatches = np.array([[
        [29, 68, 188], [31, 140, 115], [206, 34, 57], [22, 20, 18],  # HistoQC's inks
        [226, 150, 196], [112, 72, 156], [242, 240, 244],  # eosin, hematoxylin, glass
        [157, 30, 88], [9, 2, 35],  # eosin and hematoxylin four times as dense (a fold)
    ]], dtype=np.uint8)
    assert pen_ink_kernel(swatches, colors=("blue", "green", "red", "black")).tolist() == [
        [True, True, True, True, False, False, False, False, False]
    ]
    assert pen_ink_kernel(swatches, colors=("red",))[0, :4].tolist() == [
        False, False, True, False
    ]


def test_class_map_precedence_and_counts() -> None:
    tissue = np.zeros((4, 5), bool)
    tissue[:, :4] = True
    pen = np.zeros_like(tissue)
    pen[0, :] = True
    blur = np.zeros_like(tissue)
    blur[:2, 2:] = True
    masks = {"tissue": tissue, "pen": pen, "blur": blur & tissue}
    lazy = {k: da.from_array(v, chunks=(3, 2)) for k, v in masks.items()}
    got = class_map(lazy).compute()
    expected = class_map_kernel(pen, blur & tissue, tissue, values=(2, 3, 1))
    np.testing.assert_array_equal(got, expected)
    assert got.tolist()[0] == [2, 2, 2, 2, 2] and got.tolist()[1] == [1, 1, 3, 3, 0]
    # another precedence: blur before pen
    other = class_map(lazy, ["blur", "pen", "tissue"]).compute()
    assert other[0, 2] == QC_CLASSES.index("blur")
    counts = class_counts(da.from_array(got, chunks=2), da.from_array(tissue, chunks=3)).compute()
    assert counts[1, 2] == 4 and counts[0, 2] == 1 and counts[1, 3] == 2 and counts[0, 0] == 3
    with pytest.raises(MaskError, match="precedence must name every class"):
        class_map(lazy, ["pen", "tissue"])
    with pytest.raises(MaskError, match="needs a label value"):
        class_map({"smudge": lazy["pen"]}, ["smudge"])


@pytest.mark.parametrize("scale", [4, 2, 1, 0.5, 1.5])
def test_resample_mask_any_chunking(scale) -> None:
    mask = np.random.default_rng(1).random((37, 45)) > 0.6
    shape = (math.ceil(37 / scale), math.ceil(45 / scale))
    whole = resample_mask(da.from_array(mask), scale, shape).compute()
    got = resample_mask(da.from_array(mask, chunks=(5, 7)), scale, shape).compute()
    np.testing.assert_array_equal(got, whole)
    assert got.shape == shape
    if scale == 4:
        assert got[0, 0] == mask[:4, :4].any()


# ---- planted artifacts in real tissue ----------------------------------------------------------


@dataclass
class Planted:
    """The slide before and after planting, and the planted regions at level 0 (bool)."""

    original: Path
    path: Path
    regions: dict[str, np.ndarray]


def _stroke(rows: int, cols: int, y0: float, x0: int, x1: int, amp: float, width: float
            ) -> tuple[int, np.ndarray]:
    """A sine-shaped marker stroke from column x0 to x1 around row y0, with a soft 16-pixel
    rim: (first row, alpha over the rows it spans)."""
    top = max(0, int(y0 - amp - width))
    bottom = min(rows, int(y0 + amp + width))
    xs = np.arange(cols, dtype=np.float32)
    centre = y0 + amp * np.sin((xs - x0) / (x1 - x0) * 2 * np.pi)
    ys = np.arange(top, bottom, dtype=np.float32)[:, None]
    alpha = np.clip((width / 2 - np.abs(ys - centre[None, :])) / 16 + 0.5, 0, 1)
    alpha[:, :x0] = 0
    alpha[:, x1:] = 0
    return top, alpha


def _write(path: Path, rgb: np.ndarray) -> Path:
    res = 1e4 / CMU_MPP  # pixels per centimetre: the same pixel size as CMU-1
    tifffile.imwrite(path, rgb, tile=(256, 256), photometric="rgb", compression="jpeg",
                     compressionargs={"level": 92}, resolution=(res, res),
                     resolutionunit="CENTIMETER")
    return path


BLUR_FIELD = (2000, 3200, 700, 1700)
"""Rows and columns (level 0) of the planted blur: a 0.6 x 0.5 mm field of dermis."""


def _mosaic(img: np.ndarray) -> np.ndarray:
    """CMU-1 mirrored into a 2 x 2 mosaic (5934 x 4440 pixels)."""
    top = np.concatenate([img, img[:, ::-1]], axis=1)
    return np.ascontiguousarray(np.concatenate([top, top[::-1]], axis=0))


def plant(folder: Path) -> Planted:
    """CMU-1 mirrored into a 2 x 2 mosaic (5934 x 4440 pixels), with artifacts planted."""
    rgb = _mosaic(tifffile.imread(CMU))
    original = _write(folder / "original.tif", rgb)
    rows, cols = rgb.shape[:2]
    out = rgb.copy()
    regions: dict[str, np.ndarray] = {}
    glass = np.percentile(rgb[::7, ::7].reshape(-1, 3), 99, axis=0).astype(np.float32)

    def box(y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        region = np.zeros((rows, cols), bool)
        region[y0:y1, x0:x1] = True
        return region

    # blur: a Gaussian of sigma 2 um (4 level-0 pixels) over a 0.6 x 0.5 mm field of dermis
    y0, y1, x0, x1 = BLUR_FIELD
    crop = rgb[y0 - 40 : y1 + 40, x0 - 40 : x1 + 40]
    out[y0:y1, x0:x1] = cv2.GaussianBlur(crop, (0, 0), 2.0 / CMU_MPP)[40:-40, 40:-40]
    regions["blur"] = box(y0, y1, x0, x1)

    # fold: a band of tissue (0.4 x 0.2 mm) folded over itself several times: optical density
    # (relative to the glass) multiplied by 6, the hue kept
    y0, y1, x0, x1 = 2560, 3360, 3380, 3780
    density = np.clip(out[y0:y1, x0:x1].astype(np.float32) / glass, 1e-3, 1)
    out[y0:y1, x0:x1] = np.clip(glass * density**FOLD_LAYERS, 0, 255).astype(np.uint8)
    regions["fold"] = box(y0, y1, x0, x1)

    # bubble: a round flat patch, 0.4 mm across, lighter than the tissue it covers (half way
    # between the tissue's median colour and the glass), as an air bubble under the coverslip
    cy, cx, radius = 3900, 3250, 420
    yy, xx = np.ogrid[:rows, :cols]
    bubble = (yy - cy) ** 2 + (xx - cx) ** 2 <= radius * radius
    window = rgb[cy - radius : cy + radius, cx - radius : cx + radius]
    stained = window.reshape(-1, 3)[
        cv2.cvtColor(window, cv2.COLOR_RGB2HSV)[..., 1].ravel() > 25
    ]
    out[bubble] = ((np.median(stained, axis=0) + glass) / 2).astype(np.uint8)
    regions["bubble"] = bubble

    # pen: four strokes, 0.3 mm wide, over glass and tissue; ink multiplies the light
    pen = np.zeros((rows, cols), bool)
    for colour, yc, xa, xb in (("blue", 1000, 1900, 4300), ("green", 4700, 100, 2400),
                               ("red", 5350, 2500, 4300), ("black", 1500, 100, 1800)):
        first, alpha = _stroke(rows, cols, yc, xa, xb, 250, 600)
        band = out[first : first + alpha.shape[0]].astype(np.float32)
        band *= 1 - alpha[..., None] * (1 - INKS[colour][None, None, :].astype(np.float32))
        out[first : first + alpha.shape[0]] = np.clip(np.rint(band), 0, 255).astype(np.uint8)
        pen[first : first + alpha.shape[0]] |= alpha > 0.5
    regions["pen"] = pen

    # border: black scan borders along the top edge and the right edge
    border = box(0, 560, 0, cols) | box(0, rows, cols - 480, cols)
    noise = np.random.default_rng(0).integers(0, 12, (int(border.sum()), 3), dtype=np.uint8)
    out[border] = noise + 3
    regions["border"] = border
    # what a later artifact covers belongs to it
    order = ["blur", "fold", "bubble", "pen", "border"]
    for i, name in enumerate(order):
        for later in order[i + 1 :]:
            regions[name] &= ~regions[later]
    return Planted(original, _write(folder / "planted.tif", out), regions)


@dataclass
class QcRun:
    planted: Planted
    classes: np.ndarray  # class map of the planted slide (8 um per pixel)
    before: np.ndarray  # class map of the slide before planting
    out: Path


def _class_map_of(ome: Path) -> np.ndarray:
    return np.asarray(zarr.open_array(ome / "labels" / "classes" / "0", mode="r")[:])


@pytest.fixture(scope="module")
def qc_run(tmp_path_factory: pytest.TempPathFactory) -> QcRun:
    if not CMU.exists():
        pytest.skip("shared/slides not present")
    folder = tmp_path_factory.mktemp("planted")
    planted = plant(folder)
    config = load_config(QC_YAML)
    out = folder / "qc"
    with dask.config.set(scheduler="threads"):
        for path in (planted.original, planted.path):
            result = run_slide(path, config, out)
            assert result.status == "done", result.error
    return QcRun(planted, _class_map_of(out / "planted.ome.zarr"),
                 _class_map_of(out / "original.ome.zarr"), out)


def _cells(region: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """A level-0 region on the 8 um grid: cells more than half inside it."""
    rows, cols = shape
    block = region[: rows * CELL, : cols * CELL].reshape(rows, CELL, cols, CELL)
    return block.mean(axis=(1, 3)) > 0.5


def test_written_outputs_equal_the_masks_built_in_memory(qc_run: QcRun) -> None:
    """The runner stores the masks packed one bit each and reads the output mask and the class
    map through lookup tables: the same as building them from the masks directly."""
    from slidemask import open_slide, read_mask
    from slidemask.pipeline import build_class_map, build_mask

    config = load_config(QC_YAML)
    slide = open_slide(qc_run.planted.path)
    with dask.config.set(scheduler="threads"):
        classes = build_class_map(slide, config)[0].compute()
        mask = build_mask(slide, config)[0].compute()
    np.testing.assert_array_equal(qc_run.classes, classes)
    np.testing.assert_array_equal(read_mask(qc_run.out / "planted.zarr").compute(), mask)
    assert len(np.unique(classes)) >= 5  # tissue, background and artifacts: a real test


@pytest.mark.parametrize("name", ["pen", "blur", "fold", "bubble", "border"])
def test_planted_artifacts_are_found(qc_run: QcRun, name: str) -> None:
    classes, before = qc_run.classes, qc_run.before
    truth = _cells(qc_run.planted.regions[name], classes.shape)
    if name in ("blur", "fold", "bubble"):  # judged on tissue: the tissue the slide had
        truth &= before == QC_CLASSES.index("tissue")
    found = classes == QC_CLASSES.index(name)
    iou = (truth & found).sum() / (truth | found).sum()
    assert iou >= 0.9, f"{name}: IoU {iou:.3f}"


def test_tissue_away_from_the_artifacts_stays_tissue(qc_run: QcRun) -> None:
    classes, before = qc_run.classes, qc_run.before
    planted = np.zeros(classes.shape, bool)
    for region in qc_run.planted.regions.values():
        planted |= _cells(region, classes.shape)
    near = cv2.dilate(planted.view(np.uint8), np.ones((9, 9), np.uint8)).astype(bool)  # 32 um
    tissue = (before == QC_CLASSES.index("tissue")) & ~near
    assert tissue.sum() > 10_000
    assert (classes[tissue] == QC_CLASSES.index("tissue")).mean() >= 0.99
    # the unplanted slide shows (almost) no artifact at all
    assert np.isin(before, [0, 1]).mean() >= 0.999


@pytest.mark.parametrize("name", ["CMU-1-Small-Region.svs", "tcga-cr-7395-01a-01-ts1.svs"])
def test_no_bubbles_along_the_tissue_edge(tmp_path: Path, name: str) -> None:
    """Neither H&E scan has a bubble. Flat glass grown by 32 um once reached the tissue's
    edge pixels, part glass, and made one-pixel bubbles of them (13 on CMU-1, 3 on the TCGA
    frozen section); bubbles are not judged on glass or the pixel beside it."""
    path = SLIDES / name
    if not path.exists():
        pytest.skip("shared/slides not present")
    config = load_config(QC_YAML).model_copy(update={"default_mpp": 0.5})  # TCGA states none
    with dask.config.set(scheduler="threads"):
        result = run_slide(path, config, tmp_path)
    assert result.status == "done", result.error
    classes = _class_map_of(tmp_path / (path.stem + ".ome.zarr"))
    assert (classes == QC_CLASSES.index("tissue")).sum() > 5_000
    assert not (classes == QC_CLASSES.index("bubble")).any()


SCANNER_SHIFTS = {  # the tissue-invariance test's own transforms
    name: TRANSFORMS[name]
    for name in ("white balance +10 % R, -10 % B", "white balance -10 % R, +10 % B", "gamma 0.8")
}


@pytest.mark.parametrize("shift", sorted(SCANNER_SHIFTS))
def test_planted_artifacts_are_found_under_another_scanners_colours(
    tmp_path: Path, shift: str
) -> None:
    """The planted slide and its original as another scanner would give them: every class
    keeps IoU >= 0.9 (the fold 0.85 under a gamma, which scales optical density), and the
    unplanted slide shows (almost) no artifact. Without white balancing the pen colours by
    the slide's glass, red 10 % up made eosin red ink (IoU 0.61, 11 % of the slide)."""
    if not CMU.exists():
        pytest.skip("shared/slides not present")
    planted = plant(tmp_path)
    transform = SCANNER_SHIFTS[shift]
    out = tmp_path / "qc"
    config = load_config(QC_YAML)
    for name, source in (("before", planted.original), ("after", planted.path)):
        shifted = _write(tmp_path / f"{name}.tif", transform(tifffile.imread(source)))
        result = run_slide(shifted, config, out)
        assert result.status == "done", result.error
    before, classes = _class_map_of(out / "before.ome.zarr"), _class_map_of(out / "after.ome.zarr")
    assert np.isin(before, [0, 1]).mean() >= 0.999
    for name in ("pen", "blur", "fold", "bubble", "border"):
        truth = _cells(planted.regions[name], classes.shape)
        if name in ("blur", "fold", "bubble"):
            truth &= before == QC_CLASSES.index("tissue")
        found = classes == QC_CLASSES.index(name)
        iou = (truth & found).sum() / (truth | found).sum()
        assert iou >= (0.85 if name == "fold" and "gamma" in shift else 0.9), \
            f"{shift}: {name} IoU {iou:.3f}"


def test_blur_is_found_on_a_faint_stain_and_only_there(tmp_path: Path) -> None:
    """The same tissue as a faint stain (optical density relative to the glass scaled by
    0.35, as pale as the synthetic faint stain is to its H&E): a Gaussian blur of sigma 1.5 um
    (what spoils a 0.5 um patch, less than the 2 um planted above) is found, and the sharp
    faint tissue is not called blurred. IoU 0.85: the edge of a blurred field that the local
    average mixes with its sharp surroundings is a larger share of it than at 2 um."""
    if not CMU.exists():
        pytest.skip("shared/slides not present")
    img = tifffile.imread(CMU)
    glass = np.percentile(img[::7, ::7].reshape(-1, 3), 99, axis=0).astype(np.float32)
    pale = np.clip(img.astype(np.float32) / glass, 1e-3, 1) ** 0.35 * glass
    rgb = _mosaic(pale.astype(np.uint8))
    y0, y1, x0, x1 = BLUR_FIELD
    blurred = rgb.copy()
    crop = rgb[y0 - 40 : y1 + 40, x0 - 40 : x1 + 40]
    blurred[y0:y1, x0:x1] = cv2.GaussianBlur(crop, (0, 0), 1.5 / CMU_MPP)[40:-40, 40:-40]
    region = np.zeros(rgb.shape[:2], bool)
    region[y0:y1, x0:x1] = True
    config = load_config(QC_YAML)
    out = tmp_path / "qc"
    for name, image in (("sharp", rgb), ("blurred", blurred)):
        result = run_slide(_write(tmp_path / f"{name}.tif", image), config, out)
        assert result.status == "done", result.error
    sharp, found = _class_map_of(out / "sharp.ome.zarr"), _class_map_of(out / "blurred.ome.zarr")
    tissue = sharp == QC_CLASSES.index("tissue")
    assert tissue.sum() > 10_000  # the faint tissue is found
    blur = QC_CLASSES.index("blur")
    assert (sharp == blur).sum() <= 0.005 * tissue.sum()
    truth = _cells(region, found.shape) & tissue
    iou = (truth & (found == blur)).sum() / (truth | (found == blur)).sum()
    assert iou >= 0.85, f"blur IoU {iou:.3f}"


def test_qc_outputs(qc_run: QcRun) -> None:
    out, classes = qc_run.out, qc_run.classes
    # the mask is the class map's tissue
    mask = np.asarray(zarr.open_array(out / "planted.zarr", mode="r")[:])
    np.testing.assert_array_equal(mask, classes == 1)
    # OME-Zarr: ome-zarr-models validates it; ome-zarr-py's reader gives names and colours
    models = pytest.importorskip("ome_zarr_models.v05")
    image = models.Image.from_zarr(zarr.open_group(out / "planted.ome.zarr", mode="r"))
    assert image.labels is not None and image.labels.label_paths[-1] == "classes"
    label = image.labels.get_image_labels_group("classes").attributes.ome.image_label
    names = {p.label_value: p.model_dump()["name"] for p in label.properties}
    assert names == dict(enumerate(QC_CLASSES))
    assert {c.label_value for c in label.colors} == set(range(7))
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Label, Reader

    nodes = [n for n in Reader(parse_url(str(out / "planted.ome.zarr")))() if n.first(Label)]
    (node,) = [n for n in nodes if n.metadata["name"] == "classes"]
    assert node.metadata["properties"][2] == {"name": "pen"}
    # GeoJSON: one QuPath classification per class present
    features = json.loads((out / "planted.geojson").read_text())["features"]
    found = {f["properties"]["classification"]["name"] for f in features}
    assert found == {name.capitalize() for name in QC_CLASSES[1:]}  # QuPath's Tissue, ...
    # summary: area and share of tissue per class
    summary = json.loads((out / "planted.json").read_text())["classes"]
    assert list(summary) == list(QC_CLASSES)
    mpp = json.loads((out / "planted.json").read_text())["mpp"]
    for value, name in enumerate(QC_CLASSES):
        pixels = int((classes == value).sum())
        assert summary[name]["pixels"] == pixels
        assert summary[name]["area_mm2"] == pytest.approx(pixels * mpp**2 / 1e6)
    shares = [summary[n]["fraction_of_tissue"] for n in QC_CLASSES]
    assert sum(shares) == pytest.approx(1.0) and shares[QC_CLASSES.index("pen")] > 0.01
    # the mask's 8-connected components: counted from the class map's tissue features
    components = json.loads((out / "planted.json").read_text())["components"]
    assert components == ndimage.label(mask, structure=np.ones((3, 3)))[1] > 1
    tissue_features = [f for f in features
                       if f["properties"]["classification"]["name"] == "Tissue"]
    assert components == len(tissue_features)
    # preview: the slide at 1024 pixels on its longest side, class colours, a legend
    preview = cv2.imread(str(out / "planted.png"))
    assert preview is not None
    rows, cols = preview.shape[:2]
    assert max(rows, cols) >= 1024 and cols > rows * 4440 / 5934 + 200  # room for the legend
    pen_colour = np.array(QC_COLORS["pen"][:3][::-1])  # BGR
    assert (np.abs(preview.astype(int) - pen_colour).sum(axis=2) < 30).any()


# ---- configuration: per-mask resolution, classes ----------------------------------------------


MIXED = """
resolution: {mpp: 8}
masks:
  dark:
    - gray: {}
    - threshold: {below: 200}
  fine:
    resolution: {mpp: 2}
    steps:
      - gray: {}
      - threshold: {below: 150}
output: "dark & ~fine"
"""


def test_a_mask_at_its_own_resolution(synthetic_slide: Path) -> None:
    from slidemask import image_at, open_slide, select_resolution, threshold, to_gray
    from slidemask.config import config_from_yaml
    from slidemask.pipeline import build_mask

    slide = open_slide(synthetic_slide)
    config = config_from_yaml(MIXED)
    mask, provenance = build_mask(slide, config)
    coarse = select_resolution(slide, mpp=8)
    fine = select_resolution(slide, mpp=2)
    dark = threshold(to_gray(image_at(slide, coarse)), below=200)
    small = threshold(to_gray(image_at(slide, fine)), below=150)
    moved = resample_mask(small, coarse.downsample / fine.downsample, dark.shape)
    np.testing.assert_array_equal(mask.compute(), (dark & ~moved).compute())
    assert provenance["mask_resolutions"]["fine"]["mpp"] == fine.mpp
    assert provenance["masks"]["fine"]["resolution"] == {"level": None, "mpp": 2.0}


def test_configs_without_the_new_keys_keep_their_form() -> None:
    from slidemask.config import config_from_yaml

    config = config_from_yaml("masks: {t: [gray, {threshold: {below: 9}}]}")
    canonical = config.canonical()
    assert set(canonical) == {"resolution", "masks", "output", "chunk_size"}
    assert canonical["masks"] == {"t": [{"gray": {}}, {"threshold": {"above": None, "below": 9.0}}]}
    with_classes = config_from_yaml(
        "masks: {t: [gray, {threshold: {below: 9}}]}\nclasses: {masks: {tissue: t}}"
    )
    assert with_classes.canonical()["classes"] == {"masks": {"tissue": "t"}}
    assert config_hash(with_classes) != config_hash(config)


@pytest.mark.parametrize(("text", "message"), [
    ("masks: {t: {resolution: {mpp: 2}, steps: [gray, {threshold: {abve: 1}}]}}",
     "masks.t.steps[1].threshold.abve: unknown key (allowed: above, below)"),
    ("masks: {t: {resolutoin: {mpp: 2}, steps: [gray, {threshold: {above: 1}}]}}",
     "masks.t.resolutoin: unknown key (allowed: resolution, steps)"),
    ("masks: {t: [gray, {threshold: {above: 1}}]}\nclasses: {masks: {tissue: x}}",
     "classes: masks.tissue: unknown mask 'x'"),
    ("masks: {t: [gray, {threshold: {above: 1}}]}\nclasses: {masks: {smudge: t}}",
     "give precedence: for classes outside the built-in order"),
    ("masks: {t: [gray, {threshold: {above: 1}}]}\nclasses: {masks: {tissue: t, pen: t}, "
     "precedence: [pen]}", "precedence must name every class once"),
])
def test_config_errors_name_the_key(text: str, message: str) -> None:
    from slidemask.config import config_from_yaml

    with pytest.raises(ConfigError, match=re.escape(message)):
        config_from_yaml(text)


# ---- blur judged only where it can change an output --------------------------------------------


def _expressions() -> st.SearchStrategy[str]:
    names = st.sampled_from(["a", "b", "c", "x"])
    return st.recursive(
        names,
        lambda inner: st.one_of(
            inner.map(lambda e: f"~({e})"),
            st.tuples(inner, inner).map(lambda t: f"({t[0]}) & ({t[1]})"),
            st.tuples(inner, inner).map(lambda t: f"({t[0]}) | ({t[1]})"),
        ),
        max_leaves=8,
    )


@SETTINGS
@given(_expressions(), st.integers(0, 2**16))
def test_boolean_difference_is_where_the_mask_changes_the_expression(text, seed) -> None:
    from slidemask.config import parse_expression
    from slidemask.ops.relevance import boolean_difference

    expr = parse_expression(text)
    rng = np.random.default_rng(seed)
    masks = {n: rng.random((6, 7)) < 0.5 for n in "abc"}
    changes = (expr.evaluate({**masks, "x": np.ones((6, 7), bool)})
               != expr.evaluate({**masks, "x": np.zeros((6, 7), bool)}))
    difference = boolean_difference(expr, "x")
    if isinstance(difference, bool):
        assert (changes == difference).all()
    else:
        assert "x" not in difference.names()
        np.testing.assert_array_equal(difference.evaluate(masks), changes)


GATED = """
resolution: {downsample: %s}
masks:
  tissue: [gray, {threshold: {below: 200}}]
  glass: [gray, {threshold: {above: 215}}]
  blur:
    resolution: {level: 0}
    steps:
      - gray: {}
      - sharpness: {cell: 4, sigma: 8}
      - threshold: {below: %s}
      - opening: {radius: 2}
output: "tissue & ~(blur & ~glass)"
classes:
  masks: {tissue: tissue, blur: "blur & tissue & ~glass"}
"""


@pytest.mark.parametrize(("downsample", "below"), [(4, 15), (8, 15), (4, 40)])
def test_blur_judged_only_where_it_matters_gives_the_same_outputs(
    pyramid: Path, downsample: int, below: int
) -> None:
    """The sharpness of the tiles where no output reads the blur mask is left out (they are
    not even decoded); the output mask and the class map are those of the full computation."""
    from slidemask import (
        binary_opening,
        image_at,
        open_slide,
        select_resolution,
        threshold,
        to_gray,
    )
    from slidemask.config import config_from_yaml, parse_expression
    from slidemask.io import tiff
    from slidemask.ops.relevance import gate_arguments
    from slidemask.pipeline import build_class_map, build_mask

    config = config_from_yaml(GATED % (downsample, below))
    slide = open_slide(pyramid, chunk_size=128)
    working = select_resolution(slide, downsample=downsample)
    grey = to_gray(image_at(slide, working))
    masks = {"tissue": threshold(grey, below=200), "glass": threshold(grey, above=215)}
    level0 = to_gray(slide.levels[0])
    gate = gate_arguments(
        config, "blur", 1, {"cell": 4}, masks, image_shape=level0.shape, downsample=1.0,
        mpp=slide.mpp, working_downsample=working.downsample,
        working_shape=masks["tissue"].shape,
    )
    assert gate["margin"] == 4  # the opening by a disk of radius 2 looks 4 cells away
    outputs = {}
    decoded: list[int] = []
    original = tiff._LevelHandle._decode

    def counting(self, page, index, row, col):
        if self.level == 0:
            decoded.append(index)
        return original(self, page, index, row, col)

    for gated in (False, True):
        decoded.clear()
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(tiff._LevelHandle, "_decode", counting)
            cells = sharpness(level0, 4, 8.0, **(gate if gated else {}))
            blur = binary_opening(threshold(cells, below=below), 2)
            blur = resample_mask(blur, working.downsample / 4, masks["tissue"].shape)
            both = {**masks, "blur": blur}
            outputs[gated] = (
                config.expression.evaluate(both).compute(),
                class_map({n: parse_expression(t).evaluate(both)
                           for n, t in config.classes.masks.items()}).compute(),
                len(set(decoded)),
            )
    mask, classes, read = outputs[False]
    np.testing.assert_array_equal(outputs[True][0], mask)
    np.testing.assert_array_equal(outputs[True][1], classes)
    assert outputs[True][2] < read  # tiles with no tissue within reach were not decoded
    # the same as the configuration runner computes it
    np.testing.assert_array_equal(build_mask(slide, config)[0].compute(), mask)
    np.testing.assert_array_equal(build_class_map(slide, config)[0].compute(), classes)


# ---- expressions and the class map of packed masks, by lookup ----------------------------------


@SETTINGS
@given(st.lists(_expressions(), min_size=1, max_size=3), grey_and_chunks(), st.booleans())
def test_lookup_of_packed_masks_is_the_expression_for_any_chunking(texts, data, wide) -> None:
    from slidemask.config import parse_expression
    from slidemask.ops.packed import bits_table, class_table, lookup_bits

    grey, rows, cols = data
    names = ["a", "b", "c", "x"] + (["p", "q", "r", "s", "t"] if wide else [])
    rng = np.random.default_rng(int(grey.sum()))
    planes = {n: rng.random(grey.shape) < 0.5 for n in names}
    dtype = np.uint16 if wide else np.uint8
    bits = sum((planes[n].astype(dtype) << dtype(i)) for i, n in enumerate(names)).astype(dtype)
    lazy = da.from_array(bits, chunks=(rows, cols))
    exprs = [parse_expression(t) for t in texts]
    for expr in exprs:
        got = lookup_bits(lazy, bits_table(names, expr.evaluate)).compute()
        np.testing.assert_array_equal(got, expr.evaluate(planes))
    classes = {f"k{i}": e.evaluate for i, e in enumerate(exprs)}
    order = list(reversed(classes))
    values = {name: 10 + i for i, name in enumerate(classes)}
    got = lookup_bits(lazy, class_table(names, classes, order, values)).compute()
    expected = class_map_kernel(*[classes[n](planes) for n in order],
                                values=[values[n] for n in order])
    np.testing.assert_array_equal(got, expected)


def _stored(masks: dict[str, np.ndarray], chunks: tuple[int, int], folder: Path
            ) -> dict[str, da.Array]:
    """Each mask stored to scratch and read back, as the configuration runner stores them."""
    from slidemask.ops.scratch import stored_reads, stores

    out = {}
    with dask.config.set({"temporary-directory": str(folder)}):
        for name, value in masks.items():
            lazy = da.from_array(value, chunks=chunks)
            grid, scratch = stores(lazy, f"mask-{name}")
            out[name] = stored_reads(scratch, grid, lazy, label=f"mask-{name}")
    return out


@SETTINGS
@given(st.lists(_expressions(), min_size=1, max_size=2), grey_and_chunks())
def test_stored_masks_read_one_at_a_time_give_the_expression_for_any_chunking(
    tmp_path_factory, texts, data
) -> None:
    from slidemask.config import parse_expression
    from slidemask.ops.packed import evaluate_stored, pack_stored

    grey, rows, cols = data
    names = ["a", "b", "c", "x"]
    rng = np.random.default_rng(int(grey.sum()))
    planes = {n: rng.random(grey.shape) < 0.5 for n in names}
    stored = _stored(planes, (rows, cols), tmp_path_factory.mktemp("scratch"))
    bits = pack_stored([stored[n] for n in names])
    assert bits is not None and bits.dtype == np.uint8
    expected_bits = sum(planes[n].astype(np.uint8) << np.uint8(i) for i, n in enumerate(names))
    np.testing.assert_array_equal(bits.compute(), expected_bits)
    for text in texts:
        expr = parse_expression(text)
        used = {n: stored[n] for n in names if n in expr.names()}
        got = evaluate_stored(expr.evaluate, used)
        if len(used) < 2:  # one mask is read as it is
            assert got is None
            continue
        assert got is not None and got.chunks == stored["a"].chunks
        np.testing.assert_array_equal(got.compute(), expr.evaluate(planes))
    # masks not read back from scratch are left to dask
    assert pack_stored([da.from_array(planes["a"])]) is None
    assert evaluate_stored(lambda m: m["a"], {"a": da.from_array(planes["a"])}) is None


def test_stored_masks_folded_hold_one_mask_chunk_at_a_time(tmp_path: Path) -> None:
    """Eight stored masks combined per chunk: read one by one into the packed bits, a task
    holds about three chunks' worth; as a dask expression, all eight chunks are read first."""
    import tracemalloc

    from slidemask.config import parse_expression
    from slidemask.ops.packed import evaluate_stored
    from slidemask.ops.scratch import release

    names = [f"m{i}" for i in range(8)]
    rng = np.random.default_rng(0)
    planes = {n: rng.random((1024, 1024)) < 0.5 for n in names}
    expr = parse_expression("m0 & ~(m1 | m2 | (m3 & ~m4) | ((m5 | m6) & ~m7))")
    peaks = {}
    # the first compute imports modules: not traced
    once = _stored({"m": planes["m0"], "n": planes["m1"]}, (1024, 1024), tmp_path)
    evaluate_stored(lambda m: m["m"] & m["n"], once).compute(  # type: ignore[union-attr]
        scheduler="sync")
    for folded in (True, False):
        stored = _stored(planes, (1024, 1024), tmp_path)
        lazy = evaluate_stored(expr.evaluate, stored) if folded else expr.evaluate(stored)
        assert lazy is not None
        tracemalloc.start()
        try:
            result = lazy.compute(scheduler="sync")
            peaks[folded] = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        np.testing.assert_array_equal(result, expr.evaluate(planes))
        release(lazy)
    chunk = 1024 * 1024  # bytes of one bool chunk
    assert peaks[True] < 4.5 * chunk
    assert peaks[False] > 8 * chunk


@pytest.mark.parametrize("failing", ["write_class_geojson", "write_ome_labels"])
def test_a_class_map_output_that_fails_leaves_nothing_complete(tmp_path, monkeypatch,
                                                                failing) -> None:
    """The class map's GeoJSON is traced in a thread beside the OME-Zarr labels: either
    failing fails the slide, with no output at a final name and no scratch left."""
    import slidemask.pipeline as pipeline
    from slidemask.config import config_from_yaml

    rgb = np.full((600, 700, 3), 240, np.uint8)
    rgb[100:400, 150:500] = (150, 60, 120)  # tissue
    rgb[200:260, 200:300] = (20, 20, 20)  # dark: a second class
    slide = tmp_path / "slide.tif"
    tifffile.imwrite(slide, rgb, tile=(256, 256), photometric="rgb",
                     resolution=(1e4 / 2.0, 1e4 / 2.0), resolutionunit="CENTIMETER")
    config = config_from_yaml(
        "masks:\n  tissue: [gray, {threshold: {below: 200}}]\n"
        "  fold: [gray, {threshold: {below: 60}}]\n"
        "output: tissue & ~fold\n"
        "classes: {masks: {tissue: tissue, fold: fold}}\n"
        "outputs: {ome_zarr: true, geojson: true, preview: true, summary: true}\n"
    )
    done = run_slide(slide, config, tmp_path / "ok")
    assert done.status == "done", done.error
    assert {p.name for p in (tmp_path / "ok").iterdir()} >= {
        "slide.zarr", "slide.ome.zarr", "slide.geojson", "slide.png", "slide.json"}
    features = json.loads((tmp_path / "ok" / "slide.geojson").read_text())["features"]
    assert {f["properties"]["classification"]["name"] for f in features} >= {"Tissue"}

    def boom(*args: object, **kwargs: object) -> None:
        raise RuntimeError(f"{failing} failed")

    monkeypatch.setattr(pipeline, failing, boom)
    out = tmp_path / "failed"
    result = run_slide(slide, config, out)
    assert result.status == "failed"
    assert f"{failing} failed" in str(result.error)
    # nothing at a final name, no scratch folder (hidden) left beside them
    assert not out.exists() or sorted(p.name for p in out.iterdir()) == []
