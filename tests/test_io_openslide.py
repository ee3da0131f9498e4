"""The OpenSlide backend: same Slide as tifffile, identical pixels, DICOM WSI, any scheduler."""

from __future__ import annotations

import json
import logging
import pickle
import shutil
from pathlib import Path

import dask
import numpy as np
import pytest

from slidemask import SlideError, SlidemaskError, open_slide
from slidemask.inputs import expand_inputs
from slidemask.io.openslide import (
    OpenSlideLevelReader,
    composite_on_white,
    exact_origin,
    premultiplied_on_white,
)
from slidemask.kernels.color import rgb_to_gray

pytest.importorskip("openslide")

SHARED = Path(__file__).parents[2] / "shared"
FORMATS = SHARED / "formats"
SLIDES = SHARED / "slides"


def _need(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"{path} is absent")
    return path


def _svs_files() -> list[Path]:
    return sorted(SLIDES.glob("*.svs")) if SLIDES.is_dir() else []


def _assert_same_slide(path: Path, chunk_size: int) -> None:
    tiff = open_slide(path, backend="tifffile", chunk_size=chunk_size)
    osl = open_slide(path, backend="openslide", chunk_size=chunk_size)
    assert (tiff.backend, osl.backend) == ("tifffile", "openslide")
    assert [a.shape for a in tiff.levels] == [b.shape for b in osl.levels]
    assert osl.downsamples == pytest.approx(tiff.downsamples)
    assert osl.mpp == tiff.mpp
    with dask.config.set(scheduler="threads"):
        for level, (a, b) in enumerate(zip(tiff.levels, osl.levels, strict=True)):
            np.testing.assert_array_equal(
                b.compute(), a.compute(), err_msg=f"{path.name} level {level}"
            )


@pytest.mark.parametrize("name", ["boxes.tiff", "small.svs"])
@pytest.mark.parametrize("chunk_size", [1, 100, 4096])
def test_both_backends_give_identical_pixels_on_fixtures(name: str, chunk_size: int) -> None:
    _assert_same_slide(_need(FORMATS / name), chunk_size)


@pytest.mark.parametrize("svs", _svs_files(), ids=lambda p: p.name)
def test_both_backends_give_identical_pixels_on_shared_svs(svs: Path) -> None:
    _assert_same_slide(svs, 1000)


def test_synthetic_aperio_svs_reads_alike_with_both_backends(tmp_path: Path) -> None:
    """The bench's Aperio layout (``write_synthetic_slide(..., aperio=True)``): OpenSlide
    reads it with its Aperio driver, and both backends give the OME-TIFF's pixels."""
    import openslide

    from slidemask import write_synthetic_slide

    svs = write_synthetic_slide(tmp_path / "s.svs", (700, 900), tile=128, aperio=True)
    assert openslide.OpenSlide.detect_format(str(svs)) == "aperio"
    _assert_same_slide(svs, 300)
    ome = write_synthetic_slide(tmp_path / "s.ome.tif", (700, 900), tile=128)
    np.testing.assert_array_equal(open_slide(svs).levels[0].compute(),
                                  open_slide(ome).levels[0].compute())


def test_regions_at_awkward_offsets_are_exact() -> None:
    """Level 2 and 3 of boxes.tiff have downsamples 4.016 and 8.086: any origin is exact."""
    path = _need(FORMATS / "boxes.tiff")
    tiff = open_slide(path, backend="tifffile")
    osl = open_slide(path, backend="openslide")
    rng = np.random.default_rng(7)
    for level in range(len(tiff.levels)):
        whole = tiff.levels[level].compute()
        reader = osl.readers[level]
        rows, cols = whole.shape[:2]
        for _ in range(25):
            y0, x0 = int(rng.integers(0, rows)), int(rng.integers(0, cols))
            y1, x1 = int(rng.integers(y0 + 1, rows + 1)), int(rng.integers(x0 + 1, cols + 1))
            np.testing.assert_array_equal(reader[y0:y1, x0:x1], whole[y0:y1, x0:x1])


