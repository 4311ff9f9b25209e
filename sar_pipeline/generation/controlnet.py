"""Train a ControlNet on the fine-tuned model: sketch (land cover in the palette) → SAR tile.

Reads top to bottom like ``diffusion/train.py`` and diffusers' ``train_controlnet.py`` /
``train_controlnet_sdxl.py``: settings, set-up (the ``sd_model`` pipeline frozen, a ControlNet
initialised from its UNet with ``ControlNetModel.from_unet``, the latent cache, one conditioning
picture per tile), the loop, checkpoints. An SDXL sd_model gets an SDXL ControlNet (``from_unet``
copies the UNet's ``text_time`` addition embedding; both read the pooled text embedding and the
size/crop time ids, ``diffusion.text_conditioning``), loadable by diffusers'
``StableDiffusionXLControlNetPipeline``. What the loop adds to the diffusion loss: the ControlNet's residuals in the frozen
UNet, and prompts replaced by the empty text with probability ``text_dropout`` (the ControlNet
paper drops 50 %), so the model must read the layout from the sketch rather than the caption.

Known pitfall: a ControlNet can ignore its condition for thousands of steps and then "suddenly
converge". Each checkpoint therefore measures adherence: validation tiles' sketches are drawn
with the ControlNet and text-only with the same seeds, and a land-cover classifier trained on the
dataset's own tiles (``adherence.py``) scores how often the output shows the sketch's class.

    python -m sar_pipeline.generation.controlnet --config controlnet_config.json

Outputs under ``output_dir``: ``checkpoints/checkpoint-<step>/{controlnet/, checkpoint.json}``,
``samples/step-<step>.png`` (rows: sketch | generated | real), ``legend.png``, ``final.json``.
No resume: a re-run of the same settings starts afresh (checkpoints are small and runs short).
"""

from __future__ import annotations

import argparse
import io
import json
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field, model_validator

from sar_pipeline.errors import ConfigError
from sar_pipeline.settings import Settings
from sar_pipeline.storage import atomic_write_bytes

# torch is imported inside the functions that train: the code location imports this module (the
# controlnet asset's settings) in every run, and torch alone takes seconds to import.

# sd15: diffusers' train_controlnet defaults; tiny: the CPU demo (random-init model, small tiles);
# sdxl / tiny_sdxl: the same for the SDXL family (diffusers' train_controlnet_sdxl uses lr 1e-5 too)
CONTROLNET_PRESETS: dict[str, dict[str, Any]] = {
    "sd15": {
        "learning_rate": 1e-5,
        "train_batch_size": 4,
        "max_train_steps": 10000,
        "checkpoint_every_steps": 1000,
    },
    "tiny": {
        "learning_rate": 1e-3,
        "train_batch_size": 8,
        # on the demo adherence had reached its step-200 value at step 100 (0.869 vs 0.758 text only)
        "max_train_steps": 100,
        "checkpoint_every_steps": 50,
    },
}
CONTROLNET_PRESETS["sdxl"] = dict(CONTROLNET_PRESETS["sd15"])
CONTROLNET_PRESETS["tiny_sdxl"] = dict(CONTROLNET_PRESETS["tiny"])


def _by_preset(name: str) -> str:
    return (
        " empty = the preset's: " + ", ".join(f"{p} {v[name]!r}" for p, v in CONTROLNET_PRESETS.items()) + "."
    )


class ControlNetRecipe(Settings):
    """How the ControlNet is trained (the ``controlnet_model`` Launchpad)."""

    learning_rate: float | None = Field(
        default=None, gt=0.0, description="AdamW learning rate;" + _by_preset("learning_rate")
    )
    train_batch_size: int | None = Field(
        default=None, ge=1, description="Tiles per step;" + _by_preset("train_batch_size")
    )
    max_train_steps: int | None = Field(
        default=None, ge=1, description="Optimizer steps;" + _by_preset("max_train_steps")
    )
    checkpoint_every_steps: int | None = Field(
        default=None,
        ge=1,
        description="Checkpoint + adherence measurement every N steps;"
        + _by_preset("checkpoint_every_steps"),
    )
    text_dropout: float = Field(
        default=0.5,
        ge=0.0,
        le=1.0,
        description="Probability of training a tile with the empty prompt (the ControlNet paper's 50 %).",
    )
    flip_azimuth: bool = Field(
        default=True, description="Flip tiles and sketches together along azimuth with p = 0.5."
    )
    validation_tiles: int = Field(
        default=4, ge=1, description="Validation tiles with land cover drawn and scored per checkpoint."
    )
    validation_steps: int = Field(default=20, ge=1, description="Sampling steps of the validation drawings.")
    validation_guidance_scale: float = Field(
        default=3.0, ge=0.0, description="Guidance scale of the validation drawings."
    )
    mixed_precision: Literal["no", "bf16", "fp16"] = Field(
        default="no", description="Autocast precision (accelerate)."
    )
    seed: int = Field(default=0, description="Seed of initialisation order, noise and data order.")


