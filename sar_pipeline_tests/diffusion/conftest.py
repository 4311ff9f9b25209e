"""Shared fixtures: a synthetic dataset, a tiny base model and its latent cache (built once per session)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from sar_pipeline.diffusion.config import TrainSettings
from sar_pipeline.diffusion.latent_cache import build_latent_cache
from sar_pipeline.diffusion.models import load_base_model, write_tiny_base
from sar_pipeline_tests.diffusion.synthetic import write_synthetic_dataset

# One intra-op thread in child processes: exact float reproducibility between runs, and light on 2 cores.
CHILD_ENV = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "PYTHONHASHSEED": "0"}


@pytest.fixture(scope="session")
def tiny_world(tmp_path_factory) -> dict:
    """storage root with dataset v1 (32 train tiles at 64 px), a tiny base (untrained VAE) and its cache."""
    root = tmp_path_factory.mktemp("tiny_world")
    storage = root / "storage"
    write_synthetic_dataset(storage, "v1", n_per_class=16, size=64)
    base = write_tiny_base(root / "tiny-base", images=None, vae_steps=0)
    build_latent_cache(storage, "v1", load_base_model(base).vae, 64)
    return {"storage": storage, "base": base, "root": root}


def tiny_config(world: dict, output_dir: Path, **options) -> TrainSettings:
    """A fast CPU recipe on the tiny world (4 tiles per batch, 1 validation prompt, 2 sampling steps)."""
    values = {
        "preset": "tiny",
        "base_model_path": str(world["base"]),
        "storage_root": str(world["storage"]),
        "output_dir": str(output_dir),
        "resolution": 64,
        "train_batch_size": 4,
        "unet_learning_rate": 1e-3,
        "text_encoder_learning_rate": 1e-4,
        "max_train_steps": 4,
        "checkpoint_every_steps": 2,
        "validation_steps": 2,
        "validation_prompts": ["An aerial view of a river"],
        "log_every_steps": 1,
    }
    values.update(options)
    return TrainSettings.from_dict(values)


def run_child(args: list[str], **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, *args], env=CHILD_ENV, capture_output=True, text=True, timeout=300, **kwargs
    )
