"""The step registry: every configurable step, the public function it calls, and its model.

:data:`STEPS` maps each step name to a :class:`StepSpec`: the pydantic model of the public
function's keyword arguments (:mod:`slidemask.config.params`), the function itself, the kinds
of image it accepts and returns, and how far it looks (``scope``). The config can do nothing
the API cannot: a new configurable step is one more entry here.

:data:`Step` is the pydantic model of one list item ``{step name: parameters}``, generated
from :data:`STEPS` when this module is imported; :data:`StepList` checks that the steps of a
mask can follow each other and end as a bool mask.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import AfterValidator, create_model, model_validator

from slidemask.config.params import (
    BlackParams,
    ContourFillParams,
    FillHolesParams,
    FlatParams,
    GrayParams,
    HolesParams,
    HsvRangeParams,
    KeepLargestHolesParams,
    KeepLargestParams,
    MeanBlurParams,
    MedianBlurParams,
    OpticalDensityParams,
    PenInkParams,
    RadiusParams,
    RemoveSmallObjectsParams,
    RgbMeanParams,
    SaturationParams,
    SharpnessParams,
    SquareParams,
    StraightBandsParams,
    StrictModel,
    ThresholdParams,
    TouchingEdgeParams,
    WhiteBalanceParams,
)
from slidemask.ops.artifacts import (
    black,
    flat,
    pen_ink,
    sharpness,
    straight_bands,
    touching_edge,
)
from slidemask.ops.components import (
    keep_largest,
    remove_small_objects,
)
from slidemask.ops.density import optical_density, white_balance
from slidemask.ops.holes import (
    contour_fill,
    fill_holes,
    holes,
    keep_largest_holes,
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

__all__ = ["STEPS", "Kind", "Scope", "Step", "StepList", "StepSpec"]


Kind = Literal["color", "gray", "mask"]
"""What flows between steps: the slide's multi-channel image, a one-channel image, a bool mask."""

_KIND_WORDS = {
    "color": "the slide's colour image",
    "gray": "a single-channel (grey) image",
    "mask": "a bool mask",
}


Scope = Literal["pixel", "neighbourhood", "global"]
"""How far a step looks: one pixel, a halo of neighbours, or the whole slide (components)."""


@dataclass(frozen=True)
class StepSpec:
    """One configurable step: the public function it calls and what flows in and out.

    ``function`` is called as ``function(image, **params.arguments(mpp))`` (the parameters
    with micrometres converted to pixels). ``accepts`` lists the kinds of input it takes;
    ``returns`` is its output kind (None: same as its input); ``scope`` says how far it looks,
    for the documentation. How a step runs (fused with decoding, on halo windows with its
    declared depth, or in two passes through scratch) is the public function's own business,
    the same whether it is called from Python or from a config (:mod:`slidemask.ops.local`,
    :mod:`slidemask.ops.scratch`).
    """

    params: type[StrictModel]
    function: Callable[..., Any]
    accepts: frozenset[Kind]
    returns: Kind | None
    summary: str
    scope: Scope = "pixel"
    reduces: str | None = None
    """The keyword argument by which the step divides the resolution (``sharpness``'s
    ``cell``: one output pixel per cell), or None when the output has the input's pixels."""


_ANY_IMAGE: frozenset[Kind] = frozenset({"color", "gray", "mask"})
_COLOR: frozenset[Kind] = frozenset({"color"})
_MASK: frozenset[Kind] = frozenset({"mask"})

