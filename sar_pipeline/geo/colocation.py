"""A flight's optical tiles: each SAR tile's optical image rendered on its exact grid, and a preview.

The ``optical_tiles`` stage: for every row of the flight's SAR tile manifest, the
:class:`~sar_pipeline.geo.optical.OpticalSource` renders RGB on the tile's own grid (same CRS,
rotated transform, shape), so SAR and optical pixels correspond one to one.
"""

from __future__ import annotations

import dataclasses
import io
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from affine import Affine
from PIL import Image

from sar_pipeline.errors import SarPipelineError
from sar_pipeline.geo.optical import OpticalSource
from sar_pipeline.pictures import grid, png_bytes, to_display_uint8
from sar_pipeline.timestamps import parse_utc

#: the columns of an optical tile manifest (one row per optical tile kept)
OPTICAL_MANIFEST_COLUMNS = (
    "tile_id", "flight_id", "scene_id", "path", "sar_path", "crs", "transform", "height", "width",
    "coverage_fraction", "optical_datetime", "time_gap_s", "optical_sources", "optical_source",
    "footprint_scene_crs", "geometry",
)  # fmt: skip


@dataclasses.dataclass
class FlightColocation:
    """Optical tiles of a flight: manifest rows, tiles skipped (with reasons) and a few previews."""

    rows: list[dict[str, Any]]
    skipped: dict[str, str]
    previews: list[tuple[str, np.ndarray]]


def colocate_tiles(
    sar_rows: Sequence[dict[str, Any]],
    source: OpticalSource,
    out_dir: Path,
    rel_dir: str,
    min_coverage: float,
    max_previews: int = 6,
) -> FlightColocation:
    """Render the optical tile of every SAR manifest row on its exact grid; write ``<tile_id>.png``.

    A tile whose coverage is below ``min_coverage``, or whose source cannot be read, is skipped
    with the reason recorded; the flight's other tiles are kept.
    """
    rows, skipped, previews = [], {}, []
    for sar in sar_rows:
        tid = sar["tile_id"]
        try:
            tile = source.render(
                sar["crs"],
                Affine(*sar["transform"]),
                (int(sar["height"]), int(sar["width"])),
                parse_utc(sar.get("datetime")),
            )
        except SarPipelineError as exc:
            skipped[tid] = str(exc)
            continue
        if tile.coverage_fraction < min_coverage:
            skipped[tid] = f"{source.name}: optical coverage {tile.coverage_fraction:.3f} < {min_coverage}"
            continue
        (Path(out_dir) / f"{tid}.png").write_bytes(png_bytes(tile.image))
        rows.append(
            {
                "tile_id": tid,
                "flight_id": sar["flight_id"],
                "scene_id": sar["scene_id"],
                "path": f"{rel_dir}/{tid}.png",
                "sar_path": sar["path"],
                "crs": sar["crs"],
                "transform": list(sar["transform"]),
                "height": int(sar["height"]),
                "width": int(sar["width"]),
                "coverage_fraction": tile.coverage_fraction,
                "optical_datetime": tile.acquired,
                "time_gap_s": tile.time_gap_s,
                "optical_sources": json.dumps(tile.sources),
                "optical_source": source.name,
                "footprint_scene_crs": sar["footprint_scene_crs"],
                "geometry": sar["geometry"],
            }
        )
        if len(previews) < max_previews:
            previews.append((tid, tile.image))
    return FlightColocation(rows, skipped, previews)


def pairs_preview_png(
    root, sar_rows: Sequence[dict[str, Any]], colocation: FlightColocation, max_pairs: int = 4
) -> bytes | None:
    """A PNG mosaic of a few SAR tiles (left) beside their optical tiles (right), or None if empty."""
    sar_path = {r["tile_id"]: r["path"] for r in sar_rows}
    images, labels = [], []
    for tid, optical in colocation.previews[:max_pairs]:
        with Image.open(io.BytesIO((root / sar_path[tid]).read_bytes())) as sar:
            images += [to_display_uint8(np.asarray(sar)), optical]
        labels += [f"SAR {tid.rsplit('__', 1)[-1]}", "optical"]
    if not images:
        return None
    return png_bytes(grid(images, columns=2, labels=labels))
