"""Step parameter models: each mirrors one public function's keyword arguments.

Every model is strict (YAML ``"7"`` is not the number 7, ``true`` is not 1) and rejects
unknown keys. :meth:`StrictModel.canonical` gives the plain-JSON form that is hashed
(:func:`slidemask.config.config_hash`) and recorded in provenance;
:meth:`StrictModel.arguments` gives the keyword arguments of the public function, with sizes
in micrometres (``radius_um``, ``min_area_um2``, ``max_hole_area_um2``) converted to pixels of
the working resolution: radii to ``floor(radius_um / mpp + 0.5)`` pixels, areas to
``area_um2 / mpp**2`` pixels (not rounded).

See Also
--------
slidemask.config.steps : the registry that names each model's step and public function.
"""

from __future__ import annotations

import math
from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from slidemask.errors import MaskError

__all__ = [
    "OTSU",
    "BlackParams",
    "FlatParams",
    "PenInkParams",
    "SharpnessParams",
    "StraightBandsParams",
    "TouchingEdgeParams",
    "ContourFillParams",
    "FillHolesParams",
    "GrayParams",
    "HsvRangeParams",
    "KeepLargestHolesParams",
    "KeepLargestParams",
    "MeanBlurParams",
    "MedianBlurParams",
    "GlassParams",
    "OpticalDensityParams",
    "RadiusParams",
    "RemoveSmallObjectsParams",
    "RgbMeanParams",
    "SaturationParams",
    "SquareParams",
    "StrictModel",
    "ThresholdParams",
    "WhiteBalanceParams",
]


class StrictModel(BaseModel):
    """Base of every configuration model: strict types, no unknown keys, immutable."""

    # strict: YAML "7" is not silently the number 7, true is not 1; .nan and .inf are no
    # sizes, thresholds or pixel sizes
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, allow_inf_nan=False)

    # Optional keys added after the format was first released: left out of the canonical
    # form (and so of the config hash) while unset, so older configs keep their hash.
    _OMIT_IF_NONE: ClassVar[frozenset[str]] = frozenset()

    def canonical(self) -> dict[str, Any]:
        """Plain-JSON parameters for hashing and provenance."""
        data = self.model_dump(mode="json")
        return {k: v for k, v in data.items() if not (k in self._OMIT_IF_NONE and v is None)}

    def arguments(self, mpp: float | None) -> dict[str, Any]:
        """Keyword arguments of the public function, sizes in pixels of the working resolution.

        ``mpp`` is the working resolution's µm per pixel (None when the slide does not state
        it); keys in micrometres are converted with it.
        """
        return self.model_dump()


def _need_mpp(mpp: float | None, key: str, alternative: str) -> float:
    if mpp is None:
        raise MaskError(
            f"{key}: the slide does not state its pixel size, so micrometres cannot be "
            f"converted to pixels; state it in micrometres per pixel (slidemask run --mpp UM, "
            f"or default_mpp: UM in the config) or give {alternative} in pixels instead (and a "
            "resolution by level: or downsample:)"
        )
    return float(mpp)


def _one_of(model: BaseModel, keys: tuple[str, ...], *, required: bool) -> None:
    given = [k for k in keys if getattr(model, k) is not None]
    if len(given) > 1 or (required and not given):
        raise ValueError(f"give {'exactly' if required else 'at most'} one of {', '.join(keys)}")


class GrayParams(StrictModel):
    """``to_gray(rgb)``: no parameters."""


class MedianBlurParams(StrictModel):
    """``median_blur(image, ksize)``."""

    ksize: int = Field(description="odd aperture edge in pixels, >= 3")

    @field_validator("ksize")
    @classmethod
    def _odd(cls, v: int) -> int:
        if v < 3 or v % 2 == 0:
            raise ValueError(f"ksize must be an odd number of pixels >= 3, got {v}")
        return v


OTSU = "otsu"
"""Threshold value meaning "the slide-wide Otsu threshold of this step's input"."""


