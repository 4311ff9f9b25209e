"""Score a BLIP checkpoint on the held-out images of caption datasets (the paper's Table 1 protocol)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Generic

from pydantic import Field

from sar_pipeline.captioning.blip import BlipCaptioner
from sar_pipeline.captioning.datasets import CaptionDataError, CaptionDatasetSettings, CaptionedImage
from sar_pipeline.captioning.finetune import DatasetT, read_training_settings
from sar_pipeline.captioning.metrics import compute_caption_metrics
from sar_pipeline.errors import ConfigError, ModelError
from sar_pipeline.settings import Settings


class CaptionMetricsSettings(Settings, Generic[DatasetT]):
    """Held-out evaluation of a fine-tuned BLIP (generic over the dataset class as
    :class:`~sar_pipeline.captioning.finetune.BlipFinetuneSettings` is)."""

    datasets: list[DatasetT] = Field(
        default_factory=list,
        description="Caption datasets whose held-out split is scored; empty = the datasets the checkpoint "
        "was fine-tuned on (from its training_settings.json), whose 'test' split fine-tuning never saw.",
    )
    split: str = Field(default="test", description="Split to score on.")
    max_images: int = Field(default=0, ge=0, description="Score only the first N held-out images (0 = all).")
    num_beams: int = Field(default=3, ge=1, description="Beam width of decoding; 1 = greedy.")
    batch_size: int = Field(default=32, ge=1, description="Images per forward pass.")


def evaluation_datasets(
    settings: CaptionMetricsSettings, checkpoint: str | Path
) -> list[CaptionDatasetSettings]:
    """The datasets to score ``checkpoint`` on: ``settings.datasets``, or where empty the ones it was
    fine-tuned on (their held-out split is what ``settings.split`` names)."""
    if settings.datasets:
        return list(settings.datasets)
    try:
        return list(read_training_settings(checkpoint).datasets)
    except ModelError as exc:
        raise ConfigError(
            "datasets",
            f"empty, and the fine-tuning datasets cannot be taken from the checkpoint ({exc}): list the "
            "caption datasets to score on",
        ) from exc


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
