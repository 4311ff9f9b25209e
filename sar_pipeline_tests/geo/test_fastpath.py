"""The separable fast path (axis-parallel warps) against GDAL's own kernel, and the SAR tile PNG writer."""

import dataclasses
import io
import math

import numpy as np
import pytest
from affine import Affine
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from PIL import Image
from rasterio.io import MemoryFile

from sar_pipeline.geo.grid import build_output_grid
from sar_pipeline.geo.resample import (
    average_weights,
    axis_parallel_mapping,
    warp_codes_block,
    warp_intensity_block,
)
from sar_pipeline.pictures import png_bytes
from sar_pipeline_tests.geo.scenes import CRS, native_transform, speckled_amplitude


def _memory_scene(data, transform, nodata=0.0):
    mem = MemoryFile()
    with mem.open(driver="GTiff", height=data.shape[0], width=data.shape[1], count=1, dtype=data.dtype.name,
                  crs=CRS, transform=transform, nodata=nodata) as dst:  # fmt: skip
        dst.write(data, 1)
    return mem


def _blockwise(ds, grid, block_rows, warp, **kwargs):
    blocks = [
        warp(ds, grid.subgrid(r, 0, block_rows, grid.shape[1]), **kwargs)
        for r in range(0, grid.shape[0], block_rows)
    ]
    blocks = [b[0] if isinstance(b, tuple) else b for b in blocks]
    return np.concatenate(blocks)[: grid.shape[0]]


def _dilate(mask):
    """``mask`` grown by one pixel (8-neighbourhood)."""
    padded = np.pad(mask, 1)
    out = np.zeros_like(mask)
    for dr in (0, 1, 2):
        for dc in (0, 1, 2):
            out |= padded[dr : dr + mask.shape[0], dc : dc + mask.shape[1]]
    return out


