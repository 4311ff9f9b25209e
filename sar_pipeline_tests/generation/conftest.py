"""A tiny trained world for generation tests, built once per session: dataset → base → latents →
sd_model run (a few real training steps) → ControlNet run (a few real steps)."""

from pathlib import Path

import pytest
import torch

from sar_pipeline.diffusion.config import TrainSettings
from sar_pipeline.diffusion.latent_cache import build_latent_cache
from sar_pipeline.diffusion.models import load_base_model, write_tiny_base
from sar_pipeline.diffusion.train import train
from sar_pipeline.generation.controlnet import ControlNetSettings, train_controlnet
from sar_pipeline.generation.model import write_latest
from sar_pipeline_tests.generation.world import write_world

torch.set_num_threads(1)


@pytest.fixture(scope="session")
def gen_world(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("gen_world")
    storage = root / "storage"
    write_world(storage, "g1", n_train=24, size=64)
    base = write_tiny_base(root / "tiny-base", images=None, vae_steps=0)
    build_latent_cache(storage, "g1", load_base_model(base).vae, 64)
    run_dir = storage / "models" / "sd" / "run1"
    cfg = TrainSettings.from_dict(
        {
            "preset": "tiny",
            "base_model_path": str(base),
            "storage_root": str(storage),
            "dataset_version": "g1",
            "output_dir": str(run_dir),
            "resolution": 64,
            "train_batch_size": 4,
            "max_train_steps": 2,
            "checkpoint_every_steps": 0,
            "validation_prompts": [],
            "log_every_steps": 1,
        }
    )
    summary = train(cfg)
    write_latest(storage, "sd_model", {"checkpoint": summary["pipeline"]})
    cn = ControlNetSettings(
        preset="tiny",
        sd_model_path=summary["pipeline"],
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
        "root": root,
        "storage": storage,
        "pipeline": Path(summary["pipeline"]),
        "controlnet": Path(cn_summary["controlnet"]),
        "controlnet_summary": cn_summary,
    }
