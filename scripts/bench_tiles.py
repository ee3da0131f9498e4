"""Benchmark: patch coordinates with exact tissue fractions from a stored mask.

Builds a synthetic bool Zarr mask (``--size`` square, 2048² chunks, tissue blobs over about
half the slide; written once with :func:`slidemask.writers.zarr.write_zarr`), then times, in
fresh subprocesses (median of ``--repeats``), with 2 threads:

* ``read``: reading every chunk of the stored mask (the floor: what any use of it costs);
* ``tiles``: :func:`slidemask.tiles.tile_grid` on it, with exact fractions;
* ``tiles+write``: the same plus CLAM h5, CSV and Parquet.

Cases: ``38k`` (256-px patches at 0.5 µm on a 0.25 µm slide: 512 level-0 pixels, about
38 000 candidates on 50000²) and ``1m`` (50-px level-0 patches: 10⁶ candidates on 50000²).
Peak RSS is the child's ``ru_maxrss``.

    python scripts/bench_tiles.py --size 50000 --repeats 3
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
args = {"38k": dict(size=256, mpp=0.5, slide_mpp=0.25),
        "1m": dict(size=50, slide_mpp=0.25)}[case]
with dask.config.set(scheduler="threads", num_workers=2):
    t0 = time.perf_counter()
    if what == "read":
        mask = read_mask(path)
        n = int(mask.map_blocks(lambda b: b[:1, :1], chunks=(1, 1)).sum().compute())
        count = n
    else:
        table = tile_grid(path, min_fraction=0.5, **args)
        count = len(table)
        if what == "tiles+write":
            write_tile_table(table, out, ["clam", "csv", "parquet"])
    wall = time.perf_counter() - t0
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"wall": wall, "rss_mib": rss, "count": count}))
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
    parser.add_argument("--cases", default="38k,1m")
    parser.add_argument("--workdir", default=None)
    args = parser.parse_args(argv)
    work = Path(args.workdir or tempfile.mkdtemp(prefix="bench-tiles-"))
    mask = work / f"mask{args.size}.zarr"
    if not mask.exists():
        t0 = time.perf_counter()
        make_mask(mask, args.size)
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
        runs_text = ", ".join(f"{r['wall']:.2f}" for r in results)
        print(f"{what:12s} {case:4s} wall {wall:6.2f} s  peak RSS {rss:5.0f} MiB  "
              f"tiles {results[0]['count']}  (runs: {runs_text})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
