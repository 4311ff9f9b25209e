"""Optical co-location: mosaic and STAC sources warped onto a SAR tile's exact (rotated) grid."""

import datetime as dt

import numpy as np
import pystac
import pytest
import rasterio
from affine import Affine
from pyproj import Transformer
from shapely.geometry import box, mapping

from sar_pipeline.errors import RasterError
from sar_pipeline.geo.colocation import colocate_tiles
from sar_pipeline.geo.footprints import to_wgs84
from sar_pipeline.geo.grid import build_output_grid
from sar_pipeline.geo.optical import MosaicOpticalSource, StacOpticalSource, open_optical_source
from sar_pipeline.geo.settings import OpticalSettings
from sar_pipeline_tests.geo.scenes import CRS, ORIGIN, native_transform

T0 = dt.datetime(2024, 6, 1, 10, 0, tzinfo=dt.UTC)


def _pattern(x, y):
    """A smooth RGB pattern of UTM coordinates, so any misplacement shows."""
    r = 128 + 100 * np.sin((x - ORIGIN[0]) / 17.0)
    g = 128 + 100 * np.cos((y - ORIGIN[1]) / 23.0)
    b = 128 + 0.3 * ((x - ORIGIN[0]) + (y - ORIGIN[1])) % 100
    return np.stack([r, g, b])


def _write_optical(path, crs, transform, shape, alpha=None, dtype="uint8", tags=None):
    rows, cols = shape
    cc, rr = np.meshgrid(np.arange(cols) + 0.5, np.arange(rows) + 0.5)
    x = transform.a * cc + transform.b * rr + transform.c
    y = transform.d * cc + transform.e * rr + transform.f
    if crs != CRS:
        x, y = Transformer.from_crs(crs, CRS, always_xy=True).transform(x, y)
    rgb = _pattern(x, y)
    count = 3 if alpha is None else 4
    with rasterio.open(path, "w", driver="GTiff", height=rows, width=cols, count=count, dtype=dtype, crs=crs,
                       transform=transform, photometric="RGB") as dst:  # fmt: skip
        dst.write(np.rint(rgb).astype(dtype), [1, 2, 3])
        if alpha is not None:
            dst.write(alpha.astype(dtype), 4)
            dst.colorinterp = [rasterio.enums.ColorInterp.red, rasterio.enums.ColorInterp.green,
                               rasterio.enums.ColorInterp.blue, rasterio.enums.ColorInterp.alpha]  # fmt: skip
        if tags:
            dst.update_tags(**tags)
    return path


def _tile_grid(heading=37.0, look="right", size=48, gsd=1.0, offset=(20, 30)):
    t = native_transform(heading, look, 0.8, 0.9, (200, 200), flip_columns=True)
    grid = build_output_grid(CRS, t, (200, 200), gsd, heading_deg=heading, observation_direction=look)
    return grid.subgrid(offset[0], offset[1], size, size)


def _expected(grid):
    rows, cols = grid.shape
    cc, rr = np.meshgrid(np.arange(cols) + 0.5, np.arange(rows) + 0.5)
    g = grid.transform
    return np.moveaxis(_pattern(g.a * cc + g.b * rr + g.c, g.d * cc + g.e * rr + g.f), 0, -1)


def _ortho_transform(res=0.5):
    return Affine(res, 0, ORIGIN[0] - 300, 0, -res, ORIGIN[1] + 300)


@pytest.mark.parametrize("heading", [37.0, 200.0])
def test_mosaic_in_the_same_crs_is_pixel_aligned_with_the_rotated_tile(tmp_path, heading):
    path = _write_optical(
        tmp_path / "ortho.tif",
        CRS,
        _ortho_transform(),
        (1200, 1200),
        tags={"ACQUISITION_DATETIME": "2024-05-30T10:00:00+00:00"},
    )
    grid = _tile_grid(heading)
    tile = MosaicOpticalSource(str(path)).render(grid.crs, grid.transform, grid.shape, when=T0)
    assert tile.image.shape == (48, 48, 3) and tile.image.dtype == np.uint8
    assert tile.coverage_fraction == 1.0
    assert tile.time_gap_s == pytest.approx(2 * 86400)
    err = np.abs(tile.image.astype(float) - _expected(grid))
    assert np.median(err) < 3 and np.percentile(err, 95) < 12


