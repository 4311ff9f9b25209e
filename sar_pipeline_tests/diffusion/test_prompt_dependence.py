"""Done-when of issue 5: the tiny preset learns, on 2 CPU cores, that "water" is dark and "urban" bright."""

import pytest

from sar_pipeline.diffusion.config import TrainSettings
from sar_pipeline.diffusion.latent_cache import build_latent_cache
from sar_pipeline.diffusion.models import ensure_tiny_base, load_base_model
from sar_pipeline.diffusion.train import train
from sar_pipeline_tests.diffusion.synthetic import sample_mean_amplitude, write_synthetic_dataset

SEEDS = (0, 1, 2, 3)


@pytest.mark.slow
def test_samples_depend_on_the_prompt(tmp_path):
    storage = tmp_path / "storage"
    write_synthetic_dataset(storage, "v1", n_per_class=16, size=64)
    base = ensure_tiny_base(tmp_path / "tiny-base", storage, "v1", resolution=64, vae_steps=200)
    build_latent_cache(storage, "v1", load_base_model(base).vae, 64)
    cfg = TrainSettings(
        preset="tiny",
        base_model_path=str(base),
        storage_root=str(storage),
        output_dir=str(tmp_path / "run"),
        max_train_steps=250,
        checkpoint_every_steps=0,
        validation_prompts=["An aerial view of water"],
    )
    summary = train(cfg)

    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(summary["pipeline"])
    pipe.set_progress_bar_config(disable=True)

    water = sample_mean_amplitude(pipe, "An aerial view of water", SEEDS, 64, guidance_scale=3.0)
    urban = sample_mean_amplitude(pipe, "An aerial view of an urban area", SEEDS, 64, guidance_scale=3.0)
    print(f"mean amplitude (0..1): water {water:.3f}, urban {urban:.3f}")
    assert water + 0.2 < urban
