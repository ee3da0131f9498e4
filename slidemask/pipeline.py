"""From a slide and a configuration to a mask: the lazy graph, and the runner that writes it.

:func:`build_mask` only builds a dask graph (nothing is read or computed);
:func:`run_slide` opens one slide, builds its mask, streams it into ``<output_dir>/<name>.zarr``
with the current dask scheduler and reports the outcome without raising, so a batch goes on
past a bad slide. Choose the scheduler around the call (``dask.config.set(scheduler=...)`` or
an active ``dask.distributed.Client``).
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

import dask.array as da

from slidemask.config import Config, config_hash
from slidemask.errors import MaskError, SlidemaskError
from slidemask.inputs import output_path_for
from slidemask.io import Slide, open_slide
from slidemask.ops.resample import image_at, select_resolution
from slidemask.report import SlideResult
from slidemask.writers.zarr import read_attrs, write_zarr

__all__ = ["build_mask", "run_slide"]

log = logging.getLogger("slidemask")


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
        or for ``mpp`` the nearest finer level area-averaged by an integer ``factor``
        (:func:`slidemask.ops.resample.select_resolution`).
    provenance : dict
        JSON-able: source slide, ``level``, ``factor``, µm per mask pixel (``mpp``, None
        when unknown), ``downsample`` (level-0 pixels per mask pixel), the masks' steps with
        their parameters, the output expression and the config hash.

    Raises
    ------
    SlideError
        An ``mpp`` resolution on a slide that does not state its pixel size.
    MaskError
        The level does not exist; or a step refuses this slide's data (e.g. a threshold
        outside a uint16 image's range): the message names the slide and the step's key
        path in the configuration.
    """
    resolution = select_resolution(
        slide, mpp=config.resolution.mpp, level=config.resolution.level
    )
    image = image_at(slide, resolution)
    expression = config.expression
    masks: dict[str, da.Array] = {}
    for name, steps in config.masks.items():
        if name not in expression.names():
            continue  # defined but unused: nothing to build
        value = image
        for index, step in enumerate(steps):
            try:
                value = step.spec.function(value, **step.kwargs())
            except MaskError as exc:
                raise MaskError(
                    f"{slide.path}: masks.{name}[{index}].{step.name}: {exc}"
                ) from exc
        masks[name] = value
    mask = expression.evaluate(masks)
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
        "chunk_size": config.chunk_size,
        "config_hash": config_hash(config),
    }
    return mask, provenance


def _reason(exc: BaseException) -> str:
    if isinstance(exc, (SlidemaskError, FileExistsError)):  # these already name the path
        return str(exc)
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def run_slide(
    path: str | os.PathLike[str],
    config: Config,
    output_dir: str | os.PathLike[str],
    *,
    overwrite: bool = False,
    output: str | os.PathLike[str] | None = None,
) -> SlideResult:
    """Open one slide, build its mask and write ``<output_dir>/<slide name>.zarr``.

    Computes with the current dask scheduler. Never raises for a problem with this slide
    (missing, unreadable, corrupt tile, existing output without ``overwrite``): the returned
    result says ``failed`` and why, and the failure is logged naming the slide.

    Parameters
    ----------
    path
        The slide file (opened read-only).
    config
        The validated configuration.
    output_dir
        Folder for the output (created if missing).
    overwrite
        Replace an existing output (it stays complete until the new one is).
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
        mask, provenance = build_mask(slide, config)
        stats = {"foreground_pixels": mask.sum(), "total_pixels": int(mask.size)}
        write_zarr(
            mask, target, overwrite=overwrite, attrs={"provenance": provenance, "stats": stats}
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
