import json

import pytest

from sar_pipeline.diffusion.config import PRESET_RECIPES, TrainRecipe, TrainSettings
from sar_pipeline.errors import ConfigError


def test_defaults_are_the_paper_recipe():
    cfg = TrainSettings(base_model_path="/models/sd15")
    assert cfg.preset == "sd15"
    assert (cfg.unet_learning_rate, cfg.text_encoder_learning_rate) == (5e-5, 5e-6)
    assert cfg.train_unet and cfg.train_text_encoder
    assert (cfg.train_batch_size, cfg.num_train_epochs, cfg.tile_resolution()) == (16, 12, 512)
    assert not cfg.with_prior_preservation and not cfg.use_lora
    assert cfg.activation_token == "An aerial view"


def test_tiny_preset_fills_only_what_the_user_left_out():
    cfg = TrainSettings(preset="tiny", max_train_steps=10, unet_learning_rate=2e-4)
    assert (cfg.max_train_steps, cfg.unet_learning_rate) == (10, 2e-4)  # the user's values win
    assert cfg.train_batch_size == 8 and cfg.text_encoder_learning_rate == 1e-4  # the preset's
    assert cfg.prediction_type == "v_prediction" and cfg.zero_terminal_snr
    assert cfg.tile_resolution() == 64
    # a written file holds every value: reading it back changes nothing
    assert TrainSettings.model_validate_json(cfg.model_dump_json()) == cfg


@pytest.mark.parametrize("preset", ["sd15", "tiny"])
def test_options_left_empty_take_the_preset_value_their_description_states(preset):
    cfg = TrainSettings(preset=preset, base_model_path="/m")
    for name, value in PRESET_RECIPES[preset].items():
        assert getattr(cfg, name) == value, name
        assert f"{preset} {value!r}" in TrainRecipe.model_fields[name].description, name


def test_sd15_without_base_model_says_which_setting_to_change():
    with pytest.raises(ConfigError, match="base_model_path.*preset='tiny'"):
        TrainSettings()


@pytest.mark.parametrize("suffix", [".json", ".yaml"])
def test_unknown_option_in_config_file_is_named(tmp_path, suffix):
    path = tmp_path / f"run{suffix}"
    values = {"base_model_path": "/m", "unet_learning_rate": 1e-5, "learning_rate_unet": 1e-4}
    path.write_text(json.dumps(values))  # JSON is valid YAML
    with pytest.raises(ConfigError) as err:
        TrainSettings.from_file(path)
    assert "unknown option 'learning_rate_unet'" in str(err.value) and str(path) in str(err.value)


def test_config_file_round_trip(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("base_model_path: /m\nuse_lora: true\nadapter_type: loha\nsnr_gamma: 5.0\n")
    cfg = TrainSettings.from_file(path)
    assert cfg.use_lora and cfg.adapter_type == "loha" and cfg.snr_gamma == 5.0
    written = tmp_path / "train_config.json"
    cfg.write(written)
    assert TrainSettings.from_file(written) == cfg


def test_range_flip_is_refused():
    with pytest.raises(ConfigError, match="range flip"):
        TrainSettings.from_dict({"base_model_path": "/m", "augmentation": "flip_range"})


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"train_unet": False, "train_text_encoder": False}, "nothing to train"),
        ({"log_every_steps": 0}, "log_every_steps"),
        ({"unet_learning_rate": -1e-4}, "unet_learning_rate"),
        ({"caption_dropout": 1.5}, "caption_dropout"),
        ({"mixed_precision": "fp8"}, "mixed_precision"),
        ({"lr_scheduler": "cosine_annealing"}, "lr_scheduler"),
        ({"zero_terminal_snr": True, "prediction_type": "epsilon"}, "v_prediction"),
        ({"use_ema": True, "use_lora": True}, "use_ema"),
        ({"with_prior_preservation": True}, "class_data_dir"),
    ],
)
def test_impossible_values_are_refused_naming_the_option(options, message):
    with pytest.raises(ConfigError, match=message):
        TrainSettings.from_dict({"base_model_path": "/m", **options})
