"""Exceptions raised by slidemask.

Every error names what it is about: the slide path, the pyramid level and tile,
or the configuration file and key.
"""

from __future__ import annotations


class SlidemaskError(Exception):
    """Base class of every error slidemask raises on purpose.

    Catch it to handle any of :class:`SlideError`, :class:`TileError`, :class:`ConfigError`
    and :class:`MaskError`; the message always names what is at fault.

    Examples
    --------
    >>> from slidemask import SlidemaskError, open_slide
    >>> try:
    ...     open_slide("missing.svs")
    ... except SlidemaskError as error:
    ...     print(type(error).__name__, str(error).endswith("missing.svs: file not found"))
    SlideError True
    """


class SlideError(SlidemaskError):
    """A slide cannot be opened or read: missing, not a TIFF, truncated, corrupt tile.

    Parameters
    ----------
    path : str or os.PathLike
        The slide file.
    reason : str
        What is wrong, for a person.

    Attributes
    ----------
    path : str
        The slide file, as given.
    reason : str
        What is wrong; the message is ``"<path>: <reason>"``.

    Examples
    --------
    >>> from slidemask import SlideError
    >>> error = SlideError("scans/a.svs", "file not found")
    >>> str(error), error.path
    ('scans/a.svs: file not found', 'scans/a.svs')
    """

    def __init__(self, path: object, reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


class TileError(SlideError):
    """One tile or strip of a slide failed to read or decode (raised at compute time).

    Parameters
    ----------
    path : str or os.PathLike
        The slide file.
    level : int
        The pyramid level.
    row, col : int
        The tile's (or strip's) first pixel, in that level's pixels.
    reason : str
        The decoder's or reader's error.

    Attributes
    ----------
    level, row, col : int
        As given; ``path`` and ``reason`` as for :class:`SlideError`.

    Examples
    --------
    >>> from slidemask import TileError
    >>> error = TileError("a.svs", 1, 512, 1024, "JPEG error")
    >>> print(error)
    a.svs: level 1, tile at level pixel (row 512, col 1024): JPEG error
    >>> isinstance(error, SlideError)
    True
    """

    def __init__(
        self, path: object, level: int, row: int, col: int, reason: str
    ) -> None:
        self.level = level
        self.row = row
        self.col = col
        super().__init__(
            path, f"level {level}, tile at level pixel (row {row}, col {col}): {reason}"
        )


class ConfigError(SlidemaskError):
    """A configuration file is unreadable or invalid; the message names the file and key path.

    One line per problem, ``<source>: <key path>: <what is wrong>``.

    Examples
    --------
    >>> from slidemask import ConfigError
    >>> from slidemask.config import config_from_yaml
    >>> try:
    ...     config_from_yaml("masks: {tissue: [{threshold: {abve: 3}}]}", source="t.yaml")
    ... except ConfigError as error:
    ...     print(error)
    t.yaml: masks.tissue[0].threshold.abve: unknown key (allowed: above, below);
    did you mean 'above'
    """


class MaskError(SlidemaskError, ValueError):
    """A mask operation was called with arguments that cannot give a meaningful mask.

    Also a :class:`ValueError`. Raised when the operation is called (before any computing),
    except where a value is only known when computed (e.g. an Otsu threshold of no pixels).

    Examples
    --------
    >>> import dask.array as da
    >>> from slidemask import MaskError, threshold
    >>> try:
    ...     threshold(da.zeros((4, 4), dtype="uint8", chunks=2), above=300)
    ... except MaskError as error:
    ...     print(str(error).split(" (")[0])
    threshold: above=300 is outside the uint8 image's value range 0..255
    """
