"""The native-orientation fixed-GSD grid: pixel size, axes, orientation convention, coverage."""

import math

import numpy as np
import pytest
from affine import Affine
from hypothesis import given, settings
from hypothesis import strategies as st
from shapely.ops import unary_union

from sar_pipeline.errors import RasterError
from sar_pipeline.geo.grid import build_output_grid, pixel_axes, pixel_size
from sar_pipeline.geo.tiling import tile_lattice
from sar_pipeline_tests.geo.scenes import CRS, native_transform

headings = st.floats(0, 360, exclude_max=True)
looks = st.sampled_from(["left", "right"])
spacings = st.floats(0.3, 3.0)
gsds = st.floats(0.25, 4.0)
flips = st.booleans()
shapes = st.tuples(st.integers(5, 400), st.integers(5, 400))


def _unit(deg):
    return np.array([math.sin(math.radians(deg)), math.cos(math.radians(deg))])


@settings(max_examples=200, deadline=None)
@given(headings, looks, spacings, spacings, gsds, flips, flips, shapes)
def test_grid_has_square_gsd_pixels_parallel_axes_and_the_range_convention(
    heading, look, sr, sa, gsd, flip_c, flip_r, shape
):
    t = native_transform(heading, look, sr, sa, shape, flip_columns=flip_c, flip_rows=flip_r)
    grid = build_output_grid(CRS, t, shape, gsd, heading_deg=heading, observation_direction=look)
    col, row = pixel_axes(grid.transform)
    # square pixels of exactly the GSD
    assert pixel_size(grid.transform) == pytest.approx((gsd, gsd), rel=1e-9)
    assert abs(col @ row) < 1e-9 * gsd * gsd
    # axes parallel to the source's
    src_col, src_row = pixel_axes(t)
    assert abs(abs(col @ src_col) - gsd * sr) < 1e-6 * gsd * sr
    assert abs(abs(row @ src_row) - gsd * sa) < 1e-6 * gsd * sa
    # convention: columns point along the look direction (near range left), rows along the heading
    look_vec = _unit(heading + (90 if look == "right" else -90))
    assert col @ look_vec == pytest.approx(gsd, rel=1e-9)
    assert row @ _unit(heading) == pytest.approx(gsd, rel=1e-9)
    assert grid.orientation_source == "heading"
    assert grid.range_flipped == flip_c and grid.azimuth_flipped == flip_r
    # the grid covers the whole scene, with less than one pixel of margin per side
    scene = _footprint(t, shape)
    assert scene.difference(grid.footprint()).area <= 1e-6 * scene.length  # float noise at UTM magnitudes
    rows, cols = grid.shape
    assert rows == math.ceil(shape[0] * sa / gsd - 1e-6) and cols == math.ceil(shape[1] * sr / gsd - 1e-6)


def _footprint(t, shape):
    from sar_pipeline.geo.footprints import grid_footprint

    return grid_footprint(t, shape)


@settings(max_examples=60, deadline=None)
@given(headings, looks, spacings, gsds, flips, st.integers(8, 64))
def test_tiles_with_stride_equal_size_tile_the_scene_without_gaps_or_overlaps(
    heading, look, spacing, gsd, flip, size
):
    shape = (200, 150)
    t = native_transform(heading, look, spacing, spacing, shape, flip_columns=flip)
    grid = build_output_grid(CRS, t, shape, gsd, heading_deg=heading, observation_direction=look)
    n_r, n_c = tile_lattice(grid.shape, size, size)
    tiles = [grid.subgrid(r * size, c * size, size, size).footprint() for r in range(n_r) for c in range(n_c)]
    union = unary_union(tiles)
    tile_area = size * size * gsd * gsd
    assert union.area == pytest.approx(len(tiles) * tile_area, rel=1e-6)  # no overlaps
    scene = _footprint(t, shape)
    assert scene.difference(union).area <= 1e-6 * scene.length  # float noise at UTM magnitudes  # no gaps
    # the lattice needs no more tiles than the grid does
    assert (n_r - 1) * size < max(grid.shape[0], 1) and (n_c - 1) * size < max(grid.shape[1], 1)


