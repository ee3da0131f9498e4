"""report.html: the batch as one self-contained page, checked in headless Chromium.

The browser tests render the report of a small batch run through the CLI (previews, a failed
slide) and of 1000 synthetic records; they take screenshots, dump the DOM after the page's
own ``?selftest`` script has clicked a column header and filtered by status, and load the
page with ``#sort=`` in its URL. They are skipped, saying why, where Chromium is not installed
(``apt-get install chromium``; .ci/run installs it).
"""

from __future__ import annotations

import json
import math
import re
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from slidemask.cli import main
from slidemask.io.synthetic import write_synthetic_slide
from slidemask.writers.html_report import (
    OUTLIER_Z,
    REPORT_HTML,
    render_html_report,
    robust_z,
    write_html_report,
)

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None,
    reason="Chromium is not installed (apt-get install chromium): the report is not rendered",
)

CONFIG = """\
masks:
  tissue:
    - gray: {}
    - threshold: {below: 220}
    - closing: {radius: 2}
chunk_size: 256
outputs: {preview: true, summary: true}
"""


# --- robust z-scores --------------------------------------------------------------------------


def test_robust_z_is_the_modified_z_score() -> None:
    present = [1.0, 2.0, 3.0, 4.0, 100.0]
    z = robust_z([*present, None])
    median, mad = 3.0, 1.0  # deviations 2, 1, 0, 1, 97
    assert z[5] is None
    for value, score in zip(present, z[:5], strict=True):
        assert score == pytest.approx(0.6745 * (value - median) / mad)
    assert z[4] is not None and z[4] > OUTLIER_Z


def test_robust_z_without_spread() -> None:
    # MAD 0 (most values equal): the mean absolute deviation stands in
    z = robust_z([0.5, 0.5, 0.5, 0.5, 0.9])
    assert z[:4] == [0.0] * 4 and z[4] == pytest.approx(0.4 / (0.08 / 0.7979))
    assert robust_z([0.2, 0.2, 0.2]) == [0.0, 0.0, 0.0]
    assert robust_z([None, float("nan")]) == [None, None]


# --- the page ---------------------------------------------------------------------------------


def _records(n: int, out: Path, *, classes: bool = True) -> dict[str, Any]:
    """A report.json with ``n`` slides: every 97th failed, every 5th skipped, slide 7 an
    outlier in tissue fraction (0.95 against about 0.3)."""
    rng = np.random.default_rng(0)
    slides = []
    for i in range(n):
        status = "failed" if i % 97 == 3 else "skipped" if i % 5 == 0 else "done"
        fraction = 0.95 if i == 7 else float(np.clip(rng.normal(0.3, 0.03), 0.01, 0.9))
        stats: dict[str, Any] = {}
        if status != "failed":
            stats = {"foreground_pixels": int(fraction * 1e6), "total_pixels": 10**6,
                     "fraction": fraction, "level": 1, "factor": 2, "mpp": 8.0,
                     "downsample": 16.0}
            if classes:
                stats["classes"] = {
                    "tumour": {"area_mm2": 64 * fraction * 0.4,
                               "fraction_of_tissue": fraction * 0.4},
                    "stroma": {"area_mm2": 6.4,
                               "fraction_of_tissue": 0.1 + 0.01 * float(rng.random())},
                }
        slides.append({
            "path": f"/data/cohort/slide_{i:04d}.svs",
            "output": str(out / f"slide_{i:04d}.zarr"),
            "status": status,
            "error": (f"/data/cohort/slide_{i:04d}.svs: SlideError: level 0, tile (0, 512): "
                      "truncated </script><script>alert(1)</script>")
            if status == "failed" else None,
            "seconds": float(rng.random() * 100),
            "config_hash": "ab" * 32,
            "stats": stats,
        })
    counts = {s: sum(r["status"] == s for r in slides) for s in ("done", "skipped", "failed")}
    return {"format": 1, "slidemask_version": "0.1.0", "started": "2025-01-01T00:00:00+00:00",
            "finished": "2025-01-01T01:00:00+00:00", "seconds": 3600.0, "host": "h",
            "python": "3.11", "config_hash": "ab" * 32, "counts": {**counts, "total": n},
            "executor": "this process", "slides": slides}


def _page_data(page: str) -> dict[str, Any]:
    found = re.search(r'<script type="application/json" id="slidemask-data">(.*?)</script>',
                      page, re.S)
    assert found is not None
    data: dict[str, Any] = json.loads(found.group(1))
    return data


