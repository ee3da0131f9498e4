"""Benchmark: patch coordinates with exact tissue fractions from a stored mask.

Builds a synthetic bool Zarr mask (``--size`` square, 2048² chunks, tissue blobs over about
half the slide; written once with :func:`slidemask.writers.zarr.write_zarr`), then times, in
fresh subprocesses (median of ``--repeats``), with 2 threads:

* ``read``: reading every chunk of the stored mask (the floor: what any use of it costs);
* ``tiles``: :func:`slidemask.tiles.tile_grid` on it, with exact fractions;
* ``tiles+write``: the same plus CLAM h5, CSV and Parquet.

Cases on 50000²: ``38k`` (256-px patches at 0.5 µm on a 0.5 µm slide: 256 level-0 pixels,
195² = 38 025 candidates), ``9k`` (the same on a 0.25 µm slide: 512 level-0 pixels, 97² =
9 409 candidates) and ``1m`` (50-px level-0 patches, ``min_fraction=0``: 10⁶ patches kept).
Peak RSS is the child's ``ru_maxrss``; cpu is its user + system time.

    python scripts/bench_tiles.py --size 50000 --repeats 5

Measured on the shared 2-core machine (medians of 5, load average 2-5 from other work, so
±30 %): read 0.73 s / 143 MiB; ``38k`` 1.18 s / 139 MiB (18 869 kept), with CLAM + CSV +
Parquet 1.15 s / 199 MiB; ``9k`` 1.38 s / 138 MiB; ``1m`` 2.35 s / 198 MiB, with the three
files 3.30 s / 264 MiB.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CHILD = r"""
import json, resource, sys, time
import dask
from slidemask.writers.zarr import read_mask
from slidemask.tiles import tile_grid, write_tile_table
path, case, what, out = sys.argv[1:5]
args = {
    "38k": dict(size=256, mpp=0.5, slide_mpp=0.5, min_fraction=0.5),
    "9k": dict(size=256, mpp=0.5, slide_mpp=0.25, min_fraction=0.5),
    "1m": dict(size=50, slide_mpp=0.25, min_fraction=0.0),
}[case]
with dask.config.set(scheduler="threads", num_workers=2):
    t0 = time.perf_counter()
    c0 = resource.getrusage(resource.RUSAGE_SELF)
    if what == "read":
        mask = read_mask(path)
        count = int(mask.map_blocks(lambda b: b[:1, :1], chunks=(1, 1)).sum().compute())
    else:
        table = tile_grid(path, **args)
        count = len(table)
        if what == "tiles+write":
            write_tile_table(table, out, ["clam", "csv", "parquet"])
    wall = time.perf_counter() - t0
    c1 = resource.getrusage(resource.RUSAGE_SELF)
cpu = (c1.ru_utime - c0.ru_utime) + (c1.ru_stime - c0.ru_stime)
rss = c1.ru_maxrss / 1024
print(json.dumps({"wall": wall, "cpu": cpu, "rss_mib": rss, "count": count}))
"""


def make_mask(path: Path, size: int) -> None:
    import dask
    import dask.array as da
    import numpy as np

    from slidemask.writers.zarr import write_zarr

    def blobs(block_info=None):  # type: ignore[no-untyped-def]
        (r0, r1), (c0, c1) = block_info[None]["array-location"]
        yy, xx = np.mgrid[r0:r1, c0:c1].astype(np.float32) / size
        field = np.sin(yy * 23.0) * np.cos(xx * 17.0) + 0.3 * np.sin((xx + yy) * 61.0)
        return field > 0.0

    edge = (2048,) * (size // 2048) + ((size % 2048,) if size % 2048 else ())
    mask = da.map_blocks(blobs, chunks=(edge, edge), dtype=bool)
    attrs = {"provenance": {"downsample": 1.0, "mpp": 0.25,
                            "source": {"name": "bench", "level0_shape": [size, size], "mpp": 0.25}}}
    with dask.config.set(scheduler="threads", num_workers=2):
        write_zarr(mask, path, attrs=attrs, overwrite=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=50000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--cases", default="38k,9k,1m")
    parser.add_argument("--workdir", default=None)
    parser.add_argument("--make-mask", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.make_mask:
        make_mask(Path(args.make_mask), args.size)
        return 0
    work = Path(args.workdir or tempfile.mkdtemp(prefix="bench-tiles-"))
    mask = work / f"mask{args.size}.zarr"
    if not mask.exists():
        # in a child: a parent that grew while writing the mask would pass its peak RSS on
        # to the timed children (Linux keeps the larger ru_maxrss across fork + exec)
        t0 = time.perf_counter()
        subprocess.run([sys.executable, __file__, "--make-mask", str(mask),
                        "--size", str(args.size)], check=True)
        print(f"mask {args.size}² written in {time.perf_counter() - t0:.1f} s: {mask}")
    runs = [("read", "-")] + [(what, case) for case in args.cases.split(",")
                              for what in ("tiles", "tiles+write")]
    for what, case in runs:
        results = []
        for _ in range(args.repeats):
            proc = subprocess.run(
                [sys.executable, "-c", CHILD, str(mask), case if case != "-" else "38k", what,
                 str(work / f"out-{case}" / "bench")],
                capture_output=True, text=True, check=True, env={**os.environ},
            )
            results.append(json.loads(proc.stdout.strip().splitlines()[-1]))
        wall = statistics.median(r["wall"] for r in results)
        rss = statistics.median(r["rss_mib"] for r in results)
        cpu = statistics.median(r["cpu"] for r in results)
        runs_text = ", ".join(f"{r['wall']:.2f}" for r in results)
        print(f"{what:12s} {case:4s} wall {wall:6.2f} s  cpu {cpu:6.2f} s  "
              f"peak RSS {rss:5.0f} MiB  tiles {results[0]['count']}  (runs: {runs_text})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