def test_mosaic_in_another_crs_is_reprojected_onto_the_tile(tmp_path):
    # Lambert-93 (the French national CRS) around the same ground
    to_l93 = Transformer.from_crs(CRS, "EPSG:2154", always_xy=True)
    x0, y0 = to_l93.transform(ORIGIN[0] - 300, ORIGIN[1] + 300)
    path = _write_optical(
        tmp_path / "l93.tif", "EPSG:2154", Affine(0.5, 0, x0 - 100, 0, -0.5, y0 + 100), (1500, 1500)
    )
    grid = _tile_grid(123.0, "left")
    tile = open_optical_source(OpticalSettings(uri=str(path))).render(grid.crs, grid.transform, grid.shape)
    assert tile.coverage_fraction == 1.0 and tile.time_gap_s is None
    err = np.abs(tile.image.astype(float) - _expected(grid))
    assert np.median(err) < 3 and np.percentile(err, 95) < 12


def test_partial_and_missing_coverage_are_measured_and_skipped(tmp_path):
    # optical covers only the ground west of x0 + 32 m: half of the tile (which starts at x0, range east)
    path = _write_optical(
        tmp_path / "half.tif", CRS, Affine(0.5, 0, ORIGIN[0] - 300, 0, -0.5, ORIGIN[1] + 300), (1200, 664)
    )
    source = MosaicOpticalSource(str(path))
    grid = _tile_grid(0.0, "right", size=64, offset=(0, 0))
    west = grid.footprint().intersection(
        box(ORIGIN[0] - 300, ORIGIN[1] - 300, ORIGIN[0] + 32, ORIGIN[1] + 300)
    )
    tile = source.render(grid.crs, grid.transform, grid.shape)
    assert tile.coverage_fraction == pytest.approx(west.area / grid.footprint().area, abs=0.03)
    assert 0.4 < tile.coverage_fraction < 0.6
    far = _tile_grid(0.0, "right", size=16, offset=(0, 0))
    far = far.subgrid(0, 0, 16, 16)
    far = type(far)(**{**far.__dict__, "transform": Affine.translation(5000, 0) @ far.transform})
    rows = [
        _row("t-near", grid),
        _row("t-far", far),
    ]
    result = colocate_tiles(rows, source, tmp_path, "flights/f/optical_tiles", min_coverage=0.95)
    assert not result.rows
    assert "half.tif" in result.skipped["t-far"] and "coverage 0.000" in result.skipped["t-far"]
    assert "coverage" in result.skipped["t-near"]
    result = colocate_tiles(rows[:1], source, tmp_path, "flights/f/optical_tiles", min_coverage=0.3)
    assert [r["tile_id"] for r in result.rows] == ["t-near"] and (tmp_path / "t-near.png").exists()


def _row(tile_id, grid):
    t = grid.transform
    fp = grid.footprint()
    return {"tile_id": tile_id, "flight_id": "f", "scene_id": "s", "path": f"flights/f/sar_tiles/{tile_id}.png",
            "crs": grid.crs, "transform": [t.a, t.b, t.c, t.d, t.e, t.f], "height": grid.shape[0],
            "width": grid.shape[1], "datetime": T0, "footprint_scene_crs": fp.wkb, "geometry": to_wgs84(fp, grid.crs)}  # fmt: skip


def test_alpha_band_masks_pixels(tmp_path):
    alpha = np.full((1200, 1200), 255)
    alpha[:, :664] = 0  # transparent west of x0 + 32 m: half the tile
    path = _write_optical(tmp_path / "rgba.tif", CRS, _ortho_transform(), (1200, 1200), alpha=alpha)
    grid = _tile_grid(0.0, "right", size=64, offset=(0, 0))
    tile = MosaicOpticalSource(str(path)).render(grid.crs, grid.transform, grid.shape)
    assert 0.2 < tile.coverage_fraction < 0.8


def test_unreadable_optical_source_names_the_file(tmp_path):
    grid = _tile_grid()
    with pytest.raises(RasterError, match="missing.tif"):
        MosaicOpticalSource(str(tmp_path / "missing.tif")).render(grid.crs, grid.transform, grid.shape)
    result = colocate_tiles(
        [_row("t", grid)], MosaicOpticalSource(str(tmp_path / "missing.tif")), tmp_path, "x", 0.5
    )
    assert "missing.tif" in result.skipped["t"]


