"""Windowed resampling of a raster onto an :class:`~sar_pipeline.geo.grid.OutputGrid` block with GDAL.

Each call warps one output block (e.g. one band of tile rows): only the source window that the
block's footprint covers (plus a margin for the resampling kernel) is read, so memory is bounded
by the block size whatever the scene size. The warp itself is GDAL's (``rasterio.warp.reproject``).

SAR values are converted to linear intensity *before* warping, so ``average`` (the default when
downsampling) averages power, not dB. Nodata and non-finite source pixels are carried as NaN and
never enter an average; output pixels with no valid source stay NaN.
"""

from __future__ import annotations

import contextlib
import math

import numpy as np
import rasterio
import rasterio.warp
import rasterio.windows
from affine import Affine
from rasterio.enums import Resampling
from rasterio.windows import Window

from sar_pipeline import radiometry
from sar_pipeline.errors import ConfigError, RasterError
from sar_pipeline.geo.grid import OutputGrid, pixel_size

RESAMPLING_METHODS = ("nearest", "bilinear", "cubic", "cubic_spline", "lanczos", "average", "mode", "rms")


def resampling_method(name: str) -> Resampling:
    """The GDAL resampling enum for a configured name (``average``, ``bilinear``, ``nearest``…)."""
    try:
        return Resampling[name]
    except KeyError:
        raise ConfigError(
            "resampling", f"unknown method {name!r}; expected one of {RESAMPLING_METHODS}"
        ) from None


def source_window(
    dst_transform: Affine,
    dst_shape: tuple[int, int],
    src_transform: Affine,
    src_shape: tuple[int, int],
    margin: int,
) -> Window | None:
    """The source pixel window under an output block (plus ``margin`` pixels), or None if disjoint.

    Both transforms must be in the same CRS (native-geometry grids never change CRS).
    """
    rows, cols = dst_shape
    inv = ~src_transform
    pts = [inv @ (dst_transform @ (c, r)) for c, r in ((0, 0), (cols, 0), (cols, rows), (0, rows))]
    xs, ys = [p[0] for p in pts], [p[1] for p in pts]
    c0 = max(0, math.floor(min(xs)) - margin)
    r0 = max(0, math.floor(min(ys)) - margin)
    c1 = min(src_shape[1], math.ceil(max(xs)) + margin)
    r1 = min(src_shape[0], math.ceil(max(ys)) + margin)
    if c1 <= c0 or r1 <= r0:
        return None
    return Window(c0, r0, c1 - c0, r1 - r0)


def kernel_margin(src_transform: Affine, ground_sample_distance: float, method: Resampling) -> int:
    """Source pixels to read beyond a block's edge so the kernel sees all it needs."""
    spacing = max(1e-12, min(pixel_size(src_transform)))
    ratio = max(1.0, ground_sample_distance / spacing)
    radius = {Resampling.nearest: 1, Resampling.bilinear: 2, Resampling.cubic: 3, Resampling.lanczos: 4}.get(
        method, 3
    )
    return int(math.ceil(radius * ratio)) + 2


def read_window(dataset: rasterio.DatasetReader, window: Window, band: int = 1, read_lock=None) -> np.ndarray:
    """Read one band's window, turning GDAL decode failures into :class:`RasterError` naming the file.

    ``read_lock`` (a ``threading.Lock``) serialises reads when threads share one dataset handle.
    """
    try:
        with read_lock or contextlib.nullcontext():
            return dataset.read(band, window=window)
    except rasterio.errors.RasterioIOError as exc:
        raise RasterError(dataset.name, f"cannot decode pixels in window {window} ({exc})") from exc


def warp_intensity_block(
    dataset: rasterio.DatasetReader,
    block: OutputGrid,
    *,
    value_unit: str,
    value_scale: float | None = None,
    value_offset: float | None = None,
    nodata: float | None = None,
    resampling: str = "average",
    band: int = 1,
    num_threads: int = 1,
    read_lock=None,
) -> tuple[np.ndarray, int]:
    """Linear intensity (float32, NaN = nodata) of ``dataset`` on the output ``block`` grid.

    Returns the array and the number of non-finite source pixels (not declared nodata) that were
    read and treated as nodata. ``nodata`` defaults to the dataset's own nodata value.
    """
    method = resampling_method(resampling)
    src_nodata = dataset.nodata if nodata is None else nodata
    rows, cols = block.shape
    out = np.full((rows, cols), np.nan, dtype=np.float32)
    window = source_window(
        block.transform,
        block.shape,
        dataset.transform,
        (dataset.height, dataset.width),
        kernel_margin(dataset.transform, pixel_size(block.transform)[0], method),
    )
    if window is None:
        return out, 0
    raw = read_window(dataset, window, band, read_lock)
    intensity, invalid = radiometry.to_intensity(
        raw, value_unit, scale=value_scale, offset=value_offset, nodata=src_nodata, source=dataset.name
    )
    if np.isnan(intensity).all():
        return out, invalid
    rasterio.warp.reproject(
        intensity,
        out,
        src_transform=dataset.window_transform(window),
        src_crs=block.crs,
        src_nodata=np.nan,
        dst_transform=block.transform,
        dst_crs=block.crs,
        dst_nodata=np.nan,
        resampling=method,
        num_threads=num_threads,
    )
    return out, invalid


def warp_codes_block(
    dataset: rasterio.DatasetReader, block: OutputGrid, *, nodata: int = 0, band: int = 1, read_lock=None
) -> np.ndarray:
    """Class codes (uint8, e.g. land cover) of ``dataset`` on ``block``, nearest neighbour; ``nodata`` outside."""
    rows, cols = block.shape
    out = np.full((rows, cols), nodata, dtype=np.uint8)
    window = source_window(
        block.transform, block.shape, dataset.transform, (dataset.height, dataset.width), margin=2
    )
    if window is None:
        return out
    raw = read_window(dataset, window, band, read_lock).astype(np.uint8)
    rasterio.warp.reproject(
        raw,
        out,
        src_transform=dataset.window_transform(window),
        src_crs=block.crs,
        src_nodata=dataset.nodata if dataset.nodata is not None else nodata,
        dst_transform=block.transform,
        dst_crs=block.crs,
        dst_nodata=nodata,
        resampling=Resampling.nearest,
    )
    return out


def check_same_georeferencing(dataset: rasterio.DatasetReader, reference: rasterio.DatasetReader) -> None:
    """Raise if an extra asset (land cover, idealised) is not on the SAR raster's CRS."""
    if dataset.crs is None:
        raise RasterError(dataset.name, "no CRS: the raster is not georeferenced")
    if reference.crs is not None and dataset.crs != reference.crs:
        raise RasterError(dataset.name, f"CRS {dataset.crs} differs from the scene's {reference.crs}")
