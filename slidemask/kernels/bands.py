"""Pointwise kernels on large tiles, a band of rows at a time.

A kernel that makes several full-size temporaries (a colour conversion, channel planes,
comparison masks) holds a few times a tile's own size while it runs: on a whole working image
(3125² at 8 µm per pixel of a 50000² slide, one chunk) some tens of MiB per kernel. In bands of
about :data:`BAND_PIXELS` pixels it is a few MiB, and the bands stay in the CPU cache.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

__all__ = ["BAND_PIXELS", "in_row_bands"]

BAND_PIXELS = 2**18
"""Pixels per band (a 512² file tile at once; 84 rows of a 3125-pixel-wide image)."""


def in_row_bands(kernel: Callable[..., np.ndarray], tile: np.ndarray, **kwargs: Any) -> np.ndarray:
    """``kernel(tile, **kwargs)`` of a pointwise kernel with a ``(rows, cols)`` bool result,
    computed a band of rows at a time (the same result: each pixel depends on itself only).

    Parameters
    ----------
    kernel
        ``kernel(band, **kwargs) -> (band rows, cols) bool``, pointwise.
    tile
        ``(rows, cols, ...)`` array.
    **kwargs
        Passed to ``kernel``.

    Returns
    -------
    numpy.ndarray
        ``(rows, cols)`` bool.
    """
    rows, cols = tile.shape[:2]
    step = max(1, BAND_PIXELS // max(cols, 1))
    if rows <= step:
        return kernel(tile, **kwargs)
    out = np.empty((rows, cols), dtype=bool)
    for y in range(0, rows, step):
        out[y : y + step] = kernel(tile[y : y + step], **kwargs)
    return out
