"""The pipeline on products as real archives ship them (issue 8), through Dagster as a user runs it.

The products are written by ``sar_pipeline_tests/products/make_products.py``: a native scene, the same
acquisition geocoded north-up, an 8-bit DN product with a quarter of DN-0 fill, dB with nodata, an
EPSG:4326 scene, a truncated file, a scene smaller than a tile, a WorldCover-like land-cover COG.
The flights go sar_scenes → sar_tiles (land cover from the WorldCover COG) → optical_tiles (no optical
source covers them: every flight has zero optical tiles) → captions (template, from the land cover)
→ training_dataset, whose saturation check must pass on the DN product with the defaults.
"""

from __future__ import annotations

import io
import json
import uuid

import dagster as dg
import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image
from upath import UPath

from sar_pipeline.dataset import dataset_info, load_dataset_table
from sar_pipeline.defs.captions.assets import captions
from sar_pipeline.defs.captions.resources import CaptionerResource
from sar_pipeline.defs.dataset.assets import training_dataset
from sar_pipeline.defs.flights.assets import sar_scenes
from sar_pipeline.defs.geo.assets import optical_tiles, sar_tiles
from sar_pipeline.defs.geo.resources import LandCoverResource, OpticalResource
from sar_pipeline.defs.resources import SarArchiveResource, StorageRoot
from sar_pipeline.diffusion.data import tiles_from_table
from sar_pipeline.geo.manifest import read_manifest
from sar_pipeline.storage import resolve_dir
from sar_pipeline_tests.products import make_products

#: calibrated products (sigma0 as amplitude, intensity or dB) share a dataset; the uncalibrated DN
#: product is its own archive (one grey level must mean one backscatter in a dataset)
CALIBRATED = ("native", "geocoded", "db", "geographic")
FLIGHTS = (*CALIBRATED, "dn")
TILING = {"ground_sample_distance_m": 2.0, "tile_size": 64}


@pytest.fixture(scope="module")
def products(tmp_path_factory):
    return make_products.write_products(tmp_path_factory.mktemp("products"))


def _resources(products, storage, **extra):
    return {
        "storage": StorageRoot(uri=str(storage)),
        "archive": SarArchiveResource(uri=str(products.catalog)),
        "optical": OpticalResource(uri=str(products.root / "no-orthophoto-here.tif")),
        "landcover": LandCoverResource(uri=str(products.worldcover)),
        "captioner": CaptionerResource(),
        **extra,
    }


def _flight_run(
    instance, resources, flight, tiling=TILING, assets=(sar_scenes, sar_tiles, optical_tiles, captions)
):
    instance.add_dynamic_partitions("flight", [flight])
    return dg.materialize(
        list(assets),
        partition_key=flight,
        instance=instance,
        resources=resources,
        run_config={"ops": {"sar_tiles": {"config": tiling}}},
        raise_on_error=False,
    )


def _metadata(result, node):
    (materialization,) = result.asset_materializations_for_node(node)
    return {k: v.value for k, v in materialization.metadata.items()}


def _dataset(instance, resources, config):
    return dg.materialize(
        [sar_scenes, sar_tiles, optical_tiles, captions, training_dataset],
        selection=[training_dataset.key],
        instance=instance,
        resources=resources,
        # 'balanced': few blocks, each under two tiles wide ('hash' would drop most tiles as guard band)
        run_config={
            "ops": {
                "training_dataset": {"config": {"block_size_m": 200.0, "assignment": "balanced", **config}}
            }
        },
        raise_on_error=False,
    )


@pytest.fixture(scope="module")
def pipeline(products, tmp_path_factory):
    """Every product flight through the per-flight stages: the calibrated ones in one deployment
    (instance + storage root), the DN product in another."""
    deployments = {}
    for group, names in (("calibrated", CALIBRATED), ("dn", ("dn",))):
        storage = tmp_path_factory.mktemp(f"storage-{group}")
        instance = dg.DagsterInstance.ephemeral()
        resources = _resources(products, storage)
        runs = {name: _flight_run(instance, resources, f"flight-{name}") for name in names}
        deployments[group] = (instance, resources, storage, runs)
    return deployments


