"""Footprints of rasters and tiles: the ground polygon a pixel grid covers."""

from __future__ import annotations

from affine import Affine
from pyproj import CRS, Transformer
from shapely.geometry import Polygon
from shapely.ops import transform as shapely_transform

WGS84 = CRS.from_epsg(4326)


def grid_footprint(transform: Affine | tuple, shape: tuple[int, int]) -> Polygon:
    """The polygon (in the grid's CRS) covered by a ``shape = (rows, cols)`` grid.

    Corners are taken in pixel-corner convention, so rotated and flipped transforms work; the
    ring is returned counter-clockwise (oriented) whatever the transform's handedness.
    """
    t = transform if isinstance(transform, Affine) else Affine(*transform[:6])
    rows, cols = shape
    corners = [t @ (0, 0), t @ (cols, 0), t @ (cols, rows), t @ (0, rows)]
    poly = Polygon(corners)
    return poly if poly.exterior.is_ccw else Polygon(corners[::-1])


def to_wgs84(geometry, crs: str | CRS, densify: int = 8):
    """Reproject a geometry from ``crs`` to WGS84 (lon, lat), densifying edges so curves follow."""
    return reproject_geometry(geometry, crs, WGS84, densify)


def reproject_geometry(geometry, src_crs: str | CRS, dst_crs: str | CRS, densify: int = 8):
    """A geometry from ``src_crs`` in ``dst_crs`` (edges densified so they follow the projection)."""
    src, dst = CRS.from_user_input(src_crs), CRS.from_user_input(dst_crs)
    if src == dst:
        return geometry
    if densify and hasattr(geometry, "segmentize") and geometry.length > 0:
        geometry = geometry.segmentize(geometry.length / (4 * densify))
    return shapely_transform(Transformer.from_crs(src, dst, always_xy=True).transform, geometry)


def area_m2(geometry, crs: str | CRS) -> float:
    """Area in square metres: planar for projected CRSs in metres, geodesic otherwise."""
    c = CRS.from_user_input(crs)
    if c.is_projected and c.axis_info and c.axis_info[0].unit_name in ("metre", "meter"):
        return float(geometry.area)
    from pyproj import Geod

    lonlat = to_wgs84(geometry, c)
    return float(abs(Geod(ellps="WGS84").geometry_area_perimeter(lonlat)[0]))
