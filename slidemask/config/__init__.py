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
(``masks.tissue[4].remove_small_objects: min_area_um2: ...``), unless the config gives
``default_mpp: 0.5`` (µm per level-0 pixel, for slides that do not state theirs; ``slidemask
run --mpp``); a slide's own pixel size always wins. ``resolution: {downsample: N}`` and
``{level: N}`` need no pixel size, so a recipe in pixels runs on any slide.

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

The package holds five modules: :mod:`~slidemask.config.params` (each step's parameter model),
:mod:`~slidemask.config.steps` (the registry :data:`STEPS`), :mod:`~slidemask.config.expression`
(the ``& | ~`` language of ``output``), :mod:`~slidemask.config.models` (:class:`Config`,
:func:`config_hash`) and :mod:`~slidemask.config.loading` (YAML, error messages, the default).
"""

from slidemask.config.expression import Expr, parse_expression
from slidemask.config.loading import (
    DEFAULT_CONFIG_YAML,
    config_from_yaml,
    default_config,
    load_config,
    parse_config,
)
from slidemask.config.models import Config, Outputs, Resolution, config_hash
from slidemask.config.params import OTSU
from slidemask.config.steps import STEPS, StepSpec

__all__ = [
    "DEFAULT_CONFIG_YAML",
    "OTSU",
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
