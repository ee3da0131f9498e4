"""Pass 1 with local decisions (``TwoPass.pass1_chunk``) and pass 2 on the stored tile
(``TwoPass.apply_stored``), run the way the scratch-storing engine runs them, by hand: per chunk
``pass1_chunk``; the records merged (``plan.merge`` on the computed records); per chunk
``apply_stored(stored, chunk_lut(merged, i, j))``. For any chunking (chunks of 1..70 pixels,
not tile-aligned) the result equals the whole-image reference bit for bit, on noisy and blobby
masks, whichever way each chunk is measured (border following, a flood from the frame, or
labelling; pass 2 by per-seed floods or one framed flood: the limits that choose are forced
both ways).
"""

from __future__ import annotations

import inspect
from dataclasses import replace
from itertools import accumulate

import dask
import dask.array as da
import numpy as np
import pytest
import scipy.ndimage as ndi
from hypothesis import given, settings
from hypothesis import strategies as st
from skimage.measure import label as sk_label
from skimage.morphology import remove_small_objects as sk_remove_small_objects

from slidemask.kernels import labels as kl
from slidemask.ops.components import (
    TwoPass,
    chunk_lut,
    keep_largest_plan,
    label_plan,
    remove_small_objects_plan,
)
from slidemask.ops.holes import fill_holes_plan, keep_largest_holes_plan
from tests.test_components import ref_keep_largest_holes


@pytest.fixture(autouse=True)
def _sync_scheduler():
    with dask.config.set(scheduler="sync"):
        yield


# ---- strategies ---------------------------------------------------------------------------


MAX_AXIS_CHUNKS = 25
"""About the most chunks per axis: the engine by hand costs about 1 ms a chunk, so a 200-pixel
side in chunks of 1-3 pixels (10^4 chunks) would take 10 s an example."""


