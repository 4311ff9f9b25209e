"""Windowed resampling onto the native-orientation grid, checked against map coordinates and GDAL."""

import numpy as np
import pytest
import rasterio
import rasterio.warp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rasterio.io import MemoryFile

from sar_pipeline import radiometry
from sar_pipeline.geo.grid import build_output_grid, pixel_axes
from sar_pipeline.geo.resample import warp_codes_block, warp_intensity_block
from sar_pipeline_tests.geo.scenes import CRS, native_transform, speckled_amplitude, write_scene


def _memory_scene(data, transform, nodata=0.0):
    mem = MemoryFile()
    with mem.open(driver="GTiff", height=data.shape[0], width=data.shape[1], count=1, dtype=data.dtype.name,
                  crs=CRS, transform=transform, nodata=nodata) as dst:  # fmt: skip
        dst.write(data, 1)
    return mem


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    heading=st.floats(0, 360, exclude_max=True),
    look=st.sampled_from(["left", "right"]),
    spacing=st.floats(0.5, 2.0),
    gsd=st.floats(0.5, 3.0),
    flip_c=st.booleans(),
    flip_r=st.booleans(),
    point=st.tuples(st.integers(10, 29), st.integers(10, 29)),
    block_rows=st.integers(3, 40),
)
def test_a_point_lands_at_its_map_coordinate(heading, look, spacing, gsd, flip_c, flip_r, point, block_rows):
    """A bright point at a known map coordinate is found there, within ½ output pixel, in the warped blocks."""
    shape = (40, 40)
    t = native_transform(heading, look, spacing, spacing, shape, flip_columns=flip_c, flip_rows=flip_r)
    amplitude = np.full(shape, 0.1, dtype=np.float32)
    amplitude[point] = 100.0
    target = np.array(t @ (point[1] + 0.5, point[0] + 0.5))
    grid = build_output_grid(CRS, t, shape, gsd, heading_deg=heading, observation_direction=look)
    # warp in row blocks, as the tiler does, and put them together
    blocks = []
    with _memory_scene(amplitude, t) as mem, mem.open() as ds:
        for row_off in range(0, grid.shape[0], block_rows):
            block = grid.subgrid(row_off, 0, block_rows, grid.shape[1])
            blocks.append(warp_intensity_block(ds, block, value_unit="amplitude", resampling="average")[0])
    image = np.concatenate(blocks)[: grid.shape[0]]
    excess = np.nan_to_num(image - 0.01, nan=0.0)
    excess[excess < 1.0] = 0
    rows, cols = np.nonzero(excess)
    w = excess[rows, cols]
    centroid = np.array(grid.transform @ ((cols + 0.5) @ w / w.sum(), (rows + 0.5) @ w / w.sum()))
    col_axis, row_axis = (a / gsd for a in pixel_axes(grid.transform))
    offset = centroid - target
    assert abs(offset @ col_axis) <= 0.5 * gsd + 1e-6
    assert abs(offset @ row_axis) <= 0.5 * gsd + 1e-6
    # every valid source pixel is represented: no data lost at block seams
    assert np.isfinite(image).mean() > 0.5


def _reference_nearest(values, src_t, grid):
    """Independent nearest-neighbour warp in numpy: each output pixel centre → source pixel."""
    rows, cols = grid.shape
    cc, rr = np.meshgrid(np.arange(cols) + 0.5, np.arange(rows) + 0.5)
    g = grid.transform
    x = g.a * cc + g.b * rr + g.c
    y = g.d * cc + g.e * rr + g.f
    inv = ~src_t
    sc = np.floor(inv.a * x + inv.b * y + inv.c).astype(int)
    sr = np.floor(inv.d * x + inv.e * y + inv.f).astype(int)
    inside = (sc >= 0) & (sc < values.shape[1]) & (sr >= 0) & (sr < values.shape[0])
    out = np.full(grid.shape, np.nan, dtype=np.float32)
    out[inside] = values[sr[inside], sc[inside]]
    return out


