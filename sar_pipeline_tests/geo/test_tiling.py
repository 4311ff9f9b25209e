"""Tiling scenes: ids, drops, extra assets, radiometry recorded per tile, bad input kept local."""

import dataclasses

import numpy as np
import pydantic
import pytest
import rasterio
from affine import Affine
from PIL import Image
from shapely import wkb

from sar_pipeline import radiometry
from sar_pipeline.errors import RasterError
from sar_pipeline.geo.checks import check_sar_tiles
from sar_pipeline.geo.manifest import read_manifest, write_manifest
from sar_pipeline.geo.scene_raster import scene_output_grid
from sar_pipeline.geo.settings import SceneSettings, TilingSettings
from sar_pipeline.geo.tiling import tile_flight, tile_id_for
from sar_pipeline_tests.geo.scenes import CRS, native_transform, scene_record, speckled_amplitude, write_scene

SHAPE = (150, 170)


def _open(scene):
    return rasterio.open(scene.raster_href)


def _scene(tmp_path, name="scene-a", heading=37.0, look="right", amplitude=None, **kw):
    t = native_transform(heading, look, 0.8, 0.9, SHAPE, flip_columns=True)
    amp = speckled_amplitude(SHAPE, seed=hash(name) % 100) if amplitude is None else amplitude
    path = write_scene(tmp_path / f"{name}.tif", amp, t)
    return scene_record(path, scene_id=name, heading_deg=heading, observation_direction=look, **kw), t


def _tile(tmp_path, scenes, **params):
    out = tmp_path / "tiles"
    out.mkdir(exist_ok=True)
    p = TilingSettings(**{"ground_sample_distance_m": 1.0, "tile_size": 32, **params})
    return tile_flight(scenes, _open, p, out, "flights/flight-1/sar_tiles"), p, out


def test_tiles_are_written_with_grid_footprints_and_invertible_radiometry(tmp_path):
    scene, _ = _scene(tmp_path)
    result, params, out = _tile(tmp_path, [scene])
    assert len(result.rows) > 10 and not result.skipped_scenes
    ids = [r["tile_id"] for r in result.rows]
    assert len(set(ids)) == len(ids)
    assert ids[0] == "flight-1__scene-a__r000_c000" or ids[0].startswith("flight-1__scene-a__r")
    for row in result.rows:
        img = np.asarray(Image.open(out / f"{row['tile_id']}.png"))
        assert img.shape == (32, 32) and img.dtype == np.uint16
        assert row["path"] == f"flights/flight-1/sar_tiles/{row['tile_id']}.png"
        # 16-bit over the tile's own valid range: nothing clipped, the extremes are the end levels
        assert row["bit_depth"] == 16 and row["db_min"] < row["db_max"]
        assert img[img > 0].min() == 1 and img.max() == 65535
        # the histogram counts every valid pixel (zeros are nodata here)
        assert sum(row["db_histogram"]) == (img > 0).sum() and row["zero_pixel_count"] == 0
        assert row["db_histogram_start_db"] <= row["db_min"] < row["db_histogram_start_db"] + 0.1
        assert row["geometry"].is_valid and -180 < row["geometry"].centroid.x < 180
        assert wkb.loads(row["footprint_scene_crs"]).area == pytest.approx(32 * 32, rel=1e-6)
        assert row["nodata_fraction"] <= 0.1
    # nodata fractions above the threshold (edge tiles) are dropped with the reason
    assert result.dropped and all("nodata" in d.reason for d in result.dropped)
    checks = check_sar_tiles(
        result.rows,
        [scene],
        params,
        image_size=lambda p: Image.open(tmp_path / "tiles" / p.rsplit("/", 1)[1]).size,
    )
    assert all(c.passed for c in checks), checks
    # the dB values come back from the PNG with the recorded parameters
    row = result.rows[0]
    db = radiometry.to_db(np.asarray(Image.open(out / f"{row['tile_id']}.png")), row)
    assert np.nanmean(db) == pytest.approx(10 * np.log10(0.05), abs=1.5)


