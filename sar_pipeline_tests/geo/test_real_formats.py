"""Products as real archives ship them (issue 8): geographic CRSs, north-up geocoded products turned to
native orientation, 8-bit DN, dB with nodata, heading from STAC fallbacks, small and truncated scenes,
WorldCover-style land cover. The inputs are written by ``sar_pipeline_tests/products/make_products.py``
(real GeoTIFF/COG files and a STAC catalogue), read through the STAC archive as a user's would be.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import rasterio
from affine import Affine
from PIL import Image

from sar_pipeline import radiometry
from sar_pipeline.archive.landcover import FIELD, FOREST, LANDCOVER_CODES, URBAN, WATER
from sar_pipeline.archive.stac import StacSarArchive
from sar_pipeline.captioning.template import TemplateCaptioner
from sar_pipeline.captioning.tiles import caption_flight_tiles
from sar_pipeline.dataset.radiometry import DatasetRadiometrySettings, choose_range
from sar_pipeline.geo.checks import check_sar_tiles
from sar_pipeline.geo.grid import pixel_axes, pixel_size
from sar_pipeline.geo.landcover import LandCoverSettings, open_landcover_source
from sar_pipeline.geo.scene_table import grid_scenes
from sar_pipeline.geo.settings import SceneSettings, TilingSettings
from sar_pipeline.geo.tiling import tile_flight
from sar_pipeline_tests.products import make_products
from sar_pipeline_tests.products.make_products import (
    BUILT_UP,
    COMPARE_GSD_M,
    CROPLAND,
    HEADING_DEG,
    TREES,
    ground_class,
)
from sar_pipeline_tests.products.make_products import WATER as WC_WATER

#: WorldCover class → our land-cover code, as LandCoverSettings' default mapping gives it
EXPECTED_CODES = {TREES: FOREST, CROPLAND: FIELD, BUILT_UP: URBAN, WC_WATER: WATER}


@pytest.fixture(scope="module")
def products(tmp_path_factory):
    return make_products.write_products(tmp_path_factory.mktemp("products"))


@pytest.fixture(scope="module")
def archive(products):
    return StacSarArchive(products.catalog)


def _scenes(archive, name, settings=None):
    gridded = grid_scenes(archive.list_scenes(f"flight-{name}"), settings or SceneSettings())
    return gridded


def _tile(archive, tmp_path, name, landcover=None, **params):
    """Tile one product's flight into ``tmp_path/flights/flight-<name>/sar_tiles`` (paths relative to tmp_path)."""
    scenes = _scenes(archive, name).scenes
    rel_dir = f"flights/flight-{name}/sar_tiles"
    out = tmp_path / rel_dir
    out.mkdir(parents=True, exist_ok=True)
    settings = TilingSettings(**{"ground_sample_distance_m": COMPARE_GSD_M, "tile_size": 64, **params})
    result = tile_flight(scenes, archive.open_scene, settings, out, rel_dir, landcover=landcover)
    return result, settings, out, scenes


def _db(out, row):
    return radiometry.to_db(np.asarray(Image.open(out / f"{row['tile_id']}.png")), row)


def _mosaic(rows, out, origin_grid: Affine):
    """The tiles' dB on the pixel lattice of ``origin_grid``: {(col, row) of the lattice: dB}."""
    values = {}
    inverse = ~origin_grid
    for row in rows:
        db = _db(out, row)
        t = Affine(*row["transform"])
        c0, r0 = inverse * (t.c, t.f)
        c0, r0 = round(c0), round(r0)
        for r, c in zip(*np.nonzero(np.isfinite(db)), strict=True):
            values[(c0 + c, r0 + r)] = db[r, c]
    return values


# --- point 1: geographic CRSs -------------------------------------------------------------------


