"""Captions for SAR tiles: captioners (BLIP, template), BLIP fine-tuning on RSICD/UCM, caption metrics."""

from __future__ import annotations

from sar_pipeline.captioning.base import DEFAULT_ACTIVATION_TOKEN, Captioner, CaptionInput, compose_text
from sar_pipeline.errors import ConfigError

__all__ = ["DEFAULT_ACTIVATION_TOKEN", "CaptionInput", "Captioner", "compose_text", "make_captioner"]


def make_captioner(kind: str = "template", model_path: str = "", **blip_options) -> Captioner:
    """The captioner called ``kind``: ``"template"`` (land cover / labels) or ``"blip"`` (needs ``model_path``)."""
    if kind == "template":
        from sar_pipeline.captioning.template import TemplateCaptioner

        return TemplateCaptioner()
    if kind == "blip":
        from sar_pipeline.captioning.blip import BlipCaptioner

        if not model_path:
            raise ConfigError("captioner.model_path", "the BLIP captioner needs a local checkpoint folder")
        return BlipCaptioner(model_path, **blip_options)
    raise ConfigError(f"captioner kind {kind!r}", "unknown; use 'template' or 'blip'")
