"""Mask configurations: YAML files validated with pydantic, mirroring the public API.

A configuration names masks, each a list of steps applied in order to the slide's image at one
resolution, and an ``output`` expression combining them::

    resolution: {level: 0}          # or {mpp: 8.0} (µm per pixel) or {downsample: 64}
    masks:
      tissue:
        - gray: {}                  # to_gray
        - median_blur: {ksize: 7}   # median_blur(image, ksize=7)
        - threshold: {below: 220}   # threshold(image, below=220): uint8 grey 0-255
        - closing: {radius: 4}      # binary_closing(mask, radius=4), pixels
      pen:
        - hsv_range: {lower: [100, 80, 30], upper: [130, 255, 255]}
        - dilation: {radius: 5}
    output: "tissue & ~pen"         # mask names with & | ~ and parentheses
    chunk_size: 2048                # working chunk edge, pixels
    outputs: {preview: true, summary: true}         # optional extras beside <slide>.zarr
    execution: {scheduler: processes, workers: 2}   # optional: where a batch runs

Each step is a one-key mapping ``{step name: parameters}``; :data:`STEPS` maps every step name
to the public function it calls and the pydantic model of that function's keyword arguments,
so the config can do nothing the API cannot (a later step type is one more registry entry).

Physical units. Every size has a pixel form and, where it makes sense, a micrometre form:
``radius`` or ``radius_um`` (morphology), ``min_area`` or ``min_area_um2``,
``max_hole_area`` or ``max_hole_area_um2``. Micrometres are converted with the effective
pixel size of the working resolution (:class:`slidemask.ops.resample.Resolution` ``.mpp``):
radii to ``floor(radius_um / mpp + 0.5)`` pixels, areas to ``area_um2 / mpp**2`` pixels (not
rounded; areas compare with pixel counts). A slide that does not state its pixel size cannot
convert them: the run fails naming the slide and the key
(``masks.tissue[4].remove_small_objects: min_area_um2: ...``). ``resolution: {downsample: N}``
and ``{level: N}`` need no pixel size, so a recipe in pixels runs on any slide.

Otsu. ``threshold: {above: otsu}`` keeps pixels brighter than the slide-wide Otsu threshold
``t`` of the step's input (:func:`slidemask.ops.otsu.otsu_threshold`, equal to
``skimage.filters.threshold_otsu`` of the whole image), i.e. ``x > t`` as scikit-image and
OpenCV's ``THRESH_BINARY + THRESH_OTSU`` split; ``{below: otsu}`` keeps the other class,
``x <= t``. The value used is recorded in the output's provenance (``thresholds``).

``execution`` (:class:`slidemask.distributed.ExecutionConfig`) says how a batch runs, not what
it computes: it is left out of :func:`config_hash`, so moving a study from a laptop to SLURM
does not redo finished slides. ``outputs`` (:class:`Outputs`) is hashed when it differs from
the default, since a finished slide must have every output its config asks for; keys added
to the format are hashed only when used, so the hashes of older configs do not change.
Unknown keys anywhere are errors; every error names the file and the key path, e.g.
``threshold.yaml: masks.tissue[1].threshold.abve: unknown key``.
"""

from __future__ import annotations

import ast
import hashlib
import json
import keyword
import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    create_model,
    field_validator,
    model_validator,
)

from slidemask.distributed import ExecutionConfig
from slidemask.errors import ConfigError, MaskError
from slidemask.kernels.color import hsv_in_range, rgb_mean_kernel, rgb_to_gray, saturation_kernel
from slidemask.kernels.threshold import threshold_mask
from slidemask.ops.components import (
    keep_largest,
    keep_largest_plan,
    remove_small_objects,
    remove_small_objects_plan,
)
from slidemask.ops.holes import (
    contour_fill,
    fill_holes,
    fill_holes_plan,
    keep_largest_holes,
    keep_largest_holes_plan,
)
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

