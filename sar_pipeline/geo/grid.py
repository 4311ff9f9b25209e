"""The output grid of a scene: its own range/azimuth axes, square pixels of a fixed ground sample distance.

Orientation convention (every tile of every flight follows it)
---------------------------------------------------------------
* **Columns are range**, increasing left → right: near range on the left, far range on the right.
* **Rows are azimuth**, increasing top → bottom in the flight direction: the first line
  acquired is at the top.
* No north-up warp: a right-looking scene appears mirrored with respect to a map (seen from
  below), a left-looking one does not; optical tiles are warped onto the same grid, so SAR/optical
  pairs always agree.

How the directions are decided (:attr:`OutputGrid.orientation_source`)
----------------------------------------------------------------------
* ``"heading"``: the scene's ``heading_deg`` (platform heading, clockwise from the scene CRS's
  grid north) and ``observation_direction`` (``"left"``/``"right"``) are known. Range points away
  from the ground track (the look direction), azimuth along the heading. When the raster's own
  column axis is within ``axis_tolerance_deg`` of the look direction (either way), the raster is
  in native geometry already: its axes are kept, only flipped where needed, so the output is
  pixel-aligned with it (and a GSD equal to the pixel spacing resamples nothing). Otherwise — a
  geocoded (north-up, map-oriented) product — the grid is *rotated* onto the look direction and
  the heading: :attr:`OutputGrid.raster_rotation_deg` says by how much.
* ``"raster"``: nothing gives the heading and look side. The raster's column direction is kept
  as range and its row direction as azimuth; for a geocoded product that is map orientation, not
  native SAR orientation, which the ``sar_tiles`` stage says in a warning and its metadata
  (``sar_scenes``' ``require_heading`` refuses such scenes instead).

Output CRS
----------
GSD is a length on the ground, so grids live in a projected CRS: the scene's own when it is
projected, else (EPSG:4326 and other geographic CRSs) the UTM zone of the scene centre on WGS84
(:func:`auto_output_crs`), or one fixed CRS for a whole dataset. A scene in another CRS than its
grid is warped by GDAL (``rasterio.warp.reproject``) from its own CRS.

The row axis is exactly perpendicular to the column axis (square pixels need orthogonal axes).
Grids that do not keep a raster's axes are snapped to the lattice of their axes through the CRS
origin, so two products of the same ground flown on the same heading get pixel-aligned grids.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
from affine import Affine
from pyproj import CRS, Geod, Transformer
from shapely.geometry import Polygon

from sar_pipeline.errors import RasterError
from sar_pipeline.geo.footprints import WGS84, grid_footprint

#: default of ``axis_tolerance_deg``: airborne products' recorded headings differ from their image
#: axes by the crab angle (a few degrees in wind), geocoded products' by far more
DEFAULT_AXIS_TOLERANCE_DEG = 5.0

_GEOD = Geod(ellps="WGS84")


@dataclasses.dataclass(frozen=True)
class OutputGrid:
    """A pixel grid in a projected CRS: ``transform`` maps (col, row) pixel corners to map coordinates."""

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
    #: angle (degrees, clockwise on the map, (-180, 180]) from the source raster's column axis to the
    #: grid's: 0 or 180 when the raster's axes are kept, anything else for a rotated (geocoded) product
    raster_rotation_deg: float = 0.0
    #: the source raster's pixel spacing along its columns and rows, metres on the grid's CRS
    source_pixel_spacing_m: tuple[float, float] = (math.nan, math.nan)

    def subgrid(self, row_off: int, col_off: int, rows: int, cols: int) -> OutputGrid:
        """The grid of a window of this grid (same axes, origin moved to ``(row_off, col_off)``)."""
        return dataclasses.replace(
            self, transform=self.transform @ Affine.translation(col_off, row_off), shape=(rows, cols)
        )

    def footprint(self) -> Polygon:
        """The ground polygon covered, in the grid's CRS."""
        return grid_footprint(self.transform, self.shape)

    @property
    def keeps_raster_axes(self) -> bool:
        """True when the grid's axes are the source raster's (possibly flipped): the fast warp applies."""
        return abs(math.remainder(self.raster_rotation_deg, 180.0)) < 1e-9