class ControlNetSettings(ControlNetRecipe):
    """One ControlNet run: the recipe bound to a model, a dataset and a run folder (``controlnet_config.json``)."""

    preset: Literal["sd15", "tiny", "sdxl", "tiny_sdxl"] = Field(
        default="sd15", description="Fills the options left empty (the sd_model's diffusion_base preset)."
    )
    sd_model_path: str = Field(
        description="The sd_model pipeline folder the ControlNet is trained for: relative to storage_root "
        "(what controlnet_model writes, so the run's config names the model on any machine), or absolute."
    )
    storage_root: str = Field(description="Storage root holding dataset/ and latents/.")
    dataset_version: str = Field(description="Dataset version (its latent cache must exist).")
    output_dir: str = Field(description="Run folder.")

    @model_validator(mode="before")
    @classmethod
    def _preset_values(cls, values: Any) -> Any:
        if isinstance(values, dict):
            preset = CONTROLNET_PRESETS.get(values.get("preset", "sd15"), {})
            values = {**values, **{k: v for k, v in preset.items() if values.get(k) is None}}
        return values

    def write(self, path: Path) -> None:
        atomic_write_bytes(Path(path), self.model_dump_json(indent=1).encode())


# ==============================================================================================
# data: latents from the cache, a conditioning picture per tile


def conditioning_tensors(storage_root: str, version: str, split: str, tile_ids: list[str], resolution: int):
    """(N×3×R×R conditioning pictures in [0, 1], N×R×R class codes, N×R×R grey tiles in [0, 1])
    of ``tile_ids`` in that order: land cover in the palette where the tile has some, else a sketch."""
    import torch

    from sar_pipeline.dataset import load_dataset_table
    from sar_pipeline.diffusion.data import decode_tile
    from sar_pipeline.generation.conditioning import conditioning_image, resize_classes, sketch_classes

    columns = ["tile_id", "image", "landcover_image"]
    table = load_dataset_table(storage_root, version=version, split=split)
    columns = [c for c in columns if c in table.column_names]
    rows = {r["tile_id"]: r for r in table.select(columns).to_pylist()}
    pictures, classes, greys = [], [], []
    from PIL import Image

    for tile_id in tile_ids:
        row = rows[tile_id]
        grey = np.asarray(Image.open(io.BytesIO(row["image"]["bytes"])))
        land = row.get("landcover_image")
        land = np.asarray(Image.open(io.BytesIO(land["bytes"]))) if land and land.get("bytes") else None
        rgb = resize_classes(conditioning_image(land, grey), resolution)
        pictures.append(torch.from_numpy(rgb.astype(np.float32) / 255.0).permute(2, 0, 1))
        classes.append(sketch_classes(rgb, tile_id))
        greys.append(((decode_tile(row["image"]["bytes"], resolution, tile_id)[0] + 1) / 2).numpy())
    return torch.stack(pictures), classes, greys


# ==============================================================================================
# training


