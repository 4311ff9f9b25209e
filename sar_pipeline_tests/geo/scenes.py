"""Small real GeoTIFF scenes in native SAR geometry (rotated/flipped geotransforms) for the geo tests."""

from __future__ import annotations

import datetime as dt
import math
from pathlib import Path

import numpy as np
import rasterio
from affine import Affine

from sar_pipeline.archive.protocol import SceneRecord

CRS = "EPSG:32631"
ORIGIN = (520_000.0, 4_810_000.0)


def native_transform(
    heading_deg: float,
    observation_direction: str,
    spacing_range_m: float,
    spacing_azimuth_m: float,
    shape: tuple[int, int],
    flip_columns: bool = False,
    flip_rows: bool = False,
    origin: tuple[float, float] = ORIGIN,
) -> Affine:
    """Affine of a native-geometry raster: columns along the look direction, rows along the heading.

    ``flip_columns`` stores far range first, ``flip_rows`` stores the last azimuth line first,
    as some processors do.
    """
    h = math.radians(heading_deg)
    flight = np.array([math.sin(h), math.cos(h)])
    look_sign = 1.0 if observation_direction == "right" else -1.0
    look = look_sign * np.array([math.cos(h), -math.sin(h)])
    col = spacing_range_m * look
    row = spacing_azimuth_m * flight
    o = np.array(origin, dtype=float)
    rows, cols = shape
    if flip_columns:
        o = o + cols * col
        col = -col
    if flip_rows:
        o = o + rows * row
        row = -row
    return Affine(col[0], row[0], o[0], col[1], row[1], o[1])


def write_scene(
    path: Path,
    data: np.ndarray,
    transform: Affine,
    crs: str | None = CRS,
    nodata: float | None = 0.0,
    dtype: str | None = None,
) -> Path:
    """Write a single-band GeoTIFF (tiled) and return its path."""
    profile = {
        "driver": "GTiff",
        "height": data.shape[0],
        "width": data.shape[1],
        "count": 1,
        "dtype": dtype or data.dtype.name,
        "transform": transform,
        "tiled": True,
        "blockxsize": 64,
        "blockysize": 64,
    }
    if crs is not None:
        profile["crs"] = crs
    if nodata is not None:
        profile["nodata"] = nodata
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data.astype(profile["dtype"]), 1)
    return path


def speckled_amplitude(
    shape: tuple[int, int], looks: int = 4, mean_intensity: float = 0.05, seed: int = 0
) -> np.ndarray:
    """Amplitude of gamma-distributed L-look intensity speckle (float32)."""
    rng = np.random.default_rng(seed)
    intensity = rng.gamma(looks, mean_intensity / looks, size=shape)
    return np.sqrt(intensity).astype(np.float32)


def scene_record(
    path: Path,
    scene_id: str = "scene-a",
    flight_id: str = "flight-1",
    heading_deg: float | None = None,
    observation_direction: str | None = None,
    value_unit: str | None = "amplitude",
    extra_assets: dict[str, str] | None = None,
) -> SceneRecord:
    """The record an archive would give for a scene written by :func:`write_scene`."""
    with rasterio.open(path) as ds:
        return SceneRecord(
            scene_id=scene_id,
            flight_id=flight_id,
            raster_href=str(path),
            crs=ds.crs.to_string() if ds.crs else "",
            transform=tuple(ds.transform)[:6],
            shape=(ds.height, ds.width),
            nodata=ds.nodata,
            value_unit=value_unit,
            datetime=dt.datetime(2024, 6, 1, 10, 0, tzinfo=dt.UTC),
            platform="test-aircraft",
            frequency_band="X",
            polarizations=("HH",),
            heading_deg=heading_deg,
            observation_direction=observation_direction,
            extra_assets=extra_assets or {},
        )


class RecordArchive:
    """A minimal SarArchive for tests: scenes come from ``sar_scenes.parquet``; it only opens rasters."""

    def __init__(self, uri: str = "", **options):
        self.uri = uri

    def list_flights(self, since=None):
        return []

    def list_scenes(self, flight_id, on_error=None):
        return []

    def open_scene(self, scene: SceneRecord):
        return rasterio.open(scene.raster_href)
