"""The output grid of a scene: its own range/azimuth axes, square pixels of a fixed ground sample distance.

Orientation convention (every tile of every flight follows it)
---------------------------------------------------------------
* **Columns are range**, increasing left → right: near range on the left, far range on the right.
* **Rows are azimuth**, increasing top → bottom in the flight direction: the first line
  acquired is at the top.
* No north-up warp: the output affine is the scene's own (possibly rotated) axes, only
  re-scaled to square pixels of ``ground_sample_distance_m`` and, where needed, flipped so the
  convention above holds. A right-looking scene therefore appears mirrored with respect to a
  map (seen from below), a left-looking one does not; optical tiles are warped onto the same
  grid, so SAR/optical pairs always agree.

How the directions are decided: when the scene's ``heading_deg`` (platform heading, clockwise
from grid north) and ``observation_direction`` (``"left"``/``"right"``) are known, the column
axis is made to point away from the ground track (look direction) and the row axis along the
heading. When they are unknown (or contradict the raster, i.e. range is not within 60° of the
raster's column axis), the raster's own column direction is kept as range and its row direction
as azimuth. :attr:`OutputGrid.orientation_source` records which rule was applied.

The row axis is made exactly perpendicular to the column axis (square pixels need orthogonal
axes); for the usual orthogonal native-geometry rasters both axes stay parallel to the source's.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
from affine import Affine
from pyproj import CRS
from shapely.geometry import Polygon

from sar_pipeline.errors import RasterError
from sar_pipeline.geo.footprints import grid_footprint


@dataclasses.dataclass(frozen=True)
class OutputGrid:
    """A pixel grid in a scene's CRS: ``transform`` maps (col, row) pixel corners to map coordinates."""

    crs: str
    transform: Affine
    shape: tuple[int, int]  # (rows, cols)
    ground_sample_distance_m: float
    #: map direction (degrees clockwise from grid north) of increasing columns = increasing range
    range_direction_deg: float
    #: map direction of increasing rows = flight direction (azimuth)
    azimuth_direction_deg: float
    #: "heading" (from heading_deg + observation_direction) or "raster" (raster's own axes kept)
    orientation_source: str
    #: True when output columns run opposite to the source raster's columns
    range_flipped: bool
    #: True when output rows run opposite to the source raster's rows
    azimuth_flipped: bool

    def subgrid(self, row_off: int, col_off: int, rows: int, cols: int) -> OutputGrid:
        """The grid of a window of this grid (same axes, origin moved to ``(row_off, col_off)``)."""
        return dataclasses.replace(
            self, transform=self.transform @ Affine.translation(col_off, row_off), shape=(rows, cols)
        )

    def footprint(self) -> Polygon:
        """The ground polygon covered, in the grid's CRS."""
        return grid_footprint(self.transform, self.shape)


def crs_unit_in_metres(crs: str | CRS, source: object = "crs") -> float:
    """Metres per CRS unit along the first axis; a geographic CRS raises (GSD needs a metric grid)."""
    try:
        c = CRS.from_user_input(crs)
    except Exception as exc:
        raise RasterError(source, f"unreadable CRS {crs!r} ({exc})") from exc
    if not c.is_projected:
        raise RasterError(
            source, f"CRS {c.to_string()} is not projected; native SAR grids need metric map units"
        )
    factor = c.axis_info[0].unit_conversion_factor if c.axis_info else 1.0
    return float(factor or 1.0)


def pixel_axes(transform: Affine | tuple) -> tuple[np.ndarray, np.ndarray]:
    """Map displacement (x, y) of one step along columns and one step along rows."""
    t = transform if isinstance(transform, Affine) else Affine(*transform[:6])
    return np.array([t.a, t.d], dtype=float), np.array([t.b, t.e], dtype=float)


def pixel_size(transform: Affine | tuple) -> tuple[float, float]:
    """Ground size of one pixel step along columns and along rows (CRS units)."""
    col, row = pixel_axes(transform)
    return float(np.hypot(*col)), float(np.hypot(*row))


def direction_deg(vector: np.ndarray) -> float:
    """Map direction of an (x=east, y=north) vector, degrees clockwise from grid north in [0, 360)."""
    return float(math.degrees(math.atan2(vector[0], vector[1])) % 360.0)


