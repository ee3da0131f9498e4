"""Time the global (cross-chunk) mask operations on a large synthetic mask. Not a test.

Usage (each stage in its own process so peak RSS is per stage)::

    python scripts/time_global_ops.py make /tmp/globalops 20000  # synthetic mask -> Zarr
    python scripts/time_global_ops.py run /tmp/globalops  # fill_holes(remove_small_objects(...))
    python scripts/time_global_ops.py reference /tmp/globalops  # in memory (scipy), compare
    python scripts/time_global_ops.py kernels [--quick] [--before REV]  # per-chunk kernel ms
    python scripts/time_global_ops.py slide SLIDE [BELOW] [--before REV]  # a slide's chunks

Each stage prints wall seconds and peak RSS (``ru_maxrss``) as one JSON line; ``kernels``
prints a table instead: for 2048² chunks (uniform noise, blobs with specks, smooth blobs, and
chunks of the noisy synthetic slide's ``grey < 200`` mask), the median ms of pass 1 and pass 2
of each global operation with one OpenCV thread, as the staged engine runs them before
(``summarize_chunk`` + ``apply`` on the chunk, with the chunk kernels of ``slidemask/kernels/
labels.py`` at git revision ``--before``, default 9da8f41: the last before pass 1 stored local
decisions) and after (``pass1_chunk`` + ``apply_stored`` on the stored tile, the working
tree's kernels). Each chunk sits in the middle of a 3 x 3 tiling of itself, so its lookup
table comes from a real merge. ``slide`` does the same for every 2048² chunk of a slide's
level-0 ``grey < BELOW`` mask (default 200; the slide is read whole into memory), running
``fill_holes`` and then ``remove_small_objects(100)`` on its result the way the engine does,
and checks the result against scipy / scikit-image on the whole mask.
"""

from __future__ import annotations

import itertools
import json
import resource
import sys
import time
from pathlib import Path
from typing import Any

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


