"""Checks of the per-flight captions: none empty, lengths within bounds, enough distinct captions."""

from collections import Counter

import dagster as dg
import pyarrow.parquet as pq

from sar_pipeline.defs.captions.assets import captions
from sar_pipeline.defs.flights.partitions import flight_partitions
from sar_pipeline.defs.resources import StorageRoot
from sar_pipeline.diffusion.models import TEXT_ENCODER_MAX_TOKENS, text_token_counts

#: Captions of fewer words say nothing.
MIN_CAPTION_WORDS = 2
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


@dg.asset_check(
    asset=captions,
    partitions_def=flight_partitions,
    blocking=True,
    description="Every tile has a non-empty caption and text.",
)
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
    partitions_def=flight_partitions,
    description=f"Captions have at least {MIN_CAPTION_WORDS} words and texts at most "
    f"{TEXT_ENCODER_MAX_TOKENS} CLIP tokens (what the text encoder reads; the rest would be cut off).",
)
def captions_length_bounds(
    context: dg.AssetCheckExecutionContext, storage: StorageRoot
) -> dg.AssetCheckResult:
    tile_ids, texts, raw = _texts(context, storage)
    tokens = text_token_counts(texts)
    short = {
        t: len(c.split()) for t, c in zip(tile_ids, raw, strict=True) if len(c.split()) < MIN_CAPTION_WORDS
    }
    long = {t: n for t, n in zip(tile_ids, tokens, strict=True) if n > TEXT_ENCODER_MAX_TOKENS}
    return dg.AssetCheckResult(
        passed=not short and not long,
        metadata={
            "min_caption_words": min((len(c.split()) for c in raw), default=0),
            "max_text_tokens": max(tokens, default=0),
            "too_short_words": dg.MetadataValue.json(dict(list(short.items())[:50])),
            "too_long_tokens": dg.MetadataValue.json(dict(list(long.items())[:50])),
        },
    )


@dg.asset_check(
    asset=captions,
    partitions_def=flight_partitions,
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
            "duplicate_share": round(duplicate_share, 3),
            "distinct": len(set(texts)),
            "most_common": f"{top_count}× {top}",
        },
    )
