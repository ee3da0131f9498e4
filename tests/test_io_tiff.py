"""The lazy reader equals tifffile's eager read, reads nothing on open, and fails clearly."""

from __future__ import annotations

import logging
import pickle
from pathlib import Path

import numpy as np
import pytest
import tifffile

import slidemask.io.tiff as tiff_module
from slidemask.errors import SlideError, TileError
from slidemask.io import open_slide, slide_name
from slidemask.io.synthetic import write_synthetic_slide
from slidemask.kernels.color import rgb_to_gray
from slidemask.kernels.threshold import threshold_mask
from slidemask.ops.local import PixelChain, PixelStep
from tests.conftest import SHARED_SLIDES, real_slide_params

CMU_SMALL = SHARED_SLIDES / "CMU-1-Small-Region.svs"

EXPECTED_MPP = {
    "CMU-1-Small-Region.svs": 0.499,
    "small_vectra.qptiff": 0.5,
    "tcga-cr-7395-01a-01-ts1.svs": None,
    "kidney-48-5.tif": None,
    "kather1.tif": None,  # 72 dpi is a screen default, not a pixel size
}


def eager_levels(path: Path) -> list[np.ndarray]:
    with tifffile.TiffFile(path) as tf:
        series = tf.series[0]
        out = []
        for lv in series.levels:
            arr = lv.asarray()
            if lv.axes.startswith("C"):
                arr = np.moveaxis(arr, 0, -1)
            if arr.ndim == 2:
                arr = arr[..., None]
            out.append(arr)
        return out


@pytest.mark.parametrize("path", real_slide_params())
@pytest.mark.parametrize("chunk_size", [300, 2048])
def test_real_slides_equal_tifffile(path: Path, chunk_size: int) -> None:
    slide = open_slide(path, chunk_size=chunk_size)
    reference = eager_levels(path)
    assert len(slide.levels) == len(reference)
    for level, ref in zip(slide.levels, reference, strict=True):
        assert level.shape == ref.shape
        assert level.dtype == ref.dtype
        np.testing.assert_array_equal(level.compute(scheduler="threads"), ref)


@pytest.mark.parametrize("path", real_slide_params())
def test_real_slide_metadata(path: Path) -> None:
    slide = open_slide(path)
    expected = EXPECTED_MPP[path.name]
    if expected is None:
        assert slide.mpp is None
    else:
        assert slide.mpp == pytest.approx(expected)
    info = slide.info()
    assert info["levels"][0]["shape"] == list(slide.levels[0].shape)
    assert slide.downsamples[0] == 1.0
    # chunks are whole tiles/strips
    rows, cols = slide.tile_shape
    chunk_rows, chunk_cols = slide.levels[0].chunksize[:2]
    assert chunk_rows % rows == 0 or chunk_rows == slide.levels[0].shape[0]
    assert chunk_cols % cols == 0 or chunk_cols == slide.levels[0].shape[1]


def test_qptiff_is_channels_last() -> None:
    params = [p for p in real_slide_params() if getattr(p, "values", [None])[0] is not None]
    qptiff = [p.values[0] for p in params if p.values[0].suffix == ".qptiff"]  # type: ignore[attr-defined]
    if not qptiff:
        pytest.skip("no QPTIFF in shared/slides")
    slide = open_slide(qptiff[0])
    assert slide.levels[0].shape == (1440, 1920, 3)
    assert slide.vendor == "qptiff"


def test_one_strip_uncompressed_reads_in_bounded_pieces(tmp_path: Path) -> None:
    rgb = np.random.default_rng(0).integers(0, 255, (300, 200, 3), dtype=np.uint8)
    path = tmp_path / "one_strip.tif"
    tifffile.imwrite(path, rgb, photometric="rgb", rowsperstrip=300)
    slide = open_slide(path, chunk_size=64)
    assert slide.levels[0].chunksize[0] < 300
    np.testing.assert_array_equal(slide.levels[0].compute(), rgb)
    np.testing.assert_array_equal(slide.levels[0][17:123, 33:150].compute(), rgb[17:123, 33:150])


