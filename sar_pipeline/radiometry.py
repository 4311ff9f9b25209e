"""SAR radiometry: raw pixel values → intensity → dB → 8/16-bit, the inverse, and speckle statistics.

Conventions
-----------
* *Intensity* is linear backscatter power (σ⁰, β⁰ or uncalibrated |s|², whatever the product
  holds); *amplitude* is its square root; *dB* is ``10·log10(intensity)``.
* Raw values become physical ones with the raster's scale/offset: ``value = raw * scale + offset``
  (STAC ``raster:bands`` convention), then are read in the declared unit
  (``"amplitude"``, ``"intensity"``, ``"db"`` or ``"complex"``).
* Resampling averages in intensity, never in dB (the mean of dB values is biased low).
* Quantised images reserve the value 0 for nodata. Valid pixels map to ``[1, 2**bit_depth - 1]``
  by one of two normalisations (:data:`Normalisation`): ``"db"``, linear in dB over
  ``[db_min, db_max]`` (the paper); or ``"amplitude"``, linear in amplitude as ``A / (μ + 3σ)``
  clipped to ``[0, 1]`` (the follow-up study, Debuysère et al. 2025). :func:`to_db` inverts either
  with the :class:`RadiometryParams` recorded beside each tile or dataset row.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence
from typing import Literal, get_args

import numpy as np

from sar_pipeline.errors import ConfigError, RasterError

#: what a raster's pixel values hold (see the module's conventions)
ValueUnit = Literal["amplitude", "intensity", "db", "complex"]
VALUE_UNITS: tuple[str, ...] = get_args(ValueUnit)

#: how backscatter maps to grey levels: linear in dB over [db_min, db_max], or A / (μ + 3σ) in amplitude
Normalisation = Literal["db", "amplitude"]
NORMALISATIONS: tuple[str, ...] = get_args(Normalisation)

#: the amplitude normalisation's top level is the mean plus this many standard deviations (μ + 3σ)
AMPLITUDE_SIGMAS = 3.0


@dataclasses.dataclass(frozen=True)
class RadiometryParams:
    """How a quantised tile maps back to backscatter (level ``v``, ``m = 2**bit_depth - 1``; 0 = nodata).

    * ``normalisation="db"``: ``db = db_min + (v - 1) / (m - 1) * (db_max - db_min)``.
    * ``normalisation="amplitude"``: amplitude ``A = max(v - 1, 0.5) / (m - 1) * amplitude_scale``
      with ``amplitude_scale = amplitude_mean + 3 * amplitude_std`` (amplitude in the scenes' own
      calibration, ``A² = intensity``); level 1 holds amplitudes below half a step and comes back as
      half a step. ``db_max`` is then the dB of ``amplitude_scale`` (brighter pixels are clipped) and
      ``db_min`` the dB of half a step (darker pixels all read as level 1): build these params with
      :meth:`amplitude`.

    ``unit`` is the physical quantity the dB values are of (always ``"db"`` of intensity here);
    ``nodata_value`` (0) marks pixels without data.
    """

    db_min: float
    db_max: float
    bit_depth: int = 8
    unit: str = "db"
    nodata_value: int = 0
    normalisation: str = "db"
    #: amplitude mapped to the top level (μ + 3σ), "amplitude" normalisation only
    amplitude_scale: float | None = None
    #: mean and standard deviation of the amplitude the scale was computed from (for the record)
    amplitude_mean: float | None = None
    amplitude_std: float | None = None

    def __post_init__(self):
        if self.bit_depth not in (8, 16):
            raise ConfigError("bit_depth", f"must be 8 or 16, got {self.bit_depth}")
        if self.normalisation not in NORMALISATIONS:
            raise ConfigError("normalisation", f"must be one of {NORMALISATIONS}, got {self.normalisation!r}")
        if self.normalisation == "amplitude" and not (
            self.amplitude_scale is not None
            and np.isfinite(self.amplitude_scale)
            and self.amplitude_scale > 0
        ):
            raise ConfigError(
                "amplitude_scale",
                f"the amplitude normalisation needs a finite scale > 0, got {self.amplitude_scale}",
            )
        if not (np.isfinite(self.db_min) and np.isfinite(self.db_max) and self.db_max > self.db_min):
            raise ConfigError(
                "db_min/db_max", f"need finite db_min < db_max, got {self.db_min}, {self.db_max}"
            )

    @classmethod
    def amplitude(cls, mean: float, std: float, bit_depth: int = 8) -> RadiometryParams:
        """The ``A / (μ + 3σ)`` normalisation of amplitudes of mean ``mean`` and standard deviation ``std``."""
        scale = float(mean) + AMPLITUDE_SIGMAS * float(std)
        if not (np.isfinite(scale) and scale > 0):
            raise ConfigError("amplitude_scale", f"μ + 3σ must be finite and > 0, got μ={mean}, σ={std}")
        half_step = scale / (2 * (2**bit_depth - 2))
        return cls(
            db_min=float(20 * np.log10(half_step)),
            db_max=float(20 * np.log10(scale)),
            bit_depth=bit_depth,
            normalisation="amplitude",
            amplitude_scale=scale,
            amplitude_mean=float(mean),
            amplitude_std=float(std),
        )

    @classmethod
    def from_dict(cls, values: dict) -> RadiometryParams:
        """The params a dict records (a manifest or dataset row, :meth:`to_dict`); keys it lacks or
        holds as None take their defaults, other keys are ignored."""
        names = [f.name for f in dataclasses.fields(cls)]
        return cls(**{k: values[k] for k in names if values.get(k) is not None})

    @property
    def max_value(self) -> int:
        return 2**self.bit_depth - 1

    @property
    def dtype(self) -> type:
        return np.uint8 if self.bit_depth == 8 else np.uint16

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


#: how a scene's pixel unit was decided: named by its catalogue, implied by complex pixels, or the
#: per-archive default (an assumption the user is warned about)
UnitSource = Literal["declared", "data type", "assumed"]

_UNIT_SYMBOLS = {"σ⁰": "sigma0", "σ0": "sigma0", "σ": "sigma", "β⁰": "beta0", "β0": "beta0", "γ⁰": "gamma0"}
_DB_WORDS = {"db", "decibel", "decibels"}
_COMPLEX_WORDS = {"complex", "slc"}
_AMPLITUDE_WORDS = {"amplitude", "amp", "magnitude", "dn", "dns"}
_INTENSITY_WORDS = {
    "intensity", "power", "linear", "sigma0", "sigma", "beta0", "beta", "gamma0", "gamma", "nought",
}  # fmt: skip


def parse_value_unit(text: str | None) -> ValueUnit | None:
    """The unit a catalogue's unit string names, or None when it names none we know (or is empty).

    Real catalogues write ``dB``, ``amplitude (DN)``, ``DN``, ``sigma0``/``σ⁰``, ``beta0``, ``gamma0``,
    ``intensity``, ``power``, ``linear``, ``complex``…: any mention of dB (``sigma0 dB``) is
    ``"db"``; amplitude words (``amplitude``, ``magnitude``, ``DN`` — a detected product's digital
    numbers are amplitudes) are ``"amplitude"``; power words (``intensity``, ``power``, ``linear``
    power, calibrated ``sigma0``/``beta0``/``gamma0`` in linear units) are ``"intensity"``.
    """
    if text is None:
        return None
    lowered = str(text).strip().lower()
    for symbol, word in _UNIT_SYMBOLS.items():
        lowered = lowered.replace(symbol, f" {word} ")
    words = set(re.findall(r"[a-z0-9]+", lowered))
    if "digital" in words and "number" in words:
        words.add("dn")
    for found, unit in (
        (_DB_WORDS, "db"),
        (_COMPLEX_WORDS, "complex"),
        (_AMPLITUDE_WORDS, "amplitude"),
        (_INTENSITY_WORDS, "intensity"),
    ):
        if words & found:
            return unit  # type: ignore[return-value]
    return None


def resolve_value_unit(
    value_unit: str | None, dtype: str | np.dtype, default_unit: str | None = None
) -> tuple[str, UnitSource]:
    """The unit to read a raster in, and how it was decided.

    Complex pixels are always ``"complex"`` (``"data type"``); a unit string the catalogue declares
    and :func:`parse_value_unit` understands is ``"declared"``; otherwise (none, or one we cannot read)
    the archive default ``default_unit`` (else ``"amplitude"``, what detected airborne SAR products
    ship most often) is ``"assumed"``.
    """
    dtype = np.dtype(dtype)
    if np.issubdtype(dtype, np.complexfloating) or dtype.kind == "c":
        return "complex", "data type"
    declared = parse_value_unit(value_unit)
    if declared is not None:
        return declared, "declared"
    unit = parse_value_unit(default_unit) if default_unit else "amplitude"
    if unit is None:
        raise ConfigError(
            "default_value_unit", f"unknown unit {default_unit!r}; expected one of {VALUE_UNITS}"
        )
    return unit, "assumed"


def to_intensity(
    raw: np.ndarray,
    unit: str,
    *,
    scale: float | None = None,
    offset: float | None = None,
    nodata: float | None = None,
    zero_is_nodata: bool = False,
    source: object = "raster",
    overwrite_input: bool = False,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Convert raw pixels to linear intensity (float32), NaN where there is no data.

    ``nodata`` (compared on raw values) and non-finite pixels become NaN; so does zero intensity
    when ``zero_is_nodata`` (fill outside a detected product's swath). The mask of non-finite
    pixels that were *not* declared nodata (None when there is none) is returned beside the array
    so callers can count them. A negative amplitude or intensity contradicts the declared unit and raises
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
        return _mark_missing(intensity, nodata_mask, zero_is_nodata)
    return _mark_missing(intensity, nodata_mask if nodata_mask.any() else None, zero_is_nodata)


def _mark_missing(
    intensity: np.ndarray, nodata_mask: np.ndarray | None, zero_is_nodata: bool
) -> tuple[np.ndarray, np.ndarray | None]:
    """NaN where declared nodata, zero (if ``zero_is_nodata``) or non-finite (dB values above ~385
    overflow float32 to +inf).

    Returns the array and the mask of non-finite pixels that were not declared nodata (None if none).
    """
    # a sum is NaN/inf only if some term is (or it overflows): one cheap reduction skips the mask pass
    with np.errstate(over="ignore", invalid="ignore"):
        all_finite = bool(np.isfinite(intensity.sum(dtype=np.float32)))
    invalid = None
    if all_finite:
        missing = nodata_mask
    else:
        nonfinite = ~np.isfinite(intensity)
        if nodata_mask is not None:
            nonfinite &= ~nodata_mask
            missing = nodata_mask | nonfinite
        else:
            missing = nonfinite
        invalid = nonfinite if nonfinite.any() else None
    if zero_is_nodata:
        zeros = intensity == 0
        if zeros.any():
            missing = zeros if missing is None else (missing | zeros)
    if missing is not None:
        np.copyto(intensity, np.float32(np.nan), where=missing)
    return intensity, invalid


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


#: width of the bins of the dB histograms recorded per tile and pooled over a dataset
DB_HISTOGRAM_BIN_DB = 0.1


@dataclasses.dataclass(frozen=True)
class DbHistogram:
    """Counts of dB values in bins of :data:`DB_HISTOGRAM_BIN_DB`: ``counts[i]`` holds the values in
    ``[(first_bin + i) * bin, (first_bin + i + 1) * bin)``. Empty: no counts."""

    first_bin: int
    counts: np.ndarray  # int64

    @property
    def start_db(self) -> float:
        return self.first_bin * DB_HISTOGRAM_BIN_DB

    @property
    def total(self) -> int:
        return int(self.counts.sum())

    @classmethod
    def of(cls, db: np.ndarray) -> DbHistogram:
        """The histogram of the finite values of ``db``."""
        values = np.asarray(db, dtype=np.float64)
        values = values[np.isfinite(values)]
        if values.size == 0:
            return cls(0, np.zeros(0, np.int64))
        bins = np.floor(values / DB_HISTOGRAM_BIN_DB).astype(np.int64)
        first = int(bins.min())
        return cls(first, np.bincount(bins - first).astype(np.int64))

    @classmethod
    def of_quantised(
        cls, image: np.ndarray, params: RadiometryParams, exclude_lowest: int = 0
    ) -> DbHistogram:
        """The histogram of a quantised image's valid values (each level counted at its dB), without
        decoding it: one count per level, then levels gathered into bins. ``exclude_lowest`` pixels of
        the lowest level are left out (zero backscatter drawn at the floor)."""
        levels = np.bincount(np.asarray(image).ravel(), minlength=params.max_value + 1)[1:].astype(np.int64)
        if exclude_lowest:
            levels[0] -= min(int(exclude_lowest), int(levels[0]))
        used = np.nonzero(levels)[0]
        if used.size == 0:
            return cls(0, np.zeros(0, np.int64))
        if params.normalisation == "amplitude":
            db = to_db(used + 1, params).astype(np.float64)
        else:
            step = (params.db_max - params.db_min) / (params.max_value - 1)
            db = params.db_min + used * step
        bins = np.floor(db / DB_HISTOGRAM_BIN_DB + 1e-9).astype(np.int64)
        first = int(bins.min())
        return cls(first, np.bincount(bins - first, weights=levels[used]).astype(np.int64))

    @classmethod
    def from_start_db(cls, start_db: float, counts) -> DbHistogram:
        """Inverse of (:attr:`start_db`, ``counts``) as stored in a manifest."""
        return cls(int(round(start_db / DB_HISTOGRAM_BIN_DB)), np.asarray(counts, dtype=np.int64))

    @classmethod
    def pooled(cls, histograms: Sequence[DbHistogram]) -> DbHistogram:
        """The sum of several histograms (e.g. every tile of a dataset)."""
        used = [h for h in histograms if h.counts.size]
        if not used:
            return cls(0, np.zeros(0, np.int64))
        first = min(h.first_bin for h in used)
        last = max(h.first_bin + h.counts.size for h in used)
        total = np.zeros(last - first, np.int64)
        for h in used:
            total[h.first_bin - first : h.first_bin - first + h.counts.size] += h.counts
        return cls(first, total)

    def percentiles(self, low: float, high: float) -> tuple[float, float]:
        """The ``low``/``high`` percentiles (0–100) of the counted values, to a bin's width."""
        total = self.total
        if total == 0:
            raise RasterError("dB histogram", "no valid pixels to compute percentiles from")
        cumulative = np.cumsum(self.counts)

        def edge(q: float) -> float:
            # the bin holding the q-th value, interpolated linearly inside it
            target = q / 100.0 * total
            i = int(np.searchsorted(cumulative, target, side="left"))
            i = min(i, self.counts.size - 1)
            before = cumulative[i - 1] if i else 0
            inside = (target - before) / self.counts[i] if self.counts[i] else 0.0
            return (self.first_bin + i + float(np.clip(inside, 0, 1))) * DB_HISTOGRAM_BIN_DB

        lo, hi = edge(low), edge(high)
        return lo, hi if hi > lo else lo + DB_HISTOGRAM_BIN_DB

    def amplitude_moments(self) -> tuple[float, float]:
        """Mean and standard deviation of the amplitude (``10**(dB / 20)``) of the counted values, each
        bin taken at its centre (0.1 dB bins: amplitudes within 0.6 % of each pixel's)."""
        total = self.total
        if total == 0:
            raise RasterError("dB histogram", "no valid pixels to compute the amplitude statistics from")
        centres_db = (self.first_bin + np.arange(self.counts.size) + 0.5) * DB_HISTOGRAM_BIN_DB
        amplitude = np.power(10.0, centres_db / 20.0)
        weights = self.counts / total
        mean = float(weights @ amplitude)
        variance = float(weights @ (amplitude - mean) ** 2)
        return mean, float(np.sqrt(max(variance, 0.0)))

    def fractions_outside(self, db_min: float, db_max: float) -> tuple[float, float]:
        """Shares of the counted values below ``db_min`` and above ``db_max`` (bins split linearly)."""
        total = self.total
        if total == 0:
            return 0.0, 0.0
        lower = (self.first_bin + np.arange(self.counts.size)) * DB_HISTOGRAM_BIN_DB
        below = np.clip((db_min - lower) / DB_HISTOGRAM_BIN_DB, 0, 1)
        above = np.clip((lower + DB_HISTOGRAM_BIN_DB - db_max) / DB_HISTOGRAM_BIN_DB, 0, 1)
        return float(below @ self.counts) / total, float(above @ self.counts) / total


