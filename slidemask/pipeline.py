"""From a slide and a configuration to a mask: a translation of YAML into public API calls.

:func:`build_mask` applies each configured step through the public function of that name
(:data:`slidemask.config.STEPS`), in order, and combines the masks by the output expression:
the mask is exactly what the same calls written in Python give (for one mask, with the same
graph; several are stored before they are combined, see below). Nothing
is read or computed. :func:`run_slide` opens one slide, builds its mask, streams it into
``<output_dir>/<name>.zarr`` (plus the extra outputs the config asks for) with the current
dask scheduler and reports the outcome without raising, so a batch goes on past a bad slide.
Choose the scheduler around the call (``dask.config.set(scheduler=...)`` or an active
``dask.distributed.Client``).

How it runs fast in bounded memory is the public functions' business, the same for every
caller (:mod:`slidemask.ops.local`, :mod:`slidemask.ops.scratch`):

* pointwise steps on a slide level (grey, saturation, RGB mean, a constant threshold, an HSV
  range) run on each file tile right after it is decoded (:meth:`slidemask.io.Slide.map_pixels`);
* neighbourhood steps read halo windows from a scratch copy of their input, and consecutive
  ones share one copy; a median then a one-sided constant threshold becomes the threshold's
  majority vote (identical, about 50 times cheaper);
* global steps store their input to scratch while pass 1 summarizes it, and pass 2 reads it
  back, so no chunk is held for the whole slide; an Otsu threshold is computed while its
  image is stored, and the image is thresholded from that copy.

Only three decisions are the runner's own. A working image of at most
:data:`WHOLE_IMAGE_PIXELS` pixels (2048², e.g. a tissue mask of a small slide) is made one chunk, so
every step is one task; when several masks read the level, they share one decode of each
chunk instead of each fusing its own; and several chunked masks are each stored to scratch as
they are finished and read back behind one barrier, before they are combined or read by a
later step (:func:`_stored_masks`), so that no finished chunk waits in memory for the other
masks. The values are those of the plain calls. Scratch folders go beside the output
(``.<name>.zarr.scratch-<hex>``, through :func:`slidemask.ops.scratch.scratch_in`, for the
building thread only) and are removed when
the slide is done, failed or interrupted.

Outputs and resume. Without extra outputs the mask is written straight to ``<name>.zarr``
(atomically, by :func:`slidemask.writers.zarr.write_zarr`). With extras (``outputs:`` in the
config) the mask is first written, complete, into the slide's scratch folder; every extra is
derived from that stored copy (read back lazily) and written into the scratch folder too;
then the extras are moved to their final names and the mask last. Each move is a rename within
the output folder, so each file appears whole, and a complete ``<name>.zarr`` (what a batch's
resume trusts) implies that its extras from the same run are in place. A killed run leaves only
the ``.<name>.zarr.scratch-<hex>`` folder, which a batch removes.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import logging
import os
import shutil
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any, cast

import dask
import dask.array as da
import numpy as np
import zarr

from slidemask import storage
from slidemask.config import OTSU, Config, Expr, config_hash, parse_expression
from slidemask.config import Resolution as ResolutionConfig
from slidemask.errors import MaskError, SlidemaskError
from slidemask.inputs import EXTRA_SUFFIXES, extra_paths_for, output_path_for
from slidemask.io import Slide, open_slide
from slidemask.memory import prepare_process
from slidemask.ops import staged
from slidemask.ops.artifacts import class_counts, class_map
from slidemask.ops.chunks import rechunk
from slidemask.ops.components import label_stats
from slidemask.ops.density import background_estimate, optical_density, white_balance
from slidemask.ops.literal import literal_array
from slidemask.ops.local import threshold
from slidemask.ops.otsu import otsu_threshold
from slidemask.ops.packed import (
    MAX_PACKED_MASKS,
    bits_dtype,
    bits_table,
    class_table,
    evaluate_stored,
    lookup_bits,
    pack_stored,
)
from slidemask.ops.relevance import gate_arguments
from slidemask.ops.resample import Resolution, image_at, resample_mask, select_resolution
from slidemask.ops.scratch import scratch_in
from slidemask.report import SlideResult
from slidemask.tiles.runner import write_slide_tiles
from slidemask.writers.atomic import check_target, looks_like_zarr, publish
from slidemask.writers.geojson import qupath_name, write_class_geojson, write_geojson
from slidemask.writers.ome_zarr import IN_MEMORY_PIXELS as LABELS_IN_MEMORY_PIXELS
from slidemask.writers.ome_zarr import ClassLabels, write_ome_labels
from slidemask.writers.preview import write_class_preview, write_preview
from slidemask.writers.summary import (
    class_areas,
    qc_warnings,
    summary_record,
    write_summary_json,
)
from slidemask.writers.zarr import (
    file_version,
    read_attrs,
    read_mask,
    slide_changed,
    stored_config_hash,
    write_zarr,
)

__all__ = ["build_class_map", "build_mask", "run_slide", "working_resolution"]

log = logging.getLogger("slidemask")

COMPONENT_COUNT_MAX_PIXELS = 100_000_000
"""The summary counts connected components (one labelling pass over the stored mask, about
1 s per 10^8 pixels) only for masks up to this many pixels, unless the GeoJSON output counts
them anyway; above it ``components`` is None."""


def working_resolution(slide: Slide, resolution: ResolutionConfig) -> Resolution:
    """The pyramid level and integer factor a configuration's ``resolution`` asks for.

    Parameters
    ----------
    slide : Slide
        An open slide.
    resolution : slidemask.config.Resolution
        The configuration's ``resolution`` (one of ``level``, ``mpp``, ``downsample``).

    Returns
    -------
    slidemask.ops.resample.Resolution
        :func:`slidemask.ops.resample.select_resolution` with that ``level``, ``mpp`` or
        ``downsample``.

    Raises
    ------
    SlideError, MaskError
        As :func:`slidemask.ops.resample.select_resolution`.
    """
    return select_resolution(
        slide, mpp=resolution.mpp, level=resolution.level, downsample=resolution.downsample
    )


def build_mask(slide: Slide, config: Config) -> tuple[da.Array, dict[str, Any]]:
    """Build the configured mask of ``slide`` lazily.

    Parameters
    ----------
    slide : Slide
        An open slide (:func:`slidemask.open_slide`). Its chunking is used as it is: open it
        with ``chunk_size=config.chunk_size`` for the chunks :func:`run_slide` (which opens
        the slide so) gives; the mask's pixels are the same for any chunking.
    config : slidemask.config.Config
        A validated configuration (:func:`slidemask.load_config`); its steps are applied in
        order through the public functions named in :data:`slidemask.config.STEPS`, then
        combined by ``output``.

    Returns
    -------
    mask : dask.array.Array
        ``(rows, cols)`` bool in the pixels of the working resolution: the configured level,
        or for ``mpp``/``downsample`` the nearest finer level area-averaged by an integer
        ``factor`` (:func:`working_resolution`): ``level rows // factor`` by ``level cols //
        factor`` pixels, so the last ``rows % factor`` rows and ``cols % factor`` columns of
        the level, which do not fill a mask pixel, are left out (mask pixel ``(i, j)`` covers
        level pixels ``[i f, (i + 1) f) x [j f, (j + 1) f)``). A mask with its own
        ``resolution:`` is computed there and moved onto this grid
        (:func:`slidemask.ops.resample.resample_mask`: block maximum when finer) before
        ``output`` combines it.
    provenance : dict
        Source slide (``source``: path, name, vendor, level-0 shape, µm per pixel, and for a
        local file its ``version``, size and modification time:
        :func:`slidemask.writers.zarr.file_version`), ``level``, ``factor``, µm per mask
        pixel (``mpp``, None when unknown),
        ``downsample`` (level-0 pixels per mask pixel), the masks' steps with their parameters,
        ``thresholds`` (per threshold step ``"<mask>[<index>]"``, the bounds used, an Otsu
        value as a lazy 0-d dask array here), ``backgrounds`` (only when a step estimates
        one: per ``optical_density`` or ``white_balance`` step, the glass colour ``(R, G, B)``
        it estimated, a
        lazy ``(3,)`` dask array here), the output expression and the config hash.
        JSON-able once its lazy values are computed (``write_zarr`` attributes accept them).

    Raises
    ------
    SlideError
        An ``mpp`` resolution on a slide that does not state its pixel size.
    MaskError
        The level does not exist; a size in micrometres on a slide without a pixel size; or a
        step refuses this slide's data (e.g. a threshold outside a uint16 image's range): the
        message names the slide and the step's key path in the configuration.

    Notes
    -----
    Nothing is read or computed here. Memory when computed: bounded whatever the slide's
    size (chunk work plus scratch files on disk, see the module notes). Scratch folders go
    under :func:`slidemask.ops.scratch.scratch_root` (dask's ``temporary-directory`` unless
    :func:`slidemask.ops.scratch.scratch_in` chose one).

    Examples
    --------
    >>> import os
    >>> import tempfile
    >>> from slidemask import build_mask, open_slide, run_slide, write_synthetic_slide
    >>> from slidemask.config import config_from_yaml
    >>> tmp = tempfile.TemporaryDirectory()
    >>> path = write_synthetic_slide(os.path.join(tmp.name, "s.tif"), 512, tile=128, levels=3)
    >>> config = config_from_yaml('''
    ... resolution: {mpp: 8}
    ... masks:
    ...   tissue: [{gray: {}}, {threshold: {below: 220}}, {closing: {radius_um: 16}}]
    ... ''')
    >>> mask, provenance = build_mask(open_slide(path), config)  # lazy
    >>> mask.shape, mask.dtype  # 512 level-0 pixels at 0.5 µm, 16 per mask pixel
    ((32, 32), dtype('bool'))
    >>> [provenance[key] for key in ("level", "factor", "mpp", "downsample")]
    [2, 4, 8.0, 16.0]
    >>> provenance["thresholds"]
    {'tissue[1]': {'above': None, 'below': 220.0}}
    >>> tmp.cleanup()
    """
    return _build(slide, config)


WHOLE_IMAGE_PIXELS = 2**22
"""Default of the dask setting ``slidemask.whole-image-pixels``: a working image of at most
this many pixels (2048²: measured on a 50000² pyramid, the tissue preset at 8 µm per pixel,
a 3125² image, peaked at 465 MiB as one chunk and 274 MiB in 2048² chunks, and was faster)
is made one chunk before the masks are built: at that size the fixed cost
of chunked work (a task per chunk, scratch files for neighbourhood and global steps) outweighs
the work, and every step of a chunk-sized image runs in one task. Memory: the image (3 bytes
per pixel) and a few masks' worth. The mask is written with the configured chunks."""


