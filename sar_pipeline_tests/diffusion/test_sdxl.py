"""SDXL training (issue 11, item 4b): the tiny SDXL preset trains on the CPU through the same loop,
saves a diffusers StableDiffusionXLPipeline (safetensors) that diffusers and the generation API load."""

import json
import math
from pathlib import Path

import pytest
import torch

from sar_pipeline.diffusion.data import stored_tile_size
from sar_pipeline.diffusion.latent_cache import build_latent_cache
from sar_pipeline.diffusion.models import load_base_model, write_tiny_base
from sar_pipeline.diffusion.text_conditioning import sdxl_time_ids
from sar_pipeline.diffusion.train import train
from sar_pipeline.errors import ConfigError
from sar_pipeline_tests.diffusion.conftest import tiny_config

STEPS = 3


@pytest.fixture(scope="module")
def sdxl_base(tiny_world, tmp_path_factory) -> Path:
    """The tiny SDXL base, its VAE's latent cache of the tiny world built."""
    base = write_tiny_base(
        tmp_path_factory.mktemp("sdxl") / "tiny-sdxl-base", images=None, vae_steps=0, family="sdxl"
    )
    build_latent_cache(tiny_world["storage"], "v1", load_base_model(base).vae, 64, ("train", "validation"))
    return base


def sdxl_config(tiny_world, base: Path, output_dir: Path, **options):
    """tiny_config on the tiny SDXL base."""
    return tiny_config(tiny_world, output_dir, preset="tiny_sdxl", base_model_path=str(base), **options)


@pytest.fixture(scope="module")
def sdxl_run(tiny_world, sdxl_base, tmp_path_factory) -> dict:
    """A run of STEPS steps on the tiny SDXL base."""
    run = tmp_path_factory.mktemp("sdxl-run") / "run"
    cfg = sdxl_config(
        tiny_world,
        sdxl_base,
        run,
        max_train_steps=STEPS,
        checkpoint_every_steps=0,
        validation_prompts=["a river"],
    )
    return {"base": sdxl_base, "summary": train(cfg), "run": run}


def test_tiny_sdxl_trains_and_saves_a_diffusers_sdxl_pipeline(sdxl_run):
    from diffusers import StableDiffusionXLPipeline

    losses = json.loads((sdxl_run["run"] / "losses.json").read_text())
    assert [step for step, _ in losses] == list(range(1, STEPS + 1))
    assert all(math.isfinite(loss) for _, loss in losses)
    pipeline = Path(sdxl_run["summary"]["pipeline"])
    index = json.loads((pipeline / "model_index.json").read_text())
    assert index["_class_name"] == "StableDiffusionXLPipeline"
    for part in ("unet", "text_encoder", "text_encoder_2", "vae"):
        assert list((pipeline / part).glob("*.safetensors")), part
    assert not list(pipeline.rglob("*.bin"))
    pipe = StableDiffusionXLPipeline.from_pretrained(pipeline, local_files_only=True)
    assert pipe.unet.config.addition_embed_type == "text_time"
    # the UNet and both text encoders were trained (the paper's recipe: all of them)
    base = load_base_model(sdxl_run["base"])
    for name, before, after in (
        ("unet", base.unet, pipe.unet),
        ("text_encoder", base.text_encoder, pipe.text_encoder),
        ("text_encoder_2", base.text_encoder_2, pipe.text_encoder_2),
    ):
        moved = [
            not torch.equal(a, b)
            for a, b in zip(before.state_dict().values(), after.state_dict().values(), strict=True)
        ]
        assert any(moved), name
    # the held-out loss and the validation grid ran under SDXL's conditioning
    checkpoint = json.loads((pipeline.parent / "checkpoint.json").read_text())
    assert math.isfinite(checkpoint["validation_loss"]) and Path(checkpoint["sample_grid"]).is_file()
    # diffusers' own pipeline draws from it
    image = pipe("An aerial view, a river", num_inference_steps=2, height=64, width=64, output_type="np")
    assert image.images.shape == (1, 64, 64, 3)