__all__ = [
    "DEFAULT_CONFIG_YAML",
    "STEPS",
    "Config",
    "Expr",
    "Outputs",
    "Resolution",
    "StepSpec",
    "config_from_yaml",
    "config_hash",
    "default_config",
    "load_config",
    "parse_config",
    "parse_expression",
]

Kind = Literal["color", "gray", "mask"]
"""What flows between steps: the slide's multi-channel image, a one-channel image, a bool mask."""

_KIND_WORDS = {
    "color": "the slide's colour image",
    "gray": "a single-channel (grey) image",
    "mask": "a bool mask",
}


class _Strict(BaseModel):
    # strict: YAML "7" is not silently the number 7, true is not 1
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

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
            f"converted to pixels; give {alternative} in pixels instead (and a resolution "
            "by level: or downsample:)"
        )
    return float(mpp)


def _one_of(model: BaseModel, keys: tuple[str, ...], *, required: bool) -> None:
    given = [k for k in keys if getattr(model, k) is not None]
    if len(given) > 1 or (required and not given):
        raise ValueError(f"give {'exactly' if required else 'at most'} one of {', '.join(keys)}")


# --- step parameter models: each mirrors one public function's keyword arguments -------------


class GrayParams(_Strict):
    """``to_gray(rgb)``: no parameters."""


class MedianBlurParams(_Strict):
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


class ThresholdParams(_Strict):
    """``threshold(image, above=, below=)``: strict comparisons in the image's own scale.

    Either bound may be ``otsu``: the slide-wide Otsu threshold ``t`` of the step's input
    (:func:`slidemask.ops.otsu.otsu_threshold`); ``above: otsu`` keeps ``x > t`` and
    ``below: otsu`` keeps ``x <= t`` (Otsu's two classes, as scikit-image and OpenCV split).
    """

    above: float | str | None = Field(None, description="keep pixels > above (or 'otsu')")
    below: float | str | None = Field(None, description="keep pixels < below (or 'otsu')")

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


class HsvRangeParams(_Strict):
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


class RadiusParams(_Strict):
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


class SquareParams(_Strict):
    """``square_dilation/erosion/opening/closing(mask, size)``: OpenCV's ``np.ones((size, size))``
    kernel (CLAM's and PathML's morphology)."""

    size: int = Field(ge=1, description="square edge in pixels (even sizes are off-centre)")


class SaturationParams(_Strict):
    """``saturation(rgb)``: no parameters."""


class RgbMeanParams(_Strict):
    """``rgb_mean(rgb)``: no parameters."""


class MeanBlurParams(MedianBlurParams):
    """``mean_blur(image, ksize)``: the same odd ``ksize`` as the median."""


Connectivity = Literal[4, 8]


class FillHolesParams(_Strict):
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


class RemoveSmallObjectsParams(_Strict):
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


class KeepLargestParams(_Strict):
    """``keep_largest(mask, n, connectivity=)``: keep the ``n`` largest components."""

    n: int = Field(ge=1)
    connectivity: Connectivity = 8


class KeepLargestHolesParams(_Strict):
    """``keep_largest_holes(mask, n)``: keep each object's ``n`` largest holes, fill the rest
    (CLAM's ``max_n_holes``)."""

    n: int = Field(ge=0)


class ContourFillParams(_Strict):
    """``contour_fill(mask)``: no parameters."""


Scope = Literal["pixel", "neighbourhood", "global"]
"""How far a step looks: one pixel, a halo of neighbours, or the whole slide (components)."""


