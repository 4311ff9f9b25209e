"""Fine-tune Stable Diffusion (1.5 or XL) on SAR tiles: UNet and text encoder(s), each with its own learning rate.

Reads top to bottom like diffusers' training scripts: arguments, set-up (accelerator, models, the
latent cache, what is trained, optimizer, resume), the loop, checkpoints, the end. What this
project adds is visible in the loop: batches come from the latent cache (no VAE in the loop), the
SAR-aware augmentation flips tiles along azimuth only, and each trained part keeps its own
learning rate. Paper recipe by default (``config.py``). The model family (SD 1.5 or SDXL) is
switched in two places only: the set-up (SDXL's two text encoders as one module, two token ids per
text, the size/crop time ids) and the objective's text conditioning (``text_conditioning.py``).

    python -m sar_pipeline.diffusion.train --config run.json
    accelerate launch --multi_gpu --num_processes 2 -m sar_pipeline.diffusion.train --config run.json
    ACCELERATE_USE_CPU=1 torchrun --nproc_per_node 2 -m sar_pipeline.diffusion.train --config run.json

(``launch.launch_command`` builds the right line for each case.) Progress goes to the console and,
under Dagster Pipes, to the ``sd_model`` asset (``reporting.py``).

Outputs under ``output_dir``::

    train_config.json                       the TrainSettings of the run
    checkpoints/checkpoint-<step>/          complete checkpoints only (layout: checkpoint.py)
    samples/step-<step>.png                 validation grid (fixed prompts and seed)
    logs/                                   TensorBoard
    losses.json, final.json                 loss history; the final checkpoint, throughput
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import torch

from sar_pipeline.dataset import current_version
from sar_pipeline.diffusion.checkpoint import (
    CheckpointError,
    TrainingProgress,
    check_checkpoint,
    checkpoint_name,
    list_checkpoints,
    load_training_state,
    partial_checkpoint,
    publish_checkpoint,
    remove_checkpoint_leftovers,
    save_training_state,
)
from sar_pipeline.diffusion.config import TrainSettings, recipe_differences, recipe_of
from sar_pipeline.diffusion.data import (
    epoch_batches,
    load_class_images,
    step_generators,
    stored_tile_size,
    tokenize,
    with_activation_token,
)
from sar_pipeline.diffusion.latent_cache import (
    LatentCacheError,
    check_cache_vae,
    encode_latents,
    load_latent_cache,
    require_latent_cache,
)
from sar_pipeline.diffusion.models import assemble_pipeline, ensure_tiny_base, load_base_model
from sar_pipeline.diffusion.objective import (
    diffusion_loss,
    draw_noise,
    held_out_loss,
    sampling_scheduler,
    training_noise_scheduler,
)
from sar_pipeline.diffusion.reporting import LossLog, Reporter, Throughput, open_reporter, synchronize
from sar_pipeline.diffusion.sampling import mean_brightness, prompt_grid, sample_validation_prompts
from sar_pipeline.diffusion.text_conditioning import SdxlTextEncoders, sdxl_time_ids
from sar_pipeline.diffusion.trainable import (
    add_learned_token,
    build_optimizer,
    merged,
    set_up_trained_parts,
)
from sar_pipeline.errors import ConfigError
from sar_pipeline.pictures import png_bytes
from sar_pipeline.storage import atomic_write_bytes

# ==============================================================================================
# arguments


def parse_args(argv: list[str] | None = None) -> TrainSettings:
    """``--config FILE`` (JSON/YAML of TrainSettings), plus ``--output-dir`` and ``--max-train-steps``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", required=True, help="JSON or YAML file of TrainSettings options")
    parser.add_argument("--output-dir", default=None, help="override output_dir")
    parser.add_argument("--max-train-steps", type=int, default=None, help="override max_train_steps")
    args = parser.parse_args(argv)
    cfg = TrainSettings.from_file(args.config)
    overrides = {"output_dir": args.output_dir, "max_train_steps": args.max_train_steps}
    overrides = {k: v for k, v in overrides.items() if v is not None}
    if overrides:
        cfg = TrainSettings.from_dict({**cfg.model_dump(), **overrides}, source=args.config)
    return cfg


