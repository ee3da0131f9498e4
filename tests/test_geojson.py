"""GeoJSON writer: features rasterise back to the mask exactly, one per 8-connected component."""

from __future__ import annotations

import json
from itertools import pairwise

import dask
import dask.array as da
import numpy as np
import pytest
import scipy.ndimage as ndi
import shapely
from hypothesis import given, settings
from hypothesis import strategies as st
from skimage.measure import label as sk_label

from slidemask.errors import MaskError
from slidemask.kernels.polygons import join_pieces, label_polygons
from slidemask.writers.geojson import write_geojson


@pytest.fixture(autouse=True)
def _sync_scheduler():
    with dask.config.set(scheduler="sync"):
        yield


@st.composite
def chunked_masks(draw: st.DrawFn, max_side: int = 40) -> tuple[np.ndarray, da.Array]:
    h = draw(st.integers(1, max_side))
    w = draw(st.integers(1, max_side))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    noise = rng.random((h, w))
    if draw(st.booleans()):
        noise = ndi.uniform_filter(noise, size=3, mode="reflect")
    m = noise < np.quantile(noise, draw(st.floats(0.0, 1.0)))

    def axis(n: int) -> tuple[int, ...]:
        cuts = sorted(draw(st.sets(st.integers(1, max(n - 1, 1)), max_size=min(n - 1, 5))))
        return tuple(b - a for a, b in pairwise([0, *cuts, n]))

    return m, da.from_array(m, chunks=(axis(h), axis(w)))


def rasterise(geometry: shapely.Geometry, shape: tuple[int, int], downsample: float) -> np.ndarray:
    """Pixels whose centre lies inside the geometry (mask pixel (r, c) has centre c+.5, r+.5)."""
    rows, cols = np.mgrid[0 : shape[0], 0 : shape[1]]
    return shapely.contains_xy(geometry, (cols + 0.5) * downsample, (rows + 0.5) * downsample)


def check_round_trip(m: np.ndarray, d: da.Array, path, downsample: float = 1.0) -> dict:
    n = write_geojson(d, path, downsample=downsample, classification="Tumor", color=(200, 0, 0))
    collection = json.loads(path.read_text())
    assert collection["type"] == "FeatureCollection"
    features = collection["features"]
    labels = sk_label(m, connectivity=2)
    assert n == len(features) == labels.max()
    covered = np.zeros(m.shape, int)
    for feature in features:
        assert feature["properties"] == {
            "objectType": "annotation",
            "classification": {"name": "Tumor", "color": [200, 0, 0]},
        }
        geometry = shapely.geometry.shape(feature["geometry"])
        assert geometry.is_valid, shapely.is_valid_reason(geometry)
        assert geometry.geom_type in ("Polygon", "MultiPolygon")
        inside = rasterise(geometry, m.shape, downsample)
        assert geometry.area == pytest.approx(inside.sum() * downsample**2, abs=1e-9)
        component = np.unique(labels[inside])
        assert len(component) == 1 and component[0] > 0  # exactly one whole component
        assert inside.sum() == (labels == component[0]).sum()
        covered += inside
    np.testing.assert_array_equal(covered, m.astype(int))
    return collection


@settings(deadline=None, max_examples=25)
@given(chunked_masks(), st.sampled_from([1.0, 4.0, 0.5]))
def test_round_trip_matches_mask(tmp_path_factory, data, downsample):
    m, d = data
    check_round_trip(m, d, tmp_path_factory.mktemp("gj") / "out.geojson", downsample)


def test_diagonal_contact_is_one_multipolygon(tmp_path):
    m = np.zeros((6, 6), bool)
    m[1:3, 1:3] = True
    m[3:5, 3:5] = True  # touches the first square only at the corner (3, 3)
    d = da.from_array(m, chunks=3)  # the contact is also a chunk corner
    collection = check_round_trip(m, d, tmp_path / "diag.geojson")
    (feature,) = collection["features"]
    assert feature["geometry"]["type"] == "MultiPolygon"


def test_component_across_chunks_has_no_seams(tmp_path):
    m = np.zeros((20, 20), bool)
    m[2:18, 2:18] = True
    m[6:14, 6:14] = False  # a hole spanning four chunks
    d = da.from_array(m, chunks=(7, 6))
    collection = check_round_trip(m, d, tmp_path / "ring.geojson", downsample=2.0)
    geometry = shapely.geometry.shape(collection["features"][0]["geometry"])
    assert geometry.geom_type == "Polygon" and len(geometry.interiors) == 1
    assert len(geometry.exterior.coords) == 5  # a square: no vertices left along the seams
    assert geometry.area == (16 * 16 - 8 * 8) * 4


def test_empty_and_full(tmp_path):
    empty = np.zeros((5, 7), bool)
    assert write_geojson(da.from_array(empty, chunks=2), tmp_path / "e.geojson") == 0
    assert json.loads((tmp_path / "e.geojson").read_text())["features"] == []
    full = np.ones((5, 7), bool)
    check_round_trip(full, da.from_array(full, chunks=(1, 3)), tmp_path / "f.geojson")


@settings(deadline=None, max_examples=150)
@given(chunked_masks(max_side=24))
def test_label_polygons_are_valid_and_exact(data):
    # No dask: many examples of pinches (rings touching themselves, holes chained corner to
    # corner) are cheap here.
    m, _ = data
    labels = sk_label(m, connectivity=2)
    polygons = label_polygons(labels)
    assert sorted(polygons) == list(range(1, labels.max() + 1))
    for value, parts in polygons.items():
        assert len(parts) == 1  # whole tile: one piece per component
        geometry = join_pieces(parts)
        assert geometry.is_valid, shapely.is_valid_reason(geometry)
        inside = rasterise(geometry, m.shape, 1.0)
        np.testing.assert_array_equal(inside, labels == value)
        assert geometry.area == inside.sum()


