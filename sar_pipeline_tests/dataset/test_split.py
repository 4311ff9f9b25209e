import random

import pydantic
import pytest
from affine import Affine

from sar_pipeline.dataset.split import (
    DROPPED,
    SplitSettings,
    assign_splits,
    balanced_block_splits,
    block_size_advice,
    block_split,
    leaking_pairs,
)
from sar_pipeline.geo.footprints import grid_footprint, to_wgs84

UTM31N = "EPSG:32631"


def tile_grid(rows, cols, tile_m, rotation_deg, origin=(500_000.0, 4_800_000.0)):
    """Adjacent square tiles (footprints in UTM 31N and WGS84) of a possibly rotated grid."""
    t0 = Affine.translation(*origin) @ Affine.rotation(rotation_deg) @ Affine.scale(tile_m / 16, -tile_m / 16)
    utm = [
        grid_footprint(t0 @ Affine.translation(16 * c, 16 * r), (16, 16))
        for r in range(rows)
        for c in range(cols)
    ]
    return utm, [to_wgs84(g, UTM31N) for g in utm]


@pytest.mark.parametrize("assignment", ["balanced", "hash"])
@pytest.mark.parametrize("rotation_deg", [0.0, 23.0, -61.5])
def test_no_test_tile_touches_a_train_tile(rotation_deg, assignment):
    utm, wgs = tile_grid(14, 14, 100.0, rotation_deg)
    config = SplitSettings(
        block_size_m=300.0,
        train_fraction=0.5,
        validation_fraction=0.2,
        test_fraction=0.3,
        assignment=assignment,
    )
    splits = assign_splits(wgs, config).splits
    present = {s: splits.count(s) for s in set(splits)}
    assert present.get("train", 0) > 10 and present.get("test", 0) > 5 and present.get("validation", 0) > 0
    assert 0 < present.get(DROPPED, 0) < len(splits) / 2

    # Independent of the split's own metric CRS: exact shapely predicates in UTM and in WGS84.
    for a, b in (("test", "train"), ("validation", "train"), ("test", "validation")):
        for i in (k for k, s in enumerate(splits) if s == a):
            for j in (k for k, s in enumerate(splits) if s == b):
                assert not wgs[i].intersects(wgs[j]), (a, i, b, j)
                assert utm[i].distance(utm[j]) > 1.0, (a, i, b, j)
    assert leaking_pairs(wgs, splits, tolerance_m=1.0) == []


def test_without_guard_band_the_blocks_leak():
    # The check above can fail: the raw per-block assignment has touching tiles in different splits.
    utm, wgs = tile_grid(14, 14, 100.0, 23.0)
    config = SplitSettings(block_size_m=300.0, train_fraction=0.5, validation_fraction=0.2, test_fraction=0.3)
    blocks = assign_splits(wgs, config).blocks
    raw = [block_split(b, config) for b in blocks]
    assert leaking_pairs(wgs, raw, tolerance_m=1.0)


@pytest.mark.parametrize("assignment", ["balanced", "hash"])
def test_overlapping_tiles_of_two_flights_never_straddle_splits(assignment):
    _, first = tile_grid(10, 10, 100.0, 0.0)
    _, second = tile_grid(10, 10, 100.0, 37.0, origin=(500_230.0, 4_799_870.0))
    wgs = first + second
    config = SplitSettings(
        block_size_m=250.0,
        train_fraction=0.6,
        validation_fraction=0.2,
        test_fraction=0.2,
        assignment=assignment,
    )
    splits = assign_splits(wgs, config).splits
    assert leaking_pairs(wgs, splits) == []
    assert len({s for s in splits if s != DROPPED}) == 3


@pytest.mark.parametrize("assignment", ["balanced", "hash"])
def test_split_is_deterministic_and_independent_of_order(assignment):
    _, wgs = tile_grid(8, 8, 100.0, 12.0)
    config = SplitSettings(block_size_m=250.0, seed=3, assignment=assignment)
    first = assign_splits(wgs, config).splits
    order = list(range(len(wgs)))
    random.Random(1).shuffle(order)
    shuffled = assign_splits([wgs[k] for k in order], config).splits
    assert [shuffled[order.index(k)] for k in range(len(wgs))] == first
    assert (
        assign_splits(wgs, SplitSettings(block_size_m=250.0, seed=4, assignment=assignment)).splits != first
    )


def test_block_split_follows_fractions():
    config = SplitSettings(train_fraction=0.7, validation_fraction=0.1, test_fraction=0.2)
    counts = {"train": 0, "validation": 0, "test": 0}
    for bx in range(60):
        for by in range(50):
            counts[block_split((bx, by), config)] += 1
    shares = {k: v / 3000 for k, v in counts.items()}
    assert shares == pytest.approx({"train": 0.7, "validation": 0.1, "test": 0.2}, abs=0.03)