class ThresholdParams(StrictModel):
    """``threshold(image, above=, below=)``: strict comparisons in the image's own scale.

    Either bound may be ``otsu``: the slide-wide Otsu threshold ``t`` of the step's input
    (:func:`slidemask.ops.otsu.otsu_threshold`); ``above: otsu`` keeps ``x > t`` and
    ``below: otsu`` keeps ``x <= t`` (Otsu's two classes, as scikit-image and OpenCV split).
    """

    above: float | str | None = Field(None, description="keep pixels > above (or 'otsu')")
    below: float | str | None = Field(None, description="keep pixels < below (or 'otsu')")

    @field_validator("above", "below", mode="before")
    @classmethod
    def _finite(cls, v: Any) -> Any:
        if isinstance(v, float) and not math.isfinite(v):
            raise ValueError(f"Input should be a finite number or {OTSU!r} (got {v})")
        return v

    @field_validator("above", "below")
    @classmethod
    def _number_or_otsu(cls, v: float | str | None) -> float | str | None:
        if isinstance(v, str) and v != OTSU:
            raise ValueError(
                f"Input should be a valid number (got {v!r}) or {OTSU!r} (a slide-wide Otsu "
                "threshold)"
            )
        return v

    @model_validator(mode="after")
    def _one_side(self) -> ThresholdParams:
        if self.above is None and self.below is None:
            raise ValueError("give above:, below: or both (a band above < x < below)")
        if self.above == OTSU and self.below == OTSU:
            raise ValueError("only one side can be otsu: above: otsu or below: otsu")
        if (
            isinstance(self.above, float | int)
            and isinstance(self.below, float | int)
            and self.above >= self.below
        ):
            raise ValueError(
                f"above ({self.above}) must be less than below ({self.below}); the mask keeps "
                "above < x < below"
            )
        return self

    @property
    def otsu(self) -> bool:
        """Whether one bound is the slide-wide Otsu threshold."""
        return OTSU in (self.above, self.below)


HSV = Annotated[list[int], Field(min_length=3, max_length=3)]


class HsvRangeParams(StrictModel):
    """``hsv_range(rgb, lower, upper)``: OpenCV HSV units, H 0-179, S and V 0-255, inclusive."""

    lower: HSV
    upper: HSV

    @field_validator("lower", "upper")
    @classmethod
    def _units(cls, v: list[int]) -> list[int]:
        h, s, val = v
        if not 0 <= h <= 179:
            raise ValueError(
                f"hue {h} is outside 0-179 (OpenCV hue is degrees / 2: 120 is blue, 60 green)"
            )
        if not (0 <= s <= 255 and 0 <= val <= 255):
            raise ValueError(f"saturation and value must be in 0-255, got {v}")
        return v

    @model_validator(mode="after")
    def _ordered(self) -> HsvRangeParams:
        for i, channel in ((1, "saturation"), (2, "value")):
            if self.lower[i] > self.upper[i]:
                raise ValueError(
                    f"lower {channel} {self.lower[i]} is above upper {self.upper[i]} "
                    "(only hue may wrap around, from red to red)"
                )
        return self


class RadiusParams(StrictModel):
    """``binary_dilation/erosion/opening/closing(mask, radius)``: a disk footprint.

    ``radius`` in pixels, or ``radius_um`` in micrometres (``floor(radius_um / mpp + 0.5)``
    pixels at the working resolution).
    """

    radius: int | None = Field(None, ge=0, description="disk radius in pixels")
    radius_um: float | None = Field(None, ge=0, description="disk radius in micrometres")

    _OMIT_IF_NONE: ClassVar[frozenset[str]] = frozenset({"radius", "radius_um"})

    @model_validator(mode="after")
    def _one(self) -> RadiusParams:
        _one_of(self, ("radius", "radius_um"), required=True)
        return self

    def arguments(self, mpp: float | None) -> dict[str, Any]:
        if self.radius is not None:
            return {"radius": self.radius}
        assert self.radius_um is not None
        pixels = self.radius_um / _need_mpp(mpp, "radius_um", "radius")
        return {"radius": math.floor(pixels + 0.5)}


