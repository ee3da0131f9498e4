"""Top-level task functions for tests/test_distributed.py.

Worker processes import these by module name, as they would import the real slide task; a
function defined inside a test would not be importable there.
"""

from __future__ import annotations

import os
from pathlib import Path

import dask
import dask.array as da
import numpy as np


def square(x: int) -> int:
    return x * x


def square_or_raise(x: int, bad: int) -> int:
    if x == bad:
        raise ValueError(f"slide {x} is corrupt")
    return x * x


def scheduler_inside_task() -> tuple[object, object, int, int]:
    """The dask scheduler a task's computations use ("threads" for dask's threaded scheduler,
    set by name or as its function), its thread count, a small computed sum and the process
    id."""
    import dask.threaded
    from dask.base import get_scheduler

    total = int(da.ones((64, 64), chunks=16, dtype=np.uint8).sum().compute())
    scheduler = get_scheduler()
    name = "threads" if scheduler is dask.threaded.get else scheduler
    return (name, dask.config.get("num_workers", None), total, os.getpid())


def write_mask_dying_once(out_dir: str, name: str, seed: int, marker: str) -> str:
    """Write a small 'mask' file the way slide tasks do: temporary name, then rename.

    On the first attempt (no ``marker`` file yet) the worker process dies half-way through the
    temporary file, as a worker killed by the OOM killer or ``kill -9`` would.
    """
    data = np.random.default_rng(seed).integers(0, 2, size=4096, dtype=np.uint8).tobytes()
    final = Path(out_dir) / f"{name}.bin"
    tmp = Path(out_dir) / f".{name}.bin.tmp"
    with open(tmp, "wb") as fh:
        fh.write(data[: len(data) // 2])
        fh.flush()
        if not Path(marker).exists():
            Path(marker).write_text(str(os.getpid()))
            os._exit(1)
        fh.write(data[len(data) // 2 :])
    os.replace(tmp, final)
    return str(final)


def die(x: int) -> int:
    """Kill the worker process running it, every time (like a slide always running out of
    memory)."""
    os._exit(1)


def malloc_trim_setting(_: int) -> str | None:
    """The worker process's ``MALLOC_TRIM_THRESHOLD_`` (None when unset)."""
    return os.environ.get("MALLOC_TRIM_THRESHOLD_")


def memory_pause_setting(_: int) -> object:
    """The worker's ``distributed.worker.memory.pause`` setting (False: never paused)."""
    return dask.config.get("distributed.worker.memory.pause", None)