@st.composite
def axis_chunks(draw: st.DrawFn, n: int) -> tuple[int, ...]:
    """Chunks of 1..70 pixels (a few kinds of draw), the last one cut to fit; on a long side
    the largest size drawn is raised so that about :data:`MAX_AXIS_CHUNKS` chunks cover it
    (sizes still start at 1 pixel)."""
    top = max(draw(st.sampled_from([3, 9, 25, 70])), -(-2 * n // MAX_AXIS_CHUNKS))
    sizes: list[int] = []
    while sum(sizes) < n:
        sizes.append(draw(st.integers(1, top)))
    sizes[-1] -= sum(sizes) - n
    return tuple(sizes)


SHAPES = [
    np.array(rows, bool) for rows in (
        [[1]], [[1, 1]], [[1, 0], [0, 1]],
        [[1, 1, 1], [1, 0, 1], [1, 1, 1]],  # a ring: one hole
        [[0, 1, 0], [1, 0, 1], [0, 1, 0]],  # a diamond: a hole inside an 8-connected ring
        [[1, 1, 1, 1], [1, 0, 0, 1], [1, 1, 1, 1]],
        [[1, 1, 1], [1, 0, 0], [1, 1, 1]],  # a hook: no hole
        [[1, 1, 1, 1, 1], [1, 0, 0, 0, 1], [1, 0, 1, 0, 1], [1, 0, 0, 0, 1], [1, 1, 1, 1, 1]],
    )
]


@st.composite
def noisy_masks(draw: st.DrawFn, max_side: int = 200) -> np.ndarray:
    """Salt-and-pepper, blobs, or blobs with specks and pinholes (thresholded H&E-like)."""
    h = draw(st.integers(1, max_side))
    w = draw(st.integers(1, max_side))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    kind = draw(st.sampled_from(["noise", "blobs", "speckled", "speckled", "dust"]))
    density = draw(st.floats(0.0, 1.0))
    if kind == "noise":
        return rng.random((h, w)) < density
    if kind == "dust":  # glass: a few small shapes (rings with holes, hooks), some on faces
        m = np.zeros((h, w), bool)
        for _ in range(draw(st.integers(0, 30))):
            shape = SHAPES[int(rng.integers(len(SHAPES)))]
            y, x = int(rng.integers(-2, h)), int(rng.integers(-2, w))
            sh, sw = shape.shape
            ys, xs = slice(max(y, 0), min(y + sh, h)), slice(max(x, 0), min(x + sw, w))
            if ys.stop > ys.start and xs.stop > xs.start:
                m[ys, xs] |= shape[ys.start - y:ys.stop - y, xs.start - x:xs.stop - x]
        return m
    field = ndi.uniform_filter(rng.random((h, w)), size=draw(st.sampled_from([3, 5, 9])),
                               mode="reflect")
    blobs = field < np.quantile(field, density)
    if kind == "blobs":
        return blobs
    specks = draw(st.floats(0.0, 0.3))
    grain = rng.random((h, w))
    return np.where(blobs, grain > specks, grain < specks / 4)


@st.composite
def cases(draw: st.DrawFn, max_side: int = 200) -> tuple[np.ndarray, tuple, dict]:
    m = draw(noisy_masks(max_side))
    chunks = (draw(axis_chunks(m.shape[0])), draw(axis_chunks(m.shape[1])))
    limits = {
        "CONTOUR_LIMIT": draw(st.sampled_from([kl.CONTOUR_LIMIT, kl.CONTOUR_LIMIT, 0, 5])),
        "AREA_FLOOD_LIMIT": draw(st.sampled_from([kl.AREA_FLOOD_LIMIT, 0, 2])),
        "STORED_SEED_LIMIT": draw(st.sampled_from([kl.STORED_SEED_LIMIT, 0, 1])),
        "_SAMPLE_STEP": draw(st.sampled_from([kl._SAMPLE_STEP, 2])),
        "BAND": draw(st.sampled_from([kl.BAND, 1, 2, 5])),
        "_MARKERS": draw(st.sampled_from([kl._MARKERS, kl._MARKERS, 1])),
        "SPARSE_LIMIT": draw(st.sampled_from([kl.SPARSE_LIMIT, 0])),
        "TRACE_LIMIT": draw(st.sampled_from([kl.TRACE_LIMIT, kl.TRACE_LIMIT, 3])),
        "ERASE_BOX": draw(st.sampled_from([kl.ERASE_BOX, 0, 3, 8])),
        "ERASE_FLOODS": draw(st.sampled_from([kl.ERASE_FLOODS, 0, 2])),
    }
    return m, chunks, limits


CONNECTIVITY = st.sampled_from([4, 8])
SETTINGS = settings(deadline=None, max_examples=60)


# ---- the engine, by hand --------------------------------------------------------------------


def with_sparse_limit(plan: TwoPass, limit: int) -> TwoPass:
    """``plan`` with ``sparse_limit=limit`` passed to each of its chunk functions that takes
    it (:func:`slidemask.kernels.labels.label_summary`, ``relabel``, ``fill_pass1``,
    ``objects_pass1``)."""
    changes = {}
    for function, kwargs in (("summarize", "summarize_kwargs"), ("apply", "apply_kwargs"),
                             ("local", "local_kwargs"), ("finish", "finish_kwargs")):
        fn = getattr(plan, function)
        if fn is not None and "sparse_limit" in inspect.signature(fn).parameters:
            changes[kwargs] = {**getattr(plan, kwargs), "sparse_limit": limit}
    return replace(plan, **changes)


def run_engine(plan: TwoPass, m: np.ndarray, chunks: tuple, limits: dict) -> np.ndarray:
    limits = dict(limits)
    if "SPARSE_LIMIT" in limits:  # a keyword of the chunk functions, the others constants
        plan = with_sparse_limit(plan, limits.pop("SPARSE_LIMIT"))
    rows = [0, *accumulate(chunks[0])]
    cols = [0, *accumulate(chunks[1])]
    nbr, nbc = len(chunks[0]), len(chunks[1])
    records = np.empty((nbr, nbc), dtype=object)
    stored = {}
    with pytest.MonkeyPatch.context() as patch:
        for name, value in limits.items():
            patch.setattr(kl, name, value)
        for i, j in np.ndindex(nbr, nbc):
            tile = m[rows[i]:rows[i + 1], cols[j]:cols[j + 1]]
            before = tile.copy()
            records[i, j], stored[i, j] = plan.pass1_chunk(tile, (rows[i], cols[j]))
            np.testing.assert_array_equal(tile, before)  # the input tile is never written
            assert stored[i, j].shape == tile.shape and stored[i, j].dtype == bool
            if not plan.decides_locally:
                np.testing.assert_array_equal(stored[i, j], tile)
        merged = plan.merge(records, da.from_array(m, chunks=chunks)).compute()
        out = np.empty(m.shape, np.dtype(plan.dtype))
        for i, j in np.ndindex(nbr, nbc):
            kept = stored[i, j].copy()
            out[rows[i]:rows[i + 1], cols[j]:cols[j + 1]] = plan.apply_stored(
                stored[i, j], chunk_lut(merged, i, j))
            np.testing.assert_array_equal(stored[i, j], kept)  # pass 2 reads it only
    return out


# ---- whole-image references -------------------------------------------------------------------


def ref_fill_holes(m: np.ndarray, max_area: float | None) -> np.ndarray:
    bg = sk_label(~m, connectivity=1)
    hole = np.ones(bg.max() + 1, bool)
    hole[0] = False
    hole[np.concatenate([bg[0], bg[-1], bg[:, 0], bg[:, -1]])] = False
    if max_area is not None:
        hole &= np.bincount(bg.ravel()) <= max_area
    return m | hole[bg]


def ref_keep_largest(m: np.ndarray, n: int, connectivity: int) -> np.ndarray:
    lab = sk_label(m, connectivity=connectivity // 4)
    area = np.bincount(lab.ravel())[1:]
    keep = np.zeros(len(area) + 1, bool)
    keep[np.argsort(-area, kind="stable")[:n] + 1] = True
    return keep[lab]


# ---- the operations ---------------------------------------------------------------------------


@SETTINGS
@given(cases())
def test_fill_holes(case):
    m, chunks, limits = case
    plan = fill_holes_plan()
    assert plan is not None and plan.decides_locally
    np.testing.assert_array_equal(run_engine(plan, m, chunks, limits), ndi.binary_fill_holes(m))


@SETTINGS
@given(cases(), st.sampled_from([1, 2, 3, 7, 30, 400]))
def test_fill_holes_with_limit(case, max_area):
    m, chunks, limits = case
    plan = fill_holes_plan(max_hole_area=max_area)
    assert plan is not None
    np.testing.assert_array_equal(run_engine(plan, m, chunks, limits),
                                  ref_fill_holes(m, max_area))


@SETTINGS
@given(cases(), CONNECTIVITY, st.sampled_from([2, 3, 5, 10, 40, 100, 1000]))
def test_remove_small_objects(case, connectivity, min_area):
    m, chunks, limits = case
    plan = remove_small_objects_plan(min_area, connectivity=connectivity)
    assert plan is not None and plan.decides_locally
    ref = sk_remove_small_objects(m, max_size=min_area - 1, connectivity=connectivity // 4)
    np.testing.assert_array_equal(run_engine(plan, m, chunks, limits), ref)


@settings(deadline=None, max_examples=40)
@given(cases(), CONNECTIVITY, st.sampled_from([1, 2, 5, 60]))
def test_keep_largest(case, connectivity, n):
    m, chunks, limits = case
    plan = keep_largest_plan(n, connectivity=connectivity)
    assert plan is not None and plan.decides_locally
    np.testing.assert_array_equal(run_engine(plan, m, chunks, limits),
                                  ref_keep_largest(m, n, connectivity))


@settings(deadline=None, max_examples=40)
@given(cases(), CONNECTIVITY)
def test_label(case, connectivity):
    m, chunks, limits = case
    plan = label_plan(connectivity, np.dtype(np.int32))
    assert not plan.decides_locally
    out = run_engine(plan, m, chunks, limits)
    assert out.dtype == np.int32
    np.testing.assert_array_equal(out, sk_label(m, connectivity=connectivity // 4))


@settings(deadline=None, max_examples=15)
@given(cases(max_side=40), st.integers(0, 2))
def test_keep_largest_holes_stores_the_tile_unchanged(case, n):
    m, chunks, limits = case
    plan = keep_largest_holes_plan(n)
    assert not plan.decides_locally
    np.testing.assert_array_equal(run_engine(plan, m, chunks, limits),
                                  ref_keep_largest_holes(m, n))


# ---- what the stored tile holds ---------------------------------------------------------------


def test_stored_tile_has_the_interior_decisions_applied():
    m = np.zeros((12, 12), bool)
    m[2:9, 2:9] = True
    m[4:6, 4:6] = False  # an interior hole
    m[0, 10] = True  # a speck on the face
    m[10, 2] = True  # an interior speck
    _, stored = fill_holes_plan().pass1_chunk(m, (0, 0))
    np.testing.assert_array_equal(stored, ndi.binary_fill_holes(m))
    record, stored = remove_small_objects_plan(3).pass1_chunk(m, (40, 40))
    expected = m.copy()
    expected[10, 2] = False  # the face speck is the merge's to decide
    np.testing.assert_array_equal(stored, expected)
    summary = record[0]["fg"]
    assert summary.ids.tolist() == [1]  # only the face speck is reported
    assert (summary.first_row[0], summary.first_col[0]) == (40, 50)
    assert summary.area[0] == 1


def speckled_tile(seed: int) -> np.ndarray:
    """Two large objects among specks of every small shape, a ring round a large object, and
    a few objects with boxes between 2×2 and :data:`~slidemask.kernels.labels.ERASE_BOX`."""
    rng = np.random.default_rng(seed)
    m = rng.random((120, 150)) < 0.04  # specks
    m[10:60, 10:70] = rng.random((50, 60)) > 0.05  # a pinholed object
    m[70:110, 20:60] = np.pad(np.ones((38, 38), bool), 1) ^ np.pad(np.ones((36, 36), bool), 2)
    # a one-pixel ring (148 pixels in a 38² box) round a larger object (400 pixels)
    m[80:100, 30:50] = True
    m[75:78, 100:103] = [[0, 1, 0], [1, 1, 1], [0, 1, 0]]  # a plus
    m[90, 100:110] = True  # a run
    return m


@pytest.mark.parametrize("limits", [{}, {"ERASE_FLOODS": 0}, {"ERASE_FLOODS": 0, "TRACE_LIMIT": 1},
                                    {"ERASE_BOX": 0}])
@pytest.mark.parametrize("connectivity", [4, 8])
def test_keep_largest_stores_only_reported_objects(connectivity, limits):
    """``keep_largest`` stores the chunk less the interior objects that cannot win and are
    cheap to erase (flood fills, or one lookup over the labels), and reports every object it
    leaves; pass 2 then equals the whole-image operation for any chunking."""
    plan = keep_largest_plan(2, connectivity=connectivity)
    assert plan is not None
    for seed in range(3):
        m = speckled_tile(seed)
        ref_lab = sk_label(m, connectivity=connectivity // 4)
        with pytest.MonkeyPatch.context() as patch:
            for name, value in limits.items():
                patch.setattr(kl, name, value)
            record, stored = plan.pass1_chunk(m, (0, 0))
        assert not (stored & ~m).any()  # only ever erases
        kept_labels = np.unique(ref_lab[stored])
        kept_labels = kept_labels[kept_labels > 0]
        for k in kept_labels:  # objects are erased whole or not at all
            assert stored[ref_lab == k].all()
        summary = record[0]["fg"]
        assert len(summary.ids) == len(kept_labels)  # every object left is reported
        np.testing.assert_array_equal(
            np.sort(ref_lab[summary.first_row, summary.first_col]), kept_labels)
        if limits.get("ERASE_BOX") != 0:
            assert len(kept_labels) < 0.2 * ref_lab.max()  # the specks are gone
        assert stored[80:100, 30:50].all()  # among the 2 largest, inside a ring that is not
        for size in ((120, 150), (37, 41), (64, 23)):
            chunks = da.core.normalize_chunks(size, m.shape)
            np.testing.assert_array_equal(
                run_engine(plan, m, chunks, limits), ref_keep_largest(m, 2, connectivity))


def test_pass1_on_uniform_and_empty_tiles():
    for plan in (fill_holes_plan(), remove_small_objects_plan(5), keep_largest_plan(1)):
        for tile in (np.zeros((0, 4), bool), np.zeros((5, 7), bool), np.ones((5, 7), bool)):
            record, stored = plan.pass1_chunk(tile, (0, 0))
            np.testing.assert_array_equal(stored, tile)
            assert set(record[0]) == set(plan.layers)


@pytest.mark.parametrize("value", [True, False])
@pytest.mark.parametrize("connectivity", [4, 8])
def test_trace_equals_labelling(connectivity, value):
    """The vectorized border following numbers and measures components as labelling does."""
    rng = np.random.default_rng(connectivity + value)
    for trial in range(40):
        shape = tuple(rng.integers(1, 60, 2))
        m = rng.random(shape) < rng.random()
        if trial % 2:
            m = ndi.uniform_filter(rng.random(shape), 3) < rng.random()
        img = m.view(np.uint8)
        traced = kl.trace(img, connectivity=connectivity, value=value)
        assert traced is not None
        ref = kl.local_components(m if value else ~m, connectivity=connectivity)
        assert traced.count == ref.count
        for name in ("top", "left", "bottom", "right", "first_row", "first_col"):
            np.testing.assert_array_equal(getattr(traced, name), getattr(ref, name),
                                          err_msg=name)
        ref_faces = kl.faces_of(ref.labels)
        for name in ("top", "bottom", "left", "right"):
            np.testing.assert_array_equal(getattr(traced.faces, name), getattr(ref_faces, name))


@settings(deadline=None, max_examples=80)
@given(noisy_masks(max_side=90), CONNECTIVITY, st.sampled_from([0, 1]), st.integers(1, 6))
def test_face_components_equal_labelling(m, connectivity, value, band):
    """The band labelling plus floods measures the face-touching components exactly, numbered
    in raster order of first pixel among themselves, and marks exactly their pixels."""
    img = m.view(np.uint8)
    before = img.copy()
    found = kl.face_components(img, connectivity=connectivity, value=value, band=band)
    np.testing.assert_array_equal(img, before)
    if found is None:
        assert min(m.shape) <= 2 * band + 1
        return
    ref = kl.local_components(m if value else ~m, connectivity=connectivity)
    ref_faces = kl.faces_of(ref.labels)
    on_face = kl.on_faces(ref_faces, ref.count)
    ids = np.flatnonzero(on_face)
    assert found.count == len(ids)
    for name in ("area", "top", "left", "bottom", "right", "first_row", "first_col"):
        np.testing.assert_array_equal(getattr(found, name)[1:], getattr(ref, name)[ids],
                                      err_msg=name)
    number = np.zeros(ref.count + 1, np.int64)
    number[ids] = np.arange(1, len(ids) + 1)
    for name in ("top", "bottom", "left", "right"):
        np.testing.assert_array_equal(getattr(found.faces, name),
                                      number[getattr(ref_faces, name)])
    taken = on_face[ref.labels]
    np.testing.assert_array_equal(found.marked >= 2, taken)
    np.testing.assert_array_equal(found.marked[~taken], img[~taken])


@settings(deadline=None, max_examples=30)
@given(cases(max_side=120))
def test_pass1_never_writes_its_input(case):
    """Every plan's pass 1 (and pass 2 on what it stored) runs on read-only arrays."""
    m, _, limits = case
    plans = [fill_holes_plan(), fill_holes_plan(max_hole_area=5),
             remove_small_objects_plan(7, connectivity=4), remove_small_objects_plan(7),
             keep_largest_plan(2), label_plan(8, np.dtype(np.int32)), keep_largest_holes_plan(1)]
    tile = m.copy()
    tile.setflags(write=False)
    limits = dict(limits)
    sparse_limit = limits.pop("SPARSE_LIMIT")
    with pytest.MonkeyPatch.context() as patch:
        for name, value in limits.items():
            patch.setattr(kl, name, value)
        for plan in plans:
            assert plan is not None
            plan = with_sparse_limit(plan, sparse_limit)
            record, stored = plan.pass1_chunk(tile, (0, 0))
            np.testing.assert_array_equal(tile, m)
            stored = np.array(stored)
            stored.setflags(write=False)
            records = np.empty((1, 1), dtype=object)
            records[0, 0] = record
            merged = plan.merge(records, da.from_array(m, chunks=m.shape)).compute()
            plan.apply_stored(stored, chunk_lut(merged, 0, 0))
