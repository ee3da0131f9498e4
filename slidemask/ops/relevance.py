"""Where a mask matters: the pixels at which its value can change a configuration's outputs.

A configuration combines its masks with ``&``, ``|`` and ``~`` (the ``output`` expression and
each class of ``classes:``). A mask's value at a pixel changes an expression there only where
the expression's Boolean difference with respect to that mask holds::

    e(mask = True) XOR e(mask = False)

which is a function of the *other* masks alone. In ``blur & tissue & ~glass`` it is
``tissue & ~glass``; in ``tissue & ~(pen | ((flat | blur) & ~glass))`` it is ``tissue & ~pen &
~flat & ~glass``. Outside the union of these regions every output is the same whatever the
mask holds, so a step that can leave out work (:func:`slidemask.ops.artifacts.sharpness`'s
``where``: blur is judged on tissue that is not glass, and the 2 µm-per-pixel tiles that hold
only glass are then not decoded) may compute only there, plus the reach of the steps that
follow it, and every output stays exactly what the full computation gives.

:func:`relevant_region` builds that region lazily from masks already built;
:func:`gate_arguments` gives the configuration runner the extra keyword arguments of a step
that can use it (``where`` and ``margin`` of ``sharpness``), or none.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import dask.array as da
import numpy as np

from slidemask.config.expression import Expr
from slidemask.ops.packed import evaluate_stored

__all__ = ["boolean_difference", "gate_arguments", "relevant_region", "step_reach"]

Folded = Expr | bool
"""An expression after constant folding: a constant, or an expression without constants."""


def _substitute(expr: Expr, name: str, value: bool) -> Folded:
    """``expr`` with mask ``name`` replaced by the constant ``value``, constants folded."""
    if expr.op == "name":
        return value if expr.name == name else expr
    args = [_substitute(a, name, value) for a in expr.args]
    if expr.op == "not":
        return _not(args[0])
    return _and(args[0], args[1]) if expr.op == "and" else _or(args[0], args[1])


def _not(a: Folded) -> Folded:
    if isinstance(a, bool):
        return not a
    return a.args[0] if a.op == "not" else Expr("not", args=(a,))


def _and(a: Folded, b: Folded) -> Folded:
    if a is False or b is False:
        return False
    if a is True:
        return b
    if b is True:
        return a
    return Expr("and", args=(a, b))


def _or(a: Folded, b: Folded) -> Folded:
    if a is True or b is True:
        return True
    if a is False:
        return b
    if b is False:
        return a
    return Expr("or", args=(a, b))


def boolean_difference(expr: Expr, name: str) -> Folded:
    """Where mask ``name`` can change ``expr``: ``expr(name = True) XOR expr(name = False)``.

    Parameters
    ----------
    expr : slidemask.config.Expr
        A parsed mask expression.
    name : str
        One of its masks.

    Returns
    -------
    slidemask.config.Expr or bool
        An expression over the other masks only, or a constant: False when ``expr`` does
        not depend on ``name``, True when it does at every pixel.

    Examples
    --------
    >>> from slidemask.config import parse_expression
    >>> str(boolean_difference(parse_expression("blur & tissue & ~glass"), "blur"))
    'tissue & ~glass'
    >>> boolean_difference(parse_expression("tissue & ~glass"), "blur")
    False
    >>> boolean_difference(parse_expression("~blur"), "blur")
    True
    """
    if name not in expr.names():
        return False
    on, off = _substitute(expr, name, True), _substitute(expr, name, False)
    if on == off:
        return False
    return _or(_and(on, _not(off)), _and(_not(on), off))


def relevant_region(
    expressions: Sequence[Expr], name: str, masks: Mapping[str, da.Array]
) -> da.Array | None:
    """Lazy bool mask of the pixels where mask ``name`` can change any of ``expressions``.

    Parameters
    ----------
    expressions : sequence of slidemask.config.Expr
        The expressions the masks feed (a configuration's ``output`` and its classes).
    name : str
        The mask.
    masks : mapping of str to dask.array.Array
        Masks already built, all of one shape (the configuration's working grid).

    Returns
    -------
    dask.array.Array or None
        The union of the :func:`boolean_difference` regions, evaluated on ``masks``; None when
        it is every pixel, or names a mask that is not in ``masks`` (it cannot be bounded
        yet), or when ``masks`` is empty and the region is not empty.
    """
    differences = [boolean_difference(e, name) for e in expressions]
    if any(d is True for d in differences):
        return None
    terms = [d for d in differences if not isinstance(d, bool)]
    if any(n not in masks or n == name for t in terms for n in t.names()):
        return None
    if not terms:
        if not masks:
            return None
        first = next(iter(masks.values()))
        return da.zeros(first.shape, dtype=bool, chunks=first.chunks)
    def region_of(values: Mapping[str, Any]) -> Any:
        region = terms[0].evaluate(values)
        for term in terms[1:]:
            region = region | term.evaluate(values)
        return region

    # masks read back from scratch are read one at a time per chunk, not all at once
    used = set().union(*(term.names() for term in terms))
    read = [n for n in masks if n in used]
    stored = evaluate_stored(region_of, {n: masks[n] for n in read}, label="relevant-region")
    return region_of(masks) if stored is None else stored


def step_reach(step: str, kwargs: Mapping[str, Any]) -> int | None:
    """How far (pixels, Chebyshev distance) a configured step's output pixel looks into its
    input, or None when it looks at the whole image (a global step) or is not known here.

    Parameters
    ----------
    step : str
        The step's name in the configuration (:data:`slidemask.config.STEPS`).
    kwargs : mapping
        Its keyword arguments in pixels (``params.arguments(mpp)``).

    Returns
    -------
    int or None
        0 for pointwise steps, the declared halo for neighbourhood steps.
    """
    from slidemask.config.params import OTSU
    from slidemask.kernels.artifacts import flat_depth, straight_band_depth
    from slidemask.kernels.filters import mean_blur_depth, median_depth
    from slidemask.kernels.morphology import morphology_depth, square_depth

    if step in ("gray", "saturation", "rgb_mean", "hsv_range", "pen_ink", "black"):
        return 0
    if step == "threshold":
        return None if OTSU in (kwargs.get("above"), kwargs.get("below")) else 0
    if step in ("optical_density", "white_balance"):
        return 0 if kwargs.get("background") is not None else None
    if step in ("dilation", "erosion", "opening", "closing"):
        return morphology_depth(step, int(kwargs["radius"]))  # type: ignore[arg-type]
    if step.startswith("square_"):
        return square_depth(step.removeprefix("square_"), int(kwargs["size"]))  # type: ignore[arg-type]
    if step == "median_blur":
        return median_depth(int(kwargs["ksize"]))
    if step == "mean_blur":
        return mean_blur_depth(int(kwargs["ksize"]))
    if step == "flat":
        return flat_depth(int(kwargs["ksize"]))
    if step == "straight_bands":
        return straight_band_depth(int(kwargs["length"]), int(kwargs["width"]))
    return None


def gate_arguments(
    config: Any,
    name: str,
    index: int,
    kwargs: Mapping[str, Any],
    masks: Mapping[str, da.Array],
    *,
    image_shape: tuple[int, ...],
    downsample: float,
    mpp: float | None,
    working_downsample: float,
    working_shape: tuple[int, ...],
) -> dict[str, Any]:
    """Extra keyword arguments for step ``index`` of mask ``name``: where it may leave out
    work, so that every output of ``config`` stays what the full computation gives.

    Today the ``sharpness`` step (:func:`slidemask.ops.artifacts.sharpness`): ``where`` is
    the :func:`relevant_region` of the mask over the ``output`` expression and the classes,
    moved onto the step's cell grid, and ``margin`` the summed :func:`step_reach` of the steps
    after it, in cells. No extra arguments (the full computation) when the region cannot be
    bounded by the masks built so far (list the masks it needs before this one), when a later
    step is global (an area filter, an Otsu threshold) or when the cell grid is not the
    working grid or an integer subdivision of it.

    Parameters
    ----------
    config : slidemask.config.Config
        The configuration.
    name : str
        The mask being built.
    index : int
        Its step about to be applied.
    kwargs : mapping
        That step's keyword arguments (pixels of the image it is applied to).
    masks : mapping of str to dask.array.Array
        The masks built so far, on the working grid.
    image_shape : tuple of int
        Shape of the image the step is applied to (rows and columns first).
    downsample : float
        Level-0 pixels per pixel of that image.
    mpp : float or None
        µm per pixel of that image (for the later steps' sizes in µm).
    working_downsample : float
        Level-0 pixels per pixel of the working grid.
    working_shape : tuple of int
        Shape of the working grid (rows and columns first).

    Returns
    -------
    dict
        ``{"where": ..., "margin": ...}`` or ``{}``.

    Notes
    -----
    The mask built with these arguments may differ from the full computation only outside
    the region, where no output reads it (the stored bits of the mask there are not the
    measurement: compare outputs, not the intermediate mask).
    """
    from slidemask.config import parse_expression

    steps = config.steps_of(name)
    if steps[index].name != "sharpness":
        return {}
    cell = int(kwargs["cell"])
    scale = working_downsample / (downsample * cell)
    k = round(scale)
    if k < 1 or abs(scale - k) > 1e-6 * scale:
        return {}
    cell_mpp = None if mpp is None else mpp * cell
    margin = 0
    for later in steps[index + 1 :]:
        try:
            reach = step_reach(later.name, later.arguments(cell_mpp))
        except Exception:  # noqa: BLE001 - the step itself reports its error when applied
            return {}
        if reach is None or later.spec.reduces is not None:
            return {}
        margin += reach
    expressions = [config.expression]
    if config.classes is not None:
        expressions += [parse_expression(t) for t in config.classes.masks.values()]
    region = relevant_region(expressions, name, masks)
    if region is None or tuple(region.shape) != tuple(working_shape[:2]):
        return {}
    if k > 1:  # a working pixel is the block maximum of k x k cells (resample_mask)
        region = da.repeat(da.repeat(region, k, axis=0), k, axis=1)
    cells = (int(image_shape[0]) // cell, int(image_shape[1]) // cell)
    region = region[: cells[0], : cells[1]]
    pad = (cells[0] - region.shape[0], cells[1] - region.shape[1])
    if pad[0] or pad[1]:  # cells beyond the working grid: no output pixel reads them
        region = da.pad(region, ((0, pad[0]), (0, pad[1])), mode="constant",
                        constant_values=np.False_)
    return {"where": region, "margin": margin}