@pytest.mark.parametrize(
    ("compression", "ome", "byteorder"),
    [
        ("jpeg", True, "<"),
        ("jpeg", True, ">"),
        ("deflate", False, "<"),
        ("lzw", True, ">"),
        ("none", False, ">"),
    ],
)
def test_synthetic_variants(tmp_path: Path, compression: str, ome: bool, byteorder: str) -> None:
    path = write_synthetic_slide(
        tmp_path / "s.ome.tif",
        (700, 900),
        tile=128,
        compression=compression,
        ome=ome,
        byteorder=byteorder,
        mpp=0.25,
    )
    slide = open_slide(path, chunk_size=256)
    assert slide.mpp == pytest.approx(0.25)
    assert slide.vendor == ("ome" if ome else "generic")
    assert len(slide.levels) == 3
    assert slide.downsamples[1] == pytest.approx(2.0, rel=0.01)
    for level, ref in zip(slide.levels, eager_levels(path), strict=True):
        np.testing.assert_array_equal(level.compute(), ref)


def _strips_and_planar(folder: Path, rgb: np.ndarray) -> tuple[Path, Path]:
    """``rgb`` written as LZW strips of 5 rows and as planar-separate 32² tiles."""
    strips = folder / "strips.tif"
    tifffile.imwrite(strips, rgb, photometric="rgb", rowsperstrip=5, compression="lzw")
    planar = folder / "planar.tif"
    tifffile.imwrite(
        planar, np.moveaxis(rgb, -1, 0), photometric="rgb", planarconfig="separate", tile=(32, 32)
    )
    return strips, planar


def test_stripped_lzw_and_planar_separate(tmp_path: Path) -> None:
    rgb = np.random.default_rng(1).integers(0, 255, (97, 61, 3), dtype=np.uint8)
    strips, planar = _strips_and_planar(tmp_path, rgb)
    np.testing.assert_array_equal(open_slide(strips, chunk_size=16).levels[0].compute(), rgb)
    with tifffile.TiffFile(planar) as tf:
        assert tf.series[0].axes in ("SYX", "CYX", "YXS")
    np.testing.assert_array_equal(open_slide(planar, chunk_size=40).levels[0].compute(), rgb)


def test_uint16_grey(tmp_path: Path) -> None:
    grey = np.random.default_rng(2).integers(0, 65535, (130, 70), dtype=np.uint16)
    path = tmp_path / "grey.tif"
    tifffile.imwrite(path, grey, tile=(32, 32), compression="zlib", byteorder=">")
    level = open_slide(path, chunk_size=64).levels[0]
    assert level.shape == (130, 70, 1) and level.dtype == np.uint16
    np.testing.assert_array_equal(level.compute()[..., 0], grey)


def test_open_reads_no_pixels(monkeypatch: pytest.MonkeyPatch, synthetic_slide: Path) -> None:
    reads: list[int] = []
    original = tiff_module._pread

    def counting(fd: int, count: int, offset: int) -> bytes:
        reads.append(count)
        return original(fd, count, offset)

    monkeypatch.setattr(tiff_module, "_pread", counting)
    tiff_module._HANDLES.clear()
    slide = open_slide(synthetic_slide, chunk_size=256)
    _ = slide.levels[0][:10, :10].sum()  # building a graph reads nothing either
    assert reads == []
    slide.levels[0][:10, :10].compute()
    assert len(reads) == 1  # the one tile under the window


def test_level_array_pickles(synthetic_slide: Path) -> None:
    level = open_slide(synthetic_slide, chunk_size=512).levels[1]
    clone = pickle.loads(pickle.dumps(level))
    np.testing.assert_array_equal(clone.compute(), level.compute())


