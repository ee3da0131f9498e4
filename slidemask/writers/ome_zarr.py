"""Write a lazy mask as an OME-Zarr 0.5 (Zarr v3) label image with a multiscale pyramid.

Layout of one output (a directory, e.g. ``<slide name>.ome.zarr``)::

    zarr.json                 image group: "ome" {"version": "0.5", "multiscales": [...]}
                              plus the "slidemask" provenance and completion marker
    0/ 1/ ...                 the parent image: placeholder uint8 arrays, no chunk stored
    labels/zarr.json          "ome" {"labels": ["<name>"]}
    labels/<name>/zarr.json   "ome" {"multiscales": [...], "image-label": {...}}
    labels/<name>/0/ 1/ ...   the mask, uint8 (0 background, 1 mask), level 0 first
    labels/classes/...        with ``classes=``: the class map, uint8 label values, its
                              ``image-label`` naming and colouring every class

Why a placeholder parent: OME-Zarr nests ``labels`` inside an image group whose multiscales
has as many levels as the label image, and ome-zarr-py's reader finds labels only through
such an image. Copying the slide would cost gigabytes, so the parent arrays have the label
shapes and no stored chunks (they read as zeros) and the ``slidemask`` attributes name the
source slide.

Pyramid: level ``k+1`` is level ``k`` downsampled by 2 (``downsample_nearest``, the default,
or ``downsample_max``, which keeps thin tissue visible at coarse levels), with the partial
edge block kept (``ceil(n / 2)``), until the longer side is at most ``coarsest_size``. All
levels are computed in one dask graph from the mask's own chunks: each mask chunk is
computed once and feeds its level-0 write and its (4x smaller) share of level 1, and so on,
so memory stays at about one chunk per thread plus small pyramid pieces (measured on a
20000² slide, grey < 220 at level 0, 2 threads: 8.4 s and 221 MiB peak, the same time as the
plain ``write_zarr`` at 187 MiB). A small label image (:data:`IN_MEMORY_PIXELS`, e.g. an 8 µm
class map) is instead computed into memory in one pass and its pyramid built with numpy: the
dask tasks per chunk and level cost more than the work. Chunks are compressed with Blosc LZ4
(bit-shuffled, as :func:`slidemask.write_zarr` stores masks) and written as chunk files
directly; a chunk that is all 0 is not stored (it reads as the fill value). A lazy summary
shares the mask's tasks when computed in the same call:
``dask.compute(write_ome_labels(..., compute=False), mask_summary(mask, ...))`` or
``attrs={"summary": mask_summary(mask, ...)}`` (see
:func:`slidemask.writers.summary.shared_delayed`).

Physical frame (``coordinateTransformations``): ``scale`` is ``mpp * 2**k`` micrometres for
both axes (``2**k`` without a unit when the pixel size is unknown). Pixel centres follow the
usual OME-Zarr convention (index i sits at ``i * scale + translation``): nearest sampling
keeps pixel ``i * 2**k`` so needs no translation; max downsampling represents a block whose
centre is ``(2**k - 1) / 2`` level-0 pixels further, recorded as a ``translation``. Level 0
of the labels is the mask's own pixel grid; record its ``downsample`` to the slide's level 0
through ``attrs`` (e.g. ``{"provenance": {"downsample": 16.0}}``, which previews read).

Atomicity and overwrite follow :mod:`slidemask.writers.zarr`: written under a hidden
``.<name>.partial-<hex>`` sibling, completion marker last, then renamed into place; an
existing output is replaced only with ``overwrite=True``.
"""

from __future__ import annotations

import math
import numbers
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import dask
import dask.array as da
import numpy as np
import zarr
from dask.delayed import Delayed

