"""Zarr writer: round trip, chunk layout, atomic completion, overwrite rules, provenance."""

from __future__ import annotations

import json
import pickle
from itertools import pairwise
from pathlib import Path

import dask
import dask.array as da
import numpy as np
import pytest
import zarr
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from slidemask.errors import SlidemaskError
from slidemask.writers.zarr import (
    ATTRS_KEY,
    is_complete,
    partial_outputs,
    read_attrs,
    read_mask,
    stored_config_hash,
    write_zarr,
)


@pytest.fixture(autouse=True)
def _threads_scheduler():
    with dask.config.set(scheduler="threads", num_workers=2):
        yield


def _random_mask(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random(shape) < 0.4


@st.composite
def axis_chunks(draw: st.DrawFn, n: int) -> tuple[int, ...]:
    """Irregular chunks of an axis of length n (1-pixel chunks and tiny edges included)."""
    if n == 1:
        return (1,)
    cuts = sorted(draw(st.sets(st.integers(1, n - 1), max_size=min(n - 1, 5))))
    return tuple(b - a for a, b in pairwise([0, *cuts, n]))


@st.composite
def chunked_masks(draw: st.DrawFn) -> tuple[np.ndarray, tuple[tuple[int, ...], ...]]:
    rows, cols = draw(st.integers(1, 40)), draw(st.integers(1, 40))
    seed = draw(st.integers(0, 2**16))
    return _random_mask((rows, cols), seed), (draw(axis_chunks(rows)), draw(axis_chunks(cols)))


def test_round_trip_regular_chunks(tmp_path: Path) -> None:
    data = _random_mask((300, 250))
    mask = da.from_array(data, chunks=(128, 96))
    out = write_zarr(mask, tmp_path / "m.zarr", attrs={"provenance": {"config_hash": "abc"}})
    assert out == tmp_path / "m.zarr"
    array = zarr.open_array(out, mode="r")
    assert array.dtype == np.bool_
    assert array.chunks == (128, 96)  # zarr chunks equal dask chunks
    assert [c.to_dict()["name"] for c in array.metadata.codecs] == ["bytes", "blosc"]
    np.testing.assert_array_equal(array[:], data)
    lazy = read_mask(out)
    assert lazy.chunks == mask.chunks
    np.testing.assert_array_equal(lazy.compute(), data)
    assert is_complete(out)
    assert stored_config_hash(out) == "abc"
    own = read_attrs(out)[ATTRS_KEY]
    assert own["complete"] is True and own["format_version"] == 1 and own["version"]
    assert partial_outputs(out) == []


@settings(
    deadline=None, max_examples=25, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(case=chunked_masks())
def test_round_trip_any_chunking(tmp_path: Path, case: tuple[np.ndarray, tuple]) -> None:
    data, chunks = case
    out = tmp_path / f"m-{abs(hash(chunks))}.zarr"
    write_zarr(da.from_array(data, chunks=chunks), out, overwrite=True)
    array = zarr.open_array(out, mode="r")
    # irregular chunks are rechunked to the first chunk of each axis: one regular zarr grid
    assert array.chunks == (chunks[0][0], chunks[1][0])
    np.testing.assert_array_equal(array[:], data)


def test_uint8_and_3d_arrays(tmp_path: Path) -> None:
    labels = np.arange(60, dtype=np.uint8).reshape(3, 4, 5)
    out = write_zarr(da.from_array(labels, chunks=(2, 2, 5)), tmp_path / "l.zarr")
    array = zarr.open_array(out, mode="r")
    assert array.dtype == np.uint8 and array.chunks == (2, 2, 5)
    np.testing.assert_array_equal(array[:], labels)


def test_all_false_chunks_are_not_stored(tmp_path: Path) -> None:
    data = np.zeros((64, 64), dtype=bool)
    data[:16, :16] = True
    out = write_zarr(da.from_array(data, chunks=16), tmp_path / "sparse.zarr")
    chunk_files = [p for p in (out / "c").rglob("*") if p.is_file()]
    assert len(chunk_files) == 1
    np.testing.assert_array_equal(read_mask(out).compute(), data)


def _failing_mask(shape: tuple[int, int], chunks: int, bad_block: tuple[int, int]) -> da.Array:
    def block(x: np.ndarray, block_info: dict | None = None) -> np.ndarray:
        if block_info is not None and tuple(block_info[0]["chunk-location"]) == bad_block:
            raise RuntimeError("simulated corrupt tile")
        return x > 0.5

    source = da.from_array(np.random.default_rng(1).random(shape), chunks=chunks)
    return source.map_blocks(block, dtype=bool, meta=np.empty((0, 0), dtype=bool))


def test_failure_mid_write_leaves_nothing_complete(tmp_path: Path) -> None:
    final = tmp_path / "broken.zarr"
    mask = _failing_mask((64, 64), 16, bad_block=(2, 1))
    with dask.config.set(scheduler="sync"), pytest.raises(RuntimeError, match="corrupt tile"):
        write_zarr(mask, final)
    assert not final.exists()
    assert partial_outputs(final) == []  # compute=True cleans its temporary array
    assert not is_complete(final)


def test_failure_with_compute_false_leaves_only_an_incomplete_partial(tmp_path: Path) -> None:
    final = tmp_path / "broken.zarr"
    task = write_zarr(_failing_mask((64, 64), 16, bad_block=(3, 3)), final, compute=False)
    with dask.config.set(scheduler="sync"), pytest.raises(RuntimeError, match="corrupt tile"):
        task.compute()
    assert not final.exists()
    for partial in partial_outputs(final):
        assert not is_complete(partial)
        assert read_attrs(partial)[ATTRS_KEY]["complete"] is False


def test_marker_is_written_after_every_chunk(tmp_path: Path) -> None:
    final = tmp_path / "m.zarr"
    seen: list[tuple[bool, bool, bool]] = []

    def observe(x: np.ndarray) -> np.ndarray:
        # while chunks are computed and stored: no final path, no complete marker anywhere
        partials = partial_outputs(final)
        seen.append((final.exists(), len(partials) == 1, any(is_complete(p) for p in partials)))
        return x

    data = _random_mask((40, 40))
    mask = da.from_array(data, chunks=10).map_blocks(
        observe, dtype=bool, meta=np.empty((0, 0), dtype=bool)
    )
    with dask.config.set(scheduler="sync"):
        write_zarr(mask, final)
    assert len(seen) == 16
    assert all(s == (False, True, False) for s in seen)
    assert is_complete(final)
    np.testing.assert_array_equal(read_mask(final).compute(), data)


def test_compute_false_writes_nothing_final_until_computed(tmp_path: Path) -> None:
    final = tmp_path / "later.zarr"
    data = _random_mask((30, 20))
    task = write_zarr(da.from_array(data, chunks=8), final, compute=False)
    assert not final.exists()
    pickle.dumps(dict(task.__dask_graph__()))  # the graph can travel to process workers
    assert Path(task.compute()) == final
    assert is_complete(final)
    np.testing.assert_array_equal(read_mask(final).compute(), data)


def test_refuses_to_overwrite(tmp_path: Path) -> None:
    final = tmp_path / "m.zarr"
    first = _random_mask((20, 20), 1)
    write_zarr(da.from_array(first, chunks=8), final)
    with pytest.raises(FileExistsError, match="m.zarr.*overwrite"):
        write_zarr(da.from_array(~first, chunks=8), final)
    np.testing.assert_array_equal(read_mask(final).compute(), first)
    write_zarr(da.from_array(~first, chunks=8), final, overwrite=True)
    np.testing.assert_array_equal(read_mask(final).compute(), ~first)
    assert [p.name for p in tmp_path.iterdir()] == ["m.zarr"]


def test_overwrite_never_deletes_a_non_zarr_directory(tmp_path: Path) -> None:
    precious = tmp_path / "results.zarr"
    precious.mkdir()
    (precious / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="not a Zarr store"):
        write_zarr(da.zeros((4, 4), dtype=bool, chunks=2), precious, overwrite=True)
    assert (precious / "notes.txt").read_text() == "keep me"


def test_lazy_attributes_are_computed_with_the_mask(tmp_path: Path) -> None:
    data = _random_mask((50, 60))
    mask = da.from_array(data, chunks=16)
    attrs = {"stats": {"foreground": mask.sum(), "first": [mask[0, 0]]}, "path": tmp_path}
    out = write_zarr(mask, tmp_path / "m.zarr", attrs=attrs)
    stored = read_attrs(out)
    assert stored["stats"] == {"foreground": int(data.sum()), "first": [bool(data[0, 0])]}
    assert stored["path"] == str(tmp_path)
    json.dumps(stored)


def test_lazy_attributes_share_the_mask_computation(tmp_path: Path) -> None:
    calls: list[int] = []

    def count(x: np.ndarray) -> np.ndarray:
        calls.append(1)
        return x > 0.5

    source = da.from_array(np.random.default_rng(2).random((64, 64)), chunks=16)
    mask = source.map_blocks(count, dtype=bool, meta=np.empty((0, 0), dtype=bool))
    with dask.config.set(scheduler="sync"):
        write_zarr(mask, tmp_path / "m.zarr", attrs={"n": mask.sum(), "corner": [mask[0, 0]]})
    assert len(calls) == mask.npartitions  # each chunk once, not once per consumer


def test_bad_attributes_fail_before_any_work(tmp_path: Path) -> None:
    mask = da.zeros((4, 4), dtype=bool, chunks=2)
    with pytest.raises(ValueError, match="reserved"):
        write_zarr(mask, tmp_path / "a.zarr", attrs={ATTRS_KEY: {}})
    with pytest.raises(ValueError, match="JSON"):
        write_zarr(mask, tmp_path / "b.zarr", attrs={"x": object()})
    assert list(tmp_path.iterdir()) == []


def test_rejects_non_dask_and_0d(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="dask array"):
        write_zarr(np.zeros((2, 2), bool), tmp_path / "a.zarr")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="0-d"):
        write_zarr(da.from_array(np.bool_(True)), tmp_path / "a.zarr")


def test_read_mask_refuses_incomplete_or_missing(tmp_path: Path) -> None:
    with pytest.raises(SlidemaskError, match="no such output"):
        read_mask(tmp_path / "missing.zarr")
    fake = tmp_path / "fake.zarr"
    zarr.create_array(str(fake), shape=(4, 4), chunks=(2, 2), dtype=bool)
    assert not is_complete(fake)
    assert stored_config_hash(fake) is None
    with pytest.raises(SlidemaskError, match="not a complete"):
        read_mask(fake)
    assert not is_complete(tmp_path / "missing.zarr")


@pytest.mark.parametrize("dtype", [np.uint16, np.int32, np.float32, np.uint8])
def test_multibyte_dtypes_round_trip(tmp_path: Path, dtype: type) -> None:
    """Chunk files are little-endian whatever the dtype, as zarr's ``bytes`` codec says."""
    data = (np.arange(7 * 9 * 2).reshape(7, 9, 2) * 977).astype(dtype)
    out = write_zarr(da.from_array(data, chunks=(3, 4, 2)), tmp_path / "m.zarr")
    array = zarr.open_array(out, mode="r")
    assert array.dtype == dtype
    np.testing.assert_array_equal(array[:], data)


def _zarr_own(path: Path, data: np.ndarray, shuffle: str) -> None:
    """``data`` written by zarr itself as a bool array of 32² chunks, LZ4 level 5."""
    array = zarr.create_array(
        store=str(path), shape=data.shape, chunks=(32, 32), dtype=bool,
        compressors=zarr.codecs.BloscCodec(cname="lz4", clevel=5, shuffle=shuffle),
        fill_value=False,
    )
    array[:] = data


def test_chunk_files_equal_zarr_own(tmp_path: Path) -> None:
    """The writer's chunk files are byte-identical to those zarr writes itself: unshuffled
    LZ4 for smooth chunks, bit-shuffled LZ4 for speckled ones (chosen per chunk)."""
    rng = np.random.default_rng(5)
    data = np.zeros((70, 45), dtype=bool)
    data[32:64, 3:40] = True  # smooth chunks (1, 0) and (1, 1)
    speckled = rng.random((70, 45)) < 0.3
    data[:32, 32:] = speckled[:32, 32:]  # chunk (0, 1): speckled
    data[64:] = speckled[64:]  # chunks (2, 0) and (2, 1): speckled edge chunks
    # chunk (0, 0): all false, stored by neither
    ours = write_zarr(da.from_array(data, chunks=(32, 32)), tmp_path / "ours.zarr")
    _zarr_own(tmp_path / "plain.zarr", data, "noshuffle")
    _zarr_own(tmp_path / "shuffled.zarr", data, "bitshuffle")
    files = sorted(p.relative_to(ours) for p in Path(ours, "c").rglob("*") if p.is_file())
    assert files == sorted(
        p.relative_to(tmp_path / "plain.zarr")
        for p in (tmp_path / "plain.zarr" / "c").rglob("*")
        if p.is_file()
    )
    assert len(files) == 2 * 3 - 1
    for name in files:
        theirs = "shuffled.zarr" if name.parts[1] == "2" or name.parts[1:] == ("0", "1") else (
            "plain.zarr")
        assert (Path(ours) / name).read_bytes() == (tmp_path / theirs / name).read_bytes(), name
    np.testing.assert_array_equal(zarr.open_array(ours, mode="r")[:], data)


def test_encode_chunk_shuffles_speckled_chunks_only() -> None:
    """encode_chunk bit-shuffles a speckled mask chunk (smaller), not a smooth one, and both
    decode to the chunk."""
    from numcodecs import Blosc

    from slidemask.writers.zarr import encode_chunk

    rng = np.random.default_rng(0)
    smooth = np.zeros((256, 256), dtype=bool)
    smooth[40:200, 30:180] = True
    speckled = rng.random((256, 256)) < 0.9
    plain = Blosc(cname="lz4", clevel=5, shuffle=Blosc.NOSHUFFLE)
    assert encode_chunk(smooth) == plain.encode(smooth)
    assert len(encode_chunk(speckled)) < len(plain.encode(speckled))
    for chunk in (smooth, speckled):
        decoded = np.frombuffer(Blosc().decode(encode_chunk(chunk)), dtype=bool)
        np.testing.assert_array_equal(decoded.reshape(chunk.shape), chunk)
    wide = np.arange(64, dtype=np.uint16).reshape(8, 8)  # not one byte: never shuffled
    assert encode_chunk(wide) == plain.encode(wide)


def test_count_into_records_nonzero_pixels(tmp_path: Path) -> None:
    data = np.zeros((50, 70), dtype=bool)
    data[3:20, 10:61] = True
    data[45, 69] = True
    attrs = {"stats": {"total_pixels": data.size}}
    out = write_zarr(
        da.from_array(data, chunks=(16, 32)), tmp_path / "m.zarr", attrs=attrs,
        count_into="stats.foreground_pixels",
    )
    stored = read_attrs(out)["stats"]
    assert stored == {"total_pixels": data.size, "foreground_pixels": int(data.sum())}
    assert attrs == {"stats": {"total_pixels": data.size}}  # the caller's dict is unchanged
    out = write_zarr(
        da.from_array(data, chunks=(16, 32)), tmp_path / "n.zarr", count_into="count"
    )
    assert read_attrs(out)["count"] == int(data.sum())


@settings(
    deadline=None, max_examples=25, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(case=chunked_masks(), data=st.data())
def test_stored_array_reads_like_zarr(tmp_path: Path, case: tuple, data: st.DataObject) -> None:
    """StoredArray (direct chunk-file reads) equals zarr's own reader for any region."""
    from slidemask.writers.zarr import StoredArray

    mask, chunks = case
    out = tmp_path / f"s-{abs(hash(chunks))}.zarr"
    write_zarr(da.from_array(mask, chunks=chunks), out, overwrite=True)
    stored = StoredArray(out)
    assert stored.shape == mask.shape and stored.dtype == mask.dtype
    rows, cols = mask.shape
    y0 = data.draw(st.integers(0, rows))
    y1 = data.draw(st.integers(y0, rows))
    x0 = data.draw(st.integers(0, cols))
    x1 = data.draw(st.integers(x0, cols))
    np.testing.assert_array_equal(stored[y0:y1, x0:x1], mask[y0:y1, x0:x1])
    np.testing.assert_array_equal(stored[:, :], zarr.open_array(out, mode="r")[:])
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(stored))[y0:y1], mask[y0:y1])


