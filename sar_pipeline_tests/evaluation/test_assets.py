"""The sar_clip and sar_fidelity assets and the promotion check, materialised on a tiny trained world."""

from pathlib import Path

import dagster as dg
import pytest

from sar_pipeline.defs.evaluation.assets import sar_clip
from sar_pipeline.defs.resources import StorageRoot
from sar_pipeline.generation.model import read_latest

CLIP_CONFIG = {"image_size_px": 32, "max_steps": 30, "batch_size": 8, "device": "cpu"}
FIDELITY_CONFIG = {
    "max_tiles": 2,
    "images_per_caption": 2,
    "steps": 2,
    "glcm_distances_px": [1, 2],
    "device": "cpu",
}


def _instance_with_dataset(version: str) -> dg.DagsterInstance:
    """An instance where training_dataset was materialised as ``version`` (what sar_clip reads)."""
    instance = dg.DagsterInstance.ephemeral()
    instance.report_runless_asset_event(
        dg.AssetMaterialization("training_dataset", metadata={"dataset_version": version})
    )
    return instance


def _materialise(assets, storage: Path, instance, config: dict):
    return dg.materialize(
        assets,
        resources={"storage": StorageRoot(uri=str(storage))},
        run_config={"ops": config},
        instance=instance,
        raise_on_error=False,
    )


@pytest.fixture(scope="module")
def clip_materialised(eval_world):
    instance = _instance_with_dataset("e1")
    result = _materialise([sar_clip], eval_world["storage"], instance, {"sar_clip": {"config": CLIP_CONFIG}})
    assert result.success
    return instance, result


def test_sar_clip_is_trained_saved_and_scored_against_chance(eval_world, clip_materialised):
    _, result = clip_materialised
    (materialization,) = result.asset_materializations_for_node("sar_clip")
    meta = {k: v.value for k, v in materialization.metadata.items()}
    assert meta["dataset_version"] == "e1" and meta["train_pairs"] == 16
    assert meta["evaluation_split"] == "test" and meta["evaluation_tiles"] == 2
    for direction in ("text_to_image", "image_to_text"):
        for k in (1, 5):
            assert 0 <= meta[f"{direction}_r{k}"] <= 1 and 0 < meta[f"chance_{direction}_r{k}"] <= 1
    assert "R@1" in meta["retrieval"] and "loss_curve" in materialization.metadata
    folder = Path(meta["sar_clip"])
    assert folder.parent == eval_world["storage"] / "models" / "sar_clip"
    assert (folder / "model.safetensors").is_file() and (folder / "sar_clip.json").is_file()
    assert not list(folder.parent.glob(".*"))  # nothing half-written left beside it
    assert read_latest(eval_world["storage"], "sar_clip")["sar_clip"] == str(folder)
