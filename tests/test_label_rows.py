"""``label`` without a table of every component: pass 1 reports the face components and counts
the others per row of the chunk, the merge gives each chunk's rows their first labels, pass 2
numbers the rest. The numbering equals ``skimage.measure.label`` on the whole array for any
chunking (many interior components, components starting in the same row in several chunks,
one-pixel chunks), and what the merge receives does not grow with the interior components.
"""

from __future__ import annotations

import pickle
from dataclasses import replace
from functools import partial

import dask
import dask.array as da
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from skimage.measure import label as sk_label

from slidemask.errors import MaskError
from slidemask.kernels import labels as kl
from slidemask.ops.components import (
    _decide_label_rows,
    _decide_labels,
    chunk_lut,
    label,
    label_plan,
    label_table_plan,
    label_with_stats,
)
from tests.test_two_pass_local import axis_chunks, cases, run_engine, with_sparse_limit


@pytest.fixture(autouse=True)
def _sync_scheduler():
    with dask.config.set(scheduler="sync"):
        yield


DTYPES = st.sampled_from([np.dtype(np.int32), np.dtype(np.int64)])
CONNECTIVITY = st.sampled_from([4, 8])


@st.composite
def row_masks(draw: st.DrawFn, max_side: int = 80) -> np.ndarray:
    """Masks whose components crowd into the same rows: specks on a grid (many interior
    components per chunk), combs and bars that start in one row across the whole width (one
    component's pieces starting in several chunks, beside specks starting in that row), and
    random noise."""
    h = draw(st.integers(1, max_side))
    w = draw(st.integers(1, max_side))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    kind = draw(st.sampled_from(["specks", "combs", "bars", "noise"]))
    m = np.zeros((h, w), bool)
    if kind == "specks":
        step = draw(st.integers(2, 4))
        m[::step, ::step] = True
        m &= rng.random((h, w)) < draw(st.floats(0.5, 1.0))
        m[1::step, 1::step] |= rng.random((len(range(1, h, step)), len(range(1, w, step)))) < 0.3
    elif kind == "combs":  # teeth from a row down to a spine: one component, many first rows
        for top in range(0, h, draw(st.integers(3, 9))):
            spine = min(top + int(rng.integers(1, 5)), h - 1)
            m[top:spine + 1, ::2] = rng.random(len(range(0, w, 2))) < 0.8
            m[spine, : int(rng.integers(0, w + 1))] = True
    elif kind == "bars":  # vertical bars all starting in the same rows, some joined below
        for top in range(0, h, draw(st.integers(2, 7))):
            bottom = min(top + int(rng.integers(1, 6)), h)
            m[top:bottom, ::2] = rng.random(len(range(0, w, 2))) < 0.7
            if rng.random() < 0.5 and bottom < h:
                lo, hi = sorted(rng.integers(0, w + 1, 2))
                m[bottom - 1, lo:hi] = True
    else:
        m = rng.random((h, w)) < draw(st.floats(0.0, 1.0))
    return m


@st.composite
def row_cases(draw: st.DrawFn) -> tuple[np.ndarray, tuple, dict]:
    m = draw(row_masks())
    ones = draw(st.booleans()) and m.size <= 900
    chunks = tuple(
        (1,) * n if ones else draw(axis_chunks(n)) for n in m.shape
    )
    limits = {
        "SPARSE_LIMIT": draw(st.sampled_from([kl.SPARSE_LIMIT, 0, 20])),
        "TRACE_LIMIT": draw(st.sampled_from([kl.TRACE_LIMIT, 3])),
        "_SAMPLE_STEP": draw(st.sampled_from([kl._SAMPLE_STEP, 2])),
    }
    return m, chunks, limits