@pytest.mark.parametrize("look", ["left", "right"])
def test_range_points_the_same_way_in_image_space_for_opposite_headings(look):
    """Two flights over the same ground, flown north and south: near range is on the left for both."""
    shape = (100, 100)
    for heading in (0.0, 180.0, 90.0, 301.0):
        for flip in (False, True):
            t = native_transform(heading, look, 1.0, 1.0, shape, flip_columns=flip)
            grid = build_output_grid(CRS, t, shape, 2.0, heading_deg=heading, observation_direction=look)
            track = _unit(heading)
            # distance from the flight track (through the scene's near-range edge) grows with columns
            left = np.array(grid.transform @ (0, grid.shape[0] / 2))
            right = np.array(grid.transform @ (grid.shape[1], grid.shape[0] / 2))
            # signed distance to the left of the track: grows with columns when looking left
            sign = -1 if look == "right" else 1
            assert sign * _cross(track, right) > sign * _cross(track, left)


def _cross(track, p):
    return track[0] * p[1] - track[1] * p[0]


def test_unknown_heading_keeps_the_raster_axes():
    shape = (50, 60)
    t = native_transform(30, "right", 1.0, 1.0, shape, flip_columns=True)
    grid = build_output_grid(CRS, t, shape, 1.0)
    col, row = pixel_axes(grid.transform)
    src_col, src_row = pixel_axes(t)
    assert grid.orientation_source == "raster" and not grid.range_flipped and not grid.azimuth_flipped
    assert col @ src_col > 0 and row @ src_row > 0


def test_a_raster_90_degrees_off_its_heading_is_rotated_onto_it():
    """A geocoded product flown east and looking right has range along its rows: the grid turns 90°."""
    shape = (50, 60)
    t = native_transform(30, "right", 1.0, 1.0, shape)
    grid = build_output_grid(CRS, t, shape, 1.0, heading_deg=120, observation_direction="right")
    col, row = pixel_axes(grid.transform)
    assert grid.orientation_source == "heading" and grid.raster_rotation_deg == pytest.approx(90.0)
    assert col @ _unit(210) == pytest.approx(1.0) and row @ _unit(120) == pytest.approx(1.0)


@pytest.mark.parametrize("heading", [347.5, 192.0, 75.0, 3.0])
@pytest.mark.parametrize("look", ["left", "right"])
def test_north_up_geocoded_products_are_turned_to_native_orientation(heading, look):
    """A north-up raster with a known heading gets range along the look direction, azimuth along the heading."""
    t = Affine(0.5, 0, 520_000, 0, -0.5, 4_810_000)
    grid = build_output_grid(CRS, t, (400, 300), 1.0, heading_deg=heading, observation_direction=look)
    col, row = pixel_axes(grid.transform)
    look_deg = heading + (90 if look == "right" else -90)
    rotation = (look_deg - 90 + 180) % 360 - 180  # from the raster's columns (east) to the look direction
    if min(abs(rotation), 180 - abs(rotation)) <= 5:  # within the tolerance: the raster's axes kept
        assert grid.raster_rotation_deg in (0.0, 180.0)
        assert col @ _unit(look_deg) >= math.cos(math.radians(5)) and row @ _unit(heading) > 0
    else:
        assert grid.raster_rotation_deg == pytest.approx(rotation, abs=1e-6)
        assert col @ _unit(look_deg) == pytest.approx(1.0, abs=1e-9)
        assert row @ _unit(heading) == pytest.approx(1.0, abs=1e-9)
    scene = _footprint(t, (400, 300))
    assert scene.difference(grid.footprint()).area < 1e-6 * scene.area  # covers the whole scene
    # rotated grids lie on the lattice of their axes: origin projections are whole pixels
    if grid.raster_rotation_deg not in (0.0, 180.0):
        origin = np.array([grid.transform.c, grid.transform.f])
        for axis in (col, row):
            steps = origin @ axis / (axis @ axis)
            assert steps == pytest.approx(round(steps), abs=1e-6)