def test_exact_origin() -> None:
    assert exact_origin(7, 2.0) == (14, 7)
    origin, first = exact_origin(500, 2.0005055500659967)
    assert first <= 500 and origin / 2.0005055500659967 - first < 1 / 256


def test_auto_prefers_tifffile_for_tiff_and_openslide_for_dicom() -> None:
    assert open_slide(_need(FORMATS / "small.svs")).backend == "tifffile"
    dicom = open_slide(_need(FORMATS / "sm_image.dcm"))
    assert dicom.backend == "openslide"
    assert dicom.vendor == "dicom"
    assert dicom.mpp == pytest.approx(0.499)  # from the DICOM pixel spacing
    assert dicom.levels[0].shape == (50, 50, 3)
    assert dicom.levels[0].dtype == np.uint8
    # the transfer syntax by name, its UID beside it
    assert dicom.compression == "none (explicit VR little endian) (1.2.840.10008.1.2.1)"


def test_dicom_instance_set_and_folder_open_as_one_slide(tmp_path: Path) -> None:
    folder = tmp_path / "boxes"
    folder.mkdir()
    for name in ("boxes_0.dcm", "boxes_1.dcm"):
        shutil.copy(_need(FORMATS / name), folder / name)
    by_folder = open_slide(folder)
    by_files = open_slide([folder / "boxes_1.dcm", folder / "boxes_0.dcm"])
    by_file = open_slide(folder / "boxes_1.dcm")
    assert by_folder.backend == by_files.backend == "openslide"
    assert by_folder.name == "boxes"
    assert by_folder.mpp == pytest.approx(0.499)
    pixels = by_folder.levels[0].compute()
    np.testing.assert_array_equal(by_files.levels[0].compute(), pixels)
    np.testing.assert_array_equal(by_file.levels[0].compute(), pixels)
    # a batch input: the folder is one slide, and a folder of folders lists each
    assert expand_inputs([folder]) == [folder]
    assert expand_inputs([tmp_path]) == [folder]


def test_multilevel_dicom_matches_wsidicom(tmp_path: Path) -> None:
    wsidicom = pytest.importorskip("wsidicom")
    out = tmp_path / "pyramid"
    with wsidicom.WsiDicom.open(_need(FORMATS / "sm_image.dcm")) as source:
        source.save(out, add_missing_levels=True)
    slide = open_slide(out, chunk_size=16)
    assert [a.shape[:2] for a in slide.levels] == [(50, 50), (25, 25), (13, 13), (7, 7)]
    assert slide.mpp == pytest.approx(0.499)
    assert slide.level_mpp(1) == pytest.approx(0.998)
    with wsidicom.WsiDicom.open(out) as wsi:
        for level, array in enumerate(slide.levels):
            rows, cols = array.shape[:2]
            ref = np.asarray(wsi.read_region((0, 0), level, (cols, rows)).convert("RGB"))
            np.testing.assert_array_equal(array.compute(), ref, err_msg=f"level {level}")


def test_map_pixels_and_processes_and_pickling() -> None:
    path = _need(FORMATS / "boxes.tiff")
    slide = open_slide(path, backend="openslide", chunk_size=64)
    reader = slide.readers[2]
    assert isinstance(reader, OpenSlideLevelReader)
    clone = pickle.loads(pickle.dumps(reader))
    np.testing.assert_array_equal(clone[3:40, 5:50], reader[3:40, 5:50])
    grey = slide.map_pixels(2, rgb_to_gray, dtype=np.uint8)
    expected = rgb_to_gray(slide.levels[2].compute())
    np.testing.assert_array_equal(grey.compute(scheduler="threads"), expected)
    with dask.config.set(scheduler="processes", num_workers=2):
        np.testing.assert_array_equal(grey.compute(), expected)
        np.testing.assert_array_equal(
            slide.levels[1].compute(),
            open_slide(path, backend="tifffile").levels[1].compute(scheduler="threads"),
        )


@pytest.mark.parametrize("backend", ["auto", "tifffile", "openslide"])
def test_unreadable_svs_names_the_file_with_any_backend(backend: str) -> None:
    path = _need(SHARED / "bad" / "unreadable.svs")
    with pytest.raises(SlidemaskError) as info:
        open_slide(path, backend=backend).levels[0].compute(scheduler="threads")
    assert str(path) in str(info.value)


