"""expand_inputs finds slides in files, folders, globs and manifests; output names stay inside."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from slidemask.errors import ConfigError
from slidemask.inputs import (
    expand_inputs,
    extra_paths_for,
    output_path_for,
    output_paths,
    safe_output_name,
)


def touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"II*\x00")
    return path


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    for name in ("b.svs", "a.ome.tif", "c.NDPI", "notes.txt", "thumb.jpg", ".hidden.svs"):
        touch(tmp_path / "slides" / name)
    touch(tmp_path / "slides" / "sub" / "d.tiff")
    touch(tmp_path / "slides" / "sub" / "deeper" / "e.qptiff")
    (tmp_path / "empty").mkdir()
    return tmp_path


def test_single_files_are_absolute_and_kept_in_order(tree: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(tree)
    got = expand_inputs(["slides/b.svs", Path("slides/a.ome.tif")])
    assert got == [tree / "slides" / "b.svs", tree / "slides" / "a.ome.tif"]
    assert all(p.is_absolute() for p in got)


def test_explicit_file_with_any_suffix_is_taken(tree: Path):
    assert expand_inputs([tree / "slides" / "thumb.jpg"]) == [tree / "slides" / "thumb.jpg"]


def test_directory_lists_slides_sorted_non_recursive(tree: Path):
    got = expand_inputs([tree / "slides"])
    assert [p.name for p in got] == ["a.ome.tif", "b.svs", "c.NDPI"]


def test_directory_recursive(tree: Path):
    got = expand_inputs([tree / "slides"], recursive=True)
    assert [p.relative_to(tree / "slides").as_posix() for p in got] == [
        "a.ome.tif", "b.svs", "c.NDPI", "sub/d.tiff", "sub/deeper/e.qptiff",
    ]


def test_directory_keeps_slide_names_that_are_not_files(tree: Path):
    """A link to a missing slide, and (without recursive) a folder named like a slide, are
    kept so that the run reports them as failed instead of dropping them silently."""
    (tree / "slides" / "gone.svs").symlink_to(tree / "nowhere.svs")
    (tree / "slides" / "odd.tif").mkdir()
    got = expand_inputs([tree / "slides"])
    assert [p.name for p in got] == ["a.ome.tif", "b.svs", "c.NDPI", "gone.svs", "odd.tif"]
    recursive = [p.name for p in expand_inputs([tree / "slides"], recursive=True)]
    assert "gone.svs" in recursive and "odd.tif" not in recursive


def test_empty_directory_raises_naming_it(tree: Path):
    with pytest.raises(ConfigError, match="empty"):
        expand_inputs([tree / "empty"])


def test_glob_patterns(tree: Path):
    got = expand_inputs([str(tree / "slides" / "*.svs")])
    assert got == [tree / "slides" / "b.svs"]
    # a broad pattern keeps only slide files, and skips hidden ones
    got = expand_inputs([str(tree / "slides" / "*")])
    assert [p.name for p in got] == ["a.ome.tif", "b.svs", "c.NDPI"]
    got = expand_inputs([str(tree / "slides" / "**" / "*.*tif*")])
    assert [p.name for p in got] == ["a.ome.tif", "d.tiff", "e.qptiff"]
    got = expand_inputs([str(tree / "slides" / "[ab]*")])
    assert [p.name for p in got] == ["a.ome.tif", "b.svs"]


def test_glob_matching_nothing_raises_naming_the_pattern(tree: Path):
    pattern = str(tree / "slides" / "*.mrxs")
    with pytest.raises(ConfigError, match=r"\*\.mrxs.*matched nothing"):
        expand_inputs([pattern])
    with pytest.raises(ConfigError, match="none ending in"):
        expand_inputs([str(tree / "slides" / "*.jpg")])


def test_literal_name_with_glob_characters_is_a_file(tree: Path):
    odd = touch(tree / "slides" / "x[1].svs")
    assert expand_inputs([str(odd)]) == [odd]


def test_missing_file_is_kept_for_the_run_to_report(tree: Path):
    missing = tree / "slides" / "gone.svs"
    got = expand_inputs([tree / "slides" / "b.svs", missing])
    assert got == [tree / "slides" / "b.svs", missing]


def test_duplicates_removed_keeping_first(tree: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(tree / "slides")
    got = expand_inputs(
        ["b.svs", str(tree / "slides"), "./b.svs", "sub/../a.ome.tif", str(tree / "slides" / "*")]
    )
    assert [p.name for p in got] == ["b.svs", "a.ome.tif", "c.NDPI"]


def test_text_manifest(tree: Path):
    lists = tree / "lists"
    lists.mkdir()
    manifest = lists / "batch.txt"
    manifest.write_text(
        "# study 7\n"
        "\n"
        "../slides/b.svs\n"
        f"  {tree / 'slides' / 'c.NDPI'}  \n"
        "../slides/missing.svs\n"
        "../slides/b.svs\n",
        encoding="utf-8",
    )
    got = expand_inputs([manifest])
    assert got == [tree / "slides" / "b.svs", tree / "slides" / "c.NDPI",
                   tree / "slides" / "missing.svs"]
    lst = lists / "batch.lst"
    lst.write_text("../slides/a.ome.tif\n", encoding="utf-8")
    assert expand_inputs([lst]) == [tree / "slides" / "a.ome.tif"]


def test_manifest_entries_are_literal_not_globs(tree: Path):
    manifest = tree / "m.txt"
    manifest.write_text("slides/*.svs\n", encoding="utf-8")
    assert expand_inputs([manifest]) == [tree / "slides" / "*.svs"]  # reported missing later


def test_csv_manifest_with_bom_and_extra_columns(tree: Path):
    manifest = tree / "batch.csv"
    manifest.write_text(
        "\ufeffcase,path,stain\n7,slides/b.svs,HE\n8,,HE\n9,slides/sub/d.tiff,IHC\n",
        encoding="utf-8",
    )
    assert expand_inputs([manifest]) == [tree / "slides" / "b.svs", tree / "slides/sub/d.tiff"]


def test_csv_without_path_column_raises(tree: Path):
    manifest = tree / "batch.csv"
    manifest.write_text("file,stain\nslides/b.svs,HE\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="no 'path' column.*file"):
        expand_inputs([manifest])


def test_empty_or_missing_manifest_raises(tree: Path):
    manifest = tree / "batch.txt"
    manifest.write_text("# nothing yet\n\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="lists no slides"):
        expand_inputs([manifest])
    with pytest.raises(ConfigError, match="does not exist"):
        expand_inputs([tree / "other.txt"])


def test_mixed_inputs(tree: Path):
    manifest = tree / "m.txt"
    manifest.write_text("slides/sub/d.tiff\n", encoding="utf-8")
    got = expand_inputs([str(tree / "slides" / "b.*"), manifest, tree / "slides"])
    assert [p.name for p in got] == ["b.svs", "d.tiff", "a.ome.tif", "c.NDPI"]


# --- output names -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("..svs", "slide"),  # slide_name gives "."
        ("...svs", "slide"),  # slide_name gives ".."
        (".hidden.svs", "_hidden"),
        ("a:b?.svs", "a_b_"),
        ("tab\there.svs", "tab_here"),
        ("Gewebe-Ärzte-组织.svs", "Gewebe-Ärzte-组织"),
        ("trailing. .svs", "trailing"),
    ],
)
def test_output_name_is_safe(tmp_path: Path, name: str, expected: str):
    out = output_path_for(Path("/data") / name, tmp_path)
    assert out == tmp_path / f"{expected}.zarr"


@pytest.mark.parametrize(
    "entry",
    ["../../etc/passwd.svs", "/abs/olute/../x.svs", "a/../../b.svs", "..\\..\\win.svs",
     "nul\x00byte.svs", "../" * 40 + "deep.svs"],
)
def test_output_never_escapes_output_dir(tmp_path: Path, entry: str):
    out_dir = tmp_path / "out"
    for out in (output_path_for(entry, out_dir), *output_paths([entry], out_dir).values()):
        assert out.parent == out_dir
        assert out.name not in {".zarr", "..zarr"}
        assert "/" not in out.name and "\x00" not in out.name and not out.name.startswith(".")
        resolved = (out_dir / out.name).resolve()
        assert resolved.parent == out_dir.resolve()


def test_names_from_a_manifest_cannot_escape(tree: Path):
    manifest = tree / "m.txt"
    manifest.write_text("../../../../etc/passwd\nslides/..svs\n", encoding="utf-8")
    slides = expand_inputs([manifest])
    outs = output_paths(slides, tree / "out")
    assert all(o.parent == tree / "out" for o in outs.values())
    assert sorted(o.name for o in outs.values()) == ["passwd.zarr", "slide.zarr"]


def test_long_names_are_cut_below_file_name_limits(tmp_path: Path):
    name = "é" * 300 + ".svs"
    out = output_path_for(name, tmp_path)
    assert len(out.name.encode()) <= 255
    (out).mkdir()  # the file system accepts it


def test_colliding_names_are_disambiguated_deterministically(tmp_path: Path):
    slides = [Path("/a/x.svs"), Path("/b/x.tif"), Path("/c/X.ndpi"), Path("/d/y.svs"),
              Path("/a/x.svs")]
    outs = output_paths(slides, tmp_path)
    assert list(outs) == [Path("/a/x.svs"), Path("/b/x.tif"), Path("/c/X.ndpi"), Path("/d/y.svs")]
    assert outs[Path("/d/y.svs")] == tmp_path / "y.zarr"
    names = [o.name for o in outs.values()]
    assert len({n.casefold() for n in names}) == 4  # unique even on case-insensitive disks
    assert names[0].startswith("x-") and names[2].startswith("X-")
    # order does not matter, and reruns give the same names
    assert output_paths(list(reversed(slides)), tmp_path) == outs
    assert output_paths(slides, tmp_path) == outs


def test_hashed_name_clashing_with_a_real_name_is_lengthened(tmp_path: Path):
    first = output_paths([Path("/a/x.svs"), Path("/b/x.svs")], tmp_path)
    taken = first[Path("/a/x.svs")].name.removesuffix(".zarr")
    slides = [Path("/a/x.svs"), Path("/b/x.svs"), Path(f"/c/{taken}.svs")]
    outs = output_paths(slides, tmp_path)
    assert len({o.name for o in outs.values()}) == 3
    assert outs[Path(f"/c/{taken}.svs")].name == f"{taken}.zarr"


def test_bad_suffix_rejected(tmp_path: Path):
    with pytest.raises(ConfigError):
        output_path_for("a.svs", tmp_path, suffix="/../x")


def test_safe_output_name_keeps_plain_names():
    assert safe_output_name("CMU-1-Small-Region") == "CMU-1-Small-Region"
    assert safe_output_name("") == "slide"
    assert os.sep not in safe_output_name(f"a{os.sep}b")


def test_slide_named_report_does_not_collide_with_the_run_report() -> None:
    from slidemask.inputs import safe_output_name

    assert safe_output_name("report") == "report_slide"
    assert safe_output_name("Report") == "Report_slide"
    assert safe_output_name("reports") == "reports"


def test_extra_paths_sit_beside_the_mask() -> None:
    paths = extra_paths_for(Path("out/a.b.zarr"), ["ome_zarr", "geojson", "preview", "summary"])
    assert paths == {
        "ome_zarr": Path("out/a.b.ome.zarr"), "geojson": Path("out/a.b.geojson"),
        "preview": Path("out/a.b.png"), "summary": Path("out/a.b.json")}
    assert list(extra_paths_for("out/a.zarr", ["summary", "preview"])) == ["summary", "preview"]
    assert extra_paths_for("out/a.zarr", []) == {}
    with pytest.raises(ValueError, match="unknown extra output 'png'; known: ome_zarr, geojson"):
        extra_paths_for("out/a.zarr", ["png"])


@pytest.mark.parametrize("given", ["folder", "parent"])
def test_a_dicom_folder_is_one_slide_and_its_other_slides_are_named(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch, given: str
) -> None:
    """A folder of DICOM instances is one slide; slide files beside them are not read, and
    the run says so instead of dropping them silently."""
    # the CLI's tests may have set the package logger not to propagate (to caplog's handler)
    monkeypatch.setattr(logging.getLogger("slidemask"), "propagate", True)
    folder = tmp_path / "wsi"
    touch(folder / "level0.dcm")
    touch(folder / "level1.dcm")
    touch(folder / "stray.svs")
    touch(folder / "notes.txt")
    with caplog.at_level("WARNING", logger="slidemask"):
        found = expand_inputs([str(folder if given == "folder" else tmp_path)])
    assert found == [folder]
    (record,) = caplog.records
    assert str(folder) in record.getMessage() and "stray.svs" in record.getMessage()
    assert "notes.txt" not in record.getMessage()
    caplog.clear()
    (folder / "stray.svs").unlink()
    with caplog.at_level("WARNING", logger="slidemask"):
        assert expand_inputs([str(folder)]) == [folder]
    assert not caplog.records


def test_a_glob_of_dicom_instances_is_their_slide(tmp_path: Path) -> None:
    folder = tmp_path / "wsi"
    touch(folder / "level0.dcm")
    touch(folder / "level1.dcm")
    touch(tmp_path / "other.svs")
    assert expand_inputs([str(folder / "*.dcm")]) == [folder]
    assert expand_inputs([str(tmp_path / "*" / "*.dcm"), str(tmp_path / "*.svs")]) == [
        folder, tmp_path / "other.svs"]