class SquareParams(StrictModel):
    """``square_dilation/erosion/opening/closing(mask, size)``: OpenCV's ``np.ones((size, size))``
    kernel (CLAM's and PathML's morphology)."""

    size: int = Field(ge=1, description="square edge in pixels (even sizes are off-centre)")


def _pixels(value: float | None, value_um: float | None, mpp: float | None, key: str) -> float:
    """A size in pixels: ``value`` as given, else ``value_um`` converted with ``mpp``."""
    if value is not None:
        return value
    assert value_um is not None
    return value_um / _need_mpp(mpp, f"{key}_um", key)


PenColor = Literal["blue", "green", "red", "black"]
_PEN_COLORS: tuple[PenColor, ...] = ("blue", "green", "red", "black")


class PenInkParams(StrictModel):
    """``pen_ink(rgb, colors=)``: pen ink of the given colours (HSV bands for blue, green and
    red, neutral dark for black; see :mod:`slidemask.ops.artifacts`)."""

    colors: list[PenColor] = Field(
        default_factory=lambda: list(_PEN_COLORS), min_length=1,
        description="ink colours to find",
    )


class BlackParams(StrictModel):
    """``black(rgb, max_value=, max_chroma=, max_saturation=)``: neutral dark pixels (black
    ink, scan borders)."""

    max_value: int = Field(60, ge=0, le=255, description="brightest channel at most, 0-255")
    max_chroma: int = Field(25, ge=0, le=255, description="max - min channel at most, 0-255")
    max_saturation: int = Field(150, ge=0, le=255, description="HSV saturation at most, 0-255")


class SharpnessParams(StrictModel):
    """``sharpness(grey, cell, sigma, glass=, min_detail=, relative=)``: local detail, one
    value per cell (blur is low); relative to contrast by default.

    ``cell`` in pixels or ``cell_um`` (``floor(cell_um / mpp + 0.5)`` pixels, at least 3);
    ``sigma`` in pixels or ``sigma_um``. The step's output has one pixel per cell, so the
    mask it makes is ``cell`` times coarser than the working resolution.
    """

    cell: int | None = Field(None, ge=3, description="cell edge, pixels")
    cell_um: float | None = Field(None, gt=0, description="cell edge, micrometres")
    sigma: float | None = Field(None, gt=0, description="Gaussian sigma, pixels")
    sigma_um: float | None = Field(None, gt=0, description="Gaussian sigma, micrometres")
    glass: int = Field(215, ge=0, le=256, description="grey level from which a pixel is glass")
    min_detail: float = Field(2.0, ge=0, description="mean detail below which a cell is "
                              "featureless (ink, border, bubble) and left out, grey levels")
    relative: bool = Field(True, description="detail relative to contrast (unitless, the "
                           "same on pale and strong stains), or in grey levels")

    _OMIT_IF_NONE: ClassVar[frozenset[str]] = frozenset({"cell", "cell_um", "sigma", "sigma_um"})

    @model_validator(mode="after")
    def _one_each(self) -> SharpnessParams:
        _one_of(self, ("cell", "cell_um"), required=True)
        _one_of(self, ("sigma", "sigma_um"), required=True)
        return self

    def arguments(self, mpp: float | None) -> dict[str, Any]:
        cell = self.cell
        if cell is None:
            cell = max(3, math.floor(_pixels(None, self.cell_um, mpp, "cell") + 0.5))
        return {"cell": cell, "sigma": _pixels(self.sigma, self.sigma_um, mpp, "sigma"),
                "glass": self.glass, "min_detail": self.min_detail, "relative": self.relative}