def test_balanced_assignment_follows_the_fractions_with_few_blocks():
    _, wgs = tile_grid(12, 12, 100.0, 0.0)
    config = SplitSettings(
        block_size_m=200.0,
        train_fraction=0.7,
        validation_fraction=0.1,
        test_fraction=0.2,
        assignment="balanced",
    )
    blocks = assign_splits(wgs, config).blocks
    per_block = {b: blocks.count(b) for b in set(blocks)}
    shares = dict.fromkeys(("train", "validation", "test"), 0)
    for block, split in balanced_block_splits(per_block, config).items():
        shares[split] += per_block[block] / len(wgs)
    # blocks hold ~4 of 144 tiles, so every share is within one block of its target
    assert shares == pytest.approx({"train": 0.7, "validation": 0.1, "test": 0.2}, abs=0.04)


def test_existing_tiles_keep_their_split_when_a_far_flight_is_added():
    _, near = tile_grid(6, 6, 100.0, 0.0)
    _, far = tile_grid(6, 6, 100.0, 0.0, origin=(560_000.0, 4_850_000.0))
    config = SplitSettings(block_size_m=250.0, assignment="hash")
    alone = assign_splits(near, config).splits
    together = assign_splits(near + far, config).splits
    assert together[: len(near)] == alone


def test_hash_split_of_a_tile_ignores_an_overlapping_new_flight():
    # the guard band of 'hash' depends on the tile alone: tiles of a new flight over the same ground
    # neither move nor drop an earlier flight's tiles, and the union still does not leak
    _, old = tile_grid(10, 10, 100.0, 0.0)
    _, new = tile_grid(10, 10, 100.0, 37.0, origin=(500_230.0, 4_799_870.0))
    config = SplitSettings(
        block_size_m=250.0, train_fraction=0.6, validation_fraction=0.2, test_fraction=0.2, assignment="hash"
    )
    alone = assign_splits(old, config).splits
    together = assign_splits(old + new, config).splits
    assert together[: len(old)] == alone
    assert DROPPED in alone and len(set(alone)) == 4
    assert leaking_pairs(old + new, together) == []
    assert leaking_pairs(old + new, together, tolerance_m=config.touch_tolerance_m) == []


@pytest.mark.parametrize(
    ("kwargs", "named"),
    [
        ({"block_size_m": 0.0}, "block_size_m"),
        ({"train_fraction": 0.9, "validation_fraction": 0.2, "test_fraction": 0.1}, "must sum to 1"),
        ({"train_fraction": 1.2, "validation_fraction": -0.1, "test_fraction": -0.1}, "validation_fraction"),
        ({"touch_tolerance_m": -1.0}, "touch_tolerance_m"),
        ({"assignment": "random"}, "assignment"),
        ({"block_size": 500.0}, "block_size"),  # a misspelt setting is an error, never ignored
    ],
)
def test_bad_split_settings_are_refused_naming_the_setting(kwargs, named):
    with pytest.raises(pydantic.ValidationError, match=named):
        SplitSettings(**kwargs)


def test_empty_input():
    assert assign_splits([], SplitSettings()).splits == []


def test_touch_tolerance_is_in_ground_metres_far_from_30_degrees():
    # EPSG:6933 stretches east-west distances 1.73× at 60° N: 0.9 m on the ground is 1.56 units
    from shapely.geometry import box

    def square(x0):
        return to_wgs84(box(x0, 6_650_000.0, x0 + 10.0, 6_650_010.0), "EPSG:32633")

    a, near, far = square(500_000.0), square(500_010.9), square(500_015.0)
    assert leaking_pairs([a, near], ["train", "test"], tolerance_m=1.0) == [(0, 1)]
    assert leaking_pairs([a, far], ["train", "test"], tolerance_m=1.0) == []


def test_blocks_narrower_than_a_few_tiles_get_advice_naming_the_setting():
    _, wgs = tile_grid(6, 6, 512.0, 23.0)  # 512-px tiles at 1 m GSD
    result = assign_splits(wgs, SplitSettings())
    assert result.median_tile_side_m == pytest.approx(512.0, rel=1e-3)
    assert block_size_advice(5000.0, result.median_tile_side_m) is None  # the default: ~10 tiles
    # 10 m satellite GSD: 5120-m tiles, the default block is one tile wide
    advice = block_size_advice(5000.0, 5120.0)
    assert "block_size_m=5000" in advice and "block_size_m to 51200" in advice