# ==============================================================================================
# what the set-up produces, and what checkpoints and the loop share


@dataclass
class HeldOut:
    """Validation tiles for the held-out loss: scaled latents and their token ids (CPU)."""

    latents: torch.Tensor
    input_ids: torch.Tensor


def load_held_out(
    cfg: TrainSettings, cache_folder: Path, storage_root: Path, dataset_version: str, vae, tokenizer, reporter
) -> HeldOut | None:
    """The validation split's latents: from the latent cache, else encoded now with ``vae`` from the
    dataset (a cache built for 'train' only). None, said in the log, when there is no validation split."""
    if not cfg.validation_loss_timesteps:
        return None
    resolution = cfg.tile_resolution()
    try:
        split = load_latent_cache(cache_folder, "validation", resolution=resolution)
        latents, texts, scale = split.latents, split.texts, split.scaling_factor
    except LatentCacheError:
        try:
            from sar_pipeline.dataset import load_dataset_table
            from sar_pipeline.diffusion.data import tiles_from_table

            table = load_dataset_table(storage_root, version=dataset_version, split="validation")
            table = table.slice(0, cfg.validation_loss_tiles)
            images, texts, _ = tiles_from_table(table, resolution)
        except (ConfigError, OSError) as exc:
            reporter.log(f"no held-out loss: the validation split cannot be read ({exc})")
            return None
        latents = encode_latents(vae, images) if len(images) else images
        scale = float(vae.config.scaling_factor)
    if not len(latents):
        reporter.log("no held-out loss: the validation split is empty")
        return None
    latents, texts = latents[: cfg.validation_loss_tiles], texts[: cfg.validation_loss_tiles]
    ids = tokenize(tokenizer, with_activation_token(list(texts), cfg.activation_token, cfg.learned_token))
    return HeldOut(latents.float() * scale, ids)


@dataclass
class TrainingRun:
    """The models, optimizer and places of one run (after ``accelerator.prepare``)."""

    cfg: TrainSettings
    accelerator: Any
    unet: Any
    text_encoder: Any
    vae: Any
    tokenizer: Any
    noise_scheduler: Any
    optimizer: Any
    lr_scheduler: Any
    ema: dict[str, Any]  # trained part name → diffusers EMAModel (use_ema)
    output_dir: Path
    dataset_version: str
    reporter: Reporter
    held_out: HeldOut | None  # the validation tiles of the held-out loss (None: no validation split)
    recipe: dict[str, Any]  # recipe_of the settings as given: a checkpoint records it, resume compares
    time_ids: torch.Tensor | None = None  # SDXL's size/crop conditioning of every tile (None: SD 1.5)

    def unwrapped(self, model):
        """The plain module under DDP / torch.compile wrappers."""
        return self.accelerator.unwrap_model(getattr(model, "_orig_mod", model))

    def trained_parts(self) -> dict[str, torch.nn.Module]:
        """The trained modules by name (unwrapped), whose weights a checkpoint's state keeps."""
        parts = {"unet": self.unet} if self.cfg.train_unet else {}
        if self.cfg.train_text_encoder:
            parts["text_encoder"] = self.text_encoder
        return {name: self.unwrapped(model) for name, model in parts.items()}


def optimizer_micro_step(
    accelerator,
    trained: list[torch.nn.Module],
    optimizer,
    lr_scheduler,
    max_grad_norm: float,
    compute_loss: Callable[[], torch.Tensor],
) -> torch.Tensor:
    """One micro-batch: loss, backward, and every ``gradient_accumulation_steps``-th time gradient
    clipping and the optimizer and schedule steps (accelerate skips them in between and scales the
    loss so k micro-batches give the gradient of one batch k times larger). Returns the loss."""
    with accelerator.accumulate(*trained):
        loss = compute_loss()
        accelerator.backward(loss)
        if accelerator.sync_gradients and max_grad_norm > 0:
            accelerator.clip_grad_norm_(
                [p for g in optimizer.param_groups for p in g["params"]], max_grad_norm
            )
        optimizer.step()
        lr_scheduler.step()
        optimizer.zero_grad(set_to_none=True)
    return loss