def _unfused(image: da.Array) -> da.Array:
    """``image`` without its link to the slide's tile reader: several masks reading a level
    then share one decode of each chunk instead of each decoding every tile again."""
    return da.Array(image.dask, image.name, image.chunks, meta=image._meta)


def _otsu_split(image: da.Array, bounds: dict[str, Any], value: Any) -> da.Array:
    """Threshold with one bound the Otsu value ``value``: ``above`` keeps ``x > t``, ``below``
    keeps ``x <= t`` (the complement), the other bound (if any) as a strict constant."""
    above, below = bounds.get("above"), bounds.get("below")
    if above == OTSU:
        mask = threshold(image, above=value)
        return mask if below is None else mask & threshold(image, below=below)
    mask = ~threshold(image, above=value)
    return mask if above is None else mask & threshold(image, above=above)


def _apply_step(
    value: da.Array,
    step: Any,
    kwargs: dict[str, Any],
    thresholds: dict[str, Any],
    key: str,
    backgrounds: dict[str, Any],
) -> da.Array:
    """One configured step: its public function (an Otsu threshold is
    :func:`slidemask.ops.otsu.otsu_threshold` then :func:`slidemask.ops.local.threshold`; an
    estimated glass colour is :func:`slidemask.ops.density.background_estimate` then
    :func:`slidemask.ops.density.optical_density` or ``white_balance``, recorded in
    ``backgrounds``)."""
    if step.name in ("optical_density", "white_balance") and kwargs.get("background") is None:
        # kept (and recorded) for the run: its scratch copy of the image lives as long as it
        estimate = background_estimate(
            value, percentile=kwargs["percentile"], floor=kwargs["floor"]
        )
        backgrounds[key] = estimate
        if step.name == "white_balance":
            return white_balance(value, background=estimate)
        return optical_density(value, background=estimate, combine=kwargs["combine"])
    if step.name == "threshold" and step.params.otsu:
        otsu = otsu_threshold(value)
        side = "above" if kwargs.get("above") == OTSU else "below"
        thresholds[key] = {**kwargs, side: otsu}
        return _otsu_split(value, kwargs, otsu)
    if step.name == "threshold":
        thresholds[key] = dict(kwargs)
    return cast(da.Array, step.spec.function(value, **kwargs))