@dataclass(frozen=True)
class StepSpec:
    """One configurable step: the public function it calls and what flows in and out.

    ``function`` is called as ``function(image, **params.arguments(mpp))`` (the parameters
    with micrometres converted to pixels). ``accepts`` lists the kinds of input it takes;
    ``returns`` is its output kind (None: same as its input); ``scope`` tells the staged
    runner how to schedule it (a ``global`` step's input is stored first, as it is read twice).
    """

    params: type[_Strict]
    function: Callable[..., Any]
    accepts: frozenset[Kind]
    returns: Kind | None
    summary: str
    scope: Scope = "pixel"
    tile_kernel: Callable[..., Any] | None = None
    """For a pointwise step: the numpy kernel, called as ``tile_kernel(tile, **arguments)``
    with the same arguments as ``function``; the runner fuses a run of such steps with
    decoding (:meth:`slidemask.io.Slide.map_pixels`)."""
    two_pass: Callable[..., Any] | None = None
    """For a global step: ``two_pass(**arguments)`` gives the operation as a
    :class:`slidemask.ops.components.TwoPass` (None where it has nothing to compute); the
    runner computes its pass 1 while storing the step's input."""


_ANY_IMAGE: frozenset[Kind] = frozenset({"color", "gray", "mask"})
_COLOR: frozenset[Kind] = frozenset({"color"})
_MASK: frozenset[Kind] = frozenset({"mask"})

STEPS: dict[str, StepSpec] = {
    "gray": StepSpec(GrayParams, to_gray, _COLOR, "gray",
                     "to_gray: luma, identical to cv2.cvtColor(RGB2GRAY)",
                     tile_kernel=rgb_to_gray),
    "saturation": StepSpec(SaturationParams, saturation, _COLOR, "gray",
                           "saturation: S of cv2.cvtColor(RGB2HSV), uint8 0-255",
                           tile_kernel=saturation_kernel),
    "rgb_mean": StepSpec(RgbMeanParams, rgb_mean, _COLOR, "gray",
                         "rgb_mean: (R + G + B) / 3 rounded, ImageJ's (QuPath's) grey",
                         tile_kernel=rgb_mean_kernel),
    "median_blur": StepSpec(MedianBlurParams, median_blur, _ANY_IMAGE, None,
                            "median_blur: median filter, ksize pixels", "neighbourhood"),
    "mean_blur": StepSpec(MeanBlurParams, mean_blur, frozenset({"gray"}), None,
                          "mean_blur: rounded mean over ksize x ksize, edges replicated",
                          "neighbourhood"),
    "threshold": StepSpec(ThresholdParams, threshold, frozenset({"gray"}), "mask",
                          "threshold: strict > above and/or < below, in the image's scale, "
                          "or otsu", tile_kernel=threshold_mask),
    "hsv_range": StepSpec(HsvRangeParams, hsv_range, _COLOR, "mask",
                          "hsv_range: OpenCV HSV box, H 0-179, S/V 0-255, hue may wrap",
                          tile_kernel=hsv_in_range),
    "dilation": StepSpec(RadiusParams, binary_dilation, _MASK, "mask",
                         "binary_dilation: grow by a disk of radius pixels (or radius_um)",
                         "neighbourhood"),
    "erosion": StepSpec(RadiusParams, binary_erosion, _MASK, "mask",
                        "binary_erosion: shrink by a disk of radius pixels (or radius_um)",
                        "neighbourhood"),
    "opening": StepSpec(RadiusParams, binary_opening, _MASK, "mask",
                        "binary_opening: remove specks narrower than the disk", "neighbourhood"),
    "closing": StepSpec(RadiusParams, binary_closing, _MASK, "mask",
                        "binary_closing: close gaps narrower than the disk", "neighbourhood"),
    "square_dilation": StepSpec(SquareParams, square_dilation, _MASK, "mask",
                                "square_dilation: cv2.dilate with np.ones((size, size))",
                                "neighbourhood"),
    "square_erosion": StepSpec(SquareParams, square_erosion, _MASK, "mask",
                               "square_erosion: cv2.erode with np.ones((size, size))",
                               "neighbourhood"),
    "square_opening": StepSpec(SquareParams, square_opening, _MASK, "mask",
                               "square_opening: cv2 MORPH_OPEN with np.ones((size, size))",
                               "neighbourhood"),
    "square_closing": StepSpec(SquareParams, square_closing, _MASK, "mask",
                               "square_closing: cv2 MORPH_CLOSE with np.ones((size, size))",
                               "neighbourhood"),
    "fill_holes": StepSpec(FillHolesParams, fill_holes, _MASK, "mask",
                           "fill_holes: fill holes up to max_hole_area (none: all holes)",
                           "global", two_pass=fill_holes_plan),
    "contour_fill": StepSpec(ContourFillParams, contour_fill, _MASK, "mask",
                             "contour_fill: findContours + drawContours(FILLED) = fill_holes",
                             "global", two_pass=fill_holes_plan),
    "remove_small_objects": StepSpec(RemoveSmallObjectsParams, remove_small_objects, _MASK,
                                     "mask", "remove_small_objects: drop components smaller "
                                     "than min_area", "global",
                                     two_pass=remove_small_objects_plan),
    "keep_largest": StepSpec(KeepLargestParams, keep_largest, _MASK, "mask",
                             "keep_largest: keep the n largest components", "global",
                             two_pass=keep_largest_plan),
    "keep_largest_holes": StepSpec(KeepLargestHolesParams, keep_largest_holes, _MASK, "mask",
                                   "keep_largest_holes: keep each object's n largest holes, "
                                   "fill the rest", "global",
                                   two_pass=keep_largest_holes_plan),
}
"""Step name -> :class:`StepSpec`. Add an entry here to make a new public function
configurable; the step model is generated from this dict when the module is imported."""


