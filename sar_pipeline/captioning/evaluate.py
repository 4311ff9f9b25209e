"""Score a BLIP checkpoint on the held-out images of caption datasets (the paper's Table 1 protocol)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from sar_pipeline.captioning.blip import BlipCaptioner
from sar_pipeline.captioning.datasets import CaptionDataError, CaptionedImage
from sar_pipeline.captioning.metrics import compute_caption_metrics


@dataclass
class CaptionEvaluation:
    """Metrics of one checkpoint on one split, with the generated captions (image key → caption)."""

    metrics: dict[str, float]
    candidates: dict[str, str]
    references: dict[str, list[str]]
    split: str


def evaluate_blip(
    model_path: str | Path,
    items: Sequence[CaptionedImage],
    split: str = "test",
    max_images: int = 0,
    **captioner_options,
) -> CaptionEvaluation:
    """Caption each image of ``split`` with the BLIP at ``model_path`` and score against its references.

    ``max_images`` > 0 keeps the first that many images (sorted by key) for a quick evaluation.
    ``captioner_options`` go to BlipCaptioner (device, dtype, batch_size, num_beams, …).
    """
    from PIL import Image

    held_out = sorted((i for i in items if i.split == split), key=lambda i: i.key)
    if max_images > 0:
        held_out = held_out[:max_images]
    if not held_out:
        raise CaptionDataError("datasets", f"no images in split {split!r} to evaluate on")
    for item in held_out:
        if item.image_path is None or not Path(item.image_path).is_file():
            raise CaptionDataError(
                item.key, f"no image file ({item.image_path}): evaluation needs the images"
            )
    captioner = BlipCaptioner(model_path, **captioner_options)
    images = []
    for item in held_out:
        with Image.open(item.image_path) as im:
            images.append(im.convert("RGB"))
    generated = captioner.caption_images(images)
    candidates = {item.key: text for item, text in zip(held_out, generated, strict=True)}
    references = {item.key: list(item.captions) for item in held_out}
    return CaptionEvaluation(compute_caption_metrics(candidates, references), candidates, references, split)
