"""What a user sets for the per-flight geometry stages: ``sar_tiles``, ``optical_tiles`` and the optical source.

One model per stage (see :mod:`sar_pipeline.settings`): the Launchpad, the CLI and the tests all
run with exactly these fields, defaults and descriptions.
"""

from __future__ import annotations

import os
from typing import Literal

from pydantic import Field, field_validator, model_validator

from sar_pipeline import paths
from sar_pipeline.geo.resample import ResamplingName
from sar_pipeline.radiometry import ValueUnit
from sar_pipeline.settings import Settings


class TilingSettings(Settings):
    """How SAR scenes become tiles: resampling to a fixed ground sample distance, dB mapping, tiling."""

    ground_sample_distance_m: float = Field(
        default=1.0,
        gt=0,
        description="Output pixel size on the ground, metres (square pixels on the scene's projected CRS).",
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
    db_min: float = Field(
        default=-30.0,
        description="dB mapped to the lowest valid level (1); lower values are clipped. "
        "Unused when percentile_low/percentile_high are set.",
    )
    db_max: float = Field(
        default=10.0,
        description="dB mapped to the highest level (255 or 65535); higher values are clipped. "
        "Unused when percentile_low/percentile_high are set.",
    )
    percentile_low: float | None = Field(
        default=None,
        ge=0,
        le=100,
        description="Set with percentile_high to clip at this percentile (0–100) of the flight's dB values "
        "instead of db_min (recorded per tile, so the mapping stays invertible).",
    )
    percentile_high: float | None = Field(
        default=None,
        ge=0,
        le=100,
        description="Set with percentile_low: clip at this percentile (0–100) instead of db_max; must be "
        "above percentile_low.",
    )
    bit_depth: int = Field(
        default=8, description="8 (uint8 PNG, what the Stable Diffusion VAE takes) or 16 (uint16 PNG)."
    )
    default_value_unit: ValueUnit = Field(
        default="amplitude",
        description="What the pixels of scenes that declare no unit (STAC raster:bands unit) hold: "
        "amplitude, intensity, db or complex. Complex rasters are always read as complex.",
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

    @field_validator("bit_depth")
    @classmethod
    def _bit_depth(cls, value: int) -> int:
        if value not in (8, 16):
            raise ValueError(f"bit_depth must be 8 or 16, got {value}")
        return value

    @model_validator(mode="after")
    def _clip_range(self) -> TilingSettings:
        if (self.percentile_low is None) != (self.percentile_high is None):
            raise ValueError(
                "set both percentile_low and percentile_high, or neither (then db_min/db_max apply)"
            )
        if self.percentiles is not None and not self.percentile_low < self.percentile_high:
            raise ValueError(
                f"percentile_low ({self.percentile_low}) must be below percentile_high ({self.percentile_high})"
            )
        if self.percentiles is None and not self.db_min < self.db_max:
            raise ValueError(f"db_min ({self.db_min}) must be below db_max ({self.db_max})")
        return self

    @property
    def step(self) -> int:
        """Pixels between tile origins."""
        return self.stride or self.tile_size

    @property
    def percentiles(self) -> tuple[float, float] | None:
        """(low, high) percentiles of the flight's dB values used as clip range, or None (db_min/db_max)."""
        if self.percentile_low is None or self.percentile_high is None:
            return None
        return self.percentile_low, self.percentile_high

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
