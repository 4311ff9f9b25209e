"""The dataset on what the upstream stages really write: demo archive → scenes → tiles → optical →
captions → training_dataset, read back by pyarrow, geopandas and Hugging Face ``datasets``."""

import io

import dagster as dg
import geopandas
import pyarrow.parquet as pq
import pytest
from PIL import Image

from sar_pipeline.archive.demo import write_demo_archive
from sar_pipeline.dataset import dataset_info, huggingface_data_files, load_dataset_table
from sar_pipeline.defs.captions.assets import captions
from sar_pipeline.defs.captions.resources import CaptionerResource
from sar_pipeline.defs.dataset.assets import training_dataset
from sar_pipeline.defs.dataset.checks import (
    training_dataset_no_spatial_leakage,
    training_dataset_rows_complete,
)
from sar_pipeline.defs.flights.assets import sar_scenes
from sar_pipeline.defs.geo.assets import optical_tiles, sar_tiles
from sar_pipeline.defs.geo.resources import LandCoverResource, OpticalResource
from sar_pipeline.defs.resources import SarArchiveResource, StorageRoot


@pytest.mark.slow
def test_demo_flight_to_dataset(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    archive = write_demo_archive(tmp_path / "demo", flights=1, seed=0)
    flight = sorted(archive.flight_ids)[0]
    storage = tmp_path / "storage"
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("flight", [flight])
    resources = {
        "storage": StorageRoot(uri=str(storage)),
        "archive": SarArchiveResource(uri=str(archive.catalog_path)),
        "optical": OpticalResource(uri=str(tmp_path / "demo" / "optical" / "orthophoto.tif")),
        "captioner": CaptionerResource(),
        "landcover": LandCoverResource(),
    }
    upstream = [sar_scenes, sar_tiles, optical_tiles, captions]
    assert dg.materialize(upstream, partition_key=flight, instance=instance, resources=resources).success
    result = dg.materialize(
        [*upstream, training_dataset, training_dataset_no_spatial_leakage, training_dataset_rows_complete],
        selection=[training_dataset.key],
        instance=instance,
        resources=resources,
        run_config={"ops": {"training_dataset": {"config": {"block_size_m": 1000.0}}}},
    )
    assert result.success
    assert all(e.passed for e in result.get_asset_check_evaluations())

    captioned = pq.read_table(storage / "flights" / flight / "captions.parquet").column("tile_id").to_pylist()
    info = dataset_info(storage)
    # every captioned tile is in a split, dropped as a split guard, or left out for its nodata
    assert sum(info["row_counts"].values()) + info["dropped_guard_tiles"] + len(
        info["left_out_tiles"]
    ) == len(captioned)
    table = load_dataset_table(storage)
    row = table.slice(0, 1).to_pylist()[0]
    assert row["flight_id"] == flight and row["tile_id"] in captioned
    assert row["ground_sample_distance_m"] > 0 and row["frequency_band"] == "X"
    assert row["value_unit"] == "db" and row["db_min"] < row["db_max"] and row["bit_depth"] == 8
    assert row["acquisition_datetime"] is not None and row["crs"] and len(row["transform"]) == 6
    assert row["optical_image"] is not None and row["landcover_image"] is not None
    assert Image.open(io.BytesIO(row["image"]["bytes"])).size == (512, 512)

    files = huggingface_data_files(storage)
    split = next(iter(files))
    frame = geopandas.read_parquet(files[split])
    assert len(frame) == info["row_counts"][split] and frame.crs is not None
    import datasets

    ds = datasets.load_dataset("parquet", data_files=files, cache_dir=str(tmp_path / "hf"), split=split)
    assert isinstance(ds[0]["image"], Image.Image) and ds[0]["text"].startswith("An aerial view")
