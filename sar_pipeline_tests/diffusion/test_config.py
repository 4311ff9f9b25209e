import json

import pytest

from sar_pipeline.diffusion.config import TrainConfig, recipe
from sar_pipeline.errors import ConfigError


def test_defaults_are_the_paper_recipe():
    cfg = TrainConfig(base_model_path="/models/sd15")
    assert (cfg.unet_learning_rate, cfg.text_encoder_learning_rate) == (5e-5, 5e-6)
    assert cfg.train_unet and cfg.train_text_encoder
    assert (cfg.train_batch_size, cfg.num_train_epochs, cfg.resolution) == (16, 12, 512)
    assert not cfg.with_prior_preservation and not cfg.use_lora
    assert cfg.activation_token == "An aerial view"


@pytest.mark.parametrize("suffix", [".json", ".yaml"])
def test_unknown_option_in_config_file_is_named(tmp_path, suffix):
    path = tmp_path / f"run{suffix}"
    values = {"base_model_path": "/m", "unet_learning_rate": 1e-5, "learning_rate_unet": 1e-4}
    path.write_text(json.dumps(values))  # JSON is valid YAML
    with pytest.raises(ConfigError) as err:
        TrainConfig.from_file(path)
    assert "learning_rate_unet" in str(err.value) and str(path) in str(err.value)


def test_config_file_round_trip(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("base_model_path: /m\nuse_lora: true\nadapter_type: loha\nsnr_gamma: 5.0\n")
    cfg = TrainConfig.from_file(path)
    assert cfg.use_lora and cfg.adapter_type == "loha" and cfg.snr_gamma == 5.0


def test_range_flip_is_refused():
    with pytest.raises(ConfigError, match="range flip"):
        TrainConfig.from_dict({"base_model_path": "/m", "augmentation": "flip_range"})


def test_nothing_to_train_is_refused():
    with pytest.raises(ConfigError, match="nothing to train"):
        TrainConfig.from_dict({"base_model_path": "/m", "train_unet": False, "train_text_encoder": False})


def test_tiny_recipe_overrides():
    cfg = recipe("tiny", max_train_steps=10, train_batch_size=None)
    assert cfg.preset == "tiny" and cfg.max_train_steps == 10 and cfg.train_batch_size == 8


def test_zero_log_interval_is_refused():
    with pytest.raises(ConfigError, match="log_every_steps"):
        TrainConfig.from_dict({"base_model_path": "/m", "log_every_steps": 0})
