"""PNG previews: a slide thumbnail with the mask's outline drawn on it.

Memory: only thumbnail-sized arrays are ever computed. The thumbnail comes from the coarsest
pyramid level at least ``max_size`` pixels on its longer side (or the largest level when none
is), area-averaged lazily by an integer factor (:func:`slidemask.ops.resample.downsample_mean`)
so that a single-level slide is reduced chunk by chunk, then resized in memory to fit
``max_size``. The mask is read at an integer stride (``mask[::s, ::s]``, at most about twice
the thumbnail size per axis; each chunk is read and dropped in turn) and resized to the
thumbnail with nearest-neighbour interpolation.

Coordinate frame: the mask covers level-0 pixels ``[0, rows * mask_downsample)`` x
``[0, cols * mask_downsample)`` from the slide's top-left corner; the outline is placed on the
thumbnail by that extent (to within a thumbnail pixel).
"""

from __future__ import annotations

import numbers
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import cv2
import dask.array as da
import numpy as np
import zarr

from slidemask.errors import MaskError, SlidemaskError
from slidemask.io.tiff import Slide, open_slide
from slidemask.memory import prepare_process
from slidemask.ops import staged
from slidemask.ops.resample import downsample_mean
from slidemask.writers.atomic import atomic_write

__all__ = [
    "OUTLINE_RGB",
    "mask_downsample_from_attrs",
    "open_stored_mask",
    "preview_from_outputs",
    "render_class_preview",
    "render_preview",
    "shrink_for_preview",
    "write_class_preview",
    "write_preview",
]

OUTLINE_RGB = (0, 255, 0)
"""Outline colour: pure green stands out on pink/purple stain and on white background."""


def _thumbnail_level(slide: Slide, max_size: int) -> int:
    sizes = [max(int(lv.shape[0]), int(lv.shape[1])) for lv in slide.levels]
    big_enough = [i for i, size in enumerate(sizes) if size >= max_size]
    if big_enough:
        return min(big_enough, key=lambda i: sizes[i])
    return max(range(len(sizes)), key=lambda i: sizes[i])


def _to_rgb8(image: np.ndarray) -> np.ndarray:
    """uint8 RGB for display: grey is repeated, alpha and extra channels dropped."""
    if image.ndim == 2:
        image = image[:, :, None]
    if image.dtype != np.uint8:
        data = image.astype(np.float64)
        finite = data[np.isfinite(data)]
        lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 0.0)
        scale = 255.0 / (hi - lo) if hi > lo else 0.0
        image = np.clip(np.nan_to_num((data - lo) * scale), 0, 255).astype(np.uint8)
    if image.shape[2] >= 3:
        return np.ascontiguousarray(image[:, :, :3])
    return np.ascontiguousarray(np.repeat(image[:, :, :1], 3, axis=2))


def shrink_for_preview(image: np.ndarray, max_size: int = 1024) -> np.ndarray:
    """``image`` area-averaged by an integer factor, its longer side kept >= ``max_size``.

    The factor is the largest that keeps the longer side at least ``max_size``. OpenCV's area
    average is several times faster by an integer factor; the preview's final
    resize then starts from at most twice its size.

    Parameters
    ----------
    image : numpy.ndarray
        ``(rows, cols[, channels])``, in memory.
    max_size : int
        The preview's longest side in pixels.

    Returns
    -------
    numpy.ndarray
        Same dtype; ``image`` itself when its longer side is under twice ``max_size``.

    Examples
    --------
    >>> import numpy as np
    >>> shrink_for_preview(np.zeros((1000, 300, 3), np.uint8), 256).shape  # factor 3
    (333, 100, 3)
    """
    factor = max(image.shape[:2]) // max_size
    if factor < 2:
        return image
    return cv2.resize(image, None, fx=1.0 / factor, fy=1.0 / factor, interpolation=cv2.INTER_AREA)


