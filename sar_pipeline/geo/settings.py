"""What a user sets for the per-flight geometry stages: ``sar_tiles``, ``optical_tiles`` and the optical source.

One model per stage (see :mod:`sar_pipeline.settings`): the Launchpad, the CLI and the tests all
run with exactly these fields, defaults and descriptions.
"""

from __future__ import annotations

import os
from typing import Literal

from pydantic import Field, field_validator, model_validator
from pyproj import CRS

from sar_pipeline import paths
from sar_pipeline.geo.resample import ResamplingName
from sar_pipeline.radiometry import ValueUnit
from sar_pipeline.settings import Settings


class SceneSettings(Settings):
    """Which scenes of a flight can be gridded, and in which CRS (the ``sar_scenes`` stage)."""

    output_crs: str | None = Field(
        default=None,
        description="Projected CRS every scene is gridded in (e.g. 'EPSG:2154' for one grid over France). "
        "Unset: each scene's own CRS when it is projected, else (EPSG:4326 and other geographic CRSs) the "
        "WGS84 UTM zone of the scene centre. Recorded per scene in the sar_scenes table.",
    )
    require_heading: bool = Field(
        default=False,
        description="Refuse scenes whose heading and look side are unknown (no sar_pipeline:heading_deg, "
        "view:azimuth or sat:orbit_state, or no sar:observation_direction) instead of tiling them in the "
        "raster's own axes, which for a geocoded product is map orientation, not native SAR orientation.",
    )

    @field_validator("output_crs")
    @classmethod
    def _projected(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        try:
            crs = CRS.from_user_input(value)
        except Exception as exc:  # pyproj raises CRSError and others for unparsable input
            raise ValueError(f"output_crs {value!r} is not a CRS pyproj understands ({exc})") from exc
        if not crs.is_projected:
            raise ValueError(f"output_crs {value!r} is not projected: a GSD in metres needs a projected CRS")
        return value


class TilingSettings(Settings):
    """How SAR scenes become tiles: resampling to a fixed ground sample distance in native orientation.

    Tiles hold dB as 16-bit PNG over each tile's own valid range (recorded per tile, so values come
    back within 0.002 dB): the 8/16-bit quantisation a model is trained on uses one range pooled over
    every flight of the dataset, chosen when the dataset is written
    (:class:`sar_pipeline.dataset.radiometry.DatasetRadiometrySettings`).
    """

    ground_sample_distance_m: float = Field(
        default=1.0,
        gt=0,
        description="Output pixel size on the ground, metres (square pixels on the projected output CRS). "
        "sar_tiles warns when it is at least twice finer than a scene's pixel spacing (upsampling).",
    )
    tile_size: int = Field(
        default=512, ge=1, description="Tile side in pixels (Stable Diffusion 1.5 is trained on 512)."
    )
    stride: int | None = Field(
        default=None,
        ge=1,
        description="Pixels between tile origins; unset = tile_size (tiles touch, no overlap).",
    )
    max_nodata_fraction: float = Field(
        default=0.1,
        ge=0,
        le=1,
        description="Tiles with a larger share of nodata pixels (outside the swath, declared nodata, "
        "non-finite) are dropped, with the reason recorded.",
    )
    resampling: ResamplingName = Field(
        default="average",
        description="GDAL resampling onto the output grid, applied to linear intensity (never to dB); "
        "'average' is right when the output pixel is larger than the scene's.",
    )
    axis_tolerance_deg: float = Field(
        default=5.0,
        ge=0,
        lt=45,
        description="A raster whose column axis is within this angle (degrees) of the look direction given "
        "by its heading and look side is in native geometry: its own axes are kept (pixel-aligned, fast). "
        "Beyond it (a geocoded, north-up product) the grid is rotated onto the heading.",
    )
    zero_is_nodata: bool = Field(
        default=True,
        description="Zero linear backscatter (amplitude, intensity or complex pixels exactly 0) is fill "
        "outside the swath, not a measurement, and becomes nodata. Set false for products quantised so "
        "coarsely that weak returns round to 0 (they then map to the darkest level, and are still left "
        "out of the dataset's radiometric range).",
    )
    default_value_unit: ValueUnit = Field(
        default="amplitude",
        description="What the pixels of scenes that declare no unit (STAC raster:bands unit) hold: "
        "amplitude, intensity, db or complex. Complex rasters are always read as complex. Every scene "
        "whose unit is assumed is named in a warning.",
    )
    default_value_scale: float | None = Field(
        default=None,
        description="Scale for integer-scaled scenes that declare none (value = raw × scale + offset); "
        "unset = 1.",
    )
    default_value_offset: float | None = Field(
        default=None, description="Offset for integer-scaled scenes that declare none; unset = 0."
    )
    num_threads: int = Field(default=1, ge=1, description="GDAL warp threads per block of tile rows.")
    workers: int = Field(
        default=0,
        ge=0,
        description="Blocks of tile rows processed in parallel threads; 0 = one per CPU core "
        "(docs/benchmarks.md: 2 threads on 2 cores reach 1.65× the raw decode time).",
    )
    max_block_tiles: int = Field(
        default=16,
        ge=1,
        description="Tiles of one tile row warped in one GDAL call; memory per worker ≈ this × "
        "tile_size² × 20 bytes.",
    )

    max_scene_pixels: int = Field(
        default=4_000_000_000,
        ge=1,
        description="Scenes whose raster holds more pixels (rows × columns, from its header) are skipped "
        "before any pixel is read, naming this setting: a corrupt or hostile header can claim 10¹² "
        "pixels. 4·10⁹ ≈ a 63 000 × 63 000 airborne strip.",
    )
    max_tiles_per_scene: int = Field(
        default=20_000,
        ge=1,
        description="Scenes that would give more tile positions at ground_sample_distance_m are skipped "
        "before tiling, naming this setting (a GSD typed in mm instead of m multiplies them by 10⁶). "
        "20 000 tiles of 512² at 1 m ≈ 5 000 km².",
    )

    @property
    def step(self) -> int:
        """Pixels between tile origins."""
        return self.stride or self.tile_size

    @property
    def worker_count(self) -> int:
        """Threads that tile blocks in parallel (``workers``, 0 resolved to the CPU count)."""
        return self.workers or os.cpu_count() or 1


class OpticalTilesSettings(Settings):
    """Which co-located optical tiles are kept."""

    min_optical_coverage: float = Field(
        default=0.95,
        ge=0,
        le=1,
        description="Optical tiles covering less than this share of their SAR tile are skipped (reason "
        "recorded). Captions describe the optical tile, so a tile that is partly empty (the edge of the "
        "orthophoto) would be captioned as black ground: 0.95 keeps only pairs where the optical image "
        "shows the whole tile, bar a thin edge.",
    )


class OpticalSettings(Settings):
    """Where optical images come from: one GDAL-readable mosaic, or a STAC catalogue of optical items."""

    kind: Literal["mosaic", "stac"] = Field(
        default="mosaic",
        description="'mosaic': one raster (GeoTIFF/COG/VRT; local, s3:// or /vsis3/); 'stac': a catalogue "
        "of optical items, mosaicked closest in time to the SAR first.",
    )
    uri: str = Field(
        default_factory=lambda: str(paths.demo_archive_dir() / "optical" / "orthophoto.tif"),
        description="The mosaic raster, or the STAC catalog.json/collection.json of optical items "
        "(default: the demo archive's orthophoto under $SAR_PIPELINE_DATA).",
    )
    bands: list[int] | None = Field(
        default=None,
        description="1-based red, green, blue band indices (unset: the bands tagged red/green/blue, "
        "else 1, 2, 3).",
    )
    value_min: float | None = Field(default=None, description="Source value mapped to 0 (unset = 0).")
    value_max: float | None = Field(
        default=None,
        description="Source value mapped to 255 (unset = 255, right for 8-bit orthophotos; e.g. 3000 for "
        "Sentinel-2 L2A reflectance × 10⁴).",
    )
    resampling: ResamplingName = Field(
        default="bilinear", description="GDAL resampling used to warp optical pixels onto each tile grid."
    )
    asset_key: str | None = Field(
        default=None, description="'stac' only: the RGB asset key (unset: visual, rgb, image or data)."
    )
    max_cloud_cover: float | None = Field(
        default=None,
        ge=0,
        le=100,
        description="'stac' only: ignore items whose eo:cloud_cover (%) is above this.",
    )
    allowed_href_roots: list[str] = Field(
        default=[],
        description="'stac' only: where the catalogue's links and RGB assets may point besides its own folder "
        "(folders, URL prefixes, a bare scheme; as archive.allowed_href_roots). An item elsewhere is skipped "
        "naming this setting.",
    )

    @field_validator("bands")
    @classmethod
    def _three_bands(cls, value: list[int] | None) -> list[int] | None:
        if value is not None and (len(value) != 3 or min(value) < 1):
            raise ValueError(f"bands must be three 1-based band indices (red, green, blue), got {value}")
        return value

    @model_validator(mode="after")
    def _value_range_order(self) -> OpticalSettings:
        if self.value_range is not None and not self.value_range[0] < self.value_range[1]:
            raise ValueError(f"value_min must be below value_max, got {self.value_range}")
        return self

    @property
    def value_range(self) -> tuple[float, float] | None:
        """(source value → 0, source value → 255), or None when neither end is set (0–255)."""
        if self.value_min is None and self.value_max is None:
            return None
        return (
            self.value_min if self.value_min is not None else 0.0,
            self.value_max if self.value_max is not None else 255.0,
        )
