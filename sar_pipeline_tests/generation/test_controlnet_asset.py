"""The controlnet_model asset: trained out of process through Pipes, checkpoints observed with adherence."""

import json
import shutil
from pathlib import Path

import dagster as dg

from sar_pipeline.defs.resources import StorageRoot
from sar_pipeline.defs.training.assets import controlnet_model
from sar_pipeline.defs.training.resources import DiffusionBase, SdTrainerLauncher
from sar_pipeline.generation.model import read_latest, write_promoted


def _materialise(storage: Path, config: dict) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        [controlnet_model],
        resources={
            "storage": StorageRoot(uri=str(storage)),
            "diffusion_base": DiffusionBase(preset="tiny"),
            "sd_trainer": SdTrainerLauncher(env={"HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}),
        },
        run_config={"ops": {"controlnet_model": {"config": config}}},
        instance=dg.DagsterInstance.ephemeral(),
    )


def test_controlnet_model_materialises_with_observed_checkpoints(gen_world):
    storage = gen_world["storage"]
    config = {"max_train_steps": 2, "checkpoint_every_steps": 1, "validation_tiles": 1, "validation_steps": 2}
    result = _materialise(storage, config)
    assert result.success
    observations = [
        e.event_specific_data.asset_observation
        for e in result.all_events
        if e.event_type_value == "ASSET_OBSERVATION"
    ]
    assert [o.metadata["step"].value for o in observations] == [1, 2]
    for o in observations:
        assert 0 <= o.metadata["adherence"].value <= 1 and "sample_grid" in o.metadata
    (materialization,) = result.asset_materializations_for_node("controlnet_model")
    meta = materialization.metadata
    assert meta["steps"].value == 2 and "legend" in meta and "adherence_by_step" in meta
    assert meta["sd_model"].value == str(gen_world["pipeline"])
    assert meta["sd_model_source"].value == "latest"  # nothing promoted: the latest sd_model
    # generation's default ControlNet is now this one
    latest = read_latest(storage, "controlnet_model")
    assert latest["controlnet"] == meta["controlnet"].value
    run_dir = Path(latest["controlnet"]).parents[2]  # <run>/checkpoints/checkpoint-N/controlnet
    assert run_dir.parent == storage / "models" / "controlnet"
    assert json.loads((run_dir / "final.json").read_text())["steps"] == 2


def test_controlnet_trains_on_the_model_generation_uses_the_promoted_one(gen_world, tmp_path):
    """Sketch generation attaches the ControlNet to the promoted sd_model by default: the ControlNet
    is trained on that model's UNet, not on the latest sd_model's."""
    storage = tmp_path / "storage"
    shutil.copytree(gen_world["storage"], storage, ignore=shutil.ignore_patterns("controlnet"))
    latest = json.loads((storage / "models" / "sd" / "latest.json").read_text())["checkpoint"]
    # the latest sd_model: gen_world's run, relative to the storage root (so: in this copy of it)
    assert latest == gen_world["pipeline"].relative_to(gen_world["storage"]).as_posix()
    run = gen_world["pipeline"].parents[2]  # <run>/checkpoints/checkpoint-N/pipeline
    promoted_run = storage / "models" / "sd" / "promoted-run"
    shutil.copytree(run, promoted_run)
    promoted = promoted_run / gen_world["pipeline"].relative_to(run)
    write_promoted(storage, {"checkpoint": str(promoted)})
    result = _materialise(
        storage,
        {"max_train_steps": 1, "checkpoint_every_steps": 1, "validation_tiles": 1, "validation_steps": 1},
    )
    assert result.success
    (materialization,) = result.asset_materializations_for_node("controlnet_model")
    meta = materialization.metadata
    assert meta["sd_model"].value == str(promoted) and meta["sd_model_source"].value == "promoted"
    run_dir = Path(meta["controlnet"].value).parents[2]
    assert run_dir.name.startswith("promoted-run-")
    # the run's config names the model relative to the storage root: valid on any machine
    config = json.loads((run_dir / "controlnet_config.json").read_text())
    assert config["sd_model_path"] == promoted.relative_to(storage).as_posix()
    assert read_latest(storage, "controlnet_model")["sd_model_source"] == "promoted"
