"""Global component operations: any chunking gives the whole-image reference, bit for bit.

References run on the whole numpy array: ``skimage.measure.label``,
``skimage.morphology.remove_small_objects``, ``scipy.ndimage.binary_fill_holes``, and small
numpy references (written independently of the chunked algorithm) for keep-largest, limited
hole filling and keep-n-largest-holes.
"""

from __future__ import annotations

from itertools import pairwise

import dask
import dask.array as da
import numpy as np
import pytest
import scipy.ndimage as ndi
from hypothesis import given, settings
from hypothesis import strategies as st
from skimage.measure import label as sk_label
from skimage.morphology import remove_small_objects as sk_remove_small_objects

from slidemask.errors import MaskError
from slidemask.kernels import labels as kl
from slidemask.ops.components import (
    _MERGE_PREFIX,
    area_to_pixels,
    keep_largest,
    label,
    label_stats,
    label_with_stats,
    remove_small_objects,
)
from slidemask.ops.holes import fill_holes, holes, keep_largest_holes


@pytest.fixture(autouse=True)
def _sync_scheduler():
    with dask.config.set(scheduler="sync"):
        yield


# ---- strategies ---------------------------------------------------------------------------


@st.composite
def axis_chunks(draw: st.DrawFn, n: int) -> tuple[int, ...]:
    """An irregular chunking of an axis of length n: one chunk, all 1-pixel, or random cuts."""
    kind = draw(st.sampled_from(["cuts", "cuts", "cuts", "ones", "single"]))
    if kind == "single" or n == 1:
        return (n,)
    if kind == "ones" and n <= 16:
        return (1,) * n
    cuts = sorted(draw(st.sets(st.integers(1, n - 1), max_size=min(n - 1, 5))))
    return tuple(b - a for a, b in pairwise([0, *cuts, n]))


@st.composite
def masks(draw: st.DrawFn, max_side: int = 48) -> tuple[np.ndarray, da.Array]:
    """A random bool mask (salt-and-pepper or blobby, any density) and a chunked copy."""
    h = draw(st.integers(1, max_side))
    w = draw(st.integers(1, max_side))
    density = draw(st.floats(0.0, 1.0))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    noise = rng.random((h, w))
    smooth = draw(st.sampled_from([0, 0, 3, 5]))
    if smooth:
        noise = ndi.uniform_filter(noise, size=smooth, mode="reflect")
        density = float(np.quantile(noise, density))
    m = noise < density
    chunks = (draw(axis_chunks(h)), draw(axis_chunks(w)))
    return m, da.from_array(m, chunks=chunks)


CONNECTIVITY = st.sampled_from([4, 8])
SETTINGS = settings(deadline=None, max_examples=25)


# ---- whole-image references -----------------------------------------------------------------


def ref_label(m: np.ndarray, connectivity: int) -> np.ndarray:
    return sk_label(m, connectivity=1 if connectivity == 4 else 2)


def ref_keep_largest(m: np.ndarray, n: int, connectivity: int) -> np.ndarray:
    lab = ref_label(m, connectivity)
    area = np.bincount(lab.ravel())[1:]
    # Labels are in raster order of first pixel, so a stable sort by -area breaks ties by it.
    keep = np.zeros(len(area) + 1, bool)
    keep[np.argsort(-area, kind="stable")[:n] + 1] = True
    return keep[lab]


