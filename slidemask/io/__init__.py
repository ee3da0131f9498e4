"""Slide readers: open a file lazily, expose its pyramid levels as dask arrays."""

from slidemask.io.tiff import DEFAULT_CHUNK_SIZE, Slide, open_slide, slide_name

__all__ = ["DEFAULT_CHUNK_SIZE", "Slide", "open_slide", "slide_name"]
