"""Caption the tiles of one flight: read the tile manifests, run a captioner, write captions.parquet.

Inputs (paths in manifests are relative to the storage root): ``sar_tiles/manifest.parquet``
(tile_id, landcover_path, acquisition fields) and ``optical_tiles/manifest.parquet`` (tile_id,
path of the optical PNG, coverage_fraction). One tile that cannot be captioned (no optical tile, a blank
one, no land cover…) is a recorded skip; the other tiles are kept.
"""

from __future__ import annotations

import io
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image
from upath import UPath

from sar_pipeline.captioning.base import (
    DEFAULT_ACTIVATION_TOKEN,
    Captioner,
    CaptionInput,
    check_optical_not_blank,
    compose_text,
)
from sar_pipeline.errors import RasterError, SarPipelineError
from sar_pipeline.storage import atomic_local_file

#: Schema of flights/<flight_id>/captions.parquet. ``text``: activation token + caption [+ acquisition
#: words]; ``caption``: the captioner's raw output; ``score``: the captioner's confidence where it has
#: one (BLIP: mean log-probability per generated token), else null.
CAPTIONS_SCHEMA = pa.schema(
    [
        pa.field("tile_id", pa.string(), nullable=False),
        pa.field("text", pa.string(), nullable=False),
        pa.field("caption", pa.string(), nullable=False),
        pa.field("captioner_id", pa.string(), nullable=False),
        pa.field("captioner_version", pa.string(), nullable=False),
        pa.field("score", pa.float64(), nullable=True),
    ]
)

ALL_INPUTS = frozenset({"optical", "landcover", "labels"})


@dataclass
class CaptionRun:
    """Captions of one flight's tiles plus the tiles skipped, each with its reason."""

    rows: list[dict] = field(default_factory=list)
    skipped: list[dict] = field(default_factory=list)

    def table(self) -> pa.Table:
        rows = sorted(self.rows, key=lambda r: r["tile_id"])
        return pa.Table.from_pylist(rows, schema=CAPTIONS_SCHEMA)


def caption_flight_tiles(
    root: UPath,
    sar_manifest: Sequence[dict],
    optical_manifest: Sequence[dict],
    captioner: Captioner,
    activation_token: str = DEFAULT_ACTIVATION_TOKEN,
    batch_size: int = 32,
) -> CaptionRun:
    """Caption each SAR tile with ``captioner`` from its optical tile / land cover / labels.

    ``root``: storage root the manifests' relative paths start from. Acquisition words
    (band, polarisation…) are the dataset's choice (``include_metadata_text``), so they can be
    switched without captioning again. Which optical tiles
    cover enough of their SAR tile was decided by the ``optical_tiles`` stage (its
    ``min_optical_coverage``): the optical manifest lists only those.
    """
    needs = frozenset(getattr(captioner, "needs", ALL_INPUTS))
    optical_by_tile = {row["tile_id"]: row for row in optical_manifest}
    run = CaptionRun()
    for chunk in _input_batches(root, sar_manifest, optical_by_tile, needs, batch_size, run):
        try:
            captions = _caption_scored(captioner, chunk)
        except SarPipelineError:
            # isolate the tile at fault; the rest of the chunk is still captioned
            captions = []
            for item in chunk:
                try:
                    captions.extend(_caption_scored(captioner, [item]))
                except SarPipelineError as e:
                    run.skipped.append({"tile_id": item.tile_id, "reason": str(e)})
                    captions.append(None)
        for item, scored in zip(chunk, captions, strict=True):
            if scored is None:
                continue
            caption, score = scored
            run.rows.append(
                {
                    "tile_id": item.tile_id,
                    "text": compose_text(caption, activation_token),
                    "caption": caption,
                    "captioner_id": captioner.captioner_id,
                    "captioner_version": captioner.version,
                    "score": score,
                }
            )
        chunk.clear()  # this batch's decoded images go now, before the next batch is decoded
    return run


def _input_batches(
    root: UPath,
    sar_manifest: Sequence[dict],
    optical_by_tile: dict[str, dict],
    needs: frozenset,
    batch_size: int,
    run: CaptionRun,
) -> Iterator[list[CaptionInput]]:
    """The tiles' caption inputs, ``batch_size`` at a time, decoded only when their batch is due.

    A flight may hold thousands of tiles (a 512² RGB optical tile decodes to 768 kB): only one
    batch of decoded images is alive at once, whatever the flight's size. Tiles that cannot be
    captioned are recorded in ``run.skipped`` and leave no gap in the batches.
    """
    pending: list[CaptionInput] = []
    for row in sorted(sar_manifest, key=lambda r: r["tile_id"]):
        try:
            pending.append(_caption_input(root, row, optical_by_tile.get(row["tile_id"]), needs))
        except SarPipelineError as e:
            run.skipped.append({"tile_id": row["tile_id"], "reason": str(e)})
            continue
        if len(pending) == batch_size:
            yield pending
            pending = []
    if pending:
        yield pending


def _caption_scored(captioner: Captioner, items: list[CaptionInput]) -> list[tuple[str, float | None]]:
    # captioners that can score their captions (BLIP: mean token log-probability) offer caption_with_scores
    with_scores = getattr(captioner, "caption_with_scores", None)
    if with_scores is not None:
        return [(text, float(score)) for text, score in with_scores(items)]
    return [(text, None) for text in captioner.caption(items)]


def write_captions(table: pa.Table, path: UPath) -> None:
    """Write the captions table to ``path`` as Parquet, atomically."""
    with atomic_local_file(path, suffix=".parquet") as tmp:
        pq.write_table(table, tmp)


def read_png(path: UPath) -> np.ndarray:
    """Read a PNG (local or remote) into an array; RasterError naming the file if unreadable."""
    try:
        with path.open("rb") as f:
            data = f.read()
        with Image.open(io.BytesIO(data)) as im:
            return np.asarray(im)
    except FileNotFoundError as e:
        raise RasterError(path, "file missing") from e
    except OSError as e:
        raise RasterError(path, f"unreadable image: {e}") from e


def _caption_input(root: UPath, row: dict, optical_row: dict | None, needs: frozenset) -> CaptionInput:
    tile_id = row["tile_id"]
    optical = landcover = None
    if "optical" in needs:
        optical_path = optical_row.get("path") if optical_row else None
        if not optical_path:
            raise RasterError(tile_id, "no optical tile in the optical_tiles manifest")
        optical = read_png(root / optical_path)
        check_optical_not_blank(optical, f"{tile_id} ({optical_path})")
    if "landcover" in needs and row.get("landcover_path"):
        landcover = read_png(root / row["landcover_path"])
    labels = tuple(row.get("labels") or ()) if "labels" in needs else ()
    if "optical" not in needs and landcover is None and not labels:
        raise RasterError(tile_id, "no land-cover tile (landcover_path empty) and no labels to caption from")
    return CaptionInput(tile_id=tile_id, optical_rgb=optical, landcover=landcover, labels=labels)
