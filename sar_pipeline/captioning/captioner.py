"""Which captioner writes the tile captions, and its settings: the template captioner or BLIP."""

from __future__ import annotations

from typing import Literal

import pydantic
from pydantic import Field

from sar_pipeline.captioning.base import DEFAULT_ACTIVATION_TOKEN, Captioner
from sar_pipeline.settings import Settings

#: the environment variable a deployment sets to caption with BLIP: the local checkpoint folder
CAPTIONER_MODEL_VARIABLE = "SAR_PIPELINE_CAPTIONER_MODEL"


class CaptionerSettings(Settings):
    """The captioner of the ``captions`` stage: ``template`` (land cover, the demo default) or ``blip``."""

    kind: Literal["template", "blip"] = Field(
        default="template",
        description="'template' (from the tile's land cover or labels, no model) or 'blip' (BLIP on the "
        "co-located optical tile; needs model_path).",
    )
    model_path: str = Field(
        default="",
        description="Local BLIP captioning checkpoint folder (base, large or our fine-tune); for kind='blip'. "
        "Definitions set kind='blip' and read this from $SAR_PIPELINE_CAPTIONER_MODEL when that is set.",
    )
    device: str = Field(default="auto", description="'auto' (GPU if present), 'cpu', 'cuda', 'cuda:1', …")
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = Field(
        default="auto",
        description="BLIP weights dtype: auto (bf16/fp16 on GPU, fp32 on CPU), float32, float16, bfloat16.",
    )
    batch_size: int = Field(default=32, ge=1, description="Tiles per BLIP forward pass.")
    num_beams: int = Field(default=3, ge=1, description="Beam width of BLIP decoding; 1 = greedy.")
    max_new_tokens: int = Field(default=40, ge=1, description="Longest BLIP caption in tokens.")
    activation_token: str = Field(
        default=DEFAULT_ACTIVATION_TOKEN, description="Prefix of every text (paper §4.1)."
    )

    @pydantic.model_validator(mode="after")
    def _blip_needs_a_model(self) -> CaptionerSettings:
        if self.kind == "blip" and not self.model_path:
            raise ValueError("model_path: kind='blip' needs a local BLIP checkpoint folder")
        return self


def make_captioner(settings: CaptionerSettings) -> Captioner:
    """The captioner ``settings`` describe (BLIP loads its checkpoint now: errors name the folder)."""
    if settings.kind == "blip":
        from sar_pipeline.captioning.blip import BlipCaptioner

        return BlipCaptioner(
            settings.model_path,
            device=settings.device,
            dtype=settings.dtype,
            batch_size=settings.batch_size,
            num_beams=settings.num_beams,
            max_new_tokens=settings.max_new_tokens,
        )
    from sar_pipeline.captioning.template import TemplateCaptioner

    return TemplateCaptioner()
