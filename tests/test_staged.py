"""Staged computing (``slidemask.ops.staged.compute``): every global step's barrier computed in
a graph of its own, then the rest with the barrier's value as data.

The results equal ``dask.compute`` and the whole-image references for any chunking; each input
chunk is still computed once; and no graph the scheduler orders holds a task of a global step's
first pass together with the tasks after its merge (the shape that makes ``dask.order``'s memory
grow with the square of the chunk count).
"""

from __future__ import annotations

import threading
from typing import Any

import dask
import dask.array as da
import numpy as np
import pytest
import scipy.ndimage as ndi
from hypothesis import given, settings
from hypothesis import strategies as st
from skimage.morphology import remove_small_objects as sk_remove_small_objects

from slidemask import fill_holes, otsu_threshold, remove_small_objects, threshold
from slidemask.ops import staged


@pytest.fixture(autouse=True)
def _scratch(tmp_path):
    with dask.config.set({"temporary-directory": str(tmp_path), "scheduler": "threads"}):
        yield


@st.composite
def chunking(draw: st.DrawFn, n: int, most: int = 8) -> tuple[int, ...]:
    """Chunks of 1..40 pixels, at most ``most`` of them (the last takes what is left): each
    chunk costs a few scratch files and tasks per pass."""
    sizes: list[int] = []
    while sum(sizes) < n and len(sizes) < most - 1:
        sizes.append(draw(st.integers(1, 40)))
    if sum(sizes) < n:
        sizes.append(n - sum(sizes))
    sizes[-1] -= sum(sizes) - n
    return tuple(sizes)


def _noisy(seed: int, shape: tuple[int, int]) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return ndi.uniform_filter(rng.random(shape), 3) > 0.45


class _Counter:
    def __init__(self) -> None:
        self.calls = 0
        self.lock = threading.Lock()

    def __call__(self, block: np.ndarray) -> np.ndarray:
        with self.lock:
            self.calls += 1
        return block


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 2**16), data=st.data())
def test_staged_equals_dask_and_the_whole_image(seed: int, data: st.DataObject) -> None:
    image = _noisy(seed, (45, 52))
    chunks = (data.draw(chunking(45)), data.draw(chunking(52)))
    counter = _Counter()
    mask = da.from_array(image, chunks=chunks).map_blocks(
        counter, dtype=bool, meta=np.empty((0, 0), bool)
    )
    result = remove_small_objects(fill_holes(mask), 6)
    (got,) = staged.compute(result)
    expected = sk_remove_small_objects(ndi.binary_fill_holes(image), max_size=5, connectivity=2)
    np.testing.assert_array_equal(got, expected)
    assert counter.calls == mask.npartitions  # each input chunk once, through both stages
    plain = remove_small_objects(fill_holes(da.from_array(image, chunks=chunks)), 6)
    (again,) = dask.compute(plain)
    np.testing.assert_array_equal(got, again)


def test_otsu_and_several_outputs_share_the_stages() -> None:
    rng = np.random.default_rng(3)
    grey = (ndi.uniform_filter(rng.random((90, 70)), 5) * 255).astype(np.uint8)
    lazy = da.from_array(grey, chunks=(17, 23))
    mask = threshold(lazy, above=otsu_threshold(lazy))
    filled = fill_holes(mask)
    total, got, plain = staged.compute(filled.sum(), filled, 7)
    from skimage.filters import threshold_otsu

    expected = ndi.binary_fill_holes(grey > threshold_otsu(grey))
    np.testing.assert_array_equal(got, expected)
    assert int(total) == int(expected.sum()) and plain == 7


def _recording() -> tuple[list[dict[Any, Any]], Any]:
    graphs: list[dict[Any, Any]] = []

    def get(dsk: Any, keys: Any, **kwargs: Any) -> Any:
        graph = dsk.__dask_graph__() if hasattr(dsk, "__dask_graph__") else dsk
        graphs.append(dict(graph))
        return dask.get(dsk, keys, **kwargs)

    return graphs, get


def _names(dsk: dict[Any, Any], part: str) -> int:
    """How many keys of ``dsk`` are of layer ``slidemask-<part>...``."""
    return sum((k[0] if isinstance(k, tuple) else k).startswith(f"slidemask-{part}") for k in dsk)


def test_no_graph_holds_a_first_pass_and_what_follows_its_merge() -> None:
    image = _noisy(7, (64, 64))
    mask = remove_small_objects(fill_holes(da.from_array(image, chunks=16)), 4)
    graphs, get = _recording()
    (got,) = staged.compute(mask, scheduler=get)
    assert len(graphs) == 3  # fill_holes' merge, remove_small_objects' merge, the rest
    first, second, last = graphs
    assert _names(first, "fill-holes-store") == 16 and _names(second, "fill-holes-store") == 0
    assert _names(second, "small-objects-store") == 16 and _names(last, "small-objects-store") == 0
    assert _names(last, "fill-holes") == 0  # fill_holes' merge arrives as data: all done
    expected = sk_remove_small_objects(ndi.binary_fill_holes(image), max_size=3, connectivity=2)
    np.testing.assert_array_equal(got, expected)


def test_without_global_steps_it_is_dask_compute() -> None:
    graphs, get = _recording()
    lazy = da.from_array(np.arange(16).reshape(4, 4), chunks=2)
    (total,) = staged.compute(lazy.sum(), scheduler=get)
    assert int(total) == 120 and len(graphs) == 1
    assert staged.compute(1, "a") == (1, "a")


def test_the_same_steps_built_twice_and_written_together(tmp_path) -> None:
    """Two masks that start with the same steps, each built on its own (as a configuration
    builds every mask), share their stored intermediates when written in one compute: both
    equal the masks written one at a time."""
    import slidemask as sm
    from slidemask import read_mask

    path = sm.write_synthetic_slide(tmp_path / "s.tif", 1024, tile=128, levels=1)
    rgb = sm.open_slide(path, chunk_size=256).levels[0]

    def built(radius: int) -> da.Array:
        grey = sm.to_gray(sm.white_balance(rgb))
        return sm.binary_dilation(remove_small_objects(threshold(grey, below=200), 30), radius)

    writes = [sm.write_zarr(built(r), tmp_path / f"{r}.zarr", compute=False) for r in (1, 3)]
    with dask.config.set(scheduler="threads"):
        dask.compute(*writes)
        for r in (1, 3):
            np.testing.assert_array_equal(read_mask(tmp_path / f"{r}.zarr").compute(),
                                          built(r).compute())
