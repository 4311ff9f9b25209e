"""Sketch → SAR on an SDXL sd_model: the ControlNet is made from the SDXL UNet (ControlNetModel.from_unet),
trained with SDXL's pooled embedding and time ids, drawn from by generation and by diffusers'
StableDiffusionXLControlNetPipeline."""

import numpy as np
import pytest
import torch

from sar_pipeline.errors import ModelError
from sar_pipeline.generation.controlnet import ControlNetSettings, conditioning_tensors, train_controlnet
from sar_pipeline_tests.generation.world import train_tiny_world


@pytest.fixture(scope="module")
def sdxl_controlnet(tmp_path_factory) -> dict:
    world = train_tiny_world(
        tmp_path_factory.mktemp("sdxl_cn"), "x1", n_train=8, checkpoint_every_steps=0, family="sdxl"
    )
    cfg = ControlNetSettings(
        preset="tiny_sdxl",
        sd_model_path=str(world["pipeline"]),
        storage_root=str(world["storage"]),
        dataset_version="x1",
        output_dir=str(world["storage"] / "models" / "controlnet" / "run1"),
        max_train_steps=4,
        checkpoint_every_steps=4,
        train_batch_size=4,
        learning_rate=5e-3,  # 4 steps must move the zero-initialised output convolutions
        validation_tiles=1,
        validation_steps=2,
    )
    return {**world, "summary": train_controlnet(cfg)}


def _sketch(world) -> np.ndarray:
    pictures, _, _ = conditioning_tensors(str(world["storage"]), "x1", "validation", ["validation-000"], 64)
    return (pictures[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)


def test_an_sdxl_controlnet_trains_and_steers_generation(sdxl_controlnet):
    from sar_pipeline.generation.model import load_controlnet, load_generation_model
    from sar_pipeline.generation.sample import generate
    from sar_pipeline.generation.settings import GenerationSettings

    summary = sdxl_controlnet["summary"]
    assert summary["steps"] == 4 and np.isfinite(summary["final_loss"])
    model = load_generation_model(sdxl_controlnet["pipeline"], device="cpu")
    assert model.family == "sdxl"
    load_controlnet(model, summary["checkpoint"])
    # made from the SDXL UNet: it reads the pooled embedding and time ids, at SDXL's text width
    assert model.controlnet.config.addition_embed_type == "text_time"
    assert model.controlnet.config.cross_attention_dim == model.pipe.unet.config.cross_attention_dim
    settings = GenerationSettings(steps=3, scheduler="ddim", num_images=1, seed=5)
    sketch = _sketch(sdxl_controlnet)
    (steered,) = generate(model, "a lake", settings, control_rgb=sketch, progress=False)
    (again,) = generate(model, "a lake", settings, control_rgb=sketch, progress=False)
    assert steered.image.shape == (64, 64) and np.isfinite(steered.image).all()
    assert np.array_equal(steered.image, again.image)
    (text_only,) = generate(model, "a lake", settings, progress=False)
    assert not np.array_equal(steered.image, text_only.image)  # the sketch reaches the UNet


def test_diffusers_sdxl_controlnet_pipeline_draws_from_the_saved_folders(sdxl_controlnet):
    from diffusers import ControlNetModel, StableDiffusionXLControlNetPipeline
    from PIL import Image

    controlnet = ControlNetModel.from_pretrained(
        sdxl_controlnet["summary"]["controlnet"], local_files_only=True
    )
    pipe = StableDiffusionXLControlNetPipeline.from_pretrained(
        sdxl_controlnet["pipeline"], controlnet=controlnet, local_files_only=True
    )
    pipe.set_progress_bar_config(disable=True)
    out = pipe(
        "An aerial view, a lake",
        image=Image.fromarray(_sketch(sdxl_controlnet)),
        num_inference_steps=2,
        height=64,
        width=64,
        output_type="np",
        generator=torch.Generator().manual_seed(0),
    )
    assert out.images.shape == (1, 64, 64, 3) and np.isfinite(out.images).all()


def test_a_controlnet_of_the_other_family_is_refused(sdxl_controlnet, tmp_path):
    from diffusers import ControlNetModel

    from sar_pipeline.diffusion.models import tiny_components
    from sar_pipeline.generation.model import load_controlnet, load_generation_model

    sd15 = ControlNetModel.from_unet(tiny_components(family="sd15").unet)
    sd15.save_pretrained(tmp_path / "controlnet", safe_serialization=True)
    model = load_generation_model(sdxl_controlnet["pipeline"], device="cpu")
    with pytest.raises(ModelError, match="made for another model"):
        load_controlnet(model, tmp_path)
    assert model.controlnet is None
