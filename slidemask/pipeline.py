"""From a slide and a configuration to a mask: the lazy graph, and the runner that writes it.

:func:`build_mask` only builds a dask graph (nothing is read or computed);
:func:`run_slide` opens one slide, builds its mask, streams it into ``<output_dir>/<name>.zarr``
(plus the extra outputs the config asks for) with the current dask scheduler and reports the
outcome without raising, so a batch goes on past a bad slide. Choose the scheduler around the
call (``dask.config.set(scheduler=...)`` or an active ``dask.distributed.Client``).

Staged execution (what :func:`run_slide` does, and why). A neighbourhood step built with
``map_overlap`` makes every block wait for its neighbours, so dask holds about a row of finished
blocks: peak memory grows with the slide's width (661 MiB for a median at 40960^2). The runner
therefore stores the per-pixel part of a mask (grey, threshold, colour range: one pass over
the slide, fused with decoding) in a scratch Zarr array beside the output, then runs the
following neighbourhood steps on independent halo windows read back from it
(:func:`slidemask.ops.windows.map_windows`). Two more kinds of step are staged:

* a global step (``fill_holes``, ``contour_fill``, ``remove_small_objects``, ``keep_largest``,
  ``keep_largest_holes``) needs its input twice (pass 1 summaries, pass 2 changes, see
  :mod:`slidemask.ops.components`). Its input is stored to scratch, and each chunk is
  summarized in the very task that stores it (:func:`slidemask.writers.zarr.store_chunks`);
  the merge is computed in that pass, and pass 2 is the only read of the stored copy. A
  global step that directly follows a stored global step does not store its input: the
  input is the previous step's pass 2 on a stored copy (a read and a few flood fills), which
  is cheaper to compute twice than to store; the step after that stores again. Measured on
  2 cores, 20000² slide, threshold + fill_holes + remove_small_objects: 2.2-2.6 s against
  1.2-1.3 s for the threshold alone (4.0 s when each pass read its input);
* an Otsu threshold (``threshold: {above: otsu}``) is resolved before the thresholding pass:
  its input is stored, the slide-wide histogram is computed from the stored copy, and the image
  is then thresholded with the number. A lazy 0-d threshold would make dask keep every grey
  chunk in memory until the histogram is complete.

Decoding. When a single mask reads the level as stored (no downsampling), its leading
per-pixel steps (grey, saturation, RGB mean, a constant threshold, an HSV range) run on each
file tile right after it is decoded (:meth:`slidemask.io.Slide.map_pixels`): the RGB chunk is
never assembled, and the conversion runs while the tile is in the CPU cache. Measured on
2 cores, 20000² JPEG slide: grey < 220 to Zarr went from 2.6 s to 1.3-1.4 s against 1.0-1.1 s
for decoding alone. When several masks read the image they share one decode of each chunk
instead, and a working image of at most :data:`IN_MEMORY_PIXELS` elements read by several
masks is decoded once into memory.

Whole-image mode. A working image of at most :data:`WHOLE_IMAGE_PIXELS` pixels (a tissue mask
at 8 µm per pixel) is not staged at all: it is decoded into memory as one chunk, the masks
that start by converting to HSV share one conversion, every mask's chain is computed in one
dask pass (the masks side by side on the threads; a global step on one chunk is one task),
then the output expression is evaluated and written with the configured chunks. Measured on
a 50000² pyramid (2 cores): the tissue preset at 8 µm per pixel with its preview and summary
took 0.38 s per slide in a running process (0.47 s for a fresh process's first slide),
against 0.6-0.7 s staged.

Every stage gives exactly what the lazy graph of :func:`build_mask` gives; the scratch arrays
are removed when the slide is done.

One rewrite is applied in both paths: a median of a grey image followed by a one-sided
constant threshold becomes the threshold followed by a median of the mask (a majority vote).
The two are identical (a median is a rank: ``median(x) < t`` exactly when most of the window is
below ``t``), and the majority vote is about 50 times cheaper than OpenCV's 8-bit median for
apertures above 5.

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

import logging
import math
import os
import shutil
import time
import uuid
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, cast

import dask
import dask.array as da
import numpy as np
import zarr
from dask.base import tokenize

from slidemask.config import OTSU, Config, Expr, config_hash
from slidemask.config import Resolution as ResolutionConfig
from slidemask.errors import MaskError, SlidemaskError
from slidemask.inputs import output_path_for
from slidemask.io import Slide, open_slide
from slidemask.kernels.color import check_hsv_bounds, hsv_saturation, in_hsv_range, rgb_to_hsv
from slidemask.kernels.filters import mean_blur_depth, mean_blur_kernel, median_depth
from slidemask.kernels.filters import median_blur as median_kernel
from slidemask.kernels.morphology import (
    MorphologyOp,
    SquareOp,
    binary_morphology,
    morphology_depth,
    square_depth,
    square_morphology_kernel,
)
from slidemask.ops.components import TwoPass, check_mask, label_stats
from slidemask.ops.literal import literal_array
from slidemask.ops.local import PixelChain, PixelStep, threshold
from slidemask.ops.otsu import otsu_threshold
from slidemask.ops.resample import Resolution, image_at, select_resolution
from slidemask.ops.windows import KernelStep, map_windows
from slidemask.report import SlideResult
from slidemask.writers.atomic import check_target, publish
from slidemask.writers.geojson import write_geojson
from slidemask.writers.ome_zarr import write_ome_labels
from slidemask.writers.preview import shrink_for_preview, write_preview
from slidemask.writers.summary import qc_warnings, summary_record, write_summary_json
from slidemask.writers.zarr import (
    StoredArray,
    read_attrs,
    read_mask,
    regular_chunks,
    store_chunks,
    write_zarr,
)

__all__ = ["build_mask", "extra_output_paths", "run_slide", "working_resolution"]

log = logging.getLogger("slidemask")

COMPONENT_COUNT_MAX_PIXELS = 100_000_000
"""The summary counts connected components (one labelling pass over the stored mask, about
1 s per 10^8 pixels) only for masks up to this many pixels, unless the GeoJSON output counts
them anyway; above it ``components`` is None."""


def working_resolution(slide: Slide, resolution: ResolutionConfig) -> Resolution:
    """The pyramid level and integer factor a configuration's ``resolution`` asks for.

    ``level`` and ``mpp`` are :func:`slidemask.ops.resample.select_resolution`. ``downsample``
    (level-0 pixels per working pixel) picks the coarsest level whose downsample is at most the
    target, then the integer factor ``floor(target / level downsample + 0.5)`` (at least 1):
    e.g. CLAM's 64 on a pyramid with downsamples 1, 4, 16 reads level 2 and averages 4 x 4
    blocks. It does not need the slide's pixel size (``Resolution.mpp`` is None without one).

    Raises
    ------
    SlideError
        ``mpp`` on a slide that does not state its pixel size.
    MaskError
        A level that does not exist, or a target so coarse that no pixel would remain.
    """
    if resolution.downsample is None:
        return select_resolution(slide, mpp=resolution.mpp, level=resolution.level)
    target = float(resolution.downsample)
    candidates = [i for i, d in enumerate(slide.downsamples) if d <= target * (1 + 1e-9)]
    level = max(candidates, key=lambda i: slide.downsamples[i]) if candidates else 0
    level_downsample = float(slide.downsamples[level])
    factor = max(1, math.floor(target / level_downsample + 0.5))
    rows, cols = slide.levels[level].shape[:2]
    if rows // factor == 0 or cols // factor == 0:
        raise MaskError(
            f"resolution: downsample {target:g} is coarser than the whole slide {slide.path} "
            f"({rows} x {cols} pixels at level {level})"
        )
    level_mpp = slide.level_mpp(level)
    return Resolution(
        level=level, factor=factor, mpp=None if level_mpp is None else level_mpp * factor,
        downsample=level_downsample * factor,
    )


def build_mask(slide: Slide, config: Config) -> tuple[da.Array, dict[str, Any]]:
    """Build the configured mask of ``slide`` lazily.

    Parameters
    ----------
    slide
        An open slide (:func:`slidemask.open_slide`).
    config
        A validated configuration; its steps are applied in order through the public
        functions named in :data:`slidemask.config.STEPS`, then combined by ``output``.

    Returns
    -------
    mask : dask.array.Array
        ``(rows, cols)`` bool in the pixels of the working resolution: the configured level,
        or for ``mpp``/``downsample`` the nearest finer level area-averaged by an integer
        ``factor`` (:func:`working_resolution`).
    provenance : dict
        Source slide, ``level``, ``factor``, µm per mask pixel (``mpp``, None when unknown),
        ``downsample`` (level-0 pixels per mask pixel), the masks' steps with their parameters,
        ``thresholds`` (per threshold step ``"<mask>[<index>]"``, the bounds used, an Otsu
        value as a lazy 0-d dask array here), the output expression and the config hash.
        JSON-able once its lazy values are computed (``write_zarr`` attributes accept them).

    Memory: this is the plain lazy graph. Global steps compute their input twice and an Otsu
    threshold keeps the grey image in memory until its histogram is complete; use
    :func:`run_slide` for whole slides, which stages both.

    Raises
    ------
    SlideError
        An ``mpp`` resolution on a slide that does not state its pixel size.
    MaskError
        The level does not exist; a size in micrometres on a slide without a pixel size; or a
        step refuses this slide's data (e.g. a threshold outside a uint16 image's range): the
        message names the slide and the step's key path in the configuration.
    """
    return _build(slide, config, stage=None)


IN_MEMORY_PIXELS = 2**26
"""Intermediates of at most this many elements (64 MiB as uint8) are kept in memory, not in
scratch Zarr arrays: at coarse resolutions (a tissue mask at 8 µm per pixel) the fixed cost of
a Zarr round trip per stage dominates, and memory is bounded by the working image anyway."""


def _in_memory(array: np.ndarray, chunks: tuple[tuple[int, ...], ...], name: str) -> da.Array:
    """A stage's in-memory value as a dask array (chunk views, no copy, not hashed)."""
    return literal_array(array, chunks, f"slidemask-stage-{name}")


