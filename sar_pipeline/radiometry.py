"""SAR radiometry: raw pixel values → intensity → dB → 8/16-bit, the inverse, and speckle statistics.

Conventions
-----------
* *Intensity* is linear backscatter power (σ⁰, β⁰ or uncalibrated |s|², whatever the product
  holds); *amplitude* is its square root; *dB* is ``10·log10(intensity)``.
* Raw values become physical ones with the raster's scale/offset: ``value = raw * scale + offset``
  (STAC ``raster:bands`` convention), then are read in the declared unit
  (``"amplitude"``, ``"intensity"``, ``"db"`` or ``"complex"``).
* Resampling averages in intensity, never in dB (the mean of dB values is biased low).
* Quantised images reserve the value 0 for nodata; valid pixels map linearly
  ``[db_min, db_max] → [1, 2**bit_depth - 1]``. :func:`to_db` inverts the mapping with the
  :class:`RadiometryParams` recorded beside each tile.
"""

from __future__ import annotations

import dataclasses
from typing import Literal, get_args

import numpy as np

from sar_pipeline.errors import ConfigError, RasterError

#: what a raster's pixel values hold (see the module's conventions)
ValueUnit = Literal["amplitude", "intensity", "db", "complex"]
VALUE_UNITS: tuple[str, ...] = get_args(ValueUnit)


@dataclasses.dataclass(frozen=True)
class RadiometryParams:
    """How a quantised tile maps back to dB: ``db = db_min + (v - 1) / (2**bit_depth - 2) * (db_max - db_min)``.

    ``unit`` is the physical quantity the dB values are of (always ``"db"`` of intensity here);
    ``nodata_value`` (0) marks pixels without data.
    """

    db_min: float
    db_max: float
    bit_depth: int = 8
    unit: str = "db"
    nodata_value: int = 0

    def __post_init__(self):
        if self.bit_depth not in (8, 16):
            raise ConfigError("bit_depth", f"must be 8 or 16, got {self.bit_depth}")
        if not (np.isfinite(self.db_min) and np.isfinite(self.db_max) and self.db_max > self.db_min):
            raise ConfigError(
                "db_min/db_max", f"need finite db_min < db_max, got {self.db_min}, {self.db_max}"
            )

    @property
    def max_value(self) -> int:
        return 2**self.bit_depth - 1

    @property
    def dtype(self) -> type:
        return np.uint8 if self.bit_depth == 8 else np.uint16

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def resolve_value_unit(value_unit: str | None, dtype: str | np.dtype, default_unit: str | None = None) -> str:
    """The unit to read a raster in: the scene's own, else the archive default, else a guess from dtype.

    Complex dtypes are always ``"complex"``; a real raster without any declared unit is read
    as ``"amplitude"`` (what detected airborne SAR products ship most often).
    """
    dtype = np.dtype(dtype)
    if np.issubdtype(dtype, np.complexfloating) or dtype.kind == "c":
        return "complex"
    unit = (value_unit or default_unit or "amplitude").lower()
    aliases = {"power": "intensity", "linear": "intensity", "decibel": "db", "amp": "amplitude"}
    unit = aliases.get(unit, unit)
    if unit not in VALUE_UNITS:
        raise ConfigError("value_unit", f"unknown unit {value_unit!r}; expected one of {VALUE_UNITS}")
    return unit


