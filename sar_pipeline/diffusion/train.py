"""Fine-tune Stable Diffusion on SAR tiles: UNet and text encoder, each with its own learning rate.

Read top to bottom: arguments, set-up (accelerator, models, latent cache, what is trained,
optimizer), the loop, checkpointing, the end. Paper recipe by default (see config.py).

    python -m sar_pipeline.diffusion.train --config run.json
    accelerate launch --multi_gpu --num_processes 2 -m sar_pipeline.diffusion.train --config run.json
    ACCELERATE_USE_CPU=1 torchrun --nproc_per_node 2 -m sar_pipeline.diffusion.train --config run.json

(DDP on CPUs goes through torchrun with gloo: ``accelerate launch --cpu`` starts several CPU
processes only through mpirun. ``launch.launch_command`` builds the right line for each case.)

Standalone it logs to the console; launched by Dagster Pipes (the ``sd_model`` asset) it also
reports progress, one custom message per checkpoint and the final materialisation to the parent.
Under ``accelerate launch`` only the main process reports.

Outputs under ``output_dir``::

    train_config.json
    checkpoints/checkpoint-<step>/          complete checkpoints only (written as .partial, then renamed)
        state/                              resumable state, safetensors + JSON only (see checkpoint.py)
        pipeline/                           diffusers StableDiffusionPipeline (safetensors)
        checkpoint.json                     step, epoch, batch position, loss, learning rates (written last)
    samples/step-<step>.png                 validation grid (fixed prompts and seed)
    logs/                                   TensorBoard
    losses.json, final.json                 loss history; the final checkpoint, throughput
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import io
import json
import math
import os
import shutil
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from sar_pipeline.diffusion.checkpoint import (
    PARTIAL_SUFFIX,
    TrainingProgress,
    check_checkpoint,
    checkpoint_name,
    list_checkpoints,
    load_training_state,
    save_training_state,
)
from sar_pipeline.diffusion.config import TrainConfig
from sar_pipeline.errors import ConfigError, ModelError
from sar_pipeline.storage import atomic_write_bytes

# ==============================================================================================
# arguments


def parse_args(argv: list[str] | None = None) -> TrainConfig:
    """``--config FILE`` (JSON/YAML), plus ``--output-dir`` and ``--max-train-steps`` overrides."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", required=True, help="JSON or YAML file of TrainConfig options")
    parser.add_argument("--output-dir", default=None, help="override output_dir")
    parser.add_argument("--max-train-steps", type=int, default=None, help="override max_train_steps")
    args = parser.parse_args(argv)
    cfg = TrainConfig.from_file(args.config)
    if args.output_dir is not None:
        cfg.output_dir = args.output_dir
    if args.max_train_steps is not None:
        cfg.max_train_steps = args.max_train_steps
    return cfg


# ==============================================================================================
# reporting: console always, Dagster Pipes when launched by it (main process only)


class Reporter:
    """Sends progress to the console and, under Dagster Pipes, to the orchestrating process."""

    def __init__(self, pipes=None):
        self.pipes = pipes

    def log(self, message: str) -> None:
        print(message, flush=True)
        if self.pipes is not None:
            self.pipes.log.info(message)

    def checkpoint(self, payload: dict[str, Any]) -> None:
        if self.pipes is not None:
            self.pipes.report_custom_message({"kind": "checkpoint", **payload})

    def materialization(self, metadata: dict[str, Any]) -> None:
        if self.pipes is not None:
            self.pipes.report_asset_materialization(metadata=metadata)


@contextlib.contextmanager
def open_reporter():
    """A Reporter bound to Dagster Pipes if this process was launched by Pipes and is rank 0."""
    from dagster_pipes import PipesEnvVarParamsLoader, open_dagster_pipes

    is_main = int(os.environ.get("RANK", "0")) == 0
    if is_main and PipesEnvVarParamsLoader().is_dagster_pipes_process():
        with open_dagster_pipes() as pipes:
            yield Reporter(pipes)
    else:
        yield Reporter(None)


