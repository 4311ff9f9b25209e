"""How a scene's raster is read: its georeferencing (the raster's own, else the record's) and pixel encoding.

Archives describe a scene twice: in the record (STAC ``proj:*``, ``raster:bands``) and in the raster's
header. The raster wins where it has a CRS; a raster without one (some airborne products ship bare
TIFFs) takes the record's CRS and transform. Pixel units/scale/offset come from the record, else from
the per-archive defaults of :class:`~sar_pipeline.geo.settings.TilingSettings`.
"""

from __future__ import annotations

import rasterio
import rasterio.crs
import rasterio.windows
from affine import Affine

from sar_pipeline import radiometry
from sar_pipeline.archive.protocol import SceneRecord
from sar_pipeline.errors import RasterError
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


def scene_value_encoding(
    scene: SceneRecord, dtype, params: TilingSettings
) -> tuple[str, float | None, float | None]:
    """(unit, scale, offset) of a scene's raw pixels: the record's, else the per-archive defaults."""
    unit = radiometry.resolve_value_unit(scene.value_unit, dtype, params.default_value_unit)
    scale = scene.value_scale if scene.value_scale is not None else params.default_value_scale
    offset = scene.value_offset if scene.value_offset is not None else params.default_value_offset
    return unit, scale, offset


def scene_output_grid(
    scene: SceneRecord, dataset: rasterio.DatasetReader, params: TilingSettings
) -> OutputGrid:
    """The scene's fixed-GSD native-orientation grid (see :mod:`sar_pipeline.geo.grid`)."""
    crs, transform, shape = scene_georeferencing(scene, dataset)
    return build_output_grid(
        crs,
        transform,
        shape,
        params.ground_sample_distance_m,
        heading_deg=scene.heading_deg,
        observation_direction=scene.observation_direction,
        source=dataset.name,
    )


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