@dataclass(frozen=True)
class _Built:
    """What :func:`_build_all` builds: the output mask, its provenance, every mask in use on
    the working grid, and (with ``classes:``) the class map, the tissue it is measured
    against (the ``tissue`` class's expression, None without one) and the class whose pixels
    the output mask is exactly, where one is (``mask_class``: known from the tables of a
    staged build, else None)."""

    mask: da.Array
    provenance: dict[str, Any]
    masks: dict[str, da.Array]
    classes: da.Array | None = None
    tissue: da.Array | None = None
    mask_class: str | None = None


def _build(slide: Slide, config: Config) -> tuple[da.Array, dict[str, Any]]:
    built = _build_all(slide, config)
    return built.mask, built.provenance


def build_class_map(slide: Slide, config: Config) -> tuple[da.Array, dict[str, Any]]:
    """Build the configured class map of ``slide`` lazily (the config's ``classes:``).

    Parameters
    ----------
    slide : slidemask.io.Slide
        An open slide.
    config : slidemask.config.Config
        A validated configuration with a ``classes:`` section.

    Returns
    -------
    class_map : dask.array.Array
        ``(rows, cols)`` uint8 on the working grid of :func:`build_mask`: each pixel the label
        value of the first class in the precedence whose expression holds there, 0 where none
        does (:func:`slidemask.ops.artifacts.class_map`).
    provenance : dict
        As :func:`build_mask` gives it, with ``classes`` (expressions, precedence, values).

    Raises
    ------
    MaskError
        The configuration has no ``classes:``; or what :func:`build_mask` raises.

    Examples
    --------
    >>> import os
    >>> import tempfile
    >>> import numpy as np
    >>> from slidemask import build_class_map, open_slide, write_synthetic_slide
    >>> from slidemask.config import config_from_yaml
    >>> tmp = tempfile.TemporaryDirectory()
    >>> path = write_synthetic_slide(os.path.join(tmp.name, "s.tif"), 512, tile=128, levels=3)
    >>> config = config_from_yaml('''
    ... resolution: {mpp: 8}
    ... masks:
    ...   tissue: [{gray: {}}, {threshold: {below: 220}}]
    ...   dark: [{gray: {}}, {threshold: {below: 160}}]
    ... output: tissue
    ... classes:
    ...   masks: {tissue: tissue, fold: "dark & tissue"}
    ...   precedence: [fold, tissue]
    ... ''')
    >>> classes, provenance = build_class_map(open_slide(path), config)  # lazy
    >>> classes.shape, classes.dtype  # the working grid: 8 µm per pixel
    ((32, 32), dtype('uint8'))
    >>> np.bincount(classes.compute().ravel()).tolist()  # background, tissue, fold (4)
    [658, 166, 0, 0, 200]
    >>> provenance["classes"]["precedence"]
    ['fold', 'tissue']
    >>> tmp.cleanup()
    """
    if config.classes is None:
        raise MaskError("build_class_map: the configuration has no classes: section")
    built = _build_all(slide, config)
    assert built.classes is not None
    return built.classes, built.provenance


def _names_in_use(config: Config) -> set[str]:
    names = set(config.expression.names())
    if config.classes is not None:
        for expr in _class_expressions(config).values():
            names |= expr.names()
    return names


def _class_expressions(config: Config) -> dict[str, Expr]:
    """Each class's parsed expression (the config's ``classes.masks``)."""
    assert config.classes is not None
    return {name: parse_expression(text) for name, text in config.classes.masks.items()}


