"""Land cover for real flights: a user's categorical raster warped onto each SAR tile's grid.

The demo archive carries a land-cover raster per scene; real archives rarely do. A land-cover
*source* is one categorical raster covering the flights — an ESA WorldCover 10 m COG (or a VRT over
its tiles), a national land-cover map, any GDAL-readable raster of class codes — plus the mapping of
its codes onto the classes land-cover tiles hold (:data:`sar_pipeline.archive.landcover.
LANDCOVER_CLASSES`, what the template captioner words). It is warped onto every tile's exact grid by
nearest neighbour (codes are categories: never averaged) from its own CRS, whatever that is; codes the
mapping does not name become nodata (0) and are listed, so nothing is dropped silently.
"""

from __future__ import annotations

import threading

import numpy as np
import rasterio
from pydantic import Field, field_validator

from sar_pipeline.archive.landcover import LANDCOVER_CODES, NODATA, WORLDCOVER_CLASSES
from sar_pipeline.errors import RasterError
from sar_pipeline.settings import Settings


class LandCoverSettings(Settings):
    """Where land cover comes from: the scenes' own land-cover assets, or one categorical raster."""

    uri: str = Field(
        default="",
        description="A categorical raster covering the flights (GeoTIFF/COG/VRT; local, s3:// or /vsis3/), "
        "e.g. ESA WorldCover 10 m, in any CRS. Empty: each scene's own 'landcover' asset (the demo's).",
    )
    classes: dict[str, str] | None = Field(
        default=None,
        description="The raster's class codes → land-cover classes (water, field, forest, road, urban, "
        "building, grassland, shrubland, bare, snow, wetland), e.g. {'40': 'field', '80': 'water'}. "
        "Unset: ESA WorldCover's legend (10 tree cover → forest, 20 → shrubland, 30 → grassland, "
        "40 cropland → field, 50 built-up → urban, 60 → bare, 70 → snow, 80 → water, 90/95 → wetland, "
        "100 → grassland). Codes not listed become nodata and are reported.",
    )

    @field_validator("classes")
    @classmethod
    def _known_classes(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        if value is None:
            return None
        for code, name in value.items():
            try:
                number = int(code)
            except ValueError:
                raise ValueError(f"classes: code {code!r} is not an integer") from None
            if not 0 <= number <= 65535:
                raise ValueError(f"classes: code {code} is outside 0–65535")
            if name not in LANDCOVER_CODES:
                raise ValueError(f"classes: {name!r} is not one of {sorted(LANDCOVER_CODES)}")
        return value

    def class_map(self) -> dict[int, str]:
        """Source code → class name (WorldCover's legend when ``classes`` is unset)."""
        if self.classes is None:
            return dict(WORLDCOVER_CLASSES)
        return {int(code): name for code, name in self.classes.items()}


class LandCoverSource:
    """An open categorical raster and the table mapping its codes to land-cover codes.

    Shared by the tiling threads of one flight: reads go through :attr:`read_lock`. Codes met that the
    mapping does not name are collected in :attr:`unmapped_codes`.
    """

    def __init__(self, uri: str, class_map: dict[int, str]):
        self.uri = uri
        try:
            self.dataset = rasterio.open(uri)
        except rasterio.errors.RasterioIOError as exc:
            raise RasterError(uri, f"cannot open the land-cover raster ({exc})") from exc
        if self.dataset.crs is None:
            self.dataset.close()
            raise RasterError(uri, "no CRS: the land-cover raster is not georeferenced")
        size = 256 if self.dataset.dtypes[0] in ("uint8", "int8") else 65536
        self.lookup = np.full(size, NODATA, dtype=np.uint8)
        for code, name in class_map.items():
            if 0 <= code < size:
                self.lookup[code] = LANDCOVER_CODES[name]
        self.mapped = np.zeros(size, dtype=bool)
        self.mapped[[c for c in class_map if 0 <= c < size]] = True
        if self.dataset.nodata is not None and 0 <= self.dataset.nodata < size:
            self.mapped[int(self.dataset.nodata)] = True
        self.read_lock = threading.Lock()
        self.unmapped_codes: set[int] = set()

    def note_unmapped(self, raw: np.ndarray) -> None:
        """Record the codes in ``raw`` (source codes) that the mapping does not name."""
        codes = np.unique(raw)
        codes = codes[(codes >= 0) & (codes < self.mapped.size)]
        self.unmapped_codes.update(int(c) for c in codes[~self.mapped[codes.astype(np.int64)]])

    def close(self) -> None:
        self.dataset.close()

    def __enter__(self) -> LandCoverSource:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def open_landcover_source(settings: LandCoverSettings) -> LandCoverSource | None:
    """The land-cover raster ``settings`` name, opened, or None when the scenes' own assets are used."""
    if not settings.uri:
        return None
    return LandCoverSource(settings.uri, settings.class_map())
