"""Checks of the per-flight captions: none empty, lengths within bounds, enough distinct captions."""

from collections import Counter

import dagster as dg
import pyarrow.parquet as pq

from sar_pipeline.defs.captions.assets import captions
from sar_pipeline.defs.resources import StorageRoot

#: Caption word bounds: fewer says nothing, more overflows CLIP's 77-token text window once prefixed.
MIN_CAPTION_WORDS = 2
MAX_TEXT_WORDS = 60
#: The demo's template captions repeat on similar ground; above this share of repeats, warn.
MAX_DUPLICATE_SHARE = 0.6


def _texts(
    context: dg.AssetCheckExecutionContext, storage: StorageRoot
) -> tuple[list[str], list[str], list[str]]:
    with storage.flight_path(context.partition_key, "captions.parquet").open("rb") as f:
        table = pq.read_table(f, columns=["tile_id", "text", "caption"])
    return (
        table.column("tile_id").to_pylist(),
        table.column("text").to_pylist(),
        table.column("caption").to_pylist(),
    )


@dg.asset_check(asset=captions, blocking=True, description="Every tile has a non-empty caption and text.")
def captions_not_empty(context: dg.AssetCheckExecutionContext, storage: StorageRoot) -> dg.AssetCheckResult:
    tile_ids, texts, raw = _texts(context, storage)
    empty = [
        t
        for t, x, c in zip(tile_ids, texts, raw, strict=True)
        if not (x or "").strip() or not (c or "").strip()
    ]
    return dg.AssetCheckResult(
        passed=bool(tile_ids) and not empty,
        metadata={
            "tiles": len(tile_ids),
            "empty": len(empty),
            "empty_tiles": dg.MetadataValue.json(empty[:50]),
        },
    )


@dg.asset_check(
    asset=captions,
    description=f"Captions have at least {MIN_CAPTION_WORDS} words and texts at most {MAX_TEXT_WORDS} "
    "(CLIP reads 77 tokens).",
)
def captions_length_bounds(
    context: dg.AssetCheckExecutionContext, storage: StorageRoot
) -> dg.AssetCheckResult:
    tile_ids, texts, raw = _texts(context, storage)
    out = {
        t: len(x.split())
        for t, x, c in zip(tile_ids, texts, raw, strict=True)
        if len(c.split()) < MIN_CAPTION_WORDS or len(x.split()) > MAX_TEXT_WORDS
    }
    lengths = [len(x.split()) for x in texts] or [0]
    return dg.AssetCheckResult(
        passed=not out,
        metadata={
            "min_words": min(lengths),
            "max_words": max(lengths),
            "out_of_bounds": dg.MetadataValue.json(out),
        },
    )


@dg.asset_check(
    asset=captions,
    description=f"Share of tiles whose text repeats another tile's stays under {MAX_DUPLICATE_SHARE:.0%} "
    "(warning: template captions legitimately repeat on uniform ground).",
)
def captions_diversity(context: dg.AssetCheckExecutionContext, storage: StorageRoot) -> dg.AssetCheckResult:
    _, texts, _ = _texts(context, storage)
    duplicate_share = 1.0 - len(set(texts)) / len(texts) if texts else 0.0
    top, top_count = Counter(texts).most_common(1)[0] if texts else ("", 0)
    return dg.AssetCheckResult(
        passed=duplicate_share <= MAX_DUPLICATE_SHARE,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={
            "duplicate_share": float(duplicate_share),
            "distinct": len(set(texts)),
            "most_common": f"{top_count}× {top}",
        },
    )
