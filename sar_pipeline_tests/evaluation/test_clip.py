"""SAR-CLIP: contrastive training on SAR-like tiles, retrieval and its chance levels, save and reload."""

import numpy as np
import pytest
import torch

from sar_pipeline.evaluation import clip as sar_clip

CAPTIONS = ("a river", "an urban area", "fields in strips along range", "rows of trees along azimuth")


def synthetic_class_tiles(cls: int, count: int, rng, size: int = 32) -> list[np.ndarray]:
    """Speckled grey tiles of four separable kinds: dark, bright, column stripes, row stripes."""
    out = []
    for _ in range(count):
        speckle = rng.gamma(4, 1 / 4, (size, size))
        if cls == 0:
            tile = 0.1 * speckle
        elif cls == 1:
            tile = 0.8 * speckle
        elif cls == 2:
            tile = 0.6 * speckle * (np.arange(size)[None, :] // 4 % 2)
        else:
            tile = 0.6 * speckle * (np.arange(size)[:, None] // 4 % 2)
        out.append(np.clip(tile, 0, 1).astype(np.float32))
    return out


def split(count_per_class: int, seed: int):
    rng = np.random.default_rng(seed)
    tiles, captions = [], []
    for cls, caption in enumerate(CAPTIONS):
        tiles += synthetic_class_tiles(cls, count_per_class, rng)
        captions += [caption] * count_per_class
    return tiles, captions


@pytest.fixture(scope="module")
def trained():
    tiles, captions = split(12, seed=0)
    settings = sar_clip.SarClipSettings(image_size_px=32, max_steps=40, batch_size=16)
    return sar_clip.train_sar_clip(tiles, captions, settings, progress=False)


def test_sar_clip_on_separable_classes_retrieves_far_above_chance(trained):
    clip, losses = trained
    assert np.mean(losses[-5:]) < 0.7 * np.mean(losses[:5])
    tiles, captions = split(6, seed=1)  # held out
    r = sar_clip.evaluate_retrieval(clip, tiles, captions)
    assert r["chance_image_to_text_r1"] == 0.25 and r["chance_text_to_image_r1"] == pytest.approx(0.25)
    assert r["image_to_text_r1"] >= 0.75
    assert r["text_to_image_r1"] >= 0.75
    scores = sar_clip.adherence(clip, tiles, captions)
    wrong = sar_clip.adherence(clip, tiles, captions[6:] + captions[:6])  # every caption of another class
    assert scores["retrieval_r1"] >= 0.75 and wrong["retrieval_r1"] <= 0.25
    assert scores["clip_score"] > wrong["clip_score"] + 5


def test_saved_sar_clip_reloads_with_the_same_embeddings(trained, tmp_path):
    clip, _ = trained
    sar_clip.save_sar_clip(clip, tmp_path / "sar_clip", {"settings": {"text_column": "caption"}})
    again = sar_clip.load_sar_clip(tmp_path / "sar_clip", device="cpu")
    tiles, captions = split(1, seed=2)
    assert torch.allclose(clip.embed_images(tiles), again.embed_images(tiles), atol=1e-5)
    assert torch.allclose(clip.embed_texts(list(CAPTIONS)), again.embed_texts(list(CAPTIONS)), atol=1e-5)
    assert again.info == {"settings": {"text_column": "caption"}}
    assert sorted(p.name for p in (tmp_path / "sar_clip").glob("*.safetensors")) == ["model.safetensors"]


def test_retrieval_recall_counts_hits_and_chance_with_repeated_captions():
    # four tiles, captions a, a, b, c; embeddings on axes so similarities are exact
    captions = ["a", "a", "b", "c"]
    texts = torch.eye(3)
    images = torch.tensor([[1.0, 0, 0], [0.3, 1.0, 0], [0, 0.9, 0.44], [0, 0, 1.0]])
    r = sar_clip.retrieval_recall(images, captions, texts, ks=(1, 2))
    # image → text: tile 0 right, tile 1 ranks b first and a second, tile 2 right, tile 3 right
    assert r["image_to_text_r1"] == 0.75
    assert r["image_to_text_r2"] == 1.0
    assert r["chance_image_to_text_r1"] == pytest.approx(1 / 3)
    # text → image: "a" finds tile 0 first (right), "b" finds tile 1 first (it carries "a": wrong
    # at k=1) and tile 2 second, "c" finds tile 3
    assert r["text_to_image_r1"] == pytest.approx(2 / 3)
    assert r["text_to_image_r2"] == 1.0
    # chance of k=1 tile out of 4 carrying the caption: a 2/4, b 1/4, c 1/4
    assert r["chance_text_to_image_r1"] == pytest.approx((0.5 + 0.25 + 0.25) / 3)
    assert r["chance_text_to_image_r2"] == pytest.approx(((1 - 1 / 6) + 0.5 + 0.5) / 3)


def test_tiles_sharing_a_caption_are_positives_of_each_other():
    # tile 0 lies nearer text 1 than its own text 0, tile 1 nearer text 0: under one caption that is
    # right (lower loss); as two captions, CLIP's plain loss counts it wrong
    images = torch.tensor([[0.9, 0.44], [1.0, 0.0], [0.0, 1.0]])
    texts = torch.tensor([[1.0, 0.0], [0.9, 0.44], [0.0, 1.0]])
    scale = torch.tensor(np.log(20.0))
    shared = sar_clip.contrastive_loss(images, texts, torch.tensor([0, 0, 1]), scale)
    separate = sar_clip.contrastive_loss(images, texts, torch.tensor([0, 1, 2]), scale)
    assert shared < separate - 0.1


def test_pretrained_clip_folder_must_exist_and_be_a_clip(tmp_path):
    with pytest.raises(sar_clip.ModelError, match="does not exist"):
        sar_clip.load_pretrained_clip(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(sar_clip.ModelError, match="config.json is missing"):
        sar_clip.load_pretrained_clip(tmp_path / "empty")