def train_controlnet(cfg: ControlNetSettings, reporter=None) -> dict[str, Any]:
    """Train (afresh) and return the summary written to ``final.json``."""
    import torch
    from accelerate import Accelerator
    from accelerate.utils import set_seed
    from diffusers import ControlNetModel
    from tqdm.auto import tqdm

    from sar_pipeline.diffusion.data import epoch_batches, with_activation_token
    from sar_pipeline.diffusion.latent_cache import load_latent_cache, require_latent_cache
    from sar_pipeline.diffusion.reporting import Reporter
    from sar_pipeline.generation.adherence import agreement, train_classifier
    from sar_pipeline.generation.conditioning import legend_png
    from sar_pipeline.generation.model import load_generation_model
    from sar_pipeline.generation.sample import encode_texts

    reporter = reporter or Reporter(None)
    output_dir = Path(cfg.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    cfg.write(output_dir / "controlnet_config.json")
    atomic_write_bytes(output_dir / "legend.png", legend_png())
    accelerator = Accelerator(mixed_precision=cfg.mixed_precision)
    device = accelerator.device
    set_seed(cfg.seed)

    # ---------------------------------------------------------------- models: the sd_model frozen, a ControlNet from its UNet
    model = load_generation_model(Path(cfg.storage_root) / cfg.sd_model_path, device=str(device))
    pipe = model.pipe
    for part in pipe.components.values():  # UNet, VAE, the text encoder(s): all frozen
        if isinstance(part, torch.nn.Module):
            part.requires_grad_(False)
    downsamplings = int(np.log2(model.vae_scale_factor))
    controlnet = ControlNetModel.from_unet(
        pipe.unet, conditioning_embedding_out_channels=(16, 32, 96, 256)[: downsamplings + 1]
    )
    controlnet.train()
    noise_scheduler = _training_scheduler(pipe.scheduler)

    # ---------------------------------------------------------------- data
    resolution = model.resolution
    cache = load_latent_cache(
        require_latent_cache(cfg.storage_root, cfg.dataset_version, pipe.vae, resolution),
        "train",
        resolution=resolution,
    )
    conditions, _, _ = conditioning_tensors(
        cfg.storage_root, cfg.dataset_version, "train", cache.tile_ids, resolution
    )
    texts = with_activation_token(cache.texts, model.activation_token, model.learned_token)
    validation = _validation_set(cfg, model)
    classifier = train_classifier(*_classifier_tiles(cfg, resolution))
    # how well the classifier recognises land cover in real held-out tiles: the ceiling of adherence
    real = [
        agreement(classifier, g, c) for g, c in zip(validation["greys"], validation["classes"], strict=True)
    ]
    validation["classifier_accuracy_real"] = round(
        sum(h for h, _ in real) / max(1, sum(n for _, n in real)), 4
    )

    optimizer = torch.optim.AdamW(controlnet.parameters(), lr=cfg.learning_rate, weight_decay=1e-2)
    controlnet, optimizer = accelerator.prepare(controlnet, optimizer)
    latents_all, flips_all = cache.latents, cache.latents_flip_azimuth
    scale = cache.scaling_factor
    steps, step, history = cfg.max_train_steps, 0, []
    reporter.log(
        f"controlnet: {len(latents_all)} tiles, {steps} steps, lr {cfg.learning_rate:g}, "
        f"text dropout {cfg.text_dropout}, {len(validation['tile_ids'])} validation tiles"
    )
    baseline = _measure(cfg, model, None, validation, classifier)  # text only, once
    bar = tqdm(total=steps, desc="controlnet steps")
    epoch, last = 0, None
    checkpoints: list[dict[str, Any]] = []
    while step < steps:
        for batch in epoch_batches(
            len(latents_all), min(cfg.train_batch_size, len(latents_all)), cfg.seed, epoch
        ):
            if step >= steps:
                break
            gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + step)
            index = torch.tensor(batch)
            latents, cond = latents_all[index], conditions[index]
            if cfg.flip_azimuth and flips_all is not None:
                flip = torch.rand(len(index), generator=gen) < 0.5
                latents = torch.where(flip[:, None, None, None], flips_all[index], latents)
                cond = torch.where(flip[:, None, None, None], cond.flip(-2), cond)
            drop = torch.rand(len(index), generator=gen) < cfg.text_dropout
            # the frozen text encoder(s) read each batch's texts as generation does (SDXL: with the
            # pooled embedding and size/crop time ids the ControlNet and the UNet both take)
            hidden, added = encode_texts(
                model, ["" if d else texts[i] for d, i in zip(drop.tolist(), batch, strict=True)], resolution
            )
            latents, cond = latents.to(device) * scale, cond.to(device)
            noise = torch.randn(latents.shape, generator=gen).to(device)
            t = torch.randint(0, noise_scheduler.config.num_train_timesteps, (len(index),), generator=gen).to(
                device
            )
            noisy = noise_scheduler.add_noise(latents, noise, t)
            with accelerator.autocast():
                down, mid = controlnet(
                    noisy,
                    t,
                    encoder_hidden_states=hidden,
                    controlnet_cond=cond,
                    added_cond_kwargs=added,
                    return_dict=False,
                )
                pred = pipe.unet(
                    noisy,
                    t,
                    encoder_hidden_states=hidden,
                    added_cond_kwargs=added,
                    down_block_additional_residuals=down,
                    mid_block_additional_residual=mid,
                    return_dict=False,
                )[0]
            if noise_scheduler.config.prediction_type == "v_prediction":
                target = noise_scheduler.get_velocity(latents, noise, t)
            else:
                target = noise
            loss = torch.nn.functional.mse_loss(pred.float(), target.float())
            accelerator.backward(loss)
            accelerator.clip_grad_norm_(controlnet.parameters(), 1.0)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            history.append([step, float(loss.detach())])
            bar.update(1)
            bar.set_postfix(loss=f"{history[-1][1]:.4f}")
            if step % cfg.checkpoint_every_steps == 0 or step == steps:
                unwrapped = accelerator.unwrap_model(controlnet)
                unwrapped.eval()
                last = _save_checkpoint(
                    cfg, model, unwrapped, step, history, validation, classifier, baseline
                )
                unwrapped.train()
                checkpoints.append(json.loads((last / "checkpoint.json").read_text()))
                reporter.checkpoint(checkpoints[-1])
                reporter.log(
                    f"controlnet checkpoint {step}: loss {history[-1][1]:.4f}, adherence "
                    f"{checkpoints[-1]['adherence']:.3f} (text only {baseline['adherence']:.3f})"
                )
        epoch += 1
    bar.close()
    summary = {
        "checkpoint": str(last),
        "controlnet": str(last / "controlnet"),
        "sd_model": str(model.path),
        "dataset_version": cfg.dataset_version,
        "steps": step,
        "final_loss": history[-1][1] if history else None,
        "adherence": checkpoints[-1]["adherence"] if checkpoints else None,
        "text_only_adherence": round(baseline["adherence"], 4),
        "classifier_accuracy_real": validation.get("classifier_accuracy_real"),
        "adherence_by_step": {c["step"]: c["adherence"] for c in checkpoints},
        "sample_grid": checkpoints[-1]["sample_grid"] if checkpoints else None,
        "legend": str(output_dir / "legend.png"),
    }
    atomic_write_bytes(output_dir / "losses.json", json.dumps(history).encode())
    atomic_write_bytes(output_dir / "final.json", json.dumps(summary, indent=1).encode())
    reporter.materialization(
        {k: summary[k] for k in ("controlnet", "steps", "adherence", "text_only_adherence")}
    )
    return summary


