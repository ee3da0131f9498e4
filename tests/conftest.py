"""Shared fixtures: the real scanner files and small synthetic slides."""

from __future__ import annotations

from pathlib import Path

import pytest

from slidemask.io.synthetic import write_synthetic_slide

SHARED_SLIDES = Path(__file__).resolve().parents[1].parent / "shared" / "slides"
REAL_SLIDES = (
    sorted(
        p
        for p in SHARED_SLIDES.glob("*")
        if p.suffix.lower() in {".svs", ".tif", ".tiff", ".qptiff", ".ndpi"}
    )
    if SHARED_SLIDES.is_dir()
    else []
)


def real_slide_params() -> list[object]:
    """One pytest param per real slide (skipped as a whole when the folder is absent)."""
    if not REAL_SLIDES:
        return [pytest.param(None, marks=pytest.mark.skip(reason="shared/slides not present"))]
    return [pytest.param(p, id=p.name) for p in REAL_SLIDES]


@pytest.fixture(scope="session")
def synthetic_slide(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 1536 x 2048 pyramidal JPEG OME-TIFF with 256-pixel tiles (about 0.3 s to write)."""
    path = tmp_path_factory.mktemp("synthetic") / "synthetic.ome.tif"
    return write_synthetic_slide(path, (1536, 2048), tile=256, seed=1)