def test_a_geographic_scene_is_gridded_in_the_utm_zone_recorded_by_sar_scenes(archive, tmp_path):
    gridded = _scenes(archive, "geographic")
    (scene,) = gridded.scenes
    assert scene.crs == "EPSG:4326" and scene.output_crs == "EPSG:32631"
    # nothing gives its heading: kept (the raster's axes), with a warning naming the scene
    assert any("geographic" in w and "heading unknown" in w for w in gridded.warnings)
    result, settings, out, scenes = _tile(archive, tmp_path, "geographic", resampling="nearest", tile_size=32)
    assert len(result.rows) >= 2 and all(r["crs"] == "EPSG:32631" for r in result.rows)
    for row in result.rows:
        gsd = settings.ground_sample_distance_m
        assert pixel_size(Affine(*row["transform"])) == pytest.approx((gsd, gsd), rel=1e-9)  # exact metres
    assert all(c.passed for c in check_sar_tiles(result.rows, scenes, settings))
    assert result.scenes["geographic"].orientation_source == "raster"
    assert any("heading or look side unknown" in w for w in result.warnings(settings))
    # nearest neighbour: each output pixel is the EPSG:4326 pixel under its centre, same dB
    from pyproj import Transformer

    to_lonlat = Transformer.from_crs("EPSG:32631", "EPSG:4326", always_xy=True)
    with rasterio.open(scene.raster_href) as ds:
        sigma0 = ds.read(1)
        inverse = ~ds.transform
    row = result.rows[len(result.rows) // 2]
    db = _db(out, row)
    rr, cc = np.nonzero(np.isfinite(db))
    xs, ys = Affine(*row["transform"]) * (cc + 0.5, rr + 0.5)
    cols, rows = inverse * to_lonlat.transform(np.asarray(xs), np.asarray(ys))
    clear = (np.abs(cols - np.round(cols)) > 1e-3) & (np.abs(rows - np.round(rows)) > 1e-3)
    truth = 10 * np.log10(sigma0[np.floor(rows).astype(int), np.floor(cols).astype(int)])
    assert np.abs(db[rr, cc] - truth)[clear].max() < 0.01


def test_a_fixed_output_crs_and_refused_scenes_are_recorded_with_the_reason(archive):
    gridded = _scenes(archive, "geographic", SceneSettings(output_crs="EPSG:2154"))
    assert gridded.scenes[0].output_crs == "EPSG:2154"
    refused = _scenes(archive, "geographic", SceneSettings(require_heading=True))
    assert not refused.scenes and "require_heading" in refused.rejected["geographic"]
    # a scene whose georeferencing cannot be placed is rejected there, not one stage later
    (scene,) = archive.list_scenes("flight-native")
    broken = dataclasses.replace(scene, crs="EPSG:4326", transform=(1.0, 0.0, 500.0, 0.0, -1.0, 200.0))
    outcome = grid_scenes([broken], SceneSettings())
    assert not outcome.scenes and "cannot be gridded" in outcome.rejected["native"]


# --- point 2: north-up geocoded products turned to native orientation ----------------------------


def test_heading_comes_from_the_stac_fallbacks(archive):
    scenes = {s.scene_id: s for f in archive.list_flights() for s in archive.list_scenes(f.flight_id)}
    assert scenes["native"].heading_source == "sar_pipeline:heading_deg"
    assert scenes["geocoded"].heading_source == "view:azimuth"
    assert scenes["geocoded"].heading_deg == pytest.approx(HEADING_DEG, abs=1e-6)  # true → grid bearing
    assert scenes["db"].heading_source == "sat:orbit_state"
    assert scenes["db"].heading_deg == pytest.approx(194.3, abs=1.0)  # descending pass at 43.4° N
    assert scenes["geographic"].heading_deg is None and scenes["geographic"].heading_source is None


def test_north_up_geocoded_tiles_match_the_native_tiles_of_the_same_ground(archive, tmp_path):
    native, _, native_out, _ = _tile(archive, tmp_path, "native", tile_size=32)
    geocoded, _, geo_out, _ = _tile(archive, tmp_path, "geocoded", tile_size=32)
    summary = geocoded.scenes["geocoded"]
    assert summary.orientation_source == "heading"
    assert summary.raster_rotation_deg == pytest.approx(HEADING_DEG, abs=1e-6)  # north-up → native
    for row in geocoded.rows:  # range along the look direction, azimuth along the heading
        col, r = (a / COMPARE_GSD_M for a in pixel_axes(Affine(*row["transform"])))
        assert col @ make_products.native_axes()[0] == pytest.approx(1.0, abs=1e-9)
        assert r @ make_products.native_axes()[1] == pytest.approx(1.0, abs=1e-9)
    # both grids lie on one lattice: compare the same ground pixel for pixel
    lattice = Affine(*native.rows[0]["transform"])
    a, b = _mosaic(native.rows, native_out, lattice), _mosaic(geocoded.rows, geo_out, lattice)
    common = sorted(set(a) & set(b))
    assert len(common) > 0.6 * len(a)
    diff = np.array([a[k] - b[k] for k in common])
    # the geocoded product went through a nearest-neighbour north-up warp at 0.5 m: at 4 m the
    # averages see nearly the same native pixels, without bias
    assert abs(diff.mean()) < 0.05
    assert np.median(np.abs(diff)) < 0.3 and np.percentile(np.abs(diff), 95) < 1.0
    assert np.corrcoef([a[k] for k in common], [b[k] for k in common])[0, 1] > 0.95


# --- point 3: radiometry that fits the product ----------------------------------------------------


def test_an_8_bit_dn_product_gets_a_range_from_its_valid_pixels(archive, tmp_path):
    result, _, out, _ = _tile(archive, tmp_path, "dn", tile_size=128)
    summary = result.scenes["dn"]
    assert (summary.encoding.unit, summary.encoding.unit_source) == ("amplitude", "declared")
    assert summary.encoding.declared == "amplitude (DN)"
    histograms = [
        radiometry.DbHistogram.from_start_db(r["db_histogram_start_db"], r["db_histogram"])
        for r in result.rows
    ]
    params, _ = choose_range(histograms, DatasetRadiometrySettings())
    # DN 1…255 is 0…48 dB; the DN-0 fill (a quarter of the raster) is nodata, never the range's floor
    assert 0 < params.db_min < params.db_max <= 20 * math.log10(255) + 0.1
    pooled = radiometry.DbHistogram.pooled(histograms)
    low, high = pooled.fractions_outside(params.db_min, params.db_max)
    assert low < 0.01 and high < 0.01
    # the calibrated-sigma0 range that used to be the default saturates it at 255: the check's case
    fixed, _ = choose_range(histograms, DatasetRadiometrySettings(db_min=-30, db_max=10))
    assert pooled.fractions_outside(fixed.db_min, fixed.db_max)[1] > 0.9


def test_db_with_declared_nodata_and_an_assumed_unit_is_warned(archive, tmp_path):
    result, settings, out, scenes = _tile(archive, tmp_path, "db", tile_size=96)
    summary = result.scenes["db"]
    assert (summary.encoding.unit, summary.encoding.unit_source) == ("db", "declared")
    with rasterio.open(scenes[0].raster_href) as ds:
        values = ds.read(1)
    valid = values[values != -9999.0]
    assert all(r["db_min"] >= valid.min() - 1e-3 and r["db_max"] <= valid.max() + 1e-3 for r in result.rows)
    assert not any("assumed" in w for w in result.warnings(settings))
    # the same scene with its unit string removed: read with the default unit, and said so
    undeclared = dataclasses.replace(scenes[0], value_unit=None)
    out2 = tmp_path / "undeclared"
    out2.mkdir()  # (a second tiling of the same scene)
    again = tile_flight(
        [undeclared], archive.open_scene, settings.model_copy(update={"default_value_unit": "db"}), out2, "x"
    )
    assert again.scenes["db"].encoding.unit_source == "assumed"
    assert any("no unit" in w and "assumed" in w and "db" in w for w in again.warnings(settings))


# --- point 4: small scenes and resolution ---------------------------------------------------------


def test_a_scene_smaller_than_a_tile_says_why_and_what_to_change(archive, tmp_path):
    result, settings, _, _ = _tile(archive, tmp_path, "small", tile_size=512, ground_sample_distance_m=1.0)
    assert not result.rows
    note = result.no_tile_reasons()["small"]
    assert "150×120 px" in note and "smaller than one 512-px tile" in note
    assert "tile_size to 64" in note and "ground_sample_distance_m to 0.234" in note


def test_upsampling_is_warned_and_speckle_statistics_are_left_out_where_meaningless(archive, tmp_path):
    fine, settings, _, _ = _tile(archive, tmp_path, "db", ground_sample_distance_m=0.5, tile_size=256)
    summary = fine.scenes["db"]
    assert summary.upsampling_factor == pytest.approx(4.0)
    assert any(
        "4.0× finer" in w and "ground_sample_distance_m to at least 2" in w for w in fine.warnings(settings)
    )
    assert summary.speckle is None and "upsampled" in summary.speckle_note
    native, _, _, _ = _tile(archive, tmp_path, "native", ground_sample_distance_m=1.0, tile_size=128)
    # 4-look speckle at its own pixel spacing: an ENL near 4 (texture of the parcels lowers it)
    assert 2.5 < native.scenes["native"].speckle.equivalent_number_of_looks < 6


# --- point 5: land cover for real flights --------------------------------------------------------


def test_a_worldcover_cog_in_another_crs_is_warped_onto_every_tile_and_captioned(products, archive, tmp_path):
    source = open_landcover_source(LandCoverSettings(uri=str(products.worldcover)))
    with source:
        result, _, out, _ = _tile(archive, tmp_path, "native", landcover=source, tile_size=64)
    assert result.rows and all(r["landcover_path"] for r in result.rows)
    agree = total = 0
    for row in result.rows:
        codes = np.asarray(Image.open(tmp_path / row["landcover_path"]))
        assert set(np.unique(codes)) <= {0, *LANDCOVER_CODES.values()}
        t = Affine(*row["transform"])
        rr, cc = np.nonzero(codes)
        xs, ys = t * (cc + 0.5, rr + 0.5)
        truth = ground_class(np.asarray(xs), np.asarray(ys))
        expected = np.vectorize(EXPECTED_CODES.get)(truth)
        agree += int((codes[rr, cc] == expected).sum())
        total += rr.size
    # WorldCover's 10 m pixels on 2 m tiles: only class boundaries disagree
    assert total > 0 and agree / total > 0.9
    # the template captioner captions the real flight from it: every tile, water named where it is
    run = caption_flight_tiles(tmp_path, result.rows, [], TemplateCaptioner())
    assert len(run.rows) == len(result.rows) and not run.skipped
    assert any("river" in r["caption"] or "lake" in r["caption"] or "pond" in r["caption"] for r in run.rows)


def test_land_cover_codes_without_a_class_become_nodata_and_are_reported(products, archive, tmp_path):
    mapping = {"10": "forest", "40": "field", "80": "water"}  # built-up (50) left out
    with open_landcover_source(LandCoverSettings(uri=str(products.worldcover), classes=mapping)) as source:
        result, settings, _, _ = _tile(archive, tmp_path, "native", landcover=source)
    assert result.unmapped_landcover_codes == [50]
    assert any("[50]" in w for w in result.warnings(settings))


# --- point 7: a truncated GeoTIFF ------------------------------------------------------------------


def test_a_truncated_geotiff_names_the_file_and_window_and_keeps_the_rest(archive, tmp_path):
    # half the file: the first 128 rows of 128-pixel TIFF blocks are there, the rest is not
    result, settings, _, _ = _tile(archive, tmp_path, "truncated", tile_size=32, ground_sample_distance_m=1.0)
    summary = result.scenes["truncated"]
    assert result.rows  # the blocks before the cut are kept
    assert summary.dropped["read error"] > 0 and summary.read_errors
    assert all("truncated.tif" in e and "window rows" in e for e in summary.read_errors)
    assert any("unreadable" in w and "truncated.tif" in w for w in result.warnings(settings))