def test_time_ids_are_the_stored_tile_size_uncropped_and_as_diffusers_builds_them(sdxl_run, tiny_world):
    # a crop of 512 × 768 px from its (64, 128) corner drawn at 1024²: diffusers' SDXL pipelines build
    # the same row
    crop = sdxl_time_ids((512, 768), (64, 128), (1024, 1024))
    assert crop.tolist() == [512, 768, 64, 128, 1024, 1024]
    pipe = load_base_model(sdxl_run["base"])
    from diffusers import StableDiffusionXLPipeline

    reference = StableDiffusionXLPipeline._get_add_time_ids(
        type("Pipe", (), {"unet": pipe.unet})(),
        (512, 768),
        (64, 128),
        (1024, 1024),
        dtype=torch.float32,
        text_encoder_projection_dim=pipe.text_encoder_2.config.projection_dim,
    )
    assert torch.equal(reference[0], crop)
    # training conditions on each tile's stored size, whole (no crop), at the training resolution
    checkpoint = json.loads((Path(sdxl_run["summary"]["checkpoint"]) / "checkpoint.json").read_text())
    assert stored_tile_size(tiny_world["storage"], "v1") == (64, 64)
    assert checkpoint["sdxl_time_ids"] == [64, 64, 0, 0, 64, 64]


def test_generation_loads_the_sdxl_checkpoint_and_draws_from_text(sdxl_run):
    import numpy as np

    from sar_pipeline.generation.model import load_generation_model
    from sar_pipeline.generation.sample import generate
    from sar_pipeline.generation.settings import GenerationSettings

    model = load_generation_model(sdxl_run["summary"]["checkpoint"], device="cpu")
    assert model.family == "sdxl" and model.original_size == (64, 64) and model.checkpoint_step == STEPS
    settings = GenerationSettings(steps=3, scheduler="ddim", num_images=1, seed=3)
    first, again = (generate(model, "a river", settings, progress=False)[0] for _ in range(2))
    assert first.image.shape == (64, 64) and np.isfinite(first.image).all()
    assert np.array_equal(first.image, again.image)
    other = generate(model, "a town", settings, progress=False)[0]
    assert not np.array_equal(first.image, other.image)  # the text conditions the image
    # img2img goes through the same conditioning
    moved = generate(model, "a town", settings.model_copy(update={"strength": 0.5}), init_grey=first.image)
    assert moved[0].image.shape == (64, 64) and np.isfinite(moved[0].image).all()


def test_time_ids_stay_float32_under_reduced_precision(sdxl_run):
    from sar_pipeline.diffusion.text_conditioning import SdxlTextEncoders, text_conditioning

    base = load_base_model(sdxl_run["base"])
    encoders = SdxlTextEncoders(base.text_encoder, base.text_encoder_2).to(torch.bfloat16)
    ids = torch.zeros(2, 2, 77, dtype=torch.long)
    _, added = text_conditioning(encoders, ids, sdxl_time_ids((1023, 1023), (0, 0), (1024, 1024)))
    # bf16 would round a 1023-px tile to 1024
    assert added["time_ids"].dtype == torch.float32 and added["time_ids"][:, 0].tolist() == [1023, 1023]


def test_a_base_model_of_the_other_family_is_refused(tiny_world, tmp_path):
    cfg = tiny_config(tiny_world, tmp_path / "run", preset="tiny_sdxl", max_train_steps=1)
    with pytest.raises(ConfigError, match="holds a sd15 model but preset 'tiny_sdxl' trains sdxl"):
        train(cfg)


# ---------------------------------------------------------------------------------------------
# the follow-up study's best recipe on SDXL: full UNet, LoRA on both text encoders, a learned token


def _part_weights(folder: Path, part: str) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    (path,) = (folder / part).glob("*.safetensors")
    return load_file(str(path))


def _embedding_key(weights: dict[str, torch.Tensor]) -> str:
    (key,) = [k for k in weights if k.endswith("token_embedding.weight")]
    return key


@pytest.fixture(scope="module")
def sdxl_hybrid(tiny_world, sdxl_base, tmp_path_factory) -> dict:
    """The hybrid recipe on the tiny SDXL base, 2 steps, a checkpoint after each."""
    run = tmp_path_factory.mktemp("sdxl-hybrid") / "run"
    cfg = sdxl_config(
        tiny_world,
        sdxl_base,
        run,
        max_train_steps=2,
        checkpoint_every_steps=1,
        text_encoder_lora=True,
        text_encoder_lora_rank=4,
        text_encoder_lora_alpha=4,
        learned_token="<sar>",
        learned_token_learning_rate=1e-2,
        validation_prompts=["a river"],
    )
    return {"cfg": cfg, "summary": train(cfg), "run": run}


