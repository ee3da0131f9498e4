"""The configuration model: resolution, masks, output expression, outputs, execution.

:class:`Config` is one validated configuration file (the format is described in
:mod:`slidemask.config`); :class:`Resolution` says where masks are computed and
:class:`Outputs` which files are written besides ``<name>.zarr``. :func:`config_hash` is the
SHA-256 of the canonical JSON form (:meth:`Config.canonical`): it ignores formatting, key
order, comments, redundant parentheses in ``output`` and the ``execution`` section, so equal
masks give equal hashes.
"""

from __future__ import annotations

import hashlib
import json
import keyword
from collections.abc import Mapping
from typing import Annotated, Any, ClassVar

from pydantic import Discriminator, Field, Tag, field_validator, model_validator

from slidemask.config.expression import Expr, parse_expression
from slidemask.config.params import StrictModel
from slidemask.config.steps import StepList
from slidemask.distributed import ExecutionConfig
from slidemask.errors import ConfigError
from slidemask.tiles.spec import TileSpec

__all__ = ["Classes", "Config", "MaskName", "MaskSpec", "Outputs", "Resolution", "config_hash"]

MaskName = Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")]
"""A mask's name: an identifier, so that output expressions can name it."""


class Resolution(StrictModel):
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


class MaskSpec(StrictModel):
    """A mask computed at its own resolution: ``{resolution: {...}, steps: [...]}``.

    Its steps run on the slide at ``resolution`` (micrometres converted at that resolution);
    the mask is then resampled to the configuration's resolution before the ``output``
    expression and the class map combine it (:func:`slidemask.pipeline.build_mask`): by block
    maximum when it is finer (a pixel is set when any mask pixel it covers is), by nearest
    neighbour otherwise.
    """

    resolution: Resolution
    steps: StepList


def _mask_form(value: Any) -> str:
    return "mapping" if isinstance(value, Mapping) else "list"


MaskEntry = Annotated[
    Annotated[StepList, Tag("list")] | Annotated[MaskSpec, Tag("mapping")],
    Discriminator(_mask_form),
]
"""A mask: a list of steps (at the configuration's resolution) or a :class:`MaskSpec`."""

ClassName = Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")]


class Classes(StrictModel):
    """The labelled class map (:func:`slidemask.ops.artifacts.class_map`).

    ``masks`` maps each class to an expression over the configuration's masks (``blur &
    tissue``); a pixel takes the first class in ``precedence`` whose expression holds there,
    else background (0). ``precedence`` defaults to the built-in order
    (:data:`slidemask.ops.artifacts.QC_PRECEDENCE`: border, pen, fold, bubble, blur, tissue)
    and ``values`` (label values 1-255) to the built-in numbering (1 tissue, 2 pen, 3 blur,
    4 fold, 5 bubble, 6 border); classes outside them need both.
    """

    masks: dict[ClassName, str] = Field(min_length=1)
    precedence: list[ClassName] | None = None
    values: dict[ClassName, int] | None = None

    _OMIT_IF_NONE: ClassVar[frozenset[str]] = frozenset({"precedence", "values"})

    @field_validator("masks")
    @classmethod
    def _expressions(cls, masks: dict[str, str]) -> dict[str, str]:
        if "background" in masks:
            raise ValueError("background is label 0, where no class applies; do not define it")
        for name, text in masks.items():
            try:
                parse_expression(text)
            except ConfigError as exc:
                raise ValueError(f"{name}: {exc}") from None
        return masks

    @model_validator(mode="after")
    def _order_and_values(self) -> Classes:
        from slidemask.errors import MaskError
        from slidemask.ops.artifacts import QC_PRECEDENCE, class_values

        order = self.order
        if self.precedence is None:
            unknown = [n for n in self.masks if n not in QC_PRECEDENCE]
            if unknown:
                raise ValueError(
                    "give precedence: for classes outside the built-in order "
                    f"({', '.join(unknown)})"
                )
        elif sorted(order) != sorted(self.masks) or len(set(order)) != len(order):
            problems = [
                *(f"{n!r} is not a class" for n in dict.fromkeys(order) if n not in self.masks),
                *(f"{n!r} is missing" for n in self.masks if n not in order),
                *(f"{n!r} is named twice" for n in dict.fromkeys(order) if order.count(n) > 1),
            ]
            raise ValueError(
                f"precedence must name every class once: {'; '.join(problems)} (classes: "
                f"{', '.join(self.masks)})"
            )
        try:
            class_values(order, self.values)
        except MaskError as exc:
            message = str(exc).removeprefix("class_map: ")
            # the values' own key when they were given (the numbers are theirs)
            where = "values: " if self.values and "label values" in message else ""
            raise ValueError(where + message) from None
        return self

    @property
    def order(self) -> list[str]:
        """Class names, highest precedence first."""
        if self.precedence is not None:
            return list(self.precedence)
        from slidemask.ops.artifacts import QC_PRECEDENCE

        return [n for n in QC_PRECEDENCE if n in self.masks]

    def label_values(self) -> dict[str, int]:
        """Label value of each class, in precedence order."""
        from slidemask.ops.artifacts import class_values

        return class_values(self.order, self.values)

    def canonical(self) -> dict[str, Any]:
        data = super().canonical()
        data["masks"] = {k: str(parse_expression(v)) for k, v in self.masks.items()}
        return data


class Outputs(StrictModel):
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



