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
    """Tiling settings (see :func:`slidemask.tiles.tile_grid` for each key's meaning).

    ``formats`` lists the files :func:`slidemask.tiles.write_tiles` writes (default: the
    CLAM h5); ``preview_size`` is the preview's longer side in pixels.

    Example (YAML)::

        tiles: {size: 256, magnification: 20, min_fraction: 0.5, formats: [clam, csv]}
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
        """The keyword arguments of :func:`slidemask.tiles.tile_grid` this spec sets."""
        return {
            "size": self.size, "units": self.units, "mpp": self.mpp,
            "magnification": self.magnification, "stride": self.stride,
            "overlap": self.overlap, "min_fraction": self.min_fraction, "edge": self.edge,
            "classes": dict(self.classes) if self.classes else None,
        }

    def canonical(self) -> dict[str, Any]:
        """Plain-JSON form (hashed by :meth:`spec_hash`)."""
        return self.model_dump(mode="json")

    def spec_hash(self) -> str:
        """SHA-256 of the canonical JSON form: equal settings give equal hashes."""
        text = json.dumps(self.canonical(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()