def test_every_real_format_flight_is_tiled_captioned_from_worldcover_without_optical(pipeline):
    runs = {name: r for _, _, _, group in pipeline.values() for name, r in group.items()}
    storages = {name: storage for _, _, storage, group in pipeline.values() for name in group}
    for name, result in runs.items():
        storage = storages[name]
        assert result.success, name
        tiles = _metadata(result, "sar_tiles")
        scene = tiles["scene_summaries"][name]
        assert tiles["tile_count"] > 0 and scene["output_crs"] == "EPSG:32631"
        # a flight none of whose tiles has an optical image: an empty manifest with its columns
        optical = _metadata(result, "optical_tiles")
        assert optical["tile_count"] == 0
        path = resolve_dir(storage / "flights" / f"flight-{name}" / "optical_tiles") / "manifest.parquet"
        assert "tile_id" in pq.read_schema(path).names and read_manifest(path) == []
        assert _metadata(result, "captions")["tile_count"] == tiles["tile_count"]
    scenes = {name: _metadata(runs[name], "sar_tiles")["scene_summaries"][name] for name in FLIGHTS}
    assert (
        scenes["geocoded"]["orientation"] == "heading" and scenes["geocoded"]["raster_rotation_deg"] == 35.0
    )
    assert scenes["dn"]["unit_source"] == "declared" and scenes["dn"]["declared_unit"] == "amplitude (DN)"
    assert scenes["geographic"]["orientation"] == "raster"  # no heading anywhere: said in the warnings
    assert "heading or look side unknown" in _metadata(runs["geographic"], "sar_tiles")["warnings"]
    assert _metadata(runs["geographic"], "sar_scenes")["output_crs"] == "EPSG:32631"


@pytest.mark.parametrize("group", ["calibrated", "dn"])
def test_the_dataset_over_all_flights_has_one_unsaturated_range(pipeline, group):
    instance, resources, storage, runs = pipeline[group]
    result = _dataset(instance, resources, {})
    assert result.success
    (check,) = result.get_asset_check_evaluations()
    assert check.check_name == "training_dataset_saturation" and check.passed, (
        check.metadata["warnings"].value,
        check.metadata["clipped_by_flight"].value,
    )
    info = dataset_info(storage)
    assert sorted(info["flights"]) == sorted(f"flight-{n}" for n in runs)
    table = load_dataset_table(storage)
    rows = table.drop_columns(["optical_image", "landcover_image", "idealised_image"]).to_pylist()
    assert {r["db_min"] for r in rows} == {info["radiometry"]["db_min"]}  # one range for every flight
    # every flight — calibrated sigma0, dB, uncalibrated DN — within range: little clipped at either end
    clipped = check.metadata["clipped_by_flight"].value
    assert all(v["low"] < 0.03 and v["high"] < 0.03 for v in clipped.values()), clipped
    assert all(r["nodata_fraction"] == 0.0 for r in rows)  # nodata wedges are left out of the dataset
    assert table.column("optical_image").null_count == table.num_rows  # no optical image: rows kept
    images = [np.asarray(Image.open(io.BytesIO(im["bytes"]))) for im in table.column("image").to_pylist()]
    assert all(im.dtype == np.uint8 for im in images)
    levels = np.concatenate([im.ravel() for im in images])
    assert (levels == 255).mean() < 0.03 and (levels <= 1).mean() < 0.03  # not saturated

    # 16-bit images decode to the same picture, not clipped white (diffusion.data.decode_tile)
    sixteen = _dataset(instance, resources, {"bit_depth": 16})
    assert sixteen.success
    wide = load_dataset_table(storage)
    assert wide.column("bit_depth").to_pylist()[0] == 16
    eight, _, _ = tiles_from_table(table.slice(0, 4), 64)
    sixteen_bit, _, _ = tiles_from_table(wide.slice(0, 4), 64)
    assert float(sixteen_bit.mean()) < 0.5 and (sixteen_bit - eight).abs().max() < 2.5 / 255 * 2


def test_a_range_that_clips_most_of_the_dn_product_fails_the_blocking_check_naming_it(pipeline):
    instance, resources, _, _ = pipeline["dn"]
    # calibrated-sigma0 numbers on uncalibrated DN (0…48 dB): the old default saturated it at 255
    result = _dataset(instance, resources, {"db_min": -30.0, "db_max": 10.0})
    assert not result.success  # the blocking check stops the run
    (check,) = result.get_asset_check_evaluations()
    assert not check.passed and check.severity == dg.AssetCheckSeverity.ERROR
    assert any("flight-dn" in t["tile_id"] for t in check.metadata["mostly_clipped_tiles"].value)
    assert (
        "flight flight-dn" in check.metadata["warnings"].value
        and "high end" in check.metadata["warnings"].value
    )


