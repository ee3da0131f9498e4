#!/usr/bin/env python3
"""Benchmark slidemask against pure decoding on a synthetic slide of any size.

Each case runs in its own Python process, so the peak RSS reported is that case's alone.
Wall time is the median of ``--repeat`` runs. The cases take turns, round after round, and
each ratio (``x decode``, ``x thresh``, ``cpu x dec``) is the median over rounds of the ratio
between two runs of the same round, which shared the machine's load. ``steal %`` is the
median share of the machine's CPU time that its host took away during the case's runs
(virtual machines; ``/proc/stat``): ratios measured while it is high are in doubt.
``cpu s`` is the case's CPU time (user + system, all threads; the command's process for
``cli_threshold``), and ``cpu x dec`` its ratio to the decode floor's: on a shared virtual
machine whose host takes cores away (steal time), wall times swing by 2x from hour to hour
while CPU time, which the guest does not charge for stolen time, stays put, so it tells the
work a case adds to decoding when the wall ratios are in doubt.

    python scripts/bench.py --size 20000                 # threshold, hsv, decode floor
    python scripts/bench.py --size 50000 --cases decode threshold median_closing
    python scripts/bench.py --size 8000 --cases all --json out.json
    python scripts/bench.py --size 50000 --cases threshold tissue_mpp8 --steady
    python scripts/bench.py --size 20000 --cases threshold global --texture both --min-area 100
    python scripts/bench.py --size 20000 --cases threshold threshold_s3 threshold_openslide
    python scripts/bench.py --size 20000 --cases decode threshold threshold_openslide --layout svs

Slides: ``--texture smooth`` (default: solid tissue, a smooth level-0 mask), ``noisy`` (grainy
light tissue and dusty glass: the level-0 ``grey < 200`` mask has thousands of specks and up to
10^5 pinholes per 2048² chunk, as thresholded real H&E has), or ``both`` (one table each).
The threshold is ``--below`` (default 220 on smooth slides, 200 on noisy ones). ``--stain``
colours the smooth tissue: ``he`` (default), ``dab`` (IHC: DAB brown and pale haematoxylin
counterstain) or ``faint`` (pale, low-contrast), e.g. to time ``tissue_mpp8`` on each.
``--texture mosaic --mosaic-from SLIDE ...`` cuts level 0 (only) from small real scans instead,
2048² blocks of them, e.g. ``--mosaic-from CMU-1-Small-Region.svs tcga-cr-7395-01a-01-ts1.svs``:
the texture of thresholded real tissue, for the level-0 cases.

Cases:
    decode          every level-0 tile read and decoded to RGB with tifffile, N threads (the floor)
    read            the same through slidemask's lazy reader (dask, N threads)
    threshold       grey < below at level 0 -> Zarr
    kernel_floor    the least work an exact threshold -> Zarr pass does, with no framework: N
                    threads each take 2048² chunks and, tile by tile, read and decode (the same
                    decoder as decode, into a reused buffer), make grey and compare into the
                    chunk, then count it, encode it as the Zarr writer does and write the file
                    (no dask, no Zarr metadata): its ratio to decode is the floor of the
                    threshold cases' ratios
    qc_floor        the least work configs/qc.yaml does, with no framework: N threads decode the
                    8 µm level whole into memory, run each mask's steps once on the whole
                    array (slidemask's kernels; OpenCV morphology and labelling for the global
                    steps), decode and measure only the 2 µm tiles blur is judged on (those
                    within reach of tissue the output can still use: not glass, ink, border,
                    fold or bubble), make the class map, trace each class's contours with
                    OpenCV and encode a 1024-px PNG (no Zarr, GeoJSON or summary files: a
                    floor, not the job); its steps are those of configs/qc.yaml as shipped,
                    in 8 µm pixels. Its ratio to threshold is the floor of qc's
    threshold_s3    the same, the slide read from a local S3 server (moto on 127.0.0.1, started
                    by the bench; its process is not the case's) by s3:// URL, output on disk;
                    moto made to read only the requested bytes of a range request, as S3 does
                    (--moto-as-is: moto as shipped, which reads the whole object each time)
    threshold_openslide
                    the same, the slide read with the OpenSlide backend (OpenSlide reads the
                    synthetic OME-TIFF's level 0 as a generic tiled TIFF; with
                    --layout svs, an Aperio SVS through its Aperio driver)
    hsv             HSV range (pink/purple tissue) at level 0 -> Zarr
    median_closing  grey -> median 7 -> threshold -> closing radius 4 -> Zarr
    global          threshold -> fill_holes -> remove_small_objects(--min-area) -> Zarr
    api_threshold   threshold as public API calls on the lazy level: write_zarr(threshold(
                    to_gray(level0), below=...)) (the config cases go through run_slide)
    api_global      the same with fill_holes and remove_small_objects(--min-area)
    keep_largest    threshold -> keep_largest(n=3) -> Zarr (every object of every chunk measured)
    api_label       write_zarr(label(threshold(to_gray(level0), below=...))): int32 labels
    tissue_mpp8     configs/tissue.yaml (8 µm per pixel, from the pyramid) -> Zarr, PNG, JSON
    qc              configs/qc.yaml: tissue and every artifact (blur at 2 µm per pixel, the rest
                    at 8) -> mask, class map (OME-Zarr labels), GeoJSON, legend PNG, JSON
    cli_threshold   the threshold case as the command a batch job runs (`slidemask run CONFIG -i
                    SLIDE -o DIR`) in a fresh process: its imports, reports and start-up
                    counted too (peak RSS: that process's)
    naive           whole image in RAM: tifffile.imread + cv2 grey + threshold
                    (skipped when it would not fit)
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
"""The checkout this script belongs to: its slidemask is the one measured, also in the cases'
own processes, whatever else is installed."""
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
os.environ["PYTHONPATH"] = os.pathsep.join(
    [str(ROOT), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
)

ALL_CASES = [
    "decode",
    "read",
    "threshold",
    "kernel_floor",
    "qc_floor",
    "threshold_s3",
    "threshold_openslide",
    "hsv",
    "median_closing",
    "global",
    "api_threshold",
    "api_global",
    "keep_largest",
    "api_label",
    "tissue_mpp8",
    "qc",
    "cli_threshold",
    "naive",
]
DEFAULT_CASES = ["decode", "read", "threshold", "hsv"]


MOSAIC_BLOCK = 2048
"""Edge of the blocks of a mosaic slide: each is one source scan's level 0, read from its own
offset and mirrored in every other block, so that no two neighbouring blocks repeat."""


def write_mosaic_slide(
    path: Path, size: int, sources: list[Path], *, tile: int = 512, quality: int = 85
) -> Path:
    """A ``size``² JPEG-tiled OME-TIFF (level 0 only, 0.5 µm per pixel) whose pixels are real
    scans: blocks of :data:`MOSAIC_BLOCK` pixels, each cut from one of ``sources`` (their
    level 0, read whole: small scans such as CMU-1-Small-Region) at an offset of its own and
    mirrored in every other block. Thresholded, its level-0 mask has real tissue's texture
    (specks, pinholes, ragged edges), which no synthetic texture was tuned to."""
    import numpy as np
    import tifffile

    from slidemask import open_slide

    images = [np.asarray(open_slide(p).levels[0]) for p in sources]
    for p, image in zip(sources, images, strict=True):
        if min(image.shape[:2]) <= tile:
            raise SystemExit(f"{p}: level 0 of {image.shape[:2]} is too small for {tile}² tiles")

    def tiles() -> Iterator[np.ndarray]:
        for ty in range(0, size, tile):
            for tx in range(0, size, tile):
                by, bx = ty // MOSAIC_BLOCK, tx // MOSAIC_BLOCK
                image = images[(by * 13 + bx * 7) % len(images)]
                h, w = image.shape[:2]
                y0 = (by * 701 + ty % MOSAIC_BLOCK) % (h - tile)
                x0 = (bx * 503 + tx % MOSAIC_BLOCK) % (w - tile)
                crop = image[y0:y0 + tile, x0:x0 + tile, :3]
                yield np.ascontiguousarray(crop[:, ::-1] if (by + bx) % 2 else crop)

    with tifffile.TiffWriter(path, bigtiff=True, ome=True) as tw:
        tw.write(tiles(), shape=(size, size, 3), dtype=np.uint8, tile=(tile, tile),
                 photometric="rgb", compression="jpeg", compressionargs={"level": quality},
                 metadata={"PhysicalSizeX": 0.5, "PhysicalSizeXUnit": "µm",
                           "PhysicalSizeY": 0.5, "PhysicalSizeYUnit": "µm"})
    return path


def slide_path(
    data_dir: Path, size: int, tile: int, quality: int, texture: str = "smooth", stain: str = "he",
    layout: str = "ome",
) -> Path:
    suffix = ("" if texture == "smooth" else f"-{texture}") + ("" if stain == "he" else f"-{stain}")
    extension = ".svs" if layout == "svs" else ".ome.tif"
    return data_dir / f"synthetic-{size}-t{tile}-q{quality}{suffix}{extension}"


def ensure_slide(
    data_dir: Path, size: int, tile: int, quality: int, texture: str = "smooth", stain: str = "he",
    layout: str = "ome", mosaic_from: list[Path] | None = None,
) -> Path:
    from slidemask.io.synthetic import write_synthetic_slide

    path = slide_path(data_dir, size, tile, quality, texture, stain, layout)
    if texture == "mosaic":
        if not mosaic_from:
            raise SystemExit("--texture mosaic needs --mosaic-from SLIDE [SLIDE ...]")
        tag = "-".join(p.name.split(".")[0] for p in mosaic_from)
        path = path.with_name(path.name.replace("-mosaic", f"-mosaic-{tag}"))
    if not path.exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(".partial")
        t0 = time.perf_counter()
        if texture == "mosaic":
            write_mosaic_slide(partial, size, mosaic_from or [], tile=tile, quality=quality)
        else:
            write_synthetic_slide(
                partial, size, tile=tile, quality=quality, texture=texture, stain=stain,
                aperio=layout == "svs",
            )
        partial.rename(path)
        print(
            f"# wrote {path.name} ({path.stat().st_size / 2**20:.0f} MiB) "
            f"in {time.perf_counter() - t0:.1f} s",
            file=sys.stderr,
        )
    return path


def peak_rss_kib() -> int:
    """This process's peak resident set size (VmHWM), in KiB.

    ``getrusage().ru_maxrss`` is not used: after fork+exec Linux carries the parent's peak over.
    """
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def run_case(
    case: str, path: str | Path, threads: int, chunk: int, out_dir: Path, steady: bool = False,
    below: int = 220, min_area: int = 5000,
) -> dict[str, Any]:
    """Run one case in this process; return its wall time (s) and this process's peak RSS.

    Imports happen before the clock starts: a batch job pays them once, not per slide. Only
    what slidemask itself imports is imported (not ``distributed``, nor scipy's graph module:
    a local run never loads them, and a case that did would pay for it in its figures); so
    does the S3 client of ``threshold_s3`` (about 0.07 s; every request of the slide is timed).
    With ``steady`` a slidemask case is timed a second time in the same process (``steady_s``):
    what each further slide costs in a batch, where the process, its memory allocator and
    OpenCV are warm (the first run also pays first-touch page faults and library set-up).
    """
    import cv2  # noqa: F401
    import dask
    import numpy as np
    import tifffile  # noqa: F401
    import zarr  # noqa: F401

    import slidemask.pipeline

    if case == "threshold_s3":
        import s3fs  # noqa: F401

        from slidemask.storage import filesystem

        # the S3 client (botocore's service model), which a batch also sets up once per process
        filesystem(str(path))[0].connect()
    if case == "threshold_openslide":
        # run_slide opens the slide with open_slide's automatic choice (tifffile here): the
        # case asks for OpenSlide instead, everything else the same as the threshold case
        import functools

        import openslide  # noqa: F401

        from slidemask.io import open_slide

        slidemask.pipeline.open_slide = functools.partial(  # type: ignore[attr-defined]
            open_slide, backend="openslide"
        )

    t0, c0 = time.perf_counter(), time.process_time()
    out = out_dir / f"{case}.zarr"
    extra: dict[str, Any] = {}
    if case == "cli_threshold":
        # the command a batch job runs, in a fresh process: imports and reports included
        config_file = out_dir / "cli_threshold.yaml"
        text = case_config(case, below, min_area)
        config_file.write_text(text if "chunk_size:" in text else text + f"\nchunk_size: {chunk}\n")
        t0, before = time.perf_counter(), _children_cpu()
        subprocess.run(
            [sys.executable, "-m", "slidemask", "run", str(config_file), "-i", str(path), "-o",
             str(out_dir / "cli"), "--overwrite", "-q"],
            check=True, stdout=subprocess.DEVNULL,
        )
        wall, cpu = time.perf_counter() - t0, _children_cpu() - before
        child_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        shutil.rmtree(out_dir / "cli", ignore_errors=True)
        return {"case": case, "wall_s": wall, "cpu_s": cpu, "peak_rss_mib": child_kib / 1024}
    if case == "decode":
        import tifffile

        with tifffile.TiffFile(path) as tf:
            page = tf.series[0].levels[0].pages[0]
            assert page is not None
            for segment, _index, _shape in page.segments(maxworkers=threads):
                del segment
    elif case == "kernel_floor":
        extra["fraction"] = kernel_floor(Path(path), threads, chunk, below, out)
    elif case == "qc_floor":
        extra.update(qc_floor(Path(path), threads))
    elif case == "naive":
        import cv2
        import tifffile

        rgb = tifffile.imread(path, level=0)
        grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
        del rgb
        mask = grey < below
        extra["fraction"] = float(mask.mean())
    else:
        from slidemask.io import open_slide

        slide = open_slide(path, chunk_size=chunk)
        level0: Any = slide.levels[0]
        with dask.config.set(scheduler="threads", num_workers=threads):
            if case == "read":
                blocks = level0.map_blocks(
                    lambda b: np.zeros((1, 1, 1), np.uint8),
                    chunks=(1, 1, 1),
                    dtype=np.uint8,
                    meta=np.empty((0, 0, 0), np.uint8),
                )
                blocks.sum().compute()
            elif case in ("api_threshold", "api_global", "api_label"):
                # the same jobs written as public API calls on the lazy level, as a user would
                import slidemask as sm

                mask = sm.threshold(sm.to_gray(level0), below=below)
                if case == "api_global":
                    mask = sm.remove_small_objects(sm.fill_holes(mask), min_area)
                if case == "api_label":
                    mask = sm.label(mask)
                sm.write_zarr(mask, out, overwrite=True)
            else:
                from slidemask.config import config_from_yaml
                from slidemask.pipeline import run_slide

                text = case_config(case, below, min_area)
                if "chunk_size:" not in text:
                    text += f"\nchunk_size: {chunk}\n"
                config = config_from_yaml(text)
                result = run_slide(path, config, out_dir, output=out, overwrite=True)
                if result.status != "done":
                    raise RuntimeError(result.error)
                extra["fraction"] = result.stats.get("fraction")
                if case == "threshold_s3":
                    from slidemask.storage import STATS

                    extra["requests"] = STATS["range_requests"]
                    extra["fetched_mib"] = round(STATS["bytes_fetched"] / 2**20, 1)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    if steady and SOURCE_CASES.get(case, case) in CASE_CONFIGS:
        # the same job again in this process, as a batch runs slide after slide
        from slidemask.config import config_from_yaml
        from slidemask.pipeline import run_slide

        with dask.config.set(scheduler="threads", num_workers=threads):
            t1 = time.perf_counter()
            text = case_config(case, below, min_area)
            config = config_from_yaml(text if "chunk_size:" in text
                                      else text + f"\nchunk_size: {chunk}\n")
            again = run_slide(path, config, out_dir, output=out, overwrite=True)
            extra["steady_s"] = time.perf_counter() - t1
        if again.status != "done":
            raise RuntimeError(again.error)
    peak_kib = peak_rss_kib()
    if out.exists():
        extra["zarr_mib"] = round(
            sum(f.stat().st_size for f in out.rglob("*") if f.is_file()) / 2**20, 2
        )
        shutil.rmtree(out)
    return {"case": case, "wall_s": wall, "cpu_s": cpu, "peak_rss_mib": peak_kib / 1024,
            **extra}


def kernel_floor(path: Path, threads: int, chunk: int, below: int, out: Path) -> float:
    """The ``kernel_floor`` case: level 0 of a tiled 8-bit RGB JPEG slide thresholded
    (``grey < below``, exactly as slidemask computes it) into LZ4 chunk files in ``out``, in
    ``threads`` threads with nothing but the kernels; returns the mask's foreground fraction."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    import cv2
    import imagecodecs
    import numpy as np
    import tifffile

    from slidemask.writers.zarr import encode_chunk, nonzero_count

    cv2.setNumThreads(1)
    with tifffile.TiffFile(path) as tf:
        page = tf.series[0].levels[0].pages[0]
        assert isinstance(page, tifffile.TiffPage) and page.is_tiled and page.compression == 7
        offsets, counts = page.dataoffsets, page.databytecounts
        tables, (height, width) = page.jpegtables, page.shape[:2]
        th, tw = page.tilelength, page.tilewidth
        colorspace, outcolorspace = tifffile.tifffile.jpeg_decode_colorspace(
            page.photometric, page.planarconfig, page.extrasamples, page.is_jfif
        )
    across = -(-width // tw)
    local = threading.local()
    out.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDONLY)

    def one(origin: tuple[int, int]) -> int:
        if not hasattr(local, "rgb"):
            local.rgb = np.empty((th, tw, 3), np.uint8)
            local.grey = np.empty((th, tw), np.uint8)
        y0, x0 = origin
        y1, x1 = min(height, y0 + chunk), min(width, x0 + chunk)
        mask = np.empty((y1 - y0, x1 - x0), np.uint8)
        for ty in range(y0 // th, (y1 - 1) // th + 1):
            for tx in range(x0 // tw, (x1 - 1) // tw + 1):
                index = ty * across + tx
                data = os.pread(fd, int(counts[index]), int(offsets[index]))
                rgb = imagecodecs.jpeg_decode(
                    data, tables=tables, colorspace=colorspace, outcolorspace=outcolorspace,
                    shape=(th, tw), out=local.rgb,
                )
                r0, c0 = ty * th - y0, tx * tw - x0
                h, w = min(th, y1 - y0 - r0), min(tw, x1 - x0 - c0)
                grey = cv2.cvtColor(rgb[:h, :w], cv2.COLOR_RGB2GRAY, dst=local.grey[:h, :w])
                cv2.threshold(grey, below - 1, 1, cv2.THRESH_BINARY_INV,
                              dst=mask[r0:r0 + h, c0:c0 + w])
        count = nonzero_count(mask)
        (out / f"{y0}.{x0}").write_bytes(encode_chunk(mask))
        return count

    origins = [(y, x) for y in range(0, height, chunk) for x in range(0, width, chunk)]
    try:
        with ThreadPoolExecutor(threads) as pool:
            foreground = sum(pool.map(one, origins))
    finally:
        os.close(fd)
    return foreground / (height * width)


def qc_floor(path: Path, threads: int) -> dict[str, Any]:
    """The ``qc_floor`` case: the work of ``configs/qc.yaml`` on a slide whose pyramid has
    levels at 8 and 2 µm per pixel, done once on whole in-memory arrays in ``threads`` threads
    with no framework. Returns the class map's tissue share (label 1), the number of 2 µm
    tiles decoded, and the seconds of each part (decode at 8 µm, the 8 µm masks, blur, the
    class map's outputs)."""
    from concurrent.futures import ThreadPoolExecutor

    import cv2
    import numpy as np

    from slidemask.io import open_slide
    from slidemask.kernels import artifacts as ka
    from slidemask.kernels import color as kc
    from slidemask.kernels import density as kd
    from slidemask.kernels.morphology import disk_footprint

    def morph(mask: Any, op: int, radius: int) -> Any:
        return cv2.morphologyEx(mask.view(np.uint8), op, disk_footprint(radius)).view(bool)

    def grow(mask: Any, radius: int) -> Any:
        return morph(mask, cv2.MORPH_DILATE, radius)

    pixel_um2 = 64.0  # the area of one 8 um pixel

    def big(mask: Any, min_um2: float) -> Any:  # remove_small_objects
        _, labels, stats, _ = cv2.connectedComponentsWithStats(mask.view(np.uint8),
                                                                connectivity=8)
        keep = stats[:, cv2.CC_STAT_AREA] >= min_um2 / pixel_um2
        keep[0] = False
        return keep[labels]

    def edge_labels(labels: Any, count: int) -> Any:
        edge = np.zeros(count, bool)
        for side in (labels[0], labels[-1], labels[:, 0], labels[:, -1]):
            edge[side] = True
        return edge

    def fill(mask: Any, max_um2: float) -> Any:  # fill_holes
        count, labels, stats, _ = cv2.connectedComponentsWithStats((~mask).view(np.uint8),
                                                                   connectivity=4)
        hole = (stats[:, cv2.CC_STAT_AREA] <= max_um2 / pixel_um2) & ~edge_labels(labels, count)
        hole[0] = False
        return mask | hole[labels]

    def touching_edge(mask: Any) -> Any:
        count, labels = cv2.connectedComponents(mask.view(np.uint8), connectivity=8)
        keep = edge_labels(labels, count)
        keep[0] = False
        return keep[labels]

    slide = open_slide(path)
    level8, level2 = slide.level_for_mpp(8.0), slide.level_for_mpp(2.0)
    if slide.level_mpp(level8) != 8.0 or slide.level_mpp(level2) != 2.0:
        raise ValueError(f"qc_floor needs pyramid levels at 8 and 2 um per pixel: {path}")
    reader8, reader2 = slide.readers[level8], slide.readers[level2]
    height, width = reader8.geometry.shape[:2]
    tile = reader8.geometry.segment_rows
    cv2.setNumThreads(1)
    pool = ThreadPoolExecutor(threads)
    t0 = time.perf_counter()
    rgb = np.empty((height, width, 3), np.uint8)

    def decode8(origin: tuple[int, int]) -> None:
        y, x = origin
        rgb[y:y + tile, x:x + tile] = reader8[y:min(height, y + tile), x:min(width, x + tile)]

    list(pool.map(decode8, [(y, x) for y in range(0, height, tile)
                            for x in range(0, width, tile)]))
    t1 = time.perf_counter()
    background = kd.background_from_histograms(
        kd.channel_histograms(rgb), dtype=np.dtype(np.uint8), percentile=99.0, floor=None
    )

    def density_masks() -> tuple[Any, ...]:
        density = kd.optical_density_kernel(rgb, background=background)
        tissue = fill(big(morph(density > 0.1, cv2.MORPH_CLOSE, 2), 10000), 100000)
        glass = density < 0.1
        fold = morph(morph(density > 2.5, cv2.MORPH_CLOSE, 4), cv2.MORPH_OPEN, 3)
        fold = grow(fill(big(fold, 5000), 20000), 1)
        return tissue, glass, grow(glass, 1), fold

    def colour_masks() -> tuple[Any, ...]:
        ink = big(ka.pen_ink_kernel(kd.white_balance_kernel(rgb, background=background),
                                    colors=("blue", "green", "red", "black")), 5000)
        flat = ka.flat_kernel(kc.rgb_to_gray(rgb), ksize=11, max_diff=2.55)
        flat = grow(fill(big(morph(flat, cv2.MORPH_OPEN, 2), 32000), 32000), 4)
        black = ka.black_kernel(rgb, max_value=60, max_chroma=25, max_saturation=150)
        border = grow(touching_edge(ka.straight_band_kernel(black, length=125, width=2)), 1)
        return grow(ink, 1), grow(ink, 4), flat, border

    first, second = pool.submit(density_masks), pool.submit(colour_masks)
    (tissue, glass, glass_rim, fold), (pen, pen_rim, flat, border) = (first.result(),
                                                                      second.result())
    t2 = time.perf_counter()
    # blur: judged where the output can use it (slidemask.ops.relevance: tissue that is not
    # glass and no class above blur), widened by the opening's reach; measured there and
    # within the average's reach of it, on only the 2 um tiles that hold such cells
    depth = ka.smoothing_depth(2.0)
    where = tissue & ~glass & ~(border | pen | (fold & ~pen_rim) | (flat & ~glass_rim))
    kept = ka.square_dilate_kernel(where, reach=4)
    needed = ka.square_dilate_kernel(kept, reach=depth)
    rows2, cols2 = reader2.geometry.shape[:2]
    tile2 = reader2.geometry.segment_rows
    cells = np.zeros((height, width), ka.packed_dtype(4))
    wanted = [(y, x) for y in range(0, rows2, tile2) for x in range(0, cols2, tile2)
              if needed[y // 4:(y + tile2) // 4, x // 4:(x + tile2) // 4].any()]

    def measure(origin: tuple[int, int]) -> None:
        y, x = origin
        grey = kc.rgb_to_gray(reader2[y:min(rows2, y + tile2), x:min(cols2, x + tile2)])
        block = ka.sharpness_cells_kernel(grey, factor=4, glass=ka.GLASS_GREY)
        cells[y // 4:y // 4 + block.shape[0], x // 4:x // 4 + block.shape[1]] = block

    list(pool.map(measure, wanted))
    cells[~needed] = 0

    def ratio(span: tuple[int, int]) -> Any:
        a, b = span
        top, bottom = max(0, a - depth), min(height, b + depth)
        # floor: sharpness's min_detail (2 grey levels) over a 4-pixel cell's 2 * 4 * 2
        # second differences, as slidemask.ops.artifacts.sharpness sets it
        out = ka.sharpness_ratio_kernel(cells[top:bottom], floor=32, sigma=2.0, cell=4)
        return out[a - top:a - top + b - a]

    halves = [(k * height // threads, (k + 1) * height // threads) for k in range(threads)]
    sharpness = np.concatenate(list(pool.map(ratio, halves)))
    sharpness[~kept] = 0
    blur = morph(sharpness < 1.2, cv2.MORPH_OPEN, 4)
    t3 = time.perf_counter()
    classes = ka.class_map_kernel(
        border, pen, fold & tissue & ~pen_rim, flat & tissue & ~glass_rim,
        blur & tissue & ~glass, tissue, values=[6, 2, 4, 5, 3, 1],
    )

    def trace(value: int) -> int:
        found = cv2.findContours((classes == value).view(np.uint8), cv2.RETR_CCOMP,
                                 cv2.CHAIN_APPROX_SIMPLE)[0]
        return len(found)

    list(pool.map(trace, range(1, 7)))
    scale = 1024 / max(height, width)  # the preview's longest side: 1024 pixels
    preview = cv2.resize(rgb, (round(width * scale), round(height * scale)),
                         interpolation=cv2.INTER_AREA)
    cv2.imencode(".png", preview)
    t4 = time.perf_counter()
    pool.shutdown()
    return {
        "fraction": float((classes == 1).mean()),
        "blur_tiles": len(wanted),
        "parts_s": {"decode_8um": round(t1 - t0, 3), "masks_8um": round(t2 - t1, 3),
                    "blur_2um": round(t3 - t2, 3), "outputs": round(t4 - t3, 3)},
    }


def _children_cpu() -> float:
    """User plus system CPU seconds of this process's finished children."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


CASE_CONFIGS = {
    # the recommended tissue preset (8 µm per pixel from the pyramid, preview and summary)
    "tissue_mpp8": (Path(__file__).resolve().parents[1] / "configs" / "tissue.yaml").read_text(),
    # slide quality control: tissue, pen, blur (2 µm per pixel), fold, bubble, border, class map
    "qc": (Path(__file__).resolve().parents[1] / "configs" / "qc.yaml").read_text(),
    # the slidemask job each case times, as a configuration (the same path the CLI takes)
    "threshold": "masks: {tissue: [gray, {threshold: {below: 220}}]}",
    "hsv": "masks: {tissue: [{hsv_range: {lower: [120, 20, 50], upper: [179, 255, 235]}}]}",
    "median_closing": "masks: {tissue: [gray, {median_blur: {ksize: 7}}, "
    "{threshold: {below: 220}}, {closing: {radius: 4}}]}",
    "keep_largest": "masks: {tissue: [gray, {threshold: {below: 220}}, {keep_largest: {n: 3}}]}",
    "global": "masks: {tissue: [gray, {threshold: {below: 220}}, fill_holes, "
    "{remove_small_objects: {min_area: 5000}}]}",
}


SOURCE_CASES = {"threshold_s3": "threshold", "threshold_openslide": "threshold",
                "cli_threshold": "threshold"}
"""Cases that time another case's configuration with the slide read another way."""


def case_config(case: str, below: int = 220, min_area: int = 5000) -> str:
    """The configuration a case times, with the grey threshold and the objects' minimum area
    of this run (the defaults give :data:`CASE_CONFIGS`)."""
    case = SOURCE_CASES.get(case, case)
    text = CASE_CONFIGS[case]
    if case in ("threshold", "median_closing", "global", "keep_largest"):
        text = text.replace("below: 220", f"below: {below}")
    if case == "global":
        text = text.replace("min_area: 5000", f"min_area: {min_area}")
    return text


BATCH_MODES: dict[str, dict[str, Any]] = {
    # name: execution settings (each slide's compute uses the worker's threads)
    "threads": {"scheduler": "threads", "workers": None},
    "1 process": {"scheduler": "processes", "workers": 1, "threads_per_worker": 1},
    "2 processes": {"scheduler": "processes", "workers": 2, "threads_per_worker": 1},
}


def run_batch_mode(mode: str, slides: list[Path], out_dir: Path) -> dict[str, Any]:
    """Mask ``slides`` with one execution mode; sample every process's RSS while it runs."""
    import threading

    import dask
    import psutil

    from slidemask.batch import run_batch
    from slidemask.config import config_from_yaml
    from slidemask.distributed import ExecutionConfig

    settings = {k: v for k, v in BATCH_MODES[mode].items() if v is not None}
    config = config_from_yaml(CASE_CONFIGS["median_closing"])
    me = psutil.Process()
    peaks: dict[int, int] = {}
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            for proc in [me, *me.children(recursive=True)]:
                try:
                    rss = proc.memory_info().rss
                except psutil.Error:
                    continue
                peaks[proc.pid] = max(peaks.get(proc.pid, 0), rss)
            done.wait(0.1)

    watcher = threading.Thread(target=sample, daemon=True)
    watcher.start()
    paths = [str(p) for p in slides]
    t0 = time.perf_counter()
    results = run_batch(
        paths, config, out_dir, overwrite=True, execution=ExecutionConfig.model_validate(settings)
    )
    wall = time.perf_counter() - t0
    steady = wall
    if settings.get("scheduler") == "processes":
        # Steady state: the same batch on a cluster that is already up, its workers warm
        # (imports done). A job over thousands of slides pays the start-up once.
        from distributed import Client, LocalCluster

        from slidemask.distributed import WORKER_ENVIRON

        with dask.config.set(WORKER_ENVIRON), LocalCluster(
            n_workers=settings["workers"], threads_per_worker=1, processes=True,
            host="127.0.0.1", dashboard_address=None,
        ) as cluster, Client(cluster) as client:
            client.run(__import__, "slidemask.pipeline")
            address = {"scheduler": cluster.scheduler_address,
                       "threads_per_worker": settings["threads_per_worker"]}
            t1 = time.perf_counter()
            warm = run_batch(
                paths, config, out_dir, overwrite=True,
                execution=ExecutionConfig.model_validate(address),
            )
            steady = time.perf_counter() - t1
        results += warm
    done.set()
    watcher.join()
    failed = [r.error for r in results if r.status != "done"]
    if failed:
        raise RuntimeError(f"{mode}: {failed[0]}")
    workers = {pid: rss for pid, rss in peaks.items() if pid != me.pid}
    return {
        "mode": mode,
        "wall_s": wall,
        "steady_s": steady,
        "driver_peak_mib": peaks.get(me.pid, 0) / 2**20,
        "worker_peak_mib": max(workers.values(), default=0) / 2**20,
    }


def batch_bench(args: argparse.Namespace) -> int:
    """Eight (``--batch``) synthetic slides: threads vs 1 and 2 worker processes."""
    slides = []
    for seed in range(args.batch):
        path = args.data_dir / f"batch-{args.size}-seed{seed}.ome.tif"
        if not path.exists():
            from slidemask.io.synthetic import write_synthetic_slide

            args.data_dir.mkdir(parents=True, exist_ok=True)
            write_synthetic_slide(path.with_suffix(".partial"), args.size, seed=seed)
            path.with_suffix(".partial").rename(path)
        slides.append(path)
    megapixels = args.batch * args.size**2 / 1e6
    print(
        f"batch of {args.batch} slides {args.size}x{args.size} ({megapixels:.0f} MP), "
        "median 7 + threshold + closing 4 -> Zarr; one run per mode, each in its own process.\n"
        "wall: the whole run_batch call, cluster start-up and worker imports included; "
        "steady: the same batch again on a cluster already up (throughput of a long job)"
    )
    print(
        f"{'mode':<14}{'wall s':>9}{'steady s':>10}{'MP/s':>9}{'driver MiB':>12}"
        f"{'worker MiB':>12}"
    )
    base = base_steady = None
    for mode in BATCH_MODES:
        cmd = [
            sys.executable,
            __file__,
            "--batch-worker",
            mode,
            "--size",
            str(args.size),
            "--batch",
            str(args.batch),
            "--data-dir",
            str(args.data_dir),
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            print(f"# {mode} failed:\n{proc.stderr[-2000:]}", file=sys.stderr)
            continue
        r = json.loads(proc.stdout.strip().splitlines()[-1])
        if mode == "1 process":
            base, base_steady = r["wall_s"], r["steady_s"]
        speed = (
            f"  ({base / r['wall_s']:.2f}x wall, {base_steady / r['steady_s']:.2f}x steady, "
            "vs 1 process)"
            if base and base_steady
            else ""
        )
        print(
            f"{mode:<14}{r['wall_s']:>9.1f}{r['steady_s']:>10.1f}"
            f"{megapixels / r['steady_s']:>9.0f}"
            f"{r['driver_peak_mib']:>12.0f}{r['worker_peak_mib']:>12.0f}{speed}"
        )
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--size", type=int, default=20000, help="level-0 edge of the synthetic slide, pixels"
    )
    parser.add_argument("--tile", type=int, default=512, help="tile edge, pixels (default 512)")
    parser.add_argument("--quality", type=int, default=85, help="JPEG quality (default 85)")
    parser.add_argument(
        "--chunk", type=int, default=2048, help="working chunk edge, pixels (default 2048)"
    )
    parser.add_argument(
        "--threads", type=int, default=os.cpu_count() or 2, help="threads (default: cores)"
    )
    parser.add_argument(
        "--repeat", type=int, default=3, help="runs per case; the median is reported"
    )
    parser.add_argument(
        "--cases", nargs="+", default=DEFAULT_CASES, help=f"from {ALL_CASES} or 'all'"
    )
    parser.add_argument(
        "--data-dir", type=Path, default=Path("bench-data"), help="where slides are cached"
    )
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument(
        "--steady",
        action="store_true",
        help="also time each slidemask case a second time in the same process ('steady s': "
        "each further slide of a batch)",
    )
    parser.add_argument(
        "--texture", choices=["smooth", "noisy", "both", "mosaic"], default="smooth",
        help="synthetic slide: smooth tissue (default), noisy (speckled level-0 mask like "
        "thresholded real H&E), both (one table each), or mosaic (level 0 only, cut from "
        "the real scans given by --mosaic-from: for the level-0 cases)",
    )
    parser.add_argument(
        "--mosaic-from", type=Path, nargs="+", metavar="SLIDE",
        help="--texture mosaic: small real scans whose level 0 the mosaic is cut from",
    )
    parser.add_argument(
        "--layout", choices=["ome", "svs"], default="ome",
        help="synthetic slide's file layout: ome (OME-TIFF, level 0 a generic tiled TIFF to "
        "OpenSlide; default) or svs (Aperio SVS, read by OpenSlide's Aperio driver)",
    )
    parser.add_argument(
        "--stain", choices=["he", "dab", "faint"], default="he",
        help="synthetic slide's stain (smooth texture only): he (default), dab (IHC) or faint",
    )
    parser.add_argument(
        "--below", type=int, default=None,
        help="grey threshold of the threshold, median_closing and global cases "
        "(default 220 on smooth slides, 200 on noisy ones)",
    )
    parser.add_argument(
        "--min-area", type=int, default=5000,
        help="remove_small_objects' minimum area of the global case, pixels (default 5000)",
    )
    parser.add_argument(
        "--moto-as-is", action="store_true",
        help="threshold_s3: moto as shipped, which reads the whole object for every range "
        "request (default: each request reads only its range, as S3 does)",
    )
    parser.add_argument("--case-worker", nargs=2, metavar=("CASE", "SLIDE"), help=argparse.SUPPRESS)
    parser.add_argument(
        "--batch",
        type=int,
        default=0,
        metavar="N",
        help="instead: N slides of --size, threads vs 1 and 2 worker processes",
    )
    parser.add_argument("--batch-worker", metavar="MODE", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.batch_worker:
        slides = [args.data_dir / f"batch-{args.size}-seed{s}.ome.tif" for s in range(args.batch)]
        with tempfile.TemporaryDirectory(dir=args.data_dir) as tmp:
            print(json.dumps(run_batch_mode(args.batch_worker, slides, Path(tmp))))
        return 0
    if args.batch:
        if argv is None:
            with_bytecode()
        return batch_bench(args)

    if args.case_worker:
        case, slide = args.case_worker
        with tempfile.TemporaryDirectory(dir=args.data_dir) as tmp:
            source: str | Path = slide if "://" in slide else Path(slide)
            result = run_case(
                case, source, args.threads, args.chunk, Path(tmp), steady=args.steady,
                below=220 if args.below is None else args.below, min_area=args.min_area,
            )
        print(json.dumps(result))
        return 0

    cases = ALL_CASES if args.cases == ["all"] else args.cases
    textures = ["smooth", "noisy"] if args.texture == "both" else [args.texture]
    if argv is None:  # the command, not a test calling main(): see with_bytecode
        with_bytecode()
    report: dict[str, Any] = {}
    for texture in textures:
        below = args.below if args.below is not None else (200 if texture == "noisy" else 220)
        report[texture] = bench_slide(args, cases, texture, below)
    started = import_seconds()
    print(f"import slidemask: {started:.3f} s (median of 5 fresh processes)")
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "size": args.size,
                    "threads": args.threads,
                    "chunk": args.chunk,
                    "min_area": args.min_area,
                    "import_s": round(started, 3),
                    "results": report if len(report) > 1 else next(iter(report.values())),
                },
                indent=2,
            )
        )
    return 0


def import_seconds(repeat: int = 5) -> float:
    """Median wall time (s) of ``python -c 'import slidemask'`` in fresh processes: what a
    SLURM array job pays per slide before any work."""
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", "import slidemask"], check=True)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


S3_BUCKET = "slidemask-bench"


def moto_reads_ranges_only() -> None:
    """Make this process's moto server read only the requested bytes of a ranged GET.

    moto answers a range request by reading the whole object from its buffer and slicing it:
    400 requests for the tiles of a 76 MiB slide read 30 GB, which would time moto, not the
    reader (S3 itself reads what is asked, and not on this machine's cores). Everything else
    (HTTP, request parsing, signatures, headers) stays moto's.
    """
    import threading

    from moto.s3.models import FakeKey
    from moto.s3.responses import S3Response

    if getattr(S3Response, "_bench_ranged", False):
        return
    ranged = threading.local()
    whole = FakeKey.value.fget  # type: ignore[attr-defined]

    class Ranged:
        """An object's bytes as moto's range handling uses them: a length and one slice."""

        def __init__(self, key: Any) -> None:
            self.key = key

        def __len__(self) -> int:
            return int(self.key.size)

        def __getitem__(self, part: slice) -> bytes:
            start, stop, _ = part.indices(len(self))
            with self.key.lock:
                self.key._value_buffer.seek(start)
                return bytes(self.key._value_buffer.read(max(0, stop - start)))

    def value(key: Any) -> Any:
        return Ranged(key) if getattr(ranged, "on", False) else whole(key)

    original = S3Response.key_response

    def key_response(self: Any, request: Any, full_url: str, headers: Any) -> Any:
        spec = request.headers.get("range", "")
        ranged.on = request.method == "GET" and spec.startswith("bytes=") and "," not in spec
        try:
            status, out_headers, body = original(self, request, full_url, headers)
        finally:
            ranged.on = False
        if isinstance(body, Ranged):  # a range moto did not apply: the whole object after all
            body = whole(body.key)
        return status, out_headers, body

    FakeKey.value = property(value, FakeKey.value.fset)  # type: ignore[attr-defined]
    S3Response.key_response = key_response  # type: ignore[method-assign]
    S3Response._bench_ranged = True  # type: ignore[attr-defined]


@contextlib.contextmanager
def s3_server(path: Path, ranged: bool = True) -> Iterator[tuple[str, dict[str, str]]]:
    """Serve ``path`` from a local S3 server (moto, on 127.0.0.1, in this process: the case's
    process only reads from it); yield its ``s3://`` URL and the environment a case needs.
    ``ranged``: see :func:`moto_reads_ranges_only`."""
    import logging

    import s3fs
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # no line per request
    if ranged:
        moto_reads_ranges_only()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    env = {
        **os.environ,
        "AWS_ACCESS_KEY_ID": "bench",
        "AWS_SECRET_ACCESS_KEY": "bench",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": f"http://{host}:{port}",
    }
    try:
        fs = s3fs.S3FileSystem(key="bench", secret="bench",
                               endpoint_url=env["AWS_ENDPOINT_URL"], skip_instance_cache=True)
        fs.mkdir(S3_BUCKET)
        fs.put_file(str(path), f"{S3_BUCKET}/{path.name}")
        yield f"s3://{S3_BUCKET}/{path.name}", env
    finally:
        server.stop()


def with_bytecode() -> None:
    """Let the processes this bench starts (cases, the import timing) load slidemask from
    compiled bytecode, as an installed package's are, where the environment turns bytecode
    off (``PYTHONDONTWRITEBYTECODE``): slidemask is compiled once (``__pycache__`` beside its
    modules, as Python does by default) and the variable is dropped from this process's
    environment, which they inherit. Without it each process compiles every slidemask module
    it imports, also those first imported inside a timed run (0.1 s of a 2 s threshold case,
    measured). Only from the command line, not for a test calling :func:`main`."""
    import compileall

    if not (sys.flags.dont_write_bytecode or os.environ.get("PYTHONDONTWRITEBYTECODE")):
        return
    before = sys.dont_write_bytecode
    sys.dont_write_bytecode = False
    try:
        compileall.compile_dir(str(ROOT / "slidemask"), quiet=1)
    finally:
        sys.dont_write_bytecode = before
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)


def run_once(
    args: argparse.Namespace, case: str, source: str, below: int, env: dict[str, str] | None
) -> dict[str, Any] | None:
    """One run of a case in a fresh process; None when it fails (its error is printed)."""
    cmd = [
        sys.executable,
        __file__,
        "--case-worker",
        case,
        source,
        "--threads",
        str(args.threads),
        "--chunk",
        str(args.chunk),
        "--data-dir",
        str(args.data_dir),
        "--below",
        str(below),
        "--min-area",
        str(args.min_area),
        *(["--steady"] if args.steady else []),
    ]
    before = cpu_ticks()
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False, env=env)
    after = cpu_ticks()
    if proc.returncode != 0:
        print(f"# {case} failed:\n{proc.stderr[-2000:]}", file=sys.stderr)
        return None
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    if before is not None and after is not None and after[1] > before[1]:
        result["steal_pct"] = 100 * (after[0] - before[0]) / (after[1] - before[1])
    return result


def cpu_ticks() -> tuple[int, int] | None:
    """The machine's (stolen, total) CPU ticks so far, from ``/proc/stat`` (Linux); None
    elsewhere. Steal is the time a virtual machine's host gave its cores to other guests."""
    try:
        with open("/proc/stat") as fh:
            fields = [int(v) for v in fh.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    # user nice system idle iowait irq softirq steal [guest guest_nice, already in user]
    return (fields[7] if len(fields) > 7 else 0), sum(fields[:8])


def paired_ratio(runs: list[dict[str, Any]], bases: list[dict[str, Any]], key: str) -> float:
    """Median over rounds of ``key`` of a case's run over that of the run it is compared
    with in the same round (the cases take turns, so a round's runs share the machine's
    load); the ratio of the medians where the rounds do not pair up (a failed run)."""
    if len(runs) == len(bases) and all(b[key] > 0 for b in bases):
        return statistics.median(r[key] / b[key] for r, b in zip(runs, bases, strict=True))
    return statistics.median(r[key] for r in runs) / statistics.median(b[key] for b in bases)


def summarise(runs: list[dict[str, Any]], megapixels: float) -> dict[str, Any]:
    """One case's row: median wall (and steady) time, the largest peak RSS of its runs."""
    wall = statistics.median(r["wall_s"] for r in runs)
    cpu = statistics.median(r.get("cpu_s", 0.0) for r in runs)
    steadies = [r["steady_s"] for r in runs if "steady_s" in r]
    steals = [r["steal_pct"] for r in runs if "steal_pct" in r]
    return {
        **runs[-1],
        "wall_s": round(wall, 3),
        "walls": [round(r["wall_s"], 3) for r in runs],
        "cpu_s": round(cpu, 3),
        "steal_pct": round(statistics.median(steals), 1) if steals else None,
        **(
            {"steady_s": round(statistics.median(steadies), 3),
             "steadies": [round(x, 3) for x in steadies]}
            if steadies else {}
        ),
        "mp_per_s": round(megapixels / wall, 1),
        "peak_rss_mib": round(max(r["peak_rss_mib"] for r in runs), 1),
    }


def bench_slide(
    args: argparse.Namespace, cases: list[str], texture: str, below: int
) -> dict[str, dict[str, Any]]:
    """Every case on the synthetic slide of this texture; print the table, return the rows."""
    path = ensure_slide(args.data_dir, args.size, args.tile, args.quality, texture, args.stain,
                        args.layout, args.mosaic_from)
    megapixels = args.size * args.size / 1e6
    ram_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    results: dict[str, dict[str, Any]] = {}
    runnable = []
    for case in cases:
        if case == "naive" and megapixels * 3 * 2.5 / 1024 > 0.6 * ram_gib:
            print(f"# naive skipped: needs about {megapixels * 7.5 / 1024:.0f} GiB",
                  file=sys.stderr)
            continue
        runnable.append(case)
    runs: dict[str, list[dict[str, Any]]] = {case: [] for case in runnable}
    failed: set[str] = set()
    with contextlib.ExitStack() as stack:
        served: tuple[str, dict[str, str]] | None = None
        # the cases take turns, run after run, so that a change in the machine's load
        # between the first and the last case does not show in their ratios
        for _ in range(args.repeat):
            for case in (c for c in runnable if c not in failed):
                source, env = str(path), None
                if case == "threshold_s3":
                    if served is None:
                        served = stack.enter_context(s3_server(path, not args.moto_as_is))
                    source, env = served
                run = run_once(args, case, source, below, env)
                if run is None:
                    failed.add(case)
                else:
                    runs[case].append(run)
    for case in runnable:
        if case not in failed:
            results[case] = summarise(runs[case], megapixels)
    floor = runs["decode"] if "decode" in results else None
    print(
        f"slide {path.name}: {args.size}x{args.size} ({megapixels:.0f} MP), "
        f"{path.stat().st_size / 2**20:.0f} MiB, tiles {args.tile}, chunks {args.chunk}, "
        f"threads {args.threads}, median of {args.repeat}; texture {texture}, grey < {below}"
        + ("" if args.stain == "he" else f", stain {args.stain}")
        + (f", min_area {args.min_area}" if "global" in cases else "")
    )
    head = f"{'case':<20}{'wall s':>9}{'MP/s':>9}{'peak MiB':>10}{'x decode':>10}{'x thresh':>10}"
    print(head + f"{'cpu s':>9}{'cpu x dec':>11}{'steal %':>9}"
          + (f"{'steady s':>10}" if args.steady else ""))
    for case, r in results.items():
        # API cases compare with the API threshold pass, config cases with the config one
        reference = "api_threshold" if case.startswith("api_") else "threshold"
        base = runs[reference] if reference in results else None
        r["ratio_to_decode"] = (
            round(paired_ratio(runs[case], floor, "wall_s"), 3) if floor else None
        )
        r["ratio_to_threshold"] = (
            round(paired_ratio(runs[case], base, "wall_s"), 3) if base else None
        )
        r["cpu_ratio_to_decode"] = (
            round(paired_ratio(runs[case], floor, "cpu_s"), 3) if floor else None
        )
        cells = [
            f"{r[key]:.2f}" if r[key] is not None else "-"
            for key in ("ratio_to_decode", "ratio_to_threshold", "cpu_ratio_to_decode")
        ]
        steal = f"{r['steal_pct']:.0f}" if r["steal_pct"] is not None else "-"
        steady = f"{r['steady_s']:>10.2f}" if "steady_s" in r else ""
        print(
            f"{case:<20}{r['wall_s']:>9.2f}{r['mp_per_s']:>9.0f}{r['peak_rss_mib']:>10.0f}"
            f"{cells[0]:>10}{cells[1]:>10}{r['cpu_s']:>9.2f}{cells[2]:>11}{steal:>9}{steady}"
        )
    return results


if __name__ == "__main__":
    sys.exit(main())