from slidemask.errors import MaskError
from slidemask.memory import prepare_process
from slidemask.ops import staged
from slidemask.ops.chunks import map_located, rechunk
from slidemask.ops.literal import held_array
from slidemask.ops.resample import block_max, downsample_max, downsample_nearest
from slidemask.ops.scratch import in_use
from slidemask.writers.atomic import (
    check_attrs,
    check_target,
    mark_complete_and_publish,
    package_version,
    remove,
)
from slidemask.writers.atomic import partial_path as new_partial_path
from slidemask.writers.summary import shared_delayed
from slidemask.writers.zarr import ATTRS_KEY, CHUNK_COMPRESSOR, FORMAT_VERSION, encode_chunk

__all__ = ["CLASS_LABELS_NAME", "LABEL_RGBA", "OME_VERSION", "ClassLabels", "write_ome_labels"]

OME_VERSION = "0.5"
LABEL_RGBA = (255, 0, 0, 128)
"""Display colour of mask pixels (label 1): half-transparent red."""

CLASS_LABELS_NAME = "classes"
"""The label image that holds a class map (``labels/classes``)."""


@dataclass(frozen=True)
class ClassLabels:
    """A uint8 class map to write beside the mask, and what its label values mean.

    ``image`` has the mask's shape (:func:`slidemask.ops.artifacts.class_map`); ``values``
    maps each class name to its label value (0 is background, never listed); ``colors`` gives
    each class an (R, G, B, alpha) 0-255 display colour (default
    :data:`slidemask.ops.artifacts.QC_COLORS`, grey for other names).
    """

    image: Any
    values: Mapping[str, int]
    colors: Mapping[str, tuple[int, int, int, int]] | None = None

    def image_label(self) -> dict[str, Any]:
        """The OME-Zarr 0.5 ``image-label`` metadata: ``colors`` and ``properties`` (each
        with ``label-value`` and the class ``name``), background first."""
        from slidemask.ops.artifacts import QC_COLORS

        palette = dict(QC_COLORS) if self.colors is None else dict(self.colors)
        entries = [("background", 0), *sorted(self.values.items(), key=lambda kv: kv[1])]
        return {
            "version": OME_VERSION,
            "colors": [
                {"label-value": v, "rgba": list(palette.get(n, (128, 128, 128, 200)))}
                for n, v in entries
            ],
            "properties": [{"label-value": v, "name": n} for n, v in entries],
            "source": {"image": "../../"},
        }


IN_MEMORY_PIXELS = 2**24
"""Label images of at most this many pixels (4096², e.g. an 8 µm class map of a 50000² slide:
3125², 9.8 MB) are computed into memory in one pass and their pyramids built with numpy,
instead of one dask task per chunk and level: 0.1 s instead of 0.4 s for the mask and class
map of a 50000² slide. Memory: the images and their pyramids, 1.4 bytes per pixel each."""
_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]*")
_MIN_CHUNK = 256  # smaller zarr chunks only multiply files; merging a few mask chunks is cheap

Method = Literal["nearest", "max"]
_DOWNSAMPLERS: dict[str, Callable[[da.Array, int], da.Array]] = {
    "nearest": downsample_nearest,
    "max": downsample_max,
}


