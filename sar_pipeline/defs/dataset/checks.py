"""Checks of the written training dataset, read back from dataset/current.json's version."""

import dagster as dg

from sar_pipeline.dataset.validate import incomplete_rows, leaking_tiles, unexpectedly_empty_splits
from sar_pipeline.defs.dataset.assets import training_dataset
from sar_pipeline.defs.resources import StorageRoot


def _no_problems(problems: list[dict[str, str]], count_name: str) -> dg.AssetCheckResult:
    """Passed when ``problems`` is empty; metadata: their number and the first 20."""
    return dg.AssetCheckResult(
        passed=not problems,
        metadata={count_name: len(problems), "examples": dg.MetadataValue.json(problems[:20])},
    )


@dg.asset_check(
    asset=training_dataset,
    blocking=True,
    description="No tile of one split intersects or touches a tile of another split (footprints, WGS84 → "
    "EPSG:6933): the spatially blocked split holds in the written files.",
)
def training_dataset_no_spatial_leakage(storage: StorageRoot) -> dg.AssetCheckResult:
    return _no_problems(leaking_tiles(storage.root()), "leaking_pairs")


@dg.asset_check(
    asset=training_dataset,
    blocking=True,
    description="Every row has a non-empty text and SAR image bytes.",
)
def training_dataset_rows_complete(storage: StorageRoot) -> dg.AssetCheckResult:
    return _no_problems(incomplete_rows(storage.root()), "incomplete_rows")


@dg.asset_check(
    asset=training_dataset,
    description="Train, validation and test are non-empty wherever the number of ground blocks makes an "
    "empty split unlikely (a split's share of the blocks >= 3); warning only.",
)
def training_dataset_splits_non_empty(storage: StorageRoot) -> dg.AssetCheckResult:
    report = unexpectedly_empty_splits(storage.root())
    return dg.AssetCheckResult(
        passed=not report["empty"],
        severity=dg.AssetCheckSeverity.WARN,
        metadata={
            "empty_splits": dg.MetadataValue.json(report["empty"]),
            "row_counts": dg.MetadataValue.json(report["row_counts"]),
            "block_count": report["block_count"],
        },
    )
