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
from dagster._serdes import serialize_value
from PIL import Image
from upath import UPath

from sar_pipeline.archive.demo import write_demo_archive
from sar_pipeline.archive.simulate import SMALL_DEMO_SETTINGS
from sar_pipeline.archive.stac import StacSarArchive
from sar_pipeline.cli import register_flights
from sar_pipeline.defs.flights.assets import sar_scenes
from sar_pipeline.defs.flights.checks import sar_scenes_georeferencing, sar_scenes_metadata_complete
from sar_pipeline.defs.flights.sensors import MAX_RUNS_PER_TICK, new_flights
from sar_pipeline.defs.resources import SarArchiveResource, StorageRoot
from sar_pipeline.geo.scene_table import read_scene_table
from sar_pipeline_tests.archive.conftest import ROTATED
from sar_pipeline_tests.plugins import register_archive_plugin


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
    # the cursor holds the newest updated marker: the next tick asks only for flights updated since
    newest = max(f.updated for f in StacSarArchive(archive / "catalog.json").list_flights())
    assert json.loads(third.cursor)["updated"] == newest > json.loads(second.cursor)["updated"]

    # a tick without cursor (e.g. sensor reset) still does not re-request registered flights
    instance.add_dynamic_partitions("flight", [new_flight])
    assert not _sensor(instance, archive / "catalog.json").run_requests


class RecordingArchive(StacSarArchive):
    """The STAC archive as a plug-in that notes the ``since`` of each listing (an API archive, SETHI or a
    STAC API, answers it server-side: only the new flights cross the network)."""

    calls: list = []

    def list_flights(self, since=None, on_error=None):
        RecordingArchive.calls.append(since)
        return super().list_flights(since=since, on_error=on_error)


def test_sensor_asks_the_archive_only_for_flights_updated_since_its_cursor(
    demo_archive, monkeypatch, tmp_path
):
    register_archive_plugin(monkeypatch, tmp_path / "site", "recording", f"{__name__}:RecordingArchive")
    resource = SarArchiveResource(uri=str(demo_archive.catalog_path), archive_class="recording")
    instance = dg.DagsterInstance.ephemeral()

    def tick(cursor=None):
        context = dg.build_sensor_context(instance=instance, cursor=cursor, resources={"archive": resource})
        return new_flights(context)

    RecordingArchive.calls.clear()
    first = tick()
    instance.add_dynamic_partitions("flight", list(first.dynamic_partitions_requests[0].partition_keys))
    second = tick(first.cursor)
    assert not second.run_requests
    newest = max(f.updated for f in StacSarArchive(demo_archive.catalog_path).list_flights())
    assert RecordingArchive.calls == [None, newest]  # a whole listing first, then only what is newer
    # once a day the archive is listed whole: a flight imported with an older marker is still found
    stale = json.loads(second.cursor)
    stale["full_listing"] = "2000-01-01T00:00:00.000000Z"
    tick(json.dumps(stale))
    assert RecordingArchive.calls[-1] is None


def test_many_new_flights_make_one_backfill(tmp_path):
    """More new flights than MAX_RUNS_PER_TICK in one tick: their partitions and ONE backfill request,
    which the sensor daemon's own submission code turns into a backfill of the per-flight stages."""
    from dagster._daemon.sensor import _submit_backfill_request

    from sar_pipeline.definitions import defs

    demo = write_demo_archive(
        tmp_path / "archive", flights=MAX_RUNS_PER_TICK + 2, seed=5, settings=SMALL_DEMO_SETTINGS
    )
    instance = dg.DagsterInstance.ephemeral()
    context = dg.build_sensor_context(
        instance=instance,
        definitions=defs(),
        resources={"archive": SarArchiveResource(uri=str(demo.catalog_path))},
    )
    result = new_flights(context)
    (add,) = result.dynamic_partitions_requests
    assert sorted(add.partition_keys) == sorted(demo.flight_ids)
    (request,) = result.run_requests
    assert request.requires_backfill_daemon()
    instance.add_dynamic_partitions("flight", list(add.partition_keys))
    _submit_backfill_request("bf-test", request, instance)
    (backfill,) = instance.get_backfills()
    subset = backfill.asset_backfill_data.target_subset
    stages = {"sar_scenes", "sar_tiles", "optical_tiles", "captions"}
    assert {k.to_user_string() for k in subset.asset_keys} == stages
    assert {p.partition_key for p in subset.iterate_asset_partitions()} == set(demo.flight_ids)
    assert len(list(subset.iterate_asset_partitions())) == len(stages) * len(demo.flight_ids)
    # the next tick finds them registered: nothing requested twice
    assert not _sensor(instance, demo.catalog_path, cursor=result.cursor).run_requests


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
    # the event log keeps a thumbnail and the path of the quick-look, not the picture itself
    quicklook_file = tmp_path / "storage" / "flights" / flight / "sar_scenes_quicklook.png"
    assert f"full size: `{quicklook_file}`" in mat.metadata["quicklook"].value
    event = instance.get_latest_materialization_event(dg.AssetKey("sar_scenes"))
    assert len(serialize_value(event)) < 30_000 < quicklook_file.stat().st_size
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