def test_checks_fail_on_a_wrong_manifest(tmp_path):
    scene, _ = _scene(tmp_path)
    result, params, _ = _tile(tmp_path, [scene])
    bad = [dict(r) for r in result.rows]
    bad[0]["transform"] = [1.1, 0, 0, 0, -1.1, 0]
    bad[1]["nodata_fraction"] = 0.5
    bad[2]["footprint_scene_crs"] = wkb.dumps(
        wkb.loads(bad[2]["footprint_scene_crs"]).buffer(0).envelope.buffer(500)
    )
    failed = {c.name for c in check_sar_tiles(bad, [scene], params) if not c.passed}
    assert failed == {"gsd_matches_config", "nodata_under_threshold", "footprints_inside_scene"}
    failed = {
        c.name
        for c in check_sar_tiles(result.rows, [scene], params.model_copy(update={"tile_size": 64}))
        if not c.passed
    }
    assert failed == {"tiles_are_tile_size"}


def test_manifest_round_trips_as_geoparquet(tmp_path):
    scene, _ = _scene(tmp_path)
    result, _, _ = _tile(tmp_path, [scene])
    write_manifest(result.rows, tmp_path / "manifest.parquet")
    rows = read_manifest(tmp_path / "manifest.parquet")
    assert [r["tile_id"] for r in rows] == [r["tile_id"] for r in result.rows]
    assert rows[0]["transform"] == pytest.approx(result.rows[0]["transform"])
    import geopandas as gpd

    assert gpd.read_parquet(tmp_path / "manifest.parquet").crs.to_epsg() == 4326


def test_extra_assets_are_warped_onto_the_same_tile_grid(tmp_path):
    t = native_transform(37.0, "right", 0.8, 0.9, SHAPE, flip_columns=True)
    codes = np.zeros(SHAPE, np.uint8)
    codes[:, :85] = 1  # near range (stored on the right: flipped columns) is class 2
    codes[:, 85:] = 2
    lc = write_scene(tmp_path / "lc.tif", codes, t, nodata=0)
    ideal = write_scene(tmp_path / "ideal.tif", np.full(SHAPE, np.sqrt(0.05), np.float32), t)
    scene, _ = _scene(tmp_path, extra_assets={"landcover": str(lc), "idealised": str(ideal), "other": "x"})
    result, _, out = _tile(tmp_path, [scene])
    row = next(r for r in result.rows if r["tile_col"] == 0)
    landcover = np.asarray(Image.open(out / f"{row['tile_id']}_landcover.png"))
    assert landcover.shape == (32, 32) and set(np.unique(landcover)) <= {0, 1, 2}
    # columns = range from near (left) to far: the near-range class is on the left
    assert (landcover[:, :4] == 2).mean() > 0.9
    idealised = np.asarray(Image.open(out / f"{row['tile_id']}_idealised.png"))
    assert np.abs(radiometry.to_db(idealised, row)[idealised > 0] - 10 * np.log10(0.05)).max() < 0.2
    assert row["landcover_path"].endswith("_landcover.png") and row["extra_errors"] is None


def test_tiles_keep_db_within_a_sixteen_bit_step_and_histograms_pool_to_the_scene(tmp_path):
    """Every valid dB value comes back from the 16-bit tile within half a step of its own range."""
    amp = speckled_amplitude(SHAPE, looks=1, mean_intensity=0.02, seed=3)
    amp[70:80, 70:80] = 300.0  # a corner reflector: +50 dB, would be clipped by any fixed 8-bit range
    scene, t = _scene(tmp_path, amplitude=amp)
    result, params, out = _tile(tmp_path, [scene], resampling="nearest")
    for row in result.rows:
        img = np.asarray(Image.open(out / f"{row['tile_id']}.png"))
        db = radiometry.to_db(img, row)
        # nearest neighbour: each output pixel is one source pixel, so its dB is known exactly
        grid_t = Affine(*row["transform"])
        rr, cc = np.nonzero(img > 0)
        xs, ys = grid_t * (cc + 0.5, rr + 0.5)
        src_c, src_r = ~t * (np.asarray(xs), np.asarray(ys))
        # (centres falling on a source pixel edge, up to float noise, could pick either neighbour)
        clear = (np.abs(src_c - np.round(src_c)) > 1e-6) & (np.abs(src_r - np.round(src_r)) > 1e-6)
        truth = 20 * np.log10(amp[np.floor(src_r).astype(int), np.floor(src_c).astype(int)])
        step = (row["db_max"] - row["db_min"]) / 65534
        assert clear.mean() > 0.7
        assert np.abs(db[rr, cc] - truth)[clear].max() <= step / 2 + 1e-4
    pooled = radiometry.DbHistogram.pooled(
        [
            radiometry.DbHistogram.from_start_db(r["db_histogram_start_db"], r["db_histogram"])
            for r in result.rows
        ]
    )
    assert pooled.total == sum(
        int((np.asarray(Image.open(out / f"{r['tile_id']}.png")) > 0).sum()) for r in result.rows
    )
    assert max(r["db_max"] for r in result.rows) == pytest.approx(20 * np.log10(300.0), abs=0.01)


