"""Neighbourhood kernels run on independent halo windows of a stored array.

``dask.array.map_overlap`` makes every output block depend on its eight neighbours, so dask
keeps finished blocks in memory until their neighbours have run: about a row of blocks, more
when its task order wanders (measured: 661 MiB for a median 7 at 40960^2 with 2048^2 chunks,
against 173 MiB for a per-pixel threshold). Reading each block's window, halo included,
straight from a source that supports windowed reads (a Zarr array, or the slide reader) removes
those dependencies: every task reads, filters, crops and is done, and peak memory no longer
depends on the slide's width. The price is reading the halo twice, which is cheap from a
compressed Zarr mask.

The result is the same as :func:`slidemask.ops.local.map_exact_overlap`: windows are clipped at
the true image edges, so each kernel applies its own border rule there, as on the whole image.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import dask.array as da
import numpy as np
from dask.base import tokenize


@dataclass(frozen=True)
class KernelStep:
    """One numpy kernel ``fn(tile, **kwargs)`` and the halo it needs, in pixels."""

    fn: Callable[..., np.ndarray]
    depth: int
    kwargs: dict[str, Any] = field(default_factory=dict)

    @staticmethod
    def chain_dtype(steps: Sequence[KernelStep], dtype: Any) -> np.dtype:
        """Output dtype of ``steps`` applied to a ``dtype`` image (probed on one pixel)."""
        return KernelChain(tuple(steps))(np.zeros((1, 1), dtype=dtype)).dtype


@dataclass(frozen=True)
class KernelChain:
    """Kernels applied one after another to a window; the halo of the chain is their sum."""

    steps: tuple[KernelStep, ...]

    @property
    def depth(self) -> int:
        return sum(step.depth for step in self.steps)

    def __call__(self, window: np.ndarray) -> np.ndarray:
        for step in self.steps:
            window = step.fn(window, **step.kwargs)
        return window


class HaloWindows:
    """Array-like whose block ``[y0:y1, x0:x1]`` is ``chain(source window)`` cropped to the block.

    The window is the block grown by the chain's halo on every side, clipped to the image.
    Picklable when ``source`` is (a ``zarr.Array`` is), so graphs run on process workers.
    """

    def __init__(self, source: Any, chain: KernelChain, dtype: np.dtype) -> None:
        self.source = source
        self.chain = chain
        self.dtype = np.dtype(dtype)
        self.shape = tuple(int(n) for n in source.shape[:2])
        self.ndim = 2

    def __getitem__(self, key: tuple[slice, ...]) -> np.ndarray:
        rows, cols = key[0], key[1]
        y0, y1, _ = rows.indices(self.shape[0])
        x0, x1, _ = cols.indices(self.shape[1])
        if y1 <= y0 or x1 <= x0:
            return np.empty((max(0, y1 - y0), max(0, x1 - x0)), dtype=self.dtype)
        d = self.chain.depth
        wy0, wy1 = max(0, y0 - d), min(self.shape[0], y1 + d)
        wx0, wx1 = max(0, x0 - d), min(self.shape[1], x1 + d)
        window = np.ascontiguousarray(self.source[wy0:wy1, wx0:wx1])
        out = self.chain(window)
        return np.ascontiguousarray(out[y0 - wy0 : y1 - wy0, x0 - wx0 : x1 - wx0]).astype(
            self.dtype, copy=False
        )


def map_windows(
    source: Any,
    steps: Sequence[KernelStep],
    *,
    chunks: tuple[int, int] | tuple[tuple[int, ...], tuple[int, ...]],
    dtype: Any,
) -> da.Array:
    """Lazy ``(rows, cols)`` array: the kernel chain applied to halo windows of ``source``.

    Args:
        source: a 2-D array-like supporting ``source[y0:y1, x0:x1]`` (e.g. a ``zarr.Array``).
        steps: kernels in order; per-pixel kernels have depth 0.
        chunks: output chunking (rows, cols).
        dtype: output dtype.

    Equal to applying the chain to the whole ``source`` in memory, bit for bit, provided each
    kernel is exact ``depth`` pixels inside a window edge and applies its own border rule at
    the image edges (the contract of every kernel in :mod:`slidemask.kernels`).
    """
    chain = KernelChain(tuple(steps))
    windows = HaloWindows(source, chain, np.dtype(dtype))
    return da.from_array(
        windows,
        chunks=chunks,
        asarray=False,
        lock=False,
        fancy=False,
        meta=np.empty((0, 0), dtype=dtype),
        name=f"slidemask-windows-{tokenize(_source_token(source), chain, str(dtype), chunks)}",
    )


def _source_token(source: Any) -> Any:
    store = getattr(source, "store", None)
    path = getattr(source, "path", None)
    if store is not None:
        return (str(store), path, getattr(source, "shape", None))
    if isinstance(path, str):  # slidemask's StoredArray
        return (path, getattr(source, "shape", None))
    return id(source)
