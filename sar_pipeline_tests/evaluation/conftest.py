"""A tiny trained world for the evaluation assets, built once per session: the generation tests' land-cover
dataset (dB mapping recorded) → tiny base → latents → an sd_model run of a few real steps with two checkpoints."""

import json
from pathlib import Path

import pytest
import torch

from sar_pipeline_tests.generation.world import train_tiny_world

torch.set_num_threads(1)


@pytest.fixture(scope="session")
def eval_world(tmp_path_factory) -> dict:
    return train_tiny_world(tmp_path_factory.mktemp("eval_world"), "e1", n_train=16, checkpoint_every_steps=1)


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
