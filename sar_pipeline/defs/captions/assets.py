"""Per-flight tile captions, the remote-sensing BLIP fine-tune (through Pipes) and its caption metrics."""

import json
import os
import sys
from collections import Counter

import dagster as dg
from pydantic import Field

from sar_pipeline.captioning.datasets import combine, load_dataset_spec
from sar_pipeline.captioning.evaluate import evaluate_blip
from sar_pipeline.captioning.metrics import metrics_markdown_table
from sar_pipeline.captioning.tiles import caption_flight_tiles, write_captions
from sar_pipeline.captioning.tiny import write_tiny_blip
from sar_pipeline.defs.captions.resources import CaptionerResource
from sar_pipeline.defs.flights.partitions import flight_partitions
from sar_pipeline.defs.resources import StorageRoot
from sar_pipeline.errors import ConfigError, SarPipelineError
from sar_pipeline.geo.manifest import read_manifest
from sar_pipeline.storage import atomic_write_bytes, validate_id


@dg.asset(
    partitions_def=flight_partitions,
    group_name="flights",
    deps=[dg.AssetKey("sar_tiles"), dg.AssetKey("optical_tiles")],
    kinds={"parquet"},
    description="One caption per SAR tile (from its optical tile with BLIP, or from land cover with the "
    "template captioner), prefixed by the activation token: flights/<flight_id>/captions.parquet.",
)
def captions(
    context: dg.AssetExecutionContext, storage: StorageRoot, captioner: CaptionerResource
) -> dg.MaterializeResult:
    flight_id = validate_id(context.partition_key, "flight id")
    model = captioner.get_captioner()
    sar_manifest = read_manifest(storage.flight_path(flight_id, "sar_tiles", "manifest.parquet"))
    optical_manifest_path = storage.flight_path(flight_id, "optical_tiles", "manifest.parquet")
    needs_optical = "optical" in getattr(model, "needs", {"optical"})
    optical_manifest = (
        read_manifest(optical_manifest_path) if needs_optical or optical_manifest_path.exists() else []
    )
    run = caption_flight_tiles(
        storage.root(),
        sar_manifest,
        optical_manifest,
        model,
        activation_token=captioner.activation_token,
        include_acquisition=captioner.include_acquisition,
        min_optical_coverage=captioner.min_optical_coverage,
        batch_size=captioner.batch_size,
    )
    for skip in run.skipped:
        context.log.warning(f"skipped tile {skip['tile_id']}: {skip['reason']}")
    if not run.rows:
        raise SarPipelineError(
            f"flight {flight_id}", f"no tile could be captioned ({len(run.skipped)} skipped)"
        )
    table = run.table()
    path = storage.flight_path(flight_id, "captions.parquet")
    write_captions(table, path)
    texts = table.column("text").to_pylist()
    words = [len(c.split()) for c in table.column("caption").to_pylist()]
    sample = "\n".join(
        f"| {t} | {x} |" for t, x in zip(table.column("tile_id").to_pylist()[:12], texts[:12], strict=False)
    )
    return dg.MaterializeResult(
        metadata={
            "path": dg.MetadataValue.path(str(path)),
            "tile_count": len(texts),
            "skipped_tiles": len(run.skipped),
            "skip_reasons": dg.MetadataValue.md(
                "\n".join(f"- {s['tile_id']}: {s['reason']}" for s in run.skipped) or "none"
            ),
            "captioner_id": model.captioner_id,
            "captioner_version": model.version,
            "activation_token": captioner.activation_token,
            "acquisition_words": captioner.include_acquisition,
            "distinct_captions": len(set(texts)),
            "caption_words_mean": float(sum(words) / len(words)),
            "most_common": dg.MetadataValue.md(
                "\n".join(f"- {n}× {t}" for t, n in Counter(texts).most_common(5))
            ),
            "sample": dg.MetadataValue.md("| tile | text |\n|---|---|\n" + sample),
        }
    )


class CaptionDatasetConfig(dg.Config):
    """One remote-sensing caption dataset (see sar_pipeline.captioning.datasets.load_dataset_spec)."""

    kind: str = Field(
        description="'karpathy' (dataset_rsicd.json), 'precomp' (*_filename.txt/*_caps.txt) or 'ucm_pairs'."
    )
    path: str = Field(description="The JSON file (karpathy) or folder (precomp, ucm_pairs).")
    images_dir: str | None = Field(
        default=None, description="Folder of the images named in the file (karpathy, precomp)."
    )
    splits: list[str] = Field(
        default=["train", "test"], description="precomp: which <split>_ file pairs to read."
    )
    holdout_fraction: float = Field(
        default=0.0, description="If > 0, re-split: this share of images (by hash of name) becomes 'test'."
    )


def _default_datasets() -> list[CaptionDatasetConfig]:
    realdata = os.environ.get("SAR_PIPELINE_REALDATA")
    if not realdata:
        return []
    # the sample's 35 captioned UCM images carry only a train split: hold a fifth out for the metrics
    return [
        CaptionDatasetConfig(
            kind="ucm_pairs", path=os.path.join(realdata, "ucm_captions_images"), holdout_fraction=0.2
        )
    ]


def _dataset_specs(datasets: list[CaptionDatasetConfig]) -> list[dict]:
    datasets = datasets or _default_datasets()
    if not datasets:
        raise ConfigError(
            "datasets",
            "no caption dataset configured (and SAR_PIPELINE_REALDATA unset): give RSICD/UCM paths in the run config",
        )
    return [d.model_dump() for d in datasets]


