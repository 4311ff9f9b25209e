"""The dataset tiles the evaluation reads: one split's grey tiles, their words, dB and land cover.

Tiles are read as training reads them (``diffusion.data.decode_tile``: the stored 8/16-bit dB
levels scaled to [0, 1], bilinearly resized to the side asked for, native SAR orientation), so a
real tile and a generated one are compared on the same grid and the same grey scale; dB comes back
through the dataset's one mapping (``generation.output.grey_to_db``).
"""

from __future__ import annotations

import io
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from sar_pipeline import radiometry
from sar_pipeline.errors import ConfigError

#: splits tried in turn for held-out tiles (a small dataset's test blocks may hold no tile)
HELD_OUT_SPLITS = ("test", "validation")


@dataclass
class SplitTiles:
    """Tiles of one split: ``greys`` float32 (side × side) in [0, 1], ``texts`` their words,
    ``landcover`` each tile's main land-cover class name (None where the dataset has none)."""

    split: str
    tile_ids: list[str]
    greys: list[np.ndarray]
    texts: list[str]
    landcover: list[str | None] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.tile_ids)


def main_landcover_class(png: bytes | None) -> str | None:
    """Name of the most frequent land-cover class of a land-cover tile (class codes, 0 = nodata)."""
    from PIL import Image

    from sar_pipeline.archive.landcover import LANDCOVER_CLASSES, NODATA

    if not png:
        return None
    codes = np.asarray(Image.open(io.BytesIO(png))).ravel()
    counts = Counter(int(c) for c in codes[codes != NODATA].tolist())
    if not counts:
        return None
    code = counts.most_common(1)[0][0]
    return LANDCOVER_CLASSES.get(code, f"class {code}")


def text_column_of(column_names: list[str], wanted: str) -> str:
    """``wanted`` when the dataset has it, else ``text`` (every dataset has it)."""
    return wanted if wanted in column_names else "text"


def read_split_tiles(
    storage_root: str | Path, version: str, split: str, side_px: int, text_column: str, max_tiles: int = 0
) -> SplitTiles:
    """The first ``max_tiles`` tiles (0 = all) of ``split`` of dataset ``version`` at ``side_px``."""
    from sar_pipeline.dataset import load_dataset_table
    from sar_pipeline.diffusion.data import decode_tile

    table = load_dataset_table(storage_root, version=version, split=split)
    if max_tiles:
        table = table.slice(0, max_tiles)
    column = text_column_of(table.column_names, text_column)
    columns = ["tile_id", "image", column] + (
        ["landcover_image"] if "landcover_image" in table.column_names else []
    )
    rows = table.select(columns).to_pylist()
    greys = [
        ((decode_tile(r["image"]["bytes"], side_px, f"{split} tile {r['tile_id']}")[0] + 1) / 2).numpy()
        for r in rows
    ]
    return SplitTiles(
        split=split,
        tile_ids=[str(r["tile_id"]) for r in rows],
        greys=greys,
        texts=[str(r[column] or "") for r in rows],
        landcover=[main_landcover_class((r.get("landcover_image") or {}).get("bytes")) for r in rows],
    )


def evaluation_split(storage_root: str | Path, version: str) -> tuple[str, bool]:
    """(split, held out): the first split of :data:`HELD_OUT_SPLITS` with tiles, else ``train`` with
    held out False (a dataset too small for its spatial split to hold ground blocks out, like the
    CPU demo's: its figures then say how well a model fits the tiles it saw, not how it generalises);
    ConfigError when the dataset has no tile at all."""
    from sar_pipeline.dataset import dataset_info

    counts = dataset_info(storage_root, version).get("row_counts") or {}
    for split in HELD_OUT_SPLITS:
        if counts.get(split, 0) > 0:
            return split, True
    if counts.get("train", 0) > 0:
        return "train", False
    raise ConfigError(f"dataset version {version}", f"has no tile to evaluate on (row counts {counts})")


def dataset_params(storage_root: str | Path, version: str) -> radiometry.RadiometryParams:
    """The dataset's dB mapping; ConfigError when it records none (distances in dB need it)."""
    from sar_pipeline.generation.output import dataset_radiometry

    params = dataset_radiometry(storage_root, version)
    if params is None:
        raise ConfigError(
            f"dataset version {version}",
            "records no db_min/db_max: amplitude distances in dB need the dataset's radiometric mapping",
        )
    return params


def to_db(greys: list[np.ndarray], params: radiometry.RadiometryParams) -> list[np.ndarray]:
    """Grey tiles in [0, 1] → dB (float32) through the dataset's mapping."""
    from sar_pipeline.generation.output import grey_to_db

    return [grey_to_db(g, params) for g in greys]
