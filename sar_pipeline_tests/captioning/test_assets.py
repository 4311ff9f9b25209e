"""The captions asset and its checks for one flight, and the BLIP fine-tune + metrics assets (Pipes)."""

import gc
import io

import dagster as dg
import geopandas as gpd
import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image
from shapely.geometry import box
from upath import UPath

from sar_pipeline.archive.landcover import FIELD, FOREST, URBAN, WATER
from sar_pipeline.captioning.base import CaptionInput
from sar_pipeline.captioning.blip import BlipCaptioner
from sar_pipeline.captioning.datasets import holdout_split, load_ucm_pairs
from sar_pipeline.captioning.tiles import caption_flight_tiles
from sar_pipeline.defs.captions.assets import blip_remote_sensing, caption_metrics, captions
from sar_pipeline.defs.captions.checks import captions_diversity, captions_length_bounds, captions_not_empty
from sar_pipeline.defs.captions.resources import CaptionerResource
from sar_pipeline.defs.resources import StorageRoot
from sar_pipeline.errors import ConfigError
from sar_pipeline.geo.manifest import read_manifest

FLIGHT = "F001"


def _png(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    path.write_bytes(buf.getvalue())


def _landcover(kind: int) -> np.ndarray:
    lc = np.full((32, 32), FIELD, np.uint8)
    if kind == 0:
        lc[:, 14:17] = WATER
        lc[:6, :10] = URBAN
    elif kind == 1:
        lc[:, 16:] = FOREST
    elif kind == 2:
        lc[10:20, 10:20] = WATER
    return lc


def write_flight(root, blank_tile: str | None = None, n_tiles: int = 4):
    """Tile manifests (GeoParquet, as the geo stage writes them) with SAR, land-cover and optical PNGs."""
    rng = np.random.default_rng(3)
    sar_rows, optical_rows = [], []
    base = f"flights/{FLIGHT}"
    for i in range(n_tiles):
        tid = f"{FLIGHT}_S1_r0c{i}"
        _png(root / base / "sar_tiles" / f"{tid}.png", rng.integers(0, 255, (32, 32), dtype=np.uint8))
        lc_path = None
        if i < 3:
            lc_path = f"{base}/sar_tiles/{tid}_landcover.png"
            _png(root / lc_path, _landcover(i))
        optical = rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)
        if tid == blank_tile:
            optical[:] = 128
        _png(root / base / "optical_tiles" / f"{tid}.png", optical)
        sar_rows.append(
            {
                "tile_id": tid,
                "flight_id": FLIGHT,
                "scene_id": "S1",
                "path": f"{base}/sar_tiles/{tid}.png",
                "landcover_path": lc_path,
                "frequency_band": "X",
                "polarizations": ["HH"],
                "incidence_angle_deg": 45.0,
                "ground_sample_distance_m": 1.0,
                "heading_deg": 12.0,
                "geometry": box(2.0 + 0.001 * i, 48.0, 2.001 + 0.001 * i, 48.001),
            }
        )
        optical_rows.append(
            {
                "tile_id": tid,
                "path": f"{base}/optical_tiles/{tid}.png",
                "coverage_fraction": 1.0,
                "geometry": box(2.0 + 0.001 * i, 48.0, 2.001 + 0.001 * i, 48.001),
            }
        )
    for name, rows in (("sar_tiles", sar_rows), ("optical_tiles", optical_rows)):
        gpd.GeoDataFrame(rows, geometry="geometry", crs="EPSG:4326").to_parquet(
            root / base / name / "manifest.parquet"
        )
    return [r["tile_id"] for r in sar_rows]


def _materialize(root, captioner: CaptionerResource):
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("flight", [FLIGHT])
    return dg.materialize(
        [captions, captions_not_empty, captions_length_bounds, captions_diversity],
        partition_key=FLIGHT,
        instance=instance,
        resources={"storage": StorageRoot(uri=str(root)), "captioner": captioner},
    )


def test_captions_asset_with_template_captioner(tmp_path):
    tile_ids = write_flight(tmp_path)
    result = _materialize(tmp_path, CaptionerResource())
    assert result.success
    table = pq.read_table(tmp_path / "flights" / FLIGHT / "captions.parquet").to_pylist()
    assert [r["tile_id"] for r in table] == tile_ids[:3]  # the 4th tile has no land cover: skipped
    first = table[0]
    assert first["caption"] == "a river crossing wide farmland with a small village"
    # acquisition words are the dataset's choice (include_metadata_text), not the captions'
    assert first["text"] == "An aerial view, a river crossing wide farmland with a small village"
    assert {r["captioner_id"] for r in table} == {"template"} and all(r["score"] is None for r in table)
    (mat,) = result.asset_materializations_for_node("captions")
    assert mat.metadata["skipped_tiles"].value == 1
    assert tile_ids[3] in mat.metadata["skip_reasons"].value
    checks = {e.check_name: e.passed for e in result.get_asset_check_evaluations()}
    assert checks == {"captions_not_empty": True, "captions_length_bounds": True, "captions_diversity": True}


