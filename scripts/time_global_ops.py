"""Time the global (cross-chunk) mask operations on a large synthetic mask. Not a test.

Usage (each stage in its own process so peak RSS is per stage)::

    python scripts/time_global_ops.py make /tmp/globalops 20000  # synthetic mask -> Zarr
    python scripts/time_global_ops.py run /tmp/globalops  # fill_holes(remove_small_objects(...))
    python scripts/time_global_ops.py reference /tmp/globalops  # in memory (scipy), compare

Each stage prints wall seconds and peak RSS (``ru_maxrss``) as one JSON line.
"""

from __future__ import annotations

import json
import resource
import sys
import time
from pathlib import Path

import dask
import dask.array as da
import numpy as np

CHUNK = 2048
MIN_AREA = 500  # pixels
MAX_HOLE = 5000  # pixels


def _blobs(block: np.ndarray, block_info: dict | None = None) -> np.ndarray:
    """Smooth blobs with holes and specks; a pure function of the pixel position."""
    (r0, r1), (c0, c1) = block_info[0]["array-location"]  # type: ignore[index]
    y = np.arange(r0, r1, dtype=np.float32)[:, None]
    x = np.arange(c0, c1, dtype=np.float32)[None, :]
    field = np.sin(x / 310.0) * np.sin(y / 370.0) + 0.35 * np.sin(x / 47.0 + y / 61.0)
    specks = np.sin(x * 1.7 + y * 0.9) * np.sin(x * 0.31 - y * 1.3) > 0.97
    return (field > 0.25) ^ specks


def make(folder: Path, side: int) -> dict:
    base = da.zeros((side, side), chunks=CHUNK, dtype=bool)
    mask = base.map_blocks(_blobs, dtype=bool, meta=np.empty((0, 0), bool))
    with dask.config.set(scheduler="threads"):
        mask.to_zarr(str(folder / "mask.zarr"), overwrite=True)
    return {"stage": "make", "shape": list(mask.shape)}


def run(folder: Path) -> dict:
    from slidemask.ops.components import remove_small_objects
    from slidemask.ops.holes import fill_holes

    mask = da.from_zarr(str(folder / "mask.zarr"))
    out = fill_holes(remove_small_objects(mask, MIN_AREA), max_hole_area=MAX_HOLE)
    with dask.config.set(scheduler="threads"):
        out.to_zarr(str(folder / "out.zarr"), overwrite=True)
    return {"stage": "run", "chunks": list(mask.numblocks), "min_area": MIN_AREA,
            "max_hole_area": MAX_HOLE}


def reference(folder: Path) -> dict:
    import scipy.ndimage as ndi
    from skimage.morphology import remove_small_objects

    mask = da.from_zarr(str(folder / "mask.zarr")).compute()
    t = time.perf_counter()
    kept = remove_small_objects(mask, max_size=MIN_AREA - 1, connectivity=2)
    bg, _ = ndi.label(~kept)
    border = np.unique(np.concatenate([bg[0], bg[-1], bg[:, 0], bg[:, -1]]))
    fill = np.bincount(bg.ravel()) <= MAX_HOLE
    fill[0] = False
    fill[border] = False
    expected = kept | fill[bg]
    seconds = time.perf_counter() - t
    got = da.from_zarr(str(folder / "out.zarr")).compute()
    return {"stage": "reference", "compute_s": round(seconds, 2),
            "equal": bool(np.array_equal(got, expected))}


def main(argv: list[str]) -> int:
    stage, folder = argv[0], Path(argv[1])
    folder.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    if stage == "make":
        report = make(folder, int(argv[2]) if len(argv) > 2 else 20000)
    elif stage == "run":
        report = run(folder)
    elif stage == "reference":
        report = reference(folder)
    else:
        raise SystemExit(f"unknown stage {stage!r}: make, run or reference")
    report["wall_s"] = round(time.perf_counter() - start, 2)
    report["peak_rss_mib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