def _classes_of(config: Config, masks: dict[str, da.Array]) -> tuple[da.Array, da.Array | None]:
    """The class map and the ``tissue`` class's mask, from masks on the working grid."""
    assert config.classes is not None
    chosen = {name: expr.evaluate(masks) for name, expr in _class_expressions(config).items()}
    classes = class_map(chosen, config.classes.order, values=config.classes.label_values())
    return classes, chosen.get("tissue")


def _stored_masks(masks: dict[str, da.Array], stored: set[str]) -> dict[str, da.Array]:
    """``masks`` with each one not named in ``stored`` (chunked, on the working grid)
    stored to scratch, then read back once one barrier has seen every one of them stored.

    Without it the masks are computed one after another over the whole slide (each runs its
    own scratch copies and global steps, whose windows need the neighbouring chunks), and
    every finished chunk of an early mask waits in memory until the last mask, or a later
    step that reads it (the relevant region of ``sharpness``), reaches that chunk: at the
    memory peak of ``configs/qc.yaml`` on a 50000² slide, about 40 MiB of finished mask chunks
    at 8 µm per pixel. Stored, a finished chunk goes to disk at once (1/8 of its bytes,
    compressed), and the staged compute (:mod:`slidemask.ops.staged`) computes the barrier in
    a stage of its own, so the readers' chunks are read back one by one. :func:`_build_all`
    stores the masks built so far before a step that reads them, and the rest at the end.
    Measured on that slide: peak RSS 264-270 against 287-312 MiB, wall time within the noise
    (+0-0.15 s of 4.2 s). A plain dask ``compute`` gives the same values.
    """
    from dask.highlevelgraph import HighLevelGraph

    from slidemask.ops.scratch import stored_reads, stores

    grids = {name: stores(value, f"mask-{name}")
             for name, value in masks.items() if name not in stored}
    token = dask.base.tokenize(*(grid.name for grid, _ in grids.values()))
    key = f"{staged.STORED_MASKS_PREFIX}{token}"
    deps: list[Any] = [grid for grid, _ in grids.values()]
    task = (len, [list(grid.__dask_keys__()) for grid in deps])  # waits for every store
    graph = HighLevelGraph.from_collections(key, {(key,): task}, dependencies=deps)
    gate = da.Array(graph, key, chunks=(), dtype=int, meta=np.empty((), int))
    return {
        name: value if name not in grids else stored_reads(
            grids[name][1], grids[name][0], value, gate=gate, label=f"mask-{name}")
        for name, value in masks.items()
    }


class _MaskImages:
    """The image each mask starts from: the working image, or for a mask with its own
    ``resolution:`` the slide at that resolution (one image per resolution, decoded once
    when several masks share it, one chunk when small, as the working image)."""

    def __init__(self, slide: Slide, config: Config, in_use: list[str], limit: int) -> None:
        self.slide, self.config, self.limit = slide, config, limit
        self.users: dict[Resolution, int] = {}
        self.resolutions: dict[str, Resolution] = {}
        for name in in_use:
            own = config.resolution_of(name)
            if own is not None:
                res = working_resolution(slide, own)
                self.resolutions[name] = res
                self.users[res] = self.users.get(res, 0) + 1
        self.images: dict[Resolution, da.Array] = {}

    def image_for(
        self, name: str, image: da.Array, resolution: Resolution
    ) -> tuple[da.Array, Resolution]:
        res = self.resolutions.get(name)
        if res is None or res == resolution:
            return image, resolution
        if res not in self.images:
            own = image_at(self.slide, res)
            if own.shape[0] * own.shape[1] <= self.limit:
                own = rechunk(own, own.shape)
            elif self.users[res] > 1:
                own = _unfused(own)
            self.images[res] = own
        return self.images[res], res