class BlipFinetuneConfig(dg.Config):
    """Fine-tuning of BLIP on remote-sensing captions (paper §3.2: RSICD + UCM)."""

    base_model_path: str = Field(
        default="",
        description="Local BLIP captioning checkpoint to start from; empty = a tiny random BLIP (demo only).",
    )
    datasets: list[CaptionDatasetConfig] = Field(
        default_factory=list,
        description="Caption datasets combined for training; empty = UCM sample from $SAR_PIPELINE_REALDATA.",
    )
    max_steps: int = Field(default=1000, description="Optimizer steps.")
    batch_size: int = Field(default=16, description="Image-caption pairs per step.")
    learning_rate: float = Field(default=1e-5, description="AdamW peak learning rate (after warm-up).")
    warmup_steps: int = Field(default=100, description="Linear warm-up steps, then linear decay to 0.")
    weight_decay: float = Field(default=0.05, description="AdamW weight decay (not on biases and norms).")
    mixed_precision: str = Field(default="auto", description="auto (bf16/fp16 on GPU), no, bf16 or fp16.")
    seed: int = Field(default=0, description="Seed of shuffling and initialisation.")
    num_workers: int = Field(
        default=2, description="DataLoader processes decoding images (0 = in the training process)."
    )


@dg.asset(
    group_name="captioning",
    kinds={"pytorch", "blip"},
    pool="gpu",
    description="BLIP captioning fine-tuned on remote-sensing caption sets, trained in a separate process "
    "(Dagster Pipes); checkpoint in transformers format under models/blip_remote_sensing.",
)
def blip_remote_sensing(
    context: dg.AssetExecutionContext,
    config: BlipFinetuneConfig,
    storage: StorageRoot,
    blip_trainer: dg.PipesSubprocessClient,
) -> dg.MaterializeResult:
    base = config.base_model_path
    if not base:
        tiny = storage.local_path("models", "blip_tiny_random")
        if not (tiny / "config.json").exists():
            write_tiny_blip(tiny)
        base = str(tiny)
        context.log.warning(f"no base_model_path: starting from a tiny random BLIP at {base} (demo only)")
    settings = {
        "base_model_path": base,
        "output_dir": str(storage.local_path("models", "blip_remote_sensing")),
        "datasets": _dataset_specs(config.datasets),
        "max_steps": config.max_steps,
        "batch_size": config.batch_size,
        "learning_rate": config.learning_rate,
        "warmup_steps": config.warmup_steps,
        "weight_decay": config.weight_decay,
        "mixed_precision": config.mixed_precision,
        "seed": config.seed,
        "num_workers": config.num_workers,
    }
    return blip_trainer.run(
        command=[sys.executable, "-m", "sar_pipeline.captioning.finetune"],
        context=context,
        extras={"settings": settings},
    ).get_materialize_result()


class CaptionMetricsConfig(dg.Config):
    """Held-out evaluation of the fine-tuned BLIP."""

    datasets: list[CaptionDatasetConfig] = Field(
        default_factory=list,
        description="Caption datasets with a held-out split; empty = the fine-tuning default.",
    )
    split: str = Field(default="test", description="Split to score on.")
    max_images: int = Field(default=0, description="Score only the first N held-out images (0 = all).")
    num_beams: int = Field(default=3, description="Beam width of decoding.")
    batch_size: int = Field(default=32, description="Images per forward pass.")


@dg.asset(
    group_name="captioning",
    deps=[blip_remote_sensing],
    kinds={"pytorch"},
    pool="gpu",
    description="BLEU-1..4, METEOR, ROUGE-L and CIDEr of the fine-tuned BLIP on a held-out split, beside "
    "the paper's Table 1 row.",
)
def caption_metrics(
    context: dg.AssetExecutionContext, config: CaptionMetricsConfig, storage: StorageRoot
) -> dg.MaterializeResult:
    model_path = str(storage.local_path("models", "blip_remote_sensing"))
    items = combine(*(load_dataset_spec(spec) for spec in _dataset_specs(config.datasets)))
    result = evaluate_blip(
        model_path,
        items,
        split=config.split,
        max_images=config.max_images,
        num_beams=config.num_beams,
        batch_size=config.batch_size,
        progress=False,
    )
    sources = ", ".join(sorted({key.split("/")[0] for key in result.candidates}))
    out = storage.path("models", "blip_remote_sensing_metrics.json")
    atomic_write_bytes(
        out,
        json.dumps(
            {"metrics": result.metrics, "split": config.split, "candidates": result.candidates}, indent=1
        ).encode(),
    )
    table = metrics_markdown_table(
        result.metrics, test_set=f"{sources} '{config.split}' split, {len(result.candidates)} images"
    )
    examples = "\n".join(
        f"- {k}: {result.candidates[k]!r} (ref: {result.references[k][0]!r})"
        for k in sorted(result.candidates)[:5]
    )
    return dg.MaterializeResult(
        metadata={
            "table": dg.MetadataValue.md(table),
            "examples": dg.MetadataValue.md(examples),
            "images": len(result.candidates),
            "path": dg.MetadataValue.path(str(out)),
            **{name.replace("-", "_"): dg.MetadataValue.float(v) for name, v in result.metrics.items()},
        }
    )