def parse_crs(crs: str | CRS, source: object = "crs") -> CRS:
    """The pyproj CRS of ``crs``; :class:`RasterError` naming ``source`` when it cannot be parsed."""
    try:
        return CRS.from_user_input(crs)
    except Exception as exc:  # pyproj raises CRSError and others for unparsable input
        raise RasterError(source, f"unreadable CRS {crs!r} ({exc})") from exc


def crs_string(crs: str | CRS) -> str:
    """``EPSG:n`` when the CRS has an EPSG code, else its WKT2."""
    c = CRS.from_user_input(crs)
    epsg = c.to_epsg()
    return f"EPSG:{epsg}" if epsg else c.to_wkt()


def crs_unit_in_metres(crs: str | CRS, source: object = "crs") -> float:
    """Metres per CRS unit along the first axis; a geographic CRS raises (GSD needs a metric grid)."""
    c = parse_crs(crs, source)
    if not c.is_projected:
        raise RasterError(
            source,
            f"CRS {c.to_string()} is not projected: a ground sample distance in metres needs a projected "
            "output CRS (leave sar_scenes' output_crs unset for the UTM zone of the scene, or set one)",
        )
    factor = c.axis_info[0].unit_conversion_factor if c.axis_info else 1.0
    return float(factor or 1.0)


def utm_crs(lon: float, lat: float) -> str:
    """The WGS84 UTM zone holding (lon, lat) as ``EPSG:326zz``/``EPSG:327zz``; UPS beyond 84° N / 80° S."""
    if lat > 84.0:
        return "EPSG:32661"
    if lat < -80.0:
        return "EPSG:32761"
    zone = min(60, int(math.floor((lon + 180.0) / 6.0)) + 1)
    return f"EPSG:{(32600 if lat >= 0 else 32700) + zone}"


def scene_centre_lonlat(
    crs: str | CRS, transform: Affine | tuple, shape: tuple[int, int]
) -> tuple[float, float]:
    """(lon, lat) in degrees of a raster's centre pixel."""
    t = transform if isinstance(transform, Affine) else Affine(*tuple(transform)[:6])
    x, y = t @ (shape[1] / 2, shape[0] / 2)
    lon, lat = Transformer.from_crs(CRS.from_user_input(crs), WGS84, always_xy=True).transform(x, y)
    return float(lon), float(lat)


def auto_output_crs(
    crs: str | CRS,
    transform: Affine | tuple,
    shape: tuple[int, int],
    fixed: str | None = None,
    source: object = "scene",
) -> str:
    """The projected CRS a scene is gridded in: ``fixed`` when set, else the scene's own CRS when it is
    projected, else the UTM zone of the scene centre (:func:`utm_crs`). Raises :class:`RasterError`
    naming ``source`` when ``fixed`` is not a projected CRS."""
    if fixed:
        chosen = parse_crs(fixed, "output_crs")
        if not chosen.is_projected:
            raise RasterError(source, f"output_crs {fixed!r} is not a projected CRS (GSD needs metres)")
        return crs_string(chosen)
    c = parse_crs(crs, source)
    if c.is_projected:
        return crs if isinstance(crs, str) else crs_string(c)
    lon, lat = scene_centre_lonlat(c, transform, shape)
    if not (np.isfinite(lon) and np.isfinite(lat)):
        raise RasterError(source, f"scene centre cannot be placed on the Earth in {c.to_string()}")
    return utm_crs(lon, lat)


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