def test_level_for_mpp(synthetic_slide: Path) -> None:
    slide = open_slide(synthetic_slide)
    assert slide.mpp == pytest.approx(0.5)
    assert slide.level_for_mpp(0.5) == 0
    assert slide.level_for_mpp(1.2) == 1
    assert slide.level_for_mpp(100.0) == len(slide.levels) - 1
    assert slide.level_for_mpp(0.1) == 0
    assert slide.level_mpp(1) == pytest.approx(1.0)


def test_slide_name() -> None:
    assert slide_name("a/b/case-1.ome.tif") == "case-1"
    assert slide_name("x.svs") == "x"
    assert slide_name("dots.v2.ndpi") == "dots.v2"


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(SlideError, match="file not found") as info:
        open_slide(tmp_path / "nope.svs")
    assert "nope.svs" in str(info.value)


def test_not_a_tiff(tmp_path: Path) -> None:
    path = tmp_path / "notes.svs"
    path.write_text("this is not an image\n" * 10)
    with pytest.raises(SlideError, match="not a TIFF") as info:
        open_slide(path)
    assert "notes.svs" in str(info.value)


def test_directory(tmp_path: Path) -> None:
    with pytest.raises(SlideError, match="directory"):
        open_slide(tmp_path)


def test_truncated_file(tmp_path: Path, synthetic_slide: Path) -> None:
    data = synthetic_slide.read_bytes()
    path = tmp_path / "truncated.ome.tif"
    # tifffile writes each directory before its tiles: the header survives, tile data does not
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(SlideError, match="truncated|damaged|unreadable") as info:
        open_slide(path)
    assert "truncated.ome.tif" in str(info.value)