def _build_all(slide: Slide, config: Config) -> _Built:
    resolution = working_resolution(slide, config.resolution)
    image = image_at(slide, resolution)
    expression = config.expression
    in_use = [name for name in config.masks if name in _names_in_use(config)]
    out_chunks = image.chunks[:2]
    limit = int(dask.config.get("slidemask.whole-image-pixels", WHOLE_IMAGE_PIXELS))
    whole = image.shape[0] * image.shape[1] <= limit
    if whole:
        image = rechunk(image, image.shape)
    elif len(in_use) > 1:
        image = _unfused(image)
    masks: dict[str, da.Array] = {}
    thresholds: dict[str, dict[str, Any]] = {}
    backgrounds: dict[str, Any] = {}
    images = _MaskImages(slide, config, in_use, limit)
    stored: set[str] = set()  # masks already stored and read back (_stored_masks)
    for name in in_use:
        value, at = images.image_for(name, image, resolution)
        mpp, downsample = at.mpp, at.downsample
        for index, step in enumerate(config.steps_of(name)):
            key = f"{name}[{index}]"
            try:
                kwargs = step.arguments(mpp)
                if kwargs.get("radius") == 0 and getattr(step.params, "radius_um", None):
                    log.warning(
                        "%s: masks.%s.%s: radius_um %s is under half a pixel at %.3g um per "
                        "pixel, so the step changes nothing", slide.path, key, step.name,
                        step.params.radius_um, mpp,
                    )
                # where the step may leave out work no output reads (blur off tissue, glass)
                gate_for = partial(
                    gate_arguments, config, name, index, kwargs, image_shape=value.shape,
                    downsample=downsample, mpp=mpp, working_downsample=resolution.downsample,
                    working_shape=image.shape[:2],
                )
                gate = gate_for(masks)
                if gate and not whole and set(masks) - stored:
                    # the gate reads the masks built so far: stored first, then read back,
                    # so their chunks do not wait in memory for this step (see _stored_masks)
                    masks = _stored_masks(masks, stored)
                    stored |= set(masks)
                    gate = gate_for(masks)
                value = _apply_step(value, step, {**kwargs, **gate}, thresholds, key,
                                    backgrounds)
            except MaskError as exc:
                raise MaskError(f"{slide.path}: masks.{key}.{step.name}: {exc}") from exc
            if step.spec.reduces is not None:  # one output pixel per cell of the input
                cell = int(kwargs[step.spec.reduces])
                mpp, downsample = (None if mpp is None else mpp * cell), downsample * cell
        if downsample != resolution.downsample or value.shape != image.shape[:2]:
            # computed at its own resolution: onto the working grid, by block maximum
            value = resample_mask(
                value, resolution.downsample / downsample, image.shape[:2], chunks=image.chunks[:2]
            )
        masks[name] = value
    if not whole and len(masks) > 1 and set(masks) - stored:
        masks = _stored_masks(masks, stored)
    # masks read back from scratch are read one at a time per chunk, not all at once
    used = expression.names()
    read = {name: masks[name] for name in masks if name in used}
    stored_mask = evaluate_stored(expression.evaluate, read, label="output")
    mask = expression.evaluate(masks) if stored_mask is None else stored_mask
    classes, tissue = _classes_of(config, masks) if config.classes is not None else (None, None)
    if whole:
        mask = rechunk(mask, out_chunks)  # the output keeps the configured chunks
    canonical = config.canonical()
    provenance: dict[str, Any] = {
        "source": {
            "path": str(slide.path),
            "name": slide.name,
            "vendor": slide.vendor,
            "level0_shape": list(slide.levels[0].shape[:2]),
            "mpp": slide.mpp,
            **({"version": version} if (version := file_version(slide.path)) else {}),
        },
        **resolution.to_dict(),  # level, factor, mpp, downsample
        "resolution": canonical["resolution"],
        "masks": canonical["masks"],
        "output": canonical["output"],
        "thresholds": thresholds,
        **({"backgrounds": backgrounds} if backgrounds else {}),
        **({"mask_resolutions": {
            name: res.to_dict() for name, res in images.resolutions.items()
        }} if images.resolutions else {}),
        **({"classes": canonical["classes"]} if "classes" in canonical else {}),
        "chunk_size": config.chunk_size,
        **({"default_mpp": config.default_mpp} if config.default_mpp is not None else {}),
        "config_hash": config_hash(config),
    }
    return _Built(mask, provenance, masks, classes, tissue)


def _staged(built: _Built, config: Config, folder: Path) -> _Built:
    """``built`` with every mask computed once and stored, one bit per mask, in
    ``folder/masks.zarr``; the output mask, the class map and the tissue are then cheap
    reads of that copy instead of each computing the masks again."""
    names = list(built.masks)
    dtype = bits_dtype(len(names))
    # masks stored to scratch (_stored_masks) are read into each chunk's bits one at a time
    bits = pack_stored([built.masks[name] for name in names], label="mask-bits")
    if bits is None:
        for i, name in enumerate(names):
            plane = built.masks[name].astype(dtype) << dtype.type(i)
            bits = plane if bits is None else bits | plane
    assert bits is not None
    path = folder / "masks.zarr"
    # the provenance's lazy values (glass estimates, Otsu thresholds) in the same pass: the
    # outputs written next then record them without deciding those global steps again
    write_zarr(bits, path, attrs={"provenance": built.provenance})
    stored = read_mask(path)
    provenance = read_attrs(path)["provenance"]
    def unpacked() -> dict[str, da.Array]:
        return {
            name: ((stored >> dtype.type(i)) & dtype.type(1)).astype(bool)
            for i, name in enumerate(names)
        }

    masks = built.masks
    if len(names) <= MAX_PACKED_MASKS:
        # the output mask, the class map and the tissue as one table lookup per pixel of the
        # packed bits (slidemask.ops.packed), instead of unpacking and combining every mask
        assert config.classes is not None
        chosen = {name: expr.evaluate for name, expr in _class_expressions(config).items()}
        mask_table = bits_table(names, config.expression.evaluate)
        values = config.classes.label_values()
        class_lookup = class_table(names, chosen, config.classes.order, values)
        mask = lookup_bits(stored, mask_table)
        classes = lookup_bits(stored, class_lookup)
        # the output mask is one class's pixels where their tables agree on every packed value
        # (configs/qc.yaml: usable tissue is the class map's tissue); that class's GeoJSON
        # features are then the mask's 8-connected components, counted without labelling it
        mask_class = next((n for n, v in values.items()
                           if np.array_equal(mask_table, class_lookup == v)), None)
        tissue = (lookup_bits(stored, bits_table(names, chosen["tissue"]))
                  if "tissue" in chosen else None)
    else:
        masks = unpacked()
        mask = config.expression.evaluate(masks)
        classes, tissue = _classes_of(config, masks)
        mask_class = None
    if mask.chunks != built.mask.chunks:
        mask = rechunk(mask, built.mask.chunks)
    if classes.chunks != mask.chunks:
        classes = rechunk(classes, mask.chunks)
    return replace(built, mask=mask, masks=masks, classes=classes, tissue=tissue,
                   provenance=provenance, mask_class=mask_class)


# --- outputs ----------------------------------------------------------------------------------