def _pyramid_shapes(shape: tuple[int, int], coarsest_size: int) -> list[tuple[int, int]]:
    shapes = [shape]
    while max(shapes[-1]) > coarsest_size:
        rows, cols = shapes[-1]
        shapes.append((-(-rows // 2), -(-cols // 2)))
    return shapes


def _chunk_shape(mask: da.Array) -> tuple[int, int]:
    """One zarr chunk shape for every level: the mask's first chunk, at least _MIN_CHUNK."""
    edges = []
    for sizes, dim in zip(mask.chunks, mask.shape, strict=True):
        edges.append(max(1, min(max(sizes[0], _MIN_CHUNK), dim)))
    return edges[0], edges[1]


def _regular(arr: da.Array, chunks: tuple[int, int]) -> da.Array:
    """Rechunk to ``chunks`` (capped by the shape) unless already on that grid."""
    target = tuple(max(1, min(c, n)) for c, n in zip(chunks, arr.shape, strict=True))
    wanted = tuple(
        (t,) * (n // t) + ((n % t,) if n % t else ())
        for t, n in zip(target, arr.shape, strict=True)
    )
    return arr if arr.chunks == wanted else rechunk(arr, target)


def _as_label_image(mask: Any) -> da.Array:
    if isinstance(mask, np.ndarray):
        mask = da.from_array(mask)
    if not isinstance(mask, da.Array):
        raise MaskError(
            f"write_ome_labels expects a dask (or numpy) array, got {type(mask).__name__}"
        )
    if mask.ndim != 2:
        raise MaskError(f"write_ome_labels expects a 2-D mask (rows, cols), got shape {mask.shape}")
    if 0 in mask.shape:
        raise MaskError(f"write_ome_labels: the mask is empty (shape {mask.shape})")
    if mask.dtype == np.bool_:
        return mask.astype(np.uint8)
    if mask.dtype.kind in "ui":
        return (mask != 0).astype(np.uint8)
    raise MaskError(f"write_ome_labels expects a bool or integer mask, got {mask.dtype}")


def _as_class_image(image: Any, shape: tuple[int, ...]) -> da.Array:
    if isinstance(image, np.ndarray):
        image = da.from_array(image)
    if not isinstance(image, da.Array) or image.dtype != np.uint8 or image.shape != shape:
        raise MaskError(
            f"write_ome_labels: classes.image must be a uint8 class map of the mask's shape "
            f"{shape}, got {getattr(image, 'shape', None)} {getattr(image, 'dtype', None)}"
        )
    return image


def _transforms(level: int, unit_scale: float, method: str) -> list[dict[str, Any]]:
    step = 2**level
    scale = unit_scale * step
    out: list[dict[str, Any]] = [{"type": "scale", "scale": [scale, scale]}]
    if method == "max" and level > 0:
        shift = unit_scale * (step - 1) / 2
        out.append({"type": "translation", "translation": [shift, shift]})
    return out


def _multiscales(
    name: str, n_levels: int, mpp: float | None, method: str, description: str
) -> list[dict[str, Any]]:
    axis_unit = {"unit": "micrometer"} if mpp is not None else {}
    axes = [{"name": axis, "type": "space", **axis_unit} for axis in ("y", "x")]
    unit_scale = float(mpp) if mpp is not None else 1.0
    return [
        {
            "name": name,
            "axes": axes,
            "datasets": [
                {"path": str(k), "coordinateTransformations": _transforms(k, unit_scale, method)}
                for k in range(n_levels)
            ],
            "type": method,
            "metadata": {
                "description": description,
                "method": f"slidemask.ops.resample.downsample_{method}",
                "version": package_version(),
            },
        }
    ]


@dataclass(frozen=True)
class _Target:
    """A uint8 zarr v3 array on disk, written chunk file by chunk file with the codec of
    :func:`slidemask.write_zarr` (:func:`~slidemask.writers.zarr.encode_chunk`) but without
    zarr's per-call machinery (8 times faster on a 3125² label image), in the layout zarr
    reads (``<array>/c/<row>/<col>``, full-size edge chunks, no file for an all-zero chunk:
    it reads as the fill value 0)."""

    path: str
    chunks: tuple[int, int]

    def write(self, index: tuple[int, int], block: np.ndarray) -> None:
        """Store ``block`` as chunk ``index`` (a smaller edge block is padded with 0)."""
        if not block.any():
            return  # an absent chunk reads as the fill value
        if block.shape != self.chunks:
            full = np.zeros(self.chunks, dtype=np.uint8)
            full[: block.shape[0], : block.shape[1]] = block
            block = full
        folder = os.path.join(self.path, "c", str(index[0]))
        os.makedirs(folder, exist_ok=True)
        with open(os.path.join(folder, str(index[1])), "wb") as fh:
            fh.write(encode_chunk(np.ascontiguousarray(block, dtype=np.uint8)))

    def write_all(self, image: np.ndarray) -> None:
        """Store a whole in-memory image, chunk by chunk."""
        rows, cols = self.chunks
        for i in range(-(-image.shape[0] // rows)):
            for j in range(-(-image.shape[1] // cols)):
                self.write((i, j), image[i * rows : (i + 1) * rows, j * cols : (j + 1) * cols])


def _target(array: zarr.Array) -> _Target:
    store = array.store
    root = getattr(store, "root", None)
    if root is None:  # pragma: no cover - the writer only opens local directories
        raise MaskError("write_ome_labels writes to a local directory only")
    chunks = tuple(int(n) for n in array.chunks)
    return _Target(os.path.join(str(root), array.path), (chunks[0], chunks[1]))


def _store_chunk(
    block: np.ndarray, *, target: _Target, location: tuple[int, ...], offset: tuple[int, ...]
) -> np.ndarray:
    """Write one dask block as its zarr chunk (blocks match the chunks, so the block's
    ``location`` from :func:`map_located` is the chunk's); return a 1x1 token."""
    if block.size:
        target.write((location[0], location[1]), block)
    return np.zeros((1, 1), dtype=np.uint8)


def _store(level: da.Array, target: _Target) -> da.Array:
    """Lazy write of ``level`` into ``target``, one task per block (blocks match zarr chunks).

    Unlike ``da.store``, which optimizes (fuses and renames) its sources when the graph is
    built, this keeps the mask's own task keys (see :func:`shared_delayed`), so a summary or
    another writer's result built the same way shares the mask's tasks when computed in one
    ``dask.compute`` call instead of computing the mask again.
    """
    return map_located(
        _store_chunk,
        level,
        target=target,
        chunks=tuple((1,) * n for n in level.numblocks),
        dtype=np.uint8,
        meta=np.empty((0, 0), dtype=np.uint8),
        token="slidemask-store-ome-labels",
    )


def _numpy_pyramid(image: np.ndarray, count: int, method: str) -> list[np.ndarray]:
    """``count`` levels of an in-memory image, each the previous one halved as the lazy
    pyramid halves it (:func:`slidemask.ops.resample.block_nearest` or ``block_max``, the
    partial edge block kept)."""
    levels = [np.ascontiguousarray(image, dtype=np.uint8)]
    for _ in range(count - 1):
        previous = levels[-1]
        levels.append(np.ascontiguousarray(previous[::2, ::2]) if method == "nearest"
                      else block_max(previous, factor=2))
    return levels


def _shared_values(value: Any) -> Any:
    """``value`` with every dask collection inside dicts/lists turned into a shared Delayed."""
    if isinstance(value, Mapping):
        return {k: _shared_values(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_shared_values(v) for v in value]
    return shared_delayed(value)


def _finalize(
    stored: object, partial: str, final: str, overwrite: bool, attrs: dict[str, Any]
) -> str:
    """Add provenance and the completion marker to the root group, then move it into place.

    The last task of the graph (``stored`` is only a dependency on every chunk write).
    """
    del stored
    partial_path, final_path = Path(partial), Path(final)
    recorded: Any = zarr.open_group(partial_path, mode="r", zarr_format=3).attrs.get(ATTRS_KEY, {})
    marker = dict(recorded) if isinstance(recorded, dict) else {}
    return mark_complete_and_publish(partial_path, final_path, overwrite, attrs, ATTRS_KEY, marker)


def write_ome_labels(
    mask: da.Array,
    path: str | os.PathLike[str],
    *,
    mpp: float | None,
    name: str = "tissue",
    source_image_path: str | os.PathLike[str] | None = None,
    overwrite: bool = False,
    compute: bool = True,
    method: Method = "nearest",
    coarsest_size: int = 512,
    attrs: Mapping[str, Any] | None = None,
    classes: ClassLabels | None = None,
    in_memory_pixels: int = IN_MEMORY_PIXELS,
) -> Path | Delayed:
    """Stream a lazy mask into an OME-Zarr 0.5 container as the label image ``labels/<name>``.

    Parameters
    ----------
    mask : dask.array.Array or numpy.ndarray
        ``(rows, cols)``, bool or integer (non-zero = mask), in the pixels the mask was
        computed at. Stored as uint8 0/1; any chunking.
    path : str or os.PathLike
        The output directory to create (e.g. ``out/slide.ome.zarr``); its parent is created.
    mpp : float or None
        Micrometres per mask pixel (the effective mpp of the resolution the mask was computed
        at), or None when unknown (scales are then unitless factors 1, 2, 4, ...).
    name : str
        The label image's name (a single path component).
    source_image_path : str or os.PathLike, optional
        The slide the mask was computed from; recorded in the ``slidemask`` attributes (the
        OME ``image-label`` ``source`` points at the placeholder parent image, ``../../``).
    overwrite : bool
        Replace an existing output at ``path`` (only when it is a Zarr store). The old one
        stays complete in place until the new one is complete.
    compute : bool
        If true, write now with the current dask scheduler and return the final path; if
        false, return a ``Delayed`` that writes everything and returns the final path as a
        string (the empty container is created now under its temporary name).
    method : {"nearest", "max"}
        Pyramid downsampling by 2: ``"nearest"`` (top-left pixel) or ``"max"`` (any mask pixel
        in the 2x2 block).
    coarsest_size : int
        Halve until the coarsest level's longer side is at most this many pixels.
    attrs : mapping, optional
        Extra JSON-able attributes for the root group (e.g. provenance); values may be dask
        collections, computed in the same pass. The key ``"slidemask"`` is reserved.
    classes : ClassLabels, optional
        A class map of the mask's shape to write as a second label image,
        ``labels/classes``: uint8 label values as given, its ``image-label`` ``colors`` and
        ``properties`` (``label-value`` and ``name``) naming every class, so that viewers
        (napari, ome-zarr-py) show names and colours. Its pyramid always takes the nearest
        pixel (a maximum of labels means nothing).
    in_memory_pixels : int
        With ``compute=True``, a mask of at most this many pixels (and its class map) is
        computed into memory at once and its pyramid made there (default
        :data:`IN_MEMORY_PIXELS`); a larger one streams chunk by chunk. It bounds the memory
        used, not the output: the stored levels are the same for any value.

    Returns
    -------
    pathlib.Path or dask.delayed.Delayed
        The final path, or with ``compute=False`` the delayed write.

    Raises
    ------
    FileExistsError
        ``path`` exists and ``overwrite`` is false (checked now and again when finishing).
    MaskError
        Not a 2-D bool/integer mask, a bad name, method, mpp or coarsest_size.

    Notes
    -----
    Every pyramid level is computed in one pass from the mask's own chunks: memory is about
    one chunk per thread plus small pyramid pieces (module notes); with ``compute=True`` a
    mask of at most :data:`IN_MEMORY_PIXELS` pixels (and its class map) is computed into
    memory at once instead (``in_memory_pixels``).

    Examples
    --------
    >>> import os
    >>> import tempfile
    >>> import dask.array as da
    >>> import numpy as np
    >>> import zarr
    >>> from slidemask import write_ome_labels
    >>> tmp = tempfile.TemporaryDirectory()
    >>> mask = np.zeros((5, 6), dtype=bool)
    >>> mask[1:3, 1:4] = True
    >>> path = write_ome_labels(da.from_array(mask, chunks=(2, 4)),
    ...                         os.path.join(tmp.name, "s.ome.zarr"), mpp=8.0, coarsest_size=2)
    >>> labels = zarr.open_group(str(path / "labels" / "tissue"), mode="r")
    >>> [labels[level].shape for level in ("0", "1", "2")]
    [(5, 6), (3, 3), (2, 2)]
    >>> datasets = labels.attrs["ome"]["multiscales"][0]["datasets"]
    >>> [d["coordinateTransformations"][0]["scale"] for d in datasets]  # µm per pixel
    [[8.0, 8.0], [16.0, 16.0], [32.0, 32.0]]
    >>> int(labels["0"][:].sum()), labels["0"].dtype
    (6, dtype('uint8'))
    >>> tmp.cleanup()
    """
    prepare_process()  # malloc and the garbage collector, once per process
    label = _as_label_image(mask)
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise MaskError(
            "write_ome_labels: name must be letters, digits, '_', '-' or '.' (not first), "
            f"such as 'tissue'; got {name!r}"
        )
    if method not in _DOWNSAMPLERS:
        raise MaskError(
            f"write_ome_labels: method must be one of {sorted(_DOWNSAMPLERS)}, got {method!r}"
        )
    if mpp is not None and (
        isinstance(mpp, bool) or not isinstance(mpp, numbers.Real) or not math.isfinite(mpp)
        or mpp <= 0
    ):
        raise MaskError(f"write_ome_labels: mpp must be a positive number or None, got {mpp!r}")
    if isinstance(coarsest_size, bool) or not isinstance(coarsest_size, int) or coarsest_size < 1:
        raise MaskError(
            f"write_ome_labels: coarsest_size must be a positive integer, got {coarsest_size!r}"
        )
    user_attrs = dict(attrs or {})
    if ATTRS_KEY in user_attrs:
        raise MaskError(f"write_ome_labels: the attribute key {ATTRS_KEY!r} is reserved")
    class_image = None if classes is None else _as_class_image(classes.image, label.shape)
    if classes is not None and name == CLASS_LABELS_NAME:
        raise MaskError(
            f"write_ome_labels: the mask cannot be named {CLASS_LABELS_NAME!r} beside a class map"
        )
    try:
        check_attrs(user_attrs)
    except ValueError as exc:
        raise MaskError(str(exc).replace("write_zarr", "write_ome_labels")) from exc
    final = Path(path)
    if not final.name or final.name in {".", ".."}:
        raise MaskError(f"{path}: not a usable output name")
    check_target(final, overwrite)
    final.parent.mkdir(parents=True, exist_ok=True)

    chunks = _chunk_shape(label)
    shapes = _pyramid_shapes((int(label.shape[0]), int(label.shape[1])), coarsest_size)
    downsample = _DOWNSAMPLERS[method]
    in_memory = compute and label.shape[0] * label.shape[1] <= in_memory_pixels
    levels: list[Any] = []
    class_levels: list[Any] = []
    if in_memory:
        # the mask, the class map and any lazy attribute values, computed in one pass
        with in_use(mask):  # then the mask's scratch copies, if it was built with global steps
            class_whole = None if class_image is None else held_array(class_image)
            whole, computed, user_attrs = staged.compute(
                label, class_image if class_whole is None else None, user_attrs
            )
            class_whole = computed if class_whole is None else class_whole
        levels = _numpy_pyramid(np.asarray(whole), len(shapes), method)
        if class_whole is not None:
            class_levels = _numpy_pyramid(np.asarray(class_whole), len(shapes), "nearest")
    else:
        levels = [_regular(label, chunks)]
        for _ in shapes[1:]:
            levels.append(_regular(downsample(levels[-1], 2), chunks))
        if class_image is not None:
            class_levels = [_regular(class_image, chunks)]
            for _ in shapes[1:]:
                class_levels.append(_regular(downsample_nearest(class_levels[-1], 2), chunks))
    assert [lv.shape for lv in levels] == shapes

    partial = new_partial_path(final)
    own: dict[str, Any] = {
        "format_version": FORMAT_VERSION,
        "version": package_version(),
        "complete": False,
        "layout": "ome-zarr-labels",
        "labels": f"labels/{name}",
        "mpp": None if mpp is None else float(mpp),
        "pyramid_method": method,
        "source_image": None if source_image_path is None else os.fspath(source_image_path),
        **({"class_labels": f"labels/{CLASS_LABELS_NAME}"} if classes is not None else {}),
        "parent_image": "placeholder: arrays of the label shapes with no stored data",
    }
    try:
        root = zarr.open_group(
            str(partial), mode="w-", zarr_format=3,
            attributes={
                "ome": {
                    "version": OME_VERSION,
                    "multiscales": _multiscales(
                        "placeholder", len(shapes), mpp, method,
                        "Placeholder parent image: no pixel data is stored; the mask is in "
                        f"labels/{name}",
                    ),
                },
                ATTRS_KEY: own,
            },
        )
        names = [name] + ([CLASS_LABELS_NAME] if classes is not None else [])
        labels_group = root.create_group(
            "labels", attributes={"ome": {"version": OME_VERSION, "labels": names}}
        )
        label_group = labels_group.create_group(
            name,
            attributes={
                "ome": {
                    "version": OME_VERSION,
                    "multiscales": _multiscales(
                        name, len(shapes), mpp, method,
                        f"slidemask {name} mask, 1 = {name}, 0 = background",
                    ),
                    "image-label": {
                        "version": OME_VERSION,
                        "colors": [
                            {"label-value": 0, "rgba": [0, 0, 0, 0]},
                            {"label-value": 1, "rgba": list(LABEL_RGBA)},
                        ],
                        "properties": [
                            {"label-value": 0, "name": "background"},
                            {"label-value": 1, "name": name},
                        ],
                        "source": {"image": "../../"},
                    },
                }
            },
        )
        targets = []
        for k, shape in enumerate(shapes):
            level_chunks = tuple(min(c, n) for c, n in zip(chunks, shape, strict=True))
            common: dict[str, Any] = dict(
                shape=shape, chunks=level_chunks, dtype=np.uint8, fill_value=0,
                compressors=CHUNK_COMPRESSOR, dimension_names=("y", "x"),
            )
            root.create_array(str(k), **common)  # placeholder parent level: never written
            targets.append(_target(label_group.create_array(str(k), **common)))
        if classes is not None:
            class_group = labels_group.create_group(
                CLASS_LABELS_NAME,
                attributes={
                    "ome": {
                        "version": OME_VERSION,
                        "multiscales": _multiscales(
                            CLASS_LABELS_NAME, len(shapes), mpp, "nearest",
                            "slidemask class map: "
                            + ", ".join(f"{v} = {n}" for n, v in sorted(
                                classes.values.items(), key=lambda kv: kv[1])),
                        ),
                        "image-label": classes.image_label(),
                    }
                },
            )
            for k, shape in enumerate(shapes):
                level_chunks = tuple(min(c, n) for c, n in zip(chunks, shape, strict=True))
                targets.append(_target(class_group.create_array(
                    str(k), shape=shape, chunks=level_chunks, dtype=np.uint8, fill_value=0,
                    compressors=CHUNK_COMPRESSOR, dimension_names=("y", "x"),
                )))
        images = levels + class_levels
        if in_memory:
            for image, target in zip(images, targets, strict=True):
                target.write_all(image)
            done = _finalize(None, str(partial), str(final), overwrite, user_attrs)
            return Path(done)
        written = [_store(level, target) for level, target in zip(images, targets, strict=True)]
    except BaseException:
        remove(partial)
        raise
    task = dask.delayed(_finalize, pure=False)(
        [shared_delayed(w) for w in written], str(partial), str(final), overwrite,
        _shared_values(user_attrs),
    )
    if not compute:
        return task
    try:
        with in_use(mask):  # then the mask's scratch copies, if it was built with global steps
            (done,) = staged.compute(task)
    except BaseException:
        remove(partial)
        raise
    return Path(done)
