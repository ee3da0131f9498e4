"""slidemask: exact, out-of-core binary masks for whole-slide images.

Slides open lazily as chunked dask arrays (:func:`open_slide`); mask operations take and return
dask arrays and equal the whole-image OpenCV / scikit-image / scipy result bit for bit for any
chunking; writers stream results into Zarr v3 (plain or OME-Zarr labels) and GeoJSON.
Coordinates are level pixels (row, col) unless a name says micrometres (``_um``, ``mpp``).

The public names below are loaded on first use (PEP 562), so ``import slidemask`` (and the
``slidemask`` command's ``--help`` and ``--version``) import neither dask nor the other heavy
dependencies; ``from slidemask import threshold`` imports only what ``threshold`` needs.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the real imports, for type checkers and IDEs
    from slidemask.batch import run_batch
    from slidemask.config import config_hash, load_config
    from slidemask.errors import ConfigError, MaskError, SlideError, SlidemaskError, TileError
    from slidemask.io import Slide, open_slide
    from slidemask.io.synthetic import write_synthetic_slide
    from slidemask.ops.artifacts import (
        black,
        class_counts,
        class_map,
        flat,
        pen_ink,
        sharpness,
        straight_bands,
        touching_edge,
    )
    from slidemask.ops.components import (
        ComponentTable,
        area_to_pixels,
        keep_largest,
        label,
        label_stats,
        remove_small_objects,
    )
    from slidemask.ops.density import background_estimate, optical_density, white_balance
    from slidemask.ops.holes import contour_fill, fill_holes, holes, keep_largest_holes
    from slidemask.ops.local import (
        binary_closing,
        binary_dilation,
        binary_erosion,
        binary_opening,
        hsv_range,
        mean_blur,
        median_blur,
        rgb_mean,
        saturation,
        square_closing,
        square_dilation,
        square_erosion,
        square_opening,
        threshold,
        to_gray,
    )
    from slidemask.ops.otsu import otsu_threshold
    from slidemask.ops.resample import (
        Resolution,
        downsample_mean,
        image_at,
        resample_mask,
        select_resolution,
    )
    from slidemask.pipeline import build_class_map, build_mask, run_slide
    from slidemask.tiles import TileTable, tile_grid, write_tiles
    from slidemask.writers.geojson import write_class_geojson, write_geojson
    from slidemask.writers.ome_zarr import write_ome_labels
    from slidemask.writers.preview import preview_from_outputs, write_class_preview, write_preview
    from slidemask.writers.zarr import is_complete, read_mask, write_zarr

    __version__: str

_SOURCES: dict[str, tuple[str, ...]] = {
    "slidemask.batch": ("run_batch",),
    "slidemask.config": ("config_hash", "load_config"),
    "slidemask.errors": ("ConfigError", "MaskError", "SlideError", "SlidemaskError", "TileError"),
    "slidemask.io": ("Slide", "open_slide"),
    "slidemask.io.synthetic": ("write_synthetic_slide",),
    "slidemask.ops.artifacts": (
        "black",
        "class_counts",
        "class_map",
        "flat",
        "pen_ink",
        "sharpness",
        "straight_bands",
        "touching_edge",
    ),
    "slidemask.ops.components": (
        "ComponentTable",
        "area_to_pixels",
        "keep_largest",
        "label",
        "label_stats",
        "remove_small_objects",
    ),
    "slidemask.ops.density": ("background_estimate", "optical_density", "white_balance"),
    "slidemask.ops.holes": ("contour_fill", "fill_holes", "holes", "keep_largest_holes"),
    "slidemask.ops.local": (
        "binary_closing",
        "binary_dilation",
        "binary_erosion",
        "binary_opening",
        "hsv_range",
        "mean_blur",
        "median_blur",
        "rgb_mean",
        "saturation",
        "square_closing",
        "square_dilation",
        "square_erosion",
        "square_opening",
        "threshold",
        "to_gray",
    ),
    "slidemask.ops.otsu": ("otsu_threshold",),
    "slidemask.ops.resample": (
        "Resolution",
        "downsample_mean",
        "image_at",
        "resample_mask",
        "select_resolution",
    ),
    "slidemask.pipeline": ("build_class_map", "build_mask", "run_slide"),
    "slidemask.tiles": ("TileTable", "tile_grid", "write_tiles"),
    "slidemask.writers.geojson": ("write_class_geojson", "write_geojson"),
    "slidemask.writers.ome_zarr": ("write_ome_labels",),
    "slidemask.writers.preview": ("preview_from_outputs", "write_class_preview", "write_preview"),
    "slidemask.writers.zarr": ("is_complete", "read_mask", "write_zarr"),
}

_LAZY: dict[str, str] = {name: module for module, names in _SOURCES.items() for name in names}
"""Public name -> the submodule that defines it, imported on first access."""

__all__ = [
    "ComponentTable",
    "ConfigError",
    "MaskError",
    "Resolution",
    "Slide",
    "SlideError",
    "SlidemaskError",
    "TileError",
    "TileTable",
    "__version__",
    "area_to_pixels",
    "background_estimate",
    "binary_closing",
    "binary_dilation",
    "binary_erosion",
    "binary_opening",
    "black",
    "build_class_map",
    "build_mask",
    "class_counts",
    "class_map",
    "config_hash",
    "contour_fill",
    "downsample_mean",
    "fill_holes",
    "flat",
    "holes",
    "hsv_range",
    "image_at",
    "is_complete",
    "keep_largest",
    "keep_largest_holes",
    "label",
    "label_stats",
    "load_config",
    "mean_blur",
    "median_blur",
    "open_slide",
    "optical_density",
    "otsu_threshold",
    "pen_ink",
    "preview_from_outputs",
    "read_mask",
    "remove_small_objects",
    "resample_mask",
    "rgb_mean",
    "run_batch",
    "run_slide",
    "saturation",
    "select_resolution",
    "sharpness",
    "square_closing",
    "square_dilation",
    "square_erosion",
    "square_opening",
    "straight_bands",
    "threshold",
    "tile_grid",
    "to_gray",
    "touching_edge",
    "white_balance",
    "write_class_geojson",
    "write_class_preview",
    "write_geojson",
    "write_ome_labels",
    "write_preview",
    "write_synthetic_slide",
    "write_tiles",
    "write_zarr",
]


def __getattr__(name: str) -> Any:
    """Import a public name's submodule on first access (PEP 562) and cache the name here.

    Parameters
    ----------
    name : str
        The attribute looked up on the package and not found in its namespace.

    Returns
    -------
    Any
        The object, the same one its submodule defines.

    Raises
    ------
    AttributeError
        If ``name`` is not a public name of the package.
    """
    if name == "__version__":
        # the one version lookup that outputs and reports use too (importlib.metadata, cached)
        from slidemask._version import package_version

        value: Any = package_version()
    elif name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    """The package's namespace plus every public name, loaded or not.

    Returns
    -------
    list of str
        Sorted names, including all of ``__all__``.
    """
    return sorted(set(globals()) | set(__all__))
