"""``TileSpec``: the tiling settings, as the config's ``tiles:`` section and ``write_tiles``
take them. Each key is the :func:`slidemask.tiles.tile_grid` keyword of the same name."""

from __future__ import annotations

import hashlib
import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = ["FORMATS", "TileFormat", "TileSpec"]

TileFormat = Literal["clam", "trident", "csv", "parquet", "geojson", "preview"]
FORMATS: tuple[str, ...] = ("clam", "trident", "csv", "parquet", "geojson", "preview")
"""Tile outputs: CLAM h5, Trident h5 layout, CSV, Parquet, QuPath GeoJSON tiles, PNG preview."""


_DEFAULT_FORMATS: list[TileFormat] = ["clam"]


class TileSpec(BaseModel):
    """Tiling settings: the keyword arguments of ``tile_grid`` plus the files to write.

    Parameters
    ----------
    size : float
        Patch edge, in ``units``.
    units : {"px", "um"}
        Pixels (at ``mpp`` / ``magnification`` when given, else level 0) or micrometres.
    mpp, magnification : float, optional
        The resolution the model reads (``mpp = 10 / magnification``); at most one.
    stride, overlap : float, optional
        Origin-to-origin distance or overlap of neighbours, in ``units``; at most one.
    min_fraction : float
        Least exact tissue fraction of a kept patch, 0-1.
    edge : {"drop", "flag"}
        Drop patches that run past the slide's edge, or keep and flag them.
    classes : dict of str to int, optional
        ``{name: pixel value}`` of a class map. From a config, the class map written beside
        the mask is tiled (``<name>.ome.zarr/labels/classes``: the config needs a
        ``classes:`` section and ``outputs: {ome_zarr: true}``).
    formats : list of str
        Files :func:`slidemask.tiles.write_tiles` writes: ``clam``, ``trident``, ``csv``,
        ``parquet``, ``geojson``, ``preview`` (default: ``[clam]``).
    preview_size : int
        The preview's longer side, pixels.

    See Also
    --------
    slidemask.tiles.tile_grid : What each tiling key means.

    Examples
    --------
    The config's ``tiles:`` section, ``tiles: {size: 256, magnification: 20, formats:
    [clam, csv]}``, is

    >>> from slidemask.tiles import TileSpec
    >>> spec = TileSpec.model_validate(
    ...     {"size": 256, "magnification": 20, "formats": ["clam", "csv"]})
    >>> spec.grid_args()["magnification"], spec.formats
    (20.0, ['clam', 'csv'])
    """

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    size: float = Field(gt=0, description="patch edge, in units")
    units: Literal["px", "um"] = "px"
    mpp: float | None = Field(default=None, gt=0, description="µm per pixel the model reads")
    magnification: float | None = Field(default=None, gt=0, description="10 / mpp (20x = 0.5 µm)")
    stride: float | None = Field(default=None, gt=0, description="origin to origin, in units")
    overlap: float = Field(default=0, ge=0, description="overlap of neighbours, in units")
    min_fraction: float = Field(default=0.5, ge=0, le=1, description="least tissue fraction kept")
    edge: Literal["drop", "flag"] = "drop"
    classes: dict[str, int] | None = None
    formats: list[TileFormat] = Field(default_factory=lambda: _DEFAULT_FORMATS[:], min_length=1)
    preview_size: int = Field(default=1024, ge=16, le=16384)

    @model_validator(mode="after")
    def _consistent(self) -> TileSpec:
        if self.mpp is not None and self.magnification is not None:
            raise ValueError("give mpp or magnification, not both")
        if self.stride is not None and self.overlap:
            raise ValueError("give stride or overlap, not both")
        if self.overlap >= self.size:
            raise ValueError(f"overlap ({self.overlap:g}) must be smaller than size "
                             f"({self.size:g})")
        if len(set(self.formats)) != len(self.formats):
            raise ValueError(f"formats lists a format twice: {self.formats}")
        return self

    def grid_args(self) -> dict[str, Any]:
        """Give the keyword arguments of ``tile_grid`` this spec sets.

        Returns
        -------
        dict
            ``size``, ``units``, ``mpp``, ``magnification``, ``stride``, ``overlap``,
            ``min_fraction``, ``edge`` and ``classes``.
        """
        return {
            "size": self.size, "units": self.units, "mpp": self.mpp,
            "magnification": self.magnification, "stride": self.stride,
            "overlap": self.overlap, "min_fraction": self.min_fraction, "edge": self.edge,
            "classes": dict(self.classes) if self.classes else None,
        }

    def canonical(self) -> dict[str, Any]:
        """Give the plain-JSON form that :meth:`spec_hash` hashes.

        Returns
        -------
        dict
            Every key, defaults filled in.
        """
        return self.model_dump(mode="json")

    def spec_hash(self) -> str:
        """Hash the settings: equal settings give equal hashes.

        Returns
        -------
        str
            SHA-256 (hex) of the canonical JSON form.
        """
        text = json.dumps(self.canonical(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()
