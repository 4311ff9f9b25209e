"""A tiny trained world for generation tests, built once per session: dataset → base → latents →
sd_model run (a few real training steps) → ControlNet run (a few real steps)."""

from pathlib import Path

import pytest

from sar_pipeline.generation.controlnet import ControlNetSettings, train_controlnet
from sar_pipeline.generation.model import write_latest
from sar_pipeline_tests.generation.world import train_tiny_world


@pytest.fixture(scope="session")
def gen_world(tmp_path_factory) -> dict:
    world = train_tiny_world(tmp_path_factory.mktemp("gen_world"), "g1", n_train=24, checkpoint_every_steps=0)
    storage = world["storage"]
    pipeline = str(world["pipeline"])
    write_latest(storage, "sd_model", {"checkpoint": pipeline})
    cn = ControlNetSettings(
        preset="tiny",
        sd_model_path=pipeline,
        storage_root=str(storage),
        dataset_version="g1",
        output_dir=str(storage / "models" / "controlnet" / "run1"),
        max_train_steps=16,
        checkpoint_every_steps=16,
        train_batch_size=4,
        learning_rate=5e-3,  # 16 steps must move the zero-initialised output convolutions visibly
        validation_tiles=1,
        validation_steps=2,
    )
    cn_summary = train_controlnet(cn)
    write_latest(storage, "controlnet_model", {"controlnet": cn_summary["controlnet"]})
    return {
        "root": world["root"],
        "storage": storage,
        "pipeline": world["pipeline"],
        "controlnet": Path(cn_summary["controlnet"]),
        "controlnet_summary": cn_summary,
    }