def to_intensity(
    raw: np.ndarray,
    unit: str,
    *,
    scale: float | None = None,
    offset: float | None = None,
    nodata: float | None = None,
    source: object = "raster",
    overwrite_input: bool = False,
) -> tuple[np.ndarray, int]:
    """Convert raw pixels to linear intensity (float32), NaN where there is no data.

    ``nodata`` (compared on raw values) and non-finite pixels become NaN; the number of
    non-finite pixels that were *not* declared nodata is returned beside the array so callers
    can record it. A negative amplitude or intensity contradicts the declared unit and raises
    :class:`RasterError` naming ``source``. ``overwrite_input=True`` lets a float32 ``raw`` that
    the caller no longer needs be converted in place (saves a copy of the window).
    """
    raw = np.asarray(raw)
    if unit == "complex" or np.iscomplexobj(raw):
        values = raw.astype(np.complex64, copy=False)
        nodata_mask = (
            values == nodata if nodata is not None and np.isfinite(nodata) else np.zeros(raw.shape, bool)
        )
        intensity = (values.real.astype(np.float32) ** 2 + values.imag.astype(np.float32) ** 2).astype(
            np.float32
        )
        if scale is not None and scale != 1.0:
            intensity *= np.float32(scale) ** 2
    else:
        if nodata is None:
            nodata_mask = None
        elif np.isnan(nodata):
            nodata_mask = np.isnan(raw)
        else:
            nodata_mask = raw == nodata
        if nodata_mask is not None and not nodata_mask.any():
            nodata_mask = None
        values = raw if overwrite_input and raw.dtype == np.float32 else raw.astype(np.float32, copy=True)
        if scale is not None and scale != 1.0:
            values *= np.float32(scale)
        if offset:
            values += np.float32(offset)
        if unit in ("amplitude", "intensity"):
            # one reduction clears the usual case; NaN (min is NaN) or negatives get the full check
            minimum = values.min() if values.size else 0.0
            bad = values < 0 if not minimum >= 0 else np.zeros(0, bool)
            if nodata_mask is not None and bad.size:
                bad &= ~nodata_mask
            if bad.any():
                raise RasterError(
                    source,
                    f"{int(bad.sum())} negative pixel value(s) (min {float(values[bad].min()):.4g}) in a "
                    f"raster declared as {unit}; check the product's unit/scale/offset",
                )
            # in place: ``values`` is our own copy
            intensity = np.multiply(values, values, out=values) if unit == "amplitude" else values
        elif unit == "db":
            with np.errstate(over="ignore"):
                np.divide(values, np.float32(10.0), out=values)
                intensity = np.power(np.float32(10.0), values, out=values, dtype=np.float32)
        else:
            raise ConfigError("value_unit", f"unknown unit {unit!r}; expected one of {VALUE_UNITS}")
        return _mark_missing(intensity, nodata_mask)
    return _mark_missing(intensity, nodata_mask if nodata_mask.any() else None)


def _mark_missing(intensity: np.ndarray, nodata_mask: np.ndarray | None) -> tuple[np.ndarray, int]:
    """NaN where declared nodata or non-finite (dB values above ~385 overflow float32 to +inf).

    Returns the array and the count of non-finite pixels that were not declared nodata.
    """
    # a sum is NaN/inf only if some term is (or it overflows): one cheap reduction skips the mask pass
    with np.errstate(over="ignore", invalid="ignore"):
        all_finite = bool(np.isfinite(intensity.sum(dtype=np.float32)))
    invalid_count = 0
    if all_finite:
        missing = nodata_mask
    else:
        nonfinite = ~np.isfinite(intensity)
        if nodata_mask is not None:
            nonfinite &= ~nodata_mask
            missing = nodata_mask | nonfinite
        else:
            missing = nonfinite
        invalid_count = int(nonfinite.sum())
    if missing is not None:
        np.copyto(intensity, np.float32(np.nan), where=missing)
    return intensity, invalid_count


def intensity_to_db(intensity: np.ndarray, floor_db: float = -100.0) -> np.ndarray:
    """``10·log10(intensity)`` as float32; zero intensity becomes ``floor_db``, NaN stays NaN."""
    intensity = np.asarray(intensity, dtype=np.float32)
    with np.errstate(divide="ignore", invalid="ignore"):
        db = np.log10(intensity)
        db *= np.float32(10.0)
    non_positive = intensity <= 0  # False for NaN
    if non_positive.any():
        db[non_positive] = floor_db
    return db


def db_to_intensity(db: np.ndarray) -> np.ndarray:
    """Inverse of :func:`intensity_to_db` (NaN stays NaN)."""
    return np.power(10.0, np.asarray(db, dtype=np.float64) / 10.0)


def percentile_db_range(db_samples: np.ndarray, low: float, high: float) -> tuple[float, float]:
    """The ``(low, high)`` percentiles of the finite dB samples (e.g. 1 and 99): a clip range.

    Used for per-dataset clipping: pass samples pooled over every scene of the dataset.
    """
    vals = np.asarray(db_samples, dtype=np.float64)
    vals = vals[np.isfinite(vals)]
    if vals.size == 0:
        raise RasterError("percentile_db_range", "no finite dB samples to compute percentiles from")
    lo, hi = np.percentile(vals, [low, high])
    if not hi > lo:
        hi = lo + 1e-3
    return float(lo), float(hi)


