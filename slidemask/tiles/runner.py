"""Tiles beside stored masks: what ``slidemask run`` (with ``tiles:``) and ``slidemask tiles``
call.

For a mask output ``DIR/<name>.zarr`` the tiles are ``DIR/<name>.tiles.*`` (see
:mod:`slidemask.tiles.writers`), with the manifest ``DIR/<name>.tiles.json`` written last. The
manifest records the tile settings' hash and the mask's config hash: a resumed batch keeps
tiles whose manifest matches both and whose files all exist (:func:`tiles_up_to_date`).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from slidemask.tiles.spec import TileSpec

if TYPE_CHECKING:
    import dask.array as da

    from slidemask.io.tiff import Slide
    from slidemask.report import SlideResult
    from slidemask.tiles.writers import TileOutputs

__all__ = [
    "class_map_of", "tile_slides", "tiles_count", "tiles_stem", "tiles_up_to_date",
    "write_slide_tiles",
]

log = logging.getLogger(__name__)


def tiles_stem(mask_output: str | os.PathLike[str]) -> Path:
    """Give the tiles' file stem for a mask output.

    Parameters
    ----------
    mask_output : str or os.PathLike
        ``DIR/<name>.zarr``.

    Returns
    -------
    pathlib.Path
        ``DIR/<name>``.
    """
    path = Path(mask_output)
    name = path.name[: -len(".zarr")] if path.name.endswith(".zarr") else path.name
    return path.parent / name


def tiles_up_to_date(
    mask_output: str | os.PathLike[str], spec: TileSpec, config_hash: str | None
) -> bool:
    """Tell whether the tiles beside a mask are complete and current.

    Parameters
    ----------
    mask_output : str or os.PathLike
        ``DIR/<name>.zarr``.
    spec : TileSpec
        The tile settings they must have been made with.
    config_hash : str or None
        The mask's config hash they must record (None: not checked).

    Returns
    -------
    bool
        True when written completely (manifest last, every listed file present) with
        ``spec`` from a mask made with ``config_hash``.
    """
    from slidemask.tiles.writers import tiles_complete

    extra = {"config_hash": config_hash} if config_hash is not None else None
    return tiles_complete(tiles_stem(mask_output), spec, extra=extra)


def write_slide_tiles(
    mask_output: str | os.PathLike[str],
    spec: TileSpec,
    *,
    slide: Slide | str | os.PathLike[str] | None = None,
    config_hash: str | None = None,
) -> TileOutputs:
    """Tile a stored mask and write ``spec.formats`` beside it (``DIR/<name>.tiles.*``).

    Computes with the current dask scheduler.

    Parameters
    ----------
    mask_output : str or os.PathLike
        ``DIR/<name>.zarr``, a complete mask output.
    spec : TileSpec
        Tile settings and formats.
    slide : Slide, str or os.PathLike, optional
        The slide or its path: the read level, CLAM's level dimensions and the preview's
        thumbnail; without it the tiles are read from level 0 and the preview shows the
        mask.
    config_hash : str, optional
        The mask's config hash, recorded in the manifest for :func:`tiles_up_to_date`.

    Returns
    -------
    TileOutputs
        ``{format: path}``, with ``.manifest`` and ``.count``.
    """
    from slidemask.inputs import extra_paths_for
    from slidemask.io.tiff import Slide, open_slide
    from slidemask.tiles.frame import open_mask
    from slidemask.tiles.writers import write_tiles

    opened = open_slide(slide) if slide is not None and not isinstance(slide, Slide) else slide
    extra: dict[str, Any] = {"mask": str(mask_output)}
    if config_hash is not None:
        extra["config_hash"] = config_hash
    if spec.classes:  # tiles by class: the class map beside the mask, on the mask's grid
        source, frame = class_map_of(mask_output), open_mask(mask_output)[1]
        extra["classes"] = str(extra_paths_for(mask_output, ["ome_zarr"])["ome_zarr"])
        return write_tiles(source, tiles_stem(mask_output), slide=opened, spec=spec,
                           downsample=frame.downsample, extra=extra)
    return write_tiles(mask_output, tiles_stem(mask_output), slide=opened, spec=spec,
                       extra=extra)


def class_map_of(mask_output: str | os.PathLike[str]) -> da.Array:
    """The class map written beside a mask (``<name>.ome.zarr/labels/classes``, full
    resolution), lazily.

    Parameters
    ----------
    mask_output : str or os.PathLike
        ``DIR/<name>.zarr``.

    Returns
    -------
    dask.array.Array
        ``(rows, cols)`` uint8 label values, on the mask's grid.

    Raises
    ------
    SlidemaskError
        No class map there (the config has no ``classes:``, or no ``outputs: {ome_zarr:
        true}``).
    """
    import dask.array as da
    import zarr

    from slidemask.errors import SlidemaskError
    from slidemask.inputs import extra_paths_for
    from slidemask.writers.ome_zarr import CLASS_LABELS_NAME

    labels = (extra_paths_for(mask_output, ["ome_zarr"])["ome_zarr"] / "labels"
              / CLASS_LABELS_NAME / "0")
    try:
        array = zarr.open_array(str(labels), mode="r")
    except (FileNotFoundError, zarr.errors.BaseZarrError) as exc:
        raise SlidemaskError(
            f"{mask_output}: no class map at {labels} for tiles by class (the config needs a "
            "classes: section and outputs: {ome_zarr: true})"
        ) from exc
    return da.from_zarr(array)


def _unusable_mask(mask: Path, slide: Path) -> str | None:
    """Why the mask at ``mask`` cannot be tiled for ``slide`` (none yet, another slide's, or
    made before the slide file changed), or None when it can."""
    from slidemask.writers.zarr import is_complete, other_slide, slide_changed

    if not is_complete(mask):
        return f"{slide}: no complete mask at {mask}; run `slidemask run` first"
    other = other_slide(mask, slide)
    if other is not None:
        return f"{slide}: the mask at {mask} was made from another slide, {other}"
    changed = slide_changed(mask, slide)
    if changed is not None:
        return f"{changed}; make its mask again first (`slidemask run`)"
    return None


def tile_slides(
    inputs: Sequence[str | os.PathLike[str]],
    spec: TileSpec,
    output_dir: str | os.PathLike[str],
    *,
    overwrite: bool = False,
) -> list[SlideResult]:
    """Write tiles for every slide of ``inputs`` from its stored mask in ``output_dir``.

    Each slide's mask is the output ``slidemask run`` wrote for it (``output_dir/<name>.zarr``,
    named as :func:`slidemask.inputs.output_paths` names them). Slides whose tiles are up to
    date are ``skipped`` (unless ``overwrite``); a slide without a complete mask ``failed``
    with the reason; a failure never stops the others. Runs slide after slide in this process
    with the current dask scheduler (tiling reads each mask once).

    Parameters
    ----------
    inputs : sequence of str or os.PathLike
        Slide files, folders, glob patterns or manifests
        (:func:`slidemask.inputs.expand_inputs`).
    spec : TileSpec
        Tile settings and formats.
    output_dir : str or os.PathLike
        The folder holding the masks; the tiles go beside them.
    overwrite : bool, optional
        Rewrite tiles that are up to date.

    Returns
    -------
    list of SlideResult
        One per slide; ``stats["tiles"]`` is the number of tiles written or kept.
    """
    from slidemask.inputs import expand_inputs, output_paths
    from slidemask.report import SlideResult
    from slidemask.writers.zarr import stored_config_hash

    slides = expand_inputs(inputs)
    masks = output_paths(slides, Path(os.path.abspath(output_dir)))
    results: list[SlideResult] = []
    for slide in slides:
        mask = masks[slide]
        started = time.perf_counter()
        digest = stored_config_hash(mask)
        reason = _unusable_mask(mask, slide)
        if reason is not None:
            log.error("%s", reason)
            results.append(SlideResult(path=slide, output=mask, status="failed", error=reason))
            continue
        if not overwrite and tiles_up_to_date(mask, spec, digest):
            log.info("skipped %s: tiles up to date beside %s", slide.name, mask)
            results.append(SlideResult(path=slide, output=mask, status="skipped",
                                       stats={"tiles": tiles_count(mask)},
                                       config_hash=digest or ""))
            continue
        try:
            written = write_slide_tiles(mask, spec, slide=slide, config_hash=digest)
        except Exception as exc:  # noqa: BLE001 - one bad slide must not stop the others
            reason = f"{slide}: {type(exc).__name__}: {exc}"
            log.error("tiles for %s failed: %s", slide, reason)
            results.append(SlideResult(path=slide, output=mask, status="failed", error=reason,
                                       seconds=time.perf_counter() - started))
            continue
        log.info("done %s: %d tiles -> %s", slide.name, written.count, written.manifest)
        results.append(SlideResult(path=slide, output=mask, status="done",
                                   seconds=time.perf_counter() - started,
                                   stats={"tiles": written.count}, config_hash=digest or ""))
    return results


def tiles_count(mask_output: str | os.PathLike[str]) -> int | None:
    """Read the number of tiles the manifest beside a mask records.

    Parameters
    ----------
    mask_output : str or os.PathLike
        ``DIR/<name>.zarr``.

    Returns
    -------
    int or None
        The count, or None without a readable manifest.
    """
    import json

    from slidemask.tiles.writers import MANIFEST_SUFFIX

    stem = tiles_stem(mask_output)
    try:
        record = json.loads((stem.parent / f"{stem.name}{MANIFEST_SUFFIX}").read_text())
    except (OSError, ValueError):
        return None
    count = record.get("count") if isinstance(record, dict) else None
    return count if isinstance(count, int) else None
