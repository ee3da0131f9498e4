"""OME-Zarr 0.5 label output: ome-zarr-py reads it, pyramids are exact, writes are atomic."""

from __future__ import annotations

import uuid
from pathlib import Path

import dask
import dask.array as da
import numpy as np
import pytest
import zarr
from dask.delayed import Delayed
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from ome_zarr.io import parse_url
from ome_zarr.reader import Label, Multiscales, Reader

from slidemask.errors import MaskError
from slidemask.ops.resample import block_max
from slidemask.writers import ome_zarr
from slidemask.writers.ome_zarr import LABEL_RGBA, ClassLabels, write_ome_labels
from slidemask.writers.summary import mask_summary
from slidemask.writers.zarr import is_complete, partial_outputs


@pytest.fixture(autouse=True)
def _threads():
    with dask.config.set(scheduler="threads"):
        yield


def blob_mask(rows: int, cols: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:rows, :cols]
    mask = np.zeros((rows, cols), dtype=bool)
    for _ in range(5):
        cy, cx = rng.uniform(0, rows), rng.uniform(0, cols)
        r = rng.uniform(0.05, 0.3) * min(rows, cols)
        mask |= (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
    mask |= rng.random((rows, cols)) > 0.995  # specks: single pixels that nearest may drop
    return mask


def reference_level(mask: np.ndarray, k: int, method: str) -> np.ndarray:
    f = 2**k
    if method == "nearest":
        return mask[::f, ::f].astype(np.uint8)
    return block_max(mask, factor=f).astype(np.uint8)


def read_with_ome_zarr(path: Path) -> tuple[list, list]:
    """(image nodes, label nodes) as ome-zarr-py's reader finds them."""
    nodes = list(Reader(parse_url(str(path)))())
    images = [n for n in nodes if n.first(Multiscales) and not n.first(Label)]
    labels = [n for n in nodes if n.first(Label)]
    return images, labels


@pytest.mark.parametrize("method", ["nearest", "max"])
def test_ome_zarr_py_reads_labels_and_pyramid_is_exact(tmp_path, method):
    mask = blob_mask(1100, 1300)
    path = tmp_path / "slide.ome.zarr"
    written = write_ome_labels(
        da.from_array(mask, chunks=(300, 700)), path, mpp=0.5, method=method,
        source_image_path="slides/slide.svs",
    )
    assert written == path and is_complete(path)
    assert partial_outputs(path) == []

    images, labels = read_with_ome_zarr(path)
    assert len(images) == 1 and len(labels) == 1
    node = labels[0]
    assert node.metadata["name"] == "tissue"
    assert node.metadata["color"][1] == [c / 255 for c in LABEL_RGBA]
    shapes = [tuple(level.shape) for level in node.data]
    assert shapes == [(1100, 1300), (550, 650), (275, 325)]  # halve until <= 512
    assert [tuple(level.shape) for level in images[0].data] == shapes
    for k, level in enumerate(node.data):
        assert level.dtype == np.uint8
        np.testing.assert_array_equal(level.compute(), reference_level(mask, k, method))
    transforms = node.metadata["coordinateTransformations"]
    assert [t[0]["scale"] for t in transforms] == [[0.5, 0.5], [1.0, 1.0], [2.0, 2.0]]
    if method == "max":
        assert transforms[2][1] == {"type": "translation", "translation": [0.75, 0.75]}
    else:
        assert all(len(t) == 1 for t in transforms)
    assert node.metadata["axes"][0] == {"name": "y", "type": "space", "unit": "micrometer"}
    # the placeholder parent stores no chunk at all
    assert not any(p.is_file() for p in (path / "0").rglob("*") if p.name != "zarr.json")
    attrs = zarr.open_group(path, mode="r").attrs["slidemask"]
    assert attrs["source_image"] == "slides/slide.svs" and attrs["complete"] is True


def test_output_validates_against_ome_zarr_models(tmp_path):
    models = pytest.importorskip("ome_zarr_models.v05")
    path = tmp_path / "a.ome.zarr"
    write_ome_labels(da.from_array(blob_mask(700, 300), chunks=128), path, mpp=None)
    image = models.Image.from_zarr(zarr.open_group(path, mode="r"))
    assert image.labels is not None and image.labels.label_paths == ["tissue"]
    label = image.labels.get_image_labels_group("tissue")
    assert label.attributes.ome.image_label is not None
    # the same property key as the class map's labels (labels/classes): name
    names = {p.label_value: p.model_dump()["name"]
             for p in label.attributes.ome.image_label.properties}
    assert names == {0: "background", 1: "tissue"}
    axes = label.attributes.ome.multiscales[0].axes
    assert all(axis.unit is None for axis in axes)  # no mpp: no unit, scales are factors
    scales = [d.coordinateTransformations[0].scale
              for d in label.attributes.ome.multiscales[0].datasets]
    assert scales == [[1.0, 1.0], [2.0, 2.0]]


@settings(deadline=None, max_examples=20,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    rows=st.integers(1, 70), cols=st.integers(1, 70),
    chunk_rows=st.integers(1, 30), chunk_cols=st.integers(1, 30),
    method=st.sampled_from(["nearest", "max"]), coarsest=st.integers(1, 16),
    seed=st.integers(0, 1000), as_uint8=st.booleans(), in_memory=st.booleans(),
)
def test_any_chunking_any_size(tmp_path, rows, cols, chunk_rows, chunk_cols, method, coarsest,
                               seed, as_uint8, in_memory):
    rng = np.random.default_rng(seed)
    mask = rng.random((rows, cols)) > 0.6
    source = mask.astype(np.uint8) * 7 if as_uint8 else mask  # non-zero means mask
    classes = (rng.integers(0, 7, (rows, cols)) * (rng.random((rows, cols)) > 0.5)).astype(
        np.uint8)
    path = tmp_path / f"{uuid.uuid4().hex}.ome.zarr"
    limit = ome_zarr.IN_MEMORY_PIXELS if in_memory else 0  # else one dask task per chunk
    with dask.config.set(scheduler="sync"):
        write_ome_labels(
            da.from_array(source, chunks=(chunk_rows, chunk_cols)), path, mpp=2.0, method=method,
            coarsest_size=coarsest, classes=ClassLabels(
                da.from_array(classes, chunks=(chunk_cols, chunk_rows)), {"tissue": 1, "pen": 2}
            ) if seed % 2 else None, in_memory_pixels=limit,
        )
    group = zarr.open_group(path / "labels" / "tissue", mode="r")
    datasets = group.attrs["ome"]["multiscales"][0]["datasets"]
    for k, dataset in enumerate(datasets):
        np.testing.assert_array_equal(group[dataset["path"]][:], reference_level(mask, k, method))
        if seed % 2:
            stored = zarr.open_array(path / "labels" / "classes" / dataset["path"], mode="r")
            np.testing.assert_array_equal(stored[:], classes[:: 2**k, :: 2**k])
    last = group[datasets[-1]["path"]].shape
    assert max(last) <= coarsest
    if len(datasets) > 1:
        assert max(group[datasets[-2]["path"]].shape) > coarsest


def test_refuses_to_overwrite_unless_asked(tmp_path):
    path = tmp_path / "m.ome.zarr"
    first = da.from_array(blob_mask(200, 300, seed=1), chunks=64)
    write_ome_labels(first, path, mpp=1.0)
    second = blob_mask(200, 300, seed=2)
    with pytest.raises(FileExistsError, match="overwrite"):
        write_ome_labels(da.from_array(second), path, mpp=1.0)
    write_ome_labels(da.from_array(second), path, mpp=1.0, overwrite=True)
    np.testing.assert_array_equal(zarr.open_array(path / "labels/tissue/0")[:], second)
    assert partial_outputs(path) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.ome.zarr"]


def test_delayed_write_computes_with_summary_and_mask_once(tmp_path):
    calls: list[tuple[int, ...]] = []

    def produce(block: np.ndarray) -> np.ndarray:
        calls.append(block.shape)
        return block > 0.5

    rng = np.random.default_rng(3)
    values = da.from_array(rng.random((900, 1000)), chunks=(256, 300))
    mask = values.map_blocks(produce, dtype=bool, meta=np.empty((0, 0), dtype=bool))
    path = tmp_path / "lazy.ome.zarr"
    task = write_ome_labels(mask, path, mpp=4.0, compute=False, attrs={"provenance": {"a": 1}})
    assert isinstance(task, Delayed)
    assert not path.exists() and len(partial_outputs(path)) == 1
    summary = mask_summary(mask, mpp=4.0, downsample=8.0, level=0)
    written, computed = dask.compute(task, summary)
    assert Path(written) == path and is_complete(path)
    assert len(calls) == 4 * 4  # every mask chunk computed exactly once for all levels + summary
    stored = zarr.open_array(path / "labels/tissue/0")[:]
    assert computed["tissue_pixels"] == int(stored.sum())
    assert zarr.open_group(path, mode="r").attrs["provenance"] == {"a": 1}


def test_failed_compute_leaves_nothing(tmp_path):
    def boom(block: np.ndarray) -> np.ndarray:
        if block.shape[0] and block[0, 0] > -1:
            raise RuntimeError("tile failed")
        return block

    mask = da.zeros((600, 600), dtype=bool, chunks=200).map_blocks(
        boom, dtype=bool, meta=np.empty((0, 0), dtype=bool)
    )
    path = tmp_path / "bad.ome.zarr"
    with pytest.raises(RuntimeError, match="tile failed"):
        write_ome_labels(mask, path, mpp=1.0)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"mask": np.zeros((4, 4, 3), bool)}, "2-D"),
        ({"mask": np.zeros((4, 4), np.float32)}, "bool or integer"),
        ({"mask": np.zeros((0, 4), bool)}, "empty"),
        ({"name": "a/b"}, "name"),
        ({"name": ".hidden"}, "name"),
        ({"method": "mean"}, "method"),
        ({"mpp": -1.0}, "mpp"),
        ({"coarsest_size": 0}, "coarsest_size"),
        ({"attrs": {"slidemask": 1}}, "reserved"),
    ],
)
def test_argument_errors(tmp_path, kwargs, message):
    args = {"mask": np.zeros((8, 8), bool), "mpp": 1.0}
    args.update(kwargs)
    mask = args.pop("mask")
    with pytest.raises(MaskError, match=message):
        write_ome_labels(mask, tmp_path / "x.ome.zarr", **args)
    assert list(tmp_path.iterdir()) == []