@pytest.mark.parametrize("dtype", [np.uint16, np.float32, np.uint8])
def test_stored_array_multibyte_and_refuses_foreign_arrays(tmp_path: Path, dtype: type) -> None:
    from slidemask.writers.zarr import StoredArray

    data = (np.arange(11 * 7).reshape(11, 7) * 1013).astype(dtype)
    out = write_zarr(da.from_array(data, chunks=(4, 3)), tmp_path / "m.zarr")
    np.testing.assert_array_equal(StoredArray(out)[2:9, 1:6], data[2:9, 1:6])
    foreign = tmp_path / "foreign.zarr"
    zarr.create_array(
        store=str(foreign), shape=(4, 4), chunks=(2, 2), dtype=dtype,
        compressors=zarr.codecs.GzipCodec(),
    )
    with pytest.raises(SlidemaskError, match="not an array written by slidemask"):
        StoredArray(foreign)
    with pytest.raises(SlidemaskError, match="not a readable"):
        StoredArray(tmp_path / "missing.zarr")


def test_masks_written_bit_shuffled_are_still_read(tmp_path: Path) -> None:
    """Masks from versions that bit-shuffled their chunks read back unchanged (blosc takes
    the shuffle from each chunk's header)."""
    rng = np.random.default_rng(8)
    data = rng.random((70, 45)) < 0.3
    out = write_zarr(da.from_array(data, chunks=(32, 32)), tmp_path / "m.zarr")
    _zarr_own(tmp_path / "old.zarr", data, "bitshuffle")
    for chunk in Path(out, "c").rglob("*"):  # the old encoding under today's metadata
        if chunk.is_file():
            chunk.write_bytes((tmp_path / "old.zarr" / chunk.relative_to(out)).read_bytes())
    np.testing.assert_array_equal(read_mask(out).compute(), data)
    np.testing.assert_array_equal(zarr.open_array(out, mode="r")[:], data)