@pytest.mark.skipif(not CMU_SMALL.exists(), reason="shared/slides not present")
def test_a_file_cut_before_its_directory_says_truncated(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An SVS whose first directory lies beyond the cut (Aperio writes it after the tiles):
    tifffile finds no image and says why in a log line; the error carries it and names a
    truncated file, and nothing is printed beside it."""
    data = CMU_SMALL.read_bytes()
    first = int.from_bytes(data[4:8], "little")
    path = tmp_path / "cut.svs"
    path.write_bytes(data[:first])
    with pytest.raises(SlideError, match="cut.svs: .*looks truncated") as info:
        open_slide(path)
    assert "invalid offset" in str(info.value)
    captured = capsys.readouterr()
    assert "invalid offset" not in captured.err + captured.out


@pytest.mark.skipif(not CMU_SMALL.exists(), reason="shared/slides not present")
def test_a_file_cut_at_its_end_opens_with_a_warning_naming_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An SVS missing its last 10 KB still opens (its level 0 is whole) but loses the images
    whose directories were there: a warning names the file and says so, and tifffile's own
    line is not printed bare."""
    # the CLI's tests may have set the package logger not to propagate (to caplog's handler)
    monkeypatch.setattr(logging.getLogger("slidemask"), "propagate", True)
    data = CMU_SMALL.read_bytes()
    path = tmp_path / "short.svs"
    path.write_bytes(data[: len(data) - 10_000])
    with caplog.at_level("WARNING", logger="slidemask"):
        slide = open_slide(path)
    assert slide.levels[0].shape == open_slide(CMU_SMALL).levels[0].shape
    (message,) = [r.getMessage() for r in caplog.records if r.name == "slidemask"]
    assert str(path) in message and "truncated" in message and "invalid page offset" in message
    captured = capsys.readouterr()  # tifffile's line only inside the message naming the file
    assert all(str(path) in line for line in (captured.err + captured.out).splitlines()
               if "invalid page offset" in line)
    caplog.clear()
    with caplog.at_level("WARNING", logger="slidemask"):
        open_slide(CMU_SMALL)
    assert not [r for r in caplog.records if r.name == "slidemask"]


def test_truncated_to_header_only(tmp_path: Path) -> None:
    path = tmp_path / "tiny.tif"
    tifffile.imwrite(path, np.zeros((64, 64, 3), np.uint8), photometric="rgb", tile=(16, 16))
    path.write_bytes(path.read_bytes()[:8])
    with pytest.raises(SlideError):
        open_slide(path)


def test_corrupt_tile_names_slide_level_and_tile(tmp_path: Path) -> None:
    rgb = np.full((128, 128, 3), 200, np.uint8)
    path = tmp_path / "corrupt.tif"
    tifffile.imwrite(path, rgb, photometric="rgb", tile=(64, 64), compression="jpeg")
    with tifffile.TiffFile(path) as tf:
        page = tf.pages[0]
        offset, count = page.dataoffsets[3], page.databytecounts[3]
    raw = bytearray(path.read_bytes())
    raw[offset : offset + count] = b"\x00" * count  # tile (row 64, col 64) is garbage
    path.write_bytes(bytes(raw))
    slide = open_slide(path, chunk_size=64)
    np.testing.assert_array_equal(slide.levels[0][:64, :64].compute(), rgb[:64, :64])
    with pytest.raises(TileError) as info:
        slide.levels[0].compute()
    message = str(info.value)
    assert "corrupt.tif" in message and "level 0" in message and "row 64, col 64" in message


def test_unsupported_layout(tmp_path: Path) -> None:
    path = tmp_path / "zstack.tif"
    tifffile.imwrite(
        path, np.zeros((4, 32, 32), np.uint8), photometric="minisblack", metadata={"axes": "ZYX"}
    )
    with pytest.raises(SlideError, match="unsupported layout"):
        open_slide(path)


def test_changed_file_is_detected(tmp_path: Path) -> None:
    path = tmp_path / "changing.tif"
    tifffile.imwrite(path, np.zeros((32, 32, 3), np.uint8), photometric="rgb", tile=(16, 16))
    slide = open_slide(path)
    tifffile.imwrite(path, np.ones((32, 48, 3), np.uint8), photometric="rgb", tile=(16, 16))
    tiff_module._HANDLES.clear()
    with pytest.raises(SlideError, match="changed"):
        slide.levels[0].compute()


def _grey_below(tile: np.ndarray) -> np.ndarray:
    """A pointwise function for map_pixels tests: grey < 200 of an RGB(A) or 1-channel tile."""
    return PixelChain(
        (PixelStep(rgb_to_gray), PixelStep(threshold_mask, (("below", 200),)))
    )(tile)


def _two_channels(tile: np.ndarray) -> np.ndarray:
    return np.stack([tile[..., 0] // 2, tile[..., -1]], axis=-1)


@pytest.mark.parametrize("path", real_slide_params())
@pytest.mark.parametrize("chunk_size", [300, 2048])
def test_map_pixels_equals_map_blocks_on_real_slides(path: Path, chunk_size: int) -> None:
    slide = open_slide(path, chunk_size=chunk_size)
    level = len(slide.levels) - 1 if slide.levels[0].size > 3e8 else 0
    image = slide.levels[level]
    if image.shape[2] not in (1, 3, 4):
        pytest.skip("not an RGB or grey image")
    fused = slide.map_pixels(level, _grey_below, dtype=bool)
    assert fused.chunks == image.chunks[:2]
    reference = _grey_below(image.compute())
    np.testing.assert_array_equal(fused.compute(), reference)


@pytest.mark.parametrize("chunk_size", [1, 70, 256, 5000])
def test_map_pixels_tiles_edges_strips_and_planar(tmp_path: Path, chunk_size: int) -> None:
    path = write_synthetic_slide(tmp_path / "s.ome.tif", (333, 517), tile=128, mpp=0.5)
    rgb = np.random.default_rng(3).integers(0, 255, (97, 61, 3), dtype=np.uint8)
    strips, planar = _strips_and_planar(tmp_path, rgb)
    raw = tmp_path / "raw.tif"
    tifffile.imwrite(raw, rgb, photometric="rgb")
    for file in (path, strips, planar, raw):
        slide = open_slide(file, chunk_size=chunk_size)
        for level in range(len(slide.levels)):
            whole = slide.levels[level].compute()
            fused = slide.map_pixels(level, _grey_below, dtype=bool).compute()
            np.testing.assert_array_equal(fused, _grey_below(whole))
            two = slide.map_pixels(level, _two_channels, dtype=np.uint8, channels=2)
            np.testing.assert_array_equal(two.compute(), _two_channels(whole))


def test_map_pixels_sparse_tiles_read_as_zero(tmp_path: Path) -> None:
    """A tile with no bytes (sparse TIFF) reads as zeros, so it maps to function(0)."""
    path = tmp_path / "sparse.tif"
    rgb = np.full((128, 128, 3), 250, np.uint8)
    tifffile.imwrite(path, rgb, photometric="rgb", tile=(64, 64), compression="zlib")
    with tifffile.TiffFile(path) as tf:
        tag = tf.pages[0].tags["TileByteCounts"]
        position, size = tag.valueoffset, {3: 2, 4: 4, 16: 8}[int(tag.dtype)]  # counts array
    data = bytearray(path.read_bytes())
    data[position + size : position + 2 * size] = b"\x00" * size  # tile (0, 64) holds no bytes
    path.write_bytes(bytes(data))
    slide = open_slide(path, chunk_size=128)
    expected = rgb.copy()
    expected[:64, 64:] = 0
    np.testing.assert_array_equal(slide.levels[0].compute(), expected)
    fused = slide.map_pixels(0, _grey_below, dtype=bool).compute()
    np.testing.assert_array_equal(fused, _grey_below(expected))
    assert fused[:64, 64:].all() and not fused[64:].any()


def test_map_pixels_pickles_and_names_corrupt_tiles(tmp_path: Path) -> None:
    rgb = np.full((128, 128, 3), 200, np.uint8)
    path = tmp_path / "corrupt.tif"
    tifffile.imwrite(path, rgb, photometric="rgb", tile=(64, 64), compression="jpeg")
    slide = open_slide(path, chunk_size=64)
    fused = slide.map_pixels(0, _grey_below, dtype=bool)
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(fused)).compute(), _grey_below(rgb))
    with tifffile.TiffFile(path) as tf:
        offset, count = tf.pages[0].dataoffsets[3], tf.pages[0].databytecounts[3]
    data = bytearray(path.read_bytes())
    data[offset : offset + count] = b"\x00" * count
    path.write_bytes(bytes(data))
    slide = open_slide(path, chunk_size=64)
    with pytest.raises(TileError, match="row 64, col 64"):
        slide.map_pixels(0, _grey_below, dtype=bool).compute()


def test_hamamatsu_ndpi_metadata_and_levels(tmp_path: Path) -> None:
    """A Hamamatsu-style file (Make + NDPI tags, one page per level, resolution in cm)."""
    rgb = np.random.default_rng(4).integers(0, 255, (600, 900, 3), dtype=np.uint8)
    path = tmp_path / "slide.tif"  # tifffile expects NDPI's 64-bit offsets only for *.ndpi
    with tifffile.TiffWriter(path) as tw:
        for k, magnification in ((1, 20.0), (2, 10.0), (4, 5.0)):
            tw.write(
                rgb[::k, ::k], photometric="rgb", tile=(128, 128), compression="jpeg",
                resolution=(1e4 / 0.46 / k, 1e4 / 0.46 / k), resolutionunit="CENTIMETER",
                extratags=[
                    (271, "s", 0, "Hamamatsu", True),
                    (65420, "I", 1, 1, True),  # NDPI format flag
                    (65421, "f", 1, magnification, True),  # source lens
                ],
                metadata=None,
            )
    slide = open_slide(path, chunk_size=256)
    assert slide.vendor == "hamamatsu"
    assert slide.mpp == pytest.approx(0.46)
    assert slide.properties.get("magnification") == pytest.approx(20.0)
    assert slide.downsamples == pytest.approx([1.0, 2.0, 4.0])
    with tifffile.TiffFile(path) as tf:
        assert tf.is_ndpi
        for level, ref in zip(slide.levels, tf.series[0].levels, strict=True):
            np.testing.assert_array_equal(level.compute(), ref.asarray())
