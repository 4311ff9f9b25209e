"""The flight partitions: the new_flights sensor and the sar_scenes asset, through Dagster's APIs."""

import datetime as dt
import json
import os
import shutil
import uuid

import dagster as dg
import geopandas as gpd
import numpy as np
import pystac
import pytest
import rasterio
from PIL import Image
from upath import UPath

from sar_pipeline.archive.demo import write_demo_archive
from sar_pipeline.archive.simulate import SMALL_DEMO_SETTINGS
from sar_pipeline.cli import register_flights
from sar_pipeline.defs.flights.assets import sar_scenes
from sar_pipeline.defs.flights.checks import sar_scenes_georeferencing, sar_scenes_metadata_complete
from sar_pipeline.defs.flights.sensors import new_flights
from sar_pipeline.defs.resources import SarArchiveResource, StorageRoot
from sar_pipeline.geo.scene_table import read_scene_table
from sar_pipeline_tests.archive.conftest import ROTATED


@pytest.fixture(scope="module")
def demo_archive(tmp_path_factory):
    return write_demo_archive(
        tmp_path_factory.mktemp("archive") / "demo", flights=2, seed=7, settings=SMALL_DEMO_SETTINGS
    )


def _sensor(instance, archive_uri, cursor=None):
    context = dg.build_sensor_context(
        instance=instance, cursor=cursor, resources={"archive": SarArchiveResource(uri=str(archive_uri))}
    )
    return new_flights(context)


def test_sensor_adds_only_new_flights_and_is_idempotent(demo_archive, tmp_path):
    instance = dg.DagsterInstance.ephemeral()
    archive = tmp_path / "archive"
    shutil.copytree(demo_archive.catalog_path.parent, archive)
    first = _sensor(instance, archive / "catalog.json")
    flights = sorted(demo_archive.flight_ids)
    assert [r.partition_key for r in first.run_requests] == flights
    assert [r.run_key for r in first.run_requests] == flights
    (add,) = first.dynamic_partitions_requests
    assert add.partitions_def_name == "flight" and sorted(add.partition_keys) == flights
    instance.add_dynamic_partitions("flight", list(add.partition_keys))

    second = _sensor(instance, archive / "catalog.json", cursor=first.cursor)
    assert not second.run_requests and not second.dynamic_partitions_requests

    # a new flight arrives in the archive: only it is requested
    grown = write_demo_archive(archive, flights=3, seed=7, settings=SMALL_DEMO_SETTINGS)
    (new_flight,) = set(grown.flight_ids) - set(flights)
    third = _sensor(instance, archive / "catalog.json", cursor=second.cursor)
    assert [r.partition_key for r in third.run_requests] == [new_flight]
    assert new_flight in json.loads(third.cursor)["seen"]

    # a tick without cursor (e.g. sensor reset) still does not re-request registered flights
    instance.add_dynamic_partitions("flight", [new_flight])
    assert not _sensor(instance, archive / "catalog.json").run_requests


def test_sar_scenes_materialises_for_a_flight(demo_archive, tmp_path):
    instance = dg.DagsterInstance.ephemeral()
    flight = sorted(demo_archive.flight_ids)[0]
    instance.add_dynamic_partitions("flight", [flight])
    storage = StorageRoot(uri=str(tmp_path / "storage"))
    result = dg.materialize(
        [sar_scenes, sar_scenes_georeferencing, sar_scenes_metadata_complete],
        instance=instance,
        partition_key=flight,
        resources={"archive": SarArchiveResource(uri=str(demo_archive.catalog_path)), "storage": storage},
    )
    assert result.success
    (mat,) = result.asset_materializations_for_node("sar_scenes")
    scenes = read_scene_table(tmp_path / "storage" / "flights" / flight / "sar_scenes.parquet")
    assert mat.metadata["scene_count"].value == len(scenes) > 0
    assert all(s.flight_id == flight for s in scenes)
    evaluations = result.get_asset_check_evaluations()
    assert all(c.passed for c in evaluations)
    assert {c.partition for c in evaluations} == {flight}  # the UI shows each check result's flight
    # the quick-look shows every scene of the flight, side by side
    with Image.open(tmp_path / "storage" / "flights" / flight / "sar_scenes_quicklook.png") as look:
        assert look.width == 256 * min(4, len(scenes))
    assert f"{len(scenes)} scenes of {flight}" in mat.metadata["quicklook"].value
    table = gpd.read_parquet(tmp_path / "storage" / "flights" / flight / "sar_scenes.parquet")
    assert table.crs.to_epsg() == 4326
    # the WGS84 footprint lies in the south of France, where the demo region is
    lon, lat = table.geometry.iloc[0].centroid.coords[0]
    assert 0 < lon < 8 and 42 < lat < 46


