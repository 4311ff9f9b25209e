"""Captions for SAR tiles: captioners (BLIP, template), BLIP fine-tuning on RSICD/UCM, caption metrics."""

from __future__ import annotations

from sar_pipeline.captioning.base import DEFAULT_ACTIVATION_TOKEN, Captioner, CaptionInput, compose_text
from sar_pipeline.captioning.captioner import CaptionerSettings, make_captioner

__all__ = [
    "DEFAULT_ACTIVATION_TOKEN",
    "CaptionInput",
    "Captioner",
    "CaptionerSettings",
    "compose_text",
    "make_captioner",
]
