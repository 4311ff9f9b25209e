"""The training images' radiometry: one mapping (a dB range, or an amplitude scale) pooled over every flight.

Why here and not when tiling
----------------------------
A model learns brightness as a function of the text; a tile must mean the same dB at the same
grey level in every flight, so the range that maps dB to 8 bits has to be one for the whole dataset.
Tiles are written one flight at a time (a new flight arrives through the sensor, long after the
first ones were tiled), so a range fixed at tiling time is either per flight (the same ground looks
different in two flights; rejected for training) or frozen before the archive's other flights exist.
Instead the ``sar_tiles`` stage stores each tile as 16-bit dB over its own valid range with a
histogram of its valid dB values (zeros, nodata and non-finite pixels excluded), and this module,
run by ``training_dataset`` over every flight it writes, chooses the range from the pooled
histograms — robust percentiles (default 0.5 % and 99.5 %) of the valid pixels of every tile that
enters the dataset, rounded to ``range_step_db``, or a fixed ``db_min``/``db_max`` — and re-quantises
each tile into it. Re-running ``training_dataset`` after a new flight re-chooses the range for all
flights; no flight is re-tiled. The rounding keeps the range, and so the earlier flights' dataset
shards, unchanged unless the new flight moves a pooled percentile across a step; when it does, every
shard is written anew (their images are quantised into the range). A fixed ``db_min``/``db_max``
never moves: the setting for large archives (README, "Running at scale").

The ``"amplitude"`` normalisation (the follow-up study's ``A / (μ + 3σ)`` clipped to [0, 1]) is
chosen the same way and for the same reason: μ and σ are the mean and standard deviation of the
amplitude of the valid pixels pooled over every tile of the dataset (from the same histograms), not
per scene or per tile. A generated tile belongs to no scene, so only a dataset-wide scale can be
inverted at generation time; and per-scene scales would make one grey level mean different
backscatter in different scenes, the fault the pooled dB range avoids.

Saturation is measured against the chosen range per tile (share of valid pixels below ``db_min``
and above ``db_max``): the ``training_dataset_saturation`` check warns about flights clipped more
than ``saturation_warn_fraction`` at either end, naming their scenes, and fails when some tile is
clipped over ``saturation_fail_fraction`` (most of it one flat level).
"""

from __future__ import annotations

import io
from collections.abc import Sequence

import numpy as np
from PIL import Image
from pydantic import Field, field_validator, model_validator

from sar_pipeline import radiometry
from sar_pipeline.errors import RasterError
from sar_pipeline.pictures import png_bytes
from sar_pipeline.settings import Settings

#: dataset PNGs of SAR tiles are Huffman-only coded like the tiles themselves (see pictures.png_bytes)
DATASET_PNG_COMPRESS_LEVEL = 1


