"""Spatially blocked, deterministic train/validation/test split of tile footprints.

Why blocked: neighbouring SAR tiles share speckle statistics, field patterns and often pixels (tile
overlap, or several flights over the same ground), so a random split leaks test ground into
training. Here the ground is cut into square blocks of ``block_size_m`` in one metric CRS for the
whole planet (EPSG:6933, WGS 84 / EASE-Grid 2.0 global, equal-area cylindrical, metres), each tile
goes to the block holding its footprint's centroid, and whole blocks go to splits, in one of two
ways (``SplitSettings.assignment``):

* ``"hash"`` (default): each block's split is drawn from a hash of ``(seed, block size, block)``
  alone. A block's split never changes when flights are added (a test tile of one dataset version
  stays a test tile in the next), but with few blocks the shares scatter widely around the
  fractions (a single-block dataset is all train, all validation or all test).
* ``"balanced"``: the occupied blocks are visited in the order of a hash of ``(seed, block)`` and
  each goes to the split furthest below its target share of tiles. The shares come out as close to
  the fractions as whole blocks allow, even with a few dozen blocks, but adding flights can move a
  block to another split in the next dataset version. With only a handful of blocks, train (the
  largest share) takes them all.

Why ``"hash"`` is the default: the dataset is versioned as per-flight shards that later versions
share (:mod:`sar_pipeline.dataset.write`), so that storage grows by one flight's shard per new
flight rather than by the whole dataset. That holds only if a new flight leaves every earlier tile's
split, and whether it is kept, unchanged. ``"hash"`` gives that by construction: a tile's split is a
function of the tile and the settings. ``"balanced"`` cannot: its shares are a property of the whole
set of blocks, so one new block can move others. Making it "sticky" (keep the splits an earlier
version gave) would make a version depend on the order the flights arrived in, not only on the data
and the settings, and break reproducibility (same flights + same settings ⇒ same version, same bytes),
which ``"hash"`` keeps. The price of ``"hash"`` is scattered shares with few blocks: keep blocks a
few tiles wide so that a flight spans dozens of them (``training_dataset_splits_non_empty`` warns
about a split that is empty though the blocks were enough to expect it), or choose ``"balanced"``
for a small, closed dataset where every version may be rewritten whole.

Tiles on a block edge can still touch a tile of another split: a guard band drops some of them, so
that no two tiles of different splits intersect or come within ``touch_tolerance_m`` of each other —
checked by :func:`leaking_pairs`, which the tests and the asset check use. The band depends on the
assignment:

* ``"balanced"``: every touching pair of tiles of different splits is resolved by dropping the tile of
  the split with the lower keep priority (train before validation before test, so the evaluation
  sets lose as little as possible). Whether a tile is dropped depends on its neighbours, possibly
  tiles of another flight.
* ``"hash"``: a tile is dropped when its footprint comes within ``touch_tolerance_m`` of a block of
  another split (each block's split is known from its hash, occupied or not). Every kept tile then
  lies inside blocks of its own split, more than the tolerance away from any block of another split,
  so no two kept tiles of different splits come that close. Tiles of both sides of such a block edge
  go (evaluation tiles too), but a tile's split and whether it is kept depend on the tile alone: a
  new flight never moves or drops a tile of an earlier one, so the dataset's per-flight shards of
  earlier flights stay unchanged (:mod:`sar_pipeline.dataset.write`).

The guard band costs roughly (tile side / block side) of the tiles next to evaluation blocks: keep
blocks several tiles wide.
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
from collections.abc import Sequence
from typing import Literal

import numpy as np
import pydantic
import shapely
from pydantic import Field
from pyproj import Proj, Transformer

from sar_pipeline.dataset.schema import SPLITS
from sar_pipeline.settings import Settings

#: the common metric CRS of the blocks (equal-area, metres, valid to ±86° latitude)
BLOCK_CRS = "EPSG:6933"

#: split name used for tiles dropped as guard band; they are not written to the dataset
DROPPED = "dropped"

#: blocks narrower than this many tiles lose a large share of their tiles to the guard band
MIN_TILES_PER_BLOCK = 3

# Lower number = dropped first when two tiles of different splits touch.
_KEEP_PRIORITY = {"train": 0, "validation": 1, "test": 2}

_TO_BLOCK_CRS = Transformer.from_crs("OGC:CRS84", BLOCK_CRS, always_xy=True)
_BLOCK_PROJ = Proj(BLOCK_CRS)


class SplitSettings(Settings):
    """How tiles are split into train/validation/test; every field enters the dataset version hash."""

    block_size_m: float = Field(
        default=5000.0,
        gt=0,
        description="Side of the square ground blocks (metres, EPSG:6933) assigned to splits as a whole. "
        "Keep it several tiles wide: the guard band drops about (tile side / block side) of the tiles "
        "next to evaluation blocks. A tile is 512 px × the tiling GSD (512 m at the default 1 m), so "
        "5000 m is about ten tiles wide and loses about a tenth; at 10 m GSD (satellite, 5 km tiles) "
        "raise it to 25000 m or more.",
    )
    train_fraction: float = Field(default=0.8, ge=0, description="Target share of tiles in the train split.")
    validation_fraction: float = Field(
        default=0.1, ge=0, description="Target share of tiles in the validation split."
    )
    test_fraction: float = Field(default=0.1, ge=0, description="Target share of tiles in the test split.")
    seed: int = Field(
        default=0, description="Seed of the block order / block hash; change it for another split."
    )
    touch_tolerance_m: float = Field(
        default=1.0,
        ge=0,
        description="Tiles of different splits closer than this (metres) count as touching; one of them "
        "is dropped (guard band).",
    )
    assignment: Literal["hash", "balanced"] = Field(
        default="hash",
        description="'hash': each block's split from its hash alone, so a tile's split never changes when "
        "flights are added and earlier flights' dataset shards are reused as they are (storage grows by "
        "the new flight's shard); shares scatter around the fractions with few blocks. 'balanced': "
        "blocks in hash order fill each split up to its share of tiles (shares close to the fractions "
        "even with few blocks), but a new flight can move blocks to another split and so rewrite the "
        "shards of the flights it touches.",
    )

    @pydantic.model_validator(mode="after")
    def _fractions_sum_to_one(self) -> SplitSettings:
        if not np.isclose(sum(self.fractions.values()), 1.0):
            raise ValueError(f"split fractions: train/validation/test must sum to 1, got {self.fractions}")
        return self

    @property
    def fractions(self) -> dict[str, float]:
        """Target share of tiles per split (train, validation, test)."""
        return {
            "train": self.train_fraction,
            "validation": self.validation_fraction,
            "test": self.test_fraction,
        }

    def split_json(self) -> dict[str, float | int | str]:
        """The split fields only, as JSON values (what enters the version hash and the version manifest)."""
        return {name: getattr(self, name) for name in SplitSettings.model_fields}


@dataclasses.dataclass(frozen=True)
class SplitResult:
    """Per tile (in input order): its block and its split (``"dropped"`` for guard-band tiles)."""

    splits: list[str]
    blocks: list[tuple[int, int]]
    #: median tile side on the ground (metres): square root of the median footprint area
    median_tile_side_m: float = 0.0

    @property
    def dropped_count(self) -> int:
        return sum(s == DROPPED for s in self.splits)

    @property
    def block_count(self) -> int:
        return len(set(self.blocks))


def to_block_crs(footprints_wgs84: Sequence) -> np.ndarray:
    """Footprints (shapely, WGS84 lon/lat) reprojected to :data:`BLOCK_CRS` (metres)."""
    geoms = np.asarray(footprints_wgs84, dtype=object)
    return shapely.transform(geoms, lambda xy: np.column_stack(_TO_BLOCK_CRS.transform(xy[:, 0], xy[:, 1])))


def block_crs_distance(footprints_wgs84: Sequence, distance_m: float) -> float:
    """A ground distance (metres) in :data:`BLOCK_CRS` units, large enough everywhere over the footprints.

    EPSG:6933 is equal-area, not equidistant: away from ±30° latitude it stretches one axis and
    shrinks the other (at 43.6° N one ground metre spans 1.19 units east-west, 0.84 north-south),
    so the largest scale factor over the footprints' latitudes is used.
    """
    if distance_m <= 0 or len(footprints_wgs84) == 0:
        return 0.0
    bounds = shapely.bounds(np.asarray(footprints_wgs84, dtype=object))
    low, high = float(np.nanmin(bounds[:, 1])), float(np.nanmax(bounds[:, 3]))
    # the east-west scale grows with |latitude|, the north-south one shrinks: check both ends (and 0)
    latitudes = np.clip([low, high, 0.0] if low < 0 < high else [low, high], -86.0, 86.0)
    factors = _BLOCK_PROJ.get_factors(np.zeros(len(latitudes)), latitudes)
    scale = max(np.max(factors.parallel_scale), np.max(factors.meridional_scale))
    return distance_m * float(scale)


def block_of(centroid_x_m: float, centroid_y_m: float, block_size_m: float) -> tuple[int, int]:
    """Block (column, row) index holding a point given in :data:`BLOCK_CRS` metres."""
    return int(np.floor(centroid_x_m / block_size_m)), int(np.floor(centroid_y_m / block_size_m))


def _block_hash(block: tuple[int, int], config: SplitSettings) -> bytes:
    return hashlib.sha256(f"{config.seed}:{config.block_size_m!r}:{block[0]}:{block[1]}".encode()).digest()


def block_split(block: tuple[int, int], config: SplitSettings) -> str:
    """The ``"hash"`` split of a block: a uniform number from a hash of ``(seed, block size, block)``."""
    u = int.from_bytes(_block_hash(block, config)[:8], "big") / 2**64
    edge = 0.0
    for name in SPLITS:
        edge += config.fractions[name]
        if u < edge:
            return name
    # u is in [0, 1) and the fractions sum to 1 up to rounding: the last non-empty split takes it
    return [s for s in SPLITS if config.fractions[s] > 0][-1]


def balanced_block_splits(tiles_per_block: dict[tuple[int, int], int], config: SplitSettings) -> dict:
    """The ``"balanced"`` split of each occupied block: blocks in hash order, each to the split
    with the largest shortfall of tiles against ``fraction × total tiles``."""
    total = sum(tiles_per_block.values())
    have = dict.fromkeys(SPLITS, 0)
    out = {}
    for block in sorted(tiles_per_block, key=lambda b: _block_hash(b, config)):
        # ties go to the first split in SPLITS order (train), so the first block is train
        split = max(SPLITS, key=lambda s: config.fractions[s] * total - have[s])
        out[block] = split
        have[split] += tiles_per_block[block]
    return out


def assign_splits(footprints_wgs84: Sequence, config: SplitSettings) -> SplitResult:
    """Split tiles by ground block, then drop guard-band tiles so no two splits touch.

    ``footprints_wgs84``: shapely polygons in WGS84 (lon, lat). Output order follows the input;
    the result depends only on the footprints and ``config`` (not on input order).
    """
    if len(footprints_wgs84) == 0:
        return SplitResult(splits=[], blocks=[])
    metric = to_block_crs(footprints_wgs84)
    centroids = shapely.centroid(metric)
    xs, ys = shapely.get_x(centroids), shapely.get_y(centroids)
    blocks = [block_of(x, y, config.block_size_m) for x, y in zip(xs, ys, strict=True)]
    if config.assignment == "hash":
        by_block = {b: block_split(b, config) for b in set(blocks)}
    else:
        by_block = balanced_block_splits(dict(collections.Counter(blocks)), config)
    splits = [by_block[b] for b in blocks]
    if config.assignment == "hash":
        for k, geom in enumerate(metric):
            tolerance = block_crs_distance([footprints_wgs84[k]], config.touch_tolerance_m)
            if _near_block_of_another_split(geom, splits[k], tolerance, config):
                splits[k] = DROPPED
        return SplitResult(splits=splits, blocks=blocks, median_tile_side_m=_median_side_m(metric))

    pairs = _touching_pairs(metric, block_crs_distance(footprints_wgs84, config.touch_tolerance_m))
    # Resolve from the highest keep priority down, so the outcome does not depend on pair order:
    # a validation tile goes iff it touches a test tile; a train tile goes iff it touches a test
    # tile or a validation tile that was kept.
    for loser in ("validation", "train"):
        doomed = set()
        for i, j in pairs:
            for a, b in ((i, j), (j, i)):
                if (
                    splits[a] == loser
                    and splits[b] != DROPPED
                    and _KEEP_PRIORITY[splits[b]] > _KEEP_PRIORITY[loser]
                ):
                    doomed.add(a)
        for a in doomed:
            splits[a] = DROPPED
    return SplitResult(splits=splits, blocks=blocks, median_tile_side_m=_median_side_m(metric))


def _median_side_m(metric_geoms: np.ndarray) -> float:
    # EPSG:6933 is equal-area: a footprint's area there is its ground area in m²
    return float(np.sqrt(np.median(shapely.area(metric_geoms))))


def _near_block_of_another_split(geom, split: str, tolerance: float, config: SplitSettings) -> bool:
    """Whether footprint ``geom`` (BLOCK_CRS) comes within ``tolerance`` (BLOCK_CRS units, touching
    included) of a block whose ``"hash"`` split is not ``split``."""
    size = config.block_size_m
    minx, miny, maxx, maxy = shapely.bounds(geom)
    for bx in range(int(np.floor((minx - tolerance) / size)), int(np.floor((maxx + tolerance) / size)) + 1):
        for by in range(
            int(np.floor((miny - tolerance) / size)), int(np.floor((maxy + tolerance) / size)) + 1
        ):
            if block_split((bx, by), config) == split:
                continue
            box = shapely.box(bx * size, by * size, (bx + 1) * size, (by + 1) * size)
            if shapely.distance(geom, box) <= tolerance:
                return True
    return False


def block_size_advice(block_size_m: float, tile_side_m: float) -> str | None:
    """A warning naming the setting to change when blocks are under :data:`MIN_TILES_PER_BLOCK`
    tiles wide (the guard band then drops a large share of the tiles), else None."""
    if tile_side_m <= 0 or block_size_m >= MIN_TILES_PER_BLOCK * tile_side_m:
        return None
    return (
        f"block_size_m={block_size_m:g} is under {MIN_TILES_PER_BLOCK} tiles wide (tiles are about "
        f"{tile_side_m:.0f} m on the ground): the guard band drops many tiles between splits; set "
        f"training_dataset's block_size_m to {10 * tile_side_m:.0f} or more (about ten tiles)"
    )


def _touching_pairs(metric_geoms: np.ndarray, tolerance: float) -> list[tuple[int, int]]:
    """Index pairs ``i < j`` of geometries that intersect or lie within ``tolerance`` (BLOCK_CRS units)."""
    tree = shapely.STRtree(metric_geoms)
    if tolerance > 0:
        left, right = tree.query(metric_geoms, predicate="dwithin", distance=tolerance)
    else:
        left, right = tree.query(metric_geoms, predicate="intersects")
    mask = left < right
    pairs = sorted(zip(left[mask].tolist(), right[mask].tolist(), strict=True))
    return pairs


def leaking_pairs(
    footprints_wgs84: Sequence, splits: Sequence[str], tolerance_m: float = 0.0
) -> list[tuple[int, int]]:
    """Index pairs of tiles in DIFFERENT splits whose footprints intersect (touching included) or
    lie within ``tolerance_m`` metres. Empty means no spatial leakage. Dropped tiles are ignored."""
    keep = [k for k, s in enumerate(splits) if s != DROPPED]
    if not keep:
        return []
    kept = [footprints_wgs84[k] for k in keep]
    pairs = []
    for a, b in _touching_pairs(to_block_crs(kept), block_crs_distance(kept, tolerance_m)):
        i, j = keep[a], keep[b]
        if splits[i] != splits[j]:
            pairs.append((i, j))
    return pairs
