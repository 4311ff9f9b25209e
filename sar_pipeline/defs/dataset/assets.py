"""The training dataset over every captioned flight: Parquet splits, a content-hash version, a card."""

import dagster as dg

from sar_pipeline.dataset.card import build_card
from sar_pipeline.dataset.split import block_size_advice
from sar_pipeline.dataset.validate import saturation_report
from sar_pipeline.dataset.write import TrainingDatasetSettings, build_dataset
from sar_pipeline.defs.flights.partitions import flight_partitions
from sar_pipeline.defs.pictures import picture
from sar_pipeline.defs.resources import StorageRoot
from sar_pipeline.errors import SarPipelineError
from sar_pipeline.retention import prune_dataset_versions

CAPTIONS = dg.AssetKey("captions")
SAR_TILES = dg.AssetKey("sar_tiles")
OPTICAL_TILES = dg.AssetKey("optical_tiles")

# Re-materialise on its own when any flight's captions land (new flight or re-captioned), once at
# least one flight has captions, and not while any flight partition upstream is still running (so a
# run of several flights gives one dataset, not one per flight). Unlike eager(), a missing or failed
# flight does not block the others forever: the asset itself reads only flights with captions.
# newly_missing covers a fresh deployment whose flights were captioned before this asset existed.
dataset_automation_condition = (
    (
        dg.AutomationCondition.newly_missing()
        | dg.AutomationCondition.any_deps_updated().allow(dg.AssetSelection.assets(CAPTIONS))
    ).since_last_handled()
    & dg.AutomationCondition.any_deps_match(~dg.AutomationCondition.missing()).allow(
        dg.AssetSelection.assets(CAPTIONS)
    )
    & ~dg.AutomationCondition.any_deps_in_progress()
    & ~dg.AutomationCondition.in_progress()
).with_label("on new captions")


class TrainingDatasetConfig(dg.Config, TrainingDatasetSettings):
    """How the tiles of every captioned flight become the train/validation/test Parquet files."""


@dg.asset(
    group_name="dataset",
    kinds={"parquet", "geoparquet"},
    deps=[
        dg.AssetDep(CAPTIONS, partition_mapping=dg.AllPartitionMapping()),
        dg.AssetDep(SAR_TILES, partition_mapping=dg.AllPartitionMapping()),
        dg.AssetDep(OPTICAL_TILES, partition_mapping=dg.AllPartitionMapping()),
    ],
    automation_condition=dataset_automation_condition,
    check_specs=[
        dg.AssetCheckSpec(
            "training_dataset_saturation",
            asset="training_dataset",
            blocking=True,
            description="Each flight's share of valid pixels clipped at either end of the dataset's dB range: "
            "a warning above saturation_warn_fraction (naming the scenes); fails, blocking training, when a "
            "tile is clipped over saturation_fail_fraction at one end.",
        )
    ],
    description="Every captioned flight's tiles as Parquet (Hugging Face Image columns, GeoParquet footprints, "
    "SAR metadata), spatially blocked train/validation/test split: one shard per flight under "
    "`dataset/shards/<flight_id>/`, reused unchanged by later versions; a version is "
    "`dataset/<version>/manifest.json` naming its shards (version = content hash), "
    "`dataset/current.json` points at it.",
)
def training_dataset(
    context: dg.AssetExecutionContext, config: TrainingDatasetConfig, storage: StorageRoot
) -> dg.MaterializeResult:
    flights = sorted(context.instance.get_dynamic_partitions(flight_partitions.name))
    captioned = [f for f in flights if storage.flight_path(f, "captions.parquet").exists()]
    if not captioned:
        raise SarPipelineError(
            "training_dataset", f"no flight has captions yet ({len(flights)} flight partitions known)"
        )
    if len(captioned) < len(flights):
        context.log.info(f"flights without captions, left out: {sorted(set(flights) - set(captioned))}")

    def record_skip(error: SarPipelineError) -> None:
        context.log.warning(f"skipped tile: {error}")

    result = build_dataset(
        storage.root(),
        captioned,
        config,
        on_error=record_skip if config.skip_bad_tiles else None,
    )
    # on an s3:// root the model stages' pointers may live only in their local copy: they protect too
    mirror = storage.mirror()
    pruned = prune_dataset_versions(
        storage.root(), config.keep_versions, pointer_roots=[mirror.local()] if mirror.remote else []
    )
    advice = block_size_advice(config.block_size_m, result.median_tile_side_m)
    if advice:
        context.log.warning(advice)
    card = build_card(result.rows, storage.root(), mosaic_tiles=config.mosaic_tiles)
    metadata = {
        "dataset_version": result.version,
        "path": dg.MetadataValue.path(str(storage.path("dataset", result.version))),
        "row_count": sum(result.row_counts.values()),
        **{f"row_count_{split}": n for split, n in result.row_counts.items()},
        "flights": dg.MetadataValue.json(result.flights),
        "flight_count": len(result.flights),
        "shards_written": len(result.shards_written),
        "shards_reused": len(result.flights) - len(result.shards_written),
        "deleted_by_retention": dg.MetadataValue.json(pruned.deleted),
        "block_count": result.block_count,
        "dropped_guard_tiles": result.dropped_guard_tiles,
        "median_tile_side_m": round(result.median_tile_side_m, 1),
        "block_size_advice": advice or "none: blocks are several tiles wide",
        "skipped_tiles": len(result.skipped),
        "skip_reasons": dg.MetadataValue.md("\n".join(f"- {s}" for s in result.skipped[:100]) or "none"),
        "counts": dg.MetadataValue.md(card.counts_markdown),
        "top_words": dg.MetadataValue.md(card.top_words_markdown),
        "caption_lengths": picture(storage, card.caption_length_png, "text length histogram"),
    }
    if card.mosaic_png:
        metadata["mosaic"] = picture(storage, card.mosaic_png, "tiles and captions")
    metadata["db_range"] = f"{result.radiometry['db_min']:.2f} … {result.radiometry['db_max']:.2f} dB"
    metadata["normalisation"] = result.radiometry["normalisation"]
    metadata["radiometry"] = result.radiometry["chosen"]
    metadata["left_out_tiles"] = len(result.left_out)
    metadata["left_out"] = dg.MetadataValue.md("\n".join(f"- {s}" for s in result.left_out[:100]) or "none")
    for reason in result.left_out[:20]:
        context.log.info(f"left out: {reason}")
    saturation = saturation_report(
        result.rows, config.saturation_warn_fraction, config.saturation_fail_fraction
    )
    for warning in saturation["warnings"]:
        context.log.warning(warning)
    failed = bool(saturation["failures"])
    if failed:
        context.log.error(
            f"{len(saturation['failures'])} tile(s) mostly clipped at one end of {metadata['db_range']}: "
            + config.saturation_advice()
        )
    passed = not failed and not saturation["warnings"]
    check = dg.AssetCheckResult(
        check_name="training_dataset_saturation",
        passed=passed,
        severity=dg.AssetCheckSeverity.ERROR if failed else dg.AssetCheckSeverity.WARN,
        metadata={
            "db_range": metadata["db_range"],
            "normalisation": metadata["normalisation"],
            "advice": "none needed" if passed else config.saturation_advice(),
            "clipped_by_flight": dg.MetadataValue.json(saturation["flights"]),
            "warnings": dg.MetadataValue.md("\n".join(f"- {w}" for w in saturation["warnings"]) or "none"),
            "mostly_clipped_tiles": dg.MetadataValue.json(saturation["failures"][:50]),
        },
    )
    return dg.MaterializeResult(
        metadata=metadata, data_version=dg.DataVersion(result.version), check_results=[check]
    )