@pytest.mark.parametrize(
    "heading,look,flip", [(23.0, "right", False), (200.0, "left", True), (111.0, "right", True)]
)
def test_windowed_warp_agrees_with_numpy_nearest_and_with_gdal_in_one_pass(tmp_path, heading, look, flip):
    shape = (180, 150)
    t = native_transform(heading, look, 0.8, 1.1, shape, flip_columns=flip)
    amplitude = speckled_amplitude(shape, seed=3)
    path = write_scene(tmp_path / "scene.tif", amplitude, t)
    grid = build_output_grid(CRS, t, shape, 0.9, heading_deg=heading, observation_direction=look)
    intensity = amplitude.astype(np.float32) ** 2
    with rasterio.open(path) as ds:
        near = np.concatenate(
            [
                warp_intensity_block(
                    ds, grid.subgrid(r, 0, 32, grid.shape[1]), value_unit="amplitude", resampling="nearest"
                )[0]
                for r in range(0, grid.shape[0], 32)
            ]  # fmt: skip
        )[: grid.shape[0]]
        avg = np.concatenate(
            [
                warp_intensity_block(
                    ds, grid.subgrid(r, 0, 32, grid.shape[1]), value_unit="amplitude", resampling="average"
                )[0]
                for r in range(0, grid.shape[0], 32)
            ]  # fmt: skip
        )[: grid.shape[0]]
    ref = _reference_nearest(intensity, t, grid)
    both = np.isfinite(ref) & np.isfinite(near)
    # pixel centres exactly on a source pixel edge may round either way: allow a tiny share
    assert (np.isfinite(ref) != np.isfinite(near)).mean() < 0.01
    assert np.mean(near[both] == ref[both]) > 0.99
    # GDAL in one pass over the whole scene, onto the same target grid
    gdal = np.full(grid.shape, np.nan, dtype=np.float32)
    rasterio.warp.reproject(intensity, gdal, src_transform=t, src_crs=CRS, src_nodata=np.nan,
                            dst_transform=grid.transform, dst_crs=CRS, dst_nodata=np.nan,
                            resampling=rasterio.enums.Resampling.average)  # fmt: skip
    valid = np.isfinite(gdal) & np.isfinite(avg)
    assert (np.isfinite(gdal) != np.isfinite(avg)).mean() < 0.01
    np.testing.assert_allclose(avg[valid], gdal[valid], rtol=1e-4)


def test_downsampling_averages_intensity_not_db(tmp_path):
    """Two pixels of 1 and 100 (intensity) averaged: 50.5 → 17.03 dB, not the dB mean 10 dB."""
    t = native_transform(0, "right", 1.0, 1.0, (2, 2))
    intensity = np.array([[1.0, 100.0], [1.0, 100.0]], dtype=np.float32)
    path = write_scene(tmp_path / "s.tif", 10 * np.log10(intensity), t, nodata=-9999.0)
    grid = build_output_grid(CRS, t, (2, 2), 2.0, heading_deg=0, observation_direction="right")
    with rasterio.open(path) as ds:
        out, invalid = warp_intensity_block(ds, grid, value_unit="db", resampling="average")
    assert out.shape == (1, 1) and len(invalid) == 0
    assert radiometry.intensity_to_db(out)[0, 0] == pytest.approx(10 * np.log10(50.5), abs=1e-3)


def test_nodata_stays_nodata_and_nonfinite_pixels_are_counted(tmp_path):
    shape = (40, 40)
    t = native_transform(45, "left", 1.0, 1.0, shape)
    amplitude = speckled_amplitude(shape, seed=1)
    amplitude[:, :20] = -1.0  # declared nodata
    amplitude[30, 30] = np.nan
    amplitude[31, 31] = np.inf
    path = write_scene(tmp_path / "s.tif", amplitude, t, nodata=-1.0)
    grid = build_output_grid(CRS, t, shape, 1.0, heading_deg=45, observation_direction="left")
    with rasterio.open(path) as ds:
        out, invalid = warp_intensity_block(ds, grid, value_unit="amplitude", resampling="bilinear")
    # the positions of the two non-finite source pixels, in the output grid: each lands where it lies
    assert len(invalid) == 2
    for (col, row), (src_r, src_c) in zip(invalid, [(30, 30), (31, 31)], strict=True):
        assert np.allclose(grid.transform @ (col, row), t @ (src_c + 0.5, src_r + 0.5))
    # the nodata half stays nodata (NaN), the valid half has data, nothing negative leaks in
    assert 0.35 < np.isnan(out).mean() < 0.65
    assert np.nanmin(out) >= 0


def test_land_cover_codes_are_warped_nearest_without_new_classes(tmp_path):
    shape = (30, 30)
    t = native_transform(300, "right", 0.7, 0.7, shape)
    codes = np.random.default_rng(0).integers(1, 6, size=shape).astype(np.uint8)
    path = write_scene(tmp_path / "lc.tif", codes, t, nodata=0)
    grid = build_output_grid(CRS, t, shape, 1.3, heading_deg=300, observation_direction="right")
    with rasterio.open(path) as ds:
        out = warp_codes_block(ds, grid)
    assert out.dtype == np.uint8 and set(np.unique(out)) <= set(range(6))
    assert (out > 0).mean() > 0.8