def _reason(exc: BaseException) -> str:
    if isinstance(exc, (SlidemaskError, FileExistsError)):  # these already name the path
        return str(exc)
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _named(reason: str, path: str | os.PathLike[str]) -> str:
    """``reason`` starting with the slide, unless it names it already (a slide's own errors
    do; a step's, such as an empty glass estimate, do not)."""
    shown = str(_source(path))
    return reason if shown in reason else f"{shown}: {reason}"


def _label_name(expression: Expr) -> str:
    """A name for the mask in viewers: the leading positive mask of ``a & ~b``, else "mask"."""
    node = expression
    while node.op == "and":
        node = node.args[0]
    return node.name if node.op == "name" else "mask"


def _single_threshold(thresholds: dict[str, dict[str, Any]]) -> float | None:
    """The threshold to report: the one bound of the only threshold step, else None."""
    if len(thresholds) != 1:
        return None
    bounds = [v for v in next(iter(thresholds.values())).values() if v is not None]
    return float(bounds[0]) if len(bounds) == 1 else None


def _summary(
    stats: dict[str, Any], provenance: dict[str, Any], components: int | None
) -> dict[str, Any]:
    """The computed summary (the keys of :func:`slidemask.writers.summary.mask_summary`) from
    the stored statistics; nothing is read again."""
    pixels = int(stats.get("foreground_pixels", 0))
    total = int(stats.get("total_pixels", 0))
    mpp = provenance.get("mpp")
    return {
        "slide": provenance["source"]["path"],
        "tissue_pixels": pixels,
        "total_pixels": total,
        "tissue_fraction": pixels / total if total else 0.0,
        "tissue_area_mm2": None if mpp is None else pixels * mpp * mpp / 1e6,
        "components": components,
        "threshold": _single_threshold(provenance.get("thresholds", {})),
        "thresholds": provenance.get("thresholds", {}),
        "level": provenance["level"],
        "factor": provenance["factor"],
        "mpp": mpp,
        "downsample": provenance["downsample"],
        "config_hash": provenance["config_hash"],
    }


def _check_extra_target(key: str, final: Path) -> None:
    if key == "ome_zarr":
        check_target(final, overwrite=True)  # refuses a folder that is not a Zarr store
    elif final.is_dir() and not final.is_symlink():
        raise FileExistsError(f"{final}: exists and is a folder; refusing to replace it")


def _remove_stale_extras(target: Path, kept: list[str]) -> None:
    """Remove the extra outputs beside a newly written mask ``target`` that its config does not
    write (``kept``: the ones it does): an earlier run with other outputs left them, and they
    would describe the old mask (its summary, its preview in the QC report)."""
    for key, path in extra_paths_for(target, EXTRA_SUFFIXES).items():
        if key in kept:
            continue
        if key == "ome_zarr" and path.is_dir() and not path.is_symlink():
            if not looks_like_zarr(path):
                continue  # not an output of slidemask's: left alone
            shutil.rmtree(path)
        elif path.is_file() or path.is_symlink():
            path.unlink()
        else:
            continue
        log.info("removed %s, written beside %s by an earlier run with other outputs",
                 path.name, target.name)


def _install(built: Path, final: Path, aside: Path) -> None:
    """Move a finished output from the scratch folder to its final name (a rename within the
    output folder), replacing an older one; the old one goes into the scratch folder."""
    if final.is_dir() and not final.is_symlink():
        os.replace(final, aside / f"replaced-{uuid.uuid4().hex[:12]}-{final.name}")
    os.replace(built, final)  # a file replaces a file atomically


def _class_outputs(
    built: _Built, config: Config, mpp: float | None
) -> tuple[ClassLabels, dict[str, Any]]:
    """The class map as OME-Zarr labels, and its areas for the summary (computed now: one
    histogram pass over the stored masks).

    A class map of at most :data:`slidemask.writers.ome_zarr.IN_MEMORY_PIXELS` pixels (the
    size the label and GeoJSON writers hold in memory anyway) is computed in the same pass and
    kept: the labels, the GeoJSON and the preview then read it instead of each combining the
    stored masks again."""
    assert built.classes is not None and config.classes is not None
    values = config.classes.label_values()
    classes = built.classes
    counted = class_counts(classes, built.tissue)
    if classes.shape[0] * classes.shape[1] <= LABELS_IN_MEMORY_PIXELS:
        whole, counts = staged.compute(classes, counted)
        classes = literal_array(np.asarray(whole), classes.chunks, "slidemask-classes")
    else:
        (counts,) = staged.compute(counted)
    return ClassLabels(classes, values), class_areas(
        np.asarray(counts), values, mpp, tissue_known=built.tissue is not None
    )


