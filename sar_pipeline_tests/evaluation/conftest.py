"""A tiny trained world for the evaluation assets, built once per session: the generation tests' land-cover
dataset (dB mapping recorded) → tiny base → latents → an sd_model run of a few real steps with two checkpoints."""

import json
from pathlib import Path

import pytest
import torch

from sar_pipeline.diffusion.config import TrainSettings
from sar_pipeline.diffusion.latent_cache import build_latent_cache
from sar_pipeline.diffusion.models import load_base_model, write_tiny_base
from sar_pipeline.diffusion.train import train
from sar_pipeline_tests.generation.world import write_world

torch.set_num_threads(1)


@pytest.fixture(scope="session")
def eval_world(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("eval_world")
    storage = root / "storage"
    write_world(storage, "e1", n_train=16, size=64)
    base = write_tiny_base(root / "tiny-base", images=None, vae_steps=0)
    build_latent_cache(storage, "e1", load_base_model(base).vae, 64)
    run_dir = storage / "models" / "sd" / "run1"
    cfg = TrainSettings.from_dict(
        {
            "preset": "tiny",
            "base_model_path": str(base),
            "storage_root": str(storage),
            "dataset_version": "e1",
            "output_dir": str(run_dir),
            "resolution": 64,
            "train_batch_size": 4,
            "max_train_steps": 2,
            "checkpoint_every_steps": 1,
            "validation_prompts": [],
            "log_every_steps": 1,
        }
    )
    summary = train(cfg)
    return {
        "root": root,
        "storage": storage,
        "base": base,
        "run_dir": run_dir,
        "pipeline": Path(summary["pipeline"]),
    }


def run_against_itself(world: dict, name: str) -> Path:
    """A copy of the world's run keeping its last checkpoint only, whose recorded base model is that
    checkpoint itself: a model that cannot beat its base."""
    import shutil

    run_dir = world["storage"] / "models" / "sd" / name
    shutil.copytree(world["run_dir"], run_dir)
    checkpoints = sorted((run_dir / "checkpoints").iterdir())
    for old in checkpoints[:-1]:
        shutil.rmtree(old)
    pipeline = checkpoints[-1] / "pipeline"
    config = json.loads((run_dir / "train_config.json").read_text())
    config.update(base_model_path=str(pipeline), output_dir=str(run_dir))
    (run_dir / "train_config.json").write_text(json.dumps(config))
    return pipeline