def plan_steps(cfg: TrainSettings, num_tiles: int, world: int, cache_folder: Path) -> tuple[int, int, int]:
    """(optimizer steps per epoch, optimizer steps of the run, epochs) for ``num_tiles`` training tiles
    on ``world`` processes; ConfigError when one epoch cannot make a single optimizer step."""
    batches_per_epoch = num_tiles // (cfg.train_batch_size * world)
    if batches_per_epoch == 0:
        raise ConfigError(
            cache_folder,
            f"{num_tiles} training tiles < one global batch of {cfg.train_batch_size * world} "
            "(lower train_batch_size)",
        )
    steps_per_epoch = batches_per_epoch // cfg.gradient_accumulation_steps
    if steps_per_epoch == 0:
        raise ConfigError(
            "gradient_accumulation_steps",
            f"{cfg.gradient_accumulation_steps} micro-batches per step but an epoch holds only "
            f"{batches_per_epoch} (lower gradient_accumulation_steps or train_batch_size)",
        )
    max_steps = cfg.max_train_steps or cfg.num_train_epochs * steps_per_epoch
    return steps_per_epoch, max_steps, math.ceil(max_steps / steps_per_epoch)


def run_summary(
    cfg: TrainSettings,
    progress: TrainingProgress,
    last_checkpoint: Path | None,
    dataset_version: str,
    throughput: Throughput,
    peak_memory: int | None,
    world: int,
) -> dict[str, Any]:
    """What ``final.json`` holds: the last checkpoint, the loss, throughput (images/s, s/step), memory."""
    micro_batches = world * cfg.train_batch_size * cfg.gradient_accumulation_steps
    return {
        "checkpoint": str(last_checkpoint) if last_checkpoint else None,
        "pipeline": str(last_checkpoint / "pipeline") if last_checkpoint else None,
        "sample_grid": str(Path(cfg.output_dir) / "samples" / f"step-{progress.global_step:08d}.png"),
        "dataset_version": dataset_version,
        "steps": progress.global_step,
        "epoch": progress.epoch,
        "final_loss": progress.history[-1][1] if progress.history else None,
        "images_per_second": throughput.images_per_second(),
        "seconds_per_step": throughput.seconds * micro_batches / throughput.images
        if throughput.images
        else None,
        "peak_memory_gib": peak_memory / 2**30 if peak_memory is not None else None,
        "processes": world,
        "hyperparameters": cfg.model_dump(),
    }


# ==============================================================================================
# training