class FlatParams(StrictModel):
    """``flat(grey, ksize, max_diff=)``: ``|grey - local mean| < max_diff`` (HistoQC's
    bubble and flat-area test).

    Window ``ksize`` in pixels (odd) or ``ksize_um``, converted to the nearest odd number of
    pixels (at least 3).
    """

    ksize: int | None = Field(None, description="odd window edge, pixels")
    ksize_um: float | None = Field(None, gt=0, description="window edge, micrometres")
    max_diff: float = Field(2.55, gt=0, description="grey levels (HistoQC: 0.01 of 255)")

    _OMIT_IF_NONE: ClassVar[frozenset[str]] = frozenset({"ksize", "ksize_um"})

    @field_validator("ksize")
    @classmethod
    def _odd(cls, v: int | None) -> int | None:
        if v is not None and (v < 3 or v % 2 == 0):
            raise ValueError(f"ksize must be an odd number of pixels >= 3, got {v}")
        return v

    @model_validator(mode="after")
    def _one(self) -> FlatParams:
        _one_of(self, ("ksize", "ksize_um"), required=True)
        return self

    def arguments(self, mpp: float | None) -> dict[str, Any]:
        ksize = self.ksize
        if ksize is None:
            pixels = _pixels(None, self.ksize_um, mpp, "ksize")
            ksize = 2 * max(1, math.floor((pixels - 1) / 2 + 0.5)) + 1
        return {"ksize": ksize, "max_diff": self.max_diff}


class TouchingEdgeParams(StrictModel):
    """``touching_edge(mask)``: no parameters."""


class StraightBandsParams(StrictModel):
    """``straight_bands(mask, length, width=)``: the mask's straight runs along rows or
    columns. ``length`` / ``length_um`` (at least 3 pixels); ``width`` / ``width_um``, the
    growth across the run that lets a tilted band through (default 0)."""

    length: int | None = Field(None, ge=3, description="pixels")
    length_um: float | None = Field(None, gt=0, description="micrometres")
    width: int | None = Field(None, ge=0, description="pixels")
    width_um: float | None = Field(None, ge=0, description="micrometres")

    _OMIT_IF_NONE: ClassVar[frozenset[str]] = frozenset(
        {"length", "length_um", "width", "width_um"}
    )

    @model_validator(mode="after")
    def _one(self) -> StraightBandsParams:
        _one_of(self, ("length", "length_um"), required=True)
        _one_of(self, ("width", "width_um"), required=False)
        return self

    def arguments(self, mpp: float | None) -> dict[str, Any]:
        length = self.length
        if length is None:
            length = max(3, math.floor(_pixels(None, self.length_um, mpp, "length") + 0.5))
        width = self.width
        if width is None:
            width = 0 if self.width_um is None else math.floor(
                _pixels(None, self.width_um, mpp, "width") + 0.5
            )
        return {"length": length, "width": width}


class SaturationParams(StrictModel):
    """``saturation(rgb)``: no parameters."""


class RgbMeanParams(StrictModel):
    """``rgb_mean(rgb)``: no parameters."""


class MeanBlurParams(MedianBlurParams):
    """``mean_blur(image, ksize)``: the same odd ``ksize`` as the median."""


Connectivity = Literal[4, 8]


class FillHolesParams(StrictModel):
    """``fill_holes(mask, max_hole_area=)``: none given fills every hole.

    ``max_hole_area`` in pixels or ``max_hole_area_um2`` in µm² (holes up to that area, inclusive,
    are filled).
    """

    max_hole_area: float | None = Field(None, ge=0, description="pixels")
    max_hole_area_um2: float | None = Field(None, ge=0, description="square micrometres")

    _OMIT_IF_NONE: ClassVar[frozenset[str]] = frozenset({"max_hole_area", "max_hole_area_um2"})

    @model_validator(mode="after")
    def _at_most_one(self) -> FillHolesParams:
        _one_of(self, ("max_hole_area", "max_hole_area_um2"), required=False)
        return self

    def arguments(self, mpp: float | None) -> dict[str, Any]:
        if self.max_hole_area_um2 is None:
            return {"max_hole_area": self.max_hole_area}
        um = _need_mpp(mpp, "max_hole_area_um2", "max_hole_area")
        return {"max_hole_area": self.max_hole_area_um2 / (um * um)}


