"""Deterministic synthetic H&E-like whole-slide images, written tile by tile.

The scene is defined analytically in level-0 pixel coordinates, so every tile of every pyramid
level is rendered on its own and the whole image is never in memory: a 100k x 100k slide needs
no more RAM than a 512 x 512 one. The demo, the tests and the benchmark all use this generator.

What the scene holds (all positions scale with the slide size):
- tissue: a handful of pink, textured ellipses with purple nuclei;
- holes: background ellipses inside the tissue, some centred on tile corners so they cross tiles;
- specks: small dark dots scattered over the background (debris an area filter should drop);
- a blue pen stroke, a sine-shaped band across the upper part of the slide.

With ``texture="noisy"`` the tissue is lighter and grainy, its grey straddling 200 the way
light eosin and stroma of a real H&E slide do, and the glass carries faint dust: a level-0
``grey < 200`` mask then has thousands of specks and pinholes per 2048² chunk (as thresholded
real slides have), where the default ``"smooth"`` texture gives solid tissue. The default
output is unchanged by the option.

``stain`` colours the (smooth) tissue: ``"he"`` (default) pink eosin with purple nuclei;
``"dab"`` an IHC slide, pale blue-grey haematoxylin counterstain with blue nuclei and patches
of brown DAB-positive nuclei (HSV saturation of the counterstain about 14, under the 20 that
a saturation threshold needs); ``"faint"`` pale, low-contrast pink tissue (a weak stain or a
thin frozen section: optical density about 0.1 summed over R, G and B).
:meth:`Scene.tissue_mask` gives the tissue the generator paints, as ground truth.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, cast

import numpy as np
import tifffile

BACKGROUND = np.array([242.0, 240.0, 244.0], dtype=np.float32)
EOSIN = np.array([226.0, 150.0, 196.0], dtype=np.float32)
HEMATOXYLIN = np.array([112.0, 72.0, 156.0], dtype=np.float32)
PEN_BLUE = np.array([48.0, 66.0, 170.0], dtype=np.float32)
SPECK = np.array([90.0, 80.0, 95.0], dtype=np.float32)
LIGHT_EOSIN = np.array([236.0, 188.0, 216.0], dtype=np.float32)  # grey about 205
DUST = np.array([150.0, 140.0, 150.0], dtype=np.float32)
TEXTURES = ("smooth", "noisy")
COUNTERSTAIN = np.array([214.0, 214.0, 226.0], dtype=np.float32)  # IHC: pale haematoxylin
COUNTER_NUCLEI = np.array([128.0, 134.0, 184.0], dtype=np.float32)
DAB = np.array([156.0, 104.0, 62.0], dtype=np.float32)  # brown, DAB-positive nuclei
FAINT = np.array([230.0, 216.0, 228.0], dtype=np.float32)  # OD sum about 0.1 against glass
FAINT_NUCLEI = np.array([200.0, 188.0, 214.0], dtype=np.float32)
STAINS = ("he", "dab", "faint")


@dataclass(frozen=True)
class Ellipse:
    """An axis-aligned ellipse in level-0 pixels: centre (cy, cx) and radii (ry, rx).

    Examples
    --------
    >>> import numpy as np
    >>> blob = Ellipse(cy=10.0, cx=20.0, ry=5.0, rx=10.0)
    >>> blob.inside(np.array([[10.0], [16.0]]), np.array([[29.0]])).ravel().tolist()
    [True, False]
    >>> blob.touches(0.0, 4.0, 0.0, 100.0)  # rows 0-4 lie above the ellipse
    False
    """

    cy: float
    cx: float
    ry: float
    rx: float

    def inside(self, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
        """Bool: which points (level-0 pixel coordinates, broadcast together) lie inside."""
        return ((ys - self.cy) / self.ry) ** 2 + ((xs - self.cx) / self.rx) ** 2 <= 1.0

    def touches(self, y0: float, y1: float, x0: float, x1: float) -> bool:
        """Whether the ellipse's bounding box meets the box ``[y0, y1] x [x0, x1]`` (level 0)."""
        return (
            self.cy + self.ry >= y0
            and self.cy - self.ry <= y1
            and self.cx + self.rx >= x0
            and self.cx - self.rx <= x1
        )