class _StepBase(_Strict):
    """A one-key mapping ``{step name: parameters}``; fields are generated from :data:`STEPS`."""

    @model_validator(mode="before")
    @classmethod
    def _one_key(cls, data: Any) -> Any:
        if isinstance(data, str):
            data = {data: {}}  # "- gray" is the same step as "- gray: {}"
        if not isinstance(data, Mapping):
            raise ValueError(
                f"a step is a one-key mapping like `median_blur: {{ksize: 7}}`, got {data!r}"
            )
        if len(data) == 0:
            raise ValueError("empty step; known steps: " + ", ".join(STEPS))
        known = [k for k in data if k in STEPS]
        if len(known) > 1:
            raise ValueError(
                f"a step is a one-key mapping, got {len(data)} keys ({', '.join(map(str, data))}); "
                "write each step as its own list item"
            )
        # `- gray:` in YAML gives None: a step without parameters
        return {k: ({} if v is None else v) for k, v in data.items()}

    @property
    def name(self) -> str:
        """The step's name (its one key)."""
        for key in STEPS:
            if getattr(self, key, None) is not None:
                return key
        raise AssertionError("validated step without a key")  # pragma: no cover

    @property
    def params(self) -> _Strict:
        """The step's validated parameters."""
        return getattr(self, self.name)  # type: ignore[no-any-return]

    @property
    def spec(self) -> StepSpec:
        return STEPS[self.name]

    def kwargs(self) -> dict[str, Any]:
        """The step's parameters as given (sizes in the units the config used)."""
        return self.params.model_dump()

    def arguments(self, mpp: float | None) -> dict[str, Any]:
        """Keyword arguments for the step's public function, micrometres converted to pixels
        with ``mpp`` (µm per pixel at the working resolution; None when unknown).

        Raises
        ------
        MaskError
            A size in micrometres and ``mpp`` is None; the message names the key.
        """
        return self.params.arguments(mpp)

    def canonical(self) -> dict[str, Any]:
        return {self.name: self.params.canonical()}


def _make_step_model() -> type[_StepBase]:
    fields: dict[str, Any] = {name: (spec.params | None, None) for name, spec in STEPS.items()}
    return create_model("Step", __base__=_StepBase, **fields)


if TYPE_CHECKING:
    Step = _StepBase
else:
    Step = _make_step_model()


