"""The installed slidemask version, looked up once for outputs, reports and ``__version__``."""

from __future__ import annotations

from functools import cache
from importlib import metadata

__all__ = ["UNKNOWN_VERSION", "package_version"]

UNKNOWN_VERSION = "0+unknown"
"""The version reported by a source tree that was never installed (a valid PEP 440 version,
so tools that parse versions still can)."""


@cache
def package_version() -> str:
    """The installed slidemask version, or :data:`UNKNOWN_VERSION` when running from a source
    tree that was never installed."""
    try:
        return metadata.version("slidemask")
    except metadata.PackageNotFoundError:
        return UNKNOWN_VERSION