def quantize_db(db: np.ndarray, params: RadiometryParams) -> np.ndarray:
    """Map dB to ``1 … 2**bit_depth - 1`` (NaN → 0 = nodata) by ``params``' normalisation: dB clipped
    to ``[db_min, db_max]`` and mapped linearly, or amplitude ``A / amplitude_scale`` clipped to
    ``[0, 1]`` and mapped linearly."""
    db = np.asarray(db, dtype=np.float32)
    levels = params.max_value - 1
    if params.normalisation == "amplitude":
        with np.errstate(over="ignore"):
            scaled = np.power(np.float32(10.0), db / np.float32(20.0), dtype=np.float32)
        scaled *= np.float32(levels / params.amplitude_scale)
        np.clip(scaled, 0, levels, out=scaled)
    else:
        span = params.db_max - params.db_min
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

    ``"db"`` normalisation: values that were clipped come back as ``db_min``/``db_max``; within the
    range the error is at most half a quantisation step, ``(db_max - db_min) / (2 * (2**bit_depth - 2))``.
    ``"amplitude"``: the amplitude comes back within half a step, ``amplitude_scale / (2 * (2**bit_depth
    - 2))`` (level 1 as half a step), amplitudes above ``amplitude_scale`` as ``amplitude_scale``.
    """
    if isinstance(params, dict):
        params = RadiometryParams.from_dict(params)
    v = np.asarray(png_values).astype(np.float32)
    levels = params.max_value - 1
    if params.normalisation == "amplitude":
        amplitude = np.maximum(v - 1, np.float32(0.5)) * np.float32(params.amplitude_scale / levels)
        db = np.float32(20.0) * np.log10(amplitude)
    else:
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


#: an ENL above this comes from near-constant windows (saturated or coarsely quantised pixels), not
#: from speckle: airborne and spaceborne products have at most a few hundred looks
MAX_MEANINGFUL_ENL = 1000.0
#: above this many output pixels per source pixel, neighbouring output pixels repeat the same
#: source pixel and their statistics say nothing about speckle
MAX_SPECKLE_UPSAMPLING = 1.5


def speckle_if_meaningful(
    intensity: np.ndarray, upsampling_factor: float = 1.0, window: int = 16
) -> tuple[SpeckleStatistics | None, str]:
    """:func:`speckle_statistics` of a tile where they mean something, else None and the reason.

    Not meaningful: a tile upsampled by more than :data:`MAX_SPECKLE_UPSAMPLING` (interpolated
    neighbours), one without a single fully valid ``window``² window, or an ENL above
    :data:`MAX_MEANINGFUL_ENL` (near-constant windows: a saturated or coarsely quantised product).
    """
    if upsampling_factor > MAX_SPECKLE_UPSAMPLING:
        return None, (
            f"upsampled {upsampling_factor:.1f}× from the source pixels: neighbouring pixels are "
            "interpolated, not independent looks"
        )
    try:
        stats = speckle_statistics(intensity, window=window)
    except RasterError as exc:
        return None, exc.reason
    enl = stats.equivalent_number_of_looks
    if stats.n_windows == 0 or not np.isfinite(enl):
        return None, f"no fully valid {window}×{window} window with varying values"
    if enl > MAX_MEANINGFUL_ENL:
        return None, f"ENL {enl:.3g} from near-constant windows (saturated or coarsely quantised values)"
    return stats, ""