def ref_holes(m: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Background 4-labels and a flag per label: is it a hole (not touching the border)."""
    bg = sk_label(~m, connectivity=1)
    hole = np.ones(bg.max() + 1, bool)
    hole[0] = False
    hole[np.concatenate([bg[0], bg[-1], bg[:, 0], bg[:, -1]])] = False
    return bg, hole


def ref_fill_holes(m: np.ndarray, max_area: float | None) -> np.ndarray:
    bg, hole = ref_holes(m)
    if max_area is not None:
        hole &= np.bincount(bg.ravel()) <= max_area
    return m | hole[bg]


def ref_keep_largest_holes(m: np.ndarray, n: int) -> np.ndarray:
    """Owner found geometrically: the adjacent object whose filled outline contains the hole."""
    bg, hole = ref_holes(m)
    fg = sk_label(m, connectivity=2)
    area = np.bincount(bg.ravel())
    holes_of: dict[int, list[int]] = {}
    for h in np.flatnonzero(hole):
        region = bg == h
        ring = ndi.binary_dilation(region) & ~region  # 4-neighbours: all foreground
        owners = [
            o for o in np.unique(fg[ring])
            if ndi.binary_fill_holes(fg == o)[region].all()
        ]
        assert len(owners) == 1
        holes_of.setdefault(int(owners[0]), []).append(int(h))
    fill = np.zeros(len(area), bool)
    for hs in holes_of.values():
        # Hole labels are in raster order of first pixel: a stable sort breaks ties by it.
        ranked = sorted(hs, key=lambda h: -area[h])
        fill[ranked[n:]] = True
    return m | fill[bg]


# ---- kernels ------------------------------------------------------------------------------


@SETTINGS
@given(masks(max_side=40), CONNECTIVITY)
def test_local_components_match_skimage(data, connectivity):
    m, _ = data
    comps = kl.local_components(m, connectivity=connectivity)
    ref = ref_label(m, connectivity)
    np.testing.assert_array_equal(comps.labels, ref)
    labels_only, count = kl.label_tile(m, connectivity=connectivity)
    np.testing.assert_array_equal(labels_only, ref)
    assert count == comps.count == ref.max()
    np.testing.assert_array_equal(comps.area[1:], np.bincount(ref.ravel())[1:])
    for k, sl in enumerate(ndi.find_objects(ref), start=1):
        assert (comps.top[k], comps.bottom[k]) == (sl[0].start, sl[0].stop)
        assert (comps.left[k], comps.right[k]) == (sl[1].start, sl[1].stop)
    _, first = np.unique(ref.ravel(), return_index=True)
    first = first[1:] if m.size and not m.all() else first
    np.testing.assert_array_equal(comps.first_row[1:] * m.shape[1] + comps.first_col[1:], first)


@settings(deadline=None, max_examples=200)
@given(masks(max_side=40), CONNECTIVITY, st.booleans())
def test_traced_components_equal_labelled(data, connectivity, value):
    """Border following measures exactly what labelling does, faces included."""
    m, _ = data
    before = m.copy()
    # trace, without first estimating from sampled rows whether there are too many
    traced = kl.traced_components(m, connectivity=connectivity, value=value, estimate=False)
    np.testing.assert_array_equal(m, before)  # the tile is read, never written
    assert traced is not None
    comps, faces = traced
    ref = kl.local_components(m if value else ~m, connectivity=connectivity)
    assert comps.count == ref.count
    for name in ("area", "top", "left", "bottom", "right", "first_row", "first_col"):
        np.testing.assert_array_equal(getattr(comps, name), getattr(ref, name), err_msg=name)
    ref_faces = kl.faces_of(ref.labels)
    for name in ("top", "bottom", "left", "right"):
        np.testing.assert_array_equal(getattr(faces, name), getattr(ref_faces, name))


@pytest.mark.parametrize("connectivity", [4, 8])
def test_local_components_of_tissue_riddled_with_pinholes(connectivity):
    """Tiles with thousands of pinholes are labelled with them filled: labels, areas, boxes
    and first pixels still equal scikit-image's, pinholes on and beside the faces included."""
    rng = np.random.default_rng(connectivity)
    m = rng.random((700, 650)) > 0.03  # tissue riddled with pinholes, specks in the glass
    m[200:400, 100:500] = rng.random((200, 400)) < 0.03
    m[450:460, 300:310] = False  # a larger hole with an island
    m[455, 305] = True
    ref = ref_label(m, connectivity)
    comps = kl.local_components(m, connectivity=connectivity)
    np.testing.assert_array_equal(comps.labels, ref)
    np.testing.assert_array_equal(comps.area[1:], np.bincount(ref.ravel())[1:])
    for k, sl in enumerate(ndi.find_objects(ref), start=1):
        assert (comps.top[k], comps.bottom[k], comps.left[k], comps.right[k]) == (
            sl[0].start, sl[0].stop, sl[1].start, sl[1].stop)
    _, first = np.unique(ref.ravel(), return_index=True)
    np.testing.assert_array_equal(comps.first_row[1:] * m.shape[1] + comps.first_col[1:],
                                  first[1:])


@pytest.mark.parametrize("connectivity", [4, 8])
def test_traced_areas_of_specks_equal_labelled(connectivity):
    """Specks of noise (boxes one pixel wide or 2×2, measured from the box) and the larger
    components among them (flooded) have the areas labelling gives."""
    rng = np.random.default_rng(5)
    m = rng.random((300, 300)) < 0.02
    m[100:200, 50:250] = rng.random((100, 200)) > 0.02  # a pinholed object among the specks
    traced = kl.traced_components(m, connectivity=connectivity, estimate=False)
    assert traced is not None
    ref = kl.local_components(m, connectivity=connectivity)
    assert traced[0].count == ref.count > 1000
    np.testing.assert_array_equal(traced[0].area, ref.area)


def test_traced_components_give_way_to_labelling_when_many():
    m = np.zeros((128, 128), bool)
    m[::2, ::2] = True  # 4096 objects: more than border following is used for
    assert kl.traced_components(m, connectivity=8) is None  # estimated from sampled rows
    assert kl.traced_components(m, connectivity=8, estimate=False) is None  # counted after
    comps, faces = kl.components_and_faces(m, connectivity=8, estimate=False)
    assert comps.count == 64 * 64 and comps.labels is not None
    np.testing.assert_array_equal(faces.top[::2], np.arange(1, 65))


def test_traced_components_give_way_when_the_other_value_has_many_borders():
    """``findContours`` traces the borders of both values: one object riddled with pinholes
    (thresholded light tissue) is labelled, not traced (that took 1-3 s a 2048² chunk)."""
    m = np.ones((256, 256), bool)
    m[1::2, 1::2] = False  # 16384 pinholes in one object
    assert kl.traced_components(m, connectivity=8) is None
    comps, faces = kl.components_and_faces(m, connectivity=8)
    assert comps.count == 1 and comps.area[1] == m.sum()
    assert faces.top.tolist() == [1] * 256


def test_kernels_accept_empty_tiles():
    empty = np.zeros((0, 5), bool)
    assert kl.label_tile(empty, connectivity=8)[1] == 0
    assert kl.local_components(empty, connectivity=4).count == 0
    summaries, _ = kl.object_summary(empty, connectivity=8, offset=(0, 0), include="all")
    assert len(summaries["fg"].ids) == 0
    assert kl.fill_background(empty, {"bg": (np.zeros(0), np.zeros(0))}, max_area=None).shape == (
        0, 5)


def test_rank_in_groups():
    groups = np.array([1, 1, 2, 1, 2])
    area = np.array([5, 9, 1, 9, 1])
    rows = np.array([0, 3, 0, 1, 2])
    cols = np.zeros(5, int)
    np.testing.assert_array_equal(kl.rank_in_groups(groups, area, rows, cols), [2, 1, 0, 0, 1])


# ---- label and label_stats -------------------------------------------------------------------


@SETTINGS
@given(masks(), CONNECTIVITY)
def test_label_matches_skimage(data, connectivity):
    m, d = data
    out = label(d, connectivity=connectivity)
    assert out.dtype == np.int32 and out.chunks == d.chunks
    np.testing.assert_array_equal(out.compute(), ref_label(m, connectivity))


@settings(deadline=None, max_examples=15)
@given(masks(), CONNECTIVITY)
def test_label_stats_matches_reference(data, connectivity):
    m, d = data
    labels, stats = label_with_stats(d, connectivity=connectivity, dtype=np.int64)
    got_labels, table = dask.compute(labels, stats)
    ref = ref_label(m, connectivity)
    np.testing.assert_array_equal(got_labels, ref)
    assert len(table) == ref.max()
    np.testing.assert_array_equal(table.label, np.arange(1, ref.max() + 1))
    np.testing.assert_array_equal(table.area, np.bincount(ref.ravel())[1:])
    for k, sl in enumerate(ndi.find_objects(ref)):
        assert (table.top[k], table.bottom[k], table.left[k], table.right[k]) == (
            sl[0].start, sl[0].stop, sl[1].start, sl[1].stop)
        r, c = table.first_row[k], table.first_col[k]
        assert ref[r, c] == k + 1 and not (ref.ravel()[: r * m.shape[1] + c] == k + 1).any()
    alone = label_stats(d, connectivity=connectivity).compute()
    np.testing.assert_array_equal(alone.area, table.area)


# ---- object filters ---------------------------------------------------------------------------


@SETTINGS
@given(masks(), CONNECTIVITY, st.integers(0, 25))
def test_remove_small_objects_matches_skimage(data, connectivity, min_area):
    m, d = data
    out = remove_small_objects(d, min_area, connectivity=connectivity)
    assert out.dtype == bool and out.chunks == d.chunks
    # skimage 0.26: max_size removes components of <= max_size pixels, so "fewer than
    # min_area" is max_size = min_area - 1.
    ref = sk_remove_small_objects(m, max_size=max(min_area - 1, 0),
                                  connectivity=1 if connectivity == 4 else 2)
    np.testing.assert_array_equal(out.compute(), ref)


def test_remove_small_objects_fractional_area():
    m = np.zeros((6, 9), bool)
    m[1, 1:3] = True  # 2 pixels
    m[3:5, 4:7] = True  # 6 pixels
    d = da.from_array(m, chunks=(2, 4))
    np.testing.assert_array_equal(remove_small_objects(d, 2.5).compute(), m & (np.arange(9) > 3))
    np.testing.assert_array_equal(remove_small_objects(d, 2.0).compute(), m)


@SETTINGS
@given(masks(), CONNECTIVITY, st.integers(0, 5))
def test_keep_largest_matches_reference(data, connectivity, n):
    m, d = data
    out = keep_largest(d, n, connectivity=connectivity)
    np.testing.assert_array_equal(out.compute(), ref_keep_largest(m, n, connectivity))


def test_keep_largest_ties_go_to_first_in_raster_order():
    m = np.zeros((7, 7), bool)
    m[5, 0:2] = True  # area 2, first pixel (5, 0)
    m[0, 5:7] = True  # area 2, first pixel (0, 5): comes first
    m[2, 2] = True
    d = da.from_array(m, chunks=(3, 2))
    expected = np.zeros_like(m)
    expected[0, 5:7] = True
    np.testing.assert_array_equal(keep_largest(d, 1).compute(), expected)


# ---- holes --------------------------------------------------------------------------------


@SETTINGS
@given(masks())
def test_fill_holes_matches_scipy(data):
    m, d = data
    out = fill_holes(d)
    assert out.dtype == bool and out.chunks == d.chunks
    np.testing.assert_array_equal(out.compute(), ndi.binary_fill_holes(m))


@SETTINGS
@given(masks())
def test_holes_match_scipy(data):
    m, d = data
    out = holes(d)
    assert out.dtype == bool and out.shape == m.shape
    np.testing.assert_array_equal(out.compute(), ndi.binary_fill_holes(m) & ~m)


@SETTINGS
@given(masks(), st.integers(0, 30))
def test_fill_holes_with_limit(data, max_area):
    m, d = data
    np.testing.assert_array_equal(
        fill_holes(d, max_hole_area=max_area).compute(), ref_fill_holes(m, max_area))


@settings(deadline=None, max_examples=25)
@given(masks(max_side=32), st.integers(0, 3))
def test_keep_largest_holes_matches_reference(data, n):
    m, d = data
    np.testing.assert_array_equal(
        keep_largest_holes(d, n).compute(), ref_keep_largest_holes(m, n))


def test_hole_owner_is_the_enclosing_object_not_an_island():
    # An object with one big hole that holds an island; the island has a hole of its own.
    m = np.zeros((13, 13), bool)
    m[1:12, 1:12] = True
    m[2:11, 2:11] = False  # hole A (ring of the outer object), 81 - 25 = 56 pixels
    m[4:9, 4:9] = True  # island
    m[6, 6] = False  # hole B of the island
    d = da.from_array(m, chunks=(4, 3))
    # n = 1: each object keeps its only hole.
    np.testing.assert_array_equal(keep_largest_holes(d, 1).compute(), m)
    np.testing.assert_array_equal(keep_largest_holes(d, 0).compute(), ndi.binary_fill_holes(m))
    np.testing.assert_array_equal(
        keep_largest_holes(d, 1).compute(), ref_keep_largest_holes(m, 1))


# ---- adversarial shapes --------------------------------------------------------------------


def spiral(n: int) -> np.ndarray:
    """A 1-pixel-wide square spiral with 1-pixel gaps: one long object through every chunk."""
    m = np.zeros((n, n), bool)
    r, c, dr, dc = 0, 0, 0, 1
    m[r, c] = True
    while True:
        for _ in range(2):  # go on, or turn right once
            nr, nc, ar, ac = r + dr, c + dc, r + 2 * dr, c + 2 * dc
            ahead_free = not (0 <= ar < n and 0 <= ac < n and m[ar, ac])
            if 0 <= nr < n and 0 <= nc < n and not m[nr, nc] and ahead_free:
                r, c = nr, nc
                m[r, c] = True
                break
            dr, dc = dc, -dr
        else:
            return m


def adversarial() -> list[tuple[str, np.ndarray]]:
    cases = [("spiral", spiral(27))]
    s = np.zeros((27, 27), bool)
    # Concentric squares joined only through corner (diagonal) contacts.
    r0, c0, r1, c1 = 0, 0, 26, 26
    while r0 < r1 and c0 < c1:
        s[r0, c0:c1 + 1] = True
        s[r0:r1 + 1, c1] = True
        s[r1, c0:c1 + 1] = True
        s[r0 + 2:r1 + 1, c0] = True
        r0, c0, r1, c1 = r0 + 2, c0 + 2, r1 - 2, c1 - 2
        s[r0 - 1, c0 - 1] = r0 < r1 and c0 < c1
    cases.append(("diagonal-rings", s))
    u = np.zeros((22, 22), bool)
    u[2:20, 2:5] = True
    u[2:20, 17:20] = True
    u[17:20, 2:20] = True  # U open at the top: the inside is not a hole
    cases.append(("u-shape", u))
    closed = u.copy()
    closed[2:5, 2:20] = True  # now a frame: one hole spanning many chunks
    cases.append(("frame", closed))
    border = np.ones((20, 20), bool)
    border[5:15, 0:8] = False  # background touching the left border: not a hole
    border[8:12, 12:16] = False  # a real hole
    cases.append(("border-bay", border))
    diag = np.zeros((12, 12), bool)
    idx = np.arange(12)
    diag[idx, idx] = True  # one 8-object, twelve 4-objects
    diag[idx[:-1], idx[:-1] + 1] = False
    cases.append(("diagonal", diag))
    ring = np.zeros((9, 9), bool)
    ring[[1, 2, 3, 4, 5, 6, 7, 6, 5, 4, 3, 2], [4, 3, 2, 1, 2, 3, 4, 5, 6, 7, 6, 5]] = True
    cases.append(("diagonal-diamond", ring))  # 8-connected ring: a 4-connected hole inside
    cases.append(("empty", np.zeros((10, 13), bool)))
    cases.append(("full", np.ones((10, 13), bool)))
    one = np.zeros((1, 1), bool)
    cases.append(("pixel-off", one))
    cases.append(("pixel-on", ~one))
    return cases


CHUNKINGS = [(1, 1), (3, 4), (64, 64)]


@pytest.mark.parametrize("name,m", adversarial(), ids=[c[0] for c in adversarial()])
@pytest.mark.parametrize("chunks", CHUNKINGS, ids=str)
def test_adversarial_shapes(name, m, chunks):
    if chunks == (1, 1) and m.size > 150:
        chunks = (1, 9) if name == "spiral" else (9, 1)  # 1-pixel rows/cols, fewer tasks
    d = da.from_array(m, chunks=chunks)
    for connectivity in (4, 8):
        np.testing.assert_array_equal(
            label(d, connectivity=connectivity).compute(), ref_label(m, connectivity))
        np.testing.assert_array_equal(
            remove_small_objects(d, 3, connectivity=connectivity).compute(),
            sk_remove_small_objects(m, max_size=2, connectivity=connectivity // 4))
    np.testing.assert_array_equal(keep_largest(d, 1).compute(), ref_keep_largest(m, 1, 8))
    np.testing.assert_array_equal(fill_holes(d).compute(), ndi.binary_fill_holes(m))
    np.testing.assert_array_equal(
        fill_holes(d, max_hole_area=10).compute(), ref_fill_holes(m, 10))
    np.testing.assert_array_equal(keep_largest_holes(d, 0).compute(), ndi.binary_fill_holes(m))


def test_hole_spanning_four_chunks():
    m = np.ones((10, 10), bool)
    m[3:7, 3:7] = False  # crosses the chunk corner at (5, 5)
    m[0, 0] = False
    d = da.from_array(m, chunks=5)
    expected = m.copy()
    expected[3:7, 3:7] = True
    np.testing.assert_array_equal(fill_holes(d).compute(), expected)
    np.testing.assert_array_equal(fill_holes(d, max_hole_area=15).compute(), m)
    np.testing.assert_array_equal(fill_holes(d, max_hole_area=16).compute(), expected)


def test_diagonal_contact_across_chunk_corner():
    m = np.zeros((4, 4), bool)
    m[1, 1] = m[2, 2] = True  # touch only at the corner shared by four 2x2 chunks
    m[1, 2] = False
    d = da.from_array(m, chunks=2)
    assert label(d, connectivity=8).compute().max() == 1
    assert label(d, connectivity=4).compute().max() == 2
    anti = np.fliplr(m)
    d = da.from_array(anti, chunks=2)
    assert label(d, connectivity=8).compute().max() == 1
    np.testing.assert_array_equal(remove_small_objects(d, 2).compute(), anti)
    assert not remove_small_objects(d, 2, connectivity=4).compute().any()


def test_many_tiny_components():
    m = np.zeros((700, 700), bool)
    m[::2, ::2] = True  # 122 500 isolated pixels
    d = da.from_array(m, chunks=64)
    np.testing.assert_array_equal(label(d).compute(), ref_label(m, 8))
    assert not remove_small_objects(d, 2).compute().any()
    np.testing.assert_array_equal(fill_holes(d).compute(), m)
    np.testing.assert_array_equal(keep_largest(d, 3).compute().sum(), 3)
    assert len(label_stats(d).compute()) == 350 * 350


# ---- laziness, recomputation and errors ---------------------------------------------------------


def test_input_is_computed_once_and_stored(tmp_path):
    """Each op computes its input once (pass 1 stores it to scratch, pass 2 reads it back),
    also in a chain; building the graph computes nothing."""
    calls: list[tuple[int, int]] = []

    def source(block: np.ndarray, block_info=None) -> np.ndarray:
        calls.append(tuple(block_info[0]["chunk-location"]))
        return block

    m = ref_fill_holes(np.random.default_rng(3).random((30, 40)) < 0.6, None) ^ (
        np.random.default_rng(4).random((30, 40)) < 0.1)
    d = da.from_array(m, chunks=10).map_blocks(source, dtype=bool, meta=np.empty((0, 0), bool))
    filled = fill_holes(d)
    assert not calls  # building the graph computes nothing
    np.testing.assert_array_equal(filled.compute(), ndi.binary_fill_holes(m))
    assert sorted(calls) == sorted(np.ndindex(3, 4))
    calls.clear()
    chained = fill_holes(remove_small_objects(d, 4), max_hole_area=5)
    layers = chained.__dask_graph__().layers
    merges = [n for n in layers if isinstance(n, str) and n.startswith(_MERGE_PREFIX)]
    assert len(merges) == 2
    expected = ref_fill_holes(sk_remove_small_objects(m, max_size=3, connectivity=2), 5)
    np.testing.assert_array_equal(chained.compute(), expected)
    assert sorted(calls) == sorted(np.ndindex(3, 4))


def test_results_with_threads_and_zarr(tmp_path):
    m = np.random.default_rng(5).random((90, 70)) < 0.45
    da.from_array(m, chunks=(32, 16)).to_zarr(str(tmp_path / "m.zarr"))
    d = da.from_zarr(str(tmp_path / "m.zarr"))
    with dask.config.set(scheduler="threads", num_workers=2):
        got = fill_holes(remove_small_objects(d, 5)).compute()
    ref = ndi.binary_fill_holes(sk_remove_small_objects(m, max_size=4, connectivity=2))
    np.testing.assert_array_equal(got, ref)


def test_errors():
    d = da.zeros((4, 4), dtype=bool, chunks=2)
    with pytest.raises(MaskError, match="bool"):
        fill_holes(d.astype(np.uint8))
    with pytest.raises(MaskError, match="2-D"):
        label(da.zeros((2, 2, 2), dtype=bool))
    with pytest.raises(MaskError, match="connectivity"):
        remove_small_objects(d, 3, connectivity=6)
    with pytest.raises(MaskError, match="non-negative"):
        keep_largest(d, -1)
    with pytest.raises(MaskError, match="non-negative"):
        keep_largest_holes(d, 1.5)
    with pytest.raises(MaskError, match="NaN"):
        remove_small_objects(d, float("nan"))
    with pytest.raises(MaskError, match="int32 or int64"):
        label(d, dtype=np.uint8)
    with pytest.raises(MaskError, match="dask array"):
        fill_holes([[True, False]])  # a numpy array is one chunk (tests/test_arguments.py)
    with pytest.raises(MaskError, match="positive"):
        area_to_pixels(10.0, 0.0)
    assert area_to_pixels(100.0, 0.5) == 400.0


def test_trivial_cases_stay_lazy_and_exact():
    m = np.random.default_rng(1).random((9, 8)) < 0.5
    d = da.from_array(m, chunks=3)
    assert remove_small_objects(d, 1) is d
    assert fill_holes(d, max_hole_area=0.5) is d
    assert not keep_largest(d, 0).compute().any()
    empty = da.zeros((0, 5), dtype=bool, chunks=2)
    assert fill_holes(empty).shape == (0, 5)
    assert label(empty).compute().shape == (0, 5)
    assert len(label_stats(empty).compute()) == 0
    # Slicing can leave empty chunks; they are merged away.
    sliced = da.from_array(np.pad(m, ((0, 3), (0, 0))), chunks=3)[:9]
    sliced = da.concatenate([sliced[:, :4], sliced[:, 4:4], sliced[:, 4:]], axis=1)
    np.testing.assert_array_equal(label(sliced).compute(), ref_label(m, 8))


@pytest.mark.parametrize("count", [3, 255, 256, 257, 5000])
def test_lookup_and_box_painting_equal_take(count):
    """The pass-2 shortcuts (8-bit LUT, painting bounding boxes) equal ``np.take``."""
    from slidemask.kernels.labels import _paint_boxes, local_components, lookup

    rng = np.random.default_rng(count)
    tile = np.zeros((300, 400), bool)
    for _ in range(count):
        y, x = rng.integers(0, 300), rng.integers(0, 400)
        tile[y : y + rng.integers(1, 9), x : x + rng.integers(1, 9)] = True
    comps = local_components(tile, connectivity=8)
    table = rng.random(comps.count + 1) < 0.05
    table[0] = False
    np.testing.assert_array_equal(lookup(table, comps.labels), np.take(table, comps.labels))
    for value in (True, False):
        out = tile.copy()
        if _paint_boxes(out, table, comps.labels, comps, value=value):
            expected = tile.copy()
            expected[np.take(table, comps.labels)] = value
            np.testing.assert_array_equal(out, expected)


@pytest.mark.parametrize("connectivity", [4, 8])
def test_compact_labels_are_the_same_numbers_in_uint16(connectivity: int) -> None:
    rng = np.random.default_rng(3)
    tile = rng.random((300, 410)) < 0.45
    wide, count = kl.label_tile(tile, connectivity=connectivity)
    compact, compact_count = kl.label_tile(tile, connectivity=connectivity, compact=True)
    assert compact.dtype == np.uint16 and compact_count == count
    np.testing.assert_array_equal(compact, wide)
    # 65535 components or more: int32, as without compact
    dots = np.zeros((1024, 1024), bool)
    dots[::2, ::2] = True
    many, n = kl.label_tile(dots, connectivity=connectivity, compact=True)
    assert n == 512 * 512 and many.dtype == np.int32
    np.testing.assert_array_equal(many, kl.label_tile(dots, connectivity=connectivity)[0])
