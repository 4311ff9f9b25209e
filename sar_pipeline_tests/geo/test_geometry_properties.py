"""Property tests of the geometry the tiler relies on (issue 13, fuzzing), beside the grid and resampling
tests: a tile's geotransform round-trips through its corners (pixels → map → pixels, map → WGS84 → map);
resampling keeps a constant field constant on any grid; a grid keeps the flight's bearing whatever the
raster's rotation."""

from __future__ import annotations

import math

import numpy as np
import pytest
from affine import Affine
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rasterio.io import MemoryFile
from shapely.geometry import Point

from sar_pipeline.geo.footprints import grid_footprint, reproject_geometry, to_wgs84
from sar_pipeline.geo.grid import DEFAULT_AXIS_TOLERANCE_DEG, build_output_grid
from sar_pipeline.geo.resample import warp_intensity_block
from sar_pipeline.geo.tiling import tile_lattice
from sar_pipeline_tests.geo.scenes import CRS, ORIGIN, native_transform

headings = st.floats(0, 360, exclude_max=True)
looks = st.sampled_from(["left", "right"])
spacings = st.floats(0.3, 3.0)
gsds = st.floats(0.25, 4.0)


def _bearing_error(a: float, b: float) -> float:
    """|a - b| in degrees on the circle."""
    return abs(math.remainder(a - b, 360.0))


@settings(max_examples=100, deadline=None)
@given(headings, looks, spacings, spacings, gsds, st.booleans(), st.booleans(), st.integers(8, 64), st.data())
def test_a_tile_geotransform_round_trips_through_its_corners(
    heading, look, sr, sa, gsd, flip_c, flip_r, size, data
):
    shape = (150, 120)
    t = native_transform(heading, look, sr, sa, shape, flip_columns=flip_c, flip_rows=flip_r)
    grid = build_output_grid(CRS, t, shape, gsd, heading_deg=heading, observation_direction=look)
    n_rows, n_cols = tile_lattice(grid.shape, size, size)
    row, col = data.draw(st.integers(0, n_rows - 1)), data.draw(st.integers(0, n_cols - 1))
    tile = grid.subgrid(row * size, col * size, size, size)
    stored = Affine(*list(tile.transform)[:6])  # the six numbers a manifest row keeps
    pixel_corners = [(0, 0), (size, 0), (size, size), (0, size)]
    map_corners = [stored @ p for p in pixel_corners]
    # map → the scene grid's pixels: the tile's own offsets, exactly (float noise only)
    back = np.array([~grid.transform @ xy for xy in map_corners])
    expected = np.array([(col * size + c, row * size + r) for c, r in pixel_corners], dtype=float)
    np.testing.assert_allclose(back, expected, atol=1e-6)
    # and back to the tile's own pixels
    np.testing.assert_allclose([~stored @ xy for xy in map_corners], pixel_corners, atol=1e-6)
    # the footprint is the tile: square, of the GSD, and survives WGS84 and back within a millimetre
    footprint = grid_footprint(stored, (size, size))
    assert footprint.area == pytest.approx((size * gsd) ** 2, rel=1e-9)
    returned = reproject_geometry(to_wgs84(footprint, CRS), "EPSG:4326", CRS)
    for corner in map_corners:
        assert returned.exterior.distance(Point(corner)) < 1e-3


def _constant_scene(amplitude: float, transform: Affine, shape: tuple[int, int]) -> MemoryFile:
    mem = MemoryFile()
    with mem.open(driver="GTiff", height=shape[0], width=shape[1], count=1, dtype="float32", crs=CRS,
                  transform=transform, nodata=0.0) as dst:  # fmt: skip
        dst.write(np.full(shape, amplitude, np.float32), 1)
    return mem


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    amplitude=st.floats(1e-3, 1e3),
    heading=headings,
    look=looks,
    spacing=st.floats(0.5, 2.0),
    gsd=st.floats(0.4, 3.0),
    geocoded=st.booleans(),
    resampling=st.sampled_from(["average", "nearest"]),
)
def test_resampling_keeps_a_constant_field_constant(
    amplitude, heading, look, spacing, gsd, geocoded, resampling
):
    """Whatever the grid (native, rotated onto a geocoded product, finer or coarser than the source), a
    constant amplitude comes out as that intensity everywhere the scene covers, nodata beyond."""
    shape = (48, 40)
    if geocoded:
        t = Affine(spacing, 0, ORIGIN[0], 0, -spacing, ORIGIN[1])
    else:
        t = native_transform(heading, look, spacing, spacing, shape)
    grid = build_output_grid(CRS, t, shape, gsd, heading_deg=heading, observation_direction=look)
    with _constant_scene(amplitude, t, shape) as mem, mem.open() as ds:
        image, _ = warp_intensity_block(ds, grid, value_unit="amplitude", resampling=resampling)
    valid = np.isfinite(image)
    assert valid.mean() > 0.3
    np.testing.assert_allclose(image[valid], np.float32(amplitude) ** 2, rtol=2e-5)
    # an output pixel whose centre lies well inside the scene has data
    rows, cols = np.nonzero(~valid)
    centres = np.array([grid.transform @ (c + 0.5, r + 0.5) for r, c in zip(rows, cols, strict=True)])
    if len(centres):
        source = np.array([~t @ tuple(xy) for xy in centres])
        margin = gsd / spacing + 1
        inside = ((source > margin) & (source < np.array(shape[::-1]) - margin)).all(axis=1)
        assert not inside.any()


@settings(max_examples=150, deadline=None)
@given(headings, looks, spacings, gsds, st.booleans(), st.booleans(), st.floats(-180, 180))
def test_a_grid_keeps_the_flight_bearing_whatever_the_raster_rotation(
    heading, look, spacing, gsd, flip_c, flip_r, raster_rotation
):
    """Rows run along the heading and columns along the look direction, for a native raster (flipped
    or not) exactly, for a raster rotated by any angle (a geocoded product) beyond the axis tolerance
    exactly too, and within the tolerance when the raster's own axes are kept."""
    shape = (60, 50)
    native = native_transform(heading, look, spacing, spacing, shape, flip_columns=flip_c, flip_rows=flip_r)
    look_bearing = heading + (90 if look == "right" else -90)
    grid = build_output_grid(CRS, native, shape, gsd, heading_deg=heading, observation_direction=look)
    assert _bearing_error(grid.azimuth_direction_deg, heading) < 1e-6
    assert _bearing_error(grid.range_direction_deg, look_bearing) < 1e-6
    # the same ground sampled by a raster whose axes are turned by raster_rotation degrees
    rotated = native * Affine.rotation(raster_rotation)
    grid = build_output_grid(CRS, rotated, shape, gsd, heading_deg=heading, observation_direction=look)
    tolerance = DEFAULT_AXIS_TOLERANCE_DEG + 1e-6 if grid.keeps_raster_axes else 1e-6
    assert _bearing_error(grid.azimuth_direction_deg, heading) < tolerance
    assert _bearing_error(grid.range_direction_deg, look_bearing) < tolerance
    # every tile of it has the scene grid's bearings
    tile = grid.subgrid(7, 3, 16, 16)
    assert (tile.azimuth_direction_deg, tile.range_direction_deg) == (
        grid.azimuth_direction_deg,
        grid.range_direction_deg,
    )
