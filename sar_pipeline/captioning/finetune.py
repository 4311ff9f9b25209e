"""Fine-tune BLIP captioning on remote-sensing caption sets (paper §3.2: RSICD + UCM).

Runs as its own process — ``python -m sar_pipeline.captioning.finetune`` — launched by the
``blip_remote_sensing`` asset through Dagster Pipes (settings arrive as the Pipes extras
``"settings"`` and ``"output_dir"``; progress is logged and the checkpoint path reported back as
materialisation metadata), or by hand with ``--config settings.json --output-dir DIR``. Needs
only ``dagster-pipes``, not Dagster.

The loop, top to bottom: settings → data (one pair per reference caption) → model and processor
from a local folder → AdamW with linear warm-up and decay → mixed precision on a GPU → the
final checkpoint written in transformers format (safetensors) into its folder in one step.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Generic, Literal, TypeVar

from pydantic import Field

from sar_pipeline.captioning.datasets import (
    CaptionDataError,
    CaptionDatasetSettings,
    CaptionedImage,
    load_caption_datasets,
)
from sar_pipeline.errors import ConfigError, ModelError
from sar_pipeline.settings import Settings

#: written into the checkpoint folder: the settings, the steps and the loss of each step
TRAINING_SETTINGS_FILE = "training_settings.json"


DatasetT = TypeVar("DatasetT", bound=CaptionDatasetSettings)


class BlipFinetuneSettings(Settings, Generic[DatasetT]):
    """Fine-tuning of BLIP captioning on remote-sensing captions (paper §3.2: RSICD + UCM).

    JSON-serialisable (it crosses the process boundary). Generic over the class of its
    ``datasets`` items only so that ``defs/`` can substitute the Dagster twin of
    :class:`CaptionDatasetSettings` (Dagster nests only its own Config classes); the fields are these.
    """

    base_model_path: str = Field(
        default="",
        description="Local BLIP captioning checkpoint folder to start from (transformers format, e.g. "
        "blip-image-captioning-base copied beforehand: nothing is downloaded); empty = a tiny random "
        "BLIP written under the storage root, for the demo only.",
    )
    datasets: list[DatasetT] = Field(
        default_factory=list,
        description="Caption datasets combined for training (the paper: RSICD + UCM); at least one is "
        "needed, the stage refuses to start without.",
    )
    train_split: str = Field(default="train", description="Split of the datasets trained on.")
    max_steps: int = Field(default=1000, ge=1, description="Optimizer steps.")
    batch_size: int = Field(default=16, ge=1, description="Image-caption pairs per step.")
    learning_rate: float = Field(default=1e-5, gt=0, description="AdamW peak learning rate (after warm-up).")
    weight_decay: float = Field(
        default=0.05, ge=0, description="AdamW weight decay (not on biases and norms)."
    )
    warmup_steps: int = Field(default=100, ge=0, description="Linear warm-up steps, then linear decay to 0.")
    mixed_precision: Literal["auto", "no", "bf16", "fp16"] = Field(
        default="auto",
        description="auto: bf16 on a GPU that has it, else fp16 with loss scaling, none on the CPU; "
        "no: fp32; fp16 needs a GPU.",
    )
    max_text_tokens: int = Field(default=40, ge=2, description="Captions are cut to this many tokens.")
    seed: int = Field(default=0, description="Seed of shuffling and initialisation.")
    device: str = Field(default="auto", description="'auto' (GPU if present), 'cpu', 'cuda', 'cuda:1', …")
    num_threads: int = Field(default=0, ge=0, description="CPU threads of torch (0 = torch's default).")
    num_workers: int = Field(
        default=2,
        ge=0,
        description="DataLoader processes decoding images, so a GPU does not wait for them (0 = in the "
        "training process).",
    )
    log_every: int = Field(default=10, ge=1, description="Report the loss every this many steps.")


def read_training_settings(checkpoint: str | Path) -> BlipFinetuneSettings[CaptionDatasetSettings]:
    """The settings a fine-tuned checkpoint was trained with (its ``training_settings.json``)."""
    path = Path(checkpoint) / TRAINING_SETTINGS_FILE
    try:
        record = json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise ModelError(path, "missing: not a checkpoint written by BLIP fine-tuning") from exc
    except (OSError, json.JSONDecodeError) as exc:
        raise ModelError(path, f"unreadable ({exc})") from exc
    return BlipFinetuneSettings[CaptionDatasetSettings].model_validate(record["settings"])


@dataclass
class FinetuneResult:
    """What a run produced: the checkpoint folder and the loss per optimizer step."""

    checkpoint_path: str
    steps: int
    losses: list[float]
    train_images: int
    train_pairs: int
    seconds: float

    @property
    def first_loss(self) -> float:
        k = max(1, len(self.losses) // 5)
        return sum(self.losses[:k]) / k

    @property
    def final_loss(self) -> float:
        k = max(1, len(self.losses) // 5)
        return sum(self.losses[-k:]) / k


def training_pairs(items: list[CaptionedImage], split: str) -> list[tuple[Path, str]]:
    """(image path, caption) for every reference caption of every image in ``split``."""
    pairs = []
    for item in items:
        if item.split != split:
            continue
        if item.image_path is None or not Path(item.image_path).is_file():
            raise CaptionDataError(
                item.key, f"no image file ({item.image_path}): training needs the images, set images_dir"
            )
        pairs.extend((Path(item.image_path), caption) for caption in item.captions)
    if not pairs:
        raise CaptionDataError("datasets", f"no image-caption pairs in split {split!r}")
    return pairs


class TrainingCollator:
    """Turns (image path, caption) pairs into a BLIP training batch: pixel values, token ids, labels.

    The first token becomes [DEC] (``bos_id``), the token BLIP's decoder starts from at generation
    (the BERT tokenizer writes [CLS] there); padding is masked out of the labels (-100).
    A class, not a closure, so DataLoader worker processes can receive it.
    """

    def __init__(self, processor, bos_id: int, max_text_tokens: int):
        self.processor = processor
        self.bos_id = bos_id
        self.max_text_tokens = max_text_tokens

    def __call__(self, batch: list[tuple[Path, str]]) -> dict:
        from PIL import Image

        images = []
        for path, _ in batch:
            with Image.open(path) as im:
                images.append(im.convert("RGB"))
        enc = self.processor(
            images=images,
            text=[caption for _, caption in batch],
            padding=True,
            truncation=True,
            max_length=self.max_text_tokens,
            return_tensors="pt",
        )
        enc["input_ids"][:, 0] = self.bos_id
        labels = enc["input_ids"].clone()
        labels[labels == self.processor.tokenizer.pad_token_id] = -100
        enc["labels"] = labels
        return dict(enc)


def finetune_blip(
    settings: BlipFinetuneSettings,
    output_dir: str | Path,
    report: Callable[[str, dict], None] | None = None,
) -> FinetuneResult:
    """Fine-tune the BLIP at ``settings.base_model_path`` and write the checkpoint folder ``output_dir``
    (replaced in one step); ``report(event, values)`` sees progress."""
    import torch
    from tqdm.auto import tqdm
    from transformers import BlipForConditionalGeneration, BlipProcessor, get_linear_schedule_with_warmup

    from sar_pipeline.captioning.blip import check_blip_folder
    from sar_pipeline.devices import resolve_device
    from sar_pipeline.storage import atomic_local_dir, is_local

    report = report or (lambda event, values: None)
    start = time.perf_counter()
    if settings.num_threads:
        torch.set_num_threads(settings.num_threads)
    random.seed(settings.seed)
    torch.manual_seed(settings.seed)

    if not settings.base_model_path:
        raise ConfigError("base_model_path", "empty: give a local BLIP captioning checkpoint folder")
    base = check_blip_folder(settings.base_model_path)  # fail before reading any data

    # data
    items = load_caption_datasets(settings.datasets)
    pairs = training_pairs(items, settings.train_split)
    n_images = len({p for p, _ in pairs})

    # model
    device = resolve_device(settings.device)
    processor = BlipProcessor.from_pretrained(str(base))
    model = BlipForConditionalGeneration.from_pretrained(str(base), dtype=torch.float32).to(device)
    model.train()
    bos_id = model.config.text_config.bos_token_id

    collate = TrainingCollator(processor, bos_id, settings.max_text_tokens)

    generator = torch.Generator().manual_seed(settings.seed)
    loader = torch.utils.data.DataLoader(
        pairs,
        batch_size=settings.batch_size,
        shuffle=True,
        drop_last=len(pairs) >= settings.batch_size,
        collate_fn=collate,
        generator=generator,
        num_workers=settings.num_workers,
        pin_memory=device.startswith("cuda"),
    )

    # optimizer: no weight decay on biases and norms, as in BLIP's own training
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        (no_decay if param.ndim < 2 or "norm" in name.lower() else decay).append(param)
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": settings.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=settings.learning_rate,
    )
    scheduler = get_linear_schedule_with_warmup(optimizer, settings.warmup_steps, settings.max_steps)

    # mixed precision on a GPU: bf16 where supported, else fp16 with loss scaling
    precision = settings.mixed_precision
    if precision == "auto":
        precision = (
            ("bf16" if torch.cuda.is_bf16_supported() else "fp16") if device.startswith("cuda") else "no"
        )
    if precision == "fp16" and not device.startswith("cuda"):
        raise ConfigError(f"mixed_precision={precision!r}", f"fp16 training needs a GPU (device is {device})")
    autocast_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    scaler = torch.amp.GradScaler("cuda", enabled=precision == "fp16")
    device_type = "cuda" if device.startswith("cuda") else "cpu"

    report(
        "start",
        {"train_images": n_images, "train_pairs": len(pairs), "device": device, "precision": precision},
    )
    losses: list[float] = []
    step = 0
    progress = tqdm(total=settings.max_steps, desc="BLIP fine-tune", unit="step")
    while step < settings.max_steps:
        for batch in loader:
            batch = {k: v.to(device) for k, v in batch.items()}
            with torch.autocast(device_type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
                loss = model(**batch).loss
            loss_value = loss.item()
            if not math.isfinite(loss_value):
                raise FloatingPointError(f"loss became {loss_value} at step {step}; lower the learning rate")
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad(set_to_none=True)
            scheduler.step()
            step += 1
            losses.append(loss_value)
            progress.update(1)
            if step % settings.log_every == 0 or step == settings.max_steps:
                report(
                    "step", {"step": step, "loss": losses[-1], "learning_rate": scheduler.get_last_lr()[0]}
                )
            if step >= settings.max_steps:
                break
    progress.close()

    # checkpoint: the folder appears complete under its final name, or not at all
    from upath import UPath

    output = UPath(output_dir)
    model.eval()
    with atomic_local_dir(output) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        processor.save_pretrained(tmp)
        (Path(tmp) / TRAINING_SETTINGS_FILE).write_text(
            json.dumps(
                {"settings": settings.model_dump(mode="json"), "steps": step, "losses": losses}, indent=1
            )
        )
    checkpoint = str(Path(output.path)) if is_local(output) else str(output)
    result = FinetuneResult(checkpoint, step, losses, n_images, len(pairs), time.perf_counter() - start)
    report("done", {"checkpoint_path": checkpoint, "final_loss": result.final_loss})
    return result


def main(argv: list[str] | None = None) -> int:
    """Entry point: under Dagster Pipes read the ``settings`` and ``output_dir`` extras, else
    ``--config settings.json --output-dir DIR``."""
    import os

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--config", help="JSON file of BlipFinetuneSettings (when not run through Dagster Pipes)"
    )
    parser.add_argument(
        "--output-dir", help="checkpoint folder to write (when not run through Dagster Pipes)"
    )
    args, _ = parser.parse_known_args(argv)

    if "DAGSTER_PIPES_CONTEXT" in os.environ:
        from dagster_pipes import open_dagster_pipes

        with open_dagster_pipes() as pipes:
            settings = BlipFinetuneSettings[CaptionDatasetSettings].model_validate(
                pipes.get_extra("settings")
            )

            def report(event: str, values: dict) -> None:
                pipes.log.info(f"{event}: " + ", ".join(f"{k}={v}" for k, v in values.items()))
                pipes.report_custom_message({"event": event, **values})

            result = finetune_blip(settings, pipes.get_extra("output_dir"), report)
            pipes.report_asset_materialization(
                metadata=_materialization_metadata(result, pipes.get_extra("output_dir"))
            )
        return 0

    if not args.config or not args.output_dir:
        parser.error("--config and --output-dir are required outside Dagster Pipes")
    settings = BlipFinetuneSettings[CaptionDatasetSettings].model_validate_json(Path(args.config).read_text())
    result = finetune_blip(settings, args.output_dir, lambda event, values: print(event, json.dumps(values)))
    print(json.dumps({"checkpoint_path": result.checkpoint_path, "final_loss": result.final_loss}))
    return 0


def _materialization_metadata(result: FinetuneResult, output_dir: str) -> dict:
    """Pipes metadata of the fine-tune; the loss curve is written beside the checkpoint folder
    (``<output_dir>_loss_curve.png``) and only its thumbnail enters the event log."""
    from upath import UPath

    from sar_pipeline.pictures import line_plot_png, markdown_image
    from sar_pipeline.storage import atomic_write_bytes

    curve = line_plot_png(
        {"loss": (range(1, len(result.losses) + 1), result.losses)}, "BLIP fine-tuning", "step", "loss"
    )
    output = UPath(output_dir)
    curve_path = output.parent / f"{output.name}_loss_curve.png"
    atomic_write_bytes(curve_path, curve)
    return {
        "checkpoint_path": {"raw_value": result.checkpoint_path, "type": "path"},
        "steps": {"raw_value": result.steps, "type": "int"},
        "first_loss": {"raw_value": result.first_loss, "type": "float"},
        "final_loss": {"raw_value": result.final_loss, "type": "float"},
        "train_images": {"raw_value": result.train_images, "type": "int"},
        "train_pairs": {"raw_value": result.train_pairs, "type": "int"},
        "seconds": {"raw_value": round(result.seconds, 1), "type": "float"},
        "loss_curve": {
            "raw_value": markdown_image(curve, "loss curve", full_size=str(curve_path)),
            "type": "md",
        },
    }


if __name__ == "__main__":
    from sar_pipeline.processes import watch_parent

    watch_parent()  # a child of a run: stop when the run's process is gone
    raise SystemExit(main())