class DatasetRadiometrySettings(Settings):
    """How the dataset's SAR images map backscatter to 8/16-bit: one mapping for every flight."""

    normalisation: radiometry.Normalisation = Field(
        default="db",
        description="How backscatter becomes grey levels. 'db': linear in dB between the pooled "
        "percentiles (or db_min/db_max) — the paper. 'amplitude': A / (μ + 3σ) clipped to [0, 1], "
        "linear in amplitude, with μ and σ the mean and standard deviation of the amplitude of the valid "
        "pixels pooled over every tile of the dataset — the follow-up study (Debuysère et al. 2025); "
        "percentile_*/db_min/db_max are then unused. Either is recorded per row (normalisation, db_min, "
        "db_max, amplitude_scale/mean/std) so generation's --geotiff inverts it.",
    )

    percentile_low: float = Field(
        default=0.5,
        ge=0,
        le=100,
        description="dB mapped to the lowest valid level: this percentile (0–100) of the valid pixels "
        "(zeros, nodata, non-finite excluded) pooled over every tile of the dataset. Unused when db_min "
        "and db_max are set.",
    )
    percentile_high: float = Field(
        default=99.5,
        ge=0,
        le=100,
        description="dB mapped to the highest level (255 or 65535): this percentile of the pooled valid "
        "pixels; must be above percentile_low.",
    )
    db_min: float | None = Field(
        default=None,
        description="A fixed dB for the lowest level instead of the pooled percentile (set with db_max), "
        "e.g. -30 for calibrated sigma0 of one sensor. A fixed range never moves, so a new flight writes "
        "only its own dataset shard: recommended for large archives (see range_step_db).",
    )
    db_max: float | None = Field(
        default=None, description="A fixed dB for the highest level (set with db_min), e.g. 10."
    )
    range_step_db: float = Field(
        default=0.5,
        ge=0,
        description="The pooled percentiles are rounded to a multiple of this many dB. Every flight's "
        "dataset shard holds its images quantised into the dataset's range, so a build whose new flight "
        "moves either rounded end across a step rewrites every flight's shard under a new key: that "
        "version adds the whole dataset's bytes, not one flight's (the old shards go when retention "
        "drops the versions naming them). The larger the pool, the less one flight moves its "
        "percentiles, but a flight of brighter or darker ground still can; 0 uses them unrounded (every "
        "new flight rewrites every shard). Unused with db_min/db_max, which keep storage linear in flights.",
    )
    bit_depth: int = Field(
        default=8,
        description="Bits per pixel of the dataset's SAR images: 8 (what the Stable Diffusion VAE takes) "
        "or 16 (finer steps; the training data loader scales them to the same [-1, 1]).",
    )
    max_nodata_fraction: float = Field(
        default=0.0,
        ge=0,
        le=1,
        description="Tiles with more nodata than this share are left out of the dataset (listed with the "
        "reason): nodata decodes as black, and a model trained on black wedges draws them. 0 keeps only "
        "fully valid tiles.",
    )
    saturation_warn_fraction: float = Field(
        default=0.03,
        ge=0,
        le=1,
        description="training_dataset_saturation warns about flights with more than this share of their "
        "valid pixels clipped at either end of the range (naming the scenes).",
    )
    saturation_fail_fraction: float = Field(
        default=0.5,
        ge=0,
        le=1,
        description="training_dataset_saturation fails (blocking training) when a tile has more than this "
        "share of its valid pixels clipped at one end: most of it is one flat level.",
    )

    @field_validator("bit_depth")
    @classmethod
    def _bit_depth(cls, value: int) -> int:
        if value not in (8, 16):
            raise ValueError(f"bit_depth must be 8 or 16, got {value}")
        return value

    @model_validator(mode="after")
    def _range(self) -> DatasetRadiometrySettings:
        if (self.db_min is None) != (self.db_max is None):
            raise ValueError("set both db_min and db_max, or neither (then the pooled percentiles apply)")
        if self.fixed_range is not None and not self.db_min < self.db_max:
            raise ValueError(f"db_min ({self.db_min}) must be below db_max ({self.db_max})")
        if not self.percentile_low < self.percentile_high:
            raise ValueError(
                f"percentile_low ({self.percentile_low}) must be below percentile_high ({self.percentile_high})"
            )
        return self

    @property
    def fixed_range(self) -> tuple[float, float] | None:
        """(db_min, db_max) when fixed, else None (pooled percentiles)."""
        if self.db_min is None or self.db_max is None:
            return None
        return self.db_min, self.db_max

    def radiometry_json(self) -> dict:
        """What of these settings shapes the images (enters the dataset version)."""
        amplitude = self.normalisation == "amplitude"
        return {
            "normalisation": self.normalisation,
            "percentiles": None
            if self.fixed_range or amplitude
            else [self.percentile_low, self.percentile_high],
            "fixed_range": list(self.fixed_range) if self.fixed_range and not amplitude else None,
            "range_step_db": None if self.fixed_range or amplitude else self.range_step_db,
            "bit_depth": self.bit_depth,
            "max_nodata_fraction": self.max_nodata_fraction,
        }

    def saturation_advice(self) -> str:
        """What to change when tiles are clipped at an end of the range, naming the settings that
        apply to this normalisation (db_min/db_max and the percentiles do nothing under 'amplitude')."""
        if self.normalisation == "amplitude":
            return (
                "the dataset uses normalisation 'amplitude' (A / (μ + 3σ) clipped to [0, 1]), where "
                "db_min/db_max and percentile_low/percentile_high do not apply: amplitudes above μ + 3σ "
                "fill the top level by design and those below half a grey level the bottom one; set "
                "training_dataset bit_depth 16 for finer low levels, or normalisation 'db' to choose the "
                "range in dB, or leave out the flight"
            )
        if self.fixed_range is not None:
            return (
                f"set training_dataset db_min/db_max (fixed now at {self.db_min:g}…{self.db_max:g} dB) "
                "wider, or unset both so the pooled percentile_low/percentile_high apply, or leave out "
                "the flight"
            )
        return (
            f"widen training_dataset percentile_low/percentile_high ({self.percentile_low:g}/"
            f"{self.percentile_high:g} now), or set db_min/db_max, or leave out the flight"
        )


