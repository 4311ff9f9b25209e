"""ControlNet conditioning images: land cover drawn in a fixed palette, or a sketch of the despeckled tile.

A conditioning image is an RGB picture in which every pixel has one colour of :data:`PALETTE`,
one per land-cover class of ``sar_pipeline.archive.landcover`` plus ``edge`` (white) for region
outlines. A user draws one by hand with these exact colours (the web page's canvas offers only
them; :func:`legend_png` is the key); the pipeline derives one per training tile:

* where the tile has a land-cover map (``landcover_image``): the map drawn in the palette
  (:func:`landcover_to_rgb`);
* else a sketch of the tile itself (:func:`sketch_from_tile`): the dB image despeckled (a median
  then a Gaussian filter), quantised into four brightness levels drawn as the classes whose
  backscatter they resemble (water < field < forest < urban), with the outlines between regions
  in ``edge`` white.

Images are arrays ``(rows, cols, 3)`` uint8 in the tile's native SAR orientation (rows = azimuth).
"""

from __future__ import annotations

import io

import numpy as np

from sar_pipeline.archive.landcover import (
    BUILDING,
    FIELD,
    FOREST,
    LANDCOVER_CLASSES,
    NODATA,
    ROAD,
    URBAN,
    WATER,
)
from sar_pipeline.errors import SarPipelineError

#: class code used for outlines in sketches (not a land-cover class)
EDGE = 255

#: the fixed palette: class code → (name, RGB). Documented in README ("Sketch palette").
PALETTE: dict[int, tuple[str, tuple[int, int, int]]] = {
    NODATA: ("nodata", (0, 0, 0)),
    WATER: (LANDCOVER_CLASSES[WATER], (30, 90, 200)),
    FIELD: (LANDCOVER_CLASSES[FIELD], (230, 210, 80)),
    FOREST: (LANDCOVER_CLASSES[FOREST], (30, 120, 40)),
    ROAD: (LANDCOVER_CLASSES[ROAD], (150, 150, 150)),
    URBAN: (LANDCOVER_CLASSES[URBAN], (235, 120, 40)),
    BUILDING: (LANDCOVER_CLASSES[BUILDING], (200, 30, 30)),
    EDGE: ("edge", (255, 255, 255)),
}

#: brightness levels of a tile sketch (darkest first) and the classes drawn for them
SKETCH_LEVEL_CLASSES = (WATER, FIELD, FOREST, URBAN)


class ConditioningError(SarPipelineError):
    """A conditioning image that cannot be read as a sketch in the palette."""


def palette_hex() -> dict[str, str]:
    """Class name → ``#rrggbb`` of every palette colour (what the web page's brushes use)."""
    return {name: "#{:02x}{:02x}{:02x}".format(*rgb) for name, rgb in PALETTE.values()}


def landcover_to_rgb(codes: np.ndarray) -> np.ndarray:
    """Land-cover class codes (rows, cols) → the palette picture (rows, cols, 3) uint8.

    Codes outside the palette are drawn as nodata (black)."""
    lut = np.zeros((256, 3), np.uint8)
    for code, (_, rgb) in PALETTE.items():
        lut[code] = rgb
    return lut[np.asarray(codes, dtype=np.uint8)]


def sketch_classes(rgb: np.ndarray, source: object = "sketch", snap: bool = False) -> np.ndarray:
    """A palette picture (rows, cols, 3) → class codes (rows, cols) uint8 (:data:`EDGE` for outlines).

    A colour that is not in the palette is an error listing each such colour (``#rrggbb``, pixel
    count) and the palette, unless ``snap``: then every pixel takes the nearest palette colour
    (for a canvas whose brush anti-aliases its edges).
    """
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ConditioningError(source, f"a sketch is an RGB picture, got an array of shape {rgb.shape}")
    codes = np.array(list(PALETTE), dtype=np.int32)
    colours = np.array([c for _, c in PALETTE.values()], dtype=np.int32)
    packed = (rgb[..., 0].astype(np.int32) << 16) | (rgb[..., 1].astype(np.int32) << 8) | rgb[..., 2]
    palette_packed = (colours[:, 0] << 16) | (colours[:, 1] << 8) | colours[:, 2]
    match = packed[..., None] == palette_packed
    known = match.any(axis=-1)
    if not known.all():
        if not snap:
            values, counts = np.unique(packed[~known], return_counts=True)
            order = np.argsort(-counts)
            listed = ", ".join(f"#{values[i]:06x} ({counts[i]} px)" for i in order[:10])
            more = f" and {len(values) - 10} more" if len(values) > 10 else ""
            allowed = ", ".join(f"{name} {h}" for name, h in palette_hex().items())
            raise ConditioningError(
                source,
                f"{len(values)} colour(s) outside the sketch palette: {listed}{more}. Draw only with the "
                f"palette colours ({allowed}), or pass --snap-to-palette to use the nearest one",
            )
        distance = ((rgb[..., None, :].astype(np.int32) - colours) ** 2).sum(axis=-1)
        return codes[distance.argmin(axis=-1)].astype(np.uint8)
    return codes[match.argmax(axis=-1)].astype(np.uint8)


