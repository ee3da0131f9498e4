"""The engine's promises, checked in fresh processes: memory of global operations stays near the
threshold pass, and an interrupted or failing write leaves no scratch and no complete output."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import dask
import dask.array as da
import numpy as np
import pytest

import slidemask as sm
from slidemask.ops.scratch import held_bytes, release, scratch_memory

MASK_SOURCE = textwrap.dedent(
    """
    import resource, sys
    import dask, dask.array as da, numpy as np
    import slidemask as sm

    def block(block_info=None):
        (r0, r1), (c0, c1) = block_info[None]["array-location"]
        rng = np.random.default_rng(r0 * 100003 + c0)
        coarse = rng.random(((r1 - r0 + 31) // 32, (c1 - c0 + 31) // 32)) < 0.5
        blobs = np.kron(coarse, np.ones((32, 32), bool))[: r1 - r0, : c1 - c0]
        specks = rng.random((r1 - r0, c1 - c0)) < 0.02   # noise, as thresholded H&E has
        return blobs ^ specks

    def mask(size):
        return da.map_blocks(block, chunks=((2048,) * (size // 2048),) * 2, dtype=bool,
                             meta=np.empty((0, 0), bool))
    """
)


def _run(code: str, *args: str, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(
        [sys.executable, "-c", MASK_SOURCE + textwrap.dedent(code), *args],
        capture_output=True, text=True, timeout=600, env=env,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


PEAK = """
out, kind = sys.argv[1], sys.argv[2]
m = mask(16384)
if kind == "global":
    m = sm.remove_small_objects(sm.fill_holes(m), 100)
with dask.config.set(scheduler="threads", num_workers=2):
    sm.write_zarr(m, out)
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


@pytest.mark.slow
def test_global_operations_memory_stays_near_the_threshold_pass(tmp_path: Path) -> None:
    """A lazy 16384² mask (64 chunks with specks of noise): ``fill_holes`` and
    ``remove_small_objects`` peak within 1.3x of writing the mask alone (holding the mask
    between the passes would add its 256 MiB)."""
    peaks = {
        kind: int(_run(PEAK, str(tmp_path / f"{kind}.zarr"), kind).split()[-1])
        for kind in ("threshold", "global")
    }
    assert peaks["global"] <= 1.3 * peaks["threshold"], peaks


SHARPNESS_PEAK = """
out, size = sys.argv[1], int(sys.argv[2])

def texture(block_info=None):
    (r0, r1), (c0, c1) = block_info[None]["array-location"]
    rng = np.random.default_rng(r0 * 100003 + c0)
    return rng.integers(0, 200, (r1 - r0, c1 - c0), dtype=np.uint8)

grey = da.map_blocks(texture, chunks=((2048,) * (size // 2048),) * 2, dtype=np.uint8,
                     meta=np.empty((0, 0), np.uint8))
where = da.ones((size // 4, size // 4), dtype=bool, chunks=1024)  # every cell wanted
m = sm.threshold(sm.sharpness(grey, 4, 16.0, where=where, margin=8), below=1.2)
with dask.config.set(scheduler="threads", num_workers=2):
    sm.write_zarr(m, out)
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


@pytest.mark.slow
def test_sharpness_memory_does_not_grow_with_the_cell_grid(tmp_path: Path) -> None:
    """``sharpness`` with a ``where`` region peaks at about the same memory on a lazy 16384²
    grey image as on an 8192² one: its cells (a 4096² int32 grid, 64 MiB, against 16 MiB) and
    the gates that ``where`` makes are stored as they are computed, instead of waiting in
    memory for their neighbours (which took the larger image 48 MiB higher)."""
    peaks = {
        size: int(_run(SHARPNESS_PEAK, str(tmp_path / f"{size}.zarr"), str(size)).split()[-1])
        for size in (8192, 16384)
    }
    assert peaks[16384] <= 1.15 * peaks[8192], peaks


INTERRUPTED = """
out = sys.argv[1]
m = sm.remove_small_objects(sm.fill_holes(mask(12288)), 100)
print("start", flush=True)
with dask.config.set(scheduler="threads", num_workers=2):
    sm.write_zarr(m, out)
"""


@pytest.mark.slow
def test_ctrl_c_leaves_no_scratch_and_no_output(tmp_path: Path) -> None:
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    out = tmp_path / "out" / "m.zarr"
    env = {**os.environ, "DASK_TEMPORARY_DIRECTORY": str(scratch)}
    proc = subprocess.Popen(
        [sys.executable, "-c", MASK_SOURCE + textwrap.dedent(INTERRUPTED), str(out)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "start"
    deadline = time.monotonic() + 120
    while not any(scratch.iterdir()) and time.monotonic() < deadline:  # pass 1 is storing
        time.sleep(0.05)
    assert any(scratch.iterdir()), "no scratch was written"
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode != 0 and "KeyboardInterrupt" in err
    assert list(scratch.iterdir()) == []
    assert not out.exists() and not sm.is_complete(out)


class Boom(RuntimeError):
    pass


def _fails_at_block(block: np.ndarray, block_info: dict | None = None) -> np.ndarray:
    if block_info is not None and block_info[None]["chunk-location"] == (2, 1):
        raise Boom("tile (2, 1) is corrupt")
    time.sleep(0.2)  # the other tiles are still being read (and stored) when (2, 1) fails
    return block


@pytest.mark.parametrize("memory", [0, None], ids=["files", "held"])
def test_error_mid_write_leaves_no_scratch_and_no_output(
    tmp_path: Path, memory: int | None
) -> None:
    """With every scratch chunk in files, and with the small ones held in memory (the
    default): after the error, neither files nor held chunks are left."""
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    rng = np.random.default_rng(0)
    base = da.from_array(rng.random((300, 300)) < 0.4, chunks=60)
    settings = {"temporary-directory": str(scratch)}
    if memory is not None:
        settings["slidemask.scratch-memory"] = memory
    with dask.config.set(settings):
        broken = base.map_blocks(_fails_at_block, dtype=bool)
        mask = sm.remove_small_objects(sm.binary_closing(sm.fill_holes(broken), 1), 5)
        with pytest.raises(Boom):
            with dask.config.set(scheduler="threads"):
                sm.write_zarr(mask, tmp_path / "m.zarr")
        time.sleep(0.5)  # a tile task still running when the error came would have stored by now
    assert list(scratch.iterdir()) == []
    assert held_bytes() == 0
    assert not (tmp_path / "m.zarr").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["scratch"]


def _noisy(shape: tuple[int, int], chunks: int) -> da.Array:
    rng = np.random.default_rng(1)
    return da.from_array(rng.random(shape) < 0.5, chunks=chunks)


def test_small_intermediates_are_held_in_memory_and_released(tmp_path: Path) -> None:
    """A global operation on a small mask keeps its scratch chunks in memory (no file is
    created), gives the same result as with files, and holds nothing once written."""
    mask = _noisy((500, 700), 128)
    results = {}
    for memory in (0, None):
        seen: list[int] = []
        scratch = tmp_path / f"scratch-{memory}"
        scratch.mkdir()
        settings: dict[str, object] = {"temporary-directory": str(scratch)}
        if memory is not None:
            settings["slidemask.scratch-memory"] = memory
        with dask.config.set(settings):
            out = sm.remove_small_objects(sm.binary_closing(sm.fill_holes(mask), 1), 5)
            watched = out.map_blocks(
                lambda b, seen=seen: (seen.append(held_bytes()), b)[1], dtype=bool
            )
            sm.write_zarr(watched, tmp_path / f"m-{memory}.zarr")
        files = [p for p in scratch.rglob("*") if p.is_file()]
        results[memory] = (sm.read_mask(tmp_path / f"m-{memory}.zarr").compute(), max(seen))
        assert held_bytes() == 0
        assert list(scratch.iterdir()) == []
        assert not files
    np.testing.assert_array_equal(results[0][0], results[None][0])
    assert results[0][1] == 0 and results[None][1] > 0


def test_scratch_past_the_memory_budget_goes_to_files(tmp_path: Path) -> None:
    """With a budget for about two chunks, the rest are written as files during the run,
    and the result is the same as the reference."""
    import scipy.ndimage as ndi

    base = np.random.default_rng(2).random((600, 600)) < 0.45
    mask = da.from_array(base, chunks=100)
    made: list[int] = []
    with dask.config.set({"temporary-directory": str(tmp_path), "slidemask.scratch-memory": 3000}):
        out = sm.fill_holes(mask)
        probe = out.map_blocks(
            lambda b: (made.append(sum(1 for p in tmp_path.rglob("*") if p.is_file())), b)[1],
            dtype=bool,
        )
        got = probe.compute(scheduler="threads")
    release(out)
    np.testing.assert_array_equal(got, ndi.binary_fill_holes(base))
    assert max(made) > 0, "no chunk went to a file"
    assert held_bytes() == 0


def test_scratch_memory_setting_takes_sizes_and_refuses_nonsense() -> None:
    mask = _noisy((64, 64), 32)
    with dask.config.set({"slidemask.scratch-memory": "1 MiB"}):
        assert scratch_memory() == 2**20
        out = sm.fill_holes(mask)
    release(out)
    with dask.config.set({"slidemask.scratch-memory": "lots"}):
        with pytest.raises(ValueError, match="slidemask.scratch-memory: 'lots'"):
            sm.fill_holes(~mask)  # at graph construction, not in a task


@pytest.mark.parametrize("memory", [0, None], ids=["files", "held"])
def test_writers_in_threads_sharing_a_step_keep_its_scratch(
    tmp_path: Path, memory: int | None
) -> None:
    """Eight threads write masks that share ``fill_holes`` of one input (one scratch folder):
    the first writer to finish does not remove it under the others' reads."""
    import threading

    import scipy.ndimage as ndi

    base = np.random.default_rng(3).random((600, 800)) < 0.45
    expected = ndi.binary_fill_holes(base)
    errors: list[BaseException] = []
    settings: dict[str, object] = {"temporary-directory": str(tmp_path)}
    if memory is not None:
        settings["slidemask.scratch-memory"] = memory

    def job(k: int, round_: int) -> None:
        try:
            source = da.from_array(base, chunks=(120, 160), name="shared-input")
            mask = sm.fill_holes(source)
            path = sm.write_zarr(mask if k % 2 else mask | False, tmp_path / f"m{k}-{round_}.zarr")
            np.testing.assert_array_equal(sm.read_mask(path).compute(), expected)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    with dask.config.set(settings):
        for round_ in range(2):
            threads = [threading.Thread(target=job, args=(k, round_)) for k in range(8)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
    assert not errors, errors[:3]
    assert held_bytes() == 0
    assert not [p for p in tmp_path.iterdir() if p.name.startswith("slidemask-scratch")]


def test_chunks_of_this_process_are_appended_to_one_file_per_folder(tmp_path: Path) -> None:
    """Threads of the building process append a folder's chunks to ``chunks.log`` (creating a
    file per chunk costs about a millisecond); the result equals scipy's."""
    import scipy.ndimage as ndi

    base = np.random.default_rng(4).random((500, 600)) < 0.45
    with dask.config.set({"temporary-directory": str(tmp_path), "slidemask.scratch-memory": 0}):
        out = sm.remove_small_objects(sm.fill_holes(da.from_array(base, chunks=100)), 5)
        got = out.compute(scheduler="threads")
    files = sorted({p.name for p in tmp_path.rglob("*") if p.is_file()})
    release(out)
    assert files == ["chunks.log"]
    filled = ndi.binary_fill_holes(base)
    labels, count = ndi.label(filled, np.ones((3, 3)))
    sizes = np.bincount(labels.ravel())
    np.testing.assert_array_equal(got, filled & (sizes >= 5)[labels])
    assert list(tmp_path.iterdir()) == []