class Config(StrictModel):
    """A validated mask configuration (see the module docstring for the format)."""

    resolution: Resolution = Field(
        default_factory=lambda: Resolution(level=0, mpp=None, downsample=None)
    )
    masks: dict[MaskName, MaskEntry] = Field(min_length=1)
    output: str
    classes: Classes | None = Field(
        None, description="the labelled class map: class -> expression over masks, precedence"
    )
    chunk_size: int = Field(2048, ge=64, le=16384, description="working chunk edge, pixels")
    default_mpp: float | None = Field(
        None, gt=0, le=1000,
        description="micrometres per level-0 pixel of a slide that does not state its pixel "
        "size (a plain TIFF, some frozen-section scans); a slide's own value always wins",
    )
    outputs: Outputs = Field(
        default_factory=Outputs,
        description="extra outputs beside <name>.zarr: ome_zarr, geojson, preview, summary",
    )
    tiles: TileSpec | None = Field(
        default=None,
        description="patch coordinates beside each mask (slidemask.tiles.TileSpec); not part "
        "of the mask's config hash: the tiles' manifest records their own",
    )
    execution: ExecutionConfig = Field(
        default_factory=lambda: ExecutionConfig.model_validate({}),
        description="where slides run (threads, processes, a scheduler address, slurm, pbs); "
        "see slidemask.distributed.ExecutionConfig",
    )

    storage_options: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        repr=False,
        description="fsspec options per protocol for slides and outputs given as URLs, e.g. "
        "{s3: {endpoint_url: 'http://127.0.0.1:9000'}} (slidemask.storage); credentials here "
        "are never hashed, logged or written to reports or provenance",
    )

    # Keys that describe how to run rather than what to compute; never part of the hash.
    _NOT_HASHED: ClassVar[frozenset[str]] = frozenset({"execution", "storage_options"})

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

    @field_validator("classes")
    @classmethod
    def _class_masks_defined(cls, classes: Classes | None, info: Any) -> Classes | None:
        masks = info.data.get("masks")
        if classes is not None and isinstance(masks, Mapping):
            for name, text in classes.masks.items():
                unknown = sorted(parse_expression(text).names() - set(masks))
                if unknown:
                    raise ValueError(
                        f"masks.{name}: unknown mask {unknown[0]!r} (defined: {', '.join(masks)})"
                    )
        return classes

    @field_validator("tiles")
    @classmethod
    def _tile_classes_in_the_class_map(cls, tiles: TileSpec | None, info: Any) -> TileSpec | None:
        """Tiles by class read the class map, which ``classes:`` writes into the OME-Zarr."""
        if tiles is None or not tiles.classes:
            return tiles
        classes, outputs = info.data.get("classes"), info.data.get("outputs")
        if classes is None or outputs is None or not outputs.ome_zarr:
            raise ValueError(
                "classes: tiles by class read the class map <name>.ome.zarr/labels/classes: "
                "give the config a classes: section and outputs: {ome_zarr: true}"
            )
        values = classes.label_values()
        unknown = sorted(n for n, v in tiles.classes.items() if v not in values.values())
        if unknown:
            raise ValueError(
                f"classes.{unknown[0]}: {tiles.classes[unknown[0]]} is not a label value of the "
                f"class map ({', '.join(f'{n} {v}' for n, v in values.items())})"
            )
        return tiles

    @property
    def expression(self) -> Expr:
        """The parsed ``output`` expression."""
        return parse_expression(self.output)

    def steps_of(self, name: str) -> list[Any]:
        """The steps of mask ``name``, whichever form it was given in."""
        entry = self.masks[name]
        return list(entry.steps if isinstance(entry, MaskSpec) else entry)

    def resolution_of(self, name: str) -> Resolution | None:
        """The resolution mask ``name`` is computed at, when it has its own; else None."""
        entry = self.masks[name]
        return entry.resolution if isinstance(entry, MaskSpec) else None

    def canonical(self) -> dict[str, Any]:
        """Plain-JSON form with defaults filled in; equal configs give equal dicts."""
        data: dict[str, Any] = {
            "resolution": self.resolution.canonical(),
            "masks": {
                name: _canonical_mask(entry) for name, entry in self.masks.items()
            },
            "output": str(self.expression),
            "chunk_size": self.chunk_size,
        }
        if self.classes is not None:  # hashed only when used: older configs keep their hash
            data["classes"] = self.classes.canonical()
        if self.default_mpp is not None:  # the same: hashed only when set
            data["default_mpp"] = self.default_mpp
        if self.outputs != Outputs():
            data["outputs"] = self.outputs.canonical()
        return {k: v for k, v in data.items() if k not in self._NOT_HASHED}


def _canonical_mask(entry: Any) -> Any:
    if isinstance(entry, MaskSpec):
        return {
            "resolution": entry.resolution.canonical(),
            "steps": [step.canonical() for step in entry.steps],
        }
    return [step.canonical() for step in entry]


def config_hash(config: Config) -> str:
    """SHA-256 (hex) of the configuration's canonical JSON: same masks, same hash.

    Formatting, comments, key order and redundant parentheses in ``output`` do not change it;
    ``execution`` is left out. A batch skips a slide whose complete output records this hash.

    Parameters
    ----------
    config : Config
        A validated configuration.

    Returns
    -------
    str
        64 hexadecimal digits.

    Examples
    --------
    >>> from slidemask import config_hash
    >>> from slidemask.config import config_from_yaml
    >>> a = config_from_yaml("masks: {tissue: [{gray: {}}, {threshold: {below: 220}}]}")
    >>> b = config_from_yaml('''
    ... masks:        # the same masks, written differently
    ...   tissue:
    ...     - gray: {}
    ...     - threshold: {below: 220.0}
    ... execution: {scheduler: processes}
    ... ''')
    >>> config_hash(a) == config_hash(b), len(config_hash(a))
    (True, 64)
    """
    text = json.dumps(config.canonical(), sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(text.encode("ascii")).hexdigest()