def test_tile_ids_are_deterministic_and_file_safe():
    assert tile_id_for("F 1", "s/2", 3, 14) == "F-1__s-2__r003_c014"
    assert tile_id_for("F 1", "s/2", 3, 14) == tile_id_for("F 1", "s/2", 3, 14)
    assert ".." not in tile_id_for("a..b", "c", 0, 0)


def test_bad_parameters():
    with pytest.raises(pydantic.ValidationError, match="resampling"):
        TilingSettings(resampling="magic")
    with pytest.raises(pydantic.ValidationError, match="max_nodata_fraction"):
        TilingSettings(max_nodata_fraction=2)
    with pytest.raises(pydantic.ValidationError, match="axis_tolerance_deg"):
        TilingSettings(axis_tolerance_deg=60)
    with pytest.raises(pydantic.ValidationError, match="unknown_setting"):
        TilingSettings(unknown_setting=1)
    # the radiometric range is the dataset's (it pools every flight), not a tiling setting
    with pytest.raises(pydantic.ValidationError, match="db_min"):
        TilingSettings(db_min=-30)
    with pytest.raises(pydantic.ValidationError, match="output_crs 'EPSG:4326' is not projected"):
        SceneSettings(output_crs="EPSG:4326")
    with pytest.raises(pydantic.ValidationError, match="not a CRS"):
        SceneSettings(output_crs="EPSG:99999")


# --- bad input: each is a clear error or a recorded skip; the flight's other scenes are kept ---