def test_not_a_slide_and_unknown_backend(tmp_path: Path) -> None:
    text = tmp_path / "notes.mrxs"
    text.write_text("not a slide")
    with pytest.raises(SlideError, match="notes.mrxs"):
        open_slide(text)
    with pytest.raises(SlideError, match="without DICOM"):
        open_slide(tmp_path)
    with pytest.raises(ValueError, match="known: auto, tifffile, openslide"):
        open_slide(text, backend="pyvips")


def test_info_names_the_backend(capsys: pytest.CaptureFixture[str]) -> None:
    from slidemask.cli import main

    assert main(["info", str(_need(FORMATS / "sm_image.dcm")), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["backend"] == "openslide"
    assert info["vendor"] == "dicom"
    assert main(["info", str(_need(FORMATS / "small.svs"))]) == 0
    assert "tifffile" in capsys.readouterr().out


def test_premultiplied_argb_on_white_matches_the_rgba_route() -> None:
    """The direct read (OpenSlide's premultiplied ARGB to RGB on white in one pass) gives what
    openslide-python's RGBA image composited on white gives, partial alpha included."""
    rng = np.random.default_rng(3)
    alpha = rng.integers(0, 256, (300, 200), dtype=np.uint32)
    alpha[:50] = 255  # opaque rows and transparent ones, as slides have
    alpha[50:60] = 0
    colour = (rng.integers(0, 256, (300, 200, 3)) * alpha[..., None] // 255).astype(np.uint32)
    argb = (alpha << 24) | (colour[..., 0] << 16) | (colour[..., 1] << 8) | colour[..., 2]
    # openslide-python's un-premultiplication (its _convert.argb2rgba)
    safe = np.maximum(alpha, 1)[..., None]
    straight = np.where(alpha[..., None] == 255, colour,
                        (colour * 255 + alpha[..., None] // 2) // safe)
    rgba = np.dstack([np.where(alpha[..., None] == 0, 0, straight), alpha]).astype(np.uint8)
    np.testing.assert_array_equal(premultiplied_on_white(argb), composite_on_white(rgba))
    assert premultiplied_on_white(argb[:50]).flags.c_contiguous
    assert premultiplied_on_white(argb[:0]).shape == (0, 200, 3)


def test_direct_and_image_reads_agree(monkeypatch: pytest.MonkeyPatch) -> None:
    import slidemask.io.openslide as backend

    path = _need(FORMATS / "small.svs")
    direct = open_slide(path, backend="openslide", chunk_size=100).levels[0].compute()
    monkeypatch.setattr(backend, "_direct_reads", lambda: False)
    through_image = open_slide(path, backend="openslide", chunk_size=100).levels[0].compute()
    np.testing.assert_array_equal(direct, through_image)


def test_a_dicom_folder_with_two_series_names_the_instances_left_out(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """OpenSlide reads one series of a DICOM folder: instances of another series (another
    slide) are named in a warning instead of being dropped silently."""
    # the CLI's tests may have set the package logger not to propagate (to caplog's handler)
    monkeypatch.setattr(logging.getLogger("slidemask"), "propagate", True)
    names = ("boxes_0.dcm", "boxes_1.dcm", "sm_image.dcm")
    for name in names:
        shutil.copyfile(_need(FORMATS / name), tmp_path / name)
    with caplog.at_level("WARNING", logger="slidemask"):
        slide = open_slide(tmp_path)
    assert slide.levels[0].shape == open_slide(FORMATS / "boxes_0.dcm").levels[0].shape
    (message,) = [r.getMessage() for r in caplog.records if r.name == "slidemask"]
    assert str(tmp_path) in message and "sm_image.dcm" in message and "boxes" not in message
    (tmp_path / "sm_image.dcm").unlink()  # one series: nothing to say
    caplog.clear()
    with caplog.at_level("WARNING", logger="slidemask"):
        open_slide(tmp_path)
    assert not [r for r in caplog.records if r.name == "slidemask"]
