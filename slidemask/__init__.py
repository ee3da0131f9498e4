"""slidemask: exact, out-of-core binary masks for whole-slide images.

Slides open lazily as chunked dask arrays (:func:`open_slide`); mask operations take and return
dask arrays and equal the whole-image OpenCV / scikit-image / scipy result bit for bit for any
chunking; writers stream results into Zarr v3 (plain or OME-Zarr labels) and GeoJSON.
Coordinates are level pixels (row, col) unless a name says micrometres (``_um``, ``mpp``).
"""

from importlib.metadata import PackageNotFoundError, version

from slidemask.batch import run_batch
from slidemask.config import config_hash, load_config
from slidemask.errors import ConfigError, MaskError, SlideError, SlidemaskError, TileError
from slidemask.io import Slide, open_slide
from slidemask.io.synthetic import write_synthetic_slide
from slidemask.ops.components import (
    ComponentTable,
    area_to_pixels,
    keep_largest,
    label,
    label_stats,
    remove_small_objects,
)
from slidemask.ops.holes import contour_fill, fill_holes, keep_largest_holes
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
from slidemask.ops.resample import Resolution, downsample_mean, image_at, select_resolution
from slidemask.pipeline import build_mask, run_slide
from slidemask.writers.geojson import write_geojson
from slidemask.writers.ome_zarr import write_ome_labels
from slidemask.writers.preview import preview_from_outputs, write_preview
from slidemask.writers.zarr import is_complete, read_mask, write_zarr

try:
    __version__ = version("slidemask")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0"

__all__ = [
    "ComponentTable",
    "ConfigError",
    "MaskError",
    "Resolution",
    "Slide",
    "SlideError",
    "SlidemaskError",
    "TileError",
    "__version__",
    "area_to_pixels",
    "binary_closing",
    "binary_dilation",
    "binary_erosion",
    "binary_opening",
    "build_mask",
    "config_hash",
    "contour_fill",
    "downsample_mean",
    "fill_holes",
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
    "otsu_threshold",
    "preview_from_outputs",
    "read_mask",
    "remove_small_objects",
    "rgb_mean",
    "run_batch",
    "run_slide",
    "saturation",
    "select_resolution",
    "square_closing",
    "square_dilation",
    "square_erosion",
    "square_opening",
    "threshold",
    "to_gray",
    "write_geojson",
    "write_ome_labels",
    "write_preview",
    "write_synthetic_slide",
    "write_zarr",
]