def _check_chain(steps: list[_StepBase]) -> list[_StepBase]:
    """Steps must be able to follow each other, and a mask must end as a bool mask."""
    if not steps:
        raise ValueError("a mask needs at least one step")
    kind: Kind = "color"
    for i, step in enumerate(steps):
        spec = step.spec
        if kind not in spec.accepts:
            needs_gray = kind == "color" and "gray" in spec.accepts
            hint = " (add `- gray: {}` before it)" if needs_gray else ""
            raise ValueError(
                f"step [{i}] {step.name} needs "
                + " or ".join(_KIND_WORDS[k] for k in sorted(spec.accepts))
                + f" but gets {_KIND_WORDS[kind]}{hint}"
            )
        kind = spec.returns or kind
    if kind != "mask":
        raise ValueError(
            f"ends with {_KIND_WORDS[kind]}, not a mask; finish it with threshold or hsv_range"
        )
    return steps


StepList = Annotated[list[Step], AfterValidator(_check_chain)]
MaskName = Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")]


class Resolution(_Strict):
    """Where masks are computed: a pyramid ``level`` (0 = full resolution), a target ``mpp``
    or a target ``downsample``.

    ``mpp`` (micrometres per pixel) reads the coarsest level that is not coarser, then
    area-averages it by the nearest integer factor (the slide must state its pixel size).
    ``downsample`` (level-0 pixels per working pixel, e.g. CLAM's 64) does the same by
    downsample, so it needs no pixel size: the coarsest level whose downsample is at most the
    target, area-averaged by ``floor(target / level downsample + 0.5)``.
    """

    level: int | None = Field(None, ge=0)
    mpp: float | None = Field(None, gt=0)
    downsample: float | None = Field(None, ge=1)

    _OMIT_IF_NONE: ClassVar[frozenset[str]] = frozenset({"downsample"})

    @model_validator(mode="after")
    def _exactly_one(self) -> Resolution:
        given = [v for v in (self.level, self.mpp, self.downsample) if v is not None]
        if len(given) != 1:
            raise ValueError(
                "give exactly one of level: (pyramid level) or mpp: (µm per pixel) or "
                "downsample: (level-0 pixels per pixel)"
            )
        return self


class Outputs(_Strict):
    """What :func:`slidemask.pipeline.run_slide` writes for a slide besides ``<name>.zarr``.

    Every file is named after the mask, ``<name>.zarr``: ``<name>.ome.zarr`` (OME-Zarr 0.5
    label pyramid), ``<name>.geojson`` (QuPath annotations, level-0 pixel coordinates),
    ``<name>.png`` (thumbnail with the mask outline) and ``<name>.json`` (area in mm²,
    fraction, components, thresholds, resolution, QC warnings). All default to off, so a
    config without ``outputs:`` writes exactly the mask. The plain Zarr mask is always written:
    resuming a batch relies on it, and every extra is in place before it is.
    """

    zarr: bool = True
    ome_zarr: bool = False
    geojson: bool = False
    preview: bool = False
    summary: bool = False

    @field_validator("zarr")
    @classmethod
    def _always(cls, v: bool) -> bool:
        if v is not True:
            raise ValueError(
                "the plain Zarr mask is always written (resuming a batch relies on it); "
                "leave zarr: true or remove the key"
            )
        return v

    @property
    def extras(self) -> list[str]:
        """Names of the enabled outputs besides the Zarr mask, in writing order."""
        return [k for k in ("ome_zarr", "geojson", "preview", "summary") if getattr(self, k)]


# --- output expressions -----------------------------------------------------------------------


@dataclass(frozen=True)
class Expr:
    """A parsed mask expression: ``op`` is "name", "not", "and" or "or"."""

    op: str
    name: str = ""
    args: tuple[Expr, ...] = ()

    def names(self) -> set[str]:
        """Every mask name the expression uses."""
        if self.op == "name":
            return {self.name}
        return set().union(*(a.names() for a in self.args))

    def evaluate(self, masks: Mapping[str, Any]) -> Any:
        """Combine ``masks`` (dask or numpy bool arrays) with ``&``, ``|`` and ``~``."""
        if self.op == "name":
            return masks[self.name]
        values = [a.evaluate(masks) for a in self.args]
        if self.op == "not":
            return ~values[0]
        if self.op == "and":
            return values[0] & values[1]
        return values[0] | values[1]

    def __str__(self) -> str:
        return self._text(top=True)

    def _text(self, top: bool = False) -> str:
        if self.op == "name":
            return self.name
        if self.op == "not":
            return "~" + self.args[0]._text()
        sign = "&" if self.op == "and" else "|"
        text = f"{self.args[0]._text()} {sign} {self.args[1]._text()}"
        return text if top else f"({text})"


