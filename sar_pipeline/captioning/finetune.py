"""Fine-tune BLIP captioning on remote-sensing caption sets (paper §3.2: RSICD + UCM).

Runs as its own process — ``python -m sar_pipeline.captioning.finetune`` — launched by the
``blip_remote_sensing`` asset through Dagster Pipes (settings arrive as the Pipes extra
``"settings"``; progress is logged and the checkpoint path reported back as materialisation
metadata), or by hand with ``--config settings.json``. Needs only ``dagster-pipes``, not Dagster.

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
from dataclasses import asdict, dataclass, field
from pathlib import Path

from sar_pipeline.captioning.datasets import CaptionDataError, CaptionedImage, combine, load_dataset_spec
from sar_pipeline.errors import ConfigError


@dataclass
class FinetuneSettings:
    """Everything a fine-tuning run needs, JSON-serialisable (it crosses the process boundary)."""

    base_model_path: str  # local BLIP captioning checkpoint to start from
    output_dir: str  # where the fine-tuned checkpoint folder is written (replaced atomically)
    datasets: list[dict] = field(default_factory=list)  # see datasets.load_dataset_spec
    train_split: str = "train"
    max_steps: int = 1000  # optimizer steps
    batch_size: int = 16
    learning_rate: float = 1e-5
    weight_decay: float = 0.05
    warmup_steps: int = 100
    mixed_precision: str = "auto"  # auto (bf16/fp16 on GPU, none on CPU) | no | bf16 | fp16
    max_text_tokens: int = 40
    seed: int = 0
    device: str = "auto"
    num_threads: int = 0  # CPU threads for torch (0 = torch's default)
    num_workers: int = 0  # DataLoader worker processes
    log_every: int = 10

    @classmethod
    def from_dict(cls, data: dict) -> FinetuneSettings:
        unknown = set(data) - set(cls.__dataclass_fields__)
        if unknown:
            raise ConfigError("finetune settings", f"unknown keys {sorted(unknown)}")
        return cls(**data)


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
    settings: FinetuneSettings, report: Callable[[str, dict], None] | None = None
) -> FinetuneResult:
    """Fine-tune the BLIP at ``settings.base_model_path``; ``report(event, values)`` sees progress."""
    import torch
    from tqdm.auto import tqdm
    from transformers import BlipForConditionalGeneration, BlipProcessor, get_linear_schedule_with_warmup

    from sar_pipeline.captioning.blip import check_blip_folder, resolve_device
    from sar_pipeline.storage import atomic_local_dir, is_local

    report = report or (lambda event, values: None)
    start = time.perf_counter()
    if settings.num_threads:
        torch.set_num_threads(settings.num_threads)
    random.seed(settings.seed)
    torch.manual_seed(settings.seed)

    base = check_blip_folder(settings.base_model_path)  # fail before reading any data

    # data
    items = combine(*(load_dataset_spec(spec) for spec in settings.datasets))
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
    if precision not in ("no", "bf16", "fp16"):
        raise ConfigError(f"mixed_precision={settings.mixed_precision!r}", "use auto, no, bf16 or fp16")
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

    output = UPath(settings.output_dir)
    model.eval()
    with atomic_local_dir(output) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        processor.save_pretrained(tmp)
        (Path(tmp) / "training_settings.json").write_text(
            json.dumps({"settings": asdict(settings), "steps": step, "losses": losses}, indent=1)
        )
    checkpoint = str(Path(output.path)) if is_local(output) else str(output)
    result = FinetuneResult(checkpoint, step, losses, n_images, len(pairs), time.perf_counter() - start)
    report("done", {"checkpoint_path": checkpoint, "final_loss": result.final_loss})
    return result


def main(argv: list[str] | None = None) -> int:
    """Entry point: under Dagster Pipes read the ``settings`` extra, else ``--config settings.json``."""
    import os

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--config", help="JSON file with FinetuneSettings fields (when not run through Dagster Pipes)"
    )
    args, _ = parser.parse_known_args(argv)

    if "DAGSTER_PIPES_CONTEXT" in os.environ:
        from dagster_pipes import open_dagster_pipes

        with open_dagster_pipes() as pipes:
            settings = FinetuneSettings.from_dict(dict(pipes.get_extra("settings")))

            def report(event: str, values: dict) -> None:
                pipes.log.info(f"{event}: " + ", ".join(f"{k}={v}" for k, v in values.items()))
                pipes.report_custom_message({"event": event, **values})

            result = finetune_blip(settings, report)
            pipes.report_asset_materialization(metadata=_materialization_metadata(result))
        return 0

    if not args.config:
        parser.error("--config is required outside Dagster Pipes")
    settings = FinetuneSettings.from_dict(json.loads(Path(args.config).read_text()))
    result = finetune_blip(settings, lambda event, values: print(event, json.dumps(values)))
    print(json.dumps({"checkpoint_path": result.checkpoint_path, "final_loss": result.final_loss}))
    return 0


def _materialization_metadata(result: FinetuneResult) -> dict:
    from sar_pipeline.pictures import line_plot_png, markdown_image

    curve = line_plot_png(
        {"loss": (range(1, len(result.losses) + 1), result.losses)}, "BLIP fine-tuning", "step", "loss"
    )
    return {
        "checkpoint_path": {"raw_value": result.checkpoint_path, "type": "path"},
        "steps": {"raw_value": result.steps, "type": "int"},
        "first_loss": {"raw_value": result.first_loss, "type": "float"},
        "final_loss": {"raw_value": result.final_loss, "type": "float"},
        "train_images": {"raw_value": result.train_images, "type": "int"},
        "train_pairs": {"raw_value": result.train_pairs, "type": "int"},
        "seconds": {"raw_value": round(result.seconds, 1), "type": "float"},
        "loss_curve": {"raw_value": markdown_image(curve, "loss curve"), "type": "md"},
    }


if __name__ == "__main__":
    raise SystemExit(main())