@dataclasses.dataclass(frozen=True)
class _SourceInOutput:
    """A source raster seen in the output CRS: local pixel axes at its centre and its outline."""

    col_step: np.ndarray  # output-CRS displacement of one source column step (at the centre)
    row_step: np.ndarray
    outline: np.ndarray  # (n, 2) boundary points in the output CRS
    heading_vector: np.ndarray | None  # unit vector of the heading in the output CRS


def _source_in_output(
    crs: CRS, out_crs: CRS, t: Affine, shape: tuple[int, int], heading_deg: float | None, source: object
) -> _SourceInOutput:
    rows, cols = shape
    same = crs == out_crs
    transformer = None if same else Transformer.from_crs(crs, out_crs, always_xy=True)

    def to_out(px: np.ndarray, py: np.ndarray) -> np.ndarray:
        xs, ys = t * (px, py)
        if transformer is not None:
            xs, ys = transformer.transform(xs, ys)
        out = np.column_stack([np.asarray(xs, float), np.asarray(ys, float)])
        if not np.isfinite(out).all():
            raise RasterError(source, f"parts of the scene cannot be projected to {out_crs.to_string()}")
        return out

    if same:
        edge = np.array([0.0, 1.0])
        col_step, row_step = pixel_axes(t)
    else:
        edge = np.linspace(0.0, 1.0, 17)
        c, r = cols / 2.0, rows / 2.0
        centre, right, down = to_out(np.array([c, c + 1, c]), np.array([r, r, r + 1]))
        col_step, row_step = right - centre, down - centre
    px = np.concatenate([edge * cols, np.full_like(edge, cols), edge[::-1] * cols, np.zeros_like(edge)])
    py = np.concatenate([np.zeros_like(edge), edge * rows, np.full_like(edge, rows), edge[::-1] * rows])
    outline = to_out(px, py)
    heading_vector = None
    if heading_deg is not None and np.isfinite(heading_deg):
        x, y = t @ (cols / 2.0, rows / 2.0)
        if crs.is_projected:
            step = max(pixel_size(t))
            x2, y2 = (
                x + step * math.sin(math.radians(heading_deg)),
                y + step * math.cos(math.radians(heading_deg)),
            )
        else:  # a geographic CRS's north is true north: follow the bearing on the ellipsoid
            x2, y2, _ = _GEOD.fwd(x, y, heading_deg, 100.0)
        pts = np.array([[x, y], [x2, y2]], dtype=float)
        if transformer is not None:
            pts = np.column_stack(transformer.transform(pts[:, 0], pts[:, 1]))
        vec = pts[1] - pts[0]
        heading_vector = vec / np.hypot(*vec)
    return _SourceInOutput(np.asarray(col_step, float), np.asarray(row_step, float), outline, heading_vector)


def _signed_angle_deg(a: np.ndarray, b: np.ndarray) -> float:
    """Clockwise map angle from direction ``a`` to direction ``b``, degrees in (-180, 180]."""
    return -math.remainder(math.degrees(math.atan2(a[0] * b[1] - a[1] * b[0], a @ b)), 360.0) or 0.0