def test_captions_asset_with_blip_records_a_blank_optical_tile(tmp_path, tiny_blip_dir):
    tile_ids = write_flight(tmp_path, blank_tile=f"{FLIGHT}_S1_r0c1")
    captioner = CaptionerResource(
        kind="blip", model_path=str(tiny_blip_dir), num_beams=1, max_new_tokens=6, device="cpu"
    )
    result = _materialize(tmp_path, captioner)
    assert result.success
    table = pq.read_table(tmp_path / "flights" / FLIGHT / "captions.parquet").to_pylist()
    assert [r["tile_id"] for r in table] == [t for t in tile_ids if t != f"{FLIGHT}_S1_r0c1"]
    assert all(
        r["captioner_id"] == "blip:tiny-blip" and r["text"].startswith("An aerial view") for r in table
    )
    (mat,) = result.asset_materializations_for_node("captions")
    reasons = mat.metadata["skip_reasons"].value
    assert f"{FLIGHT}_S1_r0c1" in reasons and "blank" in reasons


class _CountingBlip(BlipCaptioner):
    """The tiny BLIP, noting at each batch how many decoded optical tiles are alive in the process."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.alive_per_batch: list[int] = []

    def caption_with_scores(self, inputs):
        gc.collect()
        alive = sum(1 for o in gc.get_objects() if isinstance(o, CaptionInput) and o.optical_rgb is not None)
        self.alive_per_batch.append(alive)
        return super().caption_with_scores(inputs)


def test_blip_captions_a_flight_with_a_bounded_number_of_decoded_tiles(tmp_path, tiny_blip_dir):
    """A flight's optical tiles are decoded a batch at a time: however many tiles a flight holds,
    at most one batch (plus the tile last looked at) is in memory while BLIP runs."""
    tile_ids = write_flight(tmp_path, n_tiles=24)
    captioner = _CountingBlip(tiny_blip_dir, device="cpu", num_beams=1, max_new_tokens=2, progress=False)
    storage = tmp_path
    sar = read_manifest(storage / "flights" / FLIGHT / "sar_tiles" / "manifest.parquet")
    optical = read_manifest(storage / "flights" / FLIGHT / "optical_tiles" / "manifest.parquet")
    run = caption_flight_tiles(UPath(storage), sar, optical, captioner, batch_size=4)
    assert [r["tile_id"] for r in run.rows] == sorted(tile_ids) and not run.skipped
    assert len(captioner.alive_per_batch) == 6
    assert max(captioner.alive_per_batch) <= 4 + 1, captioner.alive_per_batch


def test_blip_finetune_through_pipes_then_metrics(tmp_path, tiny_blip_dir, ucm_folder):
    datasets = [{"kind": "ucm_pairs", "path": str(ucm_folder), "holdout_fraction": 0.2}]
    result = dg.materialize(
        [blip_remote_sensing, caption_metrics],
        resources={"storage": StorageRoot(uri=str(tmp_path)), "blip_trainer": dg.PipesSubprocessClient()},
        run_config=dg.RunConfig(
            {
                "blip_remote_sensing": {
                    "config": {
                        "base_model_path": str(tiny_blip_dir),
                        "datasets": datasets,
                        "max_steps": 3,
                        "batch_size": 4,
                        "learning_rate": 1e-3,
                        "warmup_steps": 1,
                        "num_workers": 0,
                    }
                },
                # no datasets: scored on the held-out split of the ones it was fine-tuned on
                "caption_metrics": {"config": {"num_beams": 1}},
            }
        ),
    )
    assert result.success
    (trained,) = result.asset_materializations_for_node("blip_remote_sensing")
    checkpoint = trained.metadata["checkpoint_path"].value
    assert checkpoint == str(tmp_path / "models" / "blip_remote_sensing")
    assert trained.metadata["steps"].value == 3
    assert (tmp_path / "models" / "blip_remote_sensing" / "model.safetensors").is_file()
    (metrics,) = result.asset_materializations_for_node("caption_metrics")
    table = metrics.metadata["table"].value
    assert "| Paper: BLIP-RSICD+UCM (RSICD test) | 0.8029 | 0.6941 |" in table
    assert 0.0 <= metrics.metadata["BLEU_1"].value <= 1.0
    held_out = [i for i in holdout_split(load_ucm_pairs(ucm_folder), 0.2) if i.split == "test"]
    assert metrics.metadata["images"].value == len(held_out) > 0
    assert "ucm 'test' split" in table
    assert (tmp_path / "models" / "blip_remote_sensing_metrics.json").is_file()


def test_blip_finetune_without_datasets_names_the_setting(tmp_path, tiny_blip_dir):
    with pytest.raises(ConfigError, match="blip_remote_sensing.datasets: no caption dataset configured"):
        dg.materialize(
            [blip_remote_sensing],
            resources={"storage": StorageRoot(uri=str(tmp_path)), "blip_trainer": dg.PipesSubprocessClient()},
            run_config=dg.RunConfig(
                {"blip_remote_sensing": {"config": {"base_model_path": str(tiny_blip_dir)}}}
            ),
        )
    assert not (tmp_path / "models" / "blip_remote_sensing").exists()


@pytest.mark.parametrize("kind", ["template", "blip"])
def test_missing_manifest_fails_with_the_path(tmp_path, tiny_blip_dir, kind):
    captioner = CaptionerResource(kind=kind, model_path=str(tiny_blip_dir) if kind == "blip" else "")
    with pytest.raises(Exception, match="sar_tiles/manifest.parquet.*manifest missing"):
        _materialize(tmp_path, captioner)