def test_sdxl_hybrid_recipe_learns_only_the_token_row_in_both_text_encoders(sdxl_hybrid, sdxl_base):
    """Both tokenizers gain the token, both encoders a row initialised from learned_token_init; in
    each encoder that row and the adapted projections move, every other weight is bit-identical."""
    cfg, pipeline = sdxl_hybrid["cfg"], Path(sdxl_hybrid["summary"]["pipeline"])
    info = json.loads((pipeline.parent / "checkpoint.json").read_text())
    assert info["learning_rates"] == {"unet": 1e-3, "text_encoder": 1e-4, "learned_token": 1e-2}
    base = load_base_model(sdxl_base)
    for part, tokenizer in (("text_encoder", base.tokenizer), ("text_encoder_2", base.tokenizer_2)):
        trained, before = _part_weights(pipeline, part), _part_weights(sdxl_base, part)
        key = _embedding_key(before)
        assert trained[key].shape[0] == before[key].shape[0] + 1, part
        assert torch.equal(trained[key][:-1], before[key]), part  # every existing token's row, bit for bit
        init = before[key][tokenizer("radar", add_special_tokens=False).input_ids].mean(0)
        assert (trained[key][-1] - init).abs().max() > 1e-3, (
            part
        )  # the new row learned from its initial value
        moved = {k for k in before if k != key and not torch.equal(trained[k], before[k])}
        assert moved, part
        assert all(any(f".{t}." in k for t in cfg.text_encoder_lora_targets) for k in moved), part
    unet, base_unet = _part_weights(pipeline, "unet"), _part_weights(sdxl_base, "unet")
    assert not torch.equal(unet["conv_in.weight"], base_unet["conv_in.weight"])  # the UNet in full


def test_generation_reads_the_learned_token_through_both_sdxl_encoders(sdxl_hybrid):
    import numpy as np

    from sar_pipeline.generation.model import load_generation_model
    from sar_pipeline.generation.sample import conditioning_texts, encode_texts, generate
    from sar_pipeline.generation.settings import GenerationSettings

    model = load_generation_model(sdxl_hybrid["summary"]["checkpoint"], device="cpu")
    text, _ = conditioning_texts(model, "a river", "")
    assert text == "<sar> An aerial view, a river"
    pipe = model.pipe
    for tokenizer in (pipe.tokenizer, pipe.tokenizer_2):  # one token, the new row, in each tokenizer
        assert tokenizer(text).input_ids[1] == len(tokenizer) - 1 == 49408
    # each encoder's learned row conditions its own half of the UNet's text features
    hidden, _ = encode_texts(model, [text], 64)
    width = pipe.text_encoder.config.hidden_size
    for index, encoder in enumerate((pipe.text_encoder, pipe.text_encoder_2)):
        weight = encoder.get_input_embeddings().weight
        learned = weight[49408].detach().clone()
        with torch.no_grad():
            weight[49408] = 0.0
        other, _ = encode_texts(model, [text], 64)
        with torch.no_grad():
            weight[49408] = learned
        own = slice(0, width) if index == 0 else slice(width, None)
        rest = slice(width, None) if index == 0 else slice(0, width)
        assert not torch.equal(hidden[..., own], other[..., own]), index
        assert torch.equal(hidden[..., rest], other[..., rest]), index
    settings = GenerationSettings(steps=2, scheduler="ddim", num_images=1, seed=3)
    (image,) = generate(model, "a river", settings, progress=False)
    assert image.image.shape == (64, 64) and np.isfinite(image.image).all()


def test_sdxl_learned_token_run_resumes_as_it_ran(sdxl_hybrid, tiny_world, sdxl_base, tmp_path):
    """Resuming from step 1 rebuilds both tokens' rows and adapters, and step 2 comes out the same."""
    import shutil

    from safetensors.torch import load_file

    from sar_pipeline.diffusion.checkpoint import list_checkpoints

    resumed = tmp_path / "run"
    shutil.copytree(sdxl_hybrid["run"], resumed)
    first, second = list_checkpoints(resumed)
    shutil.rmtree(second)
    summary = train(sdxl_hybrid["cfg"].model_copy(update={"output_dir": str(resumed)}))
    assert summary["steps"] == 2
    state = "state/text_encoder.safetensors"
    expected = load_file(str(sdxl_hybrid["run"] / "checkpoints" / second.name / state))
    again = load_file(str(list_checkpoints(resumed)[-1] / state))
    assert expected.keys() == again.keys()
    for key in expected:
        torch.testing.assert_close(again[key], expected[key], rtol=0, atol=1e-6, msg=key)
