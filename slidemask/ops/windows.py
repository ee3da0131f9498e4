"""A neighbourhood kernel with its halo, and chains of them that share one halo window.

:class:`KernelStep` is one numpy kernel and the halo (depth, in pixels) it needs to be exact;
:class:`KernelChain` applies several to one window, whose halo is the sum of theirs.
:func:`slidemask.ops.scratch.map_windows` runs a chain on halo windows read back from a
scratch copy of its input, so peak memory does not depend on the slide's width (a plain
``map_overlap`` keeps finished blocks until their neighbours have run: 661 MiB for a median 7
at 40960^2 with 2048^2 chunks, against 173 MiB for a per-pixel threshold). Windows are clipped
at the true image edges, so each kernel applies its own border rule there, as on the whole
image.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass(frozen=True)
class KernelStep:
    """One numpy kernel ``fn(tile, **kwargs)`` and the halo it needs, in pixels.

    Parameters
    ----------
    fn : callable
        ``fn(window, **kwargs) -> ndarray`` of the window's shape (a kernel of
        :mod:`slidemask.kernels`).
    depth : int
        Halo in pixels of the image: ``fn`` is exact that far inside each window edge.
        Per-pixel kernels have depth 0.
    kwargs : dict
        Keyword arguments of ``fn``.

    Examples
    --------
    >>> import numpy as np
    >>> from slidemask.kernels.filters import median_blur, median_depth
    >>> from slidemask.kernels.threshold import threshold_mask
    >>> steps = [KernelStep(median_blur, median_depth(3), {"ksize": 3}),
    ...          KernelStep(threshold_mask, 0, {"below": 128})]
    >>> KernelStep.chain_dtype(steps, np.uint8)
    dtype('bool')
    """

    fn: Callable[..., np.ndarray]
    depth: int
    kwargs: dict[str, Any] = field(default_factory=dict)

    @staticmethod
    def chain_dtype(steps: Sequence[KernelStep], dtype: Any) -> np.dtype:
        """Output dtype of ``steps`` applied to a ``dtype`` image (probed on one pixel).

        Parameters
        ----------
        steps : sequence of KernelStep
            Kernels in order.
        dtype : numpy.dtype or type
            The input image's dtype.

        Returns
        -------
        numpy.dtype
            The dtype the last step returns.
        """
        return KernelChain(tuple(steps))(np.zeros((1, 1), dtype=dtype)).dtype


@dataclass(frozen=True)
class KernelChain:
    """Kernels applied one after another to a window; the halo of the chain is their sum.

    Parameters
    ----------
    steps : tuple of KernelStep
        Applied first to last.

    Examples
    --------
    >>> import numpy as np
    >>> from slidemask.kernels.filters import median_blur, median_depth
    >>> from slidemask.kernels.morphology import binary_morphology, morphology_depth
    >>> chain = KernelChain((
    ...     KernelStep(median_blur, median_depth(5), {"ksize": 5}),
    ...     KernelStep(binary_morphology, morphology_depth("closing", 2),
    ...                {"op": "closing", "radius": 2}),
    ... ))
    >>> chain.depth  # 2 + 2 * 2 pixels
    6
    """

    steps: tuple[KernelStep, ...]

    @property
    def depth(self) -> int:
        """Halo of the whole chain in pixels: the sum of its steps' depths."""
        return sum(step.depth for step in self.steps)

    def __call__(self, window: np.ndarray) -> np.ndarray:
        for step in self.steps:
            window = step.fn(window, **step.kwargs)
        return window