WHOLE_IMAGE_PIXELS = 2**25
"""A working image of at most this many pixels (e.g. a tissue mask at 8 µm per pixel: 3125²
for a 25 mm scan) is decoded into memory as one chunk, and every mask is computed from it
in one dask pass, without scratch stages: at that size the fixed cost of a stage (a compute,
its graph, a Zarr round trip: 5-30 ms each) outweighs the work, and the masks' chains run
side by side on the threads. Memory: the image (3 bytes per pixel) and a few masks' worth."""


class _Stage:
    """Scratch storage and eager values for the staged runner (one folder per slide)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.image: Any = None
        """The working image shrunk for the preview when it was decoded whole into memory
        (a ``Delayed`` until the masks are computed), else None."""

    def store(self, value: da.Array, name: str) -> StoredArray | np.ndarray:
        """Compute ``value`` and return it for windowed reads: in memory when it is small
        (:data:`IN_MEMORY_PIXELS`), else in ``<folder>/<name>.zarr``."""
        if value.size <= IN_MEMORY_PIXELS:
            return np.asarray(self.compute(value))
        path = self.folder / f"{name}.zarr"
        write_zarr(value, path, overwrite=True)
        return StoredArray(path)

    def keep(
        self,
        value: da.Array,
        name: str = "image",
        *,
        then: TwoPass | None = None,
        store: bool = True,
    ) -> da.Array:
        """:meth:`store` ``value`` and read it back as a dask array.

        With ``then`` (a global operation) the result is that operation applied to the stored
        copy: each chunk is summarized (pass 1) in the task that stores it, the merge is
        computed in the same pass, and pass 2 is the only read of the stored copy (see
        :class:`slidemask.ops.components.TwoPass`). With ``store=False`` (for a ``value``
        that is cheap to compute twice: the pass 2 of a global step on a stored copy) nothing
        is stored: pass 1 and pass 2 each compute ``value``.
        """
        if then is None:
            return self._read_back(self.store(value, name), value, name)
        value = regular_chunks(check_mask(value, then.op))
        if not store:
            (merged,) = dask.compute(then.merge(then.summaries(value), value))
            return then.run(value, merged=merged)
        if value.size <= IN_MEMORY_PIXELS:
            # two arrays sharing their chunks, optimized together
            array, records = dask.compute(value, then.summaries(value))
            kept = self._read_back(np.asarray(array), value, name)
            (merged,) = dask.compute(then.merge(records, kept))
        else:
            path = self.folder / f"{name}.zarr"
            grid, finish = store_chunks(value, path, then.summarize_chunk)
            (merged,) = dask.compute(then.merge(grid, value))  # stores every chunk
            finish()
            kept = self._read_back(StoredArray(path), value, name)
        return then.run(kept, merged=merged)

    @staticmethod
    def _read_back(stored: StoredArray | np.ndarray, value: da.Array, name: str) -> da.Array:
        if isinstance(stored, np.ndarray):
            return _in_memory(stored, value.chunks, name)
        return stored.to_dask(f"slidemask-stage-{name}-{tokenize(stored.path, value.name)}")

    def compute(self, value: Any) -> Any:
        (result,) = dask.compute(value)
        return result


def _window_kernel(name: str, kwargs: dict[str, Any]) -> KernelStep | None:
    """The numpy kernel and halo of a neighbourhood step (sizes in pixels), or None."""
    if name == "median_blur":
        return KernelStep(median_kernel, median_depth(kwargs["ksize"]), {"ksize": kwargs["ksize"]})
    if name == "mean_blur":
        ksize = kwargs["ksize"]
        return KernelStep(mean_blur_kernel, mean_blur_depth(ksize), {"ksize": ksize})
    if name in ("dilation", "erosion", "opening", "closing"):
        op = cast(MorphologyOp, name)
        radius = kwargs["radius"]
        return KernelStep(
            binary_morphology, morphology_depth(op, radius), {"op": op, "radius": radius}
        )
    if name.startswith("square_"):
        square = cast(SquareOp, name.removeprefix("square_"))
        size = kwargs["size"]
        return KernelStep(
            square_morphology_kernel, square_depth(square, size), {"op": square, "size": size}
        )
    return None


def _reorder(steps: Sequence[Any]) -> list[tuple[int, Any]]:
    """Steps with their config index; ``median_blur`` then a one-sided constant ``threshold``
    of a grey image is swapped (identical result, see the module docstring)."""
    order = list(enumerate(steps))
    kind = "color"
    i = 0
    while i < len(order):
        _, step = order[i]
        if (
            kind == "gray"
            and step.name == "median_blur"
            and i + 1 < len(order)
            and order[i + 1][1].name == "threshold"
            and _one_sided_constant(order[i + 1][1].kwargs())
        ):
            order[i], order[i + 1] = order[i + 1], order[i]
            kind = "mask"
            i += 2
            continue
        kind = step.spec.returns or kind
        i += 1
    return order


def _one_sided_constant(params: dict[str, Any]) -> bool:
    values = [v for v in (params.get("above"), params.get("below")) if v is not None]
    return len(values) == 1 and isinstance(values[0], (int, float))


def _otsu_split(image: da.Array, bounds: dict[str, Any], value: Any) -> da.Array:
    """Threshold with one bound the Otsu value ``value``: ``above`` keeps ``x > t``, ``below``
    keeps ``x <= t`` (the complement), the other bound (if any) as a strict constant."""
    above, below = bounds.get("above"), bounds.get("below")
    if above == OTSU:
        mask = threshold(image, above=value)
        return mask if below is None else mask & threshold(image, below=below)
    mask = ~threshold(image, above=value)
    return mask if above is None else mask & threshold(image, above=above)


def _compute_masks(
    masks: dict[str, da.Array], thresholds: dict[str, dict[str, Any]], stage: _Stage
) -> tuple[dict[str, da.Array], dict[str, dict[str, Any]]]:
    """Compute in-memory masks (and any lazy Otsu threshold with them) in one pass; the
    preview's shrunken image (``stage.image``, when delayed) is made in the same pass."""
    names = list(masks)
    arrays, values, stage.image = dask.compute(
        [masks[n] for n in names], thresholds, stage.image
    )
    computed = {
        name: _in_memory(np.asarray(array), tuple((n,) for n in array.shape), f"mask-{name}")
        for name, array in zip(names, arrays, strict=True)
    }
    floats = {
        step: {side: v if v is None or isinstance(v, str) else float(v) for side, v in d.items()}
        for step, d in values.items()
    }
    return computed, floats