@contextlib.contextmanager
def _outputs_thread() -> Iterator[ThreadPoolExecutor]:
    """One thread beside the caller for a slide's outputs, joined on exit; the pools dask made
    for its computations go with it (:func:`slidemask.ops.staged.release_thread_pools`)."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        try:
            yield pool
        finally:
            pool.submit(staged.release_thread_pools)


def _write_with_extras(
    slide: Slide,
    mask: da.Array,
    attrs: dict[str, Any],
    config: Config,
    target: Path,
    scratch: Path,
    overwrite: bool,
    qc: _Built | None = None,
) -> dict[str, Any]:
    """The mask and its extras, built in ``scratch`` and moved into place (mask last).

    With ``qc`` (a staged build with a class map) the extras carry the class map: a second
    OME-Zarr label image ``labels/classes``, GeoJSON annotations per class, the preview in
    class colours with a legend, and the summary's ``classes`` areas."""
    finals = extra_paths_for(target, config.outputs.extras)
    check_target(target, overwrite)
    for key, final in finals.items():
        _check_extra_target(key, final)
    folder = scratch / "outputs"  # apart from the stage's intermediates, whatever the names
    built_mask = folder / target.name
    built: dict[str, Path] = {key: folder / final.name for key, final in finals.items()}
    components: int | None = None
    # A mask's preview (mostly PNG encoding, which releases the GIL) is drawn in a thread
    # beside the remaining work, from the stored mask; a class map's GeoJSON is traced there
    # while the OME-Zarr labels are written (QC on a 50000² slide, five alternating fresh
    # processes each: 4.10 against 4.25 s, peak 249-272 against 229-247 MiB), and its
    # preview is drawn after both.
    with _outputs_thread() as pool:
        preview = None

        def start_preview(source: da.Array) -> Any:
            return pool.submit(  # in this thread's context, as the GeoJSON below
                contextvars.copy_context().run, write_preview, slide, source, built["preview"],
                mask_downsample=float(attrs["provenance"]["downsample"]),
            )

        write_zarr(mask, built_mask, attrs=attrs, count_into="stats.foreground_pixels")
        stored = read_mask(built_mask)
        written = read_attrs(built_mask)
        provenance, stats = written["provenance"], written["stats"]
        name = _label_name(config.expression)
        labels, areas = _class_outputs(qc, config, provenance["mpp"]) if qc else (None, None)
        if "preview" in built and labels is None:
            preview = start_preview(stored)
        traced = None  # the class map's GeoJSON, traced in the pool's thread
        if "geojson" in built and labels is not None and areas is not None:
            present = {n: v for n, v in labels.values.items() if areas[n]["pixels"]}
            traced = pool.submit(  # classes without a pixel need no tracing
                # in this thread's context: graphs built there keep this slide's scratch root
                contextvars.copy_context().run, write_class_geojson, labels.image,
                built["geojson"], present, downsample=float(provenance["downsample"]),
            )
        if "ome_zarr" in built:
            write_ome_labels(
                stored, built["ome_zarr"], mpp=provenance["mpp"], name=name,
                source_image_path=slide.path, attrs={"provenance": provenance},
                classes=labels,
            )
        if traced is not None:
            counts = traced.result()
            if qc is not None and qc.mask_class is not None:
                # the output mask is this class's pixels: its components are the features
                components = counts.get(qc.mask_class, 0)
        elif "geojson" in built:
            components = write_geojson(
                stored, built["geojson"], downsample=float(provenance["downsample"]),
                classification=qupath_name(name),
            )
        if "preview" in built and labels is not None:
            # drawn once the class map's other writers are done, in this thread: they hold the
            # class map, the mask and their pyramids in memory, and the preview's thumbnail
            # and canvas then reuse that memory. Beside them in the pool's thread (another
            # malloc arena) QC on a 50000² slide peaked at 208-223 MiB, here at 194-210 (four
            # alternating runs each), in the same time
            write_class_preview(
                slide, labels.image, built["preview"], values=labels.values,
                mask_downsample=float(provenance["downsample"]), areas=areas,
            )
        if (
            components is None and "summary" in built
            and stored.size <= COMPONENT_COUNT_MAX_PIXELS
        ):
            (table,) = staged.compute(label_stats(stored))
            components = len(table)
        if preview is not None:
            preview.result()  # raises what the preview raised
    summary = _summary(stats, provenance, components)
    if areas is not None:
        summary["classes"] = areas
    if "summary" in built:
        write_summary_json(summary, built["summary"])
        zarr.open_array(str(built_mask), mode="r+").update_attributes(
            {"summary": summary_record(summary)}
        )
    for key, final in finals.items():
        _install(built[key], final, scratch)
    publish(built_mask, target, overwrite)  # last: a complete mask means its extras are there
    return summary


def _source(path: str | os.PathLike[str]) -> Path | storage.URLPath:
    """The slide's location as results record it: a URL stays a URL (``Path`` would fold its
    ``//``); a path stays as given."""
    return storage.location(path) if storage.is_url(path) else Path(path)


