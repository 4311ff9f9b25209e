"""The diffusion training objective: noise and timesteps, the regression target, the loss weights.

``diffusion_loss`` is what one micro-batch minimises: the mean squared error between the UNet's
prediction (conditioned on the text as the model family reads it: ``text_conditioning.py``) and the target (the noise for epsilon-prediction, the velocity for v-prediction),
optionally weighted per sample by min-SNR, plus the prior-preservation term on class images.
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch
import torch.nn.functional as F

from sar_pipeline.diffusion.text_conditioning import text_conditioning


def training_noise_scheduler(base_scheduler, prediction_type: str, zero_terminal_snr: bool):
    """The DDPM schedule training draws from: the base model's, with the recipe's changes.

    ``clip_sample`` is always off: diffusers' schedulers default to clipping predicted samples to
    [-1, 1] when a config does not say, which suits pixels, not SD latents (their range is wider).
    """
    from diffusers import DDPMScheduler

    changes: dict[str, Any] = {"clip_sample": False}
    if prediction_type:
        changes["prediction_type"] = prediction_type
    if zero_terminal_snr:
        changes.update(rescale_betas_zero_snr=True, timestep_spacing="trailing")
    return DDPMScheduler.from_config(base_scheduler.config, **changes)


def sampling_scheduler(noise_scheduler):
    """The DDIM sampler of validation grids and saved pipelines, on the training schedule, with
    ``clip_sample=False`` said explicitly (DDIM's default clips latents to [-1, 1])."""
    from diffusers import DDIMScheduler

    return DDIMScheduler.from_config(noise_scheduler.config, clip_sample=False)


def draw_noise(
    latents: torch.Tensor, generator: torch.Generator, noise_offset: float, num_train_timesteps: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Gaussian noise shaped like ``latents`` (plus offset noise, one value per sample and channel)
    and one uniform training timestep per sample, all from ``generator`` in that order."""
    device = latents.device
    noise = torch.randn(latents.shape, generator=generator, device=device)
    if noise_offset:
        noise += noise_offset * torch.randn(latents.shape[:2] + (1, 1), generator=generator, device=device)
    timesteps = torch.randint(0, num_train_timesteps, (len(latents),), generator=generator, device=device)
    return noise, timesteps


def min_snr_weights(noise_scheduler, timesteps: torch.Tensor, gamma: float) -> torch.Tensor:
    """Min-SNR-gamma loss weights (Hang et al. 2023): min(SNR, gamma)/SNR for epsilon-prediction,
    min(SNR, gamma)/(SNR + 1) for v-prediction, with SNR = alpha_bar / (1 - alpha_bar) at each timestep."""
    from diffusers.training_utils import compute_snr

    snr = compute_snr(noise_scheduler, timesteps)
    clipped = torch.clamp(snr, max=gamma)
    if noise_scheduler.config.prediction_type == "v_prediction":
        return clipped / (snr + 1)
    return clipped / snr


def diffusion_loss(
    unet,
    text_encoder,
    noise_scheduler,
    latents: torch.Tensor,
    input_ids: torch.Tensor,
    noise: torch.Tensor,
    timesteps: torch.Tensor,
    *,
    time_ids: torch.Tensor | None = None,
    snr_gamma: float = 0.0,
    prior_loss_weight: float | None = None,
    autocast=contextlib.nullcontext,
) -> torch.Tensor:
    """The loss of one micro-batch (a scalar).

    ``latents`` are scaled VAE latents. The text conditioning is the model family's
    (:func:`~sar_pipeline.diffusion.text_conditioning.text_conditioning`): SD 1.5 without
    ``time_ids``, SDXL (two text encoders, pooled embedding) with them. With ``prior_loss_weight``
    set, the second half of the batch holds class images: loss = mean(instance) +
    prior_loss_weight × mean(class). ``autocast`` is the mixed-precision context of the forward passes.
    """
    noisy_latents = noise_scheduler.add_noise(latents, noise, timesteps)
    with autocast():
        encoder_hidden_states, added_cond = text_conditioning(text_encoder, input_ids, time_ids)
        model_pred = unet(
            noisy_latents, timesteps, encoder_hidden_states, added_cond_kwargs=added_cond, return_dict=False
        )[0]
    if noise_scheduler.config.prediction_type == "v_prediction":
        target = noise_scheduler.get_velocity(latents, noise, timesteps)
    else:
        target = noise
    per_sample = F.mse_loss(model_pred.float(), target.float(), reduction="none").mean(dim=(1, 2, 3))
    if snr_gamma > 0:
        per_sample = per_sample * min_snr_weights(noise_scheduler, timesteps, snr_gamma)
    if prior_loss_weight is not None:
        instance_loss, prior_loss = per_sample.chunk(2)
        return instance_loss.mean() + prior_loss_weight * prior_loss.mean()
    return per_sample.mean()


@torch.no_grad()
def held_out_loss(
    unet,
    text_encoder,
    noise_scheduler,
    latents: torch.Tensor,
    input_ids: torch.Tensor,
    timesteps: list[int],
    *,
    seed: int,
    batch_size: int,
    device: torch.device,
    time_ids: torch.Tensor | None = None,
    autocast=contextlib.nullcontext,
) -> tuple[float, dict[int, float]]:
    """The plain MSE loss of ``latents`` (scaled; held-out tiles) at each of ``timesteps``, with noise
    fixed by ``seed``: (mean over timesteps and tiles, mean per timestep).

    The noise is drawn on the CPU, one tensor per timestep in order, so the same weights give the
    same number on any device and at every checkpoint; only the weights change between two
    checkpoints' values. The models are run in eval mode and put back as they were; nothing here
    touches the global random state (a resumed run stays bit-exact).
    """
    modes = (unet.training, text_encoder.training)
    unet.eval()
    text_encoder.eval()
    generator = torch.Generator().manual_seed(seed)
    per_timestep: dict[int, float] = {}
    try:
        for t in timesteps:
            noise_all = torch.randn(latents.shape, generator=generator)
            total = 0.0
            for start in range(0, len(latents), batch_size):
                part = slice(start, start + batch_size)
                x = latents[part].to(device)
                steps = torch.full((len(x),), int(t), dtype=torch.long, device=device)
                loss = diffusion_loss(
                    unet,
                    text_encoder,
                    noise_scheduler,
                    x,
                    input_ids[part].to(device),
                    noise_all[part].to(device),
                    steps,
                    time_ids=time_ids,
                    autocast=autocast,
                )
                total += float(loss) * len(x)
            per_timestep[int(t)] = total / len(latents)
    finally:
        unet.train(modes[0])
        text_encoder.train(modes[1])
    return sum(per_timestep.values()) / len(per_timestep), per_timestep
