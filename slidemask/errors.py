"""Exceptions raised by slidemask.

Every error names what it is about: the slide path, the pyramid level and tile,
or the configuration file and key.
"""

from __future__ import annotations


class SlidemaskError(Exception):
    """Base class of every error slidemask raises on purpose."""


class SlideError(SlidemaskError):
    """A slide cannot be opened or read: missing, not a TIFF, truncated, corrupt tile."""

    def __init__(self, path: object, reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


class TileError(SlideError):
    """One tile or strip of a slide failed to read or decode (raised at compute time)."""

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
    """A configuration file is unreadable or invalid; the message names the file and key path."""


class MaskError(SlidemaskError, ValueError):
    """A mask operation was called with arguments that cannot give a meaningful mask."""