def run_slide(
    path: str | os.PathLike[str],
    config: Config,
    output_dir: str | os.PathLike[str],
    *,
    overwrite: bool = False,
    output: str | os.PathLike[str] | None = None,
) -> SlideResult:
    """Open one slide, build its mask and write ``<output_dir>/<slide name>.zarr`` and extras.

    Computes with the current dask scheduler. Never raises for a problem with this slide
    (missing, unreadable, corrupt tile, existing output without ``overwrite``, a size in µm on
    a slide without a pixel size): the returned result says ``failed`` and why, and the
    failure is logged naming the slide. Quality warnings (an empty mask, a mask covering more
    than 95 % of the slide) are logged at WARNING naming the slide, and written in the summary.

    Parameters
    ----------
    path : str or os.PathLike
        The slide file (opened read-only).
    config : slidemask.config.Config
        The validated configuration; ``config.outputs`` names the extras: ``<name>.ome.zarr``,
        ``<name>.geojson``, ``<name>.png`` and ``<name>.json`` beside ``<name>.zarr`` (see
        :func:`slidemask.inputs.extra_paths_for`, and the module docstring for their order).
    output_dir : str or os.PathLike
        Folder for the output (created if missing).
    overwrite : bool
        Replace an existing output (it stays complete until the new one is). Extras of a mask
        that does not exist yet are always replaced (a killed run may have left them).
    output : str or os.PathLike, optional
        Exact output path, overriding the name derived from the slide (a batch passes
        :func:`slidemask.inputs.output_paths` here to keep names unique).

    Returns
    -------
    SlideResult
        ``status`` "done" or "failed", ``error``, wall ``seconds``, and ``stats``:
        foreground pixels, total pixels, fraction, level, factor, mpp and downsample.

    Notes
    -----
    With ``config.tiles``, the tiles are written beside the mask once it is complete
    (``<name>.tiles.*``, :func:`slidemask.tiles.runner.write_slide_tiles`); when the mask is
    already complete with this config (and not ``overwrite``), only the tiles are written.

    Memory: bounded whatever the slide's size (see :func:`build_mask`); the slide's scratch
    folder ``.<name>.zarr.scratch-<hex>`` beside the output is removed when it is done. The
    first call sets glibc's malloc for slide runs (arenas capped, freed blocks kept for reuse:
    :func:`slidemask.memory.tune_malloc`) unless the user set it, and moves the objects alive
    then (the imported modules') out of the garbage collector's scans
    (:func:`slidemask.memory.prepare_process`).

    Examples
    --------
    >>> import os
    >>> import tempfile
    >>> from slidemask import build_mask, open_slide, run_slide, write_synthetic_slide
    >>> from slidemask.config import config_from_yaml
    >>> tmp = tempfile.TemporaryDirectory()
    >>> path = write_synthetic_slide(os.path.join(tmp.name, "s.tif"), 512, tile=128, levels=3)
    >>> config = config_from_yaml('''
    ... resolution: {mpp: 8}
    ... masks:
    ...   tissue: [{gray: {}}, {threshold: {below: 220}}, {closing: {radius_um: 16}}]
    ... ''')
    >>> result = run_slide(path, config, os.path.join(tmp.name, "out"))
    >>> result.status, result.output.name, result.stats["total_pixels"]
    ('done', 's.zarr', 1024)

    A problem with the slide is reported, not raised:

    >>> again = run_slide(path, config, os.path.join(tmp.name, "out"))
    >>> again.status, "output exists" in again.error
    ('failed', True)
    >>> tmp.cleanup()
    """
    prepare_process()  # malloc and the garbage collector, before the first computation
    started = time.perf_counter()
    digest = config_hash(config)
    target: Path | None = None
    try:
        target = Path(output) if output is not None else output_path_for(path, output_dir)
        slide = open_slide(path, chunk_size=config.chunk_size)
        if slide.mpp is None and config.default_mpp is not None:
            slide = dataclasses.replace(slide, mpp=config.default_mpp)  # the config's guess
        if (config.tiles is not None and not overwrite
                and stored_config_hash(target) == digest
                and slide_changed(target, path) is None):
            # the mask is complete with this config (a batch resumes): only its tiles are due
            provenance = read_attrs(target)["provenance"]
            only = write_slide_tiles(target, config.tiles, slide=slide, config_hash=digest)
            stored = read_attrs(target).get("stats", {})
            total = stored.get("total_pixels") or 0
            return SlideResult(
                path=_source(path), output=target, status="done", config_hash=digest,
                seconds=time.perf_counter() - started,
                stats={**stored, "tiles": only.count,
                       "fraction": stored.get("foreground_pixels", 0) / total if total else None,
                       **{k: provenance[k] for k in ("level", "factor", "mpp", "downsample")}},
            )
        scratch = target.parent / f".{target.name}.scratch-{uuid.uuid4().hex[:12]}"
        try:
            # intermediates go to the slide's scratch folder, beside the output
            with scratch_in(scratch):  # this thread only (slides can share a process)
                built = _build_all(slide, config)
                if config.classes is not None and config.outputs.extras:
                    # the masks feed the mask and the class map: computed once, stored
                    built = _staged(built, config, scratch)
            mask, provenance = built.mask, built.provenance
            stats = {"total_pixels": int(mask.size)}
            attrs = {"provenance": provenance, "stats": stats}
            if config.outputs.extras:
                summary = _write_with_extras(
                    slide, mask, attrs, config, target, scratch, overwrite,
                    qc=built if built.classes is not None else None,
                )
            else:
                write_zarr(
                    mask, target, overwrite=overwrite, attrs=attrs,
                    count_into="stats.foreground_pixels",
                )
                written = read_attrs(target)
                summary = _summary(written.get("stats", {}), written["provenance"], None)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        _remove_stale_extras(target, config.outputs.extras)
        for warning in qc_warnings(summary):
            log.warning("slide %s: %s", path, warning)
        tiles = (
            write_slide_tiles(target, config.tiles, slide=slide, config_hash=digest)
            if config.tiles is not None else None
        )
        stored = read_attrs(target).get("stats", {})
        total = stored.get("total_pixels") or 0
        result_stats = {
            **stored,
            "fraction": (stored.get("foreground_pixels", 0) / total) if total else None,
            "level": provenance["level"],
            "factor": provenance["factor"],
            "mpp": provenance["mpp"],
            "downsample": provenance["downsample"],
            **({"tiles": tiles.count} if tiles is not None else {}),
        }
    except Exception as exc:  # noqa: BLE001 - one bad slide must not stop a batch
        reason = _named(_reason(exc), path)
        log.error("slide %s failed: %s", path, reason)
        log.debug("traceback for %s", path, exc_info=True)
        return SlideResult(
            path=_source(path), output=target, status="failed", error=reason,
            seconds=time.perf_counter() - started, config_hash=digest,
        )
    seconds = time.perf_counter() - started
    log.debug("slide %s done in %.1f s -> %s", path, seconds, target)
    return SlideResult(
        path=_source(path), output=target, status="done", seconds=seconds,
        stats=result_stats, config_hash=digest,
    )