def _outer_ring(shape):
    ring = np.zeros(shape, bool)
    ring[[0, -1], :] = True
    ring[:, [0, -1]] = True
    return ring


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    heading=st.floats(0, 360, exclude_max=True),
    look=st.sampled_from(["left", "right"]),
    spacing=st.tuples(st.floats(0.4, 2.5), st.floats(0.4, 2.5)),
    gsd=st.floats(0.4, 3.0),
    flips=st.tuples(st.booleans(), st.booleans()),
    shape=st.tuples(st.integers(20, 70), st.integers(20, 70)),
    block_rows=st.integers(3, 40),
    holes=st.booleans(),
    use_heading=st.booleans(),
)
def test_fast_average_equals_gdal_average(
    heading, look, spacing, gsd, flips, shape, block_rows, holes, use_heading
):
    """Same weights as GDAL's ``average``: equal within float32 rounding wherever both have data."""
    t = native_transform(heading, look, *spacing, shape, flip_columns=flips[0], flip_rows=flips[1])
    amplitude = speckled_amplitude(shape, seed=shape[0] * 100 + shape[1])
    if holes:  # a nodata swath edge and scattered nodata pixels
        amplitude[:, : shape[1] // 5] = 0
        rng = np.random.default_rng(0)
        amplitude[rng.integers(0, shape[0], 25), rng.integers(0, shape[1], 25)] = 0
    grid = build_output_grid(
        CRS, t, shape, gsd, heading_deg=heading if use_heading else None, observation_direction=look
    )
    # an output of a few pixels is all edge ring: nothing would be left to compare
    assume(min(grid.shape) >= 8)
    assert axis_parallel_mapping(grid.transform, grid.shape, t) is not None  # native grids take the fast path
    with _memory_scene(amplitude, t) as mem, mem.open() as ds:
        kw = dict(value_unit="amplitude", resampling="average")
        fast = _blockwise(ds, grid, block_rows, warp_intensity_block, **kw)
        gdal = _blockwise(ds, grid, block_rows, warp_intensity_block, fast_path=False, **kw)
    # Where an output pixel's edge falls on a source pixel edge, whether a sliver of ~1e-9 px of the
    # neighbouring pixel counts depends on the last bit of each side's coordinate arithmetic; that
    # only matters next to nodata (the sliver may be the pixel's only valid source) and at the
    # grid's outermost pixels (GDAL leaves some that cover a sliver of the scene as nodata).
    # Everywhere else both must agree exactly in validity and within float32 rounding in value.
    edge = _outer_ring(grid.shape) | _dilate(~np.isfinite(fast) | ~np.isfinite(gdal))
    both = np.isfinite(fast) & np.isfinite(gdal) & ~edge
    assert both.any()
    np.testing.assert_allclose(fast[both], gdal[both], rtol=1e-5)
    differ = np.isfinite(fast) != np.isfinite(gdal)
    assert not (differ & ~edge).any()
    if holes and (shape[1] // 5) * spacing[0] > 2 * gsd + spacing[0]:
        # output pixels entirely over the nodata swath edge stay nodata: nodata never leaks in as 0
        assert np.isnan(fast).any()


@pytest.mark.parametrize("method", ["average", "nearest"])
def test_swapped_axes_take_the_fast_path_and_match_gdal(method):
    """An output grid whose rows run along the source's columns (anti-diagonal mapping)."""
    shape = (50, 64)
    t = native_transform(35.0, "right", 0.8, 1.1, shape)
    amplitude = speckled_amplitude(shape, seed=5)
    amplitude[:, :6] = 0
    grid = build_output_grid(CRS, t, shape, 1.3, heading_deg=35.0, observation_direction="right")
    # swap the grid's axes: output columns along the source rows, output rows along the source columns
    g = grid.transform
    swapped = dataclasses.replace(
        grid, transform=Affine(g.b, g.a, g.c, g.e, g.d, g.f), shape=(grid.shape[1], grid.shape[0])
    )
    mapping = axis_parallel_mapping(swapped.transform, swapped.shape, t)
    assert mapping is not None and mapping.transposed
    with _memory_scene(amplitude, t) as mem, mem.open() as ds:
        kw = dict(value_unit="amplitude", resampling=method)
        fast = _blockwise(ds, swapped, 17, warp_intensity_block, **kw)
        gdal = _blockwise(ds, swapped, 17, warp_intensity_block, fast_path=False, **kw)
    both = np.isfinite(fast) & np.isfinite(gdal)
    assert both.mean() > 0.5
    if method == "average":
        np.testing.assert_allclose(fast[both], gdal[both], rtol=1e-5)
        assert not ((np.isfinite(fast) != np.isfinite(gdal)) & ~_outer_ring(swapped.shape)).any()
    else:  # a pixel centre exactly on a source edge may round either way
        assert np.mean(fast[both] == gdal[both]) > 0.99
        assert (np.isfinite(fast) != np.isfinite(gdal)).mean() < 0.01


def test_rotated_grid_goes_through_gdal():
    """A grid not parallel to the source has no per-axis mapping: GDAL warps it (both paths identical)."""
    shape = (40, 40)
    t = native_transform(10.0, "left", 1.0, 1.0, shape)
    grid = build_output_grid(CRS, native_transform(40.0, "left", 1.0, 1.0, shape), shape, 1.0)
    assert axis_parallel_mapping(grid.transform, grid.shape, t) is None
    with _memory_scene(speckled_amplitude(shape, seed=2), t) as mem, mem.open() as ds:
        a, _ = warp_intensity_block(ds, grid, value_unit="amplitude", resampling="average")
        b, _ = warp_intensity_block(ds, grid, value_unit="amplitude", resampling="average", fast_path=False)
    np.testing.assert_array_equal(a, b)


def test_fast_nearest_codes_equal_gdal():
    shape = (45, 38)
    t = native_transform(250.0, "left", 0.7, 0.9, shape, flip_rows=True)
    codes = np.random.default_rng(1).integers(1, 6, size=shape).astype(np.uint8)
    codes[:5] = 0  # nodata rows (class code 0)
    grid = build_output_grid(CRS, t, shape, 1.1, heading_deg=250.0, observation_direction="left")
    with _memory_scene(codes, t, nodata=0) as mem, mem.open() as ds:
        fast = _blockwise(ds, grid, 9, warp_codes_block)
        gdal = _blockwise(ds, grid, 9, warp_codes_block, fast_path=False)
    assert fast.dtype == np.uint8 and set(np.unique(fast)) <= set(range(6))
    assert np.mean(fast == gdal) > 0.99  # a pixel centre exactly on a source edge may round either way
    assert (fast == 0).mean() > 0.05


def test_fast_nearest_codes_turn_the_source_nodata_into_the_output_nodata():
    """A land-cover raster whose own nodata is 255: those pixels, and pixels outside it, become code 0."""
    shape = (30, 30)
    t = native_transform(0.0, "right", 1.0, 1.0, shape)
    codes = np.full(shape, 3, dtype=np.uint8)
    codes[:10] = 255
    grid = build_output_grid(CRS, t, shape, 1.0, heading_deg=0.0, observation_direction="right")
    with _memory_scene(codes, t, nodata=255) as mem, mem.open() as ds:
        out = warp_codes_block(ds, grid.subgrid(-5, 0, 40, 30))
    assert 255 not in out
    assert (out[:15] == 0).all() and (out[15:35] == 3).all() and (out[35:] == 0).all()


def test_average_weights_are_gdal_footprint_lengths():
    # integer factor 2, aligned: every output pixel averages exactly two source pixels with weight 1
    w = average_weights(4, 2.0, 0.0, 8).toarray()
    np.testing.assert_array_equal(w, np.kron(np.eye(4), [1.0, 1.0]))
    # factor 1.5 from 0.25: [0.25, 1.75] → pixel 0 (0.75) and 1 (0.75); [1.75, 3.25] → 0.25, 1, 0.25
    w = average_weights(2, 1.5, 0.25, 5).toarray()
    np.testing.assert_allclose(w[0], [0.75, 0.75, 0, 0, 0])
    np.testing.assert_allclose(w[1], [0, 0.25, 1.0, 0.25, 0])
    # a flipped axis (negative scale) covers the same pixels in reverse order
    np.testing.assert_allclose(average_weights(2, -1.5, 3.25, 5).toarray(), w[::-1])
    # an output pixel entirely outside the source gets no weight
    assert average_weights(1, 1.0, 7.0, 5).nnz == 0


@pytest.mark.parametrize("dtype,bits", [(np.uint8, 8), (np.uint16, 16)])
def test_sar_tile_png_decodes_to_the_same_pixels_and_is_not_larger(dtype, bits):
    intensity = speckled_amplitude((512, 512), seed=9).astype(np.float64) ** 2
    top = 2**bits - 1
    image = np.clip(np.rint((10 * np.log10(intensity) + 30) / 40 * (top - 1)) + 1, 0, top).astype(dtype)
    image[:20] = 0
    fast = png_bytes(image, 1, huffman_only=True)
    with Image.open(io.BytesIO(fast)) as img:
        np.testing.assert_array_equal(np.asarray(img).astype(dtype), image)
        assert img.size == (512, 512)
    assert len(fast) <= len(png_bytes(image, 1)) * 1.02
    # the level is honoured: 0 stores the rows uncompressed
    assert len(png_bytes(image, 0, huffman_only=True)) >= image.nbytes
    assert math.isclose(len(png_bytes(image, 0, huffman_only=True)), image.nbytes + 512, rel_tol=0.01)
