"""The training dataset over every captioned flight: Parquet splits, a content-hash version, a card."""

import dagster as dg
from pydantic import Field

from sar_pipeline.dataset.card import build_card
from sar_pipeline.dataset.split import SplitConfig
from sar_pipeline.dataset.writer import DatasetConfig, build_dataset
from sar_pipeline.defs.flights.partitions import flight_partitions
from sar_pipeline.defs.resources import StorageRoot
from sar_pipeline.errors import SarPipelineError
from sar_pipeline.pictures import markdown_image

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


class TrainingDatasetConfig(dg.Config):
    """How the tiles of every captioned flight become the train/validation/test Parquet files."""

    block_size_m: float = Field(
        default=1000.0,
        description="Side of the square ground blocks (metres, EPSG:6933) that are assigned to splits as a "
        "whole; larger blocks = less guard-band loss, coarser split. 1000 m ≈ two 512-px tiles at 1 m "
        "GSD (airborne); use several km for satellite data.",
    )
    train_fraction: float = Field(default=0.8, description="Share of blocks in the train split.")
    validation_fraction: float = Field(default=0.1, description="Share of blocks in the validation split.")
    test_fraction: float = Field(default=0.1, description="Share of blocks in the test split.")
    seed: int = Field(default=0, description="Seed of the block → split hash; change it for another split.")
    assignment: str = Field(
        default="balanced",
        description="'balanced': blocks in hash order fill each split up to its share of tiles (shares close to "
        "the fractions even with few blocks); 'hash': each block's split from its hash alone (a block never "
        "changes split when flights are added, shares scatter with few blocks).",
    )
    touch_tolerance_m: float = Field(
        default=1.0,
        description="Tiles of different splits closer than this (metres) count as touching; one of them is "
        "dropped (guard band).",
    )
    include_metadata_text: bool = Field(
        default=False,
        description="Append SAR acquisition words (band, polarisation, incidence, GSD) to each text, unless "
        "the captions already end with them.",
    )
    skip_bad_tiles: bool = Field(
        default=True,
        description="Leave out tiles without caption or with an unreadable image (listed in metadata) "
        "instead of failing.",
    )
    row_group_size: int = Field(
        default=64, description="Rows per Parquet row group (fixed: reproducible files)."
    )
    mosaic_tiles: int = Field(default=12, description="Tiles shown with their captions in the dataset card.")

    def dataset_config(self) -> DatasetConfig:
        return DatasetConfig(
            split=SplitConfig(
                block_size_m=self.block_size_m,
                train_fraction=self.train_fraction,
                validation_fraction=self.validation_fraction,
                test_fraction=self.test_fraction,
                seed=self.seed,
                touch_tolerance_m=self.touch_tolerance_m,
                assignment=self.assignment,
            ),
            row_group_size=self.row_group_size,
            include_metadata_text=self.include_metadata_text,
        )


@dg.asset(
    group_name="dataset",
    kinds={"parquet", "geoparquet"},
    deps=[
        dg.AssetDep(CAPTIONS, partition_mapping=dg.AllPartitionMapping()),
        dg.AssetDep(SAR_TILES, partition_mapping=dg.AllPartitionMapping()),
        dg.AssetDep(OPTICAL_TILES, partition_mapping=dg.AllPartitionMapping()),
    ],
    automation_condition=dataset_automation_condition,
    description="Every captioned flight's tiles as Parquet (Hugging Face Image columns, GeoParquet footprints, "
    "SAR metadata), spatially blocked train/validation/test split: dataset/<version>/*.parquet, "
    "version = content hash, dataset/current.json points at it.",
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
        config.dataset_config(),
        on_error=record_skip if config.skip_bad_tiles else None,
    )
    card = build_card(result.rows, storage.root(), mosaic_tiles=config.mosaic_tiles)
    metadata = {
        "dataset_version": result.version,
        "path": dg.MetadataValue.path(str(storage.path("dataset", result.version))),
        "row_count": sum(result.row_counts.values()),
        **{f"row_count_{split}": n for split, n in result.row_counts.items()},
        "flights": dg.MetadataValue.json(result.flights),
        "flight_count": len(result.flights),
        "block_count": result.block_count,
        "dropped_guard_tiles": result.dropped_guard_tiles,
        "skipped_tiles": len(result.skipped),
        "skip_reasons": dg.MetadataValue.md("\n".join(f"- {s}" for s in result.skipped[:100]) or "none"),
        "counts": dg.MetadataValue.md(card.counts_markdown),
        "top_words": dg.MetadataValue.md(card.top_words_markdown),
        "caption_lengths": dg.MetadataValue.md(
            markdown_image(card.caption_length_png, "text length histogram")
        ),
    }
    if card.mosaic_png:
        metadata["mosaic"] = dg.MetadataValue.md(markdown_image(card.mosaic_png, "tiles and captions"))
    return dg.MaterializeResult(metadata=metadata, data_version=dg.DataVersion(result.version))