class RemoveSmallObjectsParams(StrictModel):
    """``remove_small_objects(mask, min_area, connectivity=)``: drop components with fewer
    than ``min_area`` pixels (or ``min_area_um2`` µm²)."""

    min_area: float | None = Field(None, ge=0, description="pixels")
    min_area_um2: float | None = Field(None, ge=0, description="square micrometres")
    connectivity: Connectivity = 8

    _OMIT_IF_NONE: ClassVar[frozenset[str]] = frozenset({"min_area", "min_area_um2"})

    @model_validator(mode="after")
    def _one(self) -> RemoveSmallObjectsParams:
        _one_of(self, ("min_area", "min_area_um2"), required=True)
        return self

    def arguments(self, mpp: float | None) -> dict[str, Any]:
        if self.min_area is not None:
            area = self.min_area
        else:
            assert self.min_area_um2 is not None
            um = _need_mpp(mpp, "min_area_um2", "min_area")
            area = self.min_area_um2 / (um * um)
        return {"min_area": area, "connectivity": self.connectivity}


class KeepLargestParams(StrictModel):
    """``keep_largest(mask, n, connectivity=)``: keep the ``n`` largest components."""

    n: int = Field(ge=1)
    connectivity: Connectivity = 8


class KeepLargestHolesParams(StrictModel):
    """``keep_largest_holes(mask, n)``: keep each object's ``n`` largest holes, fill the rest
    (CLAM's ``max_n_holes``)."""

    n: int = Field(ge=0)


class ContourFillParams(StrictModel):
    """``contour_fill(mask)``: no parameters."""


class HolesParams(StrictModel):
    """``holes(mask)``: no parameters."""


class GlassParams(StrictModel):
    """The glass colour of a step measured against it: given, or estimated slide-wide.

    Without ``background`` the glass colour is estimated over the whole working image
    (:func:`slidemask.ops.density.background_estimate`): per channel the ``percentile``-th
    percentile of the pixels that are not pure white, raised to at least ``floor``.
    """

    background: Annotated[list[float], Field(min_length=3, max_length=3)] | None = Field(
        None,
        description="glass colour (R, G, B) in the image's own scale (0-255 for uint8); "
        "omitted: estimated slide-wide",
    )
    percentile: float = Field(
        99.0, gt=0, le=100,
        description="of the estimate: per-channel percentile of the non-white pixels (99)",
    )
    floor: float | None = Field(
        None, ge=0,
        description="of the estimate: lowest background per channel, image's own scale "
        "(default 200 for uint8, 51400 for uint16)",
    )

    _OMIT_IF_NONE: ClassVar[frozenset[str]] = frozenset({"background", "floor"})

    @field_validator("background")
    @classmethod
    def _non_negative(cls, v: list[float] | None) -> list[float] | None:
        if v is not None and any(not math.isfinite(x) or x < 0 for x in v):
            raise ValueError(f"background values must be finite and >= 0, got {v}")
        return v

    @model_validator(mode="after")
    def _estimate_options(self) -> GlassParams:
        if self.background is not None and self.model_fields_set & {"percentile", "floor"}:
            raise ValueError(
                "percentile and floor shape the slide-wide background estimate; with "
                "background given there is none to shape: give one or the other"
            )
        return self


class OpticalDensityParams(GlassParams):
    """``optical_density(rgb, background=, combine=, percentile=, floor=)``: absorbance
    relative to the glass, a float image in OD units (threshold it with e.g. ``above: 0.1``);
    the glass as in :class:`GlassParams`.
    """

    combine: Literal["sum", "max"] = Field(
        "sum", description="sum (total absorbance, default) or max of the channel ODs"
    )


class WhiteBalanceParams(GlassParams):
    """``white_balance(rgb, background=, percentile=, floor=)``: each channel scaled so that
    the glass is white (colour rules then hold whatever the scanner's white balance); the
    glass as in :class:`GlassParams`.
    """