_MAX_EXPRESSION = 2000


def parse_expression(text: str) -> Expr:
    """Parse ``text`` made only of mask names, ``&``, ``|``, ``~`` and parentheses.

    Precedence as in Python: ``~`` binds tightest, then ``&``, then ``|``. Parsed with
    :mod:`ast` and checked node by node; nothing is ever evaluated as Python.

    Raises
    ------
    ConfigError
        Anything else: calls, attributes, constants, ``and``/``or``/``not``, other operators.
    """
    if not isinstance(text, str) or not text.strip():
        raise ConfigError("an expression over mask names is required, e.g. 'tissue & ~pen'")
    if len(text) > _MAX_EXPRESSION:
        raise ConfigError(f"expression is longer than {_MAX_EXPRESSION} characters")
    try:
        tree = ast.parse(text.strip(), mode="eval")
        return _convert(tree.body)
    except SyntaxError as exc:
        raise ConfigError(f"{text!r} is not a valid expression ({exc.msg})") from None
    except RecursionError:
        raise ConfigError(f"expression {text[:40]!r}... is nested too deeply") from None


def _convert(node: ast.AST) -> Expr:
    if isinstance(node, ast.Name):
        if keyword.iskeyword(node.id):  # pragma: no cover - the parser rejects these
            raise ConfigError(f"{node.id!r} cannot be a mask name")
        return Expr("name", name=node.id)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Invert):
        return Expr("not", args=(_convert(node.operand),))
    if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.BitAnd, ast.BitOr)):
        op = "and" if isinstance(node.op, ast.BitAnd) else "or"
        return Expr(op, args=(_convert(node.left), _convert(node.right)))
    if isinstance(node, ast.BoolOp) or (
        isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not)
    ):
        raise ConfigError("use & (and), | (or) and ~ (not) instead of the words and/or/not")
    what = {
        ast.Call: "function calls",
        ast.Attribute: "attribute access",
        ast.Subscript: "indexing",
        ast.Constant: "constants",
        ast.Compare: "comparisons",
        ast.Lambda: "lambdas",
    }.get(type(node), f"{type(node).__name__} nodes")
    if isinstance(node, (ast.BinOp, ast.UnaryOp)):
        what = f"the operator {type(node.op).__name__}"
    raise ConfigError(
        f"only mask names, &, |, ~ and parentheses are allowed; found {what}"
    )


# --- the configuration --------------------------------------------------------------------------


