"""Captions on what the upstream stages really write: demo archive → sar_scenes → sar_tiles → optical_tiles → captions."""

import dagster as dg
import pyarrow.parquet as pq

from sar_pipeline.archive.demo import write_demo_archive
from sar_pipeline.defs.captions.assets import captions
from sar_pipeline.defs.captions.checks import captions_diversity, captions_length_bounds, captions_not_empty
from sar_pipeline.defs.captions.resources import CaptionerResource
from sar_pipeline.defs.flights.assets import sar_scenes
from sar_pipeline.defs.geo.assets import optical_tiles, sar_tiles
from sar_pipeline.defs.geo.resources import LandCoverResource, OpticalResource
from sar_pipeline.defs.resources import SarArchiveResource, StorageRoot


def test_demo_flight_gets_template_captions(tmp_path):
    archive = write_demo_archive(tmp_path / "demo", flights=1, seed=0)
    flight = sorted(archive.flight_ids)[0]
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("flight", [flight])
    result = dg.materialize(
        [
            sar_scenes,
            sar_tiles,
            optical_tiles,
            captions,
            captions_not_empty,
            captions_length_bounds,
            captions_diversity,
        ],
        partition_key=flight,
        instance=instance,
        resources={
            "storage": StorageRoot(uri=str(tmp_path / "storage")),
            "archive": SarArchiveResource(uri=str(archive.catalog_path)),
            "optical": OpticalResource(uri=str(tmp_path / "demo" / "optical" / "orthophoto.tif")),
            "captioner": CaptionerResource(),
            "landcover": LandCoverResource(),
        },
    )
    assert result.success
    tiles = pq.read_table(
        tmp_path / "storage" / "flights" / flight / "sar_tiles" / "manifest.parquet"
    ).to_pylist()
    rows = pq.read_table(tmp_path / "storage" / "flights" / flight / "captions.parquet").to_pylist()
    with_landcover = sorted(t["tile_id"] for t in tiles if t.get("landcover_path"))
    assert with_landcover and [r["tile_id"] for r in rows] == with_landcover
    assert all(r["text"].startswith("An aerial view, ") and r["captioner_id"] == "template" for r in rows)
    assert all(e.passed for e in result.get_asset_check_evaluations() if e.check_name != "captions_diversity")