def test_a_truncated_geotiff_is_named_with_its_window_in_metadata_and_log(products, tmp_path):
    instance = dg.DagsterInstance.ephemeral()
    result = _flight_run(
        instance,
        _resources(products, tmp_path / "storage"),
        "flight-truncated",
        {"ground_sample_distance_m": 1.0, "tile_size": 32},
        assets=(sar_scenes, sar_tiles),
    )
    assert result.success
    metadata = _metadata(result, "sar_tiles")
    errors = metadata["read_errors"]["truncated"]
    assert errors and all("truncated.tif" in e and "window rows" in e for e in errors)
    assert metadata["tile_count"] > 0 and metadata["dropped_reasons"]["read error"] > 0
    logs = [e.user_message for e in instance.all_logs(result.run_id) if e.level >= 30]
    assert any("truncated.tif" in m and "window rows" in m for m in logs)


def test_a_scene_smaller_than_a_tile_fails_its_flight_saying_what_to_change(products, tmp_path):
    instance = dg.DagsterInstance.ephemeral()
    result = _flight_run(
        instance,
        _resources(products, tmp_path / "storage"),
        "flight-small",
        {"ground_sample_distance_m": 1.0, "tile_size": 512},
        assets=(sar_scenes, sar_tiles),
    )
    assert not result.success
    (failure,) = [e for e in result.all_events if e.is_step_failure]
    message = str(failure.event_specific_data.error)
    assert "scene small" in message and "smaller than one 512-px tile" in message and "tile_size" in message


def test_on_object_storage_tiles_are_republished_whole_and_read_through_the_pointer(products):
    root = f"memory://sar-real-{uuid.uuid4().hex[:8]}/storage"
    instance = dg.DagsterInstance.ephemeral()
    resources = _resources(products, root)
    first = _flight_run(instance, resources, "flight-native")
    assert first.success
    folder = UPath(root) / "flights" / "flight-native" / "sar_tiles"
    v1 = resolve_dir(folder)
    assert v1.name.startswith("sar_tiles@")
    rows = read_manifest(v1 / "manifest.parquet")
    assert all(r["path"].startswith(f"flights/flight-native/{v1.name}/") for r in rows)
    assert all((UPath(root) / r["path"]).exists() for r in rows)
    # re-tiling with another tile size: the pointer moves to a whole new version, no old tile is visible
    second = _flight_run(
        instance, resources, "flight-native", {"ground_sample_distance_m": 2.0, "tile_size": 32}
    )
    assert second.success
    v2 = resolve_dir(folder)
    assert v2 != v1
    names = {p.name for p in v2.iterdir()}
    new_rows = read_manifest(v2 / "manifest.parquet")
    assert names == {"manifest.parquet"} | {r["path"].rsplit("/", 1)[1] for r in new_rows} | {
        r["landcover_path"].rsplit("/", 1)[1] for r in new_rows
    }
    # the captions and the dataset read the new tiles through the pointer
    optical = resolve_dir(UPath(root) / "flights" / "flight-native" / "optical_tiles")
    assert json.loads((optical.parent / "optical_tiles.current").read_text())["folder"] == optical.name
    result = _dataset(instance, resources, {})
    assert result.success
    assert all(
        r["image"]["path"].startswith(f"flights/flight-native/{v2.name}/")
        for r in load_dataset_table(UPath(root)).to_pylist()
    )


def test_a_flight_on_another_radiometric_scale_is_named_by_the_saturation_warning(products, tmp_path):
    """Four calibrated flights (sigma0 ≈ −30…+5 dB) pooled with one uncalibrated DN flight (0…48 dB):
    the pooled range cannot serve both, and the check says which flight is clipped, at which end,
    naming its scenes."""
    instance = dg.DagsterInstance.ephemeral()
    resources = _resources(products, tmp_path / "storage")
    for name in FLIGHTS:
        assert _flight_run(instance, resources, f"flight-{name}").success
    result = _dataset(instance, resources, {})
    assert result.success  # a warning, not a failure: no tile is mostly clipped
    (check,) = result.get_asset_check_evaluations()
    assert not check.passed and check.severity == dg.AssetCheckSeverity.WARN
    warnings = check.metadata["warnings"].value
    assert "flight flight-dn" in warnings and "high end" in warnings and "dn " in warnings
