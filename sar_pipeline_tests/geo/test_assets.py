"""sar_tiles and optical_tiles materialise for a flight through Dagster, with their checks."""

import dagster as dg
import geopandas as gpd
import numpy as np
import pytest
from affine import Affine
from PIL import Image

from sar_pipeline.defs.geo.assets import optical_tiles, sar_tiles
from sar_pipeline.defs.geo.resources import LandCoverResource, OpticalResource
from sar_pipeline.defs.resources import SarArchiveResource, StorageRoot
from sar_pipeline.geo.manifest import read_manifest, write_geoparquet
from sar_pipeline.geo.scene_table import scene_table
from sar_pipeline_tests.geo.scenes import (
    CRS,
    ORIGIN,
    native_transform,
    scene_record,
    speckled_amplitude,
    write_scene,
)
from sar_pipeline_tests.plugins import register_archive_plugin

FLIGHT = "flight-7"


@pytest.fixture(autouse=True)
def record_archive(tmp_path, monkeypatch):
    """The test archive, installed as the plug-in ``record`` (scenes come from sar_scenes.parquet)."""
    register_archive_plugin(
        monkeypatch, tmp_path / "plugins", "record", "sar_pipeline_tests.geo.scenes:RecordArchive"
    )


def _flight(tmp_path):
    scenes = []
    for i, (heading, look) in enumerate([(20.0, "right"), (200.0, "left")]):
        shape = (260, 240)
        t = native_transform(heading, look, 0.8, 0.9, shape, origin=(ORIGIN[0] + 40 * i, ORIGIN[1] + 30 * i))
        amp = speckled_amplitude(shape, seed=i)
        amp[:, -30:] = 0  # nodata beyond far range
        path = write_scene(tmp_path / f"scene{i}.tif", amp, t)
        codes = np.where(np.arange(shape[1]) < 120, 2, 3).astype(np.uint8)[None, :].repeat(shape[0], 0)
        lc = write_scene(tmp_path / f"scene{i}_lc.tif", codes, t, nodata=0)
        scenes.append(scene_record(path, f"s{i}", FLIGHT, heading, look, extra_assets={"landcover": str(lc)}))
    # a scene whose file is missing: skipped, the others kept
    scenes.append(scene_record(path, "s9", FLIGHT, 0, "right").__class__(
        **{**scenes[0].__dict__, "scene_id": "s9", "raster_href": str(tmp_path / "gone.tif")}))  # fmt: skip
    storage = tmp_path / "storage"
    write_geoparquet(scene_table(scenes), storage / "flights" / FLIGHT / "sar_scenes.parquet")
    # an RGB orthophoto over the whole area
    rgb = np.random.default_rng(0).integers(0, 255, size=(3, 1600, 1600)).astype(np.uint8)
    ortho = tmp_path / "ortho.tif"
    write_rgb(ortho, rgb, Affine(0.5, 0, ORIGIN[0] - 400, 0, -0.5, ORIGIN[1] + 400))
    return storage, ortho


def write_rgb(path, rgb, transform):
    import rasterio

    with rasterio.open(path, "w", driver="GTiff", height=rgb.shape[1], width=rgb.shape[2], count=3, dtype="uint8",
                       crs=CRS, transform=transform) as dst:  # fmt: skip
        dst.write(rgb)


def _materialise(storage, instance, assets, sar_config, optical_uri=None):
    """Materialise ``assets`` for FLIGHT with the test archive and, if given, an optical mosaic."""
    resources = {
        "storage": StorageRoot(uri=str(storage)),
        "archive": SarArchiveResource(uri="", archive_class="record"),
        "landcover": LandCoverResource(),
    }
    if optical_uri is not None:
        resources["optical"] = OpticalResource(kind="mosaic", uri=str(optical_uri))
    return dg.materialize(
        assets,
        instance=instance,
        partition_key=FLIGHT,
        resources=resources,
        run_config={"ops": {"sar_tiles": {"config": sar_config}}},
    )


def test_sar_and_optical_tiles_materialise_with_checks(tmp_path):
    storage, ortho = _flight(tmp_path)
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("flight", [FLIGHT])
    result = _materialise(
        storage,
        instance,
        [sar_tiles, optical_tiles],
        {"tile_size": 64, "ground_sample_distance_m": 1.25},
        ortho,
    )
    assert result.success
    (sar,) = result.asset_materializations_for_node("sar_tiles")
    (opt,) = result.asset_materializations_for_node("optical_tiles")
    checks = {c.check_name: c.passed for c in result.get_asset_check_evaluations()}
    assert checks == {
        "gsd_matches_config": True,
        "tiles_are_tile_size": True,
        "nodata_under_threshold": True,
        "footprints_inside_scene": True,
        "optical_coverage_above_threshold": True,
    }
    n = sar.metadata["tile_count"].value
    assert n > 4 and sar.metadata["dropped_count"].value > 0
    assert "gone.tif" in sar.metadata["skipped_scenes"].value["s9"]
    assert "data:image/" in opt.metadata["preview"].value
    assert opt.metadata["tile_count"].value == n

    rows = read_manifest(storage / "flights" / FLIGHT / "sar_tiles" / "manifest.parquet")
    optical = read_manifest(storage / "flights" / FLIGHT / "optical_tiles" / "manifest.parquet")
    assert [r["tile_id"] for r in rows] == [r["tile_id"] for r in optical]
    assert {r["scene_id"] for r in rows} == {"s0", "s1"}
    for sar_row, opt_row in zip(rows, optical, strict=True):
        # paths are relative to the storage root; optical tiles share the SAR tile's exact grid
        assert (storage / sar_row["path"]).exists() and (storage / opt_row["path"]).exists()
        assert (storage / sar_row["landcover_path"]).exists()
        assert opt_row["transform"] == sar_row["transform"] and opt_row["crs"] == sar_row["crs"]
        assert Image.open(storage / opt_row["path"]).size == (64, 64)
        assert opt_row["coverage_fraction"] == 1.0
    assert (
        gpd.read_parquet(storage / "flights" / FLIGHT / "sar_tiles" / "manifest.parquet").crs.to_epsg()
        == 4326
    )

    # re-materialising replaces the folder as a whole
    again = _materialise(storage, instance, [sar_tiles], {"tile_size": 128, "ground_sample_distance_m": 1.25})
    assert again.success
    pngs = list((storage / "flights" / FLIGHT / "sar_tiles").glob("*__r*_c???.png"))
    assert pngs and all(Image.open(p).size == (128, 128) for p in pngs)


def test_optical_not_covering_the_flight_is_recorded_and_the_check_fails(tmp_path):
    storage, _ = _flight(tmp_path)
    far = tmp_path / "far.tif"
    write_rgb(far, np.full((3, 100, 100), 90, np.uint8), Affine(1, 0, ORIGIN[0] + 50_000, 0, -1, ORIGIN[1]))
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("flight", [FLIGHT])
    result = _materialise(storage, instance, [sar_tiles, optical_tiles], {"tile_size": 64}, far)
    assert result.success
    (opt,) = result.asset_materializations_for_node("optical_tiles")
    assert opt.metadata["tile_count"].value == 0 and opt.metadata["skipped_count"].value > 0
    assert all(
        "far.tif" in reason and "coverage 0.000" in reason
        for reason in opt.metadata["skipped"].value.values()
    )
    checks = {c.check_name: c.passed for c in result.get_asset_check_evaluations()}
    assert checks["optical_coverage_above_threshold"] is False and checks["gsd_matches_config"] is True
    assert read_manifest(storage / "flights" / FLIGHT / "optical_tiles" / "manifest.parquet") == []