def _chunks(quick: bool) -> dict[str, np.ndarray]:
    """2048² test chunks: synthetic noise and blobs, and the noisy synthetic slide's mask."""
    import cv2

    rng = np.random.default_rng(0)
    side = 2048
    out: dict[str, np.ndarray] = {}
    for p in (0.02, 0.2) if quick else (0.02, 0.1, 0.2, 0.4):
        out[f"noise p={p}"] = rng.random((side, side)) < p
    small = rng.random((side // 16, side // 16)).astype(np.float32)
    field = cv2.resize(cv2.GaussianBlur(small, (0, 0), 3), (side, side),
                       interpolation=cv2.INTER_CUBIC)
    tissue = field > np.quantile(field, 0.5)
    out["smooth blobs"] = tissue
    grain = rng.random((side, side))
    out["blobs+specks"] = np.where(tissue, grain > 0.08, grain < 0.02)
    out.update(_slide_chunks(quick))
    return out


def _slide_chunks(quick: bool) -> dict[str, np.ndarray]:
    """Chunks of the level-0 ``grey < 200`` mask of a 20000² noisy synthetic slide (JPEG q85
    round trip per 512² tile, as the slide stores them)."""
    import cv2
    import imagecodecs

    from slidemask.io.synthetic import Scene

    scene = Scene.make(20000, 20000, texture="noisy")
    where = {"slide tissue": (12288, 12288), "slide tissue edge": (8192, 4096),
             "slide glass": (10240, 10240)}
    if not quick:
        where["slide sparse tissue"] = (2048, 2048)
    out = {}
    for name, (y, x) in where.items():
        grey = np.empty((2048, 2048), np.uint8)
        for dy in range(0, 2048, 512):
            for dx in range(0, 2048, 512):
                rgb = scene.render(y + dy, x + dx, 512, 512)
                rgb = imagecodecs.jpeg8_decode(imagecodecs.jpeg8_encode(rgb, level=85))
                grey[dy:dy + 512, dx:dx + 512] = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
        out[name] = grey < 200
    return out


def _median_ms(fn: Any, repeat: int) -> float:
    """Median CPU ms of this thread (steadier than wall time on a shared machine)."""
    times = []
    for _ in range(repeat):
        t = time.thread_time()
        fn()
        times.append(time.thread_time() - t)
        if times[-1] > 0.3:  # slow enough: one run says it
            break
    times.sort()
    return 1e3 * times[len(times) // 2]


def _time_passes(
    plan: Any, mode: str, tile: np.ndarray, stored: np.ndarray, lut: Any, repeat: int
) -> tuple[float, float]:
    """Pass-1 and pass-2 ms of a chunk at (2048, 2048): ``before`` the way the staged runner
    ran them (summarize the chunk; apply to the chunk), ``after`` the way the engine does."""
    offset = (2048, 2048)
    if mode == "before":
        return (_median_ms(lambda: plan.summarize_chunk(tile, offset), repeat),
                _median_ms(lambda: plan.apply(tile, lut, **plan.apply_kwargs), repeat))
    return (_median_ms(lambda: plan.pass1_chunk(tile, offset), repeat),
            _median_ms(lambda: plan.apply_stored(stored, lut), repeat))


def _kernels_at(rev: str) -> Any:
    """``slidemask/kernels/labels.py`` as it was at git revision ``rev``, as a module."""
    import importlib.util
    import subprocess
    import tempfile

    root = Path(__file__).resolve().parents[1]
    text = subprocess.run(["git", "show", f"{rev}:slidemask/kernels/labels.py"], cwd=root,
                          check=True, capture_output=True, text=True).stdout
    path = Path(tempfile.mkdtemp()) / "labels_before.py"
    path.write_text(text)
    spec = importlib.util.spec_from_file_location("labels_before", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def kernels(quick: bool, before_rev: str) -> None:
    import dataclasses

    import cv2
    import scipy.ndimage as ndi

    from slidemask.ops.components import (
        chunk_lut,
        keep_largest_plan,
        label_plan,
        remove_small_objects_plan,
    )
    from slidemask.ops.holes import fill_holes_plan

    cv2.setNumThreads(1)
    plans = {
        "fill_holes": fill_holes_plan(),
        "fill_holes(50)": fill_holes_plan(max_hole_area=50),
        "remove_small(100)": remove_small_objects_plan(100),
        "keep_largest(3)": keep_largest_plan(3),
        "label": label_plan(8, np.dtype(np.int32)),
    }
    if quick:
        del plans["fill_holes(50)"], plans["keep_largest(3)"]
    old = _kernels_at(before_rev)
    before = {  # the same plans with the earlier chunk kernels, where that revision has them
        op: dataclasses.replace(plan, summarize=getattr(old, plan.summarize.__name__),
                                apply=getattr(old, plan.apply.__name__))
        for op, plan in plans.items()
        if plan is not None and hasattr(old, plan.summarize.__name__)
        and hasattr(old, plan.apply.__name__)
    }
    for op in plans.keys() - before.keys():
        print(f"# {op}: no chunk kernels of that name at {before_rev}; timed after only")
    repeat = 3 if quick else 5
    print("per 2048² chunk, one OpenCV thread, median CPU ms: pass 1 + pass 2 = total, "
          "before (summarize_chunk + apply) -> after (pass1_chunk + apply_stored)")
    for name, tile in _chunks(quick).items():
        n_fg = cv2.connectedComponents(tile.view(np.uint8), connectivity=8)[0] - 1
        n_bg = cv2.connectedComponents((~tile).view(np.uint8), connectivity=4)[0] - 1
        print(f"{name}: {n_fg} objects, {n_bg} background components, "
              f"{tile.mean():.0%} foreground", flush=True)
        filled = ndi.binary_fill_holes(np.tile(tile, (3, 3)))[2048:4096, 2048:4096]
        for op, plan in [*plans.items(), ("... after fill_holes", plans["remove_small(100)"])]:
            assert plan is not None
            chunk = filled if op.startswith("...") else tile
            big = np.tile(chunk, (3, 3))
            mask = da.from_array(big, chunks=chunk.shape)
            cells = {}
            key = op.replace("... after fill_holes", "remove_small(100)")
            for mode in ("before", "after") if key in before else ("after",):
                records = np.empty((3, 3), dtype=object)
                stored = {}
                run = before[key] if mode == "before" else plan
                for i, j in np.ndindex(3, 3):
                    part = big[i * 2048:(i + 1) * 2048, j * 2048:(j + 1) * 2048]
                    if mode == "before":
                        records[i, j], stored[i, j] = (
                            run.summarize_chunk(part, (i * 2048, j * 2048)), part)
                    else:
                        records[i, j], stored[i, j] = run.pass1_chunk(part, (i * 2048, j * 2048))
                try:
                    with dask.config.set(scheduler="sync"):
                        merged = run.merge(records, mask).compute()
                except (AttributeError, TypeError) as exc:  # an older record layout
                    print(f"    {op}: the records of {before_rev} do not fit today's merge "
                          f"({type(exc).__name__}: {exc}); timed after only")
                    continue
                cells[mode] = _time_passes(run, mode, chunk, stored[1, 1],
                                           chunk_lut(merged, 1, 1), repeat)
            a1, a2 = cells["after"]
            if "before" not in cells:
                print(f"    {op:<18} {'-':>28}  ->  {a1:7.1f} + {a2:5.1f} = {a1 + a2:6.1f}",
                      flush=True)
                continue
            b1, b2 = cells["before"]
            print(f"    {op:<18} {b1:8.1f} + {b2:6.1f} = {b1 + b2:8.1f}  ->  "
                  f"{a1:7.1f} + {a2:5.1f} = {a1 + a2:6.1f}", flush=True)


def _cpu(fn: Any, repeat: int = 3) -> tuple[Any, float]:
    """``fn()``'s result and its median CPU seconds (this thread) over ``repeat`` calls."""
    times = []
    for _ in range(repeat):
        t = time.thread_time()
        out = fn()
        times.append(time.thread_time() - t)
    return out, sorted(times)[len(times) // 2]


def _emulate(
    plans: dict[str, Any], mask: np.ndarray
) -> tuple[np.ndarray, dict[str, tuple[float, float]]]:
    """The engine's passes over 2048² chunks of ``mask`` by hand, for each plan (``before``:
    summarize_chunk + apply on the chunk itself; ``after``: pass1_chunk + apply_stored),
    chunk by chunk in turn so that both see the same load; mean CPU ms of pass 1 and pass 2
    a chunk, per plan. Returns ``after``'s result (checked equal to ``before``'s)."""
    from slidemask.ops.components import chunk_lut

    rows, cols = range(0, mask.shape[0], CHUNK), range(0, mask.shape[1], CHUNK)
    grid = list(itertools.product(enumerate(rows), enumerate(cols)))
    records = {k: np.empty((len(rows), len(cols)), dtype=object) for k in plans}
    stored: dict[str, dict[tuple[int, int], np.ndarray]] = {k: {} for k in plans}
    first = dict.fromkeys(plans, 0.0)
    for (i, r), (j, c) in grid:
        tile = mask[r:r + CHUNK, c:c + CHUNK]
        for mode, plan in plans.items():
            if mode == "before":
                records[mode][i, j], took = _cpu(
                    lambda p=plan, t=tile, o=(r, c): p.summarize_chunk(t, o))
                stored[mode][i, j] = tile
            else:
                (records[mode][i, j], stored[mode][i, j]), took = _cpu(
                    lambda p=plan, t=tile, o=(r, c): p.pass1_chunk(t, o))
            first[mode] += took
    merged = {}
    with dask.config.set(scheduler="sync"):
        for mode, plan in plans.items():
            merged[mode] = plan.merge(records[mode], da.from_array(mask, chunks=CHUNK)).compute()
    out = {k: np.empty(mask.shape, bool) for k in plans}
    second = dict.fromkeys(plans, 0.0)
    for (i, r), (j, c) in grid:
        for mode, plan in plans.items():
            lut = chunk_lut(merged[mode], i, j)
            if mode == "before":
                done, took = _cpu(lambda p=plan, t=stored[mode][i, j], u=lut: p.apply(
                    t, u, **p.apply_kwargs))
            else:
                done, took = _cpu(lambda p=plan, t=stored[mode][i, j], u=lut:
                                  p.apply_stored(t, u))
            out[mode][r:r + CHUNK, c:c + CHUNK] = done
            second[mode] += took
    assert np.array_equal(out["before"], out["after"])
    n = len(grid)
    return out["after"], {k: (1e3 * first[k] / n, 1e3 * second[k] / n) for k in plans}


def slide(path: str, below: int, before_rev: str) -> None:
    """fill_holes, then remove_small_objects(100), over every chunk of a slide's mask."""
    import dataclasses

    import cv2
    import scipy.ndimage as ndi
    import tifffile
    from skimage.morphology import remove_small_objects

    from slidemask.ops.components import remove_small_objects_plan
    from slidemask.ops.holes import fill_holes_plan

    cv2.setNumThreads(1)
    rgb = tifffile.imread(path, level=0)
    mask = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY) < below
    del rgb
    old = _kernels_at(before_rev)
    print(f"{path}: {mask.shape[0]}x{mask.shape[1]}, grey < {below}, 2048² chunks, "
          "mean CPU ms a chunk (one OpenCV thread, median of 3): pass 1 + pass 2")
    current = mask
    totals = {"before": 0.0, "after": 0.0}
    for plan in (fill_holes_plan(), remove_small_objects_plan(100)):
        assert plan is not None
        before = dataclasses.replace(plan, summarize=getattr(old, plan.summarize.__name__),
                                     apply=getattr(old, plan.apply.__name__))
        current, ms = _emulate({"before": before, "after": plan}, current)
        for mode, (p1, p2) in ms.items():
            totals[mode] += p1 + p2
        (b1, b2), (a1, a2) = ms["before"], ms["after"]
        print(f"  {plan.op:<14} {b1:6.1f} + {b2:5.1f}  ->  {a1:6.1f} + {a2:5.1f}", flush=True)
    print(f"  {'both':<14} {totals['before']:14.1f}  ->  {totals['after']:14.1f}")
    expected = remove_small_objects(ndi.binary_fill_holes(mask), max_size=99, connectivity=2)
    print("  equal to scipy/scikit-image on the whole mask:", bool(np.array_equal(current,
                                                                                expected)))


def main(argv: list[str]) -> int:
    rev = argv[argv.index("--before") + 1] if "--before" in argv else "9da8f41"
    if argv and argv[0] == "kernels":
        kernels("--quick" in argv, rev)
        return 0
    if argv and argv[0] == "slide":
        rest = [a for a in argv[1:] if a != "--before" and a != rev]
        slide(rest[0], int(rest[1]) if len(rest) > 1 else 200, rev)
        return 0
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
