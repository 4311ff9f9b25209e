"""The Dagster side: latent_cache and sd_model (training out of process through Pipes)."""

import sys
from pathlib import Path

import dagster as dg
import pytest

from sar_pipeline.defs.resources import StorageRoot
from sar_pipeline.defs.training.assets import latent_cache, sd_model
from sar_pipeline.defs.training.resources import DiffusionBase, SdTrainerLauncher
from sar_pipeline_tests.diffusion.synthetic import write_synthetic_dataset


def _materialise(assets, storage, run_config, tiny_vae_steps=0, dataset_version="v1"):
    """Materialise ``assets`` on the tiny preset with one training thread; the result, errors kept.

    The instance holds a materialisation of training_dataset of ``dataset_version`` (what the
    training stages are pinned to), as the training_dataset asset records it."""
    instance = dg.DagsterInstance.ephemeral()
    instance.report_runless_asset_event(
        dg.AssetMaterialization("training_dataset", metadata={"dataset_version": dataset_version})
    )
    return dg.materialize(
        assets,
        resources={
            "storage": StorageRoot(uri=str(storage)),
            "diffusion_base": DiffusionBase(preset="tiny", tiny_vae_steps=tiny_vae_steps),
            "sd_trainer": SdTrainerLauncher(env={"HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}),
        },
        run_config=run_config,
        instance=instance,
        raise_on_error=False,
    )


def test_asset_definitions():
    spec = sd_model.specs_by_key[dg.AssetKey("sd_model")]
    assert sd_model.op.pool == "gpu" and latent_cache.op.pool == "gpu"
    assert set(spec.kinds) == {"pytorch", "diffusers"} and spec.group_name == "training"
    assert {d.asset_key for d in spec.deps} == {dg.AssetKey("latent_cache"), dg.AssetKey("training_dataset")}
    cache_spec = latent_cache.specs_by_key[dg.AssetKey("latent_cache")]
    assert {d.asset_key for d in cache_spec.deps} == {dg.AssetKey("training_dataset")}


def test_launch_commands():
    one, env_one = SdTrainerLauncher().command("run.json")
    assert one == [sys.executable, "-m", "sar_pipeline.diffusion.train", "--config", "run.json"]
    assert env_one == {"HF_HUB_OFFLINE": "1"}
    gpus, _ = SdTrainerLauncher(num_processes=4).command("run.json")
    assert gpus[:6] == [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--multi_gpu",
        "--num_processes",
        "4",
    ]
    cpus, env = SdTrainerLauncher(num_processes=2, cpu=True).command("run.json")
    assert cpus[:3] == [sys.executable, "-m", "torch.distributed.run"]
    assert env == {"HF_HUB_OFFLINE": "1", "ACCELERATE_USE_CPU": "1"}


@pytest.mark.parametrize(
    ("run_config", "named"),
    [
        ({"env": {"LD_PRELOAD": "/tmp/evil.so"}}, "env.LD_PRELOAD"),
        ({"env": {"PYTHONPATH": "/tmp/evil"}}, "env.PYTHONPATH"),
        ({"env": {"NCCL_NET_PLUGIN": "/tmp/evil.so"}}, "env.NCCL_NET_PLUGIN"),
        ({"num_processes": 2, "accelerate_args": ["--no_python"]}, "--no_python"),
        ({"num_processes": 2, "accelerate_args": ["--config_file=/tmp/evil.yaml"]}, "--config_file"),
        ({"num_processes": 2, "accelerate_args": ["/tmp/evil.py"]}, "/tmp/evil.py"),
    ],
)
def test_run_config_cannot_make_the_trainer_run_other_code(tmp_path, run_config, named):
    result = _materialise(
        [sd_model], tmp_path / "storage", {"resources": {"sd_trainer": {"config": run_config}}}
    )
    assert not result.success
    assert not (tmp_path / "storage" / "models").exists()  # nothing launched, nothing written
    failure = next(e for e in result.all_events if e.event_type_value == "RESOURCE_INIT_FAILURE")
    assert named in str(failure.event_specific_data.error)


def test_run_config_cannot_choose_the_python(tmp_path):
    with pytest.raises(dg.DagsterInvalidConfigError, match="python"):
        dg.materialize(
            [sd_model],
            resources={
                "storage": StorageRoot(uri=str(tmp_path / "storage")),
                "diffusion_base": DiffusionBase(preset="tiny"),
                "sd_trainer": SdTrainerLauncher(),
            },
            run_config={"resources": {"sd_trainer": {"config": {"python": "/bin/sh"}}}},
            instance=dg.DagsterInstance.ephemeral(),
        )


def test_allowed_launcher_settings_pass_through():
    launcher = SdTrainerLauncher(
        num_processes=2,
        accelerate_args=["--main_process_port", "29501", "--same_network", "--max-restarts=1"],
        env={"HF_HUB_OFFLINE": "1", "CUDA_VISIBLE_DEVICES": "0,1", "OMP_NUM_THREADS": "4"},
    )
    command, env = launcher.command("run.json")
    assert command[6:10] == ["--main_process_port", "29501", "--same_network", "--max-restarts=1"]
    assert env == {"HF_HUB_OFFLINE": "1", "CUDA_VISIBLE_DEVICES": "0,1", "OMP_NUM_THREADS": "4"}


def test_materialise_latent_cache_and_sd_model(tmp_path):
    storage = tmp_path / "storage"
    write_synthetic_dataset(storage, "v1", n_per_class=4, size=64)
    result = _materialise(
        [latent_cache, sd_model],
        storage,
        {
            "ops": {
                "sd_model": {
                    "config": {
                        "max_train_steps": 4,
                        "checkpoint_every_steps": 2,
                        "train_batch_size": 4,
                        "validation_prompts": ["An aerial view of a river"],
                        "validation_steps": 2,
                    }
                }
            }
        },
        tiny_vae_steps=5,
    )
    assert result.success
    cache_meta = result.asset_materializations_for_node("latent_cache")[0].metadata
    assert cache_meta["dataset_version"].value == "v1" and cache_meta["train_tiles"].value == 8
    assert cache_meta["validation_tiles"].value == 4  # encoded for the held-out loss
    observations = [e.event_specific_data.asset_observation for e in result.get_asset_observation_events()]
    assert [o.metadata["step"].value for o in observations] == [2, 4]
    first = observations[0].metadata
    assert first["learning_rates"].value == {"unet": 1e-3, "text_encoder": 1e-4}
    # the held-out loss comes with each checkpoint observation
    assert [o.metadata["validation_loss"].value > 0 for o in observations] == [True, True]
    assert Path(first["checkpoint"].value, "model_index.json").is_file()
    assert first["sample_grid"].value.startswith("![validation prompts](data:image/")
    (brightness,) = first["validation_mean_brightness"].value.values()
    assert 0.0 <= brightness <= 1.0
    meta = result.asset_materializations_for_node("sd_model")[0].metadata
    assert meta["dataset_version"].value == "v1" and meta["steps"].value == 4
    assert (
        Path(meta["checkpoint"].value).name == "pipeline"
        and "checkpoint-00000004" in meta["checkpoint"].value
    )
    assert meta["hyperparameters"].value["unet_learning_rate"] == 1e-3
    assert meta["loss_curve"].value.startswith("![loss curve](data:image/")
    assert meta["validation_loss"].value == observations[-1].metadata["validation_loss"].value
    assert list(meta["validation_mean_brightness"].value) == ["An aerial view of a river"]
    assert meta["images_per_second"].value > 0


def test_failed_training_fails_the_asset(tmp_path):
    storage = tmp_path / "storage"
    write_synthetic_dataset(storage, "v1", n_per_class=2, size=64)
    result = _materialise(
        [latent_cache, sd_model], storage, {"ops": {"sd_model": {"config": {"train_batch_size": 64}}}}
    )
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    assert "training process failed" in str(failure.event_specific_data.error)


def test_training_stages_use_the_dataset_version_of_the_upstream_materialisation(tmp_path):
    """current.json may already name a newer dataset (a dataset run finishing meanwhile): the latent
    cache is of the version training_dataset last materialised, the model of the latent cache's."""
    import json

    from sar_pipeline.defs.training.assets import upstream_dataset_version
    from sar_pipeline.errors import SarPipelineError

    instance = dg.DagsterInstance.ephemeral()
    context = dg.build_asset_context(instance=instance)
    with pytest.raises(SarPipelineError, match="materialise training_dataset first"):
        upstream_dataset_version(context, "training_dataset", str(tmp_path))
    instance.report_runless_asset_event(
        dg.AssetMaterialization("training_dataset", metadata={"dataset_version": "aaaa1111"})
    )
    (tmp_path / "dataset").mkdir()
    (tmp_path / "dataset" / "current.json").write_text(json.dumps({"version": "bbbb2222"}))
    assert upstream_dataset_version(context, "training_dataset", str(tmp_path)) == "aaaa1111"
    instance.report_runless_asset_event(
        dg.AssetMaterialization("latent_cache", metadata={"dataset_version": "aaaa1111"})
    )
    instance.report_runless_asset_event(
        dg.AssetMaterialization("training_dataset", metadata={"dataset_version": "cccc3333"})
    )
    assert upstream_dataset_version(context, "latent_cache", str(tmp_path)) == "aaaa1111"


def test_a_dataset_version_without_train_tiles_fails_the_latent_cache_naming_the_settings(tmp_path):
    # what a small dataset can come to with few blocks: every tile in validation or test
    from sar_pipeline.dataset.write import TrainingDatasetSettings, build_dataset
    from sar_pipeline_tests.dataset.fixtures import make_flight

    storage = tmp_path / "storage"
    make_flight(storage, "flight-a", rows=2, cols=2)
    no_train = TrainingDatasetSettings(train_fraction=0.0, validation_fraction=0.5, test_fraction=0.5)
    version = build_dataset(storage, ["flight-a"], no_train).version
    result = _materialise([latent_cache], storage, {}, dataset_version=version)
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    message = str(failure.event_specific_data.error)
    assert f"dataset version {version}" in message and "train split is empty" in message
    assert "block_size_m" in message and "assignment" in message
    assert not (storage / "latents").exists()  # nothing encoded, no base model trained
