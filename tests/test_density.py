"""Optical density and the slide-wide glass estimate: any chunking gives the whole-image answer.

References run on the whole numpy array: the kernels of slidemask.kernels.density for the
optical density (themselves checked against the formula in float64), and
``numpy.percentile(..., method="inverted_cdf")`` of the non-white pixels for the background.
"""

from __future__ import annotations

from itertools import pairwise
from pathlib import Path

import dask
import dask.array as da
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from slidemask.config import config_from_yaml
from slidemask.errors import ConfigError, MaskError
from slidemask.io import open_slide
from slidemask.kernels.density import (
    background_from_histograms,
    channel_histograms,
    optical_density_kernel,
    white_balance_kernel,
)
from slidemask.ops.density import background_estimate, optical_density, white_balance
from slidemask.ops.resample import image_at
from slidemask.pipeline import build_mask, working_resolution


@pytest.fixture(autouse=True)
def _sync_scheduler():
    with dask.config.set(scheduler="sync"):
        yield


# ---- references and strategies ---------------------------------------------------------------


def reference_background(
    image: np.ndarray, percentile: float = 99.0, floor: float | None = None
) -> np.ndarray:
    top = int(np.iinfo(image.dtype).max)
    rgb = image[..., :3].reshape(-1, 3)
    values = rgb[rgb.min(axis=1) < top - top // 128]
    if not len(values):
        return np.full(3, float(top))
    estimate = np.percentile(values, percentile, axis=0, method="inverted_cdf")
    if estimate.max() < 0.25 * top:
        raise MaskError("dark")
    return np.maximum(estimate.astype(np.float64), 200 / 255 * top if floor is None else floor)


@st.composite
def axis_chunks(draw: st.DrawFn, n: int) -> tuple[int, ...]:
    if n == 1 or draw(st.integers(0, 4)) == 0:
        return (n,)
    cuts = sorted(set(draw(st.lists(st.integers(1, n - 1), max_size=min(n - 1, 5)))))
    return tuple(b - a for a, b in pairwise([0, *cuts, n]))


@st.composite
def slides(draw: st.DrawFn) -> tuple[np.ndarray, tuple[tuple[int, ...], ...]]:
    """Glass (a bright, slightly tinted colour) with tissue, white fill and noise; uint8 or
    uint16, RGB or RGBA; a chunking of rows, columns and channels."""
    dtype = draw(st.sampled_from([np.uint8, np.uint8, np.uint16]))
    channels = draw(st.sampled_from([3, 3, 4]))
    rows, cols = draw(st.integers(1, 36)), draw(st.integers(1, 36))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    top = int(np.iinfo(dtype).max)
    glass = rng.uniform(0.75, 0.99, 3) * top
    image = glass + rng.normal(0, 0.01 * top, (rows, cols, 3))
    tissue = rng.random((rows, cols)) < draw(st.floats(0.0, 1.0))
    image[tissue] = rng.uniform(0.1, 0.95, (int(tissue.sum()), 3)) * top
    fill = rng.random((rows, cols)) < draw(st.sampled_from([0.0, 0.0, 0.3, 1.0]))
    image[fill] = top
    image = np.clip(np.rint(image), 0, top).astype(dtype)
    if channels == 4:
        image = np.concatenate([image, np.full((rows, cols, 1), top, dtype)], axis=2)
    chunks = (draw(axis_chunks(rows)), draw(axis_chunks(cols)), draw(axis_chunks(channels)))
    return image, chunks


COMBINE = st.sampled_from(["sum", "max", None])


# ---- kernels --------------------------------------------------------------------------------


def test_kernel_is_the_formula() -> None:
    rng = np.random.default_rng(1)
    tile = rng.integers(0, 256, (30, 40, 3)).astype(np.uint8)
    bg = (241.0, 236.0, 250.0)
    expected = np.maximum(
        -np.log10((tile.astype(np.float64) + 1) / (np.array(bg) + 1)), 0.0
    )
    channels = optical_density_kernel(tile, background=bg, combine=None)
    assert channels.dtype == np.float32 and channels.shape == (30, 40, 3)
    np.testing.assert_allclose(channels, expected, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(optical_density_kernel(tile, background=bg),
                               expected.sum(axis=2), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(optical_density_kernel(tile, background=bg, combine="max"),
                               expected.max(axis=2), rtol=1e-6, atol=1e-7)
    # glass is 0, brighter than glass too; 10 % of the light is OD 1 (up to the + 1)
    assert optical_density_kernel(np.array([[[241, 255, 23]]], np.uint8), background=(241, 236,
                                  239), combine=None).tolist() == [[[0.0, 0.0, 1.0]]]


def test_white_balance_cancels() -> None:
    # a per-channel gain on pixel and glass alike leaves OD as it was (to the + 1 offset)
    rng = np.random.default_rng(2)
    tile = rng.integers(60, 240, (20, 20, 3)).astype(np.uint16) * 200
    gains = np.array([1.1, 1.0, 0.9])
    bg = np.array([240.0, 236.0, 244.0]) * 200
    tinted = np.rint(tile * gains).astype(np.uint16)
    a = optical_density_kernel(tile, background=tuple(bg))
    b = optical_density_kernel(tinted, background=tuple(bg * gains))
    np.testing.assert_allclose(a, b, atol=2e-4)


def test_histograms_leave_out_pure_white() -> None:
    tile = np.array([[[255, 255, 254], [255, 255, 200], [10, 20, 30]]], np.uint8)
    hist = channel_histograms(tile)
    assert hist.sum(axis=1).tolist() == [2, 2, 2]
    assert hist[2, 200] == 1 and hist[0, 255] == 1
    everything_white = channel_histograms(np.full((2, 2, 3), 255, np.uint8))
    background = background_from_histograms(everything_white, dtype=np.dtype(np.uint8),
                                            percentile=99.0, floor=None)
    assert background.tolist() == [255.0, 255.0, 255.0]


@pytest.mark.parametrize("combine", ["sum", "max", None])
def test_density_in_bands_is_the_same(combine) -> None:
    tile = np.random.default_rng(4).integers(0, 256, (23, 9, 4)).astype(np.uint8)
    expected = optical_density_kernel(tile, background=(250, 240, 230), combine=combine)
    got = optical_density_kernel(tile, background=(250, 240, 230), combine=combine,
                                 band_pixels=20)
    np.testing.assert_array_equal(got, expected)


def test_histograms_in_bands_are_exact() -> None:
    # OpenCV counts in float32: large images are counted in bands, each exact
    rng = np.random.default_rng(3)
    tile = rng.integers(200, 256, (37, 11, 4)).astype(np.uint8)
    expected = channel_histograms(tile)
    np.testing.assert_array_equal(channel_histograms(tile, exact_count=50), expected)
    keep = tile[..., :3].min(axis=2) < 254
    for c in range(3):
        np.testing.assert_array_equal(expected[c], np.bincount(tile[..., c][keep], minlength=256))


# ---- any chunking ---------------------------------------------------------------------------


@settings(deadline=None, max_examples=60)
@given(slides(), COMBINE, st.booleans())
def test_density_by_given_background_any_chunking(data, combine, lazy) -> None:
    image, chunks = data
    top = float(np.iinfo(image.dtype).max)
    bg = (0.93 * top, 0.9 * top, top)
    background = da.from_array(np.array(bg)) if lazy else bg
    got = optical_density(da.from_array(image, chunks=chunks), background, combine=combine)
    expected = optical_density_kernel(image, background=bg, combine=combine)
    assert got.dtype == np.float32 and got.chunks[:2] == chunks[:2]
    np.testing.assert_array_equal(got.compute(), expected)


@settings(deadline=None, max_examples=60)
@given(slides(), st.sampled_from([50.0, 90.0, 99.0, 99.9, 100.0]),
       st.sampled_from([None, 0.0, 123.5]))
def test_background_estimate_any_chunking(data, percentile, floor) -> None:
    image, chunks = data
    try:
        expected = reference_background(image, percentile, floor)
    except MaskError:
        with pytest.raises(MaskError, match="no glass lit from behind"):
            background_estimate(da.from_array(image, chunks=chunks), percentile=percentile,
                                floor=floor).compute()
        return
    got = background_estimate(da.from_array(image, chunks=chunks), percentile=percentile,
                              floor=floor)
    assert got.shape == (3,) and got.dtype == np.float64
    np.testing.assert_array_equal(got.compute(), expected)


@settings(deadline=None, max_examples=60)
@given(slides(), COMBINE)
def test_density_by_estimated_background_any_chunking(data, combine) -> None:
    image, chunks = data
    try:
        bg = reference_background(image)
    except MaskError:
        return
    d = da.from_array(image, chunks=chunks)
    expected = optical_density_kernel(image, background=tuple(bg), combine=combine)
    np.testing.assert_array_equal(optical_density(d, combine=combine).compute(), expected)
    # through the public estimate, as the config runner calls it (stored copy read back)
    estimate = background_estimate(d)
    got, used = dask.compute(optical_density(d, estimate, combine=combine), estimate)
    np.testing.assert_array_equal(got, expected)
    np.testing.assert_array_equal(used, bg)


def test_white_balance_kernel_is_the_formula() -> None:
    for dtype in (np.uint8, np.uint16):
        top = int(np.iinfo(dtype).max)
        rng = np.random.default_rng(5)
        tile = rng.integers(0, top + 1, (7, 9, 4)).astype(dtype)
        bg = (0.9 * top, 0.8 * top, top)
        got = white_balance_kernel(tile, background=bg)
        exact = np.rint(top * (tile[..., :3] + 1.0) / (np.array(bg) + 1.0))
        np.testing.assert_array_equal(got, np.clip(exact, 0, top).astype(dtype))
        assert got.dtype == dtype and got.shape == (7, 9, 3)
    # a scanner's per-channel gains cancel: a grey under warm glass is grey again
    warm = np.array([[[250, 239, 215], [125, 119, 107]]], np.uint8)
    assert white_balance_kernel(warm, background=(250, 239, 215)).tolist() == [
        [[255, 255, 255], [128, 128, 128]]]


@settings(deadline=None, max_examples=40)
@given(slides(), st.booleans())
def test_white_balance_any_chunking(data, estimated) -> None:
    image, chunks = data
    top = float(np.iinfo(image.dtype).max)
    bg = (0.93 * top, 0.9 * top, top)
    d = da.from_array(image, chunks=chunks)
    if estimated:
        try:
            bg = tuple(reference_background(image))
        except MaskError:
            return
        got = white_balance(d)
    else:
        got = white_balance(d, bg)
    assert got.dtype == image.dtype and got.shape == (*image.shape[:2], 3)
    np.testing.assert_array_equal(got.compute(), white_balance_kernel(image, background=bg))


def test_a_multichunk_estimate_reads_its_stored_copy(synthetic_slide: Path) -> None:
    slide = open_slide(synthetic_slide, chunk_size=512)
    rgb = slide.levels[0]
    density = optical_density(rgb)
    layers = set(density.__dask_graph__().layers)
    assert any(name.startswith("slidemask-optical-density") for name in layers)
    assert any(name.startswith("slidemask-background-store") for name in layers)
    whole = rgb.compute()
    expected = optical_density_kernel(whole, background=tuple(reference_background(whole)))
    np.testing.assert_array_equal(density.compute(), expected)


def test_pixel_steps_of_a_stored_density_compute_in_its_read(synthetic_slide: Path) -> None:
    """Per-pixel steps of the optical density or white balance by a lazy estimate (tissue,
    folds and glass of ``configs/qc.yaml`` all threshold one density) each compute it in their
    own read of the stored image, so no float32 density waits in memory for its other
    readers; the values are those of the density computed on its own, then the step."""
    from slidemask import threshold

    slide = open_slide(synthetic_slide, chunk_size=256)
    rgb = slide.levels[0]
    density = optical_density(rgb)
    above = threshold(density, above=0.1)
    below = threshold(density, below=0.1)
    band = threshold(density, above=0.05, below=2.5)
    for mask in (above, below, band):
        assert mask.dtype == bool and mask.chunks == density.chunks
        assert density.name not in mask.__dask_graph__().layers  # no separate float layer
    got = dask.compute(above, below, band, density)
    values = got[3]
    np.testing.assert_array_equal(got[0], values > 0.1)
    np.testing.assert_array_equal(got[1], values < 0.1)
    np.testing.assert_array_equal(got[2], (values > 0.05) & (values < 2.5))
    # any per-pixel step, e.g. pen ink of the white balance (two pen masks read one balance)
    from slidemask import pen_ink

    balanced = white_balance(rgb)
    ink = pen_ink(balanced, colors=["blue", "black"])
    assert balanced.name not in ink.__dask_graph__().layers
    assert ink.shape == rgb.shape[:2] and ink.chunks == rgb.chunks[:2]
    whole = balanced.compute()
    np.testing.assert_array_equal(
        ink.compute(), pen_ink(da.from_array(whole), colors=["blue", "black"]).compute()
    )


def test_steps_of_one_image_share_its_stored_copy(synthetic_slide: Path, tmp_path: Path) -> None:
    """Steps that estimate the glass of one multi-chunk image (optical density, white balance)
    give in one run what the same calls give on the whole image in one chunk, and share one
    estimate: one scratch copy of the image (two estimates of one image had one set of graph
    keys but two folders, and ``configs/qc.yaml`` at 50000² read a folder never written)."""
    from slidemask import binary_closing, binary_opening, pen_ink, run_slide, threshold
    from slidemask.writers.zarr import read_mask

    config = config_from_yaml(
        "masks:\n"
        "  tissue: [optical_density, {threshold: {above: 0.1}}, {opening: {radius: 1}}]\n"
        "  pen: [white_balance, {pen_ink: {colors: [blue, black]}}, {closing: {radius: 1}}]\n"
        "output: tissue | pen\nchunk_size: 128\n"
    )
    level = open_slide(synthetic_slide, chunk_size=128).levels[0]
    assert background_estimate(level) is background_estimate(level)
    result = run_slide(synthetic_slide, config, tmp_path)
    assert result.status == "done", result.error
    # the same public calls on the whole image in one chunk (nothing stored)
    rgb = da.from_array(open_slide(synthetic_slide).levels[0].compute())
    tissue = binary_opening(threshold(optical_density(rgb), above=0.1), 1)
    pen = binary_closing(pen_ink(white_balance(rgb), colors=["blue", "black"]), 1)
    np.testing.assert_array_equal(read_mask(result.output).compute(), (tissue | pen).compute())


def test_given_background_fuses_with_decoding(synthetic_slide: Path) -> None:
    slide = open_slide(synthetic_slide, chunk_size=512)
    density = optical_density(slide.levels[1], (242, 240, 244), combine="max")
    assert density.name.startswith("slidemask-pixels")  # converted as each tile is decoded
    expected = optical_density_kernel(slide.levels[1].compute(), background=(242, 240, 244),
                                      combine="max")
    np.testing.assert_array_equal(density.compute(), expected)


# ---- errors ---------------------------------------------------------------------------------


def test_errors() -> None:
    rgb = da.zeros((4, 5, 3), dtype=np.uint8, chunks=2)
    with pytest.raises(MaskError, match="colour image"):
        optical_density(da.zeros((4, 5), dtype=np.uint8))
    with pytest.raises(MaskError, match="uint8 and uint16"):
        background_estimate(da.zeros((4, 5, 3), dtype=np.float32))
    with pytest.raises(MaskError, match="three finite numbers"):
        optical_density(rgb, (240, 240))
    with pytest.raises(MaskError, match="three finite numbers"):
        optical_density(rgb, (240, -1, 240))
    with pytest.raises(MaskError, match=r"\(3,\) real dask array"):
        optical_density(rgb, da.zeros((4,)))
    with pytest.raises(MaskError, match="combine"):
        optical_density(rgb, (240, 240, 240), combine="mean")  # type: ignore[arg-type]
    with pytest.raises(MaskError, match="percentile"):
        background_estimate(rgb, percentile=0)
    with pytest.raises(MaskError, match="floor"):
        background_estimate(rgb, floor=-1)


def test_a_dark_background_is_refused() -> None:
    # fluorescence: dark background, bright tissue; OD relative to it would mean nothing
    image = np.full((20, 20, 3), 5, np.uint8)
    image[5:10, 5:10] = (40, 30, 20)
    with pytest.raises(MaskError, match=r"99th percentile 40, 30, 20 of 255\) are dark"):
        optical_density(da.from_array(image, chunks=7)).compute()


# ---- configuration --------------------------------------------------------------------------


def test_config_step_and_provenance(synthetic_slide: Path) -> None:
    config = config_from_yaml(
        "resolution: {downsample: 4}\nmasks:\n  t:\n    - optical_density: {percentile: 95}\n"
        "    - threshold: {above: 0.1}\n"
    )
    slide = open_slide(synthetic_slide)
    mask, provenance = build_mask(slide, config)
    got, background = dask.compute(mask, provenance["backgrounds"]["t[0]"])
    rgb = image_at(slide, working_resolution(slide, config.resolution)).compute()
    np.testing.assert_array_equal(background, reference_background(rgb, 95.0))
    expected = optical_density_kernel(rgb, background=tuple(background)) > 0.1
    np.testing.assert_array_equal(got, expected)
    assert provenance["masks"]["t"][0] == {
        "optical_density": {"combine": "sum", "percentile": 95.0}
    }
    # a given background is the same step without an estimate
    given = config_from_yaml(
        "resolution: {downsample: 4}\nmasks:\n  t:\n"
        f"    - optical_density: {{background: {background.tolist()}}}\n"
        "    - threshold: {above: 0.1}\n"
    )
    mask, provenance = build_mask(slide, given)
    assert "backgrounds" not in provenance
    np.testing.assert_array_equal(mask.compute(), expected)


@pytest.mark.parametrize(
    ("step", "message"),
    [
        ("{background: [240, 240, 240], percentile: 90}", "percentile and floor shape"),
        ("{background: [240, 240]}", "at least 3 items"),
        ("{background: [240, -3, 240]}", "finite and >= 0"),
        ("{combine: mean}", "'sum' or 'max'"),
        ("{percentile: 0}", "greater than 0"),
    ],
)
def test_config_step_errors(step: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        config_from_yaml(
            f"masks:\n  t:\n    - optical_density: {step}\n    - threshold: {{above: 0.1}}\n"
        )


def test_masks_that_start_alike_share_their_steps(synthetic_slide: Path) -> None:
    """Masks whose first steps are the same on the same image share them (the same graph
    keys, so dask computes them once): one glass estimate, recorded for each mask, one
    small-object barrier, and each mask what it is alone."""
    text = (
        "resolution: {downsample: 4}\nmasks:\n"
        "  a: [optical_density, {threshold: {above: 0.1}}, {remove_small_objects: {min_area: 4}}]\n"
        "  b: [optical_density, {threshold: {above: 0.1}}, {remove_small_objects: {min_area: 4}},"
        " {dilation: {radius: 1}}]\n"
        "  c: [optical_density, {threshold: {below: 0.05}}]\n"
        "output: a | b | c\n"
    )
    slide = open_slide(synthetic_slide, chunk_size=128)
    with dask.config.set({"slidemask.whole-image-pixels": 0}):
        mask, provenance = build_mask(slide, config_from_yaml(text))
    layers = [name for name in mask.__dask_graph__().layers]
    assert sum(name.startswith("slidemask-background-merge-") for name in layers) == 1
    assert sum(name.startswith("slidemask-components-merge-") for name in layers) == 1
    backgrounds = provenance["backgrounds"]
    assert set(backgrounds) == {"a[0]", "b[0]", "c[0]"}
    assert backgrounds["a[0]"] is backgrounds["b[0]"] is backgrounds["c[0]"]
    got = mask.compute()
    alone = {}
    for name in "abc":
        lines = [line for line in text.splitlines() if line.startswith(f"  {name}:")]
        one = f"resolution: {{downsample: 4}}\nmasks:\n{lines[0]}\n"
        alone[name], _ = build_mask(slide, config_from_yaml(one))
    np.testing.assert_array_equal(got, (alone["a"] | alone["b"] | alone["c"]).compute())
