"""The BLIP captioner on a tiny BLIP built from configs; bad model paths and blank tiles."""

import json

import numpy as np
import pydantic
import pytest

from sar_pipeline.captioning import CaptionerSettings
from sar_pipeline.captioning.base import CaptionInput
from sar_pipeline.captioning.blip import BlipCaptioner
from sar_pipeline.errors import ModelError, RasterError


def _tiles(n, seed=0):
    rng = np.random.default_rng(seed)
    return [
        CaptionInput(f"t{i}", optical_rgb=rng.integers(0, 256, (48 + i, 50, 3), dtype=np.uint8))
        for i in range(n)
    ]


def test_batched_captions_equal_one_by_one(tiny_blip_dir):
    captioner = BlipCaptioner(
        tiny_blip_dir, device="cpu", batch_size=3, num_beams=1, max_new_tokens=6, progress=False
    )
    tiles = _tiles(4)
    batched = captioner.caption(tiles)
    assert len(batched) == 4 and all(isinstance(c, str) for c in batched)
    assert [captioner.caption([t])[0] for t in tiles] == batched
    assert captioner.captioner_id == "blip:tiny-blip" and len(captioner.version) == 12
    scored = captioner.caption_with_scores(tiles)
    assert [text for text, _ in scored] == batched
    assert all(score <= 0 for _, score in scored)  # mean log-probabilities
    beam = BlipCaptioner(tiny_blip_dir, device="cpu", num_beams=2, max_new_tokens=6, progress=False)
    assert len(beam.caption(tiles[:2])) == 2
    assert all(score <= 0 for _, score in beam.caption_with_scores(tiles[:2]))


def test_missing_path_and_not_blip_are_model_errors(tmp_path, tiny_blip_dir):
    missing = tmp_path / "nowhere"
    with pytest.raises(ModelError, match="nowhere.*does not exist"):
        BlipCaptioner(missing)
    bert = tmp_path / "bert"
    bert.mkdir()
    (bert / "config.json").write_text(json.dumps({"model_type": "bert", "architectures": ["BertModel"]}))
    with pytest.raises(ModelError, match="bert.*not a BLIP checkpoint.*'bert'"):
        BlipCaptioner(bert)
    no_weights = tmp_path / "blip-no-weights"
    no_weights.mkdir()
    (no_weights / "config.json").write_text((tiny_blip_dir / "config.json").read_text())
    with pytest.raises(ModelError, match="no weights"):
        BlipCaptioner(no_weights)
    with pytest.raises(
        pydantic.ValidationError, match="model_path: kind='blip' needs a local BLIP checkpoint"
    ):
        CaptionerSettings(kind="blip")
    with pytest.raises(ModelError, match="s3://bucket/blip.*local folder"):
        BlipCaptioner("s3://bucket/blip")


def test_blank_optical_tile_is_an_error_naming_the_tile(tiny_blip_dir):
    captioner = BlipCaptioner(tiny_blip_dir, device="cpu", num_beams=1, max_new_tokens=4, progress=False)
    blank = CaptionInput("tile-0042", optical_rgb=np.full((32, 32, 3), 17, np.uint8))
    with pytest.raises(RasterError, match="tile-0042.*blank.*17"):
        captioner.caption([blank])
    with pytest.raises(RasterError, match="tile-9.*no optical tile"):
        captioner.caption([CaptionInput("tile-9")])
    two_bands = CaptionInput(
        "tile-7", optical_rgb=np.zeros((8, 8, 2), np.uint8) + np.arange(2, dtype=np.uint8)
    )
    with pytest.raises(RasterError, match=r"tile-7.*expected \(rows, cols, 3\) RGB"):
        captioner.caption([two_bands])


def test_device_preprocessing_matches_the_image_processor(tiny_blip_dir):
    import torch

    captioner = BlipCaptioner(
        tiny_blip_dir, device="cpu", preprocess="device", num_beams=1, max_new_tokens=4, progress=False
    )
    rng = np.random.default_rng(1)
    smooth = np.kron(rng.integers(0, 256, (30, 25, 3), dtype=np.uint8), np.ones((4, 4, 1), np.uint8))
    images = [smooth, smooth[:100, :90], _tiles(1)[0].optical_rgb]  # down- and up-sampling
    ours = captioner.pixel_values_on_device(images)
    from PIL import Image

    reference = captioner.processor(images=[Image.fromarray(i) for i in images], return_tensors="pt")[
        "pixel_values"
    ]
    assert ours.shape == reference.shape == (3, 3, 64, 64)
    # same resize and normalisation; only interpolation round-off differs (values span about ±2)
    assert torch.mean(torch.abs(ours - reference)).item() < 0.05
    assert len(captioner.caption_images(images)) == 3
