"""The tile table: one row per kept patch, columns as numpy arrays (no per-patch objects).

Columns (level-0 pixels unless said otherwise):

==================  ========  =============================================================
``x``, ``y``        int64     top-left corner of the patch, level-0 pixels
``width``           int64     patch width, level-0 pixels
``height``          int64     patch height, level-0 pixels
``level``           int64     the pyramid level to read the patch from
``downsample``      float64   that level's downsample (level-0 pixels per level pixel)
``fraction``        float64   exact tissue area / patch area, 0-1 (area outside the slide
                              counts as background)
``edge``            bool      the patch runs past the slide's right or bottom edge
``fraction_<name>`` float64   per class of a class map: the class's area / patch area
==================  ========  =============================================================

``width``, ``height``, ``level`` and ``downsample`` are the same for every row; they are held
once and broadcast (read-only) when asked for as columns. Memory: 25 bytes per row plus 8 per
class.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from slidemask.tiles.grid import TileGrid

__all__ = ["TileTable"]

BASE_COLUMNS = ("x", "y", "width", "height", "level", "downsample", "fraction", "edge")


@dataclass(frozen=True, eq=False)
class TileTable:
    """Kept patches of a tile grid, row-major (by ``y`` then ``x``).

    Build it with :func:`slidemask.tiles.tile_grid`.

    Parameters
    ----------
    x, y : numpy.ndarray
        Level-0 top-left corners, int64 ``(n,)``.
    fraction : numpy.ndarray
        Exact tissue fraction of each patch, float64 ``(n,)``.
    edge : numpy.ndarray
        Whether the patch runs past the slide's right or bottom edge, bool ``(n,)``.
    grid : TileGrid
        The grid the patches come from (size, stride, read level, pixel sizes).
    min_fraction : float
        The threshold the rows passed (``fraction >= min_fraction``).
    class_fractions : mapping of str to numpy.ndarray
        ``{class name: float64 (n,)}`` for a class map, else empty.
    name : str or None
        The slide's name (for file metadata).
    classes : mapping of str to int
        ``{class name: value}`` of a class map, else empty.

    Notes
    -----
    ``table[name]`` is a column (``x``, ``y``, ``width``, ``height``, ``level``,
    ``downsample``, ``fraction``, ``edge``, ``fraction_<class>``; see the module's table),
    :meth:`columns` all of them, :meth:`coords` the ``(n, 2)`` level-0 ``(x, y)`` corners,
    :meth:`to_arrow` / :meth:`to_pandas` the whole table.

    Examples
    --------
    Tissue in the top 4 rows and left 6 columns of an 8 x 8 mask in level-0 pixels, cut into
    4-pixel patches; the two bottom patches hold none, the top right one is half tissue
    (kept: ``min_fraction`` is 0.5 by default):

    >>> import dask.array as da
    >>> import numpy as np
    >>> from slidemask.tiles import tile_grid
    >>> mask = np.zeros((8, 8), dtype=bool)
    >>> mask[:4, :6] = True
    >>> table = tile_grid(da.from_array(mask, chunks=4), size=4, downsample=1)
    >>> len(table), table.width, table.level
    (2, 4, 0)
    >>> table.coords().tolist(), table["fraction"].tolist()
    ([[0, 0], [4, 0]], [1.0, 0.5])
    >>> table.column_names
    ['x', 'y', 'width', 'height', 'level', 'downsample', 'fraction', 'edge']
    """

    x: np.ndarray
    y: np.ndarray
    fraction: np.ndarray
    edge: np.ndarray
    grid: TileGrid
    min_fraction: float = 0.5
    class_fractions: Mapping[str, np.ndarray] = field(default_factory=dict)
    name: str | None = None
    classes: Mapping[str, int] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.x.shape[0])

    @property
    def width(self) -> int:
        """Patch width in level-0 pixels."""
        return self.grid.size

    @property
    def height(self) -> int:
        """Patch height in level-0 pixels."""
        return self.grid.size

    @property
    def level(self) -> int:
        """The pyramid level a reader opens for the patches."""
        return self.grid.level

    @property
    def downsample(self) -> float:
        """Downsample of :attr:`level` (level-0 pixels per level pixel)."""
        return self.grid.level_downsample

    @property
    def column_names(self) -> list[str]:
        """Column names in output order."""
        return [*BASE_COLUMNS, *(f"fraction_{c}" for c in self.class_fractions)]

    def __getitem__(self, column: str) -> np.ndarray:
        n = len(self)
        constants: dict[str, Any] = {
            "width": (self.width, np.int64), "height": (self.height, np.int64),
            "level": (self.level, np.int64), "downsample": (self.downsample, np.float64),
        }
        if column in constants:
            value, dtype = constants[column]
            return np.broadcast_to(np.asarray(value, dtype=dtype), (n,))
        if column in ("x", "y", "fraction", "edge"):
            return getattr(self, column)  # type: ignore[no-any-return]
        if column.startswith("fraction_") and column[9:] in self.class_fractions:
            return self.class_fractions[column[9:]]
        raise KeyError(f"TileTable has no column {column!r}; columns: {self.column_names}")

    def __iter__(self) -> Iterator[str]:
        return iter(self.column_names)

    def columns(self) -> dict[str, np.ndarray]:
        """Every column as a numpy array (constants broadcast, read-only)."""
        return {name: self[name] for name in self.column_names}

    def coords(self) -> np.ndarray:
        """``(n, 2)`` int64 level-0 top-left ``(x, y)``: CLAM's and Trident's ``coords``."""
        return np.stack([self.x, self.y], axis=1).astype(np.int64, copy=False)

    def metadata(self) -> dict[str, Any]:
        """JSON-able description of how the table was made (grid, threshold, classes)."""
        return {
            "name": self.name, "count": len(self), "min_fraction": self.min_fraction,
            "classes": dict(self.classes), "grid": self.grid.to_dict(),
        }

    def to_arrow(self) -> Any:
        """The table as a ``pyarrow.Table`` (metadata under the schema key ``slidemask``)."""
        import json

        import pyarrow as pa

        arrays = {name: pa.array(np.ascontiguousarray(col)) for name, col in self.columns().items()}
        table = pa.table(arrays)
        meta = {b"slidemask": json.dumps(self.metadata()).encode()}
        return table.replace_schema_metadata(meta)

    def to_pandas(self) -> Any:
        """The table as a ``pandas.DataFrame`` (needs pandas, which slidemask does not)."""
        try:
            import pandas as pd
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise ImportError("TileTable.to_pandas needs pandas: pip install pandas") from exc
        return pd.DataFrame({k: np.array(v) for k, v in self.columns().items()})