def classes_to_rgb(classes: np.ndarray) -> np.ndarray:
    """Inverse of :func:`sketch_classes`: class codes (incl. :data:`EDGE`) → palette picture."""
    return landcover_to_rgb(classes)


def sketch_from_tile(grey: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
    """A palette sketch (rows, cols, 3) uint8 of a SAR tile: despeckled, four brightness levels, outlines.

    ``grey``: the tile as stored (quantised dB, any integer or float scale; brightness order is
    all that matters). ``valid``: pixels with data (default: non-zero). Levels are cut at the
    quartiles of the despeckled valid pixels, so every level appears on a varied tile.
    """
    from scipy import ndimage

    image = np.asarray(grey, dtype=np.float32)
    valid = image > 0 if valid is None else np.asarray(valid, bool)
    size = max(3, round(min(image.shape) / 64) * 2 + 1)  # ~1.5 % of the tile, odd
    smooth = ndimage.gaussian_filter(ndimage.median_filter(image, size=size), sigma=size / 2)
    values = smooth[valid] if valid.any() else smooth.ravel()
    cuts = np.quantile(values, [0.25, 0.5, 0.75])
    level = np.digitize(smooth, cuts)
    classes = np.asarray(SKETCH_LEVEL_CLASSES, np.uint8)[level]
    edge = np.zeros(level.shape, bool)
    edge[:-1, :] |= level[:-1, :] != level[1:, :]
    edge[:, :-1] |= level[:, :-1] != level[:, 1:]
    width = max(1, min(image.shape) // 128)
    if width > 1:
        edge = ndimage.binary_dilation(edge, iterations=width - 1)
    classes[edge] = EDGE
    classes[~valid] = NODATA
    return classes_to_rgb(classes)


def conditioning_image(landcover: np.ndarray | None, grey: np.ndarray) -> np.ndarray:
    """The training conditioning picture of one tile: its land cover in the palette when it has
    any (some code other than nodata), else :func:`sketch_from_tile` of ``grey``."""
    if landcover is not None and np.any(np.asarray(landcover) != NODATA):
        return landcover_to_rgb(landcover)
    return sketch_from_tile(grey)


def resize_classes(rgb: np.ndarray, size: int) -> np.ndarray:
    """A palette picture resized to ``size``² with nearest-neighbour sampling (colours stay in the palette)."""
    from PIL import Image

    if rgb.shape[:2] == (size, size):
        return rgb
    return np.asarray(Image.fromarray(np.asarray(rgb, np.uint8), "RGB").resize((size, size), Image.NEAREST))


def legend_png(swatch_px: int = 24) -> bytes:
    """The palette's key as a PNG: one swatch and its class name per row."""
    from PIL import Image, ImageDraw

    rows = list(PALETTE.values())
    image = Image.new("RGB", (200, swatch_px * len(rows) + 8), (255, 255, 255))
    draw = ImageDraw.Draw(image)
    for i, (name, rgb) in enumerate(rows):
        top = 4 + i * swatch_px
        draw.rectangle([4, top, 4 + swatch_px - 4, top + swatch_px - 4], fill=rgb, outline=(0, 0, 0))
        draw.text((swatch_px + 10, top + swatch_px // 4), f"{name}  {palette_hex()[name]}", fill=(0, 0, 0))
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()