def test_a_chunk_finished_after_its_write_was_abandoned_does_not_recreate_it(tmp_path) -> None:
    """A worker thread that finishes a chunk after the partial array was removed (an error,
    Ctrl-C or SIGTERM in the driving thread) fails instead of creating the folder again."""
    import shutil

    from slidemask.writers.zarr import _make_below

    root = tmp_path / ".m.zarr.partial-1"
    root.mkdir()
    _make_below(str(root), str(root / "c" / "0"))
    assert (root / "c" / "0").is_dir()
    shutil.rmtree(root)
    with pytest.raises(OSError, match="removed while its chunks were being written"):
        _make_below(str(root), str(root / "c" / "1"))
    assert not root.exists()


def test_nonzero_count_equals_numpy_on_views() -> None:
    """nonzero_count (OpenCV for 2-D one-byte blocks) counts as numpy does, on any view."""
    from slidemask.writers.zarr import nonzero_count

    rng = np.random.default_rng(1)
    a = rng.random((300, 200)) < 0.3
    views = [a, a[::-1], a[::3], a[5:100, 7:150], a.T, a[:, ::2], np.zeros((0, 5), bool),
             a.astype(np.int8), a.astype(np.uint16), a[0]]
    for view in views:
        assert nonzero_count(view) == np.count_nonzero(view)