_FROM_HSV = ("hsv_range", "saturation")


def _shared_hsv(array: np.ndarray, config: Config) -> da.Array | None:
    """The HSV conversion of an in-memory RGB(A) image, made once when two or more masks start
    with a step that converts to HSV (``hsv_range``, ``saturation``), else None."""
    if array.ndim != 3 or array.shape[2] not in (3, 4) or array.dtype != np.uint8:
        return None
    in_use = config.expression.names()
    starts = [
        _reorder(steps)[0][1].name for name, steps in config.masks.items()
        if name in in_use and steps
    ]
    if sum(name in _FROM_HSV for name in starts) < 2:
        return None
    hsv = rgb_to_hsv(array)
    return _in_memory(hsv, tuple((n,) for n in hsv.shape), "hsv")


def _from_hsv(hsv: da.Array, name: str, kwargs: dict[str, Any]) -> da.Array:
    """The first step ``name`` (``hsv_range`` or ``saturation``) read from the shared HSV image;
    identical to the step on the RGB image (the same OpenCV conversion, made once)."""
    if name == "saturation":
        return da.map_blocks(hsv_saturation, hsv, drop_axis=2, dtype=np.uint8)
    lower, upper = check_hsv_bounds(kwargs["lower"], kwargs["upper"])
    return da.map_blocks(in_hsv_range, hsv, lower=lower, upper=upper, drop_axis=2, dtype=bool)