def test_page_is_self_contained_and_escapes_its_data(tmp_path: Path) -> None:
    report = _records(40, tmp_path)
    page = render_html_report(report, tmp_path)
    # one inline data island, one inline script; nothing fetched from anywhere
    assert page.count("<script") == 2 and "alert(1)</script>" not in page
    assert not re.search(r'(src|href)="(https?:)?//', page)
    assert "default-src 'none'" in page
    data = _page_data(page)
    assert len(data["slides"]) == 40 and data["classes"] == ["tumour", "stroma"]
    assert data["slides"][3]["error"].endswith("</script><script>alert(1)</script>")
    outliers = {s["name"]: s["outlier"] for s in data["slides"] if s["outlier"]}
    assert outliers == {"slide_0007.svs": ["fraction", "class:tumour"]}
    seven = data["slides"][7]
    assert seven["area_mm2"] == pytest.approx(0.95e6 * 64 / 1e6, rel=1e-6)
    assert seven["classes"]["tumour"] == [pytest.approx(0.38), pytest.approx(64 * 0.38)]
    assert seven["thumb"] is None and seven["links"] == {}  # no outputs on disk


def test_links_and_summaries_come_from_the_outputs(tmp_path: Path) -> None:
    out = tmp_path / "out dir"
    out.mkdir()
    (out / "a b.zarr").mkdir()
    (out / "a b.png").write_bytes(b"png")
    (out / "a b.json").write_text(json.dumps({
        "tissue_area_mm2": 12.5, "components": 3, "warnings": ["empty mask: ..."],
        "classes": {"tumour": {"area_mm2": 2.0, "fraction_of_tissue": 0.1}},
    }))
    report = {"counts": {"done": 1, "total": 1}, "slides": [{
        "path": "/x/a b.svs", "output": str(out / "a b.zarr"), "status": "done",
        "error": None, "seconds": 1.0,
        "stats": {"foreground_pixels": 5, "total_pixels": 10, "fraction": 0.5, "mpp": 1.0},
    }]}
    (out / "report.json").write_text(json.dumps(report))
    page = write_html_report(out / "report.json")
    assert page == out / REPORT_HTML
    (row,) = _page_data(page.read_text(encoding="utf-8"))["slides"]
    assert row["links"] == {"zarr": "a%20b.zarr", "preview": "a%20b.png", "summary": "a%20b.json"}
    assert row["thumb"] == "a%20b.png"
    assert (row["area_mm2"], row["components"]) == (12.5, 3)
    assert row["warnings"] == ["empty mask: ..."] and row["classes"] == {"tumour": [0.1, 2.0]}
    assert not list(out.glob(".*"))  # written atomically: no temporary file left


def test_warnings_without_a_summary_follow_the_summary_rules(tmp_path: Path) -> None:
    report = {"slides": [{"path": "/x/e.svs", "output": None, "status": "done",
                          "stats": {"foreground_pixels": 0, "total_pixels": 10,
                                    "fraction": 0.0, "level": 0, "mpp": None}}]}
    (row,) = _page_data(render_html_report(report, tmp_path))["slides"]
    assert len(row["warnings"]) == 1 and row["warnings"][0].startswith("empty mask")


# --- in a browser -----------------------------------------------------------------------------


def _chromium(tmp_path: Path, url: str, *extra: str) -> subprocess.CompletedProcess[str]:
    assert CHROMIUM is not None
    command = [
        CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
        "--no-first-run", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--disable-dev-shm-usage", f"--user-data-dir={tmp_path / 'chromium'}",
        *extra, url,
    ]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=True)


def _selftest(dom: str) -> dict[str, Any]:
    found = re.search(r'<pre id="selftest">(.*?)</pre>', dom, re.S)
    assert found is not None, "the page's selftest did not run:\n" + dom[-2000:]
    result: dict[str, Any] = json.loads(found.group(1).replace("&amp;", "&"))
    return result


def _assert_not_blank(png: Path) -> None:
    image = cv2.imread(str(png))
    assert image is not None and image.shape[0] > 100 and image.shape[1] > 100
    colours = np.unique(image.reshape(-1, 3), axis=0)
    assert len(colours) > 16, f"{png}: only {len(colours)} colours; the page looks blank"


