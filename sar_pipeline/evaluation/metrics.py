"""SAR fidelity measures between a set of real and a set of generated tiles, all in dB.

Following ONERA's follow-up study (Debuysère et al., arXiv 2506.13307), a generated SAR set is
compared with real SAR of the same captions in three ways:

* **amplitude distribution**: the pooled backscatter values (dB) of each set, compared by the
  Wasserstein-1 distance (dB: how far, on average, the quantiles are apart), the Jensen–Shannon
  divergence of their histograms on fixed bins (bits, 0…1) and the two-sample Kolmogorov–Smirnov
  statistic (0…1). Computed with scipy on the pixels themselves (subsampled with a fixed seed
  beyond ``max_pixels``), never on per-set normalised values: a uniformly brighter model must show.
* **speckle**: coefficient of variation of intensity and the equivalent number of looks on each
  tile's homogeneous windows (``radiometry.speckle_statistics``), as medians over the tiles.
* **texture**: grey-level co-occurrence descriptors (scikit-image ``graycomatrix``/``graycoprops``:
  contrast, dissimilarity, homogeneity, energy, correlation at several distances and angles) of
  each tile, quantised on one dB scale shared by both sets; the distance between the two sets of
  descriptor vectors is the mean over descriptors of the 1-D Wasserstein distance between their
  values, each descriptor scaled by the real set's spread (0 for identical sets).

Angles are in the tile's native SAR frame: 0° runs along range (columns), 90° along azimuth (rows),
so anisotropic speckle or layover shows up in the direction it belongs to.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

from sar_pipeline import radiometry

#: scikit-image ``graycoprops`` properties of the texture descriptors (the follow-up study's five)
GLCM_PROPERTIES: tuple[str, ...] = ("contrast", "dissimilarity", "homogeneity", "energy", "correlation")


@dataclass(frozen=True)
class AmplitudeDistances:
    """Distances between two sets of backscatter values in dB.

    ``wasserstein_db``: Wasserstein-1 (earth mover's) distance, dB. ``jensen_shannon_bits``:
    Jensen–Shannon divergence of the histograms on fixed bins, base 2 (0 = same histogram, 1 =
    disjoint). ``ks_statistic``: largest gap between the two empirical CDFs (0…1).
    ``mean_difference_db``: generated minus real mean (dB; the sign says darker or brighter).
    """

    wasserstein_db: float
    jensen_shannon_bits: float
    ks_statistic: float
    mean_difference_db: float
    real_pixels: int
    generated_pixels: int

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


def finite_values(
    images: Sequence[np.ndarray] | np.ndarray, max_pixels: int = 0, seed: int = 0
) -> np.ndarray:
    """The finite values of a set of images, flattened (float64); at most ``max_pixels`` of them
    (a fixed-seed random subset; 0 = all)."""
    if isinstance(images, np.ndarray):
        values = images.ravel()
    else:
        values = (
            np.concatenate([np.asarray(im, np.float64).ravel() for im in images])
            if len(images)
            else np.empty(0)
        )
    values = np.asarray(values, np.float64)
    values = values[np.isfinite(values)]
    if max_pixels and values.size > max_pixels:
        values = np.random.default_rng(seed).choice(values, size=max_pixels, replace=False)
    return values


def amplitude_distances(
    real_db: Sequence[np.ndarray] | np.ndarray,
    generated_db: Sequence[np.ndarray] | np.ndarray,
    bin_edges_db: np.ndarray,
    max_pixels: int = 2_000_000,
    seed: int = 0,
) -> AmplitudeDistances:
    """:class:`AmplitudeDistances` between the finite dB values of two sets of images.

    ``bin_edges_db``: the fixed histogram bins of the Jensen–Shannon divergence (values outside
    them are counted in the first or last bin, so no pixel is dropped).
    """
    from scipy.spatial.distance import jensenshannon
    from scipy.stats import ks_2samp, wasserstein_distance

    real = finite_values(real_db, max_pixels, seed)
    generated = finite_values(generated_db, max_pixels, seed + 1)
    if real.size == 0 or generated.size == 0:
        raise ValueError(f"no finite dB value to compare (real {real.size}, generated {generated.size})")
    edges = np.asarray(bin_edges_db, np.float64)
    inner = edges[1:-1]
    p = np.bincount(np.searchsorted(inner, real, side="right"), minlength=edges.size - 1).astype(np.float64)
    q = np.bincount(np.searchsorted(inner, generated, side="right"), minlength=edges.size - 1).astype(
        np.float64
    )
    js = float(jensenshannon(p / p.sum(), q / q.sum(), base=2) ** 2)
    return AmplitudeDistances(
        wasserstein_db=float(wasserstein_distance(real, generated)),
        jensen_shannon_bits=max(0.0, js),
        ks_statistic=float(ks_2samp(real, generated).statistic),
        mean_difference_db=float(generated.mean() - real.mean()),
        real_pixels=int(real.size),
        generated_pixels=int(generated.size),
    )


def fixed_bins_db(db_min: float, db_max: float, bin_width_db: float) -> np.ndarray:
    """Histogram edges from ``db_min`` to ``db_max`` (dB) every ``bin_width_db`` (the last bin may be
    narrower): one set of bins for every model compared on a dataset."""
    edges = np.arange(db_min, db_max, bin_width_db, dtype=np.float64)
    return np.append(edges, db_max)


@dataclass(frozen=True)
class SpeckleSummary:
    """Median over tiles of the intensity coefficient of variation and of the ENL on homogeneous
    windows (``radiometry.speckle_statistics``); ``tiles`` had a finite ENL."""

    coefficient_of_variation: float
    equivalent_number_of_looks: float
    tiles: int

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


def speckle_summary(images_db: Sequence[np.ndarray], window: int = 16) -> SpeckleSummary:
    """Speckle of a set of dB tiles: each tile back to linear intensity, CV over the tile, ENL on its
    most homogeneous ``window``² windows; medians over the tiles (NaN when no tile gives a value)."""
    cvs, enls = [], []
    for db in images_db:
        stats = radiometry.speckle_statistics(radiometry.db_to_intensity(np.asarray(db, np.float64)), window)
        if np.isfinite(stats.coefficient_of_variation):
            cvs.append(stats.coefficient_of_variation)
        if np.isfinite(stats.equivalent_number_of_looks):
            enls.append(stats.equivalent_number_of_looks)
    return SpeckleSummary(
        coefficient_of_variation=float(np.median(cvs)) if cvs else float("nan"),
        equivalent_number_of_looks=float(np.median(enls)) if enls else float("nan"),
        tiles=len(enls),
    )


def log_ratio(generated: float, real: float) -> float:
    """|ln(generated / real)|: how many e-folds apart two positive statistics are (ENL, CV); NaN if either is not positive."""
    if not (np.isfinite(generated) and np.isfinite(real) and generated > 0 and real > 0):
        return float("nan")
    return float(abs(np.log(generated / real)))


def glcm_descriptors(
    image_db: np.ndarray,
    db_min: float,
    db_max: float,
    levels: int = 32,
    distances_px: Sequence[int] = (1, 2, 4),
    angles_deg: Sequence[float] = (0, 45, 90, 135),
) -> np.ndarray:
    """GLCM descriptors of one dB tile: :data:`GLCM_PROPERTIES` × distances × angles, flattened in
    that order (float64).

    The tile is quantised to ``levels`` grey levels linearly over ``[db_min, db_max]`` (values
    outside are clipped; NaN becomes the lowest level), so two sets quantised with the same range
    are comparable. Co-occurrences are symmetric and normalised.
    """
    from skimage.feature import graycomatrix, graycoprops

    db = np.nan_to_num(np.asarray(image_db, np.float64), nan=db_min)
    scaled = (np.clip(db, db_min, db_max) - db_min) / (db_max - db_min)
    quantised = np.minimum((scaled * levels).astype(np.uint8), levels - 1)
    matrix = graycomatrix(
        quantised,
        distances=list(distances_px),
        angles=[np.deg2rad(a) for a in angles_deg],
        levels=levels,
        symmetric=True,
        normed=True,
    )
    return np.concatenate([graycoprops(matrix, prop).ravel() for prop in GLCM_PROPERTIES]).astype(np.float64)


def glcm_descriptor_names(distances_px: Sequence[int], angles_deg: Sequence[float]) -> list[str]:
    """Names of :func:`glcm_descriptors`' entries, e.g. ``contrast_d1_a0``."""
    return [f"{p}_d{d}_a{a:g}" for p in GLCM_PROPERTIES for d in distances_px for a in angles_deg]


def descriptor_distance(real: np.ndarray, generated: np.ndarray) -> float:
    """Distance between two sets of descriptor vectors (tiles × descriptors): the mean over
    descriptors of the Wasserstein-1 distance between the two sets' values, each descriptor divided
    by the real set's standard deviation (descriptors with no spread in the real set are divided by
    1 instead). 0 for identical sets; about 1 when the sets sit one real spread apart."""
    from scipy.stats import wasserstein_distance

    real = np.atleast_2d(np.asarray(real, np.float64))
    generated = np.atleast_2d(np.asarray(generated, np.float64))
    if real.shape[1] != generated.shape[1]:
        raise ValueError(f"descriptor lengths differ: {real.shape[1]} vs {generated.shape[1]}")
    spread = real.std(axis=0)
    spread = np.where(spread > 1e-12, spread, 1.0)
    return float(
        np.mean(
            [
                wasserstein_distance(real[:, j] / spread[j], generated[:, j] / spread[j])
                for j in range(real.shape[1])
            ]
        )
    )