def _fusable(step: Any) -> bool:
    """A pointwise step with a tile kernel (an Otsu threshold is resolved from a stored copy)."""
    if step.spec.tile_kernel is None:
        return False
    return not (step.name == "threshold" and step.params.otsu)


def _fused(slide: Slide, level: int, chain: list[PixelStep], value: da.Array) -> da.Array:
    """``value`` (the lazy result of ``chain`` on ``slide.levels[level]``) computed tile by tile
    as the level is decoded; the same array, bit for bit."""
    if not chain:
        return value
    channels = value.shape[2] if value.ndim == 3 else None
    return slide.map_pixels(level, PixelChain(tuple(chain)), dtype=value.dtype, channels=channels)


def _build(
    slide: Slide, config: Config, stage: _Stage | None
) -> tuple[da.Array, dict[str, Any]]:
    resolution = working_resolution(slide, config.resolution)
    image = image_at(slide, resolution)
    expression = config.expression
    out_chunks = image.chunks[:2]
    whole = stage is not None and image.shape[0] * image.shape[1] <= WHOLE_IMAGE_PIXELS
    whole_stage: _Stage | None = None
    if whole:  # decode once into memory; every mask from it in one pass (module docstring)
        array = np.empty(image.shape, image.dtype)
        da.store(image, array, lock=False)  # chunks decoded in place, no concatenation
        image = _in_memory(array, tuple((n,) for n in array.shape), "image")
        assert stage is not None
        if "preview" in config.outputs.extras:  # shrunk beside the masks' computation
            stage.image = dask.delayed(shrink_for_preview, pure=False)(array)
        whole_stage, stage = stage, None
        hsv = _shared_hsv(array, config)
    else:
        hsv = None
    # Fuse the leading pointwise steps with decoding when the level is read as it is and one
    # mask reads it (several masks share one decode of each chunk instead).
    in_use = [name for name in config.masks if name in expression.names()]
    fuse = (
        stage is not None and resolution.factor == 1 and image.ndim == 3 and len(in_use) == 1
        and bool(slide.readers)
    )
    if stage is not None and not fuse and len(in_use) > 1 and image.size <= IN_MEMORY_PIXELS:
        image = stage.keep(image)  # decoded once, not once per mask
    masks: dict[str, da.Array] = {}
    thresholds: dict[str, dict[str, Any]] = {}
    for name, steps in config.masks.items():
        if name not in expression.names():
            continue  # defined but unused: nothing to build
        value = image
        source: Any = None  # stored array that pending window kernels read from
        pending: list[KernelStep] = []

        def flush(value: da.Array, source: Any, pending: list[KernelStep]) -> da.Array:
            if not pending:
                return value
            probe = KernelStep.chain_dtype(pending, source.dtype)
            return map_windows(source, pending, chunks=value.chunks, dtype=probe)

        def keep(value: da.Array, label: str) -> da.Array:
            assert stage is not None
            return stage.keep(value, label)

        chain: list[PixelStep] | None = [] if fuse else None  # pointwise steps to fuse
        # the value is a global step's pass 2 on a stored copy: cheap enough to compute twice
        recomputable = False
        for position, (index, step) in enumerate(_reorder(steps)):
            after_global, recomputable = recomputable, False
            try:
                kwargs = step.arguments(resolution.mpp)
                if position == 0 and hsv is not None and step.name in _FROM_HSV:
                    value = _from_hsv(hsv, step.name, kwargs)
                    continue
                pointwise = chain is not None and _fusable(step)
                if chain is not None and not pointwise:
                    value = _fused(slide, resolution.level, chain, value)
                    chain = None
                if pointwise:
                    assert chain is not None and step.spec.tile_kernel is not None
                    chain.append(PixelStep(step.spec.tile_kernel, tuple(sorted(kwargs.items()))))
                kernel = _window_kernel(step.name, kwargs) if stage is not None else None
                if kernel is not None and value.ndim == 2:
                    if source is None:
                        assert stage is not None
                        source = stage.store(value, f"{name}-{index}")
                    pending.append(kernel)
                    continue
                value = flush(value, source, pending)
                source, pending = None, []
                if step.name == "threshold":
                    used = dict(kwargs)
                    if step.params.otsu:
                        if stage is not None:  # resolve it from a stored copy (see above)
                            value = keep(value, f"{name}-{index}")
                        otsu: Any = otsu_threshold(value)  # lazy 0-d, or resolved now:
                        if stage is not None:
                            otsu = float(stage.compute(otsu))
                        side = "above" if kwargs.get("above") == OTSU else "below"
                        used[side] = otsu
                        value = _otsu_split(value, kwargs, otsu)
                    else:
                        value = step.spec.function(value, **kwargs)
                    thresholds[f"{name}[{index}]"] = used
                elif step.spec.scope == "global":
                    plan = None
                    if stage is not None and step.spec.two_pass is not None and value.size:
                        plan = step.spec.two_pass(**kwargs)
                    if plan is not None:  # pass 1 while storing, pass 2 reads the copy
                        assert stage is not None
                        # after a stored global step, the next one reads its pass 2 twice
                        # instead of storing it (every other step stores: bounded rework)
                        store = not after_global
                        value = stage.keep(value, f"{name}-{index}", then=plan, store=store)
                        recomputable = store
                        continue
                    else:
                        if stage is not None:  # read twice: from scratch, not from the slide
                            value = keep(value, f"{name}-{index}")
                        value = step.spec.function(value, **kwargs)
                else:
                    value = step.spec.function(value, **kwargs)
            except MaskError as exc:
                raise MaskError(
                    f"{slide.path}: masks.{name}[{index}].{step.name}: {exc}"
                ) from exc
        if chain is not None:
            value = _fused(slide, resolution.level, chain, value)
        masks[name] = flush(value, source, pending)
    if whole_stage is not None:
        # each mask's chain as its own tasks, side by side (in one graph dask would fuse the
        # masks' last steps and the expression into a single task); then the expression
        masks, thresholds = _compute_masks(masks, thresholds, whole_stage)
    mask = expression.evaluate(masks)
    if whole:
        mask = mask.rechunk(out_chunks)  # the output keeps the configured chunks
    canonical = config.canonical()
    provenance: dict[str, Any] = {
        "source": {
            "path": str(slide.path),
            "name": slide.name,
            "vendor": slide.vendor,
            "level0_shape": list(slide.levels[0].shape[:2]),
            "mpp": slide.mpp,
        },
        **resolution.to_dict(),  # level, factor, mpp, downsample
        "resolution": canonical["resolution"],
        "masks": canonical["masks"],
        "output": canonical["output"],
        "thresholds": thresholds,
        "chunk_size": config.chunk_size,
        "config_hash": config_hash(config),
    }
    return mask, provenance