# ==============================================================================================
# small helpers the loop uses


def step_generators(
    seed: int, step: int, micro: int, rank: int, data_device, device
) -> tuple[torch.Generator, torch.Generator]:
    """The random streams of one micro-batch: data side (flips, caption dropout) on ``data_device``,
    noise and timesteps on ``device``.

    They depend only on (seed, step, micro, rank), so a resumed run draws exactly what an
    uninterrupted one would have drawn.
    """
    key = (seed * 1_000_003 + step * 1009 + micro * 31 + rank) % (2**63)
    return torch.Generator(device=data_device).manual_seed(key), torch.Generator(device=device).manual_seed(
        key
    )


def synchronize(device) -> None:
    """Wait for queued GPU work (only for timing; the loop itself never waits on the GPU)."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def build_pipeline(unet, text_encoder, vae, tokenizer, scheduler_config):
    """A StableDiffusionPipeline (DDIM sampler with the training noise schedule) from components."""
    from diffusers import DDIMScheduler, StableDiffusionPipeline

    return StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=DDIMScheduler.from_config(scheduler_config),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


def sample_grid(pipeline, cfg: TrainConfig, device) -> tuple[Any, list[Any]]:
    """Images of the validation prompts at a fixed seed, and their grid (PIL)."""
    from sar_pipeline.pictures import grid

    pipeline = pipeline.to(device)
    pipeline.set_progress_bar_config(disable=True)
    images = []
    for i, prompt in enumerate(cfg.validation_prompts):
        gen = torch.Generator(device="cpu").manual_seed(cfg.validation_seed + i)
        images.append(
            pipeline(
                prompt,
                num_inference_steps=cfg.validation_steps,
                guidance_scale=cfg.validation_guidance_scale,
                height=cfg.resolution,
                width=cfg.resolution,
                generator=gen,
            ).images[0]
        )
    return grid(
        images,
        columns=len(images),
        labels=[p.replace("An aerial view of ", "") for p in cfg.validation_prompts],
    ), images


def mean_brightness(prompts: list[str], images: list[Any]) -> dict[str, float]:
    """Mean pixel value (0–1) of each validation prompt's sample: how the prompt sets the tone."""
    import numpy as np

    return {
        p: round(float(np.asarray(im, dtype=np.float32).mean() / 255.0), 4)
        for p, im in zip(prompts, images, strict=True)
    }


def add_adapter(model, cfg: TrainConfig, rank: int, alpha: int, targets: list[str]):
    """Wrap ``model`` in a peft adapter (LoRA, LoHa or LoKr) whose weights alone are trained."""
    import peft

    kind = {"lora": peft.LoraConfig, "loha": peft.LoHaConfig, "lokr": peft.LoKrConfig}[cfg.adapter_type]
    kwargs = {"r": rank, "target_modules": targets}
    kwargs["lora_alpha" if cfg.adapter_type == "lora" else "alpha"] = alpha
    return peft.get_peft_model(model, kind(**kwargs))


def merged(model):
    """A plain (un-adapted) copy of ``model`` with any peft adapter merged into its weights."""
    import peft

    if isinstance(model, peft.PeftModel):
        return copy.deepcopy(model).merge_and_unload()
    return model


# ==============================================================================================
# training