@dataclass(frozen=True)
class Scene:
    """The analytic content of a synthetic slide of ``rows`` x ``cols`` level-0 pixels.

    Examples
    --------
    >>> scene = Scene.make(512, 512, seed=0, tile=128)
    >>> len(scene.tissue), len(scene.holes)
    (6, 4)
    >>> scene.render(0, 0, 64, 64, downsample=8.0).shape  # all of level 3, 64 x 64 pixels
    (64, 64, 3)
    """

    rows: int
    cols: int
    tissue: tuple[Ellipse, ...]
    holes: tuple[Ellipse, ...]
    speck_cell: int
    seed: int
    texture: str = "smooth"
    stain: str = "he"

    @classmethod
    def make(
        cls,
        rows: int,
        cols: int,
        *,
        seed: int = 0,
        tile: int = 512,
        texture: str = "smooth",
        stain: str = "he",
    ) -> Scene:
        """The scene for a ``rows`` x ``cols`` slide: tissue ellipses, holes on tile corners.

        Raises
        ------
        ValueError
            ``texture`` is not one of :data:`TEXTURES`, ``stain`` not one of :data:`STAINS`,
            or a stain other than "he" with the noisy texture (which is H&E).
        """
        if texture not in TEXTURES:
            raise ValueError(f"texture must be one of {TEXTURES}, got {texture!r}")
        if stain not in STAINS:
            raise ValueError(f"stain must be one of {STAINS}, got {stain!r}")
        if texture == "noisy" and stain != "he":
            raise ValueError(f"texture='noisy' is H&E only, got stain={stain!r}")
        rng = np.random.default_rng(seed)
        scale = min(rows, cols)
        tissue = []
        for _ in range(6):
            tissue.append(
                Ellipse(
                    cy=float(rng.uniform(0.3, 0.8) * rows),
                    cx=float(rng.uniform(0.15, 0.85) * cols),
                    ry=float(rng.uniform(0.08, 0.2) * scale),
                    rx=float(rng.uniform(0.08, 0.2) * scale),
                )
            )
        holes = []
        for blob in tissue[:4]:
            # centre a hole on the tile corner nearest the blob centre, so it spans four tiles
            cy = round(blob.cy / tile) * tile if rows > 2 * tile else blob.cy
            cx = round(blob.cx / tile) * tile if cols > 2 * tile else blob.cx
            r = max(3.0, min(0.3 * min(blob.ry, blob.rx), 1.2 * tile))
            holes.append(Ellipse(cy=float(cy), cx=float(cx), ry=r, rx=0.7 * r))
        return cls(
            rows, cols, tuple(tissue), tuple(holes), speck_cell=max(64, tile // 2), seed=seed,
            texture=texture, stain=stain,
        )

    @staticmethod
    def _coordinates(
        y0: int, x0: int, rows: int, cols: int, downsample: float
    ) -> tuple[np.ndarray, np.ndarray]:
        """Level-0 coordinates of the centres of a level's pixels: (rows, 1) and (1, cols)."""
        ys = ((np.arange(y0, y0 + rows, dtype=np.float32) + 0.5) * downsample)[:, None]
        xs = ((np.arange(x0, x0 + cols, dtype=np.float32) + 0.5) * downsample)[None, :]
        return ys, xs

    def _tissue(self, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
        """Inside a tissue ellipse and outside every hole, at the points ``ys`` x ``xs``."""
        by0, by1 = float(ys[0, 0]), float(ys[-1, 0])
        bx0, bx1 = float(xs[0, 0]), float(xs[0, -1])
        tissue = np.zeros((ys.shape[0], xs.shape[1]), dtype=bool)
        for blob in self.tissue:
            if blob.touches(by0, by1, bx0, bx1):
                tissue |= blob.inside(ys, xs)
        for hole in self.holes:
            if hole.touches(by0, by1, bx0, bx1):
                tissue &= ~hole.inside(ys, xs)
        return tissue

    def tissue_mask(
        self, y0: int, x0: int, rows: int, cols: int, downsample: float = 1.0
    ) -> np.ndarray:
        """Ground truth: which pixels of a level's tile show tissue (in :meth:`render`).

        Tissue ellipses minus holes, minus where the pen stroke covers them; the dark specks
        (a few pixels each) count as what lies under them. Same frame as :meth:`render`.

        Examples
        --------
        >>> scene = Scene.make(512, 512, seed=0, tile=128)
        >>> truth = scene.tissue_mask(0, 0, 64, 64, downsample=8.0)
        >>> truth.shape, truth.dtype, bool(0.1 < truth.mean() < 0.6)
        ((64, 64), dtype('bool'), True)
        """
        ys, xs = self._coordinates(y0, x0, rows, cols, downsample)
        return self._tissue(ys, xs) & ~self._pen_band(ys, xs, downsample)

    def render(self, y0: int, x0: int, rows: int, cols: int, downsample: float = 1.0) -> np.ndarray:
        """RGB uint8 tile of a level with the given downsample; (y0, x0) in that level's pixels."""
        ys, xs = self._coordinates(y0, x0, rows, cols, downsample)
        tissue = self._tissue(ys, xs)
        # Texture and nuclei from an integer hash of level pixel coordinates: cheap and stable.
        iy = np.arange(y0, y0 + rows, dtype=np.uint32)[:, None]
        ix = np.arange(x0, x0 + cols, dtype=np.uint32)[None, :]
        h = (
            (iy * np.uint32(73856093))
            ^ (ix * np.uint32(19349663))
            ^ np.uint32(self.seed * 83492791)
        )
        h = (h ^ (h >> np.uint32(13))) * np.uint32(1274126177)
        noise = ((h >> np.uint32(24)).astype(np.float32) - 128.0) / 128.0  # [-1, 1)
        stain = 0.5 + 0.5 * np.sin(ys / 37.0) * np.cos(xs / 53.0)
        img = np.empty((rows, cols, 3), dtype=np.float32)
        img[:] = BACKGROUND + 3.0 * noise[..., None]
        if self.texture == "noisy":
            self._noisy(img, tissue, iy, ix, h, noise, stain, ys, xs)
        elif tissue.any() and self.stain == "he":
            nuclei = (np.sin(ys / 5.3 + 1.7 * np.cos(xs / 7.1)) * np.cos(xs / 6.1) > 0.55) & tissue
            colour = EOSIN[None, None, :] - 30.0 * stain[..., None] + 10.0 * noise[..., None]
            img[tissue] = colour[tissue]
            img[nuclei] = (HEMATOXYLIN + 12.0 * noise[..., None])[nuclei]
        elif tissue.any():
            self._stained(img, tissue, noise, stain, ys, xs)
        self._draw_specks(img, ys, xs, downsample)
        self._draw_pen(img, ys, xs, downsample)
        return np.clip(img, 0, 255).astype(np.uint8)

    def _noisy(
        self,
        img: np.ndarray,
        tissue: np.ndarray,
        iy: np.ndarray,
        ix: np.ndarray,
        h: np.ndarray,
        noise: np.ndarray,
        stain: np.ndarray,
        ys: np.ndarray,
        xs: np.ndarray,
    ) -> None:
        """Grainy light tissue and dusty glass (``texture="noisy"``), in place.

        Grain: the per-pixel hash noise plus a coarser one (3-pixel cells), so pinholes and
        specks come in sizes of one to a few dozen pixels after JPEG; the stain field moves the
        tissue's mean grey across the threshold, from dense (few pinholes) to light (many).
        """
        c = (iy // np.uint32(3)) * np.uint32(2246822519) ^ (ix // np.uint32(3)) * np.uint32(
            3266489917
        ) ^ np.uint32(self.seed * 668265263 + 1)
        c = (c ^ (c >> np.uint32(15))) * np.uint32(2654435761)
        coarse = ((c >> np.uint32(24)).astype(np.float32) - 128.0) / 128.0
        grain = 16.0 * noise + 12.0 * coarse
        # dust on the glass: about one pixel in 2700
        dust = (h & np.uint32(4095)) < np.uint32(1) + (c >> np.uint32(31))
        img[dust & ~tissue] = DUST
        if tissue.any():
            light = 0.5 + 0.5 * np.sin(ys / 211.0 + 0.7) * np.cos(xs / 173.0)
            colour = LIGHT_EOSIN - 18.0 - 30.0 * (stain * light)[..., None] + grain[..., None]
            nuclei = (np.sin(ys / 5.3 + 1.7 * np.cos(xs / 7.1)) * np.cos(xs / 6.1) > 0.6) & tissue
            img[tissue] = colour[tissue]
            img[nuclei] = (HEMATOXYLIN + 12.0 * noise[..., None])[nuclei]

    def _stained(
        self,
        img: np.ndarray,
        tissue: np.ndarray,
        noise: np.ndarray,
        stain: np.ndarray,
        ys: np.ndarray,
        xs: np.ndarray,
    ) -> None:
        """Smooth tissue in the ``"dab"`` or ``"faint"`` stain, in place (same nuclei as H&E)."""
        nuclei = (np.sin(ys / 5.3 + 1.7 * np.cos(xs / 7.1)) * np.cos(xs / 6.1) > 0.55) & tissue
        if self.stain == "dab":
            colour = COUNTERSTAIN - 14.0 * stain[..., None] + 6.0 * noise[..., None]
            img[tissue] = colour[tissue]
            # patches of positive cells, as a Ki67 or CD3 stain gives
            positive = nuclei & (np.sin(ys / 61.0 + 0.3) * np.cos(xs / 47.0 + 1.1) > 0.35)
            img[nuclei] = (COUNTER_NUCLEI + 8.0 * noise[..., None])[nuclei]
            img[positive] = (DAB + 12.0 * noise[..., None])[positive]
        else:
            colour = FAINT - 10.0 * stain[..., None] + 4.0 * noise[..., None]
            img[tissue] = colour[tissue]
            img[nuclei] = (FAINT_NUCLEI + 8.0 * noise[..., None])[nuclei]

    def _draw_specks(
        self, img: np.ndarray, ys: np.ndarray, xs: np.ndarray, downsample: float
    ) -> None:
        cell = self.speck_cell
        radius = 4.0
        cy0 = int(max(0.0, float(ys[0, 0]) - radius) // cell)
        cy1 = int((float(ys[-1, 0]) + radius) // cell)
        cx0 = int(max(0.0, float(xs[0, 0]) - radius) // cell)
        cx1 = int((float(xs[0, -1]) + radius) // cell)
        for gy in range(cy0, cy1 + 1):
            for gx in range(cx0, cx1 + 1):
                h = (gy * 2654435761 + gx * 40503 + self.seed * 97) & 0xFFFFFFFF
                if h % 7 != 0:
                    continue
                sy = gy * cell + (h >> 8) % cell
                sx = gx * cell + (h >> 16) % cell
                r = radius * (0.5 + ((h >> 4) % 8) / 8.0)
                hit = (ys - sy) ** 2 + (xs - sx) ** 2 <= max(r * r, (0.5 * downsample) ** 2)
                if hit.any():
                    img[hit] = SPECK

    def _pen_band(self, ys: np.ndarray, xs: np.ndarray, downsample: float) -> np.ndarray:
        centre = self.rows * (0.14 + 0.05 * np.sin(2 * math.pi * 2.0 * xs / self.cols))
        half = max(2.0, 0.008 * min(self.rows, self.cols), downsample)
        inside_x = (xs > 0.1 * self.cols) & (xs < 0.9 * self.cols)
        return (np.abs(ys - centre) <= half) & inside_x  # type: ignore[no-any-return]

    def _draw_pen(self, img: np.ndarray, ys: np.ndarray, xs: np.ndarray, downsample: float) -> None:
        band = self._pen_band(ys, xs, downsample)
        if band.any():
            img[band] = PEN_BLUE


def _level_shapes(rows: int, cols: int, tile: int, levels: int | None) -> list[tuple[int, int]]:
    shapes = [(rows, cols)]
    while (levels is None and max(shapes[-1]) > 2 * tile) or (
        levels is not None and len(shapes) < levels
    ):
        r, c = shapes[-1]
        if r < 2 or c < 2:
            break
        shapes.append((r // 2, c // 2))
    return shapes


def _tiles(
    scene: Scene, shape: tuple[int, int], tile: int, downsample: float, workers: int
) -> Iterator[np.ndarray]:
    rows, cols = shape
    coords = [(y, x) for y in range(0, rows, tile) for x in range(0, cols, tile)]

    def one(yx: tuple[int, int]) -> np.ndarray:
        y, x = yx
        out = np.empty((tile, tile, 3), dtype=np.uint8)
        h, w = min(tile, rows - y), min(tile, cols - x)
        out[:h, :w] = scene.render(y, x, h, w, downsample)
        if h < tile or w < tile:
            out[h:, :] = 255
            out[:, w:] = 255
        return out

    if workers <= 1:
        yield from map(one, coords)
        return
    with ThreadPoolExecutor(workers) as pool:
        # bounded look-ahead keeps memory flat whatever the slide size
        batch = 4 * workers
        for start in range(0, len(coords), batch):
            yield from pool.map(one, coords[start : start + batch])


def write_synthetic_slide(
    path: str | os.PathLike[str],
    size: int | tuple[int, int] = 4096,
    *,
    tile: int = 512,
    quality: int = 85,
    seed: int = 0,
    levels: int | None = None,
    mpp: float = 0.5,
    compression: str = "jpeg",
    ome: bool = True,
    byteorder: str = "<",
    workers: int | None = None,
    texture: str = "smooth",
    stain: str = "he",
    aperio: bool = False,
) -> Path:
    """Write a deterministic H&E-like pyramidal tiled BigTIFF and return its path.

    Parameters
    ----------
    path : str or os.PathLike
        Output file (``.ome.tif`` recommended when ``ome`` is true); replaced if it exists.
    size : int or tuple of int
        Level-0 edge in pixels, or (rows, cols).
    tile : int
        Tile edge in pixels (multiple of 16).
    quality : int
        JPEG quality (only for ``compression="jpeg"``).
    seed : int
        Scene seed; the same arguments always give the same pixels.
    levels : int, optional
        Number of pyramid levels (halving each time); default until the level fits in two
        tiles.
    mpp : float
        Micrometres per level-0 pixel written to the metadata.
    compression : str
        "jpeg" (YCbCr 4:2:0 like scanners), "deflate", "lzw" or "none".
    ome : bool
        Write OME-XML (pyramid as SubIFDs); otherwise a plain BigTIFF with resolution tags.
    byteorder : str
        "<" little-endian or ">" big-endian.
    workers : int, optional
        Threads rendering and compressing tiles (default: all cores).
    texture : str
        "smooth" (solid tissue) or "noisy" (grainy light tissue and dusty glass, whose
        level-0 ``grey < 200`` mask is speckled like a thresholded real slide's).
    stain : str
        "he" (H&E, the default), "dab" (IHC: DAB brown and haematoxylin counterstain) or
        "faint" (pale, low-contrast tissue); smooth texture only. Ground truth:
        ``Scene.make(rows, cols, seed=seed, tile=tile, stain=stain).tissue_mask(...)``.
    aperio : bool
        Write the Aperio SVS layout instead (``ome`` is then ignored; name the file ``.svs``):
        level 0 tiled with an ``Aperio Image Library`` description carrying ``MPP``, a
        stripped thumbnail page, then the reduced levels as tiled pages. OpenSlide reads it
        with its Aperio driver, tifffile as an SVS series.

    Returns
    -------
    pathlib.Path
        ``path``: RGB uint8, channels last, ``levels`` pyramid levels.

    Raises
    ------
    ValueError
        An unknown ``texture`` or ``stain``, or a stain other than "he" with the noisy
        texture.

    Notes
    -----
    Memory stays at a few tiles whatever ``size`` is: each tile is rendered on its own from
    the analytic scene. A 512² slide takes well under a second.

    Examples
    --------
    >>> import os
    >>> import tempfile
    >>> from slidemask import open_slide, write_synthetic_slide
    >>> tmp = tempfile.TemporaryDirectory()
    >>> path = write_synthetic_slide(os.path.join(tmp.name, "demo.ome.tif"), (600, 800),
    ...                              tile=128)
    >>> slide = open_slide(path)
    >>> [level.shape for level in slide.levels], slide.mpp, slide.compression
    ([(600, 800, 3), (300, 400, 3), (150, 200, 3)], 0.5, 'JPEG')
    >>> tmp.cleanup()
    """
    rows, cols = (size, size) if isinstance(size, int) else size
    path = Path(path)
    workers = workers or os.cpu_count() or 1
    scene = Scene.make(rows, cols, seed=seed, tile=tile, texture=texture, stain=stain)
    shapes = _level_shapes(rows, cols, tile, levels)
    common: dict[str, Any] = dict(
        dtype=np.uint8,
        tile=(tile, tile),
        photometric="rgb",
        compression=None if compression == "none" else compression,
        maxworkers=workers,
    )
    if compression == "jpeg":
        common["compressionargs"] = {"level": quality}
    px_per_cm = 1e4 / mpp
    if aperio:
        _write_aperio(path, scene, shapes, tile, mpp, quality, workers, common)
        return path
    with tifffile.TiffWriter(
        path, bigtiff=True, byteorder=cast(Literal["<", ">"], byteorder), ome=ome
    ) as tw:
        for index, shape in enumerate(shapes):
            downsample = rows / shape[0]
            extra: dict[str, Any] = {}
            if index == 0:
                extra["subifds"] = len(shapes) - 1
                if ome:
                    extra["metadata"] = {
                        "axes": "YXS",
                        "PhysicalSizeX": mpp,
                        "PhysicalSizeXUnit": "µm",
                        "PhysicalSizeY": mpp,
                        "PhysicalSizeYUnit": "µm",
                        "Name": f"slidemask synthetic seed {seed}",
                    }
                else:
                    extra["metadata"] = None
                    extra["description"] = f"slidemask synthetic slide, seed {seed}"
            else:
                extra["subfiletype"] = 1
                extra["metadata"] = None
            tw.write(
                _tiles(scene, shape, tile, downsample, workers),
                shape=(shape[0], shape[1], 3),
                resolution=(px_per_cm / downsample, px_per_cm / downsample),
                resolutionunit="CENTIMETER",
                **common,
                **extra,
            )
    return path


def _write_aperio(
    path: Path,
    scene: Scene,
    shapes: list[tuple[int, int]],
    tile: int,
    mpp: float,
    quality: int,
    workers: int,
    common: dict[str, Any],
) -> None:
    """The Aperio SVS page layout: level 0, a stripped thumbnail, the reduced levels."""
    rows, cols = shapes[0]
    compressed = "JPEG/RGB" if common["compression"] == "jpeg" else "RGB"
    head = f"Aperio Image Library v12.0.16 \r\n{cols}x{rows} [0,0 {cols}x{rows}] ({tile}x{tile})"
    fields = f"AppMag = {10 / mpp:g}|MPP = {mpp:g}"
    with tifffile.TiffWriter(path, bigtiff=True) as tw:
        for index, shape in enumerate(shapes):
            size = "" if index == 0 else f" -> {shape[1]}x{shape[0]}"
            tw.write(_tiles(scene, shape, tile, rows / shape[0], workers),
                     shape=(shape[0], shape[1], 3), metadata=None,
                     description=f"{head}{size} {compressed} Q={quality}|{fields}", **common)
            if index == 0:  # the thumbnail comes second, as scanners write it
                small = shapes[-1]
                tw.write(scene.render(0, 0, small[0], small[1], rows / small[0]),
                         photometric="rgb", compression="jpeg", metadata=None,
                         description=f"{head} -> {small[1]}x{small[0]} - |{fields}")
