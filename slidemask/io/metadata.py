"""Physical pixel size and vendor from TIFF metadata.

Readers of Aperio SVS, OME-TIFF, Hamamatsu NDPI, PerkinElmer/Akoya QPTIFF and plain TIFF
resolution tags. Every function returns micrometres per level-0 pixel, or ``None`` when the
file does not say (never a guess).
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from typing import Any

import tifffile

# A resolution tag coarser than this is a screen or print default (72 dpi is 353 µm/px), not a
# microscope scan; plain TIFF exports routinely carry such values.
_MAX_PLAUSIBLE_MPP = 100.0

_OME_UNITS_TO_UM = {
    "pm": 1e-6,
    "nm": 1e-3,
    "µm": 1.0,
    "um": 1.0,
    "\u03bcm": 1.0,
    "mm": 1e3,
    "cm": 1e4,
    "m": 1e6,
}


def vendor_of(tf: tifffile.TiffFile) -> str:
    """Name of the scanner format tifffile recognises (``"generic"`` when none)."""
    for flag, name in (
        ("is_svs", "aperio"),
        ("is_ndpi", "hamamatsu"),
        ("is_qpi", "qptiff"),
        ("is_ome", "ome"),
        ("is_philips", "philips"),
        ("is_scn", "leica"),
        ("is_bif", "ventana"),
    ):
        if getattr(tf, flag, False):
            return name
    return "generic"


def _plausible(mpp: float | None) -> float | None:
    if mpp is None or not (0.0 < mpp < _MAX_PLAUSIBLE_MPP):
        return None
    return float(mpp)


def aperio_mpp(description: str) -> float | None:
    """``MPP = 0.4990`` from an Aperio ImageDescription."""
    match = re.search(r"\bMPP\s*=\s*([0-9.eE+-]+)", description)
    return _plausible(float(match.group(1))) if match else None


def aperio_magnification(description: str) -> float | None:
    """``AppMag = 20`` from an Aperio ImageDescription."""
    match = re.search(r"\bAppMag\s*=\s*([0-9.]+)", description)
    return float(match.group(1)) if match else None


def ome_mpp(xml: str) -> float | None:
    """``PhysicalSizeX`` of the first OME ``Pixels`` element, converted to µm."""
    try:
        root = ET.fromstring(xml)
    except ET.ParseError:
        return None
    for element in root.iter():
        if element.tag.endswith("Pixels") and "PhysicalSizeX" in element.attrib:
            unit = element.attrib.get("PhysicalSizeXUnit", "µm")
            scale = _OME_UNITS_TO_UM.get(unit)
            if scale is None:
                return None
            return _plausible(float(element.attrib["PhysicalSizeX"]) * scale)
    return None


def qptiff_mpp(description: str) -> float | None:
    """``<PixelSizeMicrons>`` from a PerkinElmer/Akoya QPTIFF XML description."""
    match = re.search(r"<PixelSizeMicrons>\s*([0-9.eE+-]+)\s*</PixelSizeMicrons>", description)
    return _plausible(float(match.group(1))) if match else None


def resolution_tag_mpp(page: tifffile.TiffPage) -> float | None:
    """µm per pixel from XResolution/ResolutionUnit (inch or centimetre); None for unit NONE."""
    tags = page.tags
    xres_tag = tags.get("XResolution")
    unit_tag = tags.get("ResolutionUnit")
    if xres_tag is None or unit_tag is None:
        return None
    numerator, denominator = xres_tag.value
    if numerator == 0 or denominator == 0:
        return None
    pixels_per_unit = numerator / denominator
    unit = int(unit_tag.value)
    if unit == 2:  # inch
        return _plausible(25400.0 / pixels_per_unit)
    if unit == 3:  # centimetre
        return _plausible(10000.0 / pixels_per_unit)
    return None


def slide_mpp(tf: tifffile.TiffFile, vendor: str, page: tifffile.TiffPage) -> float | None:
    """Best available µm per level-0 pixel: the vendor's own field first, then resolution tags."""
    description = page.description or ""
    mpp: float | None = None
    if vendor == "aperio":
        mpp = aperio_mpp(description)
    elif vendor == "ome" and tf.ome_metadata:
        mpp = ome_mpp(tf.ome_metadata)
    elif vendor == "qptiff":
        mpp = qptiff_mpp(description)
    if mpp is None:
        mpp = resolution_tag_mpp(page)
    return mpp


def vendor_properties(
    tf: tifffile.TiffFile, vendor: str, page: tifffile.TiffPage
) -> dict[str, Any]:
    """Small JSON-able set of vendor facts worth showing in ``slidemask info``."""
    props: dict[str, Any] = {}
    description = page.description or ""
    if vendor == "aperio":
        props["magnification"] = aperio_magnification(description)
        props["description"] = description.splitlines()[0][:120] if description else ""
    elif vendor == "hamamatsu":
        ndpi = getattr(page, "ndpi_tags", None) or getattr(tf, "ndpi_tags", None) or {}
        if "Magnification" in ndpi:
            props["magnification"] = float(ndpi["Magnification"])
        if "Model" in ndpi:
            props["model"] = str(ndpi["Model"])
    elif vendor == "qptiff":
        match = re.search(r"<Objective>\s*([^<]+)\s*</Objective>", description)
        if match:
            props["objective"] = match.group(1).strip()
    software = page.tags.get("Software")
    if software is not None:
        props["software"] = str(software.value)[:120]
    return props
