"""Patch grid geometry: where the patches a model reads lie, in level-0 pixels.

Pure numpy, no dask. A :class:`TileGrid` is a regular grid of square patches anchored at the
level-0 origin: patch ``(row i, col j)`` covers level-0 pixels ``[x_j, x_j + size) x [y_i,
y_i + size)`` with ``x_j = floor(j * step + 0.5)`` (``y_i`` likewise), where ``step`` (the
stride) may be fractional. Origins are rounded one by one from the exact multiple, never
accumulated, so a grid given in micrometres lands on the same physical positions whatever
the scanner's pixel size (within half a level-0 pixel): ``x_j * mpp ~= j * stride_um``.

Units. ``size``, ``stride`` and ``overlap`` are in one unit:

* ``units="um"``: micrometres (needs the slide's level-0 pixel size).
* ``units="px"`` with a target ``mpp`` or ``magnification``: pixels at that resolution, as a
  model sees them (CLAM / Trident: "256 px at 20x"); needs the level-0 pixel size.
* ``units="px"`` alone: level-0 pixels.

Magnification follows the usual convention (Trident's, and most scanners'): ``mpp = 10 /
magnification``, so 40x is 0.25 µm per pixel, 20x is 0.5 and 10x is 1.0.

The read level is the coarsest pyramid level whose downsample is at most the target's (to
within 1 %): the level a reader opens before resizing, as CLAM's ``patch_level``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from slidemask.errors import MaskError

__all__ = [
    "Edge",
    "TileGrid",
    "TileGridError",
    "Units",
    "axis_origins",
    "axis_weights",
    "make_grid",
    "read_level",
]

Units = Literal["px", "um"]
Edge = Literal["drop", "flag"]

LEVEL_TOLERANCE = 0.01
"""Relative slack when matching a level's downsample to the target's (4.0002 counts as 4)."""


class TileGridError(MaskError):
    """Tiling arguments that cannot describe a patch grid (the message names the argument)."""


@dataclass(frozen=True)
class TileGrid:
    """A regular grid of square patches in level-0 pixels, anchored at level-0 ``(0, 0)``.

    Build it with :func:`make_grid`, which converts sizes in µm or at a magnification.

    Parameters
    ----------
    size : int
        Patch edge in level-0 pixels (patches are ``size x size``).
    step : float
        Distance between neighbouring patch origins in level-0 pixels (may be fractional;
        each origin is rounded on its own: ``floor(j * step + 0.5)``).
    rows, cols : int
        Number of grid rows and columns (candidate patches: ``rows * cols``).
    level0_shape : tuple of int
        ``(rows, cols)`` of the slide's level 0, in pixels.
    edge : {"drop", "flag"}
        ``"drop"``: only patches wholly inside level 0; ``"flag"``: also patches that start
        inside and run past the right or bottom edge (their ``edge`` flag is set).
    level : int
        The pyramid level a reader opens for these patches.
    level_downsample : float
        That level's downsample (level-0 pixels per level pixel).
    read_size : int
        Patch edge in pixels of the read level (CLAM's ``patch_size``); 0 means
        ``round(size / level_downsample)``.
    level0_mpp : float or None
        Micrometres per level-0 pixel, or None when unknown.
    target_mpp : float or None
        Micrometres per pixel the model expects (None: unknown).
    target_size, target_overlap : int
        Patch edge and overlap in target pixels (Trident's ``patch_size`` and ``overlap``);
        a ``target_size`` of 0 means ``read_size``.
    level_shape : tuple of int or None
        ``(rows, cols)`` of the read level (CLAM's ``level_dim`` is ``(cols, rows)``): the
        slide's when known; None means level 0's divided by the downsample, rounded up.
    """

    size: int
    step: float
    rows: int
    cols: int
    level0_shape: tuple[int, int]
    edge: Edge = "drop"
    level: int = 0
    level_downsample: float = 1.0
    read_size: int = 0
    level0_mpp: float | None = None
    target_mpp: float | None = None
    target_size: int = 0
    target_overlap: int = 0
    level_shape: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        if self.level_shape is None:
            shape = tuple(math.ceil(n / self.level_downsample - 1e-9) for n in self.level0_shape)
            object.__setattr__(self, "level_shape", shape)
        if self.read_size == 0:
            object.__setattr__(self, "read_size", max(1, round(self.size / self.level_downsample)))
        if self.target_size == 0:
            object.__setattr__(self, "target_size", self.read_size)

    @property
    def count(self) -> int:
        """Number of candidate patches (``rows * cols``)."""
        return self.rows * self.cols

    @property
    def magnification(self) -> float | None:
        """Target magnification, ``10 / target_mpp`` (None when no pixel size is known)."""
        mpp = self.target_mpp if self.target_mpp is not None else self.level0_mpp
        return None if mpp is None else 10.0 / mpp

    @property
    def level0_magnification(self) -> float | None:
        """Level-0 magnification, ``10 / level0_mpp`` (None when unknown)."""
        return None if self.level0_mpp is None else 10.0 / self.level0_mpp

    def xs(self) -> np.ndarray:
        """Left edges of the grid columns, level-0 pixels, int64 ``(cols,)``."""
        return axis_origins(self.cols, self.step)

    def ys(self) -> np.ndarray:
        """Top edges of the grid rows, level-0 pixels, int64 ``(rows,)``."""
        return axis_origins(self.rows, self.step)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able description (for file metadata)."""
        return {
            "size": self.size, "step": self.step, "rows": self.rows, "cols": self.cols,
            "level0_shape": list(self.level0_shape), "edge": self.edge, "level": self.level,
            "level_downsample": self.level_downsample, "read_size": self.read_size,
            "level0_mpp": self.level0_mpp, "target_mpp": self.target_mpp,
            "magnification": self.magnification, "target_size": self.target_size,
            "target_overlap": self.target_overlap,
            "level_shape": list(self.level_shape) if self.level_shape else None,
        }


def axis_origins(count: int, step: float, start: int = 0) -> np.ndarray:
    """Patch origins along one axis, each rounded on its own from the exact multiple.

    Parameters
    ----------
    count : int
        How many origins.
    step : float
        Level-0 pixels from one origin to the next.
    start : int, optional
        Index of the first origin.

    Returns
    -------
    numpy.ndarray
        Level-0 pixels, int64 ``(count,)``: ``floor(k * step + 0.5)`` for ``k`` in
        ``[start, start + count)``.
    """
    k = np.arange(start, start + count, dtype=np.float64)
    return np.floor(k * step + 0.5).astype(np.int64)


def _axis_count(extent: int, size: int, step: float, edge: Edge) -> int:
    """How many origins fit on an axis of ``extent`` level-0 pixels."""
    if extent <= 0:
        return 0
    limit = extent - size if edge == "drop" else extent - 1  # last allowed origin
    if limit < 0:
        return 0
    guess = int(limit // step) + 2
    origins = axis_origins(guess + 1, step)
    return int(np.searchsorted(origins, limit, side="right"))


def axis_weights(
    origins: np.ndarray, size: int, extent: int, downsample: float, start: int, stop: int
) -> np.ndarray:
    """Overlap lengths (level-0 pixels) of patches with mask pixels along one axis.

    Parameters
    ----------
    origins : numpy.ndarray
        Patch origins in level-0 pixels, ``(n,)``.
    size : int
        Patch length in level-0 pixels; a patch covers ``[o, min(o + size, extent))``.
    extent : int
        Level-0 length of the slide along this axis: mask pixels beyond it do not count.
    downsample : float
        Level-0 pixels per mask pixel: mask pixel ``p`` covers ``[p * d, (p + 1) * d)``.
    start, stop : int
        The mask pixels ``[start, stop)`` to weigh.

    Returns
    -------
    numpy.ndarray
        ``(n, stop - start)`` float64: ``w[k, p]`` is the length of the intersection of
        patch ``k`` with mask pixel ``start + p``. Integers (exact) when ``downsample`` and
        the origins are integers.
    """
    edges = np.arange(start, stop + 1, dtype=np.float64) * downsample
    lo = origins.astype(np.float64)[:, None]
    hi = np.minimum(lo + size, float(extent))
    return np.maximum(0.0, np.minimum(edges[None, 1:], hi) - np.maximum(edges[None, :-1], lo))


def read_level(level_downsamples: Sequence[float], target_downsample: float) -> int:
    """Choose the pyramid level to read patches from.

    Parameters
    ----------
    level_downsamples : sequence of float
        Downsample of each level (level-0 pixels per level pixel).
    target_downsample : float
        The downsample the model wants (target µm per pixel over level 0's).

    Returns
    -------
    int
        The coarsest level whose downsample is at most ``target_downsample`` (within
        :data:`LEVEL_TOLERANCE`), so a reader never upsamples.
    """
    best = 0
    for index, downsample in enumerate(level_downsamples):
        if downsample <= target_downsample * (1 + LEVEL_TOLERANCE) and (
            downsample > level_downsamples[best]
        ):
            best = index
    return best


def _positive(value: Any, name: str, *, allow_zero: bool = False) -> float:
    if isinstance(value, bool):
        raise TileGridError(f"tile_grid: {name} must be a number, got {value!r}")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise TileGridError(f"tile_grid: {name} must be a number, got {value!r}") from None
    if not math.isfinite(number) or number < 0 or (number == 0 and not allow_zero):
        bound = "non-negative" if allow_zero else "positive"
        raise TileGridError(f"tile_grid: {name} must be a {bound} number, got {value!r}")
    return number


def make_grid(
    *,
    size: float,
    level0_shape: tuple[int, int],
    units: Units = "px",
    mpp: float | None = None,
    magnification: float | None = None,
    stride: float | None = None,
    overlap: float = 0,
    edge: Edge = "drop",
    level0_mpp: float | None = None,
    level_downsamples: Sequence[float] = (1.0,),
    level_shapes: Sequence[tuple[int, int]] | None = None,
) -> TileGrid:
    """The patch grid for a slide, from sizes in pixels, micrometres or at a magnification.

    Parameters
    ----------
    size : float
        Patch edge, in ``units``.
    level0_shape : tuple of int
        ``(rows, cols)`` of the slide's level 0, pixels.
    units : {"px", "um"}
        The unit of ``size``, ``stride`` and ``overlap`` (see the module docstring).
    mpp, magnification : float, optional
        The resolution the model reads, in µm per pixel or as a magnification (``mpp = 10 /
        magnification``); at most one. With ``units="px"`` the sizes are pixels at it.
    stride : float, optional
        Distance between patch origins, in ``units`` (default ``size - overlap``).
    overlap : float, optional
        Overlap of neighbouring patches, in ``units``; not with ``stride``.
    edge : {"drop", "flag"}
        ``"drop"`` keeps only patches wholly inside level 0; ``"flag"`` also those that run
        past the right or bottom edge.
    level0_mpp : float, optional
        Micrometres per level-0 pixel (needed for µm, ``mpp`` or ``magnification``).
    level_downsamples : sequence of float, optional
        Downsample of each pyramid level (``Slide.downsamples``), to choose the read level.
    level_shapes : sequence of tuple of int, optional
        ``(rows, cols)`` of each pyramid level (for CLAM's ``level_dim``), when known.

    Returns
    -------
    TileGrid
        The grid, in level-0 pixels.

    Raises
    ------
    TileGridError
        Invalid or contradictory arguments, or a physical size on a slide whose pixel size
        is unknown.

    Examples
    --------
    >>> from slidemask.tiles import make_grid
    >>> grid = make_grid(size=256, magnification=20, level0_shape=(4000, 6000),
    ...                  level0_mpp=0.25, level_downsamples=(1.0, 4.0))
    >>> grid.size, grid.level, grid.read_size, grid.rows, grid.cols
    (512, 0, 512, 7, 11)
    """
    if units not in ("px", "um"):
        raise TileGridError(f"tile_grid: units must be 'px' or 'um', got {units!r}")
    if edge not in ("drop", "flag"):
        raise TileGridError(f"tile_grid: edge must be 'drop' or 'flag', got {edge!r}")
    if mpp is not None and magnification is not None:
        raise TileGridError("tile_grid: give mpp or magnification, not both")
    size_u = _positive(size, "size")
    overlap_u = _positive(overlap, "overlap", allow_zero=True)
    if stride is not None and overlap_u:
        raise TileGridError("tile_grid: give stride or overlap, not both")
    stride_u = _positive(stride, "stride") if stride is not None else size_u - overlap_u
    if stride_u <= 0:
        raise TileGridError(
            f"tile_grid: overlap ({overlap!r}) must be smaller than size ({size!r})"
        )
    target_mpp: float | None = None
    if mpp is not None:
        target_mpp = _positive(mpp, "mpp")
    elif magnification is not None:
        target_mpp = 10.0 / _positive(magnification, "magnification")
    if level0_mpp is not None:
        level0_mpp = _positive(level0_mpp, "the slide's mpp")
    physical = units == "um" or target_mpp is not None
    if physical and level0_mpp is None:
        raise TileGridError(
            "tile_grid: sizes in micrometres or at a target mpp/magnification need the "
            "slide's pixel size (level-0 mpp), which is unknown: pass slide_mpp=..., a slide "
            "that states it, or units='px' without mpp/magnification (level-0 pixels)"
        )
    if units == "um":
        assert level0_mpp is not None
        per_unit = 1.0 / level0_mpp
        target = target_mpp if target_mpp is not None else level0_mpp
    elif target_mpp is not None:
        assert level0_mpp is not None
        per_unit = target_mpp / level0_mpp
        target = target_mpp
    else:
        per_unit = 1.0
        target = level0_mpp if level0_mpp is not None else 1.0
    size0 = max(1, math.floor(size_u * per_unit + 0.5))
    step0 = stride_u * per_unit
    rows0, cols0 = (int(n) for n in level0_shape)
    target_downsample = (target / level0_mpp) if level0_mpp is not None else 1.0
    downsamples = [float(d) for d in level_downsamples] or [1.0]
    level = read_level(downsamples, target_downsample)
    level_downsample = downsamples[level]
    to_target = (level0_mpp / target) if level0_mpp is not None else 1.0
    overlap0 = max(0.0, size0 - step0)
    return TileGrid(
        size=size0,
        step=step0,
        rows=_axis_count(rows0, size0, step0, edge),
        cols=_axis_count(cols0, size0, step0, edge),
        level0_shape=(rows0, cols0),
        edge=edge,
        level=level,
        level_downsample=level_downsample,
        read_size=max(1, math.floor(size0 / level_downsample + 0.5)),
        level0_mpp=level0_mpp,
        target_mpp=target if level0_mpp is not None else None,
        target_size=max(1, math.floor(size0 * to_target + 0.5)),
        target_overlap=math.floor(overlap0 * to_target + 0.5),
        level_shape=(
            (int(level_shapes[level][0]), int(level_shapes[level][1]))
            if level_shapes is not None and level < len(level_shapes) else None
        ),
    )