def _item(tmp_path, item_id, bounds, when, cloud=None):
    path = _write_optical(tmp_path / f"{item_id}.tif", CRS, Affine(0.5, 0, bounds[0], 0, -0.5, bounds[3]),
                          (int((bounds[3] - bounds[1]) / 0.5), int((bounds[2] - bounds[0]) / 0.5)))  # fmt: skip
    geom = to_wgs84(box(*bounds), CRS)
    props = {} if cloud is None else {"eo:cloud_cover": cloud}
    item = pystac.Item(item_id, mapping(geom), list(geom.bounds), when, props)
    item.add_asset("visual", pystac.Asset(str(path), media_type=pystac.MediaType.COG, roles=["visual"]))
    return item


def test_stac_source_mosaics_closest_in_time_and_filters_clouds(tmp_path):
    x0, y0 = ORIGIN
    west = (x0 - 300, y0 - 300, x0 + 32, y0 + 300)
    east = (x0 + 27, y0 - 300, x0 + 300, y0 + 300)
    whole = (x0 - 300, y0 - 300, x0 + 300, y0 + 300)
    col = pystac.Collection("optical", "test optical items", pystac.Extent(
        pystac.SpatialExtent([[-180, -90, 180, 90]]), pystac.TemporalExtent([[None, None]])))  # fmt: skip
    col.add_item(_item(tmp_path, "west-recent", west, T0 - dt.timedelta(days=1)))
    col.add_item(_item(tmp_path, "east-recent", east, T0 + dt.timedelta(days=2)))
    col.add_item(_item(tmp_path, "whole-old", whole, T0 - dt.timedelta(days=400)))
    col.add_item(_item(tmp_path, "whole-cloudy", whole, T0, cloud=80.0))
    sar = _item(tmp_path, "sar-scene", whole, T0)
    sar.properties["sar:frequency_band"] = "X"  # a SAR item in the same catalogue is never used as optical
    col.add_item(sar)
    col.normalize_hrefs(str(tmp_path / "stac"))
    col.save(pystac.CatalogType.SELF_CONTAINED)
    uri = str(tmp_path / "stac" / "collection.json")

    grid = _tile_grid(0.0, "right", size=64, offset=(0, 0))  # x0 … x0 + 64: straddles both items
    # the items' rasters lie beside the catalogue's folder, not in it: say where hrefs may point
    source = StacOpticalSource(uri, max_cloud_cover=20, allowed_href_roots=[str(tmp_path)])
    tile = source.render(grid.crs, grid.transform, grid.shape, when=T0)
    assert sorted(tile.sources) == ["east-recent", "west-recent"]
    assert tile.coverage_fraction == 1.0 and tile.time_gap_s == pytest.approx(2 * 86400)
    err = np.abs(tile.image.astype(float) - _expected(grid))
    assert np.median(err) < 3
    # without the cloud filter the cloudy item taken at the SAR time wins alone
    cloudy = open_optical_source(
        OpticalSettings(kind="stac", uri=uri, allowed_href_roots=[str(tmp_path)])
    ).render(grid.crs, grid.transform, grid.shape, when=T0)
    assert cloudy.sources == ["whole-cloudy"] and cloudy.time_gap_s == 0


def test_stac_source_reads_a_catalogue_on_object_storage(tmp_path):
    """Optical catalogues go through the same fsspec STAC I/O as the SAR archive (memory:// ≈ s3://)."""
    import uuid

    import fsspec

    x0, y0 = ORIGIN
    whole = (x0 - 300, y0 - 300, x0 + 300, y0 + 300)
    col = pystac.Collection("optical", "test optical items", pystac.Extent(
        pystac.SpatialExtent([[-180, -90, 180, 90]]), pystac.TemporalExtent([[None, None]])))  # fmt: skip
    col.add_item(_item(tmp_path, "ortho", whole, T0))
    col.add_item(_item(tmp_path, "cloudy", whole, T0, cloud=80.0))
    col.normalize_hrefs(str(tmp_path / "stac"))
    col.save(pystac.CatalogType.SELF_CONTAINED)
    fs = fsspec.filesystem("memory")
    prefix = f"bucket-{uuid.uuid4().hex[:8]}/optical"
    for path in (tmp_path / "stac").rglob("*.json"):
        fs.pipe_file(f"{prefix}/{path.relative_to(tmp_path / 'stac')}", path.read_bytes())
    try:
        source = StacOpticalSource(
            f"memory://{prefix}/collection.json", max_cloud_cover=20, allowed_href_roots=["memory://"]
        )
        assert [item.id for item, _, _ in source.items] == ["ortho"], source.skipped
        assert source.items[0][2] == T0
    finally:
        fs.rm(f"/{prefix.split('/')[0]}", recursive=True)