# --- outputs ----------------------------------------------------------------------------------


def _reason(exc: BaseException) -> str:
    if isinstance(exc, (SlidemaskError, FileExistsError)):  # these already name the path
        return str(exc)
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


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


def extra_output_paths(target: str | os.PathLike[str], outputs: Sequence[str]) -> dict[str, Path]:
    """Where each extra output of the mask ``<name>.zarr`` goes: ``<name>.ome.zarr``,
    ``<name>.geojson``, ``<name>.png`` (preview) and ``<name>.json`` (summary)."""
    target = Path(target)
    stem = target.name.removesuffix(".zarr")
    suffixes = {"ome_zarr": ".ome.zarr", "geojson": ".geojson", "preview": ".png",
                "summary": ".json"}
    return {key: target.parent / f"{stem}{suffixes[key]}" for key in outputs}


def _check_extra_target(key: str, final: Path) -> None:
    if key == "ome_zarr":
        check_target(final, overwrite=True)  # refuses a folder that is not a Zarr store
    elif final.is_dir() and not final.is_symlink():
        raise FileExistsError(f"{final}: exists and is a folder; refusing to replace it")


def _install(built: Path, final: Path, aside: Path) -> None:
    """Move a finished output from the scratch folder to its final name (a rename within the
    output folder), replacing an older one; the old one goes into the scratch folder."""
    if final.is_dir() and not final.is_symlink():
        os.replace(final, aside / f"replaced-{uuid.uuid4().hex[:12]}-{final.name}")
    os.replace(built, final)  # a file replaces a file atomically