def train(cfg: TrainConfig, reporter: Reporter | None = None, base_model=None) -> dict[str, Any]:
    """Run (or resume) one training run; return the summary written to ``final.json``.

    ``base_model`` (a models.BaseModel) replaces loading ``cfg.base_model_path`` (benchmarks).
    """
    from accelerate import Accelerator
    from accelerate.utils import ProjectConfiguration, set_seed
    from diffusers import DDPMScheduler
    from diffusers.optimization import get_scheduler
    from diffusers.training_utils import EMAModel, compute_snr
    from tqdm.auto import tqdm

    from sar_pipeline.diffusion import data, latent_cache
    from sar_pipeline.diffusion.models import ensure_tiny_base, load_base_model

    reporter = reporter or Reporter(None)
    cfg.validate()
    output_dir = Path(cfg.output_dir)

    # ---------------------------------------------------------------- set-up: accelerator, seeds
    accelerator = Accelerator(
        mixed_precision=cfg.mixed_precision,
        gradient_accumulation_steps=cfg.gradient_accumulation_steps,
        log_with="tensorboard",
        project_config=ProjectConfiguration(
            project_dir=str(output_dir), logging_dir=str(output_dir / "logs")
        ),
    )
    main = accelerator.is_main_process
    if not main:
        reporter = Reporter(None)
    set_seed(cfg.seed, deterministic=cfg.deterministic)
    if cfg.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
    if cfg.allow_tf32:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    if main:
        output_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(output_dir / "train_config.json", json.dumps(cfg.to_dict(), indent=1).encode())

    # ---------------------------------------------------------------- models
    storage_root = Path(cfg.storage_root)
    dataset_version = cfg.dataset_version or data.current_version(storage_root)
    base_path = Path(cfg.base_model_path) if cfg.base_model_path else output_dir / "tiny-base"
    if cfg.preset == "tiny" and main and base_model is None:
        # no pretrained VAE on the CPU demo: the tiny base trains its VAE on the training tiles first
        ensure_tiny_base(
            base_path, storage_root, dataset_version, cfg.resolution, cfg.tiny_vae_steps, cfg.seed
        )
    accelerator.wait_for_everyone()
    base = base_model or load_base_model(base_path, cfg.single_file_config)
    unet, text_encoder, vae, tokenizer = base.unet, base.text_encoder, base.vae, base.tokenizer
    schedule_changes: dict[str, Any] = {"prediction_type": cfg.prediction_type} if cfg.prediction_type else {}
    if cfg.zero_terminal_snr:
        schedule_changes.update(rescale_betas_zero_snr=True, timestep_spacing="trailing")
    noise_scheduler = DDPMScheduler.from_config(base.scheduler.config, **schedule_changes)

    # ---------------------------------------------------------------- the latent cache (no VAE in the loop)
    if cfg.latent_cache_dir:
        cache_folder = Path(cfg.latent_cache_dir)
    else:
        cache_folder = latent_cache.require_latent_cache(storage_root, dataset_version, vae, cfg.resolution)
    train_set = latent_cache.load_latent_cache(cache_folder, "train", resolution=cfg.resolution)
    if cfg.augmentation == "flip_azimuth" and train_set.latents_flip_azimuth is None:
        raise latent_cache.LatentCacheError(
            cache_folder, "augmentation='flip_azimuth' needs a cache built with_azimuth_flip"
        )
    captions = [
        t if t.startswith(cfg.activation_token) else f"{cfg.activation_token} {t}" for t in train_set.texts
    ]

    def tokenize(texts: list[str]) -> torch.Tensor:
        return tokenizer(
            texts,
            padding="max_length",
            max_length=tokenizer.model_max_length,
            truncation=True,
            return_tensors="pt",
        ).input_ids

    input_ids = tokenize(captions)
    empty_ids = tokenize([""])[0]
    if cfg.with_prior_preservation:
        with torch.no_grad():
            class_pixels = data.load_class_images(cfg.class_data_dir, cfg.resolution)
            class_latents = torch.cat(
                [vae.encode(class_pixels[i : i + 8]).latent_dist.mean for i in range(0, len(class_pixels), 8)]
            )
        class_ids = tokenize([cfg.class_prompt])[0]
    vae_scale = train_set.scaling_factor
    vae.to("cpu")  # not used by the loop (latents are cached); kept for the checkpoints' pipelines

    # ---------------------------------------------------------------- what is trained
    weight_dtype = {"no": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[cfg.mixed_precision]
    unet.requires_grad_(cfg.train_unet and not cfg.use_lora)
    text_encoder.requires_grad_(cfg.train_text_encoder and not cfg.use_lora)
    # from_pretrained returns eval-mode modules: a trained part must be in train mode (transformers
    # checkpoints activations only in train mode), a frozen one in eval mode
    unet.train(cfg.train_unet)
    text_encoder.train(cfg.train_text_encoder)
    if cfg.gradient_checkpointing:
        unet.enable_gradient_checkpointing()
        if cfg.train_text_encoder:
            # transformers 5 renamed it; 4.x only has the old name
            getattr(
                text_encoder, "activation_checkpointing_enable", text_encoder.gradient_checkpointing_enable
            )()
    if cfg.use_lora and cfg.train_unet:
        unet = add_adapter(unet, cfg, cfg.unet_lora_rank, cfg.unet_lora_alpha, cfg.unet_lora_targets)
    if cfg.use_lora and cfg.train_text_encoder:
        text_encoder = add_adapter(
            text_encoder,
            cfg,
            cfg.text_encoder_lora_rank,
            cfg.text_encoder_lora_alpha,
            cfg.text_encoder_lora_targets,
        )
    if cfg.channels_last:
        unet.to(memory_format=torch.channels_last)
    # a frozen part stays fp32 (autocast computes in bf16/fp16) so checkpoints keep full-precision weights
    if not cfg.train_unet:
        unet.to(accelerator.device)
    if not cfg.train_text_encoder:
        text_encoder.to(accelerator.device)
    ema = None
    if cfg.use_ema:
        if cfg.use_lora or not cfg.train_unet:
            raise ConfigError("use_ema", "EMA is kept for a full UNet fine-tune only (not with LoRA)")
        ema = EMAModel(unet.parameters(), decay=cfg.ema_decay, model_cls=type(unet), model_config=unet.config)
        ema.to(accelerator.device)

    # ---------------------------------------------------------------- optimizer: one parameter group per part
    param_groups = []
    if cfg.train_unet:
        param_groups.append(
            {
                "name": "unet",
                "params": [p for p in unet.parameters() if p.requires_grad],
                "lr": cfg.unet_learning_rate,
            }
        )
    if cfg.train_text_encoder:
        param_groups.append(
            {
                "name": "text_encoder",
                "params": [p for p in text_encoder.parameters() if p.requires_grad],
                "lr": cfg.text_encoder_learning_rate,
            }
        )
    adam_kwargs = {
        "betas": (cfg.adam_beta1, cfg.adam_beta2),
        "weight_decay": cfg.adam_weight_decay,
        "eps": cfg.adam_epsilon,
    }
    if cfg.use_8bit_adam:
        try:
            import bitsandbytes as bnb
        except ImportError as exc:
            raise ModelError(
                "use_8bit_adam", "bitsandbytes is not installed: pip install 'sar-pipeline[bnb]'"
            ) from exc
        optimizer = bnb.optim.AdamW8bit(param_groups, **adam_kwargs)
    else:
        optimizer = torch.optim.AdamW(param_groups, fused=cfg.fused_adam or None, **adam_kwargs)

    world = accelerator.num_processes
    batches_per_epoch = len(train_set.latents) // (cfg.train_batch_size * world)
    if batches_per_epoch == 0:
        raise ConfigError(
            cache_folder,
            f"{len(train_set.latents)} training tiles < one global batch of {cfg.train_batch_size * world} (lower train_batch_size)",
        )
    steps_per_epoch = batches_per_epoch // cfg.gradient_accumulation_steps
    if steps_per_epoch == 0:
        raise ConfigError(
            "gradient_accumulation_steps",
            f"{cfg.gradient_accumulation_steps} micro-batches per step but an epoch holds only "
            f"{batches_per_epoch} (lower gradient_accumulation_steps or train_batch_size)",
        )
    max_steps = cfg.max_train_steps or cfg.num_train_epochs * steps_per_epoch
    num_epochs = math.ceil(max_steps / steps_per_epoch)
    lr_scheduler = get_scheduler(
        cfg.lr_scheduler,
        optimizer=optimizer,
        num_warmup_steps=cfg.lr_warmup_steps * world,
        num_training_steps=max_steps * world,
    )

    prepared = accelerator.prepare(
        *([unet] if cfg.train_unet else []),
        *([text_encoder] if cfg.train_text_encoder else []),
        optimizer,
        lr_scheduler,
    )
    if cfg.train_unet:
        unet, *prepared = prepared
    if cfg.train_text_encoder:
        text_encoder, *prepared = prepared
    optimizer, lr_scheduler = prepared
    if cfg.torch_compile:
        unet = torch.compile(unet)

    def unwrapped(model):
        return accelerator.unwrap_model(model._orig_mod if hasattr(model, "_orig_mod") else model)

    progress = TrainingProgress()

    def trained_parts() -> dict[str, torch.nn.Module]:
        parts = {"unet": unet} if cfg.train_unet else {}
        if cfg.train_text_encoder:
            parts["text_encoder"] = text_encoder
        return {name: unwrapped(model) for name, model in parts.items()}

    # ---------------------------------------------------------------- resume from the latest complete checkpoint
    resume_from = None
    if cfg.resume_from_checkpoint == "latest":
        complete = list_checkpoints(output_dir)
        resume_from = complete[-1] if complete else None
    elif cfg.resume_from_checkpoint:
        resume_from = Path(cfg.resume_from_checkpoint)
    if resume_from is not None:
        check_checkpoint(resume_from)
        progress, accelerator.step = load_training_state(
            resume_from / "state",
            models=trained_parts(),
            optimizer=optimizer,
            lr_scheduler=lr_scheduler,
            rank=accelerator.process_index,
            ema=ema,
            grad_scaler=accelerator.scaler,
        )
        if ema is not None:
            ema.to(accelerator.device)  # accelerate loads registered objects onto the CPU
        reporter.log(
            f"resumed from {resume_from}: step {progress.global_step}, epoch {progress.epoch}, "
            f"batch {progress.batch_in_epoch}"
        )

    if main:
        hparams = {k: v for k, v in cfg.to_dict().items() if isinstance(v, int | float | str | bool)}
        accelerator.init_trackers("sd_model", config=hparams)

    # ---------------------------------------------------------------- checkpointing
    def save_checkpoint(loss: float) -> Path:
        """State + pipeline into checkpoint-<step>.partial, then one rename: the folder is complete or absent."""
        step = progress.global_step
        final = output_dir / "checkpoints" / checkpoint_name(step)
        partial = final.with_name(final.name + PARTIAL_SUFFIX)
        if main:
            shutil.rmtree(partial, ignore_errors=True)
            partial.mkdir(parents=True)
        accelerator.wait_for_everyone()
        save_training_state(
            partial / "state",
            models=trained_parts(),
            optimizer=optimizer,
            lr_scheduler=lr_scheduler,
            progress=progress,
            accumulation_step=accelerator.step,
            rank=accelerator.process_index,
            is_main=main,
            ema=ema,
            grad_scaler=accelerator.scaler,
        )
        info: dict[str, Any] = {}
        if main:
            unet_out = merged(unwrapped(unet))
            if ema is not None:
                unet_out = copy.deepcopy(unet_out)
                ema.copy_to(unet_out.parameters())
            pipe = build_pipeline(
                unet_out,
                merged(unwrapped(text_encoder)),
                vae,
                tokenizer,
                noise_scheduler.config,
            )
            pipe.save_pretrained(partial / "pipeline", safe_serialization=True)
            grid_path = None
            prompt_brightness = None
            if cfg.validation_prompts:
                with torch.autocast(
                    accelerator.device.type, dtype=weight_dtype, enabled=cfg.mixed_precision != "no"
                ):
                    grid_image, images = sample_grid(pipe, cfg, accelerator.device)
                prompt_brightness = mean_brightness(cfg.validation_prompts, images)
                vae.to("cpu")  # sampling moved it to the device; the loop does not use it
                grid_path = output_dir / "samples" / f"step-{step:08d}.png"
                png = io.BytesIO()
                grid_image.save(png, format="PNG")
                atomic_write_bytes(grid_path, png.getvalue())
            info = {
                "step": step,
                "epoch": progress.epoch,
                "batch_in_epoch": progress.batch_in_epoch,
                "loss": loss,
                "learning_rates": {
                    g.get("name", str(i)): g["lr"] for i, g in enumerate(optimizer.param_groups)
                },
                "dataset_version": dataset_version,
                "checkpoint": str(final),
                "pipeline": str(final / "pipeline"),
                "sample_grid": str(grid_path) if grid_path else None,
                "validation_mean_brightness": prompt_brightness,
            }
            (partial / "checkpoint.json").write_text(json.dumps(info, indent=1))
            if final.exists():
                shutil.rmtree(final)
            os.replace(partial, final)
            if cfg.checkpoints_total_limit > 0:
                for old in list_checkpoints(output_dir)[: -cfg.checkpoints_total_limit]:
                    shutil.rmtree(old, ignore_errors=True)
            reporter.checkpoint(info)
            reporter.log(f"checkpoint {final} (step {step}, loss {loss:.4f})")
        accelerator.wait_for_everyone()
        return final

    # ---------------------------------------------------------------- the loop
    rank = accelerator.process_index
    device = accelerator.device
    bar = tqdm(total=max_steps, initial=progress.global_step, desc="steps", disable=not main)
    step_losses: list[torch.Tensor] = []  # this optimizer step's micro-batch losses (on device)
    pending: list[tuple[int, torch.Tensor]] = []  # step losses not yet copied to the host
    timed_images, timed_seconds, t_last = 0, 0.0, None  # throughput after throughput_warmup_steps
    warm_at = progress.global_step + cfg.throughput_warmup_steps
    # Batches are assembled where the cached latents live: on the training device when they fit
    # (then a step never copies from the host nor waits for the GPU), else in host memory.
    cache_bytes = train_set.latents.nbytes * (1 if train_set.latents_flip_azimuth is None else 2)
    data_device = device if cache_bytes <= cfg.device_cache_gib * 2**30 else torch.device("cpu")
    cache_latents = train_set.latents.to(data_device)
    cache_flips = train_set.latents_flip_azimuth
    cache_flips = cache_flips.to(data_device) if cache_flips is not None else None
    input_ids, empty_ids = input_ids.to(data_device), empty_ids.to(data_device)
    if cfg.with_prior_preservation:
        class_latents, class_ids = class_latents.to(data_device), class_ids.to(data_device)
    pin = data_device.type == "cpu" and device.type == "cuda"

    def flush_losses() -> float:
        """Copy pending step losses to the host (one sync), extend the history; return the last."""
        nonlocal pending
        if pending:
            values = torch.stack([v for _, v in pending]).tolist()
            progress.history.extend([step, value] for (step, _), value in zip(pending, values, strict=True))
            pending = []
            bar.set_postfix(loss=f"{progress.history[-1][1]:.4f}")
        return progress.history[-1][1] if progress.history else float("nan")

    last_checkpoint = resume_from
    reporter.log(
        f"training {dataset_version}: {len(train_set.latents)} tiles, {max_steps} steps "
        f"({num_epochs} epochs × {steps_per_epoch}), {world} process(es), groups "
        + ", ".join(f"{g['name']} lr={g['lr']:g}" for g in optimizer.param_groups)
    )
    if warm_at == progress.global_step:  # no warm-up: time from the first step
        t_last = time.perf_counter()
    while progress.global_step < max_steps and progress.epoch < num_epochs:
        batches = data.epoch_batches(
            len(train_set.latents), cfg.train_batch_size, cfg.seed, progress.epoch, rank, world
        )
        batches = batches[: steps_per_epoch * cfg.gradient_accumulation_steps]
        epoch_index = torch.tensor(batches, device=data_device)  # one copy per epoch
        while progress.batch_in_epoch < len(batches) and progress.global_step < max_steps:
            micro = progress.batch_in_epoch % cfg.gradient_accumulation_steps
            data_gen, noise_gen = step_generators(
                cfg.seed, progress.global_step, micro, rank, data_device, device
            )
            index = epoch_index[progress.batch_in_epoch]
            # orientation-aware augmentation: azimuth flip (pre-encoded) with p = 0.5, never a range flip
            flip = torch.rand(len(index), generator=data_gen, device=data_device) < 0.5
            latents = cache_latents[index]
            if cfg.augmentation == "flip_azimuth":
                latents = torch.where(flip[:, None, None, None], cache_flips[index], latents)
            # caption dropout: the empty prompt trains the unconditional branch used by CFG
            drop = torch.rand(len(index), generator=data_gen, device=data_device) < cfg.caption_dropout
            ids = torch.where(drop[:, None], empty_ids, input_ids[index])
            if cfg.with_prior_preservation:
                class_index = torch.randint(
                    0, len(class_latents), (len(index),), generator=data_gen, device=data_device
                )
                latents = torch.cat([latents, class_latents[class_index]])
                ids = torch.cat([ids, class_ids.expand(len(index), -1)])
            if pin:
                latents, ids = latents.pin_memory(), ids.pin_memory()
            latents = latents.to(device, non_blocking=True) * vae_scale
            ids = ids.to(device, non_blocking=True)
            if cfg.channels_last:
                latents = latents.contiguous(memory_format=torch.channels_last)

            with accelerator.accumulate(
                *[m for m, on in ((unet, cfg.train_unet), (text_encoder, cfg.train_text_encoder)) if on]
            ):
                noise = torch.randn(latents.shape, generator=noise_gen, device=device)
                if cfg.noise_offset:
                    noise += cfg.noise_offset * torch.randn(
                        latents.shape[:2] + (1, 1), generator=noise_gen, device=device
                    )
                timesteps = torch.randint(
                    0,
                    noise_scheduler.config.num_train_timesteps,
                    (len(latents),),
                    generator=noise_gen,
                    device=device,
                )
                noisy_latents = noise_scheduler.add_noise(latents, noise, timesteps)
                with accelerator.autocast():
                    encoder_hidden_states = text_encoder(ids, return_dict=False)[0]
                    model_pred = unet(noisy_latents, timesteps, encoder_hidden_states, return_dict=False)[0]
                if noise_scheduler.config.prediction_type == "v_prediction":
                    target = noise_scheduler.get_velocity(latents, noise, timesteps)
                else:
                    target = noise
                per_sample = F.mse_loss(model_pred.float(), target.float(), reduction="none").mean(
                    dim=(1, 2, 3)
                )
                if cfg.snr_gamma > 0:
                    snr = compute_snr(noise_scheduler, timesteps)
                    weights = torch.clamp(snr, max=cfg.snr_gamma)
                    weights = (
                        weights / (snr + 1)
                        if noise_scheduler.config.prediction_type == "v_prediction"
                        else weights / snr
                    )
                    per_sample = per_sample * weights
                if cfg.with_prior_preservation:
                    instance_loss, prior_loss = per_sample.chunk(2)
                    loss = instance_loss.mean() + cfg.prior_loss_weight * prior_loss.mean()
                else:
                    loss = per_sample.mean()
                accelerator.backward(loss)
                if accelerator.sync_gradients and cfg.max_grad_norm > 0:
                    accelerator.clip_grad_norm_(
                        [p for g in optimizer.param_groups for p in g["params"]], cfg.max_grad_norm
                    )
                optimizer.step()
                lr_scheduler.step()
                optimizer.zero_grad(set_to_none=True)

            step_losses.append(loss.detach())
            progress.batch_in_epoch += 1
            if t_last is not None:
                timed_images += len(index) * world
            if not accelerator.sync_gradients:
                continue
            # ---- one optimizer step done
            if ema is not None:
                ema.step(unwrapped(unet).parameters())
            progress.global_step += 1
            pending.append(
                (progress.global_step, accelerator.reduce(torch.stack(step_losses).mean(), reduction="mean"))
            )
            step_losses = []
            bar.update(1)
            if progress.global_step == warm_at:
                synchronize(device)
                if device.type == "cuda":
                    torch.cuda.reset_peak_memory_stats(device)
                t_last = time.perf_counter()
            # ~20 progress lines per run, never more often than the losses are copied to the host
            if progress.global_step % max(cfg.log_every_steps, max_steps // 20) == 0:
                reporter.log(f"step {progress.global_step}/{max_steps}, loss {flush_losses():.4f}")
            if progress.global_step % cfg.log_every_steps == 0:
                logs = {"loss": flush_losses()}
                logs.update({f"lr/{g['name']}": g["lr"] for g in optimizer.param_groups})
                accelerator.log(logs, step=progress.global_step)
            if cfg.checkpoint_every_steps and progress.global_step % cfg.checkpoint_every_steps == 0:
                if t_last is not None:
                    synchronize(device)
                    timed_seconds += time.perf_counter() - t_last
                last_checkpoint = save_checkpoint(flush_losses())
                if t_last is not None:
                    t_last = time.perf_counter()
        if progress.batch_in_epoch >= len(batches):
            progress.epoch += 1
            progress.batch_in_epoch = 0
    synchronize(device)
    if t_last is not None:
        timed_seconds += time.perf_counter() - t_last
    peak_memory = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None
    last_loss = flush_losses()
    bar.close()

    # ---------------------------------------------------------------- the end: a final checkpoint, a summary
    at_end = last_checkpoint is not None and last_checkpoint.name == checkpoint_name(progress.global_step)
    if cfg.checkpoint_at_end and not at_end:
        last_checkpoint = save_checkpoint(last_loss)
    accelerator.end_training()
    summary = {
        "checkpoint": str(last_checkpoint) if last_checkpoint else None,
        "pipeline": str(last_checkpoint / "pipeline") if last_checkpoint else None,
        "sample_grid": str(output_dir / "samples" / f"step-{progress.global_step:08d}.png"),
        "dataset_version": dataset_version,
        "steps": progress.global_step,
        "epoch": progress.epoch,
        "final_loss": progress.history[-1][1] if progress.history else None,
        "images_per_second": timed_images / timed_seconds if timed_seconds > 0 else None,
        "seconds_per_step": timed_seconds
        * world
        * cfg.train_batch_size
        * cfg.gradient_accumulation_steps
        / timed_images
        if timed_images
        else None,
        "peak_memory_gib": peak_memory / 2**30 if peak_memory is not None else None,
        "processes": world,
        "hyperparameters": cfg.to_dict(),
    }
    if main:
        atomic_write_bytes(output_dir / "losses.json", json.dumps(progress.history).encode())
        atomic_write_bytes(output_dir / "final.json", json.dumps(summary, indent=1).encode())
        reporter.materialization(
            {
                "checkpoint": summary["pipeline"],
                "dataset_version": dataset_version,
                "steps": progress.global_step,
                "final_loss": summary["final_loss"],
                "images_per_second": summary["images_per_second"],
            }
        )
    return summary


def main(argv: list[str] | None = None) -> None:
    cfg = parse_args(argv)
    with open_reporter() as reporter:
        train(cfg, reporter)


if __name__ == "__main__":
    main()
