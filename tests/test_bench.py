"""scripts/bench.py: its mosaic slide (level 0 cut from real scans), a case timed on it, and
how it compares runs measured on a machine whose load changes."""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest

from slidemask import open_slide
from tests.conftest import SHARED_SLIDES

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "bench.py"
CMU1 = SHARED_SLIDES / "CMU-1-Small-Region.svs"
pytestmark = pytest.mark.skipif(not CMU1.exists(), reason="shared/slides not present")


def load_bench():
    spec = importlib.util.spec_from_file_location("bench", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench"] = module
    spec.loader.exec_module(module)
    return module


def test_mosaic_slide_is_cut_from_the_real_scan(tmp_path):
    bench = load_bench()
    path = bench.write_mosaic_slide(tmp_path / "m.ome.tif", 2304, [CMU1], tile=256, quality=95)
    slide = open_slide(path)
    assert slide.levels[0].shape == (2304, 2304, 3) and slide.mpp == 0.5
    mosaic = np.asarray(slide.levels[0]).astype(int)
    source = np.asarray(open_slide(CMU1).levels[0]).astype(int)
    h, w = source.shape[:2]
    # block (0, 0): tile (0, 0) unmirrored from the source's origin; block (0, 1) mirrored
    assert np.abs(mosaic[:256, :256] - source[:256, :256]).mean() < 4  # JPEG, no more
    x0 = 503 % (w - 256)
    mirrored = source[:256, x0:x0 + 256][:, ::-1]
    assert np.abs(mosaic[:256, 2048:2304] - mirrored).mean() < 4
    assert h > 256


def test_bench_times_a_case_on_the_mosaic(tmp_path, capsys):
    bench = load_bench()
    code = bench.main(["--size", "1024", "--texture", "mosaic", "--mosaic-from", str(CMU1),
                       "--cases", "decode", "threshold", "--repeat", "1",
                       "--data-dir", str(tmp_path), "--json", str(tmp_path / "out.json")])
    assert code == 0
    report = json.loads((tmp_path / "out.json").read_text())
    out = capsys.readouterr().out
    assert "texture mosaic" in out
    threshold = report["results"]["threshold"]
    assert threshold["wall_s"] > 0 and threshold["cpu_s"] > 0
    assert threshold["cpu_ratio_to_decode"] > 0  # CPU time against the decode floor's
    assert "cpu x dec" in out


def test_ratios_pair_the_runs_of_a_round():
    bench = load_bench()
    # the machine slows down 2x in the second round: each round's ratio is 1.2
    runs = [{"wall_s": 1.2}, {"wall_s": 2.4}, {"wall_s": 1.2}]
    floor = [{"wall_s": 1.0}, {"wall_s": 2.0}, {"wall_s": 1.0}]
    assert bench.paired_ratio(runs, floor, "wall_s") == pytest.approx(1.2)
    # a failed run leaves rounds unpaired: the ratio of the medians
    assert bench.paired_ratio(runs[:2], floor, "wall_s") == pytest.approx(1.8 / 1.0)


def test_steal_share_is_read_where_the_machine_reports_it():
    bench = load_bench()
    ticks = bench.cpu_ticks()
    if not os.path.exists("/proc/stat"):
        assert ticks is None
        return
    assert ticks is not None
    steal, total = ticks
    assert 0 <= steal <= total and total > 0


def test_kernel_floor_makes_the_threshold_cases_mask(tmp_path):
    bench = load_bench()
    code = bench.main(["--size", "1500", "--texture", "noisy", "--cases", "threshold",
                       "kernel_floor", "--repeat", "1", "--data-dir", str(tmp_path),
                       "--json", str(tmp_path / "out.json")])
    assert code == 0
    results = json.loads((tmp_path / "out.json").read_text())["results"]
    # the same pixels in the mask: the floor does the threshold case's work, not less
    assert 0 < results["kernel_floor"]["fraction"] < 1
    assert results["kernel_floor"]["fraction"] == results["threshold"]["fraction"]


def test_qc_floor_makes_the_qc_cases_class_map(tmp_path):
    from slidemask.config import config_from_yaml
    from slidemask.io.synthetic import write_synthetic_slide
    from slidemask.pipeline import run_slide

    bench = load_bench()
    # levels down to 8 um per pixel (256²), as the floor reads them
    path = write_synthetic_slide(tmp_path / "s.ome.tif", 4096, tile=256, levels=5)
    floor = bench.qc_floor(path, 2)
    result = run_slide(path, config_from_yaml(bench.CASE_CONFIGS["qc"]), tmp_path / "out")
    assert result.status == "done", result.error
    # the same usable tissue: the floor does the qc case's work, not less
    assert 0 < floor["fraction"] < 1 and floor["blur_tiles"] > 0
    assert floor["fraction"] == result.stats["fraction"]