STEPS: dict[str, StepSpec] = {
    "gray": StepSpec(GrayParams, to_gray, _COLOR, "gray",
                     "to_gray: luma, identical to cv2.cvtColor(RGB2GRAY)"),
    "saturation": StepSpec(SaturationParams, saturation, _COLOR, "gray",
                           "saturation: S of cv2.cvtColor(RGB2HSV), uint8 0-255"),
    "rgb_mean": StepSpec(RgbMeanParams, rgb_mean, _COLOR, "gray",
                         "rgb_mean: (R + G + B) / 3 rounded, ImageJ's (QuPath's) grey"),
    "optical_density": StepSpec(OpticalDensityParams, optical_density, _COLOR, "gray",
                                "optical_density: absorbance relative to the glass (estimated "
                                "slide-wide, or given), float OD units", "global"),
    "white_balance": StepSpec(WhiteBalanceParams, white_balance, _COLOR, "color",
                              "white_balance: each channel scaled so that the glass (estimated "
                              "slide-wide, or given) is white", "global"),
    "median_blur": StepSpec(MedianBlurParams, median_blur, _ANY_IMAGE, None,
                            "median_blur: median filter, ksize pixels", "neighbourhood"),
    "mean_blur": StepSpec(MeanBlurParams, mean_blur, frozenset({"gray"}), None,
                          "mean_blur: rounded mean over ksize x ksize, edges replicated",
                          "neighbourhood"),
    "threshold": StepSpec(ThresholdParams, threshold, frozenset({"gray"}), "mask",
                          "threshold: strict > above and/or < below, in the image's scale, "
                          "or otsu"),
    "hsv_range": StepSpec(HsvRangeParams, hsv_range, _COLOR, "mask",
                          "hsv_range: OpenCV HSV box, H 0-179, S/V 0-255, hue may wrap"),
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
                           "global"),
    "contour_fill": StepSpec(ContourFillParams, contour_fill, _MASK, "mask",
                             "contour_fill: findContours + drawContours(FILLED) = fill_holes",
                             "global"),
    "holes": StepSpec(HolesParams, holes, _MASK, "mask",
                      "holes: the background regions enclosed by the mask", "global"),
    "remove_small_objects": StepSpec(RemoveSmallObjectsParams, remove_small_objects, _MASK,
                                     "mask", "remove_small_objects: drop components smaller "
                                     "than min_area", "global"),
    "keep_largest": StepSpec(KeepLargestParams, keep_largest, _MASK, "mask",
                             "keep_largest: keep the n largest components", "global"),
    "keep_largest_holes": StepSpec(KeepLargestHolesParams, keep_largest_holes, _MASK, "mask",
                                   "keep_largest_holes: keep each object's n largest holes, "
                                   "fill the rest", "global"),
    "pen_ink": StepSpec(PenInkParams, pen_ink, _COLOR, "mask",
                        "pen_ink: blue, green, red (HSV bands) and black (neutral dark) ink"),
    "black": StepSpec(BlackParams, black, _COLOR, "mask",
                      "black: neutral dark pixels, max channel <= max_value, spread <= "
                      "max_chroma"),
    "sharpness": StepSpec(SharpnessParams, sharpness, frozenset({"gray"}), "gray",
                          "sharpness: detail per cell relative to contrast, Gaussian-"
                          "averaged over non-glass pixels (blur is low); one pixel per cell",
                          "neighbourhood",
                          reduces="cell"),
    "flat": StepSpec(FlatParams, flat, frozenset({"gray"}), "mask",
                     "flat: |grey - local mean| < max_diff (bubbles, flat areas)",
                     "neighbourhood"),
    "straight_bands": StepSpec(StraightBandsParams, straight_bands, _MASK, "mask",
                               "straight_bands: the mask's straight runs along rows or "
                               "columns (scan borders, coverslip edges)", "neighbourhood"),
    "touching_edge": StepSpec(TouchingEdgeParams, touching_edge, _MASK, "mask",
                              "touching_edge: the components that touch the image's edge",
                              "global"),
}
"""Step name -> :class:`StepSpec`. Add an entry here to make a new public function
configurable; the step model is generated from this dict when the module is imported."""


class _StepBase(StrictModel):
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
    def params(self) -> StrictModel:
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
"""A mask's list of steps: each a :data:`Step`, and together a chain that ends as a mask."""
