"""Validation samples drawn at each checkpoint: fixed prompts, fixed seeds, one grid per checkpoint."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from sar_pipeline.captioning.base import prompt_text
from sar_pipeline.pictures import grid


def sample_validation_prompts(
    pipeline,
    prompts: list[str],
    *,
    steps: int,
    guidance_scale: float,
    resolution: int,
    seed: int,
    device: torch.device,
    activation_token: str,
    learned_token: str = "",
    original_size: tuple[int, int] | None = None,
) -> list[Any]:
    """One image (PIL, ``resolution`` px square) per prompt; prompt i is drawn with seed ``seed + i``.

    Each prompt is conditioned on in the training texts' form (``prompt_text``: the activation
    token added where missing); an SDXL pipeline also on ``original_size`` (height, width: the
    stored tile size training conditioned on), whole tiles at ``resolution``."""
    pipeline = pipeline.to(device)
    pipeline.set_progress_bar_config(disable=True)
    sdxl = {"original_size": original_size} if original_size is not None else {}
    images = []
    for i, prompt in enumerate(prompts):
        generator = torch.Generator(device="cpu").manual_seed(seed + i)
        images.append(
            pipeline(
                prompt_text(prompt, activation_token, learned_token),
                num_inference_steps=steps,
                guidance_scale=guidance_scale,
                height=resolution,
                width=resolution,
                generator=generator,
                **sdxl,
            ).images[0]
        )
    return images


def prompt_grid(prompts: list[str], images: list[Any]):
    """The samples side by side, each labelled with its prompt (PIL)."""
    return grid(images, columns=len(images), labels=list(prompts))


def mean_brightness(prompts: list[str], images: list[Any]) -> dict[str, float]:
    """Mean pixel value (0–1) of each validation prompt's sample: how the prompt sets the tone."""
    return {
        p: round(float(np.asarray(im, dtype=np.float32).mean() / 255.0), 4)
        for p, im in zip(prompts, images, strict=True)
    }
