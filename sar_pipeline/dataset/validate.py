"""Checks of a written dataset version, read back from its files (what the asset checks run)."""

from __future__ import annotations

import os
from typing import Any

import pyarrow.compute as pc
import pyarrow.parquet as pq
import shapely
from upath import UPath

from sar_pipeline.dataset.read import dataset_info, dataset_split_paths, load_dataset_table
from sar_pipeline.dataset.schema import SPLITS
from sar_pipeline.dataset.split import leaking_pairs

#: a split is expected to be non-empty once its share of the blocks reaches this many blocks
MIN_EXPECTED_BLOCKS = 3.0


def leaking_tiles(
    storage_root: UPath | str | os.PathLike, version: str | None = None, tolerance_m: float = 0.0
) -> list[dict[str, str]]:
    """Pairs of tiles of different splits whose footprints intersect, touch, or lie within
    ``tolerance_m`` metres (empty = no spatial leakage), as ``{tile_a, split_a, tile_b, split_b}``."""
    table = load_dataset_table(storage_root, version, columns=["tile_id", "split", "geometry"])
    ids = table.column("tile_id").to_pylist()
    splits = table.column("split").to_pylist()
    geoms = list(shapely.from_wkb(table.column("geometry").to_pylist()))
    return [
        {"tile_a": ids[i], "split_a": splits[i], "tile_b": ids[j], "split_b": splits[j]}
        for i, j in leaking_pairs(geoms, splits, tolerance_m)
    ]


def incomplete_rows(
    storage_root: UPath | str | os.PathLike, version: str | None = None
) -> list[dict[str, str]]:
    """Rows without text or without SAR image bytes, as ``{tile_id, split, problem}``; read one row
    group at a time so the image bytes never all sit in memory."""
    problems = []
    for split, path in dataset_split_paths(storage_root, version).items():
        with path.open("rb") as f:
            parquet = pq.ParquetFile(f)
            for batch in parquet.iter_batches(columns=["tile_id", "text", "image"], batch_size=256):
                ids = batch.column("tile_id").to_pylist()
                text = batch.column("text")
                no_text = pc.fill_null(pc.equal(pc.utf8_length(pc.utf8_trim_whitespace(text)), 0), True)
                image_bytes = pc.struct_field(batch.column("image"), "bytes")
                no_image = pc.fill_null(pc.equal(pc.binary_length(image_bytes), 0), True)
                for k, (t, im) in enumerate(zip(no_text.to_pylist(), no_image.to_pylist(), strict=True)):
                    if t:
                        problems.append({"tile_id": ids[k], "split": split, "problem": "no text"})
                    if im:
                        problems.append({"tile_id": ids[k], "split": split, "problem": "no image bytes"})
    return problems


def unexpectedly_empty_splits(
    storage_root: UPath | str | os.PathLike, version: str | None = None
) -> dict[str, Any]:
    """Splits with no rows although the blocks were enough to expect some.

    A split of fraction ``f`` over ``B`` ground blocks expects ``f·B`` blocks; with fewer than
    :data:`MIN_EXPECTED_BLOCKS` an empty split is plausible chance (tiny datasets), not a fault.
    """
    info = dataset_info(storage_root, version)
    fractions = {
        "train": info["config"]["split"]["train_fraction"],
        "validation": info["config"]["split"]["validation_fraction"],
        "test": info["config"]["split"]["test_fraction"],
    }
    blocks = int(info["block_count"])
    expected = {s: fractions[s] * blocks for s in SPLITS}
    empty = [s for s in SPLITS if info["row_counts"][s] == 0 and expected[s] >= MIN_EXPECTED_BLOCKS]
    return {
        "empty": empty,
        "row_counts": info["row_counts"],
        "expected_blocks": expected,
        "block_count": blocks,
    }