def _thumbnail(slide: Slide, max_size: int, image: np.ndarray | None = None) -> np.ndarray:
    if image is None:
        level = slide.levels[_thumbnail_level(slide, max_size)]
        longer = max(int(level.shape[0]), int(level.shape[1]))
        factor = max(1, min(longer // max_size, int(level.shape[0]), int(level.shape[1])))
        if factor > 1:
            level = downsample_mean(level, factor)
        image = np.asarray(staged.compute(level)[0])
    else:
        image = shrink_for_preview(image, max_size)
    thumb = _to_rgb8(image)
    rows, cols = thumb.shape[:2]
    if max(rows, cols) > max_size:
        scale = max_size / max(rows, cols)
        size = (max(1, round(cols * scale)), max(1, round(rows * scale)))
        thumb = cv2.resize(thumb, size, interpolation=cv2.INTER_AREA)
    return thumb


def _mask_on_thumbnail(
    mask: da.Array | np.ndarray,
    thumb_shape: tuple[int, int],
    slide_shape: tuple[int, int],
    mask_downsample: float,
    *,
    keep_values: bool = False,
) -> np.ndarray:
    """The mask resampled onto the thumbnail grid, uint8 0/1 (or its own values with
    ``keep_values``, for a class map), reading only a strided subset."""
    rows, cols = thumb_shape
    level0_per_thumb = min(slide_shape[0] / rows, slide_shape[1] / cols)
    stride = max(1, int(level0_per_thumb // mask_downsample))
    small = mask[::stride, ::stride]
    small_np = np.asarray(staged.compute(small)[0])
    if small_np.ndim == 3:
        small_np = small_np[:, :, 0]
    small_u8 = small_np.astype(np.uint8) if keep_values else (small_np != 0).astype(np.uint8)
    extent = (
        min(rows, max(1, round(mask.shape[0] * mask_downsample / (slide_shape[0] / rows)))),
        min(cols, max(1, round(mask.shape[1] * mask_downsample / (slide_shape[1] / cols)))),
    )
    out = np.zeros((rows, cols), dtype=np.uint8)
    if small_u8.size:
        out[: extent[0], : extent[1]] = cv2.resize(
            small_u8, (extent[1], extent[0]), interpolation=cv2.INTER_NEAREST_EXACT
        )
    return out


def render_preview(
    slide: Slide,
    mask: da.Array | np.ndarray,
    *,
    max_size: int = 1024,
    mask_downsample: float,
    color: tuple[int, int, int] = OUTLINE_RGB,
    thickness: int = 2,
    image: np.ndarray | None = None,
) -> np.ndarray:
    """The preview as an RGB uint8 array: thumbnail (longer side <= ``max_size``) + outline.

    The outline is every contour of the mask (outer borders and hole borders) as OpenCV's
    ``findContours`` traces it on the thumbnail-sized mask.

    Parameters
    ----------
    slide : Slide
        The slide the mask was computed from.
    mask : dask.array.Array or numpy.ndarray
        ``(rows, cols)`` bool/integer mask (non-zero = inside), any chunking, in pixels of
        ``mask_downsample`` level-0 pixels.
    max_size : int
        Longest side of the preview in pixels, >= 16.
    mask_downsample : float
        Level-0 pixels per mask pixel (``Resolution.downsample``).
    color : tuple of int
        Outline colour (R, G, B), 0-255.
    thickness : int
        Outline width in preview pixels.
    image : numpy.ndarray, optional
        The whole slide already in memory at some resolution, ``(rows, cols[, channels])``,
        to shrink into the thumbnail instead of reading a pyramid level.

    Returns
    -------
    numpy.ndarray
        ``(rows, cols, 3)`` uint8 RGB, the slide's aspect ratio. This computes a thumbnail's
        worth of the slide and a strided read of the mask (module notes).

    Raises
    ------
    MaskError
        A bad ``max_size`` or ``mask_downsample``, or not a non-empty 2-D mask.

    Examples
    --------
    >>> import os
    >>> import tempfile
    >>> from slidemask import open_slide, threshold, to_gray, write_synthetic_slide
    >>> tmp = tempfile.TemporaryDirectory()
    >>> path = write_synthetic_slide(os.path.join(tmp.name, "s.tif"), 512, tile=128, levels=3)
    >>> slide = open_slide(path)
    >>> mask = threshold(to_gray(slide.levels[2]), below=220)  # level 2: 4 level-0 pixels
    >>> preview = render_preview(slide, mask, max_size=64, mask_downsample=4.0)
    >>> preview.shape, preview.dtype
    ((64, 64, 3), dtype('uint8'))
    >>> tmp.cleanup()
    """
    if isinstance(max_size, bool) or not isinstance(max_size, int) or max_size < 16:
        raise MaskError(f"preview: max_size must be an integer >= 16 pixels, got {max_size!r}")
    if isinstance(mask_downsample, bool) or not (
        isinstance(mask_downsample, numbers.Real) and mask_downsample > 0
    ):
        raise MaskError(
            f"preview: mask_downsample must be a positive number, got {mask_downsample!r}"
        )
    if mask.ndim != 2 or 0 in mask.shape:
        raise MaskError(f"preview: expects a non-empty (rows, cols) mask, got shape {mask.shape}")
    thumb = _thumbnail(slide, max_size, image)
    slide_shape = (int(slide.levels[0].shape[0]), int(slide.levels[0].shape[1]))
    small = _mask_on_thumbnail(mask, thumb.shape[:2], slide_shape, float(mask_downsample))
    canvas = np.ascontiguousarray(thumb)
    if small.any():
        contours, _ = cv2.findContours(small, cv2.RETR_LIST, cv2.CHAIN_APPROX_NONE)
        cv2.drawContours(canvas, contours, -1, tuple(int(c) for c in color), thickness)
    return canvas


def write_preview(
    slide: Slide,
    mask: da.Array | np.ndarray,
    path: str | os.PathLike[str],
    *,
    max_size: int = 1024,
    mask_downsample: float,
    color: tuple[int, int, int] = OUTLINE_RGB,
    thickness: int = 2,
    image: np.ndarray | None = None,
) -> Path:
    """Write :func:`render_preview` as a PNG at ``path`` (replaced atomically) and return it.

    Parameters
    ----------
    slide : Slide
        The slide the mask was computed from.
    mask : dask.array.Array or numpy.ndarray
        ``(rows, cols)`` bool/integer mask (non-zero = inside), any chunking.
    path : str or os.PathLike
        The PNG file; its folder is created.
    max_size, mask_downsample, color, thickness, image
        As for :func:`render_preview`: the preview's longest side in pixels, level-0 pixels
        per mask pixel, the outline's RGB colour and width, an optional in-memory image.

    Returns
    -------
    pathlib.Path
        ``path``.

    Raises
    ------
    MaskError
        As :func:`render_preview`.
    OSError
        The PNG cannot be encoded or written.

    Notes
    -----
    This computes (a thumbnail's worth of the slide and a strided read of the mask): call it
    from the CLI/pipeline, after the mask is written, ideally on the stored mask.

    Examples
    --------
    >>> import os
    >>> import tempfile
    >>> from slidemask import open_slide, threshold, to_gray, write_synthetic_slide
    >>> tmp = tempfile.TemporaryDirectory()
    >>> path = write_synthetic_slide(os.path.join(tmp.name, "s.tif"), 512, tile=128, levels=3)
    >>> slide = open_slide(path)
    >>> mask = threshold(to_gray(slide.levels[2]), below=220)  # level 2: 4 level-0 pixels
    >>> from slidemask import write_preview
    >>> png = write_preview(slide, mask, os.path.join(tmp.name, "s.png"), max_size=64,
    ...                     mask_downsample=4.0)
    >>> png.name, png.stat().st_size > 0
    ('s.png', True)
    >>> tmp.cleanup()
    """
    prepare_process()  # malloc and the garbage collector, once per process
    image = render_preview(
        slide, mask, max_size=max_size, mask_downsample=mask_downsample, color=color,
        thickness=thickness, image=image,
    )
    final = Path(path)
    ok, png = cv2.imencode(".png", cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    if not ok:
        raise OSError(f"{final}: OpenCV could not encode the PNG")
    final.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(final, binary=True) as fh:
        fh.write(png.tobytes())
    return final


LEGEND_WIDTH = 330
"""Width in pixels of the legend panel beside a class preview."""


def _legend(
    height: int,
    values: Mapping[str, int],
    palette: Mapping[str, tuple[int, ...]],
    areas: Mapping[str, Mapping[str, Any]] | None,
) -> np.ndarray:
    rows = [("background", 0), *sorted(values.items(), key=lambda kv: kv[1])]
    row_height = 40
    panel = np.full((max(height, 56 + row_height * len(rows)), LEGEND_WIDTH, 3), 255, np.uint8)
    font = cv2.FONT_HERSHEY_SIMPLEX
    for text, x in (("class", 12), ("mm2", 185), ("% tissue", 250)):
        cv2.putText(panel, text, (x, 30), font, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
    for i, (name, value) in enumerate(rows):
        y = 56 + i * row_height
        rgba = tuple(int(c) for c in palette.get(name, (128, 128, 128, 200)))
        swatch = (rgba[0], rgba[1], rgba[2]) if name != "background" else (255, 255, 255)
        cv2.rectangle(panel, (12, y), (36, y + 24), swatch, -1)
        cv2.rectangle(panel, (12, y), (36, y + 24), (0, 0, 0), 1)
        text = f"{value} {name}"
        info = (areas or {}).get(name, {})
        area, share = info.get("area_mm2"), info.get("fraction_of_tissue")
        cv2.putText(panel, text, (44, y + 18), font, 0.55, (0, 0, 0), 1, cv2.LINE_AA)
        for text, x in (("-" if area is None else f"{area:.3g}", 185),
                        ("-" if share is None else f"{100 * share:.1f}", 250)):
            cv2.putText(panel, text, (x, y + 18), font, 0.5, (60, 60, 60), 1, cv2.LINE_AA)
    return panel


def render_class_preview(
    slide: Slide,
    classes: da.Array | np.ndarray,
    *,
    values: Mapping[str, int],
    mask_downsample: float,
    max_size: int = 1024,
    colors: Mapping[str, tuple[int, int, int, int]] | None = None,
    areas: Mapping[str, Mapping[str, Any]] | None = None,
    image: np.ndarray | None = None,
) -> np.ndarray:
    """A class map drawn on the slide's thumbnail, with a legend: an RGB uint8 array.

    Parameters
    ----------
    slide : Slide
        The slide the class map was computed from.
    classes : dask.array.Array or numpy.ndarray
        ``(rows, cols)`` uint8 class map (:func:`slidemask.ops.artifacts.class_map`).
    values : mapping of str to int
        Class name -> label value (0, background, is left undrawn).
    mask_downsample : float
        Level-0 pixels per class-map pixel.
    max_size : int
        The thumbnail's longest side: ``max_size`` pixels, or the slide's own longest side
        when it is smaller (the thumbnail is read from the pyramid, not from the class map, so
        a class map at 8 um per pixel still gets a readable picture).
    colors : mapping, optional
        (R, G, B, alpha) per class; default :data:`slidemask.ops.artifacts.QC_COLORS`.
    areas : mapping, optional
        Per class ``{"area_mm2", "fraction_of_tissue"}`` (the summary's ``classes``), printed
        in the legend.
    image : numpy.ndarray, optional
        The slide already in memory at some resolution, instead of a pyramid level.

    Returns
    -------
    numpy.ndarray
        ``(max(thumbnail rows, legend rows), thumbnail cols + 330, 3)`` uint8: every class
        but tissue filled in its colour (blended by its alpha) and outlined, tissue outlined
        only, so the slide stays visible; the legend panel on the right names each class, its
        label value, area and share of tissue.
    """
    from slidemask.ops.artifacts import QC_COLORS

    if isinstance(max_size, bool) or not isinstance(max_size, int) or max_size < 16:
        raise MaskError(f"preview: max_size must be an integer >= 16 pixels, got {max_size!r}")
    if classes.ndim != 2 or 0 in classes.shape:
        raise MaskError(f"preview: expects a (rows, cols) class map, got shape {classes.shape}")
    palette = dict(QC_COLORS) if colors is None else dict(colors)
    thumb = _thumbnail(slide, max_size, image)
    slide_shape = (int(slide.levels[0].shape[0]), int(slide.levels[0].shape[1]))
    labels = _mask_on_thumbnail(
        classes, thumb.shape[:2], slide_shape, float(mask_downsample), keep_values=True
    )
    canvas = np.ascontiguousarray(thumb).copy()
    outlines = []
    for name, value in sorted(values.items(), key=lambda kv: kv[1]):
        region = (labels == value).view(np.uint8)
        if not region.any():
            continue
        r, g, b, alpha = (tuple(palette.get(name, (128, 128, 128, 200))) + (200,))[:4]
        if name != "tissue":
            inside = region.astype(bool)
            blend = alpha / 255 * 0.6
            canvas[inside] = (
                canvas[inside] * (1 - blend) + np.array([r, g, b], np.float64) * blend
            ).astype(np.uint8)
        contours, _ = cv2.findContours(region, cv2.RETR_LIST, cv2.CHAIN_APPROX_NONE)
        outlines.append((contours, (int(r), int(g), int(b))))
    for contours, colour in outlines:
        cv2.drawContours(canvas, contours, -1, colour, 2)
    legend = _legend(canvas.shape[0], values, palette, areas)
    out = np.full((legend.shape[0], canvas.shape[1] + LEGEND_WIDTH, 3), 255, np.uint8)
    out[: canvas.shape[0], : canvas.shape[1]] = canvas
    out[:, canvas.shape[1] :] = legend
    return out


def write_class_preview(
    slide: Slide,
    classes: da.Array | np.ndarray,
    path: str | os.PathLike[str],
    *,
    values: Mapping[str, int],
    mask_downsample: float,
    max_size: int = 1024,
    colors: Mapping[str, tuple[int, int, int, int]] | None = None,
    areas: Mapping[str, Mapping[str, Any]] | None = None,
    image: np.ndarray | None = None,
) -> Path:
    """Write :func:`render_class_preview` as a PNG at ``path`` (replaced atomically).

    Parameters
    ----------
    slide : Slide
        The slide the class map was computed from.
    classes : dask.array.Array or numpy.ndarray
        ``(rows, cols)`` uint8 class map (:func:`slidemask.ops.artifacts.class_map`), any
        chunking; it covers level-0 pixels ``[0, rows * mask_downsample)`` x
        ``[0, cols * mask_downsample)`` from the slide's top-left corner.
    path : str or os.PathLike
        The PNG file; its folder is created.
    values, mask_downsample, max_size, colors, areas, image
        As for :func:`render_class_preview`: class name -> label value, level-0 pixels per
        class-map pixel, the thumbnail's longest side in pixels, (R, G, B, alpha) per class,
        per-class areas for the legend, an optional in-memory image.

    Returns
    -------
    pathlib.Path
        ``path``.

    Raises
    ------
    MaskError
        As :func:`render_class_preview`: ``max_size`` is not an integer >= 16, or
        ``classes`` is not a non-empty 2-D array.
    OSError
        The PNG cannot be encoded or written.

    Notes
    -----
    This computes a thumbnail's worth of the slide and a strided read of the class map.

    Examples
    --------
    >>> import os
    >>> import tempfile
    >>> import cv2
    >>> import dask.array as da
    >>> import numpy as np
    >>> from slidemask import open_slide, write_class_preview, write_synthetic_slide
    >>> tmp = tempfile.TemporaryDirectory()
    >>> path = write_synthetic_slide(os.path.join(tmp.name, "s.tif"), 256, tile=128, levels=2)
    >>> slide = open_slide(path)
    >>> classes = np.zeros((64, 64), dtype=np.uint8)  # 4 level-0 pixels per class-map pixel
    >>> classes[8:56, 8:56] = 1
    >>> classes[20:30, 20:40] = 2
    >>> png = write_class_preview(slide, da.from_array(classes, chunks=32),
    ...                           os.path.join(tmp.name, "s.png"), values={"tissue": 1, "pen": 2},
    ...                           mask_downsample=4.0, max_size=64)
    >>> png.name, cv2.imread(str(png)).shape  # a 64-pixel thumbnail beside the legend
    ('s.png', (176, 394, 3))
    >>> tmp.cleanup()
    """
    prepare_process()  # malloc and the garbage collector, once per process
    picture = render_class_preview(
        slide, classes, values=values, mask_downsample=mask_downsample, max_size=max_size,
        colors=colors, areas=areas, image=image,
    )
    final = Path(path)
    ok, png = cv2.imencode(".png", cv2.cvtColor(picture, cv2.COLOR_RGB2BGR))
    if not ok:
        raise OSError(f"{final}: OpenCV could not encode the PNG")
    final.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(final, binary=True) as fh:
        fh.write(png.tobytes())
    return final


def mask_downsample_from_attrs(attrs: Any) -> float | None:
    """``downsample`` from an output's attributes: at the top level, or one level down.

    Parameters
    ----------
    attrs : mapping
        An output's attributes (``provenance``, ``slidemask``, ... are looked into).

    Returns
    -------
    float or None
        Level-0 pixels per mask pixel; None when absent or not a positive number.

    Examples
    --------
    >>> mask_downsample_from_attrs({"provenance": {"downsample": 16.0}})
    16.0
    >>> mask_downsample_from_attrs({}) is None
    True
    """
    if not isinstance(attrs, dict):
        attrs = dict(attrs) if hasattr(attrs, "keys") else {}
    value = attrs.get("downsample")
    if value is None:
        for nested in attrs.values():
            if isinstance(nested, dict) and nested.get("downsample") is not None:
                value = nested["downsample"]
                break
    try:
        number = float(value) if value is not None else None
    except (TypeError, ValueError):
        return None
    return number if number is not None and number > 0 else None


def _ome_label_level0(group: zarr.Group) -> zarr.Array | None:
    """Level 0 of the first label image listed in ``labels`` (OME-Zarr 0.5), or None."""
    labels: Any = group.get("labels")
    if not isinstance(labels, zarr.Group):
        return None
    names: Any = labels.attrs.get("ome", {})
    names = names.get("labels") if isinstance(names, dict) else None
    if not isinstance(names, list) or not names or not isinstance(names[0], str):
        return None
    label: Any = labels.get(names[0])
    if not isinstance(label, zarr.Group):
        return None
    meta: Any = label.attrs.get("ome", {})
    try:
        path = meta["multiscales"][0]["datasets"][0]["path"]
    except (KeyError, IndexError, TypeError):
        return None
    array: Any = label.get(str(path))
    return array if isinstance(array, zarr.Array) else None


def open_stored_mask(path: str | os.PathLike[str]) -> tuple[da.Array, dict[str, Any]]:
    """A stored mask, lazily, with its attributes.

    Parameters
    ----------
    path : str or os.PathLike
        A plain Zarr v3 array (:func:`slidemask.write_zarr`) or an OME-Zarr container
        (:func:`slidemask.write_ome_labels`; its first label image's level 0 is read).

    Returns
    -------
    mask : dask.array.Array
        The stored array, chunked as stored; lazy.
    attrs : dict
        The array's (or the container's root group's) attributes.

    Raises
    ------
    SlidemaskError
        Missing path, or neither layout.

    Examples
    --------
    >>> import os
    >>> import tempfile
    >>> import dask.array as da
    >>> from slidemask import write_zarr
    >>> tmp = tempfile.TemporaryDirectory()
    >>> path = write_zarr(da.zeros((4, 6), dtype=bool, chunks=2), os.path.join(tmp.name, "s.zarr"),
    ...                   attrs={"provenance": {"downsample": 16.0}})
    >>> mask, attrs = open_stored_mask(path)
    >>> mask.shape, attrs["provenance"]
    ((4, 6), {'downsample': 16.0})
    >>> tmp.cleanup()
    """
    if "://" in os.fspath(path):  # on object storage: a complete mask written by write_zarr
        from slidemask.writers.zarr import read_attrs, read_mask

        return read_mask(path), read_attrs(path)
    p = Path(path)
    if not p.exists():
        raise SlidemaskError(f"{p}: no such mask output")
    try:
        node = zarr.open(p, mode="r")
    except Exception as exc:  # noqa: BLE001 - zarr raises several types for a bad store
        raise SlidemaskError(f"{p}: cannot open as Zarr ({type(exc).__name__}: {exc})") from exc
    if isinstance(node, zarr.Array):
        return da.from_zarr(node), dict(node.attrs)
    attrs = dict(node.attrs)
    array = _ome_label_level0(node)
    if array is None:
        raise SlidemaskError(f"{p}: a Zarr group without an OME-Zarr label image (labels/<name>)")
    return da.from_zarr(array), attrs


def _check_same_slide(slide: Slide, attrs: Any, mask_path: str | os.PathLike[str]) -> None:
    """SlidemaskError when the mask's provenance records a level-0 size other than the
    slide's: the mask was made from another slide, and its outline would be stretched."""
    provenance = attrs.get("provenance") if isinstance(attrs, dict) else None
    source = provenance.get("source") if isinstance(provenance, dict) else None
    recorded = source.get("level0_shape") if isinstance(source, dict) else None
    if not isinstance(source, dict) or not isinstance(recorded, list) or len(recorded) < 2:
        return  # not recorded (a mask written from the API): nothing to compare
    shape = [int(n) for n in slide.levels[0].shape[:2]]
    if [int(n) for n in recorded[:2]] != shape:
        made_from = source.get("path") or "another slide"
        raise SlidemaskError(
            f"{mask_path}: made from a slide of {recorded[0]} x {recorded[1]} pixels "
            f"({made_from}), not from {slide.path} ({shape[0]} x {shape[1]}); give the slide "
            "the mask was made from"
        )


def preview_from_outputs(
    slide_path: str | os.PathLike[str],
    mask_zarr_path: str | os.PathLike[str],
    png_path: str | os.PathLike[str],
    *,
    max_size: int = 1024,
) -> Path:
    """Render the preview of an existing output: the slide plus its stored mask.

    What ``slidemask preview SLIDE MASK`` runs. The mask's ``downsample`` (level-0 pixels per
    mask pixel) comes from its attributes when recorded, otherwise from the ratio of the
    slide's level-0 shape to the mask's shape.

    Parameters
    ----------
    slide_path : str or os.PathLike
        The slide the mask was computed from.
    mask_zarr_path : str or os.PathLike
        The stored mask (see :func:`open_stored_mask`).
    png_path : str or os.PathLike
        The PNG to write (replaced atomically).
    max_size : int
        The preview's longest side in pixels.

    Returns
    -------
    pathlib.Path
        ``png_path``.

    Raises
    ------
    SlideError
        The slide cannot be opened.
    SlidemaskError
        The mask is missing, not a stored mask, or not 2-D, or its attributes record that it
        was made from a slide of another size.

    Examples
    --------
    >>> import os
    >>> import tempfile
    >>> from slidemask import open_slide, threshold, to_gray, write_synthetic_slide
    >>> tmp = tempfile.TemporaryDirectory()
    >>> path = write_synthetic_slide(os.path.join(tmp.name, "s.tif"), 512, tile=128, levels=3)
    >>> slide = open_slide(path)
    >>> mask = threshold(to_gray(slide.levels[2]), below=220)  # level 2: 4 level-0 pixels
    >>> from slidemask import preview_from_outputs, write_zarr
    >>> stored = write_zarr(mask, os.path.join(tmp.name, "s.zarr"))  # downsample not recorded
    >>> png = preview_from_outputs(path, stored, os.path.join(tmp.name, "s.png"), max_size=64)
    >>> png.name
    's.png'
    >>> tmp.cleanup()
    """
    slide = open_slide(slide_path)
    mask, attrs = open_stored_mask(mask_zarr_path)
    if mask.ndim != 2:
        raise SlidemaskError(f"{mask_zarr_path}: expected a 2-D mask, got shape {mask.shape}")
    _check_same_slide(slide, attrs, mask_zarr_path)
    downsample = mask_downsample_from_attrs(attrs)
    if downsample is None:
        rows0, cols0 = slide.levels[0].shape[:2]
        downsample = (rows0 / mask.shape[0] + cols0 / mask.shape[1]) / 2
    return write_preview(slide, mask, png_path, max_size=max_size, mask_downsample=downsample)