class Config(_Strict):
    """A validated mask configuration (see the module docstring for the format)."""

    resolution: Resolution = Field(
        default_factory=lambda: Resolution(level=0, mpp=None, downsample=None)
    )
    masks: dict[MaskName, StepList] = Field(min_length=1)
    output: str
    chunk_size: int = Field(2048, ge=64, le=16384, description="working chunk edge, pixels")
    outputs: Outputs = Field(
        default_factory=Outputs,
        description="extra outputs beside <name>.zarr: ome_zarr, geojson, preview, summary",
    )
    execution: ExecutionConfig = Field(
        default_factory=lambda: ExecutionConfig.model_validate({}),
        description="where slides run (threads, processes, a scheduler address, slurm, pbs); "
        "see slidemask.distributed.ExecutionConfig",
    )

    # Keys that describe how to run rather than what to compute; never part of the hash.
    _NOT_HASHED: ClassVar[frozenset[str]] = frozenset({"execution"})

    @model_validator(mode="before")
    @classmethod
    def _default_output(cls, data: Any) -> Any:
        if (
            isinstance(data, Mapping)
            and "output" not in data
            and isinstance(data.get("masks"), Mapping)
            and len(data["masks"]) == 1
        ):
            return {**data, "output": next(iter(data["masks"]))}
        return data

    @field_validator("masks")
    @classmethod
    def _names_not_keywords(cls, masks: dict[str, Any]) -> dict[str, Any]:
        bad = [n for n in masks if keyword.iskeyword(n)]
        if bad:
            raise ValueError(f"{bad[0]!r} is a reserved word and cannot name a mask")
        return masks

    @field_validator("output")
    @classmethod
    def _valid_expression(cls, text: str, info: Any) -> str:
        try:
            expr = parse_expression(text)
        except ConfigError as exc:
            raise ValueError(str(exc)) from None
        masks = info.data.get("masks")
        if isinstance(masks, Mapping):
            unknown = sorted(expr.names() - set(masks))
            if unknown:
                raise ValueError(
                    f"unknown mask {unknown[0]!r} (defined: {', '.join(masks)})"
                )
        return text

    @property
    def expression(self) -> Expr:
        """The parsed ``output`` expression."""
        return parse_expression(self.output)

    def canonical(self) -> dict[str, Any]:
        """Plain-JSON form with defaults filled in; equal configs give equal dicts."""
        data: dict[str, Any] = {
            "resolution": self.resolution.canonical(),
            "masks": {
                name: [step.canonical() for step in steps] for name, steps in self.masks.items()
            },
            "output": str(self.expression),
            "chunk_size": self.chunk_size,
        }
        if self.outputs != Outputs():
            data["outputs"] = self.outputs.canonical()
        return {k: v for k, v in data.items() if k not in self._NOT_HASHED}


def config_hash(config: Config) -> str:
    """SHA-256 (hex) of the configuration's canonical JSON: same masks, same hash.

    Formatting, comments, key order and redundant parentheses in ``output`` do not change it.
    """
    text = json.dumps(config.canonical(), sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(text.encode("ascii")).hexdigest()


# --- loading --------------------------------------------------------------------------------------


class _UniqueKeyLoader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # type: ignore[misc]
    """Safe loader that rejects duplicate keys (plain YAML keeps the last one silently).
    LibYAML's parser where PyYAML has it (about 6 times faster), else the pure-Python one."""


def _construct_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False) -> Any:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)  # type: ignore[no-untyped-call]
        try:
            duplicate = key in seen
        except TypeError:
            duplicate = False
        if duplicate:
            mark = key_node.start_mark
            raise ConfigError(f"line {mark.line + 1}: duplicate key {key!r}")
        try:
            seen.add(key)
        except TypeError:
            pass  # an unhashable key (a YAML list as key) cannot repeat a hashable one
    return loader.construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping
)