def _training_scheduler(scheduler):
    from diffusers import DDPMScheduler

    return DDPMScheduler.from_config(scheduler.config)


def _classifier_tiles(cfg: ControlNetSettings, resolution: int):
    """Train tiles with land cover (grey, classes) for the adherence classifier."""
    from sar_pipeline.dataset import load_dataset_table

    table = load_dataset_table(cfg.storage_root, version=cfg.dataset_version, split="train")
    if "landcover_image" not in table.column_names:
        raise ConfigError(
            cfg.storage_root, "the dataset has no landcover_image column: adherence cannot be measured"
        )
    ids = [
        r["tile_id"] for r in table.select(["tile_id", "landcover_image"]).to_pylist() if r["landcover_image"]
    ]
    _, classes, greys = conditioning_tensors(cfg.storage_root, cfg.dataset_version, "train", ids, resolution)
    return greys, classes


def _validation_set(cfg: ControlNetSettings, model) -> dict[str, Any]:
    """The first validation tiles (validation split, else test, else train) that have land cover."""
    from sar_pipeline.dataset import load_dataset_table

    for split in ("validation", "test", "train"):
        table = load_dataset_table(cfg.storage_root, version=cfg.dataset_version, split=split)
        if table.num_rows == 0 or "landcover_image" not in table.column_names:
            continue
        rows = [
            r
            for r in table.select(["tile_id", "landcover_image", "text"]).to_pylist()
            if r["landcover_image"]
        ]
        if rows:
            rows = rows[: cfg.validation_tiles]
            ids = [r["tile_id"] for r in rows]
            pictures, classes, greys = conditioning_tensors(
                cfg.storage_root, cfg.dataset_version, split, ids, model.resolution
            )
            return {
                "split": split,
                "tile_ids": ids,
                "texts": [r["text"] for r in rows],
                "pictures": pictures,
                "classes": classes,
                "greys": greys,
            }
    raise ConfigError(
        cfg.dataset_version, "no tile with land cover in the dataset: nothing to validate the ControlNet on"
    )


