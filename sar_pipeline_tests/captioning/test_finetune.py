"""BLIP fine-tuning on UCM images and captions (generated in the real layout, and the real sample as
an extra): the loss falls and the checkpoint reloads."""

import json

import pydantic
import pytest

from sar_pipeline.captioning.blip import BlipCaptioner
from sar_pipeline.captioning.datasets import CaptionDataError
from sar_pipeline.captioning.finetune import (
    BlipFinetuneSettings,
    TrainingCollator,
    finetune_blip,
    main,
    read_training_settings,
)
from sar_pipeline.errors import ConfigError, ModelError


def _settings(tiny_blip_dir, ucm_folder, **overrides):
    datasets = []
    if ucm_folder is not None:
        datasets = [{"kind": "ucm_pairs", "path": str(ucm_folder), "holdout_fraction": 0.2}]
    values = {
        "base_model_path": str(tiny_blip_dir),
        "datasets": datasets,
        "max_steps": 24,
        "batch_size": 8,
        "learning_rate": 3e-3,
        "warmup_steps": 2,
        "num_threads": 2,
        "log_every": 4,
        "num_workers": 0,
    }
    values.update(overrides)
    return BlipFinetuneSettings.model_validate(values)


def test_finetune_on_ucm_loss_falls_and_checkpoint_reloads(tiny_blip_dir, ucm_folder, tmp_path):
    events = []
    settings = _settings(tiny_blip_dir, ucm_folder)
    result = finetune_blip(settings, tmp_path / "ft", lambda e, v: events.append((e, v)))
    assert result.steps == 24 and len(result.losses) == 24
    assert (
        result.train_pairs == 5 * result.train_images and 20 <= result.train_images < 35
    )  # a fifth held out
    assert result.final_loss < result.first_loss - 0.3, (result.first_loss, result.final_loss)
    assert [e for e, _ in events][0] == "start" and events[-1][0] == "done"
    assert sum(e == "step" for e, _ in events) == 6

    out = tmp_path / "ft"
    assert (out / "model.safetensors").is_file() and (out / "config.json").is_file()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".ft.tmp")]  # atomic: no leftovers
    logged = json.loads((out / "training_settings.json").read_text())
    assert logged["steps"] == 24 and logged["losses"] == result.losses
    assert read_training_settings(out).model_dump() == settings.model_dump()  # what caption_metrics reads

    import torch
    from transformers import BlipForConditionalGeneration

    tuned = BlipForConditionalGeneration.from_pretrained(str(out))
    base = BlipForConditionalGeneration.from_pretrained(str(tiny_blip_dir))
    changed = [
        n
        for (n, p), (_, q) in zip(tuned.named_parameters(), base.named_parameters(), strict=True)
        if not torch.equal(p, q)
    ]
    assert changed  # the weights moved and were saved
    captioner = BlipCaptioner(out, device="cpu", num_beams=1, max_new_tokens=8, progress=False)
    from PIL import Image

    with Image.open(ucm_folder / "images" / "airplane00.tif") as im:
        (text,) = captioner.caption_images([im.convert("RGB")])
    assert isinstance(text, str)


def test_cli_entry_without_dagster(tiny_blip_dir, caption_data, tmp_path, capsys):
    config = tmp_path / "settings.json"
    # one DataLoader worker process: the collator must cross the process boundary
    settings = _settings(tiny_blip_dir, caption_data / "ucm_captions_images", max_steps=2, num_workers=1)
    config.write_text(settings.model_dump_json())
    assert main(["--config", str(config), "--output-dir", str(tmp_path / "cli-out")]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["checkpoint_path"] == str(
        tmp_path / "cli-out"
    )


def test_bad_settings_and_inputs(tiny_blip_dir, tmp_path):
    with pytest.raises(pydantic.ValidationError, match=r"lr\n.*Extra inputs are not permitted"):
        BlipFinetuneSettings.model_validate({"base_model_path": "x", "lr": 1})
    with pytest.raises(pydantic.ValidationError, match="mixed_precision"):
        BlipFinetuneSettings.model_validate({"mixed_precision": "fp8"})
    with pytest.raises(ModelError, match="missing-model.*does not exist"):
        finetune_blip(_settings(tmp_path / "missing-model", None), tmp_path / "o")
    with pytest.raises(ConfigError, match="datasets: no caption dataset configured"):
        finetune_blip(_settings(tiny_blip_dir, None), tmp_path / "o")
    no_images = tmp_path / "t_precomp"
    no_images.mkdir()
    (no_images / "train_filename.txt").write_text("1.tif\n")
    (no_images / "train_caps.txt").write_text("a\nb\nc\nd\ne\n")
    with pytest.raises(CaptionDataError, match="t/1.tif: no image file"):
        finetune_blip(
            _settings(
                tiny_blip_dir,
                None,
                datasets=[{"kind": "precomp", "path": str(no_images), "splits": ["train"]}],
            ),
            tmp_path / "o",
        )


def test_training_batches_start_from_the_decoder_token(tiny_blip_dir, ucm_folder):
    from transformers import BlipProcessor

    processor = BlipProcessor.from_pretrained(str(tiny_blip_dir))
    bos = processor.tokenizer.convert_tokens_to_ids("[DEC]")
    image = ucm_folder / "images" / "beach00.tif"
    batch = TrainingCollator(processor, bos, max_text_tokens=8)(
        [(image, "a beach ."), (image, "waves hit a long sandy beach")]
    )
    assert batch["pixel_values"].shape == (2, 3, 64, 64)
    assert batch["input_ids"][:, 0].tolist() == [bos, bos]
    assert batch["input_ids"].shape[1] == 8  # truncated to max_text_tokens
    assert batch["labels"][0].tolist()[-3:] == [-100, -100, -100]  # padding is no target
    assert processor.tokenizer.decode(batch["input_ids"][1, 1:-1]) == "waves hit a long sandy beach"
