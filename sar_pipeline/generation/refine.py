"""Refining a physically simulated SAR scene into a realistic one (paper §4.2): img2img over tiles.

The scene (a noise-free simulation, e.g. the demo archive's ``*_idealised.tif``, or any
single-band raster) is normalised exactly like the training tiles (``output.read_input_raster``:
intensity → dB → the dataset's levels), brought to the model's pixel size when both are known
(the dataset's ground sample distance × tile size / model size; resampled in intensity), cut into
model-size tiles overlapping by a quarter, each run through img2img (tile k with seed + k), blended
back with linear ramps over the overlaps, and resampled onto the input's own grid.

:func:`strength_sweep` measures what the strength does: speckle statistics (ENL and coefficient of
variation over homogeneous windows, ``radiometry.speckle_statistics``) of refined tiles against
real tiles and the input, and how much of the input's structure survives (correlation of the
smoothed dB images).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sar_pipeline import radiometry
from sar_pipeline.generation.model import GenerationModel
from sar_pipeline.generation.output import db_to_grey, grey_to_db
from sar_pipeline.generation.sample import generate
from sar_pipeline.generation.settings import GenerationSettings


def pixel_size_m(transform) -> float | None:
    """Mean ground pixel size (m) of a geotransform (rotated included), None when not georeferenced."""
    if transform is None:
        return None
    col = float(np.hypot(transform.a, transform.d))
    row = float(np.hypot(transform.b, transform.e))
    return (col + row) / 2


def _resample(grey: np.ndarray, valid: np.ndarray, shape: tuple[int, int], params) -> np.ndarray:
    """``grey`` resampled to ``shape``: averaged in intensity (radiometry's rule) when ``params`` is known."""
    from skimage.transform import resize

    if grey.shape == shape:
        return grey
    if params is None:
        return resize(grey, shape, order=1, anti_aliasing=True, preserve_range=True).astype(np.float32)
    intensity = np.where(valid, radiometry.db_to_intensity(grey_to_db(grey, params)), 0.0)
    weight = resize(valid.astype(np.float64), shape, order=1, anti_aliasing=True, preserve_range=True)
    mean = resize(intensity, shape, order=1, anti_aliasing=True, preserve_range=True) / np.maximum(
        weight, 1e-6
    )
    db = radiometry.intensity_to_db(mean.astype(np.float32))
    db[weight < 0.5] = np.nan
    return db_to_grey(db, params)


def _ramp(size: int, overlap: int) -> np.ndarray:
    w = np.ones(size, np.float32)
    if overlap:
        edge = (np.arange(overlap, dtype=np.float32) + 1) / (overlap + 1)
        w[:overlap], w[-overlap:] = edge, edge[::-1]
    return w


def _starts(length: int, size: int, stride: int) -> list[int]:
    starts = list(range(0, max(length - size, 0) + 1, stride))
    if starts[-1] + size < length:
        starts.append(length - size)
    return starts


@dataclass
class Refined:
    """A refined scene on the input's grid (grey [0, 1]), with the settings of its first tile."""

    grey: np.ndarray
    tiles: int
    scale: float
    first: object  # the Generated of tile 0 (its settings and channel spread)


def refine_scene(
    model: GenerationModel,
    grey: np.ndarray,
    valid: np.ndarray,
    prompt: str,
    settings: GenerationSettings,
    params: radiometry.RadiometryParams | None,
    scale: float = 1.0,
    progress: bool = True,
) -> Refined:
    """img2img over overlapping tiles of ``grey`` (the input's grid, [0, 1]); ``scale`` = input pixel
    size / model pixel size (1: the input is at the model's scale). Returns the input's grid."""
    from tqdm.auto import tqdm

    size = model.resolution
    rows, cols = grey.shape
    work_shape = (max(1, round(rows * scale)), max(1, round(cols * scale)))
    work = _resample(grey, valid, work_shape, params)
    pad = ((0, max(0, size - work.shape[0])), (0, max(0, size - work.shape[1])))
    work = np.pad(work, pad, mode="reflect") if any(p[1] for p in pad) else work
    overlap = size // 4
    out = np.zeros(work.shape, np.float32)
    weight = np.zeros(work.shape, np.float32)
    ramp = np.outer(_ramp(size, overlap), _ramp(size, overlap))
    positions = [
        (r, c)
        for r in _starts(work.shape[0], size, size - overlap)
        for c in _starts(work.shape[1], size, size - overlap)
    ]
    first = None
    for k, (r, c) in enumerate(tqdm(positions, desc="tiles", disable=not progress)):
        tile_settings = settings.model_copy(update={"seed": settings.seed + k, "num_images": 1})
        (done,) = generate(
            model, prompt, tile_settings, init_grey=work[r : r + size, c : c + size], progress=False
        )
        first = first or done
        out[r : r + size, c : c + size] += done.image * ramp
        weight[r : r + size, c : c + size] += ramp
    out = (out / np.maximum(weight, 1e-6))[: work_shape[0], : work_shape[1]]
    back = _resample(out, np.ones(out.shape, bool), (rows, cols), None) if out.shape != (rows, cols) else out
    return Refined(np.where(valid, np.clip(back, 0, 1), 0).astype(np.float32), len(positions), scale, first)


# ----------------------------------------------------------------------------------------------
# what the strength does


def speckle_of(grey: np.ndarray, params: radiometry.RadiometryParams) -> radiometry.SpeckleStatistics:
    """Speckle statistics of a tile on the model's grey scale (via dB → intensity), 8-px windows."""
    intensity = radiometry.db_to_intensity(grey_to_db(grey, params))
    return radiometry.speckle_statistics(intensity, window=8)


def structure_correlation(a: np.ndarray, b: np.ndarray, sigma: float = 2.0) -> float:
    """Pearson correlation of two grey tiles after Gaussian smoothing (the layout, not the speckle)."""
    from scipy import ndimage

    x = ndimage.gaussian_filter(np.asarray(a, np.float64), sigma).ravel()
    y = ndimage.gaussian_filter(np.asarray(b, np.float64), sigma).ravel()
    if x.std() == 0 or y.std() == 0:
        return 0.0
    return float(np.corrcoef(x, y)[0, 1])


def _log_enl(stats: radiometry.SpeckleStatistics) -> float:
    enl = stats.equivalent_number_of_looks
    return float(np.log10(min(enl, 1e6))) if np.isfinite(enl) and enl > 0 else 6.0


def strength_sweep(
    model: GenerationModel,
    simulated: list[np.ndarray],
    real: list[np.ndarray],
    prompts: list[str],
    strengths: list[float],
    params: radiometry.RadiometryParams,
    settings: GenerationSettings,
) -> dict:
    """For each strength: mean log10 ENL and coefficient of variation of the refined ``simulated``
    tiles (model size, grey [0, 1]), their structure correlation with the input, and the distance
    |log10 ENL − real's| for the outputs and for the inputs themselves."""
    real_log_enl = float(np.mean([_log_enl(speckle_of(g, params)) for g in real]))
    real_cv = float(np.mean([speckle_of(g, params).coefficient_of_variation for g in real]))
    input_log_enl = float(np.mean([_log_enl(speckle_of(g, params)) for g in simulated]))
    rows = []
    for strength in strengths:
        enl, cv, corr = [], [], []
        for i, (tile, prompt) in enumerate(zip(simulated, prompts, strict=True)):
            s = settings.model_copy(update={"strength": strength, "seed": settings.seed + i, "num_images": 1})
            (out,) = generate(model, prompt, s, init_grey=tile, progress=False)
            stats = speckle_of(out.image, params)
            enl.append(_log_enl(stats))
            cv.append(stats.coefficient_of_variation)
            corr.append(structure_correlation(out.image, tile))
        rows.append(
            {
                "strength": strength,
                "log10_enl": round(float(np.mean(enl)), 4),
                "coefficient_of_variation": round(float(np.mean(cv)), 4),
                "structure_correlation": round(float(np.mean(corr)), 4),
                "enl_distance_to_real": round(abs(float(np.mean(enl)) - real_log_enl), 4),
            }
        )
    return {
        "real_log10_enl": round(real_log_enl, 4),
        "real_coefficient_of_variation": round(real_cv, 4),
        "input_log10_enl": round(input_log_enl, 4),
        "input_enl_distance_to_real": round(abs(input_log_enl - real_log_enl), 4),
        "by_strength": rows,
    }


def sweep_plot_png(sweep: dict) -> bytes:
    """The sweep as a PNG: log10 ENL (outputs, real, input) and structure correlation against strength."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from sar_pipeline.pictures import figure_png

    strengths = [r["strength"] for r in sweep["by_strength"]]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(6.4, 3.2))
    ax1.plot(strengths, [r["log10_enl"] for r in sweep["by_strength"]], "o-", label="refined")
    ax1.axhline(sweep["real_log10_enl"], color="g", ls="--", label="real tiles")
    ax1.axhline(min(sweep["input_log10_enl"], 6), color="r", ls=":", label="simulated input")
    ax1.set(xlabel="strength", ylabel="log10 ENL (homogeneous windows)", title="speckle")
    ax1.legend(fontsize=7)
    ax2.plot(strengths, [r["structure_correlation"] for r in sweep["by_strength"]], "o-")
    ax2.set(
        xlabel="strength", ylabel="correlation with input (smoothed)", title="structure kept", ylim=(0, 1)
    )
    return figure_png(fig)