@pytest.fixture(scope="module")
def batch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A batch run through the CLI: five small synthetic slides with previews, one missing."""
    folder = tmp_path_factory.mktemp("batch")
    slides = [write_synthetic_slide(folder / f"s{i}.ome.tif", (512, 768), tile=128, seed=i)
              for i in range(5)]
    config = folder / "mask.yaml"
    config.write_text(CONFIG)
    out = folder / "out"
    argv = ["run", str(config), "-i", *map(str, slides), str(folder / "missing.svs"),
            "-o", str(out), "-q"]
    assert main(argv) == 1
    first = (out / REPORT_HTML).read_text(encoding="utf-8")
    # a resumed run rewrites the page: every slide is listed again, done ones as skipped
    assert main(argv) == 1
    assert (out / REPORT_HTML).read_text(encoding="utf-8") != first
    return out


def test_a_resumed_run_lists_every_slide(batch: Path) -> None:
    data = _page_data((batch / REPORT_HTML).read_text(encoding="utf-8"))
    assert [s["status"] for s in data["slides"]] == ["skipped"] * 5 + ["failed"]
    assert all(s["thumb"] == f"s{i}.png" for i, s in enumerate(data["slides"][:5]))
    assert all(s["components"] is not None for s in data["slides"][:5])


@needs_chromium
def test_small_batch_in_chromium(batch: Path, tmp_path: Path) -> None:
    url = (batch / REPORT_HTML).as_uri()
    report = json.loads((batch / "report.json").read_text(encoding="utf-8"))
    names = [Path(s["path"]).name for s in report["slides"]]

    shot = tmp_path / "table.png"
    _chromium(tmp_path, url, f"--screenshot={shot}", "--window-size=1280,800")
    _assert_not_blank(shot)

    dom = _chromium(tmp_path, url + "?selftest", "--dump-dom").stdout
    result = _selftest(dom)
    assert result["initial"] == names  # one row per slide, in the report's order
    # the DOM as the selftest left it: sorted by tissue fraction, descending
    rows = re.findall(r"<tr(?: class=\"[^\"]*\")? data-name=\"([^\"]+)\"", dom)
    assert rows == result["fraction_descending"] and sorted(rows) == sorted(names)
    assert "missing.svs: file not found" in dom
    by_fraction = sorted(names[:5], key=lambda n: report["slides"][names.index(n)]["stats"]
                         ["fraction"])
    assert result["fraction_ascending"] == [*by_fraction, "missing.svs"]  # no value: last
    assert result["fraction_descending"] == [*by_fraction[::-1], "missing.svs"]
    assert result["failed"] == ["missing.svs"]
    assert result["cards"] == 6
    assert result["hash"] == "#sort=-fraction"
    # thumbnails: the table's first screenful at once, the gallery's when scrolled to
    assert dom.count('loading="eager"') == 5 and dom.count('loading="lazy"') == 5

    # the URL's #sort= orders the rows when the page opens
    dom = _chromium(tmp_path, url + "#sort=-name", "--dump-dom").stdout
    assert re.findall(r'data-name="([^"]+)"', dom) == sorted(names, reverse=True)

    shot = tmp_path / "gallery.png"
    _chromium(tmp_path, url + "#view=gallery", f"--screenshot={shot}", "--window-size=1280,800")
    _assert_not_blank(shot)


@needs_chromium
def test_a_thousand_slides_load_fast(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "report.json").write_text(json.dumps(_records(1000, out)))
    page = write_html_report(out / "report.json")
    size = page.stat().st_size
    assert size <= 5 * 2**20, f"{size} bytes"

    started = time.perf_counter()
    dom = _chromium(tmp_path, page.as_uri() + "?selftest", "--dump-dom").stdout
    wall = time.perf_counter() - started
    result = _selftest(dom)
    assert len(result["initial"]) == 1000 and len(set(result["initial"])) == 1000
    assert result["fraction_descending"][0] == "slide_0007.svs"
    assert len(result["failed"]) == math.ceil((1000 - 3) / 97)
    # parse, build 1000 rows, sort, append, then style and layout of the whole page
    load_ms = result["render_ms"] + result["layout_ms"]
    print(f"report.html, 1000 slides: {size / 1e6:.2f} MB; script + layout {load_ms:.0f} ms; "
          f"ready {result['ready_ms']:.0f} ms after navigation; chromium run {wall:.1f} s")
    assert load_ms <= 2000 and result["ready_ms"] <= 2000


def test_class_shares_are_read_as_the_summary_writes_them() -> None:
    """The page's class columns and outliers read the key the summary writer uses."""
    from slidemask.writers.html_report import _class_share
    from slidemask.writers.summary import class_areas

    counts = np.zeros((2, 256), dtype=np.int64)
    counts[0, 0], counts[1, 1], counts[1, 2], counts[0, 2] = 60, 30, 10, 5
    areas = class_areas(counts, {"tissue": 1, "pen": 2}, mpp=100.0)
    share, area = _class_share(areas["pen"])
    assert share == pytest.approx(areas["pen"]["fraction_of_tissue"]) and share is not None
    assert area == pytest.approx(areas["pen"]["area_mm2"])