def build_output_grid(
    crs: str,
    transform: Affine | tuple,
    shape: tuple[int, int],
    ground_sample_distance_m: float,
    *,
    heading_deg: float | None = None,
    observation_direction: str | None = None,
    output_crs: str | None = None,
    axis_tolerance_deg: float = DEFAULT_AXIS_TOLERANCE_DEG,
    valid_outline: np.ndarray | None = None,
    source: object = "scene",
) -> OutputGrid:
    """The fixed-GSD grid covering a scene in its native orientation (see the module docstring).

    ``crs``/``transform``/``shape`` are the source raster's; ``ground_sample_distance_m`` is the
    output pixel size in metres (converted to the output CRS's units); ``output_crs`` is the grid's
    CRS (unset: :func:`auto_output_crs`). The grid covers the whole scene; its size is rounded up to
    whole pixels. ``valid_outline`` ((n, 2) map points in the scene CRS around its valid pixels) lets a
    grid that does not keep the raster's axes cover only the data: a geocoded product's raster is the
    north-up box around a rotated swath, whose nodata corners would otherwise decide where tiles start.
    """
    t = validate_georeferencing(crs, transform, shape, source)
    if not ground_sample_distance_m > 0:
        raise RasterError(
            source, f"ground_sample_distance_m must be positive, got {ground_sample_distance_m}"
        )
    scene_crs = parse_crs(crs, source)
    out_name = output_crs or auto_output_crs(crs, t, shape, source=source)
    out_crs = parse_crs(out_name, source)
    unit_m = crs_unit_in_metres(out_crs, source)
    gsd = ground_sample_distance_m / unit_m
    geo = _source_in_output(scene_crs, out_crs, t, shape, heading_deg, source)
    src_col, src_row = geo.col_step, geo.row_step
    src_col_hat = src_col / np.hypot(*src_col)

    orientation_source = "raster"
    col_hat = src_col_hat
    reference_row = src_row
    look = (observation_direction or "").lower()
    if geo.heading_vector is not None and look in ("left", "right"):
        h = geo.heading_vector
        look_vec = np.array([h[1], -h[0]]) if look == "right" else np.array([-h[1], h[0]])
        cos = float(src_col_hat @ look_vec)
        orientation_source = "heading"
        reference_row = h
        if abs(cos) >= math.cos(math.radians(axis_tolerance_deg)):
            col_hat = src_col_hat * math.copysign(1.0, cos)  # native geometry: keep the raster's axes
        else:
            col_hat = look_vec  # a geocoded product: rotate onto the look direction
    normal = np.array([-col_hat[1], col_hat[0]])
    row_hat = normal if float(normal @ reference_row) >= 0 else -normal
    rotation = _signed_angle_deg(src_col_hat, col_hat)
    keeps_axes = abs(math.remainder(rotation, 180.0)) < 1e-9 and scene_crs == out_crs

    outline = geo.outline
    if valid_outline is not None and not keeps_axes and len(valid_outline):
        points = np.asarray(valid_outline, dtype=float)
        if scene_crs != out_crs:
            xs, ys = Transformer.from_crs(scene_crs, out_crs, always_xy=True).transform(
                points[:, 0], points[:, 1]
            )
            points = np.column_stack([xs, ys])
        if np.isfinite(points).all():
            outline = points
    along_col = outline @ col_hat
    along_row = outline @ row_hat
    c0, c1 = along_col.min(), along_col.max()
    r0, r1 = along_row.min(), along_row.max()
    if not keeps_axes:  # nothing to stay aligned with: snap onto the lattice of these axes
        c0, r0 = math.floor(c0 / gsd + 1e-9) * gsd, math.floor(r0 / gsd + 1e-9) * gsd
    out_cols = max(1, math.ceil((c1 - c0) / gsd - 1e-6))
    out_rows = max(1, math.ceil((r1 - r0) / gsd - 1e-6))
    origin = c0 * col_hat + r0 * row_hat
    out = Affine(gsd * col_hat[0], gsd * row_hat[0], origin[0], gsd * col_hat[1], gsd * row_hat[1], origin[1])
    return OutputGrid(
        crs=out_name,
        transform=out,
        shape=(out_rows, out_cols),
        ground_sample_distance_m=float(ground_sample_distance_m),
        range_direction_deg=direction_deg(col_hat),
        azimuth_direction_deg=direction_deg(row_hat),
        orientation_source=orientation_source,
        range_flipped=bool(col_hat @ src_col < 0),
        azimuth_flipped=bool(row_hat @ src_row < 0),
        raster_rotation_deg=(180.0 if abs(rotation) > 90 else 0.0) if keeps_axes else rotation,
        source_pixel_spacing_m=(float(np.hypot(*src_col)) * unit_m, float(np.hypot(*src_row)) * unit_m),
    )