def test_register_flights_uses_the_sensor_and_adds_partitions(demo_archive, monkeypatch, tmp_path):
    from sar_pipeline.definitions import defs

    monkeypatch.setenv("SAR_PIPELINE_ARCHIVE", str(demo_archive.catalog_path))
    instance = dg.DagsterInstance.ephemeral()
    new = register_flights(defs(), instance)
    assert sorted(new) == sorted(instance.get_dynamic_partitions("flight")) == sorted(demo_archive.flight_ids)
    assert register_flights(defs(), instance) == []


def test_sar_scenes_and_checks_on_an_object_store_root(demo_archive):
    """The storage root may be s3://…: an in-memory fsspec filesystem stands in for it."""
    root = f"memory://sar-pipeline-{uuid.uuid4().hex[:8]}/storage"
    instance = dg.DagsterInstance.ephemeral()
    flight = sorted(demo_archive.flight_ids)[0]
    instance.add_dynamic_partitions("flight", [flight])
    result = dg.materialize(
        [sar_scenes, sar_scenes_georeferencing, sar_scenes_metadata_complete],
        instance=instance,
        partition_key=flight,
        resources={
            "archive": SarArchiveResource(uri=str(demo_archive.catalog_path)),
            "storage": StorageRoot(uri=root),
        },
    )
    assert result.success
    assert all(c.passed for c in result.get_asset_check_evaluations())
    table = UPath(root) / "flights" / flight / "sar_scenes.parquet"
    assert [s.flight_id for s in read_scene_table(table)] and table.exists()
    assert (UPath(root) / "flights" / flight / "sar_scenes_quicklook.png").read_bytes()[:4] == b"\x89PNG"


def test_a_scene_without_quicklook_still_gives_the_table(tmp_path):
    """Pixels that contradict the declared unit (negative amplitudes) only cost the quick-look."""
    raster = tmp_path / "stac" / "files" / "scene-a.tif"
    raster.parent.mkdir(parents=True)
    profile = {"driver": "GTiff", "width": 30, "height": 20, "count": 1, "dtype": "float32"}
    with rasterio.open(raster, "w", **profile, crs="EPSG:32631", transform=ROTATED, nodata=None) as dst:
        dst.write(np.full((1, 20, 30), -0.5, np.float32))
    when = dt.datetime(2024, 6, 1, tzinfo=dt.UTC)
    collection = pystac.Collection(
        "flight-neg",
        "a flight",
        pystac.Extent(pystac.SpatialExtent([[0, 0, 1, 1]]), pystac.TemporalExtent([[when, None]])),
    )
    item = pystac.Item("scene-a", geometry=None, bbox=None, datetime=when, properties={})
    asset = pystac.Asset(href=str(raster), media_type=pystac.MediaType.GEOTIFF, roles=["data"])
    asset.extra_fields["raster:bands"] = [{"unit": "amplitude"}]
    item.add_asset("amplitude", asset)
    collection.add_item(item)
    catalog = pystac.Catalog("mine", "my flights")
    catalog.add_child(collection)
    catalog.normalize_hrefs(str(tmp_path / "stac") + os.sep)
    catalog.save(catalog_type=pystac.CatalogType.SELF_CONTAINED)

    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("flight", ["flight-neg"])
    result = dg.materialize(
        [sar_scenes],
        instance=instance,
        partition_key="flight-neg",
        resources={
            "archive": SarArchiveResource(uri=str(tmp_path / "stac" / "catalog.json")),
            "storage": StorageRoot(uri=str(tmp_path / "storage")),
        },
    )
    assert result.success
    (mat,) = result.asset_materializations_for_node("sar_scenes")
    assert mat.metadata["scene_count"].value == 1
    assert (
        "no quick-look" in mat.metadata["quicklook"].value and "negative" in mat.metadata["quicklook"].value
    )
    assert read_scene_table(tmp_path / "storage" / "flights" / "flight-neg" / "sar_scenes.parquet")