def quantize_db(db: np.ndarray, params: RadiometryParams) -> np.ndarray:
    """Clip dB to ``[db_min, db_max]`` and map to ``1 … 2**bit_depth - 1`` (NaN → 0 = nodata)."""
    db = np.asarray(db, dtype=np.float32)
    span = params.db_max - params.db_min
    levels = params.max_value - 1
    # one temporary, updated in place (same arithmetic, in the same order, as the plain expression)
    scaled = np.clip(db, params.db_min, params.db_max)
    scaled -= np.float32(params.db_min)
    scaled *= np.float32(levels / span)
    np.rint(scaled, out=scaled)
    scaled += 1
    missing = np.isnan(db)
    if missing.any():
        np.copyto(scaled, np.float32(params.nodata_value), where=missing)
    return scaled.astype(params.dtype)


def to_db(png_values: np.ndarray, params: RadiometryParams | dict) -> np.ndarray:
    """Invert :func:`quantize_db`: quantised values → dB (float32), nodata (0) → NaN.

    Values that were clipped come back as ``db_min``/``db_max``; within the range the error is at
    most half a quantisation step, ``(db_max - db_min) / (2 * (2**bit_depth - 2))``.
    """
    if isinstance(params, dict):
        params = RadiometryParams(**{k: params[k] for k in ("db_min", "db_max", "bit_depth") if k in params})
    v = np.asarray(png_values).astype(np.float32)
    levels = params.max_value - 1
    db = params.db_min + (v - 1) * np.float32((params.db_max - params.db_min) / levels)
    db[v == params.nodata_value] = np.nan
    return db.astype(np.float32)


@dataclasses.dataclass(frozen=True)
class SpeckleStatistics:
    """Speckle statistics of an intensity image.

    ``mean`` and ``coefficient_of_variation`` (std/mean) are over all valid pixels;
    ``equivalent_number_of_looks`` is the median of ``mean² / variance`` over the most
    homogeneous windows (``window`` × ``window`` pixels, lowest coefficient of variation);
    ``n_windows`` of them were used.
    """

    mean: float
    coefficient_of_variation: float
    equivalent_number_of_looks: float
    n_windows: int
    window: int


def speckle_statistics(
    intensity: np.ndarray, window: int = 16, homogeneous_fraction: float = 0.25
) -> SpeckleStatistics:
    """Mean, coefficient of variation and ENL of a linear-intensity image (NaN = nodata).

    ENL of fully developed speckle in an L-look intensity image is L (gamma distribution,
    mean²/var = L). Texture raises the variance, so the ENL is taken on the
    ``homogeneous_fraction`` of non-overlapping windows with the lowest coefficient of
    variation (windows with any nodata are ignored).
    """
    img = np.asarray(intensity, dtype=np.float64)
    valid = img[np.isfinite(img)]
    if valid.size < 2:
        raise RasterError("speckle_statistics", "fewer than 2 valid pixels")
    mean = float(valid.mean())
    cv = float(valid.std() / mean) if mean > 0 else float("nan")
    rows, cols = img.shape[0] // window, img.shape[1] // window
    enl = float("nan")
    used = 0
    if rows and cols:
        blocks = img[: rows * window, : cols * window].reshape(rows, window, cols, window).swapaxes(1, 2)
        blocks = blocks.reshape(rows * cols, window * window)
        blocks = blocks[np.isfinite(blocks).all(axis=1)]
        if len(blocks):
            m = blocks.mean(axis=1)
            v = blocks.var(axis=1, ddof=1)
            ok = (m > 0) & (v > 0)
            m, v = m[ok], v[ok]
            if len(m):
                block_cv = np.sqrt(v) / m
                keep = np.argsort(block_cv)[: max(1, int(round(len(m) * homogeneous_fraction)))]
                enl = float(np.median(m[keep] ** 2 / v[keep]))
                used = len(keep)
    return SpeckleStatistics(mean, cv, enl, used, window)