def train(cfg: TrainSettings, reporter: Reporter | None = None, base_model=None) -> dict[str, Any]:
    """Run (or resume) one training run; return the summary written to ``final.json``.

    ``base_model`` (a models.BaseModel) replaces loading ``cfg.base_model_path`` (benchmarks).
    """
    from accelerate import Accelerator, PartialState
    from accelerate.utils import (
        DistributedDataParallelKwargs,
        ProjectConfiguration,
        parse_flag_from_env,
        set_seed,
    )
    from diffusers.optimization import get_scheduler
    from diffusers.training_utils import EMAModel
    from tqdm.auto import tqdm

    output_dir = Path(cfg.output_dir)
    resolution = cfg.tile_resolution()
    requested = cfg  # as given: written to train_config.json, compared on resume
    # the global batch (the paper's 16) shared by however many processes run: per-process batch
    # and accumulation follow from it
    # (the same process state the Accelerator below adopts: PartialState alone ignores
    # ACCELERATE_USE_CPU and would set up several CPU processes as independent single ones)
    state = PartialState(cpu=parse_flag_from_env("ACCELERATE_USE_CPU"))
    batch_size, accumulation = cfg.batch_plan(state.num_processes)
    cfg = cfg.model_copy(update={"train_batch_size": batch_size, "gradient_accumulation_steps": accumulation})

    # ---------------------------------------------------------------- set-up: accelerator, seeds
    accelerator = Accelerator(
        mixed_precision=cfg.mixed_precision,
        gradient_accumulation_steps=cfg.gradient_accumulation_steps,
        log_with="tensorboard",
        project_config=ProjectConfiguration(
            project_dir=str(output_dir), logging_dir=str(output_dir / "logs")
        ),
        # SDXL reads its text encoders' penultimate layer: the last layer of the first gets no
        # gradient, which DDP must be told (as diffusers' SDXL training scripts do)
        kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)]
        if cfg.family == "sdxl" and cfg.train_text_encoder
        else None,
    )
    main = accelerator.is_main_process
    reporter = (reporter or Reporter(None)) if main else Reporter(None)
    device, rank, world = accelerator.device, accelerator.process_index, accelerator.num_processes
    set_seed(cfg.seed, deterministic=cfg.deterministic)
    if cfg.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
    if cfg.allow_tf32:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    if main:
        output_dir.mkdir(parents=True, exist_ok=True)

    # ---------------------------------------------------------------- models
    storage_root = Path(cfg.storage_root)
    dataset_version = cfg.dataset_version or current_version(storage_root)
    base_path = Path(cfg.base_model_path) if cfg.base_model_path else output_dir / "tiny-base"
    if cfg.is_tiny and main and base_model is None:
        # no pretrained VAE on the CPU demo: the tiny base trains its VAE on the training tiles first
        ensure_tiny_base(
            base_path, storage_root, dataset_version, resolution, cfg.tiny_vae_steps, cfg.seed, cfg.family
        )
    accelerator.wait_for_everyone()
    base = base_model or load_base_model(base_path, cfg.single_file_config)
    if base.family != cfg.family:
        raise ConfigError(
            base_path, f"holds a {base.family} model but preset {cfg.preset!r} trains {cfg.family}"
        )
    unet, text_encoder, vae, tokenizer = base.unet, base.text_encoder, base.vae, base.tokenizer
    # the model family's text conditioning (text_conditioning.py): SDXL's two text encoders are
    # trained as one module, read two token ids per text, and the UNet sees each tile's size/crop
    # time ids — its size as stored (before the resize to ``resolution``), no crop (tiles are whole)
    time_ids = None
    if base.family == "sdxl":
        text_encoder = SdxlTextEncoders(base.text_encoder, base.text_encoder_2)
        tokenizer = (base.tokenizer, base.tokenizer_2)
        tile_size = stored_tile_size(storage_root, dataset_version)
        time_ids = sdxl_time_ids(tile_size, (0, 0), (resolution, resolution))
    noise_scheduler = training_noise_scheduler(base.scheduler, cfg.prediction_type, cfg.zero_terminal_snr)
    learned_token_ids = None
    if cfg.learned_token:  # textual inversion: a new token, its own embedding row in each text encoder
        learned_token_ids = add_learned_token(
            tokenizer, text_encoder, cfg.learned_token, cfg.learned_token_init
        )

    # ---------------------------------------------------------------- the latent cache (no VAE in the loop)
    if cfg.latent_cache_dir:
        cache_folder = Path(cfg.latent_cache_dir)
        check_cache_vae(cache_folder, vae)  # a folder named explicitly must still be of this VAE
    else:
        cache_folder = require_latent_cache(storage_root, dataset_version, vae, resolution)
    train_set = load_latent_cache(cache_folder, "train", resolution=resolution)
    if cfg.augmentation == "flip_azimuth" and train_set.latents_flip_azimuth is None:
        raise LatentCacheError(
            cache_folder, "augmentation='flip_azimuth' needs a cache built with_azimuth_flip"
        )
    input_ids = tokenize(
        tokenizer, with_activation_token(train_set.texts, cfg.activation_token, cfg.learned_token)
    )
    empty_ids = tokenize(tokenizer, [""])[0]
    if cfg.with_prior_preservation:
        class_latents = encode_latents(vae, load_class_images(cfg.class_data_dir, resolution))
        class_ids = tokenize(tokenizer, [cfg.class_prompt])[0]
    held_out = load_held_out(cfg, cache_folder, storage_root, dataset_version, vae, tokenizer, reporter)
    vae.to("cpu")  # not used by the loop (latents are cached); kept for the checkpoints' pipelines

    # ---------------------------------------------------------------- what is trained, and the optimizer
    unet, text_encoder, learned_embeddings = set_up_trained_parts(
        cfg, unet, text_encoder, device, learned_token_ids
    )
    # the EMA of every trained part: a checkpoint pairs the averaged UNet with the averaged text
    # encoder, never with the current one it was not averaged alongside
    ema = {}
    if cfg.use_ema:
        for name, model in (("unet", unet), ("text_encoder", text_encoder)):
            if getattr(cfg, f"train_{name}"):
                ema[name] = EMAModel(model.parameters(), decay=cfg.ema_decay)
                ema[name].to(device)
    # one AdamW parameter group per trained part, each with its own learning rate (paper: 5e-5 / 5e-6)
    optimizer = build_optimizer(cfg, unet, text_encoder, learned_embeddings)
    steps_per_epoch, max_steps, num_epochs = plan_steps(cfg, len(train_set.latents), world, cache_folder)
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
    trained = [m for m, on in ((unet, cfg.train_unet), (text_encoder, cfg.train_text_encoder)) if on]
    run = TrainingRun(
        cfg,
        accelerator,
        unet,
        text_encoder,
        vae,
        tokenizer,
        noise_scheduler,
        optimizer,
        lr_scheduler,
        ema,
        output_dir,
        dataset_version,
        reporter,
        held_out if main else None,
        recipe_of(requested),
        time_ids,
    )

    # ---------------------------------------------------------------- resume from the latest complete checkpoint
    progress, last_checkpoint = resume(run)  # refuses a changed recipe before anything is written
    if main:
        requested.write(output_dir / "train_config.json")
        hparams = {k: v for k, v in cfg.model_dump().items() if isinstance(v, int | float | str | bool)}
        accelerator.init_trackers("sd_model", config=hparams)

    # ---------------------------------------------------------------- the loop
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
    vae_scale = train_set.scaling_factor
    prior_loss_weight = cfg.prior_loss_weight if cfg.with_prior_preservation else None

    bar = tqdm(total=max_steps, initial=progress.global_step, desc="steps", disable=not main)
    losses = LossLog(progress.history, on_flush=lambda loss: bar.set_postfix(loss=f"{loss:.4f}"))
    step_losses: list[torch.Tensor] = []  # this optimizer step's micro-batch losses (on device)
    throughput = Throughput(device, progress.global_step, cfg.throughput_warmup_steps)
    reporter.log(
        f"training {dataset_version}: {len(train_set.latents)} tiles, {max_steps} steps "
        f"({num_epochs} epochs × {steps_per_epoch}), {world} process(es), groups "
        + ", ".join(f"{g['name']} lr={g['lr']:g}" for g in optimizer.param_groups)
    )
    while progress.global_step < max_steps and progress.epoch < num_epochs:
        batches = epoch_batches(
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
            latents = cache_latents[index]
            # SAR-aware augmentation: the azimuth flip (pre-encoded) with p = 0.5, never a range flip
            flip = torch.rand(len(index), generator=data_gen, device=data_device) < 0.5
            if cfg.augmentation == "flip_azimuth":
                latents = torch.where(flip[:, None, None, None], cache_flips[index], latents)
            # caption dropout: the empty prompt trains the unconditional branch used by CFG
            drop = torch.rand(len(index), generator=data_gen, device=data_device) < cfg.caption_dropout
            ids = torch.where(drop.view(-1, *(1,) * empty_ids.dim()), empty_ids, input_ids[index])
            if cfg.with_prior_preservation:  # class images in the second half of the batch
                class_index = torch.randint(
                    0, len(class_latents), (len(index),), generator=data_gen, device=data_device
                )
                latents = torch.cat([latents, class_latents[class_index]])
                ids = torch.cat([ids, class_ids.expand(len(index), *class_ids.shape)])
            if pin:
                latents, ids = latents.pin_memory(), ids.pin_memory()
            latents = latents.to(device, non_blocking=True) * vae_scale
            ids = ids.to(device, non_blocking=True)
            if cfg.channels_last:
                latents = latents.contiguous(memory_format=torch.channels_last)

            noise, timesteps = draw_noise(
                latents, noise_gen, cfg.noise_offset, noise_scheduler.config.num_train_timesteps
            )
            loss = optimizer_micro_step(
                accelerator,
                trained,
                optimizer,
                lr_scheduler,
                cfg.max_grad_norm,
                partial(
                    diffusion_loss,
                    unet,
                    text_encoder,
                    noise_scheduler,
                    latents,
                    ids,
                    noise,
                    timesteps,
                    time_ids=time_ids,
                    snr_gamma=cfg.snr_gamma,
                    prior_loss_weight=prior_loss_weight,
                    autocast=accelerator.autocast,
                ),
            )
            step_losses.append(loss.detach())
            progress.batch_in_epoch += 1
            throughput.count(len(index) * world)
            if not accelerator.sync_gradients:
                continue
            # ---- one optimizer step done
            for name, average in ema.items():
                average.step(run.trained_parts()[name].parameters())
            progress.global_step += 1
            losses.add(
                progress.global_step, accelerator.reduce(torch.stack(step_losses).mean(), reduction="mean")
            )
            step_losses = []
            bar.update(1)
            throughput.step_done(progress.global_step)
            # ~20 progress lines per run, never more often than the losses are copied to the host
            if progress.global_step % max(cfg.log_every_steps, max_steps // 20) == 0:
                reporter.log(f"step {progress.global_step}/{max_steps}, loss {losses.flush():.4f}")
            if progress.global_step % cfg.log_every_steps == 0:
                logs = {"loss": losses.flush()}
                logs.update({f"lr/{g['name']}": g["lr"] for g in optimizer.param_groups})
                accelerator.log(logs, step=progress.global_step)
            if cfg.checkpoint_every_steps and progress.global_step % cfg.checkpoint_every_steps == 0:
                with throughput.paused():
                    last_checkpoint = save_checkpoint(run, progress, losses.flush())
        if progress.batch_in_epoch >= len(batches):
            progress.epoch += 1
            progress.batch_in_epoch = 0
    synchronize(device)
    throughput.stop()
    peak_memory = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None
    last_loss = losses.flush()
    bar.close()

    # ---------------------------------------------------------------- the end: a final checkpoint, a summary
    if cfg.checkpoint_at_end and not (
        last_checkpoint is not None and last_checkpoint.name == checkpoint_name(progress.global_step)
    ):
        last_checkpoint = save_checkpoint(run, progress, last_loss)
    accelerator.end_training()
    summary = run_summary(cfg, progress, last_checkpoint, dataset_version, throughput, peak_memory, world)
    summary["validation_losses"] = progress.validation_history
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


# ==============================================================================================
# resume and checkpoints


def resume(run: TrainingRun) -> tuple[TrainingProgress, Path | None]:
    """Load the checkpoint ``resume_from_checkpoint`` names; return the progress to continue from
    and that checkpoint (None: start afresh).

    'latest': the newest complete checkpoint of the run folder that loads. One that does not (a
    file truncated or corrupt, a refused pickle) is reported naming the file, and the one before it
    is tried; leftovers of killed runs (``.partial`` folders) are removed first. A checkpoint named
    explicitly must load.
    """
    cfg = run.cfg
    if cfg.resume_from_checkpoint != "latest":
        if not cfg.resume_from_checkpoint:
            return TrainingProgress(), None
        return _load_checkpoint(run, Path(cfg.resume_from_checkpoint)), Path(cfg.resume_from_checkpoint)
    if run.accelerator.is_main_process:
        for leftover in remove_checkpoint_leftovers(run.output_dir):
            run.reporter.log(f"removed {leftover.name}: left by an interrupted run")
    run.accelerator.wait_for_everyone()
    candidates = list_checkpoints(run.output_dir)
    failures = []
    for folder in reversed(candidates):
        try:
            return _load_checkpoint(run, folder), folder
        except CheckpointError as exc:
            failures.append(str(exc))
            run.reporter.log(f"cannot resume from {folder.name}: {exc}; trying the checkpoint before it")
    if failures:
        # the models may hold part of a checkpoint now: never train on from that
        raise CheckpointError(
            run.output_dir / "checkpoints",
            "no checkpoint of this run can be resumed (" + "; ".join(failures) + "); remove them or set "
            "resume_from_checkpoint='' to start afresh",
        )
    return TrainingProgress(), None


def _load_checkpoint(run: TrainingRun, folder: Path) -> TrainingProgress:
    info = check_checkpoint(folder)
    if "recipe" in info:
        differences = recipe_differences(
            {**info["recipe"], "dataset_version": info.get("dataset_version")},
            {**run.recipe, "dataset_version": run.dataset_version},
        )
        if differences:
            # not a CheckpointError: an older checkpoint has the same recipe, so none is tried
            raise ConfigError(
                folder,
                "resuming would continue this run under a changed recipe ("
                + "; ".join(differences)
                + "): restore these options, or set run_name / output_dir to train a new run, or "
                "resume_from_checkpoint='' to start afresh in this folder",
            )
    progress, run.accelerator.step = load_training_state(
        folder / "state",
        models=run.trained_parts(),
        optimizer=run.optimizer,
        lr_scheduler=run.lr_scheduler,
        rank=run.accelerator.process_index,
        ema=run.ema,
        grad_scaler=run.accelerator.scaler,
    )
    for average in run.ema.values():
        average.to(run.accelerator.device)
    run.reporter.log(
        f"resumed from {folder}: step {progress.global_step}, epoch {progress.epoch}, "
        f"batch {progress.batch_in_epoch}"
    )
    return progress


def save_checkpoint(run: TrainingRun, progress: TrainingProgress, loss: float) -> Path:
    """Resumable state + diffusers pipeline + validation grid, complete or absent (checkpoint.py)."""
    cfg, accelerator = run.cfg, run.accelerator
    main = accelerator.is_main_process
    step = progress.global_step
    staging = partial_checkpoint(run.output_dir, step)
    validation_loss, per_timestep = None, None
    if main:
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        if run.held_out is not None:
            # the unwrapped modules: a DDP forward on the main process alone would wait for the others
            validation_loss, per_timestep = held_out_loss(
                run.unwrapped(run.unet),
                run.unwrapped(run.text_encoder),
                run.noise_scheduler,
                run.held_out.latents,
                run.held_out.input_ids,
                cfg.validation_loss_timesteps,
                seed=cfg.validation_seed,
                batch_size=cfg.train_batch_size,
                device=accelerator.device,
                time_ids=run.time_ids,
                autocast=accelerator.autocast,
            )
            if not any(h[0] == step for h in progress.validation_history):
                progress.validation_history.append([step, validation_loss])
            accelerator.log({"validation_loss": validation_loss}, step=step)
    accelerator.wait_for_everyone()
    save_training_state(
        staging / "state",
        models=run.trained_parts(),
        optimizer=run.optimizer,
        lr_scheduler=run.lr_scheduler,
        progress=progress,
        accumulation_step=accelerator.step,
        rank=accelerator.process_index,
        is_main=main,
        ema=run.ema,
        grad_scaler=accelerator.scaler,
    )
    final = staging.with_name(checkpoint_name(step))
    if main:
        parts = {
            "unet": merged(run.unwrapped(run.unet)),
            "text_encoder": merged(run.unwrapped(run.text_encoder)),
        }
        for name, average in run.ema.items():  # the pipeline carries the EMA weights
            parts[name] = copy.deepcopy(parts[name])
            average.copy_to(parts[name].parameters())
        pipe = assemble_pipeline(
            parts["unet"],
            parts["text_encoder"],
            run.vae,
            run.tokenizer,
            sampling_scheduler(run.noise_scheduler),
        )
        pipe.save_pretrained(staging / "pipeline", safe_serialization=True)
        grid_path, brightness = None, None
        if cfg.validation_prompts:
            weight_dtype = {"no": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
            with torch.autocast(
                accelerator.device.type,
                dtype=weight_dtype[cfg.mixed_precision],
                enabled=cfg.mixed_precision != "no",
            ):
                images = sample_validation_prompts(
                    pipe,
                    cfg.validation_prompts,
                    steps=cfg.validation_steps,
                    guidance_scale=cfg.validation_guidance_scale,
                    resolution=cfg.tile_resolution(),
                    seed=cfg.validation_seed,
                    device=accelerator.device,
                    activation_token=cfg.activation_token,
                    learned_token=cfg.learned_token,
                    original_size=None if run.time_ids is None else tuple(run.time_ids[:2].int().tolist()),
                )
            brightness = mean_brightness(cfg.validation_prompts, images)
            run.vae.to("cpu")  # sampling moved it to the device; the loop does not use it
            grid_path = run.output_dir / "samples" / f"step-{step:08d}.png"
            grid_image = prompt_grid(cfg.validation_prompts, images)
            atomic_write_bytes(grid_path, png_bytes(grid_image))
            log_image(accelerator, "validation_grid", grid_image, step)
        info = {
            "step": step,
            "epoch": progress.epoch,
            "batch_in_epoch": progress.batch_in_epoch,
            "loss": loss,
            "learning_rates": {
                g.get("name", str(i)): g["lr"] for i, g in enumerate(run.optimizer.param_groups)
            },
            "dataset_version": run.dataset_version,
            "recipe": run.recipe,
            "checkpoint": str(final),
            "pipeline": str(final / "pipeline"),
            "sample_grid": str(grid_path) if grid_path else None,
            "validation_mean_brightness": brightness,
            # held-out MSE at fixed timesteps and noise (None: no validation split)
            "validation_loss": validation_loss,
            "validation_loss_per_timestep": per_timestep,
        }
        if run.time_ids is not None:  # what generation conditions an SDXL model on
            info["sdxl_time_ids"] = [int(v) for v in run.time_ids.tolist()]
        publish_checkpoint(
            staging, info, keep_last=cfg.checkpoints_total_limit, storage_root=cfg.storage_root
        )
        run.reporter.checkpoint(info)
        run.reporter.log(f"checkpoint {final} (step {step}, loss {loss:.4f})")
    accelerator.wait_for_everyone()
    return final


def log_image(accelerator, tag: str, image, step: int) -> None:
    """Add a picture (PIL) to the run's TensorBoard log, beside the losses."""
    import numpy as np

    writer = accelerator.get_tracker("tensorboard", unwrap=True)
    if hasattr(writer, "add_image"):
        writer.add_image(tag, np.asarray(image.convert("RGB")), step, dataformats="HWC")


def main(argv: list[str] | None = None) -> None:
    cfg = parse_args(argv)
    with open_reporter() as reporter:
        train(cfg, reporter)


if __name__ == "__main__":
    from sar_pipeline.processes import watch_parent

    watch_parent()  # a child of a run: stop when the run's process is gone
    main()
