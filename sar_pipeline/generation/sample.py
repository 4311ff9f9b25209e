"""Sampling: text → SAR, img2img, and sketch → SAR through a ControlNet, in one denoising loop.

The loop is written out (diffusers' pipelines split it over three classes, and only the
text-to-image one offers ``guidance_rescale``, which a zero-terminal-SNR model needs):

1. the prompt in the training texts' form (``captioning.base.prompt_text``) and the negative
   prompt are encoded by the text encoder(s) as training conditioned on them
   (``diffusion.text_conditioning``: SDXL adds the pooled embedding and size/crop time ids); a
   prompt longer than the tokenizer's window is refused, naming the words that would be dropped;
2. the start latent: pure noise (text, sketch), or the input's latent noised to the timestep
   ``strength`` of the way into the schedule (img2img, refine-simulated);
3. each step: the UNet (plus the ControlNet's residuals for a sketch) on the conditional and
   unconditional branch, classifier-free guidance, guidance rescale, the scheduler's step;
4. the VAE decodes; the grey tile the model draws replicated over RGB is collapsed to one band
   (the mean) and the spread between the channels is recorded.

Image i of a call uses seed ``seed + i`` (its own generator), so any one image is reproducible alone.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from sar_pipeline.captioning.base import prompt_text
from sar_pipeline.diffusion.data import tokenize
from sar_pipeline.diffusion.text_conditioning import SdxlTextEncoders, sdxl_time_ids, text_conditioning
from sar_pipeline.errors import SarPipelineError
from sar_pipeline.generation.model import GenerationModel, default_guidance_rescale, make_scheduler
from sar_pipeline.generation.settings import GenerationSettings


class PromptError(SarPipelineError):
    """A prompt the text encoder cannot read whole."""


class InputImageError(SarPipelineError):
    """An input image (img2img, sketch) of the wrong size or mode."""


@dataclass
class Generated:
    """One generated tile: ``image`` float32 (rows, cols) in [0, 1] (the model's grey scale, which
    maps to dB through the dataset's radiometric mapping) and how it was made."""

    image: np.ndarray
    seed: int
    channel_spread_mean: float
    channel_spread_max: float
    settings: dict[str, Any] = field(default_factory=dict)


def check_prompt(tokenizer, text: str, what: str = "prompt") -> None:
    """PromptError when ``text`` is longer than the text encoder's window (77 tokens for CLIP),
    naming the words that would be dropped."""
    ids = tokenizer(text, truncation=False, add_special_tokens=True, verbose=False).input_ids
    limit = tokenizer.model_max_length
    if len(ids) <= limit:
        return
    dropped_ids = ids[limit - 1 : -1]  # beyond BOS + (limit - 2) tokens + EOS
    dropped = tokenizer.decode(dropped_ids, skip_special_tokens=True).strip()
    raise PromptError(
        what,
        f"{len(ids)} tokens but the text encoder reads {limit} (incl. start and end): these words "
        f"would be dropped: {dropped!r}. Shorten the {what}",
    )


def encode_texts(
    model: GenerationModel, texts: list[str], size: int
) -> tuple[torch.Tensor, dict[str, torch.Tensor] | None]:
    """The UNet's (and a ControlNet's) text conditioning of ``texts`` as training built it
    (``text_conditioning``): SD 1.5's hidden states (N×L×D), or SDXL's two encoders' with the
    pooled embedding and the time ids of a whole tile of the trained tile size drawn at ``size`` px
    (``added_cond_kwargs``: ``text_embeds`` N×P, ``time_ids`` N×6). On the model's device."""
    pipe = model.pipe
    encoder, tokenizer, time_ids = pipe.text_encoder, pipe.tokenizer, None
    if model.family == "sdxl":
        encoder = SdxlTextEncoders(pipe.text_encoder, pipe.text_encoder_2)
        tokenizer = (pipe.tokenizer, pipe.tokenizer_2)
        time_ids = sdxl_time_ids(model.original_size or (size, size), (0, 0), (size, size))
    with torch.no_grad():
        return text_conditioning(encoder, tokenize(tokenizer, texts).to(model.device), time_ids)


def conditioning_texts(model: GenerationModel, prompt: str, negative_prompt: str) -> tuple[str, str]:
    """(prompt as training saw texts, negative prompt as written), both checked against the window."""
    text = prompt_text(prompt, model.activation_token, model.learned_token)
    check_prompt(model.pipe.tokenizer, text, "prompt")
    check_prompt(model.pipe.tokenizer, negative_prompt, "negative prompt")
    return text, negative_prompt


def to_model_tensor(grey: np.ndarray, device, dtype) -> torch.Tensor:
    """A grey tile in [0, 1] (rows, cols) → 1×3×rows×cols in [-1, 1], replicated over RGB as in training."""
    x = torch.from_numpy(np.asarray(grey, np.float32) * 2.0 - 1.0)
    return x[None, None].expand(1, 3, *x.shape).to(device=device, dtype=dtype)


def generate(
    model: GenerationModel,
    prompt: str,
    settings: GenerationSettings,
    *,
    init_grey: np.ndarray | None = None,
    control_rgb: np.ndarray | None = None,
    progress: bool = True,
) -> list[Generated]:
    """Generate ``settings.num_images`` tiles for ``prompt``.

    ``init_grey``: img2img from this grey tile ([0, 1], the model's size) with ``settings.strength``.
    ``control_rgb``: a palette sketch (rows, cols, 3) uint8 at the model's size, through the
    attached ControlNet with ``settings.conditioning_scale``.
    """
    from diffusers.pipelines.stable_diffusion.pipeline_stable_diffusion import rescale_noise_cfg
    from tqdm.auto import tqdm

    pipe = model.pipe
    size = settings.size_px or model.resolution
    if size % model.vae_scale_factor:
        raise InputImageError(
            f"size {size}", f"must be a multiple of the VAE's factor {model.vae_scale_factor}"
        )
    for name, array in (("input image", init_grey), ("sketch", control_rgb)):
        if array is not None and tuple(np.shape(array)[:2]) != (size, size):
            raise InputImageError(
                name, f"is {np.shape(array)[1]}×{np.shape(array)[0]} px, the model draws {size}×{size}"
            )
    if control_rgb is not None and model.controlnet is None:
        raise SarPipelineError("sketch", "no ControlNet is attached to the model")
    text, negative = conditioning_texts(model, prompt, settings.negative_prompt)
    device, dtype = model.device, pipe.unet.dtype
    guidance = settings.guidance_scale > 1.0
    rescale = default_guidance_rescale(model, settings.guidance_rescale)
    embeds, added = encode_texts(model, [text], size)
    if guidance:  # unconditional branch first
        negative_embeds, negative_added = encode_texts(model, [negative], size)
        embeds = torch.cat([negative_embeds, embeds])
        if added is not None:
            added = {k: torch.cat([negative_added[k], v]) for k, v in added.items()}
    latent_side = size // model.vae_scale_factor
    vae_scale = pipe.vae.config.scaling_factor
    init_latent = None
    if init_grey is not None:
        with torch.no_grad():
            init_latent = (
                pipe.vae.encode(to_model_tensor(init_grey, device, dtype)).latent_dist.mode() * vae_scale
            )
    control = None
    if control_rgb is not None:
        control = torch.from_numpy(np.asarray(control_rgb, np.float32) / 255.0).permute(2, 0, 1)[None]
        control = control.to(device=device, dtype=dtype)
        control = torch.cat([control, control]) if guidance else control

    results = []
    for i in range(settings.num_images):
        seed = settings.seed + i
        generator = torch.Generator(device="cpu").manual_seed(seed)
        scheduler = make_scheduler(settings.scheduler, pipe.scheduler.config)
        scheduler.set_timesteps(settings.steps, device=device)
        timesteps = scheduler.timesteps
        # ancestral / stochastic samplers draw their noise from the image's own generator
        accepts = inspect.signature(scheduler.step).parameters
        step_options = {"generator": generator} if "generator" in accepts else {}
        noise = torch.randn((1, pipe.unet.config.in_channels, latent_side, latent_side), generator=generator)
        noise = noise.to(device=device, dtype=dtype)
        start = 0
        if init_latent is not None:
            run = min(int(round(settings.steps * settings.strength)), settings.steps)
            start = (settings.steps - run) * scheduler.order
            timesteps = timesteps[start:]
        if hasattr(scheduler, "set_begin_index"):
            # the step counter starts here, not where the first timestep value first occurs: Karras
            # sigmas on a zero-terminal-SNR schedule repeat timestep 999, which would skip a step
            scheduler.set_begin_index(start)
        if init_latent is None:
            latents = noise * scheduler.init_noise_sigma
        else:
            if len(timesteps) == 0:
                latents = init_latent
            else:
                latents = scheduler.add_noise(init_latent, noise, timesteps[:1])
        for t in tqdm(
            timesteps, desc=f"image {i + 1}/{settings.num_images}", disable=not progress, leave=False
        ):
            latent_in = torch.cat([latents, latents]) if guidance else latents
            latent_in = scheduler.scale_model_input(latent_in, t)
            extra: dict[str, Any] = {}
            with torch.no_grad():
                if control is not None:
                    down, mid = model.controlnet(
                        latent_in,
                        t,
                        encoder_hidden_states=embeds,
                        controlnet_cond=control,
                        conditioning_scale=settings.conditioning_scale,
                        added_cond_kwargs=added,
                        return_dict=False,
                    )
                    extra = {"down_block_additional_residuals": down, "mid_block_additional_residual": mid}
                pred = pipe.unet(
                    latent_in,
                    t,
                    encoder_hidden_states=embeds,
                    added_cond_kwargs=added,
                    return_dict=False,
                    **extra,
                )[0]
            if guidance:
                uncond, conditional = pred.chunk(2)
                pred = uncond + settings.guidance_scale * (conditional - uncond)
                if rescale > 0:
                    pred = rescale_noise_cfg(pred, conditional, guidance_rescale=rescale)
            latents = scheduler.step(pred, t, latents, return_dict=False, **step_options)[0]
        with torch.no_grad():
            rgb = pipe.vae.decode(latents / vae_scale, return_dict=False)[0]
        rgb = ((rgb.float().clamp(-1, 1) + 1) / 2)[0].cpu().numpy()  # 3×H×W in [0, 1]
        spread = rgb.max(axis=0) - rgb.min(axis=0)
        results.append(
            Generated(
                image=rgb.mean(axis=0).astype(np.float32),
                seed=seed,
                channel_spread_mean=round(float(spread.mean()), 5),
                channel_spread_max=round(float(spread.max()), 5),
                settings={
                    "prompt": prompt,
                    "text": text,
                    "negative_prompt": negative,
                    "seed": seed,
                    "steps": settings.steps,
                    "scheduler": settings.scheduler,
                    "guidance_scale": settings.guidance_scale,
                    "guidance_rescale": rescale,
                    "strength": settings.strength if init_latent is not None else None,
                    "conditioning_scale": settings.conditioning_scale if control is not None else None,
                    "size_px": size,
                    "dtype": settings.dtype,
                },
            )
        )
    return results