def _write_with_extras(
    slide: Slide,
    mask: da.Array,
    attrs: dict[str, Any],
    config: Config,
    target: Path,
    scratch: Path,
    overwrite: bool,
    image: np.ndarray | None = None,
) -> dict[str, Any]:
    """The mask and its extras, built in ``scratch`` and moved into place (mask last).
    ``image``: the working image, when it is in memory, for the preview's thumbnail."""
    finals = extra_output_paths(target, config.outputs.extras)
    check_target(target, overwrite)
    for key, final in finals.items():
        _check_extra_target(key, final)
    folder = scratch / "outputs"  # apart from the stage's intermediates, whatever the names
    built_mask = folder / target.name
    built: dict[str, Path] = {key: folder / final.name for key, final in finals.items()}
    components: int | None = None
    # The preview (mostly PNG encoding, which releases the GIL) is drawn in a thread while the
    # other extras are computed; from the mask in memory (whole-image mode) it starts at once,
    # beside the mask's write, else from the stored mask.
    with ThreadPoolExecutor(max_workers=1) as pool:
        preview = None

        def start_preview(source: da.Array) -> Any:
            return pool.submit(
                write_preview, slide, source, built["preview"],
                mask_downsample=float(attrs["provenance"]["downsample"]), image=image,
            )

        if "preview" in built and image is not None:
            preview = start_preview(mask)
        write_zarr(mask, built_mask, attrs=attrs, count_into="stats.foreground_pixels")
        stored = read_mask(built_mask)
        written = read_attrs(built_mask)
        provenance, stats = written["provenance"], written["stats"]
        name = _label_name(config.expression)
        if "preview" in built and preview is None:
            preview = start_preview(stored)
        if "ome_zarr" in built:
            write_ome_labels(
                stored, built["ome_zarr"], mpp=provenance["mpp"], name=name,
                source_image_path=slide.path, attrs={"provenance": provenance},
            )
        if "geojson" in built:
            components = write_geojson(
                stored, built["geojson"], downsample=float(provenance["downsample"]),
                classification=name.capitalize(),
            )
        if (
            components is None and "summary" in built
            and stored.size <= COMPONENT_COUNT_MAX_PIXELS
        ):
            (table,) = dask.compute(label_stats(stored))
            components = len(table)
        if preview is not None:
            preview.result()  # raises what the preview raised
    summary = _summary(stats, provenance, components)
    if "summary" in built:
        write_summary_json(summary, built["summary"])
        zarr.open_array(str(built_mask), mode="r+").update_attributes(
            {"summary": summary_record(summary)}
        )
    for key, final in finals.items():
        _install(built[key], final, scratch)
    publish(built_mask, target, overwrite)  # last: a complete mask means its extras are there
    return summary


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
    path
        The slide file (opened read-only).
    config
        The validated configuration; ``config.outputs`` names the extras: ``<name>.ome.zarr``,
        ``<name>.geojson``, ``<name>.png`` and ``<name>.json`` beside ``<name>.zarr`` (see
        :func:`extra_output_paths` and the module docstring for the order they appear in).
    output_dir
        Folder for the output (created if missing).
    overwrite
        Replace an existing output (it stays complete until the new one is). Extras of a mask
        that does not exist yet are always replaced (a killed run may have left them).
    output
        Exact output path, overriding the name derived from the slide (a batch passes
        :func:`slidemask.inputs.output_paths` here to keep names unique).

    Returns
    -------
    SlideResult
        ``status`` "done" or "failed", ``error``, wall ``seconds``, and ``stats``:
        foreground pixels, total pixels, fraction, level, factor, mpp and downsample.
    """
    started = time.perf_counter()
    digest = config_hash(config)
    target: Path | None = None
    try:
        target = Path(output) if output is not None else output_path_for(path, output_dir)
        slide = open_slide(path, chunk_size=config.chunk_size)
        scratch = target.parent / f".{target.name}.scratch-{uuid.uuid4().hex[:12]}"
        try:
            stage = _Stage(scratch)
            mask, provenance = _build(slide, config, stage=stage)
            stats = {"total_pixels": int(mask.size)}
            attrs = {"provenance": provenance, "stats": stats}
            if config.outputs.extras:
                summary = _write_with_extras(
                    slide, mask, attrs, config, target, scratch, overwrite, stage.image
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
        for warning in qc_warnings(summary):
            log.warning("slide %s: %s", path, warning)
        stored = read_attrs(target).get("stats", {})
        total = stored.get("total_pixels") or 0
        result_stats = {
            **stored,
            "fraction": (stored.get("foreground_pixels", 0) / total) if total else None,
            "level": provenance["level"],
            "factor": provenance["factor"],
            "mpp": provenance["mpp"],
            "downsample": provenance["downsample"],
        }
    except Exception as exc:  # noqa: BLE001 - one bad slide must not stop a batch
        reason = _reason(exc)
        log.error("slide %s failed: %s", path, reason)
        log.debug("traceback for %s", path, exc_info=True)
        return SlideResult(
            path=Path(path), output=target, status="failed", error=reason,
            seconds=time.perf_counter() - started, config_hash=digest,
        )
    seconds = time.perf_counter() - started
    log.debug("slide %s done in %.1f s -> %s", path, seconds, target)
    return SlideResult(
        path=Path(path), output=target, status="done", seconds=seconds,
        stats=result_stats, config_hash=digest,
    )
