"""Per-flight tile captions, the remote-sensing BLIP fine-tune (through Pipes) and its caption metrics."""

import json
import sys
from collections import Counter

import dagster as dg

from sar_pipeline.captioning.datasets import CaptionDatasetSettings, load_caption_datasets, require_datasets
from sar_pipeline.captioning.evaluate import CaptionMetricsSettings, evaluate_blip, evaluation_datasets
from sar_pipeline.captioning.finetune import BlipFinetuneSettings
from sar_pipeline.captioning.metrics import metrics_markdown_table
from sar_pipeline.captioning.tiles import caption_flight_tiles, write_captions
from sar_pipeline.captioning.tiny import write_tiny_blip
from sar_pipeline.defs.captions.resources import CaptionerResource, captioner_from_environment
from sar_pipeline.defs.flights.partitions import flight_partitions
from sar_pipeline.defs.pools import GPU_POOL, GPU_STEP_TAGS
from sar_pipeline.defs.resources import StorageRoot
from sar_pipeline.errors import SarPipelineError
from sar_pipeline.geo.manifest import read_manifest
from sar_pipeline.storage import atomic_write_bytes, validate_id


@dg.asset(
    partitions_def=flight_partitions,
    group_name="flights",
    deps=[dg.AssetKey("sar_tiles"), dg.AssetKey("optical_tiles")],
    kinds={"parquet"},
    pool=GPU_POOL if captioner_from_environment() else None,
    op_tags=GPU_STEP_TAGS if captioner_from_environment() else None,
    description="One caption per SAR tile (from its optical tile with BLIP, or from land cover with the "
    "template captioner), prefixed by the activation token: `flights/<flight_id>/captions.parquet`.",
)
def captions(
    context: dg.AssetExecutionContext, storage: StorageRoot, captioner: CaptionerResource
) -> dg.MaterializeResult:
    flight_id = validate_id(context.partition_key, "flight id")
    model = captioner.get_captioner()
    sar_manifest = read_manifest(storage.flight_folder(flight_id, "sar_tiles") / "manifest.parquet")
    optical_manifest_path = storage.flight_folder(flight_id, "optical_tiles") / "manifest.parquet"
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
            "distinct_captions": len(set(texts)),
            "caption_words_mean": round(sum(words) / len(words), 1),
            "most_common": dg.MetadataValue.md(
                "\n".join(f"- {n}× {t}" for t, n in Counter(texts).most_common(5))
            ),
            "sample": dg.MetadataValue.md("| tile | text |\n|---|---|\n" + sample),
        }
    )


class CaptionDatasetConfig(dg.Config, CaptionDatasetSettings):
    """One remote-sensing caption dataset (RSICD, UCM, Sydney, RSITMD…)."""


class BlipFinetuneConfig(dg.Config, BlipFinetuneSettings[CaptionDatasetConfig]):
    """Fine-tuning of BLIP on remote-sensing captions (paper §3.2: RSICD + UCM)."""


@dg.asset(
    group_name="captioning",
    kinds={"pytorch", "blip"},
    pool=GPU_POOL,
    op_tags=GPU_STEP_TAGS,
    description="BLIP captioning fine-tuned on remote-sensing caption sets, trained in a separate process "
    "(Dagster Pipes); checkpoint in transformers format under models/blip_remote_sensing.",
)
def blip_remote_sensing(
    context: dg.AssetExecutionContext,
    config: BlipFinetuneConfig,
    storage: StorageRoot,
    blip_trainer: dg.PipesSubprocessClient,
) -> dg.MaterializeResult:
    require_datasets(config.datasets, "blip_remote_sensing.datasets")
    base = config.base_model_path
    if not base:
        tiny = storage.local_path("models", "blip_tiny_random")
        if not (tiny / "config.json").exists():
            write_tiny_blip(tiny)
        base = str(tiny)
        context.log.warning(f"no base_model_path: starting from a tiny random BLIP at {base} (demo only)")
    settings = config.model_copy(update={"base_model_path": base}).model_dump(mode="json")
    result = blip_trainer.run(
        command=[sys.executable, "-m", "sar_pipeline.captioning.finetune"],
        context=context,
        extras={
            "settings": settings,
            "output_dir": str(storage.local_path("models", "blip_remote_sensing")),
        },
    ).get_materialize_result()
    storage.push("models", "blip_remote_sensing", prune=True)  # an s3:// root: from its local copy
    return result


class CaptionMetricsConfig(dg.Config, CaptionMetricsSettings[CaptionDatasetConfig]):
    """Held-out evaluation of the fine-tuned BLIP."""


@dg.asset(
    group_name="captioning",
    deps=[blip_remote_sensing],
    kinds={"pytorch"},
    pool=GPU_POOL,
    op_tags=GPU_STEP_TAGS,
    description="BLEU-1..4, METEOR, ROUGE-L and CIDEr of the fine-tuned BLIP on a held-out split, beside "
    "the paper's Table 1 row.",
)
def caption_metrics(
    context: dg.AssetExecutionContext, config: CaptionMetricsConfig, storage: StorageRoot
) -> dg.MaterializeResult:
    storage.pull("models", "blip_remote_sensing")  # an s3:// root: into its local copy
    model_path = str(storage.local_path("models", "blip_remote_sensing"))
    items = load_caption_datasets(evaluation_datasets(config, model_path), "caption_metrics.datasets")
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
            **{name.replace("-", "_"): round(float(v), 4) for name, v in result.metrics.items()},
        }
    )