def decode_png(data: bytes, source: object) -> np.ndarray:
    """A single-band PNG's pixels (uint8 or uint16); RasterError naming ``source`` when it is not one."""
    try:
        with Image.open(io.BytesIO(data)) as img:
            array = np.asarray(img)
    except Exception as exc:
        raise RasterError(source, f"not a readable PNG ({exc})") from exc
    if array.ndim != 2:
        raise RasterError(source, f"expected a single-band tile, got shape {array.shape}")
    return array


def stored_histogram(row: dict, data: bytes | None, source: object) -> radiometry.DbHistogram:
    """A tile's valid-dB histogram: the one its manifest row records, else computed from its pixels."""
    counts = row.get("db_histogram")
    if counts is not None and row.get("db_histogram_start_db") is not None:
        return radiometry.DbHistogram.from_start_db(row["db_histogram_start_db"], counts)
    if data is None:
        raise RasterError(source, "no dB histogram in the manifest and no tile bytes to compute one")
    return radiometry.DbHistogram.of(radiometry.to_db(decode_png(data, source), row))


def choose_range(
    histograms: Sequence[radiometry.DbHistogram], settings: DatasetRadiometrySettings
) -> tuple[radiometry.RadiometryParams, str]:
    """The dataset's backscatter → level mapping and how it was chosen (for metadata and the card)."""
    if settings.normalisation == "amplitude":
        pooled = radiometry.DbHistogram.pooled(histograms)
        mean, std = pooled.amplitude_moments()
        params = radiometry.RadiometryParams.amplitude(mean, std, settings.bit_depth)
        how = (
            f"amplitude / (μ + 3σ) with μ = {mean:.4g}, σ = {std:.4g} (amplitude of {pooled.total} valid "
            f"pixels pooled over {len(histograms)} tiles): top level at {params.amplitude_scale:.4g} "
            f"({params.db_max:.2f} dB)"
        )
        return params, how
    if settings.fixed_range is not None:
        lo, hi = settings.fixed_range
        how = f"fixed {lo:g} … {hi:g} dB"
    else:
        pooled = radiometry.DbHistogram.pooled(histograms)
        lo, hi = pooled.percentiles(settings.percentile_low, settings.percentile_high)
        step = settings.range_step_db
        if step > 0:
            lo, hi = round(lo / step) * step, round(hi / step) * step
            if hi <= lo:  # a near-constant pool: keep one step between the ends
                hi = lo + step
        how = (
            f"percentiles {settings.percentile_low:g}–{settings.percentile_high:g} of {pooled.total} valid "
            f"pixels pooled over {len(histograms)} tiles"
            + (f", rounded to {step:g} dB" if step > 0 else "")
            + f": {lo:.2f} … {hi:.2f} dB"
        )
    return radiometry.RadiometryParams(db_min=lo, db_max=hi, bit_depth=settings.bit_depth), how


#: the dataset columns that record its mapping (every row the same; RadiometryParams.from_dict reads them)
RADIOMETRY_COLUMNS = (
    "normalisation", "db_min", "db_max", "bit_depth", "amplitude_scale", "amplitude_mean", "amplitude_std",
)  # fmt: skip


def dataset_radiometry_columns(params: radiometry.RadiometryParams) -> dict:
    """The values of :data:`RADIOMETRY_COLUMNS` that record ``params`` on a dataset row."""
    return {name: getattr(params, name) for name in RADIOMETRY_COLUMNS}


def requantise(
    data: bytes, tile_radiometry: dict, params: radiometry.RadiometryParams, source: object
) -> bytes:
    """PNG bytes of a stored tile (dB over ``tile_radiometry``) re-quantised into ``params`` (nodata kept)."""
    db = radiometry.to_db(decode_png(data, source), tile_radiometry)
    image = radiometry.quantize_db(db, params)
    return png_bytes(image, DATASET_PNG_COMPRESS_LEVEL, huffman_only=True)
