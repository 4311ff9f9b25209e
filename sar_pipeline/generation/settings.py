"""The settings of one generation: sampler, guidance, seed, size, device (the CLI's options and the web page's defaults)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from sar_pipeline.settings import Settings

#: diffusers scheduler offered for sampling (name → what it is): ``generation.model.make_scheduler``
SchedulerName = Literal["ddim", "euler", "euler_ancestral", "dpmpp_2m_karras", "unipc"]


class GenerationSettings(Settings):
    """How images are sampled from a fine-tuned model (text, img2img, refine-simulated, sketch)."""

    negative_prompt: str = Field(
        default="",
        description="Text the sampler steers away from (classifier-free guidance's unconditional "
        "branch); '' = the empty prompt. Used as written (no activation token).",
    )
    seed: int = Field(
        default=0,
        description="Seed of the first image; image i uses seed + i, so each is reproducible alone.",
    )
    num_images: int = Field(
        default=1, ge=1, le=64, description="Images generated (seeds seed … seed + n - 1)."
    )
    steps: int = Field(default=30, ge=1, le=1000, description="Denoising steps (scheduler inference steps).")
    guidance_scale: float = Field(
        default=7.5, ge=0.0, description="Classifier-free guidance scale (1 = no guidance)."
    )
    guidance_rescale: float | None = Field(
        default=None,
        ge=0.0,
        le=1.0,
        description="Rescale of the guided prediction's std to the conditional one's (Lin et al. 2024, "
        "against over-exposure with zero-terminal-SNR models); empty = 0.7 for a model trained with "
        "zero terminal SNR, else 0.",
    )
    scheduler: SchedulerName = Field(
        default="dpmpp_2m_karras",
        description="Sampler: 'ddim', 'euler', 'euler_ancestral', 'dpmpp_2m_karras' (DPM++ 2M with "
        "Karras sigmas) or 'unipc'; each keeps the model's noise schedule (zero terminal SNR, "
        "trailing timesteps, prediction type).",
    )
    size_px: int = Field(
        default=0,
        ge=0,
        description="Image side in pixels (a multiple of the VAE's factor); 0 = the model's tile size.",
    )
    strength: float = Field(
        default=0.5,
        gt=0.0,
        le=1.0,
        description="img2img / refine-simulated: share of the denoising schedule re-run from the input "
        "(0 keeps it, 1 ignores it).",
    )
    conditioning_scale: float = Field(
        default=1.0, ge=0.0, description="sketch: weight of the ControlNet's residuals (0 = text only)."
    )
    device: str = Field(default="auto", description="'auto' (a GPU when present), 'cpu', 'cuda', 'cuda:1', …")
    dtype: Literal["float32", "float16", "bfloat16"] = Field(
        default="float32", description="Weights' precision; float16/bfloat16 on a GPU only."
    )