def test_label_polygons_kernel():
    labels = np.array([[1, 1, 0, 0], [0, 0, 0, 2], [3, 0, 0, 2]])
    polygons = label_polygons(labels, offset=(10, 20))
    assert sorted(polygons) == [1, 2, 3]
    assert polygons[1][0].equals(shapely.box(20, 10, 22, 11))
    assert polygons[2][0].equals(shapely.box(23, 11, 24, 13))
    assert label_polygons(np.zeros((0, 4), int)) == {}


def test_errors(tmp_path):
    d = da.zeros((4, 4), dtype=bool, chunks=2)
    with pytest.raises(MaskError, match="color"):
        write_geojson(d, tmp_path / "x.geojson", color=(1, 2))
    with pytest.raises(MaskError, match="downsample"):
        write_geojson(d, tmp_path / "x.geojson", downsample=0)
    with pytest.raises(MaskError, match="bool"):
        write_geojson(d.astype(np.uint8), tmp_path / "x.geojson")


@st.composite
def chunked_class_maps(draw: st.DrawFn, max_side: int = 40) -> tuple[np.ndarray, da.Array]:
    mask, lazy = draw(chunked_masks(max_side))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    noise = ndi.uniform_filter(rng.random(mask.shape), size=3, mode="reflect")
    classes = np.where(mask, np.where(noise < 0.5, 1, 3), np.where(noise < 0.3, 5, 0))
    classes = classes.astype(np.uint8)
    return classes, da.from_array(classes, chunks=lazy.chunks)


@settings(deadline=None, max_examples=25)
@given(chunked_class_maps(), st.sampled_from([1.0, 16.0]))
def test_class_map_in_memory_and_stored_give_the_same_features(tmp_path_factory, data,
                                                               downsample):
    from slidemask.writers import geojson

    classes, lazy = data
    values = {"tissue": 1, "blur": 3, "bubble": 5, "pen": 2}
    folder = tmp_path_factory.mktemp("classes")
    trace = max(lazy.chunksize)  # traced in chunks of the drawn size
    memory = geojson.write_class_geojson(lazy, folder / "memory.geojson", values,
                                         downsample=downsample, trace_chunk=trace)
    stored = geojson.write_class_geojson(lazy, folder / "stored.geojson", values,
                                         downsample=downsample, trace_chunk=trace,
                                         in_memory_pixels=0)  # stored, class by class
    assert memory == stored
    assert (folder / "memory.geojson").read_text() == (folder / "stored.geojson").read_text()
    features = json.loads((folder / "memory.geojson").read_text())["features"]
    assert [f["properties"]["classification"]["name"] for f in features] == [
        geojson.qupath_name(name) for name in values for _ in range(memory[name])
    ]
    for name, value in values.items():  # each class's features are its components
        (labels, count) = ndi.label(classes == value, structure=np.ones((3, 3)))
        assert memory[name] == count
        mine = [f for f in features
                if f["properties"]["classification"]["name"] == geojson.qupath_name(name)]
        covered = np.zeros(classes.shape, int)
        for feature in mine:
            covered += rasterise(shapely.geometry.shape(feature["geometry"]), classes.shape,
                                 downsample)
        np.testing.assert_array_equal(covered, (classes == value).astype(int))


def test_drop_collinear_keeps_corners_of_every_ring_and_part() -> None:
    import shapely

    from slidemask.kernels.polygons import drop_collinear

    shell = [(0, 0), (0, 2), (0, 4), (3, 4), (6, 4), (6, 0), (2, 0)]
    hole = [(1, 1), (1, 2), (1, 3), (2, 3), (2, 1)]
    other = [(10, 0), (10, 1), (11, 1), (12, 1), (12, 0)]
    cleaned = drop_collinear(shapely.MultiPolygon([
        shapely.Polygon(shell, [hole]), shapely.Polygon(other)
    ]))
    expected = shapely.MultiPolygon([
        shapely.Polygon([(0, 0), (0, 4), (6, 4), (6, 0)], [[(1, 1), (1, 3), (2, 3), (2, 1)]]),
        shapely.Polygon([(10, 0), (10, 1), (12, 1), (12, 0)]),
    ])
    assert cleaned.equals_exact(expected, 0)
    single = drop_collinear(shapely.Polygon(shell))
    assert single.geom_type == "Polygon"
    assert single.equals_exact(shapely.Polygon([(0, 0), (0, 4), (6, 4), (6, 0)]), 0)


def test_drop_collinear_all_cleans_each_geometry_as_alone() -> None:
    import shapely

    from slidemask.kernels.polygons import drop_collinear, drop_collinear_all

    shell = [(0, 0), (0, 2), (0, 4), (3, 4), (6, 4), (6, 0), (2, 0)]
    hole = [(1, 1), (1, 2), (1, 3), (2, 3), (2, 1)]
    other = [(10, 0), (10, 1), (11, 1), (12, 1), (12, 0)]
    geometries = [
        shapely.Polygon(other),
        shapely.MultiPolygon([shapely.Polygon(shell, [hole]), shapely.Polygon(other)]),
        shapely.Polygon(shell, [hole]),
        shapely.MultiPolygon([shapely.Polygon(other)]),
    ]
    together = drop_collinear_all(geometries)
    assert len(together) == len(geometries)
    for mine, geometry in zip(together, geometries, strict=True):
        alone = drop_collinear(geometry)
        assert mine.geom_type == alone.geom_type
        assert mine.equals_exact(alone, 0)
    assert together[3].geom_type == "Polygon"  # one part: a Polygon, as drop_collinear gives
    assert drop_collinear_all([]) == []