def _unit(deg: float) -> np.ndarray:
    r = math.radians(deg)
    return np.array([math.sin(r), math.cos(r)])


def validate_georeferencing(crs, transform, shape, source: object) -> Affine:
    """Raise :class:`RasterError` naming ``source`` for a missing CRS, a non-invertible transform or empty shape."""
    if crs is None or (isinstance(crs, str) and not crs.strip()):
        raise RasterError(source, "no CRS: the raster is not georeferenced")
    t = transform if isinstance(transform, Affine) else Affine(*tuple(transform)[:6])
    if not all(np.isfinite([t.a, t.b, t.c, t.d, t.e, t.f])):
        raise RasterError(source, f"geotransform has non-finite terms {tuple(t)[:6]}")
    col, row = pixel_axes(t)
    scale = max(np.hypot(*col), np.hypot(*row))
    if scale == 0 or abs(t.determinant) <= 1e-12 * scale * scale:
        raise RasterError(
            source, f"non-invertible geotransform {tuple(t)[:6]} (determinant {t.determinant:.3g})"
        )
    rows, cols = shape
    if rows <= 0 or cols <= 0:
        raise RasterError(source, f"empty raster shape {shape}")
    return t


def build_output_grid(
    crs: str,
    transform: Affine | tuple,
    shape: tuple[int, int],
    ground_sample_distance_m: float,
    *,
    heading_deg: float | None = None,
    observation_direction: str | None = None,
    source: object = "scene",
) -> OutputGrid:
    """The fixed-GSD grid covering a scene in its native orientation (see the module docstring).

    ``crs``/``transform``/``shape`` are the source raster's; ``ground_sample_distance_m`` is the
    output pixel size in metres (converted to CRS units). The grid's origin is the corner of the
    source footprint's bounding box in the output axes, so it covers the whole scene; its size is
    rounded up to whole pixels.
    """
    t = validate_georeferencing(crs, transform, shape, source)
    if not ground_sample_distance_m > 0:
        raise RasterError(
            source, f"ground_sample_distance_m must be positive, got {ground_sample_distance_m}"
        )
    gsd = ground_sample_distance_m / crs_unit_in_metres(crs, source)
    src_col, src_row = pixel_axes(t)
    col_hat = src_col / np.hypot(*src_col)
    orientation_source = "raster"
    look = (observation_direction or "").lower()
    if heading_deg is not None and np.isfinite(heading_deg) and look in ("left", "right"):
        look_vec = _unit(heading_deg + (90.0 if look == "right" else -90.0))
        cos = float(col_hat @ look_vec)
        if abs(cos) >= 0.5:
            col_hat = col_hat * math.copysign(1.0, cos)
            orientation_source = "heading"
    normal = np.array([-col_hat[1], col_hat[0]])
    reference_row = src_row
    if heading_deg is not None and np.isfinite(heading_deg) and orientation_source == "heading":
        reference_row = _unit(heading_deg)
    row_hat = normal if float(normal @ reference_row) >= 0 else -normal
    rows, cols = shape
    corners = np.array([t @ (0, 0), t @ (cols, 0), t @ (cols, rows), t @ (0, rows)], dtype=float)
    along_col = corners @ col_hat
    along_row = corners @ row_hat
    c0, c1 = along_col.min(), along_col.max()
    r0, r1 = along_row.min(), along_row.max()
    out_cols = max(1, math.ceil((c1 - c0) / gsd - 1e-6))
    out_rows = max(1, math.ceil((r1 - r0) / gsd - 1e-6))
    origin = c0 * col_hat + r0 * row_hat
    out = Affine(gsd * col_hat[0], gsd * row_hat[0], origin[0], gsd * col_hat[1], gsd * row_hat[1], origin[1])
    return OutputGrid(
        crs=crs if isinstance(crs, str) else CRS.from_user_input(crs).to_string(),
        transform=out,
        shape=(out_rows, out_cols),
        ground_sample_distance_m=float(ground_sample_distance_m),
        range_direction_deg=direction_deg(col_hat),
        azimuth_direction_deg=direction_deg(row_hat),
        orientation_source=orientation_source,
        range_flipped=bool(col_hat @ src_col < 0),
        azimuth_flipped=bool(row_hat @ src_row < 0),
    )