def test_bad_scenes_are_skipped_with_reasons_and_others_kept(tmp_path):
    good, t = _scene(tmp_path, "good")
    # no CRS, and the archive record gives none either
    no_crs_path = write_scene(
        tmp_path / "nocrs.tif", speckled_amplitude(SHAPE), Affine(1, 0, 0, 0, 1, 0), crs=None
    )
    no_crs = dataclasses.replace(scene_record(no_crs_path, scene_id="nocrs"), crs="")
    # all nodata
    empty, _ = _scene(tmp_path, "empty", amplitude=np.zeros(SHAPE, np.float32))
    # negative "amplitude": contradicts the declared unit
    negative_amp = speckled_amplitude(SHAPE)
    negative_amp[40:60, 40:60] = -3.0
    negative, _ = _scene(tmp_path, "negative", amplitude=negative_amp)
    # NaN / inf pixels: treated as nodata and counted
    nan_amp = speckled_amplitude(SHAPE)
    nan_amp[10, 10], nan_amp[11, 11] = np.nan, np.inf
    nan_scene, _ = _scene(tmp_path, "nan", amplitude=nan_amp)
    # a truncated file: header fine, pixel blocks missing
    truncated, _ = _scene(tmp_path, "truncated")
    data = (tmp_path / "truncated.tif").read_bytes()
    (tmp_path / "truncated.tif").write_bytes(data[: len(data) // 2])
    # not a TIFF at all
    (tmp_path / "corrupt.tif").write_bytes(b"II*\x00garbage" * 10)
    corrupt = dataclasses.replace(good, scene_id="corrupt", raster_href=str(tmp_path / "corrupt.tif"))
    # a non-invertible transform in the raster itself
    singular_path = write_scene(
        tmp_path / "singular.tif", speckled_amplitude(SHAPE), Affine(1, 1, 0, 1, 1, 0)
    )
    singular = scene_record(singular_path, scene_id="singular")

    scenes = [good, no_crs, empty, negative, nan_scene, truncated, corrupt, singular]
    result, _, _ = _tile(tmp_path, scenes)
    by_scene = {}
    for row in result.rows:
        by_scene.setdefault(row["scene_id"], []).append(row)
    drops = {}
    for d in result.dropped:
        drops.setdefault(d.scene_id, set()).add(d.reason.split(":")[0].split(" ")[0])
    assert len(by_scene["good"]) > 10
    assert "no CRS" in result.skipped_scenes["nocrs"] and "nocrs.tif" in result.skipped_scenes["nocrs"]
    assert "empty" not in by_scene and drops["empty"] == {"all"}
    assert "negative" in " ".join(d.reason for d in result.dropped if d.scene_id == "negative")
    assert "negative.tif" in " ".join(d.reason for d in result.dropped if d.scene_id == "negative")
    assert len(by_scene["negative"]) > 0  # the blocks without negative pixels are kept
    # the NaN/inf pixels are counted by the tile(s) they lie under, not by their neighbours; kept
    assert sum(r["invalid_pixel_count"] for r in by_scene["nan"]) == 2 and len(by_scene["nan"]) > 10
    assert sum(r["invalid_pixel_count"] > 0 for r in by_scene["nan"]) <= 2
    assert result.scenes["nan"].invalid_pixel_count == 2
    # 4-look speckle averaged by the 0.8 × 0.9 m → 1 m resampling (fractional overlaps of up to 4
    # source pixels): more looks than the source, well short of a 3×3 boxcar
    assert 4 < result.scenes["good"].speckle.equivalent_number_of_looks < 36
    # the blocks before the truncation are kept, the missing ones are dropped naming the file and window
    assert by_scene["truncated"]
    reasons = [d.reason for d in result.dropped if d.scene_id == "truncated" and d.kind == "read error"]
    assert reasons and all("truncated.tif" in r and "window rows" in r for r in reasons)
    assert result.scenes["truncated"].read_errors[0] in reasons[0]
    # the scene with no tile says why
    assert "every tile position" in result.scenes["empty"].note or "nodata" in result.scenes["empty"].note
    assert "corrupt.tif" in result.skipped_scenes["corrupt"]
    assert "non-invertible" in result.skipped_scenes["singular"]


def test_unreadable_extra_asset_is_recorded_on_the_tiles(tmp_path):
    scene, _ = _scene(tmp_path, extra_assets={"landcover": str(tmp_path / "missing.tif")})
    result, _, _ = _tile(tmp_path, [scene])
    assert result.rows and all("missing.tif" in r["extra_errors"] for r in result.rows)
    assert all(r["landcover_path"] is None for r in result.rows)


def test_no_crs_raises_from_the_grid(tmp_path):
    path = write_scene(
        tmp_path / "nocrs.tif", speckled_amplitude((8, 8)), Affine(1, 0, 0, 0, -1, 0), crs=None
    )
    scene = dataclasses.replace(scene_record(path), crs="")
    with rasterio.open(path) as ds, pytest.raises(RasterError, match="no CRS"):
        scene_output_grid(scene, ds, TilingSettings())
    # the record's CRS (e.g. from STAC proj:code) is used when the raster has none
    scene = dataclasses.replace(scene, crs=CRS)
    with rasterio.open(path) as ds:
        assert scene_output_grid(scene, ds, TilingSettings()).crs == CRS


def test_parallel_workers_and_small_blocks_give_the_same_tiles(tmp_path):
    lc_codes = np.random.default_rng(1).integers(1, 6, size=SHAPE).astype(np.uint8)
    t = native_transform(37.0, "right", 0.8, 0.9, SHAPE, flip_columns=True)
    lc = write_scene(tmp_path / "lc.tif", lc_codes, t, nodata=0)
    scene, _ = _scene(tmp_path, extra_assets={"landcover": str(lc)})
    serial, _, out1 = _tile(tmp_path / "a" if (tmp_path / "a").mkdir() is None else None, [scene], workers=1)
    parallel, _, out2 = _tile(
        tmp_path / "b" if (tmp_path / "b").mkdir() is None else None, [scene], workers=2
    )
    assert [r["tile_id"] for r in serial.rows] == [r["tile_id"] for r in parallel.rows]
    for row in serial.rows:
        for suffix in ("", "_landcover"):
            a = (out1 / f"{row['tile_id']}{suffix}.png").read_bytes()
            assert a == (out2 / f"{row['tile_id']}{suffix}.png").read_bytes()


def test_manifest_on_object_storage(tmp_path):
    """The manifest goes through fsspec for non-local roots (an in-memory filesystem stands in for s3)."""
    from upath import UPath

    scene, _ = _scene(tmp_path)
    result, _, _ = _tile(tmp_path, [scene])
    target = UPath("memory://bucket/flights/flight-1/sar_tiles/manifest.parquet")
    write_manifest(result.rows, target)
    assert [r["tile_id"] for r in read_manifest(target)] == [r["tile_id"] for r in result.rows]