@settings(deadline=None, max_examples=60)
@given(row_cases(), CONNECTIVITY, DTYPES)
def test_numbering_matches_skimage(case, connectivity, dtype):
    m, chunks, limits = case
    plan = label_plan(connectivity, dtype)
    out = run_engine(plan, m, chunks, limits)
    assert out.dtype == dtype
    np.testing.assert_array_equal(out, sk_label(m, connectivity=connectivity // 4))


@settings(deadline=None, max_examples=30)
@given(cases(max_side=120), CONNECTIVITY, DTYPES)
def test_numbering_on_slide_like_masks(case, connectivity, dtype):
    m, chunks, limits = case
    out = run_engine(label_plan(connectivity, dtype), m, chunks, limits)
    np.testing.assert_array_equal(out, sk_label(m, connectivity=connectivity // 4))


@settings(deadline=None, max_examples=25)
@given(row_masks(max_side=40), CONNECTIVITY, DTYPES, st.data())
def test_public_label_matches_skimage(m, connectivity, dtype, data):
    chunks = tuple(data.draw(axis_chunks(n)) for n in m.shape)
    out = label(da.from_array(m, chunks=chunks), connectivity=connectivity, dtype=dtype)
    assert out.dtype == dtype
    np.testing.assert_array_equal(out.compute(), sk_label(m, connectivity=connectivity // 4))


def test_pieces_starting_in_one_row_across_chunks():
    """A comb whose teeth start in row 0 of three chunks, specks between the teeth in that
    row and interior specks below: the comb is numbered where its first pixel lies, the specks
    after it in its row, the teeth of other chunks are not counted again."""
    m = np.zeros((7, 12), bool)
    m[0, 1::3] = True  # teeth tops: (0, 1), (0, 4), (0, 7), (0, 10)
    m[1, 1::3] = True
    m[2, 1:11] = True  # spine
    m[0, 3] = m[0, 9] = True  # specks in row 0 between teeth (not touching them)
    m[4, 1] = m[4, 5] = m[4, 9] = True  # specks below
    m[6, 0:12:2] = True  # a row of specks on the bottom face
    ref = sk_label(m, connectivity=2)
    for chunks in [(7, 3), (3, 3), (2, 5), (1, 1), (4, 12), (7, 1)]:
        for limit in (kl.SPARSE_LIMIT, 0):
            out = run_engine(label_plan(8, np.dtype(np.int32)), m,
                             tuple(_cut(n, c) for n, c in zip(m.shape, chunks, strict=True)),
                             {"SPARSE_LIMIT": limit})
            np.testing.assert_array_equal(out, ref, err_msg=f"{chunks}")


@pytest.mark.parametrize("limit", [kl.SPARSE_LIMIT, 0])
def test_a_piece_numbered_elsewhere_shifts_nothing_in_its_row(limit):
    """Row 1 of chunk (0, 1) (columns 6-11) starts with a piece of a line that began in chunk
    (0, 0), then an interior speck, then a bar reaching the chunk's bottom face: the speck and
    the bar are the line's successors, the line's piece is not counted in the chunk's row."""
    m = np.zeros((6, 18), bool)
    m[1, 3:7] = True  # labels 1: from (1, 3) into the next chunk
    m[1, 8] = True  # 2: interior of chunk (0, 1)
    m[1:3, 10] = True  # 3: starts in chunk (0, 1), on its bottom face
    m[1, 13:15] = True  # 4: in chunk (0, 2)
    m[4, 5:8] = True  # 5: across chunks (1, 0) and (1, 1)
    m[4, 9] = True  # 6
    ref = sk_label(m, connectivity=2)
    assert ref.max() == 6
    for chunks in [((3, 3), (6, 6, 6)), ((3, 3), (4, 4, 4, 6)), ((2, 2, 2), (6, 6, 6))]:
        for connectivity in (4, 8):
            out = run_engine(label_plan(connectivity, np.dtype(np.int64)), m, chunks,
                             {"SPARSE_LIMIT": limit})
            np.testing.assert_array_equal(out, ref, err_msg=f"{chunks}")


def _cut(n: int, size: int) -> tuple[int, ...]:
    return tuple(min(size, n - k) for k in range(0, n, size))


def _specks(n: int, side: int) -> np.ndarray:
    """A tile of ``side`` x ``side`` with ``n`` one-pixel components, none on a face."""
    m = np.zeros((side, side), bool)
    spots = np.arange(1, side - 1, 2)
    rows, cols = np.divmod(np.arange(n), len(spots))
    m[spots[rows], spots[cols]] = True
    assert sk_label(m).max() == n
    return m


@pytest.mark.parametrize("limit", [kl.SPARSE_LIMIT, 0])
def test_records_do_not_grow_with_interior_components(limit):
    """What the merge receives from a chunk (its summary) and what it makes (the numbering)
    stay as small with 10 000 interior specks as with 10; the table plan of
    ``label_with_stats`` reports every component."""
    side = 202
    plan = with_sparse_limit(label_plan(8, np.dtype(np.int32)), limit)
    sizes = {}
    merged_sizes = {}
    for n in (10, 10_000):
        tile = _specks(n, side)
        (summaries, _), stored = plan.pass1_chunk(tile, (0, 0))
        summary = summaries["fg"]
        assert len(summary.ids) == 0 and summary.count == n
        assert summary.starts is not None and summary.starts.shape == (side,)
        assert summary.starts.dtype == np.uint16 and int(summary.starts.sum()) == n
        sizes[n] = len(pickle.dumps(summary))
        grid = np.tile(tile, (2, 2))
        records = np.empty((2, 2), dtype=object)
        for i, j in np.ndindex(2, 2):
            records[i, j] = plan.pass1_chunk(tile, (i * side, j * side))[0]
        merged = plan.merge(records, da.from_array(grid, chunks=side)).compute()
        assert merged.table is None and merged.rows is not None
        merged_sizes[n] = len(pickle.dumps(merged))
        out = np.block([[plan.apply_stored(tile, chunk_lut(merged, i, j)) for j in range(2)]
                        for i in range(2)])
        np.testing.assert_array_equal(out, sk_label(grid))
    # the counts: 2 bytes a row; the numbering: those, and 8 bytes per row of the array
    assert abs(sizes[10_000] - sizes[10]) <= 16 and sizes[10_000] < 2 * side + 1000
    assert abs(merged_sizes[10_000] - merged_sizes[10]) <= 16
    assert merged_sizes[10_000] < 4 * 2 * side + 2 * 8 * side + 3000
    # the table plan (label_with_stats) reports every component: 7 int64 and more each
    table_plan = label_table_plan(8, np.dtype(np.int32))
    (summaries, _), _ = table_plan.pass1_chunk(_specks(10_000, side), (0, 0))
    assert len(summaries["fg"].ids) == 10_000
    assert len(pickle.dumps(summaries["fg"])) > 7 * 8 * 10_000


def test_label_with_stats_keeps_its_table():
    m = np.random.default_rng(3).random((30, 41)) < 0.3
    labels, stats = label_with_stats(da.from_array(m, chunks=(7, 9)), dtype=np.int64)
    got, table = dask.compute(labels, stats)
    ref = sk_label(m, connectivity=2)
    np.testing.assert_array_equal(got, ref)
    np.testing.assert_array_equal(table.area, np.bincount(ref.ravel())[1:])


@pytest.mark.parametrize("chunks", [(5, 6), (17, 23)])
def test_too_many_components_for_the_dtype(chunks):
    """The merge counts every component, reported or not, against the dtype's maximum, and
    raises the same error as the table plan."""
    m = _specks(40, 17)
    m[0, ::2] = True  # specks on the top face, some joined to interior ones
    d = da.from_array(m, chunks=chunks)
    n = int(sk_label(m).max())
    for plan, decide in ((label_plan(8, np.dtype(np.int32)), _decide_label_rows),
                         (label_table_plan(8, np.dtype(np.int32)), _decide_labels)):
        small = replace(plan, decide=partial(decide, max_label=n - 1))
        with pytest.raises(MaskError, match=f"label: {n} components do not fit the output "
                                            rf"dtype \(at most {n - 1}\); pass dtype=np.int64"):
            small.run(d).compute()
        exact = replace(plan, decide=partial(decide, max_label=n))
        np.testing.assert_array_equal(exact.run(d).compute(), sk_label(m))


def test_number_rows_checks_the_count():
    rows = kl.RowNumbers(first=np.array([1, 3]), starts=np.array([2, 1], np.uint16),
                         owned=np.zeros(0, bool))
    table = kl.number_rows(rows, np.zeros(0, np.int32), np.zeros(0, np.int64), 3, np.int32)
    np.testing.assert_array_equal(table, [0, 1, 2, 3])
    with pytest.raises(ValueError, match="pass 1 counted 3"):
        kl.number_rows(rows, np.zeros(0, np.int32), np.zeros(0, np.int64), 4, np.int32)
    # a row of a chunk holds at most ceil(width / 2) first pixels
    assert kl.row_starts(np.array([0, 0, 2]), 3, 131070).tolist() == [2, 0, 1]
    assert kl.row_starts(np.array([0]), 3, 131070).dtype == np.uint16
    assert kl.row_starts(np.array([0]), 3, 131071).dtype == np.int32