def _location(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out or "(top level)"


def _allowed_keys(loc: tuple[Any, ...]) -> list[str] | None:
    if len(loc) == 1:
        return list(Config.model_fields)
    if loc[0] == "resolution" and len(loc) == 2:
        return list(Resolution.model_fields)
    if loc[0] == "outputs" and len(loc) == 2:
        return list(Outputs.model_fields)
    if loc[0] == "execution" and len(loc) == 2:
        return list(ExecutionConfig.model_fields)
    if loc[0] == "masks" and len(loc) == 5 and loc[3] in STEPS:
        return list(STEPS[loc[3]].params.model_fields)
    return None


def _describe(error: Mapping[str, Any]) -> str:
    loc = tuple(error.get("loc", ()))
    kind = error.get("type", "")
    if kind == "extra_forbidden":
        if loc[:1] == ("masks",) and len(loc) == 4:
            return f"{_location(loc)}: unknown step {loc[-1]!r}; known steps: " + ", ".join(STEPS)
        allowed = _allowed_keys(loc)
        extra = f" (allowed: {', '.join(allowed)})" if allowed else ""
        return f"{_location(loc)}: unknown key{extra}"
    if loc[-1:] == ("[key]",) and loc[:1] == ("masks",):
        return (
            f"{_location(loc[:-1])}: mask names are identifiers (letters, digits and _, not "
            "starting with a digit), so that output expressions can name them"
        )
    if kind == "missing":
        if loc == ("output",):
            return (
                "output: required key missing: with several masks, say how to combine them, "
                "e.g. output: \"tissue & ~pen\""
            )
        return f"{_location(loc)}: required key missing"
    message = str(error.get("msg", "invalid"))
    for prefix in ("Value error, ", "Assertion failed, "):
        if message.startswith(prefix):
            message = message[len(prefix) :]
            break
    else:
        if "input" in error and not isinstance(error["input"], (dict, list)):
            message += f" (got {error['input']!r})"
    return f"{_location(loc)}: {message}"


def parse_config(data: Any, *, source: str = "<config>") -> Config:
    """Validate already-parsed YAML/JSON data; errors name ``source`` and the key path.

    Raises
    ------
    ConfigError
        One line per problem: ``<source>: <key path>: <what is wrong>``.
    """
    if data is None:
        raise ConfigError(f"{source}: the configuration is empty")
    if not isinstance(data, Mapping):
        raise ConfigError(
            f"{source}: the configuration must be a mapping of keys "
            f"(resolution, masks, output, chunk_size, outputs, execution), got "
            f"{type(data).__name__}"
        )
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        lines = list(dict.fromkeys(_describe(e) for e in exc.errors()))
        raise ConfigError("\n".join(f"{source}: {line}" for line in lines)) from None


def load_config(path: str | os.PathLike[str]) -> Config:
    """Read and validate a YAML configuration file (safe loader; duplicate keys rejected).

    Raises
    ------
    ConfigError
        The file is missing, unreadable, not YAML, or invalid; the message names the file
        and the key path.
    """
    source = os.fspath(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{source}: configuration file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{source}: cannot read the configuration ({exc})") from None
    return config_from_yaml(text, source=source)


def config_from_yaml(text: str, *, source: str = "<string>") -> Config:
    """Validate a configuration given as YAML text (see :func:`load_config`)."""
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{source}: {where}not valid YAML ({problem})") from None
    return parse_config(data, source=source)


DEFAULT_CONFIG_YAML = """\
# Tissue minus blue and green pen ink (slidemask's default; `slidemask demo` runs a built-in
# copy of this file). Radii and kernel sizes are in pixels of the working level.
#
# tissue: H&E tissue is darker than the bright glass background (grey about 235-245).
# pen inks: strongly coloured, in OpenCV HSV units (H 0-179 = degrees / 2, S and V 0-255).
#   Dark hematoxylin nuclei are blue too (H 115-128 on CMU-1), so each pen range is opened
#   by a disk wider than a nucleus before it is grown to cover the stroke's faint rim.
resolution: {level: 0}
masks:
  tissue:
    - gray: {}                    # RGB -> grey, uint8 0-255 (OpenCV luma)
    - median_blur: {ksize: 7}     # 7x7 median: removes JPEG noise and isolated pixels
    - threshold: {below: 220}     # grey < 220 is tissue (or ink)
    - closing: {radius: 4}        # close gaps narrower than ~8 px
  blue_pen:
    - hsv_range: {lower: [100, 80, 30], upper: [128, 255, 255]}
    - opening: {radius: 3}        # drops nuclei-sized blue spots; pen strokes are far wider
    - dilation: {radius: 5}
  green_pen:
    - hsv_range: {lower: [40, 60, 30], upper: [85, 255, 255]}
    - opening: {radius: 3}
    - dilation: {radius: 5}
output: "tissue & ~(blue_pen | green_pen)"
chunk_size: 2048                  # working chunk edge in pixels (any value gives the same mask)
"""


def default_config() -> Config:
    """The built-in default configuration (tissue minus blue/green pen ink)."""
    return config_from_yaml(DEFAULT_CONFIG_YAML, source="<built-in default config>")

