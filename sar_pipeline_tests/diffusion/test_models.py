import json
import shutil

import pytest
import torch

from sar_pipeline.diffusion.models import build_clip_tokenizer, load_base_model, load_vae, vae_id
from sar_pipeline.errors import ModelError


def test_clip_tokenizer_is_the_real_vocabulary():
    tok = build_clip_tokenizer()
    assert len(tok) == 49408
    ids = tok("An aerial view of a river").input_ids
    assert ids[0] == 49406 and ids[-1] == 49407  # <|startoftext|>, <|endoftext|>
    # known CLIP ids: "a</w>" = 320, "of</w>" = 539
    assert ids[1:-1] == [550, 12440, 1093, 539, 320, 2473]
    assert tok.decode(ids, skip_special_tokens=True) == "an aerial view of a river"


def test_tiny_base_loads(tiny_world):
    base = load_base_model(tiny_world["base"])
    assert base.family == "sd15"
    assert base.unet.config.cross_attention_dim == base.text_encoder.config.hidden_size
    assert base.tokenizer.model_max_length == 77


def test_missing_base_model_path(tmp_path):
    with pytest.raises(ModelError) as err:
        load_base_model(tmp_path / "nowhere")
    assert "nowhere" in str(err.value) and "does not exist" in str(err.value)


@pytest.mark.parametrize(
    ("remove", "expected"),
    [
        ("vae", "'vae/' is missing"),
        ("unet/diffusion_pytorch_model.safetensors", "no weight file"),
        ("model_index.json", "model_index.json is missing"),
        ("scheduler/scheduler_config.json", "scheduler_config.json is missing"),
    ],
)
def test_incomplete_base_model_names_the_component(tiny_world, tmp_path, remove, expected):
    folder = tmp_path / "base"
    shutil.copytree(tiny_world["base"], folder)
    target = folder / remove
    shutil.rmtree(target) if target.is_dir() else target.unlink()
    with pytest.raises(ModelError) as err:
        load_base_model(folder)
    assert expected in str(err.value) and str(folder) in str(err.value)


def test_an_sdxl_folder_without_its_second_text_encoder_names_it(tiny_world, tmp_path):
    folder = tmp_path / "xl"
    shutil.copytree(tiny_world["base"], folder)
    shutil.copytree(folder / "tokenizer", folder / "tokenizer_2")
    index = json.loads((folder / "model_index.json").read_text())
    index["_class_name"] = "StableDiffusionXLPipeline"
    (folder / "model_index.json").write_text(json.dumps(index))
    with pytest.raises(ModelError, match="component folder 'text_encoder_2/' is missing"):
        load_base_model(folder)


def test_single_file_without_local_config_is_refused(tmp_path):
    single = tmp_path / "sd15.safetensors"
    single.write_bytes(b"\0" * 16)
    with pytest.raises(ModelError, match="single_file_config"):
        load_base_model(single)


def test_vae_id_follows_the_weights(tiny_world):
    vae = load_base_model(tiny_world["base"]).vae
    first = vae_id(vae)
    assert vae_id(vae) == first
    with torch.no_grad():
        next(vae.parameters()).add_(1e-3)
    assert vae_id(vae) != first


def test_load_vae_reads_only_the_vae(tiny_world, tmp_path):
    folder = tmp_path / "base"
    shutil.copytree(tiny_world["base"], folder)
    expected = vae_id(load_base_model(folder).vae)
    # the UNet's weights are unreadable: the full loader fails, the VAE loader never opens them
    (folder / "unet" / "diffusion_pytorch_model.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(ModelError):
        load_base_model(folder)
    assert vae_id(load_vae(folder)) == expected
