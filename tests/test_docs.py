"""The documentation builds with warnings as errors, and its generated parts match the code.

``mkdocs build --strict`` fails on any warning: a broken link or anchor, a docstring
mkdocstrings cannot parse, a generated block that does not exist. Skipped where the docs
extra (``pip install '.[docs]'``) is not installed.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from slidemask.config import STEPS

REPO = Path(__file__).resolve().parents[1]


def _missing() -> list[str]:
    missing = []
    for module in ("mkdocs", "mkdocstrings", "material"):
        if importlib.util.find_spec(module) is None:
            missing.append(module)
    try:
        if importlib.util.find_spec("mkdocstrings_handlers.python") is None:
            missing.append("mkdocstrings-python")
    except ModuleNotFoundError:
        missing.append("mkdocstrings-python")
    return missing


pytestmark = pytest.mark.skipif(
    bool(_missing()),
    reason=f"the docs extra is not installed ({', '.join(_missing())}): pip install '.[docs]'",
)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("site")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    started = time.perf_counter()
    build = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=120,
    )
    seconds = time.perf_counter() - started
    assert build.returncode == 0, build.stdout + build.stderr
    print(f"mkdocs build --strict: {seconds:.1f} s")
    assert seconds <= 60
    return out


def _page(site: Path, name: str) -> str:
    return (site / name / "index.html").read_text(encoding="utf-8")


def test_configuration_reference_lists_every_step(site: Path) -> None:
    page = _page(site, "configuration")
    for name, spec in STEPS.items():
        assert f'id="step-{name}"' in page, name
        assert f"{spec.function.__module__}.{spec.function.__name__}" in page
        for field in spec.params.model_fields:
            assert f"<code>{field}</code>" in page, (name, field)
    assert "µm" in page and "pixels" in page  # units


def test_presets_cli_and_api_pages(site: Path) -> None:
    presets = _page(site, "presets")
    for preset in sorted((REPO / "configs").glob("*.yaml")):
        assert f'id="preset-{preset.stem}"' in presets
    assert "mahmoodlab/CLAM" in presets and "TissueDetectionHE" in presets
    assert "SimpleTissueDetection2" in presets
    cli = _page(site, "cli")
    assert "usage: slidemask run" in cli and "SLIDEMASK_PROGRESS" in cli
    api = "".join(_page(site, f"api/{name}") for name in ("slides", "operations", "running",
                                                           "writers", "config"))
    for name in ("slidemask.io.open_slide", "slidemask.ops.local.binary_closing",
                 "slidemask.batch.run_batch", "slidemask.writers.zarr.write_zarr",
                 "slidemask.writers.html_report.write_html_report"):
        assert f'id="{name}"' in api, name
    # the getting-started page shows the demo's preview and links its report, both made now
    assert re.search(r'<img[^>]+src="\.\./img/demo/synthetic\.png"', _page(site,
                                                                          "getting-started"))
    assert (site / "img" / "demo" / "report.html").stat().st_size > 0