def test_axis_tolerance_decides_between_native_and_geocoded():
    t = native_transform(10.0, "right", 1.0, 1.0, (100, 100))
    # recorded heading 3° off the raster axes (an airborne crab angle): native, axes kept
    kept = build_output_grid(CRS, t, (100, 100), 1.0, heading_deg=13.0, observation_direction="right")
    assert kept.raster_rotation_deg == 0.0 and kept.transform.almost_equals(t, precision=1e-6)
    turned = build_output_grid(
        CRS, t, (100, 100), 1.0, heading_deg=13.0, observation_direction="right", axis_tolerance_deg=1.0
    )
    assert turned.raster_rotation_deg == pytest.approx(3.0)


def test_geographic_scene_is_gridded_in_the_utm_zone_of_its_centre():
    # 0.0001° pixels near Toulouse (1.44° E, 43.6° N): UTM 31N; GSD exact in metres there
    t = Affine(0.0001, 0, 1.40, 0, -0.0001, 43.62)
    grid = build_output_grid("EPSG:4326", t, (400, 800), 5.0)
    assert grid.crs == "EPSG:32631" and grid.orientation_source == "raster"
    assert pixel_size(grid.transform) == pytest.approx((5.0, 5.0), rel=1e-12)
    spacing_col, spacing_row = grid.source_pixel_spacing_m
    assert spacing_col == pytest.approx(8.06, abs=0.05) and spacing_row == pytest.approx(11.1, abs=0.05)
    # 1.5° west of the zone's central meridian (3° E) the parallel (the raster's columns) runs ~1.07°
    # south of grid east (meridian convergence Δλ·sin φ)
    assert grid.range_direction_deg == pytest.approx(90 + 1.07, abs=0.05)
    south = build_output_grid("EPSG:4326", Affine(0.001, 0, -70.0, 0, -0.001, -33.4), (100, 100), 10.0)
    assert south.crs == "EPSG:32719"
    fixed = build_output_grid("EPSG:4326", t, (400, 800), 5.0, output_crs="EPSG:2154")
    assert fixed.crs == "EPSG:2154"


def test_north_up_and_foot_units():
    t = Affine(2.0, 0, 1000, 0, -2.0, 5000)
    grid = build_output_grid("EPSG:32631", t, (10, 20), 4.0)
    assert grid.shape == (5, 10) and grid.transform == Affine(4.0, 0, 1000, 0, -4.0, 5000)
    # a CRS in US survey feet: the grid step is the GSD converted to feet
    feet = build_output_grid("EPSG:2263", Affine(1, 0, 0, 0, -1, 0), (100, 100), 1.0)
    assert pixel_size(feet.transform)[0] == pytest.approx(1 / 0.3048006096, rel=1e-6)


@pytest.mark.parametrize(
    ("crs", "transform", "shape", "match"),
    [
        (None, Affine(1, 0, 0, 0, -1, 0), (4, 4), "no CRS"),
        ("", Affine(1, 0, 0, 0, -1, 0), (4, 4), "no CRS"),
        (CRS, Affine(1, 1, 0, 1, 1, 0), (4, 4), "non-invertible"),
        (CRS, Affine(0, 0, 0, 0, 0, 0), (4, 4), "non-invertible"),
        (CRS, Affine(1, 0, 0, 0, -1, 0), (0, 4), "empty"),
        ("EPSG:4326", Affine(0.1, 0, 0, 0, -0.1, 0), (4, 4), "EPSG:4326 is not projected"),
        ("EPSG:99999", Affine(1, 0, 0, 0, -1, 0), (4, 4), "unreadable CRS"),
    ],
)
def test_bad_georeferencing_names_the_source(crs, transform, shape, match):
    output_crs = "EPSG:4326" if crs == "EPSG:4326" else None
    with pytest.raises(RasterError, match=match) as err:
        build_output_grid(crs, transform, shape, 1.0, output_crs=output_crs, source="/data/scene.tif")
    assert err.value.source == "/data/scene.tif"