def _measure(cfg: ControlNetSettings, model, controlnet, validation, classifier) -> dict[str, Any]:
    """Draw each validation tile's sketch (with ``controlnet``, or text only when None); adherence."""
    from sar_pipeline.generation.adherence import agreement
    from sar_pipeline.generation.sample import generate
    from sar_pipeline.generation.settings import GenerationSettings

    model.controlnet = controlnet
    hits = total = 0
    images = []
    for i, (text, picture, classes) in enumerate(
        zip(validation["texts"], validation["pictures"], validation["classes"], strict=True)
    ):
        settings = GenerationSettings(
            seed=cfg.seed + i,
            steps=cfg.validation_steps,
            guidance_scale=cfg.validation_guidance_scale,
            scheduler="ddim",
        )
        rgb = (picture.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
        (out,) = generate(
            model, text, settings, control_rgb=rgb if controlnet is not None else None, progress=False
        )
        h, n = agreement(classifier, out.image, classes)
        hits, total = hits + h, total + n
        images.append(out.image)
    model.controlnet = None
    return {"adherence": hits / total if total else float("nan"), "images": images}


def _save_checkpoint(cfg, model, controlnet, step, history, validation, classifier, baseline) -> Path:
    from sar_pipeline.diffusion.checkpoint import partial_checkpoint, publish_checkpoint
    from sar_pipeline.pictures import grid, png_bytes

    output_dir = Path(cfg.output_dir)
    staging = partial_checkpoint(output_dir, step)
    staging.mkdir(parents=True, exist_ok=True)
    controlnet.save_pretrained(staging / "controlnet", safe_serialization=True)
    measured = _measure(cfg, model, controlnet, validation, classifier)
    tiles = []
    for picture, generated, real in zip(
        validation["pictures"], measured["images"], validation["greys"], strict=True
    ):
        tiles += [
            (picture.permute(1, 2, 0).numpy() * 255).astype(np.uint8),
            (np.clip(generated, 0, 1) * 255).astype(np.uint8),
            (np.clip(real, 0, 1) * 255).astype(np.uint8),
        ]
    labels = ["sketch", "generated", "real"] * len(validation["tile_ids"])
    grid_path = output_dir / "samples" / f"step-{step:08d}.png"
    atomic_write_bytes(grid_path, png_bytes(grid(tiles, columns=3, labels=labels)))
    info = {
        "step": step,
        "loss": history[-1][1],
        "controlnet": str(staging.with_name(staging.name.removesuffix(".partial")) / "controlnet"),
        "sd_model": str(model.path),
        "dataset_version": cfg.dataset_version,
        "adherence": round(measured["adherence"], 4),
        "text_only_adherence": round(baseline["adherence"], 4),
        "validation_tiles": validation["tile_ids"],
        "sample_grid": str(grid_path),
    }
    return publish_checkpoint(staging, info)


def main(argv: list[str] | None = None) -> None:
    from sar_pipeline.diffusion.reporting import open_reporter

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", required=True, help="JSON file of ControlNetSettings")
    args = parser.parse_args(argv)
    path = Path(args.config)
    cfg = ControlNetSettings.model_validate(json.loads(path.read_text()))
    with open_reporter() as reporter:
        train_controlnet(cfg, reporter)


if __name__ == "__main__":
    main()
