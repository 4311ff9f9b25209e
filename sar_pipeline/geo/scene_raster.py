"""How a scene's raster is read: its georeferencing (the raster's own, else the record's) and pixel encoding.

Archives describe a scene twice: in the record (STAC ``proj:*``, ``raster:bands``) and in the raster's
header. The raster wins where it has a CRS; a raster without one (some airborne products ship bare
TIFFs) takes the record's CRS and transform. Pixel units/scale/offset come from the record, else from
the per-archive defaults of :class:`~sar_pipeline.geo.settings.TilingSettings`.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import rasterio
import rasterio.crs
import rasterio.windows
from affine import Affine
from rasterio.enums import Resampling

from sar_pipeline import radiometry
from sar_pipeline.archive.protocol import SceneRecord
from sar_pipeline.errors import RasterError, SarPipelineError
from sar_pipeline.geo.grid import OutputGrid, build_output_grid
from sar_pipeline.geo.settings import TilingSettings


def scene_georeferencing(
    scene: SceneRecord, dataset: rasterio.DatasetReader
) -> tuple[str, Affine, tuple[int, int]]:
    """CRS, transform and shape to resample from: the raster's own, else the record's (STAC ``proj:*``).

    Raises :class:`RasterError` naming the raster when neither gives a CRS.
    """
    crs = dataset.crs.to_string() if dataset.crs else (scene.crs or None)
    transform = dataset.transform
    if dataset.crs is None and transform == Affine.identity() and scene.transform:
        transform = Affine(*scene.transform[:6])
    if crs is None:
        raise RasterError(dataset.name, "no CRS: the raster is not georeferenced and the record gives none")
    return crs, transform, (dataset.height, dataset.width)


@dataclasses.dataclass(frozen=True)
class ValueEncoding:
    """How a scene's raw pixels become physical values: ``value = raw * scale + offset`` in ``unit``."""

    unit: str  # "amplitude", "intensity", "db" or "complex"
    #: "declared" (the catalogue's unit string), "data type" (complex pixels) or "assumed" (the default)
    unit_source: str
    declared: str | None  # the catalogue's unit string, as written
    scale: float | None
    offset: float | None


def scene_value_encoding(scene: SceneRecord, dtype, params: TilingSettings) -> ValueEncoding:
    """The unit (and how it was decided), scale and offset of a scene's raw pixels: the record's, else
    the per-archive defaults of ``params``."""
    unit, source = radiometry.resolve_value_unit(scene.value_unit, dtype, params.default_value_unit)
    scale = scene.value_scale if scene.value_scale is not None else params.default_value_scale
    offset = scene.value_offset if scene.value_offset is not None else params.default_value_offset
    return ValueEncoding(unit, source, scene.value_unit, scale, offset)


def scene_output_grid(
    scene: SceneRecord, dataset: rasterio.DatasetReader, params: TilingSettings
) -> OutputGrid:
    """The scene's fixed-GSD native-orientation grid (see :mod:`sar_pipeline.geo.grid`), in the output
    CRS ``sar_scenes`` recorded (else the scene's own CRS when projected, else its UTM zone).

    A grid rotated or reprojected away from the raster's axes covers the scene's valid pixels only
    (:func:`valid_outline`), so tiles start where the data does, not at a north-up box's corner.
    """
    crs, transform, shape = scene_georeferencing(scene, dataset)
    kwargs = {
        "heading_deg": scene.heading_deg,
        "observation_direction": scene.observation_direction,
        "output_crs": scene.output_crs,
        "axis_tolerance_deg": params.axis_tolerance_deg,
        "source": dataset.name,
    }
    grid = build_output_grid(crs, transform, shape, params.ground_sample_distance_m, **kwargs)
    if grid.keeps_raster_axes and grid.crs == crs:
        return grid
    outline = valid_outline(scene, dataset, transform, params)
    if outline is None:
        return grid
    return build_output_grid(
        crs, transform, shape, params.ground_sample_distance_m, valid_outline=outline, **kwargs
    )


def valid_outline(
    scene: SceneRecord,
    dataset: rasterio.DatasetReader,
    transform: Affine,
    params: TilingSettings,
    max_side: int = 1024,
) -> np.ndarray | None:
    """Map points (scene CRS) around the scene's valid pixels, from a decimated read (overviews where the
    file has them), or None when they cannot be read (the whole raster is then covered).

    Each valid cell of the decimated raster contributes its four corners, so the outline errs on the
    side of covering: at most one decimated cell (``max(shape) / max_side`` source pixels) too wide.
    """
    factor = max(1, math.ceil(max(dataset.height, dataset.width) / max_side))
    out_shape = (max(1, math.ceil(dataset.height / factor)), max(1, math.ceil(dataset.width / factor)))
    try:
        raw = dataset.read(1, out_shape=out_shape, resampling=Resampling.nearest)
        encoding = scene_value_encoding(scene, raw.dtype, params)
        nodata = dataset.nodata if dataset.nodata is not None else scene.nodata
        intensity, _ = radiometry.to_intensity(
            raw, encoding.unit, scale=encoding.scale, offset=encoding.offset, nodata=nodata,
            zero_is_nodata=params.zero_is_nodata, source=dataset.name,
        )  # fmt: skip
    except (SarPipelineError, rasterio.errors.RasterioError):
        return None
    valid = np.isfinite(intensity)
    if not valid.any():
        return None
    # the cells on the outline are enough: first and last valid cell of each row and column
    keep = np.zeros_like(valid)
    for axis in (0, 1):
        idx = np.nonzero(valid.any(axis=axis))[0]
        first = np.argmax(valid, axis=axis)[idx]
        last = valid.shape[axis] - 1 - np.argmax(np.flip(valid, axis=axis), axis=axis)[idx]
        if axis == 0:
            keep[first, idx] = keep[last, idx] = True
        else:
            keep[idx, first] = keep[idx, last] = True
    rows, cols = np.nonzero(keep)
    sy, sx = dataset.height / out_shape[0], dataset.width / out_shape[1]
    corners = [(cols + dc) * sx for dc in (0, 1)], [(rows + dr) * sy for dr in (0, 1)]
    px = np.concatenate([corners[0][0], corners[0][1], corners[0][0], corners[0][1]])
    py = np.concatenate([corners[1][0], corners[1][0], corners[1][1], corners[1][1]])
    xs, ys = transform * (np.minimum(px, dataset.width), np.minimum(py, dataset.height))
    return np.column_stack([np.asarray(xs, float), np.asarray(ys, float)])


def georeferenced(dataset: rasterio.DatasetReader, crs: str, transform: Affine):
    """The dataset itself, or a view of it with the record's georeferencing when the raster has none."""
    if dataset.crs is not None:
        return dataset
    return _GeoreferencedView(dataset, crs, transform)


class _GeoreferencedView:
    def __init__(self, dataset, crs, transform):
        self._ds, self.crs, self.transform = dataset, rasterio.crs.CRS.from_user_input(crs), transform

    def __getattr__(self, name):
        return getattr(self._ds, name)

    def window_transform(self, window):
        return rasterio.windows.transform(window, self.transform)
