"""Checks of a written dataset version, read back from its files (what the asset checks run)."""

from __future__ import annotations

import os
from collections.abc import Sequence
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
    for split, paths in dataset_split_paths(storage_root, version).items():
        for path in paths:
            problems.extend(_incomplete_rows_of_file(path, split))
    return problems


def _incomplete_rows_of_file(path: UPath, split: str) -> list[dict[str, str]]:
    problems = []
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


def saturation_report(
    rows: Sequence[dict[str, Any]], warn_fraction: float, fail_fraction: float
) -> dict[str, Any]:
    """Per flight, the share of valid pixels clipped at each end of the dataset's range, and the tiles
    mostly clipped (``rows``: written rows with ``clipped_low_fraction``/``clipped_high_fraction``).

    ``warnings`` name each flight clipped more than ``warn_fraction`` at an end, with its most clipped
    scenes; ``failures`` list tiles clipped more than ``fail_fraction`` at one end.
    """
    per_flight: dict[str, dict[str, list[float]]] = {}
    per_scene: dict[tuple[str, str], list[float]] = {}
    failures = []
    for row in rows:
        low, high = row.get("clipped_low_fraction") or 0.0, row.get("clipped_high_fraction") or 0.0
        weight = 1.0 - (row.get("nodata_fraction") or 0.0)
        sums = per_flight.setdefault(row["flight_id"], {"low": [0.0], "high": [0.0], "weight": [0.0]})
        sums["low"][0] += low * weight
        sums["high"][0] += high * weight
        sums["weight"][0] += weight
        scene = per_scene.setdefault((row["flight_id"], row.get("scene_id") or ""), [0.0, 0.0, 0.0])
        scene[0] += low * weight
        scene[1] += high * weight
        scene[2] += weight
        for end, share in (("low", low), ("high", high)):
            if share > fail_fraction:
                failures.append({"tile_id": row["tile_id"], "end": end, "clipped_fraction": round(share, 4)})
    flights = {
        f: {end: (s[end][0] / s["weight"][0] if s["weight"][0] else 0.0) for end in ("low", "high")}
        for f, s in per_flight.items()
    }
    warnings = []
    for flight, shares in sorted(flights.items()):
        for end in ("low", "high"):
            if shares[end] > warn_fraction:
                index = 0 if end == "low" else 1
                scenes = sorted(
                    ((sid, v[index] / v[2]) for (fid, sid), v in per_scene.items() if fid == flight and v[2]),
                    key=lambda kv: -kv[1],
                )
                named = ", ".join(f"{sid} {share:.1%}" for sid, share in scenes[:5])
                warnings.append(
                    f"flight {flight}: {shares[end]:.1%} of valid pixels clipped at the {end} end "
                    f"(scenes: {named})"
                )
    return {
        "flights": {f: {k: round(v, 4) for k, v in s.items()} for f, s in flights.items()},
        "warnings": warnings,
        "failures": failures,
    }
